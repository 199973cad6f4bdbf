//! Planning problem files: a TOML file naming a pipeline (stages and the catalog variants
//! each may use), the load to plan for, the deployed plan, weights, host limits and solver
//! settings. Read raw, then validated, with every problem reported at once.
//!
//! ```toml
//! catalog = "../catalogs/resnet-synthetic.toml"   # relative to this file
//! load_rps = 120
//! [pipeline]
//! name = "resnet"
//! slo_ms = 750
//! [[pipeline.stage]]
//! name = "classify"
//! variants = ["resnet18", "resnet50"]
//! batch_sizes = [1]
//! core_options = [1, 2, 4]
//! max_replicas = 20
//! min_replicas = 2                          # the stage's least replicas (default 1)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use infadapt_model::{Assignment, Catalog, ModelError, Pipeline, Plan, Stage, StagePlan};
use infadapt_planner::{
    AccuracyMode, ExtrapolationPolicy, HostLimits, Problem, SolverChoice, Weights,
};

use infadapt_model::settings::{Bounds, KeyDefault, KeySpec};

use crate::config::reference;
use crate::config::tomlread::{Diagnostics, TableReader, read_document, with_range_check};

/// Reads and validates a problem file; catalogs it names are read relative to it.
pub fn load_problem(path: &Path) -> Result<Problem, Diagnostics> {
    let (name, text) = crate::config::tomlread::read_source(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_problem(&name, &text, &mut |catalog: &str| {
        read_catalog(&base.join(catalog))
    })
}

/// Why a catalog that a file names cannot be had; reported at the file's `catalog` key, on
/// one line.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format!("catalog {}: {source}", path.display()).replace('\n', " "))]
    Invalid { path: PathBuf, source: ModelError },
    /// A catalog built into the binary does not parse.
    #[error("{}", source.to_string().replace('\n', " "))]
    EmbeddedInvalid { source: ModelError },
    /// A file built into the binary names a catalog that is not built in.
    #[error("no embedded catalog `{0}`")]
    NotEmbedded(String),
    /// The embedded scenario names a catalog that is not built in.
    #[error("the embedded scenario has no catalog `{0}`")]
    NotInEmbeddedScenario(String),
}

/// The lookup that resolves a file's catalog reference to the catalog.
pub type CatalogLookup<'a> = dyn FnMut(&str) -> Result<Catalog, CatalogError> + 'a;

