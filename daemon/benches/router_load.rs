//! Router under sustained load while it is reconfigured: the same Poisson arrivals (2,000
//! requests/s by default) are sent once straight to a model endpoint and once through a
//! pipeline router in front of two such endpoints, while the router's plan switches between
//! the two variants every 500 ms and, every 2 s, a new router is attached behind the same
//! listening socket and the old one drained (what a reload that restarts the pipeline
//! does). Prints requests/s, p50/p99 latency of both runs, the router's added p99 and the
//! failed requests. Targets: 0 failed, added p99 ≤ 1 ms.
//!
//! Run with `cargo bench -p infadaptd --bench router_load` (`ROUTER_LOAD_RPS`,
//! `ROUTER_LOAD_SECONDS`, default 2000 and 20; `ROUTER_LOAD_CHURN=0` keeps the plan and the
//! router fixed, for comparison). Load generator, router and endpoints each run
//! on a thread of their own (the router on one, as in the daemon) and share the machine's
//! cores, so the added latency includes their contention. Under `cargo test`
//! it only says so and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::routing::post;
use infadapt_model::{Assignment, Plan, StagePlan};
use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use infadaptd::commands::loadgen::{RequestRecord, poisson_arrivals, run, summarize};
use infadaptd::http_server::ServerLimits;
use infadaptd::router::{Front, Router, RouterSettings};
use serde_json::{Value, json};

const ADDED_P99_TARGET_MS: f64 = 1.0;

/// A model endpoint that answers every inference at once.
async fn endpoint() -> String {
    let app = axum::Router::new().route(
        "/v2/models/{m}/infer",
        post(|Json(_): Json<Value>| async {
            Json(json!({"outputs": [{"name": "OUTPUT0", "datatype": "FP32",
                                     "shape": [1, 2], "data": [1.0, 2.0]}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an endpoint");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/v2/models/m/infer")
}

fn plan_on(variant: &str) -> Plan {
    Plan {
        stages: vec![StagePlan {
            stage: "only".into(),
            assignments: vec![Assignment {
                variant: variant.into(),
                batch: 1,
                cores: 1,
                replicas: 1,
                share: 1.0,
            }],
        }],
    }
}

fn endpoints(a: &str, b: &str) -> Vec<EndpointMessage> {
    [("a", a), ("b", b)]
        .into_iter()
        .map(|(variant, url)| EndpointMessage {
            stage: "only".into(),
            variant: variant.into(),
            url: url.into(),
            protocol: EndpointProtocol::KserveV2,
            state: EndpointState::Ready,
            weight: 1.0,
        })
        .collect()
}

fn settings(listen: SocketAddr) -> RouterSettings {
    RouterSettings {
        listen,
        timeout: Duration::from_secs(5),
        max_body_bytes: 1 << 20,
        ready_wait: Duration::from_secs(5),
        limits: ServerLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        },
    }
}

fn new_router(settings: &RouterSettings) -> Router {
    Router::new(
        "bench",
        1000.0,
        vec!["only".into()],
        settings.timeout,
        settings.ready_wait,
    )
}

fn report(label: &str, records: &[RequestRecord], seconds: f64) -> (f64, usize) {
    let summary = summarize(records, 0.0, seconds, 1000.0);
    println!(
        "{label:<8} sent {:>6}  ok {:>6}  failed {:>3}  {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        summary.sent,
        summary.ok,
        summary.failed,
        summary.ok as f64 / seconds,
        summary.p50_ms,
        summary.p99_ms
    );
    for failure in records.iter().filter(|r| !r.ok()).take(3) {
        println!(
            "         failure: {:?} {}",
            failure.status,
            failure.error.as_deref().unwrap_or("")
        );
    }
    (summary.p99_ms, summary.failed)
}

/// A current-thread runtime, as the daemon runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts the two endpoints on a thread of their own; their URLs.
fn start_endpoints() -> (String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let a = endpoint().await;
            let b = endpoint().await;
            let _ = tx.send((a, b));
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("endpoints started")
}

/// Starts the router (a front with a router attached) on a thread of its own, as the
/// daemon runs it, switching its plan every 500 ms and replacing the router behind the
/// socket every 2 s until `done`; its URL, and the join handle giving the counts.
fn start_router(
    a: String,
    b: String,
    done: Arc<AtomicBool>,
) -> (String, std::thread::JoinHandle<(u64, u64)>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        runtime().block_on(async move {
            let settings = settings("127.0.0.1:0".parse().expect("address"));
            let front = Front::bind(&settings).await.expect("bind the router");
            let mut router = new_router(&settings).with_connections(front.connections());
            router.update(&plan_on("a"), &endpoints(&a, &b));
            front.attach(router.clone(), &settings);
            let _ = tx.send(format!("http://{}/v2/models/bench/infer", front.address()));
            let (mut switches, mut reattached) = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await;
            let churn = std::env::var("ROUTER_LOAD_CHURN").map_or(true, |v| v != "0");
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                if !churn {
                    continue;
                }
                switches += 1;
                let variant = if switches % 2 == 0 { "a" } else { "b" };
                if switches % 4 == 0
                    && std::env::var("ROUTER_LOAD_REPLACE").map_or(true, |v| v != "0")
                {
                    let next = new_router(&settings)
                        .with_connections(front.connections())
                        .with_pool_of(&router);
                    next.update(&plan_on(variant), &endpoints(&a, &b));
                    front.detach(&router);
                    front.attach(next.clone(), &settings);
                    router = next;
                    reattached += 1;
                } else {
                    router.update(&plan_on(variant), &endpoints(&a, &b));
                }
            }
            front.close();
            (switches, reattached)
        })
    });
    (rx.recv().expect("router started"), handle)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("router_load: run with `cargo bench -p infadaptd --bench router_load`");
        return;
    }
    let rps: f64 = std::env::var("ROUTER_LOAD_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000.0);
    let seconds: usize = std::env::var("ROUTER_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (a, b) = start_endpoints();
    let arrivals = poisson_arrivals(&vec![rps; seconds], 7);
    let body = Bytes::from(
        json!({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                           "data": [1.0, 2.0]}]})
        .to_string(),
    );
    let timeout = Duration::from_secs(10);
    println!(
        "router_load: {} arrivals at {rps:.0} req/s over {seconds} s, the same arrivals in both runs",
        arrivals.len()
    );
    let load = runtime();
    let direct = load.block_on(run(&a, body.clone(), &arrivals, timeout));
    let (direct_p99, direct_failed) = report("direct", &direct, seconds as f64);

    let done = Arc::new(AtomicBool::new(false));
    let (routed_url, router_thread) = start_router(a, b, Arc::clone(&done));
    let routed = load.block_on(run(&routed_url, body, &arrivals, timeout));
    done.store(true, Ordering::Relaxed);
    let (switches, reattached) = router_thread.join().unwrap_or((0, 0));
    let (routed_p99, routed_failed) = report("routed", &routed, seconds as f64);
    let added = routed_p99 - direct_p99;
    let failed = direct_failed + routed_failed;
    println!(
        "reconfigured under load: {switches} plan switches, {reattached} routers replaced behind the socket"
    );
    println!(
        "added p99 {added:.2} ms (target ≤ {ADDED_P99_TARGET_MS} ms): {}; failed {failed} (target 0): {}",
        if added <= ADDED_P99_TARGET_MS {
            "met"
        } else {
            "MISSED"
        },
        if failed == 0 { "met" } else { "MISSED" }
    );
}
