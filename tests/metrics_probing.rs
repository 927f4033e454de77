//! Sparse probing, SCR and TPP (coact::metrics::probing) on synthetic
//! activations whose labels are carried by known SAE latents, and the
//! formulas on hand-made accuracies.

use coact::metrics::probing::*;
use coact::probe::{fit_binary, Penalty, ProbeConfig};
use coact::rng::SplitMix64;
use coact::sae::{Sae, SaeConfig, SaeKind};

const D: usize = 64;
const F: usize = 48;
/// Latents reserved for labels; the rest make background noise.
const LABEL_LATENTS: [usize; 7] = [3, 4, 7, 8, 10, 11, 12];

/// A TopK SAE with random unit decoder rows, encoder = decoder^T, zero
/// biases: latent i reads and writes direction d_i.
fn sae(k: usize) -> Sae {
    let mut rng = SplitMix64::new(11);
    let mut w_dec: Vec<f32> = (0..F * D).map(|_| rng.normal() as f32).collect();
    for row in w_dec.chunks_mut(D) {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    let mut w_enc = vec![0.0f32; D * F];
    for i in 0..F {
        for r in 0..D {
            w_enc[r * F + i] = w_dec[i * D + r];
        }
    }
    Sae::from_saelens(
        SaeConfig {
            d_in: D,
            d_sae: F,
            kind: SaeKind::TopK { k },
        },
        &w_enc,
        w_dec,
        vec![0.0; F],
        vec![0.0; D],
        Vec::new(),
    )
    .unwrap()
}

/// Pieces of `t` tokens; each token is two random background latents plus
/// `signal` (latent, magnitude) pairs chosen per piece.
struct Synthetic {
    tokens: Vec<f32>,
    offsets: Vec<usize>,
}

fn synth(sae: &Sae, signals: &[Vec<(usize, f32)>], t: usize, seed: u64) -> Synthetic {
    let mut rng = SplitMix64::new(seed);
    let background: Vec<usize> = (0..F).filter(|i| !LABEL_LATENTS.contains(i)).collect();
    let mut tokens = Vec::new();
    let mut offsets = vec![0];
    for sig in signals {
        for _ in 0..t {
            let mut x = vec![0.0f32; D];
            let mut add = |i: usize, a: f32| {
                for (v, w) in x.iter_mut().zip(&sae.w_dec[i * D..(i + 1) * D]) {
                    *v += a * w;
                }
            };
            for _ in 0..2 {
                let i = background[rng.below(background.len() as u64) as usize];
                add(i, 0.5 + rng.next_f64() as f32);
            }
            for &(i, a) in sig {
                add(i, a * (0.8 + 0.4 * rng.next_f64() as f32));
            }
            tokens.extend(x);
        }
        offsets.push(offsets.last().unwrap() + t);
    }
    Synthetic { tokens, offsets }
}

fn probe(x: &[f32], dim: usize, y: &[bool]) -> (Vec<f32>, f32) {
    let cfg = ProbeConfig {
        penalty: Penalty::L2(1e-3),
        ..ProbeConfig::default()
    };
    let p = fit_binary(x, y.len(), dim, y, &cfg).unwrap();
    (p.w, p.b)
}

fn predict(w: &[f32], b: f32, x: &[f32]) -> Vec<bool> {
    x.chunks(w.len())
        .map(|r| r.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b > 0.0)
        .collect()
}

#[test]
fn sparse_probing_at_k1_finds_the_latent_that_carries_the_label() {
    let sae = sae(4);
    // 240 pieces of 6 tokens; the label is carried by latent 7.
    let labels: Vec<bool> = (0..240).map(|p| p % 2 == 0).collect();
    let signals: Vec<Vec<(usize, f32)>> = labels
        .iter()
        .map(|&l| if l { vec![(7, 2.0)] } else { vec![] })
        .collect();
    let s = synth(&sae, &signals, 6, 1);
    let pooled_f = mean_pool_latents(&sae, &s.tokens, &s.offsets).unwrap();
    assert_eq!(pooled_f.len(), 240 * F);
    // Train on the first 160 pieces, test on the rest.
    let (tr, te) = (0..160usize, 160..240usize);
    let ftr = gather_rows(&pooled_f, F, &tr.clone().collect::<Vec<_>>());
    let fte = gather_rows(&pooled_f, F, &te.clone().collect::<Vec<_>>());
    let top = top_k_mean_difference(&ftr, F, &labels[..160], 1);
    assert_eq!(top, vec![7], "the label's latent ranks first");
    let (w, b) = probe(&gather_columns(&ftr, F, &top), 1, &labels[..160]);
    let acc = accuracy(
        &predict(&w, b, &gather_columns(&fte, F, &top)),
        &labels[160..],
    );
    assert!(acc > 0.95, "top-1 probe accuracy {acc}");
    // A background latent alone carries nothing.
    let (w, b) = probe(&gather_columns(&ftr, F, &[20]), 1, &labels[..160]);
    let acc = accuracy(
        &predict(&w, b, &gather_columns(&fte, F, &[20])),
        &labels[160..],
    );
    assert!(acc < 0.7, "an unrelated latent scores {acc}");
}

#[test]
fn pooled_ablation_equals_per_token_ablation_with_the_error_kept() {
    let sae = sae(4);
    let signals: Vec<Vec<(usize, f32)>> = (0..20).map(|p| vec![(7, p as f32 * 0.1)]).collect();
    let s = synth(&sae, &signals, 5, 2);
    let ablate = [7usize, 20, 30];
    // Per token: x' = dec(f with the latents zeroed) + (x - dec(f)).
    let x_abl = ablate_keep_error(&sae, &s.tokens, &ablate).unwrap();
    let codes = sae.encode(&s.tokens, s.tokens.len() / D).unwrap();
    for (t, row) in x_abl.chunks(D).enumerate() {
        let mut want = s.tokens[t * D..(t + 1) * D].to_vec();
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            if ablate.contains(&(j as usize)) {
                for (w, d) in want.iter_mut().zip(&sae.w_dec[j as usize * D..]) {
                    *w -= v * d;
                }
            }
        }
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "token {t}: {a} vs {b}");
        }
    }
    // Nothing ablated: x itself (the error term restores what the SAE misses).
    let same = ablate_keep_error(&sae, &s.tokens, &[]).unwrap();
    for (a, b) in same.iter().zip(&s.tokens) {
        assert!((a - b).abs() < 1e-4);
    }
    // Mean-pooled: x̄ - sum f̄_i d_i equals the mean of the per-token ablation.
    let pooled_x = mean_pool_rows(&s.tokens, D, &s.offsets);
    let pooled_f = mean_pool_latents(&sae, &s.tokens, &s.offsets).unwrap();
    let fast = ablate_pooled(&pooled_x, &pooled_f, &sae.w_dec, D, &ablate);
    let slow = mean_pool_rows(&x_abl, D, &s.offsets);
    for (a, b) in fast.iter().zip(&slow) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn ablating_the_label_latent_drops_the_probe_to_chance() {
    let sae = sae(4);
    let labels: Vec<bool> = (0..200).map(|p| p % 2 == 1).collect();
    let signals: Vec<Vec<(usize, f32)>> = labels
        .iter()
        .map(|&l| if l { vec![(10, 2.5)] } else { vec![(11, 2.5)] })
        .collect();
    let s = synth(&sae, &signals, 6, 3);
    let x = mean_pool_rows(&s.tokens, D, &s.offsets);
    let f = mean_pool_latents(&sae, &s.tokens, &s.offsets).unwrap();
    let (w, b) = probe(&x, D, &labels);
    assert!(accuracy(&predict(&w, b, &x), &labels) > 0.95);
    // Effects through the decoder rank the two label latents first.
    let diff = mean_difference(&f, F, &labels);
    let scr = latent_effects(&diff, &w, &sae.w_dec, D, EffectKind::Scr);
    let mut top2 = top_n_effects(&scr, 2);
    top2.sort();
    assert_eq!(top2, vec![10, 11]);
    // TPP keeps only latents more active on the positive class.
    let tpp = latent_effects(&diff, &w, &sae.w_dec, D, EffectKind::Tpp);
    assert_eq!(top_n_effects(&tpp, 1), vec![10]);
    assert_eq!(tpp[11], 0.0, "latent 11 is the negative class's");
    let ablated = ablate_pooled(&x, &f, &sae.w_dec, D, &top2);
    let acc = accuracy(&predict(&w, b, &ablated), &labels);
    // The shortcut through the probe's decisions gives the same decisions.
    let clean: Vec<f64> = x
        .chunks(D)
        .map(|r| r.iter().zip(&w).map(|(a, c)| (a * c) as f64).sum::<f64>() + b as f64)
        .collect();
    let fast = ablated_decisions(&clean, &f, &decoder_dot(&sae.w_dec, D, &w), &top2);
    for (z, row) in fast.iter().zip(ablated.chunks(D)) {
        let slow: f32 = row.iter().zip(&w).map(|(a, c)| a * c).sum::<f32>() + b;
        assert!(
            (*z as f32 - slow).abs() < 1e-3 * (1.0 + slow.abs()),
            "{z} vs {slow}"
        );
    }
    assert!((0.3..0.7).contains(&acc), "after ablation: {acc}");
    // Ablating background latents leaves it alone.
    let other = ablate_pooled(&x, &f, &sae.w_dec, D, &[20, 21]);
    assert!(accuracy(&predict(&w, b, &other), &labels) > 0.9);
}

