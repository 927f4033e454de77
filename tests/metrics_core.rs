//! SAEBench's core metrics on hand-built arrays, each value worked out by
//! hand in the comments.

use coact::metrics::core_eval::*;
use coact::sae::SparseCodes;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

// Three tokens of dimension 2:
//   x     = [1, 0], [3, 0], [2, 3]      mean [2, 1]
//   x_hat = [1, 1], [3, 0], [2, 3]      residual [0, -1], [0, 0], [0, 0]
// Deviations from the mean: [-1, -1], [1, -1], [0, 2]; squared norms 2, 2, 4.
// Population variances of x: dim 0 (1 + 1 + 0) / 3 = 2/3, dim 1
// (1 + 1 + 4) / 3 = 2; total 8/3.
const X: [f32; 6] = [1.0, 0.0, 3.0, 0.0, 2.0, 3.0];
const X_HAT: [f32; 6] = [1.0, 1.0, 3.0, 0.0, 2.0, 3.0];

#[test]
fn explained_variance_both_ways() {
    // Legacy: per token 1 - SSE / ||x - mean||^2 = 1 - 1/2, 1 - 0/2, 1 - 0/4,
    // mean (0.5 + 1 + 1) / 3 = 5/6.
    close(
        explained_variance_legacy(&X, &X_HAT, 2, &[3]).unwrap(),
        5.0 / 6.0,
    );
    // Corrected: the residual's dim 1 is -1, 0, 0 (mean -1/3), variance
    // ((2/3)^2 + (1/3)^2 + (1/3)^2) / 3 = 2/9; dim 0 is 0. 1 - (2/9) / (8/3) = 11/12.
    close(explained_variance(&X, &X_HAT, 2).unwrap(), 11.0 / 12.0);
}

#[test]
fn mse_follows_saebench_per_batch_normalisation() {
    // SSE per token 1, 0, 0.
    close(sse_per_token(&X, &X_HAT, 2).unwrap(), 1.0 / 3.0);
    // One batch of 3: mean(SSE / 3) = (1/3) / 3.
    close(mse_saebench(&X, &X_HAT, 2, &[3]).unwrap(), 1.0 / 9.0);
    // Batches of 2 and 1 tokens: (1/2 + 0/2 + 0/1) / 3 = 1/6.
    close(mse_saebench(&X, &X_HAT, 2, &[2, 1]).unwrap(), 1.0 / 6.0);
    assert!(mse_saebench(&X, &X_HAT, 2, &[2, 2]).is_err());
}

#[test]
fn cosine_norms_and_shrinkage() {
    // cos: [1,0].[1,1] / sqrt 2 = 1/sqrt 2, then 1 and 1.
    let s2 = 2f64.sqrt();
    close(cossim(&X, &X_HAT, 2).unwrap(), (2.0 + 1.0 / s2) / 3.0);
    // ||x||: 1, 3, sqrt 13; ||x_hat||: sqrt 2, 3, sqrt 13.
    let n = l2_norms(&X, &X_HAT, 2).unwrap();
    close(n.l2_norm_in, (1.0 + 3.0 + 13f64.sqrt()) / 3.0);
    close(n.l2_norm_out, (s2 + 3.0 + 13f64.sqrt()) / 3.0);
    close(n.l2_ratio, (s2 + 1.0 + 1.0) / 3.0);
    // RRB, one batch: sum ||x_hat||^2 = 2 + 9 + 13 = 24 over sum <x, x_hat> =
    // 1 + 9 + 13 = 23.
    close(
        relative_reconstruction_bias(&X, &X_HAT, 2, &[3]).unwrap(),
        24.0 / 23.0,
    );
    // Batches [2, 1]: (2 + 9) / (1 + 9) = 1.1 and 13 / 13 = 1; mean 1.05.
    close(
        relative_reconstruction_bias(&X, &X_HAT, 2, &[2, 1]).unwrap(),
        1.05,
    );
    // A token with ||x|| < 1e-4 is divided by 1; a zero x_hat has cosine 0.
    let n = l2_norms(&[0.0, 0.0], &[3.0, 4.0], 2).unwrap();
    close(n.l2_ratio, 5.0);
    close(cossim(&[1.0, 0.0], &[0.0, 0.0], 2).unwrap(), 0.0);
}

#[test]
fn a_perfect_reconstruction_scores_one_everywhere() {
    let r = reconstruction(&X, &X, 2, &[2, 1]).unwrap();
    assert_eq!(r.tokens, 3);
    close(r.mse, 0.0);
    close(r.sse_per_token, 0.0);
    close(r.explained_variance, 1.0);
    close(r.cossim, 1.0);
    close(r.norms.l2_ratio, 1.0);
    close(r.relative_reconstruction_bias, 1.0);
    // The legacy formula on one batch (a batch of one token would divide 0 by 0).
    close(explained_variance_legacy(&X, &X, 2, &[3]).unwrap(), 1.0);
}

