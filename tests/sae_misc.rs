//! Co-firing counts, validation, NaN handling, checkpoint/resume, SAELens IO
//! and scale folding.

use coact::rng::SplitMix64;
use coact::sae::cofire::{
    batch_pairs, batch_partners, batch_token_pairs, competition, token_pairs_len,
    CoFireAccumulator, PARTNER_BLOCK,
};
use coact::sae::{
    fold_scaling, geometric_median, load_saelens, norm_scaling_factor, save_saelens, DecoderBias,
    Ortho, Sae, SaeConfig, SaeKind, SaelensMeta, StepTimes, Trainer, TrainerConfig,
};

fn gauss(n: usize, d: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n * d).map(|_| scale * r.normal() as f32).collect()
}

fn csr(lists: &[&[u32]]) -> (Vec<usize>, Vec<u32>) {
    let mut indptr = vec![0];
    let mut idx = Vec::new();
    for l in lists {
        idx.extend_from_slice(l);
        indptr.push(idx.len());
    }
    (indptr, idx)
}

#[test]
fn cofire_counts_are_exact_and_tau_keeps_the_right_pairs() {
    // 6 latents, 5 tokens.
    let lists: [&[u32]; 5] = [&[0, 1, 2], &[1, 0], &[2, 3], &[0, 1, 3], &[5]];
    let (indptr, idx) = csr(&lists);
    let b = batch_pairs(6, &indptr, &idx, 0.0, true);
    assert_eq!(b.n, vec![3, 3, 2, 2, 0, 1]);
    let got: Vec<(u32, u32, u64)> = b.pairs.iter().map(|p| (p.i, p.j, p.count)).collect();
    // Hand count: (0,1) on t0,t1,t3 = 3; (0,2) t0; (0,3) t3; (1,2) t0; (1,3) t3; (2,3) t2.
    assert_eq!(
        got,
        vec![
            (0, 1, 3),
            (0, 2, 1),
            (0, 3, 1),
            (1, 2, 1),
            (1, 3, 1),
            (2, 3, 1)
        ]
    );
    let c: Vec<f32> = b.pairs.iter().map(|p| p.c).collect();
    // c = C / min(n_i, n_j): 3/3, 1/2, 1/2, 1/2, 1/2, 1/2.
    assert_eq!(c, vec![1.0, 0.5, 0.5, 0.5, 0.5, 0.5]);
    assert_eq!(competition(1, 0, 4), 0.0);
    // tau 0.6 keeps only (0, 1); tau 0.5 keeps all six (>= is inclusive).
    let kept: Vec<(u32, u32)> = batch_pairs(6, &indptr, &idx, 0.6, true)
        .pairs
        .iter()
        .map(|p| (p.i, p.j))
        .collect();
    assert_eq!(kept, vec![(0, 1)]);
    assert_eq!(batch_pairs(6, &indptr, &idx, 0.5, true).pairs.len(), 6);

    // Streaming over two halves gives the same totals as one batch.
    let mut acc = CoFireAccumulator::new(6);
    let (p1, i1) = csr(&lists[..2]);
    let (p2, i2) = csr(&lists[2..]);
    acc.add(&p1, &i1).unwrap();
    acc.add(&p2, &i2).unwrap();
    assert_eq!(acc.tokens(), 5);
    assert_eq!(acc.n(), &[3, 3, 2, 2, 0, 1]);
    assert_eq!(acc.count(1, 0), 3);
    assert_eq!(acc.count(2, 3), 1);
    assert_eq!(acc.count(4, 5), 0);
    assert_eq!(acc.count(2, 2), 2);
    assert_eq!(acc.pairs(0.0), b.pairs);
    assert!(
        acc.add(&[0, 2], &[1, 1]).is_err(),
        "a repeated latent in one token is rejected"
    );
    assert!(acc.add(&[0, 1], &[9]).is_err());
}

