//! Tests against a real local Ray cluster with Ray Serve (installed by `install.sh`; the
//! cluster and the test application come from `fixture.rs` and `app.py`, the fixture shared
//! with the plugin crate's tests).

pub mod fixture;
mod smoke;
