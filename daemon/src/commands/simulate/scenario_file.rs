//! Scenario files for `infadaptd simulate`: a problem file without `load_rps` (pipeline,
//! catalog, weights, limits, solver settings, optional current plan) plus a
//! `[simulation]` table (seed, warm-up, simulator settings), a `[workload]` table (the
//! generated diurnal workload) and an optional `[control]` table: the daemon's per-pipeline
//! control settings (`period_s`, `[control.forecast]`, `[control.damping]`,
//! `[control.fast_path]`, `[control.spare]`, same keys as in infadaptd.toml) for the
//! `infadapt` policy. Read with positions; every problem is
//! reported at once.

use std::path::Path;

use infadapt_eval::{LoopSettings, Scenario};
use infadapt_model::Catalog;
use infadapt_planner::AccuracyMode;
use infadapt_sim::{AccuracyComposition, DiurnalParams, SimConfig};

use crate::config::tomlread::{Diagnostics, TableReader, read_document, with_range_check};
use crate::config::{read_damping, read_fast_path, read_forecast, read_spare};
use crate::problem_file::{self, CatalogError, CatalogLookup, build_problem_with, read_catalog};

/// The scenario shipped in the binary (the project's own synthetic video catalog).
pub const EMBEDDED_NAME: &str = "embedded:video-pipeline.toml";
const EMBEDDED_TEXT: &str = include_str!("../../../../etc/scenarios/video-pipeline.toml");
const EMBEDDED_CATALOG_REF: &str = "../catalogs/video-synthetic.toml";
const EMBEDDED_CATALOG: &str = include_str!("../../../../etc/catalogs/video-synthetic.toml");

/// A scenario with its generated-workload settings.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    pub scenario: Scenario,
    /// Measured seconds of the generated workload.
    pub seconds: usize,
    pub diurnal: DiurnalParams,
}

/// Reads the embedded default scenario.
pub fn embedded() -> Result<ScenarioFile, Diagnostics> {
    parse_scenario(EMBEDDED_NAME, EMBEDDED_TEXT, &mut |reference| {
        if reference == EMBEDDED_CATALOG_REF {
            Catalog::from_toml_str(EMBEDDED_CATALOG)
                .map_err(|source| CatalogError::EmbeddedInvalid { source })
        } else {
            Err(CatalogError::NotInEmbeddedScenario(reference.to_owned()))
        }
    })
}

