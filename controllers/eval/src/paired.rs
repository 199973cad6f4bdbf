//! Paired comparisons over several seeds: per policy the mean and sample standard deviation
//! of every headline metric, and per metric the paired difference against this project's
//! policy (`infadapt`) with a 95 % Student-t confidence interval.
//!
//! The simulator draws arrivals from their own random stream (common random numbers), so
//! every policy run with one seed serves the very same requests: the difference between two
//! policies on one seed is free of arrival noise, and the spread of those differences over
//! seeds is what is left of the noise (service times, workload shape). A difference whose
//! interval excludes 0 is larger than that noise.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::PolicyReport;

/// The policy the others are compared with.
pub const REFERENCE: &str = "infadapt";

/// A headline metric of a [`PolicyReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    SloViolationRate,
    OnTimeAccuracy,
    MeanAccuracy,
    CostCoreHours,
    CostGpuGibHours,
    Reconfigurations,
    Reversals,
    P99LatencyMs,
    Dropped,
}

impl Metric {
    /// Every metric, in the order tables print them.
    pub const ALL: [Metric; 9] = [
        Metric::SloViolationRate,
        Metric::OnTimeAccuracy,
        Metric::MeanAccuracy,
        Metric::CostCoreHours,
        Metric::CostGpuGibHours,
        Metric::Reconfigurations,
        Metric::Reversals,
        Metric::P99LatencyMs,
        Metric::Dropped,
    ];

    /// The metric's field name in [`PolicyReport`] (and in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Metric::SloViolationRate => "slo_violation_rate",
            Metric::OnTimeAccuracy => "on_time_accuracy",
            Metric::MeanAccuracy => "mean_accuracy",
            Metric::CostCoreHours => "cost_core_hours",
            Metric::CostGpuGibHours => "cost_gpu_gib_hours",
            Metric::Reconfigurations => "reconfigurations",
            Metric::Reversals => "reversals",
            Metric::P99LatencyMs => "p99_latency_ms",
            Metric::Dropped => "dropped",
        }
    }

    /// The metric's value in `report`.
    pub fn of(self, report: &PolicyReport) -> f64 {
        match self {
            Metric::SloViolationRate => report.slo_violation_rate,
            Metric::OnTimeAccuracy => report.on_time_accuracy,
            Metric::MeanAccuracy => report.mean_accuracy,
            Metric::CostCoreHours => report.cost_core_hours,
            Metric::CostGpuGibHours => report.cost_gpu_gib_hours,
            Metric::Reconfigurations => report.reconfigurations as f64,
            Metric::Reversals => report.reversals as f64,
            Metric::P99LatencyMs => report.p99_latency_ms,
            Metric::Dropped => report.dropped as f64,
        }
    }

    /// Whether the ratio of means is reported beside the paired difference.
    fn with_ratio(self) -> bool {
        matches!(self, Metric::SloViolationRate | Metric::Reconfigurations)
    }
}

/// Mean and sample standard deviation of one metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    /// Sample standard deviation (divisor `n − 1`); 0 with fewer than two values.
    pub sd: f64,
}

impl Spread {
    /// The spread of `values` (0 and 0 when empty).
    pub fn of(values: &[f64]) -> Spread {
        Spread {
            mean: mean(values),
            sd: sample_sd(values),
        }
    }
}

/// The paired difference `ours − theirs` of one metric over the seeds both ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDifference {
    /// Mean over seeds of `ours − theirs`.
    pub mean_diff: f64,
    /// Sample standard deviation of the per-seed differences (0 with one seed).
    pub sd_diff: f64,
    /// 95 % Student-t interval of the mean difference (`n − 1` degrees of freedom); absent
    /// with a single seed.
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    /// Whether the interval excludes 0: the difference is larger than the seed noise.
    pub beyond_noise: bool,
    /// `mean(ours) / mean(theirs)`, for SLO violations and reconfigurations only; absent
    /// when their mean is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_of_means: Option<f64>,
    /// Seeds in the pairing.
    pub n: usize,
}

