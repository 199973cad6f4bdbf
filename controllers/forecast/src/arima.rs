//! ARIMA(p, d, q) on bucket means: conditional-sum-of-squares fit with L-BFGS over a
//! reparametrisation that keeps every candidate stationary and invertible, order chosen
//! by AICc, multi-step forecasts with prediction intervals, and a forecaster that
//! refits on a schedule and turns the level path into a horizon maximum.

use argmin::core::{CostFunction, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use nalgebra::DVector;
use serde::{Deserialize, Serialize};

use crate::error::{ForecastError, Result};
use crate::forecaster::{Forecast, Forecaster, PeakCalibrator, finite_non_negative, noise_scale};
use crate::sanitize::{HygieneReport, Sanitizer};

/// Maps unconstrained values to the coefficients of a stationary polynomial
/// `1 - a_1 B - ... - a_k B^k`: each value becomes a partial autocorrelation through
/// `tanh`, and the Durbin-Levinson recursion turns those into coefficients.
pub fn partials_to_coefficients(unconstrained: &[f64]) -> Vec<f64> {
    let mut coefficients: Vec<f64> = Vec::with_capacity(unconstrained.len());
    for (k, &u) in unconstrained.iter().enumerate() {
        let r = u.tanh() * 0.999;
        let previous = coefficients.clone();
        for j in 0..k {
            coefficients[j] = previous[j] - r * previous[k - 1 - j];
        }
        coefficients.push(r);
    }
    coefficients
}

/// Inverse of [`partials_to_coefficients`]; `None` when the coefficients are not
/// (comfortably) stationary.
pub fn coefficients_to_partials(coefficients: &[f64]) -> Option<Vec<f64>> {
    let mut current = coefficients.to_vec();
    let mut unconstrained = vec![0.0; coefficients.len()];
    for k in (0..coefficients.len()).rev() {
        let r = current[k];
        if !r.is_finite() || r.abs() >= 0.998 {
            return None;
        }
        unconstrained[k] = (r / 0.999).atanh();
        let denominator = 1.0 - r * r;
        current = (0..k)
            .map(|j| (current[j] + r * current[k - 1 - j]) / denominator)
            .collect();
    }
    Some(unconstrained)
}

/// Least squares fit of `targets[t]` on the regressors `row(t, buffer)` writes, through
/// the normal equations; returns the coefficients and the residual sum of squares.
fn least_squares(
    k: usize,
    targets: &[f64],
    mut row: impl FnMut(usize, &mut [f64]),
) -> Option<(Vec<f64>, f64)> {
    let mut ata = nalgebra::DMatrix::<f64>::zeros(k, k);
    let mut atb = DVector::<f64>::zeros(k);
    let mut yy = 0.0;
    let mut buffer = vec![0.0; k];
    for (t, &y) in targets.iter().enumerate() {
        row(t, &mut buffer);
        yy += y * y;
        for i in 0..k {
            atb[i] += buffer[i] * y;
            for j in 0..=i {
                ata[(i, j)] += buffer[i] * buffer[j];
            }
        }
    }
    for i in 0..k {
        for j in 0..i {
            ata[(j, i)] = ata[(i, j)];
        }
        ata[(i, i)] += 1e-9 * (1.0 + ata[(i, i)]);
    }
    let solution = ata.clone().cholesky()?.solve(&atb);
    if !solution.iter().all(|x| x.is_finite()) {
        return None;
    }
    // Residual sum of squares: y'y - 2 b'A'y + b'A'A b.
    let fitted = (&ata * &solution).dot(&solution);
    let sse = (yy - 2.0 * solution.dot(&atb) + fitted).max(0.0);
    Some((solution.as_slice().to_vec(), sse))
}

/// Hannan-Rissanen estimate of an ARMA(p, q) with mean: a long autoregression gives
/// residuals, then one regression on lagged values and lagged residuals. Returns
/// (mean, ar, ma, residual variance) on the sample from `first`.
fn hannan_rissanen(
    w: &[f64],
    p: usize,
    q: usize,
    first: usize,
    long_residuals: Option<&[f64]>,
) -> Option<(f64, Vec<f64>, Vec<f64>, f64)> {
    let n = w.len();
    let mean = w.iter().sum::<f64>() / n as f64;
    let z: Vec<f64> = w.iter().map(|x| x - mean).collect();
    let owned;
    let residuals: &[f64] = match long_residuals {
        Some(r) => r,
        None if q == 0 => &[],
        None => {
            owned = long_ar_residuals(w)?;
            &owned
        }
    };
    let long = LONG_AR;
    let start = first.max(long + q.max(4)).max(p);
    if n <= start + p + q + 2 {
        return None;
    }
    let (ar, ma, sse) = if p + q == 0 {
        (
            vec![],
            vec![],
            z[start..].iter().map(|x| x * x).sum::<f64>(),
        )
    } else {
        let (coef, sse) = least_squares(p + q, &z[start..], |row, buffer| {
            let t = row + start;
            for i in 0..p {
                buffer[i] = z[t - 1 - i];
            }
            for j in 0..q {
                buffer[p + j] = residuals[t - 1 - j];
            }
        })?;
        (coef[..p].to_vec(), coef[p..].to_vec(), sse)
    };
    Some((mean, ar, ma, sse / (n - start) as f64))
}

/// Order of the long autoregression used for Hannan-Rissanen residuals.
const LONG_AR: usize = 12;

/// Residuals of a long autoregression on the demeaned series (zero before `LONG_AR`).
fn long_ar_residuals(w: &[f64]) -> Option<Vec<f64>> {
    let n = w.len();
    if n <= 2 * LONG_AR {
        return None;
    }
    let mean = w.iter().sum::<f64>() / n as f64;
    let z: Vec<f64> = w.iter().map(|x| x - mean).collect();
    let (coef, _) = least_squares(LONG_AR, &z[LONG_AR..], |row, buffer| {
        let t = row + LONG_AR;
        for (i, slot) in buffer.iter_mut().enumerate() {
            *slot = z[t - 1 - i];
        }
    })?;
    let mut residuals = vec![0.0; n];
    for t in LONG_AR..n {
        residuals[t] = z[t] - (1..=LONG_AR).map(|i| coef[i - 1] * z[t - i]).sum::<f64>();
    }
    Some(residuals)
}

/// Order of an ARIMA model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArimaOrder {
    /// Autoregressive terms.
    pub p: usize,
    /// Differences.
    pub d: usize,
    /// Moving-average terms.
    pub q: usize,
}

