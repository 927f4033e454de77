//! Logistic-regression probes shared by every benchmark.
//!
//! # Objective
//! For samples x_i (rows of a row-major `[n, d]` f32 matrix) and scores
//! z_i = W x_i + b, a fit minimises
//!
//! ```text
//! J(W, b) = (1/n) * sum_i s_i * loss_i(z_i)  +  penalty(W)
//! ```
//!
//! - binary: loss_i = log(1 + exp(-t_i z_i)) with t_i = +1 for `true`, -1
//!   for `false` (W is one row);
//! - multinomial: loss_i = -log softmax(z_i)[y_i] (W is `[classes, d]`, one
//!   row and one intercept per class, the symmetric parametrisation sklearn
//!   uses);
//! - s_i = 1, or with [`ProbeConfig::balanced`] s_i = n / (K * n_{y_i}) for K
//!   classes (sklearn's `class_weight="balanced"`; K = 2 for binary);
//! - penalty: [`Penalty::None`]; [`Penalty::L2`]`(a)` = a/2 * ||W||^2;
//!   [`Penalty::L1`]`(a)` = a * ||W||_1 (sums over every entry of W). The
//!   intercept b is never penalised.
//!
//! sklearn's `LogisticRegression(C=C)` minimises C * sum_i s_i loss_i +
//! 1/2 ||W||^2 (L2) or C * sum_i s_i loss_i + ||W||_1 (L1). Dividing by C n
//! gives J above with **strength = 1 / (C n)** in both cases (n = number of
//! training samples). [`Penalty::sklearn_l2`] and [`Penalty::sklearn_l1`] do
//! this conversion.
//!
//! # Solver
//! One quasi-Newton method for every penalty: L-BFGS (memory 10, backtracking
//! Armijo line search) on the smooth part, extended to the L1 term as OWL-QN
//! (Andrew & Gao 2007: pseudo-gradient, orthant-constrained direction and
//! projected line search), so L1 fits end with exact zeros. Full batch, every
//! accumulation in f64. It stops when the largest entry of the (pseudo-)
//! gradient of J is at most `tol`, when an accepted step no longer lowers J
//! in f64 (flat to machine precision; both count as converged), when the line
//! search finds no decrease at all, or after `max_iter` iterations
//! ([`FitInfo`] says how it ended).
//!
//! # Determinism
//! The loss and gradient are sums over fixed chunks of [`CHUNK_ROWS`] samples,
//! computed in parallel (rayon) and added in chunk order, so the same input
//! gives the same bits whatever the number of threads. Mostly-zero inputs
//! (under a quarter non-zero, such as SAE latents) are walked as sparse rows,
//! which gives the same sums up to rounding.
//!
//! # What the caller does
//! Standardisation (or any rescaling of features) is the caller's business:
//! the probe fits the features as given. Unpenalised fits on separable data
//! have no finite optimum; they stop at `max_iter` (or when the loss is flat)
//! with a separating but arbitrary-scale W, `converged` false.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;
use std::collections::VecDeque;

/// Samples per chunk of the deterministic parallel reduction.
pub const CHUNK_ROWS: usize = 128;

/// L-BFGS memory.
const MEMORY: usize = 10;

/// The regularisation term added to the mean log-loss (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Penalty {
    /// No penalty.
    None,
    /// strength / 2 * ||W||^2.
    L2(f64),
    /// strength * ||W||_1.
    L1(f64),
}

impl Penalty {
    /// The L2 penalty equivalent to sklearn's `LogisticRegression(C=c)`
    /// (penalty "l2") on `n` training samples: strength 1 / (C n).
    pub fn sklearn_l2(c: f64, n: usize) -> Penalty {
        Penalty::L2(1.0 / (c * n as f64))
    }

    /// The L1 penalty equivalent to sklearn's
    /// `LogisticRegression(C=c, penalty="l1")` on `n` samples: 1 / (C n).
    pub fn sklearn_l1(c: f64, n: usize) -> Penalty {
        Penalty::L1(1.0 / (c * n as f64))
    }
}

