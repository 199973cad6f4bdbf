//! Replica supervision: one step towards the target (reap, health-check, stop), crash
//! restarts after their backoff, and stopping every worker.

use super::*;

impl ProcessBackend {
    pub(crate) fn failure(&mut self, key: (String, String), now: Instant) -> Duration {
        let entry = self.backoff.entry(key).or_insert(Backoff {
            failures: 0,
            not_before: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let delay = exponential_backoff(
            self.config.restart_backoff,
            self.config.restart_backoff_max,
            entry.failures,
        );
        entry.not_before = now + delay;
        delay
    }

    /// Makes progress towards the target: reap, health-check, start, drain, stop, record.
    /// Returns the changes made (starts and stops), for apply's report.
    pub(crate) fn step(&mut self, now: Instant) -> Vec<String> {
        let mut changes = Vec::new();
        self.reap(now);
        self.check_health(now);
        self.reconcile(now, &mut changes);
        self.advance_stops(now, &mut changes);
        self.reap(now);
        if let Err(e) = self.save() {
            self.event(e.to_string());
        }
        changes
    }

    /// Removes workers that exited; a wanted one that did is a crash and is restarted
    /// after its backoff.
    pub(crate) fn reap(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.workers.len() {
            let worker = &mut self.workers[index];
            let outcome = match worker.child.as_mut() {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Reaped::Exited(describe_exit(status)),
                    Ok(None) => Reaped::Running,
                    Err(_) => system::reap(worker.pid, worker.start_ticks),
                },
                None => system::reap(worker.pid, worker.start_ticks),
            };
            let Reaped::Exited(how) = outcome else {
                index += 1;
                continue;
            };
            let worker = self.workers.remove(index);
            if worker.phase.is_live() {
                self.counters.crashes += 1;
                let delay = self.failure(worker.key(), now);
                self.event(format!(
                    "{} {how} while {}; restarting in {:.1} s",
                    worker.label(),
                    worker.phase.name(),
                    delay.as_secs_f64()
                ));
            } else {
                self.counters.stopped += 1;
            }
        }
    }

    /// Health-checks starting and ready workers (in parallel, each within the timeout).
    pub(crate) fn check_health(&mut self, now: Instant) {
        let targets: Vec<(usize, String)> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.phase.is_live())
            .map(|(i, w)| (i, w.health_url.clone()))
            .collect();
        let checker = &self.checker;
        let results: Vec<(usize, Result<(), ProcessError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(i, url)| (*i, scope.spawn(move || checker.check(url))))
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join().unwrap_or(Err(ProcessError::CheckPanicked {
                            what: "health check",
                        })),
                    )
                })
                .collect()
        });
        for (index, result) in results {
            let worker = &mut self.workers[index];
            match (worker.phase, result) {
                (Phase::Starting { .. }, Ok(())) => {
                    worker.phase = Phase::Ready { failures: 0 };
                    // Threads started while it loaded get the mask too.
                    let _ = system::pin(worker.pid, &worker.cpus);
                    let key = worker.key();
                    self.backoff.remove(&key);
                }
                (Phase::Starting { since }, Err(error)) => {
                    let _ = system::pin(worker.pid, &worker.cpus);
                    if now.duration_since(since) > worker.readiness_timeout {
                        let label = worker.label();
                        let limit = worker.readiness_timeout.as_secs_f64();
                        let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                        worker.phase = Phase::Stopping {
                            since: now,
                            killed: true,
                        };
                        let key = worker.key();
                        self.counters.crashes += 1;
                        let delay = self.failure(key, now);
                        self.event(format!(
                            "{label} not ready within {limit:.1} s ({error}); killed, \
                             restarting in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    }
                }
                (Phase::Ready { .. }, Ok(())) => worker.phase = Phase::Ready { failures: 0 },
                (Phase::Ready { failures }, Err(error)) => {
                    let failures = failures + 1;
                    worker.phase = Phase::Ready { failures };
                    if failures >= self.config.unhealthy_after {
                        let label = worker.label();
                        let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
                        worker.phase = Phase::Stopping {
                            since: now,
                            killed: false,
                        };
                        let key = worker.key();
                        self.counters.crashes += 1;
                        let delay = self.failure(key, now);
                        self.event(format!(
                            "{label} failed {failures} health checks in a row ({error}); \
                             stopped, replacing in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// SIGTERM to drained workers, SIGKILL to those past the stop timeout.
    pub(crate) fn advance_stops(&mut self, now: Instant, changes: &mut Vec<String>) {
        for worker in &mut self.workers {
            match worker.phase {
                Phase::Draining { since } if now.duration_since(since) >= self.config.drain => {
                    let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
                    worker.phase = Phase::Stopping {
                        since: now,
                        killed: false,
                    };
                    changes.push(format!("{} drained; SIGTERM sent", worker.label()));
                }
                Phase::Stopping {
                    since,
                    killed: false,
                } if now.duration_since(since) >= self.config.stop_timeout => {
                    let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                    worker.phase = Phase::Stopping {
                        since,
                        killed: true,
                    };
                    changes.push(format!(
                        "{} did not stop within {:.1} s of SIGTERM; SIGKILL sent",
                        worker.label(),
                        self.config.stop_timeout.as_secs_f64()
                    ));
                }
                _ => {}
            }
        }
    }

    /// Stops every worker: SIGTERM, up to `stop_timeout_s` for them to exit, then SIGKILL;
    /// waits for all of them.
    pub(crate) fn stop_all(&mut self) {
        let began = Instant::now();
        for worker in &mut self.workers {
            let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
            worker.phase = Phase::Stopping {
                since: began,
                killed: false,
            };
        }
        // Recorded at once: an instance created meanwhile (a reload whose stop outlasted
        // the daemon's grace period) adopts them as leaving, not as serving.
        let _ = self.save();
        let mut killed = false;
        while !self.workers.is_empty() {
            self.reap(Instant::now());
            if self.workers.is_empty() {
                break;
            }
            if !killed && began.elapsed() >= self.config.stop_timeout {
                for worker in &self.workers {
                    let _ = system::signal_worker(worker.pid, Signal::SIGKILL);
                }
                killed = true;
            }
            if killed && began.elapsed() >= self.config.stop_timeout + Duration::from_secs(5) {
                // Only processes we cannot reap (adopted, stuck in the kernel) get here.
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Marks a worker as leaving: one still starting stops at once, a ready one drains.
pub(crate) fn retire(worker: &mut Worker, now: Instant, changes: &mut Vec<String>) {
    match worker.phase {
        Phase::Starting { .. } => {
            let _ = system::signal_worker(worker.pid, Signal::SIGTERM);
            worker.phase = Phase::Stopping {
                since: now,
                killed: false,
            };
            changes.push(format!(
                "{} not needed before it was ready; SIGTERM sent",
                worker.label()
            ));
        }
        Phase::Ready { .. } => {
            worker.phase = Phase::Draining { since: now };
            changes.push(format!("{} draining", worker.label()));
        }
        Phase::Draining { .. } | Phase::Stopping { .. } => {}
    }
}

pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => "ended".to_owned(),
    }
}
