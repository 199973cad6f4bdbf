//! Apply and reconcile: a plan checked against the config and the GPUs, missing replicas
//! started, surplus and replaced ones drained.

use super::*;

impl ProcessBackend {
    /// Whether `worker` runs what the config would start now for its own spec and place.
    pub(crate) fn matches_config(&self, worker: &Worker) -> bool {
        let Some(variant) = self.config.variants.get(&worker.variant) else {
            return false;
        };
        let values = self.placeholder_values(
            &worker.stage,
            &worker.variant,
            worker.batch,
            worker.cores,
            &worker.cpus,
            worker.gpu.as_ref().map(|g| g.0),
            worker.port,
        );
        let argv: Vec<String> = variant.command.iter().map(|a| render(a, &values)).collect();
        argv == worker.argv
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn placeholder_values(
        &self,
        stage: &str,
        variant: &str,
        batch: u32,
        cores: u32,
        cpus: &[usize],
        gpu: Option<u32>,
        port: u16,
    ) -> BTreeMap<&'static str, String> {
        let mut values = BTreeMap::new();
        values.insert("port", port.to_string());
        values.insert("host", self.config.host.clone());
        values.insert("gpu", gpu.map(|g| g.to_string()).unwrap_or_default());
        values.insert("cores", cores.to_string());
        values.insert("cpus", system::cpu_list(cpus));
        values.insert("variant", variant.to_owned());
        values.insert("stage", stage.to_owned());
        values.insert("batch", batch.to_string());
        values
    }

