//! The trainer: hand-written forward/backward, AuxK, orthogonality terms,
//! Adam and learning-rate schedule (checkpoints: `super::checkpoint`).
//!
//! One step on a batch x ([n, d_in], already scaled, see
//! [`super::norm_scaling_factor`]):
//! 1. encoder: chunked gemm `(x - b_dec) W_enc + b_enc` fused with the top-k
//!    selection (and, when latents are dead, the top-k_aux among dead ones);
//!    the batch kinds then cut the batch to its k n best (`batch_topk`; with
//!    bf16 the cut is on the bf16 products, then the kept values are f32's);
//! 2. decoder and residual per token as a gather over the active rows;
//!    `L_recon = mean_t ||x_hat_t - x_t||^2`, for Matryoshka summed over the
//!    nested prefixes (each prefix's x_hat from its latents and b_dec);
//! 3. AuxK (dictionary_learning / OpenAI): dead latents' top-k_aux relu'd
//!    pre-activations reconstruct the (detached) residual `x - x_hat` through
//!    W_dec without bias; `L_aux = mean_t ||r_aux - r||^2 / mean_t ||r - mean(r)||^2`;
//!    a latent is dead when it has not been active (value > 0) during the last
//!    `dead_after_tokens` tokens *before* this batch (as SAELens; dictionary_learning
//!    also counts the current batch);
//! 4. ReLU-L1: `l1_coeff * mean_t sum_i z_ti` (unit decoder rows);
//! 5. orthogonality (see [`Ortho`]: uniform, guided, OrtSAE's chunks);
//! 6. gradients as gathers/scatters over the active entries: per token the
//!    gradient w.r.t. each active pre-activation and the b_dec part; per latent
//!    (in a fixed order of tokens) its W_dec row, W_enc column and b_enc;
//! 7. the decoder gradient's component along each row is removed, then one
//!    fused pass per latent applies Adam (no weight decay) to its decoder row,
//!    encoder column and bias and renormalises the decoder row; b_dec last
//!    (unless [`DecoderBias::Fixed`] keeps it at its init);
//! 8. the batch kinds move their inference threshold towards the smallest
//!    activation the batch kept (`TrainerConfig::threshold_lr`).
//!
//! Each phase is one private method of [`Trainer`] (`encode`, `residuals`,
//! `auxk_loss`, `ortho_penalty`, `pre_activation_grads`, then
//! `latent_entries` and `latent_grads`, `update_latents` and `advance`), called in
//! that order by `prepare` (everything before the parameters change; the
//! batch selection is `batch_topk`) and
//! [`Trainer::step`].
//!
//! Nothing depends on thread scheduling: every reduction has a fixed order,
//! so a seed fixes the run on one machine whatever the number of threads.

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::batch_topk::{batch_select, candidate_cap, replace_rows, tokens_to_expand};
use super::buffers::release_buffers;
use super::cofire::{batch_partners, batch_token_pairs, token_pairs_len};
use super::model::{
    encode_centered, geometric_median, refine_codes, EncoderWeights, Refine, Sae, SaeConfig,
    SaeKind, ScratchPool, Select, SparseCodes,
};
use super::ortho::{pairs_to_blocks, partner_penalty, token_penalty, PairPenalty};
use super::ortsae::chunk_penalty;
use super::rows::{
    axpy, dot, dots_by_row, gather_rows, prefetch, DotsScratch, PackedRows, PREFETCH_AHEAD,
};
use crate::linalg::{self, Compute};
use crate::rng::SplitMix64;

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;
/// Tokens per task in the per-token passes (fixed: reductions follow it).
const TOK_CHUNK: usize = 64;
/// Latents per task in the per-latent update pass.
const LAT_CHUNK: usize = 32;
/// Tokens per task of the AuxK reconstruction's gather: each task streams
/// the whole packed decoder through L2 once, so larger tasks read less.
const AUX_GATHER_TOKENS: usize = 256;
/// Tokens per group of the pre-activation gradients' dot products: their
/// output-gradient rows (one per prefix, plus AuxK's) stay in L2 while the
/// decoder rows stream past once per group.
const DOT_TOKENS: usize = 128;

/// Orthogonality term added to the loss with weight `lambda`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ortho {
    None,
    /// Mean |cos(d_i, d_j)| over all pairs i != j, estimated each step from
    /// `pairs` pairs drawn uniformly with replacement. Each draw is an unbiased
    /// sample of the all-pairs mean, so the estimate and its gradient are
    /// unbiased; cost is O(pairs * d_in) and, unlike a random chunk of rows,
    /// the draws spread over the whole dictionary and are independent.
    Uniform {
        lambda: f32,
        pairs: usize,
    },
    /// SPEC.md's sparsity-guided term from the batch's active lists:
    /// `sum c_ij |cos| / sum c_ij` over pairs with `c_ij >= tau`.
    Guided {
        lambda: f32,
        tau: f32,
    },
    /// OrtSAE's chunk-wise term (see `super::ortsae`): per step a random
    /// split of the latents into `chunks` chunks, each latent charged the
    /// squared cosine to its closest row in its chunk.
    OrtSae {
        lambda: f32,
        chunks: usize,
    },
}

/// What happens to the decoder bias after its geometric-median init.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderBias {
    /// Adam trains it with the other parameters (dictionary_learning's and
    /// SAELens's recipe).
    #[default]
    Trained,
    /// It stays at the geometric median of the first batch. On a residual
    /// stream whose mean dwarfs its spread (gemma-3-270m's: the mean is ~95%
    /// of a token's norm), a trained b_dec can drift off the data's centre;
    /// the offset it leaves in every encoder input `x - b_dec` then keeps
    /// latents far below threshold on every token, where AuxK cannot reach
    /// them (README, "The decoder bias").
    Fixed,
}

/// Training hyper-parameters. [`TrainerConfig::new`] fills the recipe's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// None: `2e-4 / sqrt(d_sae / 2^14)`.
    pub lr: Option<f32>,
    /// Linear warmup from lr/warmup to lr. None: `min(1000, max(1, total_steps / 10))`.
    pub warmup_steps: Option<usize>,
    /// Fraction of the final steps over which lr decays linearly to 0 (0.2).
    pub decay_frac: f32,
    pub total_steps: usize,
    /// Intended tokens per step (`step` accepts any n >= 1).
    pub batch_size: usize,
    /// A latent is dead after this many tokens without firing (10M).
    pub dead_after_tokens: u64,
    /// AuxK's k. None: d_in / 2.
    pub aux_k: Option<usize>,
    /// AuxK coefficient (1/32); 0 disables AuxK.
    pub aux_coeff: f32,
    pub ortho: Ortho,
    pub seed: u64,
    /// The batch kinds' threshold update: after each step
    /// `threshold <- (1 - lr) threshold + lr * (smallest kept activation)`,
    /// from 0 at step 0 (SAELens 6's `topk_threshold_lr`, 0.01).
    #[serde(default = "default_threshold_lr")]
    pub threshold_lr: f32,
    /// The encoder product's arithmetic. With bf16, bf16 pre-activations
    /// choose the active latents and their values are recomputed in f32
    /// (see `encode_centered`); every other part of the step is f32.
    #[serde(default)]
    pub compute: Compute,
    /// Trained (the default, and what checkpoints written before this field
    /// did) or fixed at its init.
    #[serde(default)]
    pub b_dec: DecoderBias,
}

