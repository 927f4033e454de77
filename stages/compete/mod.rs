//! compete: per-variant co-firing statistics and competition patterns on the
//! eval split's activations (BOS rows excluded), as five tables:
//!
//! - `compete_latents` (variant, latent, tau, n_fired, frequency,
//!   mean_activation, max_activation, competitors, max_dec_cos,
//!   max_abs_dec_cos, max_dec_cos_competitor, max_abs_dec_cos_competitor):
//!   one row per latent and configured tau.
//! - `compete_pairs` (variant, i, j, cofirings, n_i, n_j, c_ij, dec_cos,
//!   enc_cos): every pair with `c_ij >=` the smallest tau and
//!   `cofirings >= min_cofirings`.
//! - `compete_summary` (variant, tau, d_sae, eval_tokens, dead_latents,
//!   competing_pairs, random_pairs, mean_abs_cos_competing,
//!   mean_abs_cos_random, share_cos_over_0_3, share_random_cos_over_0_3,
//!   latents_without_competitor).
//! - `compete_examples` (variant, pair_rank, i, j, c_ij, cofirings, example,
//!   sequence, position, act_i, act_j, context): token contexts where the top
//!   competing pairs both fire.
//! - `compete_top_contexts` (variant, latent, reason, rank, activation,
//!   sequence, position, context): top-activating contexts of the most
//!   competing latents and of random ones, for the report's dashboards.
//!
//! A latent fires on a token when its activation is > 0, for TopK and ReLU-L1
//! SAEs alike; `c_ij = C_ij / min(n_i, n_j)` (SPEC.md). Cosines are signed
//! (`dec_cos`, `enc_cos`, `max_dec_cos`); the `abs` columns take |cos|.
//! `max_dec_cos` is SAEBench's per-latent max decoder cosine (signed max over
//! the other latents), so its mean over a variant's latents is SAEBench's
//! mean max decoder cosine. The counting engine is src/competition.rs; its
//! docs state the memory bound (12 bytes per firing, never F x F).

mod contexts;
mod tables;

use crate::config::Config;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use anyhow::{bail, Result};
use coact::competition::{
    competitors, max_cosines, pair_cosines, unit_rows, Competitors, FiringCollector, FiringIndex,
    Pair, PassStats,
};
use coact::sae::Sae;
use contexts::{Contexts, RowMeta};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;
use tables::TableWriter;

/// Tokens encoded per batch.
const ENCODE_BATCH: usize = 4096;

/// The part of the config a compete artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.compete).expect("serialisable")
}

/// Counts co-firings and competition statistics per variant.
pub struct Compete;

