//! Fuzz target `router`: arbitrary bytes as a stage's KServe v2 answer that the router turns
//! into the next stage's request (`router::chain_request`). Contract: no panic; what it
//! makes is JSON with one input `INPUT{k}` per output, in order.
#![no_main]

use infadaptd::router::chain_request;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = chain_request(data) else {
        return;
    };
    let answer: Value = serde_json::from_slice(data).expect("a chained answer is JSON");
    let outputs = answer["outputs"]
        .as_array()
        .expect("a chained answer has outputs");
    let request: Value = serde_json::from_str(&request).expect("the request is JSON");
    let inputs = request["inputs"]
        .as_array()
        .expect("the request has inputs");
    assert_eq!(inputs.len(), outputs.len());
    for (k, (input, output)) in inputs.iter().zip(outputs).enumerate() {
        assert_eq!(input["name"], Value::String(format!("INPUT{k}")));
        for field in ["datatype", "shape", "data"] {
            assert_eq!(
                input[field],
                output.get(field).cloned().unwrap_or(Value::Null)
            );
        }
    }
});
