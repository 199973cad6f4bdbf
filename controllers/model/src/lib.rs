//! Domain types shared by every controller: pipelines, stages, variants, profiles, plans.
//!
//! A *pipeline* is a chain of *stages* with an end-to-end latency SLO; a single model is a
//! one-stage pipeline. Each stage offers several *variants* of a model that trade accuracy for
//! speed and cost; each variant has a *profile* of measured points (batch, cores) → latency and
//! throughput, and a fitted latency model for points that were not measured.

pub mod catalog;
pub mod error;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod settings;

pub use catalog::{Catalog, CatalogVariant};
pub use error::ModelError;
pub use pipeline::{Pipeline, Stage, Variant};
pub use plan::{Assignment, Placement, Plan, StagePlan, describe_placement};
pub use profile::{Estimate, EstimateSource, LatencyFit, Profile, ProfilePoint};
pub use settings::{Bounds, KeyDefault, KeySpec};
