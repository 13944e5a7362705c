//! The bounded load: many allocations in a ring, each sending a steady stream of stamped
//! datagrams over a channel to the next one's relayed address for a fixed time, then all
//! released.
//!
//! It measures what the server relays under a known, bounded offered load: loss, round-trip
//! times through the server twice, and the relayed rate. It stops by itself
//! [`DRAIN`] after the duration; every allocation is released at the end, and a
//! dropped session releases its own (see [`TurnSession`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::net::TurnSession;
use crate::report::Check;
use crate::stats::{LatencyHistogram, loss_ratio, millis, percent};
use crate::stream::Dialer;
use crate::turn_checks::{Stamp, explain_session};
use crate::{Credentials, LoadSettings, Settings, Target};

/// Allocations, channel bindings or deallocations under way at once: enough to go fast,
/// few enough that the server does not take the probe for a flood.
pub const MAX_IN_FLIGHT: usize = 20;

/// Allocates started per second. Servers rate-limit the 401 challenges one source address
/// gets (icebreaker 20 per second and worker, others similarly), and every Allocate starts
/// with one: a faster start would measure the limiter, not the relay.
pub const ALLOCATE_RATE: u32 = 10;

/// How long datagrams may still arrive after the sending stopped.
pub const DRAIN: Duration = Duration::from_secs(1);

/// The loss above which the load fails.
pub const MAX_LOSS: f64 = 0.01;

/// A sender that falls this far behind its schedule (this host is saturated) skips the
/// missed datagrams rather than sending them in a burst.
const MAX_LAG: Duration = Duration::from_millis(100);

/// Datagrams a member sends in a row, when behind schedule, before it reads again.
const MAX_BURST: u32 = 16;

/// Both load checks skipped for `reason`.
pub fn skipped(label: &str, reason: &str) -> Vec<Check> {
    vec![
        Check::skip(label, "load-allocate", reason),
        Check::skip(label, "load-relay", reason),
    ]
}

/// Runs the load against `target`: checks `load-allocate` and `load-relay`. Over TCP and
/// TLS each allocation has its own connection, over DTLS its own association.
pub async fn load(target: &Target, settings: &Settings, load: LoadSettings) -> Vec<Check> {
    let label = target.label();
    let skip_both = |reason: &str| {
        vec![
            Check::skip(&label, "load-allocate", reason),
            Check::skip(&label, "load-relay", reason),
        ]
    };
    let Some(credentials) = &settings.credentials else {
        return skip_both("no credentials: give --user and --password, or --secret");
    };
    if load.allocations == 0 {
        return skip_both("no allocations asked for");
    }

    let started = Instant::now();
    let dialer = Dialer::new(target, settings);
    let allocated = allocate_all(&dialer, credentials, settings.timeout, load).await;
    let allocate_seconds = started.elapsed().as_secs_f64();
    let mut members = Vec::new();
    let mut failures = Vec::new();
    for outcome in allocated {
        match outcome {
            Ok(member) => members.push(member),
            Err(explanation) => failures.push(explanation),
        }
    }
    let value = format!(
        "{} of {} allocations in {allocate_seconds:.1} s",
        members.len(),
        load.allocations
    );
    let mut checks = Vec::new();
    let allocate_check = match failures.first() {
        None => Check::pass(&label, "load-allocate", value),
        Some(first) => Check::fail(
            &label,
            "load-allocate",
            value,
            format!("{} failed; the first: {first}", failures.len()),
        ),
    };
    checks.push(allocate_check.with_metric("load_allocate_seconds", allocate_seconds));

    let relay_check = if !failures.is_empty() {
        Check::skip(
            &label,
            "load-relay",
            "depends on load-allocate, which failed",
        )
    } else if load.rate == 0 || load.duration.is_zero() {
        Check::skip(
            &label,
            "load-relay",
            "nothing to send: the rate or duration is 0",
        )
    } else {
        let (ring, bind_failures) = connect_ring(members, credentials).await;
        members = ring;
        match bind_failures.first() {
            Some(first) => Check::fail(
                &label,
                "load-relay",
                "",
                format!(
                    "{} of {} channel bindings failed; the first: {first}",
                    bind_failures.len(),
                    members.len()
                ),
            ),
            None => {
                let (ring, tally) = exchange(members, load).await;
                members = ring;
                relay_check(&label, &tally, load.duration)
            }
        }
    };
    checks.push(relay_check);
    release_all(members).await;
    checks
}

