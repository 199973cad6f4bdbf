//! `infadaptd pause PIPELINE` and `infadaptd resume PIPELINE`: ask the running service,
//! through its HTTP API (`POST /v1/pipelines/{name}/pause` or `…/resume`), to stop or
//! start applying a pipeline's decisions. The address and the bearer token come from the
//! service's configuration file (`[daemon.http]` `listen` or `unix`, and `token_file`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::api::access::read_token_file;
use crate::commands::stderr::CommandFailure;
use crate::config::{DEFAULT_CONFIG_PATH, HttpListen, load_config};
use crate::outln;

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The pipeline, as named in the configuration.
    pub pipeline: String,
    /// The service's configuration file (for the API's address and token file).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Pauses (`paused`) or resumes the pipeline `args` names.
pub fn run(args: &PauseArgs, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let config = match load_config(&args.config) {
        Ok(config) => config,
        Err(diagnostics) => bail!(CommandFailure::usage().diagnostics(&diagnostics)),
    };
    let Some(token_file) = &config.daemon.token_file else {
        bail!(CommandFailure::usage().unlabelled_in(
            args.config.display(),
            "the API's write endpoints are off: set `token_file = PATH` in [daemon.http] \
             (a file holding the token, readable by the service user only) and restart the \
             service"
        ));
    };
    let token = read_token_file(token_file).map_err(anyhow::Error::msg)?;
    if args.pipeline.is_empty()
        || !args
            .pipeline
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!(CommandFailure::usage().unlabelled(format_args!(
            "`{}` is not a pipeline name this command can send (letters, digits, `-`, `_`, `.`)",
            args.pipeline
        )));
    }
    let path = format!("/v1/pipelines/{}/{verb}", args.pipeline);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let response = match &config.daemon.http {
        HttpListen::Disabled => {
            bail!(CommandFailure::usage().unlabelled_in(
                args.config.display(),
                "the HTTP API is off ([daemon.http] enabled = false)"
            ));
        }
        HttpListen::Tcp(address) => {
            let mut stream = std::net::TcpStream::connect_timeout(address, TIMEOUT)
                .with_context(|| format!("cannot reach the service's API at {address}"))?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            exchange(&mut stream, &request)?
        }
        HttpListen::Unix(socket) => {
            let mut stream =
                std::os::unix::net::UnixStream::connect(socket).with_context(|| {
                    format!("cannot reach the service's API at {}", socket.display())
                })?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            exchange(&mut stream, &request)?
        }
    };
    let (code, body) = parse_response(&response)?;
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if code != 200 {
        let message = json["error"].as_str().unwrap_or(body.trim());
        bail!(
            "the service refused to {verb} `{}` (HTTP {code}): {message}",
            args.pipeline
        );
    }
    let changed = json["changed"].as_bool().unwrap_or(true);
    let what = match (paused, changed) {
        (true, true) => "paused: its decisions are recorded, not applied",
        (true, false) => "was already paused",
        (false, true) => "resumed: its decisions are applied again",
        (false, false) => "was not paused",
    };
    outln!("pipeline `{}` {what}", args.pipeline);
    Ok(())
}

/// Sends `request` and reads the whole response (the request asks to close after it).
fn exchange(
    stream: &mut (impl std::io::Read + std::io::Write),
    request: &str,
) -> anyhow::Result<String> {
    stream
        .write_all(request.as_bytes())
        .context("sending the request")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("reading the service's answer")?;
    Ok(response)
}

/// The status code and the body of an HTTP/1.1 response.
fn parse_response(response: &str) -> anyhow::Result<(u16, &str)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the service's answer is not HTTP")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("the service's answer has no status")?;
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gives_its_status_and_body() {
        let (code, body) =
            parse_response("HTTP/1.1 401 Unauthorized\r\ncontent-type: x\r\n\r\n{\"error\":\"e\"}")
                .expect("parsed");
        assert_eq!((code, body), (401, "{\"error\":\"e\"}"));
        assert!(parse_response("garbage").is_err());
    }
}
