//! The core benchmark (SAEBench's `sae_bench/evals/core/main.py`, 0.6): how
//! well a variant's SAE reconstructs the eval split's activations, how sparse
//! and how dense its latents are, how alike its encoder and decoder
//! directions, and how much of the model's behaviour survives when its
//! reconstruction replaces the residual stream.
//!
//! Reconstruction metrics (every eval token but BOS, as SAEBench masks BOS,
//! EOS and padding): `mse` (SAEBench's: each token's squared error divided by
//! the counted tokens of its batch of `batch_size_prompts` sequences),
//! `explained_variance_legacy` (SAEBench's per-token formula about the
//! batch's mean), `explained_variance` (`1 - sum_d Var(x_d - x_hat_d) /
//! sum_d Var(x_d)`), `cossim`, `l2_ratio`, `relative_reconstruction_bias`,
//! `l0`, `l1`, `frac_dead` (never fired on the eval tokens), the dense
//! fractions (> 1% and > 10% of tokens) and the mean over latents of the
//! largest cosine with another latent, decoder and encoder directions. The
//! formulas and where they depart from SAEBench: `coact::metrics::core_eval`.
//!
//! Downstream metrics, on `ce_sequences` whole eval sequences: the forward
//! with the residual after block L replaced by the SAE's reconstruction
//! (CE_sae, KL_sae), by zeros (CE_zero, KL_zero), or untouched (CE_orig);
//! `ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_orig)` and
//! `kl_div_score = (KL_zero - KL_sae) / KL_zero`, with `KL(original ||
//! patched)` over the whole vocabulary. As in SAEBench (which passes BOS, EOS
//! and padding as `ignore_tokens`):
//! - KL is averaged over every position whose input token is not BOS (the
//!   last position included);
//! - CE is averaged over the positions 0..T-2 (each predicting the next
//!   token; the last has no target) whose input token is not BOS;
//! - at BOS the splice keeps the original residual by default
//!   (`exclude_special_tokens_from_reconstruction: true`, the setting of
//!   SAEBench's documented runs): the SAE never saw BOS in training, and
//!   BOS's residual, hundreds of times larger than other tokens', is the
//!   attention sink every later position reads, so reconstructing it would
//!   measure the SAE on a token no benchmark counts. Set it to false for
//!   SAEBench's default, which splices every position. Zero ablation zeroes
//!   every position, BOS included, as SAEBench's zero hook does.
//!
//! Cost. The blocks after the layer and the 262k-token unembedding run
//! ~700 tokens/s on the default study's 2-core CPU (bf16), most of it in the
//! unembedding, so the forward passes are most of the cost. Per group of CE
//! sequences a unit needs three: the original (CE_orig, and the
//! distribution KL_sae is measured against), the zero-ablated one (CE_zero,
//! KL_zero) and the SAE-spliced one. Only the last depends on the SAE. The
//! core units of one `coact run` run in one process and share, in memory and
//! never on disk, the zero-ablated forward's per-token CE and KL (a few KiB)
//! and what the original forward leaves for KL. For gemma-3, whose logits
//! are linear in the final hidden state, that is per counted position its
//! log-sum-exp, hidden row and expected unembedding row (~5 KiB;
//! [`coact::metrics::logit_stats`]), and every patched forward streams its
//! logits by vocabulary slices without a `[rows, vocab]` buffer. For a
//! softcapped model (gemma-2) it is the log-probabilities at the counted
//! positions (127 x 256k f32 = 127 MiB per 128-token sequence), reduced 128
//! rows at a time; `keep_original_mib` caps what is kept, beyond which the
//! original forward is recomputed per unit. So the first core unit runs 3
//! forwards per sequence and every later one 1; the last variant's unit
//! frees the memory. The shared results are those a unit would compute
//! itself (same sequences, same batches), so a unit run alone gives the same
//! figures, at 3 forwards per sequence. A patched forward runs only the
//! blocks after the layer, from the original's residual. A forward pass
//! takes up to `forward_batch_size` consecutive chosen sequences of equal
//! length.
//! The model is loaded once per process.
//!
//! Output: table `bench_core` (variant, metric, value; metric names in
//! [`METRICS`]; `eval_tokens` counts the tokens behind the reconstruction
//! metrics, `ce_tokens` the positions behind CE, and KL averages those plus
//! each sequence's last position), and
//! `<variant>_eval_results.json` shaped like SAEBench's core output
//! (`eval_type_id` "core", `eval_config`, `eval_result_metrics` grouped as
//! SAEBench groups them, per-latent `eval_result_details`), so SAEBench's
//! plotting code can read it.

