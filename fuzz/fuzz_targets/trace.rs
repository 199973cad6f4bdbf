//! Fuzz target `trace`: arbitrary text as a request-rate trace (`parse_rps_lines`, what
//! `simulate --trace` and `forecast` read). Contract: no panic; every rate is finite and
//! ≥ 0, at most one per line; an error names a line of the text.
#![no_main]

use infadapt_sim::SimError;
use infadapt_sim::workload::parse_rps_lines;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_rps_lines(text) {
        Ok(rates) => {
            assert!(rates.len() <= text.lines().count());
            assert!(
                rates.iter().all(|r| r.is_finite() && *r >= 0.0),
                "{rates:?}"
            );
        }
        Err(SimError::Parse { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