/// A fitted ARIMA model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArimaModel {
    /// The order.
    pub order: ArimaOrder,
    /// Mean of the differenced series (0 when `d > 0`).
    pub mean: f64,
    /// AR coefficients `phi_1..phi_p`.
    pub ar: Vec<f64>,
    /// MA coefficients `theta_1..theta_q` (polynomial `1 + theta_1 B + ...`).
    pub ma: Vec<f64>,
    /// Innovation variance.
    pub sigma2: f64,
    /// Corrected Akaike information criterion of the fit.
    pub aicc: f64,
}

/// A multi-step forecast with its standard errors.
#[derive(Debug, Clone, PartialEq)]
pub struct ArimaPath {
    /// Forecast of each step ahead.
    pub mean: Vec<f64>,
    /// Standard error of each step ahead.
    pub std_error: Vec<f64>,
}

fn difference(series: &[f64], d: usize) -> Vec<f64> {
    let mut w = series.to_vec();
    for _ in 0..d {
        w = w.windows(2).map(|pair| pair[1] - pair[0]).collect();
    }
    w
}

/// Conditional sum of squares of an ARMA(p, q) with mean, summed from index `first`,
/// and its gradient with respect to (mean, ar, ma).
fn css_with_gradient(
    w: &[f64],
    mean: f64,
    ar: &[f64],
    ma: &[f64],
    first: usize,
) -> (f64, Vec<f64>) {
    let (p, q) = (ar.len(), ma.len());
    let k = 1 + p + q;
    let n = w.len();
    // Ring buffers of the last `q + 1` residuals and their derivatives.
    let slots = q + 1;
    let mut e = vec![0.0; slots];
    let mut de = vec![0.0; slots * k];
    let mut row = vec![0.0; k];
    let mut sum = 0.0;
    let mut grad = vec![0.0; k];
    let ar_sum: f64 = ar.iter().sum();
    // Slot of index t in the rings; advanced without division.
    let mut slot = p % slots;
    for t in p..n {
        let mut et = w[t] - mean;
        for (i, &phi) in ar.iter().enumerate() {
            et -= phi * (w[t - 1 - i] - mean);
        }
        row[0] = -1.0 + ar_sum;
        for i in 0..p {
            row[1 + i] = -(w[t - 1 - i] - mean);
        }
        for (j, &theta) in ma.iter().enumerate() {
            if t > j + p {
                let past_slot = if slot > j {
                    slot - 1 - j
                } else {
                    slot + slots - 1 - j
                };
                et -= theta * e[past_slot];
                row[1 + p + j] = -e[past_slot];
                let past = &de[past_slot * k..(past_slot + 1) * k];
                for (r, &dp) in row.iter_mut().zip(past) {
                    *r -= theta * dp;
                }
            } else {
                row[1 + p + j] = 0.0;
            }
        }
        e[slot] = et;
        de[slot * k..(slot + 1) * k].copy_from_slice(&row);
        if t >= first {
            sum += et * et;
            for (g, &r) in grad.iter_mut().zip(row.iter()) {
                *g += 2.0 * et * r;
            }
        }
        slot = if slot + 1 == slots { 0 } else { slot + 1 };
    }
    (sum, grad)
}