fn default_threshold_lr() -> f32 {
    0.01
}

impl TrainerConfig {
    pub fn new(total_steps: usize, batch_size: usize) -> Self {
        Self {
            lr: None,
            warmup_steps: None,
            decay_frac: 0.2,
            total_steps,
            batch_size,
            dead_after_tokens: 10_000_000,
            aux_k: None,
            aux_coeff: 1.0 / 32.0,
            ortho: Ortho::None,
            seed: 0,
            threshold_lr: default_threshold_lr(),
            compute: Compute::F32,
            b_dec: DecoderBias::Trained,
        }
    }

    /// Errors name the offending field.
    pub fn validate(&self) -> Result<()> {
        if let Some(lr) = self.lr {
            ensure!(
                lr.is_finite() && lr > 0.0,
                "lr must be finite and > 0 (got {lr})"
            );
        }
        ensure!(
            (0.0..=1.0).contains(&self.decay_frac),
            "decay_frac must be in [0, 1] (got {})",
            self.decay_frac
        );
        ensure!(self.total_steps > 0, "total_steps must be > 0");
        if self.compute == Compute::Bf16 {
            linalg::resolve(Some(Compute::Bf16), "compute")?;
        }
        ensure!(self.batch_size > 0, "batch_size must be > 0");
        ensure!(
            self.aux_coeff.is_finite() && self.aux_coeff >= 0.0,
            "aux_coeff must be finite and >= 0 (got {})",
            self.aux_coeff
        );
        match self.ortho {
            Ortho::None => {}
            Ortho::Uniform { lambda, pairs } => {
                ensure!(
                    lambda.is_finite() && lambda >= 0.0,
                    "ortho.lambda must be finite and >= 0 (got {lambda})"
                );
                ensure!(pairs > 0, "ortho.pairs must be > 0");
            }
            Ortho::Guided { lambda, tau } => {
                ensure!(
                    lambda.is_finite() && lambda >= 0.0,
                    "ortho.lambda must be finite and >= 0 (got {lambda})"
                );
                ensure!(
                    (0.0..=1.0).contains(&tau),
                    "ortho.tau must be in [0, 1] (got {tau})"
                );
            }
            Ortho::OrtSae { lambda, chunks } => {
                ensure!(
                    lambda.is_finite() && lambda >= 0.0,
                    "ortho.lambda must be finite and >= 0 (got {lambda})"
                );
                ensure!(chunks > 0, "ortho.chunks must be > 0 (got 0)");
            }
        }
        ensure!(
            self.threshold_lr.is_finite() && (0.0..=1.0).contains(&self.threshold_lr),
            "threshold_lr must be in [0, 1] (got {})",
            self.threshold_lr
        );
        Ok(())
    }

    pub fn base_lr(&self, d_sae: usize) -> f32 {
        self.lr
            .unwrap_or_else(|| (2e-4 / (d_sae as f64 / 16384.0).sqrt()) as f32)
    }

    pub fn warmup(&self) -> usize {
        self.warmup_steps
            .unwrap_or_else(|| 1000.min((self.total_steps / 10).max(1)))
    }

    /// The learning rate used at 0-based step `step`.
    pub fn lr_at(&self, step: u64, d_sae: usize) -> f32 {
        let base = self.base_lr(d_sae) as f64;
        let w = self.warmup() as f64;
        let s = step as f64;
        let warm = if w > 0.0 {
            ((s + 1.0) / w).min(1.0)
        } else {
            1.0
        };
        let total = self.total_steps as f64;
        let decay_len = (self.decay_frac as f64 * total).round();
        let decay_start = total - decay_len;
        let decay = if decay_len > 0.0 && s >= decay_start {
            ((total - s) / decay_len).max(0.0)
        } else {
            1.0
        };
        (base * warm * decay) as f32
    }
}

/// What one step measured (losses before the update).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    /// mse + aux_coeff * aux + l1 + lambda * ortho.
    pub loss: f64,
    /// mean over tokens of ||x_hat - x||^2.
    pub mse: f64,
    /// Normalised AuxK loss (before aux_coeff); 0 when no latent is dead.
    pub aux: f64,
    /// ReLU-L1 penalty `l1_coeff * mean_t sum_i z_ti` (0 for TopK).
    pub l1: f64,
    /// Orthogonality penalty before lambda.
    pub ortho: f64,
    /// Mean active latents per token.
    pub l0: f64,
    /// Fraction of latents dead after this step.
    pub dead_fraction: f64,
    pub lr: f32,
    /// Guided only: pairs with c_ij >= tau in this batch, their mean c_ij and
    /// mean |cos| (0 otherwise).
    pub competing_pairs: usize,
    pub mean_c: f64,
    pub mean_abs_cos_competing: f64,
    /// The batch kinds: the inference threshold after this step (0 otherwise).
    #[serde(default)]
    pub threshold: f64,
}

/// Wall-clock seconds of each phase of the last [`Trainer::step`]: where a
/// step's time goes (the speed benchmarks, train_log's `*_ms` columns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Phase 1: the batch's check, encoder product, selection (and the batch
    /// kinds' cut).
    pub encode: f64,
    /// Phases 2-4: decoder, residuals, AuxK and L1.
    pub residuals: f64,
    /// Phase 6a-b: pre-activation gradients, per-latent entry lists, biases.
    pub gradients: f64,
    /// Phase 5: the orthogonality penalty and its decoder gradient.
    pub ortho: f64,
    /// Phases 6c-8: per-latent gradient sums, Adam, renormalisation.
    pub update: f64,
}

impl StepTimes {
    pub fn total(&self) -> f64 {
        self.encode + self.residuals + self.gradients + self.ortho + self.update
    }
}

/// Phase by phase (sums over steps).
impl std::ops::AddAssign for StepTimes {
    fn add_assign(&mut self, t: StepTimes) {
        self.encode += t.encode;
        self.residuals += t.residuals;
        self.gradients += t.gradients;
        self.ortho += t.ortho;
        self.update += t.update;
    }
}

/// Dense gradients (for tests and diagnostics): `w_dec` before the parallel
/// component is removed.
#[derive(Clone, Debug)]
pub struct DenseGrads {
    pub w_enc_t: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub b_dec: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// Row of the output-gradient buffer (`t * p + group` for the main loss
    /// with p prefixes, `p n + t` for AuxK).
    grow: u32,
    tok: u32,
    /// Activation (z or the AuxK activation).
    coef: f32,
    /// d loss / d pre-activation.
    gpre: f32,
}

