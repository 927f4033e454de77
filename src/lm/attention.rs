//! Gemma's attention core, from the q/k/v projections to the heads' outputs
//! (before the output projection): q/k RMSNorms, rope, scaled scores, the
//! softcap, the causal (and sliding-window) mask, softmax, times v.
//!
//! Two implementations of the same function:
//! * [`fused`], on CPU: one custom op over the fused q|k|v projection that
//!   writes the heads' outputs straight in the `[B*T, H*hd]` layout the
//!   output projection reads. q and k are normed and roped once per token;
//!   then each (sequence, block of queries) task runs, per head, the scores
//!   and the product with v as oneDNN sgemms ([`crate::linalg::sgemm`]) over
//!   only the keys the block can see, with a vectorised masked softmax in
//!   between. Tasks are fixed by the shapes, so the bytes do not depend on
//!   rayon's thread count.
//! * [`reference`], candle ops on any device (permutes, batched matmuls and
//!   [`MaskedSoftmax`]), the fallback off CPU and the tests' reference.
//!
//! Attention runs in f32 in both compute modes: it is ~2% of the forward's
//! arithmetic, and bf16 scores would add error for no measurable gain.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::output;
use super::ops::{rms_norm, rope_bthd, MaskedSoftmax};
use super::simd::{self, multiversion};
use crate::linalg::{sgemm, Trans};

type CResult<T> = candle_core::Result<T>;

/// Queries per task: a causal block only multiplies the keys up to its last
/// query, so smaller blocks skip more of the masked triangle, larger ones
/// make larger products.
const Q_BLOCK: usize = 64;

/// Positions per task when norming and roping q and k.
const POS_BLOCK: usize = 32;

/// The shape and settings of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub b: usize,
    pub t: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier of the q/k RMSNorms (`1 + w`), `[head_dim]`, when the model
    /// has them.
    pub q_norm: Option<&'a Tensor>,
    pub k_norm: Option<&'a Tensor>,
    pub eps: f64,
    /// Scores are `scale * q.k`.
    pub scale: f64,
    pub softcap: Option<f64>,
    /// Sliding window (keys at distance `>= window` masked), on local layers.
    pub window: Option<usize>,
}

impl Spec<'_> {
    fn mask(&self) -> MaskedSoftmax {
        MaskedSoftmax {
            scale: self.scale,
            softcap: self.softcap,
            window: self.window,
        }
    }

    fn lowest_key(&self, i: usize) -> usize {
        match self.window {
            Some(w) => (i + 1).saturating_sub(w.max(1)),
            None => 0,
        }
    }
}

