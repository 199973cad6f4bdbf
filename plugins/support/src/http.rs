//! The plugins' blocking HTTP client: one `ureq` agent, configured headers on every request,
//! a time limit on every call, a cap on the answer's size, and errors that name the method
//! and the URL. `https://` needs the `tls` feature (rustls with the `ring` provider).

use std::time::Duration;

use serde_json::Value;

/// Largest answer body read unless the options say otherwise (model configs, model lists and
/// metrics pages are far smaller).
pub const DEFAULT_BODY_LIMIT: u64 = 8 * 1024 * 1024;

/// Whether this build can speak `https://` (the `tls` feature).
pub const TLS_BUILT: bool = cfg!(feature = "tls");

/// HTTP methods the plugins use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request failed before a whole answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection: refused, reset, not connected, name not found.
    Unreachable,
    /// Another input/output error on the connection.
    Io,
    /// The answer was no valid HTTP, or too large.
    Protocol,
}

/// Why a request gave no usable answer. `call` is `METHOD URL`.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{call}: no answer within {} ms", limit.as_millis())]
    Timeout { call: String, limit: Duration },
    #[error("{call}: {}{detail}", if *reading_answer { "reading the answer: " } else { "" })]
    Transport {
        call: String,
        kind: TransportKind,
        /// Whether the status had come and reading the body failed.
        reading_answer: bool,
        detail: String,
    },
    #[error("{call}: status {status}: {}", body.chars().take(200).collect::<String>())]
    Status {
        call: String,
        status: u16,
        /// The answer's text (at most the body limit).
        body: String,
    },
    #[error("{call}: the answer is not JSON ({error}): {}", body.chars().take(120).collect::<String>())]
    NotJson {
        call: String,
        error: String,
        body: String,
    },
    #[error("{call}: https:// needs the plugin built with the `tls` feature")]
    TlsNotBuilt { call: String },
    /// The TLS settings cannot be used (CA file unreadable, no certificate in it).
    #[error("{0}")]
    TlsSettings(String),
}

/// What a server answered: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// How to build an [`HttpClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit for a whole request (connect, send, answer) when the call names none.
    pub timeout: Duration,
    /// Sent with every request (credentials, for instance: `Debug` shows only the names).
    pub headers: Vec<(String, String)>,
    /// Largest answer body read.
    pub body_limit: u64,
    /// PEM file with the certificates to trust for `https://` instead of the built-in web
    /// roots (only with the `tls` feature).
    pub ca_file: Option<String>,
}

impl ClientOptions {
    /// No headers, the default body limit, web roots.
    pub fn new(timeout: Duration) -> ClientOptions {
        ClientOptions {
            timeout,
            headers: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            ca_file: None,
        }
    }
}

