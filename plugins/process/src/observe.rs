//! Observation: the workers' request counters read from their `stats_url`s, and the report
//! of what runs, per stage.

use super::*;

impl ProcessBackend {
    /// Reads the request counters of the workers that have a `stats_url` (in parallel):
    /// requests answered since the previous read, and requests in flight per stage.
    pub(crate) fn read_counters(&mut self) -> (u64, BTreeMap<String, f64>) {
        let targets: Vec<(usize, String)> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                !matches!(
                    w.phase,
                    Phase::Starting { .. } | Phase::Stopping { killed: true, .. }
                )
            })
            .filter_map(|(i, w)| w.stats_url.clone().map(|u| (i, u)))
            .collect();
        let checker = &self.checker;
        let results: Vec<(usize, Result<serde_json::Value, ProcessError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = targets
                    .iter()
                    .map(|(i, url)| (*i, scope.spawn(move || checker.get_json(url))))
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        let answer = h
                            .join()
                            .unwrap_or(Err(ProcessError::CheckPanicked { what: "stats read" }));
                        (i, answer)
                    })
                    .collect()
            });
        let mut completed = 0;
        let mut in_flight: BTreeMap<String, f64> = BTreeMap::new();
        let mut problems = Vec::new();
        for (index, answer) in results {
            let worker = &mut self.workers[index];
            let counters = answer.and_then(|json| {
                let served = json["served"].as_u64().ok_or(ProcessError::ServedMissing)?;
                let busy = json["in_flight"].as_f64().unwrap_or(0.0);
                if !busy.is_finite() || busy < 0.0 {
                    return Err(ProcessError::InFlightNotCount);
                }
                Ok((served, busy))
            });
            match counters {
                Ok((served, busy)) => {
                    completed += match worker.served_seen {
                        Some(seen) if served >= seen => served - seen,
                        // The counter went back: the worker restarted its count.
                        Some(_) => served,
                        None => 0,
                    };
                    worker.served_seen = Some(served);
                    *in_flight.entry(worker.stage.clone()).or_default() += busy;
                }
                Err(error) => {
                    if !worker.stats_error_reported {
                        worker.stats_error_reported = true;
                        problems.push(format!("{}: stats unreadable: {error}", worker.label()));
                    }
                }
            }
        }
        for problem in problems {
            self.event(problem);
        }
        (completed, in_flight)
    }

    pub(crate) fn observation(&self, now: Instant) -> PluginObservation {
        let mut stages: Vec<String> = self
            .target
            .iter()
            .flat_map(|t| t.stages.iter().map(|s| s.stage.clone()))
            .collect();
        for worker in &self.workers {
            if !stages.contains(&worker.stage) {
                stages.push(worker.stage.clone());
            }
        }
        let mut observed = Vec::new();
        let mut deployed = PlanMessage::default();
        for stage in &stages {
            let ready = self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Ready { .. }))
                .count() as u32;
            let starting = self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Starting { .. }))
                .count() as u32;
            // Wanted replicas that are neither ready nor starting (waiting out a backoff).
            let wanted: u32 = self
                .target
                .iter()
                .flat_map(|t| t.stages.iter().filter(|s| &s.stage == stage))
                .flat_map(|s| s.assignments.iter().map(|a| a.replicas))
                .sum();
            let waiting = wanted.saturating_sub(ready + starting);
            observed.push(ObservedStage {
                stage: stage.clone(),
                ready_replicas: ready,
                starting_replicas: starting + waiting,
                ..ObservedStage::default()
            });
            let mut groups: Vec<AssignmentMessage> = Vec::new();
            for worker in self
                .workers
                .iter()
                .filter(|w| &w.stage == stage && matches!(w.phase, Phase::Ready { .. }))
            {
                match groups.iter_mut().find(|a| {
                    a.variant == worker.variant
                        && a.batch == worker.batch
                        && a.cores == worker.cores
                }) {
                    Some(a) => a.replicas += 1,
                    None => groups.push(AssignmentMessage {
                        variant: worker.variant.clone(),
                        batch: worker.batch,
                        cores: worker.cores,
                        replicas: 1,
                        share: 0.0,
                    }),
                }
            }
            let planned_share = |variant: &str| {
                self.target
                    .iter()
                    .flat_map(|t| t.stages.iter().filter(|s| &s.stage == stage))
                    .flat_map(|s| s.assignments.iter())
                    .find(|a| a.variant == variant)
                    .map(|a| a.share)
            };
            let all_planned = groups.iter().all(|a| planned_share(&a.variant).is_some());
            for a in &mut groups {
                a.share = match planned_share(&a.variant) {
                    Some(share) if all_planned => share,
                    _ => f64::from(a.replicas) / f64::from(ready.max(1)),
                };
            }
            if !groups.is_empty() {
                deployed.stages.push(StagePlanMessage {
                    stage: stage.clone(),
                    assignments: groups,
                });
            }
        }
        let endpoints = self
            .workers
            .iter()
            .map(|w| EndpointMessage {
                stage: w.stage.clone(),
                variant: w.variant.clone(),
                url: w.url.clone(),
                protocol: EndpointProtocol::RawHttp,
                state: match w.phase {
                    Phase::Starting { .. } => EndpointState::Starting,
                    Phase::Ready { .. } => EndpointState::Ready,
                    Phase::Draining { .. } | Phase::Stopping { .. } => EndpointState::Draining,
                },
                weight: 1.0,
            })
            .collect();
        let _ = now;
        PluginObservation {
            stages: observed,
            deployed,
            endpoints,
            ..PluginObservation::default()
        }
    }
}