/// The candle-ops attention: `q [B*T, H*hd]`, `k` and `v` `[B*T, KV*hd]`
/// (any layout), rope tables `[T, hd/2]`; returns `[B*T, H*hd]`.
pub(crate) fn reference(
    s: &Spec<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> CResult<Tensor> {
    let (b, t, nh, nkv, hd) = (s.b, s.t, s.n_heads, s.n_kv_heads, s.head_dim);
    let g = nh / nkv;
    // [B*T, H*hd] -> [B, T, H, hd]; q/k norms over hd; rope.
    let mut q = q.contiguous()?.reshape((b, t, nh, hd))?;
    let mut k = k.contiguous()?.reshape((b, t, nkv, hd))?;
    let v = v.reshape((b, t, nkv, hd))?;
    if let Some(w) = s.q_norm {
        q = rms_norm(&q, w, s.eps)?;
    }
    if let Some(w) = s.k_norm {
        k = rms_norm(&k, w, s.eps)?;
    }
    let q = rope_bthd(&q, cos, sin)?;
    let k = rope_bthd(&k, cos, sin)?;
    // Group the query heads by their kv head: q [B*KV, G*T, hd] so that one
    // batched matmul per (sequence, kv head) covers all its query heads.
    let q = q
        .reshape((b, t, nkv, g, hd))?
        .permute((0, 2, 3, 1, 4))?
        .contiguous()?
        .reshape((b * nkv, g * t, hd))?;
    let k = k.transpose(1, 2)?.contiguous()?.reshape((b * nkv, t, hd))?;
    let v = v.transpose(1, 2)?.contiguous()?.reshape((b * nkv, t, hd))?;
    let scores = q.matmul(&k.t()?)?.reshape((b * nkv * g, t, t))?;
    let probs = s.mask().forward(&scores)?;
    let out = probs.reshape((b * nkv, g * t, t))?.matmul(&v)?;
    out.reshape((b, nkv, g, t, hd))?
        .permute((0, 3, 1, 2, 4))?
        .contiguous()?
        .reshape((b * t, nh * hd))
}

/// The fused CPU attention on `qkv [B*T, (H + 2 KV) * hd]` (q heads, then k,
/// then v, as the fused projection lays them out), f32, contiguous; rope
/// tables `cos`, `sin` as `[T * hd/2]` host values. Returns `[B*T, H*hd]`.
pub(crate) fn fused(s: &Spec<'_>, qkv: &Tensor, cos: &[f32], sin: &[f32]) -> CResult<Tensor> {
    let host = |w: Option<&Tensor>| w.map(|w| w.to_vec1::<f32>()).transpose();
    let (q_norm, k_norm) = (host(s.q_norm)?, host(s.k_norm)?);
    let half = s.head_dim / 2;
    if cos.len() != s.t * half || sin.len() != s.t * half {
        candle_core::bail!("attention: rope tables do not cover {} positions", s.t);
    }
    for w in [&q_norm, &k_norm].into_iter().flatten() {
        if w.len() != s.head_dim {
            candle_core::bail!(
                "attention: q/k norm has {} values, not {}",
                w.len(),
                s.head_dim
            );
        }
    }
    let qkv = if qkv.is_contiguous() {
        qkv.clone()
    } else {
        qkv.contiguous()?
    };
    qkv.apply_op1_no_bwd(&Fused {
        s,
        q_norm: q_norm.as_deref(),
        k_norm: k_norm.as_deref(),
        cos,
        sin,
    })
}

struct Fused<'a> {
    s: &'a Spec<'a>,
    q_norm: Option<&'a [f32]>,
    k_norm: Option<&'a [f32]>,
    cos: &'a [f32],
    sin: &'a [f32],
}

multiversion! {
    /// One head's row: optional RMSNorm (`scale` empty for none), then rope
    /// ("rotate half": pairs `(i, i + hd/2)`) with this position's tables.
    fn norm_rope(src: &[f32], scale: &[f32], eps: f32, cos: &[f32], sin: &[f32], dst: &mut [f32]) {
        let half = src.len() / 2;
        let (x1, x2) = src.split_at(half);
        let (d1, d2) = dst.split_at_mut(half);
        if scale.is_empty() {
            d1.copy_from_slice(x1);
            d2.copy_from_slice(x2);
        } else {
            let inv = 1.0 / (simd::sum_sq(src) / src.len() as f32 + eps).sqrt();
            let (s1, s2) = scale.split_at(half);
            for ((o, x), s) in d1.iter_mut().zip(x1).zip(s1) {
                *o = x * inv * s;
            }
            for ((o, x), s) in d2.iter_mut().zip(x2).zip(s2) {
                *o = x * inv * s;
            }
        }
        // Iterators rather than indices: overflow checks (where on) on
        // `half + i` would stop the loop from vectorising.
        for (((o1, o2), c), s) in d1.iter_mut().zip(d2.iter_mut()).zip(cos).zip(sin) {
            let (a, b) = (*o1, *o2);
            *o1 = a * c - b * s;
            *o2 = a * s + b * c;
        }
    }
}

multiversion! {
    /// Softmax of `row[lo..=hi]` in place (after the optional softcap,
    /// `cap == 0` for none); the rest of the row is zeroed.
    fn softmax_row(row: &mut [f32], lo: usize, hi: usize, cap: f32) {
        let live = &mut row[lo..=hi];
        if cap != 0.0 {
            let inv = 1.0 / cap;
            for v in live.iter_mut() {
                *v = cap * simd::tanh(*v * inv);
            }
        }
        let m = simd::max(live);
        let sum = simd::exp_sub_sum(live, m);
        let inv = 1.0 / sum;
        for v in live.iter_mut() {
            *v *= inv;
        }
        row[..lo].fill(0.0);
        row[hi + 1..].fill(0.0);
    }
}

