//! The model's linear layers through coact's matrix backend
//! ([`crate::linalg`]), as a candle custom op so that the forward stays
//! written in candle tensors: on a CPU device the product runs on oneDNN, on
//! any other device it is candle's own matmul.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result as CResult, Shape, Tensor};
use half::slice::HalfFloatSliceExt;

use crate::linalg::{self, Trans, Weight};

/// `x[.., k] . w` with `w` stored `[k, n]` (`Trans::N`) or `[n, k]`
/// (`Trans::T`), f32 or bf16; the output is f32 `[.., n]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, tb: Trans) -> CResult<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("linear: x has no dimensions");
    let x2 = x.reshape(((), k))?;
    let y = if x.device().is_cpu() {
        x2.apply_op2_no_bwd(w, &Linear { tb })?
    } else {
        let wt = match tb {
            Trans::N => w.clone(),
            Trans::T => w.t()?,
        };
        x2.to_dtype(w.dtype())?.matmul(&wt)?.to_dtype(DType::F32)?
    };
    let n = y.dim(1)?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = n;
    y.reshape(out_dims)
}

struct Linear {
    tb: Trans,
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "coact-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (wr, wc) = wl.shape().dims2()?;
        let (wk, n) = match self.tb {
            Trans::N => (wr, wc),
            Trans::T => (wc, wr),
        };
        if wk != k {
            candle_core::bail!(
                "linear: x is [{m}, {k}] but the weight is [{wr}, {wc}] ({:?})",
                self.tb
            );
        }
        let x = match (xs, xl.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("linear: x must be contiguous f32"),
        };
        let w = match (ws, wl.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Weight::F32(&v[a..b], self.tb),
            (CpuStorage::BF16(v), Some((a, b))) => {
                Weight::Bf16(v[a..b].reinterpret_cast(), self.tb)
            }
            _ => candle_core::bail!("linear: the weight must be contiguous f32 or bf16"),
        };
        let y = linalg::matmul(x, m, k, w, n);
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}
