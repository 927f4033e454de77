//! Fused row kernels of the forward on CPU: Gemma's RMSNorm, the residual
//! add after a post-norm (alone or followed by the next pre-norm), the gated
//! MLP nonlinearity and softcapping, each one pass over its rows with the
//! vectorised math of [`super::simd`], spread over rayon in fixed blocks of
//! rows (each row is computed alone, so the bytes do not depend on the
//! thread count).
//!
//! Every entry point takes candle tensors and, off CPU (or for dtypes the
//! kernels do not take), computes the same thing with the candle ops of
//! [`super::ops`], so the forward stays device-generic.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::ops::{self, Geglu};
use super::simd::{self, multiversion};
use crate::lm::Activation;

type CResult<T> = candle_core::Result<T>;

/// Rows per rayon task: enough work to pay for a task, few enough to balance.
const ROW_BLOCK: usize = 16;

/// Whether `t` can go to the CPU kernels: f32 on the CPU.
fn on_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 values of a CPU storage, or an error naming `what`.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CResult<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: expected contiguous f32"),
    }
}

fn contiguous(t: &Tensor) -> CResult<Tensor> {
    if t.is_contiguous() {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// A new buffer of `len` values, not zeroed (a whole pass over memory
/// saved): every caller writes every element before anything reads it.
pub(crate) fn output(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns; see above for the writes.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Runs `f(first_row, rows)` over blocks of [`ROW_BLOCK`] rows of `out`.
fn par_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    out.par_chunks_mut(ROW_BLOCK * width)
        .enumerate()
        .for_each(|(i, block)| f(i * ROW_BLOCK, block));
}

multiversion! {
    /// `out = x / sqrt(mean(x^2) + eps) * scale` for one row.
    fn norm_row(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) {
        let inv = 1.0 / (simd::sum_sq(x) / x.len() as f32 + eps).sqrt();
        for ((o, v), s) in out.iter_mut().zip(x).zip(scale) {
            *o = v * inv * s;
        }
    }
}

multiversion! {
    /// `out = x + norm(h) * scale` for one row.
    fn add_norm_row(x: &[f32], h: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) {
        let inv = 1.0 / (simd::sum_sq(h) / h.len() as f32 + eps).sqrt();
        for (((o, v), g), s) in out.iter_mut().zip(x).zip(h).zip(scale) {
            *o = v + g * inv * s;
        }
    }
}

/// Gemma's RMSNorm (see [`ops::rms_norm`]) over the last dimension.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> CResult<Tensor> {
    if !on_cpu_f32(&[x, scale]) {
        return ops::rms_norm(x, scale, eps);
    }
    contiguous(x)?.apply_op2_no_bwd(scale, &Norm { eps: eps as f32 })
}

/// `x + rms_norm(h, scale)`: a post-norm and its residual add.
pub fn add_rms_norm(x: &Tensor, h: &Tensor, scale: &Tensor, eps: f64) -> CResult<Tensor> {
    if x.dims() != h.dims() {
        candle_core::bail!("add_rms_norm: x is {:?}, h is {:?}", x.shape(), h.shape());
    }
    if !on_cpu_f32(&[x, h, scale]) {
        return x + ops::rms_norm(h, scale, eps)?;
    }
    contiguous(x)?.apply_op3_no_bwd(
        &contiguous(h)?,
        scale,
        &AddNorm {
            eps: eps as f32,
            next: None,
        },
    )
}

/// `(y, rms_norm(y, next))` with `y = x + rms_norm(h, post)`: a post-norm,
/// its residual add and the next pre-norm in one pass. Both outputs are
/// contiguous views of one buffer.
pub fn add_rms_norm_then_norm(
    x: &Tensor,
    h: &Tensor,
    post: &Tensor,
    next: &Tensor,
    eps: f64,
) -> CResult<(Tensor, Tensor)> {
    if x.dims() != h.dims() {
        candle_core::bail!(
            "add_rms_norm_then_norm: x is {:?}, h is {:?}",
            x.shape(),
            h.shape()
        );
    }
    if !on_cpu_f32(&[x, h, post, next]) {
        let y = (x + ops::rms_norm(h, post, eps)?)?;
        let n = ops::rms_norm(&y, next, eps)?;
        return Ok((y, n));
    }
    let next = next.to_vec1::<f32>()?;
    let both = contiguous(x)?.apply_op3_no_bwd(
        &contiguous(h)?,
        post,
        &AddNorm {
            eps: eps as f32,
            next: Some(&next),
        },
    )?;
    Ok((both.get(0)?, both.get(1)?))
}

fn check_scale(scale: &[f32], width: usize, what: &str) -> CResult<()> {
    if scale.len() != width {
        candle_core::bail!("{what}: scale has {} values, rows {width}", scale.len());
    }
    Ok(())
}

/// Gemma's RMSNorm over rows.
struct Norm {
    eps: f32,
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        "coact-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = slice(xs, xl, "rms_norm x")?;
        let scale = slice(ss, sl, "rms_norm scale")?;
        let d = xl.dims()[xl.dims().len() - 1];
        check_scale(scale, d, "rms_norm")?;
        let mut out = output(x.len());
        par_rows(&mut out, d, |r0, block| {
            for (i, o) in block.chunks_mut(d).enumerate() {
                let r = r0 + i;
                norm_row(&x[r * d..(r + 1) * d], scale, self.eps, o);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `y = x + norm(h) * post`, and with `next` also `norm(y) * next`, stacked
/// as `[2, ..]`.
struct AddNorm<'a> {
    eps: f32,
    next: Option<&'a [f32]>,
}

impl CustomOp3 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "coact-add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        hs: &CpuStorage,
        hl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = slice(xs, xl, "add_rms_norm x")?;
        let h = slice(hs, hl, "add_rms_norm h")?;
        let post = slice(ps, pl, "add_rms_norm scale")?;
        let d = xl.dims()[xl.dims().len() - 1];
        check_scale(post, d, "add_rms_norm")?;
        let n = x.len();
        match self.next {
            None => {
                let mut out = output(n);
                par_rows(&mut out, d, |r0, block| {
                    for (i, o) in block.chunks_mut(d).enumerate() {
                        let s = (r0 + i) * d..(r0 + i + 1) * d;
                        add_norm_row(&x[s.clone()], &h[s], post, self.eps, o);
                    }
                });
                Ok((CpuStorage::F32(out), xl.shape().clone()))
            }
            Some(next) => {
                check_scale(next, d, "add_rms_norm_then_norm")?;
                let mut out = output(2 * n);
                let (ys, ns) = out.split_at_mut(n);
                ys.par_chunks_mut(ROW_BLOCK * d)
                    .zip(ns.par_chunks_mut(ROW_BLOCK * d))
                    .enumerate()
                    .for_each(|(b, (yb, nb))| {
                        for (i, (y, o)) in yb.chunks_mut(d).zip(nb.chunks_mut(d)).enumerate() {
                            let r = b * ROW_BLOCK + i;
                            let s = r * d..(r + 1) * d;
                            add_norm_row(&x[s.clone()], &h[s], post, self.eps, y);
                            norm_row(y, next, self.eps, o);
                        }
                    });
                let mut dims = vec![2];
                dims.extend_from_slice(xl.dims());
                Ok((CpuStorage::F32(out), Shape::from(dims)))
            }
        }
    }
}

multiversion! {
    /// `out = gelu_tanh(gate) * up`.
    fn gelu_tanh_rows(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = simd::gelu_tanh(*g) * u;
        }
    }
}

multiversion! {
    /// `out = silu(gate) * up`.
    fn silu_rows(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = simd::silu(*g) * u;
        }
    }
}