/// Everything computed before the parameters change.
struct Prepared {
    n: usize,
    xc: Vec<f32>,
    gbuf: Vec<f32>,
    entry_start: Vec<usize>,
    entries: Vec<Entry>,
    fired: Vec<bool>,
    ortho: Option<PairPenalty>,
    grad_b_enc: Vec<f32>,
    grad_b_dec: Vec<f32>,
    rng_after: SplitMix64,
    /// The batch kinds: the smallest value the batch selection kept.
    batch_min: Option<f32>,
    stats: StepStats,
    times: StepTimes,
}

/// Trains one SAE. See the module docs for the step.
pub struct Trainer {
    pub(super) cfg: TrainerConfig,
    pub(super) sae: Sae,
    pub(super) step: u64,
    pub(super) rng: SplitMix64,
    pub(super) m_enc: Vec<f32>,
    pub(super) v_enc: Vec<f32>,
    pub(super) m_dec: Vec<f32>,
    pub(super) v_dec: Vec<f32>,
    pub(super) m_benc: Vec<f32>,
    pub(super) v_benc: Vec<f32>,
    pub(super) m_bdec: Vec<f32>,
    pub(super) v_bdec: Vec<f32>,
    pub(super) since_fired: Vec<u64>,
    pub(super) pool: ScratchPool,
    /// The latents' gradient rows (decoder then encoder, `[2 f, d]`), kept
    /// between steps so that each step does not fault in fresh pages.
    grad_rows: Vec<f32>,
    last_times: StepTimes,
    _release: ReleaseBuffers,
}

/// Empties the step's buffer pool when its trainer is done.
#[derive(Debug, Default)]
struct ReleaseBuffers;

impl Drop for ReleaseBuffers {
    fn drop(&mut self) {
        release_buffers();
    }
}

fn split_by<'a, T>(mut v: &'a mut [T], bounds: &[usize]) -> Vec<&'a mut [T]> {
    // bounds: increasing offsets starting at 0 and ending at v.len().
    let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
    for w in bounds.windows(2) {
        let (a, b) = std::mem::take(&mut v).split_at_mut(w[1] - w[0]);
        out.push(a);
        v = b;
    }
    out
}

#[inline]
fn adam(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], step_size: f32, inv_sqrt_bc2: f32) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        *p -= step_size * *m / (v.sqrt() * inv_sqrt_bc2 + EPS);
    }
}

/// Phase 1's output: the centred batch and the selected latents.
struct Codes {
    n: usize,
    /// `x - b_dec`, `[n, d_in]`.
    xc: Vec<f32>,
    main: SparseCodes,
    /// AuxK's latents among the dead ones (no entries without AuxK).
    aux: SparseCodes,
    use_aux: bool,
    /// The batch kinds: the smallest value the batch selection kept.
    batch_min: Option<f32>,
    /// The step's bf16 copy of W_enc^T (`train.compute: bf16`), which the
    /// batch kinds' expansion reuses.
    w_bf16: Option<Vec<u16>>,
}

/// The nested prefixes whose reconstruction losses are summed (one, the
/// whole dictionary, except for Matryoshka): the output-gradient buffer
/// holds one row per token and prefix, token-major (row `t * len + g`).
struct Prefixes {
    /// Exclusive end latent of each prefix, ascending; the last is d_sae.
    ends: Vec<usize>,
    /// Each prefix loss's weight.
    weights: Vec<f64>,
}

