//! Tests against a real TorchServe (the plugin's Rust-API tests live with the plugin, in
//! `plugins/torchserve/tests`): the plugin built as a cdylib and driven through the C ABI,
//! and the real daemon with `type = "torchserve"` following a load.

mod abi;
mod daemon;
pub mod fixture;
