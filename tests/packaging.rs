//! The package metadata agrees with itself and with the code, without building packages
//! (packaging/check.sh checks the built packages): every asset in daemon/Cargo.toml exists
//! and lands on a path of packaging/expected-files.txt, the man pages listed there are the
//! ones the binary generates, the plugins listed are the crates packaging/build.sh builds,
//! the monitoring files (dashboard, alert rules) are shipped, and the systemd unit has the
//! directives the packages promise.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::repo_root;

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One line of packaging/expected-files.txt.
#[derive(Debug)]
struct ExpectedFile {
    mode: String,
    path: String,
    only: Option<String>,
    config: bool,
}

fn expected_files() -> Vec<ExpectedFile> {
    let mut files = Vec::new();
    for (number, line) in read("packaging/expected-files.txt").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 2, "line {}: {line}", number + 1);
        let mut file = ExpectedFile {
            mode: fields[0].to_owned(),
            path: fields[1].to_owned(),
            only: None,
            config: false,
        };
        for flag in &fields[2..] {
            match *flag {
                "deb" | "rpm" => file.only = Some((*flag).to_owned()),
                "config" => file.config = true,
                other => panic!("line {}: unknown flag {other}", number + 1),
            }
        }
        assert!(
            file.mode.len() == 10 && file.mode.starts_with('-'),
            "line {}: mode {}",
            number + 1,
            file.mode
        );
        files.push(file);
    }
    files
}

fn expected_paths(format: &str) -> BTreeSet<String> {
    expected_files()
        .into_iter()
        .filter(|f| f.only.as_deref().is_none_or(|only| only == format))
        .map(|f| f.path)
        .collect()
}

fn package_metadata() -> toml::Table {
    let manifest: toml::Table = read("daemon/Cargo.toml")
        .parse()
        .expect("daemon/Cargo.toml");
    manifest["package"]["metadata"]
        .as_table()
        .expect("[package.metadata]")
        .clone()
}

/// An asset source: generated files under target/release must be produced by build.sh;
/// every other source must exist in the repository.
fn check_source(source: &str) {
    if source.starts_with("target/release/") {
        return;
    }
    let path = repo_root().join("daemon").join(source);
    assert!(path.is_file(), "asset source {} is missing", path.display());
}

/// The file names a (possibly globbed) asset source stands for. Globs are only used for
/// the generated man pages.
fn source_names(source: &str) -> Vec<String> {
    if source.ends_with("man/*.1.gz") {
        generated_man_pages()
            .into_iter()
            .map(|page| format!("{page}.gz"))
            .collect()
    } else {
        assert!(!source.contains('*'), "unexpected glob in {source}");
        vec![source.rsplit('/').next().unwrap_or(source).to_owned()]
    }
}