mod json;
mod splice;
pub mod summary;

use json::{num, write_eval_json, EvalJson};
use splice::{ce_kl, Downstream, Scores};

use crate::artifacts::activations::EvalSplit;
use crate::artifacts::model::model_source;
use crate::artifacts::sae::VariantSae;
use crate::config::bench::core_eval::{CeSelection, CoreConfig};
use crate::config::Config;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::cache::stage_key;
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{anyhow, bail, ensure, Context, Result};
use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use coact::lm::{hook_name, Gemma};
use coact::metrics::core_eval as m;
use coact::metrics::splice::{patched_losses, sae_patch, zero_patch, Original};
use coact::rng::SplitMix64;
use coact::sae::Sae;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The CE / KL arithmetic's version, part of every core key: 3 was the
/// unembedding by row chunks and vocabulary slices with vectorised
/// log-softmax and KL; 4 streams linear logits (`CE = lse - z_target`,
/// `KL = lse_q - lse_o - (h_q - h_o) . u_o`), equal up to float rounding.
const CE_KL_VERSION: u32 = 4;

/// The part of the config a core artifact's key hashes (all of
/// `bench.core` but `keep_original_mib`, which changes only the cost) and
/// the CE / KL arithmetic's version.
pub fn key_config(cfg: &Config) -> Value {
    let mut v = serde_json::to_value(&cfg.bench.core).expect("serialisable");
    if let Some(o) = v.as_object_mut() {
        o.remove("keep_original_mib");
        o.insert("ce_kl_version".into(), CE_KL_VERSION.into());
    }
    v
}

/// The metric names of table `bench_core`, in output order.
pub const METRICS: &[&str] = &[
    "mse",
    "explained_variance_legacy",
    "explained_variance",
    "cossim",
    "l2_ratio",
    "relative_reconstruction_bias",
    "l0",
    "l1",
    "frac_dead",
    "frac_dense_1pct",
    "frac_dense_10pct",
    "mean_max_dec_cos",
    "mean_max_enc_cos",
    "ce_orig",
    "ce_sae",
    "ce_zero",
    "ce_loss_score",
    "kl_sae",
    "kl_zero",
    "kl_div_score",
    "eval_tokens",
    "ce_tokens",
];

/// User + system CPU time of this process so far (Linux: /proc/self/stat,
/// in clock ticks of 1/100 s); None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The variant's SAE, checked against the study layer, the eval split
/// (shared by the run's core units), checked against the SAE, and the
/// extract artifact's key.
fn read_inputs(input: &StageInput, variant: &str) -> Result<(VariantSae, Arc<EvalSplit>, String)> {
    let layer = input.cfg.model.layer;
    let acts = input.activations()?;
    let extract_key = &acts.key;
    let vs = input.variant_sae(variant)?;
    let (stage, train_key) = (vs.stage, vs.key.clone());
    if vs.meta.hook_name != hook_name(layer) {
        bail!(
            "{stage}/{train_key} ({variant}) was trained on {}, but model.layer = {layer} ({})",
            vs.meta.hook_name,
            hook_name(layer)
        );
    }

    let spinner = input.progress.spinner("reading eval activations");
    let eval = input
        .cache
        .get_or_try_insert(&stage_key("bench", &format!("eval/{extract_key}")), || {
            acts.eval_split()
        })?;
    spinner.finish_and_clear();
    let d = eval.d;
    if vs.sae.cfg.d_in != d {
        bail!(
            "{stage}/{train_key} ({variant}) has d_in = {}, but extract/{extract_key} holds d_model = {d}",
            vs.sae.cfg.d_in
        );
    }
    Ok((vs, eval, acts.key))
}

