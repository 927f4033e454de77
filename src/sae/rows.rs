//! The row kernels of the sparse passes: `y += a x`, `a . b`, a prefetch of
//! a row the next iterations will read, [`gather_rows`] (many sums of
//! scattered rows at once) and [`dots_by_row`] (many dot products with
//! scattered rows). The SAE step reads scattered rows (a decoder row per
//! active latent, an output-gradient row per entry) from buffers larger than
//! L2: prefetching a few rows ahead hides the latency the hardware's stream
//! prefetcher cannot (each row is a new stream), `gather_rows` goes column
//! tile by column tile so that the tile of every source row stays in L2
//! while all the sums read it, and `dots_by_row` reads each row once for all
//! the products that need it.

use rayon::prelude::*;

use super::buffers::{give_buffer, take_buffer};

/// `y += a x`. Uses AVX2/FMA when the CPU has it (explicit intrinsics, so
/// the hot loops are vectorised even in the dev profile, where this crate is
/// built at opt-level 1); the order of operations is fixed either way.
#[inline]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { simd::axpy(y, a, x) };
        return;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `a . b` with a fixed summation order (AVX2/FMA when available).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::dot(a, b) };
    }
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Whether the AVX2/FMA kernels run (x86-64 with both, detected at run
/// time); the scalar loops otherwise.
fn vector_path() -> bool {
    #[cfg(target_arch = "x86_64")]
    return simd::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// How many rows ahead the sparse loops prefetch: far enough to cover a
/// miss to L3 or memory, near enough that the rows are still cached on use.
pub(crate) const PREFETCH_AHEAD: usize = 2;

/// Asks the cache for `row` (every 64-byte line), ahead of its use; a no-op
/// off x86-64. A prefetch never faults, so any slice is fine.
#[inline]
pub(crate) fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = row.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(row);
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch has no architectural effect and cannot fault;
            // the pointer stays within (or one line past) the slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Columns per tile of [`PackedRows`]: up to 8 AVX registers of
/// accumulators. The wide tile keeps 8 independent FMA chains per position
/// (the narrow one 4, so each position waited on the FMA latency); it is
/// used when a tile of the source rows stays within [`TILE_BYTES`].
const TILE_WIDE: usize = 64;
const TILE_NARROW: usize = 32;

/// The most bytes one packed tile may take (it must stay in L2 while a
/// block of output rows reads it; 512 KiB is half of the smallest L2 seen
/// here, Zen 4's 1 MiB): 2048 source rows of 64 columns, or 4096 of 32.
const TILE_BYTES: usize = 512 << 10;

/// Output rows per parallel task of [`gather_rows`] (each task reads every
/// source tile once, so fewer, larger tasks read less).
const GATHER_BLOCK: usize = 512;

/// Source rows repacked for [`PackedRows::gather`]: the columns the vector
/// path handles, tile-major (`[tile][row][tile width]`), so that a tile's rows are
/// contiguous (in place their stride, d floats, 2560 bytes at d 640, folds
/// them onto a fraction of L2's sets), and the source for the other columns.
pub(crate) struct PackedRows<'a> {
    src: &'a [f32],
    d: usize,
    n_rows: usize,
    /// Columns summed with FMA, as `axpy` does (d rounded down to 8 with
    /// AVX2/FMA, else 0); the rest add a separate product, as `axpy`'s
    /// scalar tail.
    vec_cols: usize,
    /// Columns per tile: [`TILE_WIDE`] or [`TILE_NARROW`].
    tile: usize,
    packed: Vec<f32>,
}

impl<'a> PackedRows<'a> {
    /// `src`: rows of `d` floats. Packs in parallel, one tile per task.
    pub(crate) fn new(src: &'a [f32], d: usize) -> PackedRows<'a> {
        assert!(
            d > 0 && src.len().is_multiple_of(d),
            "PackedRows: rows of d"
        );
        let vec_cols = if vector_path() { d - d % 8 } else { 0 };
        let n_rows = src.len() / d;
        let tile = if n_rows * TILE_WIDE * 4 <= TILE_BYTES {
            TILE_WIDE
        } else {
            TILE_NARROW
        };
        let tiles = vec_cols.div_ceil(tile);
        // A pooled buffer: a fresh one is zeroed and page-faulted each step.
        // Columns past a narrower last tile are never read.
        let mut packed = take_buffer(tiles * n_rows * tile);
        if n_rows > 0 {
            packed
                .par_chunks_mut(n_rows * tile)
                .enumerate()
                .for_each(|(t, dst)| {
                    let c0 = t * tile;
                    let w = tile.min(vec_cols - c0);
                    for (r, row) in dst.chunks_mut(tile).enumerate() {
                        let from = &src[r * d + c0..r * d + c0 + w];
                        // Fixed-size copies of whole tiles (no memcpy call).
                        match w {
                            TILE_WIDE => copy_cols::<TILE_WIDE>(row, from),
                            TILE_NARROW => copy_cols::<TILE_NARROW>(row, from),
                            _ => row[..w].copy_from_slice(from),
                        }
                    }
                });
        }
        PackedRows {
            src,
            d,
            n_rows,
            vec_cols,
            tile,
            packed,
        }
    }

    /// For each output row i (`out`: `[starts.len() - 1, d]`): the sum over
    /// positions p in `starts[i]..starts[i + 1]` of `a * src[row]`, with
    /// `(row, a) = term(p)`, written over `out[i]` or, with `add`, added to
    /// it. Each element is summed in position order with the operations of
    /// repeated [`axpy`] (onto zero, or onto out's value), so the result is
    /// that of the per-row loop bit for bit, however the work is split.
    pub(crate) fn gather(
        &self,
        out: &mut [f32],
        starts: &[usize],
        term: &(impl Fn(usize) -> (usize, f32) + Sync),
        add: bool,
    ) {
        let d = self.d;
        let m = starts.len().saturating_sub(1);
        assert_eq!(out.len(), m * d, "gather: out must be [{m}, {d}]");
        let width = self.tile;
        let tiles = self.vec_cols.div_ceil(width);
        for t in 0..tiles {
            let c0 = t * width;
            let w = width.min(self.vec_cols - c0);
            let tile = &self.packed[t * self.n_rows * width..(t + 1) * self.n_rows * width];
            for i in 0..m {
                let dst = &mut out[i * d + c0..i * d + c0 + w];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA were detected (tiles > 0 only then);
                // gather_tile checks each row against the tile's length.
                unsafe {
                    simd::gather_tile(dst, starts[i]..starts[i + 1], tile, width, term, add)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (dst, tile);
            }
        }
        for i in 0..m {
            let dst = &mut out[i * d + self.vec_cols..(i + 1) * d];
            if !add {
                dst.iter_mut().for_each(|v| *v = 0.0);
            }
            for p in starts[i]..starts[i + 1] {
                let (row, a) = term(p);
                let x = &self.src[row * d + self.vec_cols..(row + 1) * d];
                for (y, &xv) in dst.iter_mut().zip(x) {
                    *y += a * xv;
                }
            }
        }
    }
}

impl Drop for PackedRows<'_> {
    fn drop(&mut self) {
        give_buffer(std::mem::take(&mut self.packed));
    }
}

/// `dst[..W] = src[..W]`.
#[inline]
fn copy_cols<const W: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; W] = (&mut dst[..W]).try_into().expect("W columns");
    *d = src[..W].try_into().expect("W columns");
}

