//! Speed of the SAE step (ignored by default):
//! `cargo test -p coact --test sae_speed -- --ignored --nocapture`.

use std::time::Instant;

use coact::linalg::Compute;
use coact::rng::SplitMix64;
use coact::sae::{Ortho, Sae, SaeConfig, SaeKind, StepTimes, Trainer, TrainerConfig};

const D: usize = 640;

/// Tokens per step: 4096, or SAE_SPEED_B (the default study trains at 2048).
fn batch() -> usize {
    std::env::var("SAE_SPEED_B")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096)
}

/// Sparse-ish structured activations: each token mixes 16 of 2048 fixed
/// random directions, plus noise, scaled to unit mean squared norm.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    let dirs: Vec<f32> = (0..2048 * D)
        .map(|_| r.normal() as f32 / (D as f32).sqrt())
        .collect();
    let mut x = vec![0.0f32; n * D];
    for t in 0..n {
        let row = &mut x[t * D..(t + 1) * D];
        for _ in 0..16 {
            let f = r.below(2048) as usize;
            let c = r.next_f64() as f32;
            row.iter_mut()
                .zip(&dirs[f * D..(f + 1) * D])
                .for_each(|(a, b)| *a += c * b);
        }
        row.iter_mut()
            .for_each(|a| *a = (*a + 0.05 * r.normal() as f32 / (D as f32).sqrt()) * 0.5);
    }
    x
}

/// Mean seconds per step over `steps` steps after one untimed step; with
/// `phases`, each step's phase times are added to it.
fn time_steps(t: &mut Trainer, x: &[f32], steps: usize, mut phases: Option<&mut PhaseSums>) -> f64 {
    t.step(x).unwrap();
    let t0 = Instant::now();
    for _ in 0..steps {
        t.step(x).unwrap();
        if let Some(p) = phases.as_deref_mut() {
            p.add(t.last_step_times());
        }
    }
    t0.elapsed().as_secs_f64() / steps as f64
}

/// Running sum of the trainer's phase times over the timed steps.
#[derive(Default)]
struct PhaseSums {
    sum: StepTimes,
    steps: usize,
}

impl PhaseSums {
    fn add(&mut self, t: StepTimes) {
        self.sum += t;
        self.steps += 1;
    }

    /// Mean ms per phase, each with its share of the step.
    fn line(&self) -> String {
        let n = self.steps.max(1) as f64;
        let s = &self.sum;
        let total = s.total();
        let part = |name: &str, v: f64| {
            format!("{name} {:.1} ms ({:.0}%)", v / n * 1e3, 100.0 * v / total)
        };
        [
            part("encode", s.encode),
            part("residuals", s.residuals),
            part("gradients", s.gradients),
            part("ortho", s.ortho),
            part("update", s.update),
        ]
        .join(", ")
    }
}

