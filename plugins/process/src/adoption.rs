//! Adoption after a restart: the state file of the workers and the target plan beside it,
//! read back and checked against the live processes.

use super::*;

impl ProcessBackend {
    /// Reads the state file and takes over the recorded workers that still run.
    pub(crate) fn adopt(&mut self) -> Result<(), ProcessError> {
        let Some(recorded) = state::read(&self.state_path)? else {
            return Ok(());
        };
        let now = Instant::now();
        let same_boot = recorded.boot_id == self.boot_id && !self.boot_id.is_empty();
        for record in recorded.workers {
            let label = format!(
                "{}/{}: recorded worker pid {} (port {})",
                record.stage, record.variant, record.pid, record.port
            );
            if !same_boot || !system::is_same_live_process(record.pid, record.start_ticks) {
                self.counters.stale += 1;
                self.event(format!(
                    "{label} is gone (or its PID now belongs to another process); forgotten"
                ));
                continue;
            }
            let readiness_timeout = self
                .config
                .variants
                .get(&record.variant)
                .map_or(Duration::from_secs(60), |v| v.readiness_timeout);
            let gpu_mem_mb = self
                .config
                .variants
                .get(&record.variant)
                .map_or(0.0, |v| v.gpu_mem_mb);
            let phase = match record.state.as_str() {
                "draining" | "stopping" => Phase::Draining { since: now },
                _ => Phase::Starting { since: now },
            };
            let stats_url = self.config.variants.get(&record.variant).and_then(|v| {
                let values = self.placeholder_values(
                    &record.stage,
                    &record.variant,
                    record.batch,
                    record.cores,
                    &record.cpus,
                    record.gpu,
                    record.port,
                );
                v.stats_url.as_ref().map(|t| render(t, &values))
            });
            self.counters.adopted += 1;
            self.event(format!("{label} adopted ({})", phase.name()));
            self.workers.push(Worker {
                stage: record.stage,
                variant: record.variant,
                batch: record.batch,
                cores: record.cores,
                cpus: record.cpus,
                gpu: record.gpu.zip(record.gpu_uuid),
                gpu_mem_mb,
                port: record.port,
                pid: record.pid,
                start_ticks: record.start_ticks,
                argv: record.argv,
                url: record.url,
                health_url: record.health_url,
                stats_url,
                served_seen: None,
                stats_error_reported: false,
                readiness_timeout,
                phase,
                child: None,
            });
        }
        self.target = recorded_target(&self.state_path);
        if let Some(last) = self.workers.iter().map(|w| w.port).max() {
            self.port_cursor = next_port(last, self.config.port_first, self.config.port_last);
        }
        Ok(())
    }

    /// Writes the state file when it changed.
    pub(crate) fn save(&mut self) -> Result<(), ProcessError> {
        let state = StateFile {
            schema: state::STATE_SCHEMA,
            boot_id: self.boot_id.clone(),
            writer_pid: std::process::id(),
            workers: self.workers.iter().map(Worker::record).collect(),
        };
        if self.last_written.as_ref() == Some(&state) {
            return Ok(());
        }
        state::write(&self.state_path, &state)?;
        write_target(&self.state_path, self.target.as_ref())?;
        self.last_written = Some(state);
        Ok(())
    }
}

/// The target plan is kept beside the state file, so a restarted daemon keeps reconciling.
pub(crate) fn target_path(state_path: &std::path::Path) -> PathBuf {
    state_path.with_extension("target.json")
}

pub(crate) fn write_target(
    state_path: &std::path::Path,
    target: Option<&PlanMessage>,
) -> Result<(), ProcessError> {
    let path = target_path(state_path);
    let Some(target) = target else {
        return Ok(());
    };
    let text = serde_json::to_vec(target).map_err(|e| ProcessError::State {
        path: path.display().to_string(),
        message: format!("cannot encode: {e}"),
    })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| ProcessError::State {
            path: path.display().to_string(),
            message: format!("cannot write: {e}"),
        })
}

pub(crate) fn recorded_target(state_path: &std::path::Path) -> Option<PlanMessage> {
    let text = std::fs::read_to_string(target_path(state_path)).ok()?;
    serde_json::from_str(&text).ok()
}