/// SCR as the bench runs it: A (latents 3 vs 4) and B (7 vs 8) are
/// perfectly correlated in the biased train set, A more strongly; ablating
/// A's latents makes the biased probe a B classifier.
#[test]
fn scr_recovers_the_spurious_attribute_after_ablating_the_dominant_one() {
    let sae = sae(4);
    let mut rng = SplitMix64::new(5);
    let n = 400;
    let ab: Vec<(bool, bool)> = (0..n)
        .map(|_| (rng.below(2) == 1, rng.below(2) == 1))
        .collect();
    let signals: Vec<Vec<(usize, f32)>> = ab
        .iter()
        .map(|&(a, b)| vec![(if a { 3 } else { 4 }, 2.4), (if b { 7 } else { 8 }, 1.2)])
        .collect();
    let s = synth(&sae, &signals, 4, 6);
    let x = mean_pool_rows(&s.tokens, D, &s.offsets);
    let f = mean_pool_latents(&sae, &s.tokens, &s.offsets).unwrap();
    let (train, test): (Vec<usize>, Vec<usize>) = (0..n).partition(|p| p % 4 != 0);
    let fit = |rows: &[usize], y: &[bool]| probe(&gather_rows(&x, D, rows), D, y);
    let sel = |rows: &[usize], pred: &dyn Fn(bool, bool) -> Option<bool>| {
        let v: Vec<(usize, bool)> = rows
            .iter()
            .filter_map(|&p| pred(ab[p].0, ab[p].1).map(|l| (p, l)))
            .collect();
        v.into_iter().unzip::<usize, bool, Vec<_>, Vec<_>>()
    };
    let (btr, by) = sel(&train, &|a, b| (a == b).then_some(a));
    let (atr, ay) = sel(&train, &|a, _| Some(a));
    let (bt, bty) = sel(&train, &|_, b| Some(b));
    let (ate, aey) = sel(&test, &|a, _| Some(a));
    let (bte, bey) = sel(&test, &|_, b| Some(b));
    let biased = fit(&btr, &by);
    let pa = fit(&atr, &ay);
    let pb = fit(&bt, &bty);
    let acc = |p: &(Vec<f32>, f32), rows: &[usize], y: &[bool], xs: &[f32]| {
        accuracy(&predict(&p.0, p.1, &gather_rows(xs, D, rows)), y)
    };
    let biased_on_a = acc(&biased, &ate, &aey, &x);
    let biased_on_b = acc(&biased, &bte, &bey, &x);
    assert!(
        biased_on_a > 0.9 && biased_on_b < 0.75,
        "{biased_on_a} {biased_on_b}"
    );
    // SAEBench reports the direction whose data the biased probe gets wrong: A->B.
    assert_eq!(scr_selected_direction(biased_on_a, biased_on_b), 2);
    let diff_a = mean_difference(&gather_rows(&f, F, &atr), F, &ay);
    let eff_a = latent_effects(&diff_a, &pa.0, &sae.w_dec, D, EffectKind::Scr);
    let ablate = top_n_effects(&eff_a, 2);
    let mut sorted = ablate.clone();
    sorted.sort();
    assert_eq!(sorted, vec![3, 4]);
    let ablated = ablate_pooled(&x, &f, &sae.w_dec, D, &ablate);
    let a_abl = acc(&biased, &bte, &bey, &ablated);
    let oracle_b = acc(&pb, &bte, &bey, &x);
    let scr = scr_score(a_abl, biased_on_b, oracle_b);
    assert!(
        scr > 0.7,
        "SCR(A->B) = {scr} (abl {a_abl}, biased {biased_on_b}, oracle {oracle_b})"
    );
    // The other direction has nothing to recover: the biased probe already reads A.
    let oracle_a = acc(&pa, &ate, &aey, &x);
    let diff_b = mean_difference(&gather_rows(&f, F, &bt), F, &bty);
    let eff_b = latent_effects(&diff_b, &pb.0, &sae.w_dec, D, EffectKind::Scr);
    let ablated_b = ablate_pooled(&x, &f, &sae.w_dec, D, &top_n_effects(&eff_b, 2));
    let scr_ba = scr_score(acc(&biased, &ate, &aey, &ablated_b), biased_on_a, oracle_a);
    assert!(scr_ba.abs() < 0.5, "SCR(B->A) = {scr_ba}");
}

