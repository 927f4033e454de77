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

/// [`select_topk`] over a dense row (latent index = position), the same
/// result: 8 values at a time are compared with the current threshold and
/// the floor (AVX2), so the typical value, far below the k-th best, costs a
/// fraction of a cycle. Candidates are pushed in the same order and with the
/// same checks as the scalar pass, so the buffer, and the result, are identical.
#[inline]
pub(crate) fn select_topk_row(
    row: &[f32],
    k: usize,
    floor: f32,
    scratch: &mut TopKScratch,
    out: &mut Vec<(u32, f32)>,
) {
    #[cfg(target_arch = "x86_64")]
    if k > 0 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        unsafe { select_topk_row_avx2(row, k, floor, scratch, out) };
        return;
    }
    select_topk(
        row.iter().enumerate().map(|(j, &v)| (j as u32, v)),
        k,
        floor,
        scratch,
        out,
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn select_topk_row_avx2(
    row: &[f32],
    k: usize,
    floor: f32,
    scratch: &mut TopKScratch,
    out: &mut Vec<(u32, f32)>,
) {
    use std::arch::x86_64::*;
    let buf = &mut scratch.buf;
    buf.clear();
    let cap = (4 * k).max(64);
    let mut thr = f32::NEG_INFINITY;
    let vfloor = _mm256_set1_ps(floor);
    let mut vthr = _mm256_set1_ps(thr);
    let n = row.len();
    let p = row.as_ptr();
    let mut push = |j: usize, v: f32, thr: &mut f32| -> bool {
        if v > floor && v >= *thr {
            buf.push((v, j as u32));
            if buf.len() >= cap {
                buf.select_nth_unstable_by(k - 1, order);
                buf.truncate(k);
                *thr = buf[k - 1].0;
                return true;
            }
        }
        false
    };
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_loadu_ps(p.add(i));
        let keep = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(v, vfloor),
            _mm256_cmp_ps::<_CMP_GE_OQ>(v, vthr),
        );
        let mut mask = _mm256_movemask_ps(keep) as u32;
        while mask != 0 {
            let l = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if push(i + l, row[i + l], &mut thr) {
                vthr = _mm256_set1_ps(thr);
            }
        }
        i += 8;
    }
    while i < n {
        push(i, row[i], &mut thr);
        i += 1;
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
            let mut dense = Vec::new();
            select_topk_row(&row, k, floor, &mut s, &mut dense);
            assert_eq!(dense, want, "trial {trial}, dense row");
        }
    }
}
