//! Sparse probing, SCR and TPP as SAEBench defines them
//! (sae_bench/evals/sparse_probing/probe_training.py and
//! sae_bench/evals/scr_and_tpp/main.py), as plain functions of arrays.
//!
//! * Inputs are mean-pooled per text piece over its non-BOS tokens: the raw
//!   residual `x̄` for the model ("llm") probes and the mean of the SAE latents
//!   `f̄` for the SAE probes ([`mean_pool_latents`]).
//! * Sparse probing ranks latents by `|mean_pos - mean_neg|` on the train set
//!   ([`mean_difference`], [`top_k_by_abs`]) and fits a logistic regression on
//!   the top k ([`gather_columns`]).
//! * SCR and TPP pick the latents to ablate by their effect on a probe
//!   trained on the raw residual: `effect_i = (mean_pos,i - mean_neg,i) *
//!   (w . d_i)` with `d_i` the decoder row ([`latent_effects`], absolute value
//!   for SCR, positive class only for TPP), ablate the top N
//!   ([`top_n_effects`]) while keeping the SAE's error term
//!   ([`ablate_keep_error`]), and score the probes again ([`scr_score`],
//!   [`tpp_scores`]).
//!
//! Ablation with the error term kept is `x' = dec(f with A zeroed) + (x -
//! dec(f)) = x - sum_{i in A} f_i d_i`, linear in the latents, so its mean over
//! a piece's tokens is `x̄ - sum_{i in A} f̄_i d_i` ([`ablate_pooled`]): the
//! benchmarks ablate the pooled activations directly, which equals
//! SAEBench's per-token route up to float rounding (the tests check it).

/// The spread over seeds (sample std, NaN below two seeds).
pub use super::mean_std;
use crate::rng::SplitMix64;
use crate::sae::{Sae, SparseCodes};
use anyhow::{ensure, Result};

/// Tokens per SAE encoder call in [`mean_pool_latents`].
const ENCODE_CHUNK: usize = 4096;

/// The SAE latents of every token, averaged per piece: piece p's tokens are
/// rows `offsets[p]..offsets[p + 1]` of `x` ([n, d_in], BOS rows already
/// left out). Returns [pieces, d_sae]; a piece with no tokens gets zeros.
pub fn mean_pool_latents(sae: &Sae, x: &[f32], offsets: &[usize]) -> Result<Vec<f32>> {
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    ensure!(!offsets.is_empty(), "offsets must hold at least one entry");
    ensure!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "offsets must not decrease"
    );
    let n = *offsets.last().unwrap();
    ensure!(
        x.len() == n * d,
        "x has {} values, expected {n} tokens x d_in {d}",
        x.len()
    );
    let pieces = offsets.len() - 1;
    let mut out = vec![0.0f32; pieces * f];
    let mut sums = vec![0.0f64; f];
    let mut p = 0usize;
    let mut start = 0usize;
    while start < n {
        let end = (start + ENCODE_CHUNK).min(n);
        let codes = sae.encode(&x[start * d..end * d], end - start)?;
        for t in start..end {
            while t >= offsets[p + 1] {
                finish_piece(&mut out, &mut sums, p, offsets, f);
                p += 1;
            }
            let (idx, val) = codes.row(t - start);
            for (&j, &v) in idx.iter().zip(val) {
                sums[j as usize] += v as f64;
            }
        }
        start = end;
    }
    while p < pieces {
        finish_piece(&mut out, &mut sums, p, offsets, f);
        p += 1;
    }
    Ok(out)
}

fn finish_piece(out: &mut [f32], sums: &mut [f64], p: usize, offsets: &[usize], f: usize) {
    let count = (offsets[p + 1] - offsets[p]) as f64;
    if count > 0.0 {
        for (o, s) in out[p * f..(p + 1) * f].iter_mut().zip(sums.iter()) {
            *o = (*s / count) as f32;
        }
    }
    sums.iter_mut().for_each(|s| *s = 0.0);
}

