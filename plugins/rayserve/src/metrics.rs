//! Serve's request metrics as the nodes' metrics pages export them: per application the
//! proxies' request and error counters and the request latency histogram, turned into
//! per-period deltas per series (a node's counters that went backwards count as reset, a
//! node seen for the first time sets its baseline) and summed per application, with the
//! period's p99 latency read from the histogram's deltas.

use std::collections::{BTreeMap, HashMap, HashSet};

use infadapt_plugin_support::prometheus::{self, Page, counter_delta, finite_sum};

/// Requests the proxies answered, per `application` (all status codes).
pub const REQUESTS: &str = "ray_serve_num_http_requests";
/// Requests answered with an error, per `application`.
pub const ERRORS: &str = "ray_serve_num_http_error_requests";
/// End-to-end latency histogram of the proxies, milliseconds, per `application`.
pub const LATENCY_BUCKET: &str = "ray_serve_http_request_latency_ms_bucket";

/// What one application's requests did in a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub requests: f64,
    pub errors: f64,
    /// Latency histogram deltas: upper bound (ms) → requests at or below it.
    pub buckets: Vec<(f64, f64)>,
}

impl Traffic {
    /// The p99 latency of the period, ms, from the histogram (the upper bound of the bucket
    /// holding the 99th percentile, interpolated inside it); `None` without requests.
    pub fn p99_ms(&self) -> Option<f64> {
        quantile(&self.buckets, 0.99)
    }
}

/// The quantile `q` of a cumulative histogram (`(upper bound, count at or below)`).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in sorted {
        if count >= rank {
            if !bound.is_finite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                ((rank - below) / inside).clamp(0.0, 1.0)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        if bound.is_finite() {
            lower = bound;
        }
        below = count;
    }
    Some(lower)
}

/// The counters of the previous scrape, per series, and the pages read then.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    previous: HashMap<String, f64>,
    pages_read: HashSet<String>,
}