/// The gated MLP nonlinearity on the fused gate/up projection `gu`
/// (`[.., 2 * d_mlp]`, gate first): `act(gate) * up`, `[.., d_mlp]`.
pub fn geglu(gu: &Tensor, activation: Activation) -> CResult<Tensor> {
    let op = Geglu { activation };
    if !on_cpu_f32(&[gu]) {
        return op.forward(gu);
    }
    let two_i = gu.dim(D::Minus1)?;
    if !two_i.is_multiple_of(2) {
        candle_core::bail!("gated MLP: odd fused width {two_i}");
    }
    contiguous(gu)?.apply_op1_no_bwd(&FastGeglu(op))
}

struct FastGeglu(Geglu);

impl CustomOp1 for FastGeglu {
    fn name(&self) -> &'static str {
        "coact-fast-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let src = slice(s, l, "gated MLP")?;
        let dims = l.dims();
        let two_i = dims[dims.len() - 1];
        let i = two_i / 2;
        let mut out = output(src.len() / 2);
        par_rows(&mut out, i, |r0, block| {
            for (k, o) in block.chunks_mut(i).enumerate() {
                let row = &src[(r0 + k) * two_i..(r0 + k + 1) * two_i];
                let (gate, up) = row.split_at(i);
                match self.0.activation {
                    Activation::GeluTanh => gelu_tanh_rows(gate, up, o),
                    Activation::Silu => silu_rows(gate, up, o),
                    // Rare (no Gemma uses it): the scalar reference kernel.
                    Activation::GeluErf => {
                        for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                            *o = self.0.act(*g) * u;
                        }
                    }
                }
            }
        });
        let mut shape = dims.to_vec();
        *shape.last_mut().unwrap() = i;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