/// The reconstruction, sparsity, density and weight-based metrics.
struct Recon {
    rec: m::Reconstruction,
    l0: f64,
    l1: f64,
    density: m::Density,
    freq: Vec<f64>,
    dens: m::DensitySummary,
    max_dec: Vec<f64>,
    max_enc: Vec<f64>,
    /// Non-BOS eval tokens.
    n: usize,
    /// Non-BOS tokens per batch of `batch_size_prompts` sequences.
    batch_lens: Vec<usize>,
}

/// Reconstruction metrics on every non-BOS eval token.
fn reconstruction(
    input: &StageInput,
    extract_key: &str,
    sae: &Sae,
    eval: &EvalSplit,
) -> Result<Recon> {
    let c = &input.cfg.bench.core;
    let d = eval.d;
    let mut x = Vec::with_capacity(eval.x.len());
    let mut prompt_lens = Vec::new();
    for r in &eval.sequences {
        let mut n = 0;
        for i in r.clone() {
            if !eval.special[i] {
                x.extend_from_slice(&eval.x[i * d..(i + 1) * d]);
                n += 1;
            }
        }
        if n > 0 {
            prompt_lens.push(n);
        }
    }
    let n = x.len() / d;
    ensure!(n > 0, "extract/{extract_key}: no non-BOS eval tokens");
    let batch_lens: Vec<usize> = prompt_lens
        .chunks(c.batch_size_prompts)
        .map(|b| b.iter().sum())
        .collect();
    let codes = sae.encode(&x, n)?;
    let x_hat = sae.decode(&codes)?;
    let rec = m::reconstruction(&x, &x_hat, d, &batch_lens)?;
    drop((x, x_hat));
    let (l0, l1) = m::l0_l1(&codes);
    let density = m::density(&codes, &prompt_lens)?;
    drop(codes);
    let freq = density.frequency();
    let dens = m::density_summary(&freq);
    let f = sae.cfg.d_sae;
    let max_dec = m::max_cosine_per_row(&sae.w_dec, f, d)?;
    let max_enc = m::max_cosine_per_row(&sae.w_enc_t, f, d)?;
    Ok(Recon {
        rec,
        l0,
        l1,
        density,
        freq,
        dens,
        max_dec,
        max_enc,
        n,
        batch_lens,
    })
}

/// Every metric of table `bench_core` by name.
fn metric_values(r: &Recon, ds: &Downstream, scores: &Scores) -> BTreeMap<&'static str, f64> {
    let rec = &r.rec;
    let values: BTreeMap<&str, f64> = BTreeMap::from([
        ("mse", rec.mse),
        ("explained_variance_legacy", rec.explained_variance_legacy),
        ("explained_variance", rec.explained_variance),
        ("cossim", rec.cossim),
        ("l2_ratio", rec.norms.l2_ratio),
        (
            "relative_reconstruction_bias",
            rec.relative_reconstruction_bias,
        ),
        ("l0", r.l0),
        ("l1", r.l1),
        ("frac_dead", r.dens.frac_dead),
        ("frac_dense_1pct", r.dens.frac_dense_1pct),
        ("frac_dense_10pct", r.dens.frac_dense_10pct),
        ("mean_max_dec_cos", m::mean(&r.max_dec)),
        ("mean_max_enc_cos", m::mean(&r.max_enc)),
        ("ce_orig", ds.ce_orig),
        ("ce_sae", ds.ce_sae),
        ("ce_zero", ds.ce_zero),
        ("ce_loss_score", scores.ce_loss),
        ("kl_sae", ds.kl_sae),
        ("kl_zero", ds.kl_zero),
        ("kl_div_score", scores.kl_div),
        ("eval_tokens", r.n as f64),
        ("ce_tokens", ds.ce_tokens as f64),
    ]);
    debug_assert_eq!(values.len(), METRICS.len());
    values
}

/// Table bench_core (`core.parquet`); returns its row count.
fn write_table(
    input: &StageInput,
    variant: &str,
    values: &BTreeMap<&'static str, f64>,
) -> Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("variant", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![variant; METRICS.len()])),
            Arc::new(StringArray::from(METRICS.to_vec())),
            Arc::new(Float64Array::from_iter_values(
                METRICS.iter().map(|k| values[k]),
            )),
        ],
    )?;
    crate::artifacts::parquet_io::write_all(&input.out_dir.join("core.parquet"), &[batch])
}

/// The `core` benchmark.
pub struct Core;

