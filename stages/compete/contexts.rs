//! compete's token contexts: where each eval row is, the decoded window
//! around a token, and the tables built from them (compete_examples for the
//! top competing pairs, compete_top_contexts for the report's dashboards).

use super::tables::{batch, col_f32, col_f64, col_i64, col_str};
use crate::config::CompeteConfig;
use anyhow::{Context, Result};
use arrow::array::{RecordBatch, StringArray};
use coact::competition::{FiringIndex, Pair};
use coact::rng::SplitMix64;
use coact::text::TextTokenizer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One eval row: where the token is.
#[derive(Clone, Copy)]
pub(super) struct RowMeta {
    pub(super) seq: i64,
    pub(super) pos: i32,
}

/// The eval split's token texts by sequence, for contexts.
pub(super) struct Contexts {
    pub(super) tokens: BTreeMap<i64, Vec<u32>>,
    pub(super) tokenizer: Arc<TextTokenizer>,
    pub(super) window: usize,
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

/// compete_examples: contexts of the top competing pairs.
pub(super) fn examples(
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
    let mut r = ExampleColumns::default();
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

/// compete_examples' columns as they fill, one entry per example.
#[derive(Default)]
struct ExampleColumns {
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
pub(super) fn top_contexts(
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
