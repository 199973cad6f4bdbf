//! The JSON documents that cross the plugin boundary. Every document carries `schema`;
//! readers accept unknown fields (so a newer minor schema stays readable) and reject a
//! `schema` major they do not know.

use serde::{Deserialize, Serialize};

/// Version of the JSON message schema.
pub const SCHEMA_VERSION: u32 = 1;

fn schema() -> u32 {
    SCHEMA_VERSION
}

/// What a backend can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Several variants of one stage serving at once with load shares.
    pub variant_mix: bool,
    /// Batch size per variant.
    pub batching: bool,
    /// Cores per replica.
    pub cores: bool,
    /// Placement on GPUs.
    pub gpu: bool,
}

/// Answer of `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    #[serde(default = "schema")]
    pub schema: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// GPU memory the backend can place replicas on, MiB, when it knows (a driver was
    /// found). The daemon plans within it (and within `[limits] gpu_mem_mb` when both are
    /// set). Added in schema 1 as an optional field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_mb: Option<f64>,
}

/// One deployed (or planned) variant of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentMessage {
    pub variant: String,
    pub batch: u32,
    pub cores: u32,
    pub replicas: u32,
    #[serde(default = "one")]
    pub share: f64,
}

fn one() -> f64 {
    1.0
}

/// A stage of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlanMessage {
    pub stage: String,
    pub assignments: Vec<AssignmentMessage>,
}

/// A plan as handed to `apply`, and the deployed configuration reported by `observe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanMessage {
    #[serde(default = "schema")]
    pub schema: u32,
    pub stages: Vec<StagePlanMessage>,
    /// Where the planner placed each variant's replicas, for a backend that reported
    /// `nodes`: per stage, variant and node, a count; the counts of a variant add up to its
    /// replicas. Empty when the backend is one host. Added in schema 1 as an optional
    /// field: older readers ignore it, and it is not written when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementMessage>,
}

/// Replicas of one variant of a stage on one node: planned (in a plan's `placement`) or
/// running (in an observation's `placement`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementMessage {
    pub stage: String,
    pub variant: String,
    /// The node's `id`, as the backend reported it in `nodes`.
    pub node: String,
    pub replicas: u32,
}

/// One node of the cluster a backend places replicas on, with its resources as the
/// backend's scheduler counts them. Resources are in the scheduler's units (CPUs may be
/// fractional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMessage {
    /// The backend's identifier of the node (what `placement` names).
    pub id: String,
    /// A name for people (an address or host name); defaults to empty.
    #[serde(default)]
    pub name: String,
    /// False for a node the backend knows but cannot place on (dead, draining).
    #[serde(default = "yes")]
    pub alive: bool,
    /// CPUs the node offers in all.
    pub cpus: f64,
    /// CPUs nothing holds now.
    pub cpus_free: f64,
    /// CPUs this pipeline's own replicas hold now: free for the pipeline's next plan.
    #[serde(default)]
    pub cpus_owned: f64,
    /// GPUs the node offers in all.
    #[serde(default)]
    pub gpus: f64,
    /// GPUs nothing holds now.
    #[serde(default)]
    pub gpus_free: f64,
    /// GPUs this pipeline's own replicas hold now.
    #[serde(default)]
    pub gpus_owned: f64,
    /// Memory nothing holds now, MiB, when the backend knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_free_mb: Option<f64>,
}

fn yes() -> bool {
    true
}

/// Per-stage state in an observation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObservedStage {
    pub stage: String,
    #[serde(default)]
    pub queue_len: f64,
    #[serde(default)]
    pub busy_fraction: f64,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub starting_replicas: u32,
}

/// Answer of `observe`: what happened since the previous observe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginObservation {
    #[serde(default = "schema")]
    pub schema: u32,
    /// Arrival rate of each whole second since the previous observe, oldest first.
    #[serde(default)]
    pub arrivals_per_second: Vec<f64>,
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub slo_misses: u64,
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    #[serde(default)]
    pub stages: Vec<ObservedStage>,
    /// What the backend runs now (ready replicas).
    #[serde(default)]
    pub deployed: PlanMessage,
    /// Where requests for each deployed variant can be sent (read by the daemon's router).
    /// Empty for backends that take traffic some other way.
    #[serde(default)]
    pub endpoints: Vec<EndpointMessage>,
    /// The nodes of the cluster the backend places replicas on, for a backend that spans
    /// several hosts; empty for one host. The daemon plans within each node's resources.
    /// Added in schema 1 as an optional field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeMessage>,
    /// Where the running replicas are, per stage, variant and node (a backend with
    /// `nodes`). Added in schema 1 as an optional field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementMessage>,
}

/// Wire protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointProtocol {
    /// `POST {url}` with a KServe v2 JSON inference request (`/v2/models/M/infer`).
    KserveV2,
    /// `POST {url}` with an opaque body, answered with an opaque body
    /// (TorchServe-style `/predictions/M`, or a bare worker process).
    RawHttp,
}

