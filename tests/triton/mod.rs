//! Tests against a real NVIDIA Triton Inference Server (2.51, CPU, python backend) started
//! here from the venv that `tests/triton/install.sh` creates. The servers run one at a time
//! (2-core machines); a missing venv or a server that cannot start fails the test.

mod e2e;
pub(crate) mod plugin;
mod profile;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One real server at a time (shared with the TorchServe tests).
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    crate::one_real_server_at_a_time()
}

/// A test model variant: each batch does `rounds` products of an `n`×`n` matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestVariant {
    pub name: &'static str,
    pub n: u32,
    pub rounds: u32,
}

/// Three variants whose work grows: about 1, 3 and 10 ms per batch on one core.
pub(crate) const VARIANTS: [TestVariant; 3] = [
    TestVariant {
        name: "tiny",
        n: 64,
        rounds: 2,
    },
    TestVariant {
        name: "small",
        n: 128,
        rounds: 4,
    },
    TestVariant {
        name: "large",
        n: 256,
        rounds: 4,
    },
];

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/integration-<hash>
    exe.ancestors()
        .nth(3)
        .expect("test binary in <target>/<profile>/deps")
        .to_owned()
}

/// The venv holding `nvidia-pytriton`: `$INFADAPT_TRITON_VENV`, else `<target>/triton-venv`.
pub(crate) fn venv() -> PathBuf {
    let venv = std::env::var_os("INFADAPT_TRITON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("triton-venv"));
    let python = venv.join("bin/python3");
    assert!(
        python.exists(),
        "the Triton test server is not installed at {} — run `tests/triton/install.sh {}` \
         (or set INFADAPT_TRITON_VENV to a venv made by it)",
        venv.display(),
        venv.display()
    );
    venv
}

/// `<venv>/lib/python3.X/site-packages/pytriton/tritonserver` and the venv's Python minor.
fn server_dir(venv: &Path) -> (PathBuf, String) {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).expect("venv lib dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(minor) = name.strip_prefix("python") {
            let dir = entry.path().join("site-packages/pytriton/tritonserver");
            if dir.join("bin/tritonserver").exists() {
                return (dir, minor.to_owned());
            }
        }
    }
    panic!(
        "no pytriton/tritonserver in {} — run tests/triton/install.sh",
        venv.display()
    );
}

pub(crate) use crate::support::free_port;

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "infadapt-triton-{label}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes a model repository with the given variants (python backend, batching up to 8,
/// dynamic batching, one CPU instance).
pub(crate) fn write_repository(dir: &Path, variants: &[TestVariant]) {
    let model = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/triton/model.py"),
    )
    .expect("tests/triton/model.py");
    for v in variants {
        let version = dir.join(v.name).join("1");
        std::fs::create_dir_all(&version).expect("model dir");
        std::fs::write(version.join("model.py"), &model).expect("model.py");
        let config = format!(
            r#"name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
parameters {{ key: "work_n" value {{ string_value: "{n}" }} }}
parameters {{ key: "work_rounds" value {{ string_value: "{rounds}" }} }}
"#,
            name = v.name,
            n = v.n,
            rounds = v.rounds
        );
        std::fs::write(dir.join(v.name).join("config.pbtxt"), config).expect("config.pbtxt");
    }
}

/// A running `tritonserver`, stopped (by PID) when dropped.
pub(crate) struct TritonServer {
    child: Child,
    pub http_port: u16,
    pub metrics_port: u16,
    dir: PathBuf,
}

