//! The configuration reference: every key of the daemon's file with its type, default,
//! accepted range and meaning. The reader checks every number against the range here (see
//! `tomlread::with_range_check`), and the reference is rendered as the doc page
//! `docs/configuration.md` and as the CONFIGURATION section of `infadaptd(1)`; its tests
//! prove it lists exactly the keys the reader reads and that each range is enforced as
//! written.

use std::fmt;

/// The accepted values of a numeric key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    /// The minimum itself is refused (`(min, …`).
    pub min_open: bool,
    pub max: f64,
    /// The maximum itself is refused (`…, max)`).
    pub max_open: bool,
}

impl Bounds {
    pub fn contains(&self, value: f64) -> bool {
        let above = if self.min_open {
            value > self.min
        } else {
            value >= self.min
        };
        let below = if self.max_open {
            value < self.max
        } else {
            value <= self.max
        };
        above && below
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.min_open { "(" } else { "[" },
            self.min,
            self.max,
            if self.max_open { ")" } else { "]" }
        )
    }
}

/// One key of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpec {
    /// Dotted path, array tables without indices (`pipeline.stage.max_replicas`).
    pub path: &'static str,
    /// The value's type as the reference shows it.
    pub kind: &'static str,
    /// Whether the value is an integer (numbers with `bounds` only).
    pub integer: bool,
    /// The default as the reference shows it (`required` when there is none).
    pub default: &'static str,
    /// The accepted range of a number; every number has one.
    pub bounds: Option<Bounds>,
    pub doc: &'static str,
}