#[test]
#[ignore]
fn step_speed() {
    let info = coact::linalg::backend_info();
    println!(
        "threads: {} | cpu: {} | flags: {}",
        rayon::current_num_threads(),
        info.cpu.model,
        info.cpu.flags()
    );
    let b = batch();
    let x = data(b, 1);
    let steps: usize = std::env::var("SAE_SPEED_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let fs: Vec<usize> = match std::env::var("SAE_SPEED_F") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => vec![4096, 16384],
    };
    let ks: Vec<usize> = match std::env::var("SAE_SPEED_K") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => vec![32, 64],
    };
    // SAE_SPEED_TAU0=0 skips the tau 0 run.
    let tau0 = std::env::var("SAE_SPEED_TAU0").map_or(true, |v| v != "0");
    // SAE_SPEED_AUXK=1 counts every latent as dead, so AuxK (k_aux = d_in / 2)
    // runs every step, as in a study where most latents die early.
    let auxk = std::env::var("SAE_SPEED_AUXK").is_ok_and(|v| v == "1");
    let mut modes = vec![Compute::F32];
    if info.cpu.has_bf16() {
        modes.push(Compute::Bf16);
    }
    for &f in &fs {
        for &k in &ks {
            for &compute in &modes {
                let sae_cfg = SaeConfig {
                    d_in: D,
                    d_sae: f,
                    kind: SaeKind::TopK { k },
                };
                let mut cfg = TrainerConfig::new(1000, b);
                cfg.compute = compute;
                if auxk {
                    cfg.dead_after_tokens = 0;
                }
                let mut plain = Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                let mut plain_phases = PhaseSums::default();
                let tp = time_steps(&mut plain, &x, steps, Some(&mut plain_phases));
                cfg.ortho = Ortho::Guided {
                    lambda: 0.1,
                    tau: 0.1,
                };
                let mut guided = Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                let mut guided_phases = PhaseSums::default();
                let tg = time_steps(&mut guided, &x, steps, Some(&mut guided_phases));
                let st = guided.step(&x).unwrap();
                // Plain again: the guided extra is measured against the mean of two.
                let tp2 = time_steps(&mut plain, &x, steps, Some(&mut plain_phases));
                let tp = 0.5 * (tp + tp2);
                println!(
                    "F {f:5} k {k:2} B {b}{} {compute:4}: plain {:7.1} ms/step ({:7.1} then {:7.1}) {:8.0} tok/s | guided tau 0.1 {:7.1} ms, +{:6.1} ms ({:.3}x, {} pairs)",
                    if auxk { " AuxK" } else { "" },
                    tp * 1e3,
                    (2.0 * tp - tp2) * 1e3,
                    tp2 * 1e3,
                    b as f64 / tp,
                    tg * 1e3,
                    (tg - tp) * 1e3,
                    tg / tp,
                    st.competing_pairs,
                );
                println!("      plain per phase: {}", plain_phases.line());
                println!("      guided per phase: {}", guided_phases.line());
                if tau0 {
                    cfg.ortho = Ortho::Guided {
                        lambda: 0.1,
                        tau: 0.0,
                    };
                    let mut guided0 =
                        Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                    let tg0 = time_steps(&mut guided0, &x, steps, None);
                    let st0 = guided0.step(&x).unwrap();
                    println!(
                        "      guided tau 0 {:7.1} ms, +{:6.1} ms ({:.3}x, {} pairs)",
                        tg0 * 1e3,
                        (tg0 - tp) * 1e3,
                        tg0 / tp,
                        st0.competing_pairs
                    );
                }
            }
        }
    }
}

#[test]
#[ignore]
fn encoder_matmul_vs_candle() {
    use candle_core::{Device, Tensor};
    let b = batch();
    let x = data(b, 2);
    for f in [4096usize, 16384] {
        let sae = Sae::init(
            SaeConfig {
                d_in: D,
                d_sae: f,
                kind: SaeKind::TopK { k: 32 },
            },
            0,
        )
        .unwrap();
        let flops = 2.0 * b as f64 * D as f64 * f as f64;
        sae.pre_activations(&x, b).unwrap();
        let reps = 3;
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(sae.pre_activations(&x, b).unwrap());
        }
        let ours = t0.elapsed().as_secs_f64() / reps as f64;
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(sae.encode(&x, b).unwrap());
        }
        let enc = t0.elapsed().as_secs_f64() / reps as f64;
        let xt = Tensor::from_slice(&x, (b, D), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&sae.w_enc(), (D, f), &Device::Cpu).unwrap();
        xt.matmul(&wt).unwrap();
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(xt.matmul(&wt).unwrap());
        }
        let candle = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "encoder [{b} x {D}] x [{D} x {f}]: coact chunked gemm {:.1} ms = {:.1} GFLOP/s; with top-k {:.1} ms; candle matmul {:.1} ms = {:.1} GFLOP/s",
            ours * 1e3,
            flops / ours / 1e9,
            enc * 1e3,
            candle * 1e3,
            flops / candle / 1e9
        );
    }
}

