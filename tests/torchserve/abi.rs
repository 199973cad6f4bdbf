//! The TorchServe plugin loaded as a cdylib through the plugin host (the real C ABI):
//! a re-created instance adopts the replicas already on the server, drains adopted ones
//! on scale-down, and refuses plans the pipeline cannot run.

use std::time::Duration;

use infadapt_plugin_abi::BackendInstance;
use infadapt_plugin_abi::messages::EndpointState;

use super::fixture::{
    DRAIN_S, SMALL, TorchServe, Totals, deployed, endpoints_in, observe_until, plan,
};
use crate::plugins::{TempDir, host_for, install_rust_plugin};

#[test]
fn torchserve_plugin_through_the_c_abi_adopts_replicas_after_recreate() {
    let server = TorchServe::start(&[SMALL]);
    let dir = TempDir::new("torchserve-plugin");
    install_rust_plugin(
        &dir,
        "libinfadapt_plugin_torchserve.so",
        "libinfadapt_plugin_torchserve.so",
    );
    let host = host_for(&dir);
    let library = host
        .library("torchserve")
        .expect("load the TorchServe plugin");
    let config = server.backend_config(&[SMALL], DRAIN_S).to_string();
    let mut totals = Totals::default();

    let two = plan(&[("small", 2, 2, 1.0)]);
    let mut first = library.create(&config).expect("create");
    assert_eq!(first.describe().name, "torchserve");
    assert!(first.describe().capabilities.batching);
    assert!(first.apply(&two).expect("apply").changed);
    observe_until(
        &mut first,
        &server,
        None,
        &mut totals,
        "two replicas ready",
        Duration::from_secs(30),
        |o| endpoints_in(o, EndpointState::Ready) == 2,
    );
    drop(first);

    // A new instance (a restarted daemon) finds both replicas and keeps them.
    let mut second = library.create(&config).expect("re-create");
    let adopted = second.observe().expect("observe");
    assert_eq!(deployed(&adopted), vec![("small".into(), 2, 2)]);
    assert_eq!(endpoints_in(&adopted, EndpointState::Ready), 2);
    let report = second.apply(&two).expect("apply the same plan");
    assert!(
        !report.changed,
        "adopted replicas match the plan: {report:?}"
    );
    assert_eq!(
        server.registered(),
        vec!["small--r0".to_owned(), "small--r1".to_owned()]
    );
    let health = second.health().expect("health");
    assert!(health.healthy, "{health:?}");
    assert!(health.detail.contains("2 ready"), "{health:?}");

    // Adopted replicas may carry traffic: a scale-down drains them first.
    second
        .apply(&plan(&[("small", 2, 1, 1.0)]))
        .expect("apply 1");
    let draining = second.observe().expect("observe");
    assert_eq!(endpoints_in(&draining, EndpointState::Draining), 1);
    observe_until(
        &mut second,
        &server,
        None,
        &mut totals,
        "drained replica removed",
        Duration::from_secs(20),
        |o| o.endpoints.len() == 1,
    );
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);

    // Plans the pipeline cannot run are refused through the ABI with the reason.
    let err = second
        .apply(&plan(&[("huge", 1, 1, 1.0)]))
        .expect_err("unknown variant");
    assert!(err.message.contains("unknown variant `huge`"), "{err:?}");
    assert_eq!(err.code, infadapt_plugin_abi::STATUS_INVALID_INPUT);
    drop(second);

    // An archive the server does not have: the registration's refusal names the call.
    let mut broken_config = server.backend_config(&[SMALL], DRAIN_S);
    broken_config["archives"] = serde_json::json!({ "small": "no-such-archive.mar" });
    let mut broken = library
        .create(&broken_config.to_string())
        .expect("create with a missing archive");
    let err = broken
        .apply(&plan(&[("small", 2, 2, 1.0)]))
        .expect_err("the server refuses the archive");
    assert_eq!(err.code, infadapt_plugin_abi::STATUS_ERROR, "{err:?}");
    assert!(
        err.message.contains("(register replica): answered status"),
        "{err:?}"
    );
    assert!(err.message.contains("no-such-archive.mar"), "{err:?}");
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);
}
