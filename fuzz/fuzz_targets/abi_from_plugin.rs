//! Fuzz target `abi_from_plugin`: arbitrary bytes as a plugin's JSON answer, decoded the way
//! the daemon decodes it (`plugin_host::decode`) into each answer type (observation, apply
//! report, health, description, config-check answer; the first byte picks which).
//! Contract: no panic; what decodes carries schema 1 and survives encode → decode unchanged.
#![no_main]

use infadapt_plugin_abi::ConfigCheck;
use infadapt_plugin_abi::messages::{
    ApplyReport, Description, HealthReport, PluginObservation, SCHEMA_VERSION,
};
use infadaptd::plugin_host::decode;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(bytes: &[u8], schema: impl Fn(&T) -> u32)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(first) = decode::<T>(bytes) else {
        return;
    };
    assert_eq!(schema(&first), SCHEMA_VERSION);
    let encoded = serde_json::to_vec(&first).expect("a decoded answer encodes");
    let second = decode::<T>(&encoded).expect("an encoded answer decodes");
    assert_eq!(
        first,
        second,
        "changed on the way back: {}",
        String::from_utf8_lossy(&encoded)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => round_trip::<PluginObservation>(bytes, |m| m.schema),
        1 => round_trip::<ApplyReport>(bytes, |m| m.schema),
        2 => round_trip::<HealthReport>(bytes, |m| m.schema),
        3 => round_trip::<Description>(bytes, |m| m.schema),
        _ => round_trip::<ConfigCheck>(bytes, |m| m.schema),
    }
});