#[test]
fn a_constant_offset_separates_legacy_from_corrected_explained_variance() {
    // x_hat = x + [1, 1]: the residual is the constant [-1, -1], SSE 2 per
    // token. Its variance is 0, so the corrected EV is 1; the legacy one is
    // mean(1 - 2/2, 1 - 2/2, 1 - 2/4) = 1/6.
    let off: Vec<f32> = X.iter().map(|v| v + 1.0).collect();
    close(explained_variance(&X, &off, 2).unwrap(), 1.0);
    close(
        explained_variance_legacy(&X, &off, 2, &[3]).unwrap(),
        1.0 / 6.0,
    );
}

#[test]
fn bad_shapes_are_errors() {
    assert!(explained_variance(&X, &X_HAT[..4], 2).is_err());
    assert!(cossim(&X[..5], &X_HAT[..5], 2).is_err());
    assert!(explained_variance(&[], &[], 2).is_err());
}

/// Three tokens, 4 latents, prompts of 2 and 1 tokens:
/// t0: latent 0 = 1.0, latent 2 = 0.5; t1: latent 0 = 2.0; t2: nothing.
fn codes() -> SparseCodes {
    SparseCodes {
        d_sae: 4,
        indptr: vec![0, 2, 3, 3],
        indices: vec![0, 2, 0],
        values: vec![1.0, 0.5, 2.0],
    }
}

#[test]
fn sparsity_and_densities() {
    // L0 = 3 active / 3 tokens; L1 = 3.5 / 3.
    let (l0, l1) = l0_l1(&codes());
    close(l0, 1.0);
    close(l1, 3.5 / 3.0);
    let d = density(&codes(), &[2, 1]).unwrap();
    assert_eq!(d.fires, vec![2, 0, 1, 0]);
    // Latent 0 fires twice, both in the first prompt: 2 tokens per prompt.
    assert_eq!(d.prompts, vec![1, 0, 1, 0]);
    let f = d.frequency();
    close(f[0], 2.0 / 3.0);
    close(f[2], 1.0 / 3.0);
    let cah = d.consistent_activation_heuristic();
    close(cah[0], 2.0);
    close(cah[2], 1.0);
    assert!(cah[1].is_nan());
    // A zero value stored in the codes neither counts in L0 nor fires.
    let mut z = codes();
    z.values[1] = 0.0;
    close(l0_l1(&z).0, 2.0 / 3.0);
    assert_eq!(density(&z, &[3]).unwrap().fires, vec![2, 0, 0, 0]);

    // Thresholds are strict: 0.01 is not dense. Dead: 0 -> 1/5; > 1%: 0.05
    // and 0.5 -> 2/5; > 10%: 0.5 -> 1/5. Share of firings: total 0.565,
    // over 1% 0.55, over 10% 0.5.
    let s = density_summary(&[0.0, 0.005, 0.01, 0.05, 0.5]);
    close(s.frac_dead, 0.2);
    close(s.frac_dense_1pct, 0.4);
    close(s.frac_dense_10pct, 0.2);
    close(s.normalized_freq_over_1_percent, 0.55 / 0.565);
    close(s.normalized_freq_over_10_percent, 0.5 / 0.565);
}

#[test]
fn max_cosine_with_any_other_row() {
    // Rows [1,0], [1,1], [0,2], [-1,0]. Unit rows: e1, (e1+e2)/sqrt2, e2, -e1.
    // Row 0: max(0.7071, 0, -1) = 0.7071; row 1: max(0.7071, 0.7071, -0.7071);
    // row 2: max(0, 0.7071, 0) = 0.7071; row 3: max(-1, -0.7071, 0) = 0
    // (its own cosine 1 is left out).
    let m = [1.0, 0.0, 1.0, 1.0, 0.0, 2.0, -1.0, 0.0];
    let c = max_cosine_per_row(&m, 4, 2).unwrap();
    let h = 0.5f64.sqrt();
    for (got, want) in c.iter().zip([h, h, h, 0.0]) {
        assert!((got - want).abs() < 1e-6, "{c:?}");
    }
    assert!((mean(&c) - 3.0 * h / 4.0).abs() < 1e-6);
    // More rows than one gemm chunk: the diagonal is excluded in every chunk,
    // so distinct random-ish rows never report their self-similarity of 1.
    let rows = 150;
    let big: Vec<f32> = (0..rows * 3)
        .map(|i| ((i * 7919) % 101) as f32 - 50.0)
        .collect();
    let c = max_cosine_per_row(&big, rows, 3).unwrap();
    assert_eq!(c.len(), rows);
    for (i, &v) in c.iter().enumerate() {
        let r = &big[i * 3..i * 3 + 3];
        let want = (0..rows)
            .filter(|&j| j != i)
            .map(|j| {
                let s = &big[j * 3..j * 3 + 3];
                let dot: f32 = r.iter().zip(s).map(|(a, b)| a * b).sum();
                let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
                (dot / (n(r) * n(s))) as f64
            })
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((v - want).abs() < 1e-5, "row {i}: {v} vs {want}");
    }
}

