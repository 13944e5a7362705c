//! The NAT mapping lifetime (RFC 5780 §4.6): how long a mapping stays open without traffic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::discovery::send_until_received;
use super::{Answer, MAPPING_LIFETIME, NO_CHANGE, ask, read_answer};
use crate::net::{self, StunSocket};
use crate::report::Check;

/// The lifetime search's second pass cuts the interval the doubling found into this many
/// parts, which gives the estimate an eighth of that interval's width.
const REFINE_PARTS: u32 = 8;

/// RFC 5780 §4.6: socket X gets a mapping; after T idle seconds socket Y asks the server to
/// answer on X's mapped port (RESPONSE-PORT); the mapping is alive when X gets the answer.
/// T doubles from 1 s up to `max`, then the interval between the last T alive and the first
/// expired is cut into [`REFINE_PARTS`]. Each pass opens all its X sockets at once and probes
/// them in order of T, so a pass lasts as long as its longest T.
pub(super) async fn mapping_lifetime(
    label: &str,
    server: SocketAddr,
    max: Duration,
    timeout: Duration,
    quiet: Duration,
) -> Check {
    match search_lifetime(server, max, timeout, quiet).await {
        Ok((alive, expired)) => {
            let (value, lower_bound) = lifetime_value(alive, expired, max);
            Check::pass(label, MAPPING_LIFETIME, value)
                .with_metric("mapping_lifetime_seconds", lower_bound.as_secs_f64())
        }
        Err(why) => Check::skip(label, MAPPING_LIFETIME, why),
    }
}

/// The `mapping-lifetime` check when `--lifetime` was not given.
pub(super) fn lifetime_not_asked(label: &str) -> Check {
    Check::skip(
        label,
        MAPPING_LIFETIME,
        "not asked: `--lifetime SECS` estimates how long the NAT keeps an idle mapping \
         (RFC 5780 §4.6), which takes up to twice SECS",
    )
}

/// The longest idle time a mapping survived and the shortest it did not, or why the search
/// cannot run.
async fn search_lifetime(
    server: SocketAddr,
    max: Duration,
    timeout: Duration,
    quiet: Duration,
) -> Result<(Option<Duration>, Option<Duration>), String> {
    let mut prober = StunSocket::for_server(server)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    // An immediate probe tells a short lifetime apart from a probe that cannot work.
    let fresh = open_mapping(server, timeout).await?;
    match probe(&mut prober, server, &fresh, quiet).await {
        Probe::Alive => {}
        Probe::Expired => {
            return Err(format!(
                "an answer sent to this host's mapped port by RESPONSE-PORT never arrived, \
                 even at once: the NAT gives each socket another public IP, or {server} \
                 ignores RESPONSE-PORT"
            ));
        }
        Probe::Unsupported(why) => return Err(why),
    }
    drop(fresh);
    let (mut alive, mut expired) =
        lifetime_pass(&mut prober, server, &doubling_waits(max), timeout, quiet).await?;
    if let (Some(low), Some(high)) = (alive, expired) {
        let waits = refine_waits(low, high, REFINE_PARTS);
        let (finer_alive, finer_expired) =
            lifetime_pass(&mut prober, server, &waits, timeout, quiet).await?;
        alive = finer_alive.max(alive);
        expired = finer_expired.or(expired);
    }
    Ok((alive, expired))
}

/// One pass: X sockets for each of `waits` (increasing), probed in order until one mapping
/// has expired. The longest wait alive and the first one expired.
async fn lifetime_pass(
    prober: &mut StunSocket,
    server: SocketAddr,
    waits: &[Duration],
    timeout: Duration,
    quiet: Duration,
) -> Result<(Option<Duration>, Option<Duration>), String> {
    let mut idle = Vec::with_capacity(waits.len());
    for &wait in waits {
        idle.push((wait, open_mapping(server, timeout).await?));
    }
    let mut alive = None;
    for (wait, mapping) in idle {
        tokio::time::sleep_until((mapping.since + wait).into()).await;
        match probe(prober, server, &mapping, quiet).await {
            Probe::Alive => alive = Some(wait),
            Probe::Expired => return Ok((alive, Some(wait))),
            Probe::Unsupported(why) => return Err(why),
        }
    }
    Ok((alive, None))
}

/// A socket X with a fresh mapping, waiting to be probed (RFC 5780 §4.6).
struct IdleMapping {
    socket: StunSocket,
    mapped: SocketAddr,
    since: Instant,
}

/// What probing an idle mapping found.
enum Probe {
    Alive,
    Expired,
    /// The server answered the probe itself: with an error, or to the prober's own port.
    Unsupported(String),
}

/// A fresh socket X with a mapping towards `server`.
async fn open_mapping(server: SocketAddr, timeout: Duration) -> Result<IdleMapping, String> {
    let mut socket = StunSocket::for_server(server)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    let (answer, _) = ask(&mut socket, server, NO_CHANGE, timeout)
        .await
        .map_err(|failure| failure.describe(server, timeout))?;
    Ok(IdleMapping {
        socket,
        mapped: answer.address,
        since: Instant::now(),
    })
}

