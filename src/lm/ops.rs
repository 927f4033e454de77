//! The small numerical pieces of the Gemma forward, as candle ops: the
//! reference forward ([`super::Kernels::Reference`]) and the fallback of the
//! fused kernels (`fused.rs`, `attention.rs`) off CPU.
//!
//! Two of them (masked softmax over `[.., T, T]` scores, GeGLU over the MLP's
//! fused gate/up output) have plain scalar CPU kernels of their own; on other
//! devices they are compositions of candle ops computing the same thing.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};

type CResult<T> = candle_core::Result<T>;

/// Gemma's RMSNorm: `x / sqrt(mean(x^2) + eps) * scale` over the last
/// dimension, in f32, where `scale = 1 + w` for the checkpoint's weight `w`
/// (GGUF files store `1 + w` already). Use [`gemma_norm_scale`] to turn a
/// Hugging Face weight into `scale`.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> CResult<Tensor> {
    let x = if x.is_contiguous() {
        x.clone()
    } else {
        x.contiguous()?
    };
    candle_nn::ops::rms_norm(&x, scale, eps as f32)
}

/// `1 + w` in f32: the multiplier of Gemma's RMSNorm for a Hugging Face
/// norm weight `w` (the addition is done in f32, as Hugging Face does).
pub fn gemma_norm_scale(w: &Tensor) -> CResult<Tensor> {
    w.to_dtype(DType::F32)? + 1.0
}

/// Logit softcapping: `cap * tanh(x / cap)`.
pub fn softcap(x: &Tensor, cap: f64) -> CResult<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// Rotary-embedding tables for positions `0..t`: `(cos, sin)`, each
/// `[t, head_dim / 2]`, for base `theta`, positions divided by `pos_scale`
/// (linear rope scaling). Pairs are (i, i + head_dim/2) ("rotate half"), as in
/// Hugging Face's Gemma and llama.cpp's NEOX rope.
pub fn rope_tables(
    t: usize,
    head_dim: usize,
    theta: f64,
    pos_scale: f64,
    device: &Device,
) -> CResult<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in 0..t {
        let p = p as f64 / pos_scale;
        for f in &inv_freq {
            // Hugging Face computes the angle in f32; do the same so that long
            // positions round alike.
            let a = (p as f32) * (*f as f32);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, half), device)?,
        Tensor::from_vec(sin, (t, half), device)?,
    ))
}

/// Applies rope to `x` laid out `[B, T, H, head_dim]` (contiguous or not).
pub fn rope_bthd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    let x = if x.is_contiguous() {
        x.clone()
    } else {
        x.contiguous()?
    };
    candle_nn::rotary_emb::rope_thd(&x, cos, sin)
}

/// Softmax over the last dimension of attention scores `[.., T, T]` (rows are
/// query positions, columns key positions of the same packed sequence), after
/// multiplying by `scale`, applying the optional softcap, and masking keys
/// after the query (causal) and, with `window`, keys at distance `>= window`.
#[derive(Debug, Clone, Copy)]
pub struct MaskedSoftmax {
    pub scale: f64,
    pub softcap: Option<f64>,
    pub window: Option<usize>,
}

impl MaskedSoftmax {
    pub fn forward(&self, scores: &Tensor) -> CResult<Tensor> {
        let (tq, tk) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
        if tq != tk {
            candle_core::bail!("masked softmax expects square [.., T, T] scores, got {tq}x{tk}");
        }
        if scores.device().is_cpu() && scores.dtype() == DType::F32 {
            let s = if scores.is_contiguous() {
                scores.clone()
            } else {
                scores.contiguous()?
            };
            return s.apply_op1_no_bwd(self);
        }
        // Generic path: the same computation with candle ops.
        let mut s = (scores * self.scale)?;
        if let Some(c) = self.softcap {
            s = softcap(&s, c)?;
        }
        let mask = self.mask(tq, scores.device())?.to_dtype(s.dtype())?;
        let s = s.broadcast_add(&mask)?;
        candle_nn::ops::softmax_last_dim(&s)
    }

    /// The additive mask `[T, T]`: 0 where a query may attend, -inf elsewhere.
    pub fn mask(&self, t: usize, device: &Device) -> CResult<Tensor> {
        let mut m = vec![f32::NEG_INFINITY; t * t];
        for i in 0..t {
            let lo = self.lowest_key(i);
            for v in &mut m[i * t + lo..=i * t + i] {
                *v = 0.0;
            }
        }
        Tensor::from_vec(m, (t, t), device)
    }

