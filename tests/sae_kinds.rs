//! BatchTopK, Matryoshka, JumpReLU inference and OrtSAE: finite-difference
//! gradients, the batch selection against a brute-force reference, the
//! learned threshold, a synthetic hierarchy Matryoshka must recover, OrtSAE's
//! penalty against every partition, validation, SAELens / Gemma Scope IO and
//! checkpoints.

#[path = "sae_support/mod.rs"]
mod sae_support;

use std::collections::HashMap;
use std::path::Path;

use coact::rng::SplitMix64;
use coact::sae::{
    load_saelens, save_saelens, Ortho, Sae, SaeConfig, SaeKind, SaelensMeta, SparseCodes,
    StepStats, Trainer, TrainerConfig,
};
use sae_support::{check, trainer, ALL, P};
use safetensors::tensor::{Dtype, TensorView};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn gauss(n: usize, d: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n * d).map(|_| scale * r.normal() as f32).collect()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Per token, the (latent, value) pairs a selection keeps, latents ascending.
type Sel = Vec<Vec<(usize, f32)>>;

/// Brute-force BatchTopK: sort every positive pre-activation of the batch
/// (value descending, then token, then latent) and keep the first `budget`.
fn batch_ref(pre: &[f32], n: usize, f: usize, budget: usize) -> Sel {
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for t in 0..n {
        for j in 0..f {
            let v = pre[t * f + j];
            if v > 0.0 {
                all.push((v, t, j));
            }
        }
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    all.truncate(budget);
    let mut sel = vec![Vec::new(); n];
    for (v, t, j) in all {
        sel[t].push((j, v));
    }
    sel.iter_mut().for_each(|s| s.sort_by_key(|e| e.0));
    sel
}

/// Per token, the k largest positive pre-activations among `allowed` latents.
fn topk_ref(pre: &[f32], n: usize, f: usize, k: usize, allowed: &[bool]) -> Sel {
    (0..n)
        .map(|t| {
            let mut row: Vec<(f32, usize)> = (0..f)
                .filter(|&j| allowed[j] && pre[t * f + j] > 0.0)
                .map(|j| (pre[t * f + j], j))
                .collect();
            row.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            row.truncate(k);
            let mut s: Vec<(usize, f32)> = row.into_iter().map(|(v, j)| (j, v)).collect();
            s.sort_by_key(|e| e.0);
            s
        })
        .collect()
}

/// The latents the trainer's main selection and AuxK keep on `x`, computed
/// densely from `Sae::pre_activations` (the same f32 values the trainer's
/// encoder produces).
fn selection(t: &Trainer, x: &[f32]) -> (Sel, Sel) {
    let sae = t.sae();
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let n = x.len() / d;
    let pre = sae.pre_activations(x, n).unwrap();
    let all = vec![true; f];
    let main = match sae.cfg.kind {
        SaeKind::TopK { k } => topk_ref(&pre, n, f, k, &all),
        SaeKind::BatchTopK { k } | SaeKind::Matryoshka { k, .. } => batch_ref(&pre, n, f, k * n),
        _ => topk_ref(&pre, n, f, f, &all),
    };
    let cfg = t.config();
    let dead: Vec<bool> = t
        .since_fired()
        .iter()
        .map(|&s| s >= cfg.dead_after_tokens)
        .collect();
    let n_dead = dead.iter().filter(|&&b| b).count();
    let k_aux = cfg.aux_k.unwrap_or(d / 2).min(n_dead);
    let aux = if cfg.aux_coeff > 0.0 && k_aux > 0 {
        topk_ref(&pre, n, f, k_aux, &dead)
    } else {
        vec![Vec::new(); n]
    };
    (main, aux)
}

fn support(s: &Sel) -> Vec<Vec<usize>> {
    s.iter().map(|r| r.iter().map(|e| e.0).collect()).collect()
}

/// For each decoder row, the other rows ranked by cos^2 (descending). If no
/// ranking changes, no within-chunk argmax of OrtSAE can change, whatever
/// the partition.
fn cos_ranks(w_dec: &[f32], d: usize, f: usize) -> Vec<Vec<usize>> {
    let row = |i: usize| &w_dec[i * d..(i + 1) * d];
    (0..f)
        .map(|i| {
            let mut o: Vec<(f64, usize)> = (0..f)
                .filter(|&j| j != i)
                .map(|j| {
                    let c = dot64(row(i), row(j))
                        / (dot64(row(i), row(i)) * dot64(row(j), row(j))).sqrt();
                    (c * c, j)
                })
                .collect();
            o.sort_by(|a, b| b.0.total_cmp(&a.0));
            o.into_iter().map(|e| e.1).collect()
        })
        .collect()
}

/// Everything the loss's piecewise-smooth pieces depend on: main and AuxK
/// supports and, with OrtSAE, the cosine rankings.
fn signature(t: &Trainer, x: &[f32]) -> Vec<Vec<usize>> {
    let (m, a) = selection(t, x);
    let mut s = support(&m);
    s.extend(support(&a));
    if matches!(t.config().ortho, Ortho::OrtSae { .. }) {
        let c = &t.sae().cfg;
        s.extend(cos_ranks(&t.sae().w_dec, c.d_in, c.d_sae));
    }
    s
}

/// Dense f64 reference of the batch kinds' loss (no AuxK, no orthogonality)
/// from the brute-force selection: per prefix mean_t ||x_hat_prefix - x||^2
/// (b_dec in every prefix) and the gradients of their sum.
struct Reference {
    sel: Sel,
    prefix_mse: Vec<f64>,
    w_enc_t: Vec<f64>,
    w_dec: Vec<f64>,
    b_enc: Vec<f64>,
    b_dec: Vec<f64>,
}

fn reference(sae: &Sae, x: &[f32]) -> Reference {
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let n = x.len() / d;
    let k = sae.cfg.kind.k().unwrap();
    let pre = sae.pre_activations(x, n).unwrap();
    reference_of(sae, x, batch_ref(&pre, n, f, k * n))
}

/// The loss's f64 gradients for the selection `sel` (values as given).
fn reference_of(sae: &Sae, x: &[f32], sel: Sel) -> Reference {
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let n = x.len() / d;
    let ends = sae.cfg.kind.prefix_ends(f);
    let group = |j: usize| ends.iter().position(|&e| j < e).unwrap();
    let np = ends.len();
    let mut out = Reference {
        sel: Vec::new(),
        prefix_mse: vec![0.0; np],
        w_enc_t: vec![0.0; f * d],
        w_dec: vec![0.0; f * d],
        b_enc: vec![0.0; f],
        b_dec: vec![0.0; d],
    };
    for t in 0..n {
        let xt = &x[t * d..(t + 1) * d];
        let xc: Vec<f64> = (0..d).map(|q| xt[q] as f64 - sae.b_dec[q] as f64).collect();
        // e[g] = x_hat_g - x for each prefix g.
        let mut e = vec![vec![0.0f64; d]; np];
        for (g, eg) in e.iter_mut().enumerate() {
            for q in 0..d {
                let mut v = sae.b_dec[q] as f64 - xt[q] as f64;
                for &(j, z) in &sel[t] {
                    if j < ends[g] {
                        v += z as f64 * sae.w_dec[j * d + q] as f64;
                    }
                }
                eg[q] = v;
            }
            out.prefix_mse[g] += eg.iter().map(|v| v * v).sum::<f64>() / n as f64;
        }
        // d loss / d x_hat_g = 2 e_g / n; a latent of group G is in prefixes G..np.
        for eg in &e {
            for (b, v) in out.b_dec.iter_mut().zip(eg) {
                *b += 2.0 * v / n as f64;
            }
        }
        for &(j, z) in &sel[t] {
            let mut h = vec![0.0f64; d];
            for eg in &e[group(j)..] {
                for q in 0..d {
                    h[q] += 2.0 * eg[q] / n as f64;
                }
            }
            let gpre: f64 = (0..d).map(|q| sae.w_dec[j * d + q] as f64 * h[q]).sum();
            for q in 0..d {
                out.w_dec[j * d + q] += z as f64 * h[q];
                out.w_enc_t[j * d + q] += gpre * xc[q];
                out.b_dec[q] -= gpre * sae.w_enc_t[j * d + q] as f64;
            }
            out.b_enc[j] += gpre;
        }
    }
    out.sel = sel;
    out
}

/// Asserts that `got` matches the f64 `want` to 1e-4 of the tensor's largest
/// entry (f32 sums of at most a few hundred terms: ~1e-6 relative error; a
/// wrongly selected entry moves its latent's gradient by O(the largest)).
fn assert_close(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{name}: reference gradient is zero");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-4 * scale + 1e-4 * w.abs(),
            "{name}[{i}]: {g} vs reference {w} (largest {scale})"
        );
    }
}

