//! Splice losses on a tiny random Gemma: the rows they count, identity and
//! zero splices, the SAE splice's keep mask, and consistency between the
//! one-call and the shared-original paths.

mod lm_support;

use candle_core::{Device, Tensor};
use coact::linalg::Compute;
use coact::lm::{Gemma, LoadOptions, ModelSource};
use coact::metrics::core_eval::mean;
use coact::metrics::splice::{
    counted_rows, log_probs, patched_losses, sae_patch, splice_losses, zero_patch, CountedRows,
    Original, Patch, Reference,
};
use coact::sae::{Sae, SaeConfig, SaeKind};
use lm_support::{argmax, Tiny};

const LAYER: usize = 1;

fn tiny_model(dir: &std::path::Path) -> Gemma {
    Tiny::gemma3().write(dir, 21);
    Gemma::load(&ModelSource::Safetensors(dir.into()), &Device::Cpu).unwrap()
}

/// f32, and bf16 where this CPU has it.
fn computes() -> Vec<Compute> {
    let mut modes = vec![Compute::F32];
    if coact::linalg::backend_info().cpu.has_bf16() {
        modes.push(Compute::Bf16);
    }
    modes
}

/// The checkpoint in `dir` with its products in `compute`.
fn load_in(dir: &std::path::Path, compute: Compute) -> Gemma {
    Gemma::load_with(
        &ModelSource::Safetensors(dir.into()),
        &Device::Cpu,
        &LoadOptions {
            compute,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A sequence the clean model itself predicts (greedy from `first`), so
/// that the clean forward has a low CE that ablations can only worsen.
fn greedy(model: &Gemma, first: u32, len: usize) -> Vec<u32> {
    let mut seq = vec![first];
    while seq.len() < len {
        let ids = Tensor::from_vec(seq.clone(), (1, seq.len()), &Device::Cpu).unwrap();
        let logits = model.logits(&ids, None).unwrap();
        let last = logits.get(0).unwrap().get(seq.len() - 1).unwrap();
        seq.push(argmax(&last));
    }
    seq
}

fn identity(r: &Tensor) -> anyhow::Result<Tensor> {
    Ok(r.clone())
}

#[test]
fn counted_rows_leave_out_special_positions_and_the_last_ce_position() {
    let a: &[u32] = &[5, 6, 7, 8];
    let b: &[u32] = &[9, 10, 11, 12];
    let sa: &[bool] = &[true, false, false, false];
    let sb: &[bool] = &[false, false, true, false];
    let (ids, rows) = counted_rows(&[a, b], &[sa, sb]).unwrap();
    assert_eq!(ids.dims(), &[2, 4]);
    assert_eq!(ids.to_vec2::<u32>().unwrap(), vec![a.to_vec(), b.to_vec()]);
    assert_eq!(
        rows,
        CountedRows {
            // Row b * 4 + t predicts token t + 1; t = 3 has no target.
            ce: vec![(1, 7), (2, 8), (4, 10), (5, 11)],
            kl: vec![1, 2, 3, 4, 5, 7],
        }
    );
    assert!(counted_rows(&[a, &b[..3]], &[sa, &sb[..3]]).is_err());
    assert!(counted_rows(&[a, b], &[sa]).is_err());
    assert!(counted_rows(&[], &[]).is_err());
}

#[test]
fn identity_splice_gives_the_clean_losses_and_zero_ablation_worsens_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let vocab = model.config().vocab;
    let s1 = greedy(&model, 3, 9);
    let s2 = greedy(&model, 40, 9);
    let mut m1 = vec![false; 9];
    m1[0] = true;
    let m2 = vec![false; 9];
    let seqs: Vec<&[u32]> = vec![&s1, &s2];
    let special: Vec<&[bool]> = vec![&m1, &m2];

    let l = splice_losses(&model, LAYER, &seqs, &special, &[&identity, &zero_patch]).unwrap();
    // CE: 8 positions per sequence, less sequence 1's BOS; KL: 9 and 8.
    assert_eq!(l.ce_orig.len(), 7 + 8);
    assert_eq!((l.ce.len(), l.kl.len()), (2, 2));
    assert_eq!(l.ce[0].len(), 15);
    assert_eq!(l.kl[0].len(), 8 + 9);

    // The identity splice changes nothing, bit for bit.
    assert_eq!(l.ce[0], l.ce_orig);
    assert_eq!(l.kl[0], vec![0.0; 17]);

    // Greedy targets are the clean model's best guesses, below the uniform
    // guess's log(vocab); zero ablation forgets the tokens, so CE rises and
    // every counted position's KL is positive.
    let (ce_orig, ce_zero) = (mean(&l.ce_orig), mean(&l.ce[1]));
    assert!(ce_orig < (vocab as f64).ln(), "{ce_orig}");
    assert!(ce_zero > ce_orig + 0.1, "{ce_zero} vs {ce_orig}");
    assert!(l.kl[1].iter().all(|&k| k > 0.0), "{:?}", l.kl[1]);

    // The clean CE is -log softmax(logits)[next token] at the counted rows.
    let (ids, rows) = counted_rows(&seqs, &special).unwrap();
    let lp = log_probs(&model, &ids, None).unwrap();
    assert_eq!(lp.len(), 2 * 9 * vocab);
    for (&(r, t), &ce) in rows.ce.iter().zip(&l.ce_orig) {
        let want = -(lp[r * vocab + t as usize] as f64);
        assert!((ce - want).abs() < 1e-5, "{ce} vs {want}");
    }
    // Every log-probability row sums to 1 in probability.
    for row in lp.chunks(vocab) {
        let p: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        assert!((p - 1.0).abs() < 1e-4, "{p}");
    }
}

#[test]
fn the_sae_splice_replaces_only_the_rows_its_keep_mask_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let d = model.config().d_model;
    let sae = Sae::init(
        SaeConfig {
            d_in: d,
            d_sae: 2 * d,
            kind: SaeKind::TopK { k: 4 },
        },
        5,
    )
    .unwrap();

    // On a residual [2, 3, d]: kept rows unchanged, others reconstructed.
    let r: Vec<f32> = (0..6 * d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let rt = Tensor::from_vec(r.clone(), (2, 3, d), &Device::Cpu).unwrap();
    let keep = [true, false, false, true, true, false];
    let out = sae_patch(&sae, &keep)(&rt).unwrap();
    assert_eq!(out.dims(), &[2, 3, d]);
    let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, &k) in keep.iter().enumerate() {
        let row = &r[i * d..(i + 1) * d];
        let got = &out[i * d..(i + 1) * d];
        if k {
            assert_eq!(got, row, "row {i}");
        } else {
            // (Up to float error: the patch reconstructs its rows in one batch.)
            let want = sae.reconstruct(row).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
            }
            let moved = got.iter().zip(row).map(|(a, b)| (a - b).abs()).sum::<f32>();
            assert!(moved > 0.1, "row {i} should change ({moved})");
        }
    }
    // One mask entry per residual row.
    assert!(sae_patch(&sae, &keep[..5])(&rt).is_err());

    // In a forward: keeping every position is the identity splice; keeping
    // none changes the losses.
    let s: Vec<u32> = greedy(&model, 7, 6);
    let m = vec![false; 6];
    let all = vec![true; 6];
    let none = vec![false; 6];
    let (keep_all, keep_none) = (sae_patch(&sae, &all), sae_patch(&sae, &none));
    let l = splice_losses(&model, LAYER, &[&s], &[&m], &[&keep_all, &keep_none]).unwrap();
    assert_eq!(l.ce[0], l.ce_orig);
    assert_eq!(l.kl[0], vec![0.0; 6]);
    assert_ne!(l.ce[1], l.ce_orig);
    assert!(mean(&l.kl[1]) > 0.0);
    // Keeping only the first position: KL there stays 0 (causal model, the
    // residual before it untouched), later positions change.
    let mut first = vec![false; 6];
    first[0] = true;
    let keep_first = sae_patch(&sae, &first);
    let l1 = splice_losses(&model, LAYER, &[&s], &[&m], &[&keep_first]).unwrap();
    assert_eq!(l1.kl[0][0], 0.0);
    assert_eq!(l1.ce[0][0], l.ce_orig[0]);
    // (The streamed KL is exact to about 1e-6 per token: these are ~1e-6.)
    assert!(l1.kl[0][1..].iter().all(|&k| k > -1e-5), "{:?}", l1.kl[0]);
    assert!(mean(&l1.kl[0][1..]) > 0.0, "{:?}", l1.kl[0]);
    assert!(l1.ce[0][1..]
        .iter()
        .zip(&l.ce_orig[1..])
        .all(|(a, b)| a != b));
}

