//! Reading and changing the parts of a Triton model configuration the plugin manages:
//! the instance count (`instance_group`), the batch size (`max_batch_size` and the dynamic
//! batcher's `preferred_batch_size`) and the queue delay. Triton replaces the *whole*
//! config on a load with an override, so changes are made to the full config as the server
//! reported it and everything else is kept.

use serde_json::{Value, json};

use crate::TritonError;

/// What the plugin sets on a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Instances summed over the instance groups.
    pub instances: u32,
    /// `max_batch_size` (0: the model does not batch).
    pub max_batch: u32,
    /// The dynamic batcher's preferred sizes; `None` without dynamic batching.
    pub preferred: Option<Vec<u32>>,
    pub queue_delay_us: Option<u64>,
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        // Protobuf's JSON form writes 64-bit integers as strings.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads the managed parts of a config as `GET /v2/models/M/config` answers it.
pub fn read(model: &str, config: &Value) -> Result<Shape, TritonError> {
    let garbage = |what: &str| TritonError::Garbage {
        model: model.to_owned(),
        detail: what.to_owned(),
    };
    let object = config
        .as_object()
        .ok_or_else(|| garbage("the model config is not a JSON object"))?;
    let max_batch = match object.get("max_batch_size") {
        None => 0,
        Some(v) => number(v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| garbage("max_batch_size is not a count"))?,
    };
    let mut instances = 0u32;
    match object.get("instance_group") {
        None => instances = 1,
        Some(Value::Array(groups)) => {
            for group in groups {
                let count = group
                    .get("count")
                    .map(number)
                    .unwrap_or(Some(1))
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| garbage("instance_group count is not a count"))?;
                instances = instances.saturating_add(count);
            }
        }
        Some(_) => return Err(garbage("instance_group is not a list")),
    }
    let (preferred, queue_delay_us) = match object.get("dynamic_batching") {
        Some(Value::Object(batching)) => {
            let preferred = match batching.get("preferred_batch_size") {
                None => Vec::new(),
                Some(Value::Array(sizes)) => sizes
                    .iter()
                    .map(|s| number(s).and_then(|n| u32::try_from(n).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| garbage("preferred_batch_size holds a non-count"))?,
                Some(_) => return Err(garbage("preferred_batch_size is not a list")),
            };
            let delay = batching
                .get("max_queue_delay_microseconds")
                .and_then(number);
            (Some(preferred), delay)
        }
        Some(Value::Null) | None => (None, None),
        Some(_) => return Err(garbage("dynamic_batching is not an object")),
    };
    Ok(Shape {
        instances,
        max_batch,
        preferred,
        queue_delay_us,
    })
}

/// The batch size a config runs: the largest preferred size, else `max_batch_size`, at
/// least 1.
pub fn batch_of(shape: &Shape) -> u32 {
    shape
        .preferred
        .as_ref()
        .and_then(|p| p.iter().copied().max())
        .unwrap_or(shape.max_batch)
        .max(1)
}

/// The target shape for `instances` instances and batch size `batch`. A model that does
/// not batch (`max_batch_size` 0) keeps running batch 1.
pub fn target(current: &Shape, instances: u32, batch: u32, queue_delay_us: u64) -> Shape {
    if current.max_batch == 0 {
        return Shape {
            instances,
            ..current.clone()
        };
    }
    Shape {
        instances,
        max_batch: batch.max(1),
        preferred: Some(vec![batch.max(1)]),
        queue_delay_us: Some(queue_delay_us),
    }
}

/// `config` changed to `shape`: one instance group (the first one's kind and settings)
/// with the count, and the batching fields. Everything else is kept as it was.
pub fn apply(config: &Value, shape: &Shape) -> Value {
    let mut config = config.clone();
    let Some(object) = config.as_object_mut() else {
        return config;
    };
    let mut group = object
        .get("instance_group")
        .and_then(|g| g.as_array())
        .and_then(|g| g.first())
        .cloned()
        .unwrap_or_else(|| json!({ "kind": "KIND_CPU" }));
    if let Some(g) = group.as_object_mut() {
        // Triton names groups itself; a stale name would only confuse.
        g.remove("name");
        g.insert("count".to_owned(), json!(shape.instances));
    }
    object.insert("instance_group".to_owned(), json!([group]));
    if shape.max_batch > 0 {
        object.insert("max_batch_size".to_owned(), json!(shape.max_batch));
        let mut batching = object
            .get("dynamic_batching")
            .and_then(|b| b.as_object())
            .cloned()
            .unwrap_or_default();
        if let Some(preferred) = &shape.preferred {
            batching.insert("preferred_batch_size".to_owned(), json!(preferred));
        }
        if let Some(delay) = shape.queue_delay_us {
            batching.insert("max_queue_delay_microseconds".to_owned(), json!(delay));
        }
        object.insert("dynamic_batching".to_owned(), Value::Object(batching));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Value {
        json!({
            "name": "tiny", "backend": "python", "max_batch_size": 8,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
            "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": "2000",
                                 "preserve_ordering": false},
            "instance_group": [{"name": "tiny_0", "kind": "KIND_CPU", "count": 1},
                               {"name": "tiny_1", "kind": "KIND_CPU", "count": 2}],
            "parameters": {"work_n": {"string_value": "128"}}
        })
    }

    #[test]
    fn reads_counts_batching_and_string_numbers() {
        let shape = read("tiny", &served()).unwrap();
        assert_eq!(shape.instances, 3);
        assert_eq!(shape.max_batch, 8);
        assert_eq!(shape.preferred, Some(vec![8]));
        assert_eq!(shape.queue_delay_us, Some(2000));
        assert_eq!(batch_of(&shape), 8);
        assert!(read("tiny", &json!({"instance_group": "x"})).is_err());
        assert!(read("tiny", &json!([1, 2])).is_err());
        assert!(read("tiny", &json!({"max_batch_size": -1})).is_err());
    }

    #[test]
    fn changes_keep_the_rest_of_the_config() {
        let config = served();
        let now = read("tiny", &config).unwrap();
        let want = target(&now, 4, 2, 500);
        let changed = apply(&config, &want);
        assert_eq!(read("tiny", &changed).unwrap(), want);
        assert_eq!(changed["input"], config["input"]);
        assert_eq!(changed["parameters"], config["parameters"]);
        assert_eq!(
            changed["dynamic_batching"]["preserve_ordering"],
            json!(false)
        );
        assert_eq!(changed["instance_group"].as_array().unwrap().len(), 1);
        assert!(changed["instance_group"][0].get("name").is_none());
        // A model without batching keeps batch 1 and only scales.
        let plain =
            json!({"max_batch_size": 0, "instance_group": [{"kind": "KIND_CPU", "count": 1}]});
        let shape = read("p", &plain).unwrap();
        let want = target(&shape, 2, 8, 100);
        assert_eq!(want.max_batch, 0);
        assert_eq!(read("p", &apply(&plain, &want)).unwrap().instances, 2);
    }
}