/// An allocation of the ring.
struct Member {
    session: TurnSession,
    relayed: SocketAddr,
    /// The next member's relayed address, where this one sends.
    next: SocketAddr,
}

/// What the ring sent and measured.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    received: u64,
    /// Datagrams the session could not send, and the first reason.
    unsent: u64,
    first_send_error: Option<String>,
    rtts: LatencyHistogram,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.received += other.received;
        self.unsent += other.unsent;
        if self.first_send_error.is_none() {
            self.first_send_error = other.first_send_error;
        }
        self.rtts.merge(&other.rtts);
    }
}

/// `load.allocations` allocations, [`ALLOCATE_RATE`] started per second and at most
/// [`MAX_IN_FLIGHT`] Allocates at a time: each a
/// member (its `next` still unset) or the explanation of its failure.
async fn allocate_all(
    dialer: &Dialer,
    credentials: &Credentials,
    timeout: Duration,
    load: LoadSettings,
) -> Vec<Result<Member, String>> {
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs(1) / ALLOCATE_RATE;
    let jobs = (0..load.allocations)
        .map(|index| {
            (
                start + interval * index,
                credentials.clone(),
                dialer.clone(),
            )
        })
        .collect();
    let outcomes = bounded(
        jobs,
        MAX_IN_FLIGHT,
        move |(at, credentials, dialer): (tokio::time::Instant, Credentials, Dialer)| async move {
            tokio::time::sleep_until(at).await;
            let mut session = TurnSession::open(
                &dialer,
                &credentials.username,
                &credentials.password,
                timeout,
            )
            .await
            .map_err(|e| e.explain(&dialer))?;
            match session.allocate().await {
                Ok((relayed, _mapped, _lifetime)) => Ok(Member {
                    session,
                    relayed,
                    next: relayed,
                }),
                Err(error) => Err(explain_session(&session, &error, &credentials)),
            }
        },
    )
    .await;
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err("the allocation task failed".to_owned())))
        .collect()
}

/// Closes the ring: each member binds a channel to the next member's relayed address, and
/// lets the previous member's in. The members back, and the explanations of the failures.
async fn connect_ring(
    mut members: Vec<Member>,
    credentials: &Credentials,
) -> (Vec<Member>, Vec<String>) {
    let count = members.len();
    let relayed: Vec<SocketAddr> = members.iter().map(|m| m.relayed).collect();
    let mut jobs = Vec::with_capacity(count);
    for (index, mut member) in members.drain(..).enumerate() {
        member.next = relayed[(index + 1) % count];
        let previous = relayed[(index + count - 1) % count];
        jobs.push((member, previous, credentials.clone()));
    }
    let outcomes = bounded(
        jobs,
        MAX_IN_FLIGHT,
        |(mut member, previous, credentials)| async move {
            let mut outcome = member.session.bind_channel(member.next).await.map(|_| ());
            // The channel brings a permission for the next member's IP; the previous member
            // needs its own only when its IP differs (the client waits for no answer to a
            // permission it already holds).
            if outcome.is_ok() && previous.ip() != member.next.ip() {
                outcome = member.session.create_permission(previous).await;
            }
            let outcome =
                outcome.map_err(|error| explain_session(&member.session, &error, &credentials));
            (member, outcome)
        },
    )
    .await;
    let mut failures = Vec::new();
    for (member, outcome) in outcomes.into_iter().flatten() {
        if let Err(explanation) = outcome {
            failures.push(explanation);
        }
        members.push(member);
    }
    if members.len() < count {
        failures.push("a channel binding task failed".to_owned());
    }
    (members, failures)
}

