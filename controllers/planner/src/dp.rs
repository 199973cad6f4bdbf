//! Exact Pareto dynamic programme over per-stage options for the separable (no-mix) case.
//!
//! Stages are taken in order; a label is a partial plan summarised by what its completions
//! depend on: latency so far, the gain (score in sum mode, α·accuracy product in product
//! mode), the penalty (product mode), and cores / GPU memory used when a host limit is set.
//! A label another label dominates on all of these can never complete to a better plan, so
//! dropping it keeps the programme exact. Labels that already break the SLO or a limit, or
//! cannot meet it whatever the remaining stages choose, are dropped too.

use crate::options::{Key, StageOption, option_key};
use crate::placement::ReplicaNeed;
use crate::problem::{AccuracyMode, Problem};

/// Search statistics of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpStats {
    /// Labels created (before dominance filtering).
    pub labels_generated: usize,
    /// Largest front kept after a stage.
    pub max_front: usize,
}

#[derive(Debug, Clone, Copy)]
struct Label {
    key: Key,
    parent: u32,
    option: u32,
}

/// Relative slack on the conservative look-ahead pruning (sums of the same numbers in a
/// different order may round differently; the final check is exact).
const LOOKAHEAD_SLACK: f64 = 1e-9;

/// Relative slack on the bound pruning against the incumbent.
const BOUND_SLACK: f64 = 1e-9;

/// Number of Lagrange multipliers of the latency row used by the upper bound.
const MULTIPLIERS: usize = 24;

/// Upper bound on the score the stages from `k` on can add within a latency budget, by
/// Lagrangian relaxation of the latency row: for every multiplier μ ≥ 0,
/// `best(k, budget) ≤ μ·budget + Σ_{j≥k} max_o (gain_o − μ·latency_o)` (sum mode).
struct ScoreBound {
    multipliers: Vec<f64>,
    /// `suffix[k][i]`: Σ_{j≥k} max_o (gain_o − μ_i·latency_o).
    suffix: Vec<Vec<f64>>,
}

impl ScoreBound {
    fn new(keys: &[Vec<Key>], slo: f64) -> ScoreBound {
        let spread: f64 = keys
            .iter()
            .map(|ks| {
                let hi = ks.iter().map(|k| k.gain).fold(f64::NEG_INFINITY, f64::max);
                let lo = ks.iter().map(|k| k.gain).fold(f64::INFINITY, f64::min);
                hi - lo
            })
            .sum();
        let base = if spread > 0.0 && slo > 0.0 {
            spread / slo
        } else {
            1.0
        };
        let mut multipliers = vec![0.0];
        multipliers.extend((0..MULTIPLIERS).map(|i| base * 2f64.powi(i as i32 - 12)));
        let mut suffix = vec![vec![0.0; multipliers.len()]; keys.len() + 1];
        for k in (0..keys.len()).rev() {
            for (i, &mu) in multipliers.iter().enumerate() {
                let best = keys[k]
                    .iter()
                    .map(|x| x.gain - mu * x.latency)
                    .fold(f64::NEG_INFINITY, f64::max);
                suffix[k][i] = suffix[k + 1][i] + best;
            }
        }
        ScoreBound {
            multipliers,
            suffix,
        }
    }

    /// Upper bound on the score stages `k..` add within `budget` milliseconds.
    fn bound(&self, k: usize, budget: f64) -> f64 {
        self.multipliers
            .iter()
            .zip(&self.suffix[k])
            .map(|(&mu, &s)| mu * budget + s)
            .fold(f64::INFINITY, f64::min)
    }

    /// A feasible plan's score found greedily for each multiplier (the incumbent), checked
    /// with the same sequential sums as the programme.
    fn incumbent(&self, problem: &Problem, keys: &[Vec<Key>]) -> Option<f64> {
        let slo = problem.pipeline.slo_ms;
        let mut best: Option<f64> = None;
        for &mu in &self.multipliers {
            let (mut latency, mut gain, mut cores, mut gpu) = (0.0, 0.0, 0u64, 0.0);
            for ks in keys {
                let pick = ks.iter().max_by(|a, b| {
                    (a.gain - mu * a.latency).total_cmp(&(b.gain - mu * b.latency))
                })?;
                latency += pick.latency;
                gain += pick.gain;
                cores += pick.cores;
                gpu += pick.gpu_mb;
            }
            let fits = latency <= slo
                && problem
                    .limits
                    .total_cores
                    .is_none_or(|l| cores <= u64::from(l))
                && problem.limits.gpu_mem_mb.is_none_or(|l| gpu <= l);
            if fits && best.is_none_or(|b| gain > b) {
                best = Some(gain);
            }
        }
        best
    }
}

