//! Weighted decoder-cosine penalties over a sparse set of pairs, with their
//! gradient: `P = sum_p w_p |cos(d_i, d_j)|` for pairs p = (i, j), and the
//! gradient of `scale * P` through the true cosine (for unit rows
//! `d/dd_i |cos_ij| = sign(cos_ij) (d_j - cos_ij d_i)`).
//!
//! The guided term (`w_p = c_ij / sum c`, over the batch's competing pairs)
//! goes token by token ([`token_penalty`]): each pair is placed on the first
//! token where both latents fire ([`TokenPairs`]), so a token's k decoder rows
//! are read from memory once and reused from cache for all the pairs it owns
//! (about k^2 / 2 of them); each cosine is computed once, and each active
//! entry (t, i) gets one partial gradient row `sum_j a_ij d_j - s_i d_i` over
//! the pairs owned by t. A latent's gradient is the sum of its partial rows
//! in token order. Reading decoder rows per pair instead (millions of pairs
//! at d_sae 16384) is bound by memory bandwidth and is ~10x slower.
//!
//! The uniform term (`w_p = 1 / pairs`, random pairs) and the guided term's
//! fallback for very large batches go latent by latent ([`partner_penalty`]):
//! symmetric partner lists ([`PartnerBlock`], each pair in both of its rows),
//! each row's gradient one gather-accumulate over its partners, no scatter.
//!
//! Both use the same kernels: up to 8 rows at once, their dot products with
//! one row (each with its own accumulator, the same lane layout whatever the
//! group, so `dot(x, y)` and `dot(y, x)` agree bit for bit) and their
//! weighted sum into one row. Every sum has a fixed order (per row over its
//! pairs in list order; the penalty per task of a fixed size, then over
//! tasks in order), so the result does not depend on thread scheduling or on
//! the number of threads.

use rayon::prelude::*;

use super::buffers::{give_buffer, take_buffer};
use super::cofire::{PartnerBlock, TokenPairs, PARTNER_BLOCK};
use super::rows::dot;

/// Gradient rows for the latents that appear in at least one pair.
#[derive(Debug, Default)]
pub(crate) struct SparseRowGrad {
    /// `slot[j]`: the row of `grad` holding latent j's gradient, or `u32::MAX`.
    pub slot: Vec<u32>,
    pub d: usize,
    /// Rows of `d` values (some may be unused scratch).
    pub grad: Vec<f32>,
}

impl Drop for SparseRowGrad {
    fn drop(&mut self) {
        give_buffer(std::mem::take(&mut self.grad));
    }
}

impl SparseRowGrad {
    pub fn row(&self, j: usize) -> Option<&[f32]> {
        let s = *self.slot.get(j)?;
        if s == u32::MAX {
            return None;
        }
        Some(&self.grad[s as usize * self.d..(s as usize + 1) * self.d])
    }
}

pub(crate) struct PairPenalty {
    /// `sum_p w_p |cos_p|`.
    pub value: f64,
    /// `sum_p |cos_p|` (unweighted, for statistics).
    pub abs_cos_sum: f64,
    /// Gradient of `scale * value` with respect to the decoder rows.
    pub grad: SparseRowGrad,
}

/// Symmetric partner lists for a list of pairs `(i, j)`, `i != j` (repeats
/// allowed: each is its own term), each with raw weight 1. Rows in ascending
/// order, partners in the order of the pairs.
pub(crate) fn pairs_to_blocks(f: usize, pairs: &[(u32, u32)]) -> Vec<PartnerBlock> {
    let mut deg = vec![0usize; f + 1];
    for &(i, j) in pairs {
        deg[i as usize + 1] += 1;
        deg[j as usize + 1] += 1;
    }
    for r in 0..f {
        deg[r + 1] += deg[r];
    }
    let start = deg;
    let mut fill = start.clone();
    let mut partners = vec![0u32; start[f]];
    for &(i, j) in pairs {
        partners[fill[i as usize]] = j;
        fill[i as usize] += 1;
        partners[fill[j as usize]] = i;
        fill[j as usize] += 1;
    }
    (0..f)
        .collect::<Vec<_>>()
        .chunks(PARTNER_BLOCK)
        .map(|rows| {
            let mut b = PartnerBlock {
                offsets: vec![0],
                ..Default::default()
            };
            for &r in rows {
                let p = &partners[start[r]..start[r + 1]];
                if !p.is_empty() {
                    b.rows.push(r as u32);
                    b.partners.extend_from_slice(p);
                    b.offsets.push(b.partners.len());
                }
            }
            b.c = vec![1.0; b.partners.len()];
            b
        })
        .collect()
}

