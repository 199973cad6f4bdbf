//! The daemon configuration texts the integration tests start from: a whole service on the
//! simulated backend, one resnet pipeline with a given backend table (with and without load
//! and solver settings), and the `[daemon]` table of the plugin tests.

use std::path::Path;

use super::repo_root;

/// A service with its API on `port` and state in `state_dir`: one resnet pipeline on the
/// simulated backend (peak `peak_rps`, 60 s days), a 1 s period.
pub(crate) fn config_text(port: u16, state_dir: &Path, peak_rps: u32) -> String {
    let catalog = repo_root().join("etc/catalogs/resnet-synthetic.toml");
    format!(
        r#"
[daemon]
period_s = 1
state_dir = "{state}"
grace_s = 5
[daemon.http]
listen = "127.0.0.1:{port}"

[[pipeline]]
name = "resnet"
catalog = "{catalog}"
slo_ms = 750
initial_load_rps = 30
[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50"]
core_options = [1, 2, 4]
max_replicas = 10
[pipeline.solver]
time_limit_ms = 200
[pipeline.backend]
type = "sim"
peak_rps = {peak_rps}
day_s = 60
"#,
        state = state_dir.display(),
        catalog = catalog.display(),
    )
}

/// One pipeline of the plugin test: the resnet stage with a name and a backend table.
pub(crate) fn pipeline_text(name: &str, backend: &str) -> String {
    let catalog = repo_root().join("etc/catalogs/resnet-synthetic.toml");
    format!(
        r#"
[[pipeline]]
name = "{name}"
catalog = "{catalog}"
slo_ms = 750
initial_load_rps = 30
[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50"]
core_options = [1, 2]
max_replicas = 6
[pipeline.solver]
time_limit_ms = 200
[pipeline.backend]
{backend}
"#,
        catalog = catalog.display(),
    )
}

/// One pipeline on the resnet catalog with `backend` as its backend table.
pub(crate) fn bare_pipeline_text(name: &str, backend: &str) -> String {
    let catalog = repo_root().join("etc/catalogs/resnet-synthetic.toml");
    format!(
        "\n[[pipeline]]\nname = \"{name}\"\ncatalog = \"{catalog}\"\nslo_ms = 750\n\
         [[pipeline.stage]]\nname = \"classify\"\nvariants = [\"resnet18\", \"resnet50\"]\n\
         core_options = [1, 2]\nmax_replicas = 4\n[pipeline.backend]\n{backend}\n",
        catalog = catalog.display(),
    )
}

/// The `[daemon]` table: plugins from `plugins`, state under `state` (never the system's
/// state directory), no HTTP API.
pub(crate) fn daemon_table(plugins: &Path, state: &Path, extra: &str) -> String {
    format!(
        "[daemon]\nperiod_s = 1\nbackend_timeout_s = 2\ngrace_s = 2\nplugin_dirs = [\"{}\"]\n\
         state_dir = \"{}\"\n{extra}[daemon.http]\nenabled = false\n",
        plugins.display(),
        state.display()
    )
}