/// Every member sends `load.rate` datagrams per second to the next for `load.duration` and
/// receives from the previous one, all at once; ends [`DRAIN`] after the sending.
async fn exchange(members: Vec<Member>, load: LoadSettings) -> (Vec<Member>, Tally) {
    let count = members.len() as u32;
    let stamp = Stamp::new();
    let interval = Duration::from_secs(1) / load.rate.max(1);
    // A moment to spawn every task, so that all start on the same schedule.
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    for (index, member) in members.into_iter().enumerate() {
        // Senders spread over the interval rather than all sending in the same instant.
        let offset = interval * index as u32 / count.max(1);
        tasks.spawn(run_member(
            member,
            stamp,
            start + offset,
            start,
            load,
            interval,
        ));
    }
    let mut members = Vec::new();
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        // A task that panicked dropped its session, which released its allocation.
        if let Ok((member, tally)) = joined {
            members.push(member);
            total.merge(tally);
        }
    }
    (members, total)
}

/// One member's part of the exchange.
async fn run_member(
    mut member: Member,
    stamp: Stamp,
    first_send: Instant,
    start: Instant,
    load: LoadSettings,
    interval: Duration,
) -> (Member, Tally) {
    let end = start + load.duration;
    let drain_end = end + DRAIN;
    let mut tally = Tally::default();
    let mut next_send = first_send;
    let mut sequence = 0u32;
    let mut burst = 0;
    loop {
        let now = Instant::now();
        if now >= drain_end {
            break;
        }
        if next_send < end && next_send <= now && burst < MAX_BURST {
            burst += 1;
            let datagram = stamp.write(sequence, now, load.size);
            match member.session.send_to(member.next, &datagram).await {
                Ok(()) => tally.sent += 1,
                Err(error) => {
                    tally.unsent += 1;
                    tally
                        .first_send_error
                        .get_or_insert_with(|| error.to_string());
                }
            }
            sequence = sequence.wrapping_add(1);
            next_send += interval;
            if now.saturating_duration_since(next_send) > MAX_LAG {
                next_send = now + interval;
            }
            continue;
        }
        let wake = if burst >= MAX_BURST {
            // Behind schedule: read what has arrived before sending on, so that this
            // socket's receive buffer does not overflow while the sender catches up.
            now + Duration::from_millis(1)
        } else if next_send < end {
            next_send
        } else {
            drain_end
        };
        burst = 0;
        if let Some(received) = member.session.receive(wake).await
            && let Some((_, rtt)) = stamp.read(&received.data, received.at)
        {
            tally.received += 1;
            tally.rtts.record(rtt);
        }
    }
    (member, tally)
}

/// The `load-relay` check for what the ring measured.
fn relay_check(label: &str, tally: &Tally, duration: Duration) -> Check {
    let loss = loss_ratio(tally.sent, tally.received);
    let per_second = tally.received as f64 / duration.as_secs_f64().max(f64::EPSILON);
    let rtt = match (tally.rtts.quantile(50), tally.rtts.quantile(95)) {
        (Some(p50), Some(p95)) => format!(
            "rtt p50/p95/max {} / {} / {} ms",
            millis(p50),
            millis(p95),
            millis(tally.rtts.max())
        ),
        _ => "no rtt".to_owned(),
    };
    let value = format!(
        "sent {}, received {} ({} % loss), {rtt}, {per_second:.0} datagrams/s",
        tally.sent,
        tally.received,
        percent(loss)
    );
    let mut problems = Vec::new();
    if tally.sent == 0 {
        problems.push("nothing could be sent".to_owned());
    } else if tally.received == 0 {
        problems.push(
            "nothing came back: the server accepted the channels but relayed nothing (its \
             relay ports are firewalled, or its relay IP or external IP is wrong)"
                .to_owned(),
        );
    } else if loss > MAX_LOSS {
        problems.push(format!(
            "{} % of the datagrams were lost, more than {} %: the server is overloaded (its \
             CPU), a per-allocation bandwidth limit drops them (icebreaker --max-bandwidth, \
             coturn max-bps), or this host's socket buffers overflowed (raise \
             net.core.rmem_max, or lower the rate or the allocations)",
            percent(loss),
            percent(MAX_LOSS)
        ));
    }
    if let Some(error) = &tally.first_send_error {
        problems.push(format!(
            "{} datagrams could not be sent: {error}",
            tally.unsent
        ));
    }
    let check = if problems.is_empty() {
        Check::pass(label, "load-relay", value)
    } else {
        Check::fail(label, "load-relay", value, problems.join("; "))
    };
    let p95 = tally.rtts.quantile(95).unwrap_or_default();
    check
        .with_metric("load_sent_total", tally.sent as f64)
        .with_metric("load_received_total", tally.received as f64)
        .with_metric("loss_ratio", loss)
        .with_metric("rtt_p95_seconds", p95.as_secs_f64())
        .with_metric("datagrams_per_second", per_second)
}

