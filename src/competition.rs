//! Competition between latents: co-firing counts, competition `c_ij`,
//! thresholds, decoder cosines and the random-pair baseline (the compete
//! stage's engine).
//!
//! Definitions (SPEC.md, "The method"): over a set of tokens, latent i
//! *fires* on a token when its activation is > 0 (TopK and ReLU-L1 SAEs
//! alike); `n_i` is the number of tokens on which i fires, `C_ij` the number
//! on which i and j both fire, and the competition of a pair is
//! `c_ij = C_ij / min(n_i, n_j)` (0 when either never fired). A pair
//! *competes* at threshold tau when `c_ij >= tau` and `C_ij >= min_cofirings`
//! (the count filter keeps pairs seen once or twice from flooding the
//! statistics of rare latents, for which one shared token already gives a
//! large `c_ij`).
//!
//! ## How the counts are made, and the memory bound
//! [`FiringCollector`] streams over batches of tokens (sparse codes or bare
//! index lists) and keeps each token's list of firing latents in one compact
//! CSR, plus per-latent sums for the frequency, mean and max activation.
//! [`FiringCollector::finish`] adds the transposed index (for each latent,
//! the tokens it fires on, ascending, with the activation) and
//! [`FiringIndex::pairs`] makes one pass over it: for each latent i, the
//! partners j > i on i's tokens are counted in a dense scratch row of F
//! counters (one per worker thread), and only the pairs that pass both
//! filters are emitted while the touched counters are reset (by a scan of
//! the partner range when i has many co-firings, else by a second walk over
//! i's rows). `n_i` is the global count, known before the pass, so the
//! filters are exact. The rows of i's tokens are scattered over the lists,
//! so the pass prefetches a few tokens ahead (3-4x faster at 1 M tokens). No F x F matrix and no list of all co-firing pairs ever
//! exists: memory is
//!
//! - 12 bytes per (token, firing latent): the token-major latent ids (u32)
//!   and the latent-major token ids and activations (u32 + f32); 8 bytes
//!   when only index lists are given (while [`FiringCollector::finish`]
//!   builds the latent-major index, the token-major activations add 4 more);
//!   plus 8 bytes per token of offsets;
//! - 4 F bytes of scratch counters per worker thread, and O(F) per-latent sums;
//! - 24 bytes per kept pair ([`Pair`]). With `tau_min > 0` at most
//!   `F * (L_max - 1) / tau_min` pairs can be kept (`L_max` = the longest
//!   token list, k for TopK): each kept pair has `C_ij >= tau_min * n_m` for
//!   its rarer latent m, and latent m's co-firings sum to at most
//!   `n_m * (L_max - 1)`. With `tau_min = 0` the bound is
//!   `tokens * L_max * (L_max - 1) / 2 / min_cofirings`.
//!
//! For F = 16384, k = 32 and 1 M tokens that is 256 MB of lists (384 MB
//! with activations), 64 KB of counters per thread and at most ~10 M kept
//! pairs at tau 0.05 (in practice far fewer); the work is
//! `sum over tokens of L_t^2 / 2` counter increments (tests/competition.rs
//! has the benchmark).
//!
//! ## Cosines
//! Decoder and encoder cosines are signed: `cos(d_i, d_j)` of decoder rows
//! (encoder columns) after normalising them. [`max_cosines`] gives, per
//! latent, both the signed maximum over all other latents (SAEBench's
//! `max_decoder_cosine_sim`, whose mean over latents is SAEBench's "mean max
//! decoder cosine") and the maximum of the absolute value, in row blocks so
//! that only a block x F slice of the Gram matrix exists at a time.

use crate::rng::SplitMix64;
use crate::sae::SparseCodes;
use anyhow::{bail, ensure, Result};
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `c_ij = C_ij / min(n_i, n_j)` in f64 (0 when either latent never fired).
/// The division is correctly rounded, so a ratio that equals a threshold
/// exactly (1/10 against 0.1) compares equal to it.
#[inline]
pub fn competition(cofirings: u64, n_i: u64, n_j: u64) -> f64 {
    let m = n_i.min(n_j);
    if m == 0 {
        0.0
    } else {
        cofirings as f64 / m as f64
    }
}