/// [`PackedRows::gather`] of `src` into `out` (overwritten), in parallel
/// over blocks of output rows.
pub(crate) fn gather_rows(
    out: &mut [f32],
    d: usize,
    starts: &[usize],
    src: &[f32],
    term: impl Fn(usize) -> (usize, f32) + Sync,
) {
    let m = starts.len().saturating_sub(1);
    assert_eq!(out.len(), m * d, "gather_rows: out must be [{m}, {d}]");
    if d == 0 || m == 0 {
        return;
    }
    let packed = PackedRows::new(src, d);
    out.par_chunks_mut(GATHER_BLOCK * d)
        .enumerate()
        .for_each(|(b, block)| {
            let i0 = b * GATHER_BLOCK;
            let rows = block.len() / d;
            packed.gather(block, &starts[i0..=i0 + rows], &term, false);
        });
}

/// Reusable buffers of [`dots_by_row`].
#[derive(Default)]
pub(crate) struct DotsScratch {
    start: Vec<u32>,
    order: Vec<u32>,
}

/// `out[p] = dot(vecs[vec_of(p)], w[row_of(p)])` for every position p of
/// `out`, visited row by row (a counting sort of the positions, then each
/// row of `w` read once for all its positions, while the vectors stay in
/// cache), instead of one scattered row per position. Each value is the
/// same [`dot`] as the per-position loop's, bit for bit.
pub(crate) fn dots_by_row(
    out: &mut [f32],
    w: &[f32],
    vecs: &[f32],
    d: usize,
    row_of: impl Fn(usize) -> usize,
    vec_of: impl Fn(usize) -> usize,
    scratch: &mut DotsScratch,
) {
    let n_rows = w.len() / d;
    let DotsScratch { start, order } = scratch;
    start.clear();
    start.resize(n_rows + 1, 0);
    for p in 0..out.len() {
        start[row_of(p) + 1] += 1;
    }
    for j in 0..n_rows {
        start[j + 1] += start[j];
    }
    order.clear();
    order.resize(out.len(), 0);
    for p in 0..out.len() {
        let j = row_of(p);
        order[start[j] as usize] = p as u32;
        start[j] += 1;
    }
    // start[j] is now the end of row j's positions (the start of j + 1).
    let end_of = |j: usize| start[j] as usize;
    let begin_of = |j: usize| if j == 0 { 0 } else { start[j - 1] as usize };
    let mut rows_used = (0..n_rows).filter(|&j| end_of(j) > begin_of(j));
    let mut cur = rows_used.next();
    let vec = |p: u32| {
        let v = vec_of(p as usize);
        &vecs[v * d..(v + 1) * d]
    };
    let four = vector_path();
    while let Some(j) = cur {
        cur = rows_used.next();
        if let Some(a) = cur {
            prefetch(&w[a * d..(a + 1) * d]);
        }
        let row = &w[j * d..(j + 1) * d];
        let mut ps = &order[begin_of(j)..end_of(j)];
        #[cfg(target_arch = "x86_64")]
        while four && ps.len() >= 4 {
            // SAFETY: AVX2 and FMA were detected; every slice has d values.
            let r = unsafe { simd::dot4([vec(ps[0]), vec(ps[1]), vec(ps[2]), vec(ps[3])], row) };
            for (q, &p) in ps[..4].iter().enumerate() {
                out[p as usize] = r[q];
            }
            ps = &ps[4..];
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = four;
        for &p in ps {
            out[p as usize] = dot(vec(p), row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// Four [`dot`]s of `v[q]` with one row `w` (all of one length), the
    /// row's loads shared: each result bit for bit `dot(v[q], w)`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(v: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
        let n = w.len();
        assert!(v.iter().all(|x| x.len() == n), "dot4: lengths differ");
        let pw = w.as_ptr();
        let pv = v.map(|x| x.as_ptr());
        let mut acc0 = [_mm256_setzero_ps(); 4];
        let mut acc1 = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 16 <= n {
            let (w0, w1) = (_mm256_loadu_ps(pw.add(i)), _mm256_loadu_ps(pw.add(i + 8)));
            for q in 0..4 {
                acc0[q] = _mm256_fmadd_ps(_mm256_loadu_ps(pv[q].add(i)), w0, acc0[q]);
                acc1[q] = _mm256_fmadd_ps(_mm256_loadu_ps(pv[q].add(i + 8)), w1, acc1[q]);
            }
            i += 16;
        }
        if i + 8 <= n {
            let w0 = _mm256_loadu_ps(pw.add(i));
            for q in 0..4 {
                acc0[q] = _mm256_fmadd_ps(_mm256_loadu_ps(pv[q].add(i)), w0, acc0[q]);
            }
            i += 8;
        }
        let mut out = [0.0f32; 4];
        for q in 0..4 {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc0[q], acc1[q]));
            let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            for k in i..n {
                s += v[q][k] * w[k];
            }
            out[q] = s;
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc0, acc1));
        let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            y[i] += a * x[i];
            i += 1;
        }
    }

    /// `dst[..8 L]` (onto zero or, with `add`, onto its own values) plus
    /// `a * row` over the positions' terms, rows of the packed `tile` (rows
    /// of `width` floats), in position order. L is a constant so that the
    /// accumulators are registers and their loads and stores fixed-size
    /// moves (with a run-time count they became a `memcpy` call per tile
    /// and output row, a tenth of a TopK step).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_rows<const L: usize>(
        dst: &mut [f32],
        add: bool,
        positions: std::ops::Range<usize>,
        tile: &[f32],
        width: usize,
        term: &impl Fn(usize) -> (usize, f32),
    ) {
        assert!(8 * L <= dst.len(), "gather: tile too wide");
        let base = tile.as_ptr();
        let out = dst.as_mut_ptr();
        let mut r = [_mm256_setzero_ps(); L];
        if add {
            for (q, v) in r.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(out.add(8 * q));
            }
        }
        for p in positions {
            let (row, a) = term(p);
            assert!(
                (row + 1) * width <= tile.len(),
                "gather: row {row} out of range"
            );
            let src = base.add(row * width);
            let va = _mm256_set1_ps(a);
            for (q, v) in r.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(va, _mm256_loadu_ps(src.add(8 * q)), *v);
            }
        }
        for (q, v) in r.iter().enumerate() {
            _mm256_storeu_ps(out.add(8 * q), *v);
        }
    }

    /// One tile of [`super::PackedRows::gather`]: `dst` (w <= width <= 64
    /// columns, a multiple of 8) gets the sum over positions of the terms'
    /// rows of the packed `tile` (rows of `width` floats), onto zero or,
    /// with `add`, onto its own values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gather_tile(
        dst: &mut [f32],
        positions: std::ops::Range<usize>,
        tile: &[f32],
        width: usize,
        term: &impl Fn(usize) -> (usize, f32),
        add: bool,
    ) {
        let lanes = dst.len() / 8;
        assert!(lanes <= 8 && dst.len() <= width, "gather: tile too wide");
        let (pos, w) = (positions, width);
        match lanes {
            8 => sum_rows::<8>(dst, add, pos, tile, w, term),
            7 => sum_rows::<7>(dst, add, pos, tile, w, term),
            6 => sum_rows::<6>(dst, add, pos, tile, w, term),
            5 => sum_rows::<5>(dst, add, pos, tile, w, term),
            4 => sum_rows::<4>(dst, add, pos, tile, w, term),
            3 => sum_rows::<3>(dst, add, pos, tile, w, term),
            2 => sum_rows::<2>(dst, add, pos, tile, w, term),
            1 => sum_rows::<1>(dst, add, pos, tile, w, term),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Random CSR lists over `n_src` source rows (some empty, some repeated
    /// rows) and random values.
    fn lists(r: &mut SplitMix64, m: usize, n_src: usize) -> (Vec<usize>, Vec<(usize, f32)>) {
        let mut starts = vec![0];
        let mut items = Vec::new();
        for _ in 0..m {
            for _ in 0..r.below(9) {
                items.push((r.below(n_src as u64) as usize, r.normal() as f32));
            }
            starts.push(items.len());
        }
        (starts, items)
    }

    #[test]
    fn gather_matches_the_per_row_axpy_loop_bit_for_bit() {
        let mut r = SplitMix64::new(3);
        // Widths below, at and across both tile widths and the 8-lane tail;
        // 50 source rows take the wide tile, 3000 at d 70 and 640 the narrow.
        for (d, n_src) in [
            (1, 50),
            (7, 50),
            (8, 50),
            (13, 50),
            (32, 50),
            (40, 50),
            (70, 50),
            (70, 3000),
            (100, 50),
            (640, 50),
            (640, 3000),
        ] {
            let src: Vec<f32> = (0..n_src * d).map(|_| r.normal() as f32).collect();
            let m = 1100; // more than one parallel block
            let (starts, items) = lists(&mut r, m, n_src);
            let init: Vec<f32> = (0..m * d).map(|_| r.normal() as f32).collect();
            for add in [false, true] {
                let mut want = if add { init.clone() } else { vec![0.0; m * d] };
                for i in 0..m {
                    for &(row, a) in &items[starts[i]..starts[i + 1]] {
                        axpy(
                            &mut want[i * d..(i + 1) * d],
                            a,
                            &src[row * d..(row + 1) * d],
                        );
                    }
                }
                let mut got = init.clone();
                let term = |p: usize| items[p];
                if add {
                    PackedRows::new(&src, d).gather(&mut got, &starts, &term, true);
                } else {
                    gather_rows(&mut got, d, &starts, &src, term);
                }
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "d {d}, add {add}: gather differs from the axpy loop");
            }
        }
    }

    #[test]
    fn dots_by_row_match_dot_bit_for_bit() {
        let mut r = SplitMix64::new(4);
        let mut scratch = DotsScratch::default();
        for d in [3, 8, 16, 24, 37, 640] {
            let (n_w, n_v, n_p) = (40, 30, 500);
            let w: Vec<f32> = (0..n_w * d).map(|_| r.normal() as f32).collect();
            let v: Vec<f32> = (0..n_v * d).map(|_| r.normal() as f32).collect();
            let rows: Vec<usize> = (0..n_p).map(|_| r.below(n_w as u64) as usize).collect();
            let vecs: Vec<usize> = (0..n_p).map(|_| r.below(n_v as u64) as usize).collect();
            let mut got = vec![f32::NAN; n_p];
            dots_by_row(&mut got, &w, &v, d, |p| rows[p], |p| vecs[p], &mut scratch);
            for p in 0..n_p {
                let (j, t) = (rows[p], vecs[p]);
                let want = dot(&v[t * d..(t + 1) * d], &w[j * d..(j + 1) * d]);
                assert_eq!(want.to_bits(), got[p].to_bits(), "d {d}, position {p}");
            }
        }
    }
}