/// The penalty `sum_pairs w |cos|` over the pairs listed in `blocks` (each
/// pair in both of its rows), `w = (c / norm) as f32` for the listed raw
/// weight c, and the gradient of `scale * penalty` through the true cosine
/// `d_i . d_j / (|d_i| |d_j|)` (for unit rows `d_j - cos d_i`).
pub(crate) fn partner_penalty(
    w_dec: &[f32],
    d: usize,
    f: usize,
    blocks: &[PartnerBlock],
    norm: f64,
    scale: f32,
) -> PairPenalty {
    assert!(w_dec.len() >= f * d);
    let mut slot = vec![u32::MAX; f];
    let mut rows = Vec::new();
    for b in blocks {
        for &r in &b.rows {
            assert!((r as usize) < f && slot[r as usize] == u32::MAX);
            slot[r as usize] = rows.len() as u32;
            rows.push(r);
        }
        assert_eq!(b.offsets.len(), b.rows.len() + 1);
        assert!(b.partners.len() == b.c.len() && *b.offsets.last().unwrap() == b.partners.len());
    }
    // Every partner is a row of its own (the lists are symmetric).
    for b in blocks {
        assert!(b
            .partners
            .iter()
            .all(|&j| (j as usize) < f && slot[j as usize] != u32::MAX));
    }
    let inv: Vec<f32> = (0..f)
        .into_par_iter()
        .with_min_len(256)
        .map(|j| {
            if slot[j] == u32::MAX {
                return 0.0;
            }
            let r = &w_dec[j * d..(j + 1) * d];
            let nrm = dot(r, r).sqrt();
            if nrm > 0.0 {
                1.0 / nrm
            } else {
                0.0
            }
        })
        .collect();

    // Every row is written (zeroed first) by row_grad.
    let mut grad = take_buffer(rows.len() * d);
    let mut parts: Vec<&mut [f32]> = Vec::with_capacity(blocks.len());
    let mut rest = &mut grad[..];
    for b in blocks {
        let (a, r) = rest.split_at_mut(b.rows.len() * d);
        parts.push(a);
        rest = r;
    }
    let sums: Vec<(f64, f64)> = blocks
        .par_iter()
        .zip(parts)
        .map(|(b, g)| {
            let (mut value, mut abs) = (0.0f64, 0.0f64);
            for (r, gr) in g.chunks_mut(d.max(1)).enumerate().take(b.rows.len()) {
                let (lo, hi) = (b.offsets[r], b.offsets[r + 1]);
                let (v, a) = row_grad(
                    w_dec,
                    d,
                    b.rows[r] as usize,
                    &inv,
                    &b.partners[lo..hi],
                    &b.c[lo..hi],
                    norm,
                    scale,
                    gr,
                );
                value += v;
                abs += a;
            }
            (value, abs)
        })
        .collect();
    let (mut value, mut abs_cos_sum) = (0.0f64, 0.0f64);
    for (v, a) in sums {
        value += v;
        abs_cos_sum += a;
    }
    PairPenalty {
        value,
        abs_cos_sum,
        grad: SparseRowGrad { slot, d, grad },
    }
}

struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

/// Tokens per task of [`token_penalty`] (fixed: the penalty's sum follows it).
const TOK_TASK: usize = 8;