#[test]
fn cross_entropy_and_kl_from_logits() {
    // Logits [0, ln 2, ln 3]: p = [1, 2, 3] / 6. Against uniform logits:
    // KL(p || u) = 1/6 ln(1/2) + 2/6 ln(1) + 3/6 ln(3/2).
    let mut lp = vec![0.0, 2f32.ln(), 3f32.ln(), 0.0, 0.0, 0.0];
    log_softmax_rows(&mut lp, 3).unwrap();
    // (log-probabilities are f32: 1e-6.)
    assert!((cross_entropy(&lp[..3], 2) - 2f64.ln()).abs() < 1e-6); // -ln(3/6)
    assert!((cross_entropy(&lp[..3], 0) - 6f64.ln()).abs() < 1e-6);
    let want = (0.5f64).ln() / 6.0 + 0.5 * 1.5f64.ln();
    assert!((kl_divergence(&lp[..3], &lp[3..]) - want).abs() < 1e-6);
    // KL of a row with itself is exactly 0; rows at once.
    let kl = kl_divergence_rows(&lp, &lp, 3).unwrap();
    assert_eq!(kl, vec![0.0, 0.0]);
    // Log-softmax is shift invariant and stable for large logits.
    let mut shifted = vec![1000.0, 1000.0 + 2f32.ln(), 1000.0 + 3f32.ln()];
    log_softmax_rows(&mut shifted, 3).unwrap();
    for (a, b) in shifted.iter().zip(&lp[..3]) {
        assert!((a - b).abs() < 1e-4, "{shifted:?}");
    }
    assert!(log_softmax_rows(&mut [0.0; 5], 3).is_err());
}

#[test]
fn ce_and_kl_scores() {
    // (CE_zero - CE_sae) / (CE_zero - CE_orig) = (4 - 2.5) / (4 - 2) = 0.75.
    close(ce_loss_score(2.0, 2.5, 4.0), 0.75);
    // (KL_zero - KL_sae) / KL_zero = (1 - 0.25) / 1.
    close(kl_div_score(0.25, 1.0), 0.75);
    // The identity splice (CE_sae = CE_orig, KL_sae = 0) scores 1; zero
    // ablation (CE_sae = CE_zero, KL_sae = KL_zero) scores 0.
    close(ce_loss_score(2.0, 2.0, 4.0), 1.0);
    close(kl_div_score(0.0, 1.0), 1.0);
    close(ce_loss_score(2.0, 4.0, 4.0), 0.0);
    close(kl_div_score(1.0, 1.0), 0.0);
}

/// The vectorised log-softmax and KL agree with plain f64 arithmetic on
/// vocabulary-sized rows (not a multiple of the lanes or blocks), spread
/// over a wide range of logits as a real unembedding's are.
#[test]
fn log_softmax_and_kl_match_f64_on_large_rows() {
    let vocab = 100_003;
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f64 / (1u64 << 24) as f64) as f32
    };
    let logits: Vec<f32> = (0..2 * vocab).map(|_| 40.0 * next() - 25.0).collect();
    let mut lp = logits.clone();
    log_softmax_rows(&mut lp, vocab).unwrap();
    for (row, got) in logits.chunks(vocab).zip(lp.chunks(vocab)) {
        let max = row.iter().fold(f64::MIN, |a, &v| a.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        for (&x, &g) in row.iter().zip(got) {
            assert!(
                (g as f64 - (x as f64 - lse)).abs() < 1e-5,
                "{g} vs {}",
                x as f64 - lse
            );
        }
    }
    let (p, q) = (&lp[..vocab], &lp[vocab..]);
    let want: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
        .sum();
    let got = kl_divergence(p, q);
    assert!(
        want > 1.0 && ((got - want) / want).abs() < 1e-5,
        "{got} vs {want}"
    );
    assert_eq!(kl_divergence(p, p), 0.0);
    assert_eq!(kl_divergence_rows(&lp, &lp, vocab).unwrap(), vec![0.0, 0.0]);
}
