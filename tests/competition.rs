//! The compete stage's engine (src/competition.rs): exact co-firing counts
//! and filters from index lists, per-latent statistics, competitors per
//! threshold, cosines and the random-pair baseline; plus an ignored speed
//! benchmark (`cargo test -p coact --test competition -- --ignored --nocapture`).

use coact::competition::{
    competition, competitors, max_cosines, random_pairs, row_cos, unit_rows, FiringCollector,
    FiringIndex, Pair,
};
use coact::rng::SplitMix64;
use coact::sae::SparseCodes;
use std::collections::{BTreeMap, BTreeSet};

fn index_of(d_sae: usize, lists: &[Vec<u32>]) -> FiringIndex {
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    for l in lists {
        indices.extend_from_slice(l);
        indptr.push(indices.len());
    }
    let mut c = FiringCollector::new(d_sae);
    c.add_lists(&indptr, &indices).unwrap();
    c.finish()
}

fn no_progress(_: usize) {}

/// C_ij (i < j) and n_i by brute force over a dense token x latent mask.
fn dense_counts(d_sae: usize, lists: &[Vec<u32>]) -> (Vec<u64>, BTreeMap<(u32, u32), u64>) {
    let mut n = vec![0u64; d_sae];
    let mut c = BTreeMap::new();
    for l in lists {
        let mut mask = vec![false; d_sae];
        for &j in l {
            mask[j as usize] = true;
        }
        for i in 0..d_sae {
            if !mask[i] {
                continue;
            }
            n[i] += 1;
            for (j, _) in mask.iter().enumerate().skip(i + 1).filter(|(_, &m)| m) {
                *c.entry((i as u32, j as u32)).or_insert(0) += 1;
            }
        }
    }
    (n, c)
}

fn random_lists(seed: u64, tokens: usize, d_sae: usize, max_len: usize) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64::new(seed);
    (0..tokens)
        .map(|_| {
            let len = rng.below(max_len as u64 + 1) as usize;
            let mut set = BTreeSet::new();
            while set.len() < len {
                // Skewed towards low ids so that some pairs co-fire often.
                let a = rng.below(d_sae as u64);
                let b = rng.below(d_sae as u64);
                set.insert(a.min(b) as u32);
            }
            let mut v: Vec<u32> = set.into_iter().collect();
            // Unsorted input must be accepted.
            rng.shuffle(&mut v);
            v
        })
        .collect()
}

#[test]
fn counts_and_competition_are_exact_on_a_constructed_example() {
    let lists = vec![
        vec![0, 1, 2],
        vec![1, 0],
        vec![3, 2, 1],
        vec![0, 1, 3],
        vec![4],
        vec![],
    ];
    let idx = index_of(6, &lists);
    assert_eq!(idx.tokens(), 6);
    assert_eq!(idx.n(), &[3, 4, 2, 2, 1, 0]);
    let (pairs, stats) = idx.pairs(1, 0.0, &no_progress);
    let got: Vec<(u32, u32, u64, f64)> =
        pairs.iter().map(|p| (p.i, p.j, p.cofirings, p.c)).collect();
    assert_eq!(
        got,
        vec![
            (0, 1, 3, 1.0), // 3 / min(3, 4)
            (0, 2, 1, 0.5), // 1 / min(3, 2)
            (0, 3, 1, 0.5), // 1 / min(3, 2)
            (1, 2, 2, 1.0), // 2 / min(4, 2)
            (1, 3, 2, 1.0), // 2 / min(4, 2)
            (2, 3, 1, 0.5), // 1 / min(2, 2)
        ]
    );
    assert_eq!(stats.cofiring_pairs, 6);
    // 3 + 1 + 3 + 3 pairs within the tokens.
    assert_eq!(stats.increments, 10);
    assert_eq!(idx.cofirings(0, 1), 3);
    assert_eq!(idx.cofirings(1, 0), 3);
    assert_eq!(idx.cofirings(3, 3), 2);
    assert_eq!(idx.cofirings(4, 0), 0);
    // Latent 5 never fires, latent 4 fires alone.
    let st = idx.latent_stats();
    assert_eq!(st[5].fired, 0);
    assert_eq!(st[5].mean_activation, None);
    assert!((st[1].frequency - 4.0 / 6.0).abs() < 1e-15);
    assert_eq!(competition(3, 0, 5), 0.0);
}

