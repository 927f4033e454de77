//! The Gemma forward: embedding, blocks, final norm, unembedding, with an
//! early exit and a residual splice.

use anyhow::{bail, ensure, Context, Result};
use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, DType, Device, Module, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use std::sync::OnceLock;

use super::attention::{self, Spec};
use super::config::{Arch, GemmaConfig};
use super::fused;
use super::linear::linear;
use super::ops::{rms_norm, rope_tables, softcap, Geglu};
use crate::linalg::{Compute, Trans};

/// Which implementation of the forward's non-linear-layer pieces runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kernels {
    /// coact's fused CPU kernels (attention, norms with their residual adds,
    /// GeGLU, softcap) on a CPU device; candle ops on any other.
    #[default]
    Fused,
    /// candle ops composed one by one (with [`super::ops`]' softmax and GeGLU
    /// kernels on CPU), on every device: the reference the fused kernels are
    /// checked and timed against.
    Reference,
}

/// A residual splice: after block `.0`, the residual `[B, T, d_model]` is
/// replaced by `.1(residual)` (same shape). Any function of the residual will do.
pub type Splice<'a> = (usize, &'a dyn Fn(&Tensor) -> Result<Tensor>);

/// Vocabulary rows of the unembedding per product in
/// [`Gemma::unembed_into`]: 16384 x 640 is 21 MB in bf16 (42 in f32), and
/// the output of a 128-row chunk 8 MB, under the 32 MiB mmap threshold
/// `coact` sets, so the slices' buffers are reused rather than faulted in.
const VOCAB_SLICE: usize = 16384;

/// The unembedding weight `[vocab, d_model]`, row v token v's direction, as
/// the logits product reads it: f32, or bf16 bits with the hidden rows
/// rounded to bf16 too ([`crate::linalg::to_bf16`]).
#[derive(Debug, Clone, Copy)]
pub enum UnembedWeight<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// A linear map without bias.
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    /// f32 or bf16 weight stored `[in, out]` contiguous: `y = x w`.
    Dense(Tensor),
    /// f32 or bf16 weight stored `[out, in]` (the tied unembedding reuses
    /// the embedding matrix this way without a copy): `y = x w^T`.
    DenseT(Tensor),
    /// candle's quantized matmul on a GGUF tensor.
    Quant(QMatMul),
}

impl Proj {
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Proj::Dense(w) => linear(x, w, Trans::N),
            Proj::DenseT(w) => linear(x, w, Trans::T),
            Proj::Quant(q) => q.forward(x),
        }
    }

    /// The same map with its dense weight in bf16 (quantized maps unchanged).
    pub(crate) fn to_bf16(&self) -> candle_core::Result<Proj> {
        Ok(match self {
            Proj::Dense(w) => Proj::Dense(w.to_dtype(DType::BF16)?),
            Proj::DenseT(w) => Proj::DenseT(w.to_dtype(DType::BF16)?),
            Proj::Quant(q) => Proj::Quant(q.clone()),
        })
    }
}

/// Several projections of the same input (q, k, v or gate, up): one fused
/// matmul whose output is split by column, or separate (quantized) matmuls.
#[derive(Debug, Clone)]
pub(crate) enum MultiProj {
    Fused(Proj, Vec<usize>),
    Separate(Vec<Proj>),
}

impl MultiProj {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            MultiProj::Fused(p, widths) => {
                let y = p.forward(x)?;
                let mut start = 0;
                let mut out = Vec::with_capacity(widths.len());
                for w in widths {
                    out.push(y.narrow(1, start, *w)?);
                    start += w;
                }
                Ok(out)
            }
            MultiProj::Separate(ps) => ps.iter().map(|p| p.forward(x)).collect(),
        }
    }

    /// The fused output itself (for the gate/up pair, which the GeGLU kernel
    /// reads in one piece).
    fn forward_fused(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self {
            MultiProj::Fused(p, _) => Ok(Some(p.forward(x)?)),
            MultiProj::Separate(_) => Ok(None),
        }
    }
}

/// One transformer block. Norm tensors hold the effective multiplier `1 + w`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) attn_norm: Tensor,
    pub(crate) post_attn_norm: Tensor,
    pub(crate) mlp_norm: Tensor,
    pub(crate) post_mlp_norm: Tensor,
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    /// q, k, v.
    pub(crate) qkv: MultiProj,
    pub(crate) o: Proj,
    /// gate, up.
    pub(crate) gate_up: MultiProj,
    pub(crate) down: Proj,
}

