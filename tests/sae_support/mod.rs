//! Finite-difference gradient checks shared by the SAE tests.

use coact::rng::SplitMix64;
use coact::sae::{Ortho, Sae, SaeConfig, SaeKind, Trainer, TrainerConfig};

/// One of the SAE's parameter tensors.
#[derive(Clone, Copy, Debug)]
pub enum P {
    WEnc,
    WDec,
    BEnc,
    BDec,
}

pub const ALL: [P; 4] = [P::WEnc, P::WDec, P::BEnc, P::BDec];

pub fn param(s: &mut Sae, p: P) -> &mut Vec<f32> {
    match p {
        P::WEnc => &mut s.w_enc_t,
        P::WDec => &mut s.w_dec,
        P::BEnc => &mut s.b_enc,
        P::BDec => &mut s.b_dec,
    }
}

/// Checks the chosen tensors' entries (optionally only some latents) against
/// central differences of the total loss. A coordinate whose +-eps
/// perturbation changes `signature` (what the loss is piecewise smooth in:
/// the selected latents, a cosine ranking) is skipped, since the loss jumps
/// or kinks there. Returns (checked, skipped).
///
/// Tolerance: the loss is f32 arithmetic with f64 sums, about 1e-6 relative
/// per evaluation on losses of order 1-10, so the central difference with
/// eps 2e-3 carries ~1e-3 absolute rounding noise; truncation is O(eps^2).
/// 2e-3 absolute + 2% relative is well above both and far below a missing or
/// wrongly scaled term.
pub fn check<S: PartialEq>(
    t: &mut Trainer,
    x: &[f32],
    params: &[P],
    latents: Option<&[usize]>,
    signature: impl Fn(&Trainer, &[f32]) -> S,
) -> (usize, usize) {
    let d = t.sae().cfg.d_in;
    let (_, g) = t.loss_and_grads(x).unwrap();
    let base = signature(t, x);
    let eps = 2e-3f32;
    let (mut checked, mut skipped) = (0, 0);
    for &p in params {
        let an = match p {
            P::WEnc => &g.w_enc_t,
            P::WDec => &g.w_dec,
            P::BEnc => &g.b_enc,
            P::BDec => &g.b_dec,
        };
        for (idx, &a) in an.iter().enumerate() {
            let latent = match p {
                P::WEnc | P::WDec => Some(idx / d),
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
            let sp = signature(t, x);
            param(t.sae_mut(), p)[idx] = orig - eps;
            let lm = t.loss_and_grads(x).unwrap().0.loss;
            let sm = signature(t, x);
            param(t.sae_mut(), p)[idx] = orig;
            if sp != base || sm != base {
                skipped += 1;
                continue;
            }
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - a).abs() <= 2e-3 + 2e-2 * a.abs().max(fd.abs()),
                "{p:?}[{idx}]: finite difference {fd} vs analytic {a}"
            );
            checked += 1;
        }
    }
    (checked, skipped)
}

/// A trainer on a tiny SAE (d_in `d`, `f` latents) moved away from the
/// symmetric init (random encoder, biases, decoder), as the gradient tests need
/// (no tie, no symmetric selection). The init sample is `16 x d` standard
/// normals of seed 1.
/// `aux`: Some((k_aux, dead_after_tokens)) turns AuxK on with coefficient 1.
pub fn trainer(
    d: usize,
    f: usize,
    kind: SaeKind,
    ortho: Ortho,
    aux: Option<(usize, u64)>,
) -> Trainer {
    let mut r = SplitMix64::new(1);
    let init: Vec<f32> = (0..16 * d).map(|_| r.normal() as f32).collect();
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
        d_in: d,
        d_sae: f,
        kind,
    };
    let mut t = Trainer::new(cfg, sae_cfg, &init).unwrap();
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