#[test]
fn cofire_matches_dense_count_on_random_lists() {
    let (f, n, k) = (40usize, 300usize, 5usize);
    let mut r = SplitMix64::new(11);
    let mut indptr = vec![0];
    let mut idx = Vec::new();
    for _ in 0..n {
        let mut l: Vec<u32> = Vec::new();
        while l.len() < k {
            let j = r.below(f as u64) as u32;
            if !l.contains(&j) {
                l.push(j);
            }
        }
        idx.extend(l);
        indptr.push(idx.len());
    }
    let mut dense = vec![0u64; f * f];
    for t in 0..n {
        for &a in &idx[indptr[t]..indptr[t + 1]] {
            for &b in &idx[indptr[t]..indptr[t + 1]] {
                dense[a as usize * f + b as usize] += 1;
            }
        }
    }
    let tau = 0.3;
    let b = batch_pairs(f, &indptr, &idx, tau, true);
    let mut want = Vec::new();
    for i in 0..f {
        assert_eq!(b.n[i] as u64, dense[i * f + i]);
        for j in i + 1..f {
            let c = dense[i * f + j];
            let cc = competition(c, dense[i * f + i], dense[j * f + j]);
            if c > 0 && cc >= tau {
                want.push((i as u32, j as u32, c));
            }
        }
    }
    let got: Vec<(u32, u32, u64)> = b.pairs.iter().map(|p| (p.i, p.j, p.count)).collect();
    assert_eq!(got, want);
    assert!(!want.is_empty());
}

#[test]
fn partner_lists_hold_every_competing_pair_in_both_rows() {
    // Latents fire 1 to ~20 times, as in a wide SAE's batch.
    let (f, n, k) = (300usize, 200usize, 7usize);
    let mut r = SplitMix64::new(12);
    let mut indptr = vec![0];
    let mut idx = Vec::new();
    for _ in 0..n {
        let mut l: Vec<u32> = Vec::new();
        while l.len() < k {
            // Skewed: low ids fire far more often.
            let u = r.next_f64();
            let j = (u * u * f as f64) as u32;
            if !l.contains(&j) {
                l.push(j);
            }
        }
        idx.extend(l);
        indptr.push(idx.len());
    }
    for tau in [0.0f32, 0.1, 0.5] {
        let want = batch_pairs(f, &indptr, &idx, tau, true);
        let got = batch_partners(f, &indptr, &idx, tau);
        assert_eq!(got.n, want.n);
        assert_eq!(got.pairs, want.pairs.len());
        let c_sum: f64 = want.pairs.iter().map(|p| p.c as f64).sum();
        assert!(
            (got.c_sum - c_sum).abs() <= 1e-9 * c_sum,
            "{} vs {c_sum}",
            got.c_sum
        );
        // Every (row, partner, c), as a sorted list, against both orientations.
        let mut listed = Vec::new();
        let mut seen = vec![false; f];
        for b in &got.blocks {
            assert!(b.rows.len() <= PARTNER_BLOCK);
            assert_eq!(b.offsets.len(), b.rows.len() + 1);
            for (q, &i) in b.rows.iter().enumerate() {
                assert!(!seen[i as usize], "row {i} listed twice");
                seen[i as usize] = true;
                let (lo, hi) = (b.offsets[q], b.offsets[q + 1]);
                assert!(hi > lo, "row {i} listed without partners");
                for p in lo..hi {
                    listed.push((i, b.partners[p], b.c[p]));
                }
            }
        }
        listed.sort_by_key(|a| (a.0, a.1));
        let mut expect = Vec::new();
        for p in &want.pairs {
            expect.push((p.i, p.j, p.c));
            expect.push((p.j, p.i, p.c));
        }
        expect.sort_by_key(|a| (a.0, a.1));
        assert_eq!(listed, expect, "tau {tau}");
        assert!(!expect.is_empty());

        // The same pairs by first co-firing token.
        let tp = batch_token_pairs(f, &indptr, &idx, tau);
        assert_eq!(tp.n, want.n);
        assert_eq!(tp.pairs, want.pairs.len());
        assert!((tp.c_sum - c_sum).abs() <= 1e-9 * c_sum);
        assert_eq!(tp.c.len(), token_pairs_len(&indptr));
        let mut first = std::collections::HashMap::new();
        for t in 0..n {
            let l = &idx[indptr[t]..indptr[t + 1]];
            for &a in l {
                for &b in l {
                    first.entry((a, b)).or_insert(t);
                }
            }
        }
        let mut placed = Vec::new();
        for t in 0..n {
            let l = &idx[indptr[t]..indptr[t + 1]];
            let k = l.len();
            for p in 0..k {
                for q in 0..k {
                    let c = tp.c[tp.base[t] + p * k + q];
                    if c != 0.0 {
                        assert_eq!(first[&(l[p], l[q])], t, "pair placed after its first token");
                        placed.push((l[p], l[q], c));
                    }
                }
            }
        }
        placed.sort_by_key(|a| (a.0, a.1));
        assert_eq!(placed, expect, "tau {tau}");
    }
}

