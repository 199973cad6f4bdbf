//! A small model worker for the process backend's tests: serves HTTP on `--port`, does real
//! CPU work for every `POST /infer` (`--work` rounds of a hash loop, on the blocking pool so
//! it runs on the cores the worker is pinned to), answers `GET /healthz` once it is ready
//! (after `--ready-after-ms`, standing in for a model load), counts requests on
//! `GET /stats`, and on SIGTERM stops accepting, finishes the requests in flight and exits 0
//! (or, with `--ignore-sigterm`, goes on serving: a worker that needs SIGKILL).
//!
//! ```text
//! infadapt-test-worker --port 20001 [--work 200000] [--variant NAME] [--ready-after-ms 0]
//!                      [--host 127.0.0.1] [--ignore-sigterm]
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Command-line settings.
#[derive(Debug, Clone)]
struct Settings {
    host: String,
    port: u16,
    work: u64,
    variant: String,
    ready_after: Duration,
    ignore_sigterm: bool,
}

const USAGE: &str = "usage: infadapt-test-worker --port PORT [--work ROUNDS] [--variant NAME] \
     [--ready-after-ms MS] [--host ADDR] [--ignore-sigterm]";

/// Why the worker cannot start or stopped serving.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("{flag} needs a value; {USAGE}")]
    MissingValue { flag: String },
    #[error("--port: `{0}` is not a port number")]
    NotAPort(String),
    #[error("{flag}: `{text}` is not a whole number")]
    NotWhole { flag: &'static str, text: String },
    #[error("unknown argument `{0}`; {USAGE}")]
    UnknownArgument(String),
    #[error("--port is required; {USAGE}")]
    PortRequired,
    #[error("bad listen address: {0}")]
    Address(#[from] std::net::AddrParseError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Settings, WorkerError> {
    let mut host = "127.0.0.1".to_owned();
    let mut port: Option<u16> = None;
    let mut work: u64 = 200_000;
    let mut variant = "worker".to_owned();
    let mut ready_after = Duration::ZERO;
    let mut ignore_sigterm = false;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| WorkerError::MissingValue { flag: flag.clone() })
        };
        match flag.as_str() {
            "--host" => host = value()?,
            "--port" => {
                let text = value()?;
                port = Some(text.parse().map_err(|_| WorkerError::NotAPort(text))?);
            }
            "--work" => {
                let text = value()?;
                work = text.parse().map_err(|_| WorkerError::NotWhole {
                    flag: "--work",
                    text,
                })?;
            }
            "--variant" => variant = value()?,
            "--ignore-sigterm" => ignore_sigterm = true,
            "--ready-after-ms" => {
                let text = value()?;
                let ms: u64 = text.parse().map_err(|_| WorkerError::NotWhole {
                    flag: "--ready-after-ms",
                    text,
                })?;
                ready_after = Duration::from_millis(ms);
            }
            other => return Err(WorkerError::UnknownArgument(other.to_owned())),
        }
    }
    let port = port.ok_or(WorkerError::PortRequired)?;
    Ok(Settings {
        host,
        port,
        work,
        variant,
        ready_after,
        ignore_sigterm,
    })
}

/// Shared state of the server.
#[derive(Debug)]
struct Worker {
    settings: Settings,
    started: Instant,
    served: AtomicU64,
    in_flight: AtomicU64,
    stopping: AtomicBool,
}

/// The CPU work of one request: `rounds` steps of a xorshift hash, result kept observable.
fn compute(rounds: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
    x
}

async fn infer(State(worker): State<Arc<Worker>>, body: axum::body::Bytes) -> (StatusCode, String) {
    worker.in_flight.fetch_add(1, Ordering::SeqCst);
    let rounds = worker.settings.work;
    let seed = body.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        h.rotate_left(5) ^ u64::from(*b)
    });
    let began = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || compute(rounds, seed)).await;
    worker.in_flight.fetch_sub(1, Ordering::SeqCst);
    match outcome {
        Ok(checksum) => {
            worker.served.fetch_add(1, Ordering::SeqCst);
            let answer = serde_json::json!({
                "pid": std::process::id(),
                "port": worker.settings.port,
                "variant": worker.settings.variant,
                "checksum": checksum,
                "compute_ms": began.elapsed().as_secs_f64() * 1000.0,
            });
            (StatusCode::OK, answer.to_string())
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("work failed: {e}"),
        ),
    }
}

async fn healthz(State(worker): State<Arc<Worker>>) -> (StatusCode, &'static str) {
    if worker.stopping.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if worker.started.elapsed() < worker.settings.ready_after {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn stats(State(worker): State<Arc<Worker>>) -> String {
    serde_json::json!({
        "pid": std::process::id(),
        "variant": worker.settings.variant,
        "served": worker.served.load(Ordering::SeqCst),
        "in_flight": worker.in_flight.load(Ordering::SeqCst),
    })
    .to_string()
}

/// Resolves on SIGTERM or SIGINT and marks the worker as stopping.
async fn stop_signal(worker: Arc<Worker>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("infadapt-test-worker: cannot listen for SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("infadapt-test-worker: cannot listen for SIGINT: {e}");
            return std::future::pending().await;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if !worker.settings.ignore_sigterm {
            break;
        }
        eprintln!(
            "infadapt-test-worker {}: ignoring the stop signal",
            worker.settings.port
        );
    }
    worker.stopping.store(true, Ordering::SeqCst);
    eprintln!(
        "infadapt-test-worker {}: stopping, {} request(s) in flight",
        worker.settings.port,
        worker.in_flight.load(Ordering::SeqCst)
    );
}

async fn serve(settings: Settings) -> Result<(), WorkerError> {
    let address: SocketAddr = format!("{}:{}", settings.host, settings.port).parse()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| WorkerError::Listen { address, source })?;
    let worker = Arc::new(Worker {
        settings,
        started: Instant::now(),
        served: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/infer", post(infer))
        .route("/healthz", get(healthz))
        .route("/stats", get(stats))
        .with_state(Arc::clone(&worker));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal(Arc::clone(&worker)))
        .await
        .map_err(WorkerError::Serve)?;
    eprintln!(
        "infadapt-test-worker {}: stopped after serving {} request(s)",
        worker.settings.port,
        worker.served.load(Ordering::SeqCst)
    );
    Ok(())
}

fn main() {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("infadapt-test-worker: {message}");
            std::process::exit(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("infadapt-test-worker: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(message) = runtime.block_on(serve(settings)) {
        eprintln!("infadapt-test-worker: {message}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_are_read_and_mistakes_named() {
        let s = parse_args(args(
            "--port 2000 --work 7 --variant r18 --ready-after-ms 50",
        ))
        .unwrap();
        assert_eq!((s.port, s.work, s.variant.as_str()), (2000, 7, "r18"));
        assert_eq!(s.ready_after, Duration::from_millis(50));
        assert!(!s.ignore_sigterm);
        assert!(
            parse_args(args("--port 1 --ignore-sigterm"))
                .unwrap()
                .ignore_sigterm
        );
        assert!(
            parse_args(args("--work 7"))
                .unwrap_err()
                .to_string()
                .contains("--port is required")
        );
        assert!(
            parse_args(args("--port x"))
                .unwrap_err()
                .to_string()
                .contains("--port: `x`")
        );
        assert!(
            parse_args(args("--port 1 --bogus"))
                .unwrap_err()
                .to_string()
                .contains("`--bogus`")
        );
    }

    #[test]
    fn work_grows_with_rounds_and_depends_on_input() {
        assert_ne!(compute(10, 1), compute(11, 1));
        assert_ne!(compute(10, 1), compute(10, 2));
    }
}
