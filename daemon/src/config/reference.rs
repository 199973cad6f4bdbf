//! The configuration reference: every key of the daemon's file with its type, default,
//! accepted range and meaning. The keys of the controllers' settings (`[pipeline.forecast]`,
//! `[pipeline.damping]`, `[pipeline.fast_path]`, `[pipeline.spare]`) are defined once, beside
//! their settings' structs in the controller crates, and taken from there; the daemon's own
//! keys are defined here. The reader checks every number against its key's range (see
//! `tomlread::with_range_check`), and the reference is rendered as the doc page
//! `docs/configuration.md` and as the CONFIGURATION section of `infadaptd(1)`; its tests
//! prove it lists exactly the keys the reader reads and that each range is enforced as
//! written.

use std::ops::Deref;

pub use infadapt_model::settings::{Bounds, KeyDefault, KeySpec};

use crate::problem_file::{DEFAULT_MAX_REPLICAS, DEFAULT_MIN_REPLICAS};

use super::{
    DEFAULT_BACKEND_TIMEOUT_S, DEFAULT_DECISIONS_KEPT, DEFAULT_GRACE_S,
    DEFAULT_HTTP_HEADER_TIMEOUT_S, DEFAULT_HTTP_IDLE_TIMEOUT_S, DEFAULT_HTTP_MAX_CONNECTIONS,
    DEFAULT_INITIAL_LOAD_RPS, DEFAULT_PERIOD_S, DEFAULT_ROUTER_HEADER_TIMEOUT_MS,
    DEFAULT_ROUTER_IDLE_TIMEOUT_MS, DEFAULT_ROUTER_MAX_BODY_BYTES, DEFAULT_ROUTER_MAX_CONNECTIONS,
    DEFAULT_ROUTER_READY_WAIT_MS, DEFAULT_ROUTER_TIMEOUT_MS,
};

/// `[1, 3600000]`: a time limit in milliseconds, up to an hour.
const MILLIS: Bounds = Bounds::closed(1.0, 3_600_000.0);

/// `[1, 65536]`: connections a server serves at once.
const CONNECTIONS: Bounds = Bounds::closed(1.0, 65536.0);

/// A table of the file and keys of it. A table may have several sections (keys of a
/// controller's settings and the daemon's own), in the reference's order.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// Dotted path of the table, array tables without indices (`pipeline.stage`).
    pub table: &'static str,
    pub keys: &'static [KeySpec],
}

/// Every key the daemon's configuration reader reads, in the reference's order. The keys of
/// a `[pipeline.backend]` table other than `type` belong to the backend and are documented
/// with it.
pub const SECTIONS: &[Section] = &[
    Section {
        table: "daemon",
        keys: DAEMON_KEYS,
    },
    Section {
        table: "daemon.http",
        keys: HTTP_KEYS,
    },
    Section {
        table: "pipeline",
        keys: PIPELINE_KEYS,
    },
    Section {
        table: "pipeline.stage",
        keys: STAGE_KEYS,
    },
    Section {
        table: "pipeline.weights",
        keys: WEIGHTS_KEYS,
    },
    Section {
        table: "pipeline.limits",
        keys: LIMITS_KEYS,
    },
    Section {
        table: "pipeline.solver",
        keys: SOLVER_KEYS,
    },
    Section {
        table: "pipeline.forecast",
        keys: infadapt_control::FORECAST_KEYS,
    },
    Section {
        table: "pipeline.damping",
        keys: infadapt_control::DAMPING_KEYS,
    },
    Section {
        table: "pipeline.fast_path",
        keys: infadapt_control::FAST_PATH_KEYS,
    },
    Section {
        table: "pipeline.fast_path",
        keys: CHECK_S_KEYS,
    },
    Section {
        table: "pipeline.spare",
        keys: infadapt_control::SPARE_KEYS,
    },
    Section {
        table: "pipeline.backend",
        keys: BACKEND_KEYS,
    },
    Section {
        table: "pipeline.router",
        keys: ROUTER_KEYS,
    },
];

