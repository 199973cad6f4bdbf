//! API tests: the checks of `limit` and `pipeline` on their own, then the routes served on
//! loopback, where a request that cannot be answered as asked gets 400 or 404 with a JSON
//! error, and a good one gets what it asked for; the write endpoints answer 403 without a
//! token file and 401 without the token.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use std::time::Duration;

use super::*;
use crate::api::access::WriteAccess;
use crate::http_server::{ConnectionStats, ServerLimits};
use crate::service::status::DecisionRecord;

/// The record of `decision` of `pipeline` at `tick` (at unix time 1000 + `tick`), with
/// 10 rps observed and the `max` forecaster.
fn decision_record(
    pipeline: &str,
    tick: u64,
    applied: bool,
    decision: infadapt_control::Decision,
) -> DecisionRecord {
    DecisionRecord {
        pipeline: pipeline.to_owned(),
        tick,
        unix_s: 1_000 + tick,
        applied,
        not_applied: None,
        apply_actions: Vec::new(),
        observed_rps: 10.0,
        latency_p99_ms: None,
        decide_ms: 1.0,
        forecaster: "max".to_owned(),
        fast_path: false,
        decision,
    }
}

/// A registry with pipelines `a` (decisions at ticks 1..=5) and `b` (ticks 1..=2).
fn registry() -> Registry {
    let registry = Registry::new(100);
    for (name, ticks) in [("a", 5), ("b", 2)] {
        registry.update(name, |s| s.state = "running".to_owned());
        for tick in 1..=ticks {
            registry.record(decision_record(name, tick, false, Default::default()));
        }
    }
    registry
}

fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn limit_is_an_integer_from_one_to_the_maximum() {
    assert_eq!(limit(None), Ok(DEFAULT_LIMIT));
    assert_eq!(limit(Some("1")), Ok(1));
    assert_eq!(limit(Some("10000")), Ok(MAX_LIMIT));
    for bad in [
        "0",
        "-1",
        "10001",
        "99999999999999999999999",
        "abc",
        "",
        "1.5",
        " 3",
    ] {
        let error = limit(Some(bad)).expect_err(bad);
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error.body["parameter"], "limit", "{bad}");
        assert_eq!(error.body["accepted"], json!({"min": 1, "max": MAX_LIMIT}));
        let message = error.body["error"].as_str().expect("message");
        assert!(
            message.contains("`limit`")
                && message.contains("from 1 to 10000")
                && message.contains(&format!("`{bad}`")),
            "{message}"
        );
    }
}

#[test]
fn an_unknown_pipeline_is_not_found_and_the_known_ones_are_listed() {
    let registry = registry();
    for body in [decisions_body, status_body] {
        let error = body(&registry, &query(&[("pipeline", "c")])).expect_err("unknown");
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(error.body["pipeline"], "c");
        assert_eq!(error.body["known"], json!(["a", "b"]));
        assert_eq!(error.body["error"], "unknown pipeline `c`; known: `a`, `b`");
    }
    let empty = Registry::new(10);
    let error = decisions_body(&empty, &query(&[("pipeline", "a")])).expect_err("none");
    assert_eq!(
        error.body["error"],
        "unknown pipeline `a`; none are running"
    );
    assert_eq!(error.body["known"], json!([]));
    // Without `pipeline`, an empty service answers an empty list.
    let answer = decisions_body(&empty, &query(&[])).expect("no filter");
    assert_eq!(answer["decisions"], json!([]));
}

#[test]
fn decisions_are_the_newest_of_the_pipeline_asked_for() {
    let registry = registry();
    let answer =
        decisions_body(&registry, &query(&[("pipeline", "a"), ("limit", "2")])).expect("answer");
    let ticks: Vec<(String, u64)> = answer["decisions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["pipeline"].as_str().expect("name").to_owned(),
                d["tick"].as_u64().expect("tick"),
            )
        })
        .collect();
    assert_eq!(ticks, [("a".to_owned(), 4), ("a".to_owned(), 5)]);
    let all = decisions_body(&registry, &query(&[])).expect("all");
    assert_eq!(all["decisions"].as_array().map(Vec::len), Some(7));
    let status = status_body(&registry, &query(&[("pipeline", "b")])).expect("status");
    assert_eq!(status["pipelines"].as_array().map(Vec::len), Some(1));
    assert_eq!(status["pipelines"][0]["name"], "b");
}

