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
//! forward gives for them and the residual after block L, so that one
//! original forward serves many patched ones ([`patched_losses`]), each
//! running only the blocks after L; [`splice_losses`] does both for a list
//! of patches. When the logits are linear in the final hidden state (no
//! final softcap: gemma-3) the losses are streamed over vocabulary slices
//! ([`super::logit_stats`]) and the original keeps a few KB per token;
//! otherwise (gemma-2's softcap) it keeps the log-probabilities, formed 128
//! rows at a time, never as a whole `[B * T, vocab]` matrix. [`sae_patch`]
//! and [`zero_patch`] are the two splices of the core benchmark. The scores
//! built from these losses (`ce_loss_score`,
//! `kl_div_score`) are in [`super::core_eval`].

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};

use super::core_eval as m;
use super::logit_stats::{expected_rows, logit_stats, LogitStats, ProductRows};
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

/// Final hidden rows unembedded at a time ([`Gemma::unembed_into`]): a
/// chunk's logits (128 x 262k f32 for gemma-3, 128 MB) are one buffer
/// reused chunk after chunk, and each slice of the unembedding weight is
/// read once per 128 rows.
const LOGIT_ROWS: usize = 128;

/// The log-probabilities of rows `rows` (ascending) of the final hidden
/// states `[N, d_model]`, `LOGIT_ROWS` rows at a time: `f(first, lp)` gets
/// the index in `rows` of a chunk's first row and its `[len, vocab]`
/// log-probabilities.
fn log_prob_chunks(
    model: &Gemma,
    hidden: &Tensor,
    rows: &[usize],
    mut f: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let vocab = model.config().vocab;
    let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let picked = hidden.index_select(&Tensor::new(ids, hidden.device())?, 0)?;
    let mut lp = Vec::new();
    for first in (0..rows.len()).step_by(LOGIT_ROWS) {
        let len = LOGIT_ROWS.min(rows.len() - first);
        model.unembed_into(&picked.narrow(0, first, len)?, &mut lp)?;
        m::log_softmax_rows(&mut lp, vocab)?;
        f(first, &lp)?;
    }
    Ok(())
}

