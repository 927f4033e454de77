//! The early exit and the residual splice agree with the full forward.

mod lm_support;

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use coact::lm::{hook_name, Gemma, ModelSource};
use lm_support::{random_tokens, Tiny};

fn tiny_model(tiny: &Tiny, dir: &std::path::Path) -> Gemma {
    tiny.write(dir, 21);
    Gemma::load(&ModelSource::Safetensors(dir.into()), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check_hooks(model: &Gemma, tokens: &Tensor) {
    let n = model.config().n_layers;
    let plain = model.logits(tokens, None).unwrap();
    for layer in [0, n / 2, n - 1] {
        let seen = Mutex::new(None);
        let record = |x: &Tensor| -> anyhow::Result<Tensor> {
            *seen.lock().unwrap() = Some(x.clone());
            Ok(x.clone())
        };
        let spliced = model.logits(tokens, Some((layer, &record))).unwrap();
        // An identity splice changes nothing, bit for bit.
        assert_eq!(max_abs_diff(&spliced, &plain), 0.0, "{}", hook_name(layer));
        // The early exit gives the residual the full forward saw there.
        let early = model.resid_post(tokens, layer).unwrap();
        let full = seen.lock().unwrap().take().unwrap();
        assert_eq!(early.dims(), full.dims());
        assert_eq!(max_abs_diff(&early, &full), 0.0, "{}", hook_name(layer));
    }
    // A splice that changes the residual changes the logits.
    let zero = |x: &Tensor| -> anyhow::Result<Tensor> { Ok(x.zeros_like()?) };
    let ablated = model.logits(tokens, Some((n / 2, &zero))).unwrap();
    assert!(max_abs_diff(&ablated, &plain) > 0.0);
}

#[test]
fn early_exit_and_identity_splice_match_the_full_forward_gemma2() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma2();
    let model = tiny_model(&tiny, dir.path());
    check_hooks(&model, &random_tokens(2, 9, tiny.vocab, 5));
}

#[test]
fn early_exit_and_identity_splice_match_the_full_forward_gemma3() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma3();
    let model = tiny_model(&tiny, dir.path());
    check_hooks(&model, &random_tokens(3, 7, tiny.vocab, 8));
}

#[test]
fn early_exit_and_identity_splice_on_the_real_gguf() {
    let model = Gemma::load(&ModelSource::Gguf(lm_support::gguf_path()), &Device::Cpu).unwrap();
    let cfg = model.config();
    assert_eq!((cfg.d_model, cfg.n_layers, cfg.vocab), (640, 18, 262144));
    let ids = lm_support::tokenize(&["The quick brown fox jumps over the lazy dog."]);
    let tokens = Tensor::new(ids[0].as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let plain = model.logits(&tokens, None).unwrap();
    let seen = Mutex::new(None);
    let record = |x: &Tensor| -> anyhow::Result<Tensor> {
        *seen.lock().unwrap() = Some(x.clone());
        Ok(x.clone())
    };
    let spliced = model.logits(&tokens, Some((8, &record))).unwrap();
    assert_eq!(max_abs_diff(&spliced, &plain), 0.0);
    let early = model.resid_post(&tokens, 8).unwrap();
    assert_eq!(
        max_abs_diff(&early, &seen.lock().unwrap().take().unwrap()),
        0.0
    );
}

#[test]
fn layer_out_of_range_names_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma2();
    let model = tiny_model(&tiny, dir.path());
    let tokens = random_tokens(1, 4, tiny.vocab, 1);
    let e = model.resid_post(&tokens, 3).unwrap_err().to_string();
    assert!(e.contains("layer 3") && e.contains("3 layers"), "{e}");
    let id = |x: &Tensor| -> anyhow::Result<Tensor> { Ok(x.clone()) };
    let e = model
        .logits(&tokens, Some((7, &id)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 7") && e.contains("3 layers"), "{e}");
    // Token ids beyond the vocabulary and bad splices are errors too.
    let bad = Tensor::new(&[[1u32, 200]], &Device::Cpu).unwrap();
    assert!(model
        .resid_post(&bad, 0)
        .unwrap_err()
        .to_string()
        .contains("200"));
    let wrong = |x: &Tensor| -> anyhow::Result<Tensor> { Ok(x.narrow(1, 0, 1)?) };
    assert!(model.logits(&tokens, Some((0, &wrong))).is_err());
}

#[test]
fn batches_can_run_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::gemma3();
    let model = tiny_model(&tiny, dir.path());
    let a = random_tokens(2, 6, tiny.vocab, 2);
    let b = random_tokens(2, 6, tiny.vocab, 3);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| model.resid_post(&a, 4).unwrap());
        let hb = s.spawn(|| model.resid_post(&b, 4).unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!(max_abs_diff(&ra, &model.resid_post(&a, 4).unwrap()), 0.0);
    assert_eq!(max_abs_diff(&rb, &model.resid_post(&b, 4).unwrap()), 0.0);
    // Sequences in a batch do not see each other.
    let one = model.resid_post(&a.narrow(0, 1, 1).unwrap(), 4).unwrap();
    assert!(max_abs_diff(&one, &ra.narrow(0, 1, 1).unwrap()) < 1e-5);
}
