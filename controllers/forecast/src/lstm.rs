//! LSTM forecaster written on nalgebra: stacked LSTM layers over the maxima and means of
//! recent buckets, a linear head predicting the maximum of the next horizon, trained
//! with backpropagation through time and Adam, and saved as versioned JSON.

use std::collections::VecDeque;

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{ForecastError, Result};
use crate::forecaster::{Forecast, Forecaster, finite_non_negative};
use crate::sanitize::{HygieneReport, Sanitizer};
use crate::trace::Trace;

/// Version of the saved model format; bump on any incompatible change.
pub const LSTM_SCHEMA_VERSION: u32 = 1;

/// Features per time step: bucket maximum and bucket mean.
const FEATURES: usize = 2;

/// Shape and training options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LstmConfig {
    /// Bucket length in seconds.
    pub bucket_s: f64,
    /// Buckets fed to the network per forecast.
    pub window: usize,
    /// Hidden units per layer.
    pub units: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Horizon in seconds the network is trained for (a multiple of `bucket_s`).
    pub horizon_s: f64,
    /// Passes over the training data.
    pub epochs: usize,
    /// Sequences per Adam step.
    pub batch: usize,
    /// Adam step size.
    pub learning_rate: f64,
    /// Seed of the weight initialisation and shuffling.
    pub seed: u64,
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            bucket_s: 10.0,
            window: 12,
            units: 25,
            layers: 1,
            horizon_s: 60.0,
            epochs: 6,
            batch: 64,
            learning_rate: 0.003,
            seed: 42,
        }
    }
}

impl LstmConfig {
    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !(self.bucket_s.is_finite() && self.bucket_s >= 1.0) {
            problems.push(format!(
                "bucket_s must be at least 1, got {}",
                self.bucket_s
            ));
        }
        for (name, value, max) in [
            ("window", self.window, 1024),
            ("units", self.units, 1024),
            ("layers", self.layers, 8),
        ] {
            if !(1..=max).contains(&value) {
                problems.push(format!("{name} must be from 1 to {max}, got {value}"));
            }
        }
        if !(self.horizon_s.is_finite() && self.horizon_s >= self.bucket_s) {
            problems.push(format!(
                "horizon_s must be at least bucket_s ({}), got {}",
                self.bucket_s, self.horizon_s
            ));
        }
        if self.batch < 1 {
            problems.push("batch must be at least 1, got 0".to_owned());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            problems.push(format!(
                "learning_rate must be above 0, got {}",
                self.learning_rate
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ForecastError::InvalidConfig(format!(
                "lstm options out of range: {}",
                problems.join("; ")
            )))
        }
    }

    fn horizon_buckets(&self) -> usize {
        (self.horizon_s / self.bucket_s).round().max(1.0) as usize
    }
}

/// Affine normalisation of inputs and target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Subtracted from every value.
    pub offset: f64,
    /// Divides every value after the offset.
    pub scale: f64,
}

impl Normalisation {
    fn apply(&self, x: f64) -> f64 {
        (x - self.offset) / self.scale
    }
    fn invert(&self, z: f64) -> f64 {
        z * self.scale + self.offset
    }
}

/// Weights of one LSTM layer; gate rows are ordered input, forget, cell, output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstmLayer {
    /// Input weights, `4 units x inputs`.
    pub w: DMatrix<f64>,
    /// Recurrent weights, `4 units x units`.
    pub u: DMatrix<f64>,
    /// Biases, `4 units`.
    pub b: DVector<f64>,
}

/// A trained network with everything needed to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstmModel {
    /// Format version, [`LSTM_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Shape and training options.
    pub config: LstmConfig,
    /// Normalisation of inputs and target.
    pub normalisation: Normalisation,
    /// Layers, bottom first.
    pub layers: Vec<LstmLayer>,
    /// Output weights.
    pub head_w: DVector<f64>,
    /// Output bias.
    pub head_b: f64,
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Training sequences.
    pub train_samples: usize,
    /// Held-out sequences (the last tenth, in time order).
    pub validation_samples: usize,
    /// Validation MAE in requests per second after each epoch.
    pub validation_mae: Vec<f64>,
    /// Epoch whose weights were kept (lowest validation MAE), 1-based.
    pub best_epoch: usize,
}

