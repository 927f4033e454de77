//! Reads one variant's compete artifact into the report: the competition
//! summary at the report's tau, the decoder cosines of competing pairs, the
//! top pairs' example contexts and the feature dashboards.

use super::collect::{only_variant, read_table};
use super::data::{CosBin, C_BINS};
use super::{
    CompetitionSummary, Competitor, ContextRow, LatentCard, PairExample, ReportConfig, ReportData,
};
use crate::artifacts::columns::{f64s, i64s, opt_f64s, opt_i64s, opt_strs, strs};
use crate::pipeline::store::Store;
use anyhow::Result;
use arrow::array::RecordBatch;
use std::collections::BTreeMap;

/// A row of compete_pairs: i, j, c_ij, decoder cosine, co-firings.
type PairRow = (i64, i64, f64, f64, Option<f64>);

/// A latent's frequency and max activation, and how far the row's tau lies
/// from the report's.
type LatentStat = (Option<f64>, Option<f64>, f64);

pub fn read_compete(
    store: &Store,
    key: &str,
    variant: &str,
    cfg: &ReportConfig,
    data: &mut ReportData,
) -> Result<()> {
    let m = store.manifest("compete", key)?;
    let tau = cfg.histogram_tau;
    let mut table = |name: &str| -> Option<Vec<RecordBatch>> {
        match read_table(store, "compete", key, &m, name).and_then(|b| only_variant(b, variant)) {
            Ok(b) => Some(b),
            Err(e) => {
                data.notes
                    .push(format!("compete_{name} of {variant}: {e:#}"));
                None
            }
        }
    };
    let summary = table("summary");
    let pairs = table("pairs");
    let latents = table("latents");
    let contexts = table("top_contexts");
    let examples = if cfg.dashboard_pairs > 0 {
        table("examples")
    } else {
        None
    };

    if let Some(batches) = summary {
        if let Some(best) = summary_at(&batches, tau)? {
            data.competition.insert(variant.to_string(), best);
        }
    }
    // Pairs: decoder cosines of competing pairs, and each latent's competitors.
    let mut pair_rows: Vec<PairRow> = Vec::new();
    if let Some(batches) = pairs {
        pair_rows = read_pairs(&batches)?;
        data.cos_by_c
            .insert(variant.to_string(), cos_bins(&pair_rows));
        data.competing_cos.insert(
            variant.to_string(),
            pair_rows
                .iter()
                .filter(|p| p.2 >= tau - 1e-12)
                .map(|p| p.3)
                .collect(),
        );
    }
    if let Some(batches) = examples {
        let ex = pair_examples(&batches, &pair_rows, cfg.dashboard_pairs)?;
        data.pair_examples.insert(variant.to_string(), ex);
    }
    let stats = match latents {
        Some(batches) => latent_stats(&batches, tau)?,
        None => BTreeMap::new(),
    };
    if let Some(batches) = contexts {
        let cards = dashboards(&batches, &pair_rows, &stats, cfg)?;
        data.dashboards.insert(variant.to_string(), cards);
    }
    Ok(())
}

/// The compete_summary row at `tau`, else the nearest one.
fn summary_at(batches: &[RecordBatch], tau: f64) -> Result<Option<CompetitionSummary>> {
    let mut rows: Vec<CompetitionSummary> = Vec::new();
    for b in batches {
        let t = f64s(b, "tau")?;
        let cols: Vec<Vec<Option<f64>>> = [
            "competing_pairs",
            "mean_abs_cos_competing",
            "mean_abs_cos_random",
            "share_cos_over_0_3",
            "share_random_cos_over_0_3",
            "latents_without_competitor",
        ]
        .iter()
        .map(|c| opt_f64s(b, c))
        .collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let Some(t) = t[r] else { continue };
            rows.push(CompetitionSummary {
                tau: t,
                competing_pairs: cols[0][r],
                mean_abs_cos_competing: cols[1][r],
                mean_abs_cos_random: cols[2][r],
                share_cos_over_0_3: cols[3][r],
                share_random_cos_over_0_3: cols[4][r],
                latents_without_competitor: cols[5][r],
            });
        }
    }
    Ok(rows
        .into_iter()
        .min_by(|a, b| (a.tau - tau).abs().total_cmp(&(b.tau - tau).abs())))
}

