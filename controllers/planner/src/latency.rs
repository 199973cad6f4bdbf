//! The per-stage latency and capacity model shared by every solver and the brute force.
//!
//! Everything here is a pure function of the model definitions in the crate documentation;
//! the solvers differ only in how they search, never in how they judge a configuration.

use infadapt_model::{Estimate, EstimateSource, Plan, Variant};

use crate::problem::{ExtrapolationPolicy, LatencyModel, Weights};

/// Latency of one assignment at its load, split into its parts (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyBreakdown {
    /// Time the first request of a batch waits for the batch to fill.
    pub fill_ms: f64,
    /// p99 service time of one batch.
    pub service_ms: f64,
    /// Mean wait of a batch for a free replica.
    pub queue_ms: f64,
    /// `fill_ms + service_ms + queue_ms`.
    pub total_ms: f64,
    /// Planned utilisation ρ = λ/(n·μ).
    pub utilisation: f64,
}

/// Whether `replicas` replicas of throughput `throughput_rps` carry `load_rps` at utilisation
/// cap `cap`: `λ ≤ cap · n · μ`. Every solver uses exactly this comparison.
pub fn within_capacity(load_rps: f64, replicas: u32, throughput_rps: f64, cap: f64) -> bool {
    load_rps <= cap * f64::from(replicas) * throughput_rps
}

/// Latency of an assignment (batch `batch`, `replicas` replicas, profile point `estimate`)
/// serving `load_rps` requests per second, under [`LatencyModel::Queueing`].
pub fn stage_latency(
    load_rps: f64,
    batch: u32,
    replicas: u32,
    estimate: &Estimate,
    service_cv2: f64,
) -> LatencyBreakdown {
    stage_latency_in(
        LatencyModel::Queueing,
        load_rps,
        batch,
        replicas,
        estimate,
        service_cv2,
    )
}

/// Latency of an assignment under `model`.
///
/// Under [`LatencyModel::BatchWaitOnly`] the queueing wait is 0 whatever the utilisation
/// (the capacity constraint alone keeps the load within the replicas' throughput).
///
/// An idle assignment (`load_rps == 0`) has neither batch-fill delay nor queueing: its
/// latency is the service time of one batch. A saturated one (ρ ≥ 1) has infinite latency
/// under the queueing model.
pub fn stage_latency_in(
    model: LatencyModel,
    load_rps: f64,
    batch: u32,
    replicas: u32,
    estimate: &Estimate,
    service_cv2: f64,
) -> LatencyBreakdown {
    let service_ms = estimate.p99_ms;
    if load_rps <= 0.0 {
        return LatencyBreakdown {
            fill_ms: 0.0,
            service_ms,
            queue_ms: 0.0,
            total_ms: service_ms,
            utilisation: 0.0,
        };
    }
    let b = f64::from(batch);
    let n = f64::from(replicas.max(1));
    let fill_ms = (b - 1.0) / load_rps * 1000.0;
    let utilisation = load_rps / (n * estimate.throughput_rps);
    let queue_ms = if model == LatencyModel::BatchWaitOnly {
        0.0
    } else if utilisation.is_finite() && utilisation < 1.0 {
        let ca2 = 1.0 / b;
        let exponent = (2.0 * (n + 1.0)).sqrt() - 1.0;
        (ca2 + service_cv2) / 2.0 * utilisation.powf(exponent) / (n * (1.0 - utilisation))
            * estimate.mean_ms
    } else {
        f64::INFINITY
    };
    let mut total_ms = fill_ms + service_ms + queue_ms;
    if !total_ms.is_finite() {
        total_ms = f64::INFINITY;
    }
    LatencyBreakdown {
        fill_ms,
        service_ms,
        queue_ms,
        total_ms,
        utilisation,
    }
}

/// Whether the extrapolation policy admits a profile estimate.
pub fn extrapolation_allowed(policy: ExtrapolationPolicy, source: EstimateSource) -> bool {
    match (policy, source) {
        (_, EstimateSource::Measured | EstimateSource::Interpolated) => true,
        (ExtrapolationPolicy::Forbid, EstimateSource::Extrapolated { .. }) => false,
        (ExtrapolationPolicy::Warn { max_factor }, EstimateSource::Extrapolated { factor }) => {
            factor <= max_factor
        }
    }
}

/// Whether an estimate is usable at all (positive finite figures).
pub fn estimate_usable(estimate: &Estimate) -> bool {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    ok(estimate.p99_ms) && ok(estimate.mean_ms) && ok(estimate.throughput_rps)
}

/// Cold-start seconds of deploying `replicas` replicas of `variant` with `batch`/`cores` in
/// stage `stage`, measured against the current plan.
///
/// With no current plan the first plan pays no change cost (0). Otherwise replicas of an
/// assignment already deployed with the same variant, batch and cores are reused, and every
/// other replica must start.
pub fn cold_start_s(
    current: Option<&Plan>,
    stage: &str,
    variant: &Variant,
    batch: u32,
    cores: u32,
    replicas: u32,
) -> f64 {
    let Some(current) = current else {
        return 0.0;
    };
    let running = current
        .stage(stage)
        .into_iter()
        .flat_map(|s| s.assignments.iter())
        .filter(|a| a.variant == variant.name && a.batch == batch && a.cores == cores)
        .map(|a| a.replicas)
        .max()
        .unwrap_or(0);
    f64::from(replicas.saturating_sub(running)) * variant.load_time_s
}

