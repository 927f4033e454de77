//! Hand-written gradients against central finite differences on a tiny SAE
//! (d_in 6, F 10, k 3): reconstruction, AuxK, uniform and guided
//! orthogonality, ReLU-L1.

#[path = "sae_support/mod.rs"]
mod sae_support;

use coact::rng::SplitMix64;
use coact::sae::cofire::guided_penalty;
use coact::sae::{Ortho, SaeConfig, SaeKind, Trainer, TrainerConfig};
use sae_support::{ALL, P};

const D: usize = 6;
const F: usize = 10;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n * D).map(|_| r.normal() as f32).collect()
}

fn trainer(kind: SaeKind, ortho: Ortho, aux: Option<(usize, u64)>) -> Trainer {
    sae_support::trainer(D, F, kind, ortho, aux)
}

/// Every entry checked: these tests choose inputs whose selection no +-eps
/// perturbation changes, so nothing may be skipped.
fn check(t: &mut Trainer, x: &[f32], params: &[P], latents: Option<&[usize]>) -> usize {
    sae_support::check(t, x, params, latents, |_, _| ()).0
}

#[test]
fn topk_reconstruction_gradient() {
    let mut t = trainer(SaeKind::TopK { k: 3 }, Ortho::None, None);
    let x = data(8, 2);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.mse > 0.0 && st.aux == 0.0 && st.ortho == 0.0);
    assert!(check(&mut t, &x, &ALL, None) == 2 * D * F + F + D);
}

#[test]
fn relu_l1_gradient() {
    let mut t = trainer(SaeKind::ReluL1 { l1_coeff: 0.3 }, Ortho::None, None);
    let x = data(8, 3);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.l1 > 0.0);
    check(&mut t, &x, &ALL, None);
}

#[test]
fn auxk_gradient_on_latents_outside_the_main_selection() {
    // Every latent dead (threshold 0), k_aux 7: AuxK reaches latents the main
    // top-3 never picks. For those, the main loss and the detached residual do
    // not depend on their parameters, so the finite difference of the total
    // loss is the AuxK term's alone.
    let mut t = trainer(SaeKind::TopK { k: 3 }, Ortho::None, Some((7, 0)));
    let x = data(4, 4);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.aux > 0.0, "aux loss should be active: {st:?}");
    let codes = t.sae().encode(&x, 4).unwrap();
    let outside: Vec<usize> = (0..F)
        .filter(|j| !codes.indices.contains(&(*j as u32)))
        .collect();
    assert!(!outside.is_empty());
    let n = check(&mut t, &x, &[P::WEnc, P::WDec, P::BEnc], Some(&outside));
    assert!(n > 2 * D);
}

#[test]
fn uniform_orthogonality_gradient() {
    let mut t = trainer(
        SaeKind::TopK { k: 3 },
        Ortho::Uniform {
            lambda: 0.7,
            pairs: 12,
        },
        None,
    );
    let x = data(8, 5);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.ortho > 0.0);
    check(&mut t, &x, &[P::WDec], None);
}

#[test]
fn guided_orthogonality_gradient() {
    let mut t = trainer(
        SaeKind::TopK { k: 3 },
        Ortho::Guided {
            lambda: 0.8,
            tau: 0.2,
        },
        None,
    );
    let x = data(8, 6);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.competing_pairs > 0 && st.ortho > 0.0, "{st:?}");
    check(&mut t, &x, &ALL, None);
}

