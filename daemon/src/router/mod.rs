//! The request router the daemon runs per pipeline: one stable KServe v2 endpoint
//! (`POST /v2/models/{pipeline}/infer`) forwarded to the variants the backend reports as
//! `ready`, split by the current plan's load shares × each endpoint's weight, stages chained
//! in order. It measures what the control loop needs: arrivals per whole second, latency,
//! failures and SLO misses, and keeps the durations of the answered requests for `/metrics`.
//!
//! Make-before-break on the client side: only `ready` endpoints receive requests; while no
//! planned variant of a stage is ready (a new variant still loading), the stage's ready
//! endpoints serve regardless of their share. A request that fails on an endpoint (refused
//! connection, 5xx, or the server saying the model is not there or not ready, as happens
//! right after a variant was unloaded) is retried once on another ready endpoint.
//!
//! Chaining (multi-stage pipelines): the answer of stage *i* becomes the request of stage
//! *i+1* by position: its `k`-th output tensor is sent as input `INPUT{k}` with the same
//! `datatype`, `shape` and `data`. Stage models therefore name their inputs `INPUT0`,
//! `INPUT1`, … in output order of the previous stage. `raw-http` endpoints get the previous
//! answer's body unchanged.

mod front;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router as Routes;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use infadapt_model::Plan;
use infadapt_plugin_abi::messages::{EndpointMessage, EndpointProtocol, EndpointState};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::http_server::{ConnectionCounts, ConnectionStats, ServerLimits};
pub use front::Front;

pub use stats::RouterWindow;

/// What the router sees now, for the fast path between ticks (see [`Router::peek`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterPeek {
    /// Arrivals in each whole second that ended since the previous peek, oldest first.
    pub arrivals_per_second: Vec<f64>,
    /// Requests received and not answered yet (waiting or being served).
    pub in_flight: u64,
}
use stats::Window;

/// Router settings of a pipeline (`[pipeline.router]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    /// Address the router listens on.
    pub listen: SocketAddr,
    /// Limit for one forwarded request to one endpoint.
    pub timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a request waits for a ready endpoint when its stage has none (a first
    /// deployment still loading, the only worker restarting) before it is refused with 503.
    pub ready_wait: Duration,
    /// Connection limit, header and idle timeouts of the router's server.
    pub limits: ServerLimits,
}

/// Where one stage's requests can go.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    url: String,
    variant: String,
    protocol: EndpointProtocol,
    /// The plan's share of the variant × the endpoint's weight.
    planned_weight: f64,
    /// The endpoint's weight alone (used while no planned variant is ready).
    weight: f64,
}

/// Totals since the router started (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RouterCounters {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retries: u64,
    pub slo_misses: u64,
    /// Ready endpoints over all stages at the last update.
    pub ready_endpoints: u64,
    /// Client connections open now and refused at the connection limit.
    pub connections: ConnectionCounts,
}

#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    slo_misses: AtomicU64,
}

struct Inner {
    pipeline: String,
    slo_ms: f64,
    stages: Vec<String>,
    /// Ready targets per stage, in stage order.
    routes: RwLock<Vec<Vec<Target>>>,
    window: Mutex<Window>,
    totals: Totals,
    /// Requests received and not answered yet.
    in_flight: AtomicU64,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    ready_wait: Duration,
    /// Woken whenever the routing table changes.
    routes_changed: tokio::sync::Notify,
    /// State of the xorshift generator that picks targets.
    pick: AtomicU64,
    /// The router's client connections.
    connections: Arc<ConnectionStats>,
}

/// A pipeline's router; cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pipeline", &self.inner.pipeline)
            .field("stages", &self.inner.stages)
            .finish_non_exhaustive()
    }
}

/// Why a forwarded request failed.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    /// Whether another endpoint may succeed (not the client's fault).
    retryable: bool,
}