#[test]
fn the_pass_matches_brute_force_and_filters_keep_exactly_the_right_pairs() {
    let (f, lists) = (40, random_lists(3, 600, 40, 9));
    let idx = index_of(f, &lists);
    let (n, dense) = dense_counts(f, &lists);
    assert_eq!(idx.n(), &n[..]);
    let (all, stats) = idx.pairs(1, 0.0, &no_progress);
    assert_eq!(stats.cofiring_pairs as usize, dense.len());
    let got: BTreeMap<(u32, u32), u64> = all.iter().map(|p| ((p.i, p.j), p.cofirings)).collect();
    assert_eq!(got, dense, "every co-firing pair with its exact count");
    for p in &all {
        let m = n[p.i as usize].min(n[p.j as usize]);
        assert_eq!(p.c, p.cofirings as f64 / m as f64);
    }
    // Sorted by (i, j).
    assert!(all.windows(2).all(|w| (w[0].i, w[0].j) < (w[1].i, w[1].j)));

    for (min_count, tau) in [(3u64, 0.0), (1, 0.3), (5, 0.2), (8, 0.3), (2, 1.0)] {
        let (kept, _) = idx.pairs(min_count, tau, &no_progress);
        let want: Vec<(u32, u32)> = dense
            .iter()
            .filter(|(&(i, j), &c)| {
                c >= min_count && c as f64 / n[i as usize].min(n[j as usize]) as f64 >= tau
            })
            .map(|(&k, _)| k)
            .collect();
        let got: Vec<(u32, u32)> = kept.iter().map(|p| (p.i, p.j)).collect();
        assert_eq!(got, want, "min_cofirings {min_count}, tau {tau}");
        assert!(
            (!want.is_empty() || tau == 1.0) && want.len() < dense.len(),
            "the case ({min_count}, {tau}) keeps {} of {} pairs: it tests nothing",
            want.len(),
            dense.len()
        );
    }
}

#[test]
fn a_ratio_equal_to_tau_is_kept() {
    // Latent 0 fires on 10 tokens, latent 1 on 20; they share 1, 2 or 3 tokens.
    for (shared, tau, kept) in [
        (1, 0.1, true),
        (2, 0.2, true),
        (3, 0.3, true),
        (2, 0.21, false),
    ] {
        let mut lists: Vec<Vec<u32>> = Vec::new();
        for t in 0..30 {
            let mut l = vec![];
            if t < 10 {
                l.push(0);
            }
            if t >= 10 - shared && t < 30 - shared {
                l.push(1);
            }
            lists.push(l);
        }
        let idx = index_of(2, &lists);
        assert_eq!(idx.n(), &[10, 20]);
        let (p, _) = idx.pairs(1, tau, &no_progress);
        assert_eq!(p.len() == 1, kept, "{shared} / 10 against tau {tau}");
    }
}

