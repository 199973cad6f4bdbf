//! A fake model server for fault injection: the parts of Triton's HTTP/REST API (KServe v2
//! health, the model repository extension, model configs, Prometheus `/metrics`) and of
//! TorchServe's management, inference (`/ping`) and metrics APIs that `plugins/triton` and
//! `plugins/torchserve` call, served in-process over plain TCP (one thread per connection,
//! `Connection: close`) so that it can also answer wrongly on purpose: garbage bodies,
//! truncated answers, 500s, answers slower than every timeout, NaN/negative/infinite
//! metrics, counter resets, flapping and connection resets. The [`Mode`] is switched at run
//! time through [`FaultServer::set_mode`], so one test goes healthy → faulty → healthy.
//!
//! The server plays a steady load: its request counters grow by `rps` requests per second
//! of wall time, split over the managed models (Triton) or registrations (TorchServe) that
//! are ready, each request taking `COMPUTE_US` of compute.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Compute time of one request, microseconds.
const COMPUTE_US: f64 = 20_000.0;

/// How the server answers every request while it is in the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// As the real server.
    Healthy,
    /// Status 200 with bodies that are not JSON, or JSON of the wrong shape (alternately).
    Garbage,
    /// A `Content-Length` larger than the body, then the connection closes.
    Truncated,
    /// HTTP 500 with an error message.
    Status500,
    /// Answers only after `SLOW`, longer than every client and daemon time limit.
    Slow,
    /// Healthy JSON, but the metrics the plugins read are NaN, negative or infinite.
    BadNumbers,
    /// Healthy, but the cumulative counters go back to 0 every `RESET_EVERY` (a server
    /// restarting in a loop) and grow from there; they stay restarted afterwards.
    CounterReset,
    /// Healthy for `FLAP` then resetting connections for `FLAP`, over and over.
    Flapping,
    /// Accepts the connection and closes it unread, which the kernel answers with a RST.
    ConnectionReset,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Healthy => "healthy",
            Mode::Garbage => "garbage bodies",
            Mode::Truncated => "truncated responses",
            Mode::Status500 => "HTTP 500",
            Mode::Slow => "slow answers",
            Mode::BadNumbers => "NaN/negative/infinite metrics",
            Mode::CounterReset => "counter resets",
            Mode::Flapping => "flapping",
            Mode::ConnectionReset => "connection resets",
        }
    }
}

/// How long a slow answer takes (the tests' `backend_timeout_s` is 1 s).
pub(crate) const SLOW: Duration = Duration::from_secs(3);
/// Time between two counter resets.
pub(crate) const RESET_EVERY: Duration = Duration::from_secs(2);
/// Half a flapping cycle.
pub(crate) const FLAP: Duration = Duration::from_millis(1500);

/// Which server the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Triton,
    TorchServe,
}

/// One model (Triton) or registration (TorchServe) with its cumulative counters.
#[derive(Debug, Clone)]
struct Model {
    /// Triton: the full config as `GET /v2/models/M/config` answers it.
    config: Value,
    /// TorchServe: batch size and batch delay of the registration.
    batch: u64,
    delay_ms: u64,
    requests: f64,
    compute_us: f64,
    /// The counters' values at the last reset: pages show what accrued since.
    base: (f64, f64),
}

