//! The first-letter absorption benchmark (SAEBench's `absorption_first_letter`,
//! sae_bench/evals/absorption/), as functions of arrays.
//!
//! Inputs: the residual stream at the word's position of first-letter prompts
//! ("{word} has the first letter:" after a few solved examples), split into
//! train and test words, and each word's first letter (0..26).
//!
//! 1. Ground truth ([`train_ground_truth`]): one logistic probe per letter on
//!    the raw activations, one-vs-rest, class-balanced (SAEBench trains the
//!    26 one-vs-rest probes jointly with BCE and `pos_weight` n_neg / n_pos,
//!    the same reweighting). Its test F1 (score > 0) decides which letters are
//!    evaluated (> `min_probe_f1`, 0.6).
//! 2. k-sparse probes ([`evaluate`]): per letter, an L1 logistic probe on the
//!    SAE latents of the train words ranks latents by weight (largest
//!    positive first); for k = 1..=max_k a probe on the top k latents
//!    (sklearn's `LogisticRegression(C=1, class_weight="balanced")`) is scored
//!    by F1 on the test words. The main latents are the top k* where k* is
//!    the last k whose F1 beat the previous best by more than `f1_jump`
//!    (0.03), stopping at the first k that does not ([`feature_split_k`]).
//! 3. Absorption ([`word_absorption`]) on every test word of the letter that
//!    the ground-truth probe detects (score > 0): with u the unit probe
//!    direction, p = x . u and a_i = f_i cos(u, d_i) (d_i the decoder row),
//!    P_main = sum of a_i over main latents, P_abs = sum of the 3 largest a_i
//!    over non-main latents with cos >= 0.1 and a_i > 0. Fraction = 0 if
//!    P_main >= p or P_abs / p < 0.4; 1 if P_main <= 0; else A / (A + P_main)
//!    with A = min(P_abs, p - P_main). Full absorption: no main latent fires
//!    (all < 1e-8), the latent with the largest a_i has cos >= 0.025, p >= 0,
//!    and its a_i / p >= 0.4. Per letter: mean fraction and full-absorption
//!    rate over those words; overall: their mean over the letters kept.
//!
//! Where coact differs from SAEBench, and why:
//! - Probes are fit by one deterministic solver ([`crate::probe`], gradient
//!   tolerance 1e-4 for the ranking and k-sparse probes) instead of 50 epochs
//!   of Adam on shuffled batches (ranking) and sklearn's lbfgs (k-sparse).
//! - The ranking probe's L1 strength (`k_sparse_l1`, SAEBench's 0.01 on the
//!   pos-weighted mean BCE, converted to the balanced weighting as
//!   l1 n / (2 n_neg)) applies to the latents divided by their mean non-zero
//!   activation over the train words. SAEBench applies it to raw latents,
//!   whose scale follows the model's residual norm (in the thousands for
//!   gemma-3 here, ~20x weaker a penalty than the same number on
//!   normalised latents; there the L1 probe ranked first latents that fire
//!   on a handful of train words and never on test words).
//! - The ground-truth probe's L2 strength is `probe_l2` on activations
//!   centred and divided by their RMS (one scalar, so the penalty stays
//!   isotropic in the raw space); the direction is mapped back to raw space.
//!   SAEBench uses Adam weight decay 1e-4 without rescaling; coact's
//!   activations (gemma-3 residual norms in the thousands) would make any
//!   fixed raw-space strength meaningless.
//! - The absorption calculator reuses the test prompt's stored activation
//!   instead of rerunning the model on a fresh prompt with new random
//!   examples, so a new SAE never reruns the model.
//! - p <= 0 (a word the probe detects through its bias alone) gives fraction
//!   0 and no full absorption; SAEBench divides by p there.

use super::mean_std;
use crate::probe::{fit_binary, precision_recall_f1, Penalty, ProbeConfig};
use crate::sae::{Sae, SparseCodes};
use anyhow::{ensure, Result};
use rayon::prelude::*;

