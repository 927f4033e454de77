//! Splice losses: how much of the model's behaviour survives when a function
//! of the residual stream (an SAE's reconstruction, zeros) replaces the
//! residual after block L. The CE / KL half of SAEBench's core eval
//! (`sae_bench/evals/core/main.py`), on [`Gemma`] and [`Sae`] only.
//!
//! For a forward pass over `B` sequences of `T` tokens (row `b * T + t` of
//! the `[B * T, vocab]` logits), as SAEBench counts them with BOS, EOS and
//! padding passed as `ignore_tokens`:
//! - CE is per token `-log p(next token)` on the positions `0..T-2` (the
//!   last has no target) whose input token is not special;
//! - KL is per token `KL(original || patched)` over the whole vocabulary on
//!   every position whose input token is not special (the last included).
//!
//! [`CountedRows`] lists those rows. [`Original`] keeps what the unspliced
//! forward gives for them, so that one original forward serves many patched
//! ones ([`patched_losses`]); [`splice_losses`] does both for a list of
//! patches. [`sae_patch`] and [`zero_patch`] are the two splices of the core
//! benchmark. The scores built from these losses (`ce_loss_score`,
//! `kl_div_score`) are in [`super::core_eval`].

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

use super::core_eval as m;
use crate::lm::Gemma;
use crate::sae::Sae;

/// A function replacing the residual `[B, T, d_model]` after block L.
pub type Patch<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// The rows of a forward pass over `B` sequences of `T` tokens that the
/// averages count (row = `b * T + t`), sequence after sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountedRows {
    /// CE rows `(row, next token)`: positions 0..T-2 whose input token is
    /// not special.
    pub ce: Vec<(usize, u32)>,
    /// KL rows: every position whose input token is not special, ascending.
    pub kl: Vec<usize>,
}

/// The token ids `[B, T]` of `sequences` (equal lengths, one forward pass)
/// and the rows the losses count; `special[b][t]` marks the positions left
/// out (BOS). Errors if the lengths disagree or there is no sequence.
pub fn counted_rows(sequences: &[&[u32]], special: &[&[bool]]) -> Result<(Tensor, CountedRows)> {
    let b = sequences.len();
    ensure!(b > 0 && b == special.len(), "one special mask per sequence");
    let t = sequences[0].len();
    ensure!(
        sequences
            .iter()
            .zip(special)
            .all(|(s, m)| s.len() == t && m.len() == t),
        "sequences of one forward pass must have equal lengths"
    );
    let flat: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
    let ids = Tensor::from_vec(flat, (b, t), &Device::Cpu)?;
    let ce = (0..b)
        .flat_map(|s| {
            (0..t.saturating_sub(1))
                .filter(move |&p| !special[s][p])
                .map(move |p| (s * t + p, sequences[s][p + 1]))
        })
        .collect();
    let kl = (0..b)
        .flat_map(|s| {
            (0..t)
                .filter(move |&p| !special[s][p])
                .map(move |p| s * t + p)
        })
        .collect();
    Ok((ids, CountedRows { ce, kl }))
}

