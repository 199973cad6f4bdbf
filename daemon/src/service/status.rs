//! What the service knows about each pipeline right now, shared by the pipeline tasks (which
//! write it) and the HTTP API (which reads it), and its rendering as Prometheus text.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use infadapt_control::Decision;
use infadapt_model::Plan;
use serde::Serialize;

/// One decision with what was done about it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub pipeline: String,
    pub tick: u64,
    pub unix_s: u64,
    /// Whether the plan was handed to the backend (false: unchanged, dry run or failed).
    pub applied: bool,
    pub apply_actions: Vec<String>,
    pub observed_rps: f64,
    pub latency_p99_ms: Option<f64>,
    pub decide_ms: f64,
    pub decision: Decision,
}

/// The live state of one pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineStatus {
    pub name: String,
    pub backend: String,
    /// `starting`, `running`, `failed` or `stopped`.
    pub state: String,
    pub dry_run: bool,
    pub period_s: f64,
    /// The plan the backend was last told to run.
    pub plan: Option<Plan>,
    pub last_decision: Option<DecisionRecord>,
    #[serde(skip)]
    pub decisions: VecDeque<DecisionRecord>,
    pub ticks: u64,
    pub reconfigurations: u64,
    pub plugin_errors: u64,
    pub planner_errors: u64,
    pub degraded: bool,
    pub last_error: Option<String>,
    pub completed: u64,
    pub slo_misses: u64,
    pub dropped: u64,
}

impl PipelineStatus {
    /// Share of finished requests that met the SLO since the start (1 when none finished).
    pub fn slo_attainment(&self) -> f64 {
        let finished = self.completed + self.dropped;
        if finished == 0 {
            1.0
        } else {
            1.0 - (self.slo_misses.min(finished) as f64 / finished as f64)
        }
    }
}

/// Every pipeline's status, shared.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, PipelineStatus>>>,
    decisions_kept: usize,
}

impl Registry {
    pub fn new(decisions_kept: usize) -> Self {
        Registry {
            inner: Arc::default(),
            decisions_kept: decisions_kept.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PipelineStatus>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the status of `name`, creating it when absent.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut PipelineStatus)) {
        let mut map = self.lock();
        let status = map
            .entry(name.to_owned())
            .or_insert_with(|| PipelineStatus {
                name: name.to_owned(),
                ..PipelineStatus::default()
            });
        f(status);
    }