#[test]
fn a_shared_original_gives_the_one_call_losses_and_must_match_its_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let s1 = greedy(&model, 11, 7);
    let s2 = greedy(&model, 12, 7);
    let m = vec![false; 7];
    let (seqs, special): (Vec<&[u32]>, Vec<&[bool]>) = (vec![&s1, &s2], vec![&m, &m]);
    let zero: Patch<'_> = &zero_patch;

    let original = Original::compute(&model, LAYER, &seqs, &special).unwrap();
    assert_eq!(original.ce.len(), 12);
    // gemma-3's logits are linear in the final hidden state: per KL row the
    // original keeps its log-sum-exp, hidden row and expected unembedding row.
    let d = model.config().d_model;
    let Reference::Linear {
        lse,
        hidden,
        expected,
    } = &original.reference
    else {
        panic!("a gemma-3 original keeps the linear reference");
    };
    assert_eq!(
        (lse.len(), hidden.len(), expected.len()),
        (14, 14 * d, 14 * d)
    );
    assert_eq!(
        original.bytes(),
        14 * 8 + 2 * 14 * d * 4 + 12 * 8 + 14 * d * 4
    );
    let (ce, kl) = patched_losses(&model, LAYER, &seqs, &special, &original, zero).unwrap();
    let l = splice_losses(&model, LAYER, &seqs, &special, &[zero]).unwrap();
    assert_eq!(l.ce_orig, original.ce);
    assert_eq!((l.ce[0].clone(), l.kl[0].clone()), (ce, kl));

    // An original of other sequences (other row counts) is refused.
    let other = Original::compute(&model, LAYER, &seqs[..1], &special[..1]).unwrap();
    assert!(patched_losses(&model, LAYER, &seqs, &special, &other, zero).is_err());

    // One sequence per pass gives the same losses as both at once, up to
    // float error.
    let one = splice_losses(&model, LAYER, &seqs[..1], &special[..1], &[zero]).unwrap();
    for (a, b) in one.ce_orig.iter().zip(&l.ce_orig) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    for (a, b) in one.kl[0].iter().zip(&l.kl[0]) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn continuing_from_a_blocks_residual_is_the_full_forward_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (s1, s2) = (greedy(&model, 5, 6), greedy(&model, 9, 6));
    let ids = Tensor::from_vec([s1, s2].concat(), (2, 6), &Device::Cpu).unwrap();
    let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let resid = model.resid_post(&ids, LAYER).unwrap();

    let full = flat(model.logits(&ids, None).unwrap());
    let hidden = model.final_hidden_from(&resid, LAYER).unwrap();
    assert_eq!(flat(model.unembed(&hidden).unwrap()), full);

    let zero: &dyn Fn(&Tensor) -> anyhow::Result<Tensor> = &zero_patch;
    let spliced = flat(model.logits(&ids, Some((LAYER, zero))).unwrap());
    let hidden = model
        .final_hidden_from(&resid.zeros_like().unwrap(), LAYER)
        .unwrap();
    assert_eq!(flat(model.unembed(&hidden).unwrap()), spliced);
    assert_ne!(spliced, full);

    let d = model.config().d_model;
    let narrow = resid.narrow(2, 0, d - 1).unwrap();
    let err = model.final_hidden_from(&narrow, LAYER).unwrap_err();
    assert!(format!("{err:#}").contains("d_model"), "{err:#}");
    let layers = model.config().n_layers;
    assert!(model.final_hidden_from(&resid, layers).is_err());
}