impl Stage for Compete {
    fn name(&self) -> &'static str {
        "compete"
    }
    fn about(&self) -> &'static str {
        "co-firing counts, c_ij, competing pairs and their decoder cosines"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["tokenize", "extract", "train"]
    }
    /// One variant per unit; the co-firing counts do not depend on threads.
    fn concurrent_units(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(cfg
            .variants()
            .into_iter()
            .map(|v| Unit {
                config: key_config(cfg),
                uses: Some(vec![
                    "tokenize".into(),
                    "extract".into(),
                    format!("train/{}", v.name),
                ]),
                unit: Some(v.name),
            })
            .collect())
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

/// The eval split's rows besides BOS: token t of the firing index is row
/// `rows[t]` of the split.
struct EvalRows {
    d: usize,
    rows: Vec<usize>,
    meta: Vec<RowMeta>,
    tokens_by_seq: BTreeMap<i64, Vec<u32>>,
}

/// The decoder's unit rows and the cosines compete reports: each kept pair's
/// decoder and encoder cosine, each latent's max decoder cosine, and the
/// competitors at every tau.
struct Cosines {
    dec: Vec<f32>,
    dec_cos: Vec<f64>,
    enc_cos: Vec<f64>,
    max_dec: Vec<f64>,
    max_abs_dec: Vec<f64>,
    competitors: Vec<Competitors>,
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cc = &input.cfg.compete;
    let started = Instant::now();
    let unit = input.unit()?;
    let sae = input.variant_sae(unit)?.sae;
    let f = sae.cfg.d_sae;

    let (x, eval) = read_eval(input, unit, &sae)?;
    let n = eval.rows.len();
    let t0 = Instant::now();
    let index = encode(input, unit, &sae, x, &eval)?;
    let encode_s = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let (pairs, pass) = cofiring_pass(input, unit, &index);
    let pass_s = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let cos = cosines(input, &sae, eval.d, &pairs);
    let cos_s = t0.elapsed().as_secs_f64();

    let stats = index.latent_stats();
    let dead = stats.iter().filter(|s| s.fired == 0).count();
    let mut out = TableWriter::new(input.out_dir);
    out.put("latents", tables::latents(unit, &stats, &cos)?)?;
    out.put("pairs", tables::pairs(unit, &index, &pairs, &cos)?)?;
    let (summary, summary_rows) = tables::summary(unit, cc, &eval, &pairs, &cos, (f, dead))?;
    out.put("summary", summary)?;

    let t0 = Instant::now();
    write_contexts(input, unit, eval, &index, &pairs, &cos, &mut out)?;
    let context_s = t0.elapsed().as_secs_f64();

    let mean_max_dec = {
        let v: Vec<f64> = cos
            .max_dec
            .iter()
            .copied()
            .filter(|c| c.is_finite())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    input.progress.note(format!(
        "compete/{unit}: {n} eval tokens, L0 {:.1}, {dead} dead of {f}, {} co-firing pairs, {} kept \
         (C >= {}, c >= {}); {:.1} s",
        index.entries() as f64 / n as f64,
        pass.cofiring_pairs,
        pairs.len(),
        cc.min_cofirings,
        cc.tau_min(),
        started.elapsed().as_secs_f64()
    ));
    Ok(StageOutput {
        tables: out.tables,
        summary: json!({
            "variant": unit,
            "kind": sae.cfg.kind.architecture().name(),
            "d_sae": f,
            "eval_tokens": n,
            "l0": index.entries() as f64 / n as f64,
            "dead_latents": dead,
            "cofiring_pairs": pass.cofiring_pairs,
            "kept_pairs": pairs.len(),
            "mean_max_dec_cos": mean_max_dec,
            "memory_bytes_lists": index.bytes(),
            "by_tau": summary_rows,
            "seconds": {
                "encode": encode_s,
                "cofiring": pass_s,
                "cosines": cos_s,
                "contexts": context_s,
                "total": started.elapsed().as_secs_f64(),
            },
        }),
    })
}

/// The eval activations (all rows) and where each row is, checked against
/// the SAE; BOS rows are left out of `rows`.
fn read_eval(input: &StageInput, unit: &str, sae: &Sae) -> Result<(Vec<f32>, EvalRows)> {
    let acts = input.activations()?;
    let extract_key = &acts.key;
    let spinner = input
        .progress
        .spinner(format!("compete {unit}: reading eval activations"));
    // The eval split's reader also checks that rows and positions agree.
    let split = acts.eval_split()?;
    spinner.finish_and_clear();
    let mut meta = Vec::with_capacity(split.special.len());
    let mut tokens_by_seq = BTreeMap::new();
    for (range, &seq) in split.sequences.iter().zip(&split.seq_ids) {
        meta.extend((0..range.len()).map(|pos| RowMeta {
            seq,
            pos: pos as i32,
        }));
        tokens_by_seq.insert(seq, split.tokens[range.clone()].to_vec());
    }
    let (x, special, d) = (split.x, split.special, split.d);
    if d != sae.cfg.d_in {
        bail!(
            "train/{unit} takes d_in = {} but extract/{extract_key} holds d_model = {d}",
            sae.cfg.d_in
        );
    }
    let rows: Vec<usize> = (0..special.len()).filter(|&r| !special[r]).collect();
    if rows.is_empty() {
        bail!("extract/{extract_key}: no eval tokens besides BOS");
    }
    let eval = EvalRows {
        d,
        rows,
        meta,
        tokens_by_seq,
    };
    Ok((x, eval))
}

/// Encodes the eval rows (BOS excluded) and collects the firing lists; the
/// activations are dropped once encoded.
fn encode(
    input: &StageInput,
    unit: &str,
    sae: &Sae,
    x: Vec<f32>,
    eval: &EvalRows,
) -> Result<FiringIndex> {
    let (d, rows) = (eval.d, &eval.rows);
    let bar = input.progress.bar(
        rows.len() as u64,
        format!("compete {unit}: encode"),
        "tokens",
    );
    let mut collector = FiringCollector::new(sae.cfg.d_sae);
    let mut buf = Vec::with_capacity(ENCODE_BATCH * d);
    for chunk in rows.chunks(ENCODE_BATCH) {
        buf.clear();
        for &r in chunk {
            buf.extend_from_slice(&x[r * d..(r + 1) * d]);
        }
        let codes = sae.encode(&buf, chunk.len())?;
        collector.add_codes(&codes)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    drop(x);
    Ok(collector.finish())
}

/// The co-firing pass: the pairs that pass the count and `tau_min` filters.
fn cofiring_pass(input: &StageInput, unit: &str, index: &FiringIndex) -> (Vec<Pair>, PassStats) {
    let cc = &input.cfg.compete;
    let bar = input.progress.bar(
        index.d_sae() as u64,
        format!("compete {unit}: co-firing"),
        "latents",
    );
    let pairs = index.pairs(cc.min_cofirings, cc.tau_min(), &|k| bar.inc(k as u64));
    bar.finish_and_clear();
    pairs
}

/// Decoder and encoder cosines of the kept pairs, each latent's max decoder
/// cosine, and the competitors at every tau.
fn cosines(input: &StageInput, sae: &Sae, d: usize, pairs: &[Pair]) -> Cosines {
    let dec = unit_rows(&sae.w_dec, d);
    let enc = unit_rows(&sae.w_enc_t, d);
    let ij: Vec<(u32, u32)> = pairs.iter().map(|p| (p.i, p.j)).collect();
    let dec_cos = pair_cosines(&dec, d, &ij);
    let enc_cos = pair_cosines(&enc, d, &ij);
    drop(ij);
    let (max_dec, max_abs_dec) = max_cosines(&dec, d);
    let competitors = competitors(sae.cfg.d_sae, pairs, &dec_cos, &input.cfg.compete.taus);
    Cosines {
        dec,
        dec_cos,
        enc_cos,
        max_dec,
        max_abs_dec,
        competitors,
    }
}

/// compete_examples and compete_top_contexts; the dashboards' competing
/// latents are those with the most competitors at the smallest tau.
fn write_contexts(
    input: &StageInput,
    unit: &str,
    eval: EvalRows,
    index: &FiringIndex,
    pairs: &[Pair],
    cos: &Cosines,
    out: &mut TableWriter,
) -> Result<()> {
    let cc = &input.cfg.compete;
    let ctx = Contexts {
        tokens: eval.tokens_by_seq,
        tokenizer: input.tokenizer()?,
        window: cc.context_window,
    };
    let (meta, rows) = (&eval.meta, &eval.rows);
    let where_is = |t: u32| meta[rows[t as usize]];
    out.put(
        "examples",
        contexts::examples(unit, cc, index, pairs, &ctx, &where_is)?,
    )?;
    let competing_at_min = {
        let k = cc
            .taus
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, _)| k)
            .unwrap_or(0);
        &cos.competitors[k].count
    };
    out.put(
        "top_contexts",
        contexts::top_contexts(unit, cc, index, competing_at_min, &ctx, &where_is)?,
    )?;
    Ok(())
}