/// Whether an endpoint may receive new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    /// Serving: the router may send new requests.
    #[default]
    Ready,
    /// Being removed: no new requests; in-flight ones finish before the backend removes it.
    Draining,
    /// Not ready yet (loading, cold start): no requests.
    Starting,
}

/// One place requests for a variant of a stage go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointMessage {
    pub stage: String,
    pub variant: String,
    /// Full URL a request is POSTed to.
    pub url: String,
    pub protocol: EndpointProtocol,
    #[serde(default)]
    pub state: EndpointState,
    /// Relative capacity of this endpoint among the variant's endpoints (for example its
    /// replica count); the router splits a variant's share by these weights.
    #[serde(default = "one")]
    pub weight: f64,
}

/// Answer of `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    #[serde(default = "schema")]
    pub schema: u32,
    /// Whether anything was changed (false when the backend already matched the plan).
    pub changed: bool,
    /// Human-readable steps taken.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// Answer of `health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    #[serde(default = "schema")]
    pub schema: u32,
    pub healthy: bool,
    #[serde(default)]
    pub detail: String,
}

// `Default` is written out so that defaults carry the current `schema` (a derived one
// would say schema 0, which readers refuse).

impl Default for PlanMessage {
    fn default() -> PlanMessage {
        PlanMessage {
            schema: SCHEMA_VERSION,
            stages: Vec::new(),
            placement: Vec::new(),
        }
    }
}

impl Default for PluginObservation {
    fn default() -> PluginObservation {
        PluginObservation {
            schema: SCHEMA_VERSION,
            arrivals_per_second: Vec::new(),
            completed: 0,
            dropped: 0,
            slo_misses: 0,
            latency_p99_ms: None,
            stages: Vec::new(),
            deployed: PlanMessage::default(),
            endpoints: Vec::new(),
            nodes: Vec::new(),
            placement: Vec::new(),
        }
    }
}

impl Default for ApplyReport {
    fn default() -> ApplyReport {
        ApplyReport {
            schema: SCHEMA_VERSION,
            changed: false,
            actions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_placement_are_optional_and_not_written_when_empty() {
        let old: PluginObservation = serde_json::from_str(r#"{"schema": 1}"#).unwrap();
        assert!(old.nodes.is_empty() && old.placement.is_empty());
        let plan = serde_json::to_string(&PlanMessage::default()).unwrap();
        assert!(!plan.contains("placement"), "{plan}");
        let read: PluginObservation = serde_json::from_str(
            r#"{"nodes": [{"id": "n1", "cpus": 4, "cpus_free": 1.5}],
                "placement": [{"stage": "s", "variant": "v", "node": "n1", "replicas": 2}]}"#,
        )
        .unwrap();
        let node = &read.nodes[0];
        assert!(node.alive);
        assert_eq!(
            (node.cpus, node.cpus_free, node.cpus_owned),
            (4.0, 1.5, 0.0)
        );
        assert_eq!((node.gpus, node.memory_free_mb), (0.0, None));
        assert_eq!(read.placement[0].replicas, 2);
        assert!(
            serde_json::from_str::<NodeMessage>(r#"{"id": "n1", "cpus": 4}"#).is_err(),
            "cpus_free is required"
        );
    }

    #[test]
    fn defaults_carry_the_schema_and_unknown_fields_are_ignored() {
        assert_eq!(PlanMessage::default().schema, SCHEMA_VERSION);
        assert_eq!(PluginObservation::default().schema, SCHEMA_VERSION);
        assert_eq!(ApplyReport::default().schema, SCHEMA_VERSION);
        let read: ApplyReport =
            serde_json::from_str(r#"{"changed": true, "added_later": [1, 2]}"#).unwrap();
        assert_eq!(read.schema, SCHEMA_VERSION);
        assert!(read.changed);
    }

    #[test]
    fn endpoints_default_to_ready_with_weight_one_and_old_observations_still_read() {
        let read: PluginObservation = serde_json::from_str(
            r#"{"schema": 1, "endpoints": [{"stage": "s", "variant": "v",
                "url": "http://127.0.0.1:1/v2/models/v/infer", "protocol": "kserve-v2"}]}"#,
        )
        .unwrap();
        assert_eq!(read.endpoints.len(), 1);
        assert_eq!(read.endpoints[0].state, EndpointState::Ready);
        assert_eq!(read.endpoints[0].weight, 1.0);
        let old: PluginObservation = serde_json::from_str(r#"{"schema": 1}"#).unwrap();
        assert!(old.endpoints.is_empty());
        assert!(
            serde_json::from_str::<EndpointMessage>(
                r#"{"stage": "s", "variant": "v", "url": "u", "protocol": "grpc"}"#
            )
            .is_err()
        );
    }
}