/// Asks `server`, from `prober`, to answer on `mapping`'s mapped port.
async fn probe(
    prober: &mut StunSocket,
    server: SocketAddr,
    mapping: &IdleMapping,
    quiet: Duration,
) -> Probe {
    let id = prober.transaction_id();
    let Ok(request) = net::binding_request(id, NO_CHANGE, Some(mapping.mapped.port())) else {
        return Probe::Unsupported("cannot write a request with RESPONSE-PORT".into());
    };
    let prober = &*prober;
    tokio::select! {
        got = send_until_received(prober, server, &request, &mapping.socket, &id, quiet) => {
            if got.is_some() { Probe::Alive } else { Probe::Expired }
        }
        Some(own) = prober.receive(&id, quiet) => Probe::Unsupported(match read_answer(&own.bytes) {
            Answer::Refused(refusal) => format!(
                "the server refused RESPONSE-PORT ({}), which measuring the mapping lifetime \
                 needs",
                refusal.describe()
            ),
            _ => "the server ignored RESPONSE-PORT and answered the probing socket itself, so \
                  the mapping lifetime cannot be measured"
                .into(),
        }),
    }
}

/// Waits for the first pass: 1 s, doubled while below `max`, then `max` itself.
fn doubling_waits(max: Duration) -> Vec<Duration> {
    let mut waits = Vec::new();
    let mut wait = Duration::from_secs(1);
    while wait < max {
        waits.push(wait);
        wait = wait.saturating_mul(2);
    }
    waits.push(max);
    waits
}

/// Waits for the second pass: `parts - 1` points cutting `alive..expired` evenly, on whole
/// tenths of a second; none when the interval is a second or less already.
fn refine_waits(alive: Duration, expired: Duration, parts: u32) -> Vec<Duration> {
    let width = expired.saturating_sub(alive);
    if width <= Duration::from_secs(1) || parts < 2 {
        return Vec::new();
    }
    let mut waits: Vec<Duration> = (1..parts)
        .map(|k| {
            let point = alive + width * k / parts;
            Duration::from_millis(point.as_millis().div_ceil(100) as u64 * 100)
        })
        .filter(|&w| w > alive && w < expired)
        .collect();
    waits.dedup();
    waits
}

/// The `mapping-lifetime` value and its lower bound, from the longest idle time a mapping
/// survived and the shortest it did not.
fn lifetime_value(
    alive: Option<Duration>,
    expired: Option<Duration>,
    max: Duration,
) -> (String, Duration) {
    match (alive, expired) {
        (Some(low), Some(high)) => (
            format!("between {} and {} s", seconds(low), seconds(high)),
            low,
        ),
        (None, Some(high)) => (format!("shorter than {} s", seconds(high)), Duration::ZERO),
        (Some(low), None) => (format!("longer than {} s", seconds(max.max(low))), low),
        (None, None) => ("not measured".into(), Duration::ZERO),
    }
}

/// `2`, `2.5`.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if duration.subsec_millis() == 0 {
        format!("{secs:.0}")
    } else {
        format!("{secs:.1}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn secs(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_secs(v)).collect()
    }

    #[test]
    fn the_lifetime_search_doubles_up_to_the_limit() {
        assert_eq!(
            doubling_waits(Duration::from_secs(10)),
            secs(&[1, 2, 4, 8, 10])
        );
        assert_eq!(doubling_waits(Duration::from_secs(8)), secs(&[1, 2, 4, 8]));
        assert_eq!(doubling_waits(Duration::from_secs(1)), secs(&[1]));
        let short = Duration::from_millis(500);
        assert_eq!(doubling_waits(short), vec![short]);
    }

    #[test]
    fn the_lifetime_search_refines_between_alive_and_expired() {
        let waits = refine_waits(Duration::from_secs(16), Duration::from_secs(32), 8);
        assert_eq!(waits, secs(&[18, 20, 22, 24, 26, 28, 30]));
        let waits = refine_waits(Duration::from_secs(2), Duration::from_secs(4), 8);
        assert_eq!(waits.len(), 7);
        assert_eq!(waits[0], Duration::from_millis(2300));
        assert!(waits.windows(2).all(|w| w[0] < w[1]));
        assert!(refine_waits(Duration::from_secs(1), Duration::from_secs(2), 8).is_empty());
        assert!(refine_waits(Duration::from_secs(4), Duration::from_secs(2), 8).is_empty());
    }

    #[test]
    fn lifetime_values_give_bounds() {
        let max = Duration::from_secs(120);
        let s = Duration::from_secs;
        assert_eq!(
            lifetime_value(Some(s(28)), Some(s(30)), max),
            ("between 28 and 30 s".to_owned(), s(28))
        );
        assert_eq!(
            lifetime_value(Some(Duration::from_millis(2300)), Some(s(3)), max),
            (
                "between 2.3 and 3 s".to_owned(),
                Duration::from_millis(2300)
            )
        );
        assert_eq!(
            lifetime_value(Some(max), None, max),
            ("longer than 120 s".to_owned(), max)
        );
        assert_eq!(
            lifetime_value(None, Some(s(1)), max),
            ("shorter than 1 s".to_owned(), Duration::ZERO)
        );
    }
}
