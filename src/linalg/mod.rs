//! Matrix products at the machine's rate: the one place coact's dense
//! arithmetic goes through.
//!
//! The backend is oneDNN (Debian `libdnnl-dev`), chosen by measurement on the
//! shapes coact uses (`make bench` prints the figures): on a 2-core AMD EPYC
//! (Zen 4, AVX-512 + AVX512-BF16) its single-threaded sgemm runs the SAE
//! encoder's `[128, 640] x [640, 4096]` at ~100 GFLOP/s against ~27 for the
//! `gemm` crate candle uses and ~90 for OpenBLAS 0.3.21, and its
//! `gemm_bf16bf16f32` at ~190 (AVX512-BF16; AMX where present). oneDNN
//! dispatches on CPUID itself; coact only decides whether to ask for bf16.
//!
//! Threading: every oneDNN call is made single-threaded and coact splits the
//! work into fixed tiles over rayon, so a product's bytes do not depend on the
//! number of threads and no OpenMP team competes with rayon's.

mod auto;
mod bf16;
mod dnnl;

pub use auto::{
    auto_choice, auto_choice_made, cache_dir, choose, machine_key, AutoChoice, MIN_BF16_SPEEDUP,
};
pub use bf16::{convert_to_bf16, from_bf16, to_bf16, to_bf16_vec};

use std::fmt;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The arithmetic of the large products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// f32 inputs, f32 accumulation.
    #[default]
    F32,
    /// bf16 inputs (rounded to nearest even), f32 accumulation and output.
    Bf16,
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        })
    }
}

/// What the CPU offers the products (read once, at first use).
#[derive(Debug, Clone, Serialize)]
pub struct CpuFeatures {
    pub model: String,
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512bf16: bool,
    pub amx_bf16: bool,
}

impl CpuFeatures {
    /// Whether bf16 products run on bf16 hardware (AVX512-BF16 or AMX);
    /// oneDNN would emulate them elsewhere, slower than f32.
    pub fn has_bf16(&self) -> bool {
        self.avx512bf16 || self.amx_bf16
    }

    /// The flags as one line, e.g. `avx2 fma avx512f avx512bf16`.
    pub fn flags(&self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.avx512f, "avx512f"),
            (self.avx512bf16, "avx512bf16"),
            (self.amx_bf16, "amx-bf16"),
        ] {
            if on {
                v.push(name);
            }
        }
        if v.is_empty() {
            "none of avx2 fma avx512f avx512bf16 amx-bf16".into()
        } else {
            v.join(" ")
        }
    }
}

/// The CPU this process runs on.
pub fn cpu() -> &'static CpuFeatures {
    static CPU: OnceLock<CpuFeatures> = OnceLock::new();
    CPU.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        model: cpu_model(),
        avx2: std::arch::is_x86_feature_detected!("avx2"),
        fma: std::arch::is_x86_feature_detected!("fma"),
        avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        avx512bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
        amx_bf16: amx_bf16(),
    }
}