/// The guided penalty from pairs placed on their first co-firing token
/// ([`TokenPairs`], weights `c_ij / tp.c_sum`) and the gradient of
/// `scale * penalty`. Per token, the k_t decoder rows are read once (they stay
/// in cache), each owned pair's cosine is computed once, and each active
/// latent gets one partial gradient row `sum_q a_pq d_q - s_p d_p` over the
/// pairs owned by the token; a latent's gradient is then the sum of its
/// partial rows in token order. Memory: one row of d values per active entry.
pub(crate) fn token_penalty(
    w_dec: &[f32],
    d: usize,
    f: usize,
    indptr: &[usize],
    indices: &[u32],
    tp: &TokenPairs,
    scale: f32,
) -> PairPenalty {
    let n_tok = indptr.len() - 1;
    let ne = indices.len();
    assert!(w_dec.len() >= f * d && tp.base.len() == n_tok + 1);
    // Latent-major position of each entry (entries of a latent in token order).
    let mut start = vec![0usize; f + 1];
    for &j in indices {
        start[j as usize + 1] += 1;
    }
    for j in 0..f {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut pos = vec![0u32; ne];
    for (e, &j) in indices.iter().enumerate() {
        pos[e] = fill[j as usize] as u32;
        fill[j as usize] += 1;
    }
    drop(fill);
    let inv: Vec<f32> = (0..f)
        .into_par_iter()
        .with_min_len(256)
        .map(|j| {
            if tp.n[j] == 0 {
                return 0.0;
            }
            let r = &w_dec[j * d..(j + 1) * d];
            let mut nn = [0.0f32];
            kernels::dots(r, &[r], &mut nn);
            let nrm = nn[0].sqrt();
            if nrm > 0.0 {
                1.0 / nrm
            } else {
                0.0
            }
        })
        .collect();
    // Every row that is read is written first.
    let mut grad = take_buffer(ne * d);
    let mut used = vec![false; ne];
    let gp = SyncPtr(grad.as_mut_ptr());
    let up = SyncPtr(used.as_mut_ptr());
    let (gp, up, pos_ref, inv) = (&gp, &up, &pos, &inv);
    let sums: Vec<(f64, f64)> = (0..n_tok.div_ceil(TOK_TASK))
        .into_par_iter()
        .map_init(TokScratch::default, |sc, task| {
            let (mut value, mut abs) = (0.0f64, 0.0f64);
            let t0 = task * TOK_TASK;
            for t in t0..(t0 + TOK_TASK).min(n_tok) {
                let (lo, hi) = (indptr[t], indptr[t + 1]);
                let (v, a) = token_grad(
                    w_dec,
                    d,
                    inv,
                    &indices[lo..hi],
                    &tp.c[tp.base[t]..tp.base[t + 1]],
                    tp.c_sum,
                    scale,
                    sc,
                    |p| {
                        let at = pos_ref[lo + p] as usize;
                        // SAFETY: each entry has its own row and flag, written
                        // only by the task of its token; both lie inside.
                        unsafe {
                            *up.0.add(at) = true;
                            std::slice::from_raw_parts_mut(gp.0.add(at * d), d)
                        }
                    },
                );
                value += v;
                abs += a;
            }
            // The rows went out with streaming stores.
            kernels::store_fence();
            (value, abs)
        })
        .collect();
    let (mut value, mut abs_cos_sum) = (0.0f64, 0.0f64);
    for (v, a) in sums {
        value += v;
        abs_cos_sum += a;
    }
    // Each latent's gradient: its used partial rows summed in token order,
    // into the first of them.
    let mut slot = vec![u32::MAX; f];
    slot.par_chunks_mut(PARTNER_BLOCK)
        .enumerate()
        .for_each(|(b, sl)| {
            for (q, s) in sl.iter_mut().enumerate() {
                let j = b * PARTNER_BLOCK + q;
                let mut rows = (start[j]..start[j + 1]).filter(|&r| used[r]);
                let Some(first) = rows.next() else {
                    continue;
                };
                *s = first as u32;
                // SAFETY: rows start[j]..start[j + 1] belong to latent j only.
                let acc = unsafe { std::slice::from_raw_parts_mut(gp.0.add(first * d), d) };
                for r in rows {
                    let src = unsafe { std::slice::from_raw_parts(gp.0.add(r * d), d) };
                    kernels::axpys(acc, &[1.0], &[src]);
                }
            }
        });
    PairPenalty {
        value,
        abs_cos_sum,
        grad: SparseRowGrad { slot, d, grad },
    }
}

#[derive(Default)]
struct TokScratch {
    inv: Vec<f32>,
    row: Vec<f32>,
    coef: Vec<f32>,
    self_coef: Vec<f32>,
    qs: Vec<u32>,
}

/// One token: the cosines of the pairs it owns (`cb`, k x k, 0 = not owned),
/// their share of the penalty, and the partial gradient row of each of its
/// latents with an owned pair, written to `out(p)`.
#[allow(clippy::too_many_arguments)]
fn token_grad<'a>(
    w_dec: &[f32],
    d: usize,
    inv: &[f32],
    list: &[u32],
    cb: &[f32],
    c_sum: f64,
    scale: f32,
    sc: &mut TokScratch,
    mut out: impl FnMut(usize) -> &'a mut [f32],
) -> (f64, f64) {
    let k = list.len();
    let row = |p: usize| &w_dec[list[p] as usize * d..(list[p] as usize + 1) * d];
    let (mut value, mut abs) = (0.0f64, 0.0f64);
    if !cb.iter().any(|&c| c != 0.0) {
        return (value, abs);
    }
    sc.inv.clear();
    sc.inv.extend(list.iter().map(|&j| inv[j as usize]));
    sc.row.resize(d, 0.0);
    sc.coef.clear();
    sc.coef.resize(k * k, 0.0);
    sc.self_coef.clear();
    sc.self_coef.resize(k, 0.0);
    let mut dots = [0.0f32; GROUP];
    for p in 0..k {
        sc.qs.clear();
        sc.qs.extend(
            (p + 1..k)
                .filter(|&q| cb[p * k + q] != 0.0)
                .map(|q| q as u32),
        );
        let rp = row(p);
        let inv_p = sc.inv[p];
        for grp in sc.qs.chunks(GROUP) {
            let mut src: [&[f32]; GROUP] = [rp; GROUP];
            for (s, &q) in src.iter_mut().zip(grp) {
                *s = row(q as usize);
            }
            let m = grp.len();
            kernels::dots(rp, &src[..m], &mut dots[..m]);
            for (g, &q) in grp.iter().enumerate() {
                let q = q as usize;
                let inv_q = sc.inv[q];
                let w = (cb[p * k + q] as f64 / c_sum) as f32;
                let c = dots[g] * (inv_p * inv_q);
                value += w as f64 * c.abs() as f64;
                abs += c.abs() as f64;
                let sign = if c > 0.0 {
                    1.0
                } else if c < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let ws = scale * w * sign;
                if ws == 0.0 {
                    continue;
                }
                let a = ws * (inv_p * inv_q);
                sc.coef[p * k + q] = a;
                sc.coef[q * k + p] = a;
                sc.self_coef[p] += ws * c * inv_p * inv_p;
                sc.self_coef[q] += ws * c * inv_q * inv_q;
            }
        }
    }
    for p in 0..k {
        let cr = &sc.coef[p * k..(p + 1) * k];
        if sc.self_coef[p] == 0.0 && !cr.iter().any(|&a| a != 0.0) {
            continue;
        }
        // Accumulated in L1, then streamed out.
        let g = &mut sc.row[..];
        g.iter_mut().for_each(|v| *v = 0.0);
        let mut coef = [0.0f32; GROUP];
        let mut src: [&[f32]; GROUP] = [row(p); GROUP];
        let mut m = 0;
        for (q, &a) in cr.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            coef[m] = a;
            src[m] = row(q);
            m += 1;
            if m == GROUP {
                kernels::axpys(g, &coef, &src);
                m = 0;
            }
        }
        kernels::axpys(g, &coef[..m], &src[..m]);
        if sc.self_coef[p] != 0.0 {
            kernels::axpys(g, &[-sc.self_coef[p]], &[row(p)]);
        }
        kernels::store_stream(out(p), g);
    }
    (value, abs)
}

