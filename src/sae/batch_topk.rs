//! BatchTopK's selection: the `k * n` largest positive pre-activations of a
//! whole batch of n tokens, rather than k per token.
//!
//! The encoder first keeps each token's `cap` best candidates (the fused
//! per-row top-k of [`super::model::encode_centered`], so no dense
//! `[n, d_sae]` matrix is stored). A token whose list is full may have lost
//! values; if its smallest listed value is at or above the batch's cut, its
//! missing values could belong to the selection, so those tokens (and only
//! those) are encoded again with every positive value. Expanding them can
//! only raise the cut, so every other full token's missing values stay below
//! it: one round makes the selection exact. With the bf16 encoder
//! (`train.compute: bf16`) the bf16 products make the whole cut (the
//! candidates, the expansion and the batch's selection, exact in that
//! arithmetic), as they choose TopK's latents; only the kept entries are then
//! recomputed in f32, and one whose f32 value is not positive is dropped, so
//! a batch may keep slightly fewer than `k * n`. Refining before the cut
//! would cost 4x the dot products for the same choice up to bf16 rounding.

use super::model::SparseCodes;

/// Candidates kept per token before the batch cut: 4k (a token is rarely
/// given more than 4x the mean L0; those that are are expanded).
pub(crate) fn candidate_cap(k: usize, d_sae: usize) -> usize {
    (4 * k).min(d_sae)
}

/// The value of the `budget`-th largest entry of `codes` (None when there
/// are no more than `budget` entries: all are kept).
fn cut_value(codes: &SparseCodes, budget: usize) -> Option<f32> {
    if budget == 0 || codes.values.len() <= budget {
        return None;
    }
    let mut vals = codes.values.clone();
    let (_, v, _) = vals.select_nth_unstable_by(budget - 1, |a, b| b.total_cmp(a));
    Some(*v)
}

/// Tokens whose candidate list is full (`cap` entries) and whose smallest
/// candidate is at or above the cut: their unlisted values may belong to
/// the selection.
pub(crate) fn tokens_to_expand(codes: &SparseCodes, cap: usize, budget: usize) -> Vec<usize> {
    let Some(cut) = cut_value(codes, budget) else {
        // Everything listed is kept: a full token's unlisted values could be
        // kept too, unless fewer than `budget` values exist at all.
        return (0..codes.n_tokens())
            .filter(|&t| codes.indptr[t + 1] - codes.indptr[t] >= cap)
            .collect();
    };
    (0..codes.n_tokens())
        .filter(|&t| {
            let (_, v) = codes.row(t);
            v.len() >= cap && v.iter().copied().fold(f32::INFINITY, f32::min) >= cut
        })
        .collect()
}

/// Replaces the rows `tokens` (ascending) of `codes` with the rows of
/// `expanded` (one per listed token, in the same order).
pub(crate) fn replace_rows(
    codes: &SparseCodes,
    tokens: &[usize],
    expanded: &SparseCodes,
) -> SparseCodes {
    let mut out = SparseCodes {
        d_sae: codes.d_sae,
        indptr: vec![0],
        indices: Vec::with_capacity(codes.indices.len() + expanded.indices.len()),
        values: Vec::with_capacity(codes.values.len() + expanded.values.len()),
    };
    let mut next = 0;
    for t in 0..codes.n_tokens() {
        let (idx, val) = if next < tokens.len() && tokens[next] == t {
            next += 1;
            expanded.row(next - 1)
        } else {
            codes.row(t)
        };
        out.indices.extend_from_slice(idx);
        out.values.extend_from_slice(val);
        out.indptr.push(out.indices.len());
    }
    out
}

/// The batch selection: the `budget` largest entries of `codes` in the total
/// order (value descending, then token, then latent ascending), as codes of
/// the same tokens; and the smallest kept value (None when nothing is kept).
pub(crate) fn batch_select(codes: &SparseCodes, budget: usize) -> (SparseCodes, Option<f32>) {
    let cut = cut_value(codes, budget);
    // Entries strictly above the cut are all kept; ties at the cut fill the
    // remaining budget in token order.
    let mut ties_left = match cut {
        Some(c) => budget - codes.values.iter().filter(|&&v| v > c).count(),
        None => 0,
    };
    let mut out = SparseCodes {
        d_sae: codes.d_sae,
        indptr: Vec::with_capacity(codes.indptr.len()),
        indices: Vec::with_capacity(budget.min(codes.indices.len())),
        values: Vec::with_capacity(budget.min(codes.values.len())),
    };
    out.indptr.push(0);
    let mut min_kept: Option<f32> = None;
    for t in 0..codes.n_tokens() {
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            let keep = match cut {
                None => true,
                Some(c) if v > c => true,
                Some(c) if v == c && ties_left > 0 => {
                    ties_left -= 1;
                    true
                }
                _ => false,
            };
            if keep {
                out.indices.push(j);
                out.values.push(v);
                min_kept = Some(min_kept.map_or(v, |m| m.min(v)));
            }
        }
        out.indptr.push(out.indices.len());
    }
    (out, min_kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(rows: &[&[(u32, f32)]]) -> SparseCodes {
        let mut c = SparseCodes {
            d_sae: 16,
            indptr: vec![0],
            ..Default::default()
        };
        for r in rows {
            for &(j, v) in *r {
                c.indices.push(j);
                c.values.push(v);
            }
            c.indptr.push(c.indices.len());
        }
        c
    }

    #[test]
    fn keeps_the_largest_over_the_batch_with_ties_in_token_order() {
        let c = codes(&[&[(0, 5.0), (3, 1.0)], &[(1, 2.0), (2, 2.0)], &[(4, 2.0)]]);
        let (s, min) = batch_select(&c, 3);
        assert_eq!(s.indptr, vec![0, 1, 3, 3]);
        assert_eq!(s.indices, vec![0, 1, 2]);
        assert_eq!(min, Some(2.0));
        let (all, min) = batch_select(&c, 10);
        assert_eq!(all, c);
        assert_eq!(min, Some(1.0));
    }

    #[test]
    fn a_full_token_at_or_above_the_cut_is_expanded() {
        // cap 2: token 0 is full and its smallest (4.0) is above the cut of
        // the 3 best (3.0); token 1 is full but below the cut.
        let c = codes(&[&[(0, 5.0), (1, 4.0)], &[(2, 3.0), (3, 1.0)], &[(4, 0.5)]]);
        assert_eq!(tokens_to_expand(&c, 2, 3), vec![0]);
        let more = codes(&[&[(0, 5.0), (1, 4.0), (5, 3.5)]]);
        let merged = replace_rows(&c, &[0], &more);
        assert_eq!(merged.indptr, vec![0, 3, 5, 6]);
        let (s, _) = batch_select(&merged, 3);
        assert_eq!(s.indices, vec![0, 1, 5]);
    }
}
