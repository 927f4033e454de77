//! The SAE itself: configuration, weights, encode / decode, activation
//! scaling and the geometric-median initialiser.

use std::sync::Mutex;

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::rows::{axpy, dot, dots_by_row, DotsScratch};
use super::topk::{select_topk, select_topk_row, TopKScratch};
use crate::linalg::{self, Trans};
use crate::rng::SplitMix64;

/// Which activation the SAE uses (and, for the batch kinds, how it trains).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SaeKind {
    /// Keep the k largest pre-activations per token (ReLU'd): SAELens "topk".
    TopK { k: usize },
    /// `z = relu(pre)` with an L1 penalty `l1_coeff * sum_i z_i` per token
    /// (decoder rows are kept at unit norm, so this equals the SAELens
    /// "standard" penalty `sum_i z_i * ||d_i||`): SAELens "standard".
    ReluL1 { l1_coeff: f32 },
    /// BatchTopK (Bussmann et al. 2024): training keeps the `k * n` largest
    /// positive pre-activations of the whole batch of n tokens (so L0 is k on
    /// average, not per token); inference keeps `pre > threshold` with the
    /// threshold learned during training ([`Sae::threshold`]), as SAELens's
    /// JumpReLU form of it does.
    BatchTopK { k: usize },
    /// Matryoshka BatchTopK (Bussmann et al. / Nabeshima 2025): BatchTopK
    /// whose loss sums the reconstruction errors of the nested prefixes
    /// `groups[0]`, `groups[0] + groups[1]`, ... of the latents (the sizes
    /// sum to d_sae), so early latents must reconstruct on their own.
    Matryoshka { k: usize, groups: Vec<usize> },
    /// JumpReLU (`z = pre` where `pre > threshold_i`, else 0): inference only,
    /// for SAEs trained elsewhere (Gemma Scope, SAELens).
    JumpRelu,
}

impl SaeKind {
    /// The tag of this kind, without its parameter.
    pub fn architecture(&self) -> Architecture {
        match self {
            SaeKind::TopK { .. } => Architecture::TopK,
            SaeKind::ReluL1 { .. } => Architecture::ReluL1,
            SaeKind::BatchTopK { .. } => Architecture::BatchTopK,
            SaeKind::Matryoshka { .. } => Architecture::Matryoshka,
            SaeKind::JumpRelu => Architecture::JumpRelu,
        }
    }

    /// The mean number of latents kept per token in training, for the kinds
    /// that fix it (TopK per token, the batch kinds on average).
    pub fn k(&self) -> Option<usize> {
        match self {
            SaeKind::TopK { k } | SaeKind::BatchTopK { k } | SaeKind::Matryoshka { k, .. } => {
                Some(*k)
            }
            SaeKind::ReluL1 { .. } | SaeKind::JumpRelu => None,
        }
    }

    /// The batch kinds' k (BatchTopK, Matryoshka): they select over the
    /// whole batch in training.
    pub fn batch_k(&self) -> Option<usize> {
        match self {
            SaeKind::BatchTopK { k } | SaeKind::Matryoshka { k, .. } => Some(*k),
            _ => None,
        }
    }

    /// Whether inference thresholds each latent ([`Sae::threshold`]).
    pub fn has_threshold(&self) -> bool {
        matches!(
            self,
            SaeKind::BatchTopK { .. } | SaeKind::Matryoshka { .. } | SaeKind::JumpRelu
        )
    }

    /// Latent ranges of the nested prefixes whose losses are summed: the
    /// Matryoshka groups' ends, or the whole dictionary for other kinds.
    pub fn prefix_ends(&self, d_sae: usize) -> Vec<usize> {
        match self {
            SaeKind::Matryoshka { groups, .. } => groups
                .iter()
                .scan(0, |end, g| {
                    *end += g;
                    Some(*end)
                })
                .collect(),
            _ => vec![d_sae],
        }
    }
}