fn assert_matches_reference(t: &Trainer, x: &[f32]) -> (StepStats, Reference) {
    assert_matches(t, x, reference(t.sae(), x))
}

fn assert_matches(t: &Trainer, x: &[f32], r: Reference) -> (StepStats, Reference) {
    let (st, g) = t.loss_and_grads(x).unwrap();
    let full = *r.prefix_mse.last().unwrap();
    let sum: f64 = r.prefix_mse.iter().sum();
    assert!(
        (st.mse - full).abs() <= 1e-5 * full,
        "mse {} vs reference {full}",
        st.mse
    );
    assert!(
        (st.loss - sum).abs() <= 1e-5 * sum,
        "loss {} vs reference sum of prefix losses {sum}",
        st.loss
    );
    assert_close("w_dec", &g.w_dec, &r.w_dec);
    assert_close("w_enc_t", &g.w_enc_t, &r.w_enc_t);
    assert_close("b_enc", &g.b_enc, &r.b_enc);
    assert_close("b_dec", &g.b_dec, &r.b_dec);
    (st, r)
}

fn batch_cfg(d: usize, f: usize, kind: SaeKind) -> SaeConfig {
    SaeConfig {
        d_in: d,
        d_sae: f,
        kind,
    }
}

fn run(t: &mut Trainer, data: &[f32], bs: usize, from: usize, to: usize) -> Vec<StepStats> {
    let d = t.sae().cfg.d_in;
    let n_batches = data.len() / (bs * d);
    (from..to)
        .map(|s| {
            let b = s % n_batches;
            t.step(&data[b * bs * d..(b + 1) * bs * d]).unwrap()
        })
        .collect()
}

/// OrtSAE's P for one partition (chunks given as latent lists), f64.
fn ortsae_p(w_dec: &[f32], d: usize, chunks: &[Vec<usize>]) -> f64 {
    let row = |i: usize| &w_dec[i * d..(i + 1) * d];
    let cos2 = |i: usize, j: usize| {
        let c = dot64(row(i), row(j)) / (dot64(row(i), row(i)) * dot64(row(j), row(j))).sqrt();
        c * c
    };
    let k = chunks.len() as f64;
    chunks
        .iter()
        .map(|c| {
            c.iter()
                .map(|&i| {
                    c.iter()
                        .filter(|&&j| j != i)
                        .map(|&j| cos2(i, j))
                        .fold(0.0f64, f64::max)
                })
                .sum::<f64>()
                / (k * c.len() as f64)
        })
        .sum()
}

// ---------------------------------------------------------------------------
// 1. Finite-difference gradients
// ---------------------------------------------------------------------------

#[test]
fn batch_topk_gradient() {
    let (d, f) = (6, 10);
    let mut t = trainer(d, f, SaeKind::BatchTopK { k: 2 }, Ortho::None, None);
    let x = gauss(8, d, 2, 1.0);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.mse > 0.0 && st.aux == 0.0 && st.ortho == 0.0);
    assert_eq!(st.l0, 2.0, "batch L0 is k on average");
    let (checked, skipped) = check(&mut t, &x, &ALL, None, signature);
    assert!(
        checked >= 110 && skipped <= 16,
        "{checked} checked, {skipped} skipped"
    );
}

#[test]
fn batch_topk_auxk_gradient_on_dead_latents_outside_the_selection() {
    // dead_after = one batch: after one step the latents the batch selection
    // did not pick are dead. On the next batch AuxK's top-3 among them
    // reconstructs the detached residual. For latents outside the main
    // selection, the main loss and the residual do not depend on their
    // parameters, so the finite difference of the total loss is AuxK's alone
    // (and exactly 0 for the live ones AuxK may not use).
    let (d, f, n) = (6, 12, 8);
    let mut t = trainer(
        d,
        f,
        SaeKind::BatchTopK { k: 1 },
        Ortho::None,
        Some((3, n as u64)),
    );
    t.step(&gauss(n, d, 3, 1.0)).unwrap();
    let dead: Vec<usize> = (0..f).filter(|&j| t.since_fired()[j] >= n as u64).collect();
    assert!(
        !dead.is_empty() && dead.len() < f,
        "want some dead and some live latents: {dead:?}"
    );
    let x = gauss(n, d, 4, 1.0);
    let (st, g) = t.loss_and_grads(&x).unwrap();
    assert!(st.aux > 0.0, "aux loss should be active: {st:?}");
    let (main, aux) = selection(&t, &x);
    let used: Vec<usize> = main.iter().flatten().map(|e| e.0).collect();
    let outside: Vec<usize> = (0..f).filter(|j| !used.contains(j)).collect();
    let in_aux: Vec<usize> = aux.iter().flatten().map(|e| e.0).collect();
    assert!(in_aux.iter().all(|j| dead.contains(j)));
    // AuxK reaches latents outside the main selection, and only dead ones.
    let reached: Vec<usize> = outside
        .iter()
        .copied()
        .filter(|&j| g.b_enc[j] != 0.0)
        .collect();
    assert!(
        !reached.is_empty(),
        "no AuxK gradient outside the selection"
    );
    assert!(
        reached.iter().all(|j| in_aux.contains(j)),
        "{reached:?} vs AuxK's {in_aux:?}"
    );
    let (checked, _) = check(
        &mut t,
        &x,
        &[P::WEnc, P::WDec, P::BEnc],
        Some(&outside),
        signature,
    );
    assert!(checked > 2 * d * reached.len(), "{checked} checked");
}

#[test]
fn matryoshka_gradient_and_summed_prefix_losses() {
    let (d, f) = (6, 10);
    let kind = SaeKind::Matryoshka {
        k: 2,
        groups: vec![3, 3, 4],
    };
    let mut t = trainer(d, f, kind, Ortho::None, None);
    let x = gauss(8, d, 5, 1.0);
    // The loss is the sum of the three prefix losses (each with b_dec) and
    // mse the whole dictionary's, against a dense reference.
    let (st, r) = assert_matches_reference(&t, &x);
    assert!(
        st.loss > 1.5 * st.mse && r.prefix_mse[0] != r.prefix_mse[1],
        "the prefixes should add distinct, real amounts: {:?}",
        r.prefix_mse
    );
    let (checked, skipped) = check(&mut t, &x, &ALL, None, signature);
    assert!(
        checked >= 110 && skipped <= 16,
        "{checked} checked, {skipped} skipped"
    );
}