/// The `[daemon]` table.
const DAEMON_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "period_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_PERIOD_S),
        bounds: Some(Bounds::PERIOD_S),
        doc: "Default control period of every pipeline.",
    },
    KeySpec {
        name: "state_dir",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("`$STATE_DIRECTORY`, else `/var/lib/infadaptd`"),
        bounds: None,
        doc: "Where plans and forecaster state are saved between runs (relative to the file).",
    },
    KeySpec {
        name: "plugin_dirs",
        kind: "list of paths",
        integer: false,
        default: KeyDefault::Text("`[\"/usr/lib/infadaptd/plugins\"]`"),
        bounds: None,
        doc: "Directories searched for backend plugin libraries (relative to the file).",
    },
    KeySpec {
        name: "log",
        kind: "string",
        integer: false,
        default: KeyDefault::Text("`info`"),
        bounds: None,
        doc: "Log filter when `RUST_LOG` is unset, e.g. `info` or `infadaptd=debug`.",
    },
    KeySpec {
        name: "grace_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_GRACE_S),
        bounds: Some(Bounds::TIMEOUT_S),
        doc: "How long a stop waits for in-flight applies before exiting anyway.",
    },
    KeySpec {
        name: "decisions_kept",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(DEFAULT_DECISIONS_KEPT as f64),
        bounds: Some(Bounds::closed(1.0, 1_000_000.0)),
        doc: "Decisions kept per pipeline for `/v1/decisions`.",
    },
    KeySpec {
        name: "backend_timeout_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_BACKEND_TIMEOUT_S),
        bounds: Some(Bounds::TIMEOUT_S),
        doc: "Time limit of one backend call (and of loading a plugin and its config check).",
    },
    KeySpec {
        name: "require_running_pipeline",
        kind: "boolean",
        integer: false,
        default: KeyDefault::Flag(true),
        bounds: None,
        doc: "Exit with an error at start when no pipeline could create its backend.",
    },
];

/// The `[daemon.http]` table.
const HTTP_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "enabled",
        kind: "boolean",
        integer: false,
        default: KeyDefault::Flag(true),
        bounds: None,
        doc: "Serve the HTTP API.",
    },
    KeySpec {
        name: "listen",
        kind: "address",
        integer: false,
        default: KeyDefault::Text("`127.0.0.1:9187`"),
        bounds: None,
        doc: "TCP address of the HTTP API.",
    },
    KeySpec {
        name: "unix",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("none"),
        bounds: None,
        doc: "Unix socket of the HTTP API instead of `listen`.",
    },
    KeySpec {
        name: "token_file",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("none"),
        bounds: None,
        doc: "File holding the bearer token of the write endpoints (pause, resume); mode 0600 or stricter. Without it they answer 403.",
    },
    KeySpec {
        name: "max_connections",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(DEFAULT_HTTP_MAX_CONNECTIONS as f64),
        bounds: Some(CONNECTIONS),
        doc: "Most connections the API serves at once; one more is closed at once (counted in `infadapt_http_connections_refused_total`). Keep it and the routers' limits well below the open-files limit.",
    },
    KeySpec {
        name: "header_timeout_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_HTTP_HEADER_TIMEOUT_S),
        bounds: Some(Bounds::TIMEOUT_S),
        doc: "Time a request's head (request line and headers) may take to arrive, counted from the connection's start or the end of the previous answer; a slower or idle connection is closed.",
    },
    KeySpec {
        name: "idle_timeout_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_HTTP_IDLE_TIMEOUT_S),
        bounds: Some(Bounds::PERIOD_S),
        doc: "A connection that moves no byte for this long while no request on it is being answered is closed; a request body that stalls for as long fails.",
    },
];