/// One co-firing pair, `i < j`, that passed the filters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    pub i: u32,
    pub j: u32,
    /// `C_ij`.
    pub cofirings: u64,
    /// `c_ij`.
    pub c: f64,
}

/// Per-latent firing statistics over the collected tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentStats {
    /// `n_i`.
    pub fired: u64,
    /// `n_i / tokens`.
    pub frequency: f64,
    /// Mean activation over the tokens where it fires (None if it never fires).
    pub mean_activation: Option<f64>,
    /// Max activation (None if it never fires).
    pub max_activation: Option<f32>,
}

/// Streams tokens' firing lists into a compact store (see the module docs).
#[derive(Clone, Debug)]
pub struct FiringCollector {
    d_sae: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    /// Token-major activations; empty when only index lists were given.
    values: Vec<f32>,
    with_values: Option<bool>,
    n: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
}

impl FiringCollector {
    pub fn new(d_sae: usize) -> Self {
        Self {
            d_sae,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
            with_values: None,
            n: vec![0; d_sae],
            sum: vec![0.0; d_sae],
            max: vec![f32::NEG_INFINITY; d_sae],
        }
    }

    /// Tokens collected so far.
    pub fn tokens(&self) -> usize {
        self.indptr.len() - 1
    }

    fn mode(&mut self, values: bool) -> Result<()> {
        match self.with_values {
            None => self.with_values = Some(values),
            Some(v) if v != values => {
                bail!("a collector takes either sparse codes or bare index lists, not both")
            }
            _ => {}
        }
        Ok(())
    }

    fn push_token(&mut self, t: usize, ids: &[u32]) -> Result<()> {
        let start = self.indices.len();
        for &j in ids {
            if j as usize >= self.d_sae {
                bail!(
                    "token {t}: latent index {j} out of range (d_sae = {})",
                    self.d_sae
                );
            }
            self.indices.push(j);
        }
        let row = &mut self.indices[start..];
        // Rows are kept ascending (the pair pass skips to the partners > i).
        if row.windows(2).any(|w| w[0] >= w[1]) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by_key(|&p| row[p]);
            let sorted: Vec<u32> = order.iter().map(|&p| row[p]).collect();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                bail!("token {t} lists a latent twice");
            }
            row.copy_from_slice(&sorted);
            if self.with_values == Some(true) {
                let vals: Vec<f32> = order.iter().map(|&p| self.values[start + p]).collect();
                self.values[start..].copy_from_slice(&vals);
            }
        }
        self.indptr.push(self.indices.len());
        Ok(())
    }

    /// Adds the tokens of a batch of sparse codes; a latent fires where its
    /// value is > 0 (entries with values <= 0, if any, are dropped).
    pub fn add_codes(&mut self, codes: &SparseCodes) -> Result<()> {
        ensure!(
            codes.d_sae == self.d_sae,
            "codes have d_sae = {}, the collector {}",
            codes.d_sae,
            self.d_sae
        );
        self.mode(true)?;
        let mut ids = Vec::new();
        for t in 0..codes.n_tokens() {
            let (idx, val) = codes.row(t);
            ids.clear();
            let start = self.values.len();
            for (&j, &v) in idx.iter().zip(val) {
                if v > 0.0 {
                    ensure!(v.is_finite(), "token {t}: activation of latent {j} is {v}");
                    ids.push(j);
                    self.values.push(v);
                }
            }
            if let Err(e) = self.push_token(self.tokens(), &ids) {
                self.values.truncate(start);
                self.indices.truncate(*self.indptr.last().unwrap());
                return Err(e);
            }
            for p in start..self.values.len() {
                let (j, v) = (self.indices[p] as usize, self.values[p]);
                self.n[j] += 1;
                self.sum[j] += v as f64;
                self.max[j] = self.max[j].max(v);
            }
        }
        Ok(())
    }

    /// Adds tokens given as bare index lists (CSR: `indptr` of tokens + 1
    /// offsets, `indices` latent ids, each at most once per token). Mean and
    /// max activations are then reported as 1.
    pub fn add_lists(&mut self, indptr: &[usize], indices: &[u32]) -> Result<()> {
        if indptr.is_empty() || indptr[0] != 0 || *indptr.last().unwrap() != indices.len() {
            bail!("indptr must start at 0 and end at indices.len()");
        }
        if indptr.windows(2).any(|w| w[1] < w[0]) {
            bail!("indptr must be non-decreasing");
        }
        self.mode(false)?;
        for w in indptr.windows(2) {
            let t = self.tokens();
            let start = self.indices.len();
            if let Err(e) = self.push_token(t, &indices[w[0]..w[1]]) {
                self.indices.truncate(start);
                return Err(e);
            }
            for p in start..self.indices.len() {
                let j = self.indices[p] as usize;
                self.n[j] += 1;
                self.sum[j] += 1.0;
                self.max[j] = 1.0;
            }
        }
        Ok(())
    }

    /// Builds the latent-major index (a counting sort, tokens ascending).
    pub fn finish(self) -> FiringIndex {
        let f = self.d_sae;
        let n_tok = self.tokens();
        let mut lat_start = vec![0usize; f + 1];
        for i in 0..f {
            lat_start[i + 1] = lat_start[i] + self.n[i] as usize;
        }
        let mut fill = lat_start.clone();
        let mut lat_tokens = vec![0u32; self.indices.len()];
        let with_values = self.with_values == Some(true);
        let mut lat_values = if with_values {
            vec![0f32; self.indices.len()]
        } else {
            Vec::new()
        };
        for t in 0..n_tok {
            for p in self.indptr[t]..self.indptr[t + 1] {
                let j = self.indices[p] as usize;
                lat_tokens[fill[j]] = t as u32;
                if with_values {
                    lat_values[fill[j]] = self.values[p];
                }
                fill[j] += 1;
            }
        }
        FiringIndex {
            d_sae: f,
            indptr: self.indptr,
            indices: self.indices,
            lat_start,
            lat_tokens,
            lat_values,
            n: self.n,
            sum: self.sum,
            max: self.max,
        }
    }
}

