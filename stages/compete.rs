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

use crate::config::{CompeteConfig, Config};
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{bail, Context, Result};
use arrow::array::{
    ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Field, Int32Type, Int64Type, Schema};
use coact::competition::{
    competitors, max_cosines, pair_cosines, random_pairs, unit_rows, FiringCollector, FiringIndex,
    Pair,
};
use coact::rng::SplitMix64;
use coact::text::TextTokenizer;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Tokens encoded per batch.
const ENCODE_BATCH: usize = 4096;
/// The |cos| above which a pair counts as aligned in compete_summary.
const COS_SHARE: f64 = 0.3;

/// The part of the config a compete artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.compete).expect("serialisable")
}

/// One eval row: where the token is.
#[derive(Clone, Copy)]
struct RowMeta {
    seq: i64,
    pos: i32,
}

/// The eval split's token texts by sequence, for contexts.
struct Contexts {
    tokens: BTreeMap<i64, Vec<u32>>,
    tokenizer: Arc<TextTokenizer>,
    window: usize,
}

impl Contexts {
    /// Decoded text of the window around (seq, pos), the token marked
    /// «token»; BOS left out; line breaks shown as ↵.
    fn context(&self, seq: i64, pos: i32) -> Result<String> {
        let toks = self
            .tokens
            .get(&seq)
            .with_context(|| format!("sequence {seq} not in the eval split"))?;
        let p = pos as usize;
        let bos = self.tokenizer.bos_id();
        let first = usize::from(toks.first() == Some(&bos));
        let lo = p.saturating_sub(self.window).max(first).min(p);
        let hi = (p + self.window + 1).min(toks.len());
        let dec = |ids: &[u32]| self.tokenizer.decode(ids);
        let left = dec(&toks[lo..p])?;
        let with_mid = dec(&toks[lo..=p])?;
        let all = dec(&toks[lo..hi])?;
        // Decoding the window once keeps the tokenizer's own joining (spaces
        // between words of a word-level vocabulary, bytes split over tokens);
        // pieces are decoded apart only when the prefixes do not line up.
        let text = if with_mid.starts_with(&left) && all.starts_with(&with_mid) {
            format!(
                "{left}«{}»{}",
                &with_mid[left.len()..],
                &all[with_mid.len()..]
            )
        } else {
            format!("{left}«{}»{}", dec(&toks[p..=p])?, dec(&toks[p + 1..hi])?)
        };
        Ok(text
            .replace("\r\n", "↵")
            .replace(['\n', '\r'], "↵")
            .replace('\t', " "))
    }
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

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let cc = &cfg.compete;
    let started = Instant::now();
    let unit = input.unit()?;
    let sae = input.variant_sae(unit)?.sae;
    let f = sae.cfg.d_sae;

    // Eval activations and where each row is.
    let acts = input.activations()?;
    let (extract_key, edir, files) = (&acts.key, &acts.dir, &acts.files);
    let spinner = input
        .progress
        .spinner(format!("compete {unit}: reading eval activations"));
    let (x, special, d) = acts.read("eval")?;
    let (meta, tokens_by_seq) = read_row_meta(edir, files, "eval")?;
    spinner.finish_and_clear();
    if meta.len() != special.len() {
        bail!(
            "extract/{extract_key}: {} eval rows of activations but {} of positions",
            special.len(),
            meta.len()
        );
    }
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
    let n = rows.len();

    // Encode (BOS excluded) and collect the firing lists.
    let t0 = Instant::now();
    let bar = input
        .progress
        .bar(n as u64, format!("compete {unit}: encode"), "tokens");
    let mut collector = FiringCollector::new(f);
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
    let index = collector.finish();
    let encode_s = t0.elapsed().as_secs_f64();

    // The co-firing pass.
    let t0 = Instant::now();
    let bar = input
        .progress
        .bar(f as u64, format!("compete {unit}: co-firing"), "latents");
    let (pairs, pass) = index.pairs(cc.min_cofirings, cc.tau_min(), &|k| bar.inc(k as u64));
    bar.finish_and_clear();
    let pass_s = t0.elapsed().as_secs_f64();

    // Cosines.
    let t0 = Instant::now();
    let dec = unit_rows(&sae.w_dec, d);
    let enc = unit_rows(&sae.w_enc_t, d);
    let ij: Vec<(u32, u32)> = pairs.iter().map(|p| (p.i, p.j)).collect();
    let dec_cos = pair_cosines(&dec, d, &ij);
    let enc_cos = pair_cosines(&enc, d, &ij);
    drop(ij);
    let (max_dec, max_abs_dec) = max_cosines(&dec, d);
    let comp = competitors(f, &pairs, &dec_cos, &cc.taus);
    let cos_s = t0.elapsed().as_secs_f64();