/// Gradient tolerance of the ranking and k-sparse probe fits (sklearn's
/// default tol for the k-sparse probes; the top-k ranking is stable there).
const RANKING_TOL: f64 = 1e-4;

/// The 26 letters, index = class.
pub const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

/// SAEBench's calculator constants (feature_absorption.py).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Minimum cos(u, d_i) of a potential absorber (fraction).
    pub absorber_cos: f64,
    /// Minimum cos of the top projecting latent (full absorption).
    pub full_cos: f64,
    /// Minimum share of p carried by the absorbers (both).
    pub proportion: f64,
    /// Absorbers summed (fraction).
    pub max_absorbers: usize,
    /// A main latent counts as firing at or above this activation.
    pub fire_eps: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            absorber_cos: 0.1,
            full_cos: 0.025,
            proportion: 0.4,
            max_absorbers: 3,
            fire_eps: 1e-8,
        }
    }
}

/// One word's absorption.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WordAbsorption {
    pub fraction: f64,
    pub full: bool,
}

/// cos(u, d_i) for every decoder row of `w_dec` ([d_sae, d]).
pub fn decoder_cosines(w_dec: &[f32], d: usize, u: &[f32]) -> Vec<f32> {
    let un: f64 = u.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    w_dec
        .chunks_exact(d)
        .map(|row| {
            let (mut dot, mut rn) = (0.0f64, 0.0f64);
            for (&a, &b) in row.iter().zip(u) {
                dot += a as f64 * b as f64;
                rn += (a as f64).powi(2);
            }
            let den = rn.sqrt() * un;
            if den > 0.0 {
                (dot / den) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// SAEBench's per-word calculation. `p` = x . u; `active` = the word's
/// firing latents (index, activation), the others being 0; `cos` = cos(u,
/// d_i) for every latent; `main` = the letter's main latents.
pub fn word_absorption(
    p: f64,
    active: &[(u32, f32)],
    cos: &[f32],
    main: &[u32],
    th: &Thresholds,
) -> WordAbsorption {
    let a = |i: u32, f: f32| f as f64 * cos[i as usize] as f64;
    let act_of = |i: u32| {
        active
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(0.0, |&(_, f)| f)
    };
    let p_main: f64 = main.iter().map(|&i| a(i, act_of(i))).sum();
    let mut absorbers: Vec<f64> = active
        .iter()
        .filter(|(i, _)| !main.contains(i) && cos[*i as usize] as f64 >= th.absorber_cos)
        .map(|&(i, f)| a(i, f))
        .filter(|&v| v > 0.0)
        .collect();
    absorbers.sort_by(|x, y| y.total_cmp(x));
    let p_abs: f64 = absorbers.iter().take(th.max_absorbers).sum();
    let fraction = if p <= 0.0 || p_main >= p || p_abs / p < th.proportion {
        0.0
    } else if p_main <= 0.0 {
        1.0
    } else {
        let absorbed = p_abs.min(p - p_main);
        (absorbed / (absorbed + p_main)).clamp(0.0, 1.0)
    };
    // Full absorption: the single latent with the largest a_i (a latent that
    // does not fire has a_i = 0).
    let main_silent = main.iter().all(|&i| (act_of(i) as f64) < th.fire_eps);
    let top = active
        .iter()
        .map(|&(i, f)| (a(i, f), i))
        .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
    let full = match top {
        Some((top_a, top_i)) if main_silent && p > 0.0 && top_a > 0.0 => {
            cos[top_i as usize] as f64 >= th.full_cos && top_a / p >= th.proportion
        }
        _ => false,
    };
    WordAbsorption { fraction, full }
}

/// SAEBench's feature-split rule: k* = the last k (1-based) whose F1 beat
/// the best so far by more than `jump`, stopping at the first k that does
/// not. `f1[k - 1]` is the F1 of the k-sparse probe; 0 when `f1` is empty.
pub fn feature_split_k(f1: &[f64], jump: f64) -> usize {
    let mut best = -100.0;
    let mut k_star = 0;
    for (k, &f) in f1.iter().enumerate() {
        if f > best + jump {
            best = f;
            k_star = k + 1;
        } else {
            break;
        }
    }
    k_star
}

/// A letter's ground-truth probe: decision w . x + b on raw activations.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruthProbe {
    pub letter: u8,
    pub w: Vec<f32>,
    pub b: f32,
    pub test_f1: f64,
    pub test_precision: f64,
    pub test_recall: f64,
    pub train_words: usize,
    pub test_words: usize,
    /// False when the letter has no train word (no probe: w = 0, b = -1).
    pub trained: bool,
}

impl GroundTruthProbe {
    pub fn score(&self, x: &[f32]) -> f64 {
        self.w
            .iter()
            .zip(x)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>()
            + self.b as f64
    }
}

fn check_words(x: &[f32], letters: &[u8], d: usize, what: &str) -> Result<()> {
    ensure!(d > 0, "absorption: d = 0");
    ensure!(
        x.len() == letters.len() * d,
        "absorption: {what} activations have {} values, expected {} words x {d}",
        x.len(),
        letters.len()
    );
    if let Some(l) = letters.iter().find(|&&l| l >= 26) {
        anyhow::bail!("absorption: {what} letter index {l} is not in 0..26");
    }
    Ok(())
}

/// Per-letter one-vs-rest ground-truth probes (see the module doc), with
/// their test precision, recall and F1 (score > 0).
pub fn train_ground_truth(
    x_train: &[f32],
    y_train: &[u8],
    x_test: &[f32],
    y_test: &[u8],
    d: usize,
    l2: f64,
    max_iter: usize,
) -> Result<Vec<GroundTruthProbe>> {
    check_words(x_train, y_train, d, "train")?;
    check_words(x_test, y_test, d, "test")?;
    let n = y_train.len();
    ensure!(n > 0, "absorption: no train words");
    // Centre, and divide by one scalar (the RMS of the centred values).
    let mut mu = vec![0.0f64; d];
    for row in x_train.chunks_exact(d) {
        for (m, &v) in mu.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let mut ss = 0.0f64;
    for row in x_train.chunks_exact(d) {
        for (m, &v) in mu.iter().zip(row) {
            ss += (v as f64 - m).powi(2);
        }
    }
    let s = (ss / (n * d) as f64).sqrt().max(f64::MIN_POSITIVE);
    let xs: Vec<f32> = x_train
        .chunks_exact(d)
        .flat_map(|row| {
            row.iter()
                .zip(&mu)
                .map(|(&v, m)| ((v as f64 - m) / s) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let cfg = ProbeConfig {
        penalty: Penalty::L2(l2),
        max_iter,
        tol: 1e-6,
        fit_intercept: true,
        balanced: true,
    };
    (0..26u8)
        .into_par_iter()
        .map(|letter| {
            let y: Vec<bool> = y_train.iter().map(|&l| l == letter).collect();
            let pos = y.iter().filter(|&&v| v).count();
            let test_words = y_test.iter().filter(|&&l| l == letter).count();
            let (w, b, trained) = if pos == 0 {
                (vec![0.0f32; d], -1.0f32, false)
            } else if pos == n {
                // Every train word has this letter: a constant probe.
                (vec![0.0f32; d], 1.0f32, true)
            } else {
                let p = fit_binary(&xs, n, d, &y, &cfg)?;
                let w: Vec<f32> = p.w.iter().map(|&v| (v as f64 / s) as f32).collect();
                let shift: f64 = w.iter().zip(&mu).map(|(&a, m)| a as f64 * m).sum();
                (w, (p.b as f64 - shift) as f32, true)
            };
            let mut probe = GroundTruthProbe {
                letter,
                w,
                b,
                test_f1: 0.0,
                test_precision: 0.0,
                test_recall: 0.0,
                train_words: pos,
                test_words,
                trained,
            };
            let truth: Vec<bool> = y_test.iter().map(|&l| l == letter).collect();
            let pred: Vec<bool> = x_test
                .chunks_exact(d)
                .map(|r| probe.score(r) > 0.0)
                .collect();
            let (pr, rc, f1) = precision_recall_f1(&truth, &pred);
            probe.test_precision = pr;
            probe.test_recall = rc;
            probe.test_f1 = f1;
            Ok(probe)
        })
        .collect()
}

/// Settings of [`evaluate`] (SAEBench's defaults in `Default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Largest k of the k-sparse probes (SAEBench max_k_value 10).
    pub max_k: usize,
    /// F1 improvement that counts as a feature split (0.03).
    pub f1_jump: f64,
    /// L1 strength of the latent-ranking probe, on SAEBench's scale (0.01).
    pub k_sparse_l1: f64,
    /// Letters whose ground-truth probe test F1 is not above this are left
    /// out (min_GT_probe_f1 0.6).
    pub min_probe_f1: f64,
    /// Iterations of each probe fit.
    pub max_iter: usize,
    pub thresholds: Thresholds,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_k: 10,
            f1_jump: 0.03,
            k_sparse_l1: 0.01,
            min_probe_f1: 0.6,
            max_iter: 500,
            thresholds: Thresholds::default(),
        }
    }
}

/// Why a letter is not in the mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftOut {
    /// Ground-truth probe test F1 not above the threshold.
    LowProbeF1,
    /// The probe detects none of the letter's test words.
    NoDetectedWords,
}

impl LeftOut {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftOut::LowProbeF1 => "probe_f1",
            LeftOut::NoDetectedWords => "no_detected_words",
        }
    }
}

/// One letter's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterResult {
    pub letter: u8,
    pub probe_f1: f64,
    /// Latents ranked by the L1 probe (top max_k).
    pub ranking: Vec<u32>,
    /// Test F1 of the k-sparse probe for k = 1..=max_k.
    pub k_sparse_f1: Vec<f64>,
    /// The main latents (the top k* of `ranking`).
    pub main_latents: Vec<u32>,
    /// Test words of the letter that the ground-truth probe detects.
    pub num_words: usize,
    pub num_full_absorption: usize,
    /// Mean absorption fraction over those words (0 when none).
    pub absorption_fraction: f64,
    /// Share of those words fully absorbed (0 when none).
    pub full_absorption_rate: f64,
    pub left_out: Option<LeftOut>,
}

