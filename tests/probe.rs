//! The logistic-regression probe solver: optimality conditions, closed forms,
//! determinism and input errors.

use coact::probe::{
    f1_score, fit_binary, fit_multinomial, precision_recall_f1, Penalty, ProbeConfig,
};
use coact::rng::SplitMix64;

fn cfg(penalty: Penalty) -> ProbeConfig {
    ProbeConfig {
        penalty,
        max_iter: 2000,
        tol: 1e-9,
        fit_intercept: true,
        balanced: false,
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Gaussian features with labels from a noisy linear rule (not separable).
fn noisy_binary(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
    let mut rng = SplitMix64::new(seed);
    let truth: Vec<f64> = (0..d).map(|j| if j < 3 { 1.5 } else { 0.1 }).collect();
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let z: f64 = row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>() + 0.3;
        y.push(rng.next_f64() < sigmoid(z));
        x.extend(row.iter().map(|&v| v as f32));
    }
    (x, y)
}

/// Gradient of the smooth part (mean weighted log-loss + l2/2 ||w||^2) at
/// (w, b), computed independently of the solver: (d gradients, intercept's).
fn binary_grad(
    x: &[f32],
    y: &[bool],
    d: usize,
    w: &[f32],
    b: f32,
    l2: f64,
    s: &[f64],
) -> (Vec<f64>, f64) {
    let n = y.len();
    let mut g = vec![0.0; d];
    let mut gb = 0.0;
    for i in 0..n {
        let z: f64 = (0..d)
            .map(|j| x[i * d + j] as f64 * w[j] as f64)
            .sum::<f64>()
            + b as f64;
        let r = s[i] * (sigmoid(z) - if y[i] { 1.0 } else { 0.0 }) / n as f64;
        for j in 0..d {
            g[j] += r * x[i * d + j] as f64;
        }
        gb += r;
    }
    for j in 0..d {
        g[j] += l2 * w[j] as f64;
    }
    (g, gb)
}

#[test]
fn separable_data_is_fit_perfectly() {
    // Two clusters on either side of the plane x0 + x1 = 0, margin >= 0.5.
    let mut rng = SplitMix64::new(1);
    let (n, d) = (200, 2);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let pos = i % 2 == 0;
        let sgn = if pos { 1.0 } else { -1.0 };
        let a = rng.normal();
        let t = sgn * (0.5 + rng.next_f64());
        x.push((t + a) as f32);
        x.push((t - a) as f32);
        y.push(pos);
    }
    for penalty in [Penalty::None, Penalty::L2(1e-4), Penalty::L1(1e-4)] {
        let p = fit_binary(&x, n, d, &y, &cfg(penalty)).unwrap();
        assert_eq!(p.accuracy(&x, &y), 1.0, "{penalty:?}");
        assert_eq!(p.f1(&x, &y), 1.0, "{penalty:?}");
    }
}

#[test]
fn l2_solution_has_zero_gradient() {
    let (n, d) = (300, 8);
    let (x, y) = noisy_binary(n, d, 2);
    for (l2, balanced) in [(0.05, false), (0.01, true)] {
        let mut c = cfg(Penalty::L2(l2));
        c.balanced = balanced;
        let p = fit_binary(&x, n, d, &y, &c).unwrap();
        assert!(p.info.converged, "{:?}", p.info);
        let pos = y.iter().filter(|&&v| v).count() as f64;
        let s: Vec<f64> = y
            .iter()
            .map(|&v| match (balanced, v) {
                (false, _) => 1.0,
                (true, true) => n as f64 / (2.0 * pos),
                (true, false) => n as f64 / (2.0 * (n as f64 - pos)),
            })
            .collect();
        let (g, gb) = binary_grad(&x, &y, d, &p.w, p.b, l2, &s);
        // w is rounded to f32, so the gradient is ~0 up to f32 precision.
        for gj in &g {
            assert!(gj.abs() < 1e-6, "gradient {g:?} {gb}");
        }
        assert!(gb.abs() < 1e-6, "intercept gradient {gb}");
        // The rule's strong features dominate.
        assert!(p.w[0] > 0.5 && p.w[1] > 0.5 && p.w[2] > 0.5, "{:?}", p.w);
    }
}

