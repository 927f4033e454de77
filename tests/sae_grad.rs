//! Hand-written gradients against central finite differences on a tiny SAE
//! (d_in 6, F 10, k 3): reconstruction, AuxK, uniform and guided
//! orthogonality, ReLU-L1.

use coact::rng::SplitMix64;
use coact::sae::{Ortho, Sae, SaeConfig, SaeKind, Trainer, TrainerConfig};

const D: usize = 6;
const F: usize = 10;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n * D).map(|_| r.normal() as f32).collect()
}

fn trainer(kind: SaeKind, ortho: Ortho, aux: Option<(usize, u64)>) -> Trainer {
    let mut cfg = TrainerConfig::new(100, 8);
    cfg.ortho = ortho;
    cfg.seed = 5;
    match aux {
        Some((k_aux, dead_after)) => {
            cfg.aux_k = Some(k_aux);
            cfg.dead_after_tokens = dead_after;
            cfg.aux_coeff = 1.0;
        }
        None => cfg.aux_coeff = 0.0,
    }
    let sae_cfg = SaeConfig {
        d_in: D,
        d_sae: F,
        kind,
    };
    let mut t = Trainer::new(cfg, sae_cfg, &data(16, 1)).unwrap();
    // Move away from the symmetric init: random encoder, biases, decoder.
    let mut r = SplitMix64::new(9);
    let s = t.sae_mut();
    s.w_enc_t
        .iter_mut()
        .for_each(|v| *v = 0.6 * r.normal() as f32);
    s.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.2 * r.normal() as f32);
    s.w_dec
        .iter_mut()
        .for_each(|v| *v += 0.3 * r.normal() as f32);
    s.normalize_decoder_rows();
    s.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.3 * r.normal() as f32);
    t
}

#[derive(Clone, Copy, Debug)]
enum P {
    WEnc,
    WDec,
    BEnc,
    BDec,
}

fn param(s: &mut Sae, p: P) -> &mut Vec<f32> {
    match p {
        P::WEnc => &mut s.w_enc_t,
        P::WDec => &mut s.w_dec,
        P::BEnc => &mut s.b_enc,
        P::BDec => &mut s.b_dec,
    }
}

/// Checks every entry of the chosen tensors (optionally only some latents)
/// against central differences of the total loss.
fn check(t: &mut Trainer, x: &[f32], params: &[P], latents: Option<&[usize]>) -> usize {
    let (_, g) = t.loss_and_grads(x).unwrap();
    let eps = 2e-3f32;
    let mut checked = 0;
    for &p in params {
        let an = match p {
            P::WEnc => &g.w_enc_t,
            P::WDec => &g.w_dec,
            P::BEnc => &g.b_enc,
            P::BDec => &g.b_dec,
        };
        for (idx, &a) in an.iter().enumerate() {
            let latent = match p {
                P::WEnc | P::WDec => Some(idx / D),
                P::BEnc => Some(idx),
                P::BDec => None,
            };
            if let (Some(ls), Some(l)) = (latents, latent) {
                if !ls.contains(&l) {
                    continue;
                }
            }
            let orig = param(t.sae_mut(), p)[idx];
            param(t.sae_mut(), p)[idx] = orig + eps;
            let lp = t.loss_and_grads(x).unwrap().0.loss;
            param(t.sae_mut(), p)[idx] = orig - eps;
            let lm = t.loss_and_grads(x).unwrap().0.loss;
            param(t.sae_mut(), p)[idx] = orig;
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - a).abs() <= 2e-3 + 2e-2 * a.abs().max(fd.abs()),
                "{p:?}[{idx}]: finite difference {fd} vs analytic {a}"
            );
            checked += 1;
        }
    }
    checked
}

const ALL: [P; 4] = [P::WEnc, P::WDec, P::BEnc, P::BDec];

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
