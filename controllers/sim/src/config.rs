//! Simulation settings: seed, SLO, timeouts, batching delay, queue limits, noise.

use serde::{Deserialize, Serialize};

use crate::SimError;

/// How the accuracies of the variants that served a request compose into the request's
/// accuracy (the planner's accuracy modes, restated so the simulator needs no planner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyComposition {
    /// Sum over stages.
    #[default]
    Sum,
    /// Product over stages (accuracies in [0, 1] that compound along the chain).
    Product,
}

/// Settings of one simulation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random draw. Arrivals and service times draw from separate streams,
    /// each seeded from this seed mixed with its own stream constant through SplitMix64
    /// ([`crate::host::stream_seed`]), so the arrivals depend on the seed and the rates only,
    /// never on the plans: runs of different policies with one seed see the same requests.
    pub seed: u64,
    /// End-to-end latency objective in milliseconds; `None` takes the pipeline's SLO.
    pub slo_ms: Option<f64>,
    /// A request still queued after this long in the system (ms) is dropped;
    /// `None` means twice the SLO.
    pub timeout_ms: Option<f64>,
    /// The batcher sends a partial batch once its oldest request has waited this long (ms)
    /// in the stage's queue; `0` sends whatever is queued as soon as a replica is free.
    pub max_queue_delay_ms: f64,
    /// Requests queued in one stage beyond which arrivals to that stage are dropped.
    pub max_queue_len: usize,
    /// Multiplies the lognormal σ of batch latency (`0` makes service deterministic).
    pub noise_scale: f64,
    /// Smallest σ used when the profile gives no spread (p99 ≤ mean); the mean stays the
    /// profiled mean. `0` keeps such service times deterministic.
    pub min_sigma: f64,
    /// How stage accuracies compose into a request's accuracy.
    pub accuracy: AccuracyComposition,
    /// Rates above this (requests per second) are clamped to it and counted.
    pub max_rate_rps: f64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            slo_ms: None,
            timeout_ms: None,
            max_queue_delay_ms: 100.0,
            max_queue_len: 10_000,
            noise_scale: 1.0,
            min_sigma: 0.0,
            accuracy: AccuracyComposition::Sum,
            max_rate_rps: 1_000_000.0,
        }
    }
}

/// Largest σ the lognormal fit can produce (where `p99 / mean` peaks).
pub(crate) const MAX_SIGMA: f64 = crate::service::Z99;

impl SimConfig {
    /// A default configuration with the given seed.
    pub fn with_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), SimError> {
        let positive = |field: &'static str, value: Option<f64>| match value {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(SimError::Config {
                field,
                problem: format!("must be a positive number, got {v}"),
            }),
            _ => Ok(()),
        };
        positive("slo_ms", self.slo_ms)?;
        positive("timeout_ms", self.timeout_ms)?;
        positive("max_rate_rps", Some(self.max_rate_rps))?;
        let non_negative = |field: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(SimError::Config {
                    field,
                    problem: format!("must be a finite number ≥ 0, got {v}"),
                })
            }
        };
        non_negative("max_queue_delay_ms", self.max_queue_delay_ms)?;
        non_negative("noise_scale", self.noise_scale)?;
        non_negative("min_sigma", self.min_sigma)?;
        if self.min_sigma > MAX_SIGMA {
            return Err(SimError::Config {
                field: "min_sigma",
                problem: format!("must be at most {MAX_SIGMA}, got {}", self.min_sigma),
            });
        }
        if self.max_queue_len == 0 {
            return Err(SimError::Config {
                field: "max_queue_len",
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

/// Config values resolved against the pipeline and converted to seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub slo_s: f64,
    pub timeout_s: f64,
    pub max_queue_delay_s: f64,
    pub max_queue_len: usize,
    pub noise_scale: f64,
    pub min_sigma: f64,
    pub accuracy: AccuracyComposition,
    pub max_rate_rps: f64,
}

impl Settings {
    pub fn resolve(config: &SimConfig, pipeline_slo_ms: f64) -> Settings {
        let slo_ms = config.slo_ms.unwrap_or(pipeline_slo_ms);
        Settings {
            slo_s: slo_ms / 1000.0,
            timeout_s: config.timeout_ms.unwrap_or(2.0 * slo_ms) / 1000.0,
            max_queue_delay_s: config.max_queue_delay_ms / 1000.0,
            max_queue_len: config.max_queue_len,
            noise_scale: config.noise_scale,
            min_sigma: config.min_sigma,
            accuracy: config.accuracy,
            max_rate_rps: config.max_rate_rps,
        }
    }
}