/// The co-firing pass alone on a fresh SAE's codes:
/// `cargo test -p coact --test sae_speed -- --ignored --nocapture cofire_speed`.
#[test]
#[ignore]
fn cofire_speed() {
    use coact::sae::cofire::{batch_pairs, batch_partners, batch_token_pairs, guided_penalty};
    let b = batch();
    let x = data(b, 1);
    let list = |var: &str| -> Vec<usize> {
        std::env::var(var).map_or(vec![], |v| {
            v.split(',').map(|s| s.trim().parse().unwrap()).collect()
        })
    };
    let fs = Some(list("SAE_SPEED_F"))
        .filter(|v| !v.is_empty())
        .unwrap_or(vec![4096, 16384]);
    let ks = Some(list("SAE_SPEED_K"))
        .filter(|v| !v.is_empty())
        .unwrap_or(vec![32, 64]);
    for &f in &fs {
        for &k in &ks {
            let sae = Sae::init(
                SaeConfig {
                    d_in: D,
                    d_sae: f,
                    kind: SaeKind::TopK { k },
                },
                0,
            )
            .unwrap();
            let codes = sae.encode(&x, b).unwrap();
            let reps = 3;
            let time = |g: &mut dyn FnMut()| {
                g();
                let t0 = Instant::now();
                for _ in 0..reps {
                    g();
                }
                t0.elapsed().as_secs_f64() / reps as f64 * 1e3
            };
            let (ind, idx) = (&codes.indptr, &codes.indices);
            let mut pairs = 0;
            let t_tok = time(&mut || pairs = batch_token_pairs(f, ind, idx, 0.1).pairs);
            let t_full = time(&mut || {
                std::hint::black_box(guided_penalty(&sae.w_dec, D, ind, idx, 0.1, false).unwrap());
            });
            let t_part = time(&mut || {
                std::hint::black_box(batch_partners(f, ind, idx, 0.1));
            });
            let t_pairs = time(&mut || {
                std::hint::black_box(batch_pairs(f, ind, idx, 0.1, false));
            });
            println!(
                "F {f:5} k {k:2}: guided penalty + gradient {t_full:6.1} ms (batch_token_pairs {t_tok:6.1} ms); batch_partners {t_part:6.1} ms, batch_pairs {t_pairs:6.1} ms; {pairs} pairs"
            );
        }
    }
}

/// The step on real activations, where AuxK sees the latents that really
/// die: `SAE_SPEED_DATA` is a raw little-endian f32 file of rows of 640
/// values (scaled to unit mean squared norm, shuffled), for example rows of
/// `data/extract/<key>/train-*.parquet`. Trains TopK (or, with
/// `SAE_SPEED_KIND=batchtopk`, BatchTopK; with `SAE_SPEED_ORTHO=guided` or
/// `ortsae`, that penalty as the default study sets it) at F 4096, k 32,
/// B 2048 (the default study) with dead after 48 Ki tokens, and times every
/// step after `SAE_SPEED_WARMUP` (100) steps, once AuxK is running.
/// `cargo test -p coact --test sae_speed -- --ignored --nocapture real_step_speed`
#[test]
#[ignore]
fn real_step_speed() {
    let Ok(path) = std::env::var("SAE_SPEED_DATA") else {
        println!("SAE_SPEED_DATA not set: real_step_speed skipped");
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let b = 2048;
    let steps = x.len() / D / b;
    let warm: usize = std::env::var("SAE_SPEED_WARMUP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    assert!(
        steps > warm,
        "{path}: {steps} batches of {b}, need > {warm}"
    );
    let ortho = match std::env::var("SAE_SPEED_ORTHO").as_deref() {
        Ok("guided") => Ortho::Guided {
            lambda: 0.1,
            tau: 0.1,
        },
        // The default study's OrtSAE setting (K 4, chunks of 1024).
        Ok("ortsae") => Ortho::OrtSae {
            lambda: 0.25,
            chunks: 4,
        },
        _ => Ortho::None,
    };
    let mut cfg = TrainerConfig::new(steps, b);
    cfg.dead_after_tokens = 49152;
    cfg.ortho = ortho.clone();
    if coact::linalg::backend_info().cpu.has_bf16() {
        cfg.compute = Compute::Bf16;
    }
    // SAE_SPEED_KIND=batchtopk trains BatchTopK instead.
    let kind = match std::env::var("SAE_SPEED_KIND").as_deref() {
        Ok("batchtopk") => SaeKind::BatchTopK { k: 32 },
        _ => SaeKind::TopK { k: 32 },
    };
    let sae_cfg = SaeConfig {
        d_in: D,
        d_sae: 4096,
        kind: kind.clone(),
    };
    let mut t = Trainer::new(cfg, sae_cfg, &x[..4096 * D]).unwrap();
    let mut timed = 0.0;
    let mut phases = PhaseSums::default();
    let mut last = None;
    for s in 0..steps {
        let batch = &x[s * b * D..(s + 1) * b * D];
        let t0 = Instant::now();
        let st = t.step(batch).unwrap();
        if s >= warm {
            timed += t0.elapsed().as_secs_f64();
            phases.add(t.last_step_times());
        }
        last = Some(st);
    }
    let st = last.unwrap();
    println!(
        "real data, {kind:?} F 4096 B {b} {ortho:?} {:?}: {:.1} ms/step over steps {warm}..{steps} | mse {:.4} dead {:.3} aux {:.3}",
        t.config().compute,
        timed / (steps - warm) as f64 * 1e3,
        st.mse,
        st.dead_fraction,
        st.aux
    );
    println!("  per phase: {}", phases.line());
}
