//! `infadaptd generate-assets DIR`: the man pages and shell completions the packages ship,
//! generated from the real command line; neither offers `generate-assets` itself.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infadapt-assets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn generates_a_man_page_per_command_and_three_completions() {
    let out_dir = scratch("all");
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("generate-assets")
        .arg(&out_dir)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut pages: Vec<String> = std::fs::read_dir(out_dir.join("man"))
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "infadaptd.1",
        "infadaptd-run.1",
        "infadaptd-validate.1",
        "infadaptd-plan.1",
        "infadaptd-profiles-import.1",
        "infadaptd-forecast-train.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("generate-assets") || p.contains("help")),
        "{pages:?}"
    );
    // Every file listed on stdout exists, and every page is listed.
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.lines().count(), pages.len() + 3, "{listed}");
    for line in listed.lines() {
        assert!(Path::new(line).is_file(), "{line}");
    }

    let top = read(&out_dir.join("man/infadaptd.1"));
    assert!(top.contains("\n.TH infadaptd 1 "), "{top}");
    for section in ["FILES", "SIGNALS", "EXIT STATUS", "SEE ALSO"] {
        assert!(
            top.contains(&format!(".SH \"{section}\"")) || top.contains(&format!(".SH {section}")),
            "{section} in {top}"
        );
    }
    assert!(top.contains("/etc/infadaptd/infadaptd.toml"));
    assert!(top.contains("infadaptd\\-validate(1)"), "{top}");
    assert!(
        !top.contains("generate"),
        "the hidden command leaks into {top}"
    );
    let validate = read(&out_dir.join("man/infadaptd-validate.1"));
    assert!(validate.contains("\\-\\-config"), "{validate}");

    let bash = read(&out_dir.join("completions/infadaptd"));
    assert!(bash.contains("complete -F _infadaptd"), "{bash}");
    let zsh = read(&out_dir.join("completions/_infadaptd"));
    assert!(zsh.starts_with("#compdef infadaptd"), "{zsh}");
    let fish = read(&out_dir.join("completions/infadaptd.fish"));
    assert!(fish.contains("complete -c infadaptd"), "{fish}");
    for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
        assert!(
            text.contains("validate") && text.contains("dry-run"),
            "{shell}"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn is_not_in_the_help_but_has_its_own() {
    let help = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate-assets"));
    let own = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["generate-assets", "--help"])
        .output()
        .expect("run");
    assert_eq!(own.status.code(), Some(0));
    let text = String::from_utf8_lossy(&own.stdout);
    assert!(
        text.contains("Usage: infadaptd generate-assets <DIR>"),
        "{text}"
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("generate-assets")
        .output()
        .expect("run");
    assert_eq!(
        missing.status.code(),
        Some(64),
        "a missing DIR is a usage error"
    );
}

#[test]
fn refuses_an_output_directory_it_cannot_create() {
    let blocker = scratch("blocker");
    std::fs::write(&blocker, "a file, not a directory").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("generate-assets")
        .arg(blocker.join("sub"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create") && stderr.contains("sub/man"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&blocker);
}
