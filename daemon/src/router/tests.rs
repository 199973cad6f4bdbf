//! Router tests against fake KServe endpoints served on loopback: share-weighted routing,
//! fallback while the planned variant is not ready, the retry after a variant vanished,
//! stage chaining, and the errors a client sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::routing::post;
use infadapt_model::{Assignment, StagePlan};
use serde_json::Value;

use super::*;
use crate::api::tests::{LIMITS, exchange, header, send_body};
use crate::http_server::ServerLimits;

/// What a fake endpoint does with a request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers `OUTPUT0` = the first input's data + `add`.
    AddOne(f64),
    /// Answers like Triton for an unloaded model.
    Gone,
    /// Never answers in time.
    Slow,
}

async fn fake(behaviour: Behaviour) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/v2/models/{m}/infer",
        post(move |Json(body): Json<Value>| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                match behaviour {
                    Behaviour::AddOne(add) => {
                        let input = &body["inputs"][0];
                        assert_eq!(input["name"], "INPUT0", "inputs are renamed by position");
                        let data: Vec<f64> = input["data"]
                            .as_array()
                            .map(|d| {
                                d.iter()
                                    .filter_map(Value::as_f64)
                                    .map(|x| x + add)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (
                            StatusCode::OK,
                            Json(json!({"outputs": [{"name": "OUTPUT0", "datatype": "FP32",
                                         "shape": [1, data.len()], "data": data}]})),
                        )
                    }
                    Behaviour::Gone => (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": "Request for unknown model: 'v' is not found"})),
                    ),
                    Behaviour::Slow => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        (StatusCode::OK, Json(json!({})))
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/v2/models/m/infer"), hits)
}

fn endpoint(stage: &str, variant: &str, url: &str, state: EndpointState) -> EndpointMessage {
    EndpointMessage {
        stage: stage.into(),
        variant: variant.into(),
        url: url.into(),
        protocol: EndpointProtocol::KserveV2,
        state,
        weight: 1.0,
    }
}

fn plan(stages: &[(&str, &[(&str, f64)])]) -> Plan {
    Plan {
        stages: stages
            .iter()
            .map(|(stage, shares)| StagePlan {
                stage: (*stage).into(),
                assignments: shares
                    .iter()
                    .map(|(variant, share)| Assignment {
                        variant: (*variant).into(),
                        batch: 1,
                        cores: 1,
                        replicas: 1,
                        share: *share,
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn serve(router: &Router) -> (u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(router.clone().serve(listener, 1 << 20, LIMITS, stopped));
    (port, stop)
}

async fn call(port: u16, model: &str, x: f64) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let body = json!({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                                  "data": [x, x]}]});
    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/v2/models/{model}/infer"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn shares_split_the_load_and_unplanned_ready_variants_cover_a_loading_one() {
    let (a, hits_a) = fake(Behaviour::AddOne(1.0)).await;
    let (b, hits_b) = fake(Behaviour::AddOne(1.0)).await;
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    router.update(
        &plan(&[("s", &[("a", 0.75), ("b", 0.25)])]),
        &[
            endpoint("s", "a", &a, EndpointState::Ready),
            endpoint("s", "b", &b, EndpointState::Ready),
        ],
    );
    let (port, _stop) = serve(&router).await;
    for i in 0..400 {
        let (status, answer) = call(port, "p", f64::from(i)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputs"][0]["data"][0], f64::from(i) + 1.0);
    }
    let (a_hits, b_hits) = (
        hits_a.load(Ordering::Relaxed),
        hits_b.load(Ordering::Relaxed),
    );
    assert_eq!(a_hits + b_hits, 400);
    assert!(
        (250..350).contains(&a_hits),
        "a got {a_hits}, b got {b_hits}"
    );

    // The plan moved everything to `c`, which is still starting: `a` and `b` keep serving;
    // draining endpoints get nothing.
    router.update(
        &plan(&[("s", &[("c", 1.0)])]),
        &[
            endpoint("s", "a", &a, EndpointState::Ready),
            endpoint("s", "b", &b, EndpointState::Draining),
            endpoint("s", "c", "http://127.0.0.1:1/x", EndpointState::Starting),
        ],
    );
    for _ in 0..20 {
        assert_eq!(call(port, "p", 0.0).await.0, 200);
    }
    assert_eq!(hits_a.load(Ordering::Relaxed), a_hits + 20);
    assert_eq!(hits_b.load(Ordering::Relaxed), b_hits);

    let window = router.take_window();
    assert_eq!(window.completed, 420);
    assert_eq!(window.failed, 0);
    assert!(window.latency_p99_ms.is_some());
    let counters = router.counters();
    assert_eq!(
        (counters.requests, counters.succeeded, counters.failed),
        (420, 420, 0)
    );
}

#[tokio::test]
async fn a_request_to_a_vanished_variant_is_retried_once_elsewhere() {
    let (gone, hits_gone) = fake(Behaviour::Gone).await;
    let (fine, hits_fine) = fake(Behaviour::AddOne(1.0)).await;
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    router.update(
        &plan(&[("s", &[("old", 1.0)])]),
        &[
            endpoint("s", "old", &gone, EndpointState::Ready),
            endpoint("s", "new", &fine, EndpointState::Ready),
        ],
    );
    let (port, _stop) = serve(&router).await;
    for _ in 0..10 {
        assert_eq!(call(port, "p", 1.0).await.0, 200);
    }
    assert_eq!(hits_gone.load(Ordering::Relaxed), 10);
    assert_eq!(hits_fine.load(Ordering::Relaxed), 10);
    assert_eq!(router.counters().retries, 10);
    assert_eq!(router.counters().failed, 0);

    // With nowhere else to go the client gets the endpoint's error, naming it.
    router.update(
        &plan(&[("s", &[("old", 1.0)])]),
        &[endpoint("s", "old", &gone, EndpointState::Ready)],
    );
    let (status, answer) = call(port, "p", 1.0).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("(old)"),
        "{answer}"
    );
    assert_eq!(router.take_window().failed, 1);
}

#[tokio::test]
async fn a_request_waits_for_a_ready_endpoint_up_to_the_ready_wait() {
    let (fine, hits) = fake(Behaviour::AddOne(1.0)).await;
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::from_millis(1500),
    );
    let (port, _stop) = serve(&router).await;
    // Nothing ready yet: the request is held, and served once an endpoint becomes ready.
    let waiting = tokio::spawn(async move { call(port, "p", 1.0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the request was not held");
    // The held request is in flight for the fast path's look between ticks.
    assert_eq!(router.peek().in_flight, 1);
    router.update(
        &plan(&[("s", &[("v", 1.0)])]),
        &[endpoint("s", "v", &fine, EndpointState::Ready)],
    );
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    assert_eq!(router.peek().in_flight, 0);

    // Nothing becomes ready in time: 503 after the wait, not before.
    router.update(&plan(&[("s", &[("v", 1.0)])]), &[]);
    let started = std::time::Instant::now();
    let (status, answer) = call(port, "p", 1.0).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no ready endpoint")
    );
}

#[tokio::test]
async fn stages_chain_outputs_into_inputs_by_position() {
    let (first, _) = fake(Behaviour::AddOne(1.0)).await;
    let (second, hits) = fake(Behaviour::AddOne(10.0)).await;
    let router = Router::new(
        "video",
        1000.0,
        vec!["detect".into(), "classify".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    router.update(
        &plan(&[("detect", &[("d", 1.0)]), ("classify", &[("c", 1.0)])]),
        &[
            endpoint("detect", "d", &first, EndpointState::Ready),
            endpoint("classify", "c", &second, EndpointState::Ready),
        ],
    );
    let (port, _stop) = serve(&router).await;
    let (status, answer) = call(port, "video", 5.0).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([16.0, 16.0]));
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn clients_get_clear_errors_for_unknown_models_no_endpoints_and_timeouts() {
    let (slow, _) = fake(Behaviour::Slow).await;
    let router = Router::new(
        "p",
        100.0,
        vec!["s".into()],
        Duration::from_millis(300),
        Duration::ZERO,
    );
    let (port, _stop) = serve(&router).await;
    let (status, answer) = call(port, "other", 1.0).await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("`other`"));
    let (status, answer) = call(port, "p", 1.0).await;
    assert_eq!(status, 503);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no ready endpoint"),
        "{answer}"
    );
    assert!(!router.ready());

    router.update(
        &plan(&[("s", &[("v", 1.0)])]),
        &[endpoint("s", "v", &slow, EndpointState::Ready)],
    );
    assert!(router.ready());
    let started = Instant::now();
    let (status, answer) = call(port, "p", 1.0).await;
    assert_eq!(status, 504, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let window = router.take_window();
    assert_eq!((window.failed, window.slo_misses), (2, 2));
}

#[tokio::test]
async fn idle_connections_over_the_limit_are_refused_and_requests_still_go_through() {
    let (a, hits) = fake(Behaviour::AddOne(1.0)).await;
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    router.update(
        &plan(&[("s", &[("a", 1.0)])]),
        &[endpoint("s", "a", &a, EndpointState::Ready)],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = watch::channel(false);
    let limits = ServerLimits {
        max_connections: 50,
        // Long enough that no slot frees while the 1000 sockets connect on a loaded machine
        // (a freed slot would let a 51st in and leave fewer than 950 refused).
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
    };
    tokio::spawn(router.clone().serve(listener, 1 << 20, limits, stopped));
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while router.counters().connections.refused < 950 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = router.counters().connections;
    assert_eq!(counts.refused, 950, "{counts:?}");
    assert!(counts.open <= 50, "{counts:?}");
    // Once the header timeout has closed the idle ones, a request goes through while the
    // client still holds its 1000 sockets.
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.counters().connections.open > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = call(port, "p", 1.0).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"][0], 2.0);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    assert_eq!(idle.len(), 1000);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_path_that_is_not_utf8_400_both_json() {
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    let (port, _stop) = serve(&router).await;
    let over = (1 << 20) + 1;
    let head = format!(
        "POST /v2/models/p/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: {over}\r\n\r\n"
    );
    let (code, body) = send_body(port, head, over).await;
    assert_eq!(code, 413, "{body}");
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|m| m.contains("max_body_bytes")),
        "{error}"
    );
    let (code, head, body) = exchange(
        port,
        "POST /v2/models/%FF%FE/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(header(&head, "content-type"), "application/json");
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert!(error["error"].as_str().is_some_and(|m| m.contains("UTF-8")));
    // Refused before they reached the pipeline: nothing counted as a request.
    assert_eq!(router.counters().requests, 0);
}

#[tokio::test]
async fn a_body_that_stalls_fails_after_the_idle_timeout() {
    let router = Router::new(
        "p",
        1000.0,
        vec!["s".into()],
        Duration::from_secs(2),
        Duration::ZERO,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = watch::channel(false);
    let limits = ServerLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(400),
    };
    tokio::spawn(router.clone().serve(listener, 1 << 20, limits, stopped));
    let started = Instant::now();
    // 10 of the 100 bytes announced, then nothing.
    let (code, head, body) = exchange(
        port,
        "POST /v2/models/p/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n\
         {\"inputs\":",
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(code, 400, "{body}");
    assert_eq!(header(&head, "content-type"), "application/json");
    assert!(body.contains("stalled"), "{body}");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(router.counters().requests, 0);
}
