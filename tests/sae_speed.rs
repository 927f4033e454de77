//! Speed of the SAE step (ignored by default):
//! `cargo test -p coact --test sae_speed -- --ignored --nocapture`.

use std::time::Instant;

use coact::linalg::Compute;
use coact::rng::SplitMix64;
use coact::sae::{Ortho, Sae, SaeConfig, SaeKind, Trainer, TrainerConfig};

const D: usize = 640;
const B: usize = 4096;

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

fn time_steps(t: &mut Trainer, x: &[f32], steps: usize) -> f64 {
    t.step(x).unwrap();
    let t0 = Instant::now();
    for _ in 0..steps {
        t.step(x).unwrap();
    }
    t0.elapsed().as_secs_f64() / steps as f64
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
    let x = data(B, 1);
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
                let mut cfg = TrainerConfig::new(1000, B);
                cfg.compute = compute;
                let mut plain = Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                let tp = time_steps(&mut plain, &x, steps);
                cfg.ortho = Ortho::Guided {
                    lambda: 0.1,
                    tau: 0.1,
                };
                let mut guided = Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                let tg = time_steps(&mut guided, &x, steps);
                let st = guided.step(&x).unwrap();
                // Plain again: the guided extra is measured against the mean of two.
                let tp2 = time_steps(&mut plain, &x, steps);
                let tp = 0.5 * (tp + tp2);
                println!(
                    "F {f:5} k {k:2} B {B} {compute:4}: plain {:7.1} ms/step ({:7.1} then {:7.1}) {:8.0} tok/s | guided tau 0.1 {:7.1} ms, +{:6.1} ms ({:.3}x, {} pairs)",
                    tp * 1e3,
                    (2.0 * tp - tp2) * 1e3,
                    tp2 * 1e3,
                    B as f64 / tp,
                    tg * 1e3,
                    (tg - tp) * 1e3,
                    tg / tp,
                    st.competing_pairs,
                );
                if tau0 {
                    cfg.ortho = Ortho::Guided {
                        lambda: 0.1,
                        tau: 0.0,
                    };
                    let mut guided0 =
                        Trainer::new(cfg.clone(), sae_cfg.clone(), &x[..256 * D]).unwrap();
                    let tg0 = time_steps(&mut guided0, &x, steps);
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
    let x = data(B, 2);
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
        let flops = 2.0 * B as f64 * D as f64 * f as f64;
        sae.pre_activations(&x, B).unwrap();
        let reps = 3;
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(sae.pre_activations(&x, B).unwrap());
        }
        let ours = t0.elapsed().as_secs_f64() / reps as f64;
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(sae.encode(&x, B).unwrap());
        }
        let enc = t0.elapsed().as_secs_f64() / reps as f64;
        let xt = Tensor::from_slice(&x, (B, D), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&sae.w_enc(), (D, f), &Device::Cpu).unwrap();
        xt.matmul(&wt).unwrap();
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(xt.matmul(&wt).unwrap());
        }
        let candle = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "encoder [{B} x {D}] x [{D} x {f}]: coact chunked gemm {:.1} ms = {:.1} GFLOP/s; with top-k {:.1} ms; candle matmul {:.1} ms = {:.1} GFLOP/s",
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
    let x = data(B, 1);
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
            let codes = sae.encode(&x, B).unwrap();
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