impl Model {
    fn new(config: Value, batch: u64, delay_ms: u64) -> Model {
        Model {
            config,
            batch,
            delay_ms,
            requests: 0.0,
            compute_us: 0.0,
            base: (0.0, 0.0),
        }
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    mode_since: Instant,
    /// Ready models by name.
    models: BTreeMap<String, Model>,
    /// When the counters were last advanced.
    advanced: Instant,
    /// Requests answered while in a faulty mode (for the garbage alternation).
    faulty_answers: u64,
    /// Counter resets since the mode began.
    resets: u64,
}

/// A running fake server; it stops accepting when dropped.
#[derive(Debug)]
pub(crate) struct FaultServer {
    pub(crate) port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Requests received (all modes).
    requests: Arc<AtomicU64>,
}

impl FaultServer {
    /// Starts a healthy server of `flavor` playing `rps` requests per second.
    pub(crate) fn start(flavor: Flavor, rps: f64) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
        let port = listener.local_addr().expect("local addr").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Healthy,
            mode_since: Instant::now(),
            models: BTreeMap::new(),
            advanced: Instant::now(),
            faulty_answers: 0,
            resets: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (shared, stopping, count) =
            (Arc::clone(&state), Arc::clone(&stop), Arc::clone(&requests));
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, flavor, rps, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            port,
            state,
            stop,
            requests,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the mode; takes effect with the next request.
    pub(crate) fn set_mode(&self, mode: Mode) {
        let mut state = lock(&self.state);
        state.mode = mode;
        state.mode_since = Instant::now();
        state.faulty_answers = 0;
        state.resets = 0;
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request as read off the wire.
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: String,
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let mut words = head.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let (path, query_text) = target.split_once('?').unwrap_or((&target, ""));
    let query = query_text
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), percent_decode(v)))
        })
        .collect();
    Some(Request {
        method,
        path: path.to_owned(),
        query,
        body: String::from_utf8_lossy(&data[head_end..]).into_owned(),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer: status, content type and body.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    fn text(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn write_answer(stream: &mut TcpStream, answer: &Answer, declared_extra: usize) {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len() + declared_extra
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(answer.body.as_bytes());
    let _ = stream.flush();
}

/// Closes the connection with unread data in its buffer: the kernel sends a RST.
fn reset(stream: TcpStream) {
    std::thread::sleep(Duration::from_millis(20));
    drop(stream);
}

fn serve(mut stream: TcpStream, flavor: Flavor, rps: f64, shared: &Mutex<State>) {
    let (mode, since) = {
        let state = lock(shared);
        (state.mode, state.mode_since)
    };
    let flapping_down = mode == Mode::Flapping
        && ((since.elapsed().as_secs_f64() / FLAP.as_secs_f64()) as u64).is_multiple_of(2);
    if mode == Mode::ConnectionReset || flapping_down {
        reset(stream);
        return;
    }
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    match mode {
        Mode::Slow => {
            std::thread::sleep(SLOW);
            let answer = route(&request, flavor, rps, shared);
            write_answer(&mut stream, &answer, 0);
        }
        Mode::Status500 => write_answer(
            &mut stream,
            &Answer::json(500, json!({ "error": "injected fault: internal error" })),
            0,
        ),
        Mode::Garbage => {
            let n = {
                let mut state = lock(shared);
                state.faulty_answers += 1;
                state.faulty_answers
            };
            let answer = if n.is_multiple_of(2) {
                Answer {
                    status: 200,
                    content_type: "text/html",
                    body: "<html><body>502 upstream confused</body></html>".to_owned(),
                }
            } else {
                Answer::json(200, json!({ "unexpected": { "shape": [1, 2, 3] } }))
            };
            write_answer(&mut stream, &answer, 0);
        }
        Mode::Truncated => {
            let mut answer = route(&request, flavor, rps, shared);
            // Half the body, a length that promises much more, then the end.
            let half = answer.body.len() / 2;
            let cut = (0..=half)
                .rev()
                .find(|i| answer.body.is_char_boundary(*i))
                .unwrap_or(0);
            let missing = answer.body.len() - cut + 100;
            answer.body.truncate(cut);
            write_answer(&mut stream, &answer, missing);
        }
        Mode::Healthy | Mode::BadNumbers | Mode::CounterReset | Mode::Flapping => {
            let answer = route(&request, flavor, rps, shared);
            write_answer(&mut stream, &answer, 0);
        }
        Mode::ConnectionReset => {}
    }
}

/// Advances every ready model's counters to now; in `CounterReset` mode, a reset that fell
/// in the time since the last advance moves the base to the counters' values at its moment.
fn advance(state: &mut State, rps: f64) {
    let now = Instant::now();
    let elapsed = now.duration_since(state.advanced).as_secs_f64();
    state.advanced = now;
    let n = state.models.len();
    let each = if n == 0 {
        0.0
    } else {
        rps * elapsed / n as f64
    };
    let mut after_reset = None;
    if state.mode == Mode::CounterReset {
        let in_mode = state.mode_since.elapsed().as_secs_f64();
        let every = RESET_EVERY.as_secs_f64();
        let resets = (in_mode / every).floor() as u64 + 1;
        if resets != state.resets {
            state.resets = resets;
            let since_reset = in_mode - (resets - 1) as f64 * every;
            after_reset = Some(if elapsed > 0.0 {
                (since_reset / elapsed).min(1.0)
            } else {
                0.0
            });
        }
    }
    for model in state.models.values_mut() {
        model.requests += each;
        model.compute_us += each * COMPUTE_US;
        if let Some(fraction) = after_reset {
            let accrued = each * fraction;
            model.base = (
                model.requests - accrued,
                model.compute_us - accrued * COMPUTE_US,
            );
        }
    }
}

fn route(request: &Request, flavor: Flavor, rps: f64, shared: &Mutex<State>) -> Answer {
    let mut state = lock(shared);
    advance(&mut state, rps);
    if request.path == "/metrics" && request.method == "GET" {
        return Answer::text(metrics_page(&mut state, flavor));
    }
    match flavor {
        Flavor::Triton => triton(request, &mut state),
        Flavor::TorchServe => torchserve(request, &mut state),
    }
}

/// The values a metrics page shows for one model: normal, reset, or bad numbers.
fn shown(model: &Model, mode: Mode, index: usize) -> (String, String) {
    match mode {
        Mode::BadNumbers => {
            let bad = ["NaN", "-3", "+Inf", "-Inf"];
            (
                bad[index % bad.len()].to_owned(),
                bad[(index + 1) % bad.len()].to_owned(),
            )
        }
        _ => (
            format!("{:.3}", model.requests - model.base.0),
            format!("{:.1}", model.compute_us - model.base.1),
        ),
    }
}

fn metrics_page(state: &mut State, flavor: Flavor) -> String {
    let mode = state.mode;
    let mut page = String::new();
    match flavor {
        Flavor::Triton => {
            page.push_str("# HELP nv_inference_request_success Number of successful inference requests\n# TYPE nv_inference_request_success counter\n");
            let mut rows = Vec::new();
            for (i, (name, model)) in state.models.iter().enumerate() {
                let (requests, compute) = shown(model, mode, i);
                rows.push(format!(
                    "nv_inference_request_success{{model=\"{name}\",version=\"1\"}} {requests}\n"
                ));
                rows.push(format!("nv_inference_request_failure{{model=\"{name}\",reason=\"BACKEND\",version=\"1\"}} 0\n"));
                rows.push(format!("nv_inference_compute_infer_duration_us{{model=\"{name}\",version=\"1\"}} {compute}\n"));
                rows.push(format!(
                    "nv_inference_request_duration_us{{model=\"{name}\",version=\"1\"}} {compute}\n"
                ));
                rows.push(format!(
                    "nv_inference_queue_duration_us{{model=\"{name}\",version=\"1\"}} 0\n"
                ));
                rows.push(format!(
                    "nv_inference_pending_request_count{{model=\"{name}\",version=\"1\"}} 0\n"
                ));
            }
            page.extend(rows);
            page.push_str("nv_cpu_utilization 0.25\n");
        }
        Flavor::TorchServe => {
            page.push_str("# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count\n# TYPE ts_inference_requests_total counter\n");
            for (i, (name, model)) in state.models.iter().enumerate() {
                let (requests, compute) = shown(model, mode, i);
                page.push_str(&format!("ts_inference_requests_total{{model_name=\"{name}\",model_version=\"default\",hostname=\"fake\",}} {requests}\n"));
                page.push_str(&format!("ts_inference_latency_microseconds{{model_name=\"{name}\",model_version=\"default\",hostname=\"fake\",}} {compute}\n"));
                page.push_str(&format!("ts_queue_latency_microseconds{{model_name=\"{name}\",model_version=\"default\",hostname=\"fake\",}} 0.0\n"));
            }
            let errors = if mode == Mode::BadNumbers {
                "NaN"
            } else {
                "0.0"
            };
            page.push_str(&format!(
                "Requests5XX{{Level=\"Host\",Hostname=\"fake\",}} {errors}\nMemoryUsed{{Level=\"Host\",Hostname=\"fake\",}} 1653.9\n"
            ));
        }
    }
    page
}

/// A Triton model config as the server reports it.
fn triton_config(name: &str, instances: u64) -> Value {
    json!({
        "name": name,
        "platform": "",
        "backend": "python",
        "max_batch_size": 8,
        "input": [{ "name": "INPUT0", "data_type": "TYPE_FP32", "dims": ["4"] }],
        "output": [{ "name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": ["4"] }],
        "instance_group": [{ "name": name, "kind": "KIND_CPU", "count": instances, "gpus": [] }],
        "dynamic_batching": { "preferred_batch_size": [], "max_queue_delay_microseconds": "1000" },
    })
}

fn triton(request: &Request, state: &mut State) -> Answer {
    let not_found = |what: &str| Answer::json(404, json!({ "error": format!("{what} not found") }));
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "health", "live" | "ready"]) => Answer::json(200, json!({})),
        ("POST", ["v2", "repository", "index"]) => {
            let entries: Vec<Value> = state
                .models
                .keys()
                .map(|name| json!({ "name": name, "version": "1", "state": "READY" }))
                .collect();
            Answer::json(200, Value::Array(entries))
        }
        ("GET", ["v2", "models", model, "config"]) => match state.models.get(*model) {
            Some(m) => Answer::json(200, m.config.clone()),
            None => not_found(&format!("model '{model}'")),
        },
        ("POST", ["v2", "repository", "models", model, "load"]) => {
            let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let config = match body["parameters"]["config"].as_str() {
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(config) => config,
                    Err(e) => {
                        return Answer::json(400, json!({ "error": format!("bad config: {e}") }));
                    }
                },
                None => triton_config(model, 1),
            };
            let entry = state
                .models
                .entry((*model).to_owned())
                .or_insert_with(|| Model::new(Value::Null, 0, 0));
            entry.config = config;
            Answer::json(200, json!({}))
        }
        ("POST", ["v2", "repository", "models", model, "unload"]) => {
            state.models.remove(*model);
            Answer::json(200, json!({}))
        }
        _ => not_found(&format!("{} {}", request.method, request.path)),
    }
}

