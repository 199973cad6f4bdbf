//! The TorchServe plugin through its Rust API against a real server: scaling 1→3→1
//! replicas, a batch-size change and a variant mix under a steady open-loop load, with no
//! failed or lost request. Needs the venv of `tests/torchserve/install.sh`.

#[path = "../../../tests/torchserve/fixture.rs"]
mod fixture;

/// One real server at a time in this test binary (the fixture takes it).
pub(crate) fn one_real_server_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

use std::time::{Duration, Instant};

use fixture::{
    DRAIN_S, LARGE, Load, RATE_RPS, SMALL, TorchServe, Totals, assert_no_failures, deployed,
    endpoints_in, observe_for, observe_until, plan,
};
use infadapt_plugin_abi::messages::EndpointState;
use infadapt_plugin_abi::{Backend, BackendInstance};
use infadapt_plugin_torchserve::TorchServeBackend;

#[test]
fn torchserve_scales_one_three_one_under_load_without_losing_requests() {
    let server = TorchServe::start(&[SMALL, LARGE]);
    let mut backend =
        TorchServeBackend::create(server.backend_config(&[SMALL, LARGE], DRAIN_S)).expect("create");
    let backend: &mut dyn BackendInstance = &mut backend;
    let mut totals = Totals::default();

    let one = plan(&[("small", 1, 1, 1.0)]);
    let report = backend.apply(&one).expect("apply 1 replica");
    assert!(report.changed, "{report:?}");
    assert!(
        !backend.apply(&one).expect("apply again").changed,
        "apply is idempotent"
    );
    let first = observe_until(
        backend,
        &server,
        None,
        &mut totals,
        "one replica ready",
        Duration::from_secs(30),
        |o| endpoints_in(o, EndpointState::Ready) == 1,
    );
    assert_eq!(deployed(&first), vec![("small".into(), 1, 1)]);
    assert!(first.endpoints[0].url.ends_with("/predictions/small--r0"));

    let started = Instant::now();
    let load = Load::start(RATE_RPS, &first);
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(2));

    // 1 → 3: new replicas start, then serve.
    let report = backend
        .apply(&plan(&[("small", 1, 3, 1.0)]))
        .expect("apply 3");
    assert_eq!(report.actions.len(), 2, "{report:?}");
    let three = observe_until(
        backend,
        &server,
        Some(&load),
        &mut totals,
        "three replicas ready",
        Duration::from_secs(30),
        |o| endpoints_in(o, EndpointState::Ready) == 3,
    );
    assert_eq!(deployed(&three), vec![("small".into(), 1, 3)]);
    assert_eq!(three.stages[0].ready_replicas, 3);
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(3));

    // 3 → 1: two replicas drain (no new requests), then go.
    let report = backend
        .apply(&plan(&[("small", 1, 1, 1.0)]))
        .expect("apply 1");
    assert!(report.changed, "{report:?}");
    let draining = backend.observe().expect("observe");
    load.route(&draining);
    assert_eq!(endpoints_in(&draining, EndpointState::Draining), 2);
    assert_eq!(deployed(&draining), vec![("small".into(), 1, 1)]);
    let scaled_down = Instant::now();
    observe_until(
        backend,
        &server,
        Some(&load),
        &mut totals,
        "drained replicas removed",
        Duration::from_secs(20),
        |o| o.endpoints.len() == 1,
    );
    let drain_took = scaled_down.elapsed();
    assert!(
        drain_took >= Duration::from_secs_f64(DRAIN_S),
        "removed after {drain_took:?}, before the drain time"
    );
    assert_eq!(server.registered(), vec!["small--r0".to_owned()]);
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(1));

    let load_s = started.elapsed().as_secs_f64();
    let report = load.finish();
    assert_no_failures(&report, (RATE_RPS * load_s * 0.8) as u64);
    assert_eq!(
        report.per_url.len(),
        3,
        "all three replicas served: {:?}",
        report.per_url
    );
    assert_eq!(report.unroutable, 0);

    // The metrics saw the same traffic.
    let last = backend.observe().expect("last observe");
    totals.add(&last);
    assert!(
        totals.completed as f64 >= report.ok as f64 * 0.9 && totals.completed <= report.ok,
        "metrics counted {} of {} answered requests",
        totals.completed,
        report.ok
    );
    assert_eq!(totals.dropped, 0);
    assert!(totals.seconds >= load_s as usize, "{totals:?}");
    assert!(totals.max_busy > 0.0, "{totals:?}");
    eprintln!(
        "torchserve 1→3→1: {} requests in {load_s:.1} s, 0 failed; drain took {drain_took:?}",
        report.ok
    );
}