    fn lowest_key(&self, i: usize) -> usize {
        match self.window {
            Some(w) => (i + 1).saturating_sub(w.max(1)),
            None => 0,
        }
    }

    fn row(&self, i: usize, src: &[f32], dst: &mut [f32]) {
        let lo = self.lowest_key(i);
        let scale = self.scale as f32;
        let mut max = f32::NEG_INFINITY;
        match self.softcap {
            Some(c) => {
                let c = c as f32;
                for j in lo..=i {
                    let v = c * (src[j] * scale / c).tanh();
                    dst[j] = v;
                    max = max.max(v);
                }
            }
            None => {
                for j in lo..=i {
                    let v = src[j] * scale;
                    dst[j] = v;
                    max = max.max(v);
                }
            }
        }
        let mut sum = 0f32;
        for d in &mut dst[lo..=i] {
            *d = (*d - max).exp();
            sum += *d;
        }
        let inv = 1.0 / sum;
        for d in &mut dst[lo..=i] {
            *d *= inv;
        }
        dst[..lo].fill(0.0);
        dst[i + 1..].fill(0.0);
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "coact-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let src = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("masked softmax: expected contiguous f32 input"),
        };
        let t = layout.dims()[layout.dims().len() - 1];
        let mut dst = vec![0f32; src.len()];
        par_rows(&mut dst, t, |r, out| {
            self.row(r % t, &src[r * t..(r + 1) * t], out)
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// The gated MLP nonlinearity on the fused gate/up projection `gu`
/// (`[.., 2 * d_mlp]`, gate first): `act(gate) * up`, `[.., d_mlp]`.
#[derive(Debug, Clone, Copy)]
pub struct Geglu {
    pub activation: crate::lm::Activation,
}

impl Geglu {
    pub fn forward(&self, gu: &Tensor) -> CResult<Tensor> {
        let two_i = gu.dim(D::Minus1)?;
        if !two_i.is_multiple_of(2) {
            candle_core::bail!("gated MLP: odd fused width {two_i}");
        }
        if gu.device().is_cpu() && gu.dtype() == DType::F32 {
            let g = if gu.is_contiguous() {
                gu.clone()
            } else {
                gu.contiguous()?
            };
            return g.apply_op1_no_bwd(self);
        }
        let i = two_i / 2;
        let gate = gu.narrow(D::Minus1, 0, i)?;
        let up = gu.narrow(D::Minus1, i, i)?;
        self.act_tensor(&gate)? * up
    }

    /// The activation alone, with candle ops.
    pub fn act_tensor(&self, x: &Tensor) -> CResult<Tensor> {
        use crate::lm::Activation as A;
        match self.activation {
            A::GeluTanh => x.gelu(),
            A::GeluErf => x.gelu_erf(),
            A::Silu => candle_nn::ops::silu(x),
        }
    }

    /// The activation of one value (the CPU kernel's).
    pub fn act(&self, x: f32) -> f32 {
        use crate::lm::Activation as A;
        match self.activation {
            // 0.5 x (1 + tanh(y)) == x * sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3)
            A::GeluTanh => {
                let y = 0.797_884_6_f32 * (x + 0.044_715 * x * x * x);
                x / (1.0 + (-2.0 * y).exp())
            }
            A::GeluErf => {
                let v = 0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2));
                v as f32
            }
            A::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "coact-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let src = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("gated MLP: expected contiguous f32 input"),
        };
        let dims = layout.dims();
        let two_i = dims[dims.len() - 1];
        let i = two_i / 2;
        let rows = src.len() / two_i;
        let mut dst = vec![0f32; rows * i];
        par_rows(&mut dst, i, |r, out| {
            let row = &src[r * two_i..(r + 1) * two_i];
            let (gate, up) = row.split_at(i);
            for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                *o = self.act(*g) * u;
            }
        });
        let mut shape = dims.to_vec();
        *shape.last_mut().unwrap() = i;
        Ok((CpuStorage::F32(dst), Shape::from(shape)))
    }
}

/// Runs `f(row_index, row)` over the rows of `out` (each `row_len` long) on
/// candle's thread count, in contiguous blocks of rows.
fn par_rows<F>(out: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
    // Threads only pay off on enough work.
    if threads == 1 || out.len() < 1 << 15 {
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(r, row);
        }
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (b, block) in out.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (k, row) in block.chunks_mut(row_len).enumerate() {
                    f(b * per + k, row);
                }
            });
        }
    });
}