/// A point with its cost and gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// The CSS objective in unconstrained coordinates (mean, AR partials, MA partials).
struct CssProblem<'a> {
    w: &'a [f64],
    p: usize,
    q: usize,
    first: usize,
    scale: f64,
    /// Last point evaluated with its cost and gradient: the solver asks for the cost and
    /// the gradient of the same point one after the other.
    last: std::cell::RefCell<Option<Evaluation>>,
}

impl CssProblem<'_> {
    fn unpack(&self, x: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let mean = x[0];
        let ar = partials_to_coefficients(&x[1..1 + self.p]);
        let ma: Vec<f64> = partials_to_coefficients(&x[1 + self.p..])
            .into_iter()
            .map(|a| -a)
            .collect();
        (mean, ar, ma)
    }

    fn evaluate(&self, x: &[f64]) -> (f64, Vec<f64>) {
        if let Some((point, cost, grad)) = self.last.borrow().as_ref()
            && point.as_slice() == x
        {
            return (*cost, grad.clone());
        }
        let (cost, grad) = self.evaluate_uncached(x);
        *self.last.borrow_mut() = Some((x.to_vec(), cost, grad.clone()));
        (cost, grad)
    }

    fn evaluate_uncached(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let (mean, ar, ma) = self.unpack(x);
        let (sum, grad_coef) = css_with_gradient(self.w, mean, &ar, &ma, self.first);
        // Chain rule through the reparametrisation; its Jacobian is tiny, so central
        // differences are exact enough and cheap.
        let mut grad = vec![0.0; x.len()];
        grad[0] = grad_coef[0];
        let h = 1e-6;
        for (block_start, block_len, sign) in [(1, self.p, 1.0), (1 + self.p, self.q, -1.0)] {
            for i in 0..block_len {
                let mut plus = x[block_start..block_start + block_len].to_vec();
                let mut minus = plus.clone();
                plus[i] += h;
                minus[i] -= h;
                let cp = partials_to_coefficients(&plus);
                let cm = partials_to_coefficients(&minus);
                let mut g = 0.0;
                for j in 0..block_len {
                    g += grad_coef[block_start + j] * sign * (cp[j] - cm[j]) / (2.0 * h);
                }
                grad[block_start + i] = g;
            }
        }
        (
            sum / self.scale,
            grad.into_iter().map(|g| g / self.scale).collect(),
        )
    }
}

impl CostFunction for CssProblem<'_> {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        let cost = self.evaluate(x.as_slice()).0;
        if cost.is_finite() {
            Ok(cost)
        } else {
            // Stops the solver (the fit falls back to its start) rather than letting the
            // line search chase a NaN forever.
            Err(argmin::core::Error::msg(
                "non-finite conditional sum of squares",
            ))
        }
    }
}

impl Gradient for CssProblem<'_> {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &Self::Param) -> std::result::Result<DVector<f64>, argmin::core::Error> {
        let gradient = self.evaluate(x.as_slice()).1;
        if gradient.iter().all(|g| g.is_finite()) {
            Ok(DVector::from_vec(gradient))
        } else {
            Err(argmin::core::Error::msg("non-finite gradient"))
        }
    }
}

/// Options of the fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArimaFitConfig {
    /// Largest AR order tried.
    pub max_p: usize,
    /// Largest difference order tried.
    pub max_d: usize,
    /// Largest MA order tried.
    pub max_q: usize,
    /// L-BFGS iteration cap per candidate.
    pub max_iters: u64,
    /// Candidates refined by CSS after screening.
    pub refine: usize,
}

impl Default for ArimaFitConfig {
    fn default() -> Self {
        Self {
            max_p: 3,
            max_d: 1,
            max_q: 2,
            max_iters: 30,
            refine: 2,
        }
    }
}