impl TritonServer {
    /// Starts a server over a repository of `variants` with `loaded` loaded at start, in
    /// explicit model-control mode, and waits until it is ready (panics with its log when
    /// it cannot start).
    pub(crate) fn start(variants: &[TestVariant], loaded: &[&str]) -> TritonServer {
        let venv = venv();
        let (server, minor) = server_dir(&venv);
        let stub = server.join(format!(
            "python_backend_stubs/{minor}/triton_python_backend_stub"
        ));
        let installed = server.join("backends/python/triton_python_backend_stub");
        if !installed.exists() {
            std::fs::copy(&stub, &installed).unwrap_or_else(|e| {
                panic!(
                    "cannot copy the python backend stub {}: {e}",
                    stub.display()
                )
            });
        }
        let dir = scratch("server");
        let repo = dir.join("models");
        write_repository(&repo, variants);
        let http_port = free_port();
        let grpc_port = free_port();
        let metrics_port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(server.join("bin/tritonserver"));
        command
            .arg("--model-repository")
            .arg(&repo)
            .arg("--model-control-mode=explicit")
            .args(["--http-port", &http_port.to_string()])
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1"])
            .args([
                "--allow-gpu-metrics=false",
                "--pinned-memory-pool-byte-size=0",
            ])
            .args(["--exit-timeout-secs=5", "--metrics-interval-ms=500"])
            .arg("--backend-directory")
            .arg(server.join("backends"))
            .env("PATH", path)
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for model in loaded {
            command.arg(format!("--load-model={model}"));
        }
        let child = command.spawn().expect("cannot start tritonserver");
        let mut server = TritonServer {
            child,
            http_port,
            metrics_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("tritonserver exited with {status}:\n{}", server.log_tail());
            }
            if http("GET", server.http_port, "/v2/health/ready", None).is_ok_and(|(s, _)| s == 200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tritonserver not ready within 60 s:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// A handle for looking at a running server from another thread (never stops it).
    pub(crate) fn view(http_port: u16) -> ServerView {
        ServerView { http_port }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub(crate) fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub(crate) fn log_tail(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("server.log")) {
            let _ = f.read_to_end(&mut bytes);
        }
        let start = bytes.len().saturating_sub(4000);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The model's config as the server reports it.
    pub(crate) fn config(&self, model: &str) -> Value {
        json_of(http(
            "GET",
            self.http_port,
            &format!("/v2/models/{model}/config"),
            None,
        ))
        .expect("model config")
    }

    pub(crate) fn state_of(&self, model: &str) -> String {
        self.index()
            .into_iter()
            .find(|(m, _)| m == model)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }

    /// One inference request straight to the server.
    pub(crate) fn infer(&self, model: &str) -> Result<Value, String> {
        json_of(http(
            "POST",
            self.http_port,
            &format!("/v2/models/{model}/infer"),
            Some(&infer_body(1.0)),
        ))
    }
}

impl Drop for TritonServer {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A read-only look at a server by its port.
pub(crate) struct ServerView {
    pub http_port: u16,
}

/// What the tests read from a server.
pub(crate) trait Served {
    fn http_port(&self) -> u16;

    /// Model name → state from the repository index.
    fn index(&self) -> Vec<(String, String)> {
        let answer = json_of(http(
            "POST",
            self.http_port(),
            "/v2/repository/index",
            Some(&json!({})),
        ))
        .unwrap_or(Value::Null);
        answer
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap_or("").to_owned(),
                            e["state"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Served for ServerView {
    fn http_port(&self) -> u16 {
        self.http_port
    }
}

impl Served for TritonServer {
    fn http_port(&self) -> u16 {
        self.http_port
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (connection closed after it, 10 s limit):
/// the status and the body.
pub(crate) fn http(
    method: &str,
    port: u16,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("{method} {path}: connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    // Read the head, then exactly content-length bytes (the server may keep the
    // connection open), or to the end for chunked or unsized answers.
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{method} {path}: read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{method} {path}: connection closed before an answer"
            ));
        }
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line {head:?}"))?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    loop {
        if length.is_some_and(|n| answer.len() >= head_end + n) {
            break;
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{method} {path}: read: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&answer[head_end..]).into_owned();
    let chunked = head.contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(&rest) } else { rest };
    Ok((status, body))
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The JSON body of a 2xx answer.
pub(crate) fn json_of(answer: Result<(u16, String), String>) -> Result<Value, String> {
    let (status, body) = answer?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
}

/// Instances summed over a served config's instance groups.
pub(crate) fn instances_of(config: &Value) -> u64 {
    config["instance_group"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| g["count"].as_u64().unwrap_or(1))
                .sum()
        })
        .unwrap_or(0)
}

/// A KServe v2 request for the test models: one row of 4 floats.
pub(crate) fn infer_body(x: f32) -> Value {
    json!({ "inputs": [{ "name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                         "data": [x, x + 1.0, x + 2.0, x + 3.0] }] })
}

/// Polls `check` every 200 ms until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