/// Settings of a fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    pub penalty: Penalty,
    /// Most quasi-Newton iterations.
    pub max_iter: usize,
    /// Stop when max_j |(pseudo-)gradient_j| of J is at most this.
    pub tol: f64,
    /// Fit the intercept b (else b = 0).
    pub fit_intercept: bool,
    /// Weight samples by n / (K n_class) (sklearn's class_weight="balanced").
    pub balanced: bool,
}

impl Default for ProbeConfig {
    /// L2 with strength 1e-4, 500 iterations, tol 1e-6, intercept, unweighted.
    fn default() -> Self {
        ProbeConfig {
            penalty: Penalty::L2(1e-4),
            max_iter: 500,
            tol: 1e-6,
            fit_intercept: true,
            balanced: false,
        }
    }
}

/// How a fit ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitInfo {
    /// Quasi-Newton iterations taken.
    pub iterations: usize,
    /// Whether the gradient test (`tol`) was met, or the objective could not
    /// decrease further in f64 (a stationary point to machine precision).
    pub converged: bool,
    /// J at the returned solution.
    pub objective: f64,
    /// max_j |(pseudo-)gradient_j| at the returned solution.
    pub grad_max: f64,
}

/// A binary probe: decision(x) = w . x + b, predicts `true` when > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryProbe {
    pub w: Vec<f32>,
    pub b: f32,
    pub info: FitInfo,
}

/// A multinomial probe: scores W x + b, predicts the arg max (lowest class
/// on ties). `w` is row-major `[classes, d]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultinomialProbe {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub classes: usize,
    pub d: usize,
    pub info: FitInfo,
}

