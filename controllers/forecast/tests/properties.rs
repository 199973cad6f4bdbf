//! Property tests: whatever the input (NaN, infinities, negatives, zeros, time going
//! backwards), every forecaster returns finite, non-negative forecasts with
//! `upper >= point`, and the hygiene counters add up.

use infadapt_forecast::arima::{ArimaForecaster, ArimaForecasterConfig, partials_to_coefficients};
use infadapt_forecast::conformal::{Calibrated, ConformalConfig};
use infadapt_forecast::forecaster::Forecaster;
use infadapt_forecast::lstm::{LstmConfig, LstmForecaster, LstmModel, Normalisation};
use infadapt_forecast::models::{ModelKind, build};
use infadapt_forecast::sanitize::Sanitizer;
use proptest::prelude::*;

fn any_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..500.0f64,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => -1e6..0.0f64,
        1 => Just(1e300),
    ]
}

fn any_step() -> impl Strategy<Value = f64> {
    prop_oneof![
        16 => Just(1.0),
        2 => 0.0..20.0f64,
        2 => -5.0..0.0f64,
        1 => Just(f64::NAN),
        1 => Just(1e300),
        1 => Just(-1e300),
    ]
}

fn tiny_lstm() -> LstmModel {
    let config = LstmConfig {
        window: 3,
        units: 4,
        ..LstmConfig::default()
    };
    LstmModel::new(
        config,
        Normalisation {
            offset: 60.0,
            scale: 20.0,
        },
    )
    .unwrap()
}

/// Every forecaster, with whether the test should run its refits: the default ARIMA (alone
/// and inside auto) fits a day of buckets, too slow to repeat in a debug property test,
/// so fitting is exercised through a small-window ARIMA instead.
fn all_forecasters() -> Vec<(Box<dyn Forecaster>, bool)> {
    let lstm = tiny_lstm();
    let mut list: Vec<(Box<dyn Forecaster>, bool)> = ModelKind::ALL
        .into_iter()
        .map(|kind| {
            let refits = !matches!(kind, ModelKind::Arima | ModelKind::Auto);
            let model = build(kind, 60.0, Some(&lstm)).unwrap();
            (Box::new(model) as Box<dyn Forecaster>, refits)
        })
        .collect();
    // Small buckets, window and refit period so that short inputs exercise fitting.
    let arima = ArimaForecaster::new(ArimaForecasterConfig {
        min_fit: 32,
        fit_window: 48,
        bucket_s: 2.0,
        refit_every_s: 100.0,
        ..ArimaForecasterConfig::default()
    });
    let calibrated = ConformalConfig {
        min_residuals: 3,
        ..Default::default()
    };
    list.push((Box::new(Calibrated::new(arima, calibrated)), true));
    list.push((
        Box::new(Calibrated::new(
            LstmForecaster::new(lstm),
            ConformalConfig::default(),
        )),
        true,
    ));
    list
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn forecasts_are_finite_and_ordered(
        samples in prop::collection::vec((any_step(), any_rate()), 1..300),
        horizon in prop_oneof![Just(60.0), 1.0..600.0f64, Just(f64::NAN), Just(0.0)],
    ) {
        for (mut f, refits) in all_forecasters() {
            let mut t = 0.0;
            for (i, (step, rate)) in samples.iter().enumerate() {
                t += step;
                f.observe(t, *rate);
                if i % 7 == 0 {
                    if refits && f.refit_due(t) {
                        let _ = f.refit(t);
                    }
                    let fc = f.forecast(t, horizon);
                    prop_assert!(fc.point.is_finite() && fc.point >= 0.0, "{} point {:?}", f.name(), fc);
                    prop_assert!(fc.upper.is_finite() && fc.upper >= fc.point, "{} upper {:?}", f.name(), fc);
                }
            }
            let fc = f.forecast(t + 1.0, 60.0);
            prop_assert!(fc.point.is_finite() && fc.upper >= fc.point);
        }
    }

    #[test]
    fn hygiene_counts_every_sample_once(samples in prop::collection::vec((any_step(), any_rate()), 0..200)) {
        let mut s = Sanitizer::default();
        let mut t = 0.0;
        for (step, rate) in &samples {
            t += step;
            let accepted = s.accept(t, *rate);
            if let Some((_, v)) = accepted {
                prop_assert!(v.is_finite() && v > 0.0);
            }
        }
        let r = s.hygiene();
        prop_assert_eq!(r.seen as usize, samples.len());
        prop_assert_eq!(r.seen, r.accepted + r.non_finite + r.negative + r.zeros_as_gaps + r.out_of_order);
    }

    #[test]
    fn reparametrised_ar_is_stationary(u in prop::collection::vec(-20.0..20.0f64, 1..4)) {
        let a = partials_to_coefficients(&u);
        // Stationary: every eigenvalue of the companion matrix lies inside the unit circle.
        let p = a.len();
        let companion = nalgebra::DMatrix::from_fn(p, p, |r, c| {
            if r == 0 {
                a[c]
            } else if r == c + 1 {
                1.0
            } else {
                0.0
            }
        });
        let radius = companion
            .complex_eigenvalues()
            .iter()
            .map(|z| z.norm())
            .fold(0.0, f64::max);
        prop_assert!(radius < 1.0, "spectral radius {radius} for {a:?}");
    }
}