/// Every key the daemon's configuration reader reads, in the reference's order. The keys of
/// a `[pipeline.backend]` table other than `type` belong to the backend and are documented
/// with it.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        path: "daemon.period_s",
        kind: "number (s)",
        integer: false,
        default: "10",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 86400.0,
            max_open: false,
        }),
        doc: "Default control period of every pipeline.",
    },
    KeySpec {
        path: "daemon.state_dir",
        kind: "path",
        integer: false,
        default: "`$STATE_DIRECTORY`, else `/var/lib/infadaptd`",
        bounds: None,
        doc: "Where plans and forecaster state are saved between runs (relative to the file).",
    },
    KeySpec {
        path: "daemon.plugin_dirs",
        kind: "list of paths",
        integer: false,
        default: "`[\"/usr/lib/infadaptd/plugins\"]`",
        bounds: None,
        doc: "Directories searched for backend plugin libraries (relative to the file).",
    },
    KeySpec {
        path: "daemon.log",
        kind: "string",
        integer: false,
        default: "`info`",
        bounds: None,
        doc: "Log filter when `RUST_LOG` is unset, e.g. `info` or `infadaptd=debug`.",
    },
    KeySpec {
        path: "daemon.grace_s",
        kind: "number (s)",
        integer: false,
        default: "10",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 3600.0,
            max_open: false,
        }),
        doc: "How long a stop waits for in-flight applies before exiting anyway.",
    },
    KeySpec {
        path: "daemon.decisions_kept",
        kind: "integer",
        integer: true,
        default: "100",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 1000000.0,
            max_open: false,
        }),
        doc: "Decisions kept per pipeline for `/v1/decisions`.",
    },
    KeySpec {
        path: "daemon.backend_timeout_s",
        kind: "number (s)",
        integer: false,
        default: "5",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Time limit of one backend call (and of loading a plugin and its config check).",
    },
    KeySpec {
        path: "daemon.require_running_pipeline",
        kind: "boolean",
        integer: false,
        default: "true",
        bounds: None,
        doc: "Exit with an error at start when no pipeline could create its backend.",
    },
    KeySpec {
        path: "daemon.http.enabled",
        kind: "boolean",
        integer: false,
        default: "true",
        bounds: None,
        doc: "Serve the HTTP API.",
    },
    KeySpec {
        path: "daemon.http.listen",
        kind: "address",
        integer: false,
        default: "`127.0.0.1:9187`",
        bounds: None,
        doc: "TCP address of the HTTP API.",
    },
    KeySpec {
        path: "daemon.http.unix",
        kind: "path",
        integer: false,
        default: "none",
        bounds: None,
        doc: "Unix socket of the HTTP API instead of `listen`.",
    },
    KeySpec {
        path: "daemon.http.token_file",
        kind: "path",
        integer: false,
        default: "none",
        bounds: None,
        doc: "File holding the bearer token of the write endpoints (pause, resume); mode 0600 or stricter. Without it they answer 403.",
    },
    KeySpec {
        path: "daemon.http.max_connections",
        kind: "integer",
        integer: true,
        default: "128",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 65536.0,
            max_open: false,
        }),
        doc: "Most connections the API serves at once; one more is closed at once (counted in `infadapt_http_connections_refused_total`). Keep it and the routers' limits well below the open-files limit.",
    },
    KeySpec {
        path: "daemon.http.header_timeout_s",
        kind: "number (s)",
        integer: false,
        default: "10",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Time a request's head (request line and headers) may take to arrive, counted from the connection's start or the end of the previous answer; a slower or idle connection is closed.",
    },
    KeySpec {
        path: "daemon.http.idle_timeout_s",
        kind: "number (s)",
        integer: false,
        default: "60",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 86400.0,
            max_open: false,
        }),
        doc: "A connection that moves no byte for this long while no request on it is being answered is closed; a request body that stalls for as long fails.",
    },
    KeySpec {
        path: "pipeline.name",
        kind: "string",
        integer: false,
        default: "required",
        bounds: None,
        doc: "The pipeline's name (unique in the file): 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.` (it names the state file, log lines, metric labels and API paths).",
    },
    KeySpec {
        path: "pipeline.catalog",
        kind: "path",
        integer: false,
        default: "none",
        bounds: None,
        doc: "Catalog of variants and profiles for every stage (relative to the file).",
    },
    KeySpec {
        path: "pipeline.slo_ms",
        kind: "number (ms)",
        integer: false,
        default: "required",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 3600000.0,
            max_open: false,
        }),
        doc: "End-to-end latency SLO (p99).",
    },
    KeySpec {
        path: "pipeline.period_s",
        kind: "number (s)",
        integer: false,
        default: "`daemon.period_s`",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 86400.0,
            max_open: false,
        }),
        doc: "This pipeline's control period.",
    },
    KeySpec {
        path: "pipeline.initial_load_rps",
        kind: "number (req/s)",
        integer: false,
        default: "1",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 10000000.0,
            max_open: false,
        }),
        doc: "Load the first plan is sized for, before anything was observed.",
    },
    KeySpec {
        path: "pipeline.stage.name",
        kind: "string",
        integer: false,
        default: "required",
        bounds: None,
        doc: "The stage's name (unique in the pipeline).",
    },
    KeySpec {
        path: "pipeline.stage.catalog",
        kind: "path",
        integer: false,
        default: "the pipeline's `catalog`",
        bounds: None,
        doc: "Catalog for this stage only.",
    },
    KeySpec {
        path: "pipeline.stage.variants",
        kind: "list of strings",
        integer: false,
        default: "required",
        bounds: None,
        doc: "Variants the planner may choose from (names in the catalog).",
    },
    KeySpec {
        path: "pipeline.stage.batch_sizes",
        kind: "list of integers",
        integer: false,
        default: "`[1]`",
        bounds: None,
        doc: "Batch sizes the planner may choose (each ≥ 1).",
    },
    KeySpec {
        path: "pipeline.stage.core_options",
        kind: "list of integers",
        integer: false,
        default: "`[1]`",
        bounds: None,
        doc: "Cores per replica the planner may choose (each ≥ 1).",
    },
    KeySpec {
        path: "pipeline.stage.min_replicas",
        kind: "integer",
        integer: true,
        default: "1",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Fewest replicas of the stage (all its variants together); at most `max_replicas`.",
    },
    KeySpec {
        path: "pipeline.stage.max_replicas",
        kind: "integer",
        integer: true,
        default: "64",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Most replicas of the stage.",
    },
    KeySpec {
        path: "pipeline.weights.alpha",
        kind: "number",
        integer: false,
        default: "1",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "Weight of accuracy in the objective.",
    },
    KeySpec {
        path: "pipeline.weights.beta_per_core",
        kind: "number",
        integer: false,
        default: "0.0025",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "Cost of one core.",
    },
    KeySpec {
        path: "pipeline.weights.beta_per_gpu_gib",
        kind: "number",
        integer: false,
        default: "0",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "Cost of one GiB of GPU memory.",
    },
    KeySpec {
        path: "pipeline.weights.gamma_per_cold_start_s",
        kind: "number",
        integer: false,
        default: "0.0001",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "Cost of one second of replica cold start caused by a change.",
    },
    KeySpec {
        path: "pipeline.weights.accuracy",
        kind: "`sum` or `product`",
        integer: false,
        default: "`sum`",
        bounds: None,
        doc: "How stage accuracies combine.",
    },
    KeySpec {
        path: "pipeline.limits.total_cores",
        kind: "integer",
        integer: true,
        default: "none",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Cores the plans may use on the host.",
    },
    KeySpec {
        path: "pipeline.limits.gpu_mem_mb",
        kind: "number (MiB)",
        integer: false,
        default: "none",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "GPU memory the plans may use (also bounded by what the backend reports).",
    },
    KeySpec {
        path: "pipeline.solver.method",
        kind: "`auto`, `pareto-dp` or `milp`",
        integer: false,
        default: "`auto`",
        bounds: None,
        doc: "Which exact solver plans.",
    },
    KeySpec {
        path: "pipeline.solver.time_limit_ms",
        kind: "integer (ms)",
        integer: true,
        default: "1000",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 600000.0,
            max_open: false,
        }),
        doc: "Time limit of one solve.",
    },
    KeySpec {
        path: "pipeline.solver.utilisation_cap",
        kind: "number",
        integer: false,
        default: "0.8",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 1.0,
            max_open: false,
        }),
        doc: "Highest utilisation a plan may run replicas at.",
    },
    KeySpec {
        path: "pipeline.solver.allow_mix",
        kind: "boolean",
        integer: false,
        default: "false",
        bounds: None,
        doc: "Allow a mix of variants in a stage (single-stage pipelines).",
    },
    KeySpec {
        path: "pipeline.solver.extra_replicas",
        kind: "integer",
        integer: true,
        default: "2",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000.0,
            max_open: false,
        }),
        doc: "Replica counts considered above the minimum that covers the load.",
    },
    KeySpec {
        path: "pipeline.solver.service_cv2",
        kind: "number",
        integer: false,
        default: "0.1",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 100.0,
            max_open: false,
        }),
        doc: "Squared coefficient of variation of service times (queueing model).",
    },
    KeySpec {
        path: "pipeline.solver.extrapolation",
        kind: "`warn` or `forbid`",
        integer: false,
        default: "`warn`",
        bounds: None,
        doc: "Whether plans may use profile points extrapolated beyond the measured range.",
    },
    KeySpec {
        path: "pipeline.solver.max_extrapolation",
        kind: "number",
        integer: false,
        default: "2",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 1000.0,
            max_open: false,
        }),
        doc: "How far beyond the measured range extrapolation may go (factor).",
    },
    KeySpec {
        path: "pipeline.forecast.model",
        kind: "`arima`, `lstm`, `ipa-lstm`, `naive`, `max`, `ewma`, `holt-winters` or `auto`",
        integer: false,
        default: "`max`",
        bounds: None,
        doc: "Load forecaster (`lstm` and `ipa-lstm` need `lstm_model`).",
    },
    KeySpec {
        path: "pipeline.forecast.lstm_model",
        kind: "path",
        integer: false,
        default: "none",
        bounds: None,
        doc: "Trained LSTM model file from `infadaptd forecast train` (relative to the file).",
    },
    KeySpec {
        path: "pipeline.forecast.horizon_s",
        kind: "number (s)",
        integer: false,
        default: "the lead time (period + longest cold start)",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 86400.0,
            max_open: false,
        }),
        doc: "How far ahead the forecast looks.",
    },
    KeySpec {
        path: "pipeline.forecast.smoothing_s",
        kind: "number (s)",
        integer: false,
        default: "3",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Seconds per load sample the forecaster sees.",
    },
    KeySpec {
        path: "pipeline.forecast.upper_quantile",
        kind: "number",
        integer: false,
        default: "0.9",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 1.0,
            max_open: true,
        }),
        doc: "Quantile of the calibrated upper bound plans are sized for.",
    },
    KeySpec {
        path: "pipeline.forecast.basis",
        kind: "`upper` or `point`",
        integer: false,
        default: "`upper`",
        bounds: None,
        doc: "Plan for the upper bound or the point forecast.",
    },
    KeySpec {
        path: "pipeline.forecast.margin",
        kind: "number",
        integer: false,
        default: "1",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 100.0,
            max_open: false,
        }),
        doc: "Factor applied to the forecast load.",
    },
    KeySpec {
        path: "pipeline.forecast.floor",
        kind: "`observed-mean`, `observed-peak` or `none`",
        integer: false,
        default: "`observed-mean`",
        bounds: None,
        doc: "Lower bound of the planned load from what was observed.",
    },
    KeySpec {
        path: "pipeline.damping.enabled",
        kind: "boolean",
        integer: false,
        default: "true",
        bounds: None,
        doc: "Damp decisions (off: apply every proposal).",
    },
    KeySpec {
        path: "pipeline.damping.stabilization_window_s",
        kind: "number (s)",
        integer: false,
        default: "120",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 86400.0,
            max_open: false,
        }),
        doc: "Scale-down takes the largest recommendation of this window.",
    },
    KeySpec {
        path: "pipeline.damping.scale_up_stabilization_window_s",
        kind: "number (s)",
        integer: false,
        default: "0",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 86400.0,
            max_open: false,
        }),
        doc: "An optional scale-up takes the smallest recommendation of this window (a needed increase goes at once).",
    },
    KeySpec {
        path: "pipeline.damping.deadband_fraction",
        kind: "number",
        integer: false,
        default: "0.1",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1.0,
            max_open: true,
        }),
        doc: "Capacity changes smaller than this share are not made.",
    },
    KeySpec {
        path: "pipeline.damping.deadband_replicas",
        kind: "integer",
        integer: true,
        default: "0",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Replica changes up to this many are not made.",
    },
    KeySpec {
        path: "pipeline.damping.min_dwell_s",
        kind: "number (s)",
        integer: false,
        default: "120",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 86400.0,
            max_open: false,
        }),
        doc: "Least time between two variant switches.",
    },
    KeySpec {
        path: "pipeline.damping.max_replicas_added_per_tick",
        kind: "integer",
        integer: true,
        default: "8",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Most replicas one tick adds.",
    },
    KeySpec {
        path: "pipeline.damping.max_replicas_removed_per_tick",
        kind: "integer",
        integer: true,
        default: "no limit",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Most replicas one tick removes.",
    },
    KeySpec {
        path: "pipeline.damping.max_scale_up_percent",
        kind: "number (%)",
        integer: false,
        default: "no limit",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 100000.0,
            max_open: false,
        }),
        doc: "Most replicas one tick adds, as a percentage of the stage's replicas (optional increases only).",
    },
    KeySpec {
        path: "pipeline.damping.scale_up_select_policy",
        kind: "`max` or `min`",
        integer: false,
        default: "`max`",
        bounds: None,
        doc: "How the replica and percent limits combine: the more permissive (`max`) or the stricter (`min`).",
    },
    KeySpec {
        path: "pipeline.damping.min_switch_gain",
        kind: "number",
        integer: false,
        default: "0.005",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 1000000000.0,
            max_open: false,
        }),
        doc: "Least objective gain (accumulated over ticks) worth a switch.",
    },
    KeySpec {
        path: "pipeline.fast_path.enabled",
        kind: "boolean",
        integer: false,
        default: "true",
        bounds: None,
        doc: "Re-plan between ticks when arrivals or queues outrun the plan.",
    },
    KeySpec {
        path: "pipeline.fast_path.window_s",
        kind: "number (s)",
        integer: false,
        default: "2",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Seconds of arrivals the trigger averages.",
    },
    KeySpec {
        path: "pipeline.fast_path.sigmas",
        kind: "number",
        integer: false,
        default: "3",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Poisson standard deviations above the planned load that trigger.",
    },
    KeySpec {
        path: "pipeline.fast_path.queue_slo_fraction",
        kind: "number",
        integer: false,
        default: "0.5",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 100.0,
            max_open: false,
        }),
        doc: "Queue longer than the capacity serves in this share of the SLO triggers.",
    },
    KeySpec {
        path: "pipeline.fast_path.min_gap_s",
        kind: "number (s)",
        integer: false,
        default: "2",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 3600.0,
            max_open: false,
        }),
        doc: "Least time between two fast-path decisions.",
    },
    KeySpec {
        path: "pipeline.fast_path.check_s",
        kind: "number (s)",
        integer: false,
        default: "1 (or the period, when shorter)",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: true,
            max: 86400.0,
            max_open: false,
        }),
        doc: "Seconds between two looks at the load between ticks; at most `period_s`.",
    },
    KeySpec {
        path: "pipeline.spare.enabled",
        kind: "boolean",
        integer: false,
        default: "true",
        bounds: None,
        doc: "Keep warm spare capacity for bursts when it pays.",
    },
    KeySpec {
        path: "pipeline.spare.history_s",
        kind: "number (s)",
        integer: false,
        default: "3600",
        bounds: Some(Bounds {
            min: 60.0,
            min_open: false,
            max: 86400.0,
            max_open: false,
        }),
        doc: "Seconds of arrivals the burst history keeps.",
    },
    KeySpec {
        path: "pipeline.backend.type",
        kind: "string",
        integer: false,
        default: "required",
        bounds: None,
        doc: "`sim` (linked in) or the name of a plugin; the table's other keys belong to the backend and are checked by it.",
    },
    KeySpec {
        path: "pipeline.router.listen",
        kind: "address",
        integer: false,
        default: "required",
        bounds: None,
        doc: "Address of the pipeline's KServe v2 endpoint.",
    },
    KeySpec {
        path: "pipeline.router.timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: "10000",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 3600000.0,
            max_open: false,
        }),
        doc: "Time limit of one forwarded request.",
    },
    KeySpec {
        path: "pipeline.router.max_body_bytes",
        kind: "integer (bytes)",
        integer: true,
        default: "16777216",
        bounds: Some(Bounds {
            min: 1024.0,
            min_open: false,
            max: 4294967295.0,
            max_open: false,
        }),
        doc: "Largest request body accepted.",
    },
    KeySpec {
        path: "pipeline.router.ready_wait_ms",
        kind: "integer (ms)",
        integer: true,
        default: "5000",
        bounds: Some(Bounds {
            min: 0.0,
            min_open: false,
            max: 3600000.0,
            max_open: false,
        }),
        doc: "How long a request waits for a ready endpoint before a 503.",
    },
    KeySpec {
        path: "pipeline.router.max_connections",
        kind: "integer",
        integer: true,
        default: "1024",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 65536.0,
            max_open: false,
        }),
        doc: "Most client connections the router serves at once; one more is closed at once (counted in `infadapt_http_connections_refused_total`).",
    },
    KeySpec {
        path: "pipeline.router.header_timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: "10000",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 3600000.0,
            max_open: false,
        }),
        doc: "Time a request's head may take to arrive, counted from the connection's start or the end of the previous answer; a slower or idle connection is closed.",
    },
    KeySpec {
        path: "pipeline.router.idle_timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: "60000",
        bounds: Some(Bounds {
            min: 1.0,
            min_open: false,
            max: 86400000.0,
            max_open: false,
        }),
        doc: "A connection that moves no byte for this long while no request on it is being answered is closed; a request body that stalls for as long fails.",
    },
];