/// The `[[pipeline]]` table's own keys.
const PIPELINE_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "name",
        kind: "string",
        integer: false,
        default: KeyDefault::Text("required"),
        bounds: None,
        doc: "The pipeline's name (unique in the file): 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.` (it names the state file, log lines, metric labels and API paths).",
    },
    KeySpec {
        name: "catalog",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("none"),
        bounds: None,
        doc: "Catalog of variants and profiles for every stage (relative to the file).",
    },
    KeySpec {
        name: "slo_ms",
        kind: "number (ms)",
        integer: false,
        default: KeyDefault::Text("required"),
        bounds: Some(Bounds::above(0.0, 3_600_000.0)),
        doc: "End-to-end latency SLO (p99).",
    },
    KeySpec {
        name: "period_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Text("`daemon.period_s`"),
        bounds: Some(Bounds::PERIOD_S),
        doc: "This pipeline's control period.",
    },
    KeySpec {
        name: "initial_load_rps",
        kind: "number (req/s)",
        integer: false,
        default: KeyDefault::Number(DEFAULT_INITIAL_LOAD_RPS),
        bounds: Some(Bounds::closed(0.0, 10_000_000.0)),
        doc: "Load the first plan is sized for, before anything was observed.",
    },
];

/// The `[[pipeline.stage]]` table.
const STAGE_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "name",
        kind: "string",
        integer: false,
        default: KeyDefault::Text("required"),
        bounds: None,
        doc: "The stage's name (unique in the pipeline).",
    },
    KeySpec {
        name: "catalog",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("the pipeline's `catalog`"),
        bounds: None,
        doc: "Catalog for this stage only.",
    },
    KeySpec {
        name: "variants",
        kind: "list of strings",
        integer: false,
        default: KeyDefault::Text("required"),
        bounds: None,
        doc: "Variants the planner may choose from (names in the catalog).",
    },
    KeySpec {
        name: "batch_sizes",
        kind: "list of integers",
        integer: false,
        default: KeyDefault::Text("`[1]`"),
        bounds: None,
        doc: "Batch sizes the planner may choose (each ≥ 1).",
    },
    KeySpec {
        name: "core_options",
        kind: "list of integers",
        integer: false,
        default: KeyDefault::Text("`[1]`"),
        bounds: None,
        doc: "Cores per replica the planner may choose (each ≥ 1).",
    },
    KeySpec {
        name: "min_replicas",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(DEFAULT_MIN_REPLICAS as f64),
        bounds: Some(Bounds::COUNT),
        doc: "Fewest replicas of the stage (all its variants together); at most `max_replicas`.",
    },
    KeySpec {
        name: "max_replicas",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(DEFAULT_MAX_REPLICAS as f64),
        bounds: Some(Bounds::COUNT),
        doc: "Most replicas of the stage.",
    },
];

/// The `[pipeline.weights]` table.
const WEIGHTS_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "alpha",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(1.0),
        bounds: Some(Bounds::AMOUNT),
        doc: "Weight of accuracy in the objective.",
    },
    KeySpec {
        name: "beta_per_core",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.0025),
        bounds: Some(Bounds::AMOUNT),
        doc: "Cost of one core.",
    },
    KeySpec {
        name: "beta_per_gpu_gib",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.0),
        bounds: Some(Bounds::AMOUNT),
        doc: "Cost of one GiB of GPU memory.",
    },
    KeySpec {
        name: "gamma_per_cold_start_s",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.0001),
        bounds: Some(Bounds::AMOUNT),
        doc: "Cost of one second of replica cold start caused by a change.",
    },
    KeySpec {
        name: "accuracy",
        kind: "`sum` or `product`",
        integer: false,
        default: KeyDefault::Text("`sum`"),
        bounds: None,
        doc: "How stage accuracies combine.",
    },
];

/// The `[pipeline.limits]` table.
const LIMITS_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "total_cores",
        kind: "integer",
        integer: true,
        default: KeyDefault::Text("none"),
        bounds: Some(Bounds::COUNT),
        doc: "Cores the plans may use on the host.",
    },
    KeySpec {
        name: "gpu_mem_mb",
        kind: "number (MiB)",
        integer: false,
        default: KeyDefault::Text("none"),
        bounds: Some(Bounds::AMOUNT),
        doc: "GPU memory the plans may use (also bounded by what the backend reports).",
    },
];

