//! Discrete-event serving simulator: one pipeline on one host, driven second by second.
//!
//! [`HostSim`] simulates a chain of stages. Requests arrive at stage 0 (Poisson within each
//! second, seeded), wait in a per-variant batching queue, are served in batches by replicas
//! whose batch latency is drawn from a lognormal fitted to the variant profile's mean and p99,
//! and move on to the next stage; a request is done after the last stage. Plans are applied
//! make-before-break: added replicas and variants serve only after their cold start, the
//! capacity they replace keeps serving until then, and removed replicas finish their batch.
//!
//! Everything runs on a virtual clock; nothing here reads files or the wall clock, so a run is
//! a pure function of the pipeline, the plans, the rates and the seed. Arrivals and service
//! times draw from separate random streams of the seed (common random numbers): the arrivals
//! depend on the seed and the rates only, so every policy run with one seed sees the same
//! requests.
//!
//! Model of one replica (see [`host`] for the whole mechanism):
//! - a batch of `k` requests on `c` cores takes a latency `L ~ LogNormal` with
//!   `E[L] = estimate(k, c).mean_ms` and 99th percentile `estimate(k, c).p99_ms`;
//! - the replica accepts its next batch after `L · (k / throughput) / E[L]`, i.e. at the
//!   profiled throughput; servers that overlap requests (throughput above `k / E[L]`) thus keep
//!   several batches in flight, as they do when they are measured.
//!
//! [`workload`] parses request-rate traces and generates a synthetic diurnal workload.

pub mod config;
pub mod error;
pub mod histogram;
pub mod host;
pub mod report;
mod service;
pub mod workload;

pub use config::{AccuracyComposition, SimConfig};
pub use error::SimError;
pub use histogram::LatencyHistogram;
pub use host::{ARRIVAL_STREAM, HostSim, SERVICE_STREAM, splitmix64, stream_seed};
pub use report::{
    ApplyReport, LaneMode, PoolObservation, SimObservation, SimPulse, SimTotals, StageChange,
    StageObservation, VariantObservation,
};
pub use workload::{DiurnalParams, parse_rps_lines, slice, synthetic_diurnal};