/// The key at `path` (dotted, without indices).
pub fn key(path: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.path == path)
}

/// The reader's range check: a message when `value` at `field` is outside its range.
pub fn range_problem(field: &str, value: f64) -> Option<String> {
    let bounds = key(field)?.bounds?;
    (!bounds.contains(value)).then(|| format!("must be in {bounds}, got {}", number(value)))
}

/// A number as a message shows it: plain, or in exponent form when very large or small.
fn number(value: f64) -> String {
    if value != 0.0 && !(1e-4..1e9).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

/// The table a key belongs to and its name in it (`pipeline.stage` and `name`).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// How the reference names a table (`[[pipeline.stage]]`, `[pipeline.router]`).
fn table_heading(table: &str) -> String {
    match table {
        "pipeline" | "pipeline.stage" => format!("[[{table}]]"),
        _ => format!("[{table}]"),
    }
}

fn range_text(key: &KeySpec) -> String {
    key.bounds.map_or_else(String::new, |b| b.to_string())
}

/// The reference as Markdown (`docs/configuration.md`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from daemon/src/config/reference.rs by its tests \
         (INFADAPT_UPDATE_DOCS=1 rewrites it); do not edit. -->\n\n\
         Every key of `/etc/infadaptd/infadaptd.toml`. Paths are relative to the file. A number \
         outside its range, an unknown key or a value of the wrong type is reported by \
         `infadaptd validate` as `file:line:col: field: message`, all problems at once. The \
         keys of `[pipeline.backend]` other than `type` belong to the backend, which checks \
         them itself (see `docs/backends/`).\n",
    );
    for (table, keys) in by_table() {
        out.push_str(&format!(
            "\n## `{table}`\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n"
        ));
        for key in keys {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                key.name(),
                key.kind,
                key.default,
                range_text(key),
                key.doc
            ));
        }
    }
    out
}