fn generated_man_pages() -> Vec<String> {
    // Tests run in parallel in one process: each call gets its own directory.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("infadapt-packaging-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("generate-assets")
        .arg(&dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(dir.join("man"))
        .expect("man")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let _ = std::fs::remove_dir_all(&dir);
    pages
}

#[test]
fn deb_assets_exist_and_land_on_the_expected_paths() {
    let metadata = package_metadata();
    let deb = metadata["deb"].as_table().expect("[package.metadata.deb]");
    let mut installed = BTreeSet::new();
    for asset in deb["assets"].as_array().expect("assets") {
        let fields: Vec<&str> = asset
            .as_array()
            .expect("asset")
            .iter()
            .map(|v| v.as_str().expect("string"))
            .collect();
        let [source, dest, _mode] = fields[..] else {
            panic!("asset {asset:?}")
        };
        check_source(source);
        for name in source_names(source) {
            let path = if dest.ends_with('/') {
                format!("/{dest}{name}")
            } else {
                format!("/{dest}")
            };
            installed.insert(path);
        }
    }
    // cargo-deb adds the unit (systemd-units) and the copyright file itself.
    installed.insert("/usr/lib/systemd/system/infadaptd.service".to_owned());
    installed.insert("/usr/share/doc/infadaptd/copyright".to_owned());
    assert_eq!(installed, expected_paths("deb"));

    let units = deb["systemd-units"].as_table().expect("systemd-units");
    assert_eq!(units["enable"].as_bool(), Some(true), "enabled on install");
    assert_eq!(
        units["start"].as_bool(),
        Some(false),
        "not started on install"
    );
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    for script in ["postinst", "postrm"] {
        let text = read(&format!("packaging/debian/{script}"));
        assert!(text.contains("#DEBHELPER#"), "{script}");
        assert!(
            repo_root()
                .join("daemon")
                .join(scripts)
                .join(script)
                .is_file()
        );
    }
}

#[test]
fn rpm_assets_exist_and_land_on_the_expected_paths() {
    let metadata = package_metadata();
    let rpm = metadata["generate-rpm"]
        .as_table()
        .expect("[package.metadata.generate-rpm]");
    let files = expected_files();
    let mut installed = BTreeSet::new();
    for asset in rpm["assets"].as_array().expect("assets") {
        let asset = asset.as_table().expect("asset table");
        let source = asset["source"].as_str().expect("source");
        let dest = asset["dest"].as_str().expect("dest");
        check_source(source);
        let is_config = asset.get("config").and_then(|v| v.as_str()) == Some("noreplace");
        for name in source_names(source) {
            let path = if dest.ends_with('/') {
                format!("{dest}{name}")
            } else {
                dest.to_owned()
            };
            let expected = files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{path} is not in packaging/expected-files.txt"));
            assert_eq!(expected.config, is_config, "{path}: config flag");
            installed.insert(path);
        }
    }
    assert_eq!(installed, expected_paths("rpm"));
    for key in [
        "pre_install_script",
        "post_install_script",
        "pre_uninstall_script",
        "post_uninstall_script",
    ] {
        check_source(rpm[key].as_str().expect(key));
    }
}

#[test]
fn shipped_plugins_are_the_crates_build_sh_builds() {
    let build = read("packaging/build.sh");
    let line = build
        .lines()
        .find(|l| l.starts_with("PLUGIN_CRATES=("))
        .expect("PLUGIN_CRATES in build.sh");
    let crates: BTreeSet<String> = line
        .trim_start_matches("PLUGIN_CRATES=(")
        .trim_end_matches(')')
        .split_whitespace()
        .map(|c| format!("lib{}.so", c.replace('-', "_")))
        .collect();
    let shipped: BTreeSet<String> = expected_paths("deb")
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix("/usr/lib/infadaptd/plugins/")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(crates, shipped);
    assert!(
        !shipped.iter().any(|p| p.contains("misbehave")),
        "test plugins are not shipped"
    );
}

#[test]
fn packaged_paths_agree_with_the_daemon_defaults() {
    let config = read("etc/infadaptd.toml");
    assert!(config.contains("plugin_dirs = [\"/usr/lib/infadaptd/plugins\"]"));
    let expected = expected_paths("deb");
    assert!(expected.contains(infadaptd::config::DEFAULT_CONFIG_PATH));
    // The catalog the packaged configuration names, relative to it, is packaged beside it.
    let catalog = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("catalog = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("catalog in etc/infadaptd.toml");
    assert!(
        expected.contains(&format!("/etc/infadaptd/{catalog}")),
        "{catalog} is not packaged next to the configuration"
    );
}

#[test]
fn the_dashboard_and_alert_rules_are_shipped_under_usr_share() {
    for format in ["deb", "rpm"] {
        let expected = expected_paths(format);
        for path in [
            "/usr/share/infadaptd/dashboards/infadaptd.json",
            "/usr/share/infadaptd/alerts/infadaptd.rules.yml",
            "/usr/share/doc/infadaptd/metrics.md",
        ] {
            assert!(expected.contains(path), "{format}: {path} is not shipped");
        }
    }
    // The paths the documentation gives are the packaged ones.
    let docs = read("docs/metrics.md");
    assert!(docs.contains("/usr/share/infadaptd/dashboards/infadaptd.json"));
    assert!(docs.contains("rule_files:\n  - /usr/share/infadaptd/alerts/infadaptd.rules.yml"));
}

#[test]
fn unit_has_the_promised_directives() {
    let unit = read("packaging/systemd/infadaptd.service");
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let values = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    let config = infadaptd::config::DEFAULT_CONFIG_PATH;
    assert_eq!(values("Type"), ["notify"]);
    assert_eq!(values("WatchdogSec").len(), 1);
    assert_eq!(
        values("ExecStartPre"),
        [format!("/usr/bin/infadaptd validate --config {config}")]
    );
    assert_eq!(
        values("ExecStart"),
        [format!("/usr/bin/infadaptd run --config {config}")]
    );
    assert_eq!(
        values("ExecReload"),
        [
            format!("/usr/bin/infadaptd validate --config {config}"),
            "/bin/kill -HUP $MAINPID".to_owned()
        ]
    );
    assert_eq!(values("Restart"), ["on-failure"]);
    // Room for the connection limits and the backend calls (docs/reliability.md).
    assert_eq!(values("LimitNOFILE"), ["65536"]);
    assert_eq!(values("StateDirectory"), ["infadaptd"]);
    assert_eq!(values("User"), ["infadaptd"]);
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ] {
        assert!(values(key).contains(&value), "{key}={value}");
    }
    // The drop-in relaxes, it does not replace: no Exec lines, no user change.
    let drop_in = read("packaging/systemd/process-gpu.conf");
    for key in [
        "ExecStart",
        "User=",
        "CapabilityBoundingSet",
        "NoNewPrivileges",
    ] {
        assert!(
            !drop_in.lines().any(|l| l.starts_with(key)),
            "process-gpu.conf sets {key}"
        );
    }
}