/// Partners per fused dot/accumulate group.
const GROUP: usize = 8;

/// Row i's gradient into `g` (len d); returns its share of the penalty and of
/// `sum |cos|` (the pairs where i is the smaller latent).
#[allow(clippy::too_many_arguments)]
fn row_grad(
    w_dec: &[f32],
    d: usize,
    i: usize,
    inv: &[f32],
    partners: &[u32],
    raw: &[f32],
    norm: f64,
    scale: f32,
    g: &mut [f32],
) -> (f64, f64) {
    let di = &w_dec[i * d..(i + 1) * d];
    let inv_i = inv[i];
    let (mut value, mut abs) = (0.0f64, 0.0f64);
    let mut self_coef = 0.0f32;
    g.iter_mut().for_each(|v| *v = 0.0);
    let mut dots = [0.0f32; GROUP];
    for (pb, rb) in partners.chunks(GROUP).zip(raw.chunks(GROUP)) {
        let mut src: [&[f32]; GROUP] = [di; GROUP];
        for (s, &j) in src.iter_mut().zip(pb) {
            *s = &w_dec[j as usize * d..(j as usize + 1) * d];
        }
        let m = pb.len();
        kernels::dots(di, &src[..m], &mut dots[..m]);
        let mut coef = [0.0f32; GROUP];
        let mut live: [&[f32]; GROUP] = [di; GROUP];
        let mut nl = 0;
        for q in 0..m {
            let j = pb[q] as usize;
            let w = (rb[q] as f64 / norm) as f32;
            // inv_i * inv_j is the same product from either row.
            let c = dots[q] * (inv_i * inv[j]);
            if j > i {
                value += w as f64 * c.abs() as f64;
                abs += c.abs() as f64;
            }
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            let ws = scale * w * sign;
            if ws == 0.0 {
                continue;
            }
            coef[nl] = ws * inv_i * inv[j];
            live[nl] = src[q];
            nl += 1;
            self_coef += ws * c * inv_i * inv_i;
        }
        kernels::axpys(g, &coef[..nl], &live[..nl]);
    }
    if self_coef != 0.0 {
        kernels::axpys(g, &[-self_coef], &[di]);
    }
    (value, abs)
}

