//! The cluster's nodes as the Ray dashboard reports them (`GET /nodes?view=summary`): per
//! node its id, address, whether it is alive, its logical resources in all and in use (the
//! scheduler's CPUs and GPUs), its free memory and its metrics export port, read leniently
//! into [`Node`]s; and the `nodes` of an observation with the CPUs and GPUs this pipeline's
//! own replicas hold on each.

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
    /// Physical memory available, bytes, when reported.
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
    let usage = data
        .get("node_logical_resources")
        .and_then(Value::as_object);
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
        let used = usage
            .and_then(|u| u.get(id))
            .and_then(Value::as_str)
            .map(parse_usage)
            .unwrap_or_default();
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
            cpus_used: used.get("CPU").copied(),
            gpus: resource("GPU"),
            gpus_used: used.get("GPU").copied().or(usage.map(|_| 0.0)),
            memory_available,
            metrics_port: raylet
                .get("metricsExportPort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok()),
        });
    }
    Ok(nodes)
}

/// Reads a node's usage text (`"1.0/2.0 CPU\n0B/3.49GiB memory"`): resource → amount used,
/// for the countable resources written as plain numbers.
pub fn parse_usage(text: &str) -> BTreeMap<String, f64> {
    let mut used = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(amounts), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((in_use, _total)) = amounts.split_once('/') else {
            continue;
        };
        if let Ok(value) = in_use.parse::<f64>()
            && value.is_finite()
            && value >= 0.0
        {
            used.insert(name.to_owned(), value);
        }
    }
    used
}

/// The observation's `nodes`: each node's resources, with `owned` (CPUs and GPUs this
/// pipeline's replicas hold, by node id) as `cpus_owned`/`gpus_owned`. A node without usage
/// counts as free what the pipeline does not hold.
pub fn node_messages(nodes: &[Node], owned: &BTreeMap<String, (f64, f64)>) -> Vec<NodeMessage> {
    nodes
        .iter()
        .map(|node| {
            let (cpus_owned, gpus_owned) = owned.get(&node.id).copied().unwrap_or_default();
            let free =
                |total: f64, used: Option<f64>, mine: f64| (total - used.unwrap_or(mine)).max(0.0);
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

    /// A `GET /nodes?view=summary` answer in the dashboard's shape: two nodes, the second
    /// with one CPU in use.
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
        ],
        "node_logical_resources": {
          "n1": "2.0/2.0 CPU\n0B/2.79GiB memory\n0B/1.20GiB object_store_memory",
          "n2": "1.0/4.0 CPU\n0.0/1.0 GPU\n0B/2.79GiB memory"
        }
      }
    }"#;

    #[test]
    fn reads_nodes_with_their_resources_in_use_and_metrics_pages() {
        let nodes = parse_nodes(&serde_json::from_str(TWO_NODES).unwrap()).expect("parses");
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
        assert_eq!(messages[0].memory_free_mb, Some(4096.0));
        assert_eq!((messages[1].cpus, messages[1].cpus_free), (4.0, 3.0));
        // No usage for the dead node: free is what the pipeline does not hold.
        assert_eq!(messages[2].cpus_free, 2.0);
        assert!(parse_nodes(&serde_json::json!({"data": {}})).is_err());
    }

    #[test]
    fn usage_lines_with_formatted_memory_are_skipped() {
        let used = parse_usage("1.5/2.0 CPU\n0B/2.79GiB memory\nnonsense\n-1/2 GPU");
        assert_eq!(used.len(), 1);
        assert_eq!(used["CPU"], 1.5);
    }
}