/// The SAE kind as a plain tag, one name for configuration, engine, SAELens
/// IO and reports. Serde names (and [`Architecture::name`]) are `topk`,
/// `relu_l1`, `batchtopk`, `matryoshka` and `jumprelu`;
/// [`Architecture::saelens`] gives SAELens's `architecture` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Architecture {
    /// [`SaeKind::TopK`].
    #[serde(rename = "topk")]
    TopK,
    /// [`SaeKind::ReluL1`].
    #[serde(rename = "relu_l1")]
    ReluL1,
    /// [`SaeKind::BatchTopK`].
    #[serde(rename = "batchtopk")]
    BatchTopK,
    /// [`SaeKind::Matryoshka`].
    #[serde(rename = "matryoshka")]
    Matryoshka,
    /// [`SaeKind::JumpRelu`].
    #[serde(rename = "jumprelu")]
    JumpRelu,
}

impl Architecture {
    /// Every tag: TopK, the batch kinds, ReLU-L1, then JumpReLU (read only).
    pub const ALL: [Architecture; 5] = [
        Architecture::TopK,
        Architecture::BatchTopK,
        Architecture::Matryoshka,
        Architecture::ReluL1,
        Architecture::JumpRelu,
    ];

    /// The name used in configuration and reports (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::TopK => "topk",
            Architecture::ReluL1 => "relu_l1",
            Architecture::BatchTopK => "batchtopk",
            Architecture::Matryoshka => "matryoshka",
            Architecture::JumpRelu => "jumprelu",
        }
    }

    /// The tag named `name`, if any.
    pub fn from_name(name: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The kind in words, for reports: "TopK", "ReLU+L1", "BatchTopK",
    /// "Matryoshka BatchTopK", "JumpReLU".
    pub fn title(self) -> &'static str {
        match self {
            Architecture::TopK => "TopK",
            Architecture::ReluL1 => "ReLU+L1",
            Architecture::BatchTopK => "BatchTopK",
            Architecture::Matryoshka => "Matryoshka BatchTopK",
            Architecture::JumpRelu => "JumpReLU",
        }
    }

    /// Whether coact can train this kind (JumpReLU is read, not trained).
    pub fn trainable(self) -> bool {
        self != Architecture::JumpRelu
    }

    /// SAELens's `architecture` field in cfg.json. The batch kinds infer
    /// with a threshold, so they are saved as SAELens saves its own trained
    /// BatchTopK and Matryoshka SAEs for inference: as `jumprelu`.
    pub fn saelens(self) -> &'static str {
        match self {
            Architecture::TopK => "topk",
            Architecture::ReluL1 => "standard",
            Architecture::BatchTopK | Architecture::Matryoshka | Architecture::JumpRelu => {
                "jumprelu"
            }
        }
    }

    /// The inference kind of SAELens's `architecture` string, if coact reads it.
    pub fn from_saelens(arch: &str) -> Option<Architecture> {
        match arch {
            "topk" => Some(Architecture::TopK),
            "standard" => Some(Architecture::ReluL1),
            "jumprelu" => Some(Architecture::JumpRelu),
            _ => None,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shape and kind of an SAE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    pub d_in: usize,
    /// Number of latents F.
    pub d_sae: usize,
    pub kind: SaeKind,
}

impl SaeConfig {
    /// Errors name the offending field.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.d_in > 0, "d_in must be > 0");
        ensure!(self.d_sae > 0, "d_sae must be > 0");
        ensure!(self.d_sae < u32::MAX as usize, "d_sae too large");
        let check_k = |k: usize| -> Result<()> {
            ensure!(k > 0, "k must be > 0 (got 0)");
            ensure!(
                k < self.d_sae,
                "k must be < d_sae (got k = {k}, d_sae = {})",
                self.d_sae
            );
            Ok(())
        };
        match &self.kind {
            SaeKind::TopK { k } | SaeKind::BatchTopK { k } => check_k(*k)?,
            SaeKind::Matryoshka { k, groups } => {
                check_k(*k)?;
                ensure!(
                    !groups.is_empty() && groups.iter().all(|&g| g > 0),
                    "matryoshka groups must be a non-empty list of positive sizes (got {groups:?})"
                );
                let sum: usize = groups.iter().sum();
                ensure!(
                    sum == self.d_sae,
                    "matryoshka groups {groups:?} sum to {sum}, expected d_sae = {}",
                    self.d_sae
                );
            }
            SaeKind::ReluL1 { l1_coeff } => {
                ensure!(
                    l1_coeff.is_finite() && *l1_coeff >= 0.0,
                    "l1_coeff must be finite and >= 0 (got {l1_coeff})"
                );
            }
            SaeKind::JumpRelu => {}
        }
        Ok(())
    }
}