#[test]
fn token_by_token_penalty_is_the_same_whatever_the_thread_count() {
    use coact::sae::cofire::guided_penalty;
    let (d, f, n, k) = (37usize, 500usize, 200usize, 9usize);
    let mut r = SplitMix64::new(31);
    let w = gauss(f, d, 32, 1.0);
    let mut indptr = vec![0];
    let mut idx = Vec::new();
    for _ in 0..n {
        let mut l: Vec<u32> = Vec::new();
        while l.len() < k {
            let u = r.next_f64();
            let j = (u * u * f as f64) as u32;
            if !l.contains(&j) {
                l.push(j);
            }
        }
        idx.extend(l);
        indptr.push(idx.len());
    }
    let go = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| guided_penalty(&w, d, &indptr, &idx, 0.1, true).unwrap())
    };
    let one = go(1);
    assert!(one.pairs > 1000 && one.value > 0.0);
    assert_eq!(one, go(2));
    assert_eq!(one, go(3));
}

fn topk_cfg(d: usize, f: usize, k: usize) -> SaeConfig {
    SaeConfig {
        d_in: d,
        d_sae: f,
        kind: SaeKind::TopK { k },
    }
}

#[test]
fn invalid_settings_are_errors_naming_the_field() {
    let x = gauss(8, 4, 1, 1.0);
    let cfg = TrainerConfig::new(10, 8);
    let e = Trainer::new(cfg.clone(), topk_cfg(4, 8, 8), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("k must be < d_sae"), "{e}");
    let e = Trainer::new(cfg.clone(), topk_cfg(4, 8, 9), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("k "), "{e}");
    let mut c = cfg.clone();
    c.ortho = Ortho::Guided {
        lambda: -0.1,
        tau: 0.1,
    };
    let e = Trainer::new(c, topk_cfg(4, 8, 2), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("ortho.lambda"), "{e}");
    let mut c = cfg.clone();
    c.ortho = Ortho::Uniform {
        lambda: -1.0,
        pairs: 4,
    };
    assert!(Trainer::new(c, topk_cfg(4, 8, 2), &x)
        .err()
        .unwrap()
        .to_string()
        .contains("ortho.lambda"));
    for tau in [-0.01f32, 1.5] {
        let mut c = cfg.clone();
        c.ortho = Ortho::Guided { lambda: 0.1, tau };
        let e = Trainer::new(c, topk_cfg(4, 8, 2), &x)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ortho.tau"), "{e}");
    }
    let e = Trainer::new(
        cfg.clone(),
        SaeConfig {
            d_in: 4,
            d_sae: 8,
            kind: SaeKind::ReluL1 { l1_coeff: -1.0 },
        },
        &x,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("l1_coeff"), "{e}");
    let mut c = cfg.clone();
    c.decay_frac = 1.5;
    assert!(Trainer::new(c, topk_cfg(4, 8, 2), &x)
        .err()
        .unwrap()
        .to_string()
        .contains("decay_frac"));
}