/// Every token's firing latents, by token and by latent (see the module docs).
#[derive(Clone, Debug)]
pub struct FiringIndex {
    d_sae: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    lat_start: Vec<usize>,
    lat_tokens: Vec<u32>,
    lat_values: Vec<f32>,
    n: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
}

/// What the pair pass found besides the kept pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassStats {
    /// Distinct pairs that co-fire at least once (i < j).
    pub cofiring_pairs: u64,
    /// Sum over tokens of `L_t (L_t - 1) / 2`: the counter increments.
    pub increments: u64,
}

impl FiringIndex {
    pub fn d_sae(&self) -> usize {
        self.d_sae
    }

    pub fn tokens(&self) -> usize {
        self.indptr.len() - 1
    }

    /// `n[i]`: tokens on which latent i fires.
    pub fn n(&self) -> &[u64] {
        &self.n
    }

    /// Firing entries (token, latent) stored.
    pub fn entries(&self) -> usize {
        self.indices.len()
    }

    /// Bytes held by the lists (the module docs' bound).
    pub fn bytes(&self) -> usize {
        4 * (self.indices.len() + self.lat_tokens.len() + self.lat_values.len())
            + 8 * (self.indptr.len() + self.lat_start.len())
            + 20 * self.d_sae
    }

    /// Token t's firing latents, ascending.
    pub fn latents_of(&self, t: usize) -> &[u32] {
        &self.indices[self.indptr[t]..self.indptr[t + 1]]
    }

    /// Latent i's tokens (ascending) and activations (empty for index lists).
    pub fn tokens_of(&self, i: u32) -> (&[u32], &[f32]) {
        let r = self.lat_start[i as usize]..self.lat_start[i as usize + 1];
        let v = if self.lat_values.is_empty() {
            &[][..]
        } else {
            &self.lat_values[r.clone()]
        };
        (&self.lat_tokens[r], v)
    }

    /// Latent i's activation on token t (0 when it does not fire there).
    pub fn activation(&self, i: u32, t: u32) -> f32 {
        let (toks, vals) = self.tokens_of(i);
        match toks.binary_search(&t) {
            Ok(_) if vals.is_empty() => 1.0,
            Ok(p) => vals[p],
            Err(_) => 0.0,
        }
    }

