//! SAEBench's core metrics (`sae_bench/evals/core/main.py`, SAEBench 0.6) as
//! plain functions of arrays: reconstruction quality, shrinkage, sparsity,
//! latent densities, encoder / decoder similarity, and the CE-loss and KL
//! scores of a spliced forward pass, from per-token losses.
//!
//! Conventions: activations are row-major `[n, d]` f32 slices holding only the
//! tokens that count (the caller drops BOS rows, as SAEBench masks BOS, EOS
//! and padding); every sum is accumulated in f64.
//!
//! Some of SAEBench's figures depend on how its tokens were batched (it
//! evaluates `batch_size_prompts` sequences at a time and averages per-batch
//! quantities): its `mse`, its legacy explained variance and the relative
//! reconstruction bias. Those functions take `batch_lens`, the number of
//! counted tokens of each consecutive batch (`&[n]` for one batch).
//!
//! Where coact departs from SAEBench, the function says so:
//! - [`explained_variance`] is `1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d)`
//!   over all tokens (dictionary_learning's definition). SAEBench 0.6's
//!   `explained_variance` measures the total variance about zero (the bug
//!   SAELens PR #665 fixed), and SAELens after that fix divides the mean
//!   squared residual `E ||x - x_hat||^2` (about zero, not about the
//!   residual's mean) by the variance of x; the two agree when the residual's
//!   mean is zero and differ by `||E[x - x_hat]||^2 / sum_d Var(x_d)`.
//! - [`cossim`] counts a token whose x or x_hat is the zero vector as cosine 0
//!   (SAEBench divides by the zero norm and gets NaN).

use anyhow::{ensure, Result};
use rayon::prelude::*;

use crate::linalg::Trans;
use crate::lm::simd::{self, multiversion};
use crate::sae::SparseCodes;

fn check_pair(x: &[f32], x_hat: &[f32], d: usize) -> Result<usize> {
    ensure!(d > 0, "d must be > 0");
    ensure!(
        x.len() == x_hat.len(),
        "x has {} values but x_hat has {}",
        x.len(),
        x_hat.len()
    );
    ensure!(
        x.len().is_multiple_of(d),
        "x has {} values, not a multiple of d = {d}",
        x.len()
    );
    let n = x.len() / d;
    ensure!(n > 0, "no tokens");
    Ok(n)
}

fn check_batches(batch_lens: &[usize], n: usize) -> Result<()> {
    let total: usize = batch_lens.iter().sum();
    ensure!(
        total == n,
        "batch_lens add up to {total} tokens, but there are {n}"
    );
    ensure!(
        batch_lens.iter().all(|&b| b > 0),
        "batch_lens holds an empty batch"
    );
    Ok(())
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&u, &v)| {
            let e = u as f64 - v as f64;
            e * e
        })
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// Consecutive token ranges of the batches.
fn batch_ranges(batch_lens: &[usize]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    batch_lens.iter().scan(0usize, |start, &len| {
        let r = *start..*start + len;
        *start += len;
        Some(r)
    })
}

/// SAEBench's `mse`: each token's squared error `||x_t - x_hat_t||^2` divided
/// by the number of counted tokens in its batch, averaged over all tokens.
/// With equal batches of m tokens this is `mean_t ||x_t - x_hat_t||^2 / m`:
/// neither a per-element MSE nor a per-token squared error, and it depends on
/// the batch size (SAEBench: 16 prompts of 128 tokens, BOS masked).
pub fn mse_saebench(x: &[f32], x_hat: &[f32], d: usize, batch_lens: &[usize]) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    check_batches(batch_lens, n)?;
    let mut total = 0.0;
    for r in batch_ranges(batch_lens) {
        let m = r.len() as f64;
        for t in r {
            total += sq_dist(&x[t * d..(t + 1) * d], &x_hat[t * d..(t + 1) * d]) / m;
        }
    }
    Ok(total / n as f64)
}

/// The mean squared error per token, `mean_t ||x_t - x_hat_t||^2`.
pub fn sse_per_token(x: &[f32], x_hat: &[f32], d: usize) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    let total: f64 = x
        .chunks_exact(d)
        .zip(x_hat.chunks_exact(d))
        .map(|(a, b)| sq_dist(a, b))
        .sum();
    Ok(total / n as f64)
}