#[test]
fn ortsae_gradient_at_a_fixed_partition() {
    // prepare() draws the partition from a clone of the trainer's RNG and
    // only step() stores the advanced clone, so every loss_and_grads call
    // between steps sees the same partition: the loss is a fixed function of
    // the weights and central differences apply.
    let (d, f) = (6, 12);
    let ortho = Ortho::OrtSae {
        lambda: 2.0,
        chunks: 3,
    };
    let mut t = trainer(d, f, SaeKind::TopK { k: 3 }, ortho, None);
    let x = gauss(8, d, 6, 1.0);
    let (s1, g1) = t.loss_and_grads(&x).unwrap();
    let (s2, g2) = t.loss_and_grads(&x).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(g1.w_dec, g2.w_dec);
    assert!(s1.ortho > 0.0);
    // The penalty's gradient is a real part of W_dec's.
    let plain = trainer(d, f, SaeKind::TopK { k: 3 }, Ortho::None, None);
    assert_eq!(plain.sae(), t.sae());
    let (_, gp) = plain.loss_and_grads(&x).unwrap();
    let diff = g1
        .w_dec
        .iter()
        .zip(&gp.w_dec)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff > 0.05, "ortho gradient too small to test: {diff}");
    let (checked, skipped) = check(&mut t, &x, &ALL, None, signature);
    assert!(
        checked >= 120 && skipped <= 40,
        "{checked} checked, {skipped} skipped"
    );
}

#[test]
fn guided_on_batch_topk_uses_the_batch_lists_and_has_the_right_gradient() {
    let (d, f) = (6, 10);
    let tau = 0.2f32;
    let mut t = trainer(
        d,
        f,
        SaeKind::BatchTopK { k: 3 },
        Ortho::Guided { lambda: 0.8, tau },
        None,
    );
    let x = gauss(8, d, 7, 1.0);
    let (st, _) = t.loss_and_grads(&x).unwrap();
    assert!(st.competing_pairs > 0 && st.ortho > 0.0, "{st:?}");
    // Competing pairs counted from the brute-force batch selection.
    let (main, _) = selection(&t, &x);
    let mut cnt = vec![0u64; f * f];
    for row in &main {
        for &(a, _) in row {
            for &(b, _) in row {
                cnt[a * f + b] += 1;
            }
        }
    }
    let mut pairs = 0;
    for i in 0..f {
        for j in i + 1..f {
            let c = cnt[i * f + j];
            if c > 0 && c as f64 / cnt[i * f + i].min(cnt[j * f + j]) as f64 >= tau as f64 {
                pairs += 1;
            }
        }
    }
    assert_eq!(st.competing_pairs, pairs);
    let (checked, skipped) = check(&mut t, &x, &ALL, None, signature);
    assert!(
        checked >= 110 && skipped <= 16,
        "{checked} checked, {skipped} skipped"
    );
}

// ---------------------------------------------------------------------------
// 2. BatchTopK selection
// ---------------------------------------------------------------------------

/// A BatchTopK trainer around `sae` (no AuxK, no orthogonality).
fn around(sae: Sae) -> Trainer {
    around_in(sae, coact::linalg::Compute::F32)
}

/// [`around`] with the encoder product in `compute`.
fn around_in(sae: Sae, compute: coact::linalg::Compute) -> Trainer {
    let mut cfg = TrainerConfig::new(10, 8);
    cfg.aux_coeff = 0.0;
    cfg.compute = compute;
    let d = sae.cfg.d_in;
    let mut t = Trainer::new(cfg, sae.cfg.clone(), &gauss(4, d, 1, 1.0)).unwrap();
    *t.sae_mut() = sae;
    t
}

/// A BatchTopK SAE with a random encoder and biases (so that
/// pre-activations spread), and the generator for further draws.
fn random_batch_topk(d: usize, f: usize, k: usize, seed: u64) -> (Sae, SplitMix64) {
    let mut sae = Sae::init(batch_cfg(d, f, SaeKind::BatchTopK { k }), 3).unwrap();
    let mut r = SplitMix64::new(seed);
    sae.w_enc_t.iter_mut().for_each(|v| *v = r.normal() as f32);
    sae.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.2 * r.normal() as f32);
    sae.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.2 * r.normal() as f32);
    (sae, r)
}

