//! The control loop shared by the daemon and the simulator: observe → forecast → plan →
//! damp → (apply by the caller) → record. Pure: the caller passes observations and time in
//! and applies the returned plan through whatever backend it drives.
//!
//! A [`Policy`] turns observations into decisions; [`ControlLoop`] is this project's policy
//! (forecast with a calibrated upper bound, exact planner, stability layer, feedback on the
//! provisioning headroom). The comparison policies of the evaluation implement the same
//! trait, so every policy runs in the same harness.

pub mod control_loop;
pub mod error;
pub mod fast_path;
pub mod observation;
pub mod policy;
pub mod spare;

pub use control_loop::forecast_keys;
pub use control_loop::forecast_keys::ALL as FORECAST_KEYS;
pub use control_loop::{
    ControlConfig, ControlLoop, DEFAULT_UPPER_QUANTILE, ForecastBasis, ForecastSettings, LoadFloor,
};
pub use error::ControlError;
pub use fast_path::keys as fast_path_keys;
pub use fast_path::keys::ALL as FAST_PATH_KEYS;
pub use fast_path::{FastPathConfig, Pulse};
pub use infadapt_damping::config::keys as damping_keys;
pub use infadapt_damping::{DAMPING_KEYS, DampingConfig, HeadroomConfig, SelectPolicy};
pub use infadapt_planner::NodeCapacity;
pub use observation::{Decision, Observation, StageObservation};
pub use policy::Policy;
pub use spare::SpareConfig;
pub use spare::keys as spare_keys;
pub use spare::keys::ALL as SPARE_KEYS;