/// `dots[q] = a . rows[q]` and `g += sum_q coef[q] rows[q]` (in order of q),
/// for up to [`GROUP`] rows at once. Each dot product has its own
/// accumulator with the same lane layout whatever the group, and the FMA
/// `a * b + acc` is symmetric in a and b, so `dot(x, y)` and `dot(y, x)` agree
/// bit for bit.
mod kernels {
    use super::GROUP;

    pub fn dots(a: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // The unsafe kernels below rely on these lengths.
        assert!(rows.len() <= GROUP && rows.iter().all(|r| r.len() == a.len()));
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx512() {
                // SAFETY: AVX-512F detected; every row has a.len() values.
                unsafe { x86::dots512(a, rows, out) };
                return;
            }
            if x86::has_avx2() {
                // SAFETY: AVX2 and FMA detected; every row has a.len() values.
                unsafe { x86::dots256(a, rows, out) };
                return;
            }
        }
        for (o, r) in out.iter_mut().zip(rows) {
            let mut acc = [0.0f32; 8];
            for (ca, cr) in a.chunks(8).zip(r.chunks(8)) {
                for l in 0..ca.len() {
                    acc[l] = ca[l].mul_add(cr[l], acc[l]);
                }
            }
            *o = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
    }

    /// `dst = src`, bypassing the cache where possible (call [`store_fence`]
    /// before another thread reads `dst`).
    pub fn store_stream(dst: &mut [f32], src: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx512() {
            // SAFETY: AVX-512F detected; lengths checked inside.
            unsafe { x86::stream512(dst, src) };
            return;
        }
        dst.copy_from_slice(src);
    }