impl Prefixes {
    fn of(kind: &SaeKind, d_sae: usize) -> Prefixes {
        let ends = kind.prefix_ends(d_sae);
        // Every prefix's loss counts fully, as SAELens and dictionary_learning
        // sum them.
        let weights = vec![1.0; ends.len()];
        Prefixes { ends, weights }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The smallest prefix holding latent j, i.e. j's group.
    fn group(&self, j: usize) -> usize {
        self.ends.partition_point(|&e| e <= j)
    }
}

/// Per chunk of tokens (then in total) the sums behind the losses.
struct TokSums {
    /// `sum_t ||e_t||^2` per prefix.
    se: Vec<f64>,
    /// `sum_t ||u_t||^2` (AuxK).
    su: f64,
    /// `sum_t sum_i z_ti`.
    l1: f64,
    /// `sum_t e_t` (AuxK only, else empty).
    e_sum: Vec<f64>,
}

/// Phases 2-4's output: the output-gradient buffer (rows `0..p n` the
/// main loss's for p prefixes, token-major; then n rows of AuxK's) and the
/// losses.
struct Residuals {
    gbuf: Vec<f32>,
    /// d loss / d pre-activation of each main entry (see
    /// [`Trainer::residuals`]).
    gpre_main: Vec<f32>,
    /// The whole dictionary's `mean_t ||e_t||^2`.
    mse: f64,
    /// The reconstruction loss: the prefixes' weighted mse (`mse` itself for
    /// every kind but Matryoshka).
    recon: f64,
    l1: f64,
    aux_loss: f64,
}

/// Phase 6a's output: d loss / d pre-activation per entry of the main and
/// AuxK codes, and the decoder-bias half of b_dec's gradient.
struct PreGrads {
    main: Vec<f32>,
    aux: Vec<f32>,
    b_dec: Vec<f32>,
}

/// Phase 6b's output: the entries of each latent, in token order.
struct LatentLists {
    /// Latent j's entries are `entries[entry_start[j]..entry_start[j + 1]]`.
    entry_start: Vec<usize>,
    entries: Vec<Entry>,
    /// Whether each latent was active (main codes) in the batch.
    fired: Vec<bool>,
}

/// Phase 6b, gradients per latent: regroups the main and AuxK entries by
/// latent, in token order (a counting sort), so that each latent's
/// gradients are summed in a fixed order.
#[allow(clippy::needless_range_loop)]
fn latent_entries(f: usize, codes: &Codes, pre: &PreGrads, prefixes: &Prefixes) -> LatentLists {
    let np = prefixes.len();
    let (n, main, aux) = (codes.n, &codes.main, &codes.aux);
    let mut cnt = vec![0usize; f];
    for &j in main.indices.iter().chain(&aux.indices) {
        cnt[j as usize] += 1;
    }
    let mut fired = vec![false; f];
    for &j in &main.indices {
        fired[j as usize] = true;
    }
    let mut entry_start = vec![0usize; f + 1];
    for j in 0..f {
        entry_start[j + 1] = entry_start[j] + cnt[j];
    }
    let mut fill = entry_start.clone();
    let mut entries = vec![
        Entry {
            grow: 0,
            tok: 0,
            coef: 0.0,
            gpre: 0.0
        };
        entry_start[f]
    ];
    for t in 0..n {
        for p in main.indptr[t]..main.indptr[t + 1] {
            let j = main.indices[p] as usize;
            let grp = if np > 1 { prefixes.group(j) } else { 0 };
            entries[fill[j]] = Entry {
                grow: (t * np + grp) as u32,
                tok: t as u32,
                coef: main.values[p],
                gpre: pre.main[p],
            };
            fill[j] += 1;
        }
        for p in aux.indptr[t]..aux.indptr[t + 1] {
            let j = aux.indices[p] as usize;
            entries[fill[j]] = Entry {
                grow: (np * n + t) as u32,
                tok: t as u32,
                coef: aux.values[p],
                gpre: pre.aux[p],
            };
            fill[j] += 1;
        }
    }
    LatentLists {
        entry_start,
        entries,
        fired,
    }
}

impl LatentLists {
    /// Latent j's encoder-bias gradient, its entries' sum in token order.
    fn bias_grad(&self, j: usize) -> f32 {
        let mut gb = 0.0f32;
        for e in &self.entries[self.entry_start[j]..self.entry_start[j + 1]] {
            gb += e.gpre;
        }
        gb
    }
}

/// The encoder input's part of b_dec's gradient: the input is `x - b_dec`,
/// so it is `- sum_j gb_j W_enc[:, j]` with gb_j the bias gradient (the sum
/// of latent j's pre-activation gradients), one row per latent instead of
/// one per entry. Latents in order, each skipped when its gb is 0.
fn encoder_input_grad(grad_b_dec: &mut [f32], w_enc_t: &[f32], grad_b_enc: &[f32]) {
    let d = grad_b_dec.len();
    for (j, &gb) in grad_b_enc.iter().enumerate() {
        if gb != 0.0 {
            axpy(grad_b_dec, -gb, &w_enc_t[j * d..(j + 1) * d]);
        }
    }
}

/// `pairs` latent pairs `(i, j)`, `i < j`, drawn uniformly with replacement
/// among the pairs of distinct latents (none when f < 2).
fn uniform_pairs(rng: &mut SplitMix64, f: usize, pairs: usize) -> Vec<(u32, u32)> {
    let mut ps = Vec::with_capacity(pairs);
    if f >= 2 {
        for _ in 0..pairs {
            let i = rng.below(f as u64) as u32;
            let mut j = rng.below(f as u64 - 1) as u32;
            if j >= i {
                j += 1;
            }
            ps.push((i.min(j), i.max(j)));
        }
    }
    ps
}

impl Trainer {
    /// A fresh trainer: validates both configs, initialises the SAE from
    /// `cfg.seed` and sets b_dec to the geometric median of `init_sample`
    /// ([n, d_in], n >= 1, already scaled like the training batches).
    pub fn new(cfg: TrainerConfig, sae_cfg: SaeConfig, init_sample: &[f32]) -> Result<Trainer> {
        cfg.validate()?;
        sae_cfg.validate()?;
        ensure!(
            sae_cfg.kind.architecture().trainable(),
            "a {} SAE is read, not trained (coact trains topk, batchtopk, matryoshka and relu_l1)",
            sae_cfg.kind.architecture()
        );
        if let Ortho::OrtSae { chunks, .. } = cfg.ortho {
            ensure!(
                2 * chunks <= sae_cfg.d_sae,
                "ortho.chunks = {chunks}: each chunk needs at least 2 of the d_sae = {} latents",
                sae_cfg.d_sae
            );
        }
        let d = sae_cfg.d_in;
        ensure!(
            !init_sample.is_empty() && init_sample.len().is_multiple_of(d),
            "init_sample must be [n, d_in] with n > 0"
        );
        ensure!(
            init_sample.iter().all(|v| v.is_finite()),
            "init_sample contains NaN or inf"
        );
        let mut sae = Sae::init(sae_cfg, cfg.seed)?;
        sae.b_dec = geometric_median(init_sample, d, 100, 1e-5)?;
        Ok(Self::from_parts(cfg, sae))
    }

    /// A trainer at step 0 around `sae` (zero Adam moments, no latent dead).
    pub(super) fn from_parts(cfg: TrainerConfig, sae: Sae) -> Trainer {
        let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
        Trainer {
            rng: SplitMix64::new(cfg.seed ^ 0x0A7E_5EED_0000_0001),
            cfg,
            step: 0,
            m_enc: vec![0.0; d * f],
            v_enc: vec![0.0; d * f],
            m_dec: vec![0.0; d * f],
            v_dec: vec![0.0; d * f],
            m_benc: vec![0.0; f],
            v_benc: vec![0.0; f],
            m_bdec: vec![0.0; d],
            v_bdec: vec![0.0; d],
            since_fired: vec![0; f],
            pool: ScratchPool::default(),
            grad_rows: Vec::new(),
            last_times: StepTimes::default(),
            _release: ReleaseBuffers,
            sae,
        }
    }

    pub fn sae(&self) -> &Sae {
        &self.sae
    }

    /// Mutable weights (tests, surgery); Adam state is not touched.
    pub fn sae_mut(&mut self) -> &mut Sae {
        &mut self.sae
    }

    pub fn into_sae(self) -> Sae {
        self.sae
    }