/// A loaded Gemma model (gemma-2 or gemma-3), immutable after loading: it is
/// `Send + Sync`, so batches may run on several threads at once.
#[derive(Debug, Clone)]
pub struct Gemma {
    pub(crate) cfg: GemmaConfig,
    /// Token embedding `[vocab, d_model]`, f32.
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_norm: Tensor,
    pub(crate) unembed: Proj,
    /// The arithmetic of the linear layers.
    pub(crate) compute: Compute,
    /// With bf16 compute, the unembedding's bf16 copy, made at the first
    /// full forward (extraction never needs it; it is 335 MB for gemma-3).
    pub(crate) unembed_bf16: OnceLock<Proj>,
    pub(crate) device: Device,
    pub(crate) kernels: Kernels,
}

/// Rope tables for one forward call: (cos, sin) of the local and global
/// layers, as tensors and (for the fused CPU attention) as host values.
struct Rope {
    local: (Tensor, Tensor),
    global: (Tensor, Tensor),
    local_host: (Vec<f32>, Vec<f32>),
    global_host: (Vec<f32>, Vec<f32>),
}

impl Rope {
    fn new(t: usize, cfg: &GemmaConfig, fused: bool, device: &Device) -> Result<Rope> {
        let local = rope_tables(t, cfg.head_dim, cfg.rope_local_theta, 1.0, device)?;
        let global = rope_tables(
            t,
            cfg.head_dim,
            cfg.rope_theta,
            cfg.rope_global_scale,
            device,
        )?;
        let host = |(c, s): &(Tensor, Tensor)| -> Result<(Vec<f32>, Vec<f32>)> {
            if !fused {
                return Ok((Vec::new(), Vec::new()));
            }
            Ok((c.flatten_all()?.to_vec1()?, s.flatten_all()?.to_vec1()?))
        };
        Ok(Rope {
            local_host: host(&local)?,
            global_host: host(&global)?,
            local,
            global,
        })
    }
}

impl Gemma {
    /// The model's hyper-parameters.
    pub fn config(&self) -> &GemmaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The arithmetic of the linear layers (and the unembedding).
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// The implementation of the non-linear-layer pieces in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The same model (weights shared, not copied) running `kernels`.
    pub fn with_kernels(&self, kernels: Kernels) -> Gemma {
        Gemma {
            kernels,
            ..self.clone()
        }
    }

    /// Whether this forward runs the fused CPU kernels.
    fn fused(&self) -> bool {
        self.kernels == Kernels::Fused && self.device.is_cpu()
    }

    fn unembedding(&self) -> Result<&Proj> {
        if self.compute == Compute::F32 {
            return Ok(&self.unembed);
        }
        if self.unembed_bf16.get().is_none() {
            let p = self.unembed.to_bf16()?;
            let _ = self.unembed_bf16.set(p);
        }
        Ok(self.unembed_bf16.get().expect("set above"))
    }

    /// Runs blocks `0..=layer` on `tokens` (`[B, T]`, u32) and returns the
    /// residual stream after block `layer` (`blocks.{layer}.hook_resid_post`),
    /// `[B, T, d_model]` f32. Later blocks and the unembedding are not run.
    pub fn resid_post(&self, tokens: &Tensor, layer: usize) -> Result<Tensor> {
        self.cfg.check_layer(layer)?;
        let (b, t) = self.check_tokens(tokens)?;
        let x = self.run(tokens, layer, None)?;
        Ok(x.reshape((b, t, self.cfg.d_model))?)
    }

    /// Full forward: logits `[B, T, vocab]` (f32, after the final softcap when
    /// the model has one). With `splice = Some((layer, f))`, the residual after
    /// block `layer` is replaced by `f(residual)` before the later blocks run
    /// (`f` gets and must return `[B, T, d_model]`).
    pub fn logits(&self, tokens: &Tensor, splice: Option<Splice<'_>>) -> Result<Tensor> {
        if let Some((layer, _)) = splice {
            self.cfg.check_layer(layer)?;
        }
        let (b, t) = self.check_tokens(tokens)?;
        let x = self.run(tokens, self.cfg.n_layers - 1, splice)?;
        let logits = self.unembed(&self.final_norm(&x)?)?;
        Ok(logits.reshape((b, t, self.cfg.vocab))?)
    }

    /// The final hidden states `[B * T, d_model]` (after the final norm,
    /// before the unembedding) of a forward whose residual after block
    /// `layer` is `resid` (`[B, T, d_model]`): blocks `layer + 1..` only, the
    /// same arithmetic as [`Gemma::logits`] from there on. Several splices of
    /// one token batch share the blocks up to `layer` this way.
    pub fn final_hidden_from(&self, resid: &Tensor, layer: usize) -> Result<Tensor> {
        self.cfg.check_layer(layer)?;
        let (b, t, d) = resid
            .dims3()
            .with_context(|| format!("resid must be [B, T, d_model], got {:?}", resid.shape()))?;
        ensure!(
            d == self.cfg.d_model,
            "resid has width {d}, the model's d_model is {}",
            self.cfg.d_model
        );
        let mut x = resid
            .to_device(&self.device)?
            .to_dtype(DType::F32)?
            .reshape((b * t, d))?;
        let rope = Rope::new(t, &self.cfg, self.fused(), &self.device)?;
        for l in layer + 1..self.cfg.n_layers {
            x = self.apply_block(l, &x, b, t, &rope)?;
        }
        self.final_norm(&x)
    }

