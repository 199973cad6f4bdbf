//! Fuzz target `profile_import`: arbitrary text as the tables `profiles import` reads: a
//! measured profile table (CSV, format detected from its header), a variant metadata table
//! (CSV) or an accuracy tree (YAML); the first byte picks which. Contract: no panic; errors
//! name at least one problem; an imported catalog is valid and its rendered file reads back
//! as the same catalog.
#![no_main]

use infadapt_model::Catalog;
use infadaptd::profile_import::{
    ImportOptions, InputText, detect_format, import, parse_accuracies, parse_metadata,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let input = InputText::new("fuzz.csv", text);
    match which % 3 {
        0 => {
            let Ok(format) = detect_format(input) else {
                return;
            };
            match import(format, &[input], &ImportOptions::new(750.0)) {
                Ok(imported) => {
                    for variant in &imported.catalog.variants {
                        assert!(variant.to_variant().is_ok(), "imported an invalid variant");
                    }
                    let rendered = imported.render();
                    let again = Catalog::from_toml_str(&rendered).unwrap_or_else(|e| {
                        panic!("rendered catalog does not read back: {e}\n{rendered}")
                    });
                    assert_eq!(
                        imported.catalog, again,
                        "changed on the way back:\n{rendered}"
                    );
                }
                Err(e) => assert!(!e.problems.is_empty(), "an error without a problem"),
            }
        }
        1 => {
            if let Err(e) = parse_metadata(input) {
                assert!(!e.problems.is_empty(), "an error without a problem");
            }
        }
        _ => {
            if let Err(e) = parse_accuracies(InputText::new("fuzz.yaml", text)) {
                assert!(!e.problems.is_empty(), "an error without a problem");
            }
        }
    }
});
