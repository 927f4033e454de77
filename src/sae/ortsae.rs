//! OrtSAE's chunk-wise orthogonality penalty (Korznikov et al. 2025): each
//! step the latents are split at random into K chunks of (nearly) equal
//! size; within a chunk every latent is charged the squared cosine to its
//! most similar other decoder row, and the charges are averaged per chunk,
//! then over chunks:
//!
//! `P = (1/K) sum_k (1/|C_k|) sum_{i in C_k} max_{j in C_k, j != i} cos^2(d_i, d_j)`.
//!
//! The cost is K Gram matrices of |C_k| = F / K rows, `2 F^2 d / K` flops,
//! linear in F for a fixed chunk size (the paper's point). The gradient
//! treats each argmax as fixed (a subgradient, as autograd gives through
//! `max`): `d cos^2 / d d_i = 2 cos (u_j - cos u_i) / |d_i|` with
//! `u = d / |d|`, on both rows of each charged pair.
//!
//! With `compute: bf16` the Gram products take bf16 unit rows and only
//! choose each row's partner; the chosen pair's cosine is then recomputed
//! in f32, as the encoder's bf16 products only choose the active latents.
//! A near-tie (|cos| within bf16 rounding, ~1e-3) may pick the other
//! partner, whose exact cos^2 is then charged: P never exceeds its f32 value.
//!
//! Deterministic: the partition comes from the trainer's seeded RNG, the
//! Gram products are fixed tiles of single-threaded calls, and each chunk's
//! gradient rows are summed in a fixed order by one task.

use rayon::prelude::*;

use super::buffers::take_buffer;
use super::ortho::{PairPenalty, SparseRowGrad};
use super::rows::{axpy, dot};
use crate::linalg::{self, Trans};
use crate::rng::SplitMix64;

/// Rows of a chunk's Gram matrix computed by one task.
const GRAM_ROWS: usize = 128;