    /// Logits `[n, vocab]` (f32, softcapped when the model is) of final
    /// hidden states `[n, d_model]`; callers may pass a few rows at a time.
    pub fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        self.final_softcap(self.unembedding()?.forward(hidden)?)
    }

    /// Calls `f` with the unembedding weight when the logits are exactly
    /// that linear map of the final hidden state, computed on this CPU (no
    /// final softcap, a dense weight on a CPU device, with the model's
    /// compute); `None` otherwise. Statistics of the logits can then be
    /// streamed over vocabulary slices ([`crate::metrics::logit_stats`]).
    pub fn with_linear_unembedding<R>(
        &self,
        f: impl FnOnce(UnembedWeight<'_>) -> R,
    ) -> Result<Option<R>> {
        if self.cfg.final_softcap.is_some() || !self.device.is_cpu() {
            return Ok(None);
        }
        let Proj::DenseT(w) = self.unembedding()? else {
            return Ok(None);
        };
        let (storage, layout) = w.storage_and_layout();
        let Some((a, b)) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        ensure!(
            b - a == self.cfg.vocab * self.cfg.d_model,
            "the unembedding holds {} values, not vocab {} x d_model {}",
            b - a,
            self.cfg.vocab,
            self.cfg.d_model
        );
        Ok(match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => Some(f(UnembedWeight::F32(&v[a..b]))),
            Storage::Cpu(CpuStorage::BF16(v)) => {
                Some(f(UnembedWeight::Bf16(v[a..b].reinterpret_cast())))
            }
            _ => None,
        })
    }

    /// The model's final logit softcap, when it has one.
    fn final_softcap(&self, logits: Tensor) -> Result<Tensor> {
        Ok(match self.cfg.final_softcap {
            Some(c) if self.fused() => fused::softcap(&logits, c)?,
            Some(c) => softcap(&logits, c)?,
            None => logits,
        })
    }

    /// [`Gemma::unembed`] written into `out` (`[n, vocab]` row-major f32,
    /// resized), one slice of `VOCAB_SLICE` vocabulary rows of the weight
    /// at a time: each slice is read once for all n rows and its output is
    /// small, so a chunk of many rows needs no `[n, vocab]` tensor besides
    /// `out`, which the caller can reuse.
    pub fn unembed_into(&self, hidden: &Tensor, out: &mut Vec<f32>) -> Result<()> {
        let (n, vocab) = (hidden.dim(0)?, self.cfg.vocab);
        out.clear();
        out.resize(n * vocab, 0.0);
        let Proj::DenseT(w) = self.unembedding()? else {
            out.copy_from_slice(&self.unembed(hidden)?.flatten_all()?.to_vec1::<f32>()?);
            return Ok(());
        };
        for v0 in (0..vocab).step_by(VOCAB_SLICE) {
            let len = VOCAB_SLICE.min(vocab - v0);
            let y = self.final_softcap(linear(hidden, &w.narrow(0, v0, len)?, Trans::T)?)?;
            let y = y.flatten_all()?.to_vec1::<f32>()?;
            for (dst, src) in out.chunks_mut(vocab).zip(y.chunks(len)) {
                dst[v0..v0 + len].copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        Ok(if self.fused() {
            fused::rms_norm(x, &self.final_norm, eps)?
        } else {
            rms_norm(x, &self.final_norm, eps)?
        })
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = tokens
            .dims2()
            .with_context(|| format!("tokens must be [B, T], got {:?}", tokens.shape()))?;
        if tokens.dtype() != DType::U32 {
            bail!("tokens must be u32, got {:?}", tokens.dtype());
        }
        if b == 0 || t == 0 {
            bail!("empty token batch {:?}", tokens.shape());
        }
        let max = tokens.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= self.cfg.vocab {
            bail!(
                "token id {max} is out of range for a vocabulary of {}",
                self.cfg.vocab
            );
        }
        Ok((b, t))
    }

    /// Embeds and runs blocks `0..=last`, applying the splice; returns the
    /// residual as `[B * T, d_model]`.
    fn run(&self, tokens: &Tensor, last: usize, splice: Option<Splice<'_>>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = tokens.dims2()?;
        let ids = tokens.flatten_all()?.to_device(&self.device)?;
        let mut x = (self.embed.index_select(&ids, 0)? * (cfg.d_model as f64).sqrt())?;
        let rope = Rope::new(t, cfg, self.fused(), &self.device)?;
        for l in 0..=last {
            x = self.apply_block(l, &x, b, t, &rope)?;
            if let Some((at, f)) = splice {
                if at == l {
                    let r = x.reshape((b, t, cfg.d_model))?;
                    let y = f(&r).with_context(|| format!("residual splice at layer {l}"))?;
                    if y.dims() != r.dims() {
                        bail!(
                            "the residual splice at layer {l} returned shape {:?}, expected {:?}",
                            y.shape(),
                            r.shape()
                        );
                    }
                    x = y
                        .to_device(&self.device)?
                        .to_dtype(DType::F32)?
                        .reshape((b * t, cfg.d_model))?;
                }
            }
        }
        Ok(x)
    }

    fn apply_block(&self, l: usize, x: &Tensor, b: usize, t: usize, rope: &Rope) -> Result<Tensor> {
        let block = &self.blocks[l];
        let y = if self.fused() {
            self.block_fused(l, block, x, b, t, rope)
        } else {
            self.block(l, block, x, b, t, rope)
        };
        y.with_context(|| format!("block {l}"))
    }

    fn spec<'a>(&self, blk: &'a Block, b: usize, t: usize, local: bool) -> Spec<'a> {
        let cfg = &self.cfg;
        Spec {
            b,
            t,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            q_norm: blk.q_norm.as_ref(),
            k_norm: blk.k_norm.as_ref(),
            eps: cfg.rms_norm_eps,
            scale: 1.0 / cfg.query_pre_attn_scalar.sqrt(),
            softcap: cfg.attn_softcap,
            window: local.then_some(cfg.sliding_window),
        }
    }

    /// One block with candle ops ([`Kernels::Reference`], and off CPU).
    fn block(
        &self,
        l: usize,
        blk: &Block,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: &Rope,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps;
        let local = cfg.local_layers[l];
        // Attention.
        let h = rms_norm(x, &blk.attn_norm, eps)?;
        let qkv = blk.qkv.forward(&h)?;
        let (cos, sin) = if local { &rope.local } else { &rope.global };
        let spec = self.spec(blk, b, t, local);
        let h = attention::reference(&spec, &qkv[0], &qkv[1], &qkv[2], cos, sin)?;
        let h = blk.o.forward(&h)?;
        let h = rms_norm(&h, &blk.post_attn_norm, eps)?;
        let x = (x + h)?;
        // MLP.
        let h = rms_norm(&x, &blk.mlp_norm, eps)?;
        let act = Geglu {
            activation: cfg.activation,
        };
        let a = match blk.gate_up.forward_fused(&h)? {
            Some(gu) => act.forward(&gu)?,
            None => {
                let gu = blk.gate_up.forward(&h)?;
                (act.act_tensor(&gu[0])? * &gu[1])?
            }
        };
        let h = blk.down.forward(&a)?;
        let h = rms_norm(&h, &blk.post_mlp_norm, eps)?;
        x + h
    }

    /// One block with the fused CPU kernels: the same arithmetic as
    /// [`Self::block`] in fewer passes over memory.
    fn block_fused(
        &self,
        l: usize,
        blk: &Block,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: &Rope,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps;
        let local = cfg.local_layers[l];
        // Attention, its post-norm, residual add and the MLP's pre-norm.
        let h = fused::rms_norm(x, &blk.attn_norm, eps)?;
        let qkv = match blk.qkv.forward_fused(&h)? {
            Some(qkv) => qkv,
            None => Tensor::cat(&blk.qkv.forward(&h)?, 1)?,
        };
        let (cos, sin) = if local {
            &rope.local_host
        } else {
            &rope.global_host
        };
        let h = attention::fused(&self.spec(blk, b, t, local), &qkv, cos, sin)?;
        let h = blk.o.forward(&h)?;
        let (x, h) = fused::add_rms_norm_then_norm(x, &h, &blk.post_attn_norm, &blk.mlp_norm, eps)?;
        // MLP.
        let a = match blk.gate_up.forward_fused(&h)? {
            Some(gu) => fused::geglu(&gu, cfg.activation)?,
            None => {
                let gu = Tensor::cat(&blk.gate_up.forward(&h)?, 1)?;
                fused::geglu(&gu, cfg.activation)?
            }
        };
        let h = blk.down.forward(&a)?;
        fused::add_rms_norm(&x, &h, &blk.post_mlp_norm, eps)
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Gemma>();
}

impl Arch {
    /// Whether blocks have q/k RMSNorms.
    pub(crate) fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3)
    }
}
