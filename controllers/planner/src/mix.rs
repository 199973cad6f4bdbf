//! Variant mixes of a single-stage pipeline: the load interval on which an option meets the
//! SLO, and the optimal split of the load over a chosen set of options.

use crate::latency::stage_latency_in;
use crate::options::StageOption;
use crate::problem::Problem;

/// An option of a mix with the loads it can take: for every load in `[lo, hi]` its latency is
/// within the SLO and its utilisation within the cap.
#[derive(Debug, Clone, PartialEq)]
pub struct MixOption {
    pub option: StageOption,
    pub lo_rps: f64,
    pub hi_rps: f64,
}

const BISECTION_STEPS: usize = 100;

/// Feasible load interval of an option, or `None` when no positive load fits.
///
/// Latency as a function of the load is convex on `(0, cap]` (the batch-fill term falls
/// convexly, the queueing term rises convexly), so the feasible set is an interval. Its
/// minimum is located by golden-section search and each end by bisection that always keeps
/// the feasible side, so both returned ends are themselves feasible.
pub fn load_interval(problem: &Problem, option: &StageOption) -> Option<(f64, f64)> {
    let slo = problem.pipeline.slo_ms;
    let cap = problem.utilisation_cap * f64::from(option.replicas) * option.estimate.throughput_rps;
    if !(cap.is_finite() && cap > 0.0) {
        return None;
    }
    let latency = |load: f64| {
        stage_latency_in(
            problem.latency_model,
            load,
            option.batch,
            option.replicas,
            &option.estimate,
            problem.service_cv2,
        )
        .total_ms
    };
    let ok = |load: f64| latency(load) <= slo;
    // The best load: 0 for batch 1 (no fill delay), else the minimiser of the convex curve.
    let best = if option.batch == 1 {
        0.0
    } else {
        let (mut a, mut b) = (0.0f64, cap);
        let ratio = (5.0f64.sqrt() - 1.0) / 2.0;
        for _ in 0..BISECTION_STEPS {
            let m1 = b - ratio * (b - a);
            let m2 = a + ratio * (b - a);
            if latency(m1) <= latency(m2) {
                b = m2;
            } else {
                a = m1;
            }
        }
        let mid = 0.5 * (a + b);
        if mid > 0.0 { mid } else { b }
    };
    if !ok(best) {
        if option.batch != 1 && ok(cap) {
            // Guard against a flat or numerically awkward curve: the cap itself fits.
            return Some((bisect(cap, 0.0, ok), cap));
        }
        return None;
    }
    let lo = if option.batch == 1 {
        0.0
    } else {
        bisect(best, 0.0, ok)
    };
    let hi = if ok(cap) { cap } else { bisect(best, cap, ok) };
    Some((lo, hi))
}

/// Moves from a feasible point `good` towards an infeasible one `bad` and returns the last
/// feasible point found.
fn bisect(mut good: f64, mut bad: f64, ok: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (good + bad);
        if mid == good || mid == bad {
            break;
        }
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// All mix options with a non-empty feasible load interval, less the dominated ones.
pub fn mix_options(problem: &Problem, candidates: Vec<StageOption>) -> Vec<MixOption> {
    let feasible: Vec<MixOption> = candidates
        .into_iter()
        .filter_map(|option| {
            let (lo_rps, hi_rps) = load_interval(problem, &option)?;
            Some(MixOption {
                option,
                lo_rps,
                hi_rps,
            })
        })
        .collect();
    drop_dominated(problem, feasible)
}

/// Removes every option that another option of the same variant dominates: a load interval
/// at least as wide on both ends, no more penalty, no more of any limited resource and, when
/// the stage has a `min_replicas` above 1, at least as many replicas, and with nodes no more
/// replicas of no more cores each.
/// Exact: a mix using the dominated option can use the dominating one with the same share
/// (same accuracy, since the variant is the same) at no higher cost. Ties keep the first.
fn drop_dominated(problem: &Problem, options: Vec<MixOption>) -> Vec<MixOption> {
    let cores_limited = problem.limits.total_cores.is_some();
    let gpu_limited = problem.limits.gpu_mem_mb.is_some();
    let replicas_bounded = crate::options::mix_min_replicas(problem) > 1;
    // With nodes, fewer and no larger replicas (of the same variant) place wherever more do.
    let placed = !problem.nodes.is_empty();
    let dominates = |a: &MixOption, b: &MixOption| {
        a.option.variant == b.option.variant
            && a.lo_rps <= b.lo_rps
            && a.hi_rps >= b.hi_rps
            && a.option.penalty <= b.option.penalty
            && (!cores_limited || a.option.cores_used <= b.option.cores_used)
            && (!gpu_limited || a.option.gpu_mb <= b.option.gpu_mb)
            && (!replicas_bounded || a.option.replicas >= b.option.replicas)
            && (!placed
                || (a.option.cores <= b.option.cores && a.option.replicas <= b.option.replicas))
    };
    let keep: Vec<bool> = options
        .iter()
        .enumerate()
        .map(|(i, b)| {
            !options
                .iter()
                .enumerate()
                .any(|(j, a)| j != i && dominates(a, b) && (!dominates(b, a) || j < i))
        })
        .collect();
    options
        .into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect()
}

/// Optimal loads for a chosen set of options carrying `load_rps` in total, maximising
/// α·Σ accuracy·load (a continuous knapsack: start every option at its lower end, then
/// give the rest to the best accuracies first). `None` when the set cannot carry the load.
pub fn optimal_loads(alpha: f64, set: &[&MixOption], load_rps: f64) -> Option<Vec<f64>> {
    let lo_sum: f64 = set.iter().map(|m| m.lo_rps).sum();
    let hi_sum: f64 = set.iter().map(|m| m.hi_rps).sum();
    if set.is_empty() || lo_sum > load_rps || hi_sum < load_rps {
        return None;
    }
    let mut loads: Vec<f64> = set.iter().map(|m| m.lo_rps).collect();
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by(|&a, &b| {
        (alpha * set[b].option.accuracy)
            .total_cmp(&(alpha * set[a].option.accuracy))
            .then(a.cmp(&b))
    });
    let mut rest = load_rps - lo_sum;
    for i in order {
        if rest <= 0.0 {
            break;
        }
        let add = (set[i].hi_rps - set[i].lo_rps).min(rest);
        loads[i] += add;
        rest -= add;
    }
    Some(loads)
}