/// Mean of the rows of `x` ([n, dim]) per piece, as [`mean_pool_latents`]
/// does for latents: the raw mean-pooled residual.
pub fn mean_pool_rows(x: &[f32], dim: usize, offsets: &[usize]) -> Vec<f32> {
    let pieces = offsets.len().saturating_sub(1);
    let mut out = vec![0.0f32; pieces * dim];
    for p in 0..pieces {
        let (a, b) = (offsets[p], offsets[p + 1]);
        if b == a {
            continue;
        }
        let mut acc = vec![0.0f64; dim];
        for row in x[a * dim..b * dim].chunks_exact(dim) {
            for (s, &v) in acc.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        for (o, s) in out[p * dim..(p + 1) * dim].iter_mut().zip(acc) {
            *o = (s / (b - a) as f64) as f32;
        }
    }
    out
}

/// Per feature, the mean over positive rows minus the mean over negative
/// rows of `x` ([labels.len(), dim]). A side with no rows counts as zeros.
pub fn mean_difference(x: &[f32], dim: usize, labels: &[bool]) -> Vec<f32> {
    assert_eq!(x.len(), labels.len() * dim, "x must be [labels.len(), dim]");
    let mut pos = vec![0.0f64; dim];
    let mut neg = vec![0.0f64; dim];
    let (mut np, mut nn) = (0usize, 0usize);
    for (row, &l) in x.chunks_exact(dim.max(1)).zip(labels) {
        let acc = if l {
            np += 1;
            &mut pos
        } else {
            nn += 1;
            &mut neg
        };
        for (s, &v) in acc.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    let (np, nn) = (np.max(1) as f64, nn.max(1) as f64);
    pos.iter()
        .zip(&neg)
        .map(|(p, n)| (p / np - n / nn) as f32)
        .collect()
}

/// Indices of the k entries of largest |v|, largest first; ties go to the
/// lower index, so the ranking is deterministic.
pub fn top_k_by_abs(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Sparse probing's feature choice: the k features of `x` ([labels.len(),
/// dim]) with the largest |mean_pos - mean_neg|.
pub fn top_k_mean_difference(x: &[f32], dim: usize, labels: &[bool], k: usize) -> Vec<usize> {
    top_k_by_abs(&mean_difference(x, dim, labels), k)
}

/// The columns `cols` of `x` ([n, dim]), in that order: [n, cols.len()].
pub fn gather_columns(x: &[f32], dim: usize, cols: &[usize]) -> Vec<f32> {
    x.chunks_exact(dim.max(1))
        .flat_map(|row| cols.iter().map(move |&c| row[c]))
        .collect()
}

/// The rows `rows` of `x` ([n, dim]), in that order.
pub fn gather_rows(x: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        out.extend_from_slice(&x[r * dim..(r + 1) * dim]);
    }
    out
}

/// How a latent's effect on a probe is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EffectKind {
    /// SCR: `|(mean_pos - mean_neg) * (w . d_i)|`.
    Scr,
    /// TPP: `max(mean_pos - mean_neg, 0) * (w . d_i)` (only latents more
    /// active on the positive class; the sign of the product is kept).
    Tpp,
}

/// Each latent's effect on a linear probe with weights `probe_w` [d_in]:
/// its mean activation difference between the probe's classes times the
/// probe's weight along its decoder row (`w_dec` [d_sae, d_in]).
pub fn latent_effects(
    mean_diff: &[f32],
    probe_w: &[f32],
    w_dec: &[f32],
    d_in: usize,
    kind: EffectKind,
) -> Vec<f32> {
    assert_eq!(probe_w.len(), d_in, "probe weights must have d_in values");
    assert_eq!(
        w_dec.len(),
        mean_diff.len() * d_in,
        "w_dec must be [d_sae, d_in]"
    );
    mean_diff
        .iter()
        .zip(w_dec.chunks_exact(d_in))
        .map(|(&m, row)| {
            let dot: f64 = row
                .iter()
                .zip(probe_w)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            match kind {
                EffectKind::Scr => (m as f64 * dot).abs() as f32,
                EffectKind::Tpp => (m.max(0.0) as f64 * dot) as f32,
            }
        })
        .collect()
}

/// The latents to ablate: the n largest effects among the non-zero ones
/// (fewer when fewer are non-zero, as in SAEBench), largest first, ties to
/// the lower index.
pub fn top_n_effects(effects: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..effects.len()).filter(|&i| effects[i] != 0.0).collect();
    idx.sort_by(|&a, &b| effects[b].total_cmp(&effects[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// Zero-ablates the latents `ablate` on every token of `x` ([n, d_in])
/// while keeping the SAE's error: `x' = dec(f_ablated) + (x - dec(f))`.
pub fn ablate_keep_error(sae: &Sae, x: &[f32], ablate: &[usize]) -> Result<Vec<f32>> {
    let d = sae.cfg.d_in;
    ensure!(
        x.len().is_multiple_of(d),
        "x length must be a multiple of d_in"
    );
    let n = x.len() / d;
    let codes = sae.encode(x, n)?;
    let x_hat = sae.decode(&codes)?;
    let mut drop = vec![false; sae.cfg.d_sae];
    for &i in ablate {
        drop[i] = true;
    }
    let mut kept = SparseCodes {
        d_sae: codes.d_sae,
        indptr: vec![0],
        indices: Vec::with_capacity(codes.indices.len()),
        values: Vec::with_capacity(codes.values.len()),
    };
    for t in 0..n {
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            if !drop[j as usize] {
                kept.indices.push(j);
                kept.values.push(v);
            }
        }
        kept.indptr.push(kept.indices.len());
    }
    let x_abl = sae.decode(&kept)?;
    Ok(x.iter()
        .zip(&x_abl)
        .zip(&x_hat)
        .map(|((&xi, &a), &h)| a + (xi - h))
        .collect())
}

/// The mean-pooled form of [`ablate_keep_error`]: `x̄ - sum_{i in ablate}
/// f̄_i d_i` per piece, from the pooled residual `pooled_x` [pieces, d_in]
/// and pooled latents `pooled_f` [pieces, d_sae]; `w_dec` [d_sae, d_in].
pub fn ablate_pooled(
    pooled_x: &[f32],
    pooled_f: &[f32],
    w_dec: &[f32],
    d_in: usize,
    ablate: &[usize],
) -> Vec<f32> {
    let pieces = pooled_x.len() / d_in.max(1);
    let d_sae = w_dec.len() / d_in.max(1);
    assert_eq!(
        pooled_f.len(),
        pieces * d_sae,
        "pooled_f must be [pieces, d_sae]"
    );
    let mut out = pooled_x.to_vec();
    for (p, row) in out.chunks_exact_mut(d_in).enumerate() {
        for &i in ablate {
            let a = pooled_f[p * d_sae + i];
            if a != 0.0 {
                for (o, &w) in row.iter_mut().zip(&w_dec[i * d_in..(i + 1) * d_in]) {
                    *o -= a * w;
                }
            }
        }
    }
    out
}

/// `W_dec w`: each latent's decoder row (`w_dec` [d_sae, d_in]) dotted
/// with a linear probe's weights `w` [d_in].
pub fn decoder_dot(w_dec: &[f32], d_in: usize, w: &[f32]) -> Vec<f32> {
    assert_eq!(w.len(), d_in, "probe weights must have d_in values");
    w_dec
        .chunks_exact(d_in)
        .map(|row| {
            row.iter()
                .zip(w)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

/// A linear probe's decisions after [`ablate_pooled`], without forming the
/// ablated activations: `z - sum_{i in ablate} f̄_i (w . d_i)`, from the
/// clean decisions `z` (one per row), the rows' pooled latents `pooled_f`
/// [rows, d_sae] and `dec_dot` = [`decoder_dot`] of the probe.
pub fn ablated_decisions(
    clean: &[f64],
    pooled_f: &[f32],
    dec_dot: &[f32],
    ablate: &[usize],
) -> Vec<f64> {
    let f = dec_dot.len();
    assert_eq!(
        pooled_f.len(),
        clean.len() * f,
        "pooled_f must be [rows, d_sae]"
    );
    clean
        .iter()
        .zip(pooled_f.chunks_exact(f.max(1)))
        .map(|(&z, row)| {
            z - ablate
                .iter()
                .map(|&i| row[i] as f64 * dec_dot[i] as f64)
                .sum::<f64>()
        })
        .collect()
}

/// Fraction of predictions equal to their labels (0 for no rows).
pub fn accuracy(pred: &[bool], labels: &[bool]) -> f64 {
    assert_eq!(pred.len(), labels.len());
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64
}

/// SCR's normalised gain: `(A_abl - A_biased) / (A_oracle - A_biased)`,
/// where A_biased is the spuriously trained probe's accuracy on the
/// intended attribute before ablation, A_abl after, and A_oracle a probe
/// trained on the intended attribute itself. 0 when the denominator is
/// below 0.001 (SAEBench's rule: nothing to recover).
pub fn scr_score(a_abl: f64, a_biased: f64, a_oracle: f64) -> f64 {
    let den = a_oracle - a_biased;
    if den < 0.001 {
        0.0
    } else {
        (a_abl - a_biased) / den
    }
}

/// Which SCR direction SAEBench reports as `scr_metric`: direction 1
/// (ablate the second attribute, score on the first's data) when the biased
/// probe's clean accuracy on the first attribute's data is below its
/// accuracy on the second's, else direction 2.
pub fn scr_selected_direction(biased_acc_on_first: f64, biased_acc_on_second: f64) -> usize {
    if biased_acc_on_first < biased_acc_on_second {
        1
    } else {
        2
    }
}

/// TPP for one ablated class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TppClass {
    /// The class's own probe: clean accuracy minus accuracy after ablation.
    pub intended_drop: f64,
    /// The mean of the same drop over every other class's probe.
    pub unintended_drop: f64,
    /// intended_drop - unintended_drop.
    pub total: f64,
}

/// TPP per class: `clean[j]` is probe j's accuracy on its own test set,
/// `ablated[i][j]` the same after ablating class i's latents.
pub fn tpp_scores(clean: &[f64], ablated: &[Vec<f64>]) -> Vec<TppClass> {
    assert_eq!(clean.len(), ablated.len(), "one ablation per class");
    let m = clean.len();
    (0..m)
        .map(|i| {
            assert_eq!(
                ablated[i].len(),
                m,
                "ablated[i] holds every class's accuracy"
            );
            let intended = clean[i] - ablated[i][i];
            let others: Vec<f64> = (0..m)
                .filter(|&j| j != i)
                .map(|j| clean[j] - ablated[i][j])
                .collect();
            let unintended = if others.is_empty() {
                0.0
            } else {
                others.iter().sum::<f64>() / others.len() as f64
            };
            TppClass {
                intended_drop: intended,
                unintended_drop: unintended,
                total: intended - unintended,
            }
        })
        .collect()
}

/// The mean of each field over classes: SAEBench's tpp_threshold_N metrics.
pub fn tpp_mean(per_class: &[TppClass]) -> TppClass {
    let n = per_class.len().max(1) as f64;
    let sum = |f: fn(&TppClass) -> f64| per_class.iter().map(f).sum::<f64>() / n;
    TppClass {
        intended_drop: sum(|c| c.intended_drop),
        unintended_drop: sum(|c| c.unintended_drop),
        total: sum(|c| c.total),
    }
}

/// A class-balanced probe set, after SAEBench's `prepare_probe_data`:
/// `pos` rows are label true; negatives are drawn as evenly as possible
/// from `neg_groups` (one group per other class, round robin over
/// shuffled groups), and both sides are cut to the same size. `fraction`
/// (0, 1] then keeps that share of each side (the seed's subsample).
/// Returns (row, label) sorted by row.
pub fn balanced_sample(
    pos: &[usize],
    neg_groups: &[&[usize]],
    fraction: f64,
    rng: &mut SplitMix64,
) -> Vec<(usize, bool)> {
    let mut pos = pos.to_vec();
    rng.shuffle(&mut pos);
    let mut groups: Vec<Vec<usize>> = neg_groups
        .iter()
        .map(|g| {
            let mut g = g.to_vec();
            rng.shuffle(&mut g);
            g
        })
        .collect();
    let total_neg: usize = groups.iter().map(|g| g.len()).sum();
    let n = pos.len().min(total_neg);
    let mut neg = Vec::with_capacity(n);
    let mut at = 0usize;
    while neg.len() < n {
        for g in groups.iter_mut() {
            if neg.len() < n && at < g.len() {
                neg.push(g[at]);
            }
        }
        at += 1;
    }
    groups.clear();
    let keep = ((n as f64 * fraction).round() as usize).clamp(n.min(1), n);
    let mut out: Vec<(usize, bool)> = pos[..keep]
        .iter()
        .map(|&r| (r, true))
        .chain(neg[..keep].iter().map(|&r| (r, false)))
        .collect();
    out.sort_unstable();
    out
}
