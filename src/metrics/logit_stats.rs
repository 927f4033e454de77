//! Per-row statistics of logits `z = W h` (the unembedding of final hidden
//! states, [`UnembedWeight`]) streamed over vocabulary slices, so that no
//! `[rows, vocab]` matrix is formed: each row's log-sum-exp, the logit of
//! one target per row, and the expected unembedding row
//! `u = sum_v softmax(z)_v w_v` (the gradient of `lse(W h)` at h).
//!
//! With them the core benchmark's losses need no stored log-probabilities.
//! `CE = lse(z) - z_target`, and for an original forward's `p = softmax(W h_o)`
//! and a patched one's `q = softmax(W h_q)`, because z is linear in h,
//! `KL(p || q) = sum_v p_v (z_o,v - z_q,v) + lse(z_q) - lse(z_o)
//!             = lse(z_q) - lse(z_o) - (h_q - h_o) . u_o`.
//! The products read the hidden rows as [`ProductRows`] holds them (rounded
//! to bf16 for a bf16 weight), and `u` is formed from those same weights, so
//! the first-order terms cancel as they do in exact arithmetic.
//!
//! Products run on tiles of [`ROWS`] hidden rows by [`SLICE`] vocabulary
//! rows (single-threaded oneDNN calls over rayon), and each tile reduces its
//! logits while they are in cache. Per row the tiles are combined in
//! vocabulary order, so the results do not depend on the number of threads.

use rayon::prelude::*;

use super::core_eval::{exp_sum, row_max};
use crate::linalg::{from_bf16, gemm_bf16, sgemm, to_bf16_vec, Trans};
use crate::lm::simd::{self, multiversion};
use crate::lm::UnembedWeight;

/// Vocabulary rows per tile: a tile's logits (256 x 2048 f32) are 2 MB.
pub const SLICE: usize = 2048;
/// Hidden rows per tile (the row tile of [`crate::linalg::matmul`]).
pub const ROWS: usize = 256;
/// Vocabulary groups of [`expected_rows`], each summed on its own (fixed:
/// the order of the sum follows it).
const GROUPS: usize = 16;

/// Hidden rows `[n, d]` as the unembedding product reads them: as given for
/// an f32 weight, rounded to bf16 for a bf16 one.
pub struct ProductRows {
    n: usize,
    d: usize,
    rows: Vec<f32>,
    bf16: Option<Vec<u16>>,
}

impl ProductRows {
    /// `hidden` is `[n, d]` row-major f32.
    pub fn new(w: UnembedWeight<'_>, hidden: Vec<f32>, d: usize) -> ProductRows {
        assert!(
            d > 0 && hidden.len().is_multiple_of(d),
            "hidden rows: {} values are not rows of {d}",
            hidden.len()
        );
        let n = hidden.len() / d;
        match w {
            UnembedWeight::F32(_) => ProductRows {
                n,
                d,
                rows: hidden,
                bf16: None,
            },
            UnembedWeight::Bf16(_) => {
                let bits = to_bf16_vec(&hidden);
                let rows = bits.iter().map(|&b| from_bf16(b)).collect();
                ProductRows {
                    n,
                    d,
                    rows,
                    bf16: Some(bits),
                }
            }
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Row i as the product reads it.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.d..(i + 1) * self.d]
    }

    /// The rows as the product reads them, `[n, d]` row-major f32.
    pub fn into_rows(self) -> Vec<f32> {
        self.rows
    }
}

/// The vocabulary size of `w` for rows of width d.
fn vocab(w: UnembedWeight<'_>, d: usize) -> usize {
    let len = match w {
        UnembedWeight::F32(v) => v.len(),
        UnembedWeight::Bf16(v) => v.len(),
    };
    assert!(
        len.is_multiple_of(d),
        "the unembedding's {len} values are not rows of {d}"
    );
    len / d
}

/// The logits of hidden rows `r` on vocabulary rows `v`, into `out`
/// (`[r, v]` row-major, resized).
fn tile_logits(
    w: UnembedWeight<'_>,
    x: &ProductRows,
    r: std::ops::Range<usize>,
    v: std::ops::Range<usize>,
    out: &mut Vec<f32>,
) {
    let d = x.d;
    let (m, n) = (r.len(), v.len());
    out.clear();
    out.resize(m * n, 0.0);
    match (w, &x.bf16) {
        (UnembedWeight::F32(wv), _) => sgemm(
            Trans::N,
            Trans::T,
            m,
            n,
            d,
            1.0,
            &x.rows[r.start * d..r.end * d],
            d,
            &wv[v.start * d..v.end * d],
            d,
            0.0,
            out,
            n,
        ),
        (UnembedWeight::Bf16(wv), Some(xb)) => gemm_bf16(
            Trans::N,
            Trans::T,
            m,
            n,
            d,
            1.0,
            &xb[r.start * d..r.end * d],
            d,
            &wv[v.start * d..v.end * d],
            d,
            0.0,
            out,
            n,
        ),
        (UnembedWeight::Bf16(_), None) => {
            panic!("ProductRows made for an f32 weight used with a bf16 one")
        }
    }
}

/// Per row: the log-sum-exp of its logits and the logit of its target (NaN
/// where it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct LogitStats {
    pub lse: Vec<f64>,
    pub target: Vec<f64>,
}