/// TPP as the bench runs it: three classes, each with its own latent;
/// ablating one class's latent hurts its probe only.
#[test]
fn tpp_ablation_hits_the_intended_class_only() {
    let sae = sae(4);
    let n = 360;
    let class: Vec<usize> = (0..n).map(|p| p % 3).collect();
    let signals: Vec<Vec<(usize, f32)>> = class.iter().map(|&c| vec![(10 + c, 2.5)]).collect();
    let s = synth(&sae, &signals, 5, 7);
    let x = mean_pool_rows(&s.tokens, D, &s.offsets);
    let f = mean_pool_latents(&sae, &s.tokens, &s.offsets).unwrap();
    let mut rng = SplitMix64::new(9);
    let mut clean = Vec::new();
    let mut probes = Vec::new();
    let mut effects = Vec::new();
    let mut tests = Vec::new();
    for c in 0..3 {
        let split = |test: bool| -> (Vec<usize>, Vec<Vec<usize>>) {
            let of = |k: usize| -> Vec<usize> {
                (0..n)
                    .filter(|&p| class[p] == k && (p % 5 == 0) == test)
                    .collect()
            };
            (of(c), (0..3).filter(|&k| k != c).map(of).collect())
        };
        let (pos, neg) = split(false);
        let negs: Vec<&[usize]> = neg.iter().map(|v| v.as_slice()).collect();
        let train = balanced_sample(&pos, &negs, 1.0, &mut rng);
        let (pos, neg) = split(true);
        let negs: Vec<&[usize]> = neg.iter().map(|v| v.as_slice()).collect();
        let test = balanced_sample(&pos, &negs, 1.0, &mut rng);
        let (tr, ty): (Vec<usize>, Vec<bool>) = train.into_iter().unzip();
        let (te, ey): (Vec<usize>, Vec<bool>) = test.into_iter().unzip();
        let p = probe(&gather_rows(&x, D, &tr), D, &ty);
        clean.push(accuracy(&predict(&p.0, p.1, &gather_rows(&x, D, &te)), &ey));
        let diff = mean_difference(&gather_rows(&f, F, &tr), F, &ty);
        effects.push(latent_effects(&diff, &p.0, &sae.w_dec, D, EffectKind::Tpp));
        probes.push(p);
        tests.push((te, ey));
    }
    assert!(clean.iter().all(|&a| a > 0.9), "{clean:?}");
    let ablated: Vec<Vec<f64>> = effects
        .iter()
        .enumerate()
        .map(|(i, eff)| {
            let top = top_n_effects(eff, 1);
            assert_eq!(top, vec![10 + i], "class {i}'s own latent");
            let xa = ablate_pooled(&x, &f, &sae.w_dec, D, &top);
            probes
                .iter()
                .zip(&tests)
                .map(|(p, (te, ey))| accuracy(&predict(&p.0, p.1, &gather_rows(&xa, D, te)), ey))
                .collect()
        })
        .collect();
    let per_class = tpp_scores(&clean, &ablated);
    for c in &per_class {
        assert!(c.intended_drop > 0.3, "{c:?}");
        assert!(c.unintended_drop.abs() < 0.15, "{c:?}");
    }
    assert!(tpp_mean(&per_class).total > 0.25);
}