/// erf by Abramowitz-Stegun 7.1.26 (absolute error below 1.5e-7): ample for f32.
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn softcap_bounds_and_is_identity_near_zero() {
        let x = Tensor::new(&[-1000f32, -1.0, 0.0, 0.01, 1000.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = softcap(&x, 30.0).unwrap().to_vec1().unwrap();
        close(&y, &[-30.0, -0.99963, 0.0, 0.01, 30.0], 1e-4);
    }

    #[test]
    fn rms_norm_uses_one_plus_w() {
        let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[0f32, 0.5, -1.0, 1.0], &Device::Cpu).unwrap();
        let scale = gemma_norm_scale(&w).unwrap();
        let y: Vec<f32> = rms_norm(&x, &scale, 1e-6)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let rms = ((1.0 + 4.0 + 9.0 + 16.0) / 4.0f32 + 1e-6).sqrt();
        let want: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .zip([1.0f32, 1.5, 0.0, 2.0])
            .map(|(x, s)| x / rms * s)
            .collect();
        close(&y, &want, 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_half_apart() {
        // head_dim 4: pairs (0, 2) and (1, 3), frequencies 1 and 1/theta^(1/2).
        let theta = 100.0;
        let (cos, sin) = rope_tables(3, 4, theta, 1.0, &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let x = x
            .reshape((1, 1, 1, 4))
            .unwrap()
            .repeat((1, 3, 1, 1))
            .unwrap();
        let y: Vec<f32> = rope_bthd(&x, &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut want = vec![];
        for p in 0..3 {
            let f = [1.0f64, 1.0 / theta.powf(0.5)];
            let (x0, x1, x2, x3) = (1.0, 2.0, 3.0, 4.0);
            let (a0, a1) = (p as f64 * f[0], p as f64 * f[1]);
            want.extend([
                x0 * a0.cos() - x2 * a0.sin(),
                x1 * a1.cos() - x3 * a1.sin(),
                x2 * a0.cos() + x0 * a0.sin(),
                x3 * a1.cos() + x1 * a1.sin(),
            ]);
        }
        let want: Vec<f32> = want.into_iter().map(|v| v as f32).collect();
        close(&y, &want, 1e-5);
        // Linear scaling divides positions.
        let (c2, _) = rope_tables(3, 4, theta, 2.0, &Device::Cpu).unwrap();
        let c2: Vec<Vec<f32>> = c2.to_vec2().unwrap();
        assert!((c2[2][0] - 1f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn masked_softmax_matches_candle_ops() {
        let dev = Device::Cpu;
        let t = 7;
        let scores = Tensor::randn(0f32, 3.0, (2, 3, t, t), &dev).unwrap();
        for (softcap, window) in [(None, None), (Some(2.0), Some(3)), (None, Some(1))] {
            let op = MaskedSoftmax {
                scale: 0.7,
                softcap,
                window,
            };
            let fast: Vec<f32> = op
                .forward(&scores)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut s = (&scores * 0.7).unwrap();
            if let Some(c) = softcap {
                s = super::softcap(&s, c).unwrap();
            }
            let s = s.broadcast_add(&op.mask(t, &dev).unwrap()).unwrap();
            let slow: Vec<f32> = candle_nn::ops::softmax_last_dim(&s)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            close(&fast, &slow, 1e-5);
        }
        // Window 3: the query at position 5 sees keys 3, 4, 5 only.
        let m: Vec<Vec<f32>> = MaskedSoftmax {
            scale: 1.0,
            softcap: None,
            window: Some(3),
        }
        .mask(t, &dev)
        .unwrap()
        .to_vec2()
        .unwrap();
        let seen: Vec<usize> = (0..t).filter(|&j| m[5][j] == 0.0).collect();
        assert_eq!(seen, vec![3, 4, 5]);
    }

    #[test]
    fn geglu_matches_candle_ops() {
        let dev = Device::Cpu;
        let gu = Tensor::randn(0f32, 2.0, (5, 2 * 9), &dev).unwrap();
        for act in [
            crate::lm::Activation::GeluTanh,
            crate::lm::Activation::GeluErf,
            crate::lm::Activation::Silu,
        ] {
            let op = Geglu { activation: act };
            let fast: Vec<f32> = op
                .forward(&gu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let gate = gu.narrow(1, 0, 9).unwrap();
            let up = gu.narrow(1, 9, 9).unwrap();
            let slow: Vec<f32> = (op.act_tensor(&gate).unwrap() * up)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            close(&fast, &slow, 2e-5);
        }
    }
}
