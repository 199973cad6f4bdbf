//! Liveness of the control loops, for the service manager's watchdog: each running pipeline
//! task holds a [`Heart`] and beats it after every wake (tick or pulse); the main loop sends
//! `WATCHDOG=1` only while every heart beat within its limit. A loop stuck in a wake that
//! never ends (a hung filesystem under a state write, a planner that never returns) stops the
//! keep-alives, and the service manager restarts the service.
//!
//! The limit of a pipeline is `max(2 × period, 5 s) + 4 × backend_timeout_s` of wall time:
//! two periods without a finished wake, plus what one wake may legitimately spend in backend
//! calls, each bounded by the time limit (create, observe, apply; a hung plugin call is cut
//! off there, so a degraded pipeline keeps beating). A pipeline that failed to start, or
//! whose task ended, holds no heart and is not watched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The least time a loop may go without a finished wake, whatever its period.
pub const FLOOR: Duration = Duration::from_secs(5);

/// How long a pipeline with `period` (wall time) and `backend_timeout` may go without a
/// finished wake before it counts as stuck.
pub fn limit(period: Duration, backend_timeout: Duration) -> Duration {
    period
        .saturating_mul(2)
        .max(FLOOR)
        .saturating_add(backend_timeout.saturating_mul(4))
}

#[derive(Debug)]
struct Beat {
    /// Which heart holds the entry (a restarted pipeline's new task replaces the old one's).
    id: u64,
    last: Instant,
    limit: Duration,
    /// Whether it was reported stuck (reported once until it beats again).
    reported: bool,
}

/// The hearts of every running pipeline task; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    beats: Arc<Mutex<BTreeMap<String, Beat>>>,
    next_id: Arc<AtomicU64>,
}

/// One pipeline task's heart: beat it after every wake; dropped, the pipeline is no longer
/// watched.
#[derive(Debug)]
pub struct Heart {
    liveness: Liveness,
    name: String,
    id: u64,
}

/// A control loop that has not finished a wake within its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub pipeline: String,
    /// Time since its last finished wake.
    pub silent: Duration,
    pub limit: Duration,
}

/// What the watchdog check found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Every watched loop beat within its limit: send the keep-alive.
    pub alive: bool,
    /// Loops found stuck for the first time (to log once).
    pub newly_stuck: Vec<Stuck>,
    /// Loops reported stuck before that beat again.
    pub recovered: Vec<String>,
}

impl Liveness {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Beat>> {
        self.beats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches pipeline `name` from `now` on, with `limit`.
    pub fn register(&self, name: &str, limit: Duration, now: Instant) -> Heart {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            name.to_owned(),
            Beat {
                id,
                last: now,
                limit,
                reported: false,
            },
        );
        Heart {
            liveness: self.clone(),
            name: name.to_owned(),
            id,
        }
    }

    /// Whether every watched loop beat within its limit at `now`, and which changed state.
    pub fn check(&self, now: Instant) -> Verdict {
        let mut verdict = Verdict {
            alive: true,
            ..Verdict::default()
        };
        for (name, beat) in self.lock().iter_mut() {
            let silent = now.saturating_duration_since(beat.last);
            if silent > beat.limit {
                verdict.alive = false;
                if !beat.reported {
                    beat.reported = true;
                    verdict.newly_stuck.push(Stuck {
                        pipeline: name.clone(),
                        silent,
                        limit: beat.limit,
                    });
                }
            } else if beat.reported {
                beat.reported = false;
                verdict.recovered.push(name.clone());
            }
        }
        verdict
    }
}

impl Heart {
    /// A wake finished at `now`; `limit` is the pipeline's limit from now on.
    pub fn beat(&self, limit: Duration, now: Instant) {
        if let Some(beat) = self.liveness.lock().get_mut(&self.name)
            && beat.id == self.id
        {
            beat.last = now;
            beat.limit = limit;
        }
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        let mut beats = self.liveness.lock();
        if beats.get(&self.name).is_some_and(|b| b.id == self.id) {
            beats.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_limit_is_two_periods_at_least_the_floor_plus_the_backend_calls() {
        assert_eq!(limit(S(30), S(5)), S(80));
        assert_eq!(limit(S(1), S(1)), S(9));
        assert_eq!(limit(Duration::from_millis(200), Duration::ZERO), FLOOR);
    }

    #[test]
    fn a_loop_that_stops_beating_withholds_the_keep_alive_and_is_named_once() {
        let liveness = Liveness::default();
        let t0 = Instant::now();
        assert!(liveness.check(t0).alive, "nothing watched: alive");
        let fast = liveness.register("fast", S(9), t0);
        let slow = liveness.register("slow", S(80), t0);
        assert!(liveness.check(t0 + S(9)).alive, "within the limits");
        // `fast` beats on; `slow` ticks rarely but within its own limit.
        fast.beat(S(9), t0 + S(8));
        let at = t0 + S(18);
        let verdict = liveness.check(at);
        assert!(!verdict.alive);
        assert_eq!(
            verdict.newly_stuck,
            vec![Stuck {
                pipeline: "fast".into(),
                silent: S(10),
                limit: S(9)
            }]
        );
        // Named once, withheld as long as it is stuck.
        let again = liveness.check(at + S(1));
        assert!(!again.alive && again.newly_stuck.is_empty());
        // A beat brings the keep-alive back, and says so once.
        fast.beat(S(9), at + S(2));
        let back = liveness.check(at + S(3));
        assert!(back.alive);
        assert_eq!(back.recovered, vec!["fast".to_owned()]);
        assert!(liveness.check(at + S(4)).recovered.is_empty());
        // `slow` is stuck past its own limit.
        let verdict = liveness.check(t0 + S(81));
        assert_eq!(verdict.newly_stuck.len(), 2, "{verdict:?}");
        drop(slow);
        fast.beat(S(9), t0 + S(81));
        assert!(
            liveness.check(t0 + S(81)).alive,
            "a stopped task is not watched"
        );
    }

    #[test]
    fn a_restarted_pipeline_is_not_unwatched_by_its_old_task_ending() {
        let liveness = Liveness::default();
        let t0 = Instant::now();
        let old = liveness.register("p", S(9), t0);
        let new = liveness.register("p", S(9), t0 + S(1));
        // The old task's late beat and its end leave the new task's entry alone.
        old.beat(S(9), t0 + S(100));
        drop(old);
        let verdict = liveness.check(t0 + S(20));
        assert!(!verdict.alive, "the new task's own beats count");
        new.beat(S(9), t0 + S(20));
        assert!(liveness.check(t0 + S(20)).alive);
    }
}
