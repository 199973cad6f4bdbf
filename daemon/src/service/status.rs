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
    /// Whether the plan was handed to the backend (false: unchanged, dry run, paused or
    /// failed).
    pub applied: bool,
    /// Why a plan that differs from the one in force was not applied: `paused`, `dry run`
    /// or `apply failed`; absent when it was applied or kept the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applied: Option<String>,
    pub apply_actions: Vec<String>,
    pub observed_rps: f64,
    pub latency_p99_ms: Option<f64>,
    pub decide_ms: f64,
    /// Taken between ticks by the fast path (why: `decision.fast_path`); `tick` is then the
    /// last tick before it.
    pub fast_path: bool,
    pub decision: Decision,
}

/// Why a pipeline's backend is degraded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DegradedReason {
    /// `load` (the library was not found or refused), `create`, `panic`, `timeout`, `error`
    /// or `unusable`.
    pub kind: String,
    /// The full error, naming the backend and the call.
    pub message: String,
}

/// How the guarded calls to a pipeline's backend went (from the plugin host's counters).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct PluginStatus {
    /// `linked in` or `plugin PATH`; empty until the backend exists.
    pub origin: String,
    pub calls: u64,
    /// Calls that returned an error status (panics and timeouts not included).
    pub errors: u64,
    pub panics: u64,
    pub timeouts: u64,
    /// Calls not attempted because of backoff or a hung call.
    pub refused: u64,
    /// Instances recreated after a panic.
    pub restarts: u64,
    /// Failed attempts to load the library or create the instance.
    pub create_failures: u64,
    /// A timed-out call is still running.
    pub hung: bool,
    pub degraded: Option<DegradedReason>,
    /// Seconds until the next attempt while degraded.
    pub retry_in_s: Option<f64>,
}

impl PluginStatus {
    /// Every failure: errors, panics, timeouts and failed creations.
    pub fn failures(&self) -> u64 {
        self.errors + self.panics + self.timeouts + self.create_failures
    }
}

/// Upper bounds of the tick duration histogram, seconds.
pub const TICK_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Recent tick durations kept for quantiles.
const TICKS_KEPT: usize = 512;

/// Durations of whole ticks (observe, decide, apply, record).
#[derive(Debug, Clone, Default)]
pub struct TickTimes {
    /// Cumulative counts per [`TICK_BUCKETS_S`] bound.
    pub buckets: [u64; TICK_BUCKETS_S.len()],
    pub count: u64,
    pub sum_s: f64,
    recent: VecDeque<f64>,
}

/// Quantiles of the recent tick durations, milliseconds.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct TickSummary {
    pub count: u64,
    /// Ticks the quantiles are computed over (the newest ones).
    pub window: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl TickTimes {
    /// Books one tick.
    pub fn record(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        for (bound, count) in TICK_BUCKETS_S.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_s += seconds;
        self.recent.push_back(seconds);
        while self.recent.len() > TICKS_KEPT {
            self.recent.pop_front();
        }
    }

    /// p50, p99 and max of the newest ticks (nearest rank).
    pub fn summary(&self) -> TickSummary {
        let mut sorted: Vec<f64> = self.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index] * 1000.0
        };
        TickSummary {
            count: self.count,
            window: sorted.len(),
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: sorted.last().map_or(0.0, |s| s * 1000.0),
        }
    }
}

impl Serialize for TickTimes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.summary().serialize(serializer)
    }
}