/// Sparse latent codes, CSR by token: token t's active latents are
/// `indices[indptr[t]..indptr[t + 1]]` (ascending) with `values` alongside.
/// Only strictly positive activations are stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseCodes {
    pub d_sae: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseCodes {
    pub fn n_tokens(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Token t's (indices, values).
    pub fn row(&self, t: usize) -> (&[u32], &[f32]) {
        let r = self.indptr[t]..self.indptr[t + 1];
        (&self.indices[r.clone()], &self.values[r])
    }

    /// Mean number of active latents per token.
    pub fn l0(&self) -> f64 {
        self.indices.len() as f64 / self.n_tokens().max(1) as f64
    }
}

/// An SAE's weights, f32.
///
/// Orientation: `w_dec` [d_sae, d_in] (row i = decoder direction d_i, as in
/// SAELens), `b_enc` [d_sae], `b_dec` [d_in]. The encoder is stored
/// transposed, `w_enc_t` [d_sae, d_in] (row j = column j of SAELens' W_enc
/// [d_in, d_sae]) because every gradient touches whole encoder columns; use
/// [`Sae::w_enc`] / [`Sae::from_saelens`] for the SAELens orientation.
///
/// Forward: `pre = (x - b_dec) W_enc + b_enc`; TopK keeps the k largest of
/// `relu(pre)`, ReLU-L1 keeps `relu(pre)`, the threshold kinds keep
/// `pre > max(threshold_i, 0)`; `x_hat = z W_dec + b_dec`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sae {
    pub cfg: SaeConfig,
    pub w_enc_t: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// Inference threshold per latent, `[d_sae]`, for the kinds that have one
    /// ([`SaeKind::has_threshold`]; a BatchTopK SAE's is one learned value
    /// repeated); empty otherwise.
    pub threshold: Vec<f32>,
}

/// Rows of a token chunk handled by one gemm call in the encoder (measured:
/// 32-row chunks at d_sae 16384, whose pre-activations stay in L2, made the
/// f32 encoder 2.6x slower and the bf16 one no faster).
pub(crate) const ENC_CHUNK: usize = 128;

#[derive(Default)]
pub(crate) struct EncScratch {
    pre: Vec<f32>,
    topk: TopKScratch,
    sel: Vec<(u32, f32)>,
    dots: DotsScratch,
}

/// Reusable per-task buffers for the encoder (pre-activations of one chunk).
#[derive(Default)]
pub(crate) struct ScratchPool(Mutex<Vec<EncScratch>>);

impl ScratchPool {
    fn take(&self) -> EncScratch {
        self.0.lock().unwrap().pop().unwrap_or_default()
    }
    fn give(&self, s: EncScratch) {
        self.0.lock().unwrap().push(s);
    }
}

/// How the encoder picks active latents.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Select {
    /// Top-k, then only the positive ones are returned (training, inference).
    TopKPositive(usize),
    /// Exactly k per token, including non-positive ones (values ReLU'd).
    TopKExact(usize),
    /// All positive pre-activations.
    Relu,
    /// Pre-activations above the latent's threshold (and above 0).
    Threshold,
}

/// Which bf16-chosen values [`encode_centered`] recomputes in f32 (with f32
/// weights every value is exact already).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refine {
    All,
    AuxOnly,
}

pub(crate) struct Encoded {
    pub main: SparseCodes,
    /// Top-k_aux among the dead latents (positive values only), if asked.
    pub aux: Option<SparseCodes>,
}

fn concat(d_sae: usize, parts: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)>) -> SparseCodes {
    let total: usize = parts.iter().map(|p| p.1.len()).sum();
    let mut out = SparseCodes {
        d_sae,
        indptr: vec![0],
        indices: Vec::with_capacity(total),
        values: Vec::with_capacity(total),
    };
    for (counts, idx, val) in parts {
        for c in counts {
            let last = *out.indptr.last().unwrap();
            out.indptr.push(last + c);
        }
        out.indices.extend(idx);
        out.values.extend(val);
    }
    out
}