    /// Frequency, mean and max activation of every latent.
    pub fn latent_stats(&self) -> Vec<LatentStats> {
        let tokens = self.tokens().max(1) as f64;
        (0..self.d_sae)
            .map(|i| {
                let n = self.n[i];
                LatentStats {
                    fired: n,
                    frequency: n as f64 / tokens,
                    mean_activation: (n > 0).then(|| self.sum[i] / n as f64),
                    max_activation: (n > 0).then_some(self.max[i]),
                }
            })
            .collect()
    }

    /// `C_ij` by merging the two token lists (for checks and examples).
    pub fn cofirings(&self, i: u32, j: u32) -> u64 {
        if i == j {
            return self.n[i as usize];
        }
        self.cofiring_tokens(i, j).len() as u64
    }

    /// Tokens where both i and j fire, ascending, with (act_i, act_j).
    pub fn cofiring_tokens(&self, i: u32, j: u32) -> Vec<(u32, f32, f32)> {
        let (ti, vi) = self.tokens_of(i);
        let (tj, vj) = self.tokens_of(j);
        let val = |v: &[f32], p: usize| if v.is_empty() { 1.0 } else { v[p] };
        let (mut a, mut b) = (0, 0);
        let mut out = Vec::new();
        while a < ti.len() && b < tj.len() {
            match ti[a].cmp(&tj[b]) {
                std::cmp::Ordering::Less => a += 1,
                std::cmp::Ordering::Greater => b += 1,
                std::cmp::Ordering::Equal => {
                    out.push((ti[a], val(vi, a), val(vj, b)));
                    a += 1;
                    b += 1;
                }
            }
        }
        out
    }

    /// Latent i's `count` highest activations: (token, activation), highest
    /// first, ties by token.
    pub fn top_tokens(&self, i: u32, count: usize) -> Vec<(u32, f32)> {
        let (toks, vals) = self.tokens_of(i);
        let mut all: Vec<(u32, f32)> = toks
            .iter()
            .enumerate()
            .map(|(p, &t)| (t, if vals.is_empty() { 1.0 } else { vals[p] }))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(count);
        all
    }