/// SAEBench's `explained_variance_legacy`: per token,
/// `1 - ||x_t - x_hat_t||^2 / ||x_t - mean_batch(x)||^2` with the mean over
/// the token's batch, averaged over all tokens. A ratio per token, so tokens
/// near their batch's mean weigh heavily; a token exactly at the mean gives
/// -inf or NaN, as in SAEBench.
pub fn explained_variance_legacy(
    x: &[f32],
    x_hat: &[f32],
    d: usize,
    batch_lens: &[usize],
) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    check_batches(batch_lens, n)?;
    let mut total = 0.0;
    for r in batch_ranges(batch_lens) {
        let mut mean = vec![0.0f64; d];
        for t in r.clone() {
            for (m, &v) in mean.iter_mut().zip(&x[t * d..(t + 1) * d]) {
                *m += v as f64;
            }
        }
        let m = r.len() as f64;
        mean.iter_mut().for_each(|v| *v /= m);
        for t in r {
            let xt = &x[t * d..(t + 1) * d];
            let resid = sq_dist(xt, &x_hat[t * d..(t + 1) * d]);
            let about_mean: f64 = xt
                .iter()
                .zip(&mean)
                .map(|(&v, &mu)| (v as f64 - mu).powi(2))
                .sum();
            total += 1.0 - resid / about_mean;
        }
    }
    Ok(total / n as f64)
}

/// Explained variance, `1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d)`, with
/// the variances over all tokens (dictionary_learning's definition; see the
/// module notes for SAEBench's and SAELens').
pub fn explained_variance(x: &[f32], x_hat: &[f32], d: usize) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    // Two passes (means, then squared deviations) keep the precision when the
    // activations have a large mean.
    let mut mean_x = vec![0.0f64; d];
    let mut mean_r = vec![0.0f64; d];
    for (a, b) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
        for j in 0..d {
            mean_x[j] += a[j] as f64;
            mean_r[j] += a[j] as f64 - b[j] as f64;
        }
    }
    mean_x.iter_mut().for_each(|v| *v /= n as f64);
    mean_r.iter_mut().for_each(|v| *v /= n as f64);
    let (mut var_x, mut var_r) = (0.0f64, 0.0f64);
    for (a, b) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
        for j in 0..d {
            var_x += (a[j] as f64 - mean_x[j]).powi(2);
            var_r += (a[j] as f64 - b[j] as f64 - mean_r[j]).powi(2);
        }
    }
    Ok(1.0 - var_r / var_x)
}

/// Mean over tokens of `cos(x_t, x_hat_t)`; a token whose x or x_hat is the
/// zero vector counts as 0 (SAEBench: NaN).
pub fn cossim(x: &[f32], x_hat: &[f32], d: usize) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    let total: f64 = x
        .chunks_exact(d)
        .zip(x_hat.chunks_exact(d))
        .map(|(a, b)| {
            let (na, nb) = (norm(a), norm(b));
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot(a, b) / (na * nb)
            }
        })
        .sum();
    Ok(total / n as f64)
}

/// Shrinkage figures: mean `||x||`, mean `||x_hat||`, and the L2 ratio, the
/// mean over tokens of `||x_hat_t|| / ||x_t||` (SAEBench divides by 1 where
/// `||x_t|| < 1e-4`).
#[derive(Clone, Debug, PartialEq)]
pub struct L2Norms {
    pub l2_norm_in: f64,
    pub l2_norm_out: f64,
    pub l2_ratio: f64,
}

pub fn l2_norms(x: &[f32], x_hat: &[f32], d: usize) -> Result<L2Norms> {
    let n = check_pair(x, x_hat, d)? as f64;
    let (mut a, mut b, mut r) = (0.0, 0.0, 0.0);
    for (xt, yt) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
        let (nx, ny) = (norm(xt), norm(yt));
        a += nx;
        b += ny;
        r += ny / if nx.abs() < 1e-4 { 1.0 } else { nx };
    }
    Ok(L2Norms {
        l2_norm_in: a / n,
        l2_norm_out: b / n,
        l2_ratio: r / n,
    })
}

