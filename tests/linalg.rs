//! The matrix backend (src/linalg): oneDNN's f32 products equal the portable
//! `gemm`-crate path coact used before, bf16 products equal f32 products of
//! the rounded inputs, results do not depend on the thread count, and bf16 is
//! refused with a clear error where the CPU lacks it.

use coact::linalg::{self, Compute, Trans, Weight};
use coact::rng::SplitMix64;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

/// Shapes that cross the tiles' edges (256 rows, 8192 columns) and odd sizes.
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 7, 3),
    (37, 65, 129),
    (300, 640, 1536),
    (513, 96, 8200),
    (64, 2048, 640),
];

#[test]
fn f32_products_equal_the_portable_path() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let x = random(m * k, i as u64);
        let w = random(k * n, 100 + i as u64);
        for tb in [Trans::N, Trans::T] {
            let ours = linalg::matmul(&x, m, k, Weight::F32(&w, tb), n);
            let reference = linalg::matmul_reference(&x, m, k, &w, tb, n);
            let e = rel_err(&ours, &reference);
            // f32 sums of k terms in another order: ~k * 2^-24 at worst.
            assert!(e < 1e-5, "{m}x{k}x{n} {tb:?}: relative error {e:e}");
        }
    }
}

#[test]
fn sgemm_honours_alpha_beta_and_leading_dimensions() {
    let (m, n, k) = (5, 6, 7);
    let a = random(m * 9, 1); // lda 9 > k
    let b = random(k * n, 2);
    let mut c = random(m * 8, 3); // ldc 8 > n
    let c0 = c.clone();
    linalg::sgemm(
        Trans::N,
        Trans::N,
        m,
        n,
        k,
        2.0,
        &a,
        9,
        &b,
        n,
        0.5,
        &mut c,
        8,
    );
    for i in 0..m {
        for j in 0..8 {
            let want = if j < n {
                2.0 * (0..k).map(|p| a[i * 9 + p] * b[p * n + j]).sum::<f32>() + 0.5 * c0[i * 8 + j]
            } else {
                c0[i * 8 + j] // padding columns untouched
            };
            assert!((c[i * 8 + j] - want).abs() < 1e-4, "c[{i},{j}]");
        }
    }
}

#[test]
fn bf16_products_are_f32_products_of_rounded_inputs() {
    if !linalg::cpu().has_bf16() {
        eprintln!(
            "skipped: this CPU has no bf16 hardware ({})",
            linalg::cpu().flags()
        );
        return;
    }
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let x = random(m * k, 10 + i as u64);
        let w = random(k * n, 200 + i as u64);
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&a| linalg::from_bf16(linalg::to_bf16(a)))
                .collect()
        };
        let (xr, wr) = (round(&x), round(&w));
        let wb = linalg::to_bf16_vec(&w);
        for tb in [Trans::N, Trans::T] {
            let ours = linalg::matmul(&x, m, k, Weight::Bf16(&wb, tb), n);
            let exact = linalg::matmul_reference(&xr, m, k, &wr, tb, n);
            let e = rel_err(&ours, &exact);
            // Products of bf16 values are exact in f32; only the f32 sums differ.
            assert!(e < 1e-5, "{m}x{k}x{n} {tb:?}: relative error {e:e}");
            // And against the unrounded f32 product, bf16's own error shows:
            // ~2^-8 relative per input, averaged over k terms.
            let vs_f32 = rel_err(&ours, &linalg::matmul_reference(&x, m, k, &w, tb, n));
            assert!(vs_f32 < 2e-2, "{m}x{k}x{n}: bf16 vs f32 {vs_f32:e}");
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (m, k, n) = (700, 640, 9000);
    let x = random(m * k, 5);
    let w = random(k * n, 6);
    let wb = linalg::to_bf16_vec(&w);
    let run = |threads: usize, bf16: bool| -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let weight = if bf16 {
                Weight::Bf16(&wb, Trans::T)
            } else {
                Weight::F32(&w, Trans::T)
            };
            linalg::matmul(&x, m, k, weight, n)
        })
    };
    let one = run(1, false);
    assert!(
        one == run(3, false),
        "f32 product changed with the thread count"
    );
    if linalg::cpu().has_bf16() {
        assert!(
            run(1, true) == run(3, true),
            "bf16 product changed with the thread count"
        );
    }
}