    /// Orders earlier streaming stores before later stores.
    pub fn store_fence() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of x86_64.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }

    pub fn axpys(g: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
        // The unsafe kernels below rely on these lengths.
        assert!(rows.len() == coef.len() && rows.len() <= GROUP);
        assert!(rows.iter().all(|r| r.len() == g.len()));
        if rows.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx512() {
                // SAFETY: AVX-512F detected; every row has g.len() values.
                unsafe { x86::axpys512(g, coef, rows) };
                return;
            }
            if x86::has_avx2() {
                // SAFETY: AVX2 and FMA detected; every row has g.len() values.
                unsafe { x86::axpys256(g, coef, rows) };
                return;
            }
        }
        for (k, gv) in g.iter_mut().enumerate() {
            let mut acc = *gv;
            for (&c, r) in coef.iter().zip(rows) {
                acc = c.mul_add(r[k], acc);
            }
            *gv = acc;
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;
        use std::sync::OnceLock;

        use super::GROUP;

        pub fn has_avx512() -> bool {
            static HAS: OnceLock<bool> = OnceLock::new();
            *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
        }

        pub fn has_avx2() -> bool {
            static HAS: OnceLock<bool> = OnceLock::new();
            *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
        }

        fn ptrs(rows: &[&[f32]]) -> [*const f32; GROUP] {
            let mut p = [rows[0].as_ptr(); GROUP];
            for (q, r) in rows.iter().enumerate() {
                p[q] = r.as_ptr();
            }
            p
        }

        // Loads and stores are the masked forms with a full mask and pointers
        // advance with wrapping_add: the plain forms go through
        // read_unaligned / checked pointer arithmetic, which the test profile
        // (debug assertions on) does not optimise away.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn stream512(dst: &mut [f32], src: &[f32]) {
            assert_eq!(dst.len(), src.len());
            let n = dst.len();
            let (pd, ps) = (dst.as_mut_ptr(), src.as_ptr());
            // Unaligned head, 64-byte aligned streaming body, tail.
            let head = ((64 - (pd as usize % 64)) % 64 / 4).min(n);
            let mut k = 0;
            while k < head {
                *pd.wrapping_add(k) = *ps.wrapping_add(k);
                k += 1;
            }
            while k + 16 <= n {
                _mm512_stream_ps(
                    pd.wrapping_add(k),
                    _mm512_maskz_loadu_ps(!0, ps.wrapping_add(k)),
                );
                k += 16;
            }
            while k < n {
                *pd.wrapping_add(k) = *ps.wrapping_add(k);
                k += 1;
            }
        }

        // The kernels for each group size, written out by macro so that the
        // row pointers, coefficients and accumulators are plain locals
        // (register-resident; no reloads through possibly aliased memory).
        macro_rules! dots512_m {
            ($name:ident, $($q:tt),+) => {
                #[target_feature(enable = "avx512f")]
                unsafe fn $name(a: &[f32], rows: &[&[f32]], out: &mut [f32]) {
                    let n = a.len();
                    let pa = a.as_ptr();
                    let p = [$(rows[$q].as_ptr()),+];
                    let mut acc = [$({ let _ = $q; _mm512_setzero_ps() }),+];
                    let mut k = 0;
                    while k + 16 <= n {
                        let va = _mm512_maskz_loadu_ps(!0, pa.wrapping_add(k));
                        $(acc[$q] = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(!0, p[$q].wrapping_add(k)), acc[$q]);)+
                        k += 16;
                    }
                    if k < n {
                        let mask: __mmask16 = ((1u32 << (n - k)) - 1) as u16;
                        let va = _mm512_maskz_loadu_ps(mask, pa.wrapping_add(k));
                        $(acc[$q] = _mm512_fmadd_ps(
                            va,
                            _mm512_maskz_loadu_ps(mask, p[$q].wrapping_add(k)),
                            acc[$q],
                        );)+
                    }
                    $(out[$q] = _mm512_reduce_add_ps(acc[$q]);)+
                }
            };
        }
        dots512_m!(dots512_1, 0);
        dots512_m!(dots512_2, 0, 1);
        dots512_m!(dots512_3, 0, 1, 2);
        dots512_m!(dots512_4, 0, 1, 2, 3);
        dots512_m!(dots512_5, 0, 1, 2, 3, 4);
        dots512_m!(dots512_6, 0, 1, 2, 3, 4, 5);
        dots512_m!(dots512_7, 0, 1, 2, 3, 4, 5, 6);
        dots512_m!(dots512_8, 0, 1, 2, 3, 4, 5, 6, 7);

        #[target_feature(enable = "avx512f")]
        pub unsafe fn dots512(a: &[f32], rows: &[&[f32]], out: &mut [f32]) {
            match rows.len() {
                0 => {}
                1 => dots512_1(a, rows, out),
                2 => dots512_2(a, rows, out),
                3 => dots512_3(a, rows, out),
                4 => dots512_4(a, rows, out),
                5 => dots512_5(a, rows, out),
                6 => dots512_6(a, rows, out),
                7 => dots512_7(a, rows, out),
                _ => dots512_8(a, rows, out),
            }
        }

        macro_rules! axpys512_m {
            ($name:ident, $($q:tt),+) => {
                #[target_feature(enable = "avx512f")]
                unsafe fn $name(g: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
                    let n = g.len();
                    let pg = g.as_mut_ptr();
                    let p = [$(rows[$q].as_ptr()),+];
                    let c = [$(_mm512_set1_ps(coef[$q])),+];
                    let mut k = 0;
                    while k + 32 <= n {
                        let mut a0 = _mm512_maskz_loadu_ps(!0, pg.wrapping_add(k));
                        let mut a1 = _mm512_maskz_loadu_ps(!0, pg.wrapping_add(k + 16));
                        $(
                            a0 = _mm512_fmadd_ps(c[$q], _mm512_maskz_loadu_ps(!0, p[$q].wrapping_add(k)), a0);
                            a1 = _mm512_fmadd_ps(c[$q], _mm512_maskz_loadu_ps(!0, p[$q].wrapping_add(k + 16)), a1);
                        )+
                        _mm512_mask_storeu_ps(pg.wrapping_add(k), !0, a0);
                        _mm512_mask_storeu_ps(pg.wrapping_add(k + 16), !0, a1);
                        k += 32;
                    }
                    while k < n {
                        let r = (n - k).min(16);
                        let mask: __mmask16 = ((1u32 << r) - 1) as u16;
                        let mut a0 = _mm512_maskz_loadu_ps(mask, pg.wrapping_add(k));
                        $(a0 = _mm512_fmadd_ps(
                            c[$q],
                            _mm512_maskz_loadu_ps(mask, p[$q].wrapping_add(k)),
                            a0,
                        );)+
                        _mm512_mask_storeu_ps(pg.wrapping_add(k), mask, a0);
                        k += r;
                    }
                }
            };
        }
        axpys512_m!(axpys512_1, 0);
        axpys512_m!(axpys512_2, 0, 1);
        axpys512_m!(axpys512_3, 0, 1, 2);
        axpys512_m!(axpys512_4, 0, 1, 2, 3);
        axpys512_m!(axpys512_5, 0, 1, 2, 3, 4);
        axpys512_m!(axpys512_6, 0, 1, 2, 3, 4, 5);
        axpys512_m!(axpys512_7, 0, 1, 2, 3, 4, 5, 6);
        axpys512_m!(axpys512_8, 0, 1, 2, 3, 4, 5, 6, 7);

        #[target_feature(enable = "avx512f")]
        pub unsafe fn axpys512(g: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
            match rows.len() {
                0 => {}
                1 => axpys512_1(g, coef, rows),
                2 => axpys512_2(g, coef, rows),
                3 => axpys512_3(g, coef, rows),
                4 => axpys512_4(g, coef, rows),
                5 => axpys512_5(g, coef, rows),
                6 => axpys512_6(g, coef, rows),
                7 => axpys512_7(g, coef, rows),
                _ => axpys512_8(g, coef, rows),
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dots256(a: &[f32], rows: &[&[f32]], out: &mut [f32]) {
            if rows.is_empty() {
                return;
            }
            let p = ptrs(rows);
            match rows.len() {
                1 => dots256_n::<1>(a, &p, out),
                2 => dots256_n::<2>(a, &p, out),
                3 => dots256_n::<3>(a, &p, out),
                4 => dots256_n::<4>(a, &p, out),
                5 => dots256_n::<5>(a, &p, out),
                6 => dots256_n::<6>(a, &p, out),
                7 => dots256_n::<7>(a, &p, out),
                _ => dots256_n::<8>(a, &p, out),
            }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dots256_n<const M: usize>(a: &[f32], p: &[*const f32; GROUP], out: &mut [f32]) {
            let n = a.len();
            let pa = a.as_ptr();
            let mut acc = [_mm256_setzero_ps(); M];
            let mut k = 0;
            while k + 8 <= n {
                let va = _mm256_loadu_ps(pa.add(k));
                for q in 0..M {
                    acc[q] = _mm256_fmadd_ps(va, _mm256_loadu_ps(p[q].add(k)), acc[q]);
                }
                k += 8;
            }
            let mut lanes = [[0.0f32; 8]; M];
            for q in 0..M {
                _mm256_storeu_ps(lanes[q].as_mut_ptr(), acc[q]);
            }
            for q in 0..M {
                let l = &mut lanes[q];
                for t in k..n {
                    l[t - k] = a[t].mul_add(*p[q].add(t), l[t - k]);
                }
                out[q] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn axpys256(g: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
            let p = ptrs(rows);
            match rows.len() {
                1 => axpys256_n::<1>(g, coef, &p),
                2 => axpys256_n::<2>(g, coef, &p),
                3 => axpys256_n::<3>(g, coef, &p),
                4 => axpys256_n::<4>(g, coef, &p),
                5 => axpys256_n::<5>(g, coef, &p),
                6 => axpys256_n::<6>(g, coef, &p),
                7 => axpys256_n::<7>(g, coef, &p),
                _ => axpys256_n::<8>(g, coef, &p),
            }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn axpys256_n<const M: usize>(g: &mut [f32], coef: &[f32], p: &[*const f32; GROUP]) {
            let n = g.len();
            let pg = g.as_mut_ptr();
            let mut c = [_mm256_setzero_ps(); M];
            for q in 0..M {
                c[q] = _mm256_set1_ps(coef[q]);
            }
            let mut k = 0;
            while k + 16 <= n {
                let mut a0 = _mm256_loadu_ps(pg.add(k));
                let mut a1 = _mm256_loadu_ps(pg.add(k + 8));
                for q in 0..M {
                    a0 = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(p[q].add(k)), a0);
                    a1 = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(p[q].add(k + 8)), a1);
                }
                _mm256_storeu_ps(pg.add(k), a0);
                _mm256_storeu_ps(pg.add(k + 8), a1);
                k += 16;
            }
            if k + 8 <= n {
                let mut a0 = _mm256_loadu_ps(pg.add(k));
                for q in 0..M {
                    a0 = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(p[q].add(k)), a0);
                }
                _mm256_storeu_ps(pg.add(k), a0);
                k += 8;
            }
            while k < n {
                let mut acc = g[k];
                for q in 0..M {
                    acc = coef[q].mul_add(*p[q].add(k), acc);
                }
                g[k] = acc;
                k += 1;
            }
        }
    }
}
