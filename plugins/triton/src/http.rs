//! The plugin's HTTP client: the support crate's client (TLS for `https://` URLs) with the
//! configured headers on every request, and its errors turned into the plugin's, with
//! Triton's `{"error": "..."}` message read out of a failed answer.

use std::time::Duration;

use infadapt_plugin_support::http::{ClientOptions, HttpClient, HttpError, Method, TransportKind};
use serde_json::Value;

use crate::TritonError;

/// A blocking client for one Triton server.
#[derive(Debug, Clone)]
pub struct Client {
    inner: HttpClient,
    /// Limit for ordinary calls (index, config, metrics, health, unload).
    pub timeout: Duration,
}

/// TLS settings for `https://` URLs.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM file with the certificates to trust instead of the built-in web roots.
    pub ca_file: Option<String>,
}

impl Client {
    pub fn new(
        headers: Vec<(String, String)>,
        timeout: Duration,
        tls: &TlsSettings,
    ) -> Result<Client, TritonError> {
        let mut options = ClientOptions::new(timeout);
        options.headers = headers;
        options.ca_file = tls.ca_file.clone();
        let inner = HttpClient::new(&options).map_err(|e| match e {
            HttpError::TlsSettings(detail) => TritonError::Config(format!("tls_ca_file: {detail}")),
            other => TritonError::Config(other.to_string()),
        })?;
        Ok(Client { inner, timeout })
    }

    /// GETs `url` within `timeout`; the answer text of a 2xx status.
    pub fn get_text(&self, url: &str, timeout: Duration) -> Result<String, TritonError> {
        self.inner
            .expect_ok(Method::Get, url, None, timeout)
            .map_err(plugin_error)
    }

    /// GETs `url` and parses the answer as JSON.
    pub fn get_json(&self, url: &str, timeout: Duration) -> Result<Value, TritonError> {
        self.inner
            .json(Method::Get, url, None, timeout)
            .map_err(plugin_error)
    }

    /// POSTs `body` (or nothing) to `url` with the time limit `timeout`; the answer text.
    pub fn post(
        &self,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<String, TritonError> {
        self.inner
            .expect_ok(Method::Post, url, body, timeout)
            .map_err(plugin_error)
    }

    /// POSTs and parses the answer as JSON.
    pub fn post_json(
        &self,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, TritonError> {
        self.inner
            .json(Method::Post, url, body, timeout)
            .map_err(plugin_error)
    }
}

/// The plugin's error for a failed request: no connection is `Unreachable`, a failed answer
/// `Status` with Triton's message, anything else `Protocol`.
fn plugin_error(error: HttpError) -> TritonError {
    match error {
        HttpError::Timeout { call, limit } => TritonError::Timeout {
            call,
            seconds: limit.as_secs_f64(),
        },
        HttpError::Transport {
            call,
            kind: TransportKind::Unreachable,
            reading_answer: false,
            detail,
        } => TritonError::Unreachable { call, detail },
        HttpError::Transport {
            call,
            reading_answer,
            detail,
            ..
        } => TritonError::Protocol {
            call,
            detail: if reading_answer {
                format!("reading the answer: {detail}")
            } else {
                detail
            },
        },
        HttpError::Status { call, status, body } => TritonError::Status {
            call,
            status,
            body: server_message(&body),
        },
        HttpError::NotJson { call, error, body } => TritonError::Protocol {
            call,
            detail: format!(
                "the answer is not JSON ({error}): {}",
                body.chars().take(120).collect::<String>()
            ),
        },
        HttpError::TlsNotBuilt { call } => TritonError::Protocol {
            call,
            detail: "https:// needs the plugin built with TLS".into(),
        },
        HttpError::TlsSettings(detail) => TritonError::Config(format!("tls_ca_file: {detail}")),
    }
}

/// Triton's `{"error": "..."}` message, or the start of the body.
fn server_message(text: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text)
        && let Some(Value::String(message)) = map.get("error")
    {
        return message.clone();
    }
    text.chars().take(300).collect()
}