/// CPUID leaf 7 EDX bit 22 (std's detection of AMX is not stable yet).
#[cfg(target_arch = "x86_64")]
fn amx_bf16() -> bool {
    // CPUID leaf 7 exists on every x86_64 CPU that reports AVX2.
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures {
        model: cpu_model(),
        avx2: false,
        fma: false,
        avx512f: false,
        avx512bf16: false,
        amx_bf16: false,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Resolves a configured compute mode. `None` is `auto`: bf16 where the CPU
/// has bf16 hardware and its bf16 products measure at least
/// [`MIN_BF16_SPEEDUP`] times its f32 ones (see [`auto_choice`]), else f32;
/// the note says which and why. `what` names the config key for the error
/// when bf16 is asked of a CPU without it.
pub fn resolve(requested: Option<Compute>, what: &str) -> Result<(Compute, Option<String>)> {
    let c = cpu();
    match requested {
        Some(Compute::F32) => Ok((Compute::F32, None)),
        Some(Compute::Bf16) if c.has_bf16() => Ok((Compute::Bf16, None)),
        Some(Compute::Bf16) => bail!(
            "{what} = bf16, but this CPU ({}) has neither AVX512-BF16 nor AMX-BF16 \
             (it has: {}); use {what}: f32 or auto",
            c.model,
            c.flags()
        ),
        None if c.has_bf16() => {
            let a = auto_choice();
            Ok((a.compute, Some(format!("{what} = auto: {}", a.describe()))))
        }
        None => Ok((
            Compute::F32,
            Some(format!(
                "{what} = auto: f32 is used, this CPU ({}) has no bf16 hardware (it has: {})",
                c.model,
                c.flags()
            )),
        )),
    }
}

/// The backend and the CPU, for manifests and `make bench`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    pub library: &'static str,
    pub cpu: CpuFeatures,
    /// oneDNN's own choice of kernel ISA for bf16 products: AMX where the CPU
    /// has it, else AVX512-BF16.
    pub bf16_kernel: &'static str,
    /// What `compute: auto` measured, when this process resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoChoice>,
}

pub fn backend_info() -> BackendInfo {
    let c = cpu().clone();
    let bf16_kernel = if c.amx_bf16 {
        "amx-bf16"
    } else if c.avx512bf16 {
        "avx512bf16"
    } else {
        "none (bf16 unavailable)"
    };
    BackendInfo {
        library: "oneDNN (libdnnl, Debian libdnnl-dev), single-threaded calls tiled over rayon",
        cpu: c,
        bf16_kernel,
        auto: auto_choice_made().cloned(),
    }
}

/// Whether a matrix is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

impl Trans {
    fn flag(self) -> std::os::raw::c_char {
        (match self {
            Trans::N => b'N',
            Trans::T => b'T',
        }) as std::os::raw::c_char
    }
}

/// Checks that a row-major `rows x cols` operand (`op` applied: stored
/// transposed when `t`) with leading dimension `ld` fits in `len` values.
fn check_operand(name: &str, len: usize, t: Trans, rows: usize, cols: usize, ld: usize) {
    let (sr, sc) = match t {
        Trans::N => (rows, cols),
        Trans::T => (cols, rows),
    };
    assert!(
        ld >= sc.max(1),
        "gemm: {name}'s leading dimension {ld} < {sc}"
    );
    if sr > 0 && sc > 0 {
        let need = (sr - 1) * ld + sc;
        assert!(len >= need, "gemm: {name} holds {len} values, needs {need}");
    }
}

/// Single-threaded row-major `c[m, n] = alpha op(a)[m, k] op(b)[k, n] + beta c`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (dims, scales) = ((m, n, k), (alpha, beta));
    let f = dnnl::dnnl_sgemm;
    call(
        "sgemm",
        f,
        (ta, tb),
        dims,
        scales,
        (a, lda),
        (b, ldb),
        (c, ldc),
    );
}

/// Single-threaded row-major product of bf16 operands (raw bits) with f32
/// accumulation and output: `c = alpha op(a) op(b) + beta c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[u16],
    lda: usize,
    b: &[u16],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (dims, scales) = ((m, n, k), (alpha, beta));
    let f = dnnl::dnnl_gemm_bf16bf16f32;
    call(
        "gemm_bf16bf16f32",
        f,
        (ta, tb),
        dims,
        scales,
        (a, lda),
        (b, ldb),
        (c, ldc),
    );
}

/// Checks every operand's extent (panicking with the operand's name), then
/// makes the single-threaded oneDNN call `f` when there is anything to compute.
#[allow(clippy::too_many_arguments)]
fn call<T>(
    what: &str,
    f: dnnl::Gemm<T>,
    (ta, tb): (Trans, Trans),
    (m, n, k): (usize, usize, usize),
    (alpha, beta): (f32, f32),
    (a, lda): (&[T], usize),
    (b, ldb): (&[T], usize),
    (c, ldc): (&mut [f32], usize),
) {
    check_operand("A", a.len(), ta, m, k, lda);
    check_operand("B", b.len(), tb, k, n, ldb);
    check_operand("C", c.len(), Trans::N, m, n, ldc);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the operands were checked to cover the extents oneDNN reads
    // and writes; the call is single-threaded on this thread.
    let s = unsafe {
        dnnl::omp_set_num_threads(1);
        f(
            ta.flag(),
            tb.flag(),
            m as i64,
            n as i64,
            k as i64,
            alpha,
            a.as_ptr(),
            lda as i64,
            b.as_ptr(),
            ldb as i64,
            beta,
            c.as_mut_ptr(),
            ldc as i64,
        )
    };
    assert!(
        s == dnnl::SUCCESS,
        "oneDNN {what} failed with status {s} (see dnnl_status_t)"
    );
}

/// The right operand of [`matmul`]: `[k, n]` as stored (`Trans::N`) or
/// stored `[n, k]` and used transposed (`Trans::T`), in f32 or bf16 bits.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a [f32], Trans),
    Bf16(&'a [u16], Trans),
}

/// Output columns per tile of [`matmul`], at most (a bf16 panel of 8192 x
/// 640 is 10 MB, which stays in a Zen 4 L3 slice while its row tiles use it).
pub const COL_TILE: usize = 8192;