#[test]
fn batch_topk_selection_matches_a_brute_force_reference() {
    let (d, f, k, n) = (8, 40, 2, 8);
    let (sae, mut r) = random_batch_topk(d, f, k, 4);

    // (a) A random batch: k n entries in total, unevenly spread over tokens.
    let x = gauss(n, d, 5, 1.0);
    let t = around(sae.clone());
    let (st, re) = assert_matches_reference(&t, &x);
    let counts: Vec<usize> = re.sel.iter().map(Vec::len).collect();
    assert_eq!(counts.iter().sum::<usize>(), k * n);
    assert!((st.l0 - k as f64).abs() < 1e-12, "l0 {}", st.l0);
    assert_ne!(counts.iter().min(), counts.iter().max(), "{counts:?}");

    // (b) Token 0 has 12 large pre-activations, more than the 4k = 8
    // candidates kept per token before the cut: the selection is exact only
    // if that token is expanded (else it would get 8 and others the rest).
    let mut spiky = sae.clone();
    let mut u: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
    let nu = dot64(&u, &u).sqrt() as f32;
    u.iter_mut().for_each(|v| *v /= nu);
    for (j, row) in spiky.w_enc_t.chunks_mut(d).enumerate() {
        for (w, &uq) in row.iter_mut().zip(&u) {
            *w = if j < 12 {
                uq + 0.1 * r.normal() as f32
            } else {
                0.3 * r.normal() as f32
            };
        }
    }
    spiky.b_dec.iter_mut().for_each(|v| *v = 0.0);
    spiky.b_enc.iter_mut().for_each(|v| *v = 0.0);
    let mut xs = gauss(n, d, 6, 1.0);
    for q in 0..d {
        xs[q] = 5.0 * u[q];
    }
    let t = around(spiky);
    let (st, re) = assert_matches_reference(&t, &xs);
    let counts: Vec<usize> = re.sel.iter().map(Vec::len).collect();
    assert!(counts[0] >= 12, "construction: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), k * n);
    assert!((st.l0 - k as f64).abs() < 1e-12);

    // (c) Fewer positive pre-activations than k n: all of them are kept.
    let mut sparse = sae.clone();
    sparse.b_enc.iter_mut().for_each(|v| *v -= 6.0);
    let t = around(sparse.clone());
    let pre = sparse.pre_activations(&x, n).unwrap();
    let positives = pre.iter().filter(|&&v| v > 0.0).count();
    assert!(positives > 0 && positives < k * n, "{positives} positives");
    let (st, _) = assert_matches_reference(&t, &x);
    assert!((st.l0 * n as f64 - positives as f64).abs() < 1e-9);

    // (d) Ties at the cut: tokens repeat (0..3 = 3..6) and so do encoder rows
    // (j and j + 20), so each value occurs 4 times and the k n = 18th place
    // falls inside such a group: the tied values are filled in token order,
    // then latent order, as the reference sorts them.
    let (k3, n6) = (3, 6);
    let mut tied = sae.clone();
    tied.cfg.kind = SaeKind::BatchTopK { k: k3 };
    for j in 0..f / 2 {
        for q in 0..d {
            tied.w_enc_t[(j + f / 2) * d + q] = tied.w_enc_t[j * d + q];
        }
        tied.b_enc[j + f / 2] = tied.b_enc[j];
    }
    let mut xt = gauss(n6, d, 7, 1.0);
    let (a, b) = xt.split_at_mut(n6 / 2 * d);
    b.copy_from_slice(a);
    let pre = tied.pre_activations(&xt, n6).unwrap();
    let mut pos: Vec<f32> = pre.iter().copied().filter(|&v| v > 0.0).collect();
    pos.sort_by(|a, b| b.total_cmp(a));
    let budget = k3 * n6;
    assert!(
        pos[budget - 2] == pos[budget - 1] && pos[budget - 1] == pos[budget],
        "construction: no tie across the cut: {:?}",
        &pos[budget - 4..budget + 4]
    );
    let t = around(tied);
    let (st, re) = assert_matches_reference(&t, &xt);
    assert!((st.l0 - k3 as f64).abs() < 1e-12);
    let counts: Vec<usize> = re.sel.iter().map(Vec::len).collect();
    assert_ne!(
        counts[..n6 / 2],
        counts[n6 / 2..],
        "ties broken by token: {counts:?}"
    );
}

/// Rounds to bf16 (to nearest, ties to even), as the bf16 encoder rounds
/// its inputs and weights.
fn bf16(v: f32) -> f64 {
    let b = v.to_bits();
    f32::from_bits(((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16) as f64
}

#[test]
fn bf16_batch_topk_cuts_on_bf16_products_and_keeps_f32_values() {
    if !coact::linalg::cpu().has_bf16() {
        eprintln!(
            "skipped: no bf16 hardware ({})",
            coact::linalg::cpu().flags()
        );
        return;
    }
    let (d, f, k, n) = (64, 200, 4, 16);
    let (sae, _) = random_batch_topk(d, f, k, 8);
    let t = around_in(sae.clone(), coact::linalg::Compute::Bf16);

    // The cut on bf16 products (exact bf16 x bf16 terms, summed in f64: the
    // encoder's f32 sums differ by ~1e-7, far below the gaps at this size),
    // then each kept entry's exact f32 value. The first batch whose bf16 cut
    // differs from the f32 one is the case.
    let cut = |x: &[f32]| -> (Sel, Vec<Vec<usize>>) {
        let exact = sae.pre_activations(x, n).unwrap();
        let mut approx = vec![0.0f32; n * f];
        for tok in 0..n {
            let xc: Vec<f64> = (0..d)
                .map(|q| bf16(x[tok * d + q] - sae.b_dec[q]))
                .collect();
            for j in 0..f {
                let w = &sae.w_enc_t[j * d..(j + 1) * d];
                let s: f64 = xc.iter().zip(w).map(|(a, &b)| a * bf16(b)).sum();
                approx[tok * f + j] = (sae.b_enc[j] as f64 + s) as f32;
            }
        }
        let chosen: Sel = batch_ref(&approx, n, f, k * n)
            .into_iter()
            .enumerate()
            .map(|(tok, row)| {
                row.into_iter()
                    .map(|(j, _)| (j, exact[tok * f + j]))
                    .filter(|e| e.1 > 0.0)
                    .collect()
            })
            .collect();
        (chosen, support(&batch_ref(&exact, n, f, k * n)))
    };
    let (x, chosen) = (9..40)
        .map(|seed| gauss(n, d, seed, 1.0))
        .find_map(|x| {
            let (chosen, by_f32) = cut(&x);
            (support(&chosen) != by_f32).then_some((x, chosen))
        })
        .expect("construction: bf16 and f32 cut alike on every batch");
    let (st, _) = assert_matches(&t, &x, reference_of(&sae, &x, chosen));
    assert!(st.l0 <= k as f64, "l0 {}", st.l0);
}

// ---------------------------------------------------------------------------
// 3. Threshold
// ---------------------------------------------------------------------------

#[test]
fn threshold_follows_the_ema_of_the_smallest_kept_activation() {
    let (d, f, k, n) = (8, 24, 2, 32);
    let x = gauss(n * 4, d, 8, 1.0);
    let mut cfg = TrainerConfig::new(50, n);
    cfg.threshold_lr = 0.25;
    let mut t = Trainer::new(cfg, batch_cfg(d, f, SaeKind::BatchTopK { k }), &x).unwrap();
    assert_eq!(t.sae().threshold, vec![0.0; f]);
    run(&mut t, &x, n, 0, 3);
    // One step from a known state: threshold 0.37 everywhere.
    t.sae_mut().threshold.iter_mut().for_each(|v| *v = 0.37);
    let before = t.sae().clone();
    let batch = &x[..n * d];
    let sel = batch_ref(&before.pre_activations(batch, n).unwrap(), n, f, k * n);
    let m = sel
        .iter()
        .flatten()
        .map(|e| e.1)
        .fold(f32::INFINITY, f32::min);
    assert!(m.is_finite() && m > 0.0);
    let st = t.step(batch).unwrap();
    let want = (0.75 * 0.37f32 as f64 + 0.25 * m as f64) as f32;
    // Equal up to f32 rounding of the min (an expanded token's values come
    // from a separate gemm call).
    for &v in &t.sae().threshold {
        assert!((v - want).abs() <= 1e-6 * want, "threshold {v} vs {want}");
    }
    assert_eq!(st.threshold, t.sae().threshold[0] as f64);

    // With the default rate, from 0: positive and one value for all latents.
    let mut cfg = TrainerConfig::new(50, n);
    cfg.seed = 1;
    let mut t = Trainer::new(cfg, batch_cfg(d, f, SaeKind::BatchTopK { k }), &x).unwrap();
    let stats = run(&mut t, &x, n, 0, 10);
    let thr = t.sae().threshold.clone();
    assert!(thr[0] > 0.0 && thr.iter().all(|&v| v == thr[0]), "{thr:?}");
    assert_eq!(stats.last().unwrap().threshold, thr[0] as f64);
    // Each step moves it 1% of the way to that step's smallest kept value; 10
    // steps from 0 leave it ~10% of the way there, so it rises every step.
    assert!(stats.windows(2).all(|w| w[1].threshold > w[0].threshold));
}

#[test]
fn encode_keeps_pre_activations_above_the_threshold_only() {
    let (d, f, n) = (8, 24, 64);
    let mut sae = Sae::init(batch_cfg(d, f, SaeKind::BatchTopK { k: 3 }), 2).unwrap();
    let mut r = SplitMix64::new(3);
    sae.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.2 * r.normal() as f32);
    sae.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.2 * r.normal() as f32);
    let x = gauss(n, d, 9, 1.0);
    let pre = sae.pre_activations(&x, n).unwrap();
    let mut pos: Vec<f32> = pre.iter().copied().filter(|&v| v > 0.0).collect();
    pos.sort_by(f32::total_cmp);
    // Thresholds: a BatchTopK one (a value that occurs, which must be dropped
    // since the test is strict), a per-latent one, and a negative one (then
    // only positive values are kept).
    let median = pos[pos.len() / 2];
    let per_latent: Vec<f32> = (0..f).map(|j| pos[(j * pos.len()) / (2 * f)]).collect();
    for thr in [vec![median; f], per_latent, vec![-0.5; f]] {
        let mut s = sae.clone();
        s.threshold = thr.clone();
        let codes = s.encode(&x, n).unwrap();
        let mut want = SparseCodes {
            d_sae: f,
            indptr: vec![0],
            ..Default::default()
        };
        let mut dropped = 0;
        for t in 0..n {
            for j in 0..f {
                let v = pre[t * f + j];
                if v > thr[j] && v > 0.0 {
                    want.indices.push(j as u32);
                    want.values.push(v);
                } else if v > 0.0 {
                    dropped += 1;
                }
            }
            want.indptr.push(want.indices.len());
        }
        assert_eq!(codes, want, "threshold {:?}", &thr[..3]);
        if thr[0] > 0.0 {
            assert!(
                dropped > 50 && !want.indices.is_empty(),
                "{dropped} dropped"
            );
        } else {
            assert_eq!(dropped, 0);
        }
    }
}

// ---------------------------------------------------------------------------
// 4. A hierarchy Matryoshka must find
// ---------------------------------------------------------------------------

/// Tokens from a two-level hierarchy in d_in 8: parent p = e_0, children
/// c_i = e_1..e_6. 30% nothing, 10% the parent alone, 60% the parent and one
/// child (x = a p + b c_i, a, b uniform in [0.7, 1.3]), plus noise 0.02.
fn hierarchy(n: usize, seed: u64) -> Vec<f32> {
    let d = 8;
    let mut r = SplitMix64::new(seed);
    let mut x = vec![0.0f32; n * d];
    for t in 0..n {
        let row = &mut x[t * d..(t + 1) * d];
        let u = r.next_f64();
        if u >= 0.3 {
            row[0] = (0.7 + 0.6 * r.next_f64()) as f32;
        }
        if u >= 0.4 {
            let i = 1 + r.below(6) as usize;
            row[i] = (0.7 + 0.6 * r.next_f64()) as f32;
        }
        for v in row.iter_mut() {
            *v += 0.02 * r.normal() as f32;
        }
    }
    x
}

/// mean_t ||b_dec + sum_{j in keep} z_tj d_j - x_t||^2 with the SAE's own
/// inference codes restricted to `keep`.
fn subset_mse(sae: &Sae, x: &[f32], keep: &[usize]) -> f64 {
    let d = sae.cfg.d_in;
    let n = x.len() / d;
    let codes = sae.encode(x, n).unwrap();
    let mut out = SparseCodes {
        d_sae: codes.d_sae,
        indptr: vec![0],
        ..Default::default()
    };
    for t in 0..n {
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            if keep.contains(&(j as usize)) {
                out.indices.push(j);
                out.values.push(v);
            }
        }
        out.indptr.push(out.indices.len());
    }
    let xh = sae.decode(&out).unwrap();
    xh.iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / n as f64
}