/// The `[pipeline.solver]` table.
const SOLVER_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "method",
        kind: "`auto`, `pareto-dp` or `milp`",
        integer: false,
        default: KeyDefault::Text("`auto`"),
        bounds: None,
        doc: "Which exact solver plans.",
    },
    KeySpec {
        name: "time_limit_ms",
        kind: "integer (ms)",
        integer: true,
        default: KeyDefault::Number(1000.0),
        bounds: Some(Bounds::closed(1.0, 600_000.0)),
        doc: "Time limit of one solve.",
    },
    KeySpec {
        name: "utilisation_cap",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.8),
        bounds: Some(Bounds::above(0.0, 1.0)),
        doc: "Highest utilisation a plan may run replicas at.",
    },
    KeySpec {
        name: "allow_mix",
        kind: "boolean",
        integer: false,
        default: KeyDefault::Flag(false),
        bounds: None,
        doc: "Allow a mix of variants in a stage (single-stage pipelines).",
    },
    KeySpec {
        name: "extra_replicas",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(2.0),
        bounds: Some(Bounds::closed(0.0, 1000.0)),
        doc: "Replica counts considered above the minimum that covers the load.",
    },
    KeySpec {
        name: "service_cv2",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.1),
        bounds: Some(Bounds::closed(0.0, 100.0)),
        doc: "Squared coefficient of variation of service times (queueing model).",
    },
    KeySpec {
        name: "extrapolation",
        kind: "`warn` or `forbid`",
        integer: false,
        default: KeyDefault::Text("`warn`"),
        bounds: None,
        doc: "Whether plans may use profile points extrapolated beyond the measured range.",
    },
    KeySpec {
        name: "max_extrapolation",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(2.0),
        bounds: Some(Bounds::closed(1.0, 1000.0)),
        doc: "How far beyond the measured range extrapolation may go (factor).",
    },
];

/// The daemon's key of `[pipeline.backend]`; the others belong to the backend.
const BACKEND_KEYS: &[KeySpec] = &[KeySpec {
    name: "type",
    kind: "string",
    integer: false,
    default: KeyDefault::Text("required"),
    bounds: None,
    doc: "`sim` (linked in) or the name of a plugin; the table's other keys belong to the backend and are checked by it.",
}];

/// The `[pipeline.router]` table.
const ROUTER_KEYS: &[KeySpec] = &[
    KeySpec {
        name: "listen",
        kind: "address",
        integer: false,
        default: KeyDefault::Text("required"),
        bounds: None,
        doc: "Address of the pipeline's KServe v2 endpoint.",
    },
    KeySpec {
        name: "timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_TIMEOUT_MS as f64),
        bounds: Some(MILLIS),
        doc: "Time limit of one forwarded request.",
    },
    KeySpec {
        name: "max_body_bytes",
        kind: "integer (bytes)",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_MAX_BODY_BYTES as f64),
        bounds: Some(Bounds::closed(1024.0, 4_294_967_295.0)),
        doc: "Largest request body accepted.",
    },
    KeySpec {
        name: "ready_wait_ms",
        kind: "integer (ms)",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_READY_WAIT_MS as f64),
        bounds: Some(Bounds::closed(0.0, 3_600_000.0)),
        doc: "How long a request waits for a ready endpoint before a 503.",
    },
    KeySpec {
        name: "max_connections",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_MAX_CONNECTIONS as f64),
        bounds: Some(CONNECTIONS),
        doc: "Most client connections the router serves at once; one more is closed at once (counted in `infadapt_http_connections_refused_total`).",
    },
    KeySpec {
        name: "header_timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_HEADER_TIMEOUT_MS as f64),
        bounds: Some(MILLIS),
        doc: "Time a request's head may take to arrive, counted from the connection's start or the end of the previous answer; a slower or idle connection is closed.",
    },
    KeySpec {
        name: "idle_timeout_ms",
        kind: "integer (ms)",
        integer: true,
        default: KeyDefault::Number(DEFAULT_ROUTER_IDLE_TIMEOUT_MS as f64),
        bounds: Some(Bounds::closed(1.0, 86_400_000.0)),
        doc: "A connection that moves no byte for this long while no request on it is being answered is closed; a request body that stalls for as long fails.",
    },
];

