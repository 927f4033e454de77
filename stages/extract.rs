//! extract: token sequences -> resid_post activations at the configured layer,
//! as Parquet shards (one row per token) per split.
//!
//! Resumable: shards are numbered deterministically from the sequence order
//! and each appears under its final name only when complete, so a killed run
//! continues from its finished shards and ends with identical files.

use crate::artifacts::activations::{shard_file, write_shard, SPLITS};
use crate::artifacts::model::{load_model, model_source};
use crate::artifacts::tokens::read_sequences;
use crate::config::{Config, ExtractDtype};
use crate::pipeline::fingerprint::Fingerprints;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{bail, Context, Result};
use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float16Array, Float32Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::{Device, Tensor};
use coact::lm::{hook_name, Gemma};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Running sums for the norm statistics of one shard (BOS excluded, because
/// its residual is an outlier hundreds of times larger than other tokens').
/// Stored beside the shard with floats as their bit patterns, so that a
/// resumed run adds up exactly the same numbers.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct ShardStats {
    pub tokens: u64,
    pub bos_tokens: u64,
    #[serde(with = "f64_bits")]
    pub norm_sum: f64,
    #[serde(with = "f64_bits")]
    pub sq_norm_sum: f64,
    #[serde(with = "f64_bits")]
    pub bos_norm_sum: f64,
    #[serde(with = "vec_f64_bits")]
    pub dim_sum: Vec<f64>,
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

mod vec_f64_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.to_bits())
            .collect::<Vec<u64>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(f64::from_bits).collect())
    }
}

impl ShardStats {
    fn add(&mut self, o: &ShardStats) {
        self.tokens += o.tokens;
        self.bos_tokens += o.bos_tokens;
        self.norm_sum += o.norm_sum;
        self.sq_norm_sum += o.sq_norm_sum;
        self.bos_norm_sum += o.bos_norm_sum;
        if self.dim_sum.is_empty() {
            self.dim_sum = vec![0.0; o.dim_sum.len()];
        }
        for (a, b) in self.dim_sum.iter_mut().zip(&o.dim_sum) {
            *a += b;
        }
    }
}

/// Runs the model over every sequence and stores resid_post at the layer.
pub struct Extract;

impl Stage for Extract {
    fn name(&self) -> &'static str {
        "extract"
    }
    fn about(&self) -> &'static str {
        "run the model and store resid_post at the studied layer"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["tokenize"]
    }
    fn resumable(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(Unit::single(key_config(cfg)?))
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

/// The part of the config an extract artifact's key hashes, with a content
/// digest of a local weights file.
fn key_config(cfg: &Config) -> Result<Value> {
    let mut fp = Fingerprints::open(&cfg.data_dir());
    let m = &cfg.model;
    let weights = match &m.path {
        Some(p) => json!({ "path": p, "fingerprint": fp.path(&cfg.resolve(p), None) }),
        None => json!({ "hf_id": m.hf_id, "revision": m.revision }),
    };
    // The resolved compute, not `auto`: bf16 and f32 make other bytes.
    let mut extract = serde_json::to_value(&cfg.extract)?;
    extract["compute"] = json!(cfg.extract.compute.resolve("extract.compute")?);
    Ok(json!({
        "model": { "name": m.name, "source": m.source, "weights": weights },
        "layer": m.layer,
        "extract": extract,
    }))
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let ex = &cfg.extract;
    let layer = cfg.model.layer;
    let tokenize_key = input.input_key("tokenize")?;
    let tok_manifest = input.store.manifest("tokenize", tokenize_key)?;
    let context = tok_manifest.summary["context_size"].as_u64().unwrap_or(0) as usize;

    let source = model_source(cfg);
    let model = load_model(cfg, input.progress)?;
    let mc = model.config().clone();
    let tok_vocab = tok_manifest.summary["vocab_size"].as_u64().unwrap_or(0) as usize;
    if tok_vocab != mc.vocab {
        bail!(
            "the tokens artifact tokenize/{tokenize_key} was made with a tokenizer of {tok_vocab} tokens, \
             but the model {source} has a vocabulary of {}: model.tokenizer does not belong to this model",
            mc.vocab
        );
    }

    let splits = read_sequences(input.store, tokenize_key)?;
    let total_tokens: u64 = splits
        .values()
        .map(|s| s.tokens.len() as u64 * context as u64)
        .sum();
    let bar = input.progress.bar(
        total_tokens,
        format!("extract {}", hook_name(layer)),
        "tokens",
    );
    let seqs_per_shard = (ex.shard_tokens / context).max(1);
    let bos = tok_manifest.summary["bos_id"].as_u64().unwrap_or(u64::MAX);
    let mut tables_files = Vec::new();
    let mut summary_splits = serde_json::Map::new();
    let mut rows = 0u64;
    for split in SPLITS {
        let Some(seqs) = splits.get(split) else {
            continue;
        };
        let mut stats = ShardStats::default();
        for (shard, start) in (0..seqs.tokens.len()).step_by(seqs_per_shard).enumerate() {
            let end = (start + seqs_per_shard).min(seqs.tokens.len());
            let name = shard_file(split, shard);
            let stats_name = format!("stats/{split}-{shard:05}.json");
            let final_path = input.out_dir.join(&name);
            let shard_stats: ShardStats = if final_path.is_file() {
                // Finished by an earlier, interrupted run.
                let stats_path = input.out_dir.join(&stats_name);
                let text = std::fs::read_to_string(&stats_path).with_context(|| {
                    format!(
                        "resuming: {} lacks its statistics {}",
                        name,
                        stats_path.display()
                    )
                })?;
                let st: ShardStats = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "resuming: {} is not a shard statistics file",
                        stats_path.display()
                    )
                })?;
                bar.inc(st.tokens + st.bos_tokens);
                st
            } else {
                let tokens = &seqs.tokens[start..end];
                for t in tokens.iter().flatten() {
                    if *t as usize >= mc.vocab {
                        bail!("tokens artifact tokenize/{tokenize_key}: token id {t} is outside the model's vocabulary of {}", mc.vocab);
                    }
                }
                let (batch, st) = extract_shard(
                    &model,
                    layer,
                    split,
                    &seqs.seq_ids[start..end],
                    tokens,
                    bos,
                    ex.batch_size,
                    ex.dtype,
                    &bar,
                )?;
                std::fs::create_dir_all(input.out_dir.join("stats"))?;
                std::fs::write(input.out_dir.join(&stats_name), serde_json::to_string(&st)?)?;
                write_shard(&final_path, &batch)?;
                st
            };
            rows += shard_stats.tokens + shard_stats.bos_tokens;
            stats.add(&shard_stats);
            tables_files.push(name);
        }
        summary_splits.insert(split.to_string(), stats_summary(&stats));
    }
    bar.finish_and_clear();
    input.progress.note(format!(
        "extract: {rows} tokens of {} at {} (d_model {}, {} products)",
        cfg.model.name,
        hook_name(layer),
        mc.d_model,
        model.compute()
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([(
            "activations".to_string(),
            TableEntry {
                files: tables_files,
                rows,
            },
        )]),
        summary: json!({
            "model": cfg.model.name,
            "source": source.to_string(),
            "layer": layer,
            "hook_name": hook_name(layer),
            "d_model": mc.d_model,
            "dtype": ex.dtype,
            "context_size": context,
            "compute": model.compute(),
            "backend": coact::linalg::backend_info(),
            "splits": summary_splits,
        }),
    })
}

