//! Open-loop Poisson load generator: requests go out at the times a Poisson process with a
//! per-second rate schedule draws, whether or not earlier ones have answered (so an
//! overloaded server shows up as latency, not as a slower generator). Used by `profile` and
//! by the end-to-end tests.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

/// One request's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// When it was due, seconds after the start.
    pub due_s: f64,
    /// From the due time to the end of the answer.
    pub latency_ms: f64,
    /// HTTP status; 0 when no answer came (refused, reset, timed out).
    pub status: u16,
    /// The error or the start of a non-2xx body.
    pub error: Option<String>,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Arrival times (seconds) of a Poisson process whose rate is `rates[i]` in second `i`.
pub fn poisson_arrivals(rates: &[f64], seed: u64) -> Vec<f64> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut arrivals = Vec::new();
    for (second, &rate) in rates.iter().enumerate() {
        if !(rate.is_finite() && rate > 0.0) {
            continue;
        }
        let Ok(gap) = Exp::new(rate) else { continue };
        // Memorylessness: restarting the gaps at each boundary keeps it Poisson.
        let mut t = gap.sample(&mut rng);
        while t < 1.0 {
            arrivals.push(second as f64 + t);
            t += gap.sample(&mut rng);
        }
    }
    arrivals
}

/// Sends `body` to `url` (POST, JSON) at each arrival time; every request has `timeout`.
/// Returns the records in due order once the last one finished.
pub async fn run(
    url: &str,
    body: Bytes,
    arrivals: &[f64],
    timeout: Duration,
) -> Vec<RequestRecord> {
    run_over(&[url.to_owned()], body, arrivals, timeout).await
}

/// As [`run`], the requests spread over `urls` in turn (one endpoint per replica, as a
/// backend of worker processes reports them). No request is sent without a URL.
pub async fn run_over(
    urls: &[String],
    body: Bytes,
    arrivals: &[f64],
    timeout: Duration,
) -> Vec<RequestRecord> {
    if urls.is_empty() {
        return Vec::new();
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(arrivals.len());
    for (i, &due_s) in arrivals.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(due_s)).await;
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        let body = body.clone();
        let due = Instant::now();
        tasks.push(tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, send(&client, &url, body)).await;
            let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
            let (status, error) = match outcome {
                Ok(Ok((status, _))) if (200..300).contains(&status) => (status, None),
                Ok(Ok((status, text))) => (status, Some(text.chars().take(300).collect())),
                Ok(Err(e)) => (0, Some(e.to_string())),
                Err(_) => (
                    0,
                    Some(format!("no answer within {:.1} s", timeout.as_secs_f64())),
                ),
            };
            RequestRecord {
                due_s,
                latency_ms,
                status,
                error,
            }
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(record) = task.await {
            records.push(record);
        }
    }
    records
}

/// Why one request got no answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("bad URL {url}: {source}")]
    BadUrl {
        url: String,
        source: hyper::http::Error,
    },
    #[error("{url}: {source}")]
    Request {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: reading the answer: {source}")]
    Answer { url: String, source: hyper::Error },
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> Result<(u16, String), SendError> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|source| SendError::BadUrl {
            url: url.to_owned(),
            source,
        })?;
    let response = client
        .request(request)
        .await
        .map_err(|source| SendError::Request {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|source| SendError::Answer {
            url: url.to_owned(),
            source,
        })?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Figures over the records due in `[from_s, to_s)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// Requests per second sent over the span.
    pub offered_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of requests that succeeded within `slo_ms`.
    pub slo_attainment: f64,
}

pub fn summarize(records: &[RequestRecord], from_s: f64, to_s: f64, slo_ms: f64) -> Summary {
    let span: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.due_s >= from_s && r.due_s < to_s)
        .collect();
    let ok: Vec<f64> = span
        .iter()
        .filter(|r| r.ok())
        .map(|r| r.latency_ms)
        .collect();
    let within = ok.iter().filter(|&&l| l <= slo_ms).count();
    let mut sorted = ok.clone();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if sorted.is_empty() {
            f64::NAN
        } else {
            let rank = ((sorted.len() as f64) * q).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        }
    };
    Summary {
        sent: span.len(),
        ok: ok.len(),
        failed: span.len() - ok.len(),
        offered_rps: span.len() as f64 / (to_s - from_s).max(1e-9),
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        slo_attainment: if span.is_empty() {
            1.0
        } else {
            within as f64 / span.len() as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_follow_the_rate_schedule() {
        let rates = vec![0.0, 50.0, 50.0, 200.0, f64::NAN, -3.0];
        let arrivals = poisson_arrivals(&rates, 7);
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        assert!(arrivals.iter().all(|&t| (1.0..4.0).contains(&t)));
        let in_second = |s: f64| arrivals.iter().filter(|&&t| t >= s && t < s + 1.0).count();
        assert!((70..130).contains(&(in_second(1.0) + in_second(2.0))));
        assert!((150..250).contains(&in_second(3.0)));
        assert_eq!(poisson_arrivals(&rates, 7), arrivals);
    }

    #[test]
    fn summaries_count_failures_as_slo_misses() {
        let record = |due_s: f64, latency_ms: f64, status: u16| RequestRecord {
            due_s,
            latency_ms,
            status,
            error: None,
        };
        let records = vec![
            record(0.5, 10.0, 200),
            record(1.0, 20.0, 200),
            record(1.5, 500.0, 200),
            record(2.0, 5.0, 503),
            record(9.0, 1.0, 200),
        ];
        let s = summarize(&records, 1.0, 3.0, 100.0);
        assert_eq!((s.sent, s.ok, s.failed), (3, 2, 1));
        assert!((s.slo_attainment - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.p99_ms, 500.0);
        assert_eq!(s.offered_rps, 1.5);
    }

    #[tokio::test]
    async fn requests_leave_on_time_even_when_the_server_is_slow() {
        let app = axum::Router::new().route(
            "/infer",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "{}"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/infer", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let arrivals: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.01).collect();
        let started = Instant::now();
        let records = run(
            &url,
            Bytes::from_static(b"{}"),
            &arrivals,
            Duration::from_secs(5),
        )
        .await;
        // Closed-loop would take 20 × 300 ms; open-loop about 0.5 s.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(records.len(), 20);
        assert!(
            records.iter().all(|r| r.ok() && r.latency_ms >= 290.0),
            "{records:?}"
        );
    }
}
