//! The plugin's HTTP client: one `ureq` agent (rustls with the `ring` provider), a time
//! limit on every request, and errors that name the call and the URL.

use std::time::Duration;

use serde_json::Value;

use crate::TorchServeError;

/// Largest answer body read (model descriptions and metrics pages are far smaller).
const BODY_LIMIT: u64 = 8 * 1024 * 1024;

/// How many characters of an unexpected answer an error message quotes.
const QUOTED_CHARS: usize = 200;

/// A blocking HTTP client with one time limit for every request.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    timeout: Duration,
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
        }
    }

    /// Sends one request without a body; `call` says what it is for (used in errors).
    pub fn send(&self, method: Method, url: &str, call: &str) -> Result<Answer, TorchServeError> {
        let result = match method {
            Method::Get => self.agent.get(url).call(),
            Method::Delete => self.agent.delete(url).call(),
            // TorchServe answers 500 to an empty body declared as JSON: send none at all.
            Method::Post => self.agent.post(url).send_empty(),
        };
        let mut response = result.map_err(|e| self.transport_error(method, url, call, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.transport_error(method, url, call, e))?;
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

    fn transport_error(
        &self,
        method: Method,
        url: &str,
        call: &str,
        error: ureq::Error,
    ) -> TorchServeError {
        let call = describe(method, url, call);
        match error {
            ureq::Error::Timeout(_) => TorchServeError::Timeout {
                call,
                limit_ms: self.timeout.as_millis() as u64,
            },
            ureq::Error::Io(e) => TorchServeError::Unreachable {
                call,
                detail: e.to_string(),
            },
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                TorchServeError::Unreachable {
                    call,
                    detail: error.to_string(),
                }
            }
            other => TorchServeError::Garbage {
                call,
                detail: format!("not a valid HTTP answer: {other}"),
            },
        }
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