fn dot_f32_f64(x: &[f32], w: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let xc = x.chunks_exact(4);
    let wc = w.chunks_exact(4);
    let (xr, wr) = (xc.remainder(), wc.remainder());
    for (a, b) in xc.zip(wc) {
        for l in 0..4 {
            acc[l] += a[l] as f64 * b[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in xr.iter().zip(wr) {
        s += *a as f64 * b;
    }
    s
}

fn dot_f32_f32(x: &[f32], w: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let xc = x.chunks_exact(4);
    let wc = w.chunks_exact(4);
    let (xr, wr) = (xc.remainder(), wc.remainder());
    for (a, b) in xc.zip(wc) {
        for l in 0..4 {
            acc[l] += a[l] as f64 * b[l] as f64;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in xr.iter().zip(wr) {
        s += *a as f64 * *b as f64;
    }
    s
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The binary log-loss `log(1 + exp(-t z))` (t = +-1) and `sigmoid(z)`,
/// both stable, from the one `exp(-|z|)` they share (libm's scalar exp and
/// log1p are a large part of a probe fit).
fn log_loss_and_sigmoid(z: f64, positive: bool) -> (f64, f64) {
    let e = (-z.abs()).exp();
    let margin = if positive { -z } else { z };
    let loss = margin.max(0.0) + e.ln_1p();
    let sigmoid = if z >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (loss, sigmoid)
}

enum Labels<'a> {
    Binary(&'a [bool]),
    Multi(&'a [u32]),
}

/// Rows of x as compressed sparse rows (used when x is mostly zeros, as SAE
/// latents are): same sums, cost proportional to the non-zeros.
struct Csr {
    indptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Csr {
    /// Some(CSR) when under a quarter of x is non-zero.
    fn maybe(x: &[f32], d: usize) -> Option<Csr> {
        let nnz = x.iter().filter(|v| **v != 0.0).count();
        if nnz * 4 >= x.len() {
            return None;
        }
        let mut c = Csr {
            indptr: Vec::with_capacity(x.len() / d + 1),
            idx: Vec::with_capacity(nnz),
            val: Vec::with_capacity(nnz),
        };
        c.indptr.push(0);
        for row in x.chunks_exact(d) {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    c.idx.push(j as u32);
                    c.val.push(v);
                }
            }
            c.indptr.push(c.idx.len());
        }
        Some(c)
    }
}

/// The smooth part of J: mean weighted log-loss + L2.
struct Problem<'a> {
    x: &'a [f32],
    csr: Option<Csr>,
    n: usize,
    d: usize,
    /// Score columns (1 for binary, classes for multinomial).
    k: usize,
    labels: Labels<'a>,
    /// s_i / n per sample.
    weights: Vec<f64>,
    l2: f64,
    fit_intercept: bool,
}

impl Problem<'_> {
    fn dim(&self) -> usize {
        self.k * self.d + self.k
    }

    /// The smooth objective at theta = [W (k*d), b (k)]; writes its gradient.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (k, d) = (self.k, self.d);
        let (w, b) = theta.split_at(k * d);
        let parts: Vec<(f64, Vec<f64>)> = (0..self.n.div_ceil(CHUNK_ROWS))
            .into_par_iter()
            .map(|c| {
                let lo = c * CHUNK_ROWS;
                let hi = (lo + CHUNK_ROWS).min(self.n);
                let mut g = vec![0.0f64; k * d + k];
                let mut loss = 0.0f64;
                let mut z = vec![0.0f64; k];
                for i in lo..hi {
                    let xi = &self.x[i * d..(i + 1) * d];
                    let sparse = self.csr.as_ref().map(|c| {
                        let r = c.indptr[i]..c.indptr[i + 1];
                        (&c.idx[r.clone()], &c.val[r])
                    });
                    for (c, zc) in z.iter_mut().enumerate() {
                        let wc = &w[c * d..(c + 1) * d];
                        *zc = match sparse {
                            Some((idx, val)) => idx
                                .iter()
                                .zip(val)
                                .map(|(&j, &v)| v as f64 * wc[j as usize])
                                .sum::<f64>(),
                            None => dot_f32_f64(xi, wc),
                        } + b[c];
                    }
                    let s = self.weights[i];
                    // r = d loss_i / d z (times s_i / n).
                    match self.labels {
                        Labels::Binary(y) => {
                            let (l, sigmoid) = log_loss_and_sigmoid(z[0], y[i]);
                            loss += s * l;
                            z[0] = s * (sigmoid - if y[i] { 1.0 } else { 0.0 });
                        }
                        Labels::Multi(y) => {
                            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let mut sum = 0.0;
                            for zc in z.iter_mut() {
                                *zc = (*zc - m).exp();
                                sum += *zc;
                            }
                            let yi = y[i] as usize;
                            // -log p_y = log sum - (z_y - m)
                            loss += s * (sum.ln() - z[yi].ln());
                            for zc in z.iter_mut() {
                                *zc = s * (*zc / sum);
                            }
                            z[yi] -= s;
                        }
                    }
                    for (c, &r) in z.iter().enumerate() {
                        if r != 0.0 {
                            let gc = &mut g[c * d..(c + 1) * d];
                            match sparse {
                                Some((idx, val)) => {
                                    for (&j, &v) in idx.iter().zip(val) {
                                        gc[j as usize] += r * v as f64;
                                    }
                                }
                                None => {
                                    for (gj, &xj) in gc.iter_mut().zip(xi) {
                                        *gj += r * xj as f64;
                                    }
                                }
                            }
                        }
                        g[k * d + c] += r;
                    }
                }
                (loss, g)
            })
            .collect();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut f = 0.0;
        for (loss, g) in parts {
            f += loss;
            for (a, b) in grad.iter_mut().zip(&g) {
                *a += b;
            }
        }
        if !self.fit_intercept {
            grad[k * d..].iter_mut().for_each(|g| *g = 0.0);
        }
        if self.l2 > 0.0 {
            f += 0.5 * self.l2 * dot(w, w);
            for (g, wj) in grad[..k * d].iter_mut().zip(w) {
                *g += self.l2 * wj;
            }
        }
        f
    }
}

/// OWL-QN pseudo-gradient of smooth + l1 * ||W||_1 (entries < nw are W).
fn pseudo_grad(theta: &[f64], g: &[f64], l1: f64, nw: usize, out: &mut [f64]) {
    for j in 0..theta.len() {
        out[j] = if j >= nw || l1 == 0.0 {
            g[j]
        } else if theta[j] > 0.0 {
            g[j] + l1
        } else if theta[j] < 0.0 {
            g[j] - l1
        } else if g[j] + l1 < 0.0 {
            g[j] + l1
        } else if g[j] - l1 > 0.0 {
            g[j] - l1
        } else {
            0.0
        };
    }
}

fn l1_norm(theta: &[f64], nw: usize) -> f64 {
    theta[..nw].iter().map(|v| v.abs()).sum()
}

/// Minimises smooth(theta) + l1 * ||theta[..nw]||_1 from theta = 0.
fn minimize(p: &Problem, l1: f64, max_iter: usize, tol: f64) -> (Vec<f64>, FitInfo) {
    let dim = p.dim();
    let nw = p.k * p.d;
    let mut theta = vec![0.0f64; dim];
    let mut g = vec![0.0f64; dim];
    let mut f = p.eval(&theta, &mut g) + l1 * l1_norm(&theta, nw);
    let mut pg = vec![0.0f64; dim];
    let mut mem: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new();
    let mut dir = vec![0.0f64; dim];
    let mut trial = vec![0.0f64; dim];
    let mut g_new = vec![0.0f64; dim];
    let mut alpha_buf = [0.0f64; MEMORY];
    let mut iterations = 0;
    let mut converged = false;
    pseudo_grad(&theta, &g, l1, nw, &mut pg);
    let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    while iterations < max_iter {
        if max_abs(&pg) <= tol {
            converged = true;
            break;
        }
        iterations += 1;
        let mut accepted = false;
        // Two attempts: the quasi-Newton direction, then (memory cleared)
        // steepest descent.
        for attempt in 0..2 {
            // dir = -H pg (two-loop recursion).
            for (dj, pj) in dir.iter_mut().zip(&pg) {
                *dj = -pj;
            }
            for (m, (s, y, rho)) in mem.iter().enumerate().rev() {
                let a = rho * dot(s, &dir);
                alpha_buf[m] = a;
                for (dj, yj) in dir.iter_mut().zip(y) {
                    *dj -= a * yj;
                }
            }
            if let Some((s, y, _)) = mem.back() {
                let gamma = dot(s, y) / dot(y, y);
                dir.iter_mut().for_each(|v| *v *= gamma);
            }
            for (m, (s, y, rho)) in mem.iter().enumerate() {
                let bcoef = rho * dot(y, &dir);
                for (dj, sj) in dir.iter_mut().zip(s) {
                    *dj += (alpha_buf[m] - bcoef) * sj;
                }
            }
            if l1 > 0.0 {
                // Keep only components that agree with steepest descent.
                for j in 0..nw {
                    if dir[j] * pg[j] >= 0.0 {
                        dir[j] = 0.0;
                    }
                }
            }
            let slope = dot(&dir, &pg);
            if slope >= 0.0 || !slope.is_finite() {
                mem.clear();
                continue;
            }
            let mut step = if mem.is_empty() {
                (1.0 / dot(&pg, &pg).sqrt()).min(1.0)
            } else {
                1.0
            };
            for _ in 0..60 {
                for j in 0..dim {
                    let mut v = theta[j] + step * dir[j];
                    if l1 > 0.0 && j < nw {
                        // Orthant of theta (or of -pg where theta is 0).
                        let xi = if theta[j] != 0.0 {
                            theta[j].signum()
                        } else {
                            -pg[j].signum()
                        };
                        if v * xi <= 0.0 || pg[j] == 0.0 && theta[j] == 0.0 {
                            v = 0.0;
                        }
                    }
                    trial[j] = v;
                }
                let f_new = p.eval(&trial, &mut g_new) + l1 * l1_norm(&trial, nw);
                let decrease: f64 = (0..dim).map(|j| pg[j] * (trial[j] - theta[j])).sum();
                if f_new.is_finite() && f_new <= f + 1e-4 * decrease {
                    // Curvature pair from the smooth gradients.
                    let s: Vec<f64> = (0..dim).map(|j| trial[j] - theta[j]).collect();
                    let y: Vec<f64> = (0..dim).map(|j| g_new[j] - g[j]).collect();
                    let sy = dot(&s, &y);
                    if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) && sy > 0.0 {
                        if mem.len() == MEMORY {
                            mem.pop_front();
                        }
                        mem.push_back((s, y, 1.0 / sy));
                    }
                    let flat = f - f_new <= 1e-15 * f.abs().max(1.0);
                    std::mem::swap(&mut theta, &mut trial);
                    std::mem::swap(&mut g, &mut g_new);
                    f = f_new;
                    pseudo_grad(&theta, &g, l1, nw, &mut pg);
                    accepted = !flat;
                    converged |= flat;
                    break;
                }
                step *= 0.5;
            }
            if accepted || attempt == 1 {
                break;
            }
            if mem.is_empty() {
                break;
            }
            mem.clear();
        }
        if !accepted {
            break;
        }
    }
    let grad_max = max_abs(&pg);
    converged |= grad_max <= tol;
    let info = FitInfo {
        iterations,
        converged,
        objective: f,
        grad_max,
    };
    (theta, info)
}

fn check_x(x: &[f32], n: usize, d: usize) -> Result<()> {
    ensure!(n > 0, "probe: no samples (n = 0)");
    ensure!(d > 0, "probe: no features (d = 0)");
    ensure!(
        x.len() == n * d,
        "probe: x has {} values, expected n * d = {n} * {d} = {}",
        x.len(),
        n * d
    );
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!(
            "probe: x has a non-finite value {} at sample {}, feature {}",
            x[i],
            i / d,
            i % d
        );
    }
    Ok(())
}

fn check_cfg(cfg: &ProbeConfig) -> Result<f64> {
    ensure!(
        cfg.tol.is_finite() && cfg.tol >= 0.0,
        "probe: tol must be finite and >= 0, got {}",
        cfg.tol
    );
    let (l2, l1) = match cfg.penalty {
        Penalty::None => (0.0, 0.0),
        Penalty::L2(a) => (a, 0.0),
        Penalty::L1(a) => (0.0, a),
    };
    ensure!(
        l2.is_finite() && l2 >= 0.0 && l1.is_finite() && l1 >= 0.0,
        "probe: penalty strength must be finite and >= 0, got {:?}",
        cfg.penalty
    );
    Ok(l2)
}

fn l1_of(cfg: &ProbeConfig) -> f64 {
    match cfg.penalty {
        Penalty::L1(a) => a,
        _ => 0.0,
    }
}

/// Fits a binary logistic-regression probe on `x` (row-major `[n, d]`).
pub fn fit_binary(
    x: &[f32],
    n: usize,
    d: usize,
    y: &[bool],
    cfg: &ProbeConfig,
) -> Result<BinaryProbe> {
    check_x(x, n, d)?;
    let l2 = check_cfg(cfg)?;
    ensure!(
        y.len() == n,
        "probe: y has {} labels, expected n = {n}",
        y.len()
    );
    let pos = y.iter().filter(|&&v| v).count();
    ensure!(
        pos > 0 && pos < n,
        "probe: y has a single class ({} of {n} labels true); a probe needs both",
        pos
    );
    let weights = if cfg.balanced {
        let (wp, wn) = (
            n as f64 / (2.0 * pos as f64),
            n as f64 / (2.0 * (n - pos) as f64),
        );
        y.iter()
            .map(|&v| (if v { wp } else { wn }) / n as f64)
            .collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let p = Problem {
        x,
        csr: Csr::maybe(x, d),
        n,
        d,
        k: 1,
        labels: Labels::Binary(y),
        weights,
        l2,
        fit_intercept: cfg.fit_intercept,
    };
    let (theta, info) = minimize(&p, l1_of(cfg), cfg.max_iter, cfg.tol);
    Ok(BinaryProbe {
        w: theta[..d].iter().map(|&v| v as f32).collect(),
        b: theta[d] as f32,
        info,
    })
}

/// Fits a multinomial (softmax) probe with `classes` classes; every class in
/// 0..classes must have at least one sample.
pub fn fit_multinomial(
    x: &[f32],
    n: usize,
    d: usize,
    y: &[u32],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<MultinomialProbe> {
    check_x(x, n, d)?;
    let l2 = check_cfg(cfg)?;
    ensure!(
        y.len() == n,
        "probe: y has {} labels, expected n = {n}",
        y.len()
    );
    ensure!(classes >= 2, "probe: classes must be >= 2, got {classes}");
    let mut counts = vec![0usize; classes];
    for (i, &c) in y.iter().enumerate() {
        ensure!(
            (c as usize) < classes,
            "probe: label {c} of sample {i} is out of range 0..{classes}"
        );
        counts[c as usize] += 1;
    }
    if let Some(c) = counts.iter().position(|&m| m == 0) {
        bail!("probe: class {c} has no samples (every class in 0..{classes} needs one)");
    }
    let weights = if cfg.balanced {
        y.iter()
            .map(|&c| 1.0 / (classes as f64 * counts[c as usize] as f64))
            .collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let p = Problem {
        x,
        csr: Csr::maybe(x, d),
        n,
        d,
        k: classes,
        labels: Labels::Multi(y),
        weights,
        l2,
        fit_intercept: cfg.fit_intercept,
    };
    let (theta, info) = minimize(&p, l1_of(cfg), cfg.max_iter, cfg.tol);
    Ok(MultinomialProbe {
        w: theta[..classes * d].iter().map(|&v| v as f32).collect(),
        b: theta[classes * d..].iter().map(|&v| v as f32).collect(),
        classes,
        d,
        info,
    })
}

impl BinaryProbe {
    pub fn d(&self) -> usize {
        self.w.len()
    }

    /// w . x + b for each row of `x` (`[n, d]`).
    pub fn decision(&self, x: &[f32]) -> Vec<f32> {
        let d = self.d();
        assert_eq!(x.len() % d, 0, "x is not [n, {d}]");
        x.chunks_exact(d)
            .map(|r| (dot_f32_f32(r, &self.w) + self.b as f64) as f32)
            .collect()
    }

    /// decision > 0.
    pub fn predict(&self, x: &[f32]) -> Vec<bool> {
        self.decision(x).into_iter().map(|v| v > 0.0).collect()
    }

    /// Fraction of rows predicted right.
    pub fn accuracy(&self, x: &[f32], y: &[bool]) -> f64 {
        accuracy(&self.predict(x), y)
    }

    /// F1 of the positive class (see [`f1_score`]).
    pub fn f1(&self, x: &[f32], y: &[bool]) -> f64 {
        f1_score(y, &self.predict(x))
    }
}

impl MultinomialProbe {
    /// Scores `[n, classes]` for each row of `x` (`[n, d]`).
    pub fn decision(&self, x: &[f32]) -> Vec<f32> {
        let d = self.d;
        assert_eq!(x.len() % d, 0, "x is not [n, {d}]");
        let mut out = Vec::with_capacity(x.len() / d * self.classes);
        for r in x.chunks_exact(d) {
            for c in 0..self.classes {
                out.push((dot_f32_f32(r, &self.w[c * d..(c + 1) * d]) + self.b[c] as f64) as f32);
            }
        }
        out
    }

    /// The arg max class per row (lowest index on ties).
    pub fn predict(&self, x: &[f32]) -> Vec<u32> {
        self.decision(x)
            .chunks_exact(self.classes)
            .map(|s| {
                let mut best = 0;
                for c in 1..s.len() {
                    if s[c] > s[best] {
                        best = c;
                    }
                }
                best as u32
            })
            .collect()
    }

    /// Fraction of rows predicted right.
    pub fn accuracy(&self, x: &[f32], y: &[u32]) -> f64 {
        accuracy(&self.predict(x), y)
    }
}

/// Fraction of equal entries (0 for empty input).
pub fn accuracy<T: PartialEq>(pred: &[T], truth: &[T]) -> f64 {
    assert_eq!(pred.len(), truth.len(), "accuracy: lengths differ");
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64
}

/// Precision, recall and F1 of the positive class, as sklearn computes them
/// with `zero_division=0` (a ratio with a zero denominator is 0).
pub fn precision_recall_f1(truth: &[bool], pred: &[bool]) -> (f64, f64, f64) {
    assert_eq!(truth.len(), pred.len(), "f1: lengths differ");
    let (mut tp, mut fp, mut fnn) = (0usize, 0usize, 0usize);
    for (&t, &p) in truth.iter().zip(pred) {
        match (t, p) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fnn += 1,
            _ => {}
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (
        ratio(tp, tp + fp),
        ratio(tp, tp + fnn),
        ratio(2 * tp, 2 * tp + fp + fnn),
    )
}

/// F1 of the positive class (0 when there are no true or predicted positives).
pub fn f1_score(truth: &[bool], pred: &[bool]) -> f64 {
    precision_recall_f1(truth, pred).2
}

/// A linear probe on raw (unrescaled) inputs, as [`fit_probe`] returns it:
/// predicts true when `w . x + b > 0`, the dot product in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: f32,
}

impl Linear {
    /// `w . x + b` per row of `x` (row-major `[rows, w.len()]`), in f64.
    pub fn decisions(&self, x: &[f32]) -> Vec<f64> {
        x.chunks_exact(self.w.len().max(1))
            .map(|row| {
                let z: f64 = row
                    .iter()
                    .zip(&self.w)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                z + self.b as f64
            })
            .collect()
    }

    /// `decision > 0` per row of `x`.
    pub fn predict(&self, x: &[f32]) -> Vec<bool> {
        self.decisions(x).into_iter().map(|z| z > 0.0).collect()
    }

    /// Fraction of rows of `x` predicted as `y` says (0 for no rows).
    pub fn accuracy(&self, x: &[f32], y: &[bool]) -> f64 {
        accuracy(&self.predict(x), y)
    }
}

/// Fits a binary logistic regression on `x` (row-major `[y.len(), dim]`)
/// with [`fit_binary`] (`penalty`, 1000 iterations, otherwise
/// [`ProbeConfig::default`]), the probe the sparse-probing, SCR and TPP
/// benchmarks use. With `rescale`, the inputs are first multiplied by one
/// global factor that makes their mean squared entry 1 (the residual's
/// entries are in the hundreds, which would make any fixed penalty
/// meaningless; all-zero inputs are left as they are), and the weights are
/// mapped back, so the returned probe applies to raw inputs.
pub fn fit_probe(
    x: &[f32],
    dim: usize,
    y: &[bool],
    penalty: Penalty,
    rescale: bool,
) -> Result<Linear> {
    let n = y.len();
    let scale = if rescale { rms_rescale(x) } else { 1.0 };
    let scaled: Vec<f32>;
    let xs = if scale != 1.0 {
        scaled = x.iter().map(|&v| v * scale).collect();
        &scaled
    } else {
        x
    };
    let cfg = ProbeConfig {
        penalty,
        max_iter: 1000,
        ..ProbeConfig::default()
    };
    let p = fit_binary(xs, n, dim, y, &cfg)?;
    Ok(Linear {
        w: p.w.iter().map(|&w| w * scale).collect(),
        b: p.b,
    })
}

/// `1 / sqrt(mean x^2)` over every entry of `x` (in f64), or 1 when that
/// mean is 0 (or `x` is empty).
fn rms_rescale(x: &[f32]) -> f32 {
    let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64;
    if ms > 0.0 {
        (1.0 / ms.sqrt()) as f32
    } else {
        1.0
    }
}
