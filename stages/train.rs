//! train: one SAE per variant on the train split's activations (BOS
//! excluded), saved in SAELens layout with its training curve.
//!
//! Batches are drawn from a seeded permutation of all train tokens across
//! shards (one per epoch). Checkpoints every `checkpoint_every` steps let a
//! killed run resume and end with the same weights.

use crate::config::variants::{OrthoKind, Variant};
use crate::config::Config;
use crate::pipeline::cache::stage_key;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use coact::rng::SplitMix64;
use coact::sae::{
    fold_scaling, norm_scaling_factor, save_saelens, Architecture, Ortho, SaeConfig, SaeKind,
    SaelensMeta, StepStats, StepTimes, Trainer, TrainerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const CHECKPOINT: &str = "checkpoint.safetensors";
const CHECKPOINT_LOG: &str = "checkpoint_log.json";
/// Rows used to estimate the activation scale.
const SCALE_SAMPLE: usize = 65536;

#[derive(Serialize, Deserialize, Clone)]
struct LogRow {
    tokens: u64,
    tokens_per_s: f64,
    stats: StepStats,
    /// Each phase's time (absent, so zero, in logs written before it was).
    #[serde(default)]
    times: StepTimes,
}

/// The trainer's settings for one variant.
pub fn trainer_config(
    cfg: &Config,
    v: &Variant,
    total_steps: usize,
    batch: usize,
) -> Result<TrainerConfig> {
    let t = &cfg.train;
    let s = &v.settings;
    let mut tc = TrainerConfig::new(total_steps, batch);
    tc.lr = t.lr.map(|v| v as f32);
    tc.warmup_steps = t.warmup_steps;
    tc.decay_frac = t.decay_frac as f32;
    tc.dead_after_tokens = t.dead_after_tokens;
    tc.seed = s.seed;
    tc.ortho = match s.ortho {
        OrthoKind::None => Ortho::None,
        OrthoKind::Uniform => Ortho::Uniform {
            lambda: s.lambda as f32,
            pairs: t.uniform_pairs,
        },
        OrthoKind::Guided => Ortho::Guided {
            lambda: s.lambda as f32,
            tau: s.tau as f32,
        },
        OrthoKind::Ortsae => Ortho::OrtSae {
            lambda: s.lambda as f32,
            chunks: s.chunks,
        },
    };
    tc.compute = t.compute.resolve("train.compute")?;
    tc.b_dec = s.b_dec;
    Ok(tc)
}

pub fn sae_config(v: &Variant, d_in: usize) -> SaeConfig {
    let s = &v.settings;
    SaeConfig {
        d_in,
        d_sae: s.d_sae,
        kind: match s.kind {
            Architecture::TopK => SaeKind::TopK { k: s.k },
            Architecture::ReluL1 => SaeKind::ReluL1 {
                l1_coeff: s.l1_coeff as f32,
            },
            Architecture::BatchTopK => SaeKind::BatchTopK { k: s.k },
            Architecture::Matryoshka => SaeKind::Matryoshka {
                k: s.k,
                groups: s.groups.clone(),
            },
            // Refused when the config is read (not trainable).
            Architecture::JumpRelu => SaeKind::JumpRelu,
        },
    }
}

/// The train split's non-BOS activations ([n, d]) of an extract artifact.
pub fn load_train_tokens(input: &StageInput) -> Result<(Vec<f32>, usize, serde_json::Value)> {
    let acts = input.activations()?;
    let (mut x, special, d) = acts.read("train")?;
    if d == 0 {
        bail!("extract/{}: no train activations", acts.key);
    }
    // Drop the BOS rows in place (the matrix is GBs; no second copy).
    let mut kept = 0;
    for (r, &is_special) in special.iter().enumerate() {
        if !is_special {
            if kept != r {
                x.copy_within(r * d..(r + 1) * d, kept * d);
            }
            kept += 1;
        }
    }
    x.truncate(kept * d);
    Ok((x, d, acts.summary))
}

/// Trains one SAE per variant on the train split's activations.
pub struct Train;

impl Stage for Train {
    fn name(&self) -> &'static str {
        "train"
    }
    fn about(&self) -> &'static str {
        "train one SAE per variant (SAELens layout, training curves)"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["extract"]
    }
    /// 2: cfg.json carries `activation_fn` / `activation_fn_kwargs` (so
    /// SAELens 5 loads a TopK SAE as TopK) and coact's training kind.
    /// 3: b_dec's gradient sums its encoder part per latent (the same
    /// gradient, rounded differently), so the trained bytes change.
    /// 4: with bf16 the batch kinds cut on the bf16 products and refine only
    /// the kept entries to f32 (they refined every candidate first).
    /// 5: train_log carries each step's time per phase (`*_ms`), and with
    /// bf16 OrtSAE's Gram products are bf16 (they only choose partners).
    fn format_version(&self) -> u32 {
        5
    }
    fn resumable(&self) -> bool {
        true
    }
    /// Each SAE reads only the activations (loaded once, shared), and the
    /// trainer's reductions have a fixed order whatever the thread count.
    fn concurrent_units(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        let shared = json!({
            "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs,
            "lr": cfg.train.lr,
            "warmup_steps": cfg.train.warmup_steps,
            "decay_frac": cfg.train.decay_frac,
            "dead_after_tokens": cfg.train.dead_after_tokens,
            "uniform_pairs": cfg.train.uniform_pairs,
            "compute": cfg.train.compute.resolve("train.compute")?,
        });
        Ok(cfg
            .variants()
            .into_iter()
            .map(|v| Unit {
                config: json!({ "variant": v.name, "sae": v.settings, "schedule": shared }),
                unit: Some(v.name),
                uses: None,
            })
            .collect())
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let unit = input
        .planned
        .unit
        .as_deref()
        .context("train runs per variant")?;
    let variant = cfg
        .variants()
        .into_iter()
        .find(|v| v.name == unit)
        .context("variant vanished from the config")?;
    // Read once per run for all variants (1 Mi tokens x 640 floats is 2.7
    // GB, ~20 s to decode) and freed when the stage's last unit is done (the
    // units need not finish in plan order).
    let extract_key = input.input_key("extract")?.to_string();
    let spinner = input.progress.spinner("reading train activations");
    let tokens = input.cache.get_or_try_insert(
        &stage_key("train", &format!("tokens/{extract_key}")),
        || load_train_tokens(input),
    )?;
    spinner.finish_and_clear();
    let (x, d, extract_summary) = (&tokens.0, tokens.1, &tokens.2);
    let mut batches = Batches::new(input, &variant, x, d)?;
    let (n, batch, total, scale) = (batches.n, batches.batch, batches.total(), batches.scale);
    let tc = trainer_config(cfg, &variant, total, batch)?;
    let compute = tc.compute;
    let sc = sae_config(&variant, d);

    let mut buf = Vec::with_capacity(batch * d);
    let (mut trainer, mut log) = resume_or_start(input, unit, tc, sc, &mut batches, &mut buf)?;
    train_steps(input, unit, &mut trainer, &mut log, &mut batches, &mut buf)?;
    let rows = save(input, unit, trainer, scale, extract_summary, &log)?;

    let tail = &log[log.len().saturating_sub(10)..];
    let mean = |f: &dyn Fn(&StepStats) -> f64| {
        tail.iter().map(|r| f(&r.stats)).sum::<f64>() / tail.len() as f64
    };
    // Tokens over the summed step times (a mean of per-step rates would
    // overweight the fast steps).
    let step_s: f64 = log.iter().map(|r| batch as f64 / r.tokens_per_s).sum();
    let tokens_per_s = (log.len() * batch) as f64 / step_s.max(1e-9);
    input.progress.note(format!(
        "train/{unit}: {total} steps of {batch}, final mse {:.4} (scaled), L0 {:.1}, dead {:.3}, {:.0} tokens/s",
        mean(&|s| s.mse),
        mean(&|s| s.l0),
        mean(&|s| s.dead_fraction),
        tokens_per_s
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([(
            "log".to_string(),
            TableEntry {
                files: vec!["train_log.parquet".into()],
                rows,
            },
        )]),
        summary: json!({
            "variant": unit,
            "settings": variant.settings,
            "d_in": d,
            "train_tokens": n,
            "steps": total,
            "batch_size": batch,
            "activation_scale": scale,
            "tokens_per_s": tokens_per_s,
            "compute": compute,
            "backend": coact::linalg::backend_info(),
            "final": {
                "mse_scaled": mean(&|s| s.mse),
                "l0": mean(&|s| s.l0),
                "dead_fraction": mean(&|s| s.dead_fraction),
                "ortho": mean(&|s| s.ortho),
            },
        }),
    })
}

