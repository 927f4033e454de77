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
/// fraction of a cycle. The threshold starts at a lower bound of the k-th
/// best value rather than at -inf (see [`kth_lower_bound`]), so the first
/// stretch of the row does not fill the buffer over and over; every value
/// that can be among the k best still passes, so the result is the same.
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
    let mut thr = kth_lower_bound(row, k);
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

/// A value no larger than the row's k-th largest: split the row into k
/// disjoint blocks; their k maxima are k distinct entries, so the smallest
/// of them is at most the k-th largest. On a row of pre-activations this
/// sits near its top few percent, so few values pass the first comparison.
/// -inf when the row is too short for blocks of 8 or holds a NaN.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kth_lower_bound(row: &[f32], k: usize) -> f32 {
    use std::arch::x86_64::*;
    let block = (row.len() / k.max(1)) & !7;
    if k == 0 || block == 0 {
        return f32::NEG_INFINITY;
    }
    let mut bound = f32::INFINITY;
    // max_ps passes a NaN operand through unevenly: any NaN, no bound.
    let mut nan = _mm256_setzero_ps();
    for b in row.chunks_exact(block).take(k) {
        let mut m = _mm256_loadu_ps(b.as_ptr());
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(m, m));
        let mut i = 8;
        while i < block {
            let v = _mm256_loadu_ps(b.as_ptr().add(i));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            m = _mm256_max_ps(m, v);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let max = lanes.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        bound = bound.min(max);
    }
    if _mm256_movemask_ps(nan) != 0 {
        return f32::NEG_INFINITY;
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The reference: every value above the floor sorted, the k best kept,
    /// by index.
    fn full_sort_topk(row: &[f32], k: usize, floor: f32) -> Vec<(u32, f32)> {
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
        want
    }

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
            let want = full_sort_topk(&row, k, floor);
            assert_eq!(out, want, "trial {trial}");
            let mut dense = Vec::new();
            select_topk_row(&row, k, floor, &mut s, &mut dense);
            assert_eq!(dense, want, "trial {trial}, dense row");
        }
    }

    /// Rows of the encoder's width, where the dense pass starts from the
    /// block-maximum bound: the same result as a full sort, with ties (coarse
    /// values, signed zeros) and with the k best crowded into one block.
    #[test]
    fn dense_rows_with_a_starting_bound_match_a_full_sort() {
        let mut rng = SplitMix64::new(5);
        let mut s = TopKScratch::default();
        for trial in 0..120 {
            let n = [4096, 4100, 16384, 263][trial % 4];
            let k = [32, 64, 1, 7, 33][trial % 5];
            let mut row: Vec<f32> = (0..n)
                .map(|_| match trial % 3 {
                    0 => rng.normal() as f32,
                    1 => (rng.below(9) as f32 - 4.0) / 2.0,
                    _ => [0.0, -0.0, 1.0, -1.0][rng.below(4) as usize],
                })
                .collect();
            if trial % 6 == 5 {
                // The k best all in the first block.
                for v in row.iter_mut().take(k) {
                    *v = 100.0;
                }
            }
            let floor = if trial % 2 == 0 {
                0.0
            } else {
                f32::NEG_INFINITY
            };
            let want = full_sort_topk(&row, k, floor);
            let mut got = Vec::new();
            select_topk_row(&row, k, floor, &mut s, &mut got);
            let bits =
                |v: &[(u32, f32)]| v.iter().map(|&(j, x)| (j, x.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "trial {trial}: n {n}, k {k}");
        }
    }
}