#[test]
fn bf16_is_refused_where_the_cpu_lacks_it() {
    let c = linalg::cpu();
    assert_eq!(
        linalg::resolve(Some(Compute::F32), "extract.compute").unwrap(),
        (Compute::F32, None)
    );
    match linalg::resolve(Some(Compute::Bf16), "extract.compute") {
        Ok((mode, note)) => {
            assert!(c.has_bf16());
            assert_eq!((mode, note), (Compute::Bf16, None));
        }
        Err(e) => {
            assert!(!c.has_bf16());
            let msg = e.to_string();
            assert!(
                msg.contains("extract.compute = bf16") && msg.contains("AVX512-BF16"),
                "{msg}"
            );
        }
    }
    let (auto, note) = linalg::resolve(None, "train.compute").unwrap();
    if c.has_bf16() {
        // Measured (or remembered) on this machine, and said.
        let choice = linalg::auto_choice();
        assert_eq!(auto, choice.compute);
        let note = note.unwrap();
        assert!(
            note.starts_with(&format!("train.compute = auto: {auto} (bf16 products at"))
                && note.contains("GFLOP/s"),
            "{note}"
        );
        assert_eq!(linalg::backend_info().auto.as_ref(), Some(choice));
    } else {
        assert_eq!(auto, Compute::F32);
        assert!(note.unwrap().contains("train.compute = auto: f32 is used"));
    }
}

#[test]
fn auto_is_measured_once_per_machine_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let d = Some(dir.path());
    let first = linalg::choose(d, "cpu A | avx512bf16", || (100.0, 200.0));
    assert_eq!(first.compute, Compute::Bf16);
    assert!(first.fresh && first.note.is_none(), "{first:?}");
    let file = first.remembered_in.clone().expect("remembered");
    assert!(file.starts_with(dir.path()) && file.exists());
    // The same machine reads it back and never measures again, even when a
    // new measurement would choose otherwise.
    let again = linalg::choose(d, "cpu A | avx512bf16", || panic!("measured again"));
    assert_eq!((again.compute, again.fresh), (Compute::Bf16, false));
    assert_eq!(again.f32_gflops, 100.0);
    assert!(again.describe().contains("delete it to measure again"));
    // Another machine is measured for itself; bf16 needs the margin.
    let b = linalg::choose(d, "cpu B | avx512bf16", || (100.0, 120.0));
    assert_eq!(b.compute, Compute::F32);
    assert!(
        b.describe().starts_with("f32 (bf16 products at 1.20x f32"),
        "{}",
        b.describe()
    );
    let edge = linalg::choose(d, "cpu C", || (100.0, 100.0 * linalg::MIN_BF16_SPEEDUP));
    assert_eq!(edge.compute, Compute::Bf16);
    // A damaged file is measured again and replaced, with a note.
    std::fs::write(&file, b"{ not json").unwrap();
    let fixed = linalg::choose(d, "cpu A | avx512bf16", || (100.0, 50.0));
    assert_eq!(fixed.compute, Compute::F32);
    assert!(
        fixed.note.as_deref().unwrap().contains("unreadable"),
        "{fixed:?}"
    );
    let reread = linalg::choose(d, "cpu A | avx512bf16", || panic!("measured again"));
    assert_eq!(reread.compute, Compute::F32);
    // Two processes measuring at once: the file written first wins, so both
    // use one choice (the nested call plays the other process).
    let raced = linalg::choose(d, "cpu D", || {
        let other = linalg::choose(d, "cpu D", || (100.0, 300.0));
        assert_eq!(other.compute, Compute::Bf16);
        (100.0, 60.0)
    });
    assert_eq!((raced.compute, raced.fresh), (Compute::Bf16, false));
    // No folder to remember in, or one that cannot be made: the measurement
    // still decides, and the note says it was not remembered.
    let none = linalg::choose(None, "cpu E", || (100.0, 200.0));
    assert_eq!(none.compute, Compute::Bf16);
    assert!(none.note.as_deref().unwrap().contains("COACT_CACHE_DIR"));
    let blocked = dir.path().join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let unwritable = linalg::choose(Some(&blocked), "cpu F", || (100.0, 50.0));
    assert_eq!(
        (unwritable.compute, unwritable.remembered_in.as_ref()),
        (Compute::F32, None)
    );
    assert!(
        unwritable.note.as_deref().unwrap().contains("could not"),
        "{unwritable:?}"
    );
}