    pub fn config(&self) -> &TrainerConfig {
        &self.cfg
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Tokens since each latent last fired.
    pub fn since_fired(&self) -> &[u64] {
        &self.since_fired
    }

    /// Time per phase of the last successful [`Trainer::step`].
    pub fn last_step_times(&self) -> StepTimes {
        self.last_times
    }

    /// The forward and backward of one step, without changing anything: the
    /// phases below in order (see the module docs).
    fn prepare(&self, batch: &[f32]) -> Result<Prepared> {
        let clock = Instant::now();
        let mut times = StepTimes::default();
        let mut lap = {
            let mut last = 0.0;
            move || {
                let now = clock.elapsed().as_secs_f64();
                let dt = now - last;
                last = now;
                dt
            }
        };
        let n = self.check_batch(batch)?;
        let f = self.sae.cfg.d_sae;
        let kind = &self.sae.cfg.kind;
        let (select, l1_coeff) = match *kind {
            SaeKind::TopK { k } => (Select::TopKPositive(k), 0.0f32),
            SaeKind::ReluL1 { l1_coeff } => (Select::Relu, l1_coeff),
            SaeKind::BatchTopK { k } | SaeKind::Matryoshka { k, .. } => {
                (Select::TopKPositive(candidate_cap(k, f)), 0.0)
            }
            SaeKind::JumpRelu => bail!("a jumprelu SAE is read, not trained"),
        };
        let mut codes = self.encode(batch, n, select);
        if let Some(k) = kind.batch_k() {
            self.batch_topk(&mut codes, k);
        }
        times.encode = lap();
        let prefixes = Prefixes::of(kind, f);
        ensure!(
            (prefixes.len() + 1) * n < u32::MAX as usize,
            "batch too large for {} nested prefixes",
            prefixes.len()
        );
        let res = self.residuals(batch, &codes, l1_coeff, &prefixes);
        times.residuals = lap();
        let pre = self.pre_activation_grads(&codes, &res.gbuf, res.gpre_main, &prefixes);
        let lists = latent_entries(f, &codes, &pre, &prefixes);
        let grad_b_enc: Vec<f32> = (0..f).map(|j| lists.bias_grad(j)).collect();
        let mut grad_b_dec = pre.b_dec;
        encoder_input_grad(&mut grad_b_dec, &self.sae.w_enc_t, &grad_b_enc);
        times.gradients = lap();

        let mut rng = self.rng.clone();
        let mut stats = StepStats {
            step: self.step,
            mse: res.mse,
            aux: res.aux_loss,
            l1: res.l1,
            l0: codes.main.l0(),
            lr: self.cfg.lr_at(self.step, f),
            ..Default::default()
        };
        let (ortho, lambda) = self.ortho_penalty(&codes.main, &mut rng, &mut stats);
        times.ortho = lap();
        stats.ortho = ortho.as_ref().map_or(0.0, |p| p.value);
        stats.loss = res.recon
            + self.cfg.aux_coeff as f64 * res.aux_loss
            + res.l1
            + lambda as f64 * stats.ortho;
        Ok(Prepared {
            n,
            xc: codes.xc,
            gbuf: res.gbuf,
            entry_start: lists.entry_start,
            entries: lists.entries,
            fired: lists.fired,
            ortho,
            grad_b_enc,
            grad_b_dec,
            rng_after: rng,
            batch_min: codes.batch_min,
            stats,
            times,
        })
    }

    /// Checks the batch's shape and values; returns its token count n.
    fn check_batch(&self, batch: &[f32]) -> Result<usize> {
        let d = self.sae.cfg.d_in;
        ensure!(
            !batch.is_empty() && batch.len().is_multiple_of(d),
            "batch must be [n, d_in] with n > 0 (got {} values, d_in = {d})",
            batch.len()
        );
        let n = batch.len() / d;
        ensure!(n < u32::MAX as usize / 2, "batch too large");
        if batch.par_iter().any(|v| !v.is_finite()) {
            bail!("batch contains NaN or inf; step skipped, parameters unchanged");
        }
        Ok(n)
    }

    /// AuxK's candidates: the dead latents (TopK with AuxK on only) and the
    /// k_aux to keep among them (0: no AuxK this step).
    fn dead_latents(&self) -> (Vec<u32>, usize) {
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let is_topk = self.sae.cfg.kind.k().is_some();
        let aux_k = self.cfg.aux_k.unwrap_or(d / 2);
        let dead: Vec<u32> = if is_topk && self.cfg.aux_coeff > 0.0 && aux_k > 0 {
            (0..f as u32)
                .filter(|&j| self.since_fired[j as usize] >= self.cfg.dead_after_tokens)
                .collect()
        } else {
            Vec::new()
        };
        let k_aux = aux_k.min(dead.len());
        (dead, k_aux)
    }

    /// Phase 1, encode: `x - b_dec`, then the encoder product fused with the
    /// selection of the active latents and, when latents are dead, of AuxK's.
    fn encode(&self, batch: &[f32], n: usize, select: Select) -> Codes {
        let sae = &self.sae;
        let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
        let (dead, k_aux) = self.dead_latents();
        let use_aux = k_aux > 0;
        let mut xc = batch.to_vec();
        xc.par_chunks_mut(d * TOK_CHUNK).for_each(|c| {
            for row in c.chunks_mut(d) {
                row.iter_mut().zip(&sae.b_dec).for_each(|(v, b)| *v -= b);
            }
        });
        let w_bf16 = (self.cfg.compute == Compute::Bf16).then(|| {
            let mut wb = vec![0u16; sae.w_enc_t.len()];
            wb.par_chunks_mut(LAT_CHUNK * d)
                .zip(sae.w_enc_t.par_chunks(LAT_CHUNK * d))
                .for_each(|(b, w)| linalg::convert_to_bf16(w, b));
            wb
        });
        // The batch kinds cut their candidates before refining them.
        let refine = if sae.cfg.kind.batch_k().is_some() {
            Refine::AuxOnly
        } else {
            Refine::All
        };
        let enc = encode_centered(
            sae,
            &xc,
            n,
            select,
            use_aux.then_some((&dead[..], k_aux)),
            &self.pool,
            EncoderWeights::of(w_bf16.as_deref()),
            refine,
        );
        let aux = enc.aux.unwrap_or_else(|| SparseCodes {
            d_sae: f,
            indptr: vec![0; n + 1],
            indices: Vec::new(),
            values: Vec::new(),
        });
        Codes {
            n,
            xc,
            main: enc.main,
            aux,
            use_aux,
            batch_min: None,
            w_bf16,
        }
    }

    /// Phase 1b, the batch kinds: cuts each token's candidates (the encoder's
    /// top `candidate_cap`) down to the batch's `k * n` best, after encoding
    /// in full the tokens whose cut-off candidates might belong to them (see
    /// [`super::batch_topk`]).
    fn batch_topk(&self, codes: &mut Codes, k: usize) {
        let budget = k * codes.n;
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let cap = candidate_cap(k, f);
        let expand = tokens_to_expand(&codes.main, cap, budget);
        if !expand.is_empty() {
            let xs: Vec<f32> = expand
                .iter()
                .flat_map(|&t| codes.xc[t * d..(t + 1) * d].iter().copied())
                .collect();
            let full = encode_centered(
                &self.sae,
                &xs,
                expand.len(),
                Select::Relu,
                None,
                &self.pool,
                EncoderWeights::of(codes.w_bf16.as_deref()),
                Refine::AuxOnly,
            );
            codes.main = replace_rows(&codes.main, &expand, &full.main);
        }
        let (mut kept, mut min) = batch_select(&codes.main, budget);
        if codes.w_bf16.is_some() {
            // bf16 products chose the entries; their values are f32's.
            kept = refine_codes(&self.sae, &codes.xc, &kept, &self.pool);
            min = kept.values.iter().copied().reduce(f32::min);
        }
        codes.main = kept;
        codes.batch_min = min;
    }

    /// Phases 2-4, residual and loss: per token and prefix the
    /// reconstruction error `e_g = x_hat_g - x` (decoder as a gather over the
    /// active rows, in latent order, so each prefix extends the previous),
    /// the output gradient of each prefix's latents `sum_{h >= g} w_h 2 e_h / n`
    /// (a latent of group g is in prefixes g, g+1, ...), the L1 sum and, with
    /// AuxK, the AuxK residual `u = r_aux + e` of the whole dictionary; then
    /// the losses (see [`Trainer::auxk_loss`]); and each main entry's
    /// d loss / d pre-activation `w_dec[j] . g` (g: the output gradient of
    /// j's prefix, plus the L1 term), right after the token's gather, while
    /// its decoder rows are still in cache (the same [`dot`] as
    /// [`dots_by_row`]'s, bit for bit).
    fn residuals(
        &self,
        batch: &[f32],
        codes: &Codes,
        l1_coeff: f32,
        prefixes: &Prefixes,
    ) -> Residuals {
        let sae = &self.sae;
        let d = sae.cfg.d_in;
        let (n, use_aux) = (codes.n, codes.use_aux);
        let (main, aux) = (&codes.main, &codes.aux);
        let n_chunks = n.div_ceil(TOK_CHUNK);
        let np = prefixes.len();
        let mut gbuf = vec![0.0f32; (np + use_aux as usize) * n * d];
        let (g_main, g_aux) = gbuf.split_at_mut(np * n * d);
        let mut g_aux_chunks: Vec<&mut [f32]> = if use_aux {
            g_aux.chunks_mut(TOK_CHUNK * d).collect()
        } else {
            (0..n_chunks).map(|_| <&mut [f32]>::default()).collect()
        };
        let w_dec = &sae.w_dec;
        let inv_n = 1.0 / n as f32;
        let scales: Vec<f32> = prefixes
            .weights
            .iter()
            .map(|&w| w as f32 * (2.0 * inv_n))
            .collect();
        let mut gpre_main = vec![0.0f32; main.indices.len()];
        let chunk_bounds: Vec<usize> = (0..=n_chunks)
            .map(|c| main.indptr[(c * TOK_CHUNK).min(n)])
            .collect();
        let gpre_parts = split_by(&mut gpre_main, &chunk_bounds);
        let l1_grad = l1_coeff * (1.0 / n as f32);
        let mut sums: Vec<TokSums> = g_main
            .par_chunks_mut(TOK_CHUNK * np * d)
            .zip(g_aux_chunks.par_iter_mut())
            .zip(gpre_parts)
            .enumerate()
            .map(|(c, ((gm, ga), gp))| {
                let p0 = main.indptr[c * TOK_CHUNK];
                let mut s = TokSums {
                    se: vec![0.0; np],
                    su: 0.0,
                    l1: 0.0,
                    e_sum: if use_aux { vec![0.0; d] } else { Vec::new() },
                };
                let mut acc = vec![0.0f32; d];
                for (r, g_tok) in gm.chunks_mut(np * d).enumerate() {
                    let t = c * TOK_CHUNK + r;
                    let x = &batch[t * d..(t + 1) * d];
                    acc.copy_from_slice(&sae.b_dec);
                    let (idx, val) = main.row(t);
                    let mut p = 0;
                    for (g, e) in g_tok.chunks_mut(d).enumerate() {
                        while p < idx.len() && (idx[p] as usize) < prefixes.ends[g] {
                            if let Some(&ahead) = idx.get(p + PREFETCH_AHEAD) {
                                prefetch(&w_dec[ahead as usize * d..(ahead as usize + 1) * d]);
                            }
                            let (j, z) = (idx[p] as usize, val[p]);
                            axpy(&mut acc, z, &w_dec[j * d..(j + 1) * d]);
                            s.l1 += z as f64;
                            p += 1;
                        }
                        // e_g = x_hat_g - x.
                        e.iter_mut()
                            .zip(&acc)
                            .zip(x)
                            .for_each(|((ev, &a), &xv)| *ev = a - xv);
                        s.se[g] += dot(e, e) as f64;
                    }
                    let full = &g_tok[(np - 1) * d..];
                    if use_aux {
                        s.e_sum
                            .iter_mut()
                            .zip(full.iter())
                            .for_each(|(a, &e)| *a += e as f64);
                        // u = r_aux - r = r_aux + e: e here, r_aux below.
                        ga[r * d..(r + 1) * d].copy_from_slice(full);
                    }
                    // Output gradients, from the last prefix back.
                    for g in (0..np).rev() {
                        let (head, tail) = g_tok.split_at_mut((g + 1) * d);
                        let e = &mut head[g * d..];
                        e.iter_mut().for_each(|v| *v *= scales[g]);
                        if g + 1 < np {
                            e.iter_mut().zip(&tail[..d]).for_each(|(v, &w)| *v += w);
                        }
                    }
                    let out = &mut gp[main.indptr[t] - p0..main.indptr[t + 1] - p0];
                    let mut g = 0;
                    for (o, &j) in out.iter_mut().zip(idx) {
                        let j = j as usize;
                        while j >= prefixes.ends[g] {
                            g += 1;
                        }
                        let grad = &g_tok[g * d..(g + 1) * d];
                        *o = dot(grad, &w_dec[j * d..(j + 1) * d]) + l1_grad;
                    }
                }
                s
            })
            .collect();
        drop(g_aux_chunks);
        if use_aux {
            // r_aux, latent rows gathered tile by tile (bit for bit the
            // per-token axpy loop), then ||u||^2 per chunk as above.
            let packed = PackedRows::new(w_dec, d);
            let term = |p: usize| (aux.indices[p] as usize, aux.values[p]);
            g_aux
                .par_chunks_mut(AUX_GATHER_TOKENS * d)
                .enumerate()
                .for_each(|(c, u)| {
                    let t0 = c * AUX_GATHER_TOKENS;
                    let rows = u.len() / d;
                    packed.gather(u, &aux.indptr[t0..=t0 + rows], &term, true);
                });
            sums.par_iter_mut()
                .zip(g_aux.par_chunks(TOK_CHUNK * d))
                .for_each(|(s, u)| s.su = u.chunks(d).map(|u| dot(u, u) as f64).sum());
        }
        let mut total = TokSums {
            se: vec![0.0; np],
            su: 0.0,
            l1: 0.0,
            e_sum: vec![0.0f64; if use_aux { d } else { 0 }],
        };
        for s in &sums {
            total.se.iter_mut().zip(&s.se).for_each(|(a, b)| *a += b);
            total.su += s.su;
            total.l1 += s.l1;
            total
                .e_sum
                .iter_mut()
                .zip(&s.e_sum)
                .for_each(|(a, b)| *a += b);
        }
        let mse = total.se[np - 1] / n as f64;
        let recon = total
            .se
            .iter()
            .zip(&prefixes.weights)
            .map(|(se, w)| w * se / n as f64)
            .sum();
        let l1 = l1_coeff as f64 * total.l1 / n as f64;
        let aux_loss = if use_aux {
            self.auxk_loss(&mut gbuf[np * n * d..], n, mse, &total)
        } else {
            0.0
        };
        Residuals {
            gbuf,
            gpre_main,
            mse,
            recon,
            l1,
            aux_loss,
        }
    }

    /// Phase 3, AuxK: the normalised loss
    /// `mean_t ||u_t||^2 / (mse - ||mean_t e_t||^2)`, returned, and the AuxK
    /// half of the output-gradient buffer (`u` per token) scaled in place to
    /// its gradient (all zeros when the denominator is not positive).
    fn auxk_loss(&self, g_aux: &mut [f32], n: usize, mse: f64, total: &TokSums) -> f64 {
        let d = self.sae.cfg.d_in;
        let mut aux_loss = 0.0f64;
        let mean_sq = total
            .e_sum
            .iter()
            .map(|v| (v / n as f64).powi(2))
            .sum::<f64>();
        let denom = mse - mean_sq;
        let val = total.su / n as f64 / denom;
        let h_scale = if denom > 0.0 && val.is_finite() {
            aux_loss = val;
            (self.cfg.aux_coeff as f64 * 2.0 / (n as f64 * denom)) as f32
        } else {
            0.0
        };
        g_aux
            .par_chunks_mut(TOK_CHUNK * d)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= h_scale));
        aux_loss
    }