/// Relative reconstruction bias (Rajamanoharan et al. 2024, eq. 10, as
/// SAEBench computes it): per batch `mean_t ||x_hat_t||^2 / mean_t <x_t,
/// x_hat_t>`, averaged over batches. 1 means no shrinkage; below 1, the SAE
/// shrinks its reconstructions.
pub fn relative_reconstruction_bias(
    x: &[f32],
    x_hat: &[f32],
    d: usize,
    batch_lens: &[usize],
) -> Result<f64> {
    let n = check_pair(x, x_hat, d)?;
    check_batches(batch_lens, n)?;
    let mut total = 0.0;
    for r in batch_ranges(batch_lens) {
        let (mut num, mut den) = (0.0, 0.0);
        for t in r {
            let (xt, yt) = (&x[t * d..(t + 1) * d], &x_hat[t * d..(t + 1) * d]);
            num += dot(yt, yt);
            den += dot(xt, yt);
        }
        // The batch sizes cancel in the ratio of the two means.
        total += num / den;
    }
    Ok(total / batch_lens.len() as f64)
}

/// The reconstruction and shrinkage figures of SAEBench's core eval.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconstruction {
    pub tokens: usize,
    pub mse: f64,
    pub sse_per_token: f64,
    pub explained_variance_legacy: f64,
    pub explained_variance: f64,
    pub cossim: f64,
    pub norms: L2Norms,
    pub relative_reconstruction_bias: f64,
}

/// Every reconstruction figure at once (see the functions above).
pub fn reconstruction(
    x: &[f32],
    x_hat: &[f32],
    d: usize,
    batch_lens: &[usize],
) -> Result<Reconstruction> {
    let tokens = check_pair(x, x_hat, d)?;
    Ok(Reconstruction {
        tokens,
        mse: mse_saebench(x, x_hat, d, batch_lens)?,
        sse_per_token: sse_per_token(x, x_hat, d)?,
        explained_variance_legacy: explained_variance_legacy(x, x_hat, d, batch_lens)?,
        explained_variance: explained_variance(x, x_hat, d)?,
        cossim: cossim(x, x_hat, d)?,
        norms: l2_norms(x, x_hat, d)?,
        relative_reconstruction_bias: relative_reconstruction_bias(x, x_hat, d, batch_lens)?,
    })
}

/// Mean L0 (latents with a non-zero activation) and mean L1 (sum of the
/// activations, as SAEBench sums them without an absolute value; SAE
/// activations are non-negative) per token.
pub fn l0_l1(codes: &SparseCodes) -> (f64, f64) {
    let n = codes.n_tokens().max(1) as f64;
    let l0 = codes.values.iter().filter(|&&v| v != 0.0).count() as f64;
    let l1: f64 = codes.values.iter().map(|&v| v as f64).sum();
    (l0 / n, l1 / n)
}

/// How often each latent fires (activation > 0) on the tokens of `codes`,
/// grouped into prompts of `prompt_lens` consecutive tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Density {
    pub tokens: usize,
    /// Tokens on which latent i fires.
    pub fires: Vec<u64>,
    /// Prompts in which latent i fires at least once.
    pub prompts: Vec<u64>,
}

impl Density {
    /// Fraction of tokens on which each latent fires (SAEBench's
    /// `feature_density`).
    pub fn frequency(&self) -> Vec<f64> {
        let n = self.tokens.max(1) as f64;
        self.fires.iter().map(|&c| c as f64 / n).collect()
    }

    /// SAEBench's `consistent_activation_heuristic`: firing tokens per prompt
    /// that has any, NaN for a latent that never fires.
    pub fn consistent_activation_heuristic(&self) -> Vec<f64> {
        self.fires
            .iter()
            .zip(&self.prompts)
            .map(|(&f, &p)| f as f64 / p as f64)
            .collect()
    }
}

pub fn density(codes: &SparseCodes, prompt_lens: &[usize]) -> Result<Density> {
    let n = codes.n_tokens();
    check_batches(prompt_lens, n)?;
    let f = codes.d_sae;
    let mut fires = vec![0u64; f];
    let mut prompts = vec![0u64; f];
    let mut seen = vec![false; f];
    let mut touched = Vec::new();
    for r in batch_ranges(prompt_lens) {
        for t in r {
            let (idx, val) = codes.row(t);
            for (&j, &v) in idx.iter().zip(val) {
                if v > 0.0 {
                    let j = j as usize;
                    fires[j] += 1;
                    if !seen[j] {
                        seen[j] = true;
                        touched.push(j);
                    }
                }
            }
        }
        for j in touched.drain(..) {
            prompts[j] += 1;
            seen[j] = false;
        }
    }
    Ok(Density {
        tokens: n,
        fires,
        prompts,
    })
}

