//! The TURN checks: an allocation, its relayed address, a second allocation as the peer,
//! data relayed from one to the other in Send indications and then over a channel, a Refresh
//! and the release of both. Each allocation has its own UDP socket or, for TCP and TLS URIs,
//! its own connection, for DTLS URIs its own association; the relay itself is UDP either
//! way.
//!
//! The probe is its own peer: datagrams leave allocation A, cross the server from A's relayed
//! address to B's and come back to the probe through B, so one clock times the whole trip
//! and no outside host is needed. Every allocation made is released before the checks
//! return, whatever failed on the way.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_wire::credentials::KeyAlgorithm;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::net::{SendError, TurnSession};
use crate::report::Check;
use crate::stats::{RttStats, loss_ratio, millis, percent};
use crate::stream::Dialer;
use crate::{Credentials, Settings, Target};

mod explain;

pub use explain::{explain, explain_session};

/// Every TURN check skipped for `reason`: when the connection to the server failed, each
/// would fail the same way.
pub fn skipped(label: &str, reason: &str) -> Vec<Check> {
    CHECK_NAMES
        .iter()
        .map(|name| Check::skip(label, name, reason))
        .collect()
}

/// The names of the TURN checks, in the order they run.
pub const CHECK_NAMES: [&str; 7] = [
    "allocate",
    "relayed-address",
    "permission",
    "relay-data",
    "channel-data",
    "refresh",
    "deallocate",
];

/// Time between two datagrams of one exchange: 50 per second, gentle on any server and
/// dense enough to see jitter.
pub const PACING: Duration = Duration::from_millis(20);

/// How long datagrams may still arrive after the last one was sent.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Runs the TURN checks against `target`, in the order of [`CHECK_NAMES`]. Without
/// credentials only `allocate` is reported, as a skip. A check that cannot run because an
/// earlier one failed is a skip naming that check.
pub async fn turn(target: &Target, settings: &Settings) -> Vec<Check> {
    let label = target.label();
    let Some(credentials) = &settings.credentials else {
        return vec![Check::skip(
            &label,
            "allocate",
            "no credentials: give --user and --password, or --secret",
        )];
    };
    let mut run = Run {
        label,
        target,
        dialer: Dialer::new(target, settings),
        settings,
        credentials,
        checks: Vec::new(),
    };
    run.all().await;
    run.checks
}

/// One run of the TURN checks and what it found so far.
struct Run<'a> {
    label: String,
    target: &'a Target,
    /// How allocations reach the server: UDP, TCP, TLS or DTLS, as the URI says.
    dialer: Dialer,
    settings: &'a Settings,
    credentials: &'a Credentials,
    checks: Vec<Check>,
}

/// An allocation that succeeded.
struct Allocation {
    session: TurnSession,
    relayed: SocketAddr,
    lifetime: Duration,
}