    /// Phase 6a, gradients per token: d loss / d pre-activation of each
    /// AuxK entry (the main entries' came with the residuals), and the
    /// decoder bias's part of b_dec's gradient (`+ g`), summed per chunk of
    /// tokens in a fixed order (the encoder input's part comes with the bias
    /// gradients, see [`encoder_input_grad`]).
    fn pre_activation_grads(
        &self,
        codes: &Codes,
        gbuf: &[f32],
        gpre_main: Vec<f32>,
        prefixes: &Prefixes,
    ) -> PreGrads {
        let sae = &self.sae;
        let d = sae.cfg.d_in;
        let n = codes.n;
        let aux = &codes.aux;
        let mut gpre_aux = vec![0.0f32; aux.indices.len()];
        let n_groups = n.div_ceil(DOT_TOKENS);
        let bounds: Vec<usize> = (0..=n_groups)
            .map(|g| aux.indptr[(g * DOT_TOKENS).min(n)])
            .collect();
        let ga_parts = split_by(&mut gpre_aux, &bounds);
        let np = prefixes.len();
        let w_dec = &sae.w_dec;
        // d loss / d pre-activation = w_dec[j] . (AuxK's output gradient),
        // decoder row by decoder row within each group of tokens.
        ga_parts
            .into_par_iter()
            .enumerate()
            .filter(|(_, ga)| !ga.is_empty())
            .for_each_init(DotsScratch::default, |scratch, (g, ga)| {
                let t0 = g * DOT_TOKENS;
                let t1 = (t0 + DOT_TOKENS).min(n);
                let a0 = aux.indptr[t0];
                let mut toks = Vec::with_capacity(ga.len());
                for t in t0..t1 {
                    toks.extend(std::iter::repeat_n(
                        t as u32,
                        aux.indptr[t + 1] - aux.indptr[t],
                    ));
                }
                let latent = |p: usize| aux.indices[a0 + p] as usize;
                let grad_row = |p: usize| np * n + toks[p] as usize;
                dots_by_row(ga, w_dec, gbuf, d, latent, grad_row, scratch);
            });
        // Decoder bias (in every prefix, so the first prefix's row, which
        // sums them): + g, per chunk of tokens.
        let bdec_parts: Vec<Vec<f32>> = (0..n.div_ceil(TOK_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0.0f32; d];
                for t in c * TOK_CHUNK..((c + 1) * TOK_CHUNK).min(n) {
                    let g = &gbuf[t * np * d..t * np * d + d];
                    acc.iter_mut().zip(g).for_each(|(a, &v)| *a += v);
                }
                acc
            })
            .collect();
        let mut b_dec = vec![0.0f32; d];
        for p in &bdec_parts {
            b_dec.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        PreGrads {
            main: gpre_main,
            aux: gpre_aux,
            b_dec,
        }
    }

