//! Sparse co-firing statistics from per-token lists of active latents.
//!
//! For a set of tokens, `n_i` is the number of tokens on which latent i is
//! active and `C_ij` (i < j) the number on which i and j are both active. The
//! competition of a pair is `c_ij = C_ij / min(n_i, n_j)` (SPEC.md, "The
//! method"). Everything is computed from the index lists alone: the work is
//! `sum over tokens of (active count)^2` and the memory is the number of
//! distinct co-firing pairs, never a dense token x latent mask or a dense
//! latent x latent matrix.
//!
//! Input format: a CSR of active latents, `indptr` (tokens + 1 offsets) and
//! `indices` (latent ids, each at most once per token). The compete stage uses
//! [`batch_pairs`] (pairs i < j) and [`CoFireAccumulator`] streams it over
//! batches; the trainer's guided orthogonality term uses the same counts laid
//! out for its gradient: [`batch_token_pairs`] (each pair on its first
//! co-firing token) or [`batch_partners`] (symmetric partner lists). All
//! three give the same pairs and `c_ij`.

use anyhow::{bail, Result};
use rayon::prelude::*;

/// One co-firing pair, `i < j`, with its count `C_ij` and competition `c_ij`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairStat {
    pub i: u32,
    pub j: u32,
    pub count: u64,
    pub c: f32,
}

/// Co-firing within one batch of tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchCoFire {
    /// `n[i]`: tokens on which latent i is active (`C_ii`).
    pub n: Vec<u32>,
    /// Pairs with `C_ij > 0` and `c_ij >= tau`, sorted by (i, j) when asked.
    pub pairs: Vec<PairStat>,
}

/// `c_ij = C_ij / min(n_i, n_j)`, 0 when either latent never fired.
#[inline]
pub fn competition(count: u64, n_i: u64, n_j: u64) -> f32 {
    let m = n_i.min(n_j);
    if m == 0 {
        0.0
    } else {
        (count as f64 / m as f64) as f32
    }
}

/// Checks a CSR of active lists: offsets monotone, ids below `d_sae`.
pub fn check_lists(d_sae: usize, indptr: &[usize], indices: &[u32]) -> Result<()> {
    if indptr.is_empty() || indptr[0] != 0 || *indptr.last().unwrap() != indices.len() {
        bail!("indptr must start at 0 and end at indices.len()");
    }
    if indptr.windows(2).any(|w| w[1] < w[0]) {
        bail!("indptr must be non-decreasing");
    }
    if let Some(&bad) = indices.iter().find(|&&j| j as usize >= d_sae) {
        bail!("latent index {bad} out of range (d_sae = {d_sae})");
    }
    Ok(())
}

/// For each latent, the tokens on which it is active (ascending): a counting
/// sort of the active lists.
struct Transposed {
    n: Vec<u32>,
    /// `d_sae + 1` offsets into `tokens_of`.
    start: Vec<usize>,
    tokens_of: Vec<u32>,
}

fn transpose(d_sae: usize, indptr: &[usize], indices: &[u32]) -> Transposed {
    let n_tok = indptr.len().saturating_sub(1);
    let mut n = vec![0u32; d_sae];
    for &j in indices {
        n[j as usize] += 1;
    }
    let mut start = vec![0usize; d_sae + 1];
    for i in 0..d_sae {
        start[i + 1] = start[i] + n[i] as usize;
    }
    let mut fill = start.clone();
    let mut tokens_of = vec![0u32; indices.len()];
    for t in 0..n_tok {
        for &j in &indices[indptr[t]..indptr[t + 1]] {
            tokens_of[fill[j as usize]] = t as u32;
            fill[j as usize] += 1;
        }
    }
    Transposed {
        n,
        start,
        tokens_of,
    }
}