/// The live state of one pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineStatus {
    pub name: String,
    pub backend: String,
    /// `starting`, `running`, `failed` or `stopped`.
    pub state: String,
    pub dry_run: bool,
    /// Paused over the API: the loop keeps deciding, nothing is applied.
    pub paused: bool,
    pub period_s: f64,
    /// The plan the backend was last told to run.
    pub plan: Option<Plan>,
    pub last_decision: Option<DecisionRecord>,
    #[serde(skip)]
    pub decisions: VecDeque<DecisionRecord>,
    pub ticks: u64,
    /// The fast path between ticks: `on (router)`, `on (simulated backend)`, or `off: …`
    /// with the reason.
    pub fast_path: String,
    /// Decisions taken between ticks by the fast path.
    pub fast_path_decisions: u64,
    /// How long ticks take (in JSON: quantiles of the recent ones).
    pub tick_times: TickTimes,
    pub reconfigurations: u64,
    /// Backend calls that failed, panicked or timed out, and failed creations.
    pub plugin_errors: u64,
    /// The guarded backend calls in detail.
    pub plugin: PluginStatus,
    pub planner_errors: u64,
    pub degraded: bool,
    pub last_error: Option<String>,
    pub completed: u64,
    pub slo_misses: u64,
    pub dropped: u64,
    /// The pipeline's request router, when it has one.
    pub router: Option<crate::router::RouterCounters>,
    /// GPU memory the plans stay within, MiB, once the backend reported its GPUs.
    pub gpu_mem_limit_mb: Option<f64>,
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

    /// Pauses or resumes `name`; `None` when the service runs no such pipeline, else
    /// whether it was paused before.
    pub fn set_paused(&self, name: &str, paused: bool) -> Option<bool> {
        let mut map = self.lock();
        let status = map.get_mut(name)?;
        Some(std::mem::replace(&mut status.paused, paused))
    }

    /// Whether the service knows `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Whether `name` is paused.
    pub fn is_paused(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|s| s.paused)
    }

    /// The names of the paused pipelines.
    pub fn paused(&self) -> std::collections::BTreeSet<String> {
        self.lock()
            .values()
            .filter(|s| s.paused)
            .map(|s| s.name.clone())
            .collect()
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
    for (name, help, value) in [
        (
            "infadapt_router_requests_total",
            "Requests the pipeline's router received.",
            (|c| c.requests) as fn(&crate::router::RouterCounters) -> u64,
        ),
        (
            "infadapt_router_failed_total",
            "Router requests answered with an error.",
            |c| c.failed,
        ),
        (
            "infadapt_router_retries_total",
            "Router requests retried on another endpoint after a failure.",
            |c| c.retries,
        ),
        (
            "infadapt_router_slo_misses_total",
            "Router requests that failed or took longer than the SLO.",
            |c| c.slo_misses,
        ),
        (
            "infadapt_router_ready_endpoints",
            "Endpoints the router currently sends requests to.",
            |c| c.ready_endpoints,
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        gauge(
            name,
            help,
            kind,
            per(&|s| s.router.as_ref().map(|c| value(c) as f64)),
        );
    }
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
        "infadapt_fast_path_decisions_total",
        "Decisions taken between ticks because arrivals or queues outran the plan in force.",
        "counter",
        per(&|s| Some(s.fast_path_decisions as f64)),
    );
    gauge(
        "infadapt_reconfigurations_total",
        "Applies that changed the backend.",
        "counter",
        per(&|s| Some(s.reconfigurations as f64)),
    );
    gauge(
        "infadapt_plugin_calls_total",
        "Backend calls attempted.",
        "counter",
        per(&|s| Some(s.plugin.calls as f64)),
    );
    gauge(
        "infadapt_plugin_errors_total",
        "Backend calls that returned an error, and failed loads or creations.",
        "counter",
        per(&|s| Some((s.plugin.errors + s.plugin.create_failures) as f64)),
    );
    gauge(
        "infadapt_plugin_panics_total",
        "Backend calls that panicked.",
        "counter",
        per(&|s| Some(s.plugin.panics as f64)),
    );
    gauge(
        "infadapt_plugin_timeouts_total",
        "Backend calls that ran past the time limit.",
        "counter",
        per(&|s| Some(s.plugin.timeouts as f64)),
    );
    gauge(
        "infadapt_plugin_refused_total",
        "Backend calls not attempted while backing off or while a call hangs.",
        "counter",
        per(&|s| Some(s.plugin.refused as f64)),
    );
    gauge(
        "infadapt_plugin_restarts_total",
        "Backend instances recreated after a panic.",
        "counter",
        per(&|s| Some(s.plugin.restarts as f64)),
    );
    gauge(
        "infadapt_planner_errors_total",
        "Ticks where no plan could be found (the deployed plan was kept).",
        "counter",
        per(&|s| Some(s.planner_errors as f64)),
    );
    gauge(
        "infadapt_paused",
        "1 while the pipeline is paused over the API (it decides but applies nothing).",
        "gauge",
        per(&|s| Some(f64::from(u8::from(s.paused)))),
    );
    gauge(
        "infadapt_degraded",
        "1 while the pipeline's backend is failing.",
        "gauge",
        per(&|s| Some(f64::from(u8::from(s.degraded || s.state == "failed")))),
    );
    gauge(
        "infadapt_plugin_hung",
        "1 while a timed-out backend call is still running.",
        "gauge",
        per(&|s| Some(f64::from(u8::from(s.plugin.hung)))),
    );
    gauge(
        "infadapt_degraded_reason",
        "1 for the kind of failure a degraded pipeline's backend last had \
         (load, create, panic, timeout, error, unusable).",
        "gauge",
        statuses
            .iter()
            .filter_map(|s| {
                s.plugin.degraded.as_ref().map(|d| {
                    (
                        format!(
                            "pipeline=\"{}\",backend=\"{}\",reason=\"{}\"",
                            escape(&s.name),
                            escape(&s.backend),
                            escape(&d.kind)
                        ),
                        1.0,
                    )
                })
            })
            .collect(),
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
    let _ = writeln!(
        out,
        "# HELP infadapt_tick_seconds Duration of a whole tick (observe, decide, apply, record).\n\
         # TYPE infadapt_tick_seconds histogram"
    );
    for s in statuses {
        let name = escape(&s.name);
        for (bound, count) in TICK_BUCKETS_S.iter().zip(s.tick_times.buckets) {
            let _ = writeln!(
                out,
                "infadapt_tick_seconds_bucket{{pipeline=\"{name}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "infadapt_tick_seconds_bucket{{pipeline=\"{name}\",le=\"+Inf\"}} {}\n\
             infadapt_tick_seconds_sum{{pipeline=\"{name}\"}} {}\n\
             infadapt_tick_seconds_count{{pipeline=\"{name}\"}} {}",
            s.tick_times.count, s.tick_times.sum_s, s.tick_times.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_times_give_quantiles_and_a_cumulative_histogram() {
        let mut times = TickTimes::default();
        for ms in 1..=100 {
            times.record(f64::from(ms) / 1000.0);
        }
        times.record(f64::NAN);
        let summary = times.summary();
        assert_eq!((summary.count, summary.window), (101, 101));
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        let status = PipelineStatus {
            name: "p".into(),
            tick_times: times,
            ..PipelineStatus::default()
        };
        let text = render_metrics(&[status]);
        for line in [
            "infadapt_tick_seconds_bucket{pipeline=\"p\",le=\"0.05\"} 51",
            "infadapt_tick_seconds_bucket{pipeline=\"p\",le=\"+Inf\"} 101",
            "infadapt_tick_seconds_count{pipeline=\"p\"} 101",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