impl Router {
    /// A router for `stages` with `timeout` per forwarded request; a request whose stage
    /// has no ready endpoint waits up to `ready_wait` for one.
    pub fn new(
        pipeline: &str,
        slo_ms: f64,
        stages: Vec<String>,
        timeout: Duration,
        ready_wait: Duration,
    ) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        Router {
            inner: Arc::new(Inner {
                pipeline: pipeline.to_owned(),
                slo_ms,
                routes: RwLock::new(vec![Vec::new(); stages.len()]),
                stages,
                window: Mutex::new(Window::new(Instant::now())),
                totals: Totals::default(),
                in_flight: AtomicU64::new(0),
                client,
                timeout,
                ready_wait,
                routes_changed: tokio::sync::Notify::new(),
                pick: AtomicU64::new(seed),
                connections: Arc::new(ConnectionStats::default()),
            }),
        }
    }

    /// Replaces the routing table from the backend's endpoints and the plan's shares.
    pub fn update(&self, plan: &Plan, endpoints: &[EndpointMessage]) {
        let table: Vec<Vec<Target>> = self
            .inner
            .stages
            .iter()
            .map(|stage| {
                let shares = plan.stages.iter().find(|s| &s.stage == stage);
                endpoints
                    .iter()
                    .filter(|e| &e.stage == stage && e.state == EndpointState::Ready)
                    .filter(|e| e.weight.is_finite() && e.weight > 0.0)
                    .map(|e| {
                        let share = shares
                            .and_then(|s| s.assignments.iter().find(|a| a.variant == e.variant))
                            .map(|a| a.share)
                            .filter(|s| s.is_finite() && *s > 0.0)
                            .unwrap_or(0.0);
                        Target {
                            url: e.url.clone(),
                            variant: e.variant.clone(),
                            protocol: e.protocol,
                            planned_weight: share * e.weight,
                            weight: e.weight,
                        }
                    })
                    .collect()
            })
            .collect();
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        if *routes != table {
            debug!(pipeline = %self.inner.pipeline, routes = ?table, "routes updated");
            *routes = table;
            drop(routes);
            self.inner.routes_changed.notify_waiters();
        }
    }

    /// The measurements since the previous call (whole seconds of arrivals).
    pub fn take_window(&self) -> RouterWindow {
        let mut window = self.inner.window.lock().unwrap_or_else(|p| p.into_inner());
        window.take(Instant::now())
    }

    /// A look at the live measurements between ticks: the whole seconds of arrivals that
    /// ended since the previous peek and the requests in flight. Takes nothing from the
    /// window: [`Router::take_window`] still covers every second.
    pub fn peek(&self) -> RouterPeek {
        let arrivals_per_second = self
            .inner
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peek(Instant::now());
        RouterPeek {
            arrivals_per_second,
            in_flight: self.inner.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Requests received and not answered yet.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> RouterCounters {
        let t = &self.inner.totals;
        let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        RouterCounters {
            requests: t.requests.load(Ordering::Relaxed),
            succeeded: t.succeeded.load(Ordering::Relaxed),
            failed: t.failed.load(Ordering::Relaxed),
            retries: t.retries.load(Ordering::Relaxed),
            slo_misses: t.slo_misses.load(Ordering::Relaxed),
            ready_endpoints: routes.iter().map(|r| r.len() as u64).sum(),
            connections: self.inner.connections.counts(),
        }
    }

    /// Durations of every request answered since the router started.
    pub fn durations(&self) -> crate::service::status::Histogram {
        self.inner
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .durations()
    }

    /// Whether every stage has a ready endpoint.
    pub fn ready(&self) -> bool {
        let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        !routes.is_empty() && routes.iter().all(|r| !r.is_empty())
    }

    /// The HTTP routes: inference, readiness.
    pub fn routes(&self) -> Routes {
        Routes::new()
            .route("/v2/models/{model}/infer", post(infer))
            .route("/v2/health/ready", get(ready))
            .route("/v2/health/live", get(|| async { StatusCode::OK }))
            .with_state(self.clone())
    }

    /// The same router, counting the connections of `stats` as its own (those of the
    /// [`Front`] it serves behind); a router already shared keeps its own.
    pub fn with_connections(mut self, stats: Arc<ConnectionStats>) -> Router {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.connections = stats;
        }
        self
    }

    /// The same router, forwarding over `previous`'s connection pool (a router that takes
    /// over from another behind the same front starts with warm connections to the same
    /// endpoints); a router already shared keeps its own.
    pub fn with_pool_of(mut self, previous: &Router) -> Router {
        let client = previous.inner.client.clone();
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.client = client;
        }
        self
    }

    /// Serves on `listener` within `limits` until `stop` turns true; requests in flight
    /// are answered before their connection closes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        max_body_bytes: usize,
        limits: ServerLimits,
        mut stop: watch::Receiver<bool>,
    ) {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(
            pipeline = %self.inner.pipeline,
            %address,
            max_connections = limits.max_connections,
            "router listening"
        );
        let routes = self
            .routes()
            .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes));
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        crate::http_server::serve(
            listener,
            routes,
            limits,
            Arc::clone(&self.inner.connections),
            format!("router of pipeline {}", self.inner.pipeline),
            shutdown,
        )
        .await;
    }

    /// A random target of `stage`, not in `exclude`: by planned weight, or by endpoint
    /// weight while no planned variant is ready.
    fn pick(&self, stage: usize, exclude: &[String]) -> Option<Target> {
        let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        let candidates: Vec<&Target> = routes
            .get(stage)?
            .iter()
            .filter(|t| !exclude.contains(&t.url))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let planned: f64 = candidates.iter().map(|t| t.planned_weight).sum();
        let weight_of = |t: &Target| {
            if planned > 0.0 {
                t.planned_weight
            } else {
                t.weight
            }
        };
        let total: f64 = candidates.iter().map(|t| weight_of(t)).sum();
        let mut x = self.random() * total;
        for t in &candidates {
            x -= weight_of(t);
            if x < 0.0 && weight_of(t) > 0.0 {
                return Some((*t).clone());
            }
        }
        candidates
            .iter()
            .rev()
            .find(|t| weight_of(t) > 0.0)
            .map(|t| (*t).clone())
    }

    fn random(&self) -> f64 {
        let mut x = self.inner.pick.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.inner.pick.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn send(&self, target: &Target, body: Bytes) -> Result<Bytes, Failure> {
        let request = hyper::Request::post(&target.url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Failure {
                status: StatusCode::BAD_GATEWAY,
                message: format!("bad endpoint URL {}: {e}", target.url),
                retryable: true,
            })?;
        let timeout = self.inner.timeout;
        let exchange = async {
            let response = self
                .inner
                .client
                .request(request)
                .await
                .map_err(|e| Failure {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("{}: {e}", target.url),
                    retryable: true,
                })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("{}: reading the answer: {e}", target.url),
                    retryable: true,
                })?
                .to_bytes();
            Ok::<_, Failure>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: format!(
                    "{}: no answer within {:.1} s",
                    target.url,
                    timeout.as_secs_f64()
                ),
                retryable: false,
            })??;
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body);
        let lower = text.to_ascii_lowercase();
        // Triton answers 400 for a model that was just unloaded or is not ready.
        let gone = lower.contains("unknown model")
            || lower.contains("not found")
            || lower.contains("not ready")
            || lower.contains("unavailable");
        Err(Failure {
            status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            message: format!(
                "{} ({}): HTTP {}: {}",
                target.url,
                target.variant,
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ),
            retryable: status.is_server_error() || gone,
        })
    }

    /// Like [`Router::pick`], but waits until `deadline` for the routing table to offer
    /// a target.
    async fn pick_waiting(
        &self,
        stage: usize,
        exclude: &[String],
        deadline: tokio::time::Instant,
    ) -> Option<Target> {
        loop {
            // Registered before the check, so that an update in between still wakes it.
            let changed = self.inner.routes_changed.notified();
            if let Some(target) = self.pick(stage, exclude) {
                return Some(target);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.pick(stage, exclude);
            }
        }
    }

    /// Forwards `body` to one endpoint of `stage`, retrying once elsewhere when that can help.
    /// A stage without a ready endpoint is waited for up to `ready_wait`.
    async fn forward(
        &self,
        stage: usize,
        body: Bytes,
    ) -> Result<(Bytes, EndpointProtocol), Failure> {
        let mut tried = Vec::new();
        let deadline = tokio::time::Instant::now() + self.inner.ready_wait;
        let Some(first) = self.pick_waiting(stage, &tried, deadline).await else {
            return Err(Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("stage `{}` has no ready endpoint", self.inner.stages[stage]),
                retryable: false,
            });
        };
        match self.send(&first, body.clone()).await {
            Ok(answer) => Ok((answer, first.protocol)),
            Err(failure) if failure.retryable => {
                tried.push(first.url.clone());
                let Some(second) = self.pick_waiting(stage, &tried, deadline).await else {
                    return Err(failure);
                };
                self.inner.totals.retries.fetch_add(1, Ordering::Relaxed);
                debug!(error = %failure.message, retry = %second.url, "retrying on another endpoint");
                self.send(&second, body)
                    .await
                    .map(|answer| (answer, second.protocol))
            }
            Err(failure) => Err(failure),
        }
    }

    async fn run_pipeline(&self, body: Bytes) -> Result<Bytes, Failure> {
        let mut payload = body;
        let mut previous = None;
        for stage in 0..self.inner.stages.len() {
            if previous == Some(EndpointProtocol::KserveV2) {
                payload = chain(&payload)?;
            }
            let (answer, protocol) = self.forward(stage, payload).await?;
            payload = answer;
            previous = Some(protocol);
        }
        Ok(payload)
    }
}