/// Co-firing pairs of one batch. `tau`: keep only pairs with `c_ij >= tau`
/// (0 keeps every co-firing pair). `sorted`: sort pairs by (i, j); the
/// unsorted order is still deterministic (it does not depend on threads).
///
/// The caller guarantees each token's list has no repeated latent and every id
/// is below `d_sae` (see [`check_lists`]).
pub fn batch_pairs(
    d_sae: usize,
    indptr: &[usize],
    indices: &[u32],
    tau: f32,
    sorted: bool,
) -> BatchCoFire {
    let Transposed {
        n,
        start,
        tokens_of,
    } = transpose(d_sae, indptr, indices);

    // For each latent i, count partners j > i over i's tokens in a scratch
    // array, then emit and reset only the touched entries.
    const CHUNK: usize = 64;
    let n_ref = &n;
    let pieces: Vec<Vec<PairStat>> = (0..d_sae.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(
            || (vec![0u32; d_sae], Vec::<u32>::new()),
            |(cnt, touched), chunk| {
                let mut out = Vec::new();
                let lo = chunk * CHUNK;
                let hi = (lo + CHUNK).min(d_sae);
                for i in lo..hi {
                    let ni = n_ref[i];
                    if ni == 0 {
                        continue;
                    }
                    for &t in &tokens_of[start[i]..start[i + 1]] {
                        let t = t as usize;
                        for &j in &indices[indptr[t]..indptr[t + 1]] {
                            if j as usize > i {
                                let c = &mut cnt[j as usize];
                                if *c == 0 {
                                    touched.push(j);
                                }
                                *c += 1;
                            }
                        }
                    }
                    if sorted {
                        touched.sort_unstable();
                    }
                    for &j in touched.iter() {
                        let count = cnt[j as usize];
                        cnt[j as usize] = 0;
                        let c = competition(count as u64, ni as u64, n_ref[j as usize] as u64);
                        if c >= tau {
                            out.push(PairStat {
                                i: i as u32,
                                j,
                                count: count as u64,
                                c,
                            });
                        }
                    }
                    touched.clear();
                }
                out
            },
        )
        .collect();
    let mut pairs = Vec::with_capacity(pieces.iter().map(Vec::len).sum());
    for p in pieces {
        pairs.extend(p);
    }
    BatchCoFire { n, pairs }
}

/// Latents per block of [`batch_partners`] (fixed: the order of every sum
/// built on the blocks follows it, not the number of threads).
pub const PARTNER_BLOCK: usize = 32;

/// A block of latents with their competing partners, as a small CSR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartnerBlock {
    /// Latents with at least one partner, in processing order.
    pub rows: Vec<u32>,
    /// `rows.len() + 1` offsets into `partners` and `c`.
    pub offsets: Vec<usize>,
    /// Partner latent ids (both `j > i` and `j < i`), in a fixed order.
    pub partners: Vec<u32>,
    /// `c_ij` for each partner (the same value in row i and in row j).
    pub c: Vec<f32>,
}

/// The competing pairs of one batch as symmetric partner lists: every pair
/// (i, j) with `c_ij >= tau` appears in row i and in row j.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPartners {
    /// `n[i]`: tokens on which latent i is active.
    pub n: Vec<u32>,
    /// Blocks of [`PARTNER_BLOCK`] latents (before dropping those without
    /// partners). Latents are ordered by the first token on which they fire
    /// (then by their place in that token's list), so that a block's rows
    /// share many partners.
    pub blocks: Vec<PartnerBlock>,
    /// Number of pairs `i < j` with `c_ij >= tau`.
    pub pairs: usize,
    /// Sum of `c_ij` over those pairs (summed per block, then over blocks in
    /// order).
    pub c_sum: f64,
}