/// The whole benchmark for one SAE.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsorptionReport {
    pub letters: Vec<LetterResult>,
    /// Means over the letters kept (NaN when none is kept).
    pub mean_absorption_fraction: f64,
    pub mean_full_absorption_rate: f64,
    pub mean_num_split_features: f64,
    /// Sample standard deviations over the letters kept (NaN below 2).
    pub std_absorption_fraction: f64,
    pub std_full_absorption_rate: f64,
    pub std_num_split_features: f64,
    pub letters_used: usize,
}

/// What every letter's evaluation reads (see [`evaluate`]).
struct LetterInputs<'a> {
    sae: &'a Sae,
    x_test: &'a [f32],
    y_train: &'a [u8],
    y_test: &'a [u8],
    probes: &'a [GroundTruthProbe],
    settings: &'a Settings,
    /// Dense train latents `[n_train, d_sae]`, raw and divided by `s`.
    z_train: &'a [f32],
    z_train_s: &'a [f32],
    /// Dense test latents and the same as sparse codes.
    z_test: &'a [f32],
    codes_test: &'a SparseCodes,
    /// Mean non-zero train latent activation.
    s: f64,
    k_max: usize,
}

/// One letter of [`evaluate`]: the latent ranking and k-sparse probes, the
/// feature-split k, then absorption over the test words its ground-truth
/// probe detects.
fn evaluate_letter(inp: &LetterInputs<'_>, letter: u8) -> Result<LetterResult> {
    let (sae, x_test, y_train, y_test, settings) =
        (inp.sae, inp.x_test, inp.y_train, inp.y_test, inp.settings);
    let (z_train, z_train_s, z_test, codes_test) =
        (inp.z_train, inp.z_train_s, inp.z_test, inp.codes_test);
    let (s, k_max) = (inp.s, inp.k_max);
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let (n_tr, n_te) = (y_train.len(), y_test.len());
    let gt = &inp.probes[letter as usize];
    let y: Vec<bool> = y_train.iter().map(|&l| l == letter).collect();
    let truth: Vec<bool> = y_test.iter().map(|&l| l == letter).collect();
    let pos = y.iter().filter(|&&v| v).count();
    let mut ranking = Vec::new();
    let mut k_sparse_f1 = Vec::new();
    if pos > 0 && pos < n_tr {
        // Rank latents by an L1 probe on the latents divided by s.
        // SAEBench: l1 * ||w||_1 on the pos-weighted BCE; balanced
        // weights are that loss / c with c = 2 n_neg / n, so the
        // strength becomes l1 / c.
        let c = 2.0 * (n_tr - pos) as f64 / n_tr as f64;
        let l1 = settings.k_sparse_l1 / c;
        let cfg = ProbeConfig {
            penalty: Penalty::L1(l1),
            max_iter: settings.max_iter,
            tol: RANKING_TOL,
            fit_intercept: true,
            balanced: true,
        };
        let p = fit_binary(z_train_s, n_tr, f, &y, &cfg)?;
        let mut order: Vec<u32> = (0..f as u32).collect();
        order.sort_by(|&a, &b| p.w[b as usize].total_cmp(&p.w[a as usize]).then(a.cmp(&b)));
        order.truncate(k_max);
        ranking = order;
        for k in 1..=k_max {
            let cols = &ranking[..k];
            let xk = select_columns(z_train, f, cols, s);
            // sklearn LogisticRegression(C=1, class_weight="balanced"):
            // strength 1/n on raw latents = 1/(n s^2) on latents / s.
            let cfg = ProbeConfig {
                penalty: Penalty::L2(1.0 / (n_tr as f64 * s * s)),
                max_iter: settings.max_iter,
                tol: RANKING_TOL,
                fit_intercept: true,
                balanced: true,
            };
            let probe = fit_binary(&xk, n_tr, k, &y, &cfg)?;
            let xt = select_columns(z_test, f, cols, s);
            let (_, _, f1) = precision_recall_f1(&truth, &probe.predict(&xt));
            k_sparse_f1.push(f1);
        }
    }
    let k_star = feature_split_k(&k_sparse_f1, settings.f1_jump);
    let main_latents: Vec<u32> = ranking[..k_star].to_vec();

    // Absorption over the test words the ground-truth probe detects.
    let un: f64 = gt.w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let cos = decoder_cosines(&sae.w_dec, d, &gt.w);
    let (mut num_words, mut num_full, mut frac_sum) = (0usize, 0usize, 0.0f64);
    for t in 0..n_te {
        let x = &x_test[t * d..(t + 1) * d];
        if y_test[t] != letter || !gt.trained || gt.score(x) <= 0.0 {
            continue;
        }
        let p = if un > 0.0 {
            gt.w.iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                / un
        } else {
            0.0
        };
        let (idx, val) = codes_test.row(t);
        let active: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied()).collect();
        let r = word_absorption(p, &active, &cos, &main_latents, &settings.thresholds);
        num_words += 1;
        num_full += r.full as usize;
        frac_sum += r.fraction;
    }
    let above = gt.test_f1.partial_cmp(&settings.min_probe_f1) == Some(std::cmp::Ordering::Greater);
    let left_out = if !above {
        Some(LeftOut::LowProbeF1)
    } else if num_words == 0 {
        Some(LeftOut::NoDetectedWords)
    } else {
        None
    };
    let per = |v: f64| {
        if num_words > 0 {
            v / num_words as f64
        } else {
            0.0
        }
    };
    Ok(LetterResult {
        letter,
        probe_f1: gt.test_f1,
        ranking,
        k_sparse_f1,
        main_latents,
        num_words,
        num_full_absorption: num_full,
        absorption_fraction: per(frac_sum),
        full_absorption_rate: per(num_full as f64),
        left_out,
    })
}

