//! Where the tests, benches and examples that replay real data find it: the data directory
//! named by `INFADAPT_DATA`, the only setting for it. Without it they fail, never skip.

use std::path::PathBuf;

/// The environment variable that names the data directory (traces and published profiles).
pub const DATA_ENV: &str = "INFADAPT_DATA";

/// `relative` inside the data directory; panics with a message naming `INFADAPT_DATA` and
/// the file wanted when the variable is unset or the file is missing.
pub fn real_data(relative: &str) -> PathBuf {
    let Some(dir) = std::env::var_os(DATA_ENV).filter(|d| !d.is_empty()) else {
        panic!(
            "{DATA_ENV} is not set: this replays real data and needs `{relative}` from the \
             data directory; set {DATA_ENV} to that directory (see README.md, \
             \"Tests that replay real data\")"
        );
    };
    let dir = PathBuf::from(dir);
    let path = dir.join(relative);
    assert!(
        path.exists(),
        "{DATA_ENV}={}: {} is missing; set {DATA_ENV} to the data directory that holds \
         `{relative}` (see README.md, \"Tests that replay real data\")",
        dir.display(),
        path.display()
    );
    path
}
