//! The thin FFI to oneDNN's GEMM entry points (Debian `libdnnl-dev`, linked by
//! build.rs) and to the OpenMP runtime oneDNN is built with.
//!
//! oneDNN picks its kernel (AVX2, AVX-512, AVX512-BF16, AMX) from CPUID at run
//! time; coact only decides whether to ask for the bf16 entry point.

use std::os::raw::{c_char, c_int};

pub(super) type Status = c_int;
pub(super) const SUCCESS: Status = 0;

/// The shape both GEMM entry points share: row-major
/// `C = alpha op(A) op(B) + beta C` with operands of element type `T`.
pub(super) type Gemm<T> = unsafe extern "C" fn(
    c_char,
    c_char,
    i64,
    i64,
    i64,
    f32,
    *const T,
    i64,
    *const T,
    i64,
    f32,
    *mut f32,
    i64,
) -> Status;

#[link(name = "dnnl")]
extern "C" {
    /// Row-major `C = alpha op(A) op(B) + beta C`.
    pub(super) fn dnnl_sgemm(
        transa: c_char,
        transb: c_char,
        m: i64,
        n: i64,
        k: i64,
        alpha: f32,
        a: *const f32,
        lda: i64,
        b: *const f32,
        ldb: i64,
        beta: f32,
        c: *mut f32,
        ldc: i64,
    ) -> Status;

    /// Row-major, bf16 inputs (as raw u16), f32 accumulation and output.
    /// Exported by oneDNN 2.x although its 2.6 header does not declare it.
    pub(super) fn dnnl_gemm_bf16bf16f32(
        transa: c_char,
        transb: c_char,
        m: i64,
        n: i64,
        k: i64,
        alpha: f32,
        a: *const u16,
        lda: i64,
        b: *const u16,
        ldb: i64,
        beta: f32,
        c: *mut f32,
        ldc: i64,
    ) -> Status;
}

#[link(name = "gomp")]
extern "C" {
    /// Sets the calling thread's OpenMP team size: coact parallelises with
    /// rayon and makes every oneDNN call single-threaded, so that results do
    /// not depend on the thread count and no OpenMP team competes with rayon.
    pub(super) fn omp_set_num_threads(n: c_int);
}