#[test]
fn nan_input_is_an_error_and_leaves_the_weights_alone() {
    let d = 8;
    let x = gauss(64, d, 2, 1.0);
    let mut cfg = TrainerConfig::new(10, 32);
    cfg.ortho = Ortho::Uniform {
        lambda: 0.1,
        pairs: 16,
    };
    let mut t = Trainer::new(cfg, topk_cfg(d, 16, 3), &x).unwrap();
    t.step(&x[..32 * d]).unwrap();
    let before = t.sae().clone();
    let since = t.since_fired().to_vec();
    let mut bad = x[32 * d..].to_vec();
    bad[17] = f32::NAN;
    let e = t.step(&bad).err().unwrap().to_string();
    assert!(e.contains("NaN"), "{e}");
    bad[17] = f32::INFINITY;
    assert!(t.step(&bad).is_err());
    assert_eq!(t.sae(), &before);
    assert_eq!(t.since_fired(), &since[..]);
    assert_eq!(t.steps_done(), 1);
}

#[test]
fn step_times_cover_the_step_phase_by_phase() {
    let (d, bs) = (64, 512);
    let x = gauss(2 * bs, d, 4, 1.0);
    let mut cfg = TrainerConfig::new(10, bs);
    cfg.ortho = Ortho::Guided {
        lambda: 0.1,
        tau: 0.0,
    };
    let mut t = Trainer::new(cfg, topk_cfg(d, 512, 8), &x).unwrap();
    assert_eq!(t.last_step_times(), StepTimes::default());
    let t0 = std::time::Instant::now();
    let st = t.step(&x[..bs * d]).unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let times = t.last_step_times();
    assert!(st.competing_pairs > 0);
    for (name, v) in [
        ("encode", times.encode),
        ("residuals", times.residuals),
        ("gradients", times.gradients),
        ("ortho", times.ortho),
        ("update", times.update),
    ] {
        assert!(v > 0.0, "{name}: {times:?}");
    }
    // The phases tile the step: together they are its wall time, less only
    // the few instructions between them.
    assert!(times.total() <= wall, "{times:?} against {wall} s");
    assert!(times.total() >= 0.8 * wall, "{times:?} against {wall} s");
    // A refused step leaves the last step's figures.
    let mut bad = x[bs * d..].to_vec();
    bad[3] = f32::NAN;
    assert!(t.step(&bad).is_err());
    assert_eq!(t.last_step_times(), times);
}

fn run(t: &mut Trainer, data: &[f32], d: usize, bs: usize, from: usize, to: usize) {
    for s in from..to {
        let n_batches = data.len() / (bs * d);
        let b = s % n_batches;
        t.step(&data[b * bs * d..(b + 1) * bs * d]).unwrap();
    }
}

