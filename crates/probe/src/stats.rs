//! Round-trip time statistics shared by the STUN and TURN checks: minimum, mean, 95th
//! percentile and maximum of a set of samples, in the words and metrics the report uses.

use std::time::Duration;

use crate::report::Check;

/// Minimum, mean, 95th percentile and maximum of round-trip times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttStats {
    /// The shortest sample.
    pub min: Duration,
    /// The arithmetic mean.
    pub mean: Duration,
    /// The 95th percentile by nearest rank: the smallest sample that at least 95 % of the
    /// samples do not exceed.
    pub p95: Duration,
    /// The longest sample.
    pub max: Duration,
}

impl RttStats {
    /// The statistics of `samples`, or `None` when there are none.
    pub fn from_samples(samples: &[Duration]) -> Option<RttStats> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let min = *sorted.first()?;
        let max = *sorted.last()?;
        let total: Duration = sorted.iter().sum();
        // Durations add up to far more than u32::MAX samples could hold, so the division
        // goes through nanoseconds as u128 to stay exact for any count.
        let mean_nanos = total.as_nanos() / sorted.len() as u128;
        let mean = Duration::from_nanos(u64::try_from(mean_nanos).unwrap_or(u64::MAX));
        Some(RttStats {
            min,
            mean,
            p95: nearest_rank(&sorted, 95),
            max,
        })
    }

    /// `0.21 / 0.25 / 0.40 ms (min / mean / p95)`.
    pub fn summary(&self) -> String {
        format!(
            "{} / {} / {} ms (min / mean / p95)",
            millis(self.min),
            millis(self.mean),
            millis(self.p95)
        )
    }

    /// `check` with `rtt_min_seconds`, `rtt_mean_seconds` and `rtt_p95_seconds` added.
    pub fn metrics(&self, check: Check) -> Check {
        check
            .with_metric("rtt_min_seconds", self.min.as_secs_f64())
            .with_metric("rtt_mean_seconds", self.mean.as_secs_f64())
            .with_metric("rtt_p95_seconds", self.p95.as_secs_f64())
    }
}

/// The `percent`th percentile of sorted, non-empty `sorted` by nearest rank: the sample at
/// rank ⌈percent/100 × n⌉ (1-based). Returns zero for an empty slice.
pub fn nearest_rank(sorted: &[Duration], percent: u32) -> Duration {
    let count = sorted.len();
    let rank = (count * percent.min(100) as usize).div_ceil(100).max(1);
    sorted
        .get(rank.min(count).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Milliseconds with two decimals: `0.21`.
pub fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// Round-trip times counted in buckets, for runs with too many samples to keep: memory grows
/// with the longest time seen, not with the count. Buckets are 1 µs wide below 128 µs, then
/// 64 per power of two, so a quantile is within 1.6 % of the true sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

/// Bits of sub-bucket precision above the linear range.
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Values below this many microseconds get a bucket each.
const LINEAR_MICROS: u64 = SUB_BUCKETS * 2;
/// Longer times (about 12 days) share the last bucket, so that a bogus sample cannot make
/// the table large.
const LONGEST_MICROS: u64 = 1 << 40;

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// Counts one sample.
    pub fn record(&mut self, sample: Duration) {
        let micros = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        let index = bucket_of(micros.min(LONGEST_MICROS));
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        if let Some(count) = self.counts.get_mut(index) {
            *count += 1;
        }
        self.total += 1;
        self.max = self.max.max(sample);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many samples were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The longest sample, exactly; zero when empty.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The `percent`th percentile by nearest rank, as the middle of its bucket (never above
    /// the longest sample); `None` when empty.
    pub fn quantile(&self, percent: u32) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = (self.total * u64::from(percent.min(100)))
            .div_ceil(100)
            .max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (lower, width) = bucket_bounds(index);
                let middle = Duration::from_micros(lower + width / 2);
                return Some(middle.min(self.max));
            }
        }
        Some(self.max)
    }
}

/// The bucket of a time in microseconds.
fn bucket_of(micros: u64) -> usize {
    let index = if micros < LINEAR_MICROS {
        micros
    } else {
        // The highest bit picks the power of two, the next SUB_BUCKET_BITS the sub-bucket.
        let exponent = u64::from(63 - micros.leading_zeros());
        let shift = exponent - u64::from(SUB_BUCKET_BITS);
        let sub = (micros >> shift) - SUB_BUCKETS;
        LINEAR_MICROS + (shift - 1) * SUB_BUCKETS + sub
    };
    usize::try_from(index).unwrap_or(usize::MAX)
}

/// The lowest time of bucket `index` in microseconds, and its width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR_MICROS {
        return (index, 1);
    }
    let above = index - LINEAR_MICROS;
    let shift = above / SUB_BUCKETS + 1;
    let sub = above % SUB_BUCKETS;
    ((SUB_BUCKETS + sub) << shift, 1 << shift)
}

/// The share of `sent` that did not arrive, 0 to 1; duplicates never make it negative.
pub fn loss_ratio(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    sent.saturating_sub(received) as f64 / sent as f64
}