    /// Phase 5, orthogonality: the penalty of [`Ortho`] and its decoder
    /// gradient, with its weight lambda (0 without). Uniform draws its pairs
    /// from `rng`; Guided fills the competing-pair figures of `stats`.
    fn ortho_penalty(
        &self,
        main: &SparseCodes,
        rng: &mut SplitMix64,
        stats: &mut StepStats,
    ) -> (Option<PairPenalty>, f32) {
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let w_dec = &self.sae.w_dec;
        match self.cfg.ortho {
            Ortho::None => (None, 0.0),
            Ortho::Uniform { lambda, pairs } => {
                let ps = uniform_pairs(rng, f, pairs);
                let blocks = pairs_to_blocks(f, &ps);
                let pen = partner_penalty(w_dec, d, f, &blocks, ps.len().max(1) as f64, lambda);
                (Some(pen), lambda)
            }
            Ortho::Guided { lambda, tau } => {
                // Token by token (each token's decoder rows read once) when
                // the decoder does not fit in cache, unless its buffers (a
                // k_t x k_t block per token, a row per active entry) would
                // pass 1 GiB; otherwise latent by latent (partner rows read
                // per pair, from cache). The choice depends on shapes only.
                let (pairs, c_sum, pen) = if f * d * 4 > 16 << 20
                    && (token_pairs_len(&main.indptr) + main.indices.len() * d) * 4 <= 1 << 30
                {
                    let tp = batch_token_pairs(f, &main.indptr, &main.indices, tau);
                    let pen = token_penalty(w_dec, d, f, &main.indptr, &main.indices, &tp, lambda);
                    (tp.pairs, tp.c_sum, pen)
                } else {
                    let bp = batch_partners(f, &main.indptr, &main.indices, tau);
                    let pen = partner_penalty(w_dec, d, f, &bp.blocks, bp.c_sum, lambda);
                    (bp.pairs, bp.c_sum, pen)
                };
                if pairs > 0 {
                    stats.competing_pairs = pairs;
                    stats.mean_c = c_sum / pairs as f64;
                    stats.mean_abs_cos_competing = pen.abs_cos_sum / pairs as f64;
                }
                (Some(pen), lambda)
            }
            Ortho::OrtSae { lambda, chunks } => {
                let bf16 = self.cfg.compute == Compute::Bf16;
                let pen = chunk_penalty(w_dec, d, f, chunks, rng, lambda, bf16);
                (Some(pen), lambda)
            }
        }
    }

    /// Phase 6c, every latent's decoder-row and encoder-column gradients
    /// (`gd`, `ge`: `[f, d]`, overwritten): its entries' sums in token order,
    /// then the decoder row's orthogonality gradient.
    fn latent_grads(&self, p: &Prepared, gd: &mut [f32], ge: &mut [f32]) {
        let d = self.sae.cfg.d_in;
        let (starts, entries) = (&p.entry_start, &p.entries);
        gather_rows(gd, d, starts, &p.gbuf, |i| {
            (entries[i].grow as usize, entries[i].coef)
        });
        gather_rows(ge, d, starts, &p.xc, |i| {
            (entries[i].tok as usize, entries[i].gpre)
        });
        if let Some(o) = p.ortho.as_ref() {
            gd.par_chunks_mut(LAT_CHUNK * d)
                .enumerate()
                .for_each(|(c, rows)| {
                    for (r, g) in rows.chunks_mut(d).enumerate() {
                        if let Some(o) = o.grad.row(c * LAT_CHUNK + r) {
                            g.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                        }
                    }
                });
        }
    }