#[test]
fn checkpoint_then_resume_is_bit_identical() {
    let (d, f, bs) = (16, 48, 64);
    let data = gauss(bs * 6, d, 3, 1.0);
    for ortho in [
        Ortho::Uniform {
            lambda: 0.05,
            pairs: 64,
        },
        Ortho::Guided {
            lambda: 0.1,
            tau: 0.1,
        },
    ] {
        let mut cfg = TrainerConfig::new(20, bs);
        cfg.ortho = ortho;
        cfg.seed = 7;
        cfg.dead_after_tokens = 3 * bs as u64; // exercise AuxK and the counters
        let mut a = Trainer::new(cfg.clone(), topk_cfg(d, f, 4), &data).unwrap();
        run(&mut a, &data, d, bs, 0, 20);

        let mut b = Trainer::new(cfg, topk_cfg(d, f, 4), &data).unwrap();
        run(&mut b, &data, d, bs, 0, 9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        b.save_checkpoint(&path).unwrap();
        drop(b);
        let mut c = Trainer::load_checkpoint(&path).unwrap();
        assert_eq!(c.steps_done(), 9);
        run(&mut c, &data, d, bs, 9, 20);
        assert_eq!(a.sae(), c.sae(), "resumed weights differ");
        assert_eq!(a.since_fired(), c.since_fired());
    }
}

#[test]
fn a_fixed_decoder_bias_stays_at_its_init_and_the_rest_still_trains() {
    let (d, f, bs) = (16, 48, 64);
    // Off-centre data, so a trained b_dec has somewhere to go.
    let mut data = gauss(bs * 4, d, 11, 1.0);
    data.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v += (i % d) as f32 * 0.5);
    let train = |b_dec: DecoderBias| {
        let mut cfg = TrainerConfig::new(12, bs);
        cfg.b_dec = b_dec;
        cfg.dead_after_tokens = 2 * bs as u64;
        let mut t = Trainer::new(cfg, topk_cfg(d, f, 4), &data).unwrap();
        let init = t.sae().clone();
        run(&mut t, &data, d, bs, 0, 12);
        (init, t)
    };
    let (init, fixed) = train(DecoderBias::Fixed);
    assert_eq!(fixed.sae().b_dec, init.b_dec, "a fixed b_dec moved");
    assert_eq!(init.b_dec, geometric_median(&data, d, 100, 1e-5).unwrap());
    assert_ne!(fixed.sae().w_dec, init.w_dec);
    assert_ne!(fixed.sae().b_enc, init.b_enc);
    let (init_t, trained) = train(DecoderBias::Trained);
    assert_eq!(init_t.b_dec, init.b_dec);
    assert_ne!(
        trained.sae().b_dec,
        init.b_dec,
        "a trained b_dec did not move"
    );
    // The setting survives a checkpoint, so a resumed run keeps it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    fixed.save_checkpoint(&path).unwrap();
    let back = Trainer::load_checkpoint(&path).unwrap();
    assert_eq!(back.config().b_dec, DecoderBias::Fixed);
    assert_eq!(TrainerConfig::new(1, 1).b_dec, DecoderBias::Trained);
}

#[test]
fn same_seed_same_run_whatever_the_thread_count() {
    let (d, f, bs) = (16, 64, 300);
    let data = gauss(bs * 3, d, 4, 1.0);
    let mut cfg = TrainerConfig::new(6, bs);
    cfg.ortho = Ortho::Guided {
        lambda: 0.1,
        tau: 0.0,
    };
    let go = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut t = Trainer::new(cfg.clone(), topk_cfg(d, f, 5), &data).unwrap();
            run(&mut t, &data, d, bs, 0, 6);
            t.into_sae()
        })
    };
    let one = go(1);
    assert_eq!(one, go(3));
    assert_eq!(one, go(2));
}