/// Why the router cannot listen, or cannot chain one stage's answer into the next request.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router: cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the answer is not JSON: {0}")]
    AnswerNotJson(serde_json::Error),
    #[error("the answer has no `outputs` list")]
    AnswerWithoutOutputs,
}

/// Turns a KServe v2 answer into the next stage's request: output `k` becomes `INPUT{k}`.
fn chain(answer: &Bytes) -> Result<Bytes, Failure> {
    chain_request(answer)
        .map(Bytes::from)
        .map_err(|why| Failure {
            status: StatusCode::BAD_GATEWAY,
            message: format!("cannot chain stages: {why}"),
            retryable: false,
        })
}

/// The next stage's request (JSON text) made from a KServe v2 answer: output `k` becomes
/// input `INPUT{k}` with its `datatype`, `shape` and `data`; an answer that is not JSON or
/// has no `outputs` list is an error saying so. Pure, so the fuzz target `router` drives it.
///
/// # Errors
///
/// [`RouterError::AnswerNotJson`], [`RouterError::AnswerWithoutOutputs`].
pub fn chain_request(answer: &[u8]) -> Result<String, RouterError> {
    let value: Value = serde_json::from_slice(answer).map_err(RouterError::AnswerNotJson)?;
    let outputs = value
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or(RouterError::AnswerWithoutOutputs)?;
    let inputs: Vec<Value> = outputs
        .iter()
        .enumerate()
        .map(|(k, output)| {
            json!({
                "name": format!("INPUT{k}"),
                "datatype": output.get("datatype").cloned().unwrap_or(Value::Null),
                "shape": output.get("shape").cloned().unwrap_or(Value::Null),
                "data": output.get("data").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(json!({ "inputs": inputs }).to_string())
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The answer to a request body that could not be read: 413 over `max_body_bytes`, 400
/// when it broke off or stalled; `{"error": …}` either way.
pub(crate) fn body_rejected(rejection: &BytesRejection) -> Response {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the request body is larger than the limit (`max_body_bytes`)".to_owned()
    } else {
        format!("cannot read the request body: {}", rejection.body_text())
    };
    error_response(status, message)
}

async fn infer(
    State(router): State<Router>,
    model: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(model)) = model else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the model name in the path is not valid percent-encoded UTF-8".to_owned(),
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejected(&rejection),
    };
    if model != router.inner.pipeline {
        return error_response(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model `{model}`: this router serves `{}`",
                router.inner.pipeline
            ),
        );
    }
    let started = Instant::now();
    router
        .inner
        .window
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .arrival(started);
    router.inner.totals.requests.fetch_add(1, Ordering::Relaxed);
    let in_flight = InFlight::enter(&router.inner.in_flight);
    let result = router.run_pipeline(body).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ok = result.is_ok();
    let missed = !ok || latency_ms > router.inner.slo_ms;
    let totals = &router.inner.totals;
    if ok {
        totals.succeeded.fetch_add(1, Ordering::Relaxed);
    } else {
        totals.failed.fetch_add(1, Ordering::Relaxed);
    }
    if missed {
        totals.slo_misses.fetch_add(1, Ordering::Relaxed);
    }
    router
        .inner
        .window
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .finished(ok, missed, latency_ms);
    drop(in_flight);
    match result {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Err(failure) => {
            warn!(pipeline = %router.inner.pipeline, error = %failure.message, "request failed");
            error_response(failure.status, failure.message)
        }
    }
}

/// Counts a request in flight until dropped (also when the client goes away and the
/// handler is cancelled).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn ready(State(router): State<Router>) -> StatusCode {
    if router.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Binds the router's address (a clear error when it cannot).
///
/// # Errors
///
/// [`RouterError::Listen`].
pub async fn bind(settings: &RouterSettings) -> Result<tokio::net::TcpListener, RouterError> {
    tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| RouterError::Listen {
            address: settings.listen,
            source,
        })
}

#[cfg(test)]
mod tests;