multiversion! {
    /// `x = cap * tanh(x / cap)` in place.
    fn softcap_rows(x: &mut [f32], cap: f32) {
        let inv = 1.0 / cap;
        for v in x.iter_mut() {
            *v = cap * simd::tanh(*v * inv);
        }
    }
}

/// Logit softcapping `cap * tanh(x / cap)` (see [`ops::softcap`]).
pub fn softcap(x: &Tensor, cap: f64) -> CResult<Tensor> {
    if !on_cpu_f32(&[x]) {
        return ops::softcap(x, cap);
    }
    contiguous(x)?.apply_op1_no_bwd(&Softcap(cap as f32))
}

struct Softcap(f32);

impl CustomOp1 for Softcap {
    fn name(&self) -> &'static str {
        "coact-softcap"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let mut out = slice(s, l, "softcap")?.to_vec();
        out.par_chunks_mut(1 << 14)
            .for_each(|c| softcap_rows(c, self.0));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        assert_eq!(a.dims(), b.dims());
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    fn rand(shape: &[usize], std: f32) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rms_norms_match_candle_ops() {
        // 37 rows of 70: several row blocks, widths that are not lane multiples.
        let (x, h) = (rand(&[37, 70], 2.0), rand(&[37, 70], 5.0));
        let (post, next) = (rand(&[70], 1.0), rand(&[70], 1.0));
        let eps = 1e-6;
        close(
            &rms_norm(&x, &post, eps).unwrap(),
            &ops::rms_norm(&x, &post, eps).unwrap(),
            1e-6,
        );
        let y = (&x + ops::rms_norm(&h, &post, eps).unwrap()).unwrap();
        close(&add_rms_norm(&x, &h, &post, eps).unwrap(), &y, 1e-6);
        let (y2, n2) = add_rms_norm_then_norm(&x, &h, &post, &next, eps).unwrap();
        close(&y2, &y, 1e-6);
        close(&n2, &ops::rms_norm(&y, &next, eps).unwrap(), 1e-5);
        assert!(y2.is_contiguous() && n2.is_contiguous());
        // Non-contiguous input.
        let xt = rand(&[70, 9], 1.0).t().unwrap();
        close(
            &rms_norm(&xt, &post, eps).unwrap(),
            &ops::rms_norm(&xt, &post, eps).unwrap(),
            1e-6,
        );
    }

    #[test]
    fn geglu_and_softcap_match_candle_ops() {
        let gu = rand(&[33, 2 * 45], 3.0);
        for act in [Activation::GeluTanh, Activation::GeluErf, Activation::Silu] {
            let slow = Geglu { activation: act }.forward(&gu).unwrap();
            // candle's CPU gelu/silu use libm; the fast ones agree to ~1e-6.
            close(&geglu(&gu, act).unwrap(), &slow, 2e-6);
        }
        let x = rand(&[17, 300], 40.0);
        close(
            &softcap(&x, 30.0).unwrap(),
            &ops::softcap(&x, 30.0).unwrap(),
            2e-6,
        );
    }

    #[test]
    fn kernels_do_not_depend_on_the_thread_count() {
        let (x, h) = (rand(&[301, 64], 2.0), rand(&[301, 64], 3.0));
        let (post, next) = (rand(&[64], 1.0), rand(&[64], 1.0));
        let gu = rand(&[301, 128], 2.0);
        let run = || {
            let (y, n) = add_rms_norm_then_norm(&x, &h, &post, &next, 1e-6).unwrap();
            let mut v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            v.extend(n.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            v.extend(
                geglu(&gu, Activation::GeluTanh)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            v.into_iter().map(f32::to_bits).collect::<Vec<u32>>()
        };
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(run);
        let three = pool(3).install(run);
        assert_eq!(one, three);
    }
}