/// A blocking HTTP client (cheap to clone: the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
    timeout: Duration,
    body_limit: u64,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold credentials: only their names are shown.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpClient")
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new(options: &ClientOptions) -> Result<HttpClient, HttpError> {
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(options.timeout));
        #[cfg(feature = "tls")]
        let builder = builder.tls_config(tls_config(options.ca_file.as_deref())?);
        #[cfg(not(feature = "tls"))]
        refuse_ca_file(options.ca_file.as_deref())?;
        let config = builder.build();
        Ok(HttpClient {
            agent: ureq::Agent::new_with_config(config),
            headers: options.headers.clone(),
            timeout: options.timeout,
            body_limit: options.body_limit,
        })
    }

    /// The limit of a request whose call names none.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request within `limit` and reads the answer, whatever its status. A `body`
    /// goes as JSON; without one nothing is sent (some servers refuse an empty body declared
    /// as JSON).
    pub fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Answer, HttpError> {
        let call = || format!("{method} {url}");
        if !TLS_BUILT && url.starts_with("https://") {
            return Err(HttpError::TlsNotBuilt { call: call() });
        }
        let response = match method {
            Method::Get => self.without_body(self.agent.get(url), limit).call(),
            Method::Delete => self.without_body(self.agent.delete(url), limit).call(),
            Method::Post => self.with_body(self.agent.post(url), limit, body),
            Method::Put => self.with_body(self.agent.put(url), limit, body),
        };
        let mut response = response.map_err(|e| transport_error(call(), limit, false, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.body_limit)
            .read_to_string()
            .map_err(|e| transport_error(call(), limit, true, e))?;
        Ok(Answer { status, body })
    }

    /// Sends a request that must answer 2xx; the answer's text.
    pub fn expect_ok(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<String, HttpError> {
        let answer = self.send(method, url, body, limit)?;
        if answer.is_success() {
            Ok(answer.body)
        } else {
            Err(HttpError::Status {
                call: format!("{method} {url}"),
                status: answer.status,
                body: answer.body,
            })
        }
    }

    /// Sends a request that must answer 2xx with a JSON document.
    pub fn json(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value, HttpError> {
        let text = self.expect_ok(method, url, body, limit)?;
        parse_json(method, url, &text)
    }

    /// `GET` that must answer 2xx with JSON, within the client's timeout.
    pub fn get_json(&self, url: &str) -> Result<Value, HttpError> {
        self.json(Method::Get, url, None, self.timeout)
    }

    /// `POST` that must answer 2xx with JSON, within the client's timeout.
    pub fn post_json(&self, url: &str, body: Option<&Value>) -> Result<Value, HttpError> {
        self.json(Method::Post, url, body, self.timeout)
    }

    /// `PUT` that must answer 2xx with JSON, within the client's timeout.
    pub fn put_json(&self, url: &str, body: Option<&Value>) -> Result<Value, HttpError> {
        self.json(Method::Put, url, body, self.timeout)
    }

    /// `DELETE` that must answer 2xx with JSON, within the client's timeout.
    pub fn delete_json(&self, url: &str) -> Result<Value, HttpError> {
        self.json(Method::Delete, url, None, self.timeout)
    }

    /// The status of a `GET` of `url` within the client's timeout, the body left unread (a
    /// health check).
    pub fn get_status(&self, url: &str) -> Result<u16, HttpError> {
        let call = || format!("GET {url}");
        if !TLS_BUILT && url.starts_with("https://") {
            return Err(HttpError::TlsNotBuilt { call: call() });
        }
        let response = self
            .without_body(self.agent.get(url), self.timeout)
            .call()
            .map_err(|e| transport_error(call(), self.timeout, false, e))?;
        Ok(response.status().as_u16())
    }

    fn without_body(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        limit: Duration,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request.config().timeout_global(Some(limit)).build()
    }

    fn with_body(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        limit: Duration,
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.config().timeout_global(Some(limit)).build();
        match body {
            Some(body) => request
                .header("content-type", "application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        }
    }
}

/// Parses an answer as JSON; the error names the call and quotes the start of the text.
pub fn parse_json(method: Method, url: &str, text: &str) -> Result<Value, HttpError> {
    serde_json::from_str(text).map_err(|e| HttpError::NotJson {
        call: format!("{method} {url}"),
        error: e.to_string(),
        body: text.to_owned(),
    })
}

fn transport_error(
    call: String,
    limit: Duration,
    reading_answer: bool,
    error: ureq::Error,
) -> HttpError {
    let kind = match &error {
        ureq::Error::Timeout(_) => return HttpError::Timeout { call, limit },
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportKind::Unreachable,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
            ) =>
        {
            TransportKind::Unreachable
        }
        ureq::Error::Io(_) => TransportKind::Io,
        _ => TransportKind::Protocol,
    };
    HttpError::Transport {
        call,
        kind,
        reading_answer,
        detail: error.to_string(),
    }
}

/// Rustls, trusting the certificates of `ca_file` or else the web roots.
#[cfg(feature = "tls")]
fn tls_config(ca_file: Option<&str>) -> Result<ureq::tls::TlsConfig, HttpError> {
    let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| HttpError::TlsSettings(format!("cannot read {path}: {e}")))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.to_owned()),
                Ok(_) => {}
                Err(e) => {
                    return Err(HttpError::TlsSettings(format!(
                        "{path} is not valid PEM: {e}"
                    )));
                }
            }
        }
        if certs.is_empty() {
            return Err(HttpError::TlsSettings(format!(
                "{path} holds no certificate"
            )));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(tls.build())
}

/// Without the `tls` feature there is no TLS to configure: a CA file is refused by name.
#[cfg(not(feature = "tls"))]
fn refuse_ca_file(ca_file: Option<&str>) -> Result<(), HttpError> {
    match ca_file {
        Some(path) => Err(HttpError::TlsSettings(format!(
            "{path}: a CA file needs the plugin built with the `tls` feature"
        ))),
        None => Ok(()),
    }
}