/// The unit top eigenvector of `(1/n) sum_t x_t x_t^T` (power iteration, f64).
fn top_eigenvector(x: &[f32], d: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; d * d];
    for row in x.chunks(d) {
        for a in 0..d {
            for b in 0..d {
                m[a * d + b] += row[a] as f64 * row[b] as f64;
            }
        }
    }
    let mut v = vec![1.0f64; d];
    for _ in 0..500 {
        let w: Vec<f64> = (0..d)
            .map(|a| (0..d).map(|b| m[a * d + b] * v[b]).sum())
            .collect();
        let nw = w.iter().map(|e| e * e).sum::<f64>().sqrt();
        v = w.into_iter().map(|e| e / nw).collect();
    }
    v
}

#[test]
fn matryoshka_puts_the_parent_in_its_first_group() {
    // The known answer: a latent reconstructing every token on its own is
    // best along the top eigenvector of E[x x^T] (with z = x . d >= 0 on this
    // non-negative data and b_dec ~ 0), which here is p plus a little of each
    // child: cos(v, p) ~ 0.945 (in the (p, sum c_i) plane the second moments
    // are [[0.72, 0.24], [0.24, 0.10]]). Matryoshka with a first group of one
    // latent is trained on exactly that prefix loss. BatchTopK from the same
    // init, k 2 and data learns parent-or-child latents in arbitrary slots, some
    // absorbing p into a child; none of its latents is as good alone. Without
    // the prefix term a Matryoshka SAE is that BatchTopK SAE (same seed, same
    // selection), so the first-group criteria below fail for it.
    let (d, f, k, bs, steps) = (8, 8, 2, 256, 600);
    let x = hierarchy(bs * 16, 11);
    let train = |kind: SaeKind| {
        let mut cfg = TrainerConfig::new(steps, bs);
        cfg.lr = Some(1e-2);
        cfg.seed = 3;
        let mut t = Trainer::new(cfg, batch_cfg(d, f, kind), &x).unwrap();
        // Start b_dec at the "nothing" point, not the geometric median (which
        // holds part of p and invites "minus parent" latents).
        t.sae_mut().b_dec.iter_mut().for_each(|v| *v = 0.0);
        run(&mut t, &x, bs, 0, steps);
        t.into_sae()
    };
    let btk = train(SaeKind::BatchTopK { k });
    let mat = train(SaeKind::Matryoshka {
        k,
        groups: vec![1, f - 1],
    });
    let all: Vec<usize> = (0..f).collect();
    let (mat_full, btk_full) = (subset_mse(&mat, &x, &all), subset_mse(&btk, &x, &all));
    assert!(
        mat_full < 0.05 && btk_full < 0.05,
        "both should reconstruct (E||x||^2 ~ 1.34): {mat_full} {btk_full}"
    );
    let v = top_eigenvector(&x, d);
    assert!(v[0].abs() > 0.93 && v[0].abs() < 0.96, "data: {v:?}");
    let d0 = &mat.w_dec[..d];
    let cos_p = d0[0] as f64 / dot64(d0, d0).sqrt();
    let cos_v = d0.iter().zip(&v).map(|(a, b)| *a as f64 * b).sum::<f64>() / dot64(d0, d0).sqrt();
    assert!(
        cos_p.abs() > 0.9,
        "first-group latent {d0:?} is not the parent"
    );
    assert!(
        cos_v.abs() > 0.98,
        "first-group latent {d0:?} vs optimum {v:?}"
    );
    // Its reconstruction alone (~0.53 = E||x||^2 - lambda_max) beats every
    // single BatchTopK latent's (0.86 at best here; 0.63..0.91 over seeds 1-7).
    let mat_first = subset_mse(&mat, &x, &[0]);
    let btk_best = (0..f)
        .map(|j| subset_mse(&btk, &x, &[j]))
        .fold(f64::INFINITY, f64::min);
    assert!(
        mat_first < 0.56 && mat_first < 0.85 * btk_best,
        "Matryoshka first group {mat_first} vs BatchTopK's best single latent {btk_best}"
    );
}

// ---------------------------------------------------------------------------
// 5. OrtSAE
// ---------------------------------------------------------------------------

#[test]
fn ortsae_penalty_is_p_for_one_of_the_partitions_and_changes_each_step() {
    // F 7 in 2 chunks: sizes 3 and 4 (unequal, so (1/K)(1/|C_k|) differs from
    // a plain 1/F). P must be the value of one of the C(7,3) = 35 partitions.
    let (d, f) = (6, 7);
    let make = || {
        trainer(
            d,
            f,
            SaeKind::TopK { k: 2 },
            Ortho::OrtSae {
                lambda: 1.0,
                chunks: 2,
            },
            None,
        )
    };
    let mut a = make();
    let x = gauss(8, d, 12, 1.0);
    let candidates = |w: &[f32]| {
        let mut vals = Vec::new();
        let mut wrong = Vec::new();
        for mask in 0u32..(1 << f) {
            if mask.count_ones() != 3 {
                continue;
            }
            let c1: Vec<usize> = (0..f).filter(|&j| mask >> j & 1 == 1).collect();
            let c2: Vec<usize> = (0..f).filter(|&j| mask >> j & 1 == 0).collect();
            vals.push(ortsae_p(w, d, &[c1.clone(), c2.clone()]));
            // The same charges weighted 1/F each.
            let p1 = ortsae_p(w, d, std::slice::from_ref(&c1)) * c1.len() as f64;
            let p2 = ortsae_p(w, d, std::slice::from_ref(&c2)) * c2.len() as f64;
            wrong.push((p1 + p2) / f as f64);
        }
        (vals, wrong)
    };
    let find = |p: f64, vals: &[f64]| vals.iter().position(|v| (v - p).abs() <= 1e-6 * v.abs());
    let (vals, wrong) = candidates(&a.sae().w_dec);
    let p0 = a.loss_and_grads(&x).unwrap().0.ortho;
    assert!(
        find(p0, &vals).is_some(),
        "P {p0} is no partition's: {vals:?}"
    );
    assert!(
        find(p0, &wrong).is_none(),
        "P {p0} also matches 1/F weights"
    );
    // chunks 1: one chunk, P = mean_i max_j cos^2, no randomness.
    let mut one = trainer(
        d,
        f,
        SaeKind::TopK { k: 2 },
        Ortho::OrtSae {
            lambda: 1.0,
            chunks: 1,
        },
        None,
    );
    let want = ortsae_p(&one.sae().w_dec, d, &[(0..f).collect()]);
    let got = one.loss_and_grads(&x).unwrap().0.ortho;
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    one.step(&x).unwrap();

    // A new partition each step: after one step, a fresh trainer (step-0
    // RNG) given the same weights draws another one.
    a.step(&x).unwrap();
    let p_after = a.loss_and_grads(&x).unwrap().0.ortho;
    let mut fresh = make();
    *fresh.sae_mut() = a.sae().clone();
    let p_fresh = fresh.loss_and_grads(&x).unwrap().0.ortho;
    let (vals, _) = candidates(&a.sae().w_dec);
    assert!(find(p_after, &vals).is_some() && find(p_fresh, &vals).is_some());
    assert!(
        (p_after - p_fresh).abs() > 1e-4,
        "same partition two steps running: {p_after} vs {p_fresh}"
    );
}

