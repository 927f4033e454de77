//! coact's Gemma forward against candle-transformers' gemma2 and gemma3 on tiny
//! random checkpoints written by the test (config.json + model.safetensors).
//!
//! candle's models differ from Hugging Face's Gemma in two ways that do not
//! matter here, by construction of the configs:
//! - they scale attention by 1/sqrt(head_dim), not query_pre_attn_scalar^-0.5:
//!   the configs set query_pre_attn_scalar = head_dim;
//! - gemma2.rs applies the sliding window to every layer and both count the
//!   window one key wider than Hugging Face: the sequences (<= 20 tokens) are
//!   shorter than the window (64), so no mask is affected.
//!
//! candle returns only the last position's logits, so every position p is
//! compared by running candle on the prefix tokens[.., ..=p].

mod lm_support;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use coact::lm::{Arch, Gemma, ModelSource};
use lm_support::{argmax, random_tokens, rel_max_abs, Tiny};

/// Relative max-abs tolerance: both sides compute in f32 with the same
/// weights; the differences are summation order and tanh/exp implementations.
const TOL: f32 = 1e-4;

fn compare_all_positions(
    ours: &Gemma,
    tokens: &Tensor,
    mut reference: impl FnMut(&Tensor) -> Tensor,
) -> f32 {
    let (b, t) = tokens.dims2().unwrap();
    let logits = ours.logits(tokens, None).unwrap();
    assert_eq!(logits.dims(), &[b, t, ours.config().vocab]);
    let mut worst = 0f32;
    for p in 0..t {
        let prefix = tokens.narrow(1, 0, p + 1).unwrap();
        let want = reference(&prefix); // [b, 1, vocab]
        let got = logits.narrow(1, p, 1).unwrap();
        let rel = rel_max_abs(&got, &want);
        worst = worst.max(rel);
        for i in 0..b {
            assert_eq!(
                argmax(&got.i((i, 0)).unwrap()),
                argmax(&want.i((i, 0)).unwrap()),
                "top-1 differs at sequence {i} position {p}"
            );
        }
    }
    assert!(worst < TOL, "relative max-abs difference {worst} >= {TOL}");
    worst
}

#[test]
fn tiny_gemma2_matches_candle_gemma2_at_every_position() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma2();
    tiny.write(dir.path(), 7);
    let ours = Gemma::load(&ModelSource::Safetensors(dir.path().into()), &Device::Cpu).unwrap();
    assert_eq!(ours.config().arch, Arch::Gemma2);
    assert_eq!(ours.config().attn_softcap, Some(2.0));

    let cfg: candle_transformers::models::gemma2::Config =
        serde_json::from_value(tiny.config_json()).unwrap();
    let files = [dir.path().join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }.unwrap();
    let mut theirs = candle_transformers::models::gemma2::Model::new(false, &cfg, vb).unwrap();

    let tokens = random_tokens(3, 20, tiny.vocab, 11);
    let worst = compare_all_positions(&ours, &tokens, |prefix| {
        theirs.clear_kv_cache();
        theirs.forward(prefix, 0).unwrap()
    });
    println!("tiny gemma2: relative max-abs logit difference over all positions = {worst:.3e}");
}

#[test]
fn tiny_gemma3_matches_candle_gemma3_at_every_position() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma3();
    tiny.write(dir.path(), 5);
    let ours = Gemma::load(&ModelSource::Safetensors(dir.path().into()), &Device::Cpu).unwrap();
    assert_eq!(ours.config().arch, Arch::Gemma3);
    // 7 layers, pattern 6: layer 5 is the only global one.
    let globals: Vec<usize> = (0..7).filter(|&l| !ours.config().local_layers[l]).collect();
    assert_eq!(globals, vec![5]);

    let cfg: candle_transformers::models::gemma3::Config =
        serde_json::from_value(tiny.config_json()).unwrap();
    let files = [dir.path().join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }.unwrap();
    let mut theirs = candle_transformers::models::gemma3::Model::new(false, &cfg, vb).unwrap();

    let tokens = random_tokens(2, 16, tiny.vocab, 3);
    let worst = compare_all_positions(&ours, &tokens, |prefix| {
        theirs.clear_kv_cache();
        theirs.forward(prefix, 0).unwrap()
    });
    println!("tiny gemma3: relative max-abs logit difference over all positions = {worst:.3e}");
}