/// Deterministic pseudo-random numbers (SplitMix64).
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Values kept from the forward pass of one layer at one step.
#[derive(Debug)]
struct StepCache {
    input: DMatrix<f64>,
    h_prev: DMatrix<f64>,
    c_prev: DMatrix<f64>,
    gates: DMatrix<f64>,
    tanh_c: DMatrix<f64>,
}

/// Gradients, shaped like the model.
#[derive(Debug, Clone)]
struct Gradients {
    layers: Vec<LstmLayer>,
    head_w: DVector<f64>,
    head_b: f64,
}

impl LstmModel {
    /// A freshly initialised network.
    pub fn new(config: LstmConfig, normalisation: Normalisation) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix(config.seed);
        let h = config.units;
        let bound = 1.0 / (h as f64).sqrt();
        let mut init = |rows: usize, cols: usize| {
            DMatrix::from_fn(rows, cols, |_, _| (2.0 * rng.uniform() - 1.0) * bound)
        };
        let layers = (0..config.layers)
            .map(|l| {
                let inputs = if l == 0 { FEATURES } else { h };
                let mut b = DVector::zeros(4 * h);
                b.rows_mut(h, h).fill(1.0);
                LstmLayer {
                    w: init(4 * h, inputs),
                    u: init(4 * h, h),
                    b,
                }
            })
            .collect();
        let head_w = DVector::from_iterator(h, init(h, 1).iter().copied());
        Ok(Self {
            schema_version: LSTM_SCHEMA_VERSION,
            config,
            normalisation,
            layers,
            head_w,
            head_b: 0.0,
        })
    }

    /// Reads a model saved by [`LstmModel::to_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct VersionOnly {
            schema_version: Option<u32>,
        }
        let unreadable = |e: serde_json::Error| {
            ForecastError::InvalidModel(if e.is_eof() {
                format!("the file ends early (truncated?): {e}")
            } else if e.is_syntax() {
                format!("not JSON: {e}")
            } else {
                e.to_string()
            })
        };
        let version: VersionOnly = serde_json::from_str(text).map_err(unreadable)?;
        let Some(found) = version.schema_version else {
            return Err(ForecastError::InvalidModel(
                "no `schema_version`: not a model written by `infadaptd forecast train`".into(),
            ));
        };
        if found != LSTM_SCHEMA_VERSION {
            return Err(ForecastError::UnsupportedSchema {
                found,
                expected: LSTM_SCHEMA_VERSION,
            });
        }
        let model: Self = serde_json::from_str(text).map_err(unreadable)?;
        model.check_shapes()?;
        Ok(model)
    }

    /// Serialises weights, normalisation and options as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn check_shapes(&self) -> Result<()> {
        self.config.validate()?;
        let h = self.config.units;
        let shapes_ok = self.layers.len() == self.config.layers
            && self.layers.iter().enumerate().all(|(l, layer)| {
                let inputs = if l == 0 { FEATURES } else { h };
                layer.w.shape() == (4 * h, inputs)
                    && layer.u.shape() == (4 * h, h)
                    && layer.b.len() == 4 * h
            })
            && self.head_w.len() == h;
        let finite = self.layers.iter().all(|layer| {
            layer
                .w
                .iter()
                .chain(layer.u.iter())
                .chain(layer.b.iter())
                .all(|x| x.is_finite())
        }) && self.head_w.iter().all(|x| x.is_finite())
            && self.head_b.is_finite()
            && self.normalisation.offset.is_finite()
            && self.normalisation.scale.is_finite()
            && self.normalisation.scale > 0.0;
        if shapes_ok && finite {
            Ok(())
        } else {
            Err(ForecastError::InvalidModel(
                "weights do not match the stated shape".into(),
            ))
        }
    }

    /// Runs the network on a batch: `inputs[t]` is `FEATURES x batch` (normalised).
    /// Returns the normalised outputs and, when `keep` is set, the caches for BPTT.
    fn forward(&self, inputs: &[DMatrix<f64>], keep: bool) -> (DVector<f64>, Vec<Vec<StepCache>>) {
        let h = self.config.units;
        let batch = inputs.first().map_or(1, |x| x.ncols());
        let mut sequence: Vec<DMatrix<f64>> = inputs.to_vec();
        let mut caches = Vec::new();
        for layer in &self.layers {
            let mut h_state = DMatrix::zeros(h, batch);
            let mut c_state = DMatrix::zeros(h, batch);
            let mut layer_cache = Vec::new();
            let mut outputs = Vec::with_capacity(sequence.len());
            for x in &sequence {
                let mut gates = &layer.w * x + &layer.u * &h_state;
                for mut column in gates.column_iter_mut() {
                    column += &layer.b;
                }
                for (row, mut gate_row) in gates.row_iter_mut().enumerate() {
                    let squash: fn(f64) -> f64 = if (2 * h..3 * h).contains(&row) {
                        f64::tanh
                    } else {
                        sigmoid
                    };
                    gate_row.apply(|g| *g = squash(*g));
                }
                let i = gates.rows(0, h);
                let f = gates.rows(h, h);
                let g = gates.rows(2 * h, h);
                let o = gates.rows(3 * h, h);
                let c_new = f.component_mul(&c_state) + i.component_mul(&g);
                let tanh_c = c_new.map(f64::tanh);
                let h_new = o.component_mul(&tanh_c);
                if keep {
                    layer_cache.push(StepCache {
                        input: x.clone(),
                        h_prev: h_state.clone(),
                        c_prev: c_state.clone(),
                        gates: gates.clone(),
                        tanh_c: tanh_c.clone(),
                    });
                }
                outputs.push(h_new.clone());
                h_state = h_new;
                c_state = c_new;
            }
            caches.push(layer_cache);
            sequence = outputs;
        }
        let last = sequence
            .last()
            .cloned()
            .unwrap_or_else(|| DMatrix::zeros(h, batch));
        let y = last.tr_mul(&self.head_w).add_scalar(self.head_b);
        (y, caches)
    }

    /// Gradients of the mean Huber loss for one batch; returns the loss too.
    fn backward(&self, inputs: &[DMatrix<f64>], targets: &DVector<f64>) -> (f64, Gradients) {
        const DELTA: f64 = 0.1;
        let h = self.config.units;
        let (y, caches) = self.forward(inputs, true);
        let batch = targets.len() as f64;
        let mut loss = 0.0;
        let dy = DVector::from_iterator(
            targets.len(),
            y.iter().zip(targets.iter()).map(|(p, t)| {
                let r = p - t;
                if r.abs() <= DELTA {
                    loss += 0.5 * r * r;
                    r / batch
                } else {
                    loss += DELTA * (r.abs() - 0.5 * DELTA);
                    DELTA * r.signum() / batch
                }
            }),
        );
        let top = caches.last().and_then(|c| c.last());
        let last_h = top.map_or_else(
            || DMatrix::zeros(h, targets.len()),
            |step| {
                let o = step.gates.rows(3 * h, h);
                o.component_mul(&step.tanh_c)
            },
        );
        let head_w = &last_h * &dy;
        let head_b = dy.sum();
        let steps = inputs.len();
        // Gradient flowing into each step's hidden output of the current layer.
        let mut d_out: Vec<DMatrix<f64>> = vec![DMatrix::zeros(h, targets.len()); steps];
        if let Some(last) = d_out.last_mut() {
            *last = &self.head_w * dy.transpose();
        }
        let mut layer_grads: Vec<LstmLayer> = Vec::with_capacity(self.layers.len());
        for (layer, cache) in self.layers.iter().zip(&caches).rev() {
            let mut dw = DMatrix::zeros(layer.w.nrows(), layer.w.ncols());
            let mut du = DMatrix::zeros(layer.u.nrows(), layer.u.ncols());
            let mut db = DVector::zeros(layer.b.len());
            let mut dh_next = DMatrix::zeros(h, targets.len());
            let mut dc_next = DMatrix::zeros(h, targets.len());
            let mut d_in: Vec<DMatrix<f64>> = Vec::with_capacity(steps);
            for (t, step) in cache.iter().enumerate().rev() {
                let dh = &d_out[t] + &dh_next;
                let i = step.gates.rows(0, h);
                let f = step.gates.rows(h, h);
                let g = step.gates.rows(2 * h, h);
                let o = step.gates.rows(3 * h, h);
                let d_o = dh.component_mul(&step.tanh_c);
                let dc = dh
                    .component_mul(&o)
                    .component_mul(&step.tanh_c.map(|x| 1.0 - x * x))
                    + &dc_next;
                let d_f = dc.component_mul(&step.c_prev);
                let d_i = dc.component_mul(&g);
                let d_g = dc.component_mul(&i);
                dc_next = dc.component_mul(&f);
                let mut dz = DMatrix::zeros(4 * h, targets.len());
                dz.rows_mut(0, h)
                    .copy_from(&d_i.component_mul(&i.map(|x| x * (1.0 - x))));
                dz.rows_mut(h, h)
                    .copy_from(&d_f.component_mul(&f.map(|x| x * (1.0 - x))));
                dz.rows_mut(2 * h, h)
                    .copy_from(&d_g.component_mul(&g.map(|x| 1.0 - x * x)));
                dz.rows_mut(3 * h, h)
                    .copy_from(&d_o.component_mul(&o.map(|x| x * (1.0 - x))));
                dw += &dz * step.input.transpose();
                du += &dz * step.h_prev.transpose();
                db += dz.column_sum();
                dh_next = layer.u.tr_mul(&dz);
                d_in.push(layer.w.tr_mul(&dz));
            }
            d_in.reverse();
            d_out = d_in;
            layer_grads.push(LstmLayer {
                w: dw,
                u: du,
                b: db,
            });
        }
        layer_grads.reverse();
        (
            loss / batch,
            Gradients {
                layers: layer_grads,
                head_w,
                head_b,
            },
        )
    }

    /// Predicts the horizon maximum (requests per second) from raw bucket features,
    /// oldest first: `(max, mean)` per bucket. A single-sequence forward pass without
    /// per-step allocations.
    pub fn predict(&self, buckets: &[(f64, f64)]) -> f64 {
        let h = self.config.units;
        let mut sequence: Vec<f64> = buckets
            .iter()
            .flat_map(|&(max, mean)| {
                [
                    self.normalisation.apply(max),
                    self.normalisation.apply(mean),
                ]
            })
            .collect();
        let mut inputs = FEATURES;
        let mut gates = DVector::<f64>::zeros(4 * h);
        let mut hidden = DVector::<f64>::zeros(h);
        let mut cell = DVector::<f64>::zeros(h);
        let mut outputs: Vec<f64> = Vec::with_capacity(buckets.len() * h);
        for layer in &self.layers {
            hidden.fill(0.0);
            cell.fill(0.0);
            outputs.clear();
            for x in sequence.chunks_exact(inputs) {
                let x = nalgebra::DVectorView::from_slice(x, inputs);
                gates.copy_from(&layer.b);
                gates.gemv(1.0, &layer.w, &x, 1.0);
                gates.gemv(1.0, &layer.u, &hidden, 1.0);
                for unit in 0..h {
                    let i = sigmoid(gates[unit]);
                    let f = sigmoid(gates[h + unit]);
                    let g = gates[2 * h + unit].tanh();
                    let o = sigmoid(gates[3 * h + unit]);
                    cell[unit] = f * cell[unit] + i * g;
                    hidden[unit] = o * cell[unit].tanh();
                }
                outputs.extend(hidden.iter());
            }
            std::mem::swap(&mut sequence, &mut outputs);
            inputs = h;
        }
        let y = hidden.dot(&self.head_w) + self.head_b;
        finite_non_negative(self.normalisation.invert(y))
    }

    /// Trains a network on `trace` with `config`.
    pub fn train(trace: &Trace, config: LstmConfig) -> Result<(Self, TrainReport)> {
        config.validate()?;
        let buckets = BucketSeries::from_trace(trace, config.bucket_s);
        let samples = buckets.samples(config.window, config.horizon_buckets());
        if samples.len() < 20 {
            return Err(ForecastError::NotEnoughData(format!(
                "lstm training needs at least 20 complete windows, got {}",
                samples.len()
            )));
        }
        let split = samples.len() - samples.len() / 10;
        let (train, validation) = samples.split_at(split);
        let values: Vec<f64> = train.iter().map(|s| s.target).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64)
            .sqrt()
            .max(1e-6);
        let normalisation = Normalisation {
            offset: mean,
            scale: sd,
        };
        let mut model = Self::new(config, normalisation)?;
        let mut adam = Adam::new(&model);
        let mut rng = SplitMix(config.seed ^ 0x5EED);
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut report = TrainReport {
            train_samples: train.len(),
            validation_samples: validation.len(),
            validation_mae: Vec::new(),
            best_epoch: 0,
        };
        let mut best: Option<(f64, Self)> = None;
        for epoch in 0..config.epochs.max(1) {
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            for chunk in order.chunks(config.batch) {
                let (inputs, targets) = batch_tensors(&buckets, train, chunk, &model);
                let (_, grads) = model.backward(&inputs, &targets);
                adam.step(&mut model, &grads, config.learning_rate);
            }
            let mae = model.mean_abs_error(&buckets, validation);
            report.validation_mae.push(mae);
            if best.as_ref().is_none_or(|(b, _)| mae < *b) {
                best = Some((mae, model.clone()));
                report.best_epoch = epoch + 1;
            }
        }
        let model = best.map_or(model, |(_, m)| m);
        Ok((model, report))
    }

    fn mean_abs_error(&self, buckets: &BucketSeries, samples: &[Sample]) -> f64 {
        let mut total = 0.0;
        let indices: Vec<usize> = (0..samples.len()).collect();
        for chunk in indices.chunks(256) {
            let (inputs, targets) = batch_tensors(buckets, samples, chunk, self);
            let (y, _) = self.forward(&inputs, false);
            for (p, t) in y.iter().zip(targets.iter()) {
                total += (self.normalisation.invert(*p) - self.normalisation.invert(*t)).abs();
            }
        }
        total / samples.len().max(1) as f64
    }
}