impl ArimaModel {
    /// Fits one order by CSS. `first` is the index of the first residual counted, in
    /// coordinates of the undifferenced series, so that candidates share one sample.
    pub fn fit_order(
        series: &[f64],
        order: ArimaOrder,
        first: usize,
        max_iters: u64,
    ) -> Result<Self> {
        let ArimaOrder { p, d, q } = order;
        if series.iter().any(|x| !x.is_finite()) {
            return Err(ForecastError::InvalidConfig(
                "series holds non-finite values".into(),
            ));
        }
        let w = difference(series, d);
        let first_w = first.saturating_sub(d).max(p);
        let count = w.len().saturating_sub(first_w);
        let k = p + q + 1 + usize::from(d == 0);
        if count < k + 10 {
            return Err(ForecastError::NotEnoughData(format!(
                "arima({p},{d},{q}) needs more than {} points, got {}",
                k + 10,
                series.len()
            )));
        }
        let w_mean = w.iter().sum::<f64>() / w.len() as f64;
        let variance = w.iter().map(|x| (x - w_mean).powi(2)).sum::<f64>() / w.len() as f64;
        // Values so large that their squares overflow make every cost infinite or NaN, on
        // which the line search never terminates: refuse them instead of fitting.
        if !(w_mean.is_finite() && variance.is_finite()) {
            return Err(ForecastError::InvalidConfig(
                "series values are too large to fit".into(),
            ));
        }
        let problem = CssProblem {
            w: &w,
            p,
            q,
            first: first_w,
            scale: count as f64 * variance.max(1e-12),
            last: Default::default(),
        };
        let mut start = vec![0.0; 1 + p + q];
        start[0] = if d == 0 { w_mean } else { 0.0 };
        if let Some((_, ar, ma, _)) = hannan_rissanen(&w, p, q, first_w, None) {
            let negated_ma: Vec<f64> = ma.iter().map(|m| -m).collect();
            if let (Some(u), Some(v)) = (
                coefficients_to_partials(&ar),
                coefficients_to_partials(&negated_ma),
            ) {
                start[1..1 + p].copy_from_slice(&u);
                start[1 + p..].copy_from_slice(&v);
            }
        }
        let best = if p + q == 0 && d > 0 {
            start.clone()
        } else {
            let linesearch = MoreThuenteLineSearch::new();
            let solver = LBFGS::new(linesearch, 7)
                .with_tolerance_grad(1e-5)
                .and_then(|s| s.with_tolerance_cost(1e-9))
                .map_err(|e| ForecastError::InvalidConfig(format!("l-bfgs setup: {e}")))?;
            let init = DVector::from_vec(start.clone());
            match Executor::new(problem, solver)
                .configure(|state| state.param(init).max_iters(max_iters))
                .run()
            {
                Ok(result) => result
                    .state()
                    .best_param
                    .as_ref()
                    .map(|x| x.as_slice().to_vec())
                    .unwrap_or(start.clone()),
                Err(_) => start.clone(),
            }
        };
        let problem = CssProblem {
            w: &w,
            p,
            q,
            first: first_w,
            scale: 1.0,
            last: Default::default(),
        };
        let mut x = best;
        if d > 0 {
            // No mean after differencing.
            x[0] = 0.0;
        }
        let (sum, _) = problem.evaluate(&x);
        let (mean, ar, ma) = problem.unpack(&x);
        let sigma2 = (sum / count as f64).max(1e-12);
        let n = count as f64;
        let kf = k as f64;
        let aicc = n * sigma2.ln() + 2.0 * kf + 2.0 * kf * (kf + 1.0) / (n - kf - 1.0).max(1.0);
        if !aicc.is_finite() {
            return Err(ForecastError::NotEnoughData(
                "fit produced a non-finite criterion".into(),
            ));
        }
        Ok(Self {
            order,
            mean,
            ar,
            ma,
            sigma2,
            aicc,
        })
    }

    /// Screens every order in the grid with a Hannan-Rissanen regression, refines the
    /// `config.refine` best by CSS and keeps the one with the lowest AICc.
    pub fn fit_auto(series: &[f64], config: &ArimaFitConfig) -> Result<Self> {
        let first = config.max_p + config.max_d;
        let mut screened: Vec<(f64, ArimaOrder)> = Vec::new();
        for d in 0..=config.max_d {
            let w = difference(series, d);
            let first_w = first - d;
            let long = long_ar_residuals(&w);
            for p in 0..=config.max_p {
                for q in 0..=config.max_q {
                    if let Some((_, _, _, sigma2)) =
                        hannan_rissanen(&w, p, q, first_w, long.as_deref())
                    {
                        let n = (w.len() - first_w) as f64;
                        let k = (p + q + 1 + usize::from(d == 0)) as f64;
                        let aicc = n * sigma2.max(1e-12).ln()
                            + 2.0 * k
                            + 2.0 * k * (k + 1.0) / (n - k - 1.0).max(1.0);
                        if aicc.is_finite() {
                            screened.push((aicc, ArimaOrder { p, d, q }));
                        }
                    }
                }
            }
        }
        screened.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut best: Option<Self> = None;
        let mut last_error = ForecastError::NotEnoughData(format!(
            "no arima order could be fitted on {} points",
            series.len()
        ));
        for &(_, order) in screened.iter().take(config.refine.max(1)) {
            match Self::fit_order(series, order, first, config.max_iters) {
                Ok(model) => {
                    if best.as_ref().is_none_or(|b| model.aicc < b.aicc) {
                        best = Some(model);
                    }
                }
                Err(e) => last_error = e,
            }
        }
        best.ok_or(last_error)
    }