impl Run<'_> {
    async fn all(&mut self) {
        let Some(mut first) = self.allocate().await else {
            for name in &CHECK_NAMES[1..] {
                self.skip(name, "allocate");
            }
            return;
        };
        // Once made, the second allocation lives here so that it is released with the
        // first whatever fails after it.
        let mut second = None;
        let permitted = if self.relayed_address(first.relayed) {
            self.permission(&mut first, &mut second).await
        } else {
            self.skip("permission", "relayed-address");
            false
        };
        match &mut second {
            Some(peer) if permitted => {
                self.relay_data(&mut first, peer).await;
                self.channel_data(&mut first, peer).await;
            }
            _ => {
                self.skip("relay-data", "permission");
                self.skip("channel-data", "permission");
            }
        }
        self.refresh(&mut first.session).await;
        self.deallocate(first, second).await;
    }

    async fn allocate(&mut self) -> Option<Allocation> {
        let started = Instant::now();
        let first = match self.open_allocation().await {
            Ok(first) => first,
            Err(explanation) => {
                self.fail("allocate", "", explanation);
                return None;
            }
        };
        let algorithm = match first.session.client().password_algorithm() {
            Some(KeyAlgorithm::Sha256) => "SHA-256",
            Some(KeyAlgorithm::Md5) => "MD5",
            None => "no authentication asked",
        };
        let value = format!(
            "{}, lifetime {} s, {algorithm}",
            first.relayed,
            first.lifetime.as_secs()
        );
        self.checks.push(
            Check::pass(&self.label, "allocate", value)
                .with_metric("allocate_seconds", started.elapsed().as_secs_f64()),
        );
        Some(first)
    }

    /// A new session and its allocation, or the explanation of why there is none.
    async fn open_allocation(&self) -> Result<Allocation, String> {
        let mut session = TurnSession::open(
            &self.dialer,
            &self.credentials.username,
            &self.credentials.password,
            self.settings.timeout,
        )
        .await
        .map_err(|e| e.explain(&self.dialer))?;
        match session.allocate().await {
            Ok((relayed, _mapped, lifetime)) => Ok(Allocation {
                session,
                relayed,
                lifetime,
            }),
            Err(error) => Err(explain_session(&session, &error, self.credentials)),
        }
    }

    /// Whether the relayed address is one a peer can send to.
    fn relayed_address(&mut self, relayed: SocketAddr) -> bool {
        match assess_relayed(relayed, self.target.server) {
            Ok(value) => {
                self.checks
                    .push(Check::pass(&self.label, "relayed-address", value));
                true
            }
            Err(explanation) => {
                self.fail("relayed-address", relayed.to_string(), explanation);
                false
            }
        }
    }

    /// Makes a second allocation into `second`, then a permission each way between the two;
    /// whether both permissions were granted.
    async fn permission(
        &mut self,
        first: &mut Allocation,
        second: &mut Option<Allocation>,
    ) -> bool {
        let peer = match self.open_allocation().await {
            Ok(peer) => second.insert(peer),
            Err(explanation) => {
                let explanation = format!(
                    "a second allocation, to serve as the peer of the first, failed: \
                     {explanation}"
                );
                self.fail("permission", "", explanation);
                return false;
            }
        };
        let started = Instant::now();
        let mut outcome = first.session.create_permission(peer.relayed).await;
        let mut asking = &first.session;
        if outcome.is_ok() {
            outcome = peer.session.create_permission(first.relayed).await;
            asking = &peer.session;
        }
        let elapsed = started.elapsed();
        match outcome {
            Ok(()) => {
                let value = format!(
                    "{} and {} permit each other, {} ms",
                    first.relayed,
                    peer.relayed,
                    millis(elapsed)
                );
                self.checks.push(
                    Check::pass(&self.label, "permission", value)
                        .with_metric("permission_seconds", elapsed.as_secs_f64()),
                );
                true
            }
            Err(error) => {
                let mut explanation = explain_session(asking, &error, self.credentials);
                if error.code() == Some(403) {
                    explanation.push_str(
                        ". The peer here is another allocation's relayed address on the same \
                         server; a server whose relay addresses are loopback or private \
                         refuses them unless allowed",
                    );
                }
                self.fail("permission", "", explanation);
                false
            }
        }
    }

    /// Datagrams from the first allocation to the second in Send indications.
    async fn relay_data(&mut self, first: &mut Allocation, second: &mut Allocation) {
        let check = self
            .measure("relay-data", String::new(), first, second)
            .await;
        self.checks.push(check);
    }

    /// A channel from the first allocation to the second, and the same datagrams over it.
    async fn channel_data(&mut self, first: &mut Allocation, second: &mut Allocation) {
        let started = Instant::now();
        let channel = match first.session.bind_channel(second.relayed).await {
            Ok(channel) => channel,
            Err(error) => {
                let explanation = format!(
                    "the channel binding failed: {}",
                    explain_session(&first.session, &error, self.credentials)
                );
                self.fail("channel-data", "", explanation);
                return;
            }
        };
        let bind_seconds = started.elapsed().as_secs_f64();
        let prefix = format!("channel {:#06x}, ", channel.value());
        let check = self
            .measure("channel-data", prefix, first, second)
            .await
            .with_metric("channel_bind_seconds", bind_seconds);
        self.checks.push(check);
    }

    /// `--packets` datagrams from the first allocation to the second, however the first
    /// sends them, as check `name`.
    async fn measure(
        &self,
        name: &str,
        prefix: String,
        first: &mut Allocation,
        second: &mut Allocation,
    ) -> Check {
        let exchanged = exchange(
            &mut first.session,
            &mut second.session,
            second.relayed,
            self.settings.packets,
        )
        .await;
        self.exchange_check(name, prefix, exchanged, first.relayed)
    }

    /// The check for an exchange: pass with the RTT and loss, fail when nothing came through
    /// or nothing could be sent.
    fn exchange_check(
        &self,
        name: &str,
        prefix: String,
        exchanged: Result<Exchanged, SendError>,
        sender_relayed: SocketAddr,
    ) -> Check {
        let exchanged = match exchanged {
            Ok(exchanged) => exchanged,
            Err(error) => {
                return Check::fail(
                    &self.label,
                    name,
                    prefix,
                    format!("cannot send through the relay: {error}"),
                );
            }
        };
        let Some(stats) = RttStats::from_samples(&exchanged.rtts) else {
            let value = format!("{prefix}0 of {} datagrams came back", exchanged.sent);
            let explanation = if exchanged.sent == 0 {
                "nothing to send: --packets is 0".to_owned()
            } else {
                format!(
                    "the server accepted the permission but relayed nothing: its relay ports \
                     are firewalled, or the relay IP or external IP it advertises \
                     ({sender_relayed}) is wrong"
                )
            };
            return Check::fail(&self.label, name, value, explanation)
                .with_metric("loss_ratio", 1.0);
        };
        let received = exchanged.rtts.len();
        let loss = loss_ratio(exchanged.sent.into(), received as u64);
        let value = format!(
            "{prefix}rtt {}, {} % loss ({received} of {})",
            stats.summary(),
            percent(loss),
            exchanged.sent
        );
        stats
            .metrics(Check::pass(&self.label, name, value))
            .with_metric("loss_ratio", loss)
    }

    async fn refresh(&mut self, session: &mut TurnSession) {
        let started = Instant::now();
        match session.refresh().await {
            Ok(lifetime) => {
                let value = format!("lifetime {} s", lifetime.as_secs());
                self.checks.push(
                    Check::pass(&self.label, "refresh", value)
                        .with_metric("refresh_seconds", started.elapsed().as_secs_f64()),
                );
            }
            Err(error) => {
                let explanation = explain_session(session, &error, self.credentials);
                self.fail("refresh", "", explanation);
            }
        }
    }

    /// Releases both allocations, the second first since the first holds its permission.
    async fn deallocate(&mut self, first: Allocation, second: Option<Allocation>) {
        let started = Instant::now();
        let mut released = 0;
        let mut failures = Vec::new();
        for mut allocation in second.into_iter().chain([first]) {
            match allocation.session.deallocate().await {
                Ok(()) => released += 1,
                Err(error) => failures.push(format!(
                    "{}: {}",
                    allocation.relayed,
                    explain_session(&allocation.session, &error, self.credentials)
                )),
            }
        }
        let elapsed = started.elapsed();
        let value = format!("{released} released in {} ms", millis(elapsed));
        let check = if failures.is_empty() {
            Check::pass(&self.label, "deallocate", value)
        } else {
            let explanation = format!(
                "{}; the server keeps such an allocation until its lifetime ends",
                failures.join("; ")
            );
            Check::fail(&self.label, "deallocate", value, explanation)
        };
        self.checks
            .push(check.with_metric("deallocate_seconds", elapsed.as_secs_f64()));
    }

    fn fail(&mut self, name: &str, value: impl Into<String>, explanation: String) {
        self.checks
            .push(Check::fail(&self.label, name, value, explanation));
    }

    fn skip(&mut self, name: &str, depends_on: &str) {
        let reason = format!("depends on {depends_on}, which failed");
        self.checks.push(Check::skip(&self.label, name, reason));
    }
}

