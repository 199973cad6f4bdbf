//! The fixture's own test: a two-node cluster serves the test application through Serve's
//! proxy, replicas run where Serve says, a pinned deployment stays on its node, a batch-size
//! change reaches the replicas in place, and dropping the cluster stops all its processes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fixture::{
    MEDIUM, RayCluster, SMALL, agent, alive, post, running_replicas, test_application,
};

/// Sends `count` requests, `parallel` at a time, to `url`; the answers (each must be 200).
fn send(url: &str, count: usize, parallel: usize) -> Vec<Value> {
    let answers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..parallel {
            let answers = &answers;
            scope.spawn(move || {
                for _ in (worker..count).step_by(parallel) {
                    let (status, body) = post(url, r#"{"inputs": []}"#, Duration::from_secs(30));
                    assert_eq!(status, 200, "POST {url}: {body}");
                    let answer: Value = serde_json::from_str(&body).expect("JSON answer");
                    answers.lock().expect("answers").push(answer);
                }
            });
        }
    });
    answers.into_inner().expect("answers")
}

/// Requests answered 200 for `application` by the proxy, from a node's Prometheus text.
fn http_requests_counted(metrics_url: &str, application: &str) -> f64 {
    let Ok(mut answer) = agent(Duration::from_secs(5)).get(metrics_url).call() else {
        return 0.0;
    };
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    let label = format!("application=\"{application}\"");
    text.lines()
        .filter(|line| line.starts_with("ray_serve_num_http_requests_total{"))
        .filter(|line| line.contains(&label) && line.contains("status_code=\"200\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_two_node_cluster_serves_the_test_application_where_serve_reports() {
    let started = Instant::now();
    let cluster = RayCluster::start(&[1, 2]);
    let start_s = cluster.started_in().as_secs_f64();
    let [head, worker] = cluster.node_ids() else {
        panic!("two nodes expected: {:?}", cluster.node_ids());
    };
    assert_ne!(head, worker);
    let usage = cluster.cpu_usage_by_node();
    assert_eq!(usage[head].1, 1.0, "{usage:?}");
    assert_eq!(usage[worker].1, 2.0, "{usage:?}");

    // Two 1-CPU replicas wherever Serve puts them, and one 0.5-CPU replica pinned to the
    // worker node.
    let small = test_application("smoke-small", "/smoke/small", SMALL, 2, 1.0, 4, None);
    let medium = test_application(
        "smoke-medium",
        "/smoke/medium",
        MEDIUM,
        1,
        0.5,
        1,
        Some(worker),
    );
    let deploy_started = Instant::now();
    cluster.put_serve(&cluster.serve_config(vec![small.clone(), medium.clone()]));
    cluster.wait_app_running("smoke-small", Duration::from_secs(120));
    let details = cluster.wait_app_running("smoke-medium", Duration::from_secs(120));
    let deploy_s = deploy_started.elapsed().as_secs_f64();

    let small_replicas: BTreeMap<String, String> =
        running_replicas(&details, "smoke-small", "small")
            .into_iter()
            .collect();
    assert_eq!(small_replicas.len(), 2, "{details}");
    let medium_replicas = running_replicas(&details, "smoke-medium", "medium");
    assert_eq!(medium_replicas.len(), 1, "{details}");
    assert_eq!(
        &medium_replicas[0].1, worker,
        "the pinned replica runs elsewhere"
    );

    // The cluster status (it lags by seconds) comes to 2.5 CPUs taken of 3, no node over its
    // CPUs.
    let mut usage = BTreeMap::new();
    let usage_started = Instant::now();
    let settled = infadapt_testkit::wait_until(Duration::from_secs(30), || {
        usage = cluster.cpu_usage_by_node();
        usage.values().map(|(used, _)| used).sum::<f64>() == 2.5
    });
    assert!(settled, "CPUs in use: {usage:?}");
    let usage_lag_s = usage_started.elapsed().as_secs_f64();
    for (node, (used, total)) in &usage {
        assert!(used <= total, "node {node} over its CPUs: {usage:?}");
    }

    // Every answer comes from a replica the GET lists, on the node the GET gives it.
    let url = format!("{}/smoke/small/v2/models/small/infer", cluster.proxy_url());
    let answers = send(&url, 24, 6);
    let mut served_by = BTreeSet::new();
    for answer in &answers {
        assert_eq!(answer["variant"], "small", "{answer}");
        let replica = answer["replica"].as_str().expect("replica");
        let node = small_replicas
            .get(replica)
            .unwrap_or_else(|| panic!("answer from a replica the GET does not list: {answer}"));
        assert_eq!(answer["node_id"].as_str(), Some(node.as_str()), "{answer}");
        assert_eq!(answer["max_batch_size"], 4, "{answer}");
        served_by.insert(replica.to_owned());
    }
    let medium_answers = send(&format!("{}/smoke/medium", cluster.proxy_url()), 3, 1);
    for answer in &medium_answers {
        assert_eq!(answer["variant"], "medium", "{answer}");
        assert_eq!(
            answer["node_id"].as_str(),
            Some(worker.as_str()),
            "{answer}"
        );
    }

    // The proxy on the head node counts them by application in Prometheus text.
    let metrics_started = Instant::now();
    let head_metrics = &cluster.metrics_urls()[0];
    let mut counted = 0.0;
    let exported = infadapt_testkit::wait_until(Duration::from_secs(30), || {
        counted = http_requests_counted(head_metrics, "smoke-small");
        counted >= 24.0
    });
    assert!(
        exported,
        "the head's metrics count {counted} requests of 24"
    );
    let metrics_lag_s = metrics_started.elapsed().as_secs_f64();

    // A batch-size change reaches the same replicas (no restart).
    let mut changed = small.clone();
    changed["deployments"][0]["user_config"]["max_batch_size"] = 2.into();
    let reconfigure_started = Instant::now();
    cluster.put_serve(&cluster.serve_config(vec![changed, medium]));
    let mut answers = Vec::new();
    assert!(
        infadapt_testkit::wait_until(Duration::from_secs(60), || {
            answers = send(&url, 4, 2);
            answers.iter().all(|a| a["max_batch_size"] == 2)
        }),
        "the batch size did not change: {answers:?}"
    );
    let reconfigure_s = reconfigure_started.elapsed().as_secs_f64();
    let details = cluster.wait_app_running("smoke-small", Duration::from_secs(60));
    let after: BTreeMap<String, String> = running_replicas(&details, "smoke-small", "small")
        .into_iter()
        .collect();
    assert_eq!(
        after, small_replicas,
        "a batch-size change restarted replicas"
    );

    // Dropping the cluster stops every process it started (Ray's agents included) and no
    // other. The ones it had are checked by id afterwards.
    let before = cluster.processes();
    assert!(before.len() >= 6, "too few processes found: {before:?}");
    let stop_started = Instant::now();
    drop(cluster);
    let stop_s = stop_started.elapsed().as_secs_f64();
    let left: Vec<&u32> = before.iter().filter(|pid| alive(**pid)).collect();
    assert!(left.is_empty(), "processes of the cluster left: {left:?}");
    eprintln!(
        "ray smoke: cluster start {start_s:.1} s, deploy {deploy_s:.1} s, batch-size change \
         {reconfigure_s:.1} s, usage report lag {usage_lag_s:.1} s, metrics lag {metrics_lag_s:.1} s, stop {stop_s:.1} s, total {:.1} s; {} of 2 replicas served",
        started.elapsed().as_secs_f64(),
        served_by.len()
    );
}