/// The unembedding by vocabulary slices (a vocabulary over two slices, and
/// gemma-2's final softcap applied per slice) gives the one-product logits.
#[test]
fn unembedding_by_vocabulary_slices_matches_the_whole_product() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny {
        vocab: 40_000,
        ..Tiny::gemma2()
    };
    assert!(tiny.final_softcap.is_some());
    tiny.write(dir.path(), 5);
    for compute in computes() {
        let model = load_in(dir.path(), compute);
        let d = model.config().d_model;
        let hidden = Tensor::randn(0f32, 1.0, (37, d), &Device::Cpu).unwrap();
        let whole = model
            .unembed(&hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut sliced = vec![1.0; 3];
        model.unembed_into(&hidden, &mut sliced).unwrap();
        assert_eq!(sliced.len(), 37 * 40_000);
        let worst = whole
            .iter()
            .zip(&sliced)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{compute:?}: {worst}");
    }
}

/// CE and KL per token from whole log-probability rows, as SAEBench defines
/// them: the reference the streamed losses are checked against.
fn elementwise_losses(
    model: &Gemma,
    seqs: &[&[u32]],
    special: &[&[bool]],
    patch: Patch<'_>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    use coact::metrics::core_eval::{cross_entropy, kl_divergence};
    let vocab = model.config().vocab;
    let (ids, rows) = counted_rows(seqs, special).unwrap();
    let lp_o = log_probs(model, &ids, None).unwrap();
    let lp_q = log_probs(model, &ids, Some((LAYER, patch))).unwrap();
    let row = |lp: &[f32], r: usize| lp[r * vocab..(r + 1) * vocab].to_vec();
    let ce = |lp: &[f32]| -> Vec<f64> {
        rows.ce
            .iter()
            .map(|&(r, t)| cross_entropy(&row(lp, r), t))
            .collect()
    };
    let kl = rows
        .kl
        .iter()
        .map(|&r| kl_divergence(&row(&lp_o, r), &row(&lp_q, r)))
        .collect();
    (ce(&lp_o), ce(&lp_q), kl)
}