/// The guided term's value and decoder gradient at a larger shape (d_in 40:
/// SIMD body plus tail; F 240, k 8, 96 tokens, many latents firing once or
/// twice, rows off unit norm) against a straightforward f64 reference: dense
/// co-firing counts, every pair with c_ij >= tau, `sum c |cos| / sum c` and
/// its gradient pair by pair. Both kernels: the trainer's at this size
/// (latent by latent; the ortho gradient is the difference of the guided and
/// the plain trainer's gradients at the same weights) and the token-by-token
/// one large dictionaries use (`cofire::guided_penalty`).
#[test]
fn guided_term_matches_a_dense_reference() {
    let (d, f, k, n) = (40usize, 240usize, 8usize, 96usize);
    // A large lambda, so that the ortho part dominates the gradient difference.
    let (lambda, tau) = (100.0f32, 0.1f32);
    let mut r = SplitMix64::new(21);
    let x: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
    let make = |ortho: Ortho| {
        let mut cfg = TrainerConfig::new(100, n);
        cfg.ortho = ortho;
        cfg.aux_coeff = 0.0;
        let sae_cfg = SaeConfig {
            d_in: d,
            d_sae: f,
            kind: SaeKind::TopK { k },
        };
        let mut t = Trainer::new(cfg, sae_cfg, &x).unwrap();
        let mut r = SplitMix64::new(22);
        let s = t.sae_mut();
        s.w_enc_t.iter_mut().for_each(|v| *v = r.normal() as f32);
        // Rows of norm 0.5..1.5, so the true-cosine gradient is exercised.
        for row in s.w_dec.chunks_mut(d) {
            let scale = 0.5 + r.next_f64() as f32;
            row.iter_mut()
                .for_each(|v| *v = *v * scale + 0.1 * r.normal() as f32);
        }
        t
    };
    let guided = make(Ortho::Guided { lambda, tau });
    let plain = make(Ortho::None);
    assert_eq!(guided.sae(), plain.sae());
    let (sg, gg) = guided.loss_and_grads(&x).unwrap();
    let (_, gp) = plain.loss_and_grads(&x).unwrap();

    // Reference.
    let codes = guided.sae().encode(&x, n).unwrap();
    let mut cnt = vec![0u64; f * f];
    for t in 0..n {
        let l = &codes.indices[codes.indptr[t]..codes.indptr[t + 1]];
        for &a in l {
            for &b in l {
                cnt[a as usize * f + b as usize] += 1;
            }
        }
    }
    let w = &guided.sae().w_dec;
    let row = |i: usize| &w[i * d..(i + 1) * d];
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum::<f64>()
    };
    let mut pairs = Vec::new();
    for i in 0..f {
        for j in i + 1..f {
            let c = cnt[i * f + j];
            if c == 0 {
                continue;
            }
            let cij = c as f64 / cnt[i * f + i].min(cnt[j * f + j]) as f64;
            if cij >= tau as f64 {
                pairs.push((i, j, cij));
            }
        }
    }
    let c_sum: f64 = pairs.iter().map(|p| p.2).sum();
    let mut value = 0.0f64;
    let mut grad = vec![0.0f64; f * d];
    for &(i, j, c) in &pairs {
        let (ni, nj) = (dot(row(i), row(i)).sqrt(), dot(row(j), row(j)).sqrt());
        let cos = dot(row(i), row(j)) / (ni * nj);
        let wgt = c / c_sum;
        value += wgt * cos.abs();
        let s = lambda as f64 * wgt * cos.signum();
        for e in 0..d {
            grad[i * d + e] +=
                s * (row(j)[e] as f64 / (ni * nj) - cos * row(i)[e] as f64 / (ni * ni));
            grad[j * d + e] +=
                s * (row(i)[e] as f64 / (ni * nj) - cos * row(j)[e] as f64 / (nj * nj));
        }
    }
    assert!(pairs.len() > 500, "{} pairs", pairs.len());
    assert_eq!(sg.competing_pairs, pairs.len());
    assert!((sg.mean_c - c_sum / pairs.len() as f64).abs() <= 1e-6 * sg.mean_c);
    assert!(
        (sg.ortho - value).abs() <= 1e-5 * value,
        "{} vs {value}",
        sg.ortho
    );
    let gmax = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (e, &want) in grad.iter().enumerate() {
        let got = (gg.w_dec[e] - gp.w_dec[e]) as f64;
        assert!(
            (got - want).abs() <= 1e-5 * gmax + 1e-4 * want.abs(),
            "w_dec[{e}]: {got} vs reference {want} (max {gmax})"
        );
    }
    let tok = guided_penalty(w, d, &codes.indptr, &codes.indices, tau, true).unwrap();
    assert_eq!(tok.pairs, pairs.len());
    assert!(
        (tok.value - value).abs() <= 1e-5 * value,
        "{} vs {value}",
        tok.value
    );
    assert!(
        (tok.mean_abs_cos * pairs.len() as f64 - sg.mean_abs_cos_competing * pairs.len() as f64)
            .abs()
            <= 1e-5 * tok.mean_abs_cos * pairs.len() as f64
    );
    for (e, &want) in grad.iter().enumerate() {
        let got = lambda as f64 * tok.grad[e] as f64;
        assert!(
            (got - want).abs() <= 1e-5 * gmax + 1e-4 * want.abs(),
            "token kernel w_dec[{e}]: {got} vs reference {want} (max {gmax})"
        );
    }
}
