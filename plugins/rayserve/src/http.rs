//! The plugin's HTTP client: the support crate's client (TLS for `https://` URLs), a time
//! limit on every request, a time budget for all the requests of one plugin call, and
//! errors that name the call and the URL.

use std::cell::Cell;
use std::time::{Duration, Instant};

use infadapt_plugin_support::http::{self as support, ClientOptions, HttpClient, HttpError};
use serde_json::Value;

use crate::RayServeError;

pub use infadapt_plugin_support::http::{Answer, Method};

/// How many characters of an unexpected answer an error message quotes.
const QUOTED_CHARS: usize = 200;

/// A blocking HTTP client with one time limit for every request and an optional deadline
/// shared by the requests of one plugin call.
#[derive(Debug, Clone)]
pub struct Client {
    inner: HttpClient,
    timeout: Duration,
    /// End of the current plugin call's budget, with the budget's length.
    deadline: Cell<Option<(Instant, Duration)>>,
}

impl Client {
    /// A client whose every request (connect, send, answer) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Client {
        let inner = HttpClient::new(&ClientOptions::new(timeout))
            .expect("a client without a CA file always builds");
        Client {
            inner,
            timeout,
            deadline: Cell::new(None),
        }
    }

    /// Starts a plugin call: its requests together may take at most `budget` from now (each
    /// still at most the per-request limit), so that the call returns before the daemon's
    /// time limit for it.
    pub fn start_call(&self, budget: Duration) {
        self.deadline.set(Some((Instant::now() + budget, budget)));
    }

    /// The limit for the next request, or the budget error when none is left.
    fn next_limit(&self, method: Method, url: &str, call: &str) -> Result<Duration, RayServeError> {
        let Some((deadline, budget)) = self.deadline.get() else {
            return Ok(self.timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(RayServeError::Budget {
                call: describe(method, url, call),
                budget_ms: budget.as_millis() as u64,
            });
        }
        Ok(left.min(self.timeout))
    }

    /// The budget note for a timeout after `limit` (empty when the request limit applied).
    fn budget_note(&self, limit: Duration) -> String {
        match self.deadline.get() {
            Some((_, budget)) if limit < self.timeout => format!(
                " (what was left of the call's {} ms budget)",
                budget.as_millis()
            ),
            _ => String::new(),
        }
    }

    /// Sends one request, with a JSON body or none; `call` says what it is for (used in
    /// errors).
    pub fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: &str,
    ) -> Result<Answer, RayServeError> {
        let limit = self.next_limit(method, url, call)?;
        self.inner
            .send(method, url, body, limit)
            .map_err(|e| transport_error(method, url, call, self.budget_note(limit), e))
    }

    /// Sends a request that must answer 2xx.
    pub fn expect_ok(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: &str,
    ) -> Result<String, RayServeError> {
        let answer = self.send(method, url, body, call)?;
        if answer.is_success() {
            Ok(answer.body)
        } else {
            Err(RayServeError::Status {
                call: describe(method, url, call),
                status: answer.status,
                body: quote(&answer.body),
            })
        }
    }

    /// `GET` that must answer 2xx with a JSON document.
    pub fn get_json(&self, url: &str, call: &str) -> Result<Value, RayServeError> {
        let body = self.expect_ok(Method::Get, url, None, call)?;
        parse_json(&body, Method::Get, url, call)
    }
}

/// The plugin's error for a request that gave no answer: any connection trouble is
/// `Unreachable`, an answer that is no HTTP `Garbage`.
fn transport_error(
    method: Method,
    url: &str,
    call: &str,
    note: String,
    error: HttpError,
) -> RayServeError {
    let call = describe(method, url, call);
    match error {
        HttpError::Timeout { limit, .. } => RayServeError::Timeout {
            call,
            limit_ms: limit.as_millis() as u64,
            note,
        },
        HttpError::Transport {
            kind: support::TransportKind::Unreachable | support::TransportKind::Io,
            detail,
            ..
        } => RayServeError::Unreachable { call, detail },
        other => RayServeError::Garbage {
            call,
            detail: format!("not a valid HTTP answer: {other}"),
        },
    }
}

/// Parses a JSON answer, naming the call when it is not JSON.
pub fn parse_json(
    body: &str,
    method: Method,
    url: &str,
    call: &str,
) -> Result<Value, RayServeError> {
    serde_json::from_str(body).map_err(|e| RayServeError::Garbage {
        call: describe(method, url, call),
        detail: format!("answer is not JSON ({e}): {}", quote(body)),
    })
}

/// `GET http://…/api/serve/applications/ (read the Serve config)`.
pub fn describe(method: Method, url: &str, call: &str) -> String {
    format!("{} {url} ({call})", method.as_str())
}

/// The start of a body, on one line, for an error message.
pub fn quote(body: &str) -> String {
    support::quote(body, QUOTED_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_one_line_and_bounded() {
        assert_eq!(quote("a\nb"), "`a b`");
        let long = "x".repeat(500);
        let quoted = quote(&long);
        assert!(quoted.ends_with("…`") && quoted.len() < 220, "{quoted}");
    }
}
