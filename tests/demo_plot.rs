//! `infadaptd run --demo --plot FILE.svg`: the demo draws its decisions over time (load,
//! forecast, upper bound, provisioned load, capacity of the plan, fast-path decisions; p99
//! against the SLO) and marks fast-path decisions in the lines it prints.

use std::process::Command;

use crate::support::scratch;

#[test]
fn the_demo_plots_its_decisions_with_a_legend() {
    let dir = scratch("demo-plot");
    let svg = dir.join("demo.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args([
            "run",
            "--demo",
            "--duration",
            "300",
            "--speed",
            "2000",
            "--plot",
        ])
        .arg(&svg)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("t=   10s resnet   tick load"), "{stdout}");
    assert!(stdout.contains("resnet: 30 ticks"), "{stdout}");
    assert!(stdout.contains("fast-path decisions"), "{stdout}");
    // Every fast-path line says so and why.
    for line in stdout.lines().filter(|l| l.contains(" FAST ")) {
        assert!(line.contains("[fast path: "), "{line}");
    }
    assert!(
        stdout.contains(&format!("plot written to {}", svg.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    for label in [
        "observed load",
        "point forecast",
        "upper bound",
        "provisioned load",
        "capacity of the plan",
        "fast-path decision",
        "p99",
        "SLO",
    ] {
        assert!(text.contains(label), "legend `{label}` missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_needs_the_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["run", "--plot", "x.svg"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--demo"));
}