/// Adam optimiser state.
#[derive(Debug)]
struct Adam {
    m: Gradients,
    v: Gradients,
    t: i32,
}

impl Adam {
    fn new(model: &LstmModel) -> Self {
        let zeros = Gradients {
            layers: model
                .layers
                .iter()
                .map(|l| LstmLayer {
                    w: DMatrix::zeros(l.w.nrows(), l.w.ncols()),
                    u: DMatrix::zeros(l.u.nrows(), l.u.ncols()),
                    b: DVector::zeros(l.b.len()),
                })
                .collect(),
            head_w: DVector::zeros(model.head_w.len()),
            head_b: 0.0,
        };
        Self {
            m: zeros.clone(),
            v: zeros,
            t: 0,
        }
    }

    fn step(&mut self, model: &mut LstmModel, grads: &Gradients, learning_rate: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let update = |p: &mut f64, g: f64, m: &mut f64, v: &mut f64| {
            if !g.is_finite() {
                return;
            }
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= learning_rate * (*m / c1) / ((*v / c2).sqrt() + EPS);
        };
        for ((layer, grad), (m, v)) in model
            .layers
            .iter_mut()
            .zip(&grads.layers)
            .zip(self.m.layers.iter_mut().zip(self.v.layers.iter_mut()))
        {
            for (((p, g), m), v) in layer
                .w
                .iter_mut()
                .zip(grad.w.iter())
                .zip(m.w.iter_mut())
                .zip(v.w.iter_mut())
            {
                update(p, *g, m, v);
            }
            for (((p, g), m), v) in layer
                .u
                .iter_mut()
                .zip(grad.u.iter())
                .zip(m.u.iter_mut())
                .zip(v.u.iter_mut())
            {
                update(p, *g, m, v);
            }
            for (((p, g), m), v) in layer
                .b
                .iter_mut()
                .zip(grad.b.iter())
                .zip(m.b.iter_mut())
                .zip(v.b.iter_mut())
            {
                update(p, *g, m, v);
            }
        }
        for (((p, g), m), v) in model
            .head_w
            .iter_mut()
            .zip(grads.head_w.iter())
            .zip(self.m.head_w.iter_mut())
            .zip(self.v.head_w.iter_mut())
        {
            update(p, *g, m, v);
        }
        update(
            &mut model.head_b,
            grads.head_b,
            &mut self.m.head_b,
            &mut self.v.head_b,
        );
    }
}