impl PairedDifference {
    /// The paired difference of `ours[i] − theirs[i]` (the shorter length counts).
    pub fn of(ours: &[f64], theirs: &[f64]) -> PairedDifference {
        let diffs: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a - b).collect();
        let mean_diff = mean(&diffs);
        let sd_diff = sample_sd(&diffs);
        let interval = t_interval95(mean_diff, sd_diff, diffs.len());
        let beyond_noise = interval.is_some_and(|(low, high)| low > 0.0 || high < 0.0);
        PairedDifference {
            mean_diff,
            sd_diff,
            ci95_low: interval.map(|(low, _)| low),
            ci95_high: interval.map(|(_, high)| high),
            beyond_noise,
            ratio_of_means: None,
            n: diffs.len(),
        }
    }
}

/// One policy over every seed it ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    /// Whether the policy is an oracle (sized from the measured window).
    pub oracle: bool,
    /// Seeds the policy ran.
    pub n: usize,
    /// Every [`Metric`] by name.
    pub metrics: BTreeMap<&'static str, Spread>,
    /// Every [`Metric`] by name, paired against [`REFERENCE`]; absent for the reference
    /// itself and when the reference did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paired: Option<BTreeMap<&'static str, PairedDifference>>,
}

/// The runs of one seed: every policy's report.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRun {
    pub seed: u64,
    pub policies: Vec<PolicyReport>,
}

/// Summarises `runs` per policy, in the order policies first appear. A policy missing from
/// some seed (it failed there) is summarised over the seeds it ran, and paired over the seeds
/// both it and the reference ran.
pub fn summarize(runs: &[SeedRun]) -> Vec<PolicySummary> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        for report in &run.policies {
            if !names.contains(&report.policy.as_str()) {
                names.push(&report.policy);
            }
        }
    }
    let find = |run: &'_ SeedRun, name: &str| -> Option<PolicyReport> {
        run.policies.iter().find(|r| r.policy == name).cloned()
    };
    let reference_ran = names.contains(&REFERENCE);
    names
        .iter()
        .map(|&name| {
            let reports: Vec<PolicyReport> = runs.iter().filter_map(|r| find(r, name)).collect();
            let metrics = Metric::ALL
                .iter()
                .map(|&m| {
                    let values: Vec<f64> = reports.iter().map(|r| m.of(r)).collect();
                    (m.name(), Spread::of(&values))
                })
                .collect();
            let paired = (reference_ran && name != REFERENCE).then(|| {
                let pairs: Vec<(PolicyReport, PolicyReport)> = runs
                    .iter()
                    .filter_map(|r| Some((find(r, REFERENCE)?, find(r, name)?)))
                    .collect();
                Metric::ALL
                    .iter()
                    .map(|&m| {
                        let ours: Vec<f64> = pairs.iter().map(|(o, _)| m.of(o)).collect();
                        let theirs: Vec<f64> = pairs.iter().map(|(_, t)| m.of(t)).collect();
                        let mut difference = PairedDifference::of(&ours, &theirs);
                        if m.with_ratio() {
                            difference.ratio_of_means = ratio(mean(&ours), mean(&theirs));
                        }
                        (m.name(), difference)
                    })
                    .collect()
            });
            PolicySummary {
                policy: name.to_owned(),
                oracle: reports.iter().any(|r| r.oracle),
                n: reports.len(),
                metrics,
                paired,
            }
        })
        .collect()
}

/// `ours / theirs` when it is a finite number.
fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    let r = ours / theirs;
    (theirs != 0.0 && r.is_finite()).then_some(r)
}

/// Arithmetic mean; 0 for no value.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Sample standard deviation (divisor `n − 1`); 0 for fewer than two values.
pub fn sample_sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    let squares: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom (two-sided 95 %), for
/// `df ≥ 1`; `None` for 0.
///
/// Degrees of freedom 1 to 30 come from a table (values to 6 decimals, as in any statistics
/// textbook); above 30 the Cornish–Fisher expansion of the quantile around the normal one
/// (Abramowitz and Stegun 26.7.5), which is within 1e-5 of the exact value there.
pub fn t_quantile_975(df: usize) -> Option<f64> {
    const TABLE: [f64; 30] = [
        12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
        2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
        2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
        2.048407, 2.045230, 2.042272,
    ];
    match df {
        0 => None,
        1..=30 => Some(TABLE[df - 1]),
        _ => {
            let z = 1.959_963_984_540_054_f64;
            let n = df as f64;
            let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
            Some(
                z + (z3 + z) / (4.0 * n)
                    + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                    + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n * n * n),
            )
        }
    }
}