fn stats_summary(s: &ShardStats) -> serde_json::Value {
    let n = s.tokens.max(1) as f64;
    json!({
        "tokens": s.tokens + s.bos_tokens,
        "non_bos_tokens": s.tokens,
        "mean_norm": s.norm_sum / n,
        "mean_sq_norm": s.sq_norm_sum / n,
        "mean_norm_bos": s.bos_norm_sum / s.bos_tokens.max(1) as f64,
        "dim_mean": s.dim_sum.iter().map(|v| v / n).collect::<Vec<_>>(),
    })
}

#[allow(clippy::too_many_arguments)]
fn extract_shard(
    model: &Gemma,
    layer: usize,
    split: &str,
    seq_ids: &[i64],
    tokens: &[Vec<u32>],
    bos: u64,
    batch_size: usize,
    dtype: ExtractDtype,
    bar: &indicatif::ProgressBar,
) -> Result<(RecordBatch, ShardStats)> {
    let d = model.config().d_model;
    let t = tokens.first().map_or(0, |s| s.len());
    let n = tokens.len() * t;
    let mut acts: Vec<f32> = Vec::with_capacity(n * d);
    for chunk in tokens.chunks(batch_size) {
        let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (chunk.len(), t), &Device::Cpu)?;
        let resid = model.resid_post(&ids, layer)?;
        acts.extend(resid.flatten_all()?.to_vec1::<f32>()?);
        bar.inc((chunk.len() * t) as u64);
    }
    let mut stats = ShardStats {
        dim_sum: vec![0.0; d],
        ..Default::default()
    };
    let flat_tokens: Vec<u32> = tokens.iter().flatten().copied().collect();
    for (row, x) in acts.chunks_exact(d).enumerate() {
        let sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        if flat_tokens[row] as u64 == bos && row % t == 0 {
            stats.bos_tokens += 1;
            stats.bos_norm_sum += sq.sqrt();
            continue;
        }
        stats.tokens += 1;
        stats.norm_sum += sq.sqrt();
        stats.sq_norm_sum += sq;
        for (s, &v) in stats.dim_sum.iter_mut().zip(x) {
            *s += v as f64;
        }
    }
    let seq_col: Int64Array = seq_ids
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, t))
        .collect();
    let pos_col: Int32Array = (0..tokens.len()).flat_map(|_| 0..t as i32).collect();
    let tok_col: Int32Array = flat_tokens.iter().map(|&x| x as i32).collect();
    let special: BooleanArray = (0..n)
        .map(|r| Some(r % t == 0 && flat_tokens[r] as u64 == bos))
        .collect();
    let (item_type, values): (DataType, ArrayRef) = match dtype {
        ExtractDtype::F32 => (DataType::Float32, Arc::new(Float32Array::from(acts))),
        ExtractDtype::F16 => (
            DataType::Float16,
            Arc::new(Float16Array::from(
                acts.iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>(),
            )),
        ),
    };
    let item = Arc::new(Field::new("item", item_type, false));
    let activation = FixedSizeListArray::try_new(item.clone(), d as i32, values, None)?;
    let schema = Schema::new(vec![
        Field::new("split", DataType::Utf8, false),
        Field::new("seq_id", DataType::Int64, false),
        Field::new("pos", DataType::Int32, false),
        Field::new("token", DataType::Int32, false),
        Field::new("is_special", DataType::Boolean, false),
        Field::new("activation", DataType::FixedSizeList(item, d as i32), false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec![split; n])),
            Arc::new(seq_col),
            Arc::new(pos_col),
            Arc::new(tok_col),
            Arc::new(special),
            Arc::new(activation),
        ],
    )?;
    Ok((batch, stats))
}