/// Reads a scenario file; catalogs it names are read relative to it.
pub fn load_scenario(path: &Path) -> Result<ScenarioFile, Diagnostics> {
    let (name, text) = crate::config::tomlread::read_source(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_scenario(&name, &text, &mut |catalog: &str| {
        read_catalog(&base.join(catalog))
    })
}

/// Parses a scenario from text; `catalogs` resolves a catalog reference to its contents.
pub fn parse_scenario(
    name: &str,
    text: &str,
    catalogs: &mut CatalogLookup<'_>,
) -> Result<ScenarioFile, Diagnostics> {
    // The problem's keys are checked against the daemon configuration's ranges, as in a
    // problem file.
    with_range_check(problem_file::range_problem, || {
        read_scenario(name, text, catalogs)
    })
}

fn read_scenario(
    name: &str,
    text: &str,
    catalogs: &mut CatalogLookup<'_>,
) -> Result<ScenarioFile, Diagnostics> {
    read_document(name, text, |reader, root| {
        let problem = build_problem_with(root, catalogs, false);
        let simulation = root.opt_table("simulation");
        let (sim, warmup_s) = simulation.as_ref().map_or_else(
            || (SimConfig::default(), 3600),
            |s| {
                let built = build_simulation(s);
                s.finish();
                built
            },
        );
        let workload = root.opt_table("workload");
        let (seconds, diurnal) = workload.as_ref().map_or_else(
            || (7200, DiurnalParams::default()),
            |w| {
                let built = build_workload(w);
                w.finish();
                built
            },
        );
        let loop_settings = root
            .opt_table("control")
            .map_or_else(LoopSettings::default, |c| {
                let built = build_control(&c);
                c.finish();
                built
            });
        let mut problem = problem?;
        if reader.has_problems() {
            return None;
        }
        let mut sim = sim;
        sim.accuracy = match problem.accuracy_mode {
            AccuracyMode::Sum => AccuracyComposition::Sum,
            AccuracyMode::Product => AccuracyComposition::Product,
        };
        let initial = problem.current.take();
        Some(ScenarioFile {
            scenario: Scenario {
                name: problem.pipeline.name.clone(),
                problem,
                initial,
                sim,
                warmup_s,
                loop_settings,
            },
            seconds,
            diurnal,
        })
    })
}

fn positive(t: &TableReader<'_, '_>, key: &str) -> Option<f64> {
    let v = t.opt_f64(key)?;
    if v.is_finite() && v > 0.0 {
        Some(v)
    } else {
        t.report(key, format!("must be > 0, got {v}"));
        None
    }
}

fn non_negative(t: &TableReader<'_, '_>, key: &str) -> Option<f64> {
    let v = t.opt_f64(key)?;
    if v.is_finite() && v >= 0.0 {
        Some(v)
    } else {
        t.report(key, format!("must be >= 0, got {v}"));
        None
    }
}

fn build_simulation(s: &TableReader<'_, '_>) -> (SimConfig, usize) {
    let mut sim = SimConfig::default();
    if let Some(seed) = s.opt_u32("seed") {
        sim.seed = u64::from(seed);
    }
    let warmup = s.opt_u32("warmup_s").unwrap_or(3600) as usize;
    sim.slo_ms = positive(s, "slo_ms");
    sim.timeout_ms = positive(s, "timeout_ms");
    if let Some(v) = non_negative(s, "max_queue_delay_ms") {
        sim.max_queue_delay_ms = v;
    }
    if let Some(v) = s.opt_u32("max_queue_len") {
        if v == 0 {
            s.report("max_queue_len", "must be at least 1");
        } else {
            sim.max_queue_len = v as usize;
        }
    }
    if let Some(v) = non_negative(s, "noise_scale") {
        sim.noise_scale = v;
    }
    (sim, warmup)
}

fn build_control(c: &TableReader<'_, '_>) -> LoopSettings {
    let mut control = LoopSettings::base_config();
    if let Some(period_s) = positive(c, "period_s") {
        control.interval_s = period_s;
    }
    if let Some(f) = c.opt_table("forecast") {
        read_forecast(&f, &mut control, None);
        f.finish();
    }
    if let Some(d) = c.opt_table("damping") {
        control.damping = read_damping(&d);
        d.finish();
    }
    if let Some(f) = c.opt_table("fast_path") {
        // The harness looks every simulated second; `check_s` is the daemon's.
        control.fast_path = read_fast_path(&f, control.interval_s).0;
        f.finish();
    }
    if let Some(w) = c.opt_table("spare") {
        control.spare = read_spare(&w);
        w.finish();
    }
    LoopSettings::from(&control)
}

fn build_workload(w: &TableReader<'_, '_>) -> (usize, DiurnalParams) {
    let mut p = DiurnalParams::default();
    let seconds = w.opt_u32("seconds").unwrap_or(7200) as usize;
    if seconds == 0 {
        w.report("seconds", "must be at least 1");
    }
    if let Some(v) = non_negative(w, "trough_rps") {
        p.trough_rps = v;
    }
    if let Some(v) = non_negative(w, "peak_rps") {
        p.peak_rps = v;
    }
    p.day_s = positive(w, "day_s");
    if let Some(v) = w.opt_f64("peak_at") {
        if (0.0..=1.0).contains(&v) {
            p.peak_at = v;
        } else {
            w.report("peak_at", format!("must be in [0, 1], got {v}"));
        }
    }
    if let Some(v) = non_negative(w, "wobble") {
        p.wobble = v;
    }
    if let Some(v) = non_negative(w, "noise") {
        p.noise = v;
    }
    if let Some(v) = non_negative(w, "bursts_per_hour") {
        p.bursts_per_hour = v;
    }
    let range = |lo_key: &str, hi_key: &str, default: (f64, f64)| {
        let lo = non_negative(w, lo_key).unwrap_or(default.0);
        let hi = non_negative(w, hi_key).unwrap_or(default.1);
        if lo > hi {
            w.report(hi_key, format!("must be >= {lo_key} ({lo}), got {hi}"));
        }
        (lo, hi)
    };
    p.burst_factor = range("burst_factor_min", "burst_factor_max", p.burst_factor);
    p.burst_duration_s = range("burst_min_s", "burst_max_s", p.burst_duration_s);
    (seconds, p)
}

#[cfg(test)]
mod tests {
    use infadapt_control::ForecastBasis;

    use super::*;

    #[test]
    fn the_embedded_scenario_parses() {
        let file = embedded().expect("embedded scenario");
        assert_eq!(file.scenario.problem.pipeline.stages.len(), 3);
        assert!(file.seconds > 0);
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "catalog = \"c\"\nload_rps = 3\n[pipeline]\nname = \"p\"\nslo_ms = 100\n\
                    [[pipeline.stage]]\nname = \"s\"\nvariants = [\"a\"]\n\
                    [simulation]\nnoise_scale = -1\n[workload]\npeak_at = 2\nsecs = 1\n";
        let err = parse_scenario("x.toml", text, &mut |reference| {
            Err(CatalogError::NotEmbedded(reference.to_owned()))
        })
        .expect_err("bad");
        let shown = err.to_string();
        for needle in [
            "x.toml:2:1: load_rps: unknown field",
            "simulation.noise_scale: must be >= 0",
            "workload.peak_at: must be in [0, 1]",
            "workload.secs: unknown field",
        ] {
            assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
        }
    }

    fn with_embedded_catalog(text: &str) -> Result<ScenarioFile, Diagnostics> {
        parse_scenario("x.toml", text, &mut |_| {
            Catalog::from_toml_str(EMBEDDED_CATALOG)
                .map_err(|source| CatalogError::EmbeddedInvalid { source })
        })
    }

    #[test]
    fn the_control_table_sets_the_loop_with_the_daemon_keys() {
        let defaults = embedded().expect("embedded").scenario.loop_settings;
        assert_eq!(defaults, LoopSettings::default());
        let text = format!(
            "{EMBEDDED_TEXT}\n[control]\nperiod_s = 20\n[control.forecast]\nbasis = \"point\"\n\
             margin = 1.2\n[control.damping]\nstabilization_window_s = 60\nmin_dwell_s = 300\n\
             [control.fast_path]\nenabled = false\n[control.spare]\nhistory_s = 1800\n"
        );
        let settings = with_embedded_catalog(&text)
            .expect("scenario with [control]")
            .scenario
            .loop_settings;
        assert_eq!(settings.interval_s, 20.0);
        assert_eq!(settings.forecast.basis, ForecastBasis::Point);
        assert_eq!(settings.margin, 1.2);
        assert_eq!(settings.damping.stabilization_window_s, 60.0);
        assert_eq!(settings.damping.min_dwell_s, 300.0);
        assert!(!settings.fast_path.enabled);
        assert!(settings.spare.enabled);
        assert_eq!(settings.spare.history_s, 1800.0);
        assert_eq!(
            settings.damping.deadband_fraction,
            defaults.damping.deadband_fraction
        );
    }

    #[test]
    fn a_bad_control_table_is_reported_with_the_rest() {
        let text = format!(
            "{EMBEDDED_TEXT}\n[control]\nperiod_s = 0\nperiod = 3\n[control.damping]\nmin_dwell_s = -1\n\
             [control.spare]\nhistory_s = 5\n"
        );
        let shown = with_embedded_catalog(&text)
            .expect_err("bad [control]")
            .to_string();
        for needle in [
            "control.period_s: must be > 0",
            "control.period: unknown field",
            "control.damping.min_dwell_s: must be in [0, 86400], got -1",
            "control.spare.history_s: must be in [60, 86400], got 5",
        ] {
            assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
        }
    }
}