fn torchserve_description(name: &str, model: &Model) -> Value {
    json!([{
        "modelName": name,
        "modelVersion": "1.0",
        "modelUrl": format!("{name}.mar"),
        "runtime": "python",
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": model.batch,
        "maxBatchDelay": model.delay_ms,
        "loadedAtStartup": false,
        "workers": [{ "id": "9000", "status": "READY", "memoryUsage": 0, "pid": 1, "gpu": false }],
        "jobQueueStatus": { "remainingCapacity": 1000, "pendingRequests": 0 }
    }])
}

fn torchserve(request: &Request, state: &mut State) -> Answer {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let not_found = |name: &str| {
        Answer::json(
            404,
            json!({ "code": 404, "type": "ModelNotFoundException", "message": format!("Model not found: {name}") }),
        )
    };
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["ping"]) => Answer::json(200, json!({ "status": "Healthy" })),
        ("GET", ["models"]) => {
            let models: Vec<Value> = state
                .models
                .keys()
                .map(|name| json!({ "modelName": name, "modelUrl": format!("{name}.mar") }))
                .collect();
            Answer::json(200, json!({ "models": models }))
        }
        ("GET", ["models", name]) => match state.models.get(*name) {
            Some(model) => Answer::json(200, torchserve_description(name, model)),
            None => not_found(name),
        },
        ("DELETE", ["models", name]) => match state.models.remove(*name) {
            Some(_) => Answer::json(
                200,
                json!({ "status": format!("Model \"{name}\" unregistered") }),
            ),
            None => not_found(name),
        },
        ("POST", ["models"]) => {
            let Some(name) = request.query.get("model_name") else {
                return Answer::json(400, json!({ "code": 400, "message": "no model_name" }));
            };
            if state.models.contains_key(name) {
                return Answer::json(
                    409,
                    json!({ "code": 409, "message": format!("Model {name} is already registered.") }),
                );
            }
            let batch = request
                .query
                .get("batch_size")
                .and_then(|b| b.parse().ok())
                .unwrap_or(1);
            let delay = request
                .query
                .get("max_batch_delay")
                .and_then(|b| b.parse().ok())
                .unwrap_or(100);
            state
                .models
                .insert(name.clone(), Model::new(Value::Null, batch, delay));
            Answer::json(
                200,
                json!({ "status": format!("Model \"{name}\" Version: 1.0 registered with 1 initial workers") }),
            )
        }
        _ => not_found(&request.path),
    }
}
