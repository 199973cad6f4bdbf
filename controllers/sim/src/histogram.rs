//! Latency histogram with log-spaced buckets: O(1) record, mergeable, ≤ 0.8 % relative error.
//!
//! Buckets split every power of two into 64 equal parts (the float's exponent and the top six
//! bits of its mantissa), so a bucket is at most 1/64 of its lower edge wide and its midpoint
//! is within 1/128 ≈ 0.78 % of any value in it. The range is 2⁻¹⁰ ms (about 1 µs) to 2³⁰ ms
//! (about 12 days); values outside it land in the first or last bucket, and the exact
//! minimum and maximum are kept so quantiles never leave the observed range.

use serde::Serialize;

const SUB_BITS: u32 = 6;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
const MIN_EXPONENT: i32 = -10;
const MAX_EXPONENT: i32 = 30;
const BUCKETS: usize = ((MAX_EXPONENT - MIN_EXPONENT) as usize) * SUB_BUCKETS;
const MANTISSA_BITS: u32 = 52;

/// Histogram of latencies in milliseconds.
#[derive(Clone, PartialEq, Serialize)]
pub struct LatencyHistogram {
    #[serde(skip)]
    counts: Box<[u64]>,
    count: u64,
    sum_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("mean_ms", &self.mean_ms())
            .field("min_ms", &self.min_ms)
            .field("max_ms", &self.max_ms)
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

fn min_value() -> f64 {
    2f64.powi(MIN_EXPONENT)
}

fn max_value() -> f64 {
    2f64.powi(MAX_EXPONENT)
}

fn bucket_of(value_ms: f64) -> usize {
    if value_ms.is_nan() || value_ms < min_value() {
        return 0;
    }
    if value_ms >= max_value() {
        return BUCKETS - 1;
    }
    let bits = value_ms.to_bits();
    let exponent = ((bits >> MANTISSA_BITS) & 0x7ff) as i32 - 1023;
    let sub = ((bits >> (MANTISSA_BITS - SUB_BITS)) as usize) & (SUB_BUCKETS - 1);
    ((exponent - MIN_EXPONENT) as usize) * SUB_BUCKETS + sub
}

fn bucket_midpoint(index: usize) -> f64 {
    let exponent = (index / SUB_BUCKETS) as i32 + MIN_EXPONENT;
    let sub = (index % SUB_BUCKETS) as f64;
    2f64.powi(exponent) * (1.0 + (sub + 0.5) / SUB_BUCKETS as f64)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum_ms: 0.0,
            min_ms: f64::INFINITY,
            max_ms: f64::NEG_INFINITY,
        }
    }

    /// Records one latency; NaN and negative values count as 0 ms.
    pub fn record(&mut self, value_ms: f64) {
        let value = if value_ms >= 0.0 { value_ms } else { 0.0 };
        self.counts[bucket_of(value)] += 1;
        self.count += 1;
        self.sum_ms += value;
        self.min_ms = self.min_ms.min(value);
        self.max_ms = self.max_ms.max(value);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
        self.min_ms = self.min_ms.min(other.min_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        if self.count > 0 {
            self.counts.fill(0);
        }
        self.count = 0;
        self.sum_ms = 0.0;
        self.min_ms = f64::INFINITY;
        self.max_ms = f64::NEG_INFINITY;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact mean of the samples, `None` when empty.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms / self.count as f64)
    }

    /// Exact smallest sample, `None` when empty.
    pub fn min_ms(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min_ms)
    }

    /// Exact largest sample, `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max_ms)
    }

    /// The `q`-quantile (`q` in [0, 1], clamped; NaN counts as 0.5) within the bucket error
    /// (the extreme ranks are the exact minimum and maximum), `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == 1 {
            return Some(self.min_ms);
        }
        if rank == self.count {
            return Some(self.max_ms);
        }
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_midpoint(index).clamp(self.min_ms, self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_relative_error_under_one_percent() {
        let mut v = 0.002;
        while v < 1.0e8 {
            let mid = bucket_midpoint(bucket_of(v));
            assert!(((mid - v) / v).abs() <= 0.0079, "value {v} maps to {mid}");
            v *= 1.013;
        }
    }

    #[test]
    fn quantiles_of_uniform_samples() {
        let mut h = LatencyHistogram::new();
        for i in 1..=10_000 {
            h.record(f64::from(i) * 0.1);
        }
        for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile_ms(q).expect("non-empty");
            assert!(((got - want) / want).abs() < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile_ms(0.0), Some(0.1));
        assert!((h.mean_ms().expect("mean") - 500.05).abs() < 1e-6);
    }

    #[test]
    fn merge_equals_recording_everything() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for i in 0..1000 {
            let v = f64::from(i).powf(1.5) + 0.5;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.counts, all.counts);
        assert_eq!(
            (a.count(), a.min_ms(), a.max_ms()),
            (all.count(), all.min_ms(), all.max_ms())
        );
        for q in [0.1, 0.5, 0.9, 0.99] {
            assert_eq!(a.quantile_ms(q), all.quantile_ms(q));
        }
        assert!((a.mean_ms().expect("a") - all.mean_ms().expect("all")).abs() < 1e-6);
    }

    #[test]
    fn odd_values_do_not_panic() {
        let mut h = LatencyHistogram::new();
        for v in [f64::NAN, -3.0, 0.0, 1e-300, f64::INFINITY, 1e300] {
            h.record(v);
        }
        assert_eq!(h.count(), 6);
        assert!(h.quantile_ms(0.5).is_some());
        assert!(LatencyHistogram::new().quantile_ms(0.5).is_none());
        h.clear();
        assert_eq!(h.count(), 0);
    }
}
