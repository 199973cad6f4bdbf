//! What the simulator reports: apply outcomes, periodic observations and run totals.

use infadapt_model::Plan;
use serde::Serialize;

/// The part a variant plays in its stage right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneMode {
    /// Not deployed.
    Off,
    /// In the current plan.
    Planned,
    /// Removed by the current plan but still taking traffic until its replacement is ready.
    Outgoing,
    /// Removed; takes no new traffic, serves its queue, then its replicas leave.
    Draining,
}

/// What one apply changed in one stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct StageChange {
    pub stage: String,
    /// Replicas this apply started (cold).
    pub replicas_started: u32,
    /// Replicas this apply decided to stop: cancelled while starting, retired at once, or
    /// leaving once their batch or their replacement is done.
    pub replicas_stopped: u32,
    /// Variants that joined the stage's plan.
    pub variants_added: Vec<String>,
    /// Variants that left the stage's plan (they drain make-before-break).
    pub variants_removed: Vec<String>,
    /// Variants whose batch size changed (free: a batcher setting).
    pub batch_changes: u32,
    /// Variants whose cores per replica changed (their replicas restart).
    pub cores_changes: u32,
    /// Whether the load shares between variants changed.
    pub shares_changed: bool,
}

impl StageChange {
    /// Whether anything changed in the stage.
    pub fn changed(&self) -> bool {
        self.replicas_started > 0
            || self.replicas_stopped > 0
            || !self.variants_added.is_empty()
            || !self.variants_removed.is_empty()
            || self.batch_changes > 0
            || self.cores_changes > 0
            || self.shares_changed
    }
}

/// What an apply changed, per stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ApplyReport {
    /// Virtual time of the apply, seconds.
    pub time_s: f64,
    pub stages: Vec<StageChange>,
}

impl ApplyReport {
    /// Whether the apply changed anything at all (a reconfiguration).
    pub fn changed(&self) -> bool {
        self.stages.iter().any(StageChange::changed)
    }

    pub fn replicas_started(&self) -> u32 {
        self.stages.iter().map(|s| s.replicas_started).sum()
    }

    pub fn replicas_stopped(&self) -> u32 {
        self.stages.iter().map(|s| s.replicas_stopped).sum()
    }

    /// Variant switches: per stage, the larger of variants added and removed.
    pub fn variant_switches(&self) -> u32 {
        self.stages
            .iter()
            .map(|s| s.variants_added.len().max(s.variants_removed.len()) as u32)
            .sum()
    }
}

/// Replicas of one variant with one core count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolObservation {
    pub cores: u32,
    pub ready: u32,
    pub starting: u32,
    /// Ready replicas that cannot take a batch right now.
    pub busy: u32,
    /// Busy replicas that leave once free.
    pub retiring: u32,
}

/// One deployed variant of a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantObservation {
    pub variant: String,
    pub mode: LaneMode,
    pub batch: u32,
    /// Share of the stage's arrivals routed to it now (may differ from the planned share
    /// while a replacement starts).
    pub routed_share: f64,
    pub planned_share: f64,
    pub queue_len: usize,
    pub pools: Vec<PoolObservation>,
}

/// One stage at the end of an observation window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageObservation {
    pub stage: String,
    pub queue_len: usize,
    /// Busy replica-seconds over ready replica-seconds in the window (0 with no replica).
    pub busy_fraction: f64,
    /// Ready replicas that take traffic × profiled throughput at their batch and cores.
    pub capacity_rps: f64,
    pub ready_replicas: u32,
    pub starting_replicas: u32,
    /// Variants with replicas, a queue or a place in the plan.
    pub variants: Vec<VariantObservation>,
}

/// A look at the host between observations: what the last second brought and what waits
/// now. Taking it changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimPulse {
    /// Current virtual time, seconds.
    pub time_s: f64,
    /// Requests that arrived in the last simulated second.
    pub arrivals_last_second: u32,
    /// Requests waiting in every stage's queues (as [`StageObservation::queue_len`]).
    pub queue_len: u64,
    /// The plan last applied.
    pub target: Plan,
}

/// What a backend would report for the window since the previous observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimObservation {
    /// Virtual time at the end of the window, seconds.
    pub time_s: f64,
    pub window_s: f64,
    pub arrivals: u64,
    /// Arrivals in each whole second of the window, oldest first.
    pub arrivals_per_second: Vec<u32>,
    pub completed: u64,
    /// Dropped in the window: timeouts plus queue overflows.
    pub dropped: u64,
    pub dropped_timeout: u64,
    pub dropped_overflow: u64,
    /// Completed with end-to-end latency above the SLO.
    pub slo_misses: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    pub mean_accuracy: Option<f64>,
    /// Composed accuracy summed over the requests of the window that completed within the
    /// SLO (late ones add nothing); divide by arrivals for the window's on-time accuracy.
    pub on_time_accuracy_sum: f64,
    pub stages: Vec<StageObservation>,
    /// The plan last applied (what the host is reconciling towards).
    pub target: Plan,
}

impl SimObservation {
    /// Mean arrival rate over the window, requests per second.
    pub fn arrival_rate(&self) -> f64 {
        if self.window_s > 0.0 {
            self.arrivals as f64 / self.window_s
        } else {
            0.0
        }
    }
}

/// Totals over the whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimTotals {
    /// Simulated seconds.
    pub seconds: u64,
    /// Arrivals.
    pub requests: u64,
    pub completed: u64,
    /// Timeouts plus queue overflows.
    pub dropped: u64,
    pub dropped_timeout: u64,
    pub dropped_overflow: u64,
    /// Still queued or in a batch.
    pub in_flight: u64,
    /// Completed with end-to-end latency above the SLO.
    pub completed_late: u64,
    /// `dropped + completed_late`.
    pub slo_violations: u64,
    /// `slo_violations / (completed + dropped)`, 0 when nothing finished.
    pub slo_violation_rate: f64,
    /// Latency quantiles and mean of completed requests (0 when none completed).
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub mean_latency_ms: f64,
    /// Mean composed accuracy of completed requests (0 when none completed), late ones
    /// included; drops and requests still in flight do not count.
    pub mean_accuracy: f64,
    /// Composed accuracy summed over the requests that completed within the SLO.
    pub on_time_accuracy_sum: f64,
    /// `on_time_accuracy_sum / requests` (0 with no arrival): every arrival counts, and a
    /// request that completed late, was dropped or is still in flight contributes 0. Always
    /// at most `mean_accuracy × completed / requests`.
    pub on_time_accuracy: f64,
    /// Core-seconds of every replica that existed (starting, ready or draining).
    pub core_seconds: f64,
    /// GPU-MiB-seconds of the same replicas.
    pub gpu_mib_seconds: f64,
    pub cost_core_hours: f64,
    /// Rates that were NaN or negative and were taken as 0.
    pub invalid_rates: u64,
    /// Rates above `max_rate_rps` that were clamped.
    pub clamped_rates: u64,
}