/// Summary of latent frequencies: dead = never fired; dense = firing on more
/// than 1% / 10% of tokens; SAEBench's "normalized" variants are the share of
/// all firings that the dense latents account for.
#[derive(Clone, Debug, PartialEq)]
pub struct DensitySummary {
    pub frac_dead: f64,
    pub frac_dense_1pct: f64,
    pub frac_dense_10pct: f64,
    pub normalized_freq_over_1_percent: f64,
    pub normalized_freq_over_10_percent: f64,
}

pub fn density_summary(frequency: &[f64]) -> DensitySummary {
    let f = frequency.len().max(1) as f64;
    let frac = |p: &dyn Fn(f64) -> bool| frequency.iter().filter(|&&v| p(v)).count() as f64 / f;
    let total: f64 = frequency.iter().sum();
    let share = |th: f64| {
        if total > 0.0 {
            frequency.iter().filter(|&&v| v > th).sum::<f64>() / total
        } else {
            0.0
        }
    };
    DensitySummary {
        frac_dead: frac(&|v| v <= 0.0),
        frac_dense_1pct: frac(&|v| v > 0.01),
        frac_dense_10pct: frac(&|v| v > 0.1),
        normalized_freq_over_1_percent: share(0.01),
        normalized_freq_over_10_percent: share(0.1),
    }
}