#[test]
fn ortsae_in_bf16_charges_the_exact_cosine_of_the_partner_it_picks() {
    if !coact::linalg::backend_info().cpu.has_bf16() {
        println!("this CPU has no bf16 products: only the f32 path is tested here");
        return;
    }
    // A dictionary wide enough for near-ties: 512 rows in R^64, 2 chunks.
    let (d, f, bs) = (64, 512, 256);
    let x = gauss(bs, d, 21, 1.0);
    let make = |compute: coact::linalg::Compute| {
        let mut cfg = TrainerConfig::new(10, bs);
        cfg.compute = compute;
        cfg.ortho = Ortho::OrtSae {
            lambda: 1.0,
            chunks: 2,
        };
        Trainer::new(cfg, batch_cfg(d, f, SaeKind::TopK { k: 8 }), &x).unwrap()
    };
    let f32_t = make(coact::linalg::Compute::F32);
    let mut bf16_t = make(coact::linalg::Compute::Bf16);
    *bf16_t.sae_mut() = f32_t.sae().clone();
    let p32 = f32_t.loss_and_grads(&x).unwrap().0.ortho;
    let p16 = bf16_t.loss_and_grads(&x).unwrap().0.ortho;
    // The same partition (same seed): bf16 only chooses, so its partners'
    // exact cos^2 is at most the true maximum's, and a near-tie costs at
    // most bf16's rounding of the cosine.
    assert!(p16 <= p32 * (1.0 + 1e-5), "bf16 {p16} above f32 {p32}");
    assert!(p16 >= p32 * 0.99, "bf16 {p16} against f32 {p32}");
    bf16_t.step(&x).unwrap();

    // Without near-ties (rows in close pairs, far from every other row) both
    // pick the same partners, and the charge is the exact cosine, not the
    // bf16 Gram entry (which is off by ~1e-3).
    let mut r = SplitMix64::new(3);
    let mut w = vec![0.0f32; f * d];
    for pair in w.chunks_mut(2 * d) {
        let v: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
        for row in pair.chunks_mut(d) {
            for (o, &b) in row.iter_mut().zip(&v) {
                *o = b + 0.3 * r.normal() as f32;
            }
        }
    }
    let mut f32_t = make(coact::linalg::Compute::F32);
    let mut bf16_t = make(coact::linalg::Compute::Bf16);
    f32_t.sae_mut().w_dec = w.clone();
    bf16_t.sae_mut().w_dec = w;
    let p32 = f32_t.loss_and_grads(&x).unwrap().0.ortho;
    let p16 = bf16_t.loss_and_grads(&x).unwrap().0.ortho;
    assert!(
        (p16 - p32).abs() <= 1e-5 * p32,
        "bf16 {p16} against f32 {p32}: the bf16 path charged other values"
    );
}

#[test]
fn ortsae_lowers_decoder_cosines_and_rejects_too_many_chunks() {
    let (d, f, k, bs, steps) = (8, 32, 2, 128, 300);
    let x = gauss(bs * 8, d, 13, 1.0);
    let train = |ortho: Ortho| {
        let mut cfg = TrainerConfig::new(steps, bs);
        cfg.lr = Some(5e-3);
        cfg.ortho = ortho;
        let mut t = Trainer::new(cfg, batch_cfg(d, f, SaeKind::TopK { k }), &x).unwrap();
        run(&mut t, &x, bs, 0, steps);
        t.into_sae()
    };
    let all: Vec<usize> = (0..f).collect();
    let plain = train(Ortho::None);
    let ort = train(Ortho::OrtSae {
        lambda: 3.0,
        chunks: 4,
    });
    // Full-dictionary mean_i max_j cos^2 (chunks 1 of the same formula): 0.51
    // without the penalty, 0.31 with it (the Welch bound for 32 rows in R^8
    // is 0.1); the penalty sees a quarter of the pairs per step, yet lowers
    // the maximum over all of them.
    let p_plain = ortsae_p(&plain.w_dec, d, std::slice::from_ref(&all));
    let p_ort = ortsae_p(&ort.w_dec, d, std::slice::from_ref(&all));
    assert!(p_ort < 0.75 * p_plain, "OrtSAE {p_ort} vs plain {p_plain}");

    let tcfg = |chunks: usize| {
        let mut c = TrainerConfig::new(10, 8);
        c.ortho = Ortho::OrtSae {
            lambda: 0.1,
            chunks,
        };
        c
    };
    let sc = batch_cfg(4, 8, SaeKind::TopK { k: 2 });
    let xs = gauss(8, 4, 1, 1.0);
    for chunks in [5, 0] {
        let e = Trainer::new(tcfg(chunks), sc.clone(), &xs)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ortho.chunks"), "{e}");
    }
    // 2 * chunks == d_sae is the largest allowed.
    assert!(Trainer::new(tcfg(4), sc, &xs).is_ok());
}

// ---------------------------------------------------------------------------
// 6. Validation
// ---------------------------------------------------------------------------

#[test]
fn invalid_kinds_are_errors_naming_the_values() {
    let x = gauss(8, 4, 1, 1.0);
    let cfg = TrainerConfig::new(10, 8);
    let mat = |groups: Vec<usize>| batch_cfg(4, 8, SaeKind::Matryoshka { k: 2, groups });
    let e = Trainer::new(cfg.clone(), mat(vec![3, 4]), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sum to 7") && e.contains("d_sae = 8"), "{e}");
    assert!(Sae::init(mat(vec![3, 4]), 0).is_err());
    for bad in [vec![], vec![8, 0]] {
        let e = Trainer::new(cfg.clone(), mat(bad), &x)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("groups"), "{e}");
    }
    assert!(Trainer::new(cfg.clone(), mat(vec![2, 6]), &x).is_ok());
    let e = Trainer::new(cfg.clone(), batch_cfg(4, 8, SaeKind::JumpRelu), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jumprelu") && e.contains("not trained"), "{e}");
    let e = Trainer::new(cfg, batch_cfg(4, 8, SaeKind::BatchTopK { k: 8 }), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("k must be < d_sae"), "{e}");
}

// ---------------------------------------------------------------------------
// 7. SAELens and Gemma Scope IO
// ---------------------------------------------------------------------------

fn random_sae(kind: SaeKind, d: usize, f: usize, seed: u64) -> Sae {
    let mut s = Sae::init(batch_cfg(d, f, kind), seed).unwrap();
    let mut r = SplitMix64::new(seed + 100);
    s.w_enc_t.iter_mut().for_each(|v| *v = r.normal() as f32);
    s.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.3 * r.normal() as f32);
    s.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.5 * r.normal() as f32);
    s
}

fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, s, v)| {
            (
                k.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
}

fn read_cfg(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(coact::sae::CFG_FILE)).unwrap()).unwrap()
}

#[test]
fn batch_kinds_save_as_jumprelu_with_their_threshold() {
    let (d, f, n) = (8, 20, 40);
    let x = gauss(n, d, 14, 1.0);
    for kind in [
        SaeKind::BatchTopK { k: 3 },
        SaeKind::Matryoshka {
            k: 3,
            groups: vec![4, 16],
        },
    ] {
        let mut sae = random_sae(kind.clone(), d, f, 1);
        sae.threshold = vec![0.4; f];
        let dir = tempfile::tempdir().unwrap();
        save_saelens(&sae, dir.path(), &SaelensMeta::default()).unwrap();
        let cfg = read_cfg(dir.path());
        assert_eq!(cfg["architecture"], "jumprelu");
        let (back, _) = load_saelens(dir.path()).unwrap();
        assert_eq!(back.cfg.kind, SaeKind::JumpRelu);
        assert_eq!(back.threshold, sae.threshold);
        assert_eq!(
            (&back.w_enc_t, &back.w_dec, &back.b_enc, &back.b_dec),
            (&sae.w_enc_t, &sae.w_dec, &sae.b_enc, &sae.b_dec)
        );
        let codes = sae.encode(&x, n).unwrap();
        assert!(codes.l0() > 0.5 && codes.l0() < f as f64 - 0.5);
        assert_eq!(back.encode(&x, n).unwrap(), codes, "{kind:?}");
        assert_eq!(back.reconstruct(&x).unwrap(), sae.reconstruct(&x).unwrap());
    }
}

#[test]
fn topk_cfg_names_its_k_and_a_pre_6_topk_cfg_loads_as_topk() {
    let (d, f, k, n) = (6, 10, 3, 20);
    let sae = random_sae(SaeKind::TopK { k }, d, f, 2);
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&sae, dir.path(), &SaelensMeta::default()).unwrap();
    let cfg = read_cfg(dir.path());
    assert_eq!(cfg["activation_fn_kwargs"]["k"], k);
    assert_eq!(cfg["activation_fn_str"], "topk");
    assert_eq!(cfg["architecture"], "topk");

    // SAELens 5: architecture "standard", the activation in
    // activation_fn_str and its k in activation_fn_kwargs.
    let w_enc = sae.w_enc();
    for key in ["activation_fn_str", "activation_fn"] {
        let pre6 = tempfile::tempdir().unwrap();
        let mut cfg = serde_json::json!({
            "architecture": "standard",
            "d_in": d,
            "d_sae": f,
            "activation_fn_kwargs": {"k": k},
            "apply_b_dec_to_input": true,
            "normalize_activations": "none",
            "hook_name": "blocks.4.hook_resid_post",
            "hook_layer": 4,
        });
        cfg[key] = "topk".into();
        std::fs::write(pre6.path().join("cfg.json"), cfg.to_string()).unwrap();
        write_safetensors(
            &pre6.path().join("sae_weights.safetensors"),
            &[
                ("W_enc", vec![d, f], &w_enc),
                ("W_dec", vec![f, d], &sae.w_dec),
                ("b_enc", vec![f], &sae.b_enc),
                ("b_dec", vec![d], &sae.b_dec),
            ],
        );
        let (back, meta) = load_saelens(pre6.path()).unwrap();
        assert_eq!(back.cfg.kind, SaeKind::TopK { k }, "{key}");
        assert_eq!(back, sae);
        assert_eq!(meta.hook_layer, Some(4));
        // Top-k codes: at most k per token (a ReLU SAE would keep ~f / 2).
        let codes = back.encode(&gauss(n, d, 15, 1.0), n).unwrap();
        assert!((0..n).all(|t| codes.row(t).0.len() <= k) && codes.l0() > k as f64 - 0.5);
    }
}

/// SAELens's forward, dense and in f64: `sae_in = x - b_dec` (if
/// apply_b_dec), `pre = sae_in W_enc + b_enc`, times `|d_i|` (if rescale),
/// top-k of the ReLU'd values; decode divides by `|d_i|` (if rescale).
/// Returns the codes (latent, value) per token and x_hat.
#[allow(clippy::too_many_arguments)]
fn saelens_forward(
    x: &[f64],
    w_enc: &[f32],
    w_dec: &[f32],
    b_enc: &[f32],
    b_dec: &[f32],
    d: usize,
    f: usize,
    k: usize,
    apply_b_dec: bool,
    rescale: bool,
) -> (Vec<Vec<(usize, f64)>>, Vec<f64>) {
    let n = x.len() / d;
    let norms: Vec<f64> = (0..f)
        .map(|j| dot64(&w_dec[j * d..(j + 1) * d], &w_dec[j * d..(j + 1) * d]).sqrt())
        .collect();
    let mut codes = Vec::new();
    let mut xh = vec![0.0f64; n * d];
    for t in 0..n {
        let mut pre: Vec<(f64, usize)> = (0..f)
            .map(|j| {
                let mut s = b_enc[j] as f64;
                for q in 0..d {
                    let xi = x[t * d + q] - if apply_b_dec { b_dec[q] as f64 } else { 0.0 };
                    s += xi * w_enc[q * f + j] as f64;
                }
                (if rescale { s * norms[j] } else { s }, j)
            })
            .collect();
        pre.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut z: Vec<(usize, f64)> = pre[..k]
            .iter()
            .filter(|e| e.0 > 0.0)
            .map(|&(v, j)| (j, v))
            .collect();
        z.sort_by_key(|e| e.0);
        for q in 0..d {
            xh[t * d + q] = b_dec[q] as f64
                + z.iter()
                    .map(|&(j, v)| {
                        let a = if rescale { v / norms[j] } else { v };
                        a * w_dec[j * d + q] as f64
                    })
                    .sum::<f64>();
        }
        codes.push(z);
    }
    (codes, xh)
}

