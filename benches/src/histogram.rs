//! A log-linear latency histogram in the manner of HdrHistogram: exact below
//! 128, then 128 linear sub-buckets per power of two, so a recorded value is
//! reported within 1/128 (< 0.8 %) of itself. Recording is O(1) with no
//! allocation; histograms of different clients merge by adding counts.
//!
//! Invariants: `count == counts.iter().sum()`; `min`/`max` are the exact
//! extremes of the recorded values (quantiles never exceed `max`).
//! Tests: below (`quantiles_*`, `bucket_*`).

/// log2 of the linear sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed to cover all of `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket a value falls in.
fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let high_bit = 63 - v.leading_zeros();
    let shift = high_bit - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2 * SUB)
    (shift as u64 * SUB + mantissa) as usize
}

/// The largest value that falls in bucket `b`.
fn bucket_high(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let shift = b / SUB - 1;
    let mantissa = b - shift * SUB;
    // For the last bucket this is 2^64 - 1: compute in u128.
    let high = (u128::from(mantissa + 1) << shift) - 1;
    u64::try_from(high).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0 < q <= 1): the smallest recorded value
    /// with at least `ceil(q * count)` values at or below it, reported as
    /// its bucket's upper bound (capped at the exact max). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_contiguous_and_within_one_128th() {
        let mut prev_high = None::<u64>;
        for b in 0..BUCKETS - 1 {
            let high = bucket_high(b);
            if let Some(p) = prev_high {
                assert!(high > p, "bucket {b} high {high} after {p}");
                // The bucket spans (p, high]; its width is small relative to its values.
                let low = p + 1;
                assert_eq!(bucket_of(low), b, "low end of bucket {b}");
                assert!((high - low) as f64 <= low as f64 / 128.0 + 1.0);
            }
            assert_eq!(bucket_of(high), b, "high end of bucket {b}");
            prev_high = Some(high);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn quantiles_of_uniform_values_are_within_relative_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, exact) in [(0.5, 500_000u64), (0.9, 900_000), (0.99, 990_000)] {
            let got = h.quantile(q);
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err < 1.0 / 128.0, "q{q}: got {got}, exact {exact}");
        }
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
        assert_eq!(h.min(), 10);
        assert!((h.mean() - 500_005.0).abs() < 1e-6);
    }

    #[test]
    fn quantiles_of_small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [1u64, 2, 3, 4, 5, 6, 7, 8, 9, 100] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 5);
        assert_eq!(h.quantile(0.9), 9);
        assert_eq!(h.quantile(0.99), 100);
    }

    #[test]
    fn merged_histogram_equals_one_that_recorded_everything() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..5000u64 {
            let x = v * v % 7919 + 3;
            if v % 3 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        for q in [0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
        assert_eq!((a.min(), a.max()), (all.min(), all.max()));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::new();
        assert_eq!((h.quantile(0.5), h.max(), h.min(), h.count()), (0, 0, 0, 0));
        assert_eq!(h.mean(), 0.0);
    }
}