/// One training example: the window ends just before bucket `end`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    end: usize,
    target: f64,
}

/// Per-bucket (max, mean) features with gaps carried forward.
#[derive(Debug)]
struct BucketSeries {
    features: Vec<(f64, f64)>,
    observed: Vec<bool>,
}

impl BucketSeries {
    fn from_trace(trace: &Trace, bucket_s: f64) -> Self {
        let mut sanitizer = Sanitizer::default();
        let clean: Vec<(f64, f64)> = trace
            .times_s
            .iter()
            .zip(&trace.rps)
            .filter_map(|(&t, &v)| sanitizer.accept(t, v))
            .collect();
        let Some(&(first_t, _)) = clean.first() else {
            return Self {
                features: Vec::new(),
                observed: Vec::new(),
            };
        };
        let first = (first_t / bucket_s).floor() as i64;
        let last = (clean[clean.len() - 1].0 / bucket_s).floor() as i64;
        let count = last
            .saturating_sub(first)
            .saturating_add(1)
            .clamp(0, 1 << 26) as usize;
        let mut max = vec![f64::NEG_INFINITY; count];
        let mut sum = vec![0.0; count];
        let mut n = vec![0usize; count];
        for &(t, v) in &clean {
            let index = ((t / bucket_s).floor() as i64).saturating_sub(first) as usize;
            if index < count {
                max[index] = max[index].max(v);
                sum[index] += v;
                n[index] += 1;
            }
        }
        let mut features = Vec::with_capacity(count);
        let mut held = (clean[0].1, clean[0].1);
        for i in 0..count {
            if n[i] > 0 {
                held = (max[i], sum[i] / n[i] as f64);
            }
            features.push(held);
        }
        Self {
            features,
            observed: n.iter().map(|&c| c > 0).collect(),
        }
    }