#[test]
fn a_cluster_placement_shows_in_the_status_and_the_decisions() {
    let registry = registry();
    let placement = vec![infadapt_model::Placement {
        stage: "s".to_owned(),
        variant: "v".to_owned(),
        node: "node-1".to_owned(),
        replicas: 2,
    }];
    registry.update("b", |s| s.placement = placement.clone());
    let decision = infadapt_control::Decision {
        placement,
        ..Default::default()
    };
    registry.record(decision_record("b", 3, true, decision));
    let expected =
        serde_json::json!([{"stage": "s", "variant": "v", "node": "node-1", "replicas": 2}]);
    let status = status_body(&registry, &query(&[])).expect("status");
    let pipelines = status["pipelines"].as_array().expect("list");
    let of = |name: &str| {
        pipelines
            .iter()
            .find(|p| p["name"] == name)
            .expect("pipeline")
    };
    assert_eq!(of("b")["placement"], expected);
    assert!(
        of("a").get("placement").is_none(),
        "one host: no placement written"
    );
    let decisions =
        decisions_body(&registry, &query(&[("pipeline", "b"), ("limit", "1")])).expect("decisions");
    assert_eq!(decisions["decisions"][0]["decision"]["placement"], expected);
}

/// Serves the API over `registry` on a loopback port.
async fn serve(registry: Registry) -> u16 {
    serve_with(registry, WriteAccess::disabled()).await
}

/// Limits of the servers in these tests: timeouts no exchange comes near.
pub(crate) const LIMITS: ServerLimits = ServerLimits {
    max_connections: 64,
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(10),
};

/// Serves the API over `registry` with the write endpoints guarded by `access`.
async fn serve_with(registry: Registry, access: WriteAccess) -> u16 {
    serve_limited(
        registry,
        access,
        LIMITS,
        Arc::new(ConnectionStats::default()),
    )
    .await
}

/// Serves the API within `limits`, counting its connections in `stats`.
async fn serve_limited(
    registry: Registry,
    access: WriteAccess,
    limits: ServerLimits,
    stats: Arc<ConnectionStats>,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let app = router(registry, access, Arc::clone(&stats));
    tokio::spawn(crate::http_server::serve(
        listener,
        app,
        limits,
        stats,
        "API".to_owned(),
        std::future::pending(),
    ));
    port
}

/// GET `path`: the status, the content type and the body.
async fn get(port: u16, path: &str) -> (u16, String, String) {
    let (code, head, body) = exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (code, header(&head, "content-type"), body)
}

/// Sends `request` on a new connection and reads the whole answer: the status, the head and
/// the body.
pub(crate) async fn exchange(port: u16, request: impl Into<Vec<u8>>) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(&request.into()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, head.to_owned(), body.to_owned())
}

/// The value of the header `name` (lower case) in `head`, empty when absent.
pub(crate) fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// GET `path` expecting `code` and a JSON body.
async fn get_json(port: u16, path: &str, code: u16) -> Value {
    let (got, content_type, body) = get(port, path).await;
    assert_eq!(got, code, "{path}: {body}");
    assert_eq!(content_type, "application/json", "{path}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[tokio::test]
async fn routes_refuse_what_they_cannot_answer_with_a_json_error() {
    let port = serve(registry()).await;

    let error = get_json(port, "/v1/decisions?pipeline=nope", 404).await;
    assert_eq!(error["error"], "unknown pipeline `nope`; known: `a`, `b`");
    assert_eq!(error["known"], json!(["a", "b"]));
    let error = get_json(port, "/v1/status?pipeline=nope", 404).await;
    assert_eq!(error["pipeline"], "nope");

    for bad in ["0", "-3", "ten", "", "10001", "1e3"] {
        let path = format!("/v1/decisions?limit={bad}");
        let error = get_json(port, &path, 400).await;
        assert_eq!(error["parameter"], "limit", "{path}");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|m| m.contains("from 1 to 10000")),
            "{path}: {error}"
        );
    }
    // A bad limit is refused whether or not the pipeline exists.
    get_json(port, "/v1/decisions?pipeline=a&limit=0", 400).await;

    let error = get_json(port, "/v1/decisions?pipline=a", 400).await;
    assert_eq!(error["parameter"], "pipline");
    assert_eq!(error["known"], json!(["pipeline", "limit"]));
    assert_eq!(
        error["error"],
        "unknown query parameter `pipline`: this route takes `pipeline`, `limit`"
    );
    let error = get_json(port, "/v1/status?limit=3", 400).await;
    assert_eq!(error["parameter"], "limit");
    let error = get_json(port, "/v1/decisions?limit=1&limit=2", 400).await;
    assert_eq!(
        error["error"],
        "query parameter `limit` given more than once"
    );

    let error = get_json(port, "/v1/decision", 404).await;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|m| m.contains("no route `/v1/decision`")),
        "{error}"
    );
    assert_eq!(error["routes"][2], "/v1/decisions");
}

