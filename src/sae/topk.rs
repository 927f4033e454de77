//! Per-row top-k selection without a full sort.
//!
//! A single pass keeps a small candidate buffer: values below the current
//! k-th best are rejected with one comparison, and whenever the buffer fills
//! up `select_nth_unstable_by` cuts it back to the k best and raises the
//! threshold. The order is total (value descending, then index ascending), so
//! ties are resolved the same way on every run.

use std::cmp::Ordering;

#[inline]
fn order(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Scratch space reused across rows.
#[derive(Default, Debug)]
pub(crate) struct TopKScratch {
    buf: Vec<(f32, u32)>,
}

/// Appends to `out` the (up to) `k` candidates with the largest values among
/// those with `value > floor`, sorted by latent index ascending.
/// Pass `floor = f32::NEG_INFINITY` for a plain top-k.
#[inline]
pub(crate) fn select_topk<I: Iterator<Item = (u32, f32)>>(
    candidates: I,
    k: usize,
    floor: f32,
    scratch: &mut TopKScratch,
    out: &mut Vec<(u32, f32)>,
) {
    if k == 0 {
        return;
    }
    let buf = &mut scratch.buf;
    buf.clear();
    let cap = (4 * k).max(64);
    let mut thr = f32::NEG_INFINITY;
    for (j, v) in candidates {
        if v > floor && v >= thr {
            buf.push((v, j));
            if buf.len() >= cap {
                buf.select_nth_unstable_by(k - 1, order);
                buf.truncate(k);
                thr = buf[k - 1].0;
            }
        }
    }
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, order);
        buf.truncate(k);
    }
    buf.sort_unstable_by_key(|e| e.1);
    out.extend(buf.iter().map(|&(v, j)| (j, v)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn matches_full_sort_including_ties() {
        let mut rng = SplitMix64::new(3);
        let mut s = TopKScratch::default();
        for trial in 0..200 {
            let n = 1 + rng.below(700) as usize;
            let k = 1 + rng.below(40) as usize;
            // Coarse values so that ties occur.
            let row: Vec<f32> = (0..n)
                .map(|_| (rng.below(50) as f32 - 25.0) / 4.0)
                .collect();
            let floor = if trial % 2 == 0 {
                f32::NEG_INFINITY
            } else {
                0.0
            };
            let mut out = Vec::new();
            select_topk(
                row.iter().enumerate().map(|(j, &v)| (j as u32, v)),
                k,
                floor,
                &mut s,
                &mut out,
            );
            let mut all: Vec<(f32, u32)> = row
                .iter()
                .enumerate()
                .filter(|(_, &v)| v > floor)
                .map(|(j, &v)| (v, j as u32))
                .collect();
            all.sort_by(order);
            all.truncate(k);
            let mut want: Vec<(u32, f32)> = all.iter().map(|&(v, j)| (j, v)).collect();
            want.sort_by_key(|e| e.0);
            assert_eq!(out, want, "trial {trial}");
        }
    }
}
