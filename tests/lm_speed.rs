//! Throughput of coact's Gemma forward on the real gemma-3-270m GGUF, beside
//! candle-transformers' quantized_gemma3 on the same batch. Not a pass/fail
//! test: run it with
//!
//! ```text
//! cargo test -p coact --release --test lm_speed -- --ignored --nocapture
//! ```
//!
//! Environment: COACT_BENCH_BATCH (sequences per batch, default 8),
//! COACT_BENCH_SEQ (tokens per sequence, default 128), COACT_BENCH_LAYER
//! (early-exit layer, default 6, the default study's), COACT_BENCH_REPS (timed batches, default 3),
//! COACT_BENCH_ONLY=early (only coact's early exit, for a clean peak RSS),
//! COACT_BENCH_COMPUTE=f32 or bf16 (one mode only; default both where the CPU has bf16).
//!
//! The early exit is timed for both kernel sets ([`Kernels::Fused`], the
//! default, and [`Kernels::Reference`], candle ops) in alternating rounds of
//! the same process, so the ratio is free of the machine's drift;
//! COACT_BENCH_KERNELS=fused times the fused ones only (for a profiler).

mod lm_support;

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use coact::linalg::Compute;
use coact::lm::{Gemma, Kernels, LoadOptions, ModelSource, WeightFormat};
use coact::metrics::splice::{patched_losses, zero_patch, Original};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Tokens per second of `f` over `reps` runs after one warm-up run.
fn rate(tokens: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    (tokens * reps) as f64 / start.elapsed().as_secs_f64()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn lm_extract_throughput() {
    let (b, t) = (
        env_usize("COACT_BENCH_BATCH", 8),
        env_usize("COACT_BENCH_SEQ", 128),
    );
    let layer = env_usize("COACT_BENCH_LAYER", 6);
    let reps = env_usize("COACT_BENCH_REPS", 3);
    let only_early = std::env::var("COACT_BENCH_ONLY").is_ok_and(|v| v == "early");
    let dev = Device::Cpu;
    let src = ModelSource::Gguf(lm_support::gguf_path());
    println!(
        "batch {b} x {t} tokens, layer {layer}, {} threads",
        candle_core::utils::get_num_threads()
    );
    let mut tokens = lm_support::random_tokens(b, t, 262_144, 17)
        .to_vec2::<u32>()
        .unwrap();
    for row in &mut tokens {
        row[0] = 2; // BOS
    }
    let tokens = Tensor::new(tokens, &dev).unwrap();
    let n = b * t;

    let info = coact::linalg::backend_info();
    println!(
        "cpu: {} | flags: {} | bf16 kernel: {}",
        info.cpu.model,
        info.cpu.flags(),
        info.bf16_kernel
    );
    let mut modes = vec![Compute::F32];
    if info.cpu.has_bf16() {
        modes.push(Compute::Bf16);
    }
    match std::env::var("COACT_BENCH_COMPUTE").as_deref() {
        Ok("f32") => modes.retain(|&c| c == Compute::F32),
        Ok("bf16") => modes.retain(|&c| c == Compute::Bf16),
        _ => {}
    }
    let mut early_f32 = f64::NAN;
    for compute in modes {
        let start = Instant::now();
        let dense = Gemma::load_with(
            &src,
            &dev,
            &LoadOptions {
                compute,
                ..Default::default()
            },
        )
        .unwrap();
        println!("load ({compute}): {:.2}s", start.elapsed().as_secs_f64());
        let reference = dense.with_kernels(Kernels::Reference);
        let (mut early, mut early_ref) = (0.0, 0.0);
        // Alternating rounds; each kernel set's best round.
        let fused_only = std::env::var("COACT_BENCH_KERNELS").is_ok_and(|v| v == "fused");
        for _ in 0..3 {
            if fused_only {
                early_ref = f64::NAN;
            } else {
                early_ref = f64::max(
                    early_ref,
                    rate(n, reps, || {
                        reference.resid_post(&tokens, layer).unwrap();
                    }),
                );
            }
            early = f64::max(
                early,
                rate(n, reps, || {
                    dense.resid_post(&tokens, layer).unwrap();
                }),
            );
        }
        if !fused_only {
            println!(
                "coact early exit to layer {layer} ({compute}, reference kernels): {early_ref:.0} tokens/s"
            );
            println!(
                "fused / reference kernels ({compute}): {:.2}x",
                early / early_ref
            );
        }
        if compute == Compute::F32 {
            early_f32 = early;
        }
        let vs_f32 = if early_f32.is_nan() {
            String::new() // f32 not timed (COACT_BENCH_COMPUTE)
        } else {
            format!(" ({:.2}x f32)", early / early_f32)
        };
        println!("coact early exit to layer {layer} ({compute}): {early:.0} tokens/s{vs_f32}");
        println!("peak RSS so far: {:.0} MB", peak_rss_mb());
        if only_early {
            continue;
        }
        let full = rate(n, reps.min(2), || {
            dense.logits(&tokens, None).unwrap();
        });
        println!("coact full forward with logits ({compute}): {full:.0} tokens/s");
        // Bench core's CE/KL for one SAE: blocks after `layer` from the
        // original's residual, logits streamed by vocabulary slices and
        // reduced to CE and KL (zero ablation as the patch: the cost does
        // not depend on it).
        let seqs = tokens.to_vec2::<u32>().unwrap();
        let seqs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let mask: Vec<bool> = (0..t).map(|p| p == 0).collect();
        let special: Vec<&[bool]> = vec![&mask; b];
        let start = Instant::now();
        let original = Original::compute(&dense, layer, &seqs, &special).unwrap();
        let original_s = start.elapsed().as_secs_f64();
        let patched = rate(n, reps.min(2), || {
            patched_losses(&dense, layer, &seqs, &special, &original, &zero_patch).unwrap();
        });
        drop(original);
        println!(
            "coact bench core's patched forward (blocks {}-, logits, CE and KL; {compute}): {patched:.0} tokens/s ({:.2}x the full forward)",
            layer + 1,
            patched / full
        );
        println!(
            "coact bench core's original forward (once per run; with linear logits, each row's \
             log-sum-exp and expected unembedding row; {compute}): {:.0} tokens/s",
            n as f64 / original_s
        );
    }
    if only_early || std::env::var("COACT_BENCH_CANDLE").is_err() {
        println!(
            "(set COACT_BENCH_CANDLE=1 for the QMatMul and candle quantized_gemma3 comparisons)"
        );
        return;
    }
    let early = early_f32;

    let quant = Gemma::load_with(
        &src,
        &dev,
        &LoadOptions {
            weights: WeightFormat::Quantized,
            ..Default::default()
        },
    )
    .unwrap();
    let q_early = rate(n, 1, || {
        quant.resid_post(&tokens, layer).unwrap();
    });
    println!("coact early exit to layer {layer} (QMatMul): {q_early:.0} tokens/s");
    drop(quant);

    let mut f = std::fs::File::open(lm_support::gguf_path()).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut theirs =
        candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, &dev)
            .unwrap();
    // quantized_gemma3 (candle 0.11.1) fails on batches of more than one
    // sequence ("input has to be contiguous"), so it runs the same batch one
    // sequence at a time.
    let candle = rate(n, 1, || {
        for i in 0..b {
            theirs.forward(&tokens.narrow(0, i, 1).unwrap(), 0).unwrap();
        }
    });
    println!(
        "candle quantized_gemma3 full forward (last-position logits, one sequence at a time): \
         {candle:.0} tokens/s"
    );
    println!(
        "ratio coact f32 early exit (layer {layer}) / candle quantized full forward: {:.1}x",
        early / candle,
    );
}