    fn samples(&self, window: usize, horizon: usize) -> Vec<Sample> {
        let mut samples = Vec::new();
        for end in window..self.features.len().saturating_sub(horizon - 1) {
            let target = (end..end + horizon)
                .filter(|&i| self.observed[i])
                .map(|i| self.features[i].0)
                .reduce(f64::max);
            let inputs_seen = self.observed[end - window..end].iter().any(|&o| o);
            if let (Some(target), true) = (target, inputs_seen) {
                samples.push(Sample { end, target });
            }
        }
        samples
    }
}

fn batch_tensors(
    buckets: &BucketSeries,
    samples: &[Sample],
    chosen: &[usize],
    model: &LstmModel,
) -> (Vec<DMatrix<f64>>, DVector<f64>) {
    let window = model.config.window;
    let norm = model.normalisation;
    let inputs = (0..window)
        .map(|step| {
            DMatrix::from_fn(FEATURES, chosen.len(), |feature, column| {
                let sample = samples[chosen[column]];
                let (max, mean) = buckets.features[sample.end - window + step];
                norm.apply(if feature == 0 { max } else { mean })
            })
        })
        .collect();
    let targets = DVector::from_iterator(
        chosen.len(),
        chosen.iter().map(|&i| norm.apply(samples[i].target)),
    );
    (inputs, targets)
}