/// Log-probabilities `[B * T, vocab]` (row-major f32) of a forward pass on
/// `ids` `[B, T]`, with `splice` replacing the residual after a block or not.
pub fn log_probs(
    model: &Gemma,
    ids: &Tensor,
    splice: Option<(usize, Patch<'_>)>,
) -> Result<Vec<f32>> {
    let logits = model.logits(ids, splice)?;
    let mut v = logits.flatten_all()?.to_vec1::<f32>()?;
    drop(logits);
    m::log_softmax_rows(&mut v, model.config().vocab)?;
    Ok(v)
}

/// What the unspliced forward gives for a group of sequences: per-token CE
/// on the CE rows, and the log-probabilities of the KL rows
/// (`[kl rows, vocab]`, what `KL(original || patched)` needs).
#[derive(Clone, Debug, PartialEq)]
pub struct Original {
    /// Per CE row of [`CountedRows`], in order.
    pub ce: Vec<f64>,
    /// `[kl rows, vocab]`, row-major.
    pub log_probs: Vec<f32>,
}

impl Original {
    /// Runs the unspliced forward on `sequences` (equal lengths, one pass).
    pub fn compute(model: &Gemma, sequences: &[&[u32]], special: &[&[bool]]) -> Result<Original> {
        let vocab = model.config().vocab;
        let (ids, rows) = counted_rows(sequences, special)?;
        let lp = log_probs(model, &ids, None)?;
        let ce = rows
            .ce
            .iter()
            .map(|&(r, target)| m::cross_entropy(&lp[r * vocab..(r + 1) * vocab], target))
            .collect();
        let log_probs = keep_rows(lp, &rows.kl, vocab);
        Ok(Original { ce, log_probs })
    }

    /// The memory it holds, in bytes (f32 log-probabilities, f64 CE).
    pub fn bytes(&self) -> usize {
        self.log_probs.len() * 4 + self.ce.len() * 8
    }
}

/// Keeps only the given rows (strictly ascending) of a row-major
/// `[rows, vocab]` matrix, in order, in place, so that no second matrix is
/// allocated.
pub fn keep_rows(mut m: Vec<f32>, rows: &[usize], vocab: usize) -> Vec<f32> {
    for (i, &r) in rows.iter().enumerate() {
        debug_assert!(r >= i);
        if r != i {
            m.copy_within(r * vocab..(r + 1) * vocab, i * vocab);
        }
    }
    m.truncate(rows.len() * vocab);
    m.shrink_to_fit();
    m
}

/// Per-token CE and `KL(original || patched)` of the forward with `patch`
/// replacing the residual after block `layer`, on the rows of
/// [`Original`] (which must come from the same sequences and special masks;
/// a different row count is an error).
pub fn patched_losses(
    model: &Gemma,
    layer: usize,
    sequences: &[&[u32]],
    special: &[&[bool]],
    original: &Original,
    patch: Patch<'_>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let vocab = model.config().vocab;
    let (ids, rows) = counted_rows(sequences, special)?;
    ensure!(
        original.ce.len() == rows.ce.len() && original.log_probs.len() == rows.kl.len() * vocab,
        "the original forward was computed on other sequences"
    );
    let lp = log_probs(model, &ids, Some((layer, patch)))?;
    let ce = rows
        .ce
        .iter()
        .map(|&(r, target)| m::cross_entropy(&lp[r * vocab..(r + 1) * vocab], target))
        .collect();
    let lp = keep_rows(lp, &rows.kl, vocab);
    let kl = m::kl_divergence_rows(&original.log_probs, &lp, vocab)?;
    Ok((ce, kl))
}

/// Per-token losses of a set of sequences: the original forward's CE and,
/// for each patch, the patched forward's CE and `KL(original || patched)`.
/// CE covers the positions 0..T-2 whose input token is not special (each
/// predicting the next token), KL every position whose input token is not
/// special, sequence after sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpliceLosses {
    pub ce_orig: Vec<f64>,
    /// Per patch, per CE row.
    pub ce: Vec<Vec<f64>>,
    /// Per patch, per KL row.
    pub kl: Vec<Vec<f64>>,
}

/// Runs `sequences` (equal lengths, one forward pass for all) through the
/// model untouched and once per patch spliced after block `layer`, reducing
/// each forward's logits to per-token CE and KL at once (see
/// [`SpliceLosses`]). `special[b][t]` marks the positions left out of the
/// averages (BOS).
pub fn splice_losses(
    model: &Gemma,
    layer: usize,
    sequences: &[&[u32]],
    special: &[&[bool]],
    patches: &[Patch<'_>],
) -> Result<SpliceLosses> {
    let original = Original::compute(model, sequences, special)?;
    let mut out = SpliceLosses::default();
    for patch in patches {
        let (ce, kl) = patched_losses(model, layer, sequences, special, &original, *patch)?;
        out.ce.push(ce);
        out.kl.push(kl);
    }
    out.ce_orig = original.ce;
    Ok(out)
}

/// The residual splice of an SAE: each row `(b, t)` of the residual
/// `[B, T, d]` becomes its reconstruction, except where `keep[b * T + t]`
/// (kept as it is). Errors if `keep` does not have one entry per row.
pub fn sae_patch<'a>(sae: &'a Sae, keep: &'a [bool]) -> impl Fn(&Tensor) -> Result<Tensor> + 'a {
    move |r: &Tensor| {
        let d = sae.cfg.d_in;
        let dims = r.dims().to_vec();
        let mut v = r.flatten_all()?.to_vec1::<f32>()?;
        ensure!(
            v.len() == keep.len() * d,
            "the residual has {} rows, the splice mask {}",
            v.len() / d,
            keep.len()
        );
        let rows: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i]).collect();
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
            .collect();
        let x_hat = sae.reconstruct(&x)?;
        for (k, &i) in rows.iter().enumerate() {
            v[i * d..(i + 1) * d].copy_from_slice(&x_hat[k * d..(k + 1) * d]);
        }
        Ok(Tensor::from_vec(v, dims, r.device())?)
    }
}

/// Zero ablation: the residual replaced by zeros at every position.
pub fn zero_patch(r: &Tensor) -> Result<Tensor> {
    Ok(r.zeros_like()?)
}