#[test]
fn scr_formula_on_hand_made_accuracies() {
    assert!((scr_score(0.8, 0.6, 0.9) - 2.0 / 3.0).abs() < 1e-12);
    assert!(
        (scr_score(0.5, 0.6, 0.9) + 1.0 / 3.0).abs() < 1e-12,
        "ablation can hurt"
    );
    assert_eq!(
        scr_score(0.95, 0.7, 0.7005),
        0.0,
        "denominator < 0.001 -> 0"
    );
    assert_eq!(scr_score(0.95, 0.9, 0.8), 0.0, "negative denominator -> 0");
    assert!(
        (scr_score(0.75, 0.7, 0.702) - 25.0).abs() < 1e-6,
        "just above 0.001 counts"
    );
    assert_eq!(scr_selected_direction(0.6, 0.9), 1);
    assert_eq!(scr_selected_direction(0.9, 0.6), 2);
}

#[test]
fn tpp_formula_on_hand_made_accuracies() {
    let clean = [0.9, 0.8, 0.7];
    let ablated = vec![
        vec![0.5, 0.8, 0.6],
        vec![0.9, 0.6, 0.7],
        vec![0.85, 0.8, 0.7],
    ];
    let c = tpp_scores(&clean, &ablated);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(c[0].intended_drop, 0.4) && close(c[0].unintended_drop, 0.05));
    assert!(close(c[0].total, 0.35));
    assert!(close(c[1].total, 0.2));
    assert!(close(c[2].intended_drop, 0.0) && close(c[2].unintended_drop, 0.025));
    let m = tpp_mean(&c);
    assert!(close(m.total, (0.35 + 0.2 - 0.025) / 3.0));
    assert!(close(m.intended_drop, 0.2));
}

