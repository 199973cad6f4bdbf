//! Helpers of the tests that run processes and servers: the repository root, a free
//! loopback port, polling until a condition holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's root directory (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test-support crate lives in the repository")
        .to_owned()
}

/// A loopback TCP port free at the time of the call (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Calls `check` every 100 ms until it returns true (then true) or `timeout` has passed
/// (then false).
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_root_holds_the_workspace_manifest() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("testkit/Cargo.toml").is_file());
    }

    #[test]
    fn wait_until_reports_success_and_timeout() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 2
        }));
        assert!(!wait_until(Duration::from_millis(250), || false));
        assert_ne!(free_port(), 0);
    }
}
