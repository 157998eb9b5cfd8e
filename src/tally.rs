//! Counters and histograms that one thread writes and a scrape reads:
//! plain atomics updated with a load and a store (never a contended
//! read-modify-write), in flat slices indexed by the config's label
//! values. The metrics layer ([`crate::metrics`]) owns the label names
//! and the exposition; the layers that count (downstream, upstream) only
//! need these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of every duration histogram, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// [`BUCKETS`] in nanoseconds: what an observation is compared with (an
/// integer, not a float made of it).
const BUCKETS_NS: [u64; 12] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// `n` counters at 0.
pub(crate) fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Adds `n`: the calling thread is the only writer.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Adds 1 at `i`, if there is such a counter.
pub(crate) fn bump(c: &[AtomicU64], i: usize) {
    if let Some(c) = c.get(i) {
        add(c, 1);
    }
}

/// The value at `i` (0 past the end).
pub(crate) fn get(c: &[AtomicU64], i: usize) -> u64 {
    c.get(i).map_or(0, |c| c.load(Relaxed))
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Duration histograms for `n` label sets: per-bucket counts (not
/// cumulative; the last bucket is `+Inf`) and sums in nanoseconds.
#[derive(Debug)]
pub(crate) struct Histograms {
    counts: Box<[AtomicU64]>,
    sums: Box<[AtomicU64]>,
}

impl Histograms {
    pub(crate) fn new(n: usize) -> Histograms {
        Histograms {
            counts: zeros(n * (BUCKETS.len() + 1)),
            sums: zeros(n),
        }
    }

    /// One observation for label set `i`.
    pub(crate) fn observe(&self, i: usize, d: Duration) {
        let Some(sum) = self.sums.get(i) else {
            return;
        };
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS.len());
        add(&self.counts[i * (BUCKETS.len() + 1) + b], 1);
        add(sum, ns);
    }

    /// The count in bucket `b` (`BUCKETS.len()`: `+Inf`) of label set `i`.
    pub(crate) fn bucket(&self, i: usize, b: usize) -> u64 {
        get(&self.counts, i * (BUCKETS.len() + 1) + b)
    }

    /// The sum of label set `i`, in seconds.
    pub(crate) fn sum(&self, i: usize) -> f64 {
        get(&self.sums, i) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_in_nanoseconds_are_the_bounds() {
        for (s, ns) in BUCKETS.iter().zip(BUCKETS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        // On a bound is in its bucket; a nanosecond over is in the next.
        let h = Histograms::new(1);
        h.observe(0, Duration::from_millis(1));
        h.observe(0, Duration::from_nanos(1_000_001));
        h.observe(0, Duration::from_secs(10));
        assert_eq!((h.bucket(0, 0), h.bucket(0, 1)), (1, 1));
        assert_eq!(h.bucket(0, BUCKETS.len() - 1), 1);
    }

    #[test]
    fn buckets_and_sums() {
        let h = Histograms::new(2);
        h.observe(1, Duration::from_millis(3));
        h.observe(1, Duration::from_secs(20));
        h.observe(7, Duration::from_secs(1)); // no such set: ignored
        assert_eq!(h.bucket(1, 2), 1); // 3 ms ≤ 5 ms
        assert_eq!(h.bucket(1, BUCKETS.len()), 1); // +Inf
        assert_eq!(h.bucket(0, 2), 0);
        assert!((h.sum(1) - 20.003).abs() < 1e-9);
    }
}