    let stats = index.latent_stats();
    let dead = stats.iter().filter(|s| s.fired == 0).count();
    let out = input.out_dir;
    let mut tables = BTreeMap::new();
    let mut put = |name: &str, batch: RecordBatch| -> Result<()> {
        let file = format!("{name}.parquet");
        let rows = crate::artifacts::parquet_io::write_all(&out.join(&file), &[batch])?;
        tables.insert(
            name.to_string(),
            TableEntry {
                files: vec![file],
                rows,
            },
        );
        Ok(())
    };

    // compete_latents
    {
        let rows_n = f * cc.taus.len();
        let mut latent = Vec::with_capacity(rows_n);
        let mut tau = Vec::with_capacity(rows_n);
        let mut fired = Vec::with_capacity(rows_n);
        let mut freq = Vec::with_capacity(rows_n);
        let mut mean = Vec::with_capacity(rows_n);
        let mut max = Vec::with_capacity(rows_n);
        let mut count = Vec::with_capacity(rows_n);
        let (mut mdc, mut madc, mut mdcc, mut madcc) = (vec![], vec![], vec![], vec![]);
        for c in &comp {
            for (i, s) in stats.iter().enumerate() {
                latent.push(i as i64);
                tau.push(c.tau);
                fired.push(s.fired as i64);
                freq.push(s.frequency);
                mean.push(s.mean_activation);
                max.push(s.max_activation.map(|v| v as f64));
                count.push(c.count[i] as i64);
                mdc.push(finite(max_dec[i]));
                madc.push(finite(max_abs_dec[i]));
                mdcc.push(c.max_cos[i]);
                madcc.push(c.max_abs_cos[i]);
            }
        }
        put(
            "latents",
            batch(vec![
                col_str("variant", unit, rows_n),
                col_i64("latent", latent),
                col_f64("tau", tau),
                col_i64("n_fired", fired),
                col_f64("frequency", freq),
                col_opt_f64("mean_activation", mean),
                col_opt_f64("max_activation", max),
                col_i64("competitors", count),
                col_opt_f64("max_dec_cos", mdc),
                col_opt_f64("max_abs_dec_cos", madc),
                col_opt_f64("max_dec_cos_competitor", mdcc),
                col_opt_f64("max_abs_dec_cos_competitor", madcc),
            ])?,
        )?;
    }

    // compete_pairs
    {
        let n_of = |l: u32| index.n()[l as usize] as i64;
        put(
            "pairs",
            batch(vec![
                col_str("variant", unit, pairs.len()),
                col_i64("i", pairs.iter().map(|p| p.i as i64).collect()),
                col_i64("j", pairs.iter().map(|p| p.j as i64).collect()),
                col_i64(
                    "cofirings",
                    pairs.iter().map(|p| p.cofirings as i64).collect(),
                ),
                col_i64("n_i", pairs.iter().map(|p| n_of(p.i)).collect()),
                col_i64("n_j", pairs.iter().map(|p| n_of(p.j)).collect()),
                col_f64("c_ij", pairs.iter().map(|p| p.c).collect()),
                col_f64("dec_cos", dec_cos.clone()),
                col_f64("enc_cos", enc_cos),
            ])?,
        )?;
    }

    // compete_summary
    let mut summary_rows = Vec::new();
    {
        let mut cols: Vec<Vec<Option<f64>>> = vec![vec![]; 4];
        let (mut tau, mut competing, mut random_n, mut without) = (vec![], vec![], vec![], vec![]);
        for (t, c) in cc.taus.iter().zip(&comp) {
            let cos: Vec<f64> = pairs
                .iter()
                .zip(&dec_cos)
                .filter(|(p, _)| p.c >= *t)
                .map(|(_, &c)| c.abs())
                .collect();
            let rnd: Vec<f64> = pair_cosines(
                &dec,
                d,
                &random_pairs(f, cos.len(), tau_seed(cc.random_seed, *t)),
            )
            .into_iter()
            .map(f64::abs)
            .collect();
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let share = |v: &[f64]| {
                (!v.is_empty())
                    .then(|| v.iter().filter(|&&c| c > COS_SHARE).count() as f64 / v.len() as f64)
            };
            let no_comp = c.count.iter().filter(|&&k| k == 0).count();
            cols[0].push(mean(&cos));
            cols[1].push(mean(&rnd));
            cols[2].push(share(&cos));
            cols[3].push(share(&rnd));
            tau.push(*t);
            competing.push(cos.len() as i64);
            random_n.push(rnd.len() as i64);
            without.push(no_comp as i64);
            summary_rows.push(json!({
                "tau": t,
                "competing_pairs": cos.len(),
                "mean_abs_cos_competing": mean(&cos),
                "mean_abs_cos_random": mean(&rnd),
                "share_cos_over_0_3": share(&cos),
                "share_random_cos_over_0_3": share(&rnd),
                "latents_without_competitor": no_comp,
            }));
        }
        let k = cc.taus.len();
        put(
            "summary",
            batch(vec![
                col_str("variant", unit, k),
                col_f64("tau", tau),
                col_i64("d_sae", vec![f as i64; k]),
                col_i64("eval_tokens", vec![n as i64; k]),
                col_i64("dead_latents", vec![dead as i64; k]),
                col_i64("competing_pairs", competing),
                col_i64("random_pairs", random_n),
                col_opt_f64("mean_abs_cos_competing", cols[0].clone()),
                col_opt_f64("mean_abs_cos_random", cols[1].clone()),
                col_opt_f64("share_cos_over_0_3", cols[2].clone()),
                col_opt_f64("share_random_cos_over_0_3", cols[3].clone()),
                col_i64("latents_without_competitor", without),
            ])?,
        )?;
    }