/// What an exchange sent and measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Exchanged {
    sent: u32,
    /// One round trip per datagram that arrived, in arrival order.
    rtts: Vec<Duration>,
}

/// Sends `packets` stamped datagrams from `sender` to `peer` (the receiver's relayed
/// address) every [`PACING`], while `receiver` collects them; ends when all arrived or
/// [`DRAIN`] after the last was due.
async fn exchange(
    sender: &mut TurnSession,
    receiver: &mut TurnSession,
    peer: SocketAddr,
    packets: u32,
) -> Result<Exchanged, SendError> {
    let stamp = Stamp::new();
    let start = Instant::now();
    let send = async {
        let mut sent = 0u32;
        for sequence in 0..packets {
            let payload = stamp.write(sequence, Instant::now(), 0);
            sender.send_to(peer, &payload).await?;
            sent += 1;
            tokio::time::sleep_until((start + PACING * (sequence + 1)).into()).await;
        }
        Ok::<u32, SendError>(sent)
    };
    let deadline = start + PACING * packets + DRAIN;
    let receive = async {
        let mut seen = vec![false; packets as usize];
        let mut rtts = Vec::new();
        while rtts.len() < seen.len() {
            let Some(received) = receiver.receive(deadline).await else {
                break;
            };
            let Some((sequence, rtt)) = stamp.read(&received.data, received.at) else {
                continue;
            };
            // A duplicate must not hide a loss.
            if let Some(first_time) = seen.get_mut(sequence as usize)
                && !*first_time
            {
                *first_time = true;
                rtts.push(rtt);
            }
        }
        rtts
    };
    let (sent, rtts) = tokio::join!(send, receive);
    Ok(Exchanged { sent: sent?, rtts })
}