/// Forecaster that runs a trained [`LstmModel`] on the buckets ending at `now`. It
/// predicts the horizon the model was trained for (`config.horizon_s`), whatever horizon
/// it is asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstmForecaster {
    model: LstmModel,
    sanitizer: Sanitizer,
    recent: VecDeque<(f64, f64)>,
}

impl LstmForecaster {
    /// Wraps a trained model.
    pub fn new(model: LstmModel) -> Self {
        Self {
            model,
            sanitizer: Sanitizer::default(),
            recent: VecDeque::new(),
        }
    }

    /// The model in use.
    pub fn model(&self) -> &LstmModel {
        &self.model
    }

    fn span_s(&self) -> f64 {
        self.model.config.bucket_s * self.model.config.window as f64
    }
}

impl Forecaster for LstmForecaster {
    fn name(&self) -> &str {
        "lstm"
    }

    fn observe(&mut self, t_s: f64, rps: f64) {
        if let Some(sample) = self.sanitizer.accept(t_s, rps) {
            self.recent.push_back(sample);
            // Keep at least one sample beyond the window so gaps can be bridged.
            while self.recent.len() > 1
                && self
                    .recent
                    .get(1)
                    .is_some_and(|&(t, _)| t < sample.0 - self.span_s())
            {
                self.recent.pop_front();
            }
        }
    }