    /// AR polynomial after folding in the differences: `phi(B) (1 - B)^d`.
    fn full_ar(&self) -> Vec<f64> {
        // Coefficients c with y_t = sum c_i y_{t-i} + ...
        let mut poly = vec![1.0];
        poly.extend(self.ar.iter().map(|a| -a));
        for _ in 0..self.order.d {
            let mut next = vec![0.0; poly.len() + 1];
            for (i, &c) in poly.iter().enumerate() {
                next[i] += c;
                next[i + 1] -= c;
            }
            poly = next;
        }
        poly.iter().skip(1).map(|c| -c).collect()
    }

    /// One-step residuals of the differenced series `w` (zero for the first `p`).
    fn residuals(&self, w: &[f64]) -> Vec<f64> {
        let p = self.ar.len();
        let mut e = vec![0.0; w.len()];
        for t in p..w.len() {
            let mut et = w[t] - self.mean;
            for (i, &phi) in self.ar.iter().enumerate() {
                et -= phi * (w[t - 1 - i] - self.mean);
            }
            for (j, &theta) in self.ma.iter().enumerate() {
                if t > j {
                    et -= theta * e[t - 1 - j];
                }
            }
            e[t] = if et.is_finite() { et } else { 0.0 };
        }
        e
    }

    /// Whether the last `recent` one-step residuals of the model on `series` have drifted
    /// away from zero: their mean exceeds `z` standard errors. The residual variance is
    /// the fitted one or, when larger, `level_variance` (the sampling noise of a bucket
    /// mean at the recent level). A model whose mean no longer matches the series (a
    /// level shift it reverts from) leaves such a run of one-sided residuals.
    pub fn drifted(&self, series: &[f64], recent: usize, z: f64, level_variance: f64) -> bool {
        let d = self.order.d;
        let p = self.ar.len();
        let recent = recent.max(1);
        let tail_len = series.len().min(256 + d + p);
        if tail_len < recent + d + p {
            return false;
        }
        let w = difference(&series[series.len() - tail_len..], d);
        let e = self.residuals(&w);
        let last = &e[e.len() - recent..];
        let mean = last.iter().sum::<f64>() / recent as f64;
        let variance = self.sigma2.max(level_variance).max(1e-12);
        mean.abs() > z * (variance / recent as f64).sqrt()
    }

    /// Forecasts `steps` values after `series` with standard errors. Residuals are
    /// rebuilt from the last stretch of the series.
    pub fn forecast(&self, series: &[f64], steps: usize) -> ArimaPath {
        let d = self.order.d;
        let (p, q) = (self.ar.len(), self.ma.len());
        let tail_len = series.len().min(256 + d + p);
        let tail = &series[series.len() - tail_len..];
        let w = difference(tail, d);
        let e = self.residuals(&w);
        // Forecast the differenced series, then integrate.
        let mut w_ext = w.clone();
        let mut e_ext = e.clone();
        for _ in 0..steps {
            let t = w_ext.len();
            let mut value = self.mean;
            for (i, &phi) in self.ar.iter().enumerate() {
                if t > i {
                    value += phi * (w_ext[t - 1 - i] - self.mean);
                }
            }
            for (j, &theta) in self.ma.iter().enumerate() {
                if t > j {
                    value += theta * e_ext[t - 1 - j];
                }
            }
            w_ext.push(value);
            e_ext.push(0.0);
        }
        let mut levels: Vec<f64> = tail.to_vec();
        let mut diffs: Vec<f64> = w_ext[w.len()..].to_vec();
        for level in (0..d).rev() {
            // Integrate once: the last value of the series differenced `level` times.
            let base_series = difference(tail, level);
            let mut last = base_series.last().copied().unwrap_or(0.0);
            for x in diffs.iter_mut() {
                last += *x;
                *x = last;
            }
        }
        levels.clear();
        // Psi weights of the full model for the standard errors.
        let full = self.full_ar();
        let mut psi = vec![1.0; steps.max(1)];
        for j in 1..psi.len() {
            let mut v = if j <= q { self.ma[j - 1] } else { 0.0 };
            for (i, &c) in full.iter().enumerate() {
                if j > i {
                    v += c * psi[j - 1 - i];
                }
            }
            psi[j] = v;
        }
        let mut acc = 0.0;
        let std_error = (0..steps)
            .map(|h| {
                acc += psi[h] * psi[h];
                (self.sigma2 * acc).sqrt()
            })
            .collect();
        ArimaPath {
            mean: diffs,
            std_error,
        }
    }
}