/// The mark on the probe's datagrams: a magic, a tag drawn per exchange so that late
/// datagrams of an earlier one are not counted, a sequence number and the send time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    tag: u64,
    base: Instant,
}

/// `ibpr`: icebreaker probe.
const STAMP_MAGIC: [u8; 4] = *b"ibpr";

/// Bytes of a stamp: magic, tag, sequence number, nanoseconds since the base.
pub(crate) const STAMP_LEN: usize = 4 + 8 + 4 + 8;

impl Stamp {
    /// A stamp with a fresh tag, timing from now.
    pub(crate) fn new() -> Stamp {
        Stamp {
            tag: StdRng::from_os_rng().next_u64(),
            base: Instant::now(),
        }
    }

    /// A datagram of at least [`STAMP_LEN`] bytes (`size` if larger) carrying `sequence`
    /// and `now`.
    pub(crate) fn write(&self, sequence: u32, now: Instant, size: usize) -> Vec<u8> {
        let nanos =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let mut datagram = Vec::with_capacity(size.max(STAMP_LEN));
        datagram.extend_from_slice(&STAMP_MAGIC);
        datagram.extend_from_slice(&self.tag.to_be_bytes());
        datagram.extend_from_slice(&sequence.to_be_bytes());
        datagram.extend_from_slice(&nanos.to_be_bytes());
        datagram.resize(size.max(STAMP_LEN), 0);
        datagram
    }

    /// The sequence number of a datagram of this stamp and how long it took to arrive at
    /// `at`; `None` for anything else.
    pub(crate) fn read(&self, datagram: &[u8], at: Instant) -> Option<(u32, Duration)> {
        let magic = datagram.get(..4)?;
        let tag = u64::from_be_bytes(datagram.get(4..12)?.try_into().ok()?);
        if magic != STAMP_MAGIC || tag != self.tag {
            return None;
        }
        let sequence = u32::from_be_bytes(datagram.get(12..16)?.try_into().ok()?);
        let nanos = u64::from_be_bytes(datagram.get(16..24)?.try_into().ok()?);
        let sent = self.base.checked_add(Duration::from_nanos(nanos))?;
        Some((sequence, at.saturating_duration_since(sent)))
    }
}