impl Benchmark for Core {
    fn name(&self) -> &'static str {
        "core"
    }
    fn about(&self) -> &'static str {
        "SAEBench core: MSE, explained variance, L0, CE and KL scores with the SAE spliced in"
    }
    fn uses(&self) -> &'static [&'static str] {
        &["extract"]
    }
    fn key_config(&self, cfg: &Config) -> Value {
        key_config(cfg)
    }
    fn run(&self, input: &StageInput, variant: &str) -> Result<StageOutput> {
        run(input, variant)
    }
    fn metrics(&self) -> &'static [crate::pipeline::benchmark::MetricDef] {
        summary::METRIC_DEFS
    }
    fn sample_size(&self, s: &serde_json::Value) -> Option<String> {
        let m = &s["metrics"];
        Some(format!(
            "CE and KL over {} next-token predictions ({} sequences); reconstruction, L0 and dead latents over {} eval tokens",
            m["ce_tokens"].as_f64()?,
            s["ce_sequences"].as_u64()?,
            m["eval_tokens"].as_f64()?
        ))
    }
    fn tables(&self) -> &'static [&'static str] {
        summary::TABLES
    }
    fn summarise(
        &self,
        _table: &str,
        batches: &[arrow::array::RecordBatch],
        into: &mut crate::pipeline::benchmark::Summary,
    ) -> Result<()> {
        summary::summarise(batches, into)
    }
}

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let (vs, eval, extract_key) = read_inputs(input, variant)?;

    let t_recon = Instant::now();
    let recon = reconstruction(input, &extract_key, &vs.sae, &eval)?;
    let recon_s = t_recon.elapsed().as_secs_f64();

    let t_ds = Instant::now();
    let (chosen, ds) = ce_kl(input, variant, &vs.sae, &eval)?;
    let downstream_s = t_ds.elapsed().as_secs_f64();

    let ce_loss_score = m::ce_loss_score(ds.ce_orig, ds.ce_sae, ds.ce_zero);
    let kl_div_score = m::kl_div_score(ds.kl_sae, ds.kl_zero);
    let scores = Scores {
        ce_loss: ce_loss_score,
        kl_div: kl_div_score,
    };
    let values = metric_values(&recon, &ds, &scores);
    let rows = write_table(input, variant, &values)?;
    let json_name = write_eval_json(
        input,
        &EvalJson {
            variant,
            vs: &vs,
            eval: &eval,
            recon: &recon,
            ds: &ds,
            chosen: &chosen,
            scores: &scores,
        },
    )?;
    let (rec, l0) = (&recon.rec, recon.l0);

    let total_s = started.elapsed().as_secs_f64();
    // CPU seconds of the whole process (every thread): a cost figure that,
    // unlike wall time, hardly depends on what else the machine runs.
    let cpu_s = process_cpu_seconds().zip(cpu_started).map(|(b, a)| b - a);
    input.progress.note(format!(
        "core/{variant}: EV {:.3} (legacy {:.3}), cos {:.3}, L0 {:.1}, CE score {:.3}, KL score {:.3} \
         [{recon_s:.1} s reconstruction, {downstream_s:.1} s CE/KL on {} tokens, forward passes: {}{}]",
        rec.explained_variance,
        rec.explained_variance_legacy,
        rec.cossim,
        l0,
        ce_loss_score,
        kl_div_score,
        ds.ce_tokens,
        ds.forwards,
        cpu_s.map_or(String::new(), |c| format!(", {c:.1} CPU s"))
    ));
    let metrics: serde_json::Map<String, Value> = METRICS
        .iter()
        .map(|k| (k.to_string(), num(values[k])))
        .collect();
    Ok(StageOutput {
        tables: BTreeMap::from([(
            "core".to_string(),
            TableEntry {
                files: vec!["core.parquet".into()],
                rows,
            },
        )]),
        summary: json!({
            "variant": variant,
            "metrics": metrics,
            "json": json_name,
            "ce_sequences": ds.sequences,
            "kl_tokens": ds.kl_tokens,
            "forward_passes": ds.forwards,
            "seconds": { "reconstruction": recon_s, "ce_kl": downstream_s, "total": total_s, "cpu": cpu_s },
        }),
    })
}
