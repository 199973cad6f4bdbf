//! Exponential backoff with a cap: the delay before the next try after consecutive failures,
//! doubling from `initial` and never above `max`. Deterministic (no jitter), so tests and
//! operators can predict it.

use std::time::Duration;

/// Doublings stop here (2^20 × `initial` is past any sensible cap already).
const MAX_DOUBLINGS: u32 = 20;

/// The delay after the `failures`-th consecutive failure (1 for the first): `initial` after
/// the first, twice that after the second, and so on, at most `max`. Zero failures wait
/// `initial` as one does. Never overflows.
pub fn exponential_backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
    initial.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_cap() {
        let s = Duration::from_secs;
        let delays: Vec<Duration> = (1..=8)
            .map(|n| exponential_backoff(s(1), s(60), n))
            .collect();
        assert_eq!(delays, [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]);
        assert_eq!(exponential_backoff(s(1), s(60), 0), s(1));
    }

    #[test]
    fn many_failures_and_huge_delays_do_not_overflow() {
        let big = Duration::from_secs(u64::MAX / 2);
        assert_eq!(
            exponential_backoff(big, Duration::MAX, u32::MAX),
            Duration::MAX
        );
        let ms = Duration::from_millis(250);
        assert_eq!(
            exponential_backoff(ms, Duration::MAX, u32::MAX),
            ms * (1 << 20)
        );
    }

    #[test]
    fn a_cap_below_the_initial_delay_wins() {
        let s = Duration::from_secs;
        assert_eq!(exponential_backoff(s(10), s(3), 1), s(3));
    }
}
