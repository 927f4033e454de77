//! The fused CPU kernels ([`Kernels::Fused`], the default) against the
//! candle-ops forward ([`Kernels::Reference`]) on whole models, and their
//! independence from the thread count.
//!
//! Both sides compute in f32; they differ by the order of a few sums (RMSNorm
//! lanes, oneDNN's attention products) and by the fast exp/tanh (~1e-7
//! relative), which the blocks carry to ~1e-6 of the logits' scale.

mod lm_support;

use candle_core::{Device, Tensor};
use coact::lm::{Gemma, Kernels, ModelSource};
use lm_support::{random_tokens, rel_max_abs, Tiny};

const TOL: f32 = 2e-5;

fn tiny_model(tiny: &Tiny, dir: &std::path::Path) -> Gemma {
    tiny.write(dir, 33);
    Gemma::load(&ModelSource::Safetensors(dir.into()), &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Fused and reference logits agree; the fused ones are the same bytes on
/// one thread and on three.
fn check(model: &Gemma, tokens: &Tensor) {
    assert_eq!(model.kernels(), Kernels::Fused);
    let fused = model.logits(tokens, None).unwrap();
    let reference = model
        .with_kernels(Kernels::Reference)
        .logits(tokens, None)
        .unwrap();
    let d = rel_max_abs(&fused, &reference);
    eprintln!("fused vs reference logits: relative max-abs {d:.2e}");
    assert!(d < TOL, "fused vs reference logits: {d} >= {TOL}");
    let one = in_pool(1, || bits(&model.logits(tokens, None).unwrap()));
    let three = in_pool(3, || bits(&model.logits(tokens, None).unwrap()));
    assert!(one == three, "fused logits depend on the thread count");
    assert!(one == bits(&fused));
}

#[test]
fn fused_kernels_match_candle_ops_gemma2() {
    // 80 tokens: past the sliding window (64) and over two query blocks;
    // the tiny gemma-2 reaches both of its softcaps.
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma2();
    check(
        &tiny_model(&tiny, dir.path()),
        &random_tokens(2, 80, tiny.vocab, 3),
    );
}

#[test]
fn fused_kernels_match_candle_ops_gemma3() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma3();
    check(
        &tiny_model(&tiny, dir.path()),
        &random_tokens(3, 80, tiny.vocab, 4),
    );
}

#[test]
fn fused_kernels_match_candle_ops_on_the_real_gguf() {
    let model = Gemma::load(&ModelSource::Gguf(lm_support::gguf_path()), &Device::Cpu).unwrap();
    let mut ids = random_tokens(2, 96, 262_144, 9).to_vec2::<u32>().unwrap();
    for row in &mut ids {
        row[0] = 2;
    }
    let tokens = Tensor::new(ids, &Device::Cpu).unwrap();
    let layer = 6;
    let fused = model.resid_post(&tokens, layer).unwrap();
    let reference = model
        .with_kernels(Kernels::Reference)
        .resid_post(&tokens, layer)
        .unwrap();
    let d = rel_max_abs(&fused, &reference);
    eprintln!("fused vs reference resid_post: relative max-abs {d:.2e}");
    assert!(d < TOL, "fused vs reference resid_post: {d} >= {TOL}");
    let one = in_pool(1, || bits(&model.resid_post(&tokens, layer).unwrap()));
    assert!(
        one == bits(&fused),
        "fused resid_post depends on the thread count"
    );
}