#[tokio::test]
async fn routes_answer_good_requests() {
    let port = serve(registry()).await;
    let answer = get_json(port, "/v1/decisions?pipeline=b&limit=1", 200).await;
    let decisions = answer["decisions"].as_array().expect("list");
    assert_eq!(decisions.len(), 1);
    assert_eq!(
        (&decisions[0]["pipeline"], &decisions[0]["tick"]),
        (&json!("b"), &json!(2))
    );
    let answer = get_json(port, "/v1/decisions", 200).await;
    assert_eq!(answer["decisions"].as_array().map(Vec::len), Some(7));
    let answer = get_json(port, "/v1/status", 200).await;
    assert_eq!(answer["pipelines"].as_array().map(Vec::len), Some(2));
    let answer = get_json(port, "/v1/status?pipeline=a", 200).await;
    assert_eq!(answer["pipelines"][0]["name"], "a");
    assert_eq!(answer["pipelines"].as_array().map(Vec::len), Some(1));
    // The probes and the scrape keep their plain-text answers.
    let (code, _, body) = get(port, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, content_type, body) = get(port, "/metrics?anything=1").await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(body.contains("infadapt_ticks_total"), "{body}");
}

/// POST `path` with `token` as the bearer token, if any: the status, the
/// `WWW-Authenticate` header and the JSON body.
async fn post(port: u16, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let (code, head, body) = exchange(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Content-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, header(&head, "www-authenticate"), json)
}

const TOKEN: &str = "0123456789abcdef-test-token";

#[tokio::test]
async fn write_endpoints_are_off_without_a_token_file() {
    let registry = registry();
    let port = serve(registry.clone()).await;
    for token in [None, Some(TOKEN)] {
        let (code, _, error) = post(port, "/v1/pipelines/a/pause", token).await;
        assert_eq!(code, 403, "{error}");
        let message = error["error"].as_str().expect("message");
        assert!(
            message.contains("token_file") && message.contains("[daemon.http]"),
            "{message}"
        );
        assert_eq!(error["enable"], "[daemon.http] token_file = PATH");
    }
    // Even for a pipeline that does not exist: nothing is said about the pipelines.
    let (code, _, _) = post(port, "/v1/pipelines/nope/resume", None).await;
    assert_eq!(code, 403);
    assert!(!registry.is_paused("a"));
}

#[tokio::test]
async fn write_endpoints_need_the_configured_bearer_token() {
    let registry = registry();
    let port = serve_with(
        registry.clone(),
        WriteAccess::with_token(TOKEN.to_owned(), None),
    )
    .await;
    let (code, challenge, error) = post(port, "/v1/pipelines/a/pause", None).await;
    assert_eq!((code, challenge.as_str()), (401, "bearer"), "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|m| m.contains("Authorization: Bearer")),
        "{error}"
    );
    let (code, challenge, error) = post(port, "/v1/pipelines/a/pause", Some("not-it")).await;
    assert_eq!((code, challenge.as_str()), (401, "bearer"), "{error}");
    assert_eq!(
        error["error"],
        "the bearer token is not the one of [daemon.http] token_file"
    );
    // Refused before the pipeline is looked up.
    let (code, _, _) = post(port, "/v1/pipelines/nope/pause", Some("not-it")).await;
    assert_eq!(code, 401);
    assert!(!registry.is_paused("a"));

    let (code, _, error) = post(port, "/v1/pipelines/nope/pause", Some(TOKEN)).await;
    assert_eq!(code, 404, "{error}");
    assert_eq!(error["error"], "unknown pipeline `nope`; known: `a`, `b`");
    let (code, _, error) = post(port, "/v1/pipelines/a/pause?now=1", Some(TOKEN)).await;
    assert_eq!(code, 400, "{error}");
    assert_eq!(error["parameter"], "now");
    let error = get_json(port, "/v1/pipelines/a/pause", 405).await;
    assert_eq!(error["allow"], json!(["POST"]));
    assert!(!registry.is_paused("a"));
}

