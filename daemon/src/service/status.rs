//! What the service knows about each pipeline right now, shared by the pipeline tasks (which
//! write it) and the HTTP API (which reads it), and its rendering as Prometheus text.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// The model whose forecast the decision used (for `auto`, the candidate it follows,
    /// e.g. `lstm`).
    pub forecaster: String,
    /// Taken between ticks by the fast path (why: `decision.fast_path`); `tick` is then the
    /// last tick before it.
    pub fast_path: bool,
    pub decision: Decision,
}

/// The trained LSTM model file a pipeline forecasts with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LstmModelStatus {
    pub path: String,
    /// FNV-1a 64 of the file's bytes as loaded, in hex.
    pub fingerprint: String,
}

impl LstmModelStatus {
    /// The status of `file`, if any.
    pub fn of(file: Option<&crate::config::LstmModelFile>) -> Option<Self> {
        file.map(|f| LstmModelStatus {
            path: f.path.display().to_string(),
            fingerprint: f.fingerprint.clone(),
        })
    }
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

/// Upper bounds of the request duration histogram, seconds: SLOs of tens of milliseconds
/// to seconds fall between two bounds.
pub const REQUEST_BUCKETS_S: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
];

/// A histogram of durations over [`REQUEST_BUCKETS_S`]: a count per bucket (not
/// cumulative; the last one is above every bound), the count and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    buckets: [u64; REQUEST_BUCKETS_S.len() + 1],
    pub count: u64,
    pub sum_s: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; REQUEST_BUCKETS_S.len() + 1],
            count: 0,
            sum_s: 0.0,
        }
    }
}

impl Histogram {
    /// Books one duration (a negative or non-finite one as 0).
    pub fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let index = REQUEST_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(REQUEST_BUCKETS_S.len());
        self.buckets[index] += 1;
        self.count += 1;
        self.sum_s += seconds;
    }

    /// What `self` booked since it was `earlier` (a copy of the same histogram taken
    /// before); a bucket that shrank (another histogram) counts as empty.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut delta = Histogram::default();
        for (d, (now, then)) in delta
            .buckets
            .iter_mut()
            .zip(self.buckets.iter().zip(&earlier.buckets))
        {
            *d = now.saturating_sub(*then);
        }
        delta.count = delta.buckets.iter().sum();
        delta.sum_s = if self.count >= earlier.count {
            (self.sum_s - earlier.sum_s).max(0.0)
        } else {
            0.0
        };
        delta
    }

    /// Adds the observations of `other`.
    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_s += other.sum_s;
    }

    /// Cumulative counts per [`REQUEST_BUCKETS_S`] bound (the `+Inf` one is `count`).
    pub fn cumulative(&self) -> Vec<u64> {
        self.buckets[..REQUEST_BUCKETS_S.len()]
            .iter()
            .scan(0u64, |total, n| {
                *total = total.saturating_add(*n);
                Some(*total)
            })
            .collect()
    }
}

/// The windows `infadapt_slo_attainment_ratio` is computed over: label and seconds.
pub const SLO_WINDOWS: [(&str, f64); 2] = [("5m", 300.0), ("1h", 3600.0)];

/// Most periods kept for the windows (bounds memory with very short periods).
const PERIODS_KEPT: usize = 20_000;