/// Log-probabilities `[B * T, vocab]` (row-major f32) of a forward pass on
/// `ids` `[B, T]`, with `splice` replacing the residual after a block or not
/// (the arithmetic of [`Original`] and [`patched_losses`]).
pub fn log_probs(
    model: &Gemma,
    ids: &Tensor,
    splice: Option<(usize, Patch<'_>)>,
) -> Result<Vec<f32>> {
    let (layer, resid) = match splice {
        Some((layer, patch)) => (layer, patch(&model.resid_post(ids, layer)?)?),
        None => (0, model.resid_post(ids, 0)?),
    };
    let hidden = model.final_hidden_from(&resid, layer)?;
    let rows: Vec<usize> = (0..hidden.dim(0)?).collect();
    rows_log_probs(model, &hidden, &rows)
}

/// The log-probabilities of rows `rows` of the final hidden states as one
/// `[rows, vocab]` matrix (row-major f32).
fn rows_log_probs(model: &Gemma, hidden: &Tensor, rows: &[usize]) -> Result<Vec<f32>> {
    let vocab = model.config().vocab;
    let mut out = vec![0.0f32; rows.len() * vocab];
    log_prob_chunks(model, hidden, rows, |first, lp| {
        out[first * vocab..first * vocab + lp.len()].copy_from_slice(lp);
        Ok(())
    })?;
    Ok(out)
}

/// Each CE row's index among the KL rows (every CE row is a KL row: both
/// skip special inputs, CE also the last position) and its target.
fn ce_in_kl(rows: &CountedRows) -> Vec<(usize, u32)> {
    rows.ce
        .iter()
        .map(|&(r, target)| {
            let i = rows.kl.binary_search(&r).expect("CE rows are KL rows");
            (i, target)
        })
        .collect()
}

/// What the unspliced forward keeps for `KL(original || patched)`.
#[derive(Clone, Debug)]
pub enum Reference {
    /// Logits linear in the final hidden state
    /// ([`Gemma::with_linear_unembedding`]): per KL row its log-sum-exp, its
    /// hidden row as the unembedding reads it and its expected unembedding
    /// row (`[kl rows, d_model]` each, see [`logit_stats`]). A few KB per
    /// token.
    Linear {
        lse: Vec<f64>,
        hidden: Vec<f32>,
        expected: Vec<f32>,
    },
    /// Otherwise (a final softcap, a device other than the CPU): the
    /// log-probabilities `[kl rows, vocab]`, 1 MB per token for gemma-3.
    LogProbs(Vec<f32>),
}

/// What the unspliced forward gives for a group of sequences: per-token CE
/// on the CE rows, what `KL(original || patched)` needs of it, and the
/// residual after the splice's block, which every patched forward starts
/// from.
#[derive(Clone, Debug)]
pub struct Original {
    /// Per CE row of [`CountedRows`], in order.
    pub ce: Vec<f64>,
    pub reference: Reference,
    /// The block whose output `resid` is.
    pub layer: usize,
    /// The residual after block `layer`, `[B, T, d_model]`.
    pub resid: Tensor,
}

/// The KL rows of the final hidden states as the unembedding reads them and
/// their logit statistics (the CE rows' targets' logits), when the model's
/// logits are linear in the hidden state; `None` otherwise.
fn linear_stats(
    model: &Gemma,
    hidden: &Tensor,
    rows: &CountedRows,
) -> Result<Option<(ProductRows, LogitStats)>> {
    // The rows are picked only for a linear unembedding: a softcapped model
    // reduces its logits elsewhere, from the hidden states on the device.
    model
        .with_linear_unembedding(|w| -> Result<(ProductRows, LogitStats)> {
            let ids: Vec<u32> = rows.kl.iter().map(|&r| r as u32).collect();
            let picked = hidden
                .index_select(&Tensor::new(ids, hidden.device())?, 0)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut targets = vec![None; rows.kl.len()];
            for (i, target) in ce_in_kl(rows) {
                targets[i] = Some(target);
            }
            let x = ProductRows::new(w, picked, model.config().d_model);
            let stats = logit_stats(w, &x, &targets);
            Ok((x, stats))
        })?
        .transpose()
}

/// Per CE row `lse - z_target`.
fn streamed_ce(rows: &CountedRows, stats: &LogitStats) -> Vec<f64> {
    ce_in_kl(rows)
        .into_iter()
        .map(|(i, _)| stats.lse[i] - stats.target[i])
        .collect()
}

impl Original {
    /// Runs the unspliced forward on `sequences` (equal lengths, one pass),
    /// keeping the residual after block `layer`.
    pub fn compute(
        model: &Gemma,
        layer: usize,
        sequences: &[&[u32]],
        special: &[&[bool]],
    ) -> Result<Original> {
        let vocab = model.config().vocab;
        let (ids, rows) = counted_rows(sequences, special)?;
        let resid = model.resid_post(&ids, layer)?;
        let hidden = model.final_hidden_from(&resid, layer)?;
        let (ce, reference) = match linear_stats(model, &hidden, &rows)? {
            Some((x, stats)) => {
                let expected = model
                    .with_linear_unembedding(|w| expected_rows(w, &x, &stats.lse))?
                    .context("the unembedding stopped being linear")?;
                let ce = streamed_ce(&rows, &stats);
                (
                    ce,
                    Reference::Linear {
                        lse: stats.lse,
                        hidden: x.into_rows(),
                        expected,
                    },
                )
            }
            None => {
                let log_probs = rows_log_probs(model, &hidden, &rows.kl)?;
                let ce = ce_in_kl(&rows)
                    .into_iter()
                    .map(|(i, target)| {
                        m::cross_entropy(&log_probs[i * vocab..(i + 1) * vocab], target)
                    })
                    .collect();
                (ce, Reference::LogProbs(log_probs))
            }
        };
        Ok(Original {
            ce,
            reference,
            layer,
            resid,
        })
    }

    /// KL rows it covers.
    fn kl_rows(&self, vocab: usize) -> usize {
        match &self.reference {
            Reference::Linear { lse, .. } => lse.len(),
            Reference::LogProbs(lp) => lp.len() / vocab,
        }
    }

    /// The memory it holds, in bytes.
    pub fn bytes(&self) -> usize {
        let reference = match &self.reference {
            Reference::Linear {
                lse,
                hidden,
                expected,
            } => lse.len() * 8 + (hidden.len() + expected.len()) * 4,
            Reference::LogProbs(lp) => lp.len() * 4,
        };
        reference + self.ce.len() * 8 + self.resid.elem_count() * 4
    }
}

/// Per-token CE and `KL(original || patched)` of the forward with `patch`
/// replacing the residual after block `layer`, on the rows of
/// [`Original`] (which must come from the same sequences and special masks,
/// and the same layer; otherwise an error). Only the blocks after `layer`
/// run: they start from the original's residual, patched.
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
        original.ce.len() == rows.ce.len()
            && original.kl_rows(vocab) == rows.kl.len()
            && original.resid.dims()[..2] == *ids.dims(),
        "the original forward was computed on other sequences"
    );
    ensure!(
        original.layer == layer,
        "the original forward kept the residual after block {}, the splice is at block {layer}",
        original.layer
    );
    let patched =
        patch(&original.resid).with_context(|| format!("residual splice at layer {layer}"))?;
    ensure!(
        patched.dims() == original.resid.dims(),
        "the residual splice at layer {layer} returned shape {:?}, expected {:?}",
        patched.shape(),
        original.resid.shape()
    );
    let hidden = model.final_hidden_from(&patched, layer)?;
    match &original.reference {
        Reference::Linear {
            lse,
            hidden: h_orig,
            expected,
        } => {
            let (x, stats) = linear_stats(model, &hidden, &rows)?
                .context("the original forward's logits were linear, this model's are not")?;
            let d = model.config().d_model;
            // KL = lse(z_q) - lse(z_o) - (h_q - h_o) . u_o (module logit_stats).
            let kl = (0..x.len())
                .map(|i| {
                    let (h_o, u) = (&h_orig[i * d..(i + 1) * d], &expected[i * d..(i + 1) * d]);
                    let shift: f64 = x
                        .row(i)
                        .iter()
                        .zip(h_o)
                        .zip(u)
                        .map(|((&q, &o), &u)| (q as f64 - o as f64) * u as f64)
                        .sum();
                    stats.lse[i] - lse[i] - shift
                })
                .collect();
            Ok((streamed_ce(&rows, &stats), kl))
        }
        Reference::LogProbs(log_probs) => {
            let ce_at = ce_in_kl(&rows);
            let mut ce = vec![0.0f64; ce_at.len()];
            let mut kl = Vec::with_capacity(rows.kl.len());
            let mut next_ce = 0;
            log_prob_chunks(model, &hidden, &rows.kl, |first, lp| {
                let n = lp.len() / vocab;
                let orig = &log_probs[first * vocab..(first + n) * vocab];
                kl.extend(m::kl_divergence_rows(orig, lp, vocab)?);
                while next_ce < ce_at.len() && ce_at[next_ce].0 < first + n {
                    let (i, target) = ce_at[next_ce];
                    ce[next_ce] =
                        m::cross_entropy(&lp[(i - first) * vocab..(i - first + 1) * vocab], target);
                    next_ce += 1;
                }
                Ok(())
            })?;
            Ok((ce, kl))
        }
    }
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
    let original = Original::compute(model, layer, sequences, special)?;
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