/// The daemon's key of `[pipeline.fast_path]`: how often the service looks at the load
/// between ticks (its upper bound is the period, checked by the reader).
const CHECK_S_KEYS: &[KeySpec] = &[KeySpec {
    name: "check_s",
    kind: "number (s)",
    integer: false,
    default: KeyDefault::Text("1 (or the period, when shorter)"),
    bounds: Some(Bounds::PERIOD_S),
    doc: "Seconds between two looks at the load between ticks; at most `period_s`.",
}];

/// One key of the file: its spec and the table it is in.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub table: &'static str,
    pub spec: &'static KeySpec,
}

impl Deref for Key {
    type Target = KeySpec;

    fn deref(&self) -> &KeySpec {
        self.spec
    }
}

impl Key {
    /// Dotted path, array tables without indices (`pipeline.stage.max_replicas`).
    pub fn path(&self) -> String {
        format!("{}.{}", self.table, self.spec.name)
    }

    /// The key's name in its table.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// `type; default D; range R` as one line (for the man page).
    pub fn summary(&self) -> String {
        let range = range_text(self.spec);
        let mut text = format!("{}; default {}", self.kind, self.default);
        if !range.is_empty() {
            text.push_str(&format!("; range {range}"));
        }
        text.replace('`', "")
    }
}

/// Every key, in the reference's order.
pub fn keys() -> impl Iterator<Item = Key> {
    SECTIONS.iter().flat_map(|section| {
        section.keys.iter().map(|spec| Key {
            table: section.table,
            spec,
        })
    })
}

/// The key at `path` (dotted, without indices).
pub fn key(path: &str) -> Option<Key> {
    let (table, name) = split(path);
    keys().find(|k| k.table == table && k.spec.name == name)
}

/// The reader's range check: a message when `value` at `field` is outside its range (the
/// key's own message, as its controller's `validate` gives it).
pub fn range_problem(field: &str, value: f64) -> Option<String> {
    key(field)?.spec.check(value).err().map(|e| e.to_string())
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
                range_text(&key),
                key.doc
            ));
        }
    }
    out
}

/// The keys grouped by table, in the reference's order: (table heading, its keys).
pub fn by_table() -> Vec<(String, Vec<Key>)> {
    let mut out: Vec<(String, Vec<Key>)> = Vec::new();
    let mut table = None;
    for key in keys() {
        if table != Some(key.table) {
            table = Some(key.table);
            out.push((table_heading(key.table), Vec::new()));
        }
        if let Some((_, keys)) = out.last_mut() {
            keys.push(key);
        }
    }
    out
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
catalog = "catalogs/resnet-synthetic.toml"
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
        for key in keys() {
            documented.insert(key.path());
            let mut parent = key.table;
            documented.insert(parent.to_owned());
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
        let paths: Vec<String> = keys().map(|k| k.path()).collect();
        let distinct: BTreeSet<&String> = paths.iter().collect();
        assert_eq!(distinct.len(), paths.len(), "a key is listed twice");
        for key in keys() {
            assert!(
                key.bounds.is_some() || !key.kind.starts_with("number") && !key.integer,
                "{} is a number without a range",
                key.path()
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
        for key in keys().filter(|k| k.bounds.is_some()) {
            let path = key.path();
            let bounds = key.bounds.expect("filtered");
            for (text, value) in probes(key.spec) {
                let expect_ok =
                    value.is_some_and(|v| bounds.contains(v) && (!key.integer || v.fract() == 0.0));
                let file = with_value(&path, &text);
                let field = format!("{}:", field(&path));
                match parse(&file) {
                    Ok(_) if expect_ok => {}
                    Ok(_) => wrong.push(format!("{} = {text} was accepted", path)),
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
                            wrong.push(format!("{} = {text} was refused: {report}", path));
                        } else if !at_field {
                            wrong.push(format!(
                                "{} = {text} was refused, but not at the field: {report}",
                                path
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
        for key in keys() {
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
