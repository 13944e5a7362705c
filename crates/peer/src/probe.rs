//! The test datagrams: the offerer's probes, the answerer's echoes, and what the offerer
//! makes of them (RTT and loss).
//!
//! A datagram is a 13-byte header and zero padding up to `--size`:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `0x80` probe, `0x81` echo: at least `0x80` so that it never looks like STUN (RFC 7983) |
//! | 1..5 | sequence number, big-endian, from 0 |
//! | 5..13 | the probe's send time in microseconds since the offerer started, big-endian |
//!
//! The answerer echoes a probe byte for byte but for the first, so the offerer reads its own
//! send time back and needs no clock in common with the answerer.

use std::time::Duration;

use serde::Serialize;

/// The first byte of a probe.
pub const PROBE: u8 = 0x80;
/// The first byte of an echo.
pub const ECHO: u8 = 0x81;
// STUN's first two bits are zero (RFC 7983); a probe's or an echo's never are.
const _: () = assert!(PROBE >= 0x80 && ECHO >= 0x80);

/// The header's length: the smallest `--size`.
pub const HEADER_LEN: usize = 13;

/// A probe of `size` bytes (at least [`HEADER_LEN`]).
pub fn probe(seq: u32, sent_us: u64, size: usize) -> Vec<u8> {
    let mut datagram = vec![0u8; size.max(HEADER_LEN)];
    datagram[0] = PROBE;
    datagram[1..5].copy_from_slice(&seq.to_be_bytes());
    datagram[5..13].copy_from_slice(&sent_us.to_be_bytes());
    datagram
}

/// The echo of a probe, or None when `datagram` is not a probe.
pub fn echo(datagram: &[u8]) -> Option<Vec<u8>> {
    if datagram.len() < HEADER_LEN || datagram[0] != PROBE {
        return None;
    }
    let mut echo = datagram.to_vec();
    echo[0] = ECHO;
    Some(echo)
}

/// The sequence number and send time of an echo, or None when `datagram` is not an echo.
pub fn parse_echo(datagram: &[u8]) -> Option<(u32, u64)> {
    if datagram.len() < HEADER_LEN || datagram[0] != ECHO {
        return None;
    }
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&datagram[1..5]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&datagram[5..13]);
    Some((u32::from_be_bytes(seq), u64::from_be_bytes(sent)))
}

/// Round-trip times in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RttStats {
    /// The shortest.
    pub min: f64,
    /// The mean.
    pub mean: f64,
    /// The 95th percentile (nearest rank).
    pub p95: f64,
    /// The longest.
    pub max: f64,
}

/// What the offerer sent and what came back.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Whether the probe of each sequence number was echoed.
    echoed: Vec<bool>,
    rtts: Vec<Duration>,
}

impl Transfer {
    /// A transfer with nothing sent.
    pub fn new() -> Transfer {
        Transfer::default()
    }

    /// Probes sent.
    pub fn sent(&self) -> u32 {
        u32::try_from(self.echoed.len()).unwrap_or(u32::MAX)
    }

    /// Probes echoed (each counted once).
    pub fn echoed(&self) -> u32 {
        u32::try_from(self.rtts.len()).unwrap_or(u32::MAX)
    }

    /// Records the next probe as sent and returns its sequence number.
    pub fn next_sent(&mut self) -> u32 {
        let seq = self.sent();
        self.echoed.push(false);
        seq
    }

    /// Records an echo that arrived `now_us` after the start; false when it is not one of
    /// ours or a duplicate.
    pub fn on_echo(&mut self, seq: u32, sent_us: u64, now_us: u64) -> bool {
        let Some(seen) = usize::try_from(seq)
            .ok()
            .and_then(|i| self.echoed.get_mut(i))
        else {
            return false;
        };
        if *seen || sent_us > now_us {
            return false;
        }
        *seen = true;
        self.rtts.push(Duration::from_micros(now_us - sent_us));
        true
    }

    /// The share of probes not echoed, 0 when nothing was sent.
    pub fn loss(&self) -> f64 {
        let sent = self.sent();
        if sent == 0 {
            return 0.0;
        }
        f64::from(sent - self.echoed()) / f64::from(sent)
    }

    /// RTT statistics, None when nothing was echoed.
    pub fn rtt(&self) -> Option<RttStats> {
        rtt_stats(&self.rtts)
    }
}

/// Min, mean, 95th percentile (nearest rank) and max of `samples`, in milliseconds.
pub fn rtt_stats(samples: &[Duration]) -> Option<RttStats> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    // Nearest rank: the smallest sample with at least 95 % of them at or below it.
    let rank = (n * 95).div_ceil(100).max(1);
    let mean = ms.iter().sum::<f64>() / n as f64;
    Some(RttStats {
        min: round3(ms[0]),
        mean: round3(mean),
        p95: round3(ms[rank - 1]),
        max: round3(ms[n - 1]),
    })
}

/// Rounds to the microsecond when the value is in milliseconds: finer is noise.
pub fn round3(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_probe_echoes_back_with_its_number_and_time() {
        let p = probe(7, 123_456, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(p[0], PROBE);
        assert!(parse_echo(&p).is_none());
        let e = echo(&p).unwrap();
        assert_eq!(e.len(), 100);
        assert_eq!(parse_echo(&e), Some((7, 123_456)));
        assert!(echo(&e).is_none(), "an echo is not echoed again");
        assert_eq!(probe(0, 0, 1).len(), HEADER_LEN);
        assert!(echo(&[PROBE; 5]).is_none());
    }

    #[test]
    fn loss_counts_probes_never_echoed_and_ignores_duplicates() {
        let mut t = Transfer::new();
        for _ in 0..4 {
            t.next_sent();
        }
        assert!(t.on_echo(0, 0, 1_000));
        assert!(!t.on_echo(0, 0, 2_000), "a duplicate");
        assert!(t.on_echo(2, 100, 600));
        assert!(!t.on_echo(9, 0, 1_000), "never sent");
        assert_eq!((t.sent(), t.echoed()), (4, 2));
        assert!((t.loss() - 0.5).abs() < 1e-9);
        let rtt = t.rtt().unwrap();
        assert_eq!((rtt.min, rtt.max, rtt.mean), (0.5, 1.0, 0.75));
        assert_eq!(Transfer::new().loss(), 0.0);
        assert!(Transfer::new().rtt().is_none());
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let stats = rtt_stats(&samples).unwrap();
        assert_eq!((stats.min, stats.p95, stats.max), (1.0, 95.0, 100.0));
        assert_eq!(stats.mean, 50.5);
        let one = rtt_stats(&[Duration::from_micros(1500)]).unwrap();
        assert_eq!((one.min, one.mean, one.p95, one.max), (1.5, 1.5, 1.5, 1.5));
        let twenty: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(rtt_stats(&twenty).unwrap().p95, 19.0);
    }
}
