//! `infadaptd profile`: measures variants on a real backend, the way Triton's Model Analyzer
//! does offline, and writes the profile catalog the planner reads. For each variant, batch
//! size and instance count it deploys that configuration through the backend plugin, waits
//! until it serves, then offers open-loop Poisson load at rising rates through the endpoints
//! the backend reports (in turn, where it reports one per replica); the capacity of a
//! configuration is the highest rate served with no failure and a p99 within the SLO.
//!
//! The catalog gets one point per (variant, batch) from the one-instance runs (the
//! planner's profiles are per replica); runs with more instances are listed in the header
//! with their scaling efficiency. GPU memory is read through NVML where a driver exists
//! ([`gpu`] says how) and written as `"unmeasured"` otherwise; `--report FILE` writes a
//! readable report of every configuration ([`report`]).

pub mod gpu;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use infadapt_model::{Catalog, CatalogVariant, ProfilePoint};
use infadapt_plugin_abi::messages::{EndpointProtocol, EndpointState};
use infadapt_plugin_abi::{AssignmentMessage, BackendInstance, PlanMessage, StagePlanMessage};
use serde_json::json;

use crate::commands::loadgen;
use crate::commands::stderr::CommandFailure;
use crate::outln;
use crate::plugin_host::{PluginHost, TrialLoad};

/// Stage name used for the profiled variants.
const STAGE: &str = "profile";

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// TOML file whose `[backend]` table (`type` and the backend's keys) says which server
    /// to measure, as in a daemon configuration.
    #[arg(long, value_name = "FILE")]
    pub backend: PathBuf,
    /// Directory with backend plugins (repeatable).
    #[arg(
        long = "plugin-dir",
        value_name = "DIR",
        default_value = "/usr/lib/infadaptd/plugins"
    )]
    pub plugin_dirs: Vec<PathBuf>,
    /// Variant to profile (repeatable).
    #[arg(long = "variant", value_name = "NAME", required = true)]
    pub variants: Vec<String>,
    /// Batch sizes to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub batch: Vec<u32>,
    /// Instance (replica) counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub instances: Vec<u32>,
    /// Offered rates (requests/s), tried in rising order until the SLO is missed.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,40,80")]
    pub rates: Vec<f64>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Latency SLO (ms) that defines capacity.
    #[arg(long)]
    pub slo_ms: f64,
    /// JSON file with the inference request to send as it is: a KServe v2 body, or the
    /// body a raw-HTTP endpoint (a worker process) takes.
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// Accuracy of a variant for the catalog, `NAME=VALUE` (repeatable; default 0).
    #[arg(long = "accuracy", value_name = "NAME=VALUE")]
    pub accuracy: Vec<String>,
    /// Longest wait for a configuration to serve, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub ready_timeout_s: f64,
    /// Where to write the catalog.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write a readable report: Markdown (`.md`, with one SVG plot per variant next
    /// to it) or self-contained HTML (`.html`), by the file name.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// One measured configuration.
#[derive(Debug, Clone)]
struct Cell {
    variant: String,
    batch: u32,
    instances: u32,
    /// Seconds from the apply until it served.
    ready_s: f64,
    /// (rate, summary) per rate tried.
    steps: Vec<(f64, loadgen::Summary)>,
    /// GPU memory held above the baseline (MiB, all instances); `None`: unmeasured.
    gpu_mem_mb: Option<f64>,
}

impl Cell {
    /// The highest rate served without failure within the SLO, with its summary.
    fn capacity(&self, slo_ms: f64) -> Option<(f64, loadgen::Summary)> {
        self.steps
            .iter()
            .rev()
            .find(|(_, s)| s.failed == 0 && s.sent > 0 && s.p99_ms <= slo_ms)
            .map(|(r, s)| (*r, *s))
    }
}

