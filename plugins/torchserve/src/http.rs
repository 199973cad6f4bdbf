//! The plugin's HTTP client: one `ureq` agent (rustls with the `ring` provider), a time
//! limit on every request, a time budget for all the requests of one plugin call, and
//! errors that name the call and the URL.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::TorchServeError;

/// Largest answer body read (model descriptions and metrics pages are far smaller).
const BODY_LIMIT: u64 = 8 * 1024 * 1024;

/// How many characters of an unexpected answer an error message quotes.
const QUOTED_CHARS: usize = 200;

/// A blocking HTTP client with one time limit for every request and an optional deadline
/// shared by the requests of one plugin call.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    timeout: Duration,
    /// End of the current plugin call's budget, with the budget's length.
    deadline: Cell<Option<(Instant, Duration)>>,
}

/// What a server answered: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// HTTP methods the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl Client {
    /// A client whose every request (connect, send, answer) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
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
    fn next_limit(
        &self,
        method: Method,
        url: &str,
        call: &str,
    ) -> Result<Duration, TorchServeError> {
        let Some((deadline, budget)) = self.deadline.get() else {
            return Ok(self.timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(TorchServeError::Budget {
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

    /// Sends one request without a body; `call` says what it is for (used in errors).
    pub fn send(&self, method: Method, url: &str, call: &str) -> Result<Answer, TorchServeError> {
        let limit = self.next_limit(method, url, call)?;
        let result = match method {
            Method::Get => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .call(),
            Method::Delete => self
                .agent
                .delete(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .call(),
            // TorchServe answers 500 to an empty body declared as JSON: send none at all.
            Method::Post => self
                .agent
                .post(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .send_empty(),
        };
        let mut response = result
            .map_err(|e| transport_error(method, url, call, limit, self.budget_note(limit), e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| transport_error(method, url, call, limit, self.budget_note(limit), e))?;
        Ok(Answer { status, body })
    }

    /// Sends a request that must answer 2xx.
    pub fn expect_ok(
        &self,
        method: Method,
        url: &str,
        call: &str,
    ) -> Result<String, TorchServeError> {
        let answer = self.send(method, url, call)?;
        if (200..300).contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(TorchServeError::Status {
                call: describe(method, url, call),
                status: answer.status,
                body: quote(&answer.body),
            })
        }
    }

    /// `GET` that must answer 2xx with a JSON document.
    pub fn get_json(&self, url: &str, call: &str) -> Result<Value, TorchServeError> {
        let body = self.expect_ok(Method::Get, url, call)?;
        parse_json(&body, Method::Get, url, call)
    }
}

fn transport_error(
    method: Method,
    url: &str,
    call: &str,
    limit: Duration,
    note: String,
    error: ureq::Error,
) -> TorchServeError {
    let call = describe(method, url, call);
    match error {
        ureq::Error::Timeout(_) => TorchServeError::Timeout {
            call,
            limit_ms: limit.as_millis() as u64,
            note,
        },
        ureq::Error::Io(e) => TorchServeError::Unreachable {
            call,
            detail: e.to_string(),
        },
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TorchServeError::Unreachable {
            call,
            detail: error.to_string(),
        },
        other => TorchServeError::Garbage {
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
) -> Result<Value, TorchServeError> {
    serde_json::from_str(body).map_err(|e| TorchServeError::Garbage {
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
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTED_CHARS)
        .collect();
    let one_line = one_line.trim();
    if body.chars().count() > QUOTED_CHARS {
        format!("`{one_line}…`")
    } else {
        format!("`{one_line}`")
    }
}

/// Percent-encodes a query value (model names and archive URLs).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("small--r0"), "small--r0");
        assert_eq!(
            encode_query("file:///a b/c.mar"),
            "file%3A%2F%2F%2Fa%20b%2Fc.mar"
        );
    }

    #[test]
    fn quotes_are_one_line_and_bounded() {
        assert_eq!(quote("a\nb"), "`a b`");
        let long = "x".repeat(500);
        let quoted = quote(&long);
        assert!(quoted.ends_with("…`") && quoted.len() < 220, "{quoted}");
    }
}