    /// Starts missing replicas and drains surplus and replaced ones.
    pub(crate) fn reconcile(&mut self, now: Instant, changes: &mut Vec<String>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let planned_stages: Vec<&str> = target.stages.iter().map(|s| s.stage.as_str()).collect();
        // Stages the plan does not name at all: their workers go.
        for worker in &mut self.workers {
            if !planned_stages.contains(&worker.stage.as_str()) {
                retire(worker, now, changes);
            }
        }
        for stage in &target.stages {
            let wants: Vec<Want> = stage
                .assignments
                .iter()
                .filter(|a| a.replicas > 0)
                .map(|a| Want {
                    variant: a.variant.clone(),
                    batch: a.batch,
                    cores: a.cores,
                    replicas: a.replicas,
                })
                .collect();
            let matching: Vec<bool> = self
                .workers
                .iter()
                .map(|w| self.matches_config(w))
                .collect();
            let spec_of = |w: &Worker, fits: bool| -> Option<usize> {
                if w.stage != stage.stage || !fits {
                    return None;
                }
                wants.iter().position(|x| {
                    x.variant == w.variant && x.batch == w.batch && x.cores == w.cores
                })
            };
            let mut settled = true;
            for (spec, want) in wants.iter().enumerate() {
                let mut live: Vec<usize> = (0..self.workers.len())
                    .filter(|&i| {
                        // Workers started in this pass match their spec by construction.
                        let fits = matching.get(i).copied().unwrap_or(true);
                        self.workers[i].phase.is_live()
                            && spec_of(&self.workers[i], fits) == Some(spec)
                    })
                    .collect();
                let have = live.len() as u32;
                if have > want.replicas {
                    // Surplus: the starting ones first (no traffic yet), newest first.
                    live.sort_by_key(|&i| {
                        let w = &self.workers[i];
                        (
                            matches!(w.phase, Phase::Ready { .. }),
                            std::cmp::Reverse(w.start_ticks),
                        )
                    });
                    for &i in live.iter().take((have - want.replicas) as usize) {
                        retire(&mut self.workers[i], now, changes);
                    }
                }
                let ready = live
                    .iter()
                    .filter(|&&i| matches!(self.workers[i].phase, Phase::Ready { .. }))
                    .count() as u32;
                if ready < want.replicas {
                    settled = false;
                }
                if have < want.replicas {
                    let key = (stage.stage.clone(), want.variant.clone());
                    let gate_open = self.backoff.get(&key).is_none_or(|b| now >= b.not_before);
                    if gate_open {
                        for _ in have..want.replicas {
                            match self.spawn(&stage.stage, want, now) {
                                Ok(message) => changes.push(message),
                                Err(error) => {
                                    let delay = self.failure(key.clone(), now);
                                    self.event(format!(
                                        "{error}; retrying in {:.1} s",
                                        delay.as_secs_f64()
                                    ));
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            // Replaced workers (another variant, batch, cores or command) drain once the
            // stage's wanted workers are all ready; ones still starting stop at once.
            for (i, fits) in matching.iter().enumerate() {
                let worker = &self.workers.get(i);
                let Some(worker) = worker else { break };
                if worker.stage != stage.stage || !worker.phase.is_live() {
                    continue;
                }
                if spec_of(worker, *fits).is_none() {
                    let starting = matches!(worker.phase, Phase::Starting { .. });
                    if starting || settled {
                        retire(&mut self.workers[i], now, changes);
                    }
                }
            }
        }
    }

    /// Starts one worker for `want` in `stage`.
    pub(crate) fn spawn(
        &mut self,
        stage: &str,
        want: &Want,
        now: Instant,
    ) -> Result<String, ProcessError> {
        let spawn_error = |cause: ProcessError| ProcessError::Spawn {
            stage: stage.to_owned(),
            variant: want.variant.clone(),
            cause: Box::new(cause),
        };
        let variant = self
            .config
            .variants
            .get(&want.variant)
            .cloned()
            .ok_or_else(|| spawn_error(ProcessError::NoSuchVariant))?;
        let port = self.allocate_port().map_err(spawn_error)?;
        let (cpus, shared) = self.choose_cpus(want.cores);
        let gpu = self.choose_gpu(&variant).map_err(spawn_error)?;
        let values = self.placeholder_values(
            stage,
            &want.variant,
            want.batch,
            want.cores,
            &cpus,
            gpu.as_ref().map(|g| g.index),
            port,
        );
        let argv: Vec<String> = variant.command.iter().map(|a| render(a, &values)).collect();
        std::fs::create_dir_all(&self.config.log_dir).map_err(|source| {
            spawn_error(ProcessError::LogDir {
                path: self.config.log_dir.clone(),
                source,
            })
        })?;
        let log_path = self
            .config
            .log_dir
            .join(format!("{stage}-{}-{port}.log", want.variant));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| {
                spawn_error(ProcessError::LogOpen {
                    path: log_path.clone(),
                    source,
                })
            })?;
        let log_err = log.try_clone().map_err(|source| {
            spawn_error(ProcessError::LogShare {
                path: log_path.clone(),
                source,
            })
        })?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env(
                "CUDA_VISIBLE_DEVICES",
                gpu.as_ref().map(|g| g.uuid.clone()).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: signals reach the worker's children too, and a
            // signal to the daemon's group does not reach the worker.
            .process_group(0);
        for (key, value) in &variant.env {
            command.env(key, render(value, &values));
        }
        if let Some(dir) = &variant.working_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| {
            spawn_error(ProcessError::Run {
                program: argv[0].clone(),
                source,
            })
        })?;
        let pid = child.id() as i32;
        if let Err(e) = system::pin(pid, &cpus) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(e));
        }
        let start_ticks = system::proc_stat(pid).map_or(0, |s| s.start_ticks);
        self.counters.started += 1;
        let mut message = format!(
            "{stage}/{}: started worker pid {pid} on port {port}, CPUs {}",
            want.variant,
            system::cpu_list(&cpus)
        );
        if let Some(g) = &gpu {
            message.push_str(&format!(", GPU {} ({})", g.index, g.name));
        }
        if shared {
            message.push_str(&format!(
                " (shared with other workers: {} usable CPUs)",
                self.cpus.len()
            ));
        }
        self.workers.push(Worker {
            stage: stage.to_owned(),
            variant: want.variant.clone(),
            batch: want.batch,
            cores: want.cores,
            cpus,
            gpu: gpu.map(|g| (g.index, g.uuid)),
            gpu_mem_mb: variant.gpu_mem_mb,
            port,
            pid,
            start_ticks,
            argv,
            url: render(&variant.url, &values),
            health_url: render(&variant.health_url, &values),
            stats_url: variant.stats_url.as_ref().map(|t| render(t, &values)),
            served_seen: Some(0),
            stats_error_reported: false,
            readiness_timeout: variant.readiness_timeout,
            phase: Phase::Starting { since: now },
            child: Some(child),
        });
        Ok(message)
    }

    /// Checks a plan against the config and the GPUs.
    pub(crate) fn check_plan(&self, plan: &PlanMessage) -> Result<(), ProcessError> {
        let mut problems = Vec::new();
        let mut gpu_need_mb = 0.0;
        for stage in &plan.stages {
            for a in &stage.assignments {
                let at = format!("stage `{}` variant `{}`", stage.stage, a.variant);
                let Some(variant) = self.config.variants.get(&a.variant) else {
                    problems.push(format!("{at}: not in the backend's `variants`"));
                    continue;
                };
                if a.replicas > MAX_REPLICAS {
                    problems.push(format!(
                        "{at}: {} replicas (at most {MAX_REPLICAS})",
                        a.replicas
                    ));
                }
                if a.cores == 0 || a.batch == 0 {
                    problems.push(format!("{at}: cores and batch must be at least 1"));
                }
                if variant.gpu == GpuUse::Required {
                    if let Some(reason) = self.gpus.unavailable_reason() {
                        problems.push(format!("{at}: requires a GPU: {reason}"));
                    }
                    gpu_need_mb += variant.gpu_mem_mb * f64::from(a.replicas);
                }
            }
        }
        if gpu_need_mb > 0.0
            && let Ok(gpus) = self.gpus.list()
        {
            let total: f64 = gpus.iter().map(|g| g.total_mb).sum();
            if gpu_need_mb > total {
                problems.push(format!(
                    "needs {gpu_need_mb:.0} MiB of GPU memory; the GPUs have {total:.0} MiB"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProcessError::Plan(problems.join("; ")))
        }
    }
}