/// Releases every member's allocation, at most [`MAX_IN_FLIGHT`] at a time.
async fn release_all(members: Vec<Member>) {
    let sessions = members.into_iter().map(|m| m.session).collect();
    bounded(
        sessions,
        MAX_IN_FLIGHT,
        |mut session: TurnSession| async move {
            // The client ends a deallocation without an answer too: nothing more to do then.
            let _ = session.deallocate().await;
        },
    )
    .await;
}

/// Runs `work` on every job as tokio tasks, at most `limit` at a time; the outputs in the
/// order of the jobs, `None` for a task that panicked.
async fn bounded<J, O, F, W>(jobs: Vec<J>, limit: usize, work: W) -> Vec<Option<O>>
where
    J: Send + 'static,
    O: Send + 'static,
    F: Future<Output = O> + Send + 'static,
    W: Fn(J) -> F,
{
    let mut outputs: Vec<Option<O>> = jobs.iter().map(|_| None).collect();
    let mut pending = jobs.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < limit.max(1) {
            let Some((index, job)) = pending.next() else {
                break;
            };
            let future = work(job);
            tasks.spawn(async move { (index, future.await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        if let Ok((index, output)) = joined
            && let Some(slot) = outputs.get_mut(index)
        {
            *slot = Some(output);
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn tally(sent: u64, received: u64, rtt_micros: &[u64]) -> Tally {
        let mut rtts = LatencyHistogram::new();
        for &micros in rtt_micros {
            rtts.record(Duration::from_micros(micros));
        }
        Tally {
            sent,
            received,
            rtts,
            ..Tally::default()
        }
    }

    #[test]
    fn little_loss_passes_and_reads_as_asked() {
        let check = relay_check(
            "turn:a",
            &tally(16_000, 15_990, &[300, 310, 800, 4_200]),
            Duration::from_secs(10),
        );
        assert_eq!(check.status, crate::report::Status::Pass, "{check:?}");
        assert!(
            check
                .value
                .starts_with("sent 16000, received 15990 (0.06 % loss), rtt p50/p95/max 0.31 / "),
            "{}",
            check.value
        );
        assert!(
            check.value.ends_with(" / 4.20 ms, 1599 datagrams/s"),
            "{}",
            check.value
        );
        let names: Vec<&str> = check.metrics.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "load_sent_total",
                "load_received_total",
                "loss_ratio",
                "rtt_p95_seconds",
                "datagrams_per_second"
            ]
        );
    }

    #[test]
    fn more_than_one_percent_loss_fails_with_the_causes() {
        let check = relay_check("turn:a", &tally(1_000, 980, &[300]), Duration::from_secs(1));
        assert_eq!(check.status, crate::report::Status::Fail);
        let explanation = check.explanation.unwrap();
        assert!(
            explanation.contains("2 % of the datagrams were lost"),
            "{explanation}"
        );
        assert!(explanation.contains("socket buffers"), "{explanation}");

        let nothing = relay_check("turn:a", &tally(100, 0, &[]), Duration::from_secs(1));
        assert_eq!(nothing.status, crate::report::Status::Fail);
        assert!(nothing.value.contains("no rtt"), "{}", nothing.value);
        assert!(nothing.explanation.unwrap().contains("relayed nothing"));
    }

    #[tokio::test]
    async fn bounded_keeps_the_order_and_the_limit() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<usize> = (0..50).collect();
        let outputs = bounded(jobs, 7, |job| {
            let running = Arc::clone(&running);
            let most = Arc::clone(&most);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis((job % 5) as u64)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                job * 2
            }
        })
        .await;
        let expected: Vec<Option<usize>> = (0..50).map(|j| Some(j * 2)).collect();
        assert_eq!(outputs, expected);
        assert!(most.load(Ordering::SeqCst) <= 7);
    }
}
