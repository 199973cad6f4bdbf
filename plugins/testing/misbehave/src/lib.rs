//! A test plugin that misbehaves on request, so tests can prove the host contains it.
//!
//! Config: `{"observe": "ok" | "panic" | "error" | "hang" | "hang_once" | "exit", "hang_ms": 2000,
//! "create": "ok" | "panic", "gpu_mem_mb": 4096}`. `hang` sleeps `hang_ms` in every observe, `hang_once` only in
//! the first; `panic` panics inside the plugin (the SDK turns it into `STATUS_PANIC`);
//! `exit` ends the whole process with status 0, as a careless library might.
//! `gpu_mem_mb` is reported by `describe` as the GPU memory the backend offers.
//! `"check": "ok" | "panic" | "hang"` makes the config check answer, panic or sleep
//! `hang_ms`; it reports unknown keys.
//!
//! Scripted load: `"load_rps": [20, 40, ...]` makes observe number k report one second of
//! arrivals at the k-th rate (the last one repeats), all completed; `"record": PATH`
//! appends every observation it reports to PATH as a JSON line, and `"replay": PATH` reports
//! those lines in order instead (the deployed plan included), whatever was applied: a run
//! that applies nothing sees what a run that applied everything saw.

use std::time::Duration;

use infadapt_plugin_abi::{
    ApplyReport, Backend, BackendError, ConfigProblem, ConfigProblems, Description, HealthReport,
    PlanMessage, PluginObservation, SCHEMA_VERSION,
};

const KEYS: &[&str] = &[
    "type",
    "pipeline",
    "observe",
    "hang_ms",
    "create",
    "gpu_mem_mb",
    "check",
    "load_rps",
    "record",
    "replay",
];

/// The misbehaving backend.
#[derive(Debug)]
pub struct Misbehave {
    observe_mode: String,
    hang: Duration,
    observed: u64,
    last_plan: PlanMessage,
    gpu_mem_mb: Option<f64>,
    load_rps: Vec<f64>,
    record: Option<std::path::PathBuf>,
    replay: Vec<PluginObservation>,
}

impl Backend for Misbehave {
    fn check_config(config: &serde_json::Value) -> Vec<ConfigProblem> {
        match config.get("check").and_then(serde_json::Value::as_str) {
            Some("panic") => panic!("misbehave: asked to panic in check_config"),
            Some("hang") => std::thread::sleep(Duration::from_millis(
                config
                    .get("hang_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(2000),
            )),
            _ => {}
        }
        let mut problems = ConfigProblems::new();
        problems.unknown_keys("", config, KEYS);
        problems.into_problems()
    }

    fn create(config: serde_json::Value) -> Result<Misbehave, BackendError> {
        let text = |key: &str| {
            config
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("ok")
                .to_owned()
        };
        if text("create") == "panic" {
            panic!("misbehave: asked to panic in create");
        }
        Ok(Misbehave {
            observe_mode: text("observe"),
            hang: Duration::from_millis(
                config
                    .get("hang_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(2000),
            ),
            observed: 0,
            last_plan: PlanMessage::default(),
            gpu_mem_mb: config.get("gpu_mem_mb").and_then(serde_json::Value::as_f64),
            load_rps: config
                .get("load_rps")
                .and_then(serde_json::Value::as_array)
                .map(|rates| rates.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default(),
            record: config
                .get("record")
                .and_then(serde_json::Value::as_str)
                .map(std::path::PathBuf::from),
            replay: match config.get("replay").and_then(serde_json::Value::as_str) {
                None => Vec::new(),
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| BackendError::invalid(format!("misbehave: replay {path}: {e}")))?
                    .lines()
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()
                    .map_err(|e| BackendError::invalid(format!("misbehave: replay {path}: {e}")))?,
            },
        })
    }

    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: "misbehave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Default::default(),
            gpu_mem_mb: self.gpu_mem_mb,
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        self.observed += 1;
        match self.observe_mode.as_str() {
            "panic" => panic!("misbehave: asked to panic in observe"),
            "error" => return Err(BackendError::unavailable("misbehave: asked to fail")),
            "exit" => std::process::exit(0),
            "hang" => std::thread::sleep(self.hang),
            "hang_once" if self.observed == 1 => std::thread::sleep(self.hang),
            _ => {}
        }
        if !self.replay.is_empty() {
            let at = (self.observed as usize - 1).min(self.replay.len() - 1);
            return Ok(self.replay[at].clone());
        }
        let mut observation = PluginObservation {
            completed: self.observed,
            deployed: self.last_plan.clone(),
            ..PluginObservation::default()
        };
        if let Some(last) = self.load_rps.last() {
            let rate = *self
                .load_rps
                .get(self.observed as usize - 1)
                .unwrap_or(last);
            observation.arrivals_per_second = vec![rate];
            observation.completed = rate.max(0.0) as u64;
            observation.latency_p99_ms = Some(100.0);
        }
        if let Some(path) = &self.record {
            use std::io::Write as _;
            let line = serde_json::to_string(&observation)
                .map_err(|e| BackendError::failed(format!("misbehave: record: {e}")))?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| writeln!(file, "{line}"))
                .map_err(|e| BackendError::failed(format!("misbehave: record: {e}")))?;
        }
        Ok(observation)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        let changed = *plan != self.last_plan;
        self.last_plan = plan.clone();
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed,
            actions: Vec::new(),
        })
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: true,
            detail: format!("observed {} times", self.observed),
        })
    }
}

infadapt_plugin_abi::export_plugin!(Misbehave);
