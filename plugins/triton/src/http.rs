//! The plugin's HTTP client: one `ureq` agent (rustls with the `ring` provider), the
//! configured headers on every request, a time limit on every call, and errors that name
//! the call and the URL.

use std::time::Duration;

use serde_json::Value;

use crate::TritonError;

/// Largest answer body read (model configs and metrics pages are far smaller).
const BODY_LIMIT: u64 = 8 * 1024 * 1024;

/// A blocking client for one Triton server.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
    /// Limit for ordinary calls (index, config, metrics, health, unload).
    pub timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold credentials: only their names are shown.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Client")
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
        let mut tls_config =
            ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(path) = &tls.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                TritonError::Config(format!("tls_ca_file: cannot read {path}: {e}"))
            })?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.to_owned()),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(TritonError::Config(format!(
                            "tls_ca_file: {path} is not valid PEM: {e}"
                        )));
                    }
                }
            }
            if certs.is_empty() {
                return Err(TritonError::Config(format!(
                    "tls_ca_file: {path} holds no certificate"
                )));
            }
            tls_config = tls_config.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls_config.build())
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            headers,
            timeout,
        })
    }

    /// GETs `url` within `timeout`; the answer text of a 2xx status.
    pub fn get_text(&self, url: &str, timeout: Duration) -> Result<String, TritonError> {
        let mut request = self.agent.get(url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call();
        finish("GET", url, timeout, response)
    }

    /// GETs `url` and parses the answer as JSON.
    pub fn get_json(&self, url: &str, timeout: Duration) -> Result<Value, TritonError> {
        let text = self.get_text(url, timeout)?;
        parse_json("GET", url, &text)
    }

    /// POSTs `body` (or nothing) to `url` with the time limit `timeout`; the answer text.
    pub fn post(
        &self,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<String, TritonError> {
        let mut request = self.agent.post(url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.config().timeout_global(Some(timeout)).build();
        let response = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        };
        finish("POST", url, timeout, response)
    }

    /// POSTs and parses the answer as JSON.
    pub fn post_json(
        &self,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, TritonError> {
        let text = self.post(url, body, timeout)?;
        parse_json("POST", url, &text)
    }
}

fn finish(
    method: &str,
    url: &str,
    timeout: Duration,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<String, TritonError> {
    let mut response = response.map_err(|e| match e {
        ureq::Error::Timeout(_) => TritonError::Timeout {
            call: format!("{method} {url}"),
            seconds: timeout.as_secs_f64(),
        },
        ureq::Error::Io(ref io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
            ) =>
        {
            TritonError::Unreachable {
                call: format!("{method} {url}"),
                detail: e.to_string(),
            }
        }
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TritonError::Unreachable {
            call: format!("{method} {url}"),
            detail: e.to_string(),
        },
        other => TritonError::Protocol {
            call: format!("{method} {url}"),
            detail: other.to_string(),
        },
    })?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => TritonError::Timeout {
                call: format!("{method} {url}"),
                seconds: timeout.as_secs_f64(),
            },
            other => TritonError::Protocol {
                call: format!("{method} {url}"),
                detail: format!("reading the answer: {other}"),
            },
        })?;
    if !(200..300).contains(&status) {
        return Err(TritonError::Status {
            call: format!("{method} {url}"),
            status,
            body: server_message(&text),
        });
    }
    Ok(text)
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

fn parse_json(method: &str, url: &str, text: &str) -> Result<Value, TritonError> {
    serde_json::from_str(text).map_err(|e| TritonError::Protocol {
        call: format!("{method} {url}"),
        detail: format!(
            "the answer is not JSON ({e}): {}",
            text.chars().take(120).collect::<String>()
        ),
    })
}