/// The cost part of the objective for one assignment: β·cores + β_gpu·GiB + γ·cold start.
pub fn penalty(weights: &Weights, cores: u64, gpu_mb: f64, cold_start_s: f64) -> f64 {
    weights.beta_per_core * cores as f64
        + weights.beta_per_gpu_gib * gpu_mb / 1024.0
        + weights.gamma_per_cold_start_s * cold_start_s
}

/// Smallest replica count that carries `load_rps` within the cap, or `None` when even
/// `max_replicas` do not.
pub fn min_replicas(
    load_rps: f64,
    throughput_rps: f64,
    cap: f64,
    max_replicas: u32,
) -> Option<u32> {
    if load_rps <= 0.0 {
        return Some(1);
    }
    let guess = load_rps / (cap * throughput_rps);
    if !guess.is_finite() || guess > f64::from(max_replicas) + 1.0 {
        return None;
    }
    let mut n = (guess.ceil() as u32).max(1);
    while n > 1 && within_capacity(load_rps, n - 1, throughput_rps, cap) {
        n -= 1;
    }
    while n <= max_replicas && !within_capacity(load_rps, n, throughput_rps, cap) {
        n = n.checked_add(1)?;
    }
    (n <= max_replicas).then_some(n)
}

/// Replica count that carries `load_rps` within the cap with no replica limit, saturated at
/// `u32::MAX` (used to bound the replica range of variant mixes and for diagnosis).
pub fn min_replicas_unbounded(load_rps: f64, throughput_rps: f64, cap: f64) -> u32 {
    if load_rps <= 0.0 {
        return 1;
    }
    let guess = load_rps / (cap * throughput_rps);
    if !guess.is_finite() || guess >= f64::from(u32::MAX - 2) {
        return u32::MAX;
    }
    min_replicas(load_rps, throughput_rps, cap, u32::MAX - 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(p99: f64, mean: f64, rps: f64) -> Estimate {
        Estimate {
            p99_ms: p99,
            mean_ms: mean,
            throughput_rps: rps,
            source: EstimateSource::Measured,
        }
    }

    #[test]
    fn batch_fill_grows_with_batch_at_low_load() {
        // With a fixed service time, a bigger batch must wait longer to fill at 10 rps:
        // 7 requests more for batch 8 is 700 ms.
        let e = estimate(20.0, 15.0, 400.0);
        let small = stage_latency(10.0, 1, 1, &e, 0.1);
        let big = stage_latency(10.0, 8, 1, &e, 0.1);
        assert_eq!(small.fill_ms, 0.0);
        assert!((big.fill_ms - 700.0).abs() < 1e-9);
        assert!(big.total_ms > small.total_ms + 600.0);
    }

    #[test]
    fn idle_stage_has_no_fill_or_queue() {
        let l = stage_latency(0.0, 8, 1, &estimate(20.0, 15.0, 400.0), 0.1);
        assert_eq!((l.fill_ms, l.queue_ms, l.total_ms), (0.0, 0.0, 20.0));
    }

    #[test]
    fn batch_wait_only_drops_the_queueing_wait_and_keeps_the_fill() {
        let e = estimate(20.0, 15.0, 50.0);
        let queueing = stage_latency(45.0, 4, 1, &e, 0.1);
        let ipa = stage_latency_in(LatencyModel::BatchWaitOnly, 45.0, 4, 1, &e, 0.1);
        assert!(queueing.queue_ms > 0.0);
        assert_eq!(ipa.queue_ms, 0.0);
        assert!((ipa.fill_ms - 3.0 / 45.0 * 1000.0).abs() < 1e-9);
        assert!((ipa.total_ms - (ipa.fill_ms + 20.0)).abs() < 1e-9);
        // At saturation IPA's constraint sees only fill and service.
        let full = stage_latency_in(LatencyModel::BatchWaitOnly, 50.0, 1, 1, &e, 0.1);
        assert_eq!(full.total_ms, 20.0);
    }

    #[test]
    fn saturation_is_infinite() {
        let l = stage_latency(100.0, 1, 1, &estimate(20.0, 15.0, 100.0), 0.1);
        assert!(l.total_ms.is_infinite());
    }

    #[test]
    fn min_replicas_is_smallest_within_capacity() {
        assert_eq!(min_replicas(100.0, 50.0, 0.8, 10), Some(3));
        assert_eq!(min_replicas(80.0, 50.0, 0.8, 10), Some(2));
        assert_eq!(min_replicas(1000.0, 50.0, 0.8, 10), None);
        assert_eq!(min_replicas(0.0, 50.0, 0.8, 10), Some(1));
        assert_eq!(min_replicas_unbounded(1e30, 1.0, 0.5), u32::MAX);
    }
}