impl Sae {
    /// The recipe's initial SAE: decoder rows are random unit vectors (seeded),
    /// `W_enc = W_dec^T`, zero biases.
    pub fn init(cfg: SaeConfig, seed: u64) -> Result<Sae> {
        cfg.validate()?;
        let (d, f) = (cfg.d_in, cfg.d_sae);
        let mut rng = SplitMix64::new(seed ^ 0x5AE0_1417_D3C0_DE00);
        let mut w_dec: Vec<f32> = (0..d * f).map(|_| rng.normal() as f32).collect();
        normalize_rows(&mut w_dec, d);
        Ok(Sae {
            w_enc_t: w_dec.clone(),
            w_dec,
            b_enc: vec![0.0; f],
            b_dec: vec![0.0; d],
            threshold: if cfg.kind.has_threshold() {
                vec![0.0; f]
            } else {
                Vec::new()
            },
            cfg,
        })
    }

    /// Builds an SAE from SAELens-oriented weights: `w_enc` [d_in, d_sae],
    /// `w_dec` [d_sae, d_in]; `threshold` `[d_sae]` for the threshold kinds,
    /// empty for the others.
    pub fn from_saelens(
        cfg: SaeConfig,
        w_enc: &[f32],
        w_dec: Vec<f32>,
        b_enc: Vec<f32>,
        b_dec: Vec<f32>,
        threshold: Vec<f32>,
    ) -> Result<Sae> {
        cfg.validate()?;
        let (d, f) = (cfg.d_in, cfg.d_sae);
        ensure!(w_enc.len() == d * f, "W_enc must have d_in * d_sae values");
        ensure!(w_dec.len() == d * f, "W_dec must have d_sae * d_in values");
        ensure!(b_enc.len() == f, "b_enc must have d_sae values");
        ensure!(b_dec.len() == d, "b_dec must have d_in values");
        let want = if cfg.kind.has_threshold() { f } else { 0 };
        ensure!(
            threshold.len() == want,
            "threshold must have {want} values for a {} SAE (got {})",
            cfg.kind.architecture(),
            threshold.len()
        );
        let mut w_enc_t = vec![0.0; d * f];
        for r in 0..d {
            for j in 0..f {
                w_enc_t[j * d + r] = w_enc[r * f + j];
            }
        }
        Ok(Sae {
            cfg,
            w_enc_t,
            w_dec,
            b_enc,
            b_dec,
            threshold,
        })
    }

    /// W_enc in the SAELens orientation [d_in, d_sae].
    pub fn w_enc(&self) -> Vec<f32> {
        let (d, f) = (self.cfg.d_in, self.cfg.d_sae);
        let mut out = vec![0.0; d * f];
        for j in 0..f {
            for r in 0..d {
                out[r * f + j] = self.w_enc_t[j * d + r];
            }
        }
        out
    }

    /// Rescales every decoder row to unit norm (rows of norm 0 are left alone).
    pub fn normalize_decoder_rows(&mut self) {
        normalize_rows(&mut self.w_dec, self.cfg.d_in);
    }

    fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        ensure!(
            x.len() == n * self.cfg.d_in,
            "x has {} values, expected n * d_in = {}",
            x.len(),
            n * self.cfg.d_in
        );
        Ok(())
    }

    fn center(&self, x: &[f32]) -> Vec<f32> {
        let d = self.cfg.d_in;
        let mut xc = x.to_vec();
        xc.par_chunks_mut(d * 64).for_each(|c| {
            for row in c.chunks_mut(d) {
                for (v, b) in row.iter_mut().zip(&self.b_dec) {
                    *v -= b;
                }
            }
        });
        xc
    }

    /// Dense pre-activations `(x - b_dec) W_enc + b_enc`, [n, d_sae] (the
    /// encoder matmul alone: diagnostics and benchmarks).
    pub fn pre_activations(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        let (d, f) = (self.cfg.d_in, self.cfg.d_sae);
        let xc = self.center(x);
        let mut out = vec![0.0f32; n * f];
        out.par_chunks_mut(ENC_CHUNK * f)
            .zip(xc.par_chunks(ENC_CHUNK * d))
            .for_each(|(pre, xs)| encoder_gemm(self, xs, pre, EncoderWeights::F32));
        Ok(out)
    }

    /// Active latents of n tokens (x: [n, d_in]); only positive values kept.
    pub fn encode(&self, x: &[f32], n: usize) -> Result<SparseCodes> {
        self.check_input(x, n)?;
        let select = match self.cfg.kind {
            SaeKind::TopK { k } => Select::TopKPositive(k),
            SaeKind::ReluL1 { .. } => Select::Relu,
            _ => Select::Threshold,
        };
        let xc = self.center(x);
        Ok(encode_centered(
            self,
            &xc,
            n,
            select,
            None,
            &ScratchPool::default(),
            EncoderWeights::F32,
            Refine::All,
        )
        .main)
    }

    /// TopK only: exactly k (index, value) per token, indices ascending within
    /// a token; values are ReLU'd, so a kept latent may have value 0.
    pub fn encode_topk(&self, x: &[f32], n: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        self.check_input(x, n)?;
        let SaeKind::TopK { k } = self.cfg.kind else {
            bail!("encode_topk needs a TopK SAE; use encode() for ReLU-L1");
        };
        let xc = self.center(x);
        let e = encode_centered(
            self,
            &xc,
            n,
            Select::TopKExact(k),
            None,
            &ScratchPool::default(),
            EncoderWeights::F32,
            Refine::All,
        );
        Ok((e.main.indices, e.main.values))
    }

    /// `x_hat = z W_dec + b_dec` for sparse codes.
    pub fn decode(&self, codes: &SparseCodes) -> Result<Vec<f32>> {
        ensure!(
            codes.d_sae == self.cfg.d_sae,
            "codes.d_sae differs from the SAE's"
        );
        let d = self.cfg.d_in;
        let n = codes.n_tokens();
        ensure!(
            codes.indices.iter().all(|&j| (j as usize) < self.cfg.d_sae),
            "latent index out of range"
        );
        let mut out = vec![0.0f32; n * d];
        out.par_chunks_mut(d).enumerate().for_each(|(t, row)| {
            row.copy_from_slice(&self.b_dec);
            let (idx, val) = codes.row(t);
            for (&j, &z) in idx.iter().zip(val) {
                axpy(row, z, &self.w_dec[j as usize * d..(j as usize + 1) * d]);
            }
        });
        Ok(out)
    }

    /// Encode then decode; x: [n, d_in] with n = x.len() / d_in.
    pub fn reconstruct(&self, x: &[f32]) -> Result<Vec<f32>> {
        let d = self.cfg.d_in;
        ensure!(
            x.len().is_multiple_of(d),
            "x length must be a multiple of d_in"
        );
        let codes = self.encode(x, x.len() / d)?;
        self.decode(&codes)
    }
}