/// Finds the best choice of one option per stage, returned as option indices, or `None`
/// when no combination meets the SLO and the limits.
pub fn solve_dp(problem: &Problem, options: &[Vec<StageOption>]) -> (Option<Vec<usize>>, DpStats) {
    let mut stats = DpStats::default();
    if options.is_empty() || options.iter().any(Vec::is_empty) {
        return (None, stats);
    }
    let slo = problem.pipeline.slo_ms;
    let core_limit = problem.limits.total_cores.map(u64::from);
    let gpu_limit = problem.limits.gpu_mem_mb;
    let keys: Vec<Vec<Key>> = options
        .iter()
        .map(|stage| stage.iter().map(|o| option_key(problem, o)).collect())
        .collect();
    // Smallest latency / cores / GPU memory the stages from k on can add.
    let k_len = keys.len();
    let mut rest_latency = vec![0.0; k_len + 1];
    let mut rest_cores = vec![0u64; k_len + 1];
    let mut rest_gpu = vec![0.0; k_len + 1];
    for k in (0..k_len).rev() {
        let min_of = |f: fn(&Key) -> f64| keys[k].iter().map(f).fold(f64::INFINITY, f64::min);
        rest_latency[k] = rest_latency[k + 1] + min_of(|x| x.latency);
        rest_gpu[k] = rest_gpu[k + 1] + min_of(|x| x.gpu_mb);
        rest_cores[k] = rest_cores[k + 1] + keys[k].iter().map(|x| x.cores).min().unwrap_or(0);
    }
    let product = problem.accuracy_mode == AccuracyMode::Product;
    let simple = !product && core_limit.is_none() && gpu_limit.is_none();
    // Sum mode: prune labels whose best completion cannot reach a known feasible score.
    let bound = (!product).then(|| ScoreBound::new(&keys, slo));
    let cutoff = bound
        .as_ref()
        .and_then(|b| b.incumbent(problem, &keys))
        .map(|v| v - BOUND_SLACK * v.abs().max(1.0));

    let start = Key {
        latency: 0.0,
        gain: if product { problem.weights.alpha } else { 0.0 },
        cost: 0.0,
        cores: 0,
        gpu_mb: 0.0,
        replica: ReplicaNeed::NONE,
        replicas: 0,
    };
    let mut layers: Vec<Vec<Label>> = Vec::with_capacity(k_len);
    let mut front = vec![Label {
        key: start,
        parent: 0,
        option: 0,
    }];
    let mut candidates: Vec<Label> = Vec::new();
    for (k, stage_keys) in keys.iter().enumerate() {
        candidates.clear();
        let latency_budget = slo - rest_latency[k + 1] + LOOKAHEAD_SLACK * slo.abs();
        let gpu_budget =
            gpu_limit.map(|g| g - rest_gpu[k + 1] + LOOKAHEAD_SLACK * g.abs().max(1.0));
        for (pi, parent) in front.iter().enumerate() {
            for (oi, ok) in stage_keys.iter().enumerate() {
                let latency = parent.key.latency + ok.latency;
                if latency > slo || latency > latency_budget {
                    continue;
                }
                let cores = parent.key.cores + ok.cores;
                if let Some(limit) = core_limit
                    && cores + rest_cores[k + 1] > limit
                {
                    continue;
                }
                let gpu_mb = parent.key.gpu_mb + ok.gpu_mb;
                if let (Some(limit), Some(budget)) = (gpu_limit, gpu_budget)
                    && (gpu_mb > limit || gpu_mb > budget)
                {
                    continue;
                }
                let (gain, cost) = if product {
                    (
                        parent.key.gain * options[k][oi].accuracy,
                        parent.key.cost + ok.cost,
                    )
                } else {
                    (parent.key.gain + ok.gain, 0.0)
                };
                if let (Some(b), Some(cut)) = (&bound, cutoff)
                    && gain + b.bound(k + 1, slo - latency) < cut
                {
                    continue;
                }
                candidates.push(Label {
                    key: Key {
                        latency,
                        gain,
                        cost,
                        cores,
                        gpu_mb,
                        replica: ReplicaNeed::NONE,
                        replicas: 0,
                    },
                    parent: pi as u32,
                    option: oi as u32,
                });
            }
        }
        stats.labels_generated += candidates.len();
        if candidates.is_empty() {
            return (None, stats);
        }
        let next = if simple {
            front_2d(&mut candidates)
        } else {
            front_general(&mut candidates)
        };
        stats.max_front = stats.max_front.max(next.len());
        layers.push(std::mem::replace(&mut front, next));
    }
    layers.push(front);
    // Best final label: highest gain − cost (the objective up to the same rounding).
    let last = &layers[k_len];
    let best = last
        .iter()
        .enumerate()
        .max_by(|a, b| {
            (a.1.key.gain - a.1.key.cost)
                .total_cmp(&(b.1.key.gain - b.1.key.cost))
                .then(b.0.cmp(&a.0))
        })
        .map(|(i, _)| i);
    let Some(mut index) = best else {
        return (None, stats);
    };
    let mut choice = vec![0usize; k_len];
    for k in (0..k_len).rev() {
        let label = layers[k + 1][index];
        choice[k] = label.option as usize;
        index = label.parent as usize;
    }
    (Some(choice), stats)
}

/// Pareto front of (latency ↓, gain ↑) by a sort and a sweep.
fn front_2d(candidates: &mut [Label]) -> Vec<Label> {
    candidates.sort_unstable_by(|a, b| {
        a.key
            .latency
            .total_cmp(&b.key.latency)
            .then(b.key.gain.total_cmp(&a.key.gain))
    });
    let mut out = Vec::with_capacity(candidates.len().min(256));
    let mut best = f64::NEG_INFINITY;
    for c in candidates.iter() {
        if c.key.gain > best {
            best = c.key.gain;
            out.push(*c);
        }
    }
    out
}

/// Pareto front over all key dimensions: sorted by latency, each candidate is checked
/// against the labels kept before it.
fn front_general(candidates: &mut [Label]) -> Vec<Label> {
    candidates.sort_unstable_by(|a, b| {
        a.key
            .latency
            .total_cmp(&b.key.latency)
            .then(b.key.gain.total_cmp(&a.key.gain))
            .then(a.key.cost.total_cmp(&b.key.cost))
            .then(a.key.cores.cmp(&b.key.cores))
            .then(a.key.gpu_mb.total_cmp(&b.key.gpu_mb))
    });
    let mut out: Vec<Label> = Vec::new();
    for c in candidates.iter() {
        if !out.iter().any(|k| k.key.dominates(&c.key)) {
            out.push(*c);
        }
    }
    out
}