impl CustomOp1 for Fused<'_> {
    fn name(&self) -> &'static str {
        "coact-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let s = self.s;
        let (b, t, nh, nkv, hd) = (s.b, s.t, s.n_heads, s.n_kv_heads, s.head_dim);
        let qkv = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, e))) => &v[a..e],
            _ => candle_core::bail!("attention: expected contiguous f32 q|k|v"),
        };
        let w = (nh + 2 * nkv) * hd;
        if layout.dims() != [b * t, w] || nh % nkv != 0 || hd % 2 != 0 {
            candle_core::bail!(
                "attention: q|k|v is {:?}, expected [{}, {w}] ({nh} heads, {nkv} kv heads, head_dim {hd})",
                layout.dims(),
                b * t
            );
        }
        let (half, g, eps) = (hd / 2, nh / nkv, s.eps as f32);
        // 1. q and k heads normed and roped. q is laid out [B, KV, T, G, hd]
        // so that the G query heads of one kv head, over a block of
        // positions, are one [n * G, hd] matrix; k is [B, KV, T, hd].
        let qg = g * hd;
        // Every position of every head is written below.
        let mut qbuf = output(b * nkv * t * qg);
        let mut kbuf = output(b * nkv * t * hd);
        qbuf.par_chunks_mut(t * qg)
            .zip(kbuf.par_chunks_mut(t * hd))
            .enumerate()
            .for_each(|(c, (qc, kc))| {
                let (seq, kv) = (c / nkv, c % nkv);
                qc.par_chunks_mut(POS_BLOCK * qg)
                    .zip(kc.par_chunks_mut(POS_BLOCK * hd))
                    .enumerate()
                    .for_each(|(pb, (qd, kd))| {
                        for (i, (qd, kd)) in qd.chunks_mut(qg).zip(kd.chunks_mut(hd)).enumerate() {
                            let p = pb * POS_BLOCK + i;
                            let (cos, sin) = (
                                &self.cos[p * half..(p + 1) * half],
                                &self.sin[p * half..(p + 1) * half],
                            );
                            let src = &qkv[(seq * t + p) * w..(seq * t + p + 1) * w];
                            for (j, d) in qd.chunks_mut(hd).enumerate() {
                                let h = kv * g + j;
                                let x = &src[h * hd..(h + 1) * hd];
                                norm_rope(x, self.q_norm.unwrap_or(&[]), eps, cos, sin, d);
                            }
                            let x = &src[(nh + kv) * hd..(nh + kv + 1) * hd];
                            norm_rope(x, self.k_norm.unwrap_or(&[]), eps, cos, sin, kd);
                        }
                    });
            });
        // 2. Per (sequence, query block): per kv head, the scores of its G
        // query heads as one product, softmax, times v, into the task's own
        // rows of the output.
        let ow = nh * hd;
        // Every (row, head) is written by one sgemm with beta = 0 (or copied
        // from one).
        let mut out = output(b * t * ow);
        let cap = s.softcap.unwrap_or(0.0) as f32;
        let scale = s.scale as f32;
        out.par_chunks_mut(t * ow)
            .enumerate()
            .for_each(|(seq, seq_out)| {
                seq_out
                    .par_chunks_mut(Q_BLOCK * ow)
                    .enumerate()
                    .for_each(|(qb, o)| {
                        let q0 = qb * Q_BLOCK;
                        let nq = o.len() / ow;
                        let klo = s.lowest_key(q0);
                        let nk = q0 + nq - klo;
                        let rows = nq * g;
                        let mut scores = output(rows * nk);
                        // With one kv head, row (position i, head j) of the
                        // product is row i * G + j of the output, stride hd:
                        // it is written in place. Else through a scratch.
                        let mut scratch = if nkv == 1 {
                            Vec::new()
                        } else {
                            output(rows * hd)
                        };
                        for kv in 0..nkv {
                            let head = (seq * nkv + kv) * t;
                            sgemm(
                                Trans::N,
                                Trans::T,
                                rows,
                                nk,
                                hd,
                                scale,
                                &qbuf[(head + q0) * qg..],
                                hd,
                                &kbuf[(head + klo) * hd..],
                                hd,
                                0.0,
                                &mut scores,
                                nk,
                            );
                            for (r, row) in scores.chunks_mut(nk).enumerate() {
                                let qi = q0 + r / g;
                                softmax_row(row, s.lowest_key(qi) - klo, qi - klo, cap);
                            }
                            let dst: &mut [f32] = if nkv == 1 { o } else { &mut scratch };
                            sgemm(
                                Trans::N,
                                Trans::N,
                                rows,
                                hd,
                                nk,
                                1.0,
                                &scores,
                                nk,
                                &qkv[(seq * t + klo) * w + (nh + nkv + kv) * hd..],
                                w,
                                0.0,
                                dst,
                                hd,
                            );
                            if nkv > 1 {
                                for (r, src) in scratch.chunks(hd).enumerate() {
                                    let (i, j) = (r / g, r % g);
                                    let at = i * ow + (kv * g + j) * hd;
                                    o[at..at + hd].copy_from_slice(src);
                                }
                            }
                        }
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((b * t, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::ops::{gemma_norm_scale, rope_tables};
    use candle_core::Device;

    fn rand(shape: &[usize], std: f32) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()
    }

    /// Runs both implementations on random q|k|v and returns their outputs.
    fn both(
        b: usize,
        t: usize,
        (nh, nkv, hd): (usize, usize, usize),
        norms: bool,
        softcap: Option<f64>,
        window: Option<usize>,
    ) -> (Vec<f32>, Vec<f32>) {
        let w = (nh + 2 * nkv) * hd;
        let qkv = rand(&[b * t, w], 1.5);
        let qn = gemma_norm_scale(&rand(&[hd], 0.3)).unwrap();
        let kn = gemma_norm_scale(&rand(&[hd], 0.3)).unwrap();
        let spec = Spec {
            b,
            t,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            q_norm: norms.then_some(&qn),
            k_norm: norms.then_some(&kn),
            eps: 1e-6,
            scale: 1.0 / (hd as f64).sqrt(),
            softcap,
            window,
        };
        let (cos, sin) = rope_tables(t, hd, 10_000.0, 1.0, &Device::Cpu).unwrap();
        let q = qkv.narrow(1, 0, nh * hd).unwrap();
        let k = qkv.narrow(1, nh * hd, nkv * hd).unwrap();
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd).unwrap();
        let slow = reference(&spec, &q, &k, &v, &cos, &sin).unwrap();
        let host = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let fast = fused(&spec, &qkv, &host(&cos), &host(&sin)).unwrap();
        assert_eq!(fast.dims(), slow.dims());
        (host(&fast), host(&slow))
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn fused_attention_matches_candle_ops() {
        // Gemma-3-like grouped heads with q/k norms; several query blocks,
        // a ragged last one, a window that cuts inside a block.
        let (f, r) = both(2, 150, (4, 1, 16), true, None, None);
        close(&f, &r, 1e-5);
        let (f, r) = both(2, 150, (4, 2, 8), true, None, Some(37));
        close(&f, &r, 1e-5);
        // Gemma-2-like: no q/k norms, a softcap, window 1 (each token alone).
        let (f, r) = both(3, 70, (2, 2, 8), false, Some(2.0), Some(1));
        close(&f, &r, 1e-5);
        let (f, r) = both(1, 5, (2, 1, 4), false, Some(50.0), Some(200));
        close(&f, &r, 1e-5);
    }

    #[test]
    fn fused_attention_does_not_depend_on_the_thread_count() {
        let w = (4 + 2) * 16;
        let (b, t) = (3, 140);
        let qkv = rand(&[b * t, w], 1.0);
        let qn = gemma_norm_scale(&rand(&[16], 0.3)).unwrap();
        let spec = Spec {
            b,
            t,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 16,
            q_norm: Some(&qn),
            k_norm: Some(&qn),
            eps: 1e-6,
            scale: 0.25,
            softcap: None,
            window: Some(100),
        };
        let (cos, sin) = rope_tables(t, 16, 10_000.0, 1.0, &Device::Cpu).unwrap();
        let host = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (cos, sin) = (host(&cos), host(&sin));
        let run = || {
            host(&fused(&spec, &qkv, &cos, &sin).unwrap())
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<u32>>()
        };
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        assert_eq!(pool(1).install(run), pool(4).install(run));
    }
}