/// The start of a body, on one line and at most `chars` characters, in backquotes, for an
/// error message (`…` marks a cut).
pub fn quote(body: &str, chars: usize) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(chars)
        .collect();
    let one_line = one_line.trim();
    if body.chars().count() > chars {
        format!("`{one_line}…`")
    } else {
        format!("`{one_line}`")
    }
}

/// Percent-encodes a query value (model names, archive URLs).
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
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves one connection with `answer` (a whole HTTP response) and hands back the request
    /// it read; the URL to call.
    fn serve_once(answer: String) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, handle)
    }

    fn answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn client() -> HttpClient {
        let mut options = ClientOptions::new(Duration::from_secs(5));
        options.headers = vec![("x-token".into(), "secret".into())];
        HttpClient::new(&options).unwrap()
    }

    #[test]
    fn json_posts_carry_the_headers_and_the_body() {
        let (url, server) = serve_once(answer("200 OK", r#"{"ok":true}"#));
        let value = client()
            .post_json(&url, Some(&serde_json::json!({"a": 1})))
            .unwrap();
        assert_eq!(value["ok"], true);
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /x "), "{request}");
        assert!(request.contains("x-token: secret"), "{request}");
        assert!(
            request.contains("content-type: application/json"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"a":1}"#), "{request}");
        assert!(!format!("{:?}", client()).contains("secret"));
    }

    #[test]
    fn a_status_error_names_method_url_and_status() {
        let (url, server) = serve_once(answer("503 Service Unavailable", "busy"));
        let error = client().delete_json(&url).unwrap_err();
        server.join().unwrap();
        let HttpError::Status {
            status, ref body, ..
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!((status, body.as_str()), (503, "busy"));
        assert_eq!(error.to_string(), format!("DELETE {url}: status 503: busy"));
    }

    #[test]
    fn answers_that_are_not_json_or_too_large_are_errors() {
        let (url, server) = serve_once(answer("200 OK", "<html>"));
        let error = client().get_json(&url).unwrap_err();
        server.join().unwrap();
        assert!(matches!(error, HttpError::NotJson { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("GET {url}")));

        let mut options = ClientOptions::new(Duration::from_secs(5));
        options.body_limit = 10;
        let small = HttpClient::new(&options).unwrap();
        let (url, server) = serve_once(answer("200 OK", &"x".repeat(100)));
        let error = small
            .send(Method::Put, &url, None, Duration::from_secs(5))
            .unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(
                error,
                HttpError::Transport {
                    reading_answer: true,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        let limit = Duration::from_millis(200);
        let error = client().send(Method::Get, &url, None, limit).unwrap_err();
        assert!(matches!(error, HttpError::Timeout { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("GET {url}: no answer within 200 ms")
        );
        drop(listener);
        let error = client().get_status(&url).unwrap_err();
        assert!(
            matches!(
                error,
                HttpError::Transport {
                    kind: TransportKind::Unreachable,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_tls_feature_https_is_refused_by_name() {
        let error = client().get_json("https://127.0.0.1:1/").unwrap_err();
        assert!(matches!(error, HttpError::TlsNotBuilt { .. }), "{error:?}");
        let mut options = ClientOptions::new(Duration::from_secs(1));
        options.ca_file = Some("/ca.pem".into());
        assert!(HttpClient::new(&options).is_err());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("support-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "no pem here").unwrap();
        let mut options = ClientOptions::new(Duration::from_secs(1));
        options.ca_file = Some(path.display().to_string());
        let error = HttpClient::new(&options).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            error.to_string().contains("holds no certificate"),
            "{error}"
        );
    }

    #[test]
    fn quotes_are_one_line_and_bounded_and_queries_encoded() {
        assert_eq!(quote("a\nb", 200), "`a b`");
        let quoted = quote(&"x".repeat(500), 200);
        assert!(quoted.ends_with("…`") && quoted.len() < 220, "{quoted}");
        assert_eq!(encode_query("small--r0"), "small--r0");
        assert_eq!(
            encode_query("file:///a b/c.mar"),
            "file%3A%2F%2F%2Fa%20b%2Fc.mar"
        );
    }
}