/// Options of [`ArimaForecaster`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArimaForecasterConfig {
    /// Bucket length in seconds; the model runs on bucket means.
    pub bucket_s: f64,
    /// Buckets kept and used for a fit (8640 ten-second buckets = one day).
    pub fit_window: usize,
    /// Buckets needed before the first fit.
    pub min_fit: usize,
    /// Seconds between scheduled refits.
    pub refit_every_s: f64,
    /// Recent buckets whose mean one-step residual is tested for a level shift. A model
    /// fitted on a steady stretch reverts to that stretch's mean; when the load moves away
    /// from it, waiting for the next scheduled refit would leave the forecast at the old
    /// level for hours, so a level shift makes a refit due at once (on the same window,
    /// which now holds the shift).
    pub shift_buckets: usize,
    /// A level shift is a mean one-step residual of the last `shift_buckets` beyond
    /// `shift_z` standard errors. `0` (or a non-finite value) turns shift refits off.
    pub shift_z: f64,
    /// Least time between two refits triggered by level shifts, seconds.
    pub shift_min_gap_s: f64,
    /// Order grid and optimiser limits.
    pub fit: ArimaFitConfig,
    /// Normal quantile of the model's own prediction interval (1.2816 for 90 %).
    pub interval_z: f64,
}

impl Default for ArimaForecasterConfig {
    fn default() -> Self {
        Self {
            bucket_s: 10.0,
            fit_window: 8640,
            min_fit: 360,
            refit_every_s: 6.0 * 3600.0,
            shift_buckets: 6,
            shift_z: 4.0,
            shift_min_gap_s: 60.0,
            fit: ArimaFitConfig::default(),
            interval_z: 1.2816,
        }
    }
}

/// ARIMA on bucket means. The point forecast is the highest level forecast over the
/// horizon plus a learned peak offset (the median recent gap between that level and the
/// realised per-second maximum, in units of `sqrt(level)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArimaForecaster {
    config: ArimaForecasterConfig,
    sanitizer: Sanitizer,
    buckets: Vec<f64>,
    open_bucket: Option<(i64, f64, usize)>,
    model: Option<ArimaModel>,
    last_fit_s: Option<f64>,
    peak: PeakCalibrator,
}

impl ArimaForecaster {
    /// A forecaster with the given options.
    pub fn new(config: ArimaForecasterConfig) -> Self {
        let config = ArimaForecasterConfig {
            bucket_s: config.bucket_s.max(1.0),
            fit_window: config.fit_window.max(32),
            min_fit: config.min_fit.max(32),
            ..config
        };
        Self {
            config,
            sanitizer: Sanitizer::default(),
            buckets: Vec::new(),
            open_bucket: None,
            model: None,
            last_fit_s: None,
            peak: PeakCalibrator::new(2.5, 2000, 30),
        }
    }

    /// The model in use, once fitted.
    pub fn model(&self) -> Option<&ArimaModel> {
        self.model.as_ref()
    }

    fn push_bucket(&mut self, value: f64) {
        self.buckets.push(value);
        let keep = self.config.fit_window;
        if self.buckets.len() > 2 * keep {
            self.buckets.drain(..self.buckets.len() - keep);
        }
    }

    fn close_bucket(&mut self, index: i64, sum: f64, count: usize, next: i64) {
        self.push_bucket(sum / count as f64);
        // Buckets with no sample repeat the last mean (at most one fit window).
        let missing = next
            .saturating_sub(index)
            .saturating_sub(1)
            .clamp(0, self.config.fit_window as i64);
        for _ in 0..missing {
            self.push_bucket(sum / count as f64);
        }
    }

    fn window(&self) -> &[f64] {
        let n = self.buckets.len();
        &self.buckets[n.saturating_sub(self.config.fit_window)..]
    }

    /// The model's own interval: level path plus `interval_z` standard errors, before
    /// any calibration (for comparison with the conformal bound).
    pub fn model_interval(&self, horizon_s: f64) -> Option<(f64, f64)> {
        let model = self.model.as_ref()?;
        let steps = self.steps(horizon_s);
        let path = model.forecast(self.window(), steps);
        let level = path.mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let upper = path
            .mean
            .iter()
            .zip(&path.std_error)
            .map(|(m, s)| m + self.config.interval_z * s)
            .fold(f64::NEG_INFINITY, f64::max);
        Some((level, upper))
    }

    /// Whether the model in use no longer matches the recent level (see
    /// [`ArimaForecasterConfig::shift_z`]).
    pub fn level_shifted(&self) -> bool {
        let (Some(model), z) = (&self.model, self.config.shift_z) else {
            return false;
        };
        if !(z.is_finite() && z > 0.0) {
            return false;
        }
        let recent = self.config.shift_buckets.max(1);
        let n = self.buckets.len();
        if n < recent {
            return false;
        }
        let level = self.buckets[n - recent..].iter().sum::<f64>() / recent as f64;
        // Bucket means of Poisson arrivals vary by level / bucket length.
        let level_variance = level.max(0.0) / self.config.bucket_s;
        model.drifted(self.window(), recent, z, level_variance)
    }

