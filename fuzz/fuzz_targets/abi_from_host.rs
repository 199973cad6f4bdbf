//! Fuzz target `abi_from_host`: arbitrary bytes as what a plugin receives from the daemon,
//! decoded the way the SDK does (`serde_json::from_slice`): a plan (`apply`) or a backend
//! configuration (`create`, `check_config`); the first byte picks which. Contract: no panic;
//! what decodes survives encode → decode unchanged, and the config helper plugins use
//! (`ConfigProblems::unknown_keys`) reports exactly the keys that are not known.
#![no_main]

use infadapt_plugin_abi::ConfigProblems;
use infadapt_plugin_abi::messages::PlanMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Ok(plan) = serde_json::from_slice::<PlanMessage>(bytes) else {
            return;
        };
        let encoded = serde_json::to_vec(&plan).expect("a decoded plan encodes");
        let again: PlanMessage = serde_json::from_slice(&encoded).expect("an encoded plan decodes");
        assert_eq!(
            plan,
            again,
            "changed on the way back: {}",
            String::from_utf8_lossy(&encoded)
        );
    } else {
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return;
        };
        let encoded = serde_json::to_vec(&config).expect("a decoded config encodes");
        let again: serde_json::Value =
            serde_json::from_slice(&encoded).expect("an encoded config decodes");
        assert_eq!(
            config,
            again,
            "changed on the way back: {}",
            String::from_utf8_lossy(&encoded)
        );
        let known = ["url", "models", "drain_s", "timeout_s"];
        let mut problems = ConfigProblems::new();
        problems.unknown_keys("", &config, &known);
        let unknown: Vec<&String> = config
            .as_object()
            .map(|map| {
                map.keys()
                    .filter(|k| !known.contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let reported: Vec<&String> = problems.problems().iter().map(|p| &p.key).collect();
        assert_eq!(
            reported, unknown,
            "unknown keys reported are not the unknown keys"
        );
    }
});
