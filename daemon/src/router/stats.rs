//! The router's measurement window: arrivals counted per whole second, latencies,
//! completions, failures and SLO misses since the control loop last took them. A peek (the
//! fast path between ticks) reads the seconds that ended since the previous peek and leaves
//! them for the next take. Beside the window, a histogram of the durations of the answered
//! requests since the router started (never taken, for `/metrics`).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::service::status::Histogram;

/// What the router saw between two `take`s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterWindow {
    /// Arrivals in each whole second that ended since the previous take, oldest first.
    pub arrivals_per_second: Vec<f64>,
    pub completed: u64,
    pub failed: u64,
    pub slo_misses: u64,
    pub latency_p99_ms: Option<f64>,
}

/// Most latencies kept per window (a uniform thinning keeps the p99 honest beyond that).
const MAX_LATENCIES: usize = 200_000;

#[derive(Debug)]
pub struct Window {
    origin: Instant,
    /// The first second not yet handed out.
    next_second: u64,
    /// The first second not yet peeked at.
    next_peek: u64,
    arrivals: BTreeMap<u64, u64>,
    latencies_ms: Vec<f64>,
    completed: u64,
    failed: u64,
    slo_misses: u64,
    /// Durations of the answered requests since the start, seconds.
    durations: Histogram,
}

impl Window {
    pub fn new(origin: Instant) -> Window {
        Window {
            origin,
            next_second: 0,
            next_peek: 0,
            arrivals: BTreeMap::new(),
            latencies_ms: Vec::new(),
            completed: 0,
            failed: 0,
            slo_misses: 0,
            durations: Histogram::default(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    pub fn arrival(&mut self, at: Instant) {
        let second = self.second(at).max(self.next_second);
        *self.arrivals.entry(second).or_insert(0) += 1;
    }

    pub fn finished(&mut self, ok: bool, missed: bool, latency_ms: f64) {
        if ok {
            self.completed += 1;
            self.durations.observe(latency_ms / 1000.0);
            if self.latencies_ms.len() < MAX_LATENCIES {
                self.latencies_ms.push(latency_ms);
            }
        } else {
            self.failed += 1;
        }
        if missed {
            self.slo_misses += 1;
        }
    }

    /// Durations of every request answered since the start (a take does not reset them).
    pub fn durations(&self) -> Histogram {
        self.durations.clone()
    }

    /// Arrivals in each whole second that ended before `now` since the previous peek (or
    /// take, whichever came later), oldest first. Takes nothing: the next take still hands
    /// out every second.
    pub fn peek(&mut self, now: Instant) -> Vec<f64> {
        let current = self.second(now);
        let first = self.next_peek.max(self.next_second);
        let seen = (first..current)
            .map(|s| self.arrivals.get(&s).copied().unwrap_or(0) as f64)
            .collect();
        self.next_peek = first.max(current);
        seen
    }

    /// Hands out the seconds that ended before `now` and everything finished so far.
    pub fn take(&mut self, now: Instant) -> RouterWindow {
        let current = self.second(now);
        let arrivals_per_second: Vec<f64> = (self.next_second..current)
            .map(|s| self.arrivals.remove(&s).unwrap_or(0) as f64)
            .collect();
        self.next_second = self.next_second.max(current);
        let mut latencies = std::mem::take(&mut self.latencies_ms);
        let latency_p99_ms = if latencies.is_empty() {
            None
        } else {
            latencies.sort_by(f64::total_cmp);
            let rank = ((latencies.len() as f64) * 0.99).ceil() as usize;
            Some(latencies[rank.clamp(1, latencies.len()) - 1])
        };
        RouterWindow {
            arrivals_per_second,
            completed: std::mem::take(&mut self.completed),
            failed: std::mem::take(&mut self.failed),
            slo_misses: std::mem::take(&mut self.slo_misses),
            latency_p99_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_are_handed_out_once_and_whole() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for ms in [10, 20, 900, 1500, 3100] {
            w.arrival(t0 + Duration::from_millis(ms));
        }
        for latency in 1..=100 {
            w.finished(true, latency > 95, latency as f64);
        }
        w.finished(false, true, 5.0);
        let first = w.take(t0 + Duration::from_millis(3200));
        assert_eq!(first.arrivals_per_second, vec![3.0, 1.0, 0.0]);
        assert_eq!(first.completed, 100);
        assert_eq!(first.failed, 1);
        assert_eq!(first.slo_misses, 6);
        assert_eq!(first.latency_p99_ms, Some(99.0));
        // The answered requests' durations stay after the take; the failed one is not in.
        let durations = w.durations();
        assert_eq!(durations.count, 100);
        assert!((durations.sum_s - 5.05).abs() < 1e-9, "{}", durations.sum_s);
        // 1..=100 ms: 5 up to 5 ms, 10 up to 10 ms, 25 up to 25 ms, 100 up to 100 ms.
        let cumulative = durations.cumulative();
        assert_eq!(&cumulative[..6], &[5, 10, 25, 50, 75, 100]);
        assert_eq!(cumulative.last(), Some(&100));
        let second = w.take(t0 + Duration::from_millis(4100));
        assert_eq!(second.arrivals_per_second, vec![1.0]);
        assert_eq!(second.completed, 0);
        assert_eq!(second.latency_p99_ms, None);
        // A take within the same second hands out nothing twice.
        assert!(
            w.take(t0 + Duration::from_millis(4200))
                .arrivals_per_second
                .is_empty()
        );
    }

    #[test]
    fn a_peek_sees_each_second_once_and_leaves_it_to_the_take() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for ms in [10, 20, 900, 1500, 2500, 2600, 3100] {
            w.arrival(t0 + Duration::from_millis(ms));
        }
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(w.peek(at(1100)), vec![3.0]);
        assert!(w.peek(at(1900)).is_empty(), "second 1 has not ended");
        assert_eq!(w.peek(at(3050)), vec![1.0, 2.0]);
        // The take still hands out every second, peeked or not.
        assert_eq!(w.take(at(3200)).arrivals_per_second, vec![3.0, 1.0, 2.0]);
        // A peek after a take starts where the take ended.
        assert_eq!(w.peek(at(4000)), vec![1.0]);
        assert_eq!(w.take(at(4100)).arrivals_per_second, vec![1.0]);
        // Seconds taken before they were peeked at are not peeked at later.
        w.arrival(at(4500));
        assert_eq!(w.take(at(5100)).arrivals_per_second, vec![1.0]);
        assert_eq!(w.peek(at(6000)), vec![0.0]);
    }
}
