//! The shipped daemon configurations (`etc/infadaptd.toml`, `etc/examples/daemon-*.toml`)
//! pass `infadaptd validate` against the plugin libraries of this build, and every backend
//! crate in `plugins/` has its example, `etc/examples/daemon-NAME.toml`, using it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::plugins::{TempDir, install_rust_plugin, rust_plugins_dir};
use crate::support::repo_root;

/// The backends the workspace builds as plugins: every crate directly under `plugins/` whose
/// library is a `cdylib` named `infadapt_plugin_NAME`.
fn workspace_backends() -> Vec<String> {
    let mut backends = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("plugins")).expect("plugins/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let value: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let lib = value.get("lib").and_then(toml::Value::as_table);
        let is_cdylib = lib
            .and_then(|l| l.get("crate-type"))
            .and_then(toml::Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        let name = lib
            .and_then(|l| l.get("name"))
            .and_then(toml::Value::as_str)
            .and_then(|n| n.strip_prefix("infadapt_plugin_"));
        if let (true, Some(name)) = (is_cdylib, name) {
            backends.push(name.to_owned());
        }
    }
    backends.sort();
    backends
}

/// The `type` of every `[pipeline.backend]` in a daemon configuration.
fn backend_types(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value
        .get("pipeline")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("backend")?.get("type")?.as_str().map(str::to_owned))
        .collect()
}

/// The packaged default and every `etc/examples/daemon-*.toml`.
fn shipped_daemon_configs() -> Vec<PathBuf> {
    let mut files = vec![repo_root().join("etc/infadaptd.toml")];
    for entry in std::fs::read_dir(repo_root().join("etc/examples")).expect("etc/examples") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("daemon-") && name.ends_with(".toml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A plugin directory holding this build's plugin libraries, as the packages install them.
fn installed_plugins() -> TempDir {
    let dir = TempDir::new("examples");
    for backend in workspace_backends() {
        let file = format!("libinfadapt_plugin_{backend}.so");
        install_rust_plugin(&dir, &file, &file);
    }
    dir
}

fn validate(config: &Path, plugin_dirs: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infadaptd"));
    command.arg("validate").arg("--config").arg(config);
    for dir in plugin_dirs {
        command.arg("--plugin-dir").arg(dir);
    }
    command.output().expect("run infadaptd validate")
}

#[test]
fn every_backend_in_the_workspace_has_an_example() {
    let backends = workspace_backends();
    assert!(
        ["process", "rayserve", "sim", "torchserve", "triton"]
            .iter()
            .all(|b| backends.iter().any(|found| found == b)),
        "backends found in plugins/: {backends:?}"
    );
    for backend in &backends {
        let example = repo_root().join(format!("etc/examples/daemon-{backend}.toml"));
        assert!(
            example.is_file(),
            "backend `{backend}` (plugins/) has no example {}",
            example.display()
        );
        let types = backend_types(&example);
        assert!(
            !types.is_empty() && types.iter().all(|t| t == backend),
            "{}: backends {types:?}, expected `{backend}` only",
            example.display()
        );
    }
}

#[test]
fn shipped_daemon_configs_validate_against_the_built_plugins() {
    // Built once for the integration tests (a no-op when fresh).
    assert!(rust_plugins_dir().is_dir());
    let plugins = installed_plugins();
    let files = shipped_daemon_configs();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let out = validate(file, &[Path::new("/nonexistent-plugins"), plugins.path()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok ("), "{}: {stdout}", file.display());
        for kind in backend_types(file) {
            assert!(stdout.contains(&format!("[{kind}]")), "{stdout}");
        }
    }
}

#[test]
fn plugin_dir_replaces_the_configured_plugin_dirs() {
    let plugins = installed_plugins();
    let example = repo_root().join("etc/examples/daemon-triton.toml");
    // The example names /usr/lib/infadaptd/plugins; an empty --plugin-dir stands in for it.
    let empty = TempDir::new("examples-empty");
    let out = validate(&example, &[empty.path()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no plugin library for backend `triton`")
            && stderr.contains(&empty.path().display().to_string())
            && !stderr.contains("/usr/lib/infadaptd/plugins"),
        "{stderr}"
    );
    let out = validate(&example, &[empty.path(), plugins.path()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
