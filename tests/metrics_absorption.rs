//! The absorption calculator (SAEBench's formula), the feature-split rule,
//! the ground-truth probes and the whole benchmark on a hand-built SAE.

use coact::metrics::absorption::{
    decoder_cosines, evaluate, feature_split_k, train_ground_truth, word_absorption,
    GroundTruthProbe, LeftOut, Settings, Thresholds,
};
use coact::sae::{Sae, SaeConfig, SaeKind};

const TH: Thresholds = Thresholds {
    absorber_cos: 0.1,
    full_cos: 0.025,
    proportion: 0.4,
    max_absorbers: 3,
    fire_eps: 1e-8,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn partial_absorption_by_hand() {
    // u = e0. Latent 0 (main) has decoder e0 (cos 1), latent 1 has decoder
    // (0.6, 0.8) (cos 0.6), latent 2 is orthogonal (cos 0).
    // Activations f0 = 1, f1 = 2.5, f2 = 4 and p = x . u = 3:
    //   a0 = 1, a1 = 1.5, a2 = 0; P_main = 1; absorbers (cos >= 0.1, a > 0):
    //   latent 1 only, P_abs = 1.5; P_abs / p = 0.5 >= 0.4;
    //   A = min(1.5, 3 - 1) = 1.5; fraction = 1.5 / (1.5 + 1) = 0.6.
    // The main latent fires, so this is not full absorption.
    let cos = decoder_cosines(&[1.0, 0.0, 0.6, 0.8, 0.0, 1.0], 2, &[2.0, 0.0]);
    assert!(close(cos[0] as f64, 1.0) && close(cos[1] as f64, 0.6) && cos[2] == 0.0);
    let r = word_absorption(3.0, &[(0, 1.0), (1, 2.5), (2, 4.0)], &cos, &[0], &TH);
    assert!(close(r.fraction, 0.6), "{r:?}");
    assert!(!r.full);

    // Capped by what the main latent leaves: P_abs = 1.5 but p - P_main = 0.5
    // (p = 1.5): A = 0.5, fraction = 0.5 / (0.5 + 1) = 1/3.
    let r = word_absorption(1.5, &[(0, 1.0), (1, 2.5)], &cos, &[0], &TH);
    assert!(close(r.fraction, 1.0 / 3.0), "{r:?}");
}

#[test]
fn formula_edge_cases() {
    let cos = [1.0f32, 0.6, 0.05, 0.5, 0.5, 0.5];
    // P_main >= p: no absorption.
    let r = word_absorption(1.0, &[(0, 1.2), (1, 5.0)], &cos, &[0], &TH);
    assert_eq!(r.fraction, 0.0);
    // P_main <= 0 with enough absorbed: 1, and full absorption (main silent,
    // top latent 1 with a = 3 >= 0.4 p and cos 0.6 >= 0.025).
    let r = word_absorption(2.0, &[(1, 5.0)], &cos, &[0], &TH);
    assert_eq!(r.fraction, 1.0);
    assert!(r.full);
    // P_abs / p < 0.4: 0 (a1 = 0.6, p = 2 -> 0.3), and not full either.
    let r = word_absorption(2.0, &[(1, 1.0)], &cos, &[0], &TH);
    assert_eq!(r.fraction, 0.0);
    assert!(!r.full);
    // A latent with cos < 0.1 is not an absorber (a2 = 0.05 * 40 = 2), but it
    // is the top projecting latent for full absorption (cos 0.05 >= 0.025).
    let r = word_absorption(2.0, &[(2, 40.0)], &cos, &[0], &TH);
    assert_eq!(r.fraction, 0.0);
    assert!(r.full);
    // Only the 3 largest absorbers count: a = 0.5 each for latents 3,4,5 and
    // 0.6 for latent 1: P_abs = 0.6 + 0.5 + 0.5 = 1.6 with p = 4 -> 0.4 (kept),
    // main silent -> 1.
    let act = [(1, 1.0), (3, 1.0), (4, 1.0), (5, 1.0)];
    assert_eq!(word_absorption(4.0, &act, &cos, &[0], &TH).fraction, 1.0);
    // ... with p = 4.1 the share is 1.6 / 4.1 < 0.4 (a fourth absorber would
    // have lifted it to 2.1 / 4.1).
    assert_eq!(word_absorption(4.1, &act, &cos, &[0], &TH).fraction, 0.0);
    // A main latent is never an absorber, even with several main latents.
    let r = word_absorption(2.0, &[(1, 5.0)], &cos, &[0, 1], &TH);
    assert_eq!(r.fraction, 0.0);
    // p <= 0: nothing to absorb.
    let r = word_absorption(-1.0, &[(1, 5.0)], &cos, &[0], &TH);
    assert_eq!(r.fraction, 0.0);
    assert!(!r.full);
    // The top projecting latent has a negative projection: not full.
    let cos_neg = [1.0f32, -0.5];
    let r = word_absorption(1.0, &[(1, 5.0)], &cos_neg, &[0], &TH);
    assert!(!r.full && r.fraction == 0.0);
}

#[test]
fn feature_splits_follow_saebench() {
    // k=1 always counts; k=2 jumps by 0.1 > 0.03; k=3 by 0.02: stop.
    assert_eq!(feature_split_k(&[0.5, 0.6, 0.62, 0.9], 0.03), 2);
    // A jump of exactly the threshold is not enough (strict).
    assert_eq!(feature_split_k(&[0.5, 0.53], 0.03), 1);
    assert_eq!(feature_split_k(&[0.0, 0.0], 0.03), 1);
    assert_eq!(feature_split_k(&[], 0.03), 0);
}

/// Words: x = e_letter (+ e_26 for an "absorbed" word), d = 27.
fn word(letter: usize, absorbed: bool) -> Vec<f32> {
    let mut x = vec![0.0f32; 27];
    x[letter] = 1.0;
    if absorbed {
        x[26] = 1.0;
    }
    x
}

#[test]
fn whole_benchmark_on_a_hand_built_sae() {
    // ReLU SAE with b_enc = b_dec = 0 and 27 latents:
    // - latent L < 26 reads x_L - 0.5 x_26, decoder e_L;
    // - latent 26 reads x_26, decoder (e_0 + e_26) / sqrt 2: it absorbs part
    //   of letter a.
    let (d, f) = (27, 27);
    let mut w_enc_t = vec![0.0f32; f * d];
    let mut w_dec = vec![0.0f32; f * d];
    for l in 0..26 {
        w_enc_t[l * d + l] = 1.0;
        w_enc_t[l * d + 26] = -0.5;
        w_dec[l * d + l] = 1.0;
    }
    w_enc_t[26 * d + 26] = 1.0;
    let h = std::f32::consts::FRAC_1_SQRT_2;
    w_dec[26 * d] = h;
    w_dec[26 * d + 26] = h;
    let sae = Sae {
        cfg: SaeConfig {
            d_in: d,
            d_sae: f,
            kind: SaeKind::ReluL1 { l1_coeff: 0.0 },
        },
        w_enc_t,
        w_dec,
        b_enc: vec![0.0; f],
        b_dec: vec![0.0; d],
        threshold: Vec::new(),
    };
    // Train: 6 a-words, 6 b-words, 4 c-words, all plain. Test: 3 plain a-words
    // and 1 absorbed a-word, 3 b-words, 2 c-words.
    let mut x_train = Vec::new();
    let mut y_train = Vec::new();
    for (l, n) in [(0u8, 6), (1, 6), (2, 4)] {
        for _ in 0..n {
            x_train.extend(word(l as usize, false));
            y_train.push(l);
        }
    }
    let mut x_test = Vec::new();
    let mut y_test = Vec::new();
    for (l, n, absorbed) in [(0u8, 3, false), (0, 1, true), (1, 3, false), (2, 2, false)] {
        for _ in 0..n {
            x_test.extend(word(l as usize, absorbed));
            y_test.push(l);
        }
    }
    // Ground truth by hand: w = e_L, b = -0.5 (detects every word of its
    // letter, absorbed or not); letters a and b pass the F1 threshold, c does
    // not (F1 set to 0.5), the others have no words.
    let probes: Vec<GroundTruthProbe> = (0..26u8)
        .map(|l| GroundTruthProbe {
            letter: l,
            w: word(l as usize, false),
            b: -0.5,
            test_f1: match l {
                0 | 1 => 1.0,
                2 => 0.5,
                _ => 0.0,
            },
            test_precision: 1.0,
            test_recall: 1.0,
            train_words: 0,
            test_words: 0,
            trained: l < 3,
        })
        .collect();
    // First, latent 0 fully suppressed on the absorbed word (reads
    // x_0 - x_26). Latent 0 is a's only positive latent in train and latent
    // 26 never fires there; the absorbed test word has no train-time latent
    // active, so no k-sparse probe finds it and F1 never jumps after k = 1:
    // main latents = {0}.
    // Plain a-words: a0 = 1 = p -> P_main >= p -> 0.
    // Absorbed a-word x = e0 + e26: f0 = relu(1 - 1) = 0, f26 = 1; u = e0,
    // p = 1; a26 = 1 * cos(e0, (e0 + e26)/sqrt 2) = 0.7071 >= 0.4 p, cos
    // >= 0.1 -> P_main = 0 <= 0 -> fraction 1; full absorption too (main
    // silent, top latent 26 with cos 0.707 >= 0.025 and a26 / p >= 0.4).
    // Letter a: 1 of 4 detected words -> 0.25 for both.
    let mut full = sae.clone();
    full.w_enc_t[26] = -1.0;
    let r = evaluate(
        &full,
        &x_train,
        &y_train,
        &x_test,
        &y_test,
        &probes,
        &Settings::default(),
    )
    .unwrap();
    let a = &r.letters[0];
    assert_eq!(a.ranking[0], 0);
    assert_eq!(a.main_latents, vec![0]);
    assert_eq!(a.num_words, 4);
    assert!(close(a.absorption_fraction, 0.25), "{a:?}");
    assert!(close(a.full_absorption_rate, 0.25), "{a:?}");
    assert_eq!(a.num_full_absorption, 1);
    assert_eq!(a.left_out, None);
    let b = &r.letters[1];
    assert_eq!(b.main_latents, vec![1]);
    assert_eq!(b.absorption_fraction, 0.0);
    assert_eq!(b.num_words, 3);
    assert_eq!(r.letters[2].left_out, Some(LeftOut::LowProbeF1));
    assert_eq!(r.letters[3].left_out, Some(LeftOut::LowProbeF1));
    assert_eq!(r.letters_used, 2);
    // Mean over a and b.
    assert!(close(r.mean_absorption_fraction, 0.125));
    assert!(close(r.mean_full_absorption_rate, 0.125));
    assert_eq!(r.mean_num_split_features, 1.0);

    // Partial absorption (latent 0 reads x_0 - 0.5 x_26), with k-sparse
    // probes of one latent so that the main latents stay {0} (with more, a
    // probe on {0, 1} can lower its threshold and catch f0 = 0.5).
    // Absorbed word: f0 = 0.5, f26 = 1, p = 1; a0 = 0.5, a26 = 0.7071;
    // A = min(0.7071, 1 - 0.5) = 0.5; fraction = 0.5 / (0.5 + 0.5) = 0.5;
    // not full (latent 0 fires). Letter a: 0.5 / 4 = 0.125; mean 0.0625.
    let one = Settings {
        max_k: 1,
        ..Settings::default()
    };
    let r = evaluate(&sae, &x_train, &y_train, &x_test, &y_test, &probes, &one).unwrap();
    assert_eq!(r.letters[0].main_latents, vec![0]);
    assert!(
        close(r.letters[0].absorption_fraction, 0.125),
        "{:?}",
        r.letters[0]
    );
    assert_eq!(r.letters[0].num_full_absorption, 0);
    assert!(close(r.mean_absorption_fraction, 0.0625));
}

#[test]
fn ground_truth_probes_separate_letters_and_map_back_to_raw_space() {
    // Letter l's words: a large shared offset plus 3 * e_l plus a word-specific
    // wiggle; the raw-space probe must reproduce the fitted scores.
    let d = 8;
    let mut rng = coact::rng::SplitMix64::new(3);
    let mut make = |n: usize| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let l = (i % 4) as u8;
            for j in 0..d {
                let mut v = 100.0 + rng.normal() * 0.3;
                if j == l as usize {
                    v += 3.0;
                }
                x.push(v as f32);
            }
            y.push(l);
        }
        (x, y)
    };
    let (xtr, ytr) = make(80);
    let (xte, yte) = make(40);
    let probes = train_ground_truth(&xtr, &ytr, &xte, &yte, d, 1e-3, 500).unwrap();
    assert_eq!(probes.len(), 26);
    for p in &probes[..4] {
        assert!(p.trained);
        assert_eq!(p.test_f1, 1.0, "letter {}", p.letter);
        assert_eq!(p.train_words, 20);
        assert_eq!(p.test_words, 10);
        // The probe's direction is mostly its own dimension.
        let best = (0..d).max_by(|&a, &b| p.w[a].total_cmp(&p.w[b])).unwrap();
        assert_eq!(best, p.letter as usize);
    }
    for p in &probes[4..] {
        assert!(!p.trained);
        assert_eq!(p.test_f1, 0.0);
        assert!(p.score(&xte[..d]) < 0.0);
    }
    let err = train_ground_truth(&xtr, &ytr[..3], &xte, &yte, d, 1e-3, 500).unwrap_err();
    assert!(err.to_string().contains("train activations"), "{err}");
}