/// The relayed address as the check's value, or why no peer could use it.
fn assess_relayed(relayed: SocketAddr, server: SocketAddr) -> Result<String, String> {
    let ip = relayed.ip();
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let unusable = |what: &str| {
        format!(
            "the server hands out {relayed}, {what}: its relay IP or external IP is \
             misconfigured (icebreaker --relay-ip / --external-ip, coturn relay-ip / \
             external-ip)"
        )
    };
    if ip.is_unspecified() || relayed.port() == 0 {
        return Err(unusable("which no peer can send to"));
    }
    if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(unusable("a multicast or broadcast address"));
    }
    if ip.is_loopback() && !server.ip().is_loopback() {
        return Err(unusable(
            "a loopback address only the server host itself reaches",
        ));
    }
    let mut value = format!("{relayed} ({family})");
    if !is_public(ip) && is_public(server.ip()) {
        value.push_str(&format!(
            "; private address while the server is reached at {}: peers outside its \
             network cannot reach it, set the external IP",
            server.ip()
        ));
    }
    Ok(value)
}

/// Whether `ip` is routable on the internet, as far as its range tells.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            let carrier_grade_nat = a == 100 && (64..128).contains(&b);
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || carrier_grade_nat)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            let unique_local = first & 0xfe00 == 0xfc00;
            let link_local = first & 0xffc0 == 0xfe80;
            !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn relayed_addresses_are_judged_against_the_server_address() {
        let public: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(
            assess_relayed("127.0.0.1:49160".parse().unwrap(), local).unwrap(),
            "127.0.0.1:49160 (IPv4)"
        );
        assert_eq!(
            assess_relayed("198.51.100.1:50000".parse().unwrap(), public).unwrap(),
            "198.51.100.1:50000 (IPv4)"
        );
        let private = assess_relayed("10.0.0.5:50000".parse().unwrap(), public).unwrap();
        assert!(private.contains("set the external IP"), "{private}");
        // A private server with private relays is a lab or an internal deployment.
        let internal: SocketAddr = "10.0.0.1:3478".parse().unwrap();
        assert_eq!(
            assess_relayed("10.0.0.5:50000".parse().unwrap(), internal).unwrap(),
            "10.0.0.5:50000 (IPv4)"
        );
        assert!(
            assess_relayed("[2001:db8::1]:50000".parse().unwrap(), public)
                .unwrap()
                .contains("(IPv6)")
        );
        for bad in [
            "0.0.0.0:50000",
            "198.51.100.1:0",
            "224.0.0.1:5000",
            "127.0.0.1:5000",
        ] {
            let text = assess_relayed(bad.parse().unwrap(), public).unwrap_err();
            assert!(text.contains("external IP"), "{bad}: {text}");
        }
    }

    #[test]
    fn public_ranges_are_told_from_private_ones() {
        for public in ["198.51.100.1", "8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "127.0.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[test]
    fn stamps_round_trip_and_reject_strangers() {
        let stamp = Stamp::new();
        let sent = Instant::now();
        let datagram = stamp.write(7, sent, 0);
        assert_eq!(datagram.len(), STAMP_LEN);
        let (sequence, rtt) = stamp
            .read(&datagram, sent + Duration::from_millis(3))
            .unwrap();
        assert_eq!(sequence, 7);
        assert!(rtt.abs_diff(Duration::from_millis(3)) < Duration::from_micros(1));

        assert_eq!(stamp.write(1, sent, 1200).len(), 1200);
        assert_eq!(Stamp::new().read(&datagram, sent), None, "another tag");
        assert_eq!(stamp.read(&datagram[..20], sent), None, "truncated");
        assert_eq!(stamp.read(b"hello, this is not a stamp", sent), None);
    }
}
