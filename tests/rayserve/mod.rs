//! Tests against a real local Ray cluster with Ray Serve (installed by `install.sh`; the
//! cluster and the test application come from `fixture.rs` and `app.py`, the fixture shared
//! with the plugin crate's tests): the fixture's smoke test, and the real daemon with
//! `type = "rayserve"` following a trace replay across the cluster's nodes.

mod daemon;
pub mod fixture;
mod smoke;