#[test]
fn unapplied_b_dec_and_decoder_norm_rescaling_are_folded_exactly() {
    let (d, f, k, n) = (6, 12, 3, 30);
    let mut r = SplitMix64::new(16);
    let w_enc: Vec<f32> = (0..d * f).map(|_| r.normal() as f32).collect();
    // Decoder rows of norm 0.5..2: rescaling changes the selection.
    let mut w_dec: Vec<f32> = (0..f * d).map(|_| r.normal() as f32).collect();
    for row in w_dec.chunks_mut(d) {
        let s = (0.5 + 1.5 * r.next_f64()) as f32 / dot64(row, row).sqrt() as f32;
        row.iter_mut().for_each(|v| *v *= s);
    }
    let b_enc: Vec<f32> = (0..f).map(|_| 0.3 * r.normal() as f32).collect();
    let b_dec: Vec<f32> = (0..d).map(|_| 0.8 * r.normal() as f32).collect();
    let x = gauss(n, d, 17, 1.0);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let xscale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let mut outputs = Vec::new();
    for (apply, rescale) in [(true, false), (false, false), (true, true), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({
            "architecture": "topk",
            "d_in": d,
            "d_sae": f,
            "k": k,
            "apply_b_dec_to_input": apply,
            "rescale_acts_by_decoder_norm": rescale,
            "normalize_activations": "none",
            "metadata": {"hook_name": "blocks.2.hook_resid_post"},
        });
        std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
        write_safetensors(
            &dir.path().join("sae_weights.safetensors"),
            &[
                ("W_enc", vec![d, f], &w_enc),
                ("W_dec", vec![f, d], &w_dec),
                ("b_enc", vec![f], &b_enc),
                ("b_dec", vec![d], &b_dec),
            ],
        );
        let (sae, meta) = load_saelens(dir.path()).unwrap();
        assert_eq!(meta.hook_layer, Some(2));
        let (want_codes, want_xh) = saelens_forward(
            &x64, &w_enc, &w_dec, &b_enc, &b_dec, d, f, k, apply, rescale,
        );
        let codes = sae.encode(&x, n).unwrap();
        let zmax = want_codes
            .iter()
            .flatten()
            .fold(0.0f64, |m, e| m.max(e.1.abs()));
        for (t, want) in want_codes.iter().enumerate() {
            let (idx, val) = codes.row(t);
            let got: Vec<usize> = idx.iter().map(|&j| j as usize).collect();
            let wj: Vec<usize> = want.iter().map(|e| e.0).collect();
            assert_eq!(got, wj, "token {t}, apply {apply}, rescale {rescale}");
            for (a, b) in val.iter().zip(want) {
                assert!((*a as f64 - b.1).abs() <= 1e-5 * zmax, "{a} vs {}", b.1);
            }
        }
        let xh = sae.reconstruct(&x).unwrap();
        for (a, b) in xh.iter().zip(&want_xh) {
            assert!((*a as f64 - b).abs() <= 1e-5 * xscale, "{a} vs {b}");
        }
        outputs.push(want_codes);
    }
    // Each flag matters on this data (else the test would not see it).
    assert_ne!(outputs[0], outputs[1]);
    assert_ne!(outputs[0], outputs[2]);
}

#[test]
fn gemma_scope_native_folder_loads_as_jumprelu_without_b_dec_subtraction() {
    let (d, f, n, layer) = (8, 16, 40, 9);
    let mut r = SplitMix64::new(18);
    let w_enc: Vec<f32> = (0..d * f).map(|_| r.normal() as f32).collect();
    let w_dec: Vec<f32> = (0..f * d).map(|_| 0.5 * r.normal() as f32).collect();
    let b_enc: Vec<f32> = (0..f).map(|_| 0.3 * r.normal() as f32).collect();
    let b_dec: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
    let threshold: Vec<f32> = (0..f).map(|_| (0.2 + r.next_f64()) as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "architecture": "jump_relu",
        "hf_hook_point_in": format!("model.layers.{layer}.output"),
        "hf_hook_point_out": format!("model.layers.{layer}.output"),
        "model_name": "google/gemma-3-270m",
        "width": f,
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    write_safetensors(
        &dir.path().join("params.safetensors"),
        &[
            ("w_enc", vec![d, f], &w_enc),
            ("w_dec", vec![f, d], &w_dec),
            ("b_enc", vec![f], &b_enc),
            ("b_dec", vec![d], &b_dec),
            ("threshold", vec![f], &threshold),
        ],
    );
    let (sae, meta) = load_saelens(dir.path()).unwrap();
    assert_eq!(sae.cfg.kind, SaeKind::JumpRelu);
    assert_eq!((sae.cfg.d_in, sae.cfg.d_sae), (d, f));
    assert_eq!(meta.hook_name, format!("blocks.{layer}.hook_resid_post"));
    assert_eq!(meta.hook_layer, Some(layer));
    assert_eq!(sae.threshold, threshold);

    // Direct JumpReLU: pre = x W_enc + b_enc (no b_dec subtraction),
    // z = pre where pre > threshold, x_hat = z W_dec + b_dec.
    let x = gauss(n, d, 19, 1.0);
    let forward = |sub: bool| {
        let mut fired = Vec::new();
        let mut xh = vec![0.0f64; n * d];
        for t in 0..n {
            for j in 0..f {
                let mut pre = b_enc[j] as f64;
                for q in 0..d {
                    let xi = x[t * d + q] as f64 - if sub { b_dec[q] as f64 } else { 0.0 };
                    pre += xi * w_enc[q * f + j] as f64;
                }
                if pre > threshold[j] as f64 {
                    fired.push((t, j, pre));
                    for q in 0..d {
                        xh[t * d + q] += pre * w_dec[j * d + q] as f64;
                    }
                }
            }
            for q in 0..d {
                xh[t * d + q] += b_dec[q] as f64;
            }
        }
        (fired, xh)
    };
    let (want, want_xh) = forward(false);
    let codes = sae.encode(&x, n).unwrap();
    let got: Vec<(usize, usize, f32)> = (0..n)
        .flat_map(|t| {
            let (idx, val) = codes.row(t);
            idx.iter()
                .zip(val)
                .map(|(&j, &v)| (t, j as usize, v))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!((g.2 as f64 - w.2).abs() <= 1e-5 * w.2.abs().max(1.0));
    }
    let xh = sae.reconstruct(&x).unwrap();
    let scale = want_xh.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in xh.iter().zip(&want_xh) {
        assert!((*a as f64 - b).abs() <= 1e-5 * scale, "{a} vs {b}");
    }
    // Subtracting b_dec (SAELens's default) would fire differently here.
    assert_ne!(
        forward(true)
            .0
            .iter()
            .map(|e| (e.0, e.1))
            .collect::<Vec<_>>(),
        want.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>()
    );
}

#[test]
fn normalize_activations_other_than_none_is_refused() {
    let sae = random_sae(SaeKind::TopK { k: 2 }, 4, 8, 3);
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&sae, dir.path(), &SaelensMeta::default()).unwrap();
    let mut cfg = read_cfg(dir.path());
    cfg["normalize_activations"] = "expected_average_only_in".into();
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    let e = load_saelens(dir.path()).err().unwrap().to_string();
    assert!(e.contains("expected_average_only_in"), "{e}");
}

// ---------------------------------------------------------------------------
// 8. Checkpoints
// ---------------------------------------------------------------------------

#[test]
fn checkpoint_keeps_the_threshold_and_resumes_bit_identically() {
    let (d, f, bs) = (8, 24, 32);
    let data = gauss(bs * 4, d, 20, 1.0);
    for (kind, ortho) in [
        (
            SaeKind::BatchTopK { k: 3 },
            Ortho::OrtSae {
                lambda: 0.1,
                chunks: 3,
            },
        ),
        (
            SaeKind::Matryoshka {
                k: 3,
                groups: vec![4, 8, 12],
            },
            Ortho::Guided {
                lambda: 0.1,
                tau: 0.1,
            },
        ),
    ] {
        let mut cfg = TrainerConfig::new(12, bs);
        cfg.ortho = ortho;
        cfg.seed = 4;
        cfg.dead_after_tokens = 2 * bs as u64;
        let mut a = Trainer::new(cfg.clone(), batch_cfg(d, f, kind.clone()), &data).unwrap();
        let sa = run(&mut a, &data, bs, 0, 12);

        let mut b = Trainer::new(cfg, batch_cfg(d, f, kind.clone()), &data).unwrap();
        run(&mut b, &data, bs, 0, 6);
        let thr = b.sae().threshold.clone();
        assert!(thr[0] > 0.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        b.save_checkpoint(&path).unwrap();
        drop(b);
        let mut c = Trainer::load_checkpoint(&path).unwrap();
        assert_eq!(c.sae().threshold, thr, "{kind:?}");
        let sc = run(&mut c, &data, bs, 6, 12);
        assert_eq!(&sa[6..], &sc[..], "{kind:?}: resumed steps differ");
        assert_eq!(a.sae(), c.sae(), "{kind:?}: resumed weights differ");
        assert_ne!(a.sae().threshold, thr);
    }
}