pub(crate) fn normalize_rows(w: &mut [f32], d: usize) {
    w.par_chunks_mut(d * 64).for_each(|c| {
        for row in c.chunks_mut(d) {
            let norm = dot(row, row).sqrt();
            if norm > 0.0 {
                let inv = 1.0 / norm;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    });
}

/// The encoder product's precision. `Bf16` holds a bf16 copy of W_enc^T
/// (`[d_sae, d_in]`, made once per step); the chunk's rows are rounded to
/// bf16 as they are read.
#[derive(Clone, Copy)]
pub(crate) enum EncoderWeights<'a> {
    F32,
    Bf16(&'a [u16]),
}

impl<'a> EncoderWeights<'a> {
    /// Bf16 when the step holds a bf16 copy of W_enc^T, else F32.
    pub(crate) fn of(w_bf16: Option<&'a [u16]>) -> Self {
        w_bf16.map_or(EncoderWeights::F32, EncoderWeights::Bf16)
    }
}

/// `pre[m, f] = b_enc + xs[m, d] . W_enc[d, f]` for one chunk of centred
/// rows, single-threaded (W_enc is w_enc_t `[f, d]` used transposed).
pub(crate) fn encoder_gemm(sae: &Sae, xs: &[f32], pre: &mut [f32], w: EncoderWeights<'_>) {
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let m = xs.len() / d;
    assert_eq!(pre.len(), m * f);
    for r in 0..m {
        pre[r * f..(r + 1) * f].copy_from_slice(&sae.b_enc);
    }
    match w {
        EncoderWeights::F32 => linalg::sgemm(
            Trans::N,
            Trans::T,
            m,
            f,
            d,
            1.0,
            xs,
            d,
            &sae.w_enc_t,
            d,
            1.0,
            pre,
            f,
        ),
        EncoderWeights::Bf16(wb) => {
            let xb = linalg::to_bf16_vec(xs);
            linalg::gemm_bf16(Trans::N, Trans::T, m, f, d, 1.0, &xb, d, wb, d, 1.0, pre, f)
        }
    }
}

/// The encoder over centred inputs `xc = x - b_dec` ([n, d_in]), fused with
/// the selection so that only one chunk of pre-activations exists at a time.
/// `dead`: the dead latents and k_aux, for AuxK's top-k among dead latents.
/// Deterministic: chunks are fixed-size and each is computed by one
/// single-threaded gemm call.
///
/// With bf16 weights the bf16 pre-activations only choose the active latents:
/// each chosen latent's value is then recomputed exactly in f32 (k dot
/// products per token, ~1% of the product at k 32, F 4096), and a latent
/// whose exact value is not positive is dropped, so values and gradients are
/// f32 arithmetic on the chosen support. `Refine::AuxOnly` leaves the main
/// candidates' bf16-product values for the caller to cut first (the batch
/// kinds keep about a quarter of their candidates, see [`refine_codes`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_centered(
    sae: &Sae,
    xc: &[f32],
    n: usize,
    select: Select,
    dead: Option<(&[u32], usize)>,
    pool: &ScratchPool,
    weights: EncoderWeights<'_>,
    refine: Refine,
) -> Encoded {
    let exact = matches!(weights, EncoderWeights::Bf16(_));
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    type Part = (Vec<usize>, Vec<u32>, Vec<f32>);
    let parts: Vec<(Part, Option<Part>)> = xc[..n * d]
        .par_chunks(ENC_CHUNK * d)
        .map(|xs| {
            let m = xs.len() / d;
            let mut s = pool.take();
            s.pre.resize(ENC_CHUNK * f, 0.0);
            let pre = &mut s.pre[..m * f];
            encoder_gemm(sae, xs, pre, weights);
            let mut main: Part = (Vec::with_capacity(m), Vec::new(), Vec::new());
            let mut aux: Option<Part> =
                dead.map(|_| (Vec::with_capacity(m), Vec::new(), Vec::new()));
            let EncScratch {
                pre,
                topk,
                sel,
                dots,
            } = &mut s;
            for r in 0..m {
                let row = &pre[r * f..(r + 1) * f];
                sel.clear();
                match select {
                    Select::TopKPositive(k) => select_topk_row(row, k, 0.0, topk, sel),
                    Select::TopKExact(k) => select_topk_row(row, k, f32::NEG_INFINITY, topk, sel),
                    Select::Relu => sel.extend(
                        row.iter()
                            .enumerate()
                            .filter(|(_, &v)| v > 0.0)
                            .map(|(j, &v)| (j as u32, v)),
                    ),
                    Select::Threshold => sel.extend(
                        row.iter()
                            .zip(&sae.threshold)
                            .enumerate()
                            .filter(|(_, (&v, &t))| v > t && v > 0.0)
                            .map(|(j, (&v, _))| (j as u32, v)),
                    ),
                }
                main.0.push(sel.len());
                main.1.extend(sel.iter().map(|e| e.0));
                main.2.extend(sel.iter().map(|e| e.1.max(0.0)));
                if let (Some((dead_ids, k_aux)), Some(a)) = (dead, aux.as_mut()) {
                    sel.clear();
                    select_topk(
                        dead_ids.iter().map(|&j| (j, row[j as usize])),
                        k_aux,
                        0.0,
                        topk,
                        sel,
                    );
                    a.0.push(sel.len());
                    a.1.extend(sel.iter().map(|e| e.0));
                    a.2.extend(sel.iter().map(|e| e.1));
                }
            }
            if exact {
                let main_positive = !matches!(select, Select::TopKExact(_));
                let main = (refine == Refine::All).then_some(&mut main);
                refine_exact(sae, xs, main, main_positive, aux.as_mut(), dots);
            }
            pool.give(s);
            (main, aux)
        })
        .collect();
    let mut mains = Vec::with_capacity(parts.len());
    let mut auxs = Vec::with_capacity(parts.len());
    for (m, a) in parts {
        mains.push(m);
        if let Some(a) = a {
            auxs.push(a);
        }
    }
    Encoded {
        main: concat(f, mains),
        aux: dead.map(|_| concat(f, auxs)),
    }
}

/// Replaces each selected latent's value (main, and AuxK's when given) by
/// its exact f32 pre-activation for the chunk's centred rows `xs`, dropping
/// those not > 0 (from main only with `main_positive`); main's values are
/// then clamped at 0 as in the f32 path. The dot products go decoder row by
/// row over the chunk ([`dots_by_row`]).
fn refine_exact(
    sae: &Sae,
    xs: &[f32],
    main: Option<&mut (Vec<usize>, Vec<u32>, Vec<f32>)>,
    main_positive: bool,
    aux: Option<&mut (Vec<usize>, Vec<u32>, Vec<f32>)>,
    scratch: &mut DotsScratch,
) {
    let d = sae.cfg.d_in;
    let (mut no_main, mut no_aux) = Default::default();
    let main = main.unwrap_or(&mut no_main);
    let aux = aux.unwrap_or(&mut no_aux);
    let nm = main.1.len();
    // The chunk row of each position: main's tokens, then AuxK's.
    let rows_of = |lens: &[usize]| -> Vec<u32> {
        let tok = |(t, &len): (usize, &usize)| std::iter::repeat_n(t as u32, len);
        lens.iter().enumerate().flat_map(tok).collect()
    };
    let mut toks = rows_of(&main.0);
    toks.extend(rows_of(&aux.0));
    let mut vals = vec![0.0f32; nm + aux.1.len()];
    let row_of = |p: usize| (if p < nm { main.1[p] } else { aux.1[p - nm] }) as usize;
    dots_by_row(
        &mut vals,
        &sae.w_enc_t,
        xs,
        d,
        row_of,
        |p| toks[p] as usize,
        scratch,
    );
    let (main_vals, aux_vals) = vals.split_at(nm);
    let keep = |part: &mut (Vec<usize>, Vec<u32>, Vec<f32>),
                exact: &[f32],
                positive: bool,
                clamp: bool| {
        let (mut w, mut p) = (0, 0);
        for len in part.0.iter_mut() {
            let mut kept = 0;
            for _ in 0..*len {
                let j = part.1[p];
                let v = sae.b_enc[j as usize] + exact[p];
                p += 1;
                if !positive || v > 0.0 {
                    part.1[w] = j;
                    part.2[w] = if clamp { v.max(0.0) } else { v };
                    w += 1;
                    kept += 1;
                }
            }
            *len = kept;
        }
        part.1.truncate(w);
        part.2.truncate(w);
    };
    keep(main, main_vals, main_positive, true);
    keep(aux, aux_vals, true, false);
}

/// Replaces every value of `codes` (tokens of the centred rows `xc`) by its
/// exact f32 pre-activation and drops those not > 0, chunk by chunk as the
/// encoder does: the batch kinds' bf16 path, after the batch cut.
pub(crate) fn refine_codes(
    sae: &Sae,
    xc: &[f32],
    codes: &SparseCodes,
    pool: &ScratchPool,
) -> SparseCodes {
    let d = sae.cfg.d_in;
    let n = codes.n_tokens();
    let parts: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = (0..n.div_ceil(ENC_CHUNK))
        .into_par_iter()
        .map(|c| {
            let (t0, t1) = (c * ENC_CHUNK, ((c + 1) * ENC_CHUNK).min(n));
            let (p0, p1) = (codes.indptr[t0], codes.indptr[t1]);
            let lens = (t0..t1)
                .map(|t| codes.indptr[t + 1] - codes.indptr[t])
                .collect();
            let mut part = (
                lens,
                codes.indices[p0..p1].to_vec(),
                codes.values[p0..p1].to_vec(),
            );
            let mut s = pool.take();
            refine_exact(
                sae,
                &xc[t0 * d..t1 * d],
                Some(&mut part),
                true,
                None,
                &mut s.dots,
            );
            pool.give(s);
            part
        })
        .collect();
    concat(codes.d_sae, parts)
}

/// Activation scale used by coact: `s = 1 / sqrt(E ||x||^2)` over the sample
/// (x: [n, d_in]), so that `s x` has unit mean squared norm (the
/// dictionary_learning convention; SAELens' `sqrt(d_in) / E||x||` differs by
/// about a factor sqrt(d_in)). Train on `s x`, then [`fold_scaling`].
pub fn norm_scaling_factor(sample: &[f32], d_in: usize) -> Result<f32> {
    ensure!(
        d_in > 0 && !sample.is_empty() && sample.len().is_multiple_of(d_in),
        "sample must be [n, d_in] with n > 0"
    );
    let n = sample.len() / d_in;
    let sq: f64 = sample
        .par_chunks(d_in * 256)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    let ms = sq / n as f64;
    ensure!(
        ms.is_finite() && ms > 0.0,
        "sample has zero or non-finite mean squared norm"
    );
    Ok((1.0 / ms.sqrt()) as f32)
}

/// Rewrites an SAE trained on scaled inputs `x_s = s x` so that it applies to
/// raw `x`, keeping unit-norm decoder rows. Since
/// `(s x - b_dec) W_enc + b_enc = s ((x - b_dec / s) W_enc + b_enc / s)`,
/// dividing both biases by s scales every pre-activation by 1 / s (the top-k
/// choice is unchanged for s > 0) and `z' W_dec + b_dec / s = x_hat_s / s`.
/// W_enc and W_dec stay; latents come out scaled by 1 / s.
pub fn fold_scaling(sae: &mut Sae, factor: f32) -> Result<()> {
    ensure!(
        factor.is_finite() && factor > 0.0,
        "scaling factor must be finite and > 0"
    );
    sae.b_enc.iter_mut().for_each(|v| *v /= factor);
    sae.b_dec.iter_mut().for_each(|v| *v /= factor);
    // Activations scale by 1 / factor, and so must the cut they are held to.
    sae.threshold.iter_mut().for_each(|v| *v /= factor);
    Ok(())
}

/// Geometric median of the rows of `points` ([n, d]) by Weiszfeld iterations
/// from the mean, in f64 (at most `max_iter` steps, stop when the estimate
/// moves less than `tol`). Points at the current estimate get a capped weight.
pub fn geometric_median(points: &[f32], d: usize, max_iter: usize, tol: f64) -> Result<Vec<f32>> {
    ensure!(
        d > 0 && !points.is_empty() && points.len().is_multiple_of(d),
        "points must be [n, d] with n > 0"
    );
    let n = points.len() / d;
    let mut guess = vec![0.0f64; d];
    for row in points.chunks(d) {
        for (g, &v) in guess.iter_mut().zip(row) {
            *g += v as f64;
        }
    }
    guess.iter_mut().for_each(|g| *g /= n as f64);
    const CH: usize = 256;
    for _ in 0..max_iter {
        let g = &guess;
        // (sum w_i x_i, sum w_i) per fixed chunk, summed in order: deterministic.
        let parts: Vec<(Vec<f64>, f64)> = points
            .par_chunks(CH * d)
            .map(|c| {
                let mut acc = vec![0.0f64; d];
                let mut wsum = 0.0f64;
                for row in c.chunks(d) {
                    let dist = row
                        .iter()
                        .zip(g)
                        .map(|(&v, &m)| (v as f64 - m) * (v as f64 - m))
                        .sum::<f64>()
                        .sqrt();
                    let w = 1.0 / dist.max(1e-12);
                    wsum += w;
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += w * v as f64;
                    }
                }
                (acc, wsum)
            })
            .collect();
        let mut num = vec![0.0f64; d];
        let mut den = 0.0;
        for (a, w) in parts {
            den += w;
            num.iter_mut().zip(&a).for_each(|(x, y)| *x += y);
        }
        let next: Vec<f64> = num.iter().map(|v| v / den).collect();
        let moved = next
            .iter()
            .zip(&guess)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        guess = next;
        if moved < tol {
            break;
        }
    }
    Ok(guess.into_iter().map(|v| v as f32).collect())
}