#[test]
fn l1_solution_meets_kkt_conditions() {
    let (n, d) = (400, 12);
    let (x, y) = noisy_binary(n, d, 3);
    let l1 = 0.03;
    let p = fit_binary(&x, n, d, &y, &cfg(Penalty::L1(l1))).unwrap();
    let s = vec![1.0; n];
    let (g, gb) = binary_grad(&x, &y, d, &p.w, p.b, 0.0, &s);
    let zeros = p.w.iter().filter(|&&v| v == 0.0).count();
    assert!(
        zeros >= 3,
        "L1 should zero some of the weak features: {:?}",
        p.w
    );
    assert!(p.w[0] != 0.0 && p.w[1] != 0.0 && p.w[2] != 0.0, "{:?}", p.w);
    for (j, (&w, &gj)) in p.w.iter().zip(&g).enumerate() {
        if w == 0.0 {
            assert!(gj.abs() <= l1 + 1e-6, "feature {j}: |g| {gj} > {l1}");
        } else {
            let r = gj + l1 * (w as f64).signum();
            assert!(r.abs() < 1e-6, "feature {j}: g + l1 sign(w) = {r}");
        }
    }
    assert!(gb.abs() < 1e-6, "intercept gradient {gb}");
}

#[test]
fn sparse_inputs_meet_the_same_optimality_conditions() {
    // Mostly-zero features (the solver walks them as sparse rows).
    let (n, d) = (400, 30);
    let (mut x, y) = noisy_binary(n, d, 12);
    let mut rng = SplitMix64::new(13);
    for v in x.iter_mut() {
        if rng.next_f64() < 0.9 {
            *v = 0.0;
        } else {
            *v = v.abs() * 10.0;
        }
    }
    for (penalty, l2, l1) in [
        (Penalty::L2(0.01), 0.01, 0.0),
        (Penalty::L1(0.02), 0.0, 0.02),
    ] {
        let p = fit_binary(&x, n, d, &y, &cfg(penalty)).unwrap();
        let (g, gb) = binary_grad(&x, &y, d, &p.w, p.b, l2, &vec![1.0; n]);
        assert!(gb.abs() < 1e-6, "{gb}");
        for (j, (&w, &gj)) in p.w.iter().zip(&g).enumerate() {
            let r = if w == 0.0 {
                (gj.abs() - l1).max(0.0)
            } else {
                gj + l1 * (w as f64).signum()
            };
            assert!(r.abs() < 1e-5, "{penalty:?} feature {j}: w {w} g {gj}");
        }
    }
}

#[test]
fn one_dimensional_symmetric_problem_matches_closed_form() {
    // x = +1: 3 true, 1 false; x = -1: 3 false, 1 true. By symmetry b = 0 and
    // the stationarity condition of J(w) = mean loss + a/2 w^2 reduces to
    //   sigmoid(w) - 3/4 + a w = 0
    // (each half contributes (4 sigmoid(w) - 3) / 8). With a = 0: w = ln 3.
    let x: Vec<f32> = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0].to_vec();
    let y = [true, true, true, false, false, false, false, true];
    let p = fit_binary(&x, 8, 1, &y, &cfg(Penalty::None)).unwrap();
    assert!((p.w[0] as f64 - 3f64.ln()).abs() < 1e-6, "w {}", p.w[0]);
    assert!(p.b.abs() < 1e-6, "b {}", p.b);

    let a = 0.1;
    // Bisection on the scalar equation, independent of the solver.
    let (mut lo, mut hi) = (0.0f64, 5.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if sigmoid(mid) - 0.75 + a * mid > 0.0 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let p = fit_binary(&x, 8, 1, &y, &cfg(Penalty::L2(a))).unwrap();
    assert!((p.w[0] as f64 - lo).abs() < 1e-6, "w {} vs {lo}", p.w[0]);
    assert!(p.b.abs() < 1e-6);

    // L1: J = mean loss + a |w|; for w > 0 the condition is
    // sigmoid(w) - 3/4 + a = 0, so w = logit(3/4 - a).
    let a = 0.2;
    let p = fit_binary(&x, 8, 1, &y, &cfg(Penalty::L1(a))).unwrap();
    let q: f64 = 0.75 - a;
    assert!(
        (p.w[0] as f64 - (q / (1.0 - q)).ln()).abs() < 1e-6,
        "w {}",
        p.w[0]
    );
    // Strength above |grad at 0| = 1/4 gives exactly 0.
    let p = fit_binary(&x, 8, 1, &y, &cfg(Penalty::L1(0.3))).unwrap();
    assert_eq!(p.w[0], 0.0);

    // sklearn's C: C = 1 on n = 8 is strength 1/8.
    assert_eq!(Penalty::sklearn_l2(1.0, 8), Penalty::L2(0.125));
    assert_eq!(Penalty::sklearn_l1(2.0, 8), Penalty::L1(0.0625));
}

