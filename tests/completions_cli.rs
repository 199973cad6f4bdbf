//! `infadaptd completions SHELL`: every shell clap_complete supports gets a script naming
//! every public command (and not the packaging helper), the same bytes the packages install,
//! and the bash script is valid bash.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{infadaptd, scratch_dir};

/// The shells `completions` takes.
const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

/// The public commands, each of which a completion script must offer.
const COMMANDS: [&str; 8] = [
    "plan",
    "profile",
    "profiles",
    "forecast",
    "simulate",
    "run",
    "validate",
    "completions",
];

fn scratch(name: &str) -> PathBuf {
    scratch_dir("completions", name)
}

fn script(shell: &str) -> String {
    let out = infadaptd(&["completions", shell]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 script")
}

#[test]
fn every_shell_gets_a_script_naming_every_command() {
    for shell in SHELLS {
        let text = script(shell);
        assert!(text.len() > 1000, "{shell}: {text}");
        for command in COMMANDS {
            assert!(
                text.contains(command),
                "{shell}: `{command}` missing:\n{text}"
            );
        }
        // Options of subcommands are completed too.
        assert!(
            text.contains("dry-run") && text.contains("plugin-dir"),
            "{shell}"
        );
        assert!(
            !text.contains("generate-assets"),
            "{shell} offers the packaging helper"
        );
    }
    assert!(script("bash").contains("complete -F _infadaptd"));
    assert!(script("zsh").starts_with("#compdef infadaptd"));
    assert!(script("fish").contains("complete -c infadaptd"));
}

#[test]
fn the_scripts_are_the_ones_the_packages_install() {
    let dir = scratch("assets");
    let out = infadaptd(&["generate-assets", dir.to_str().expect("UTF-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (shell, file) in [
        ("bash", "infadaptd"),
        ("zsh", "_infadaptd"),
        ("fish", "infadaptd.fish"),
    ] {
        let packaged = std::fs::read_to_string(dir.join("completions").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(packaged, script(shell), "{shell}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_bash_script_is_valid_bash() {
    let dir = scratch("bash");
    let path = dir.join("infadaptd.bash");
    std::fs::write(&path, script("bash")).expect("write script");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash is needed to check the bash completion script");
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sourcing it registers the completion function.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p infadaptd",
            path.display()
        ))
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("_infadaptd"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_shell_is_a_usage_error_listing_the_shells() {
    let out = infadaptd(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for shell in SHELLS {
        assert!(stderr.contains(shell), "{shell} not offered in:\n{stderr}");
    }
    assert!(out.stdout.is_empty());
}