/// What one tick observed, for the windowed SLO attainment.
#[derive(Debug, Clone, Copy)]
pub struct PeriodCounts {
    /// When the tick ended (monotonic wall clock).
    pub at: Instant,
    pub completed: u64,
    pub dropped: u64,
    pub slo_misses: u64,
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
    /// The configured forecast model (`[pipeline.forecast] model`).
    pub forecaster: String,
    /// The trained LSTM model file in use, when one is configured.
    pub lstm_model: Option<LstmModelStatus>,
    /// The plan the backend was last told to run.
    pub plan: Option<Plan>,
    /// Where that plan's replicas were placed, per stage, variant and node (a backend that
    /// reports nodes; empty, and not written, otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<infadapt_model::Placement>,
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
    /// Backend reports that held values making no sense (negative or non-finite rates,
    /// latencies or queues), made fit before the loop saw them.
    pub bad_observations: u64,
    pub degraded: bool,
    pub last_error: Option<String>,
    /// The pipeline's latency SLO, milliseconds (0 until its task started).
    pub slo_ms: f64,
    /// Requests that arrived, summed over the observed periods (the router's per-second
    /// arrivals, or the backend's report): a counter, never reset while the service runs.
    pub arrived: f64,
    pub completed: u64,
    pub slo_misses: u64,
    pub dropped: u64,
    /// The newest periods' counts, oldest first (for the windowed SLO attainment).
    #[serde(skip)]
    pub periods: VecDeque<PeriodCounts>,
    /// Durations of the requests the router answered (empty without a router).
    #[serde(skip)]
    pub request_latency: Histogram,
    /// The pipeline's request router, when it has one.
    pub router: Option<crate::router::RouterCounters>,
    /// GPU memory the plans stay within, MiB, once the backend reported its GPUs.
    pub gpu_mem_limit_mb: Option<f64>,
}

impl PipelineStatus {
    /// Whether the pipeline runs with a backend it created (degraded calls included); not
    /// when it failed to start or its backend could never be created.
    pub fn is_serving(&self) -> bool {
        self.state == "running" && !self.plugin.origin.is_empty()
    }

    /// Books the counts one period observed: added to the totals (which therefore never go
    /// backwards, whatever the backend's own counters do) and kept for the windows.
    pub fn record_period(&mut self, counts: PeriodCounts, arrived: f64) {
        if arrived.is_finite() && arrived > 0.0 {
            self.arrived += arrived;
        }
        self.completed = self.completed.saturating_add(counts.completed);
        self.dropped = self.dropped.saturating_add(counts.dropped);
        self.slo_misses = self.slo_misses.saturating_add(counts.slo_misses);
        self.periods.push_back(counts);
        let longest = Duration::from_secs_f64(SLO_WINDOWS.iter().map(|w| w.1).fold(0.0, f64::max));
        while self.periods.len() > PERIODS_KEPT
            || self
                .periods
                .front()
                .is_some_and(|p| counts.at.saturating_duration_since(p.at) > longest)
        {
            self.periods.pop_front();
        }
    }

    /// Share of the requests finished in the periods that ended within `window` before
    /// `now` that met the SLO; `None` when none finished.
    pub fn slo_attainment_over(&self, window: Duration, now: Instant) -> Option<f64> {
        let (mut finished, mut misses) = (0u64, 0u64);
        for p in self
            .periods
            .iter()
            .filter(|p| now.saturating_duration_since(p.at) <= window)
        {
            finished = finished.saturating_add(p.completed.saturating_add(p.dropped));
            misses = misses.saturating_add(p.slo_misses);
        }
        (finished > 0).then(|| 1.0 - misses.min(finished) as f64 / finished as f64)
    }

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
    /// The control loops' heartbeats (for the watchdog).
    liveness: super::liveness::Liveness,
}

impl Registry {
    pub fn new(decisions_kept: usize) -> Self {
        Registry {
            inner: Arc::default(),
            decisions_kept: decisions_kept.max(1),
            liveness: super::liveness::Liveness::default(),
        }
    }