#[test]
fn effects_rankings_and_sampling_follow_saebench() {
    // effect = diff * (w . d_i): SCR takes |.|, TPP clamps the diff at 0.
    let w_dec = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
    let diff = [2.0, -3.0, 1.0];
    let w = [0.5, 1.0];
    let scr = latent_effects(&diff, &w, &w_dec, 2, EffectKind::Scr);
    let tpp = latent_effects(&diff, &w, &w_dec, 2, EffectKind::Tpp);
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(scr[0], 1.0) && close(scr[1], 3.0) && close(scr[2], 1.1));
    assert!(close(tpp[0], 1.0) && tpp[1] == 0.0 && close(tpp[2], 1.1));
    // Top N: largest first, zeros never, ties to the lower index.
    assert_eq!(
        top_n_effects(&[0.0, 2.0, 2.0, -1.0, 0.5], 10),
        vec![1, 2, 4, 3]
    );
    assert_eq!(top_n_effects(&[0.0, 2.0, 2.0, -1.0, 0.5], 2), vec![1, 2]);
    assert_eq!(top_k_by_abs(&[0.1, -3.0, 3.0, 1.0], 2), vec![1, 2]);
    // Mean difference.
    let x = [1.0, 0.0, 3.0, 2.0, 0.0, 4.0];
    assert_eq!(
        mean_difference(&x, 2, &[true, true, false]),
        vec![2.0, -3.0]
    );
    // Balanced samples: as many negatives as positives, spread over groups.
    let mut rng = SplitMix64::new(1);
    let pos: Vec<usize> = (0..10).collect();
    let g1: Vec<usize> = (100..150).collect();
    let g2: Vec<usize> = (200..203).collect();
    let s = balanced_sample(&pos, &[&g1, &g2], 1.0, &mut rng);
    assert_eq!(s.iter().filter(|r| r.1).count(), 10);
    assert_eq!(s.iter().filter(|r| !r.1).count(), 10);
    assert_eq!(
        s.iter().filter(|r| r.0 >= 200).count(),
        3,
        "the small group is used up"
    );
    assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
    let s = balanced_sample(&pos, &[&g2], 1.0, &mut rng);
    assert_eq!(s.len(), 6, "the smaller side decides");
    let s = balanced_sample(&pos, &[&g1], 0.5, &mut rng);
    assert_eq!(s.len(), 10, "half of each side");
    let mut a = SplitMix64::new(3);
    let mut b = SplitMix64::new(3);
    assert_eq!(
        balanced_sample(&pos, &[&g1], 0.5, &mut a),
        balanced_sample(&pos, &[&g1], 0.5, &mut b)
    );
    let (m, sd) = mean_std(&[1.0, 2.0, 3.0]);
    assert!((m - 2.0).abs() < 1e-12 && (sd - 1.0).abs() < 1e-12);
}

#[test]
fn mean_std_is_the_sample_std_with_nan_below_two_values() {
    // The probing benchmarks' mean_std is the one of coact::metrics.
    let probing: fn(&[f64]) -> (f64, f64) = mean_std;
    let shared: fn(&[f64]) -> (f64, f64) = coact::metrics::mean_std;
    assert_eq!(probing(&[2.0, 5.0]), shared(&[2.0, 5.0]));

    let (m, s) = coact::metrics::mean_std(&[]);
    assert!(m.is_nan() && s.is_nan());
    // One value: its mean, and no spread to estimate (statistics.stdev raises,
    // numpy with ddof=1 and torch give NaN).
    let (m, s) = coact::metrics::mean_std(&[4.5]);
    assert_eq!(m, 4.5);
    assert!(s.is_nan());
    // ddof = 1: [2, 4, 4, 4, 5, 5, 7, 9] has population std 2 and sample std
    // sqrt(32 / 7).
    let (m, s) = coact::metrics::mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    assert_eq!(m, 5.0);
    assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{s}");
    // Two equal values: spread 0, not NaN.
    assert_eq!(coact::metrics::mean_std(&[3.0, 3.0]), (3.0, 0.0));
}