/// How [`matmul`] cuts a product into single-threaded tiles. The tiles follow
/// the shape and the CPU only, so a result's bytes never depend on the
/// thread count. The best cut differs by CPU, measured on the forward to
/// block 6 (alternating builds, 2 threads):
/// - AVX2 only (a Zen 3): tiles of up to 1024 rows split into at least 4
///   column tiles, so each thread packs only its part of the weight; 256-row
///   tiles over whole columns packed the whole weight again per tile and
///   ran 1.25-1.34x slower (f32);
/// - AVX-512 (a Zen 4): 256-row tiles over whole columns, 3886-4232 tokens/s
///   in bf16 and 2109-2335 in f32, against 3066-3753 and 1975-2224 split by
///   columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiling {
    /// Output rows per tile, at most.
    rows: usize,
    /// Column tiles per row band, at least.
    min_col_tiles: usize,
}

impl Tiling {
    fn for_cpu(cpu: &CpuFeatures) -> Tiling {
        if cpu.avx512f {
            Tiling {
                rows: 256,
                min_col_tiles: 1,
            }
        } else {
            Tiling {
                rows: 1024,
                min_col_tiles: 4,
            }
        }
    }

    /// The column tile of an `n`-column product: a multiple of 64 (whole
    /// vector registers and cache lines), from 64 to [`COL_TILE`].
    fn cols(&self, n: usize) -> usize {
        n.div_ceil(self.min_col_tiles)
            .next_multiple_of(64)
            .clamp(64, COL_TILE)
    }
}

struct SendPtr(*mut f32);
// SAFETY: tiles write disjoint parts of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method, so that closures capture the wrapper rather than the field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `x[m, k] . w` into a new `[m, n]` buffer, tiled over rayon. With a bf16
/// weight the rows of x are rounded to bf16 tile by tile.
pub fn matmul(x: &[f32], m: usize, k: usize, w: Weight<'_>, n: usize) -> Vec<f32> {
    assert_eq!(
        x.len(),
        m * k,
        "matmul: x holds {} values, not {m} x {k}",
        x.len()
    );
    // Not zeroed first (a whole extra pass over a possibly large output):
    // every element is written by exactly one tile with beta = 0.
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: f32 has no invalid bit patterns and the tiles below cover all
    // m x n elements (oneDNN does not read C when beta = 0).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(m * n)
    };
    let ptr = SendPtr(out.as_mut_ptr());
    let tiling = Tiling::for_cpu(cpu());
    let (rows, col) = (tiling.rows, tiling.cols(n));
    let (rt, ct) = (m.div_ceil(rows), n.div_ceil(col));
    // Column tiles outer: consecutive tasks share a weight panel.
    (0..rt * ct).into_par_iter().for_each(|t| {
        let (cj, ri) = (t / rt, t % rt);
        let (r0, r1) = (ri * rows, ((ri + 1) * rows).min(m));
        let (c0, c1) = (cj * col, ((cj + 1) * col).min(n));
        let (mb, nb) = (r1 - r0, c1 - c0);
        // SAFETY: tile (ri, cj) is the only writer of rows r0..r1, columns
        // c0..c1; the slice below spans them with stride n.
        let c = unsafe {
            std::slice::from_raw_parts_mut(ptr.get().add(r0 * n + c0), (mb - 1) * n + nb)
        };
        let xa = &x[r0 * k..r1 * k];
        match w {
            Weight::F32(b, tb) => {
                let (boff, ldb) = weight_panel(tb, c0, k, n);
                sgemm(
                    Trans::N,
                    tb,
                    mb,
                    nb,
                    k,
                    1.0,
                    xa,
                    k,
                    &b[boff..],
                    ldb,
                    0.0,
                    c,
                    n,
                );
            }
            Weight::Bf16(b, tb) => {
                let xb = to_bf16_vec(xa);
                let (boff, ldb) = weight_panel(tb, c0, k, n);
                gemm_bf16(
                    Trans::N,
                    tb,
                    mb,
                    nb,
                    k,
                    1.0,
                    &xb,
                    k,
                    &b[boff..],
                    ldb,
                    0.0,
                    c,
                    n,
                );
            }
        }
    });
    out
}

/// Offset and leading dimension of the weight's columns from `c0` on.
fn weight_panel(tb: Trans, c0: usize, k: usize, n: usize) -> (usize, usize) {
    match tb {
        Trans::N => (c0, n),
        Trans::T => (c0 * k, k),
    }
}

/// The portable reference product (the `gemm` crate candle uses, which was
/// coact's engine before oneDNN): row-major `x[m, k] . w` with w `[k, n]`
/// stored as is or transposed. For tests and `make bench` comparisons.
pub fn matmul_reference(x: &[f32], m: usize, k: usize, w: &[f32], tb: Trans, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), k * n);
    let mut out = vec![0.0f32; m * n];
    let (rs, cs) = match tb {
        Trans::N => (n as isize, 1),
        Trans::T => (1, k as isize),
    };
    // SAFETY: the strides describe the m x k, k x n and m x n buffers above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            cs,
            rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    out
}