/// One tile's part of [`LogitStats`]: per row its max, `sum e^(z - max)`
/// and the target's logit when the target is in the tile's slice.
struct TilePart {
    max: Vec<f32>,
    sum: Vec<f64>,
    target: Vec<Option<f32>>,
}

/// [`LogitStats`] of `x`'s rows under `w`; `targets` has one entry per row.
pub fn logit_stats(w: UnembedWeight<'_>, x: &ProductRows, targets: &[Option<u32>]) -> LogitStats {
    assert_eq!(targets.len(), x.n, "one target (or none) per row");
    let vocab = vocab(w, x.d);
    let (blocks, slices) = (x.n.div_ceil(ROWS), vocab.div_ceil(SLICE));
    // Row blocks outer, slices inner: a block's parts come in vocabulary order.
    let parts: Vec<TilePart> = (0..blocks * slices)
        .into_par_iter()
        .map_init(Vec::new, |buf, t| {
            let (b, s) = (t / slices, t % slices);
            let r = b * ROWS..((b + 1) * ROWS).min(x.n);
            let v = s * SLICE..((s + 1) * SLICE).min(vocab);
            tile_logits(w, x, r.clone(), v.clone(), buf);
            let mut part = TilePart {
                max: Vec::with_capacity(r.len()),
                sum: Vec::with_capacity(r.len()),
                target: Vec::with_capacity(r.len()),
            };
            for (i, z) in r.clone().zip(buf.chunks_exact(v.len())) {
                let m = row_max(z);
                part.max.push(m);
                part.sum.push(exp_sum(z, m));
                part.target.push(
                    targets[i]
                        .map(|tg| tg as usize)
                        .filter(|tg| v.contains(tg))
                        .map(|tg| z[tg - v.start]),
                );
            }
            part
        })
        .collect();
    let mut stats = LogitStats {
        lse: Vec::with_capacity(x.n),
        target: Vec::with_capacity(x.n),
    };
    for (b, block) in parts.chunks(slices).enumerate() {
        for i in 0..block[0].max.len() {
            let m = block
                .iter()
                .map(|p| p.max[i])
                .fold(f32::NEG_INFINITY, f32::max) as f64;
            let total: f64 = block
                .iter()
                .map(|p| p.sum[i] * (p.max[i] as f64 - m).exp())
                .sum();
            stats.lse.push(m + total.ln());
            let row = b * ROWS + i;
            let hit = block.iter().find_map(|p| p.target[i]);
            if let (Some(tg), None) = (targets[row], hit) {
                panic!("target {tg} of row {row} is outside the vocabulary of {vocab}");
            }
            stats.target.push(hit.map_or(f64::NAN, |z| z as f64));
        }
    }
    stats
}

multiversion! {
    /// `x <- e^(x - m)`.
    fn exp_shifted(x: &mut [f32], m: f32) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for v in c.iter_mut() {
                *v = simd::exp(*v - m);
            }
        }
        for v in chunks.into_remainder() {
            *v = simd::exp(*v - m);
        }
    }
}

/// Per row of `x`, `u = sum_v softmax(z)_v w_v` (`[n, d]` row-major f32),
/// with `lse` the rows' log-sum-exp from [`logit_stats`]. The weight rows are
/// the product's own (bf16 values widened exactly), the sum in f32 by vocabulary
/// groups added in order.
pub fn expected_rows(w: UnembedWeight<'_>, x: &ProductRows, lse: &[f64]) -> Vec<f32> {
    assert_eq!(lse.len(), x.n, "one log-sum-exp per row");
    let (d, vocab) = (x.d, vocab(w, x.d));
    let (blocks, slices) = (x.n.div_ceil(ROWS), vocab.div_ceil(SLICE));
    let groups = GROUPS.min(slices);
    let parts: Vec<Vec<f32>> = (0..blocks * groups)
        .into_par_iter()
        .map(|t| {
            let (b, g) = (t / groups, t % groups);
            let r = b * ROWS..((b + 1) * ROWS).min(x.n);
            let mut acc = vec![0.0f32; r.len() * d];
            let (mut p, mut wide) = (Vec::new(), Vec::new());
            for s in g * slices / groups..(g + 1) * slices / groups {
                let v = s * SLICE..((s + 1) * SLICE).min(vocab);
                tile_logits(w, x, r.clone(), v.clone(), &mut p);
                for (i, z) in r.clone().zip(p.chunks_exact_mut(v.len())) {
                    exp_shifted(z, lse[i] as f32);
                }
                let ws: &[f32] = match w {
                    UnembedWeight::F32(wv) => &wv[v.start * d..v.end * d],
                    UnembedWeight::Bf16(wv) => {
                        wide.clear();
                        wide.extend(wv[v.start * d..v.end * d].iter().map(|&b| from_bf16(b)));
                        &wide
                    }
                };
                sgemm(
                    Trans::N,
                    Trans::N,
                    r.len(),
                    d,
                    v.len(),
                    1.0,
                    &p,
                    v.len(),
                    ws,
                    d,
                    1.0,
                    &mut acc,
                    d,
                );
            }
            acc
        })
        .collect();
    let mut u = vec![0.0f32; x.n * d];
    for (b, block) in parts.chunks(groups).enumerate() {
        let out = &mut u[b * ROWS * d..(b * ROWS * d + block[0].len())];
        for part in block {
            out.iter_mut().zip(part).for_each(|(o, &v)| *o += v);
        }
    }
    u
}