#[test]
fn the_pass_does_not_depend_on_the_number_of_threads() {
    let lists = random_lists(9, 2000, 300, 12);
    let idx = index_of(300, &lists);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| idx.pairs(2, 0.05, &no_progress));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(|| idx.pairs(2, 0.05, &no_progress));
    assert_eq!(one, many);
    let seen = std::sync::atomic::AtomicUsize::new(0);
    idx.pairs(2, 0.05, &|k| {
        seen.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(seen.into_inner(), 300, "progress covers every latent");
}

#[test]
fn codes_give_activation_statistics_and_only_positive_values_fire() {
    let codes = SparseCodes {
        d_sae: 4,
        indptr: vec![0, 3, 5, 6],
        // Token 0 lists its latents out of order; token 1 has a zero value.
        indices: vec![2, 0, 3, 1, 2, 2],
        values: vec![1.5, 2.0, 0.5, 0.0, 3.0, 0.25],
    };
    let mut c = FiringCollector::new(4);
    c.add_codes(&codes).unwrap();
    let idx = c.finish();
    assert_eq!(idx.n(), &[1, 0, 3, 1]);
    assert_eq!(idx.latents_of(0), &[0, 2, 3]);
    assert_eq!(idx.latents_of(1), &[2]);
    let st = idx.latent_stats();
    assert_eq!(st[1].fired, 0, "a zero activation is not a firing");
    assert!((st[2].mean_activation.unwrap() - (1.5 + 3.0 + 0.25) / 3.0).abs() < 1e-12);
    assert_eq!(st[2].max_activation, Some(3.0));
    assert_eq!(idx.activation(0, 0), 2.0);
    assert_eq!(idx.activation(3, 0), 0.5);
    assert_eq!(idx.activation(3, 1), 0.0);
    assert_eq!(idx.cofiring_tokens(0, 2), vec![(0, 2.0, 1.5)]);
    assert_eq!(idx.top_tokens(2, 2), vec![(1, 3.0), (0, 1.5)]);

    let mut bad = FiringCollector::new(4);
    let dup = SparseCodes {
        d_sae: 4,
        indptr: vec![0, 2],
        indices: vec![1, 1],
        values: vec![1.0, 1.0],
    };
    assert!(bad
        .add_codes(&dup)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    let mut bad = FiringCollector::new(4);
    let err = bad.add_lists(&[0, 1], &[7]).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn competitors_per_tau_count_each_latent_and_keep_the_max_cosine() {
    let pairs = vec![
        Pair {
            i: 0,
            j: 1,
            cofirings: 5,
            c: 0.5,
        },
        Pair {
            i: 0,
            j: 2,
            cofirings: 3,
            c: 0.1,
        },
        Pair {
            i: 1,
            j: 2,
            cofirings: 4,
            c: 0.2,
        },
    ];
    let cos = vec![-0.8, 0.3, 0.1];
    let c = competitors(4, &pairs, &cos, &[0.1, 0.2, 0.6]);
    assert_eq!(c[0].count, vec![2, 2, 2, 0]);
    assert_eq!(c[1].count, vec![1, 2, 1, 0]);
    assert_eq!(c[2].count, vec![0, 0, 0, 0]);
    assert_eq!(c[0].max_cos[0], Some(0.3));
    assert_eq!(c[0].max_abs_cos[0], Some(0.8));
    assert_eq!(c[1].max_cos[2], Some(0.1));
    assert_eq!(c[0].max_cos[3], None);
}

#[test]
fn max_cosines_match_the_naive_definition() {
    let (f, d) = (300, 7);
    let mut rng = SplitMix64::new(4);
    let w: Vec<f32> = (0..f * d).map(|_| rng.normal() as f32).collect();
    let u = unit_rows(&w, d);
    let (mx, mabs) = max_cosines(&u, d);
    for i in 0..f as u32 {
        let others = (0..f as u32)
            .filter(|&j| j != i)
            .map(|j| row_cos(&u, d, i, j));
        let want = others.clone().fold(f64::NEG_INFINITY, f64::max);
        let want_abs = others.map(f64::abs).fold(0.0, f64::max);
        assert!((mx[i as usize] - want).abs() < 1e-5, "{i}");
        assert!((mabs[i as usize] - want_abs).abs() < 1e-5, "{i}");
    }
    // Signed: an antiparallel pair alone gives -1 and |.| 1.
    let (mx, mabs) = max_cosines(&[1.0, 0.0, -1.0, 0.0], 2);
    assert_eq!((mx, mabs), (vec![-1.0, -1.0], vec![1.0, 1.0]));
}

#[test]
fn random_pairs_are_distinct_uniform_and_seeded() {
    let a = random_pairs(50, 300, 7);
    let b = random_pairs(50, 300, 7);
    let c = random_pairs(50, 300, 8);
    assert_eq!(a, b, "same seed, same pairs");
    assert_ne!(a, c, "another seed, other pairs");
    assert_eq!(a.len(), 300);
    let set: BTreeSet<(u32, u32)> = a.iter().copied().collect();
    assert_eq!(set.len(), 300, "distinct");
    assert!(a.iter().all(|&(i, j)| i < j && j < 50));
    // Asking for every pair (or more) gives the upper triangle in order.
    let all = random_pairs(6, 100, 1);
    let want: Vec<(u32, u32)> = (0..6)
        .flat_map(|i| (i + 1..6).map(move |j| (i, j)))
        .collect();
    assert_eq!(all, want);
    // Roughly uniform: each latent appears in about 2m/F pairs.
    let many = random_pairs(20, 150, 3);
    let mut per = [0usize; 20];
    for (i, j) in many {
        per[i as usize] += 1;
        per[j as usize] += 1;
    }
    assert!(per.iter().all(|&k| (5..=25).contains(&k)), "{per:?}");
    assert!(random_pairs(1, 10, 0).is_empty());
}

/// Synthetic top-k lists shaped like an SAE's: 256 clusters of 64 latents;
/// each token draws a cluster (Zipf), `k / 3` latents from it and the rest
/// from a Zipf over all latents.
fn synthetic_topk(tokens: usize, f: usize, k: usize, seed: u64) -> (Vec<usize>, Vec<u32>) {
    let zipf = |n: usize, s: f64| -> Vec<f64> {
        let mut cdf: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
        let mut acc = 0.0;
        for v in cdf.iter_mut() {
            acc += *v;
            *v = acc;
        }
        cdf.iter_mut().for_each(|v| *v /= acc);
        cdf
    };
    let clusters = f / 64;
    let cluster_cdf = zipf(clusters, 1.0);
    let latent_cdf = zipf(f, 0.8);
    // A fixed random relabelling so that frequent latents are spread out.
    let mut perm: Vec<u32> = (0..f as u32).collect();
    SplitMix64::new(seed ^ 1).shuffle(&mut perm);
    let mut rng = SplitMix64::new(seed);
    let draw = |cdf: &[f64], rng: &mut SplitMix64| {
        let u = rng.next_f64();
        cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
    };
    let mut indptr = vec![0usize];
    let mut indices = Vec::with_capacity(tokens * k);
    let mut row: Vec<u32> = Vec::with_capacity(k);
    for _ in 0..tokens {
        row.clear();
        let cl = draw(&cluster_cdf, &mut rng);
        while row.len() < k / 3 {
            let l = perm[cl * 64 + rng.below(64) as usize];
            if !row.contains(&l) {
                row.push(l);
            }
        }
        while row.len() < k {
            let l = perm[draw(&latent_cdf, &mut rng)];
            if !row.contains(&l) {
                row.push(l);
            }
        }
        indices.extend_from_slice(&row);
        indptr.push(indices.len());
    }
    (indptr, indices)
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[test]
#[ignore = "benchmark: prints figures for F 16384, k 32, 1M tokens"]
fn bench_cofiring_pass_f16384_k32_1m_tokens() {
    let (tokens, f, k) = (1usize << 20, 16384usize, 32usize);
    let t0 = std::time::Instant::now();
    let (indptr, indices) = synthetic_topk(tokens, f, k, 11);
    let gen_s = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let mut c = FiringCollector::new(f);
    // Streamed in batches of 64 Ki tokens, as the stage does.
    for lo_tok in (0..tokens).step_by(65536) {
        let hi_tok = (lo_tok + 65536).min(tokens);
        let base = indptr[lo_tok];
        let local: Vec<usize> = indptr[lo_tok..=hi_tok].iter().map(|&p| p - base).collect();
        c.add_lists(&local, &indices[base..indptr[hi_tok]]).unwrap();
    }
    let collected = c.tokens();
    let idx = c.finish();
    let collect_s = t0.elapsed().as_secs_f64();
    drop(indices);
    let (min_cofirings, tau_min) = (3u64, 0.05);
    let t0 = std::time::Instant::now();
    let (pairs, stats) = idx.pairs(min_cofirings, tau_min, &no_progress);
    let pass_s = t0.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    let estimate = idx.bytes() + pairs.len() * std::mem::size_of::<Pair>() + threads * 4 * f;
    let alive = idx.n().iter().filter(|&&n| n > 0).count();
    println!("co-firing pass, F {f}, k {k}, {collected} tokens ({threads} threads):");
    println!("  synthetic lists generated in {gen_s:.2} s");
    println!("  collect + latent-major index: {collect_s:.2} s");
    println!(
        "  pair pass: {pass_s:.2} s, {:.0} M counter increments ({:.0} M/s)",
        stats.increments as f64 / 1e6,
        stats.increments as f64 / 1e6 / pass_s
    );
    println!(
        "  distinct co-firing pairs: {} ({:.1}% of F(F-1)/2); kept (C >= {min_cofirings}, c >= {tau_min}): {}",
        stats.cofiring_pairs,
        100.0 * stats.cofiring_pairs as f64 / (f * (f - 1) / 2) as f64,
        pairs.len()
    );
    for tau in [0.1, 0.2, 0.5] {
        println!(
            "    kept at tau {tau}: {}",
            pairs.iter().filter(|p| p.c >= tau).count()
        );
    }
    println!("  alive latents: {alive}");
    println!(
        "  memory estimate: {:.0} MB (lists {:.0} MB, kept pairs {:.0} MB, counters {:.1} MB); bound on kept pairs F (k-1) / tau_min = {:.1} M",
        estimate as f64 / 1e6,
        idx.bytes() as f64 / 1e6,
        (pairs.len() * std::mem::size_of::<Pair>()) as f64 / 1e6,
        (threads * 4 * f) as f64 / 1e6,
        f as f64 * (k - 1) as f64 / tau_min / 1e6
    );
    // The stage's other F x F quantity: each decoder row's max cosine to
    // the others, in row blocks (d = 640, gemma-3-270m's d_model).
    let d = 640;
    let mut rng = SplitMix64::new(5);
    let w: Vec<f32> = (0..f * d).map(|_| rng.normal() as f32).collect();
    let t0 = std::time::Instant::now();
    let (mx, _) = max_cosines(&unit_rows(&w, d), d);
    println!(
        "  max decoder cosines, F {f} x d {d}: {:.2} s (mean max cos of random rows {:.3})",
        t0.elapsed().as_secs_f64(),
        mx.iter().sum::<f64>() / f as f64
    );
    if let Some(mb) = peak_rss_mb() {
        println!("  peak RSS of the test process (includes the generator's lists): {mb:.0} MB");
    }
    assert_eq!(collected, tokens);
}