/// The keys grouped by table, in the reference's order: (table heading, its keys).
pub fn by_table() -> Vec<(String, Vec<&'static KeySpec>)> {
    let mut out: Vec<(String, Vec<&'static KeySpec>)> = Vec::new();
    let mut table = None;
    for key in KEYS {
        let (parent, _) = split(key.path);
        if table != Some(parent) {
            table = Some(parent);
            out.push((table_heading(parent), Vec::new()));
        }
        if let Some((_, keys)) = out.last_mut() {
            keys.push(key);
        }
    }
    out
}

impl KeySpec {
    /// The key's name in its table.
    pub fn name(&self) -> &'static str {
        split(self.path).1
    }

    /// `type; default D; range R` as one line (for the man page).
    pub fn summary(&self) -> String {
        let range = range_text(self);
        let mut text = format!("{}; default {}", self.kind, self.default);
        if !range.is_empty() {
            text.push_str(&format!("; range {range}"));
        }
        text.replace('`', "")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::tomlread::{Diagnostics, record_fields};
    use crate::config::{DaemonConfig, parse_config};
    use crate::problem_file::read_catalog;

    /// A file with every table the reader knows, each with only its required keys.
    const EVERY_TABLE: &str = r#"[daemon]
[daemon.http]
[[pipeline]]
name = "p"
catalog = "catalogs/resnet-cpu.toml"
slo_ms = 750
period_s = 86400
[[pipeline.stage]]
name = "classify"
variants = ["resnet18"]
max_replicas = 100000
[pipeline.weights]
[pipeline.limits]
[pipeline.solver]
[pipeline.forecast]
[pipeline.damping]
[pipeline.fast_path]
[pipeline.spare]
[pipeline.backend]
type = "sim"
[pipeline.router]
listen = "127.0.0.1:0"
"#;

    fn etc() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc")
    }

    fn parse(text: &str) -> Result<DaemonConfig, Diagnostics> {
        let dir = etc();
        parse_config("c.toml", text, &dir, &mut |r: &str| {
            read_catalog(&dir.join(r))
        })
    }

    #[test]
    fn the_reference_lists_exactly_the_keys_the_reader_reads() {
        let (parsed, asked) = record_fields(|| parse(EVERY_TABLE));
        parsed.expect("the file with every table is valid");
        let mut documented: BTreeSet<String> = BTreeSet::new();
        for key in KEYS {
            documented.insert(key.path.to_owned());
            let mut parent = key.path;
            while let Some((table, _)) = parent.rsplit_once('.') {
                documented.insert(table.to_owned());
                parent = table;
            }
        }
        let undocumented: Vec<&String> = asked.difference(&documented).collect();
        let unread: Vec<&String> = documented.difference(&asked).collect();
        assert!(
            undocumented.is_empty() && unread.is_empty(),
            "read but not in the reference: {undocumented:?}; in the reference but not \
             read: {unread:?}"
        );
        let mut paths: Vec<&str> = KEYS.iter().map(|k| k.path).collect();
        paths.dedup();
        assert_eq!(paths.len(), KEYS.len(), "a key is listed twice");
        for key in KEYS {
            assert!(
                key.bounds.is_some() || !key.kind.starts_with("number") && !key.integer,
                "{} is a number without a range",
                key.path
            );
        }
    }

    /// `EVERY_TABLE` with `value` at `path` (replacing the line when the key is there).
    fn with_value(path: &str, value: &str) -> String {
        let (table, name) = path.rsplit_once('.').expect("a key in a table");
        let header = if table == "pipeline" || table == "pipeline.stage" {
            format!("[[{table}]]")
        } else {
            format!("[{table}]")
        };
        let mut lines: Vec<String> = EVERY_TABLE.lines().map(str::to_owned).collect();
        let start = lines
            .iter()
            .position(|l| *l == header)
            .unwrap_or_else(|| panic!("no {header} in the file"));
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.starts_with('['))
            .map_or(lines.len(), |i| start + 1 + i);
        let line = format!("{name} = {value}");
        match (start + 1..end).find(|&i| lines[i].starts_with(&format!("{name} = "))) {
            Some(i) => lines[i] = line,
            None => lines.insert(start + 1, line),
        }
        lines.join("\n") + "\n"
    }

    /// How the validator names the field of `path` in this file.
    fn field(path: &str) -> String {
        if let Some(rest) = path.strip_prefix("pipeline.stage.") {
            format!("pipeline[0].stage[0].{rest}")
        } else if let Some(rest) = path.strip_prefix("pipeline.") {
            format!("pipeline[0].{rest}")
        } else {
            path.to_owned()
        }
    }

    /// Values to try at a key: its bounds and just beyond, and the hostile ones.
    fn probes(key: &KeySpec) -> Vec<(String, Option<f64>)> {
        let bounds = key.bounds.expect("a number");
        let mut values: Vec<f64> = vec![0.0, -1.0, 1.0, 1e300, -1e300, 9.2e18];
        if key.integer {
            values.extend([bounds.min - 1.0, bounds.min, bounds.max, bounds.max + 1.0]);
            let mut out: Vec<(String, Option<f64>)> = values
                .into_iter()
                .filter(|v| v.abs() < 9.3e18)
                .map(|v| (format!("{}", v as i64), Some(v)))
                .collect();
            out.push((
                "i64::MAX".replace("i64::MAX", &i64::MAX.to_string()),
                Some(i64::MAX as f64),
            ));
            out.push(("1.5".to_owned(), None));
            out.push(("nan".to_owned(), None));
            return out;
        }
        let step = |x: f64| (x.abs() * 1e-6).max(1e-6);
        values.extend([
            bounds.min,
            bounds.min - step(bounds.min),
            bounds.min + step(bounds.min),
            bounds.max,
            bounds.max - step(bounds.max),
            bounds.max + step(bounds.max),
        ]);
        let mut out: Vec<(String, Option<f64>)> = values
            .into_iter()
            .map(|v| (format!("{v:e}"), Some(v)))
            .collect();
        for text in ["nan", "inf", "-inf", "\"ten\""] {
            out.push((text.to_owned(), None));
        }
        out
    }

    #[test]
    fn every_number_is_accepted_inside_its_range_and_refused_outside_with_its_position() {
        let mut wrong = Vec::new();
        for key in KEYS.iter().filter(|k| k.bounds.is_some()) {
            let bounds = key.bounds.expect("filtered");
            for (text, value) in probes(key) {
                let expect_ok =
                    value.is_some_and(|v| bounds.contains(v) && (!key.integer || v.fract() == 0.0));
                let file = with_value(key.path, &text);
                let field = format!("{}:", field(key.path));
                match parse(&file) {
                    Ok(_) if expect_ok => {}
                    Ok(_) => wrong.push(format!("{} = {text} was accepted", key.path)),
                    Err(d) => {
                        let report = d.to_string();
                        let at_field = report.lines().any(|l| l.contains(&field));
                        // In range, but no configuration meets the SLO at that load: the
                        // range check let it through and the feasibility check refused it.
                        let infeasible = report
                            .lines()
                            .all(|l| l.contains("no configuration of the pipeline can start"));
                        if expect_ok && infeasible {
                            continue;
                        }
                        if expect_ok {
                            wrong.push(format!("{} = {text} was refused: {report}", key.path));
                        } else if !at_field {
                            wrong.push(format!(
                                "{} = {text} was refused, but not at the field: {report}",
                                key.path
                            ));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_doc_page_is_the_generated_reference() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let generated = markdown();
        if std::env::var_os("INFADAPT_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).expect("write the doc page");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is not the generated reference; run \
             `INFADAPT_UPDATE_DOCS=1 cargo test -p infadaptd --lib config::reference`",
            path.display()
        );
        for key in KEYS {
            assert!(generated.contains(&format!("| `{}` |", key.name())));
        }
    }

    #[test]
    fn bounds_render_as_intervals_and_out_of_range_numbers_are_named() {
        let b = Bounds {
            min: 0.0,
            min_open: true,
            max: 3600.0,
            max_open: false,
        };
        assert_eq!(b.to_string(), "(0, 3600]");
        assert!(!b.contains(0.0) && b.contains(3600.0) && !b.contains(f64::NAN));
        assert_eq!(
            range_problem("daemon.grace_s", 1e300).as_deref(),
            Some("must be in (0, 3600], got 1e300")
        );
        assert_eq!(range_problem("daemon.grace_s", 10.0), None);
        assert_eq!(range_problem("no.such.key", -1.0), None);
    }
}