    fn forecast(&mut self, now_s: f64, _horizon_s: f64) -> Forecast {
        let Some(&(_, last)) = self.recent.back() else {
            return Forecast::sanitized(0.0, 0.0, 0.9);
        };
        let config = self.model.config;
        let now = if now_s.is_finite() { now_s } else { 0.0 };
        let mut buckets = vec![None::<(f64, f64, usize)>; config.window];
        let start = now - self.span_s();
        for &(t, v) in &self.recent {
            if t < start || t >= now {
                continue;
            }
            let index = (((t - start) / config.bucket_s).floor() as usize).min(config.window - 1);
            let entry = buckets[index].get_or_insert((f64::NEG_INFINITY, 0.0, 0));
            entry.0 = entry.0.max(v);
            entry.1 += v;
            entry.2 += 1;
        }
        let first_seen = buckets
            .iter()
            .flatten()
            .next()
            .map_or((last, last), |&(m, s, n)| (m, s / n as f64));
        let mut held = first_seen;
        let features: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| {
                if let Some(&(m, s, n)) = b.as_ref() {
                    held = (m, s / n as f64);
                }
                held
            })
            .collect();
        let point = self.model.predict(&features);
        Forecast::sanitized(point, point, 0.9)
    }

    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> LstmConfig {
        LstmConfig {
            window: 4,
            units: 3,
            layers: 2,
            ..LstmConfig::default()
        }
    }

    fn loss_of(model: &LstmModel, inputs: &[DMatrix<f64>], targets: &DVector<f64>) -> f64 {
        model.backward(inputs, targets).0
    }

    #[test]
    fn bptt_gradient_matches_finite_differences() {
        let norm = Normalisation {
            offset: 0.0,
            scale: 1.0,
        };
        let mut model = LstmModel::new(tiny_config(), norm).unwrap();
        let inputs: Vec<DMatrix<f64>> = (0..4)
            .map(|t| DMatrix::from_fn(2, 3, |r, c| ((t * 7 + r * 3 + c) % 5) as f64 / 5.0 - 0.4))
            .collect();
        // Targets far from the outputs put every sample in the linear part of the loss;
        // one near target exercises the quadratic part.
        let targets = DVector::from_vec(vec![3.0, -2.0, model.forward(&inputs, false).0[2] + 0.05]);
        let (_, grads) = model.backward(&inputs, &targets);
        let h = 1e-6;
        let mut check = |analytic: f64, get: &mut dyn FnMut(&mut LstmModel) -> &mut f64| {
            let original = *get(&mut model);
            *get(&mut model) = original + h;
            let plus = loss_of(&model, &inputs, &targets);
            *get(&mut model) = original - h;
            let minus = loss_of(&model, &inputs, &targets);
            *get(&mut model) = original;
            let numeric = (plus - minus) / (2.0 * h);
            assert!(
                (numeric - analytic).abs() < 1e-6 + 1e-4 * numeric.abs(),
                "numeric {numeric} analytic {analytic}"
            );
        };
        for l in 0..2 {
            for (r, c) in [(0, 0), (4, 1), (7, 0), (11, 1)] {
                check(grads.layers[l].w[(r, c)], &mut |m| {
                    &mut m.layers[l].w[(r, c)]
                });
            }
            for (r, c) in [(1, 2), (5, 0), (8, 1), (10, 2)] {
                check(grads.layers[l].u[(r, c)], &mut |m| {
                    &mut m.layers[l].u[(r, c)]
                });
            }
            for r in [0, 3, 6, 9] {
                check(grads.layers[l].b[r], &mut |m| &mut m.layers[l].b[r]);
            }
        }
        check(grads.head_w[1], &mut |m| &mut m.head_w[1]);
        check(grads.head_b, &mut |m| &mut m.head_b);
    }

    fn sawtooth_trace(seconds: usize) -> Trace {
        let values: Vec<f64> = (0..seconds)
            .map(|t| 50.0 + 30.0 * ((t / 300) % 2) as f64 + ((t * 13) % 7) as f64)
            .collect();
        Trace::from_per_second(&values)
    }

    #[test]
    fn training_reduces_validation_error_and_round_trips() {
        let trace = sawtooth_trace(40_000);
        let config = LstmConfig {
            window: 6,
            units: 8,
            epochs: 3,
            ..LstmConfig::default()
        };
        let untrained = LstmModel::new(
            config,
            Normalisation {
                offset: 65.0,
                scale: 16.0,
            },
        )
        .unwrap();
        let buckets = BucketSeries::from_trace(&trace, config.bucket_s);
        let samples = buckets.samples(config.window, config.horizon_buckets());
        let validation = &samples[samples.len() - samples.len() / 10..];
        let before = untrained.mean_abs_error(&buckets, validation);
        let (model, report) = LstmModel::train(&trace, config).unwrap();
        let after = report.validation_mae[report.best_epoch - 1];
        assert!(after < 0.5 * before, "validation mae {before} -> {after}");
        let restored = LstmModel::from_json(&model.to_json()).unwrap();
        assert_eq!(restored, model);
    }

    #[test]
    fn single_sequence_predict_matches_batched_forward() {
        let model = LstmModel::new(
            tiny_config(),
            Normalisation {
                offset: 50.0,
                scale: 10.0,
            },
        )
        .unwrap();
        let buckets = [(60.0, 50.0), (70.0, 55.0), (40.0, 35.0), (65.0, 52.0)];
        let inputs: Vec<DMatrix<f64>> = buckets
            .iter()
            .map(|&(m, a)| {
                DMatrix::from_column_slice(2, 1, &[(m - 50.0) / 10.0, (a - 50.0) / 10.0])
            })
            .collect();
        let batched = model.forward(&inputs, false).0[0] * 10.0 + 50.0;
        assert!((model.predict(&buckets) - batched.max(0.0)).abs() < 1e-9);
    }

    #[test]
    fn rejects_other_schema_versions_and_bad_shapes() {
        let model = LstmModel::new(
            tiny_config(),
            Normalisation {
                offset: 0.0,
                scale: 1.0,
            },
        )
        .unwrap();
        let text = model
            .to_json()
            .replace("\"schema_version\":1", "\"schema_version\":99");
        assert_eq!(
            LstmModel::from_json(&text),
            Err(ForecastError::UnsupportedSchema {
                found: 99,
                expected: 1
            })
        );
        let mut broken = model.clone();
        broken.head_w = DVector::zeros(5);
        assert!(matches!(
            LstmModel::from_json(&broken.to_json()),
            Err(ForecastError::InvalidModel(_))
        ));
        let text = model.to_json();
        let truncated = LstmModel::from_json(&text[..text.len() / 2]).expect_err("truncated");
        assert!(
            truncated.to_string().contains("ends early (truncated?)"),
            "{truncated}"
        );
        let not_json = LstmModel::from_json("schema_version = 1").expect_err("not JSON");
        assert!(not_json.to_string().contains("not JSON"), "{not_json}");
        let other = LstmModel::from_json(r#"{"weights": []}"#).expect_err("no version");
        assert!(other.to_string().contains("no `schema_version`"), "{other}");
        let missing = text.replace("\"head_b\":", "\"bias\":");
        assert!(matches!(
            LstmModel::from_json(&missing),
            Err(ForecastError::InvalidModel(m)) if m.contains("head_b")
        ));
    }

    #[test]
    fn forecaster_handles_gaps_and_garbage() {
        let model = LstmModel::new(
            tiny_config(),
            Normalisation {
                offset: 50.0,
                scale: 10.0,
            },
        )
        .unwrap();
        let mut f = LstmForecaster::new(model);
        assert_eq!(f.forecast(0.0, 60.0).point, 0.0);
        f.observe(0.0, 40.0);
        f.observe(1.0, f64::NAN);
        f.observe(500.0, 60.0);
        let fc = f.forecast(1000.0, 60.0);
        assert!(fc.point.is_finite() && fc.upper >= fc.point);
        assert_eq!(f.hygiene().non_finite, 1);
    }

    #[test]
    fn out_of_range_options_are_named_one_by_one() {
        let bad = LstmConfig {
            window: 0,
            learning_rate: -1.0,
            ..LstmConfig::default()
        };
        let err = bad.validate().expect_err("out of range").to_string();
        assert!(
            err.contains("window must be from 1 to 1024, got 0"),
            "{err}"
        );
        assert!(
            err.contains("learning_rate must be above 0, got -1"),
            "{err}"
        );
        assert!(!err.contains("units") && !err.contains('{'), "{err}");
        assert!(LstmConfig::default().validate().is_ok());
    }
}
