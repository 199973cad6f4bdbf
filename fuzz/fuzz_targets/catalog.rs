//! Fuzz target `catalog`: arbitrary text as a profile catalog (`Catalog::from_toml_str`).
//! Contract: no panic; an accepted catalog has valid variants and reads back equal from the
//! text `to_toml_string` writes.
#![no_main]

use infadapt_model::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(catalog) = Catalog::from_toml_str(text) else {
        return;
    };
    for variant in &catalog.variants {
        assert!(variant.to_variant().is_ok(), "accepted an invalid variant");
    }
    let written = catalog.to_toml_string();
    let again = Catalog::from_toml_str(&written)
        .unwrap_or_else(|e| panic!("written catalog does not read back: {e}\n{written}"));
    assert_eq!(catalog, again, "changed on the way back:\n{written}");
});