/// The penalty and the gradient of `lambda * P` for the decoder `w_dec`
/// ([f, d]), the partition drawn from `rng` (K = `chunks`, at most f); with
/// `bf16`, the Gram products in bf16 (see the module docs).
pub(crate) fn chunk_penalty(
    w_dec: &[f32],
    d: usize,
    f: usize,
    chunks: usize,
    rng: &mut SplitMix64,
    lambda: f32,
    bf16: bool,
) -> PairPenalty {
    let k = chunks.clamp(1, f.max(1));
    let mut order: Vec<u32> = (0..f as u32).collect();
    rng.shuffle(&mut order);
    let bounds: Vec<usize> = (0..=k).map(|c| c * f / k).collect();
    // Unit rows, gathered chunk by chunk (chunk c is rows bounds[c]..bounds[c+1]).
    let mut unit = vec![0.0f32; f * d];
    let mut inv_norm = vec![0.0f32; f];
    unit.par_chunks_mut(d)
        .zip(inv_norm.par_iter_mut())
        .zip(order.par_iter())
        .for_each(|((u, inv), &j)| {
            let row = &w_dec[j as usize * d..(j as usize + 1) * d];
            let nn = dot(row, row).sqrt();
            *inv = if nn > 0.0 { 1.0 / nn } else { 0.0 };
            u.iter_mut().zip(row).for_each(|(a, &b)| *a = b * *inv);
        });
    let unit_bf16: Option<Vec<u16>> = bf16.then(|| {
        let mut b = vec![0u16; f * d];
        b.par_chunks_mut(GRAM_ROWS * d)
            .zip(unit.par_chunks(GRAM_ROWS * d))
            .for_each(|(b, u)| linalg::convert_to_bf16(u, b));
        b
    });
    // Each row's closest partner (position within the permuted order) and cosine.
    let tiles: Vec<(usize, usize, usize)> = (0..k)
        .flat_map(|c| {
            let (lo, hi) = (bounds[c], bounds[c + 1]);
            (lo..hi)
                .step_by(GRAM_ROWS)
                .map(move |r| (c, r, (r + GRAM_ROWS).min(hi)))
        })
        .collect();
    let best: Vec<Vec<(usize, f32)>> = tiles
        .par_iter()
        .map(|&(c, r0, r1)| {
            let (lo, hi) = (bounds[c], bounds[c + 1]);
            let (m, w) = (r1 - r0, hi - lo);
            let mut gram = vec![0.0f32; m * w];
            if m > 0 && w > 0 {
                match unit_bf16.as_deref() {
                    Some(ub) => linalg::gemm_bf16(
                        Trans::N,
                        Trans::T,
                        m,
                        w,
                        d,
                        1.0,
                        &ub[r0 * d..r1 * d],
                        d,
                        &ub[lo * d..hi * d],
                        d,
                        0.0,
                        &mut gram,
                        w,
                    ),
                    None => linalg::sgemm(
                        Trans::N,
                        Trans::T,
                        m,
                        w,
                        d,
                        1.0,
                        &unit[r0 * d..r1 * d],
                        d,
                        &unit[lo * d..hi * d],
                        d,
                        0.0,
                        &mut gram,
                        w,
                    ),
                }
            }
            (0..m)
                .map(|r| {
                    let row = &gram[r * w..(r + 1) * w];
                    let me = r0 + r - lo;
                    let mut arg = (usize::MAX, 0.0f32);
                    for (q, &cv) in row.iter().enumerate() {
                        if q != me && (arg.0 == usize::MAX || cv * cv > arg.1 * arg.1) {
                            arg = (lo + q, cv);
                        }
                    }
                    if unit_bf16.is_some() && arg.0 != usize::MAX {
                        let (p, q) = (r0 + r, arg.0);
                        arg.1 = dot(&unit[p * d..(p + 1) * d], &unit[q * d..(q + 1) * d]);
                    }
                    arg
                })
                .collect()
        })
        .collect();
    let best: Vec<(usize, f32)> = best.into_iter().flatten().collect();

    // Per chunk: the penalty and the gradient rows of its latents.
    let mut grad = take_buffer(f * d);
    let mut chunk_rows: Vec<&mut [f32]> = Vec::with_capacity(k);
    let mut rest = &mut grad[..];
    for c in 0..k {
        let (a, b) = std::mem::take(&mut rest).split_at_mut((bounds[c + 1] - bounds[c]) * d);
        chunk_rows.push(a);
        rest = b;
    }
    let sums: Vec<(f64, f64)> = chunk_rows
        .into_par_iter()
        .enumerate()
        .map(|(c, g)| {
            g.iter_mut().for_each(|v| *v = 0.0);
            let lo = bounds[c];
            let size = bounds[c + 1] - lo;
            if size < 2 {
                return (0.0, 0.0);
            }
            let w = 1.0 / (k as f64 * size as f64);
            let (mut value, mut abs_cos) = (0.0f64, 0.0f64);
            for p in lo..lo + size {
                let (q, cos) = best[p];
                value += w * (cos as f64) * (cos as f64);
                abs_cos += cos.abs() as f64;
                let coef = lambda * (w as f32) * 2.0 * cos;
                let (up, uq) = (&unit[p * d..(p + 1) * d], &unit[q * d..(q + 1) * d]);
                // d/dd_p: coef (u_q - cos u_p) / |d_p|; likewise for q.
                let gp = &mut g[(p - lo) * d..(p - lo + 1) * d];
                axpy(gp, coef * inv_norm[p], uq);
                axpy(gp, -coef * cos * inv_norm[p], up);
                let gq = &mut g[(q - lo) * d..(q - lo + 1) * d];
                axpy(gq, coef * inv_norm[q], up);
                axpy(gq, -coef * cos * inv_norm[q], uq);
            }
            (value, abs_cos)
        })
        .collect();
    let mut slot = vec![0u32; f];
    for (pos, &j) in order.iter().enumerate() {
        slot[j as usize] = pos as u32;
    }
    PairPenalty {
        value: sums.iter().map(|s| s.0).sum(),
        abs_cos_sum: sums.iter().map(|s| s.1).sum(),
        grad: SparseRowGrad { slot, d, grad },
    }
}