    /// The co-firing pass: every pair (i < j, sorted by i then j) with
    /// `C_ij >= min_cofirings` and `c_ij >= tau_min`. `done(latents)` is
    /// called as blocks of latents finish (for a progress bar), from worker
    /// threads. The result does not depend on the number of threads.
    pub fn pairs(
        &self,
        min_cofirings: u64,
        tau_min: f64,
        done: &(dyn Fn(usize) + Sync),
    ) -> (Vec<Pair>, PassStats) {
        let f = self.d_sae;
        // Blocks of latents balanced by work (sum of n_i * L over their
        // tokens is unknown up front; n_i is a fair proxy).
        const BLOCK: usize = 64;
        let blocks = f.div_ceil(BLOCK);
        let next = AtomicUsize::new(0);
        let mut pieces: Vec<(usize, Vec<Pair>, PassStats)> = (0..rayon::current_num_threads()
            .min(blocks.max(1)))
            .into_par_iter()
            .map(|_| {
                let mut cnt = vec![0u32; f];
                let mut out: Vec<(usize, Vec<Pair>, PassStats)> = Vec::new();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= blocks {
                        break;
                    }
                    let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(f));
                    let mut kept = Vec::new();
                    let mut st = PassStats::default();
                    for i in lo..hi {
                        let ni = self.n[i];
                        if ni == 0 {
                            continue;
                        }
                        let tokens = &self.lat_tokens[self.lat_start[i]..self.lat_start[i + 1]];
                        let partners = |t: u32| {
                            let row = self.latents_of(t as usize);
                            &row[row.partition_point(|&j| j as usize <= i)..]
                        };
                        let mut incs = 0u64;
                        for (x, &t) in tokens.iter().enumerate() {
                            // The rows are scattered over the token-major
                            // lists: fetch a later token's offsets and row
                            // ahead of time (two dependent misses otherwise).
                            if let Some(&ahead) = tokens.get(x + 2 * LOOKAHEAD) {
                                prefetch(&self.indptr[ahead as usize]);
                            }
                            if let Some(&ahead) = tokens.get(x + LOOKAHEAD) {
                                let start = self.indptr[ahead as usize];
                                prefetch(self.indices[start..].as_ptr());
                                prefetch(self.indices[start..].as_ptr().wrapping_add(16));
                            }
                            let row = partners(t);
                            incs += row.len() as u64;
                            for &j in row {
                                cnt[j as usize] += 1;
                            }
                        }
                        st.increments += incs;
                        let mut emit = |j: u32, count: u32, kept: &mut Vec<Pair>| {
                            st.cofiring_pairs += 1;
                            let count = count as u64;
                            if count < min_cofirings {
                                return;
                            }
                            let c = competition(count, ni, self.n[j as usize]);
                            if c >= tau_min {
                                kept.push(Pair {
                                    i: i as u32,
                                    j,
                                    cofirings: count,
                                    c,
                                });
                            }
                        };
                        // Collect and reset the counters: a scan of i's
                        // partner range when the increments are many (the
                        // scan is sequential and yields j in order), else a
                        // second walk over i's rows, then a sort.
                        if incs as usize * 2 >= f - i {
                            for (j, c) in cnt.iter_mut().enumerate().skip(i + 1) {
                                if *c != 0 {
                                    emit(j as u32, *c, &mut kept);
                                    *c = 0;
                                }
                            }
                        } else {
                            let first = kept.len();
                            for &t in tokens {
                                for &j in partners(t) {
                                    let c = &mut cnt[j as usize];
                                    if *c != 0 {
                                        emit(j, *c, &mut kept);
                                        *c = 0;
                                    }
                                }
                            }
                            kept[first..].sort_unstable_by_key(|p| p.j);
                        }
                    }
                    done(hi - lo);
                    out.push((b, kept, st));
                }
                out
            })
            .flatten_iter()
            .collect();
        pieces.sort_by_key(|p| p.0);
        let mut stats = PassStats::default();
        let mut pairs = Vec::with_capacity(pieces.iter().map(|p| p.1.len()).sum());
        for (_, kept, st) in pieces {
            pairs.extend(kept);
            stats.cofiring_pairs += st.cofiring_pairs;
            stats.increments += st.increments;
        }
        (pairs, stats)
    }
}

/// Tokens ahead of the current one whose rows are prefetched.
const LOOKAHEAD: usize = 4;

/// A hint to bring `p`'s cache line in (no-op off x86-64).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Per-latent competitor statistics at one threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Competitors {
    pub tau: f64,
    /// Number of competitors of each latent.
    pub count: Vec<u64>,
    /// Signed max of `cos(d_i, d_j)` over i's competitors (None if none).
    pub max_cos: Vec<Option<f64>>,
    /// Max of `|cos(d_i, d_j)|` over i's competitors (None if none).
    pub max_abs_cos: Vec<Option<f64>>,
}

/// Competitors of every latent at each tau: the kept pairs with `c >= tau`
/// (they already passed the count filter). `cos[p]` is pair p's decoder
/// cosine.
pub fn competitors(d_sae: usize, pairs: &[Pair], cos: &[f64], taus: &[f64]) -> Vec<Competitors> {
    taus.iter()
        .map(|&tau| {
            let mut out = Competitors {
                tau,
                count: vec![0; d_sae],
                max_cos: vec![None; d_sae],
                max_abs_cos: vec![None; d_sae],
            };
            for (p, &c) in pairs.iter().zip(cos) {
                if p.c < tau {
                    continue;
                }
                for l in [p.i as usize, p.j as usize] {
                    out.count[l] += 1;
                    let m = out.max_cos[l].get_or_insert(c);
                    *m = m.max(c);
                    let m = out.max_abs_cos[l].get_or_insert(c.abs());
                    *m = m.max(c.abs());
                }
            }
            out
        })
        .collect()
}

/// Rows of `w` ([rows, d]) scaled to unit norm (rows of norm 0 stay 0).
pub fn unit_rows(w: &[f32], d: usize) -> Vec<f32> {
    let mut out = w.to_vec();
    for row in out.chunks_mut(d) {
        let norm = row
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in row {
                *v = (*v as f64 / norm) as f32;
            }
        }
    }
    out
}