#[test]
fn saelens_round_trip_and_cfg_fields() {
    let (d, f) = (8, 20);
    let mut sae = Sae::init(topk_cfg(d, f, 4), 3).unwrap();
    sae.b_enc
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as f32 * 0.01);
    sae.b_dec
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = -(i as f32) * 0.1);
    let meta = SaelensMeta {
        model_name: "gemma-3-270m".into(),
        hook_name: "blocks.6.hook_resid_post".into(),
        hook_layer: Some(6),
        context_size: 128,
        prepend_bos: true,
        dataset_path: "sotu".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&sae, dir.path(), &meta).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cfg.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["architecture"], "topk");
    assert_eq!(cfg["k"], 4);
    assert_eq!(cfg["d_in"], 8);
    assert_eq!(cfg["d_sae"], 20);
    assert_eq!(cfg["dtype"], "float32");
    assert_eq!(cfg["normalize_activations"], "none");
    assert_eq!(cfg["apply_b_dec_to_input"], true);
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.6.hook_resid_post");
    assert_eq!(cfg["metadata"]["context_size"], 128);
    let (back, meta2) = load_saelens(dir.path()).unwrap();
    assert_eq!(back, sae);
    assert_eq!(meta2, meta);
    // W_enc is stored [d_in, d_sae]: entry (r, j) is w_enc_t[j, r].
    let bytes = std::fs::read(dir.path().join("sae_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("W_enc").unwrap();
    assert_eq!(w.shape(), &[d, f]);
    let (r, j) = (3, 17);
    let off = (r * f + j) * 4;
    let v = f32::from_le_bytes(w.data()[off..off + 4].try_into().unwrap());
    assert_eq!(v, sae.w_enc_t[j * d + r]);
    assert_eq!(st.tensor("W_dec").unwrap().shape(), &[f, d]);

    // The "standard" architecture round-trips too.
    let relu = Sae::init(
        SaeConfig {
            d_in: d,
            d_sae: f,
            kind: SaeKind::ReluL1 { l1_coeff: 0.5 },
        },
        1,
    )
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    save_saelens(&relu, dir2.path(), &meta).unwrap();
    assert_eq!(load_saelens(dir2.path()).unwrap().0, relu);
}

#[test]
fn folding_the_scale_preserves_reconstructions() {
    let (d, f, bs) = (16, 40, 128);
    let raw = gauss(bs * 4, d, 5, 37.0);
    let s = norm_scaling_factor(&raw, d).unwrap();
    let scaled: Vec<f32> = raw.iter().map(|v| v * s).collect();
    let msq: f64 = scaled.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / (bs * 4) as f64;
    assert!((msq - 1.0).abs() < 1e-4, "mean squared norm {msq}");
    for kind in [SaeKind::TopK { k: 4 }, SaeKind::ReluL1 { l1_coeff: 0.01 }] {
        let mut t = Trainer::new(
            TrainerConfig::new(8, bs),
            SaeConfig {
                d_in: d,
                d_sae: f,
                kind,
            },
            &scaled,
        )
        .unwrap();
        run(&mut t, &scaled, d, bs, 0, 8);
        let trained = t.into_sae();
        let want: Vec<f32> = trained
            .reconstruct(&scaled)
            .unwrap()
            .iter()
            .map(|v| v / s)
            .collect();
        let mut folded = trained.clone();
        fold_scaling(&mut folded, s).unwrap();
        assert_eq!(folded.w_dec, trained.w_dec);
        let got = folded.reconstruct(&raw).unwrap();
        let scale = raw.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
        }
        // Latents scale by 1 / s.
        let zs = trained.encode(&scaled, bs * 4).unwrap();
        let zr = folded.encode(&raw, bs * 4).unwrap();
        assert_eq!(zs.indices, zr.indices);
        let zmax = zr.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in zs.values.iter().zip(&zr.values) {
            assert!((a / s - b).abs() <= 1e-5 * zmax, "{} vs {b}", a / s);
        }
    }
}

