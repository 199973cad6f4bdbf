//! The cluster's nodes as the Ray dashboard reports them: per node its id, address, whether
//! it is alive, its logical resources in all and its metrics export port
//! (`GET /nodes?view=summary`), and the resources in use (the scheduler's CPUs, GPUs and
//! memory, `GET /api/cluster_status`: `loadMetricsReport.usageByNode`, `[used, total]` per
//! resource), read leniently into [`Node`]s; and the `nodes` of an observation with the CPUs
//! and GPUs this pipeline's own replicas hold on each.

use std::collections::BTreeMap;

use infadapt_plugin_abi::messages::NodeMessage;
use serde_json::Value;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    /// Its address (`nodeManagerAddress`, else the summary's `ip`).
    pub address: String,
    pub alive: bool,
    pub cpus: f64,
    /// CPUs in use; `None` when the dashboard gave no usage for the node.
    pub cpus_used: Option<f64>,
    pub gpus: f64,
    pub gpus_used: Option<f64>,
    /// Memory available, bytes: the scheduler's `memory` resource not in use, else the
    /// host's available memory, when reported.
    pub memory_available: Option<f64>,
    /// Port of the node's Prometheus metrics page.
    pub metrics_port: Option<u16>,
}

impl Node {
    /// The node's metrics page, when it exports one.
    pub fn metrics_url(&self) -> Option<String> {
        let port = self.metrics_port.filter(|p| *p > 0)?;
        let host = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        Some(format!("http://{host}:{port}/metrics"))
    }
}