#[test]
fn no_intercept_keeps_b_at_zero() {
    let (n, d) = (100, 3);
    let (x, y) = noisy_binary(n, d, 9);
    let mut c = cfg(Penalty::L2(0.01));
    c.fit_intercept = false;
    let p = fit_binary(&x, n, d, &y, &c).unwrap();
    assert_eq!(p.b, 0.0);
    let (g, _) = binary_grad(&x, &y, d, &p.w, 0.0, 0.01, &vec![1.0; n]);
    assert!(g.iter().all(|v| v.abs() < 1e-6), "{g:?}");
}

/// Three well-separated Gaussian clusters in 5-D, one per class.
fn clusters(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>, Vec<[f64; 5]>) {
    let centers = vec![
        [3.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 3.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 3.0, 0.0, 1.0],
    ];
    let mut rng = SplitMix64::new(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = (i % 3) as u32;
        for v in centers[c as usize] {
            x.push((v + 0.7 * rng.normal()) as f32);
        }
        y.push(c);
    }
    (x, y, centers)
}

#[test]
fn multinomial_recovers_class_structure_and_is_stationary() {
    let (n, d, k) = (300, 5, 3);
    let (x, y, centers) = clusters(n, 4);
    let l2 = 0.01;
    let p = fit_multinomial(&x, n, d, &y, k, &cfg(Penalty::L2(l2))).unwrap();
    assert!(p.info.converged, "{:?}", p.info);
    let (xt, yt, _) = clusters(300, 5);
    assert!(p.accuracy(&xt, &yt) > 0.95, "{}", p.accuracy(&xt, &yt));
    let cx: Vec<f32> = centers.iter().flatten().map(|&v| v as f32).collect();
    assert_eq!(p.predict(&cx), vec![0, 1, 2]);
    // Class c's weight is largest on its own centre's axis.
    for c in 0..k {
        let row = &p.w[c * d..(c + 1) * d];
        let best = (0..d).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(best, c, "{row:?}");
    }
    // Independent gradient: (1/n) sum (softmax - onehot) x + l2 W.
    let mut g = vec![0.0f64; k * d + k];
    for i in 0..n {
        let xi = &x[i * d..(i + 1) * d];
        let z: Vec<f64> = (0..k)
            .map(|c| {
                (0..d)
                    .map(|j| xi[j] as f64 * p.w[c * d + j] as f64)
                    .sum::<f64>()
                    + p.b[c] as f64
            })
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for c in 0..k {
            let r = (e[c] / s - if y[i] as usize == c { 1.0 } else { 0.0 }) / n as f64;
            for j in 0..d {
                g[c * d + j] += r * xi[j] as f64;
            }
            g[k * d + c] += r;
        }
    }
    for (gc, &wc) in g.iter_mut().zip(&p.w) {
        *gc += l2 * wc as f64;
    }
    assert!(g.iter().all(|v| v.abs() < 1e-5), "{g:?}");
}