/// Dense [n, d_sae] latents from sparse codes.
fn dense_latents(codes: &SparseCodes) -> Vec<f32> {
    let (n, f) = (codes.n_tokens(), codes.d_sae);
    let mut out = vec![0.0f32; n * f];
    for t in 0..n {
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            out[t * f + j as usize] = v;
        }
    }
    out
}

/// Columns `cols` of a row-major [n, f] matrix, scaled by 1/s.
fn select_columns(z: &[f32], f: usize, cols: &[u32], s: f64) -> Vec<f32> {
    z.chunks_exact(f)
        .flat_map(|row| {
            cols.iter()
                .map(move |&c| (row[c as usize] as f64 / s) as f32)
        })
        .collect()
}

/// Runs the k-sparse probes and the absorption calculation for one SAE on
/// the stored words (raw activations, [n, d] row-major) and their
/// ground-truth probes (26, in letter order).
pub fn evaluate(
    sae: &Sae,
    x_train: &[f32],
    y_train: &[u8],
    x_test: &[f32],
    y_test: &[u8],
    probes: &[GroundTruthProbe],
    settings: &Settings,
) -> Result<AbsorptionReport> {
    let d = sae.cfg.d_in;
    let f = sae.cfg.d_sae;
    check_words(x_train, y_train, d, "train")?;
    check_words(x_test, y_test, d, "test")?;
    ensure!(
        probes.len() == 26
            && probes
                .iter()
                .enumerate()
                .all(|(i, p)| p.letter as usize == i),
        "absorption: expected 26 ground-truth probes in letter order"
    );
    ensure!(
        probes.iter().all(|p| p.w.len() == d),
        "absorption: ground-truth probes have {} dimensions, the SAE's d_in is {d}",
        probes[0].w.len()
    );
    ensure!(settings.max_k >= 1, "absorption: max_k must be >= 1");
    let (n_tr, n_te) = (y_train.len(), y_test.len());
    let z_train = dense_latents(&sae.encode(x_train, n_tr)?);
    let codes_test = sae.encode(x_test, n_te)?;
    let z_test = dense_latents(&codes_test);
    // s = the mean non-zero latent activation over the train words. The
    // ranking probe's L1 strength applies to latents / s (scale-free); the
    // k-sparse probes are fit on latents / s with their L2 strength rescaled
    // so that their optimum is that of the raw latents.
    let nz: Vec<f64> = z_train
        .iter()
        .filter(|v| **v != 0.0)
        .map(|&v| v.abs() as f64)
        .collect();
    let s = if nz.is_empty() {
        1.0
    } else {
        nz.iter().sum::<f64>() / nz.len() as f64
    };
    let z_train_s: Vec<f32> = z_train.iter().map(|&v| (v as f64 / s) as f32).collect();
    let k_max = settings.max_k.min(f);

    let ctx = LetterInputs {
        sae,
        x_test,
        y_train,
        y_test,
        probes,
        settings,
        z_train: &z_train,
        z_train_s: &z_train_s,
        z_test: &z_test,
        codes_test: &codes_test,
        s,
        k_max,
    };
    let letters: Vec<LetterResult> = (0..26u8)
        .into_par_iter()
        .map(|letter| evaluate_letter(&ctx, letter))
        .collect::<Result<Vec<_>>>()?;

    let kept: Vec<&LetterResult> = letters.iter().filter(|l| l.left_out.is_none()).collect();
    let (mf, sf) = mean_std(
        &kept
            .iter()
            .map(|l| l.absorption_fraction)
            .collect::<Vec<_>>(),
    );
    let (mr, sr) = mean_std(
        &kept
            .iter()
            .map(|l| l.full_absorption_rate)
            .collect::<Vec<_>>(),
    );
    let (ms, ss) = mean_std(
        &kept
            .iter()
            .map(|l| l.main_latents.len() as f64)
            .collect::<Vec<_>>(),
    );
    Ok(AbsorptionReport {
        letters_used: kept.len(),
        letters,
        mean_absorption_fraction: mf,
        mean_full_absorption_rate: mr,
        mean_num_split_features: ms,
        std_absorption_fraction: sf,
        std_full_absorption_rate: sr,
        std_num_split_features: ss,
    })
}