/// GFLOP/s of `f` doing `flops` per call, best of `reps` after a warm-up.
fn gflops(flops: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

/// `make bench`: the backend, the CPU, each path's peak on a large square
/// product, and the rate on coact's shapes as a share of that peak, beside
/// the portable `gemm` crate (candle's CPU matmul and coact's old engine).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn gemm_rates() {
    let info = linalg::backend_info();
    println!("backend: {}", info.library);
    println!(
        "cpu: {} | flags: {} | bf16 kernel: {}",
        info.cpu.model,
        info.cpu.flags(),
        info.bf16_kernel
    );
    println!("threads: {}", rayon::current_num_threads());
    let bf16 = info.cpu.has_bf16();
    if bf16 {
        println!("compute: auto = {}", linalg::auto_choice().describe());
    }
    let peak = |m: usize, k: usize, n: usize| -> (f64, f64, f64) {
        let x = random(m * k, 1);
        let w = random(k * n, 2);
        let wb = linalg::to_bf16_vec(&w);
        let fl = 2.0 * (m * k * n) as f64;
        let f32r = gflops(fl, 5, || {
            std::hint::black_box(linalg::matmul(&x, m, k, Weight::F32(&w, Trans::N), n));
        });
        let bf = if bf16 {
            gflops(fl, 5, || {
                std::hint::black_box(linalg::matmul(&x, m, k, Weight::Bf16(&wb, Trans::N), n));
            })
        } else {
            f64::NAN
        };
        let old = gflops(fl, 3, || {
            std::hint::black_box(linalg::matmul_reference(&x, m, k, &w, Trans::N, n));
        });
        (f32r, bf, old)
    };
    let (pf, pb, po) = peak(2048, 2048, 2048);
    println!("peak, square 2048: oneDNN f32 {pf:.0} GFLOP/s, bf16 {pb:.0}, gemm crate {po:.0}");
    for (what, m, k, n) in [
        ("forward q,k,v (1024 tokens)", 1024, 640, 1536),
        ("forward gate,up", 1024, 640, 4096),
        ("forward down", 1024, 2048, 640),
        ("forward o", 1024, 1024, 640),
        ("unembedding (256 tokens)", 256, 640, 262_144),
    ] {
        let (f, b, o) = peak(m, k, n);
        println!(
            "{what:34} [{m}x{k}]x[{k}x{n}]: f32 {f:5.0} GFLOP/s ({:3.0}% of f32 peak), bf16 {b:5.0} ({:3.0}% of bf16 peak), gemm crate {o:4.0}; f32 / gemm crate {:.1}x",
            100.0 * f / pf,
            100.0 * b / pb,
            f / o
        );
    }
    // The SAE step's encoder as the trainer runs it: 128-row chunks over
    // rayon, each one single-threaded call into a reused, cache-resident buffer.
    use rayon::prelude::*;
    for f in [4096usize, 16384] {
        let (b, d, chunk) = (4096usize, 640usize, 128usize);
        let x = random(b * d, 3);
        let w = random(f * d, 4);
        let wb = linalg::to_bf16_vec(&w);
        let fl = 2.0 * (b * d * f) as f64;
        let run = |bf: bool| {
            x.par_chunks(chunk * d).for_each_init(
                || vec![0.0f32; chunk * f],
                |pre, xs| {
                    if bf {
                        let xb = linalg::to_bf16_vec(xs);
                        linalg::gemm_bf16(
                            Trans::N,
                            Trans::T,
                            chunk,
                            f,
                            d,
                            1.0,
                            &xb,
                            d,
                            &wb,
                            d,
                            0.0,
                            pre,
                            f,
                        );
                    } else {
                        linalg::sgemm(
                            Trans::N,
                            Trans::T,
                            chunk,
                            f,
                            d,
                            1.0,
                            xs,
                            d,
                            &w,
                            d,
                            0.0,
                            pre,
                            f,
                        );
                    }
                    std::hint::black_box(&pre[0]);
                },
            )
        };
        let r32 = gflops(fl, 5, || run(false));
        let r16 = if bf16 {
            gflops(fl, 5, || run(true))
        } else {
            f64::NAN
        };
        println!(
            "SAE encoder, trainer's chunks [{b}x{d}]x[{d}x{f}]: f32 {r32:5.0} GFLOP/s ({:3.0}% of f32 peak), bf16 {r16:5.0} ({:3.0}% of bf16 peak)",
            100.0 * r32 / pf,
            100.0 * r16 / pb
        );
    }
}
