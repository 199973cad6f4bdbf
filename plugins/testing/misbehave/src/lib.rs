//! A test plugin that misbehaves on request, so tests can prove the host contains it.
//!
//! Config: `{"observe": "ok" | "panic" | "error" | "hang" | "hang_once", "hang_ms": 2000,
//! "create": "ok" | "panic", "gpu_mem_mb": 4096}`. `hang` sleeps `hang_ms` in every observe, `hang_once` only in
//! the first; `panic` panics inside the plugin (the SDK turns it into `STATUS_PANIC`).
//! `gpu_mem_mb` is reported by `describe` as the GPU memory the backend offers.
//! `"check": "ok" | "panic" | "hang"` makes the config check answer, panic or sleep
//! `hang_ms`; it reports unknown keys.

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
];

/// The misbehaving backend.
#[derive(Debug)]
pub struct Misbehave {
    observe_mode: String,
    hang: Duration,
    observed: u64,
    last_plan: PlanMessage,
    gpu_mem_mb: Option<f64>,
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
            "hang" => std::thread::sleep(self.hang),
            "hang_once" if self.observed == 1 => std::thread::sleep(self.hang),
            _ => {}
        }
        Ok(PluginObservation {
            completed: self.observed,
            deployed: self.last_plan.clone(),
            ..PluginObservation::default()
        })
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
