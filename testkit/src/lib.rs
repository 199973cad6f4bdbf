//! Test support shared by the workspace's tests: builders for the domain fixtures
//! (variants, stages, pipelines, plans) and for the plans handed to plugins (plan messages),
//! scratch directories, and the small helpers of tests that run processes (repository root,
//! free port, polling).
//!
//! A dev-dependency only: no library or binary depends on it.
//!
//! It depends on `infadapt-model` and `infadapt-plugin-abi`, so those two crates' own unit
//! tests cannot use it (they would see a second copy of `Variant`, `Plan`, `PlanMessage`, …);
//! they build their values by hand. Every other crate's tests (unit tests of
//! `infadapt-bridge`, `infadapt-control`, `infadapt-damping`, `infadapt-eval`, and the
//! integration tests under `controllers/*/tests`, `plugins/*/tests` and `tests/`) can use
//! it. Keep its dependencies to those two crates, so that it never depends on a crate whose
//! tests use it.

pub mod fixtures;
pub mod messages;
pub mod process;
pub mod scratch;

pub use fixtures::{
    assignment, fixed_rate_variant, pipeline, plan, point, single_plan, stage, variant,
};
pub use messages::{assignment_message, plan_message, single_plan_message, stage_plan_message};
pub use process::{free_port, repo_root, wait_until, workspace_build_dir};
pub use scratch::{Scratch, scratch_dir};