impl Counters {
    /// Deltas since the previous scrape of the pages read now (`(URL, page)`), per
    /// application for which `is_ours` holds. A series first seen on a page read before
    /// started from zero since; on a page read for the first time it only sets the baseline.
    /// A page that could not be read this time keeps its counters, so that what it counted
    /// meanwhile is counted at its next read. Values that are no counts are listed
    /// (`name = value`) and left out.
    pub fn deltas(
        &mut self,
        pages: &[(String, Page)],
        is_ours: impl Fn(&str) -> bool,
    ) -> (BTreeMap<String, Traffic>, Vec<String>) {
        let mut traffic: BTreeMap<String, Traffic> = BTreeMap::new();
        let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
        let mut invalid = Vec::new();
        let mut current = HashMap::new();
        for (url, page) in pages {
            let known_page = self.pages_read.contains(url);
            for sample in &page.samples {
                let name = sample.name.strip_suffix("_total").unwrap_or(&sample.name);
                if !matches!(name, REQUESTS | ERRORS | LATENCY_BUCKET) {
                    continue;
                }
                let Some(app) = sample.label("application").filter(|a| is_ours(a)) else {
                    continue;
                };
                if !prometheus::is_count(sample.value) {
                    invalid.push(prometheus::describe_sample(&sample.name, sample.value));
                    continue;
                }
                let mut labels: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                labels.sort();
                let key = format!("{url} {name}{{{}}}", labels.join(","));
                let base = match self.previous.get(&key) {
                    Some(p) => Some(*p),
                    None if known_page => Some(0.0),
                    None => None,
                };
                let delta = counter_delta(base, sample.value);
                current.insert(key, sample.value);
                let entry = traffic.entry(app.to_owned()).or_default();
                match name {
                    REQUESTS => entry.requests = finite_sum(entry.requests, delta),
                    ERRORS => entry.errors = finite_sum(entry.errors, delta),
                    _ => {
                        let bound = match sample.label("le") {
                            Some("+Inf" | "Inf") => f64::INFINITY,
                            Some(le) => match le.parse::<f64>() {
                                Ok(b) if !b.is_nan() => b,
                                _ => continue,
                            },
                            None => continue,
                        };
                        let slot = buckets
                            .entry(app.to_owned())
                            .or_default()
                            .entry(bound.to_bits())
                            .or_insert((bound, 0.0));
                        slot.1 = finite_sum(slot.1, delta);
                    }
                }
            }
        }
        for (app, by_bound) in buckets {
            traffic.entry(app).or_default().buckets = by_bound.into_values().collect();
        }
        let read_now: HashSet<&str> = pages.iter().map(|(url, _)| url.as_str()).collect();
        for (key, value) in self.previous.drain() {
            let url = key.split_once(' ').map_or(key.as_str(), |(url, _)| url);
            if !read_now.contains(url) {
                current.insert(key, value);
            }
        }
        self.previous = current;
        self.pages_read
            .extend(pages.iter().map(|(url, _)| url.clone()));
        (traffic, invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::prometheus::parse;

    fn page(requests: f64, errors: f64, fast: f64, slow: f64) -> String {
        format!(
            "# TYPE ray_serve_num_http_requests_total counter\n\
             ray_serve_num_http_requests_total{{application=\"a\",route=\"/p/s/a\",method=\"POST\",status_code=\"200\"}} {requests}\n\
             ray_serve_num_http_requests_total{{application=\"\",route=\"/x\",method=\"GET\",status_code=\"404\"}} 7\n\
             ray_serve_num_http_error_requests_total{{application=\"a\",route=\"/p/s/a\",error_code=\"500\",method=\"POST\"}} {errors}\n\
             ray_serve_http_request_latency_ms_bucket{{application=\"a\",le=\"10.0\"}} {fast}\n\
             ray_serve_http_request_latency_ms_bucket{{application=\"a\",le=\"100.0\"}} {slow}\n\
             ray_serve_http_request_latency_ms_bucket{{application=\"a\",le=\"+Inf\"}} {slow}\n\
             ray_serve_http_request_latency_ms_count{{application=\"a\"}} {slow}\n"
        )
    }

    fn ours(app: &str) -> bool {
        app == "a"
    }

    #[test]
    fn deltas_per_application_with_resets_and_new_nodes() {
        let mut counters = Counters::default();
        let n1 = "http://n1/metrics".to_owned();
        let n2 = "http://n2/metrics".to_owned();
        let (first, invalid) =
            counters.deltas(&[(n1.clone(), parse(&page(100.0, 1.0, 90.0, 100.0)))], ours);
        assert!(invalid.is_empty());
        assert_eq!(first["a"].requests, 0.0, "the first scrape is the baseline");
        // n1 moves on by 50 requests; n2 appears (its history is no new traffic).
        let (second, _) = counters.deltas(
            &[
                (n1.clone(), parse(&page(150.0, 3.0, 90.0, 150.0))),
                (n2.clone(), parse(&page(1000.0, 0.0, 0.0, 1000.0))),
            ],
            ours,
        );
        assert_eq!((second["a"].requests, second["a"].errors), (50.0, 2.0));
        // All 50 new requests were in the slow bucket: p99 inside (10, 100].
        let p99 = second["a"].p99_ms().expect("p99");
        assert!(p99 > 10.0 && p99 <= 100.0, "{p99}");
        // n1's node restarted (counters reset) and n2 served 10.
        let (third, _) = counters.deltas(
            &[
                (n1.clone(), parse(&page(4.0, 0.0, 4.0, 4.0))),
                (n2.clone(), parse(&page(1010.0, 0.0, 10.0, 1010.0))),
            ],
            ours,
        );
        assert_eq!(third["a"].requests, 14.0);
        assert!(third["a"].p99_ms().unwrap() <= 10.0);
    }

    #[test]
    fn a_page_that_could_not_be_read_once_loses_no_requests() {
        let mut counters = Counters::default();
        let n1 = "http://n1/metrics".to_owned();
        let n2 = "http://n2/metrics".to_owned();
        let both = |a: f64, b: f64| {
            vec![
                (n1.clone(), parse(&page(a, 0.0, a, a))),
                (n2.clone(), parse(&page(b, 0.0, b, b))),
            ]
        };
        counters.deltas(&both(10.0, 20.0), ours);
        // n2 did not answer this time: n1's 5 new requests are counted now ...
        let (missed, _) =
            counters.deltas(&[(n1.clone(), parse(&page(15.0, 0.0, 15.0, 15.0)))], ours);
        assert_eq!(missed["a"].requests, 5.0);
        // ... and n2's 7 of meanwhile at its next read, not taken for a baseline.
        let (back, _) = counters.deltas(&both(15.0, 27.0), ours);
        assert_eq!(back["a"].requests, 7.0);
    }

    #[test]
    fn values_that_are_no_counts_are_listed() {
        let mut counters = Counters::default();
        let text = "ray_serve_num_http_requests_total{application=\"a\"} NaN\n\
                    ray_serve_num_http_requests_total{application=\"other\"} NaN\n";
        let (_, invalid) = counters.deltas(&[("u".into(), parse(text))], ours);
        assert_eq!(invalid, ["ray_serve_num_http_requests_total = NaN"]);
    }

    #[test]
    fn quantiles_of_a_histogram() {
        assert_eq!(quantile(&[], 0.99), None);
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.99), None);
        let all_slow = [(10.0, 0.0), (20.0, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&all_slow, 0.5).unwrap() - 15.0).abs() < 1e-9);
        let beyond = [(10.0, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&beyond, 0.99), Some(10.0));
    }
}