#[test]
fn multinomial_l1_zeroes_useless_features() {
    let (n, d, k) = (300, 5, 3);
    let (x, y, _) = clusters(n, 6);
    let p = fit_multinomial(&x, n, d, &y, k, &cfg(Penalty::L1(0.02))).unwrap();
    // Feature 3 is pure noise and feature 4 is constant-ish across classes.
    for c in 0..k {
        assert_eq!(p.w[c * d + 3], 0.0, "{:?}", p.w);
    }
    assert!(p.accuracy(&x, &y) > 0.95);
}

#[test]
fn fits_are_bitwise_deterministic_across_thread_counts() {
    let (n, d) = (1000, 40); // several reduction chunks
    let (x, y) = noisy_binary(n, d, 7);
    let fit = |threads: usize, penalty: Penalty| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fit_binary(&x, n, d, &y, &cfg(penalty)).unwrap())
    };
    for penalty in [Penalty::L2(0.01), Penalty::L1(0.01)] {
        let a = fit(1, penalty);
        let b = fit(3, penalty);
        let c = fit(3, penalty);
        let bits = |p: &coact::probe::BinaryProbe| {
            let mut v: Vec<u32> = p.w.iter().map(|w| w.to_bits()).collect();
            v.push(p.b.to_bits());
            v
        };
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(bits(&b), bits(&c));
        assert_eq!(a.info, b.info);
    }
    let (xm, ym, _) = clusters(600, 8);
    let m1 = fit_multinomial(&xm, 600, 5, &ym, 3, &cfg(Penalty::L2(0.01))).unwrap();
    let m2 = fit_multinomial(&xm, 600, 5, &ym, 3, &cfg(Penalty::L2(0.01))).unwrap();
    assert_eq!(m1, m2);
}