/// Cosine of rows a and b of unit-norm rows `u` ([rows, d]), accumulated in f64.
#[inline]
pub fn row_cos(u: &[f32], d: usize, a: u32, b: u32) -> f64 {
    let (a, b) = (a as usize * d, b as usize * d);
    u[a..a + d]
        .iter()
        .zip(&u[b..b + d])
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum()
}

/// Signed cosines of the given pairs of rows of unit-norm rows `u` ([rows, d]).
pub fn pair_cosines(u: &[f32], d: usize, pairs: &[(u32, u32)]) -> Vec<f64> {
    pairs
        .par_iter()
        .map(|&(a, b)| row_cos(u, d, a, b))
        .collect()
}

/// Per row of unit-norm rows `u` ([F, d]): the signed max cosine to any other
/// row (SAEBench's max decoder cosine when `u` is the decoder) and the max
/// absolute cosine. Computed in blocks of rows against all rows with gemm,
/// so memory is a block x F slice. F = 1 gives (NaN, NaN).
pub fn max_cosines(u: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let f = u.len() / d.max(1);
    const BLOCK: usize = 128;
    let parts: Vec<Vec<(f64, f64)>> = (0..f.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let lo = b * BLOCK;
            let m = BLOCK.min(f - lo);
            let mut g = vec![0f32; m * f];
            // SAFETY: g is m x f (row stride f), lhs the m x d rows lo.. of u
            // (row stride d), rhs u^T viewed as d x f (column stride d).
            unsafe {
                gemm::gemm(
                    m,
                    f,
                    d,
                    g.as_mut_ptr(),
                    1,
                    f as isize,
                    false,
                    u[lo * d..].as_ptr(),
                    1,
                    d as isize,
                    u.as_ptr(),
                    d as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            (0..m)
                .map(|r| {
                    let row = &g[r * f..(r + 1) * f];
                    let (mut mx, mut mabs) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                    for (j, &c) in row.iter().enumerate() {
                        if j != lo + r {
                            mx = mx.max(c as f64);
                            mabs = mabs.max((c as f64).abs());
                        }
                    }
                    if f < 2 {
                        (f64::NAN, f64::NAN)
                    } else {
                        (mx, mabs)
                    }
                })
                .collect()
        })
        .collect();
    parts.into_iter().flatten().unzip()
}

/// `m` uniformly random distinct pairs (i < j) of `d_sae` latents,
/// deterministic for a seed (Floyd's sampling over the `F (F - 1) / 2` pair
/// indices); all pairs, in order, when `m` is at least that many.
pub fn random_pairs(d_sae: usize, m: usize, seed: u64) -> Vec<(u32, u32)> {
    let f = d_sae as u64;
    let total = f * f.saturating_sub(1) / 2;
    let idx: Vec<u64> = if m as u64 >= total {
        (0..total).collect()
    } else {
        let mut rng = SplitMix64::new(seed);
        let mut seen: HashSet<u64> = HashSet::with_capacity(m);
        let mut order = Vec::with_capacity(m);
        for top in total - m as u64..total {
            let t = rng.below(top + 1);
            let pick = if seen.contains(&t) { top } else { t };
            seen.insert(pick);
            order.push(pick);
        }
        order
    };
    idx.into_iter().map(|k| pair_of_index(f, k)).collect()
}

/// The pair (i, j), i < j, at position k of the row-major upper triangle.
fn pair_of_index(f: u64, k: u64) -> (u32, u32) {
    // Row i starts at s(i) = i (2F - i - 1) / 2.
    let s = |i: u64| i * (2 * f - i - 1) / 2;
    let ff = f as f64;
    let guess = ff - 0.5 - ((ff - 0.5) * (ff - 0.5) - 2.0 * k as f64).max(0.0).sqrt();
    let mut i = (guess.floor().max(0.0) as u64).min(f.saturating_sub(2));
    while i > 0 && s(i) > k {
        i -= 1;
    }
    while i + 1 < f && s(i + 1) <= k {
        i += 1;
    }
    let j = i + 1 + (k - s(i));
    (i as u32, j as u32)
}