fn check(args: &ProfileArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if !(args.slo_ms.is_finite() && args.slo_ms > 0.0) {
        problems.push(format!("--slo-ms must be > 0, got {}", args.slo_ms));
    }
    if !(args.duration_s.is_finite() && args.duration_s >= 1.0) {
        problems.push(format!(
            "--duration-s must be >= 1, got {}",
            args.duration_s
        ));
    }
    if args.batch.contains(&0) || args.instances.contains(&0) {
        problems.push("--batch and --instances take counts >= 1".to_owned());
    }
    if args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        problems.push("--rates take rates > 0".to_owned());
    }
    if let Some(path) = &args.report
        && let Err(e) = report::Format::of(path)
    {
        problems.push(e.to_string());
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

fn accuracies(args: &ProfileArgs) -> anyhow::Result<Vec<(String, f64)>> {
    args.accuracy
        .iter()
        .map(|entry| {
            let (name, value) = entry
                .split_once('=')
                .with_context(|| format!("--accuracy {entry}: expected NAME=VALUE"))?;
            let value: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("--accuracy {entry}: `{value}` is not a number"))?;
            Ok((name.trim().to_owned(), value))
        })
        .collect()
}

/// The plugin config: the `[backend]` table without `type`, plus a one-stage pipeline of
/// the profiled variants.
fn backend_config(args: &ProfileArgs) -> anyhow::Result<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(&args.backend)
        .with_context(|| format!("cannot read {}", args.backend.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: not valid TOML", args.backend.display()))?;
    let backend = table
        .get("backend")
        .and_then(toml::Value::as_table)
        .with_context(|| format!("{}: no [backend] table", args.backend.display()))?;
    let kind = backend
        .get("type")
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{}: backend.type: required", args.backend.display()))?
        .to_owned();
    let mut settings = serde_json::to_value(backend).context("backend table to JSON")?;
    if let Some(map) = settings.as_object_mut() {
        map.remove("type");
        map.insert(
            "pipeline".to_owned(),
            json!({ "name": "profile", "slo_ms": args.slo_ms,
                    "stages": [{ "name": STAGE, "variants": args.variants }] }),
        );
    }
    Ok((kind, settings))
}

fn plan(variant: &str, batch: u32, instances: u32) -> PlanMessage {
    PlanMessage {
        stages: vec![StagePlanMessage {
            stage: STAGE.to_owned(),
            assignments: vec![AssignmentMessage {
                variant: variant.to_owned(),
                batch,
                cores: 1,
                replicas: instances,
                share: 1.0,
            }],
        }],
        ..PlanMessage::default()
    }
}

/// Applies the configuration and waits until the backend serves exactly it; the URLs of
/// its ready endpoints (KServe v2 or raw HTTP: the request body is sent as it is).
fn deploy(
    backend: &mut dyn BackendInstance,
    variant: &str,
    batch: u32,
    instances: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let wanted = plan(variant, batch, instances);
    backend.apply(&wanted).map_err(|e| {
        anyhow::anyhow!("apply {variant} batch {batch} × {instances}: {}", e.message)
    })?;
    let started = Instant::now();
    loop {
        let observation = backend
            .observe()
            .map_err(|e| anyhow::anyhow!("observe: {}", e.message))?;
        let serving = observation.deployed.stages.iter().any(|s| {
            s.assignments.len() == 1
                && s.assignments[0].variant == variant
                && s.assignments[0].batch == batch
                && s.assignments[0].replicas == instances
        });
        let urls: Vec<String> = observation
            .endpoints
            .iter()
            .filter(|e| {
                e.variant == variant
                    && e.state == EndpointState::Ready
                    && matches!(
                        e.protocol,
                        EndpointProtocol::KserveV2 | EndpointProtocol::RawHttp
                    )
            })
            .map(|e| e.url.clone())
            .collect();
        if serving && !urls.is_empty() {
            return Ok(urls);
        }
        if started.elapsed() > timeout {
            let health = backend.health().map(|h| h.detail).unwrap_or_default();
            bail!(
                "{variant} batch {batch} × {instances} did not serve within {:.0} s ({health})",
                timeout.as_secs_f64()
            );
        }
        backend
            .apply(&wanted)
            .map_err(|e| anyhow::anyhow!("apply: {}", e.message))?;
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    if let Err(e) = check(args) {
        bail!(CommandFailure::usage().error(format_args!("{e:#}")));
    }
    let accuracy = accuracies(args)?;
    let request = std::fs::read(&args.request)
        .with_context(|| format!("cannot read {}", args.request.display()))?;
    serde_json::from_slice::<serde_json::Value>(&request)
        .with_context(|| format!("{}: not JSON", args.request.display()))?;
    let (kind, settings) = backend_config(args)?;
    let host = PluginHost::new(args.plugin_dirs.clone(), crate::service::own_uid())
        .with_trial_load(TrialLoad::by_this_program(std::time::Duration::from_secs(
            60,
        )));
    let library = host.library(&kind).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut backend = library
        .create(&settings.to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let mut rates = args.rates.clone();
    rates.sort_by(f64::total_cmp);
    let seconds = args.duration_s.ceil() as usize;
    let mut gpu = gpu::GpuRecorder::new(
        gpu::NvmlMeter::open().map(|m| Box::new(m) as Box<dyn gpu::GpuMeter>),
    );
    gpu.take_baseline();
    let mut cells = Vec::new();
    for variant in &args.variants {
        for &batch in &args.batch {
            for &instances in &args.instances {
                let started = Instant::now();
                let urls = deploy(
                    &mut backend,
                    variant,
                    batch,
                    instances,
                    Duration::from_secs_f64(args.ready_timeout_s),
                )?;
                let ready_s = started.elapsed().as_secs_f64();
                // Warm-up: a few requests so first-call costs stay out of the figures.
                let warm = loadgen::poisson_arrivals(&[10.0], 1);
                runtime.block_on(loadgen::run_over(
                    &urls,
                    request.clone().into(),
                    &warm,
                    Duration::from_secs(10),
                ));
                let mut peak = gpu.read();
                let mut steps = Vec::new();
                for (i, &rate) in rates.iter().enumerate() {
                    let arrivals = loadgen::poisson_arrivals(&vec![rate; seconds], 1000 + i as u64);
                    let records = runtime.block_on(loadgen::run_over(
                        &urls,
                        request.clone().into(),
                        &arrivals,
                        Duration::from_secs_f64((args.slo_ms / 1000.0 * 20.0).max(5.0)),
                    ));
                    let summary = loadgen::summarize(&records, 0.0, seconds as f64, args.slo_ms);
                    outln!(
                        "{variant} batch {batch} × {instances}: {rate:.1} rps offered, {} ok, {} failed, p50 {:.1} ms, p99 {:.1} ms",
                        summary.ok,
                        summary.failed,
                        summary.p50_ms,
                        summary.p99_ms
                    );
                    peak = match (peak, gpu.read()) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    let within = summary.p99_ms <= args.slo_ms;
                    let over = summary.failed > 0 || !within;
                    steps.push((rate, summary));
                    if over {
                        break;
                    }
                }
                cells.push(Cell {
                    variant: variant.clone(),
                    batch,
                    instances,
                    ready_s,
                    steps,
                    gpu_mem_mb: gpu.held_mb(peak),
                });
            }
        }
    }
    if !gpu.recording() {
        // A reading failed: no figure is kept, not even those taken before.
        for cell in &mut cells {
            cell.gpu_mem_mb = None;
        }
    }
    let catalog = catalog_of(&cells, args, &accuracy);
    let mut header = header_of(&cells, args);
    header.push(format!("GPU memory: {}.", gpu.method()));
    let text = crate::profile_import::render_catalog(&header, &catalog);
    Catalog::from_toml_str(&text).context("the written catalog does not read back")?;
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    outln!(
        "{}: {} variant(s), {} point(s)",
        args.out.display(),
        catalog.variants.len(),
        catalog
            .variants
            .iter()
            .map(|v| v.points.len())
            .sum::<usize>()
    );
    if let Some(path) = &args.report {
        let format = report::Format::of(path)?;
        let files = report::build(
            &report_of(&cells, &catalog, args, gpu.method()),
            format,
            path,
        )?;
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        for file in &files {
            let target = dir.join(&file.name);
            std::fs::write(&target, &file.text)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
        outln!(
            "{}: report of {} configuration(s){}",
            path.display(),
            cells.len(),
            if files.len() > 1 {
                format!(", {} plot(s) next to it", files.len() - 1)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The report's data: every configuration measured, with the catalog's GPU memory.
fn report_of(
    cells: &[Cell],
    catalog: &Catalog,
    args: &ProfileArgs,
    gpu_method: String,
) -> report::Report {
    let mut rates = args.rates.clone();
    rates.sort_by(f64::total_cmp);
    report::Report {
        slo_ms: args.slo_ms,
        rates,
        duration_s: args.duration_s,
        gpu_method,
        variants: args
            .variants
            .iter()
            .map(|name| report::VariantReport {
                name: name.clone(),
                gpu_mem_mb: catalog.get(name).and_then(|v| v.gpu_mem_mb),
                points: cells
                    .iter()
                    .filter(|c| &c.variant == name)
                    .map(|c| {
                        let capacity = c.capacity(args.slo_ms);
                        report::ReportPoint {
                            batch: c.batch,
                            instances: c.instances,
                            cores: 1,
                            ready_s: c.ready_s,
                            throughput_rps: capacity.map(|(rate, _)| rate),
                            p50_ms: capacity.map(|(_, s)| s.p50_ms),
                            p99_ms: capacity.map(|(_, s)| s.p99_ms),
                            gpu_mem_mb: c.gpu_mem_mb,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn catalog_of(cells: &[Cell], args: &ProfileArgs, accuracy: &[(String, f64)]) -> Catalog {
    let mut variants = Vec::new();
    for variant in &args.variants {
        let mine: Vec<&Cell> = cells.iter().filter(|c| &c.variant == variant).collect();
        let smallest = mine.iter().map(|c| c.instances).min().unwrap_or(1);
        let mut points: Vec<ProfilePoint> = mine
            .iter()
            .filter(|c| c.instances == smallest)
            .filter_map(|c| {
                c.capacity(args.slo_ms).map(|(rate, summary)| ProfilePoint {
                    batch: c.batch,
                    cores: 1,
                    p99_ms: Some(summary.p99_ms),
                    mean_ms: None,
                    throughput_rps: Some(rate / f64::from(c.instances)),
                })
            })
            .collect();
        points.sort_by_key(|p| (p.batch, p.cores));
        let load_time_s = mine.first().map(|c| c.ready_s).unwrap_or(0.0);
        variants.push(CatalogVariant {
            name: variant.clone(),
            accuracy: accuracy
                .iter()
                .find(|(n, _)| n == variant)
                .map(|(_, a)| *a)
                .unwrap_or(0.0),
            load_time_s: (load_time_s * 100.0).round() / 100.0,
            gpu_mem_mb: gpu::per_replica_mb(
                &mine
                    .iter()
                    .map(|c| (c.instances, c.gpu_mem_mb))
                    .collect::<Vec<_>>(),
            ),
            source: format!(
                "infadaptd profile: open-loop Poisson, {} s per rate, SLO {} ms",
                args.duration_s, args.slo_ms
            ),
            points,
        });
    }
    Catalog {
        schema: infadapt_model::catalog::CATALOG_SCHEMA,
        variants,
    }
}

fn header_of(cells: &[Cell], args: &ProfileArgs) -> Vec<String> {
    let mut header = vec![
        "Profile catalog (schema 1) written by `infadaptd profile`.".to_owned(),
        format!(
            "Capacity = highest offered rate (of {} rps, {} s each) served with no failure and p99 <= {} ms.",
            args.rates
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            args.duration_s,
            args.slo_ms
        ),
        "Points come from the one-instance runs (per replica). All runs:".to_owned(),
    ];
    for cell in cells {
        let capacity = cell.capacity(args.slo_ms);
        let held = cell.gpu_mem_mb.map_or_else(
            || "GPU memory unmeasured".to_owned(),
            |mb| format!("GPU memory {mb:.0} MiB"),
        );
        let single = cells
            .iter()
            .find(|c| c.variant == cell.variant && c.batch == cell.batch && c.instances == 1)
            .and_then(|c| c.capacity(args.slo_ms))
            .map(|(r, _)| r);
        let efficiency = match (capacity, single) {
            (Some((rate, _)), Some(one)) if cell.instances > 1 && one > 0.0 => format!(
                ", scaling efficiency {:.2}",
                rate / (one * f64::from(cell.instances))
            ),
            _ => String::new(),
        };
        header.push(format!(
            "  {} batch {} × {} instance(s): ready after {:.1} s, capacity {}{}, {held}",
            cell.variant,
            cell.batch,
            cell.instances,
            cell.ready_s,
            capacity
                .map(|(r, s)| format!("{r:.1} rps (p99 {:.1} ms)", s.p99_ms))
                .unwrap_or_else(|| "none within the SLO".to_owned()),
            efficiency
        ));
    }
    header
}