/// The streamed losses (lse and the expected unembedding row, over several
/// vocabulary slices and row blocks) agree with the elementwise definitions
/// in f32 and bf16, for a patch far from the original (zero ablation) and
/// one close to it (the residual scaled by 0.98, KL ~1e-3); gemma-2's
/// softcapped logits keep the log-probability path and agree too.
#[test]
fn streamed_ce_and_kl_match_the_elementwise_definitions() {
    let modes = computes();
    let near = |r: &Tensor| -> anyhow::Result<Tensor> { Ok((r * 0.98)?) };
    for (tiny, linear) in [(Tiny::gemma3(), true), (Tiny::gemma2(), false)] {
        let dir = tempfile::tempdir().unwrap();
        let tiny = Tiny {
            vocab: 5_000,
            ..tiny
        };
        tiny.write(dir.path(), 8);
        for &compute in &modes {
            let model = load_in(dir.path(), compute);
            // 2 x 150 rows: two row blocks of 256; 5000 tokens: three slices.
            let s1: Vec<u32> = (0..150u32).map(|i| (i * 37 + 5) % 5_000).collect();
            let s2: Vec<u32> = (0..150u32).map(|i| (i * 91 + 7) % 5_000).collect();
            let mut m1 = vec![false; 150];
            m1[0] = true;
            let m2 = vec![false; 150];
            let (seqs, special): (Vec<&[u32]>, Vec<&[bool]>) = (vec![&s1, &s2], vec![&m1, &m2]);
            let original = Original::compute(&model, LAYER, &seqs, &special).unwrap();
            assert_eq!(
                matches!(original.reference, Reference::Linear { .. }),
                linear,
                "{compute:?}"
            );
            for (name, patch) in [("zero", &zero_patch as Patch<'_>), ("near", &near)] {
                let (ce, kl) =
                    patched_losses(&model, LAYER, &seqs, &special, &original, patch).unwrap();
                let (ce_o, ce_q, kl_want) = elementwise_losses(&model, &seqs, &special, patch);
                let close = |a: &[f64], b: &[f64], what: &str| {
                    assert_eq!(a.len(), b.len());
                    let worst = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs() / y.abs().max(0.05))
                        .fold(0.0, f64::max);
                    assert!(worst < 1e-3, "{compute:?} {name} {what}: {worst}");
                };
                close(&original.ce, &ce_o, "CE original");
                close(&ce, &ce_q, "CE patched");
                close(&kl, &kl_want, "KL");
                let mean_kl = mean(&kl_want);
                assert!(
                    if name == "near" {
                        mean_kl < 0.05
                    } else {
                        mean_kl > 0.05
                    },
                    "{name}: mean KL {mean_kl}"
                );
            }
        }
    }
}