    /// Records a decision (keeping the newest `decisions_kept`).
    pub fn record(&self, record: DecisionRecord) {
        let kept = self.decisions_kept;
        self.update(&record.pipeline.clone(), |s| {
            s.decisions.push_back(record.clone());
            while s.decisions.len() > kept {
                s.decisions.pop_front();
            }
            s.last_decision = Some(record);
        });
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// A copy of every status.
    pub fn snapshot(&self) -> Vec<PipelineStatus> {
        self.lock().values().cloned().collect()
    }

    /// Recent decisions, newest last; of one pipeline when `pipeline` is set.
    pub fn decisions(&self, pipeline: Option<&str>, limit: usize) -> Vec<DecisionRecord> {
        let map = self.lock();
        let mut all: Vec<DecisionRecord> = map
            .values()
            .filter(|s| pipeline.is_none_or(|p| p == s.name))
            .flat_map(|s| s.decisions.iter().cloned())
            .collect();
        all.sort_by_key(|r| (r.unix_s, r.tick));
        let skip = all.len().saturating_sub(limit);
        all.split_off(skip)
    }

    /// A one-line summary for the service manager's status.
    pub fn summary(&self) -> String {
        let map = self.lock();
        let parts: Vec<String> = map
            .values()
            .map(|s| {
                let rps = s.last_decision.as_ref().map_or(0.0, |d| d.observed_rps);
                let cores: u64 = s
                    .plan
                    .as_ref()
                    .map_or(0, |p| p.stages.iter().map(|st| st.cores()).sum());
                let flag = if s.degraded { " degraded" } else { "" };
                format!("{}: {} {rps:.0} rps {cores} cores{flag}", s.name, s.state)
            })
            .collect();
        if parts.is_empty() {
            "no pipelines".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition of every pipeline.
pub fn render_metrics(statuses: &[PipelineStatus]) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per = |f: &dyn Fn(&PipelineStatus) -> Option<f64>| -> Vec<(String, f64)> {
        statuses
            .iter()
            .filter_map(|s| f(s).map(|v| (format!("pipeline=\"{}\"", escape(&s.name)), v)))
            .collect()
    };
    let last = |s: &PipelineStatus| s.last_decision.as_ref().map(|d| d.decision.clone());
    gauge(
        "infadapt_forecast_rps",
        "Point forecast of the peak load over the horizon.",
        "gauge",
        per(&|s| last(s).and_then(|d| d.forecast_rps)),
    );
    gauge(
        "infadapt_forecast_upper_rps",
        "Calibrated upper bound of the peak load.",
        "gauge",
        per(&|s| last(s).and_then(|d| d.upper_rps)),
    );
    gauge(
        "infadapt_provisioned_rps",
        "Load the current plan was sized for.",
        "gauge",
        per(&|s| last(s).map(|d| d.provisioned_rps)),
    );
    gauge(
        "infadapt_headroom",
        "Multiplicative headroom from the SLO feedback.",
        "gauge",
        per(&|s| last(s).map(|d| d.headroom)),
    );
    gauge(
        "infadapt_objective",
        "Objective of the planner's optimum (accuracy minus cost terms).",
        "gauge",
        per(&|s| last(s).and_then(|d| d.objective)),
    );
    gauge(
        "infadapt_decide_seconds",
        "Time the last forecast, plan and damping step took.",
        "gauge",
        per(&|s| s.last_decision.as_ref().map(|d| d.decide_ms / 1000.0)),
    );
    gauge(
        "infadapt_observed_rps",
        "Mean arrival rate over the last period.",
        "gauge",
        per(&|s| s.last_decision.as_ref().map(|d| d.observed_rps)),
    );
    gauge(
        "infadapt_latency_p99_seconds",
        "Observed end-to-end p99 latency over the last period.",
        "gauge",
        per(&|s| {
            s.last_decision
                .as_ref()
                .and_then(|d| d.latency_p99_ms)
                .map(|v| v / 1000.0)
        }),
    );
    gauge(
        "infadapt_slo_attainment",
        "Share of finished requests within the SLO since start.",
        "gauge",
        per(&|s| Some(s.slo_attainment())),
    );
    gauge(
        "infadapt_plan_cores",
        "Cores held by the current plan.",
        "gauge",
        per(&|s| {
            s.plan
                .as_ref()
                .map(|p| p.stages.iter().map(|st| st.cores() as f64).sum())
        }),
    );
    gauge(
        "infadapt_ticks_total",
        "Control periods run.",
        "counter",
        per(&|s| Some(s.ticks as f64)),
    );
    gauge(
        "infadapt_reconfigurations_total",
        "Applies that changed the backend.",
        "counter",
        per(&|s| Some(s.reconfigurations as f64)),
    );
    gauge(
        "infadapt_plugin_errors_total",
        "Backend calls that failed, timed out or panicked.",
        "counter",
        per(&|s| Some(s.plugin_errors as f64)),
    );
    gauge(
        "infadapt_planner_errors_total",
        "Ticks where no plan could be found (the deployed plan was kept).",
        "counter",
        per(&|s| Some(s.planner_errors as f64)),
    );
    gauge(
        "infadapt_degraded",
        "1 while the pipeline's backend is failing.",
        "gauge",
        per(&|s| Some(f64::from(u8::from(s.degraded || s.state == "failed")))),
    );
    let mut plan_rows = Vec::new();
    for s in statuses {
        for stage in s.plan.iter().flat_map(|p| &p.stages) {
            for a in &stage.assignments {
                plan_rows.push((
                    format!(
                        "pipeline=\"{}\",stage=\"{}\",variant=\"{}\",batch=\"{}\",cores=\"{}\"",
                        escape(&s.name),
                        escape(&stage.stage),
                        escape(&a.variant),
                        a.batch,
                        a.cores
                    ),
                    f64::from(a.replicas),
                ));
            }
        }
    }
    gauge(
        "infadapt_plan_replicas",
        "Replicas per stage and variant in the current plan (batch and cores as labels).",
        "gauge",
        plan_rows,
    );
    out
}