/// Every complete row of compete_pairs.
fn read_pairs(batches: &[RecordBatch]) -> Result<Vec<PairRow>> {
    let mut out = Vec::new();
    for b in batches {
        let i = i64s(b, "i")?;
        let j = i64s(b, "j")?;
        let c = f64s(b, "c_ij")?;
        let d = f64s(b, "dec_cos")?;
        let co = opt_f64s(b, "cofirings")?;
        for r in 0..b.num_rows() {
            if let (Some(i), Some(j), Some(c), Some(d)) = (i[r], j[r], c[r], d[r]) {
                out.push((i, j, c, d, co[r]));
            }
        }
    }
    Ok(out)
}

/// Mean |decoder cosine| of the pairs in each c_ij bin ([`C_BINS`]).
pub(super) fn cos_bins(pairs: &[PairRow]) -> Vec<CosBin> {
    C_BINS
        .windows(2)
        .map(|w| {
            let cos: Vec<f64> = pairs
                .iter()
                .filter(|p| p.2 >= w[0] && p.2 < w[1])
                .map(|p| p.3.abs())
                .collect();
            CosBin {
                lo: w[0],
                hi: w[1].min(1.0),
                pairs: cos.len(),
                mean_abs_cos: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
            }
        })
        .collect()
}

/// One example context per top competing pair, in pair_rank order, at most
/// `keep` of them.
fn pair_examples(
    batches: &[RecordBatch],
    pair_rows: &[PairRow],
    keep: usize,
) -> Result<Vec<PairExample>> {
    let mut rows: Vec<(i64, PairExample)> = Vec::new();
    for b in batches {
        let rank = opt_i64s(b, "pair_rank")?;
        let i = i64s(b, "i")?;
        let j = i64s(b, "j")?;
        let c = opt_f64s(b, "c_ij")?;
        let ai = opt_f64s(b, "act_i")?;
        let aj = opt_f64s(b, "act_j")?;
        let ctx = strs(b, "context")?;
        for r in 0..b.num_rows() {
            let (Some(i), Some(j), Some(text)) = (i[r], j[r], &ctx[r]) else {
                continue;
            };
            let pr = rank[r].unwrap_or(i64::MAX);
            if rows.iter().any(|(rk, p)| *rk == pr && p.i == i && p.j == j) {
                continue;
            }
            let dec_cos = pair_rows
                .iter()
                .find(|p| (p.0 == i && p.1 == j) || (p.0 == j && p.1 == i))
                .map(|p| p.3);
            rows.push((
                pr,
                PairExample {
                    i,
                    j,
                    c_ij: c[r].unwrap_or(f64::NAN),
                    dec_cos,
                    act_i: ai[r],
                    act_j: aj[r],
                    context: text.clone(),
                },
            ));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.truncate(keep);
    Ok(rows.into_iter().map(|r| r.1).collect())
}

/// Per-latent statistics at the report's tau (frequency and max activation
/// do not depend on it; any row will do when that tau is absent).
fn latent_stats(batches: &[RecordBatch], tau: f64) -> Result<BTreeMap<i64, LatentStat>> {
    let mut stats: BTreeMap<i64, LatentStat> = BTreeMap::new();
    for b in batches {
        let l = i64s(b, "latent")?;
        let t = opt_f64s(b, "tau")?;
        let f = opt_f64s(b, "frequency")?;
        let mx = opt_f64s(b, "max_act")?;
        for r in 0..b.num_rows() {
            let Some(l) = l[r] else { continue };
            let dist = t[r].map(|t| (t - tau).abs()).unwrap_or(0.0);
            let e = stats.entry(l).or_insert((f[r], mx[r], dist));
            if dist < e.2 {
                *e = (f[r], mx[r], dist);
            }
        }
    }
    Ok(stats)
}

/// A latent of compete_top_contexts: its id, why it was chosen, and its
/// (rank, context) rows.
type LatentContexts = (i64, String, Vec<(i64, ContextRow)>);

/// The feature dashboards: the chosen latents' cards.
fn dashboards(
    batches: &[RecordBatch],
    pair_rows: &[PairRow],
    stats: &BTreeMap<i64, LatentStat>,
    cfg: &ReportConfig,
) -> Result<Vec<LatentCard>> {
    let by_latent = contexts_by_latent(batches)?;
    Ok(choose_latents(&by_latent, cfg.dashboard_latents)
        .into_iter()
        .map(|i| card(by_latent[i].clone(), pair_rows, stats, cfg))
        .collect())
}

/// compete_top_contexts grouped by latent, in the table's order.
fn contexts_by_latent(batches: &[RecordBatch]) -> Result<Vec<LatentContexts>> {
    let mut by_latent: Vec<LatentContexts> = Vec::new();
    for b in batches {
        let l = i64s(b, "latent")?;
        let reason = opt_strs(b, "reason")?;
        let rank = opt_i64s(b, "rank")?;
        let act = opt_f64s(b, "activation")?;
        let ctx = strs(b, "context")?;
        for r in 0..b.num_rows() {
            let (Some(l), Some(c)) = (l[r], &ctx[r]) else {
                continue;
            };
            let row = ContextRow {
                activation: act[r].unwrap_or(f64::NAN),
                context: c.clone(),
            };
            let rk = rank[r].unwrap_or(i64::MAX);
            match by_latent.iter_mut().find(|e| e.0 == l) {
                Some(e) => e.2.push((rk, row)),
                None => by_latent.push((
                    l,
                    reason[r].clone().unwrap_or_else(|| "?".into()),
                    vec![(rk, row)],
                )),
            }
        }
    }
    Ok(by_latent)
}

/// Half of `want` latents from the most-competing, the rest random (either
/// fills in when the other runs short): indices into `by_latent`.
fn choose_latents(by_latent: &[LatentContexts], want: usize) -> Vec<usize> {
    let competing: Vec<usize> = (0..by_latent.len())
        .filter(|&i| by_latent[i].1 == "competing")
        .collect();
    let others: Vec<usize> = (0..by_latent.len())
        .filter(|&i| by_latent[i].1 != "competing")
        .collect();
    let n_comp = want.div_ceil(2).min(competing.len());
    let n_other = (want - n_comp).min(others.len());
    let n_comp = (want - n_other).min(competing.len());
    competing[..n_comp]
        .iter()
        .chain(&others[..n_other])
        .copied()
        .collect()
}

/// One latent's card: its top contexts and strongest competitors.
fn card(
    latent: LatentContexts,
    pair_rows: &[PairRow],
    stats: &BTreeMap<i64, LatentStat>,
    cfg: &ReportConfig,
) -> LatentCard {
    let (latent, reason, mut rows) = latent;
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.activation.total_cmp(&a.1.activation))
    });
    let mut comps: Vec<Competitor> = pair_rows
        .iter()
        .filter(|p| p.0 == latent || p.1 == latent)
        .map(|p| Competitor {
            latent: if p.0 == latent { p.1 } else { p.0 },
            c_ij: p.2,
            dec_cos: p.3,
            cofirings: p.4,
        })
        .collect();
    comps.sort_by(|a, b| b.c_ij.total_cmp(&a.c_ij));
    comps.truncate(cfg.dashboard_competitors);
    let st = stats.get(&latent);
    LatentCard {
        latent,
        reason,
        frequency: st.and_then(|s| s.0),
        max_act: st.and_then(|s| s.1),
        contexts: rows
            .into_iter()
            .take(cfg.dashboard_contexts)
            .map(|r| r.1)
            .collect(),
        competitors: comps,
    }
}