#[tokio::test]
async fn pause_and_resume_show_in_status_and_metrics_and_are_kept() {
    let registry = registry();
    let dir = std::env::temp_dir().join(format!("infadaptd-pause-api-{}", std::process::id()));
    let port = serve_with(
        registry.clone(),
        WriteAccess::with_token(TOKEN.to_owned(), Some(dir.clone())),
    )
    .await;
    let (code, _, answer) = post(port, "/v1/pipelines/a/pause", Some(TOKEN)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "pipeline": "a", "paused": true, "changed": true })
    );
    assert!(registry.is_paused("a") && !registry.is_paused("b"));
    let (_, _, again) = post(port, "/v1/pipelines/a/pause", Some(TOKEN)).await;
    assert_eq!(again["changed"], false);
    let status = get_json(port, "/v1/status", 200).await;
    let paused: Vec<(&str, bool)> = status["pipelines"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or(""), p["paused"] == true))
        .collect();
    assert_eq!(paused, [("a", true), ("b", false)]);
    let (_, _, metrics) = get(port, "/metrics").await;
    assert!(
        metrics.contains("infadapt_paused{pipeline=\"a\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("infadapt_paused{pipeline=\"b\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        state::load_paused(&dir).expect("kept"),
        ["a".to_owned()].into()
    );

    let (code, _, answer) = post(port, "/v1/pipelines/a/resume", Some(TOKEN)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["paused"], false);
    assert!(!registry.is_paused("a"));
    assert!(state::load_paused(&dir).expect("kept").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends `head` and then `body_len` bytes of `x` on a new connection while reading the
/// answer, as a client that does not wait for the server: the status and body of the
/// answer, read until the server closes (a reset after the answer is the end too).
pub(crate) async fn send_body(port: u16, head: String, body_len: usize) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            // The server stops reading once the body is over its limit.
            if writer.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    sending.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// POST to a write endpoint with the token and `body`: the status and the JSON answer.
async fn post_body(port: u16, path: &str, body: &[u8]) -> (u16, Value) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (code, head, text) = exchange(port, request).await;
    assert_eq!(header(&head, "content-type"), "application/json", "{text}");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (code, json)
}

#[tokio::test]
async fn bodies_and_paths_the_api_cannot_take_get_a_4xx_json_error() {
    let registry = registry();
    let port = serve_with(
        registry.clone(),
        WriteAccess::with_token(TOKEN.to_owned(), None),
    )
    .await;
    for (body, needle) in [
        (&b"{\"now\":"[..], "not JSON"),
        (&b"\xff\xfe{}"[..], "not JSON"),
        (&b"[1, 2]"[..], "empty or the JSON object"),
        (&b"{\"now\": true}"[..], "takes no fields, got `now`"),
    ] {
        let (code, error) = post_body(port, "/v1/pipelines/a/pause", body).await;
        assert_eq!(code, 400, "{error}");
        assert!(
            error["error"].as_str().is_some_and(|m| m.contains(needle)),
            "{needle}: {error}"
        );
    }
    assert!(
        !registry.is_paused("a"),
        "a refused request changed nothing"
    );
    // Percent-encoded bytes that are not UTF-8 in the pipeline name.
    let (code, error) = post_body(port, "/v1/pipelines/%FF%FE/pause", b"").await;
    assert_eq!(code, 400, "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|m| m.contains("malformed pipeline name")),
        "{error}"
    );
    // `{}` and an empty body are fine.
    let (code, answer) = post_body(port, "/v1/pipelines/a/pause", b"{}").await;
    assert_eq!((code, &answer["paused"]), (200, &json!(true)), "{answer}");
    let (code, _) = post_body(port, "/v1/pipelines/a/resume", b"").await;
    assert_eq!(code, 200);

    // A body over the limit: 413, whether its length is announced or not.
    let over = MAX_BODY_BYTES + 1;
    let head = format!(
        "POST /v1/pipelines/a/pause HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {over}\r\n\r\n"
    );
    let (code, body) = send_body(port, head, over).await;
    assert_eq!(code, 413, "{body}");
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(error["limit_bytes"], MAX_BODY_BYTES);
    let chunked = format!(
        "POST /v1/pipelines/a/pause HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        over
    );
    let (code, body) = send_body(port, chunked, over).await;
    assert_eq!(code, 413, "{body}");
    assert!(!registry.is_paused("a"));

    // A URL over the limit: 414 with a JSON error; a head over the limit or with too many
    // fields: 431 from the HTTP layer.
    let long = format!(
        "/v1/status?pipeline={}",
        "a".repeat(crate::http_server::MAX_URL_BYTES)
    );
    let error = get_json(port, &long, 414).await;
    assert_eq!(error["limit_bytes"], crate::http_server::MAX_URL_BYTES);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(crate::http_server::MAX_HEADER_BYTES)
    );
    let (code, _) = send_body(port, huge, 0).await;
    assert_eq!(code, 431);
    let many: String = (0..=crate::http_server::MAX_HEADERS)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let (code, _) = send_body(
        port,
        format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}\r\n"),
        0,
    )
    .await;
    assert_eq!(code, 431);
    // The server still answers.
    let (code, _, body) = get(port, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
}

/// Limits with short timeouts, for the tests of the timeouts and the connection limit.
fn short(max_connections: usize) -> ServerLimits {
    ServerLimits {
        max_connections,
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(400),
    }
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_closed_after_the_header_timeout() {
    let stats = Arc::new(ConnectionStats::default());
    let port = serve_limited(
        registry(),
        WriteAccess::disabled(),
        short(8),
        Arc::clone(&stats),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = std::time::Instant::now();
    // One byte every 50 ms, for far longer than the timeout if nobody stops it.
    let trickle = tokio::spawn(async move {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
            "s".repeat(200)
        );
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
    let closed_after = started.elapsed();
    trickle.abort();
    let n = match read {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => 0,
        Err(_) => panic!("the slow client was not closed within 5 s"),
    };
    // Closed, perhaps after a 408, but never answered 200.
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_after >= Duration::from_millis(350) && closed_after < Duration::from_secs(2),
        "closed after {closed_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stats.counts().open, 0);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_the_idle_ones_time_out() {
    let stats = Arc::new(ConnectionStats::default());
    let limit = 20;
    let port = serve_limited(
        registry(),
        WriteAccess::disabled(),
        short(limit),
        Arc::clone(&stats),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    // Every connection over the limit is closed at once, with a 503 when it fits.
    let mut refused_at_once = 0;
    for stream in idle.iter_mut().skip(limit) {
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 503"), "{text}");
            refused_at_once += 1;
        }
    }
    assert_eq!(refused_at_once, 300 - limit);
    let counts = stats.counts();
    assert_eq!(counts.refused, (300 - limit) as u64);
    assert!(counts.open <= limit as u64, "{counts:?}");
    // The idle ones within the limit are closed by the header timeout; then the API
    // answers while the client still holds all its sockets.
    let mut closed = 0;
    for stream in idle.iter_mut().take(limit) {
        let mut buf = [0u8; 256];
        if let Ok(Ok(_) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, limit);
    let (code, _, body) = get(port, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(idle.len(), 300);
}

#[tokio::test]
async fn the_api_on_a_unix_socket_has_the_same_connection_limit() {
    let dir = std::env::temp_dir().join(format!("infadaptd-api-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("api.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let stats = Arc::new(ConnectionStats::default());
    let app = router(registry(), WriteAccess::disabled(), Arc::clone(&stats));
    tokio::spawn(crate::http_server::serve(
        listener,
        app,
        short(2),
        Arc::clone(&stats),
        "API".to_owned(),
        std::future::pending(),
    ));
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::UnixStream::connect(&path)
                .await
                .expect("connect"),
        );
    }
    // The third is refused at once with a 503.
    let mut third = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), third.read_to_string(&mut answer))
        .await
        .expect("closed at once")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    assert_eq!(stats.counts().refused, 1);
    // A held one is served.
    let stream = &mut held[0];
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