/// Competing pairs of one batch as symmetric partner lists (the same pairs
/// and `c_ij` as [`batch_pairs`]; see [`BatchPartners`]). The work is
/// `sum over tokens of (active count)^2`, counted with one scratch row of
/// counters per thread; the result does not depend on the number of threads.
///
/// The caller guarantees each token's list has no repeated latent and every id
/// is below `d_sae` (see [`check_lists`]).
pub fn batch_partners(d_sae: usize, indptr: &[usize], indices: &[u32], tau: f32) -> BatchPartners {
    let n_tok = indptr.len().saturating_sub(1);
    let Transposed {
        n,
        start,
        tokens_of,
    } = transpose(d_sae, indptr, indices);
    // Processing order: by first token, then by place in that token's list.
    let mut order = Vec::with_capacity(d_sae);
    for t in 0..n_tok {
        for &j in &indices[indptr[t]..indptr[t + 1]] {
            if tokens_of[start[j as usize]] as usize == t {
                order.push(j);
            }
        }
    }
    let n_ref = &n;
    let parts: Vec<(PartnerBlock, f64, usize)> = order
        .par_chunks(PARTNER_BLOCK)
        .map_init(
            || (vec![0u32; d_sae], Vec::<u32>::new()),
            |(cnt, touched), rows| {
                let mut b = PartnerBlock {
                    offsets: vec![0],
                    ..Default::default()
                };
                let mut c_sum = 0.0f64;
                let mut pairs = 0usize;
                for &i in rows {
                    let iu = i as usize;
                    let ni = n_ref[iu];
                    let toks = &tokens_of[start[iu]..start[iu + 1]];
                    let need: usize = toks
                        .iter()
                        .map(|&t| indptr[t as usize + 1] - indptr[t as usize])
                        .sum();
                    if touched.len() < need {
                        touched.resize(need, 0);
                    }
                    // Count every latent sharing a token with i (i included),
                    // recording each on first touch, without branches.
                    let mut len = 0usize;
                    for &t in toks {
                        let t = t as usize;
                        for &j in &indices[indptr[t]..indptr[t + 1]] {
                            // SAFETY: ids are below d_sae (caller's contract)
                            // and len < need <= touched.len().
                            unsafe {
                                let c = cnt.get_unchecked_mut(j as usize);
                                *touched.get_unchecked_mut(len) = j;
                                len += (*c == 0) as usize;
                                *c += 1;
                            }
                        }
                    }
                    let before = b.partners.len();
                    for &j in &touched[..len] {
                        let count = cnt[j as usize];
                        cnt[j as usize] = 0;
                        if j == i {
                            continue;
                        }
                        let c = competition(count as u64, ni as u64, n_ref[j as usize] as u64);
                        if c >= tau {
                            b.partners.push(j);
                            b.c.push(c);
                            if j > i {
                                c_sum += c as f64;
                                pairs += 1;
                            }
                        }
                    }
                    if b.partners.len() > before {
                        b.rows.push(i);
                        b.offsets.push(b.partners.len());
                    }
                }
                (b, c_sum, pairs)
            },
        )
        .collect();
    let mut blocks = Vec::with_capacity(parts.len());
    let mut c_sum = 0.0f64;
    let mut pairs = 0usize;
    for (b, s, p) in parts {
        c_sum += s;
        pairs += p;
        blocks.push(b);
    }
    BatchPartners {
        n,
        blocks,
        pairs,
        c_sum,
    }
}

/// The competing pairs of one batch, each placed on the first token on which
/// both of its latents fire: per token t with active list `L_t` (length
/// `k_t`), a `k_t x k_t` block of `c` where `c[base[t] + p * k_t + q]` is
/// `c_ij` for `(i, j) = (L_t[p], L_t[q])` when t is the first token where i
/// and j are both active and `c_ij >= tau`, and 0 otherwise. Each pair thus
/// appears exactly twice, at (p, q) and (q, p) of one block. Processing the
/// pairs token by token keeps the k_t decoder rows of a token in cache.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPairs {
    /// `n[i]`: tokens on which latent i is active.
    pub n: Vec<u32>,
    /// `tokens + 1` offsets of the blocks in `c`.
    pub base: Vec<usize>,
    pub c: Vec<f32>,
    /// Number of pairs `i < j` with `c_ij >= tau`.
    pub pairs: usize,
    /// Sum of their `c_ij`, per block of [`PARTNER_BLOCK`] latents in
    /// ascending order, then over blocks.
    pub c_sum: f64,
}

