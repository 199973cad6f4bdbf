//! Scenarios: the host and pipeline a comparison runs on, and what describes its workload.

use infadapt_model::Plan;
use infadapt_planner::Problem;
use infadapt_sim::SimConfig;

/// What the policies are compared on: the planning problem (pipeline, weights, host limits,
/// solver settings; its load is ignored), the simulator settings and the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Template of every planning problem; `load_rps` and `current` are set per decision.
    pub problem: Problem,
    /// Plan deployed at the start (taken from the problem's `current` when present);
    /// `None` lets each policy start from its own plan for the mean load.
    pub initial: Option<Plan>,
    pub sim: SimConfig,
    /// Leading workload seconds used only to warm the policies up.
    pub warmup_s: usize,
}

/// Peak and mean of the measured part of a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadStats {
    pub peak_rps: f64,
    pub mean_rps: f64,
}

impl WorkloadStats {
    /// Statistics of `rates` (non-finite values ignored; zeros when empty).
    pub fn of(rates: &[f64]) -> WorkloadStats {
        let finite = rates.iter().copied().filter(|r| r.is_finite() && *r >= 0.0);
        let (mut peak, mut sum, mut n) = (0.0f64, 0.0, 0usize);
        for r in finite {
            peak = peak.max(r);
            sum += r;
            n += 1;
        }
        WorkloadStats {
            peak_rps: peak,
            mean_rps: if n > 0 { sum / n as f64 } else { 0.0 },
        }
    }
}
