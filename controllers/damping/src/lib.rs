//! The stability layer: damps planned changes so the control loop does not flap, and
//! corrects the provisioning headroom from what the SLO misses say.
//!
//! [`Damper`] takes the planner's proposal and the deployed plan and returns the plan to
//! apply, with one human-readable line per change it held back:
//! - **scale-up at once**: an increase the deployed plan needs to carry the planned load is
//!   never delayed (a variant switch held by the dwell time is replaced by scaling the
//!   deployed variant when that carries the load);
//! - **scale-down after a stabilization window**: a stage's capacity only falls to the
//!   highest capacity recommended within the window (the horizontal autoscaler's
//!   stabilization-window rule);
//! - **deadband**: optional changes that keep the variants and cores and move capacity by
//!   less than a fraction (or a few replicas) are ignored;
//! - **dwell time**: a stage's variants (or cores per replica) switch at most once per
//!   `min_dwell_s`;
//! - **scale-up window**: an optional increase only rises to the lowest capacity recommended
//!   within `scale_up_stabilization_window_s` (default 0: at once);
//! - **step limits**: optional changes add or remove at most so many replicas per tick (on
//!   the way up, a replica and a percent policy combined by `scale_up_select_policy`);
//! - **minimum replicas**: a stage never runs fewer than its `min_replicas`;
//! - **demand floor**: the damped plan always carries the observed demand within the
//!   utilisation cap; where damping would break this (or the latency SLO), the proposal
//!   goes through.
//!
//! [`lead_time_horizon_s`] gives the forecast horizon that covers the cold start of what a
//! plan adds. [`HeadroomController`] is the PI feedback on SLO misses and queue growth.
//!
//! **Architecture invariant:** no IO, no clocks (time is passed in), no panics on data.

pub mod capacity;
pub mod config;
pub mod damper;
pub mod error;
pub mod headroom;
pub mod switch;

pub use capacity::{
    change_cold_start_s, lead_time_horizon_s, max_cold_start_s, plan_capacity_rps, plan_gpu_mem_mb,
    plan_latency_ms, stage_capacity_rps,
};
pub use config::keys::ALL as DAMPING_KEYS;
pub use config::{DEFAULT_MIN_SWITCH_GAIN, DampingConfig, HeadroomConfig, SelectPolicy};
pub use damper::{Damped, Damper, DampingInput};
pub use error::DampingError;
pub use headroom::{HeadroomController, HeadroomSignal};
pub use switch::{keep_shape_pipeline, same_configurations};