    // Contexts: compete_examples and compete_top_contexts.
    let t0 = Instant::now();
    let ctx = Contexts {
        tokens: tokens_by_seq,
        tokenizer: input.tokenizer()?,
        window: cc.context_window,
    };
    let where_is = |t: u32| meta[rows[t as usize]];
    put(
        "examples",
        examples(unit, cc, &index, &pairs, &ctx, &where_is)?,
    )?;
    let competing_at_min = {
        let k = cc
            .taus
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, _)| k)
            .unwrap_or(0);
        &comp[k].count
    };
    put(
        "top_contexts",
        top_contexts(unit, cc, &index, competing_at_min, &ctx, &where_is)?,
    )?;
    let context_s = t0.elapsed().as_secs_f64();

    let mean_max_dec = {
        let v: Vec<f64> = max_dec.iter().copied().filter(|c| c.is_finite()).collect();
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
        tables,
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

/// The random baseline's seed for a threshold: the config's seed mixed with
/// tau's bits, so that adding a tau leaves the others' pairs unchanged.
fn tau_seed(seed: u64, tau: f64) -> u64 {
    seed ^ tau.to_bits().wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// compete_examples: contexts of the top competing pairs.
fn examples(
    unit: &str,
    cc: &CompeteConfig,
    index: &FiringIndex,
    pairs: &[Pair],
    ctx: &Contexts,
    where_is: &dyn Fn(u32) -> RowMeta,
) -> Result<RecordBatch> {
    let mut top: Vec<&Pair> = pairs.iter().collect();
    top.sort_by(|a, b| {
        b.c.total_cmp(&a.c)
            .then(b.cofirings.cmp(&a.cofirings))
            .then((a.i, a.j).cmp(&(b.i, b.j)))
    });
    top.truncate(cc.example_pairs);
    let mut r = Rows::default();
    for (rank, p) in top.iter().enumerate() {
        let mut both = index.cofiring_tokens(p.i, p.j);
        both.sort_by(|a, b| b.1.min(b.2).total_cmp(&a.1.min(a.2)).then(a.0.cmp(&b.0)));
        for (e, &(t, ai, aj)) in both.iter().take(cc.examples_per_pair).enumerate() {
            let m = where_is(t);
            r.pair_rank.push(rank as i64 + 1);
            r.i.push(p.i as i64);
            r.j.push(p.j as i64);
            r.c.push(p.c);
            r.cofirings.push(p.cofirings as i64);
            r.example.push(e as i64 + 1);
            r.seq.push(m.seq);
            r.pos.push(m.pos as i64);
            r.act_i.push(ai);
            r.act_j.push(aj);
            r.context.push(ctx.context(m.seq, m.pos)?);
        }
    }
    let k = r.seq.len();
    batch(vec![
        col_str("variant", unit, k),
        col_i64("pair_rank", r.pair_rank),
        col_i64("i", r.i),
        col_i64("j", r.j),
        col_f64("c_ij", r.c),
        col_i64("cofirings", r.cofirings),
        col_i64("example", r.example),
        col_i64("sequence", r.seq),
        col_i64("position", r.pos),
        col_f32("act_i", r.act_i),
        col_f32("act_j", r.act_j),
        ("context", Arc::new(StringArray::from(r.context)), false),
    ])
}

#[derive(Default)]
struct Rows {
    pair_rank: Vec<i64>,
    i: Vec<i64>,
    j: Vec<i64>,
    c: Vec<f64>,
    cofirings: Vec<i64>,
    example: Vec<i64>,
    seq: Vec<i64>,
    pos: Vec<i64>,
    act_i: Vec<f32>,
    act_j: Vec<f32>,
    context: Vec<String>,
}

/// The dashboard latents: the most competing ones (most competitors at the
/// smallest tau, ties by firings then id) and random alive ones not among
/// them.
fn dashboard_latents(
    cc: &CompeteConfig,
    index: &FiringIndex,
    competitors: &[u64],
) -> Vec<(u32, &'static str)> {
    let n = index.n();
    let mut by_comp: Vec<u32> = (0..competitors.len() as u32)
        .filter(|&i| competitors[i as usize] > 0)
        .collect();
    by_comp.sort_by(|&a, &b| {
        competitors[b as usize]
            .cmp(&competitors[a as usize])
            .then(n[b as usize].cmp(&n[a as usize]))
            .then(a.cmp(&b))
    });
    by_comp.truncate(cc.dashboard_latents);
    let chosen: BTreeSet<u32> = by_comp.iter().copied().collect();
    let mut alive: Vec<u32> = (0..n.len() as u32)
        .filter(|&i| n[i as usize] > 0 && !chosen.contains(&i))
        .collect();
    SplitMix64::new(cc.random_seed ^ 0xDA5B_0A4D).shuffle(&mut alive);
    alive.truncate(cc.dashboard_latents);
    by_comp
        .into_iter()
        .map(|l| (l, "competing"))
        .chain(alive.into_iter().map(|l| (l, "random")))
        .collect()
}

/// compete_top_contexts: top-activating contexts of the dashboard latents.
fn top_contexts(
    unit: &str,
    cc: &CompeteConfig,
    index: &FiringIndex,
    competitors: &[u64],
    ctx: &Contexts,
    where_is: &dyn Fn(u32) -> RowMeta,
) -> Result<RecordBatch> {
    let (mut latent, mut reason, mut rank, mut act, mut seq, mut pos, mut text) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (l, why) in dashboard_latents(cc, index, competitors) {
        for (r, (t, a)) in index.top_tokens(l, cc.top_contexts).into_iter().enumerate() {
            let m = where_is(t);
            latent.push(l as i64);
            reason.push(why);
            rank.push(r as i64 + 1);
            act.push(a);
            seq.push(m.seq);
            pos.push(m.pos as i64);
            text.push(ctx.context(m.seq, m.pos)?);
        }
    }
    let k = latent.len();
    batch(vec![
        col_str("variant", unit, k),
        col_i64("latent", latent),
        ("reason", Arc::new(StringArray::from(reason)), false),
        col_i64("rank", rank),
        col_f32("activation", act),
        col_i64("sequence", seq),
        col_i64("position", pos),
        ("context", Arc::new(StringArray::from(text)), false),
    ])
}

/// (seq_id, pos) of every row of a split's shards, in the order
/// `read_activations` returns them, and each sequence's tokens.
#[allow(clippy::type_complexity)]
fn read_row_meta(
    dir: &Path,
    files: &[String],
    split: &str,
) -> Result<(Vec<RowMeta>, BTreeMap<i64, Vec<u32>>)> {
    let mut meta = Vec::new();
    let mut seqs: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.starts_with(&format!("{split}-"))) {
        let path = dir.join(f);
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a Parquet file", path.display()))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["seq_id", "pos", "token"]);
        for b in builder.with_projection(mask).build()? {
            let b = b.with_context(|| format!("reading {}", path.display()))?;
            let col = |name: &str| {
                b.column_by_name(name)
                    .with_context(|| format!("{}: no {name} column", path.display()))
            };
            let seq = col("seq_id")?.as_primitive::<Int64Type>().clone();
            let pos = col("pos")?.as_primitive::<Int32Type>().clone();
            let tok = col("token")?.as_primitive::<Int32Type>().clone();
            for r in 0..b.num_rows() {
                let (s, p, t) = (seq.value(r), pos.value(r), tok.value(r));
                meta.push(RowMeta { seq: s, pos: p });
                let toks = seqs.entry(s).or_default();
                let p = p as usize;
                if toks.len() <= p {
                    toks.resize(p + 1, 0);
                }
                toks[p] = t as u32;
            }
        }
    }
    Ok((meta, seqs))
}

type Column = (&'static str, ArrayRef, bool);

fn col_str(name: &'static str, value: &str, n: usize) -> Column {
    (name, Arc::new(StringArray::from(vec![value; n])), false)
}
fn col_i64(name: &'static str, v: Vec<i64>) -> Column {
    (name, Arc::new(Int64Array::from(v)), false)
}
fn col_f64(name: &'static str, v: Vec<f64>) -> Column {
    (name, Arc::new(Float64Array::from(v)), false)
}
fn col_f32(name: &'static str, v: Vec<f32>) -> Column {
    (name, Arc::new(Float32Array::from(v)), false)
}
fn col_opt_f64(name: &'static str, v: Vec<Option<f64>>) -> Column {
    (name, Arc::new(Float64Array::from(v)), true)
}

fn batch(columns: Vec<Column>) -> Result<RecordBatch> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )?)
}