    /// The control loops' heartbeats.
    pub fn liveness(&self) -> &super::liveness::Liveness {
        &self.liveness
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
                let flag = match (&s.plugin.degraded, s.degraded) {
                    (Some(reason), _) => format!(" degraded ({})", reason.kind),
                    (None, true) => " degraded".to_owned(),
                    (None, false) => String::new(),
                };
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

pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Labels of `infadapt_build_info`: the daemon's version, the plugin ABI it loads, and the
/// operating system and architecture it was built for.
fn build_info_labels() -> String {
    format!(
        "version=\"{}\",plugin_abi=\"{}\",os=\"{}\",arch=\"{}\"",
        escape(env!("CARGO_PKG_VERSION")),
        infadapt_plugin_abi::ABI_VERSION,
        escape(std::env::consts::OS),
        escape(std::env::consts::ARCH)
    )
}

/// One histogram family: `_bucket` lines per bound (cumulative) and `+Inf`, `_sum` and
/// `_count`, for each labelled series.
struct HistogramSeries {
    labels: String,
    /// (upper bound, cumulative count) pairs, increasing bounds.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum_s: f64,
}

fn write_histogram(out: &mut String, name: &str, help: &str, series: &[HistogramSeries]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for s in series {
        let labels = &s.labels;
        for (bound, count) in &s.buckets {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n\
             {name}_sum{{{labels}}} {}\n\
             {name}_count{{{labels}}} {}",
            s.count, s.sum_s, s.count
        );
    }
}

/// Prometheus text exposition of every pipeline (and `infadapt_build_info`), with the
/// windowed SLO attainment as of now. Process metrics are apart (`super::process`).
pub fn render_metrics(statuses: &[PipelineStatus]) -> String {
    render_metrics_at(statuses, Instant::now())
}

/// [`render_metrics`] with the windows ending at `now`.
pub fn render_metrics_at(statuses: &[PipelineStatus], now: Instant) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP infadapt_build_info Always 1; the labels say which build of infadaptd runs.\n\
         # TYPE infadapt_build_info gauge\n\
         infadapt_build_info{{{}}} 1",
        build_info_labels()
    );
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
        "infadapt_slo_attainment_ratio",
        "Share of the requests finished in the ticks of the window that met the SLO \
         (absent while none finished).",
        "gauge",
        statuses
            .iter()
            .flat_map(|s| {
                SLO_WINDOWS.iter().filter_map(move |(label, seconds)| {
                    s.slo_attainment_over(Duration::from_secs_f64(*seconds), now)
                        .map(|v| {
                            (
                                format!("pipeline=\"{}\",window=\"{label}\"", escape(&s.name)),
                                v,
                            )
                        })
                })
            })
            .collect(),
    );
    gauge(
        "infadapt_slo_seconds",
        "The pipeline's end-to-end latency SLO.",
        "gauge",
        per(&|s| (s.slo_ms > 0.0).then_some(s.slo_ms / 1000.0)),
    );
    gauge(
        "infadapt_period_seconds",
        "The control period: time between two ticks.",
        "gauge",
        per(&|s| (s.period_s > 0.0).then_some(s.period_s)),
    );
    for (name, help, value) in [
        (
            "infadapt_requests_arrived_total",
            "Requests that arrived, summed over the observed periods.",
            (|s| s.arrived) as fn(&PipelineStatus) -> f64,
        ),
        (
            "infadapt_requests_completed_total",
            "Requests answered, summed over the observed periods.",
            |s| s.completed as f64,
        ),
        (
            "infadapt_requests_dropped_total",
            "Requests dropped or failed, summed over the observed periods.",
            |s| s.dropped as f64,
        ),
        (
            "infadapt_requests_slo_misses_total",
            "Requests that failed or took longer than the SLO, summed over the observed periods.",
            |s| s.slo_misses as f64,
        ),
    ] {
        gauge(name, help, "counter", per(&|s| Some(value(s))));
    }
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
        "infadapt_bad_observations_total",
        "Backend reports with values that make no sense (negative or non-finite rates, \
         latencies or queues), made fit before the loop saw them.",
        "counter",
        per(&|s| Some(s.bad_observations as f64)),
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
    let ticks: Vec<HistogramSeries> = statuses
        .iter()
        .map(|s| HistogramSeries {
            labels: format!("pipeline=\"{}\"", escape(&s.name)),
            buckets: TICK_BUCKETS_S
                .iter()
                .copied()
                .zip(s.tick_times.buckets)
                .collect(),
            count: s.tick_times.count,
            sum_s: s.tick_times.sum_s,
        })
        .collect();
    write_histogram(
        &mut out,
        "infadapt_tick_seconds",
        "Duration of a whole tick (observe, decide, apply, record).",
        &ticks,
    );
    let requests: Vec<HistogramSeries> = statuses
        .iter()
        .filter(|s| s.router.is_some())
        .map(|s| HistogramSeries {
            labels: format!("pipeline=\"{}\"", escape(&s.name)),
            buckets: REQUEST_BUCKETS_S
                .iter()
                .copied()
                .zip(s.request_latency.cumulative())
                .collect(),
            count: s.request_latency.count,
            sum_s: s.request_latency.sum_s,
        })
        .collect();
    write_histogram(
        &mut out,
        "infadapt_request_duration_seconds",
        "End-to-end duration of the requests the pipeline's router answered (pipelines with a \
         router only).",
        &requests,
    );
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

    fn counts(at: Instant, completed: u64, dropped: u64, slo_misses: u64) -> PeriodCounts {
        PeriodCounts {
            at,
            completed,
            dropped,
            slo_misses,
        }
    }

    #[test]
    fn periods_add_to_counters_and_windows_see_only_their_ticks() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut status = PipelineStatus {
            name: "p".into(),
            ..PipelineStatus::default()
        };
        // An old hour with many misses, then five good minutes.
        status.record_period(counts(at(0), 100, 0, 50), 100.0);
        status.record_period(counts(at(3000), 90, 10, 20), 100.0);
        status.record_period(counts(at(3500), 99, 1, 1), 100.5);
        status.record_period(counts(at(3600), 100, 0, 0), f64::NAN);
        assert_eq!(
            (status.completed, status.dropped, status.slo_misses),
            (389, 11, 71)
        );
        assert!((status.arrived - 300.5).abs() < 1e-9);
        let minute = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            status.slo_attainment_over(minute(5), at(3600)),
            Some(1.0 - 1.0 / 200.0)
        );
        assert_eq!(
            status.slo_attainment_over(minute(60), at(3600)),
            Some(1.0 - 71.0 / 400.0)
        );
        // Nothing finished in the window: no value rather than a made-up one.
        assert_eq!(status.slo_attainment_over(minute(5), at(4000)), None);
        let text = render_metrics_at(&[status.clone()], at(3600));
        // A period an hour older than the newest one is dropped; the totals stay.
        status.record_period(counts(at(3601), 0, 0, 0), 0.0);
        assert_eq!(status.periods.len(), 4);
        assert_eq!(status.completed, 389);
        for line in [
            "infadapt_requests_completed_total{pipeline=\"p\"} 389",
            "infadapt_requests_dropped_total{pipeline=\"p\"} 11",
            "infadapt_requests_slo_misses_total{pipeline=\"p\"} 71",
            "infadapt_requests_arrived_total{pipeline=\"p\"} 300.5",
            "infadapt_slo_attainment_ratio{pipeline=\"p\",window=\"5m\"} 0.995",
            "infadapt_slo_attainment_ratio{pipeline=\"p\",window=\"1h\"} 0.8225",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Without a router there is no request duration series for the pipeline.
        assert!(!text.contains("infadapt_request_duration_seconds_bucket{pipeline=\"p\""));
    }

    #[test]
    fn request_durations_are_cumulative_and_deltas_never_go_backwards() {
        let mut router = Histogram::default();
        for ms in [3.0, 8.0, 60.0, 400.0, 20_000.0, f64::NAN] {
            router.observe(ms / 1000.0);
        }
        let mut status = PipelineStatus {
            name: "r".into(),
            router: Some(crate::router::RouterCounters::default()),
            ..PipelineStatus::default()
        };
        status
            .request_latency
            .add(&router.since(&Histogram::default()));
        // A new router (restart) starts from zero: what came since an older, larger copy
        // is nothing, never a negative count.
        let fresh = Histogram::default();
        assert_eq!(fresh.since(&router), Histogram::default());
        let seen = router.clone();
        router.observe(0.09);
        status.request_latency.add(&router.since(&seen));
        let text = render_metrics_at(&[status], Instant::now());
        for line in [
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"0.005\"} 2",
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"0.01\"} 3",
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"0.075\"} 4",
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"0.1\"} 5",
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"10\"} 6",
            "infadapt_request_duration_seconds_bucket{pipeline=\"r\",le=\"+Inf\"} 7",
            "infadapt_request_duration_seconds_count{pipeline=\"r\"} 7",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("infadapt_build_info{version=\""), "{text}");
    }
}