    /// The loss parts and dense gradients at the current parameters, without
    /// changing anything (finite-difference tests, diagnostics).
    pub fn loss_and_grads(&self, batch: &[f32]) -> Result<(StepStats, DenseGrads)> {
        let p = self.prepare(batch)?;
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let mut g = DenseGrads {
            w_enc_t: vec![0.0; d * f],
            w_dec: vec![0.0; d * f],
            b_enc: vec![0.0; f],
            b_dec: p.grad_b_dec.clone(),
        };
        self.latent_grads(&p, &mut g.w_dec, &mut g.w_enc_t);
        g.b_enc.copy_from_slice(&p.grad_b_enc);
        Ok((p.stats, g))
    }

    /// One training step on `batch` ([n, d_in], scaled). On a NaN/inf input or
    /// a non-finite loss it returns an error and changes nothing.
    pub fn step(&mut self, batch: &[f32]) -> Result<StepStats> {
        let p = self.prepare(batch)?;
        if !p.stats.loss.is_finite() {
            bail!(
                "non-finite loss at step {} ({:?}); parameters unchanged",
                self.step,
                p.stats
            );
        }
        let clock = Instant::now();
        let lr = p.stats.lr;
        let t = (self.step + 1) as i32;
        let bc1 = 1.0 - (BETA1 as f64).powi(t);
        let bc2 = 1.0 - (BETA2 as f64).powi(t);
        let step_size = (lr as f64 / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        self.update_latents(&p, step_size, inv_sqrt_bc2);
        if self.cfg.b_dec == DecoderBias::Trained {
            adam(
                &mut self.sae.b_dec,
                &mut self.m_bdec,
                &mut self.v_bdec,
                &p.grad_b_dec,
                step_size,
                inv_sqrt_bc2,
            );
        }
        let mut times = p.times;
        let stats = self.advance(p);
        times.update = clock.elapsed().as_secs_f64();
        self.last_times = times;
        Ok(stats)
    }

    /// Phase 7, update: one fused pass per chunk of latents computes each
    /// latent's gradients, removes the decoder gradient's component along
    /// its row, applies Adam to the decoder row, encoder column and bias,
    /// and renormalises the decoder row.
    fn update_latents(&mut self, p: &Prepared, step_size: f32, inv_sqrt_bc2: f32) {
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let mut grads = std::mem::take(&mut self.grad_rows);
        grads.resize(2 * f * d, 0.0);
        let (gd_all, ge_all) = grads.split_at_mut(f * d);
        self.latent_grads(p, gd_all, ge_all);
        // Fused per-latent pass over the parameters and their Adam moments.
        let sae = &mut self.sae;
        let (w_dec, w_enc, b_enc) = (&mut sae.w_dec, &mut sae.w_enc_t, &mut sae.b_enc);
        let (m_dec, v_dec) = (&mut self.m_dec, &mut self.v_dec);
        let (m_enc, v_enc) = (&mut self.m_enc, &mut self.v_enc);
        let (m_benc, v_benc) = (&mut self.m_benc, &mut self.v_benc);
        {
            let pr = p;
            let cd = LAT_CHUNK * d;
            (
                (w_dec.par_chunks_mut(cd), gd_all.par_chunks_mut(cd)),
                (ge_all.par_chunks(cd), m_dec.par_chunks_mut(cd)),
                v_dec.par_chunks_mut(cd),
                w_enc.par_chunks_mut(cd),
                m_enc.par_chunks_mut(cd),
                v_enc.par_chunks_mut(cd),
                b_enc.par_chunks_mut(LAT_CHUNK),
                m_benc.par_chunks_mut(LAT_CHUNK),
                v_benc.par_chunks_mut(LAT_CHUNK),
            )
                .into_par_iter()
                .enumerate()
                .for_each(
                    |(c, ((wd, gds), (ges, md), vd, we, me, ve, be, mbe, vbe))| {
                        for r in 0..be.len() {
                            let j = c * LAT_CHUNK + r;
                            let gb = pr.grad_b_enc[j];
                            let gd = &mut gds[r * d..(r + 1) * d];
                            let ge = &ges[r * d..(r + 1) * d];
                            let row = &mut wd[r * d..(r + 1) * d];
                            // Remove the component along the (unit) decoder row.
                            let nn = dot(row, row);
                            if nn > 0.0 {
                                let a = dot(gd, row) / nn;
                                axpy(gd, -a, row);
                            }
                            let sl = r * d..(r + 1) * d;
                            adam(
                                row,
                                &mut md[sl.clone()],
                                &mut vd[sl.clone()],
                                gd,
                                step_size,
                                inv_sqrt_bc2,
                            );
                            let nrm = dot(row, row).sqrt();
                            if nrm > 0.0 {
                                let inv = 1.0 / nrm;
                                row.iter_mut().for_each(|v| *v *= inv);
                            }
                            adam(
                                &mut we[sl.clone()],
                                &mut me[sl.clone()],
                                &mut ve[sl],
                                ge,
                                step_size,
                                inv_sqrt_bc2,
                            );
                            adam(
                                &mut be[r..r + 1],
                                &mut mbe[r..r + 1],
                                &mut vbe[r..r + 1],
                                &[gb],
                                step_size,
                                inv_sqrt_bc2,
                            );
                        }
                    },
                );
        }
        self.grad_rows = grads;
    }

    /// After the update: the dead-latent counters, RNG and step move on;
    /// returns the step's figures with the dead fraction after it.
    fn advance(&mut self, p: Prepared) -> StepStats {
        let f = self.sae.cfg.d_sae;
        let n = p.n as u64;
        for (s, &fired) in self.since_fired.iter_mut().zip(&p.fired) {
            *s = if fired { 0 } else { s.saturating_add(n) };
        }
        self.rng = p.rng_after;
        self.step += 1;
        let mut stats = p.stats;
        if let Some(m) = p.batch_min {
            let lr = self.cfg.threshold_lr as f64;
            let t = ((1.0 - lr) * self.sae.threshold[0] as f64 + lr * m as f64) as f32;
            self.sae.threshold.iter_mut().for_each(|v| *v = t);
        }
        if let Some(&t) = self.sae.threshold.first() {
            stats.threshold = t as f64;
        }
        stats.dead_fraction = self
            .since_fired
            .iter()
            .filter(|&&s| s >= self.cfg.dead_after_tokens)
            .count() as f64
            / f as f64;
        stats
    }
}