/// Reads a catalog file.
pub fn read_catalog(path: &Path) -> Result<Catalog, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Catalog::from_toml_str(&text).map_err(|source| CatalogError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a problem from text; `catalogs` resolves a catalog reference to its contents.
pub fn parse_problem(
    name: &str,
    text: &str,
    catalogs: &mut CatalogLookup<'_>,
) -> Result<Problem, Diagnostics> {
    with_range_check(range_problem, || {
        read_document(name, text, |_, root| build_problem(root, catalogs))
    })
}

/// A stage's `max_replicas` when the file gives none.
pub const DEFAULT_MAX_REPLICAS: u32 = 64;

/// A stage's `min_replicas` when the file gives none.
pub const DEFAULT_MIN_REPLICAS: u32 = 1;

/// `load_rps`: the load a problem file plans for.
const LOAD_RPS: KeySpec = KeySpec {
    name: "load_rps",
    kind: "number (requests/s)",
    integer: false,
    default: KeyDefault::Text("required"),
    bounds: Some(Bounds::closed(0.0, 10_000_000.0)),
    doc: "The load to plan for.",
};

/// `[[current.stage.assignment]] share`: the part of the stage's load an assignment serves.
const SHARE: KeySpec = KeySpec {
    name: "share",
    kind: "number",
    integer: false,
    default: KeyDefault::Number(1.0),
    bounds: Some(Bounds::closed(0.0, 1.0)),
    doc: "The part of the stage's load the assignment serves.",
};

/// The range check of a problem or scenario file (see `tomlread::with_range_check`): its
/// `[pipeline]` (and stages), `[weights]`, `[limits]` and `[solver]` keys are the daemon
/// configuration's `[[pipeline]]` keys, with their ranges and messages
/// (`config::reference`); `load_rps` and an assignment's `share` are its own.
pub fn range_problem(field: &str, value: f64) -> Option<String> {
    let outside = |spec: &KeySpec| spec.check(value).err().map(|e| e.to_string());
    match field {
        "load_rps" => outside(&LOAD_RPS),
        "current.stage.assignment.share" => outside(&SHARE),
        _ if field.starts_with("pipeline.") => reference::range_problem(field, value),
        _ if ["weights.", "limits.", "solver."]
            .iter()
            .any(|table| field.starts_with(table)) =>
        {
            reference::range_problem(&format!("pipeline.{field}"), value)
        }
        _ => None,
    }
}

pub fn build_problem(
    root: &TableReader<'_, '_>,
    catalogs: &mut CatalogLookup<'_>,
) -> Option<Problem> {
    build_problem_with(root, catalogs, true)
}

/// Builds a problem from a file's root table; with `load_required` false the file gives no
/// `load_rps` (a scenario sets the load at each decision) and the problem's load is 0.
pub fn build_problem_with(
    root: &TableReader<'_, '_>,
    catalogs: &mut CatalogLookup<'_>,
    load_required: bool,
) -> Option<Problem> {
    let mut loaded: BTreeMap<String, Option<Catalog>> = BTreeMap::new();
    let mut load_catalog = |table: &TableReader<'_, '_>, reference: &str| -> Option<Catalog> {
        loaded
            .entry(reference.to_owned())
            .or_insert_with(|| match catalogs(reference) {
                Ok(c) => Some(c),
                Err(problem) => {
                    table.report("catalog", problem.to_string());
                    None
                }
            })
            .clone()
    };
    let default_catalog = root.opt_str("catalog").and_then(|c| load_catalog(root, &c));

    let load_rps = if load_required {
        root.req_f64("load_rps")
    } else {
        Some(0.0)
    };

    let pipeline = root.opt_table("pipeline");
    if pipeline.is_none() && !root.has("pipeline") {
        root.report("pipeline", "missing required table [pipeline]");
    }
    let pipeline = pipeline.and_then(|p| {
        let built = build_pipeline(&p, default_catalog.as_ref(), &mut load_catalog);
        p.finish();
        built
    });

    let weights = root.opt_table("weights").map(|w| read_weights(&w));
    let limits = root.opt_table("limits").map(|l| read_limits(&l));

    let solver = root.opt_table("solver");
    let current = build_current(root, pipeline.as_ref());
    // Settings are read and checked even when the pipeline is broken, so that every
    // problem of the file is reported in one go; the result is then discarded.
    let incomplete = pipeline.is_none() || load_rps.is_none();
    let placeholder = || Pipeline {
        name: String::new(),
        slo_ms: 1.0,
        stages: Vec::new(),
    };
    let mut problem = Problem::new(
        pipeline.unwrap_or_else(placeholder),
        load_rps.unwrap_or(0.0),
    );
    if let Some((weights, mode)) = weights {
        problem.weights = weights;
        problem.accuracy_mode = mode;
    }
    problem.limits = limits.unwrap_or_default();
    problem.current = current;
    if let Some(s) = solver {
        apply_solver_settings(&s, &mut problem);
        s.finish();
    }
    if incomplete || root.reader().has_problems() {
        return None;
    }
    Some(problem)
}

/// Reads a `[weights]` table (objective weights, accuracy composition); the range check in
/// force ([`range_problem`], or the daemon configuration's) checks the numbers.
pub fn read_weights(w: &TableReader<'_, '_>) -> (Weights, AccuracyMode) {
    let defaults = Weights::default();
    let get = |key: &str, default: f64| w.opt_f64(key).unwrap_or(default);
    let weights = Weights {
        alpha: get("alpha", defaults.alpha),
        beta_per_core: get("beta_per_core", defaults.beta_per_core),
        beta_per_gpu_gib: get("beta_per_gpu_gib", defaults.beta_per_gpu_gib),
        gamma_per_cold_start_s: get("gamma_per_cold_start_s", defaults.gamma_per_cold_start_s),
    };
    let mode = match w.opt_choice("accuracy", &["sum", "product"]).as_deref() {
        Some("product") => AccuracyMode::Product,
        _ => AccuracyMode::Sum,
    };
    w.finish();
    (weights, mode)
}

/// Reads a `[limits]` table (host cores and GPU memory); the range check in force checks
/// the numbers.
pub fn read_limits(l: &TableReader<'_, '_>) -> HostLimits {
    let limits = HostLimits {
        total_cores: l.opt_u32("total_cores"),
        gpu_mem_mb: l.opt_f64("gpu_mem_mb"),
    };
    l.finish();
    limits
}

pub fn apply_solver_settings(s: &TableReader<'_, '_>, problem: &mut Problem) {
    if let Some(method) = s.opt_choice("method", &["auto", "pareto-dp", "milp"]) {
        problem.solver = match method.as_str() {
            "pareto-dp" => SolverChoice::ParetoDp,
            "milp" => SolverChoice::Milp,
            _ => SolverChoice::Auto,
        };
    }
    if let Some(ms) = s.opt_u32("time_limit_ms") {
        problem.time_limit_ms = u64::from(ms);
    }
    if let Some(cap) = s.opt_f64("utilisation_cap") {
        problem.utilisation_cap = cap;
    }
    if let Some(mix) = s.opt_bool("allow_mix") {
        problem.allow_mix = mix;
        if mix && problem.pipeline.stages.len() > 1 {
            s.report(
                "allow_mix",
                "variant mixes are for single-stage pipelines only",
            );
        }
    }
    if let Some(extra) = s.opt_u32("extra_replicas") {
        problem.extra_replicas = extra;
    }
    if let Some(cv2) = s.opt_f64("service_cv2") {
        problem.service_cv2 = cv2;
    }
    let max_factor = s.opt_f64("max_extrapolation");
    match s
        .opt_choice("extrapolation", &["warn", "forbid"])
        .as_deref()
    {
        Some("forbid") => {
            problem.extrapolation = ExtrapolationPolicy::Forbid;
            if max_factor.is_some() {
                s.report(
                    "max_extrapolation",
                    "has no effect with extrapolation = \"forbid\"",
                );
            }
        }
        _ => {
            if let Some(f) = max_factor {
                problem.extrapolation = ExtrapolationPolicy::Warn { max_factor: f };
            }
        }
    }
}

pub fn build_pipeline(
    p: &TableReader<'_, '_>,
    default_catalog: Option<&Catalog>,
    load_catalog: &mut dyn FnMut(&TableReader<'_, '_>, &str) -> Option<Catalog>,
) -> Option<Pipeline> {
    let name = p.req_str("name");
    let slo_ms = p.req_f64("slo_ms");
    let stage_tables = p.tables("stage");
    if stage_tables.is_empty() {
        p.report("stage", "a pipeline needs at least one [[pipeline.stage]]");
    }
    let mut stages = Vec::new();
    for st in &stage_tables {
        let catalog = match st.opt_str("catalog") {
            Some(reference) => load_catalog(st, &reference),
            None => {
                if default_catalog.is_none() {
                    st.report(
                        "catalog",
                        "no catalog: set `catalog` here or at the top of the file",
                    );
                }
                default_catalog.cloned()
            }
        };
        let stage = build_stage(st, catalog.as_ref());
        if let Some(stage) = &stage
            && stages.iter().any(|s: &Stage| s.name == stage.name)
        {
            st.report("name", format!("stage `{}` is defined twice", stage.name));
        }
        st.finish();
        stages.extend(stage);
    }
    let pipeline = Pipeline {
        name: name?,
        slo_ms: slo_ms?,
        stages,
    };
    (pipeline.stages.len() == stage_tables.len()).then_some(pipeline)
}

pub fn build_stage(st: &TableReader<'_, '_>, catalog: Option<&Catalog>) -> Option<Stage> {
    let name = st.req_str("name");
    let names = st.opt_str_list("variants");
    if names.is_none() && !st.has("variants") {
        st.report("variants", "missing required field");
    }
    let mut variants = Vec::new();
    let mut complete = true;
    for entry in names.iter().flatten() {
        let Some(catalog) = catalog else {
            complete = false;
            continue;
        };
        match catalog.get(entry.get_ref()) {
            Some(cv) => match cv.to_variant() {
                Ok(v) => {
                    if variants
                        .iter()
                        .any(|w: &infadapt_model::Variant| w.name == v.name)
                    {
                        st.reader().report(
                            entry.span(),
                            &st.field("variants"),
                            format!("variant `{}` listed twice", v.name),
                        );
                    }
                    variants.push(v);
                }
                Err(e) => {
                    st.reader()
                        .report(entry.span(), &st.field("variants"), e.to_string());
                    complete = false;
                }
            },
            None => {
                let known: Vec<&str> = catalog.variants.iter().map(|v| v.name.as_str()).collect();
                st.reader().report(
                    entry.span(),
                    &st.field("variants"),
                    format!(
                        "variant `{}` is not in the catalog (it has: {})",
                        entry.get_ref(),
                        known.join(", ")
                    ),
                );
                complete = false;
            }
        }
    }
    if names.as_ref().is_some_and(Vec::is_empty) {
        st.report("variants", "must list at least one variant");
    }
    let positive_list = |key: &str, default: Vec<u32>| match st.opt_u32_list(key) {
        Some(list) if list.is_empty() || list.contains(&0) => {
            st.report(key, "must be a non-empty list of integers >= 1");
            None
        }
        Some(list) => Some(list),
        None if st.has(key) => None,
        None => Some(default),
    };
    let batch_sizes = positive_list("batch_sizes", vec![1]);
    let core_options = positive_list("core_options", vec![1]);
    let max_replicas = st.opt_u32("max_replicas").unwrap_or(DEFAULT_MAX_REPLICAS);
    // The whole stage's least replicas (a variant mix counts every assignment).
    let min_replicas = st.opt_u32("min_replicas").unwrap_or(DEFAULT_MIN_REPLICAS);
    if min_replicas > max_replicas {
        st.report(
            "min_replicas",
            format!("must be at most max_replicas ({max_replicas}), got {min_replicas}"),
        );
    }
    if !complete {
        return None;
    }
    Some(Stage {
        name: name?,
        variants,
        batch_sizes: batch_sizes?,
        core_options: core_options?,
        max_replicas,
        min_replicas: min_replicas.clamp(1, max_replicas.max(1)),
    })
}

pub fn build_current(root: &TableReader<'_, '_>, pipeline: Option<&Pipeline>) -> Option<Plan> {
    let current = root.opt_table("current")?;
    let mut plan = Plan::default();
    for st in current.tables("stage") {
        let name = st.req_str("name");
        let stage = name
            .as_deref()
            .and_then(|n| pipeline.and_then(|p| p.stages.iter().find(|s| s.name == n)));
        if let (Some(n), Some(_)) = (&name, pipeline)
            && stage.is_none()
        {
            st.report("name", format!("stage `{n}` is not in the pipeline"));
        }
        let mut assignments = Vec::new();
        for a in st.tables("assignment") {
            let variant = a.req_str("variant");
            if let (Some(v), Some(stage)) = (&variant, stage)
                && stage.variant(v).is_none()
            {
                a.report(
                    "variant",
                    format!("variant `{v}` is not offered by stage `{}`", stage.name),
                );
            }
            let batch = a.req_u32("batch");
            let cores = a.req_u32("cores");
            let replicas = a.req_u32("replicas");
            let share = a.opt_f64("share").unwrap_or(1.0);
            a.finish();
            if let (Some(variant), Some(batch), Some(cores), Some(replicas)) =
                (variant, batch, cores, replicas)
            {
                assignments.push(Assignment {
                    variant,
                    batch,
                    cores,
                    replicas,
                    share,
                });
            }
        }
        st.finish();
        if let Some(stage) = name {
            plan.stages.push(StagePlan { stage, assignments });
        }
    }
    current.finish();
    Some(plan)
}

/// Resolves `reference` against the directory of the problem file (for messages and tests).
pub fn resolve(base: &Path, reference: &str) -> PathBuf {
    base.join(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = include_str!("../../etc/catalogs/resnet-synthetic.toml");

    fn problems(text: &str) -> String {
        let mut catalogs = |_: &str| {
            Catalog::from_toml_str(CATALOG)
                .map_err(|source| CatalogError::EmbeddedInvalid { source })
        };
        match parse_problem("p.toml", text, &mut catalogs) {
            Ok(_) => String::new(),
            Err(diagnostics) => diagnostics.to_string(),
        }
    }

    #[test]
    fn numbers_outside_their_range_get_the_daemon_configurations_messages() {
        let text = "catalog = \"c.toml\"\nload_rps = 10\n\
                    [pipeline]\nname = \"p\"\nslo_ms = 0\n\
                    [[pipeline.stage]]\nname = \"s\"\nvariants = [\"resnet18\"]\nmax_replicas = 0\n\
                    [weights]\nalpha = -1\n[limits]\ntotal_cores = 0\n\
                    [solver]\nutilisation_cap = 1.5\nmax_extrapolation = 0.5\n";
        let found = problems(text);
        for (field, daemon_field, value) in [
            ("pipeline.slo_ms", "pipeline.slo_ms", 0.0),
            (
                "pipeline.stage[0].max_replicas",
                "pipeline.stage.max_replicas",
                0.0,
            ),
            ("weights.alpha", "pipeline.weights.alpha", -1.0),
            ("limits.total_cores", "pipeline.limits.total_cores", 0.0),
            (
                "solver.utilisation_cap",
                "pipeline.solver.utilisation_cap",
                1.5,
            ),
            (
                "solver.max_extrapolation",
                "pipeline.solver.max_extrapolation",
                0.5,
            ),
        ] {
            let message = reference::range_problem(daemon_field, value).expect("out of range");
            let line = format!("{field}: {message}");
            assert!(found.contains(&line), "`{line}` not in:\n{found}");
        }
        assert_eq!(found.lines().count(), 6, "{found}");
    }

    #[test]
    fn the_files_own_numbers_are_checked_too() {
        assert_eq!(
            range_problem("load_rps", -3.0).as_deref(),
            Some("must be in [0, 10000000], got -3")
        );
        assert!(range_problem("current.stage.assignment.share", 1.5).is_some());
        assert!(range_problem("current.stage.assignment.share", 0.5).is_none());
        assert!(range_problem("simulation.seed", -1.0).is_none());
    }
}
