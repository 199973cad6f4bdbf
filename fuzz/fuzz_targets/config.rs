//! Fuzz target `config`: arbitrary text as a daemon configuration file, read without IO.
//! Contract: no panic; an error names at least one problem, each at a real position
//! (line and column from 1, line within the text) with a message; an accepted file has a
//! pipeline and positive finite periods.
#![no_main]

use std::sync::OnceLock;

use infadapt_model::Catalog;
use infadaptd::problem_file::CatalogError;
use libfuzzer_sys::fuzz_target;

/// The shipped catalogs, which the example configurations name.
fn catalogs() -> &'static [(&'static str, Catalog)] {
    static CATALOGS: OnceLock<Vec<(&'static str, Catalog)>> = OnceLock::new();
    CATALOGS.get_or_init(|| {
        [
            (
                "resnet-synthetic.toml",
                include_str!("../../etc/catalogs/resnet-synthetic.toml"),
            ),
            (
                "video-synthetic.toml",
                include_str!("../../etc/catalogs/video-synthetic.toml"),
            ),
        ]
        .into_iter()
        .filter_map(|(name, text)| Catalog::from_toml_str(text).ok().map(|c| (name, c)))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lookup = |reference: &str| {
        catalogs()
            .iter()
            .find(|(name, _)| reference.ends_with(name))
            .map(|(_, c)| c.clone())
            .ok_or_else(|| CatalogError::NotEmbedded(reference.to_owned()))
    };
    match infadaptd::config::parse_config_text("fuzz.toml", text, &mut lookup) {
        Ok(config) => {
            assert!(!config.pipelines.is_empty(), "accepted without a pipeline");
            assert!(config.daemon.period_s.is_finite() && config.daemon.period_s > 0.0);
            for p in &config.pipelines {
                assert!(p.control.interval_s.is_finite() && p.control.interval_s > 0.0);
                assert!(p.check_s.is_finite() && p.check_s > 0.0);
            }
        }
        Err(diagnostics) => {
            assert!(!diagnostics.items.is_empty(), "an error without a problem");
            let lines = text.lines().count().max(1);
            for d in &diagnostics.items {
                assert!(
                    d.line >= 1 && d.column >= 1,
                    "position {}:{}",
                    d.line,
                    d.column
                );
                assert!(d.line <= lines + 1, "line {} of {lines}", d.line);
                assert!(!d.message.is_empty(), "a problem without a message");
            }
            assert!(diagnostics.to_string().starts_with("fuzz.toml:"));
        }
    }
});