impl Drop for TokenPairs {
    fn drop(&mut self) {
        super::buffers::give_buffer(std::mem::take(&mut self.c));
    }
}

/// `sum over tokens of k_t^2`: the size of [`TokenPairs::c`].
pub fn token_pairs_len(indptr: &[usize]) -> usize {
    indptr.windows(2).map(|w| (w[1] - w[0]).pow(2)).sum()
}

struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

/// The competing pairs of one batch by first co-firing token (see
/// [`TokenPairs`]; the same pairs and `c_ij` as [`batch_pairs`]). Counted per
/// latent with one scratch row of counters per thread; the result does not
/// depend on the number of threads.
///
/// The caller guarantees each token's list has no repeated latent and every id
/// is below `d_sae` (see [`check_lists`]).
pub fn batch_token_pairs(d_sae: usize, indptr: &[usize], indices: &[u32], tau: f32) -> TokenPairs {
    let n_tok = indptr.len().saturating_sub(1);
    let Transposed { n, start, .. } = transpose(d_sae, indptr, indices);
    // Entries (positions in `indices`) of each latent, ascending, and the
    // token of each entry.
    let mut fill = start.clone();
    let mut entries_of = vec![0u32; indices.len()];
    let mut tok = vec![0u32; indices.len()];
    for t in 0..n_tok {
        for e in indptr[t]..indptr[t + 1] {
            let j = indices[e] as usize;
            entries_of[fill[j]] = e as u32;
            fill[j] += 1;
            tok[e] = t as u32;
        }
    }
    drop(fill);
    let mut base = vec![0usize; n_tok + 1];
    for t in 0..n_tok {
        let k = indptr[t + 1] - indptr[t];
        base[t + 1] = base[t] + k * k;
    }
    // thr[m]: the smallest count with competition(count, m, m) >= tau
    // (count <= m always; m + 1 when none).
    let max_n = n.iter().copied().max().unwrap_or(0) as usize;
    let thr: Vec<u32> = (0..=max_n)
        .map(|m| {
            let (mut lo, mut hi) = (1u64, m as u64 + 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if competition(mid, m as u64, m as u64) >= tau {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo as u32
        })
        .collect();
    // Every value is written below (each row of each block by its latent).
    // c1[m] = competition(1, m, m): most pairs co-fire once.
    let c1: Vec<f32> = (0..=max_n as u64).map(|m| competition(1, m, m)).collect();
    let mut c = super::buffers::take_buffer(base[n_tok]);
    let cp = SyncPtr(c.as_mut_ptr());
    let (n_ref, cp, c1) = (&n, &cp, &c1);
    let parts: Vec<(f64, usize)> = (0..d_sae.div_ceil(PARTNER_BLOCK))
        .into_par_iter()
        .map_init(
            || (vec![0u32; d_sae], Vec::<u32>::new(), Vec::<u32>::new()),
            |(cnt, touched, touched_e), blk| {
                let mut c_sum = 0.0f64;
                let mut pairs = 0usize;
                let lo = blk * PARTNER_BLOCK;
                for i in lo..(lo + PARTNER_BLOCK).min(d_sae) {
                    let ni = n_ref[i];
                    if ni == 0 {
                        continue;
                    }
                    let ents = &entries_of[start[i]..start[i + 1]];
                    let need: usize = ents
                        .iter()
                        .map(|&e| {
                            let t = tok[e as usize] as usize;
                            indptr[t + 1] - indptr[t]
                        })
                        .sum();
                    if touched.len() < need {
                        touched.resize(need, 0);
                        touched_e.resize(need, 0);
                    }
                    // Count every latent sharing a token with i (i included),
                    // recording each with its entry on the first shared token,
                    // without branches.
                    let mut len = 0usize;
                    for &ei in ents {
                        let t = tok[ei as usize] as usize;
                        for p in indptr[t]..indptr[t + 1] {
                            // SAFETY: ids are below d_sae (caller's contract)
                            // and len < need <= touched.len().
                            unsafe {
                                let j = *indices.get_unchecked(p);
                                let cj = cnt.get_unchecked_mut(j as usize);
                                *touched.get_unchecked_mut(len) = j;
                                *touched_e.get_unchecked_mut(len) = p as u32;
                                len += (*cj == 0) as usize;
                                *cj += 1;
                            }
                        }
                    }
                    // Clear i's rows of its blocks, then fill them. Touched
                    // latents come in the order of their first shared token.
                    for &ei in ents {
                        let t = tok[ei as usize] as usize;
                        let k = indptr[t + 1] - indptr[t];
                        let row = base[t] + (ei as usize - indptr[t]) * k;
                        // SAFETY: row..row + k is i's row of block t, inside
                        // c; no other latent writes it.
                        unsafe { std::ptr::write_bytes(cp.0.add(row), 0, k) };
                    }
                    let mut s = 0usize;
                    for q in 0..len {
                        let j = touched[q] as usize;
                        let count = cnt[j];
                        cnt[j] = 0;
                        if j == i {
                            continue;
                        }
                        let m = ni.min(n_ref[j]);
                        if count < thr[m as usize] {
                            continue;
                        }
                        let cij = if count == 1 {
                            c1[m as usize]
                        } else {
                            competition(count as u64, ni as u64, n_ref[j] as u64)
                        };
                        let p = touched_e[q] as usize;
                        let t = tok[p] as usize;
                        while tok[ents[s] as usize] as usize != t {
                            s += 1;
                        }
                        let k = indptr[t + 1] - indptr[t];
                        let at = base[t] + (ents[s] as usize - indptr[t]) * k + (p - indptr[t]);
                        // SAFETY: inside c, in i's row of block t, which no
                        // other latent writes.
                        unsafe { *cp.0.add(at) = cij };
                        if j > i {
                            c_sum += cij as f64;
                            pairs += 1;
                        }
                    }
                }
                (c_sum, pairs)
            },
        )
        .collect();
    let mut c_sum = 0.0f64;
    let mut pairs = 0usize;
    for (s, p) in parts {
        c_sum += s;
        pairs += p;
    }
    TokenPairs {
        n,
        base,
        c,
        pairs,
        c_sum,
    }
}

/// The guided orthogonality term of SPEC.md on one batch (see
/// [`guided_penalty`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GuidedPenalty {
    /// `sum c_ij |cos(d_i, d_j)| / sum c_ij` over the pairs with `c_ij >= tau`.
    pub value: f64,
    /// Number of those pairs.
    pub pairs: usize,
    /// Their mean |cos|.
    pub mean_abs_cos: f64,
    /// When asked: the gradient of `value` with respect to `w_dec`
    /// ([d_sae, d_in]); empty otherwise.
    pub grad: Vec<f32>,
}

/// The guided orthogonality term for decoder rows `w_dec` ([d_sae, d_in]) on
/// a batch's active lists, computed token by token as the trainer does for
/// large dictionaries (the trainer's kernel; for diagnostics, benchmarks and
/// tests).
pub fn guided_penalty(
    w_dec: &[f32],
    d_in: usize,
    indptr: &[usize],
    indices: &[u32],
    tau: f32,
    with_grad: bool,
) -> Result<GuidedPenalty> {
    if d_in == 0 || !w_dec.len().is_multiple_of(d_in) {
        bail!("w_dec must be [d_sae, d_in]");
    }
    let f = w_dec.len() / d_in;
    check_lists(f, indptr, indices)?;
    let tp = batch_token_pairs(f, indptr, indices, tau);
    let pen = super::ortho::token_penalty(w_dec, d_in, f, indptr, indices, &tp, 1.0);
    let mut grad = Vec::new();
    if with_grad {
        grad = vec![0.0f32; f * d_in];
        for (j, g) in grad.chunks_mut(d_in).enumerate() {
            if let Some(r) = pen.grad.row(j) {
                g.copy_from_slice(r);
            }
        }
    }
    Ok(GuidedPenalty {
        value: pen.value,
        pairs: tp.pairs,
        mean_abs_cos: pen.abs_cos_sum / tp.pairs.max(1) as f64,
        grad,
    })
}

/// Streams co-firing counts over many batches: per-latent counts `n_i`, the
/// number of tokens seen and the sparse pair counts `C_ij` (i < j), kept as a
/// sorted list of (key, count) merged with each batch.
#[derive(Clone, Debug)]
pub struct CoFireAccumulator {
    d_sae: usize,
    tokens: u64,
    n: Vec<u64>,
    /// Sorted by key = i * d_sae + j.
    pairs: Vec<(u64, u64)>,
}

impl CoFireAccumulator {
    pub fn new(d_sae: usize) -> Self {
        Self {
            d_sae,
            tokens: 0,
            n: vec![0; d_sae],
            pairs: Vec::new(),
        }
    }

    pub fn d_sae(&self) -> usize {
        self.d_sae
    }

    /// Tokens seen so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// `n[i]`: tokens on which latent i was active.
    pub fn n(&self) -> &[u64] {
        &self.n
    }

    /// Number of distinct co-firing pairs so far.
    pub fn num_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Adds a batch given as a CSR of active latents (one list per token).
    pub fn add(&mut self, indptr: &[usize], indices: &[u32]) -> Result<()> {
        check_lists(self.d_sae, indptr, indices)?;
        for t in 0..indptr.len() - 1 {
            let mut l = indices[indptr[t]..indptr[t + 1]].to_vec();
            l.sort_unstable();
            if l.windows(2).any(|w| w[0] == w[1]) {
                bail!("token {t} lists a latent twice");
            }
        }
        let b = batch_pairs(self.d_sae, indptr, indices, 0.0, true);
        self.tokens += (indptr.len() - 1) as u64;
        for (a, &x) in self.n.iter_mut().zip(&b.n) {
            *a += x as u64;
        }
        let d = self.d_sae as u64;
        let mut merged = Vec::with_capacity(self.pairs.len() + b.pairs.len());
        let (mut p, mut q) = (0, 0);
        let old = &self.pairs;
        while p < old.len() || q < b.pairs.len() {
            let kq = b.pairs.get(q).map(|s| s.i as u64 * d + s.j as u64);
            match (old.get(p), kq) {
                (Some(&(ko, co)), Some(kn)) if ko == kn => {
                    merged.push((ko, co + b.pairs[q].count));
                    p += 1;
                    q += 1;
                }
                (Some(&(ko, co)), Some(kn)) if ko < kn => {
                    merged.push((ko, co));
                    p += 1;
                }
                (Some(&(ko, co)), None) => {
                    merged.push((ko, co));
                    p += 1;
                }
                (_, Some(kn)) => {
                    merged.push((kn, b.pairs[q].count));
                    q += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        self.pairs = merged;
        Ok(())
    }

    /// `C_ij` (order of i and j does not matter; `C_ii = n_i`).
    pub fn count(&self, i: u32, j: u32) -> u64 {
        if i == j {
            return self.n[i as usize];
        }
        let (a, b) = if i < j { (i, j) } else { (j, i) };
        let key = a as u64 * self.d_sae as u64 + b as u64;
        match self.pairs.binary_search_by_key(&key, |e| e.0) {
            Ok(p) => self.pairs[p].1,
            Err(_) => 0,
        }
    }

    /// `c_ij = C_ij / min(n_i, n_j)`.
    pub fn competition(&self, i: u32, j: u32) -> f32 {
        competition(self.count(i, j), self.n[i as usize], self.n[j as usize])
    }

    /// Every co-firing pair (i < j, sorted) with `c_ij >= tau`.
    pub fn pairs(&self, tau: f32) -> Vec<PairStat> {
        let d = self.d_sae as u64;
        self.pairs
            .iter()
            .map(|&(key, count)| {
                let (i, j) = ((key / d) as u32, (key % d) as u32);
                PairStat {
                    i,
                    j,
                    count,
                    c: competition(count, self.n[i as usize], self.n[j as usize]),
                }
            })
            .filter(|p| p.c >= tau)
            .collect()
    }
}