/// The 95 % Student-t interval of a mean of `n` values with sample deviation `sd`; `None`
/// for fewer than two values or a value that is not finite.
pub fn t_interval95(mean: f64, sd: f64, n: usize) -> Option<(f64, f64)> {
    let t = t_quantile_975(n.checked_sub(1)?)?;
    let half = t * sd / (n as f64).sqrt();
    (mean.is_finite() && half.is_finite()).then_some((mean - half, mean + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn mean_and_sample_sd_of_known_vectors() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squares 32, sample variance 32/7.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!(close(mean(&v), 5.0, 1e-15));
        assert!(close(sample_sd(&v), (32.0f64 / 7.0).sqrt(), 1e-15));
        assert_eq!(sample_sd(&[3.0]), 0.0);
        assert_eq!((mean(&[]), sample_sd(&[])), (0.0, 0.0));
        assert_eq!(Spread::of(&[1.5]), Spread { mean: 1.5, sd: 0.0 });
    }

    #[test]
    fn t_quantiles_match_the_exact_values() {
        // Exact 97.5th percentiles (df: value), to 6 decimals.
        for (df, exact) in [
            (1, 12.706205),
            (2, 4.302653),
            (4, 2.776445),
            (9, 2.262157),
            (30, 2.042272),
            (40, 2.021075),
            (60, 2.000298),
            (120, 1.979930),
        ] {
            let t = t_quantile_975(df).expect("df ≥ 1");
            assert!(close(t, exact, 2e-5), "df {df}: {t} vs {exact}");
        }
        assert_eq!(t_quantile_975(0), None);
        // Decreasing towards the normal quantile.
        let mut previous = f64::INFINITY;
        for df in 1..500 {
            let t = t_quantile_975(df).expect("df ≥ 1");
            assert!(t < previous && t > 1.959_963, "df {df}: {t}");
            previous = t;
        }
    }

    #[test]
    fn paired_interval_by_hand() {
        // Differences 1, 2, 3, 4, 5: mean 3, sd √2.5, t(4) = 2.776445,
        // half width = 2.776445 · √2.5 / √5 = 2.776445 / √2 = 1.963243.
        let ours = [11.0, 12.0, 13.0, 14.0, 15.0];
        let theirs = [10.0; 5];
        let d = PairedDifference::of(&ours, &theirs);
        assert!(close(d.mean_diff, 3.0, 1e-12));
        assert!(close(d.sd_diff, 2.5f64.sqrt(), 1e-12));
        let (low, high) = (d.ci95_low.expect("low"), d.ci95_high.expect("high"));
        assert!(close(low, 3.0 - 1.963243, 1e-5), "{low}");
        assert!(close(high, 3.0 + 1.963243, 1e-5), "{high}");
        assert!(d.beyond_noise);
        assert_eq!(d.n, 5);
        // Differences −1, 1, −1, 1: mean 0, interval straddles 0.
        let d = PairedDifference::of(&[0.0, 2.0, 0.0, 2.0], &[1.0; 4]);
        assert!(close(d.mean_diff, 0.0, 1e-15));
        assert!(d.ci95_low.expect("low") < 0.0 && d.ci95_high.expect("high") > 0.0);
        assert!(!d.beyond_noise);
        // The same difference on every seed: zero width, beyond noise.
        let d = PairedDifference::of(&[2.0, 3.0], &[1.0, 2.0]);
        assert_eq!((d.ci95_low, d.ci95_high), (Some(1.0), Some(1.0)));
        assert!(d.beyond_noise);
    }

    #[test]
    fn one_seed_has_no_interval_and_no_nan() {
        let d = PairedDifference::of(&[0.25], &[0.5]);
        assert_eq!(d.mean_diff, -0.25);
        assert_eq!(d.sd_diff, 0.0);
        assert_eq!(
            (d.ci95_low, d.ci95_high, d.beyond_noise),
            (None, None, false)
        );
        assert!(d.mean_diff.is_finite() && d.sd_diff.is_finite());
        let d = PairedDifference::of(&[], &[]);
        assert_eq!(
            (d.mean_diff, d.sd_diff, d.n, d.beyond_noise),
            (0.0, 0.0, 0, false)
        );
    }

    fn report(policy: &str, slo: f64, reconfigurations: u64, accuracy: f64) -> PolicyReport {
        PolicyReport {
            policy: policy.to_owned(),
            slo_violation_rate: slo,
            reconfigurations,
            on_time_accuracy: accuracy,
            mean_accuracy: accuracy + 0.01,
            ..PolicyReport::default()
        }
    }

    #[test]
    fn summary_pairs_against_the_reference_seed_by_seed() {
        let runs = vec![
            SeedRun {
                seed: 1,
                policies: vec![
                    report("infadapt", 0.01, 2, 0.80),
                    report("ipa", 0.04, 8, 0.78),
                ],
            },
            SeedRun {
                seed: 2,
                policies: vec![
                    report("infadapt", 0.02, 4, 0.82),
                    report("ipa", 0.05, 12, 0.79),
                ],
            },
            SeedRun {
                seed: 3,
                policies: vec![
                    report("infadapt", 0.03, 3, 0.81),
                    report("ipa", 0.09, 10, 0.80),
                ],
            },
        ];
        let summary = summarize(&runs);
        assert_eq!(summary.len(), 2);
        let (ours, ipa) = (&summary[0], &summary[1]);
        assert_eq!((ours.policy.as_str(), ours.n), ("infadapt", 3));
        assert!(
            ours.paired.is_none(),
            "the reference is not paired with itself"
        );
        assert!(close(ours.metrics["slo_violation_rate"].mean, 0.02, 1e-12));
        assert!(close(ours.metrics["slo_violation_rate"].sd, 0.01, 1e-12));
        assert!(close(ipa.metrics["reconfigurations"].mean, 10.0, 1e-12));
        assert!(close(ipa.metrics["reconfigurations"].sd, 2.0, 1e-12));
        let paired = ipa.paired.as_ref().expect("paired");
        assert_eq!(paired.len(), Metric::ALL.len());
        // SLO differences −0.03, −0.03, −0.06.
        let slo = &paired["slo_violation_rate"];
        assert!(close(slo.mean_diff, -0.04, 1e-12));
        assert!(close(slo.sd_diff, (0.0006f64 / 2.0).sqrt(), 1e-12));
        // Half width t(2) · sd / √3 = 4.302653 · 0.01: the interval reaches above 0.
        assert!(close(
            slo.ci95_low.expect("low"),
            -0.04 - 0.043_026_53,
            1e-7
        ));
        assert!(close(
            slo.ci95_high.expect("high"),
            -0.04 + 0.043_026_53,
            1e-7
        ));
        assert!(!slo.beyond_noise);
        assert!(close(
            slo.ratio_of_means.expect("ratio"),
            0.02 / 0.06,
            1e-12
        ));
        // Reconfigurations −6, −8, −7: ratio 3 / 10.
        let reconfigurations = &paired["reconfigurations"];
        assert!(close(reconfigurations.mean_diff, -7.0, 1e-12));
        // sd 1, half width 4.302653 / √3 = 2.484138: entirely below 0.
        assert!(close(
            reconfigurations.ci95_high.expect("high"),
            -7.0 + 2.484_138,
            1e-6
        ));
        assert!(reconfigurations.beyond_noise);
        assert!(close(
            reconfigurations.ratio_of_means.expect("ratio"),
            0.3,
            1e-12
        ));
        assert!(paired["on_time_accuracy"].ratio_of_means.is_none());
        // Accuracy differences 0.02, 0.03, 0.01.
        assert!(close(paired["on_time_accuracy"].mean_diff, 0.02, 1e-12));
    }

    #[test]
    fn missing_reference_or_missing_seeds() {
        let without = vec![SeedRun {
            seed: 1,
            policies: vec![report("ipa", 0.0, 0, 0.5)],
        }];
        let summary = summarize(&without);
        assert!(summary[0].paired.is_none());
        // ipa failed on seed 2: summarised over seed 1 only, paired over seed 1 only.
        let gap = vec![
            SeedRun {
                seed: 1,
                policies: vec![report("infadapt", 0.0, 1, 0.9), report("ipa", 0.0, 0, 0.5)],
            },
            SeedRun {
                seed: 2,
                policies: vec![report("infadapt", 0.0, 3, 0.7)],
            },
        ];
        let summary = summarize(&gap);
        let ipa = &summary[1];
        assert_eq!(ipa.n, 1);
        let paired = ipa.paired.as_ref().expect("paired");
        let reconfigurations = &paired["reconfigurations"];
        assert_eq!((reconfigurations.n, reconfigurations.mean_diff), (1, 1.0));
        // Their mean of reconfigurations is 0: no ratio.
        assert!(reconfigurations.ratio_of_means.is_none());
        assert!(reconfigurations.ci95_low.is_none());
    }
}
