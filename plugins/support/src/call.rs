//! The HTTP side of one plugin call: the support crate's client with a time limit on every
//! request and a time budget for all the requests of one plugin call, and the errors of a
//! call to a backend's server, each naming the call and the URL.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self as support, Answer, ClientOptions, HttpClient, HttpError, Method};

/// How many characters of an unexpected answer an error message quotes.
const QUOTED_CHARS: usize = 200;

/// What went wrong with a request of a plugin call; `call` reads
/// `GET http://…/models (list models)`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{call}: server unreachable: {detail}")]
    Unreachable { call: String, detail: String },
    #[error("{call}: no answer within {limit_ms} ms{note}")]
    Timeout {
        call: String,
        limit_ms: u64,
        note: String,
    },
    #[error("{call}: not sent, the call's {budget_ms} ms time budget is spent")]
    Budget { call: String, budget_ms: u64 },
    #[error("{call}: answered status {status}: {body}")]
    Status {
        call: String,
        status: u16,
        body: String,
    },
    #[error("{call}: {detail}")]
    Garbage { call: String, detail: String },
}

impl CallError {
    /// Whether the server could not be asked (unreachable, too slow, no time left): the
    /// backend is unavailable, not wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CallError::Unreachable { .. } | CallError::Timeout { .. } | CallError::Budget { .. }
        )
    }
}

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
    fn next_limit(&self, method: Method, url: &str, call: &str) -> Result<Duration, CallError> {
        let Some((deadline, budget)) = self.deadline.get() else {
            return Ok(self.timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(CallError::Budget {
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
    ) -> Result<Answer, CallError> {
        let limit = self.next_limit(method, url, call)?;
        self.inner
            .send(method, url, body, limit)
            .map_err(|e| transport_error(method, url, call, self.budget_note(limit), e))
    }

    /// Sends a request that must answer 2xx; its body.
    pub fn expect_ok(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: &str,
    ) -> Result<String, CallError> {
        let answer = self.send(method, url, body, call)?;
        if answer.is_success() {
            Ok(answer.body)
        } else {
            Err(CallError::Status {
                call: describe(method, url, call),
                status: answer.status,
                body: quote(&answer.body),
            })
        }
    }

    /// `GET` that must answer 2xx with a JSON document.
    pub fn get_json(&self, url: &str, call: &str) -> Result<Value, CallError> {
        let body = self.expect_ok(Method::Get, url, None, call)?;
        parse_json(&body, Method::Get, url, call)
    }
}

/// The error for a request that gave no answer: any connection trouble is `Unreachable`, an
/// answer that is no HTTP `Garbage`.
fn transport_error(
    method: Method,
    url: &str,
    call: &str,
    note: String,
    error: HttpError,
) -> CallError {
    let call = describe(method, url, call);
    match error {
        HttpError::Timeout { limit, .. } => CallError::Timeout {
            call,
            limit_ms: limit.as_millis() as u64,
            note,
        },
        HttpError::Transport {
            kind: support::TransportKind::Unreachable | support::TransportKind::Io,
            detail,
            ..
        } => CallError::Unreachable { call, detail },
        other => CallError::Garbage {
            call,
            detail: format!("not a valid HTTP answer: {other}"),
        },
    }
}

/// Parses a JSON answer, naming the call when it is not JSON.
pub fn parse_json(body: &str, method: Method, url: &str, call: &str) -> Result<Value, CallError> {
    serde_json::from_str(body).map_err(|e| CallError::Garbage {
        call: describe(method, url, call),
        detail: format!("answer is not JSON ({e}): {}", quote(body)),
    })
}

/// `GET http://…/models (list models)`.
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

    #[test]
    fn a_spent_budget_sends_nothing_and_says_so() {
        let client = Client::new(Duration::from_secs(1));
        client.start_call(Duration::ZERO);
        let error = client
            .get_json("http://127.0.0.1:9/x", "read x")
            .unwrap_err();
        assert!(error.is_unavailable());
        assert_eq!(
            error.to_string(),
            "GET http://127.0.0.1:9/x (read x): not sent, the call's 0 ms time budget is spent"
        );
    }

    #[test]
    fn answers_that_are_not_json_name_the_call_and_quote_the_body() {
        let error = parse_json("<html>", Method::Get, "http://h/x", "read x").unwrap_err();
        assert!(!error.is_unavailable());
        let text = error.to_string();
        assert!(
            text.starts_with("GET http://h/x (read x): answer is not JSON")
                && text.ends_with("`<html>`"),
            "{text}"
        );
    }
}