/// A ratio as a percentage with at most two decimals: `0`, `5`, `0.06`.
pub fn percent(ratio: f64) -> String {
    let text = format!("{:.2}", ratio * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn micros(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_micros(v)).collect()
    }

    #[test]
    fn no_samples_give_no_statistics() {
        assert_eq!(RttStats::from_samples(&[]), None);
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let stats = RttStats::from_samples(&micros(&[250])).unwrap();
        let d = Duration::from_micros(250);
        assert_eq!(
            stats,
            RttStats {
                min: d,
                mean: d,
                p95: d,
                max: d
            }
        );
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        // 20 samples 1..=20 ms: rank ⌈0.95 × 20⌉ = 19.
        let samples: Vec<Duration> = (1..=20).rev().map(Duration::from_millis).collect();
        let stats = RttStats::from_samples(&samples).unwrap();
        assert_eq!(stats.min, Duration::from_millis(1));
        assert_eq!(stats.max, Duration::from_millis(20));
        assert_eq!(stats.p95, Duration::from_millis(19));
        assert_eq!(stats.mean, Duration::from_micros(10_500));

        // 10 samples: rank ⌈9.5⌉ = 10, the maximum.
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(
            RttStats::from_samples(&samples).unwrap().p95,
            Duration::from_millis(10)
        );

        // 100 samples: rank 95.
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            RttStats::from_samples(&samples).unwrap().p95,
            Duration::from_millis(95)
        );
    }

    #[test]
    fn nearest_rank_handles_the_edges() {
        let sorted = micros(&[1, 2, 3, 4]);
        assert_eq!(nearest_rank(&sorted, 0), Duration::from_micros(1));
        assert_eq!(nearest_rank(&sorted, 50), Duration::from_micros(2));
        assert_eq!(nearest_rank(&sorted, 100), Duration::from_micros(4));
        assert_eq!(nearest_rank(&sorted, 250), Duration::from_micros(4));
        assert_eq!(nearest_rank(&[], 95), Duration::ZERO);
    }

    #[test]
    fn summary_and_metrics_read_as_the_report_wants() {
        let stats = RttStats::from_samples(&micros(&[210, 250, 290, 400])).unwrap();
        assert_eq!(stats.summary(), "0.21 / 0.29 / 0.40 ms (min / mean / p95)");
        let check = stats.metrics(Check::pass("stun:a", "binding", stats.summary()));
        let names: Vec<&str> = check.metrics.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            ["rtt_min_seconds", "rtt_mean_seconds", "rtt_p95_seconds"]
        );
        assert!((check.metrics[2].value - 0.0004).abs() < 1e-12);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous_end = 0;
        for index in 0..2_000 {
            let (lower, width) = bucket_bounds(index);
            assert_eq!(lower, previous_end, "bucket {index}");
            assert_eq!(bucket_of(lower), index);
            assert_eq!(bucket_of(lower + width - 1), index);
            // Within 1/64 of the bucket's lowest value.
            assert!(width == 1 || width * 64 <= lower, "bucket {index}");
            previous_end = lower + width;
        }
    }

    #[test]
    fn histogram_quantiles_are_close_to_the_samples() {
        let mut histogram = LatencyHistogram::new();
        assert_eq!(histogram.quantile(50), None);
        for micros in 1..=1_000 {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.count(), 1_000);
        assert_eq!(histogram.max(), Duration::from_micros(1_000));
        let within = |got: Duration, want: u64| {
            let got = got.as_micros() as f64;
            (got - want as f64).abs() <= want as f64 / 64.0 + 1.0
        };
        assert!(within(histogram.quantile(50).unwrap(), 500));
        assert!(within(histogram.quantile(95).unwrap(), 950));
        assert_eq!(histogram.quantile(100), Some(Duration::from_micros(1_000)));
        assert_eq!(histogram.quantile(0), Some(Duration::from_micros(1)));

        let mut merged = LatencyHistogram::new();
        let mut slow = LatencyHistogram::new();
        slow.record(Duration::from_secs(2));
        merged.merge(&slow);
        merged.merge(&histogram);
        assert_eq!(merged.count(), 1_001);
        assert_eq!(merged.max(), Duration::from_secs(2));
        assert!(within(merged.quantile(50).unwrap(), 501));
    }

    #[test]
    fn a_huge_sample_does_not_grow_the_table_without_bound() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(Duration::MAX);
        assert!(histogram.counts.len() < 3_000);
        assert!(histogram.quantile(50).unwrap() >= Duration::from_micros(LONGEST_MICROS));
    }

    #[test]
    fn loss_reads_as_a_short_percentage() {
        assert_eq!(percent(loss_ratio(20, 20)), "0");
        assert_eq!(percent(loss_ratio(20, 19)), "5");
        assert_eq!(percent(loss_ratio(16_000, 15_990)), "0.06");
        assert_eq!(percent(loss_ratio(3, 0)), "100");
        assert_eq!(loss_ratio(10, 12), 0.0);
        assert_eq!(loss_ratio(0, 0), 0.0);
    }
}