#[test]
fn encode_topk_and_decode_agree_with_a_dense_reference() {
    let (d, f, k, n) = (12, 30, 5, 50);
    let mut sae = Sae::init(topk_cfg(d, f, k), 8).unwrap();
    let mut r = SplitMix64::new(2);
    sae.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.3 * r.normal() as f32);
    sae.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.3 * r.normal() as f32);
    let x = gauss(n, d, 6, 1.0);
    let (idx, val) = sae.encode_topk(&x, n).unwrap();
    assert_eq!(idx.len(), n * k);
    let mut xhat_ref = vec![0.0f32; n * d];
    for t in 0..n {
        let mut pre: Vec<(f32, u32)> = (0..f)
            .map(|j| {
                let mut s = sae.b_enc[j];
                for q in 0..d {
                    s += (x[t * d + q] - sae.b_dec[q]) * sae.w_enc_t[j * d + q];
                }
                (s, j as u32)
            })
            .collect();
        pre.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut top: Vec<(u32, f32)> = pre[..k].iter().map(|&(v, j)| (j, v.max(0.0))).collect();
        top.sort_by_key(|e| e.0);
        for (m, &(j, v)) in top.iter().enumerate() {
            assert_eq!(idx[t * k + m], j);
            assert!((val[t * k + m] - v).abs() < 1e-5);
        }
        for q in 0..d {
            xhat_ref[t * d + q] = sae.b_dec[q]
                + top
                    .iter()
                    .map(|&(j, v)| v * sae.w_dec[j as usize * d + q])
                    .sum::<f32>();
        }
    }
    let xhat = sae.reconstruct(&x).unwrap();
    for (a, b) in xhat.iter().zip(&xhat_ref) {
        assert!((a - b).abs() < 1e-5);
    }
    assert!(Sae::init(
        SaeConfig {
            d_in: d,
            d_sae: f,
            kind: SaeKind::ReluL1 { l1_coeff: 0.1 }
        },
        0
    )
    .unwrap()
    .encode_topk(&x, n)
    .is_err());
}

#[test]
fn geometric_median_resists_outliers() {
    // 9 points near (1, 2) and one far outlier: the median stays near (1, 2).
    let mut p = vec![];
    for i in 0..9 {
        p.push(1.0 + 0.01 * i as f32);
        p.push(2.0 - 0.01 * i as f32);
    }
    p.extend([1000.0, -1000.0]);
    let m = geometric_median(&p, 2, 200, 1e-9).unwrap();
    assert!(
        (m[0] - 1.04).abs() < 0.05 && (m[1] - 1.96).abs() < 0.05,
        "{m:?}"
    );
}

#[test]
fn architecture_tags_name_the_kind_in_config_and_saelens_terms() {
    use coact::sae::Architecture;
    let topk = SaeKind::TopK { k: 3 };
    let relu = SaeKind::ReluL1 { l1_coeff: 0.5 };
    assert_eq!(topk.architecture(), Architecture::TopK);
    assert_eq!(relu.architecture(), Architecture::ReluL1);
    // The names pipeline.yaml and the report use, and serde's (cache keys).
    for (a, name, saelens) in [
        (Architecture::TopK, "topk", "topk"),
        (Architecture::ReluL1, "relu_l1", "standard"),
        (Architecture::JumpRelu, "jumprelu", "jumprelu"),
    ] {
        assert_eq!(a.name(), name);
        assert_eq!(a.to_string(), name);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{name}\""));
        assert_eq!(
            serde_json::from_str::<Architecture>(&format!("\"{name}\"")).unwrap(),
            a
        );
        assert_eq!(Architecture::from_name(name), Some(a));
        assert_eq!(a.saelens(), saelens);
        assert_eq!(Architecture::from_saelens(saelens), Some(a));
    }
    assert!(serde_json::from_str::<Architecture>("\"TopK\"").is_err());
    assert_eq!(Architecture::from_name("standard"), None);
    // The batch kinds are saved in their inference form, as SAELens does.
    assert_eq!(Architecture::BatchTopK.saelens(), "jumprelu");
    assert_eq!(Architecture::Matryoshka.saelens(), "jumprelu");
    assert_eq!(Architecture::from_saelens("gated"), None);

    // save_saelens writes the SAELens string, load_saelens reads it back.
    for kind in [topk, relu] {
        let sae = Sae::init(
            SaeConfig {
                d_in: 4,
                d_sae: 8,
                kind: kind.clone(),
            },
            1,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_saelens(&sae, dir.path(), &SaelensMeta::default()).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(coact::sae::CFG_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["architecture"], kind.architecture().saelens());
        let (back, _) = load_saelens(dir.path()).unwrap();
        assert_eq!(back.cfg.kind, kind);
    }
}
