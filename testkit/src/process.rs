//! Helpers of the tests that run processes and servers: the repository root, the
//! workspace's built binaries and plugins, a free loopback port, polling until a condition
//! holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository's root directory (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test-support crate lives in the repository")
        .to_owned()
}

/// Builds the workspace's binaries and plugin cdylibs (the test worker, the plugins) once per
/// test binary into that binary's own target directory and profile, and returns the profile
/// directory they are in. One invocation builds the whole workspace's libraries, binaries
/// and tests, so its features unify as in `cargo test --workspace`: after that command's own
/// build it compiles only the few binaries the tests do not link, where a per-package build
/// would rebuild the shared dependencies with other features.
pub fn workspace_build_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_owned();
        let target_dir = profile_dir.parent().expect("target dir").to_owned();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(&cargo);
        command
            .current_dir(repo_root())
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
            ]);
        if profile != "debug" {
            command.args(["--profile", &profile]);
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("cannot run `{cargo} build` for the workspace: {e}"));
        assert!(
            status.success(),
            "building the workspace's binaries and plugins failed"
        );
        profile_dir
    })
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