#[test]
fn torchserve_batch_and_variant_changes_are_make_before_break() {
    let server = TorchServe::start(&[SMALL, LARGE]);
    let mut backend =
        TorchServeBackend::create(server.backend_config(&[SMALL, LARGE], DRAIN_S)).expect("create");
    let backend: &mut dyn BackendInstance = &mut backend;
    let mut totals = Totals::default();

    backend
        .apply(&plan(&[("small", 1, 2, 1.0)]))
        .expect("apply batch 1");
    let ready = observe_until(
        backend,
        &server,
        None,
        &mut totals,
        "two batch-1 replicas",
        Duration::from_secs(30),
        |o| endpoints_in(o, EndpointState::Ready) == 2,
    );
    let started = Instant::now();
    let load = Load::start(RATE_RPS, &ready);
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(1));

    // Batch 1 → 4: two new registrations; the old ones serve until both are ready.
    let report = backend
        .apply(&plan(&[("small", 4, 2, 1.0)]))
        .expect("apply batch 4");
    assert_eq!(report.actions.len(), 2, "{report:?}");
    let during = backend.observe().expect("observe");
    load.route(&during);
    for old in ["small--r0", "small--r1"] {
        assert!(
            during
                .endpoints
                .iter()
                .any(|e| e.url.ends_with(old) && e.state == EndpointState::Ready),
            "{old} keeps serving while the new replicas start: {:?}",
            during.endpoints
        );
    }
    let switched = observe_until(
        backend,
        &server,
        Some(&load),
        &mut totals,
        "batch 4 deployed, batch 1 removed",
        Duration::from_secs(40),
        |o| deployed(o) == vec![("small".into(), 4, 2)] && o.endpoints.len() == 2,
    );
    assert!(
        switched
            .endpoints
            .iter()
            .all(|e| e.url.ends_with("small--r2") || e.url.ends_with("small--r3")),
        "{:?}",
        switched.endpoints
    );
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(1));

    // A mix of two variants with shares.
    backend
        .apply(&plan(&[("small", 4, 1, 0.4), ("large", 2, 1, 0.6)]))
        .expect("apply mix");
    observe_until(
        backend,
        &server,
        Some(&load),
        &mut totals,
        "mix deployed",
        Duration::from_secs(40),
        |o| {
            deployed(o) == vec![("large".into(), 2, 1), ("small".into(), 4, 1)]
                && o.endpoints.len() == 2
        },
    );
    observe_for(backend, &server, &load, &mut totals, Duration::from_secs(3));
    let load_s = started.elapsed().as_secs_f64();
    let report = load.finish();
    assert_no_failures(&report, (RATE_RPS * load_s * 0.8) as u64);
    let large = report.per_variant.get("large").copied().unwrap_or(0);
    let small = report.per_variant.get("small").copied().unwrap_or(0);
    assert!(large > 10 && small > 10, "{:?}", report.per_variant);
    assert_eq!(
        server.registered(),
        vec!["large--r0".to_owned(), "small--r2".to_owned()]
    );
    eprintln!(
        "torchserve batch/variant changes: {} requests in {load_s:.1} s, 0 failed ({:?})",
        report.ok, report.per_variant
    );
}
