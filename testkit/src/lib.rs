//! Test support shared by the workspace's tests: builders for the domain fixtures
//! (variants, stages, pipelines, plans), scratch directories, and the small helpers of tests
//! that run processes (repository root, free port, polling).
//!
//! A dev-dependency only: no library or binary depends on it.
//!
//! It depends on `infadapt-model`, so the model crate's own unit tests cannot use it (they
//! would see a second copy of `Variant`, `Plan`, …); they build their values by hand.
//! Every other crate's tests (unit tests of `infadapt-bridge`, `infadapt-control`,
//! `infadapt-damping`, `infadapt-eval`, and the integration tests under
//! `controllers/*/tests` and `tests/`) can use it. Keep its dependencies to the model crate,
//! so that it never depends on a crate whose tests use it.

pub mod fixtures;
pub mod process;
pub mod scratch;

pub use fixtures::{
    assignment, fixed_rate_variant, pipeline, plan, point, single_plan, stage, variant,
};
pub use process::{free_port, repo_root, wait_until};
pub use scratch::{Scratch, scratch_dir};