/// The schedule: `batch` rows a step, `steps_per_epoch` steps an epoch, in a
/// seeded permutation of the train tokens drawn anew each epoch; rows are
/// multiplied by the activation scale.
struct Batches<'a> {
    x: &'a [f32],
    d: usize,
    n: usize,
    batch: usize,
    steps_per_epoch: usize,
    epochs: usize,
    scale: f32,
    seed: u64,
    perm_epoch: usize,
    perm: Vec<u32>,
}

impl<'a> Batches<'a> {
    fn new(input: &StageInput, variant: &Variant, x: &'a [f32], d: usize) -> Result<Self> {
        let n = x.len() / d;
        let batch = input.cfg.train.batch_size;
        if batch > n {
            bail!(
                "train.batch_size = {batch}: larger than the {n} train tokens (BOS excluded) of extract/{}",
                input.input_key("extract")?
            );
        }
        Ok(Batches {
            x,
            d,
            n,
            batch,
            steps_per_epoch: n / batch,
            epochs: input.cfg.train.epochs,
            scale: norm_scaling_factor(&x[..SCALE_SAMPLE.min(n) * d], d)?,
            seed: variant.settings.seed,
            perm_epoch: usize::MAX,
            perm: Vec::new(),
        })
    }

    fn total(&self) -> usize {
        self.steps_per_epoch * self.epochs
    }