/// For each row of `m` (`[rows, cols]`), the largest cosine similarity with
/// any other row. Rows are normalised first (a zero row has cosine 0 with
/// everything). Decoder: the rows of W_dec `[d_sae, d_in]`; encoder: the
/// columns of SAELens' W_enc `[d_in, d_sae]`, i.e. the rows of its transpose.
pub fn max_cosine_per_row(m: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>> {
    ensure!(
        m.len() == rows * cols,
        "matrix has {} values, expected {rows} x {cols}",
        m.len()
    );
    ensure!(rows >= 2, "max cosine needs at least two rows");
    let mut u = m.to_vec();
    for row in u.chunks_mut(cols) {
        let nr = norm(row);
        if nr > 0.0 {
            row.iter_mut().for_each(|v| *v = (*v as f64 / nr) as f32);
        }
    }
    const CHUNK: usize = 64;
    let u = &u;
    let out: Vec<Vec<f64>> = (0..rows)
        .into_par_iter()
        .step_by(CHUNK)
        .map(|start| {
            let end = (start + CHUNK).min(rows);
            let c = end - start;
            let mut g = vec![0.0f32; c * rows];
            // g = u[start..end] . u^T.
            crate::linalg::sgemm(
                Trans::N,
                Trans::T,
                c,
                rows,
                cols,
                1.0,
                &u[start * cols..end * cols],
                cols,
                u,
                cols,
                0.0,
                &mut g,
                rows,
            );
            (0..c)
                .map(|i| {
                    let row = &g[i * rows..(i + 1) * rows];
                    row.iter()
                        .enumerate()
                        .filter(|&(j, _)| j != start + i)
                        .map(|(_, &v)| v as f64)
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect()
        })
        .collect();
    Ok(out.into_iter().flatten().collect())
}

/// The mean of a slice (NaN for an empty one).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Values per f32 partial sum in the row reductions below; the partial
/// sums are added in f64, so rounding stays near f64's over a 262k vocabulary.
const SUM_BLOCK: usize = 1024;
/// f32 lanes of the reductions (one AVX-512 register).
const LANES: usize = 16;

multiversion! {
    /// `sum_v e^(x_v - m)`: per block of `SUM_BLOCK` values `LANES` f32
    /// partial sums, added in f64.
    pub(crate) fn exp_sum(x: &[f32], m: f32) -> f64 {
        let mut total = 0.0f64;
        for block in x.chunks(SUM_BLOCK) {
            let mut acc = [0.0f32; LANES];
            let mut lanes = block.chunks_exact(LANES);
            for c in &mut lanes {
                for j in 0..LANES {
                    acc[j] += simd::exp(c[j] - m);
                }
            }
            for (j, &v) in lanes.remainder().iter().enumerate() {
                acc[j] += simd::exp(v - m);
            }
            total += acc.iter().map(|&a| a as f64).sum::<f64>();
        }
        total
    }
}

multiversion! {
    /// `sum_v p_v (log p_v - log q_v)` with `p_v = e^(log p_v)` (0 where
    /// p_v is 0), summed as in [`exp_sum`].
    fn kl_sum(log_p: &[f32], log_q: &[f32]) -> f64 {
        let mut total = 0.0f64;
        for (bp, bq) in log_p.chunks(SUM_BLOCK).zip(log_q.chunks(SUM_BLOCK)) {
            let mut acc = [0.0f32; LANES];
            let term = |lp: f32, lq: f32| {
                let p = simd::exp(lp);
                if p == 0.0 {
                    0.0
                } else {
                    p * (lp - lq)
                }
            };
            let (mut cp, mut cq) = (bp.chunks_exact(LANES), bq.chunks_exact(LANES));
            for (p, q) in (&mut cp).zip(&mut cq) {
                for j in 0..LANES {
                    acc[j] += term(p[j], q[j]);
                }
            }
            for (j, (&p, &q)) in cp.remainder().iter().zip(cq.remainder()).enumerate() {
                acc[j] += term(p, q);
            }
            total += acc.iter().map(|&a| a as f64).sum::<f64>();
        }
        total
    }
}

multiversion! {
    /// The largest value of a row (its log-softmax's shift).
    pub(crate) fn row_max(x: &[f32]) -> f32 {
        simd::max(x)
    }
}

/// Turns rows of logits `[rows, vocab]` into log-probabilities in place
/// (`x - logsumexp(x)`, the sum of exponentials vectorised, see
/// [`exp_sum`]).
pub fn log_softmax_rows(logits: &mut [f32], vocab: usize) -> Result<()> {
    ensure!(
        vocab > 0 && logits.len().is_multiple_of(vocab),
        "logits have {} values, not a multiple of the vocabulary {vocab}",
        logits.len()
    );
    logits.par_chunks_mut(vocab).for_each(|row| {
        let max = row_max(row);
        let lse = (max as f64 + exp_sum(row, max).ln()) as f32;
        row.iter_mut().for_each(|v| *v -= lse);
    });
    Ok(())
}

/// Cross-entropy of one position: `-log p(target)` from its log-probabilities.
pub fn cross_entropy(log_probs: &[f32], target: u32) -> f64 {
    -(log_probs[target as usize] as f64)
}

/// `KL(p || q) = sum_v p_v (log p_v - log q_v)` over the whole vocabulary, from
/// two rows of log-probabilities (vectorised, see [`kl_sum`]). Exactly 0
/// when the rows are equal.
pub fn kl_divergence(log_p: &[f32], log_q: &[f32]) -> f64 {
    kl_sum(log_p, log_q)
}

/// Per-position KL of rows of log-probabilities `[rows, vocab]`, in parallel.
pub fn kl_divergence_rows(log_p: &[f32], log_q: &[f32], vocab: usize) -> Result<Vec<f64>> {
    ensure!(
        log_p.len() == log_q.len() && vocab > 0 && log_p.len().is_multiple_of(vocab),
        "KL needs two [rows, vocab] matrices of the same shape ({} and {} values, vocab {vocab})",
        log_p.len(),
        log_q.len()
    );
    Ok(log_p
        .par_chunks(vocab)
        .zip(log_q.par_chunks(vocab))
        .map(|(p, q)| kl_divergence(p, q))
        .collect())
}

/// SAEBench's CE-loss score `(CE_zero - CE_sae) / (CE_zero - CE_orig)`, from
/// mean cross-entropies: 1 when the spliced model predicts as well as the
/// original, 0 when as badly as with the residual zero-ablated.
pub fn ce_loss_score(ce_orig: f64, ce_sae: f64, ce_zero: f64) -> f64 {
    (ce_zero - ce_sae) / (ce_zero - ce_orig)
}

/// SAEBench's KL score `(KL_zero - KL_sae) / KL_zero`, from mean
/// `KL(original || patched)`: 1 for an unchanged distribution, 0 for one as
/// far off as zero ablation's.
pub fn kl_div_score(kl_sae: f64, kl_zero: f64) -> f64 {
    (kl_zero - kl_sae) / kl_zero
}