/// Reads the answer of `GET /nodes?view=summary`; `Err` says what is missing.
pub fn parse_nodes(answer: &Value) -> Result<Vec<Node>, String> {
    let data = answer
        .get("data")
        .ok_or_else(|| "the answer has no `data`".to_owned())?;
    let summary = data
        .get("summary")
        .and_then(Value::as_array)
        .ok_or_else(|| "the answer has no `data.summary` list".to_owned())?;
    let mut nodes = Vec::new();
    for entry in summary {
        let raylet = entry.get("raylet").unwrap_or(&Value::Null);
        let Some(id) = raylet
            .get("nodeId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
        else {
            continue;
        };
        let total = raylet.get("resourcesTotal").unwrap_or(&Value::Null);
        let resource = |name: &str| total.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        let address = raylet
            .get("nodeManagerAddress")
            .or_else(|| entry.get("ip"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let memory_available = entry
            .get("mem")
            .and_then(Value::as_array)
            .and_then(|mem| mem.get(1))
            .and_then(Value::as_f64);
        nodes.push(Node {
            id: id.to_owned(),
            address,
            alive: raylet.get("state").and_then(Value::as_str) == Some("ALIVE"),
            cpus: resource("CPU"),
            cpus_used: None,
            gpus: resource("GPU"),
            gpus_used: None,
            memory_available,
            metrics_port: raylet
                .get("metricsExportPort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok()),
        });
    }
    Ok(nodes)
}

/// Adds the resources in use from the answer of `GET /api/cluster_status`
/// (`data.clusterStatus.loadMetricsReport.usageByNode`: node id → resource →
/// `[used, total]`); `Err` when the answer has no such table. A node it does not list (not
/// active) keeps no usage; one it lists without GPUs uses none.
pub fn add_usage(nodes: &mut [Node], answer: &Value) -> Result<(), String> {
    let by_node = answer
        .pointer("/data/clusterStatus/loadMetricsReport/usageByNode")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            "the answer has no `data.clusterStatus.loadMetricsReport.usageByNode` table".to_owned()
        })?;
    for node in nodes {
        let Some(usage) = by_node.get(&node.id) else {
            continue;
        };
        let pair = |name: &str| {
            let pair = usage.get(name)?.as_array()?;
            let used = pair.first()?.as_f64()?;
            let total = pair.get(1)?.as_f64()?;
            (used.is_finite() && total.is_finite() && used >= 0.0).then_some((used, total))
        };
        node.cpus_used = pair("CPU").map(|(used, _)| used);
        node.gpus_used = Some(pair("GPU").map_or(0.0, |(used, _)| used));
        if let Some((used, total)) = pair("memory") {
            node.memory_available = Some((total - used).max(0.0));
        }
    }
    Ok(())
}

/// The observation's `nodes`: each node's resources, with `owned` (CPUs and GPUs this
/// pipeline's replicas hold, by node id) as `cpus_owned`/`gpus_owned`. Free is what neither
/// the usage Serve's cluster reports nor the pipeline holds (the usage lags by seconds, and
/// replicas not scheduled yet are in the pipeline's count only); a node without usage counts
/// as free what the pipeline does not hold.
pub fn node_messages(nodes: &[Node], owned: &BTreeMap<String, (f64, f64)>) -> Vec<NodeMessage> {
    nodes
        .iter()
        .map(|node| {
            let (cpus_owned, gpus_owned) = owned.get(&node.id).copied().unwrap_or_default();
            let free = |total: f64, used: Option<f64>, mine: f64| {
                (total - used.unwrap_or(mine).max(mine)).max(0.0)
            };
            NodeMessage {
                id: node.id.clone(),
                name: node.address.clone(),
                alive: node.alive,
                cpus: node.cpus,
                cpus_free: free(node.cpus, node.cpus_used, cpus_owned),
                cpus_owned,
                gpus: node.gpus,
                gpus_free: free(node.gpus, node.gpus_used, gpus_owned),
                gpus_owned,
                memory_free_mb: node.memory_available.map(|b| b / (1024.0 * 1024.0)),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `GET /nodes?view=summary` answer in the dashboard's shape (abridged): two alive
    /// nodes and a dead one.
    pub(crate) const TWO_NODES: &str = r#"{
      "result": true, "msg": "Node summary fetched.",
      "data": {
        "summary": [
          {"hostname": "h1", "ip": "10.0.0.1", "mem": [8589934592, 4294967296, 50.0, 4294967296],
           "raylet": {"nodeId": "n1", "state": "ALIVE", "nodeManagerAddress": "10.0.0.1",
                      "resourcesTotal": {"CPU": 2.0, "memory": 3000000000.0, "node:10.0.0.1": 1.0},
                      "metricsExportPort": 11001, "isHeadNode": true}},
          {"hostname": "h2", "ip": "10.0.0.2", "mem": [8589934592, 2147483648, 75.0, 6442450944],
           "raylet": {"nodeId": "n2", "state": "ALIVE", "nodeManagerAddress": "10.0.0.2",
                      "resourcesTotal": {"CPU": 4.0, "GPU": 1.0},
                      "metricsExportPort": 11002}},
          {"hostname": "h3", "raylet": {"nodeId": "n3", "state": "DEAD",
                      "resourcesTotal": {"CPU": 2.0}}}
        ]
      }
    }"#;

    /// A `GET /api/cluster_status` answer (abridged): n1 full, n2 with one CPU in use.
    pub(crate) const USAGE: &str = r#"{
      "result": true, "msg": "Got cluster status.",
      "data": {"clusterStatus": {"loadMetricsReport": {"usageByNode": {
        "n1": {"CPU": [2.0, 2.0], "memory": [1073741824.0, 3221225472.0],
               "objectStoreMemory": [0.0, 100000000.0], "node:InternalHead": [0.0, 1.0]},
        "n2": {"CPU": [1.0, 4.0], "GPU": [0.0, 1.0]}
      }}}}
    }"#;

    #[test]
    fn reads_nodes_with_their_resources_in_use_and_metrics_pages() {
        let mut nodes = parse_nodes(&serde_json::from_str(TWO_NODES).unwrap()).expect("parses");
        add_usage(&mut nodes, &serde_json::from_str(USAGE).unwrap()).expect("usage");
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].id, "n1");
        assert_eq!((nodes[0].cpus, nodes[0].cpus_used), (2.0, Some(2.0)));
        assert_eq!(
            nodes[0].metrics_url().as_deref(),
            Some("http://10.0.0.1:11001/metrics")
        );
        assert_eq!((nodes[1].gpus, nodes[1].gpus_used), (1.0, Some(0.0)));
        assert!(!nodes[2].alive);
        assert_eq!(nodes[2].metrics_url(), None);
        let owned = BTreeMap::from([("n1".to_owned(), (2.0, 0.0))]);
        let messages = node_messages(&nodes, &owned);
        assert_eq!((messages[0].cpus_free, messages[0].cpus_owned), (0.0, 2.0));
        assert_eq!(messages[0].memory_free_mb, Some(2048.0));
        assert_eq!((messages[1].cpus, messages[1].cpus_free), (4.0, 3.0));
        assert_eq!(
            messages[1].memory_free_mb,
            Some(2048.0),
            "the host's, no usage"
        );
        // No usage for the dead node: free is what the pipeline does not hold.
        assert_eq!(messages[2].cpus_free, 2.0);
        assert!(parse_nodes(&serde_json::json!({"data": {}})).is_err());
        assert!(add_usage(&mut nodes, &serde_json::json!({"data": {}})).is_err());
    }
}