    /// The scaled rows of one step's batch, into `buf`.
    fn fill(&mut self, step: usize, buf: &mut Vec<f32>) {
        let (d, batch) = (self.d, self.batch);
        let epoch = step / self.steps_per_epoch;
        if epoch != self.perm_epoch {
            self.perm = (0..self.n as u32).collect();
            SplitMix64::new(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9))
                .shuffle(&mut self.perm);
            self.perm_epoch = epoch;
        }
        let start = (step % self.steps_per_epoch) * batch;
        buf.clear();
        for &row in &self.perm[start..start + batch] {
            buf.extend(
                self.x[row as usize * d..(row as usize + 1) * d]
                    .iter()
                    .map(|v| v * self.scale),
            );
        }
    }
}

/// The trainer and its log: from the checkpoint when one is there (it must
/// hold these settings), else new, initialised on the first batch.
fn resume_or_start(
    input: &StageInput,
    unit: &str,
    tc: TrainerConfig,
    sc: SaeConfig,
    batches: &mut Batches,
    buf: &mut Vec<f32>,
) -> Result<(Trainer, Vec<LogRow>)> {
    let ckpt = input.out_dir.join(CHECKPOINT);
    let ckpt_log = input.out_dir.join(CHECKPOINT_LOG);
    if ckpt.is_file() {
        let t = Trainer::load_checkpoint(&ckpt)
            .with_context(|| format!("resuming from {}", ckpt.display()))?;
        if t.config() != &tc || t.sae().cfg != sc {
            bail!(
                "{} belongs to other settings; remove the folder to start over",
                ckpt.display()
            );
        }
        let mut log: Vec<LogRow> = serde_json::from_str(&std::fs::read_to_string(&ckpt_log)?)?;
        log.truncate(t.steps_done() as usize);
        input.progress.note(format!(
            "train/{unit}: resuming at step {} of {}",
            t.steps_done(),
            batches.total()
        ));
        Ok((t, log))
    } else {
        batches.fill(0, buf);
        Ok((
            Trainer::new(tc, sc, buf).map_err(|e| anyhow!("train.variants ({unit}): {e}"))?,
            Vec::new(),
        ))
    }
}

