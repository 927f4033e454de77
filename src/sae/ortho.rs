//! Weighted decoder-cosine penalties over a sparse set of pairs, with their
//! gradient: `P = sum_p w_p |cos(d_i, d_j)|` for pairs p = (i, j).
//!
//! Both orthogonality variants reduce to this: the guided term uses the
//! competing pairs of the batch with `w_p = c_ij / sum c`, the uniform term a
//! random sample of pairs with `w_p = 1 / pairs`. The gradient only touches
//! rows that appear in a pair and is returned sparsely (one row per touched
//! latent), computed per row (each row sums over its own pairs in a fixed
//! order), so the result does not depend on thread scheduling.

use rayon::prelude::*;

use super::model::dot;

/// Gradient rows for the latents that appear in at least one pair.
#[derive(Debug, Default)]
pub(crate) struct SparseRowGrad {
    /// `slot[j]`: position of latent j in `rows`, or `u32::MAX`.
    pub slot: Vec<u32>,
    pub rows: Vec<u32>,
    /// `rows.len() * d` values.
    pub grad: Vec<f32>,
}

impl SparseRowGrad {
    pub fn row(&self, j: usize) -> Option<&[f32]> {
        let s = *self.slot.get(j)?;
        if s == u32::MAX {
            return None;
        }
        let d = self.grad.len() / self.rows.len();
        Some(&self.grad[s as usize * d..(s as usize + 1) * d])
    }
}

pub(crate) struct PairPenalty {
    /// `sum_p w_p |cos_p|`.
    pub value: f64,
    /// `cos_p` for each pair.
    pub cos: Vec<f32>,
    /// Gradient of `scale * value` with respect to the decoder rows.
    pub grad: SparseRowGrad,
}

/// The penalty and the gradient of `scale * penalty` through the true cosine
/// `d_i . d_j / (|d_i| |d_j|)` (for unit rows this is `d_j - cos d_i`).
pub(crate) fn weighted_abs_cos(
    w_dec: &[f32],
    d: usize,
    f: usize,
    pairs: &[(u32, u32)],
    weights: &[f32],
    scale: f32,
) -> PairPenalty {
    assert_eq!(pairs.len(), weights.len());
    // Rows involved, ascending; their inverse norms.
    let mut slot = vec![u32::MAX; f];
    let mut deg = vec![0u32; f];
    for &(i, j) in pairs {
        deg[i as usize] += 1;
        deg[j as usize] += 1;
    }
    let mut rows = Vec::new();
    for (j, &c) in deg.iter().enumerate() {
        if c > 0 {
            slot[j] = rows.len() as u32;
            rows.push(j as u32);
        }
    }
    let inv: Vec<f32> = rows
        .par_iter()
        .map(|&j| {
            let r = &w_dec[j as usize * d..(j as usize + 1) * d];
            let nrm = dot(r, r).sqrt();
            if nrm > 0.0 {
                1.0 / nrm
            } else {
                0.0
            }
        })
        .collect();
    let row = |j: u32| &w_dec[j as usize * d..(j as usize + 1) * d];
    let cos: Vec<f32> = pairs
        .par_iter()
        .map(|&(i, j)| {
            dot(row(i), row(j)) * inv[slot[i as usize] as usize] * inv[slot[j as usize] as usize]
        })
        .collect();
    let value: f64 = cos
        .iter()
        .zip(weights)
        .map(|(&c, &w)| w as f64 * c.abs() as f64)
        .sum();

    // Per-row adjacency (pair index, partner), by counting sort over slots.
    let nr = rows.len();
    let mut start = vec![0usize; nr + 1];
    for (s, &j) in rows.iter().enumerate() {
        start[s + 1] = start[s] + deg[j as usize] as usize;
    }
    let mut fill = start.clone();
    let mut adj = vec![(0u32, 0u32); start[nr]];
    for (p, &(i, j)) in pairs.iter().enumerate() {
        let si = slot[i as usize] as usize;
        adj[fill[si]] = (p as u32, j);
        fill[si] += 1;
        let sj = slot[j as usize] as usize;
        adj[fill[sj]] = (p as u32, i);
        fill[sj] += 1;
    }
    let mut grad = vec![0.0f32; nr * d];
    grad.par_chunks_mut(d).enumerate().for_each(|(s, g)| {
        let me = rows[s];
        let inv_i = inv[s];
        let mut self_coef = 0.0f32;
        for &(p, other) in &adj[start[s]..start[s + 1]] {
            let c = cos[p as usize];
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            let w = scale * weights[p as usize] * sign;
            if w == 0.0 {
                continue;
            }
            let inv_j = inv[slot[other as usize] as usize];
            let a = w * inv_i * inv_j;
            for (gv, &v) in g.iter_mut().zip(row(other)) {
                *gv += a * v;
            }
            self_coef += w * c * inv_i * inv_i;
        }
        if self_coef != 0.0 {
            for (gv, &v) in g.iter_mut().zip(row(me)) {
                *gv -= self_coef * v;
            }
        }
    });
    PairPenalty {
        value,
        cos,
        grad: SparseRowGrad { slot, rows, grad },
    }
}