#[test]
fn bad_input_gives_clear_errors() {
    let c = cfg(Penalty::L2(0.1));
    let x = vec![0.0f32, 1.0, 2.0, 3.0];
    let err = |r: anyhow::Result<coact::probe::BinaryProbe>| format!("{:#}", r.unwrap_err());

    let mut nan = x.clone();
    nan[3] = f32::NAN;
    let e = err(fit_binary(&nan, 2, 2, &[true, false], &c));
    assert!(e.contains("non-finite") && e.contains("sample 1"), "{e}");
    let e = err(fit_binary(&x, 3, 2, &[true, false, true], &c));
    assert!(e.contains("expected n * d"), "{e}");
    let e = err(fit_binary(&x, 2, 2, &[true], &c));
    assert!(e.contains("y has 1 labels"), "{e}");
    let e = err(fit_binary(&x, 2, 2, &[true, true], &c));
    assert!(e.contains("single class"), "{e}");
    let e = err(fit_binary(&x, 0, 2, &[], &c));
    assert!(e.contains("no samples"), "{e}");
    let e = err(fit_binary(
        &x,
        2,
        2,
        &[true, false],
        &cfg(Penalty::L2(-1.0)),
    ));
    assert!(e.contains("penalty"), "{e}");

    let e = fit_multinomial(&x, 2, 2, &[0, 3], 3, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 3 of sample 1"), "{e}");
    let e = fit_multinomial(&x, 2, 2, &[0, 2], 3, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class 1 has no samples"), "{e}");
    let e = fit_multinomial(&x, 2, 2, &[0, 0], 1, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("classes must be >= 2"), "{e}");
}

#[test]
fn f1_matches_sklearn_conventions() {
    let t = [true, true, false, false, true];
    let p = [true, false, true, false, true];
    // tp 2, fp 1, fn 1: precision 2/3, recall 2/3, f1 2/3.
    let (pr, rc, f1) = precision_recall_f1(&t, &p);
    assert!((pr - 2.0 / 3.0).abs() < 1e-12 && (rc - 2.0 / 3.0).abs() < 1e-12);
    assert!((f1 - 2.0 / 3.0).abs() < 1e-12);
    // No predicted and no true positives: 0 (zero_division=0).
    assert_eq!(f1_score(&[false, false], &[false, false]), 0.0);
    assert_eq!(f1_score(&[true, false], &[false, false]), 0.0);
}

/// Timing at the benchmarks' sizes (run with --ignored --nocapture).
#[test]
#[ignore]
fn probe_speed() {
    let mut rng = SplitMix64::new(11);
    let (n, d) = (10_000, 2048);
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let y: Vec<bool> = (0..n)
        .map(|i| x[i * d] + 0.5 * x[i * d + 1] + 0.3 * rng.normal() as f32 > 0.0)
        .collect();
    for penalty in [Penalty::sklearn_l2(1.0, n), Penalty::L1(0.01)] {
        let t = std::time::Instant::now();
        let p = fit_binary(
            &x,
            n,
            d,
            &y,
            &ProbeConfig {
                penalty,
                ..Default::default()
            },
        )
        .unwrap();
        println!("binary {n}x{d} {penalty:?}: {:?} {:?}", t.elapsed(), p.info);
    }
    let (n, d, k) = (1500, 640, 26);
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let x: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(j, &v)| {
            v + if j % d == (y[j / d] as usize) {
                2.0
            } else {
                0.0
            }
        })
        .collect();
    let t = std::time::Instant::now();
    let p = fit_multinomial(&x, n, d, &y, k, &ProbeConfig::default()).unwrap();
    println!("multinomial {n}x{d}x{k}: {:?} {:?}", t.elapsed(), p.info);
}

#[test]
fn fit_probe_rescales_inputs_and_maps_the_weights_back_to_raw_inputs() {
    use coact::probe::{fit_probe, Linear};
    let (n, d) = (400, 6);
    let (x, y) = noisy_binary(n, d, 21);
    let pen = Penalty::L2(1e-3);

    // Without rescaling it is fit_binary with 1000 iterations.
    let plain = fit_probe(&x, d, &y, pen, false).unwrap();
    let direct = fit_binary(
        &x,
        n,
        d,
        &y,
        &ProbeConfig {
            penalty: pen,
            max_iter: 1000,
            ..ProbeConfig::default()
        },
    )
    .unwrap();
    assert_eq!(plain.w, direct.w);
    assert_eq!(plain.b, direct.b);

    // Inputs 1024 times larger (exact in f32) rescale to the same matrix, so
    // the fit is the same and the raw-input weights are 1024 times smaller.
    let big: Vec<f32> = x.iter().map(|v| v * 1024.0).collect();
    let a = fit_probe(&x, d, &y, pen, true).unwrap();
    let b = fit_probe(&big, d, &y, pen, true).unwrap();
    assert_eq!(a.b, b.b);
    for (wa, wb) in a.w.iter().zip(&b.w) {
        assert_eq!(*wa, wb * 1024.0);
    }
    // ... and they decide the same on their own inputs, better than chance.
    assert_eq!(a.predict(&x), b.predict(&big));
    assert!(a.accuracy(&x, &y) > 0.8, "{}", a.accuracy(&x, &y));
    // Without rescaling, the large inputs make the same penalty weaker: a
    // different probe.
    let unscaled = fit_probe(&big, d, &y, pen, false).unwrap();
    assert_ne!(unscaled.w, b.w);

    // decisions = w . x + b in f64; predict = decision > 0.
    let p = Linear {
        w: vec![1.0, -2.0],
        b: 0.5,
    };
    let rows = [1.0f32, 1.0, 3.0, 1.0, 0.0, 0.25];
    assert_eq!(p.decisions(&rows), vec![-0.5, 1.5, 0.0]);
    assert_eq!(p.predict(&rows), vec![false, true, false]);
    assert_eq!(p.accuracy(&rows, &[false, false, false]), 2.0 / 3.0);

    // All-zero inputs are left unscaled (no division by zero).
    let zeros = vec![0.0f32; n * d];
    let z = fit_probe(&zeros, d, &y, pen, true).unwrap();
    assert!(z.w.iter().all(|&w| w == 0.0) && z.b.is_finite());
}