/// The steps left, logged, with a checkpoint every `checkpoint_every` steps
/// (not after the last).
fn train_steps(
    input: &StageInput,
    unit: &str,
    trainer: &mut Trainer,
    log: &mut Vec<LogRow>,
    batches: &mut Batches,
    buf: &mut Vec<f32>,
) -> Result<()> {
    let cfg = input.cfg;
    let (batch, total) = (batches.batch, batches.total());
    let ckpt = input.out_dir.join(CHECKPOINT);
    let ckpt_log = input.out_dir.join(CHECKPOINT_LOG);
    // Stops the run as a kill would, right after a checkpoint: lets tests (and
    // users checking their setup) exercise resumption.
    let interrupt_at: Option<usize> = std::env::var("COACT_TRAIN_INTERRUPT_AT")
        .ok()
        .and_then(|v| v.parse().ok());
    let bar = input
        .progress
        .bar((total * batch) as u64, format!("train {unit}"), "tokens");
    bar.inc(trainer.steps_done() * batch as u64);
    for step in trainer.steps_done() as usize..total {
        batches.fill(step, buf);
        let t0 = std::time::Instant::now();
        let stats = trainer.step(buf).map_err(|e| {
            anyhow!(
                "variant {unit}, step {step}: {e:#}. Training stopped. The last checkpoint (every {} steps) in {} \
                 resumes only this exact configuration; change the settings to start a new run, and `coact clean` \
                 removes the old progress",
                cfg.train.checkpoint_every,
                input.out_dir.display()
            )
        })?;
        let tokens_per_s = batch as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        log.push(LogRow {
            tokens: ((step + 1) * batch) as u64,
            tokens_per_s,
            stats,
            times: trainer.last_step_times(),
        });
        bar.inc(batch as u64);
        if (step + 1) % cfg.train.checkpoint_every == 0 && step + 1 < total {
            // The log first: a checkpoint never refers to steps the log lacks.
            write_atomically(&ckpt_log, serde_json::to_string(&log)?.as_bytes())?;
            trainer.save_checkpoint(&ckpt)?;
            if interrupt_at.is_some_and(|n| step + 1 >= n) {
                bail!(
                    "interrupted after step {} (COACT_TRAIN_INTERRUPT_AT)",
                    step + 1
                );
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Saves the SAE (scaling folded in) in SAELens layout and the training log,
/// and removes the checkpoints and any half-written temporaries, which are
/// not part of the artifact. Returns the log's row count.
fn save(
    input: &StageInput,
    unit: &str,
    trainer: Trainer,
    scale: f32,
    extract_summary: &serde_json::Value,
    log: &[LogRow],
) -> Result<u64> {
    let cfg = input.cfg;
    let mut sae = trainer.into_sae();
    fold_scaling(&mut sae, scale)?;
    let layer = extract_summary["layer"].as_u64().unwrap_or(0) as usize;
    let meta = SaelensMeta {
        model_name: cfg.model.name.clone(),
        hook_name: extract_summary["hook_name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        hook_layer: Some(layer),
        context_size: extract_summary["context_size"].as_u64().unwrap_or(0) as usize,
        prepend_bos: true,
        dataset_path: cfg.corpus.path.display().to_string(),
    };
    save_saelens(&sae, input.out_dir, &meta)?;
    let rows = write_log(&input.out_dir.join("train_log.parquet"), unit, log)?;
    let ckpt = input.out_dir.join(CHECKPOINT);
    let ckpt_log = input.out_dir.join(CHECKPOINT_LOG);
    for entry in std::fs::read_dir(input.out_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if path == ckpt || path == ckpt_log || name.ends_with(".tmp") || name.ends_with(".partial")
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(rows)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn write_log(path: &Path, variant: &str, log: &[LogRow]) -> Result<u64> {
    let f64_col = |f: &dyn Fn(&LogRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(log.iter().map(f)))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "variant",
            Arc::new(StringArray::from(vec![variant; log.len()])),
        ),
        (
            "step",
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|r| r.stats.step as i64),
            )),
        ),
        (
            "tokens",
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|r| r.tokens as i64),
            )),
        ),
        ("loss", f64_col(&|r| r.stats.loss)),
        ("mse", f64_col(&|r| r.stats.mse)),
        ("aux", f64_col(&|r| r.stats.aux)),
        ("l1", f64_col(&|r| r.stats.l1)),
        ("ortho", f64_col(&|r| r.stats.ortho)),
        ("l0", f64_col(&|r| r.stats.l0)),
        ("dead_fraction", f64_col(&|r| r.stats.dead_fraction)),
        ("lr", f64_col(&|r| r.stats.lr as f64)),
        (
            "competing_pairs",
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|r| r.stats.competing_pairs as i64),
            )),
        ),
        ("mean_c", f64_col(&|r| r.stats.mean_c)),
        (
            "mean_abs_cos_competing",
            f64_col(&|r| r.stats.mean_abs_cos_competing),
        ),
        ("tokens_per_s", f64_col(&|r| r.tokens_per_s)),
        ("encode_ms", f64_col(&|r| r.times.encode * 1e3)),
        ("residuals_ms", f64_col(&|r| r.times.residuals * 1e3)),
        ("gradients_ms", f64_col(&|r| r.times.gradients * 1e3)),
        ("ortho_ms", f64_col(&|r| r.times.ortho * 1e3)),
        ("update_ms", f64_col(&|r| r.times.update * 1e3)),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    debug_assert!(batch.schema().field(0).data_type() == &DataType::Utf8);
    crate::artifacts::parquet_io::write_all(path, &[batch])
}