    fn steps(&self, horizon_s: f64) -> usize {
        (finite_non_negative(horizon_s) / self.config.bucket_s)
            .ceil()
            .clamp(1.0, 1e4) as usize
    }
}

impl Forecaster for ArimaForecaster {
    fn name(&self) -> &str {
        "arima"
    }

    fn observe(&mut self, t_s: f64, rps: f64) {
        let Some((t, v)) = self.sanitizer.accept(t_s, rps) else {
            return;
        };
        self.peak.observe(t, v);
        let bucket = (t / self.config.bucket_s).floor() as i64;
        self.open_bucket = match self.open_bucket {
            Some((open, sum, count)) if open == bucket => Some((open, sum + v, count + 1)),
            Some((open, sum, count)) => {
                self.close_bucket(open, sum, count, bucket);
                Some((bucket, v, 1))
            }
            None => Some((bucket, v, 1)),
        };
    }

    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        let raw = match &self.model {
            Some(model) if !self.buckets.is_empty() => {
                let path = model.forecast(self.window(), self.steps(horizon_s));
                path.mean.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            }
            _ => {
                // Before the first fit: the recent mean level.
                let n = self.buckets.len();
                let recent = &self.buckets[n.saturating_sub(3)..];
                if recent.is_empty() {
                    self.open_bucket
                        .map_or(0.0, |(_, sum, count)| sum / count as f64)
                } else {
                    recent.iter().sum::<f64>() / recent.len() as f64
                }
            }
        };
        let raw = finite_non_negative(raw);
        self.peak.record(now_s, horizon_s, raw);
        let point = self.peak.adjust(raw);
        let upper = self.model.as_ref().map_or(point, |m| {
            point + self.config.interval_z * m.sigma2.sqrt().max(noise_scale(raw))
        });
        Forecast::sanitized(point, upper, 0.9)
    }

    fn refit_due(&self, now_s: f64) -> bool {
        if self.buckets.len() < self.config.min_fit {
            return false;
        }
        match self.last_fit_s {
            None => true,
            Some(last) => {
                let since = now_s - last;
                since >= self.config.refit_every_s
                    || (since >= self.config.shift_min_gap_s && self.level_shifted())
            }
        }
    }

    fn refit(&mut self, now_s: f64) -> Result<()> {
        self.last_fit_s = Some(now_s);
        let model = ArimaModel::fit_auto(self.window(), &self.config.fit)?;
        self.model = Some(model);
        Ok(())
    }

    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn overflowing_series_is_refused_not_chased() {
        // Squares of these overflow: the fit must answer (with an error), not loop.
        let mut series = ar1(0.5, 200);
        for (i, x) in series.iter_mut().enumerate() {
            *x = if i % 3 == 0 { 1e300 } else { *x * 1e299 };
        }
        for order in [
            ArimaOrder { p: 1, d: 0, q: 0 },
            ArimaOrder { p: 1, d: 1, q: 1 },
        ] {
            assert!(ArimaModel::fit_order(&series, order, 4, 30).is_err());
        }
        assert!(ArimaModel::fit_auto(&series, &ArimaFitConfig::default()).is_err());
    }

    fn ar1(phi: f64, n: usize) -> Vec<f64> {
        let mut seed = 7;
        let mut x = vec![0.0; n];
        for t in 1..n {
            x[t] = phi * x[t - 1] + noise(&mut seed);
        }
        x.iter().map(|v| v + 50.0).collect()
    }

    #[test]
    fn transform_yields_stationary_coefficients() {
        let c = partials_to_coefficients(&[10.0]);
        assert!(c[0] < 1.0 && c[0] > 0.99);
        let c = partials_to_coefficients(&[0.5, -0.3]);
        // AR(2) stationarity triangle.
        assert!(c[1].abs() < 1.0 && c[0] + c[1] < 1.0 && c[1] - c[0] < 1.0);
    }

    #[test]
    fn partials_round_trip() {
        let u = [0.3, -0.8, 1.1];
        let back = coefficients_to_partials(&partials_to_coefficients(&u)).unwrap();
        for (a, b) in u.iter().zip(&back) {
            assert!((a - b).abs() < 1e-9, "{u:?} vs {back:?}");
        }
        assert_eq!(coefficients_to_partials(&[1.2]), None);
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let w = ar1(0.6, 300);
        let problem = CssProblem {
            w: &w,
            p: 2,
            q: 1,
            first: 3,
            scale: 1.0,
            last: Default::default(),
        };
        let x = [49.0, 0.4, -0.2, 0.3];
        let (_, grad) = problem.evaluate(&x);
        for i in 0..x.len() {
            let mut plus = x;
            let mut minus = x;
            plus[i] += 1e-5;
            minus[i] -= 1e-5;
            let numeric = (problem.evaluate(&plus).0 - problem.evaluate(&minus).0) / 2e-5;
            assert!(
                (numeric - grad[i]).abs() <= 1e-4 * numeric.abs().max(1.0),
                "param {i}: numeric {numeric} analytic {}",
                grad[i]
            );
        }
    }

    #[test]
    fn recovers_ar1_coefficient() {
        let x = ar1(0.7, 3000);
        let model = ArimaModel::fit_order(&x, ArimaOrder { p: 1, d: 0, q: 0 }, 1, 100).unwrap();
        assert!((model.ar[0] - 0.7).abs() < 0.05, "phi {}", model.ar[0]);
        assert!((model.mean - 50.0).abs() < 0.1, "mean {}", model.mean);
        assert!(
            (model.sigma2 - 1.0 / 12.0).abs() < 0.01,
            "sigma2 {}",
            model.sigma2
        );
    }

    #[test]
    fn auto_order_prefers_ar_structure_over_white_noise() {
        let x = ar1(0.8, 2000);
        let model = ArimaModel::fit_auto(&x, &ArimaFitConfig::default()).unwrap();
        assert!(
            model.order.p + model.order.q + model.order.d >= 1,
            "{:?}",
            model.order
        );
    }

    #[test]
    fn forecast_reverts_to_mean_and_intervals_widen() {
        let model = ArimaModel {
            order: ArimaOrder { p: 1, d: 0, q: 0 },
            mean: 10.0,
            ar: vec![0.5],
            ma: vec![],
            sigma2: 1.0,
            aicc: 0.0,
        };
        let path = model.forecast(&[10.0, 10.0, 14.0], 3);
        assert!((path.mean[0] - 12.0).abs() < 1e-9);
        assert!((path.mean[1] - 11.0).abs() < 1e-9);
        assert!((path.std_error[0] - 1.0).abs() < 1e-9);
        assert!((path.std_error[1] - 1.25f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn random_walk_forecast_is_flat_at_last_value() {
        let model = ArimaModel {
            order: ArimaOrder { p: 0, d: 1, q: 0 },
            mean: 0.0,
            ar: vec![],
            ma: vec![],
            sigma2: 4.0,
            aicc: 0.0,
        };
        let path = model.forecast(&[1.0, 3.0, 7.0], 3);
        assert_eq!(path.mean, vec![7.0, 7.0, 7.0]);
        assert!((path.std_error[2] - (3.0f64 * 4.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn forecaster_refits_and_forecasts_near_level() {
        let mut f = ArimaForecaster::new(ArimaForecasterConfig {
            min_fit: 100,
            ..Default::default()
        });
        let x = ar1(0.9, 3000);
        for (t, v) in x.iter().enumerate() {
            f.observe(t as f64, *v);
        }
        assert!(f.refit_due(3000.0));
        f.refit(3000.0).unwrap();
        assert!(!f.refit_due(3001.0));
        let fc = f.forecast(3000.0, 60.0);
        assert!(fc.point > 45.0 && fc.point < 80.0, "{fc:?}");
        assert!(fc.upper >= fc.point);
    }

    #[test]
    fn level_shift_after_a_steady_stretch_triggers_a_refit() {
        // One hour of white noise around 5 fits a constant-mean model; the load then
        // jumps to 30. A model that reverts to the old mean must be refitted within
        // minutes, not at the next 6-h schedule.
        let run = |shift_z: f64| {
            let mut f = ArimaForecaster::new(ArimaForecasterConfig {
                shift_z,
                ..Default::default()
            });
            let mut seed = 7u64;
            let mut fits = 0;
            let mut last = None;
            for t in 0..4200 {
                let level = if t < 3600 { 5.0 } else { 30.0 };
                f.observe(t as f64, level + 2.0 * noise(&mut seed));
                let now = (t + 1) as f64;
                if (t + 1) % 10 == 0 {
                    if f.refit_due(now) {
                        f.refit(now).unwrap();
                        fits += 1;
                    }
                    last = Some(f.forecast(now, 20.0));
                }
            }
            (fits, last.unwrap())
        };
        let (fits, followed) = run(4.0);
        assert!(fits >= 2, "{fits}");
        assert!(followed.point > 25.0, "{followed:?}");
        let (fits, stale) = run(0.0);
        assert_eq!(fits, 1);
        assert!(stale.point < followed.point, "{stale:?} vs {followed:?}");
    }
}
