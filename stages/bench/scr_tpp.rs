//! SCR (spurious correlation removal) and TPP (targeted probe
//! perturbation), SAEBench's scr_and_tpp evals, from the same activations.
//!
//! Both train probes on the model's mean-pooled residual (logistic
//! regression with an L1 penalty, SAEBench's probe_l1_penalty 1e-3, here on
//! the residual scaled to unit mean squared entry), pick the latents that
//! matter to a probe by `effect_i = (mean_pos,i - mean_neg,i) * (w . d_i)`
//! (mean-pooled latents on the probe's train set, `d_i` the unit decoder
//! row), zero-ablate the top N latents while keeping the SAE's error term,
//! and score probes on the ablated test activations. Ablation is done on the
//! pooled activations (`x̄ - sum_{i in A} f̄_i d_i`, exact because the
//! decoder is linear; see coact::metrics::probing).
//!
//! SCR, on two binary tasks A and B of one dataset (`scr_tasks`, default
//! party and era; SAEBench: profession and gender). Per split the four
//! quadrants (A class, B class) are cut to the smallest one's size q; the
//! A probe is trained on A's classes balanced across B, the B probe on B's
//! classes balanced across A, and the biased probe on (A0, B0) against (A1,
//! B1), where A and B are perfectly correlated (min(|A0B0|, |A1B1|, 2q) per
//! side, as SAEBench's pos_pos / neg_neg). Direction `X->Y` ablates the top
//! N latents by |effect| on the X probe and scores the biased probe on Y's
//! test set: SCR = (A_abl - A_biased) / (A_oracle - A_biased) with A_oracle
//! the Y probe's clean accuracy, 0 when the denominator is < 0.001.
//! SAEBench's dir1 is `B->A`, dir2 `A->B`; `scr_metric` is the direction
//! SAEBench reports (dir1 when the biased probe is less accurate on A's data
//! than on B's, else dir2).
//!
//! TPP, on one task with at least two classes (`tpp_task`, default period):
//! one one-vs-rest probe per class (classes balanced as in sparse probing);
//! for class i, ablate the top N latents by effect (positive-class mean
//! difference only) on probe i; intended drop = probe i's clean minus
//! ablated test accuracy, unintended = the mean of that drop over the other
//! classes' probes; `tpp_total` = intended - unintended, averaged over
//! classes.
//!
//! Seeds: each seed redraws the balanced samples and keeps `train_fraction`
//! of the train pieces (SAEBench's seeds also reshuffle SGD probe training;
//! coact's solver is deterministic). SAEBench reports seed noise up to ~0.08
//! on SCR; the tables keep every seed so that the report can show the spread.
//!
//! Differences from SAEBench, besides the sizes: the same balanced test
//! sample serves the clean and the ablated accuracies (SAEBench redraws the
//! negatives), probes are fit to convergence without early stopping on the
//! test set, and N above the number of latents with a non-zero effect
//! ablates those only (SAEBench does the same, with a warning).
//!
//! Output: tables `scr` (bench_scr: variant, dataset, direction, n, seed,
//! metric, value; metrics scr, scr_metric, a_abl, a_biased, a_oracle) and
//! `tpp` (bench_tpp: variant, dataset, n, seed, metric, value; metrics
//! tpp_total, tpp_intended_drop, tpp_unintended_drop), and `scr.json`,
//! `tpp.json` shaped like SAEBench's outputs (means over seeds).

use super::sparse_probing::{
    dataset_keys, encode_dataset, load_variant_sae, memo, problem_rng, problems, saebench_json,
    Encoded, Rows,
};
use crate::config::Config;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::stage::{StageInput, StageOutput};
use anyhow::{bail, Result};
use coact::metrics::probing as pm;
use coact::probe::{fit_probe, Linear, Penalty};
use coact::sae::Sae;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The part of the config a scr_tpp artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.bench.scr_tpp).expect("serialisable")
}

/// The L1 probe SCR and TPP use.
fn probe(x: &[f32], dim: usize, y: &[bool], l1: f64) -> Result<Linear> {
    let pen = if l1 > 0.0 {
        Penalty::L1(l1)
    } else {
        Penalty::None
    };
    fit_probe(x, dim, y, pen, true)
}

/// A residual probe with what its ablations need: its decoder dot
/// products and its clean decisions on every piece.
struct Scored {
    p: Linear,
    /// Per piece: w . x̄ + b.
    clean: Vec<f64>,
}

fn scored(p: Linear, data: &crate::datasets::DatasetData) -> Scored {
    let clean = p.decisions(&data.pooled);
    Scored { p, clean }
}

/// Effects of every latent on a probe: mean difference of the pooled
/// latents over the probe's train rows, times the probe's weight along the
/// decoder row.
fn effects(
    enc: &Encoded,
    sae: &Sae,
    rows: &[usize],
    y: &[bool],
    p: &Linear,
    kind: pm::EffectKind,
) -> Vec<f32> {
    let f = sae.cfg.d_sae;
    let lat = pm::gather_rows(&enc.latents, f, rows);
    let diff = pm::mean_difference(&lat, f, y);
    pm::latent_effects(&diff, &p.w, &sae.w_dec, sae.cfg.d_in, kind)
}

/// Accuracy of a probe on test rows after ablating `ablate` (error kept):
/// its decisions shift by -sum_{i in ablate} f̄_i (w . d_i), which equals
/// scoring the ablated pooled activations (coact::metrics::probing).
fn ablated_accuracy(
    enc: &Encoded,
    f: usize,
    s: &Scored,
    dot: &[f32],
    rows: &[usize],
    y: &[bool],
    ablate: &[usize],
) -> f64 {
    let clean: Vec<f64> = rows.iter().map(|&r| s.clean[r]).collect();
    let lat = pm::gather_rows(&enc.latents, f, rows);
    let z = pm::ablated_decisions(&clean, &lat, dot, ablate);
    let pred: Vec<bool> = z.iter().map(|&v| v > 0.0).collect();
    pm::accuracy(&pred, y)
}

/// One side of a probe set: rows and labels.
struct Set {
    rows: Vec<usize>,
    y: Vec<bool>,
}

fn set(pos: &[usize], neg: &[usize]) -> Set {
    let mut v: Vec<(usize, bool)> = pos
        .iter()
        .map(|&r| (r, true))
        .chain(neg.iter().map(|&r| (r, false)))
        .collect();
    v.sort_unstable();
    let (rows, y) = v.into_iter().unzip();
    Set { rows, y }
}

struct ScrSeed {
    tr: ScrSets,
    te: ScrSets,
    pa: Scored,
    pb: Scored,
    biased: Scored,
}

struct TppClassSet {
    name: String,
    train: Set,
    test: Set,
    probe: Scored,
}

struct ScrSets {
    a: Set,
    b: Set,
    biased: Set,
}

/// SCR's probe sets for one split: quadrants cut to the smallest, A and B
/// sets balanced across the other attribute, the biased set on the
/// diagonal. None when a quadrant is empty.
fn scr_sets(
    data: &crate::datasets::DatasetData,
    ta: usize,
    tb: usize,
    test: bool,
    fraction: f64,
    rng: &mut coact::rng::SplitMix64,
) -> Option<ScrSets> {
    let (la, lb) = (&data.tasks[ta].labels, &data.tasks[tb].labels);
    let mut quad: [[Vec<usize>; 2]; 2] = Default::default();
    for p in 0..data.pieces() {
        if data.is_test[p] != test {
            continue;
        }
        if let (Some(a), Some(b)) = (la[p], lb[p]) {
            quad[a][b].push(p);
        }
    }
    for q in quad.iter_mut().flatten() {
        rng.shuffle(q);
    }
    let q = quad.iter().flatten().map(|v| v.len()).min().unwrap_or(0);
    let keep = |n: usize| ((n as f64 * fraction).round() as usize).clamp(n.min(1), n);
    let kq = keep(q);
    if kq == 0 {
        return None;
    }
    let take = |v: &Vec<usize>, n: usize| v[..n.min(v.len())].to_vec();
    let cat = |x: Vec<usize>, y: Vec<usize>| x.into_iter().chain(y).collect::<Vec<_>>();
    let a = set(
        &cat(take(&quad[0][0], kq), take(&quad[0][1], kq)),
        &cat(take(&quad[1][0], kq), take(&quad[1][1], kq)),
    );
    let b = set(
        &cat(take(&quad[0][0], kq), take(&quad[1][0], kq)),
        &cat(take(&quad[0][1], kq), take(&quad[1][1], kq)),
    );
    let kb = keep(quad[0][0].len().min(quad[1][1].len()).min(2 * q));
    let biased = set(&take(&quad[0][0], kb), &take(&quad[1][1], kb));
    Some(ScrSets { a, b, biased })
}
/// The `scr_tpp` benchmark.
pub struct ScrTpp;

impl Benchmark for ScrTpp {
    fn name(&self) -> &'static str {
        "scr_tpp"
    }
    fn about(&self) -> &'static str {
        "SCR and TPP: ablating latents to remove a spurious signal or one class"
    }
    fn uses(&self) -> &'static [&'static str] {
        &["datasets"]
    }
    fn key_config(&self, cfg: &Config) -> Value {
        key_config(cfg)
    }
    fn run(&self, input: &StageInput, variant: &str) -> Result<StageOutput> {
        run(input, variant)
    }
    fn metrics(&self) -> &'static [crate::pipeline::benchmark::MetricDef] {
        super::scr_tpp_summary::METRIC_DEFS
    }
    fn tables(&self) -> &'static [&'static str] {
        super::scr_tpp_summary::TABLES
    }
    fn summarise(
        &self,
        table: &str,
        batches: &[arrow::array::RecordBatch],
        into: &mut crate::pipeline::benchmark::Summary,
    ) -> Result<()> {
        super::scr_tpp_summary::summarise(table, batches, into)
    }
}

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let st = &input.cfg.bench.scr_tpp;
    let started = std::time::Instant::now();
    let (sae, sae_cfg) = load_variant_sae(input, variant)?;
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let (name_a, name_b) = st.scr_pair();
    let tpp_name = st.tpp();
    let mut scr_rows = Rows::new(&["variant", "dataset", "direction"], &["n", "seed"]);
    let mut tpp_rows = Rows::new(&["variant", "dataset"], &["n", "seed"]);
    let mut notes: Vec<String> = Vec::new();
    // SAEBench-shaped results: run name -> metric -> per-seed values.
    let mut scr_json: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut tpp_json: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut tpp_classes: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    let mut any_scr = false;
    let mut any_tpp = false;
    let mut t_encode = 0.0;
    let mut found_scr = false;
    let mut found_tpp = false;

    for (_, key) in dataset_keys(input)? {
        let tasks = crate::datasets::task_classes(input.store, &key)?;
        let idx = |n: &str| tasks.iter().position(|(t, _)| t == n);
        let scr_ok = match (idx(&name_a), idx(&name_b)) {
            (Some(a), Some(b)) if tasks[a].1.len() == 2 && tasks[b].1.len() == 2 => Some((a, b)),
            (Some(_), Some(_)) => {
                notes.push(format!(
                    "{key}: SCR needs binary tasks {name_a} and {name_b}; skipped"
                ));
                None
            }
            _ => None,
        };
        let tpp_ok = idx(&tpp_name);
        found_scr |= scr_ok.is_some();
        found_tpp |= tpp_ok.is_some();
        if scr_ok.is_none() && tpp_ok.is_none() {
            continue;
        }
        let t0 = std::time::Instant::now();
        let enc = encode_dataset(input, &sae, variant, &key)?;
        t_encode += t0.elapsed().as_secs_f64();
        let data = &enc.data;
        let ds = data.name.clone();

        if let Some((ta, tb)) = scr_ok {
            let run_name = format!("{ds}_scr_{name_a}_{name_b}");
            for seed in 0..st.seeds {
                // The residual probes do not depend on the SAE: shared by every variant.
                let bundle = memo(
                    format!(
                        "scr/{key}/{ta}/{tb}/{seed}/{}/{}",
                        st.train_fraction, st.probe_l1
                    ),
                    || -> Result<Option<ScrSeed>> {
                        let mut rng = problem_rng(seed, &format!("scr/{ds}"));
                        let (Some(tr), Some(te)) = (
                            scr_sets(data, ta, tb, false, st.train_fraction, &mut rng),
                            scr_sets(data, ta, tb, true, 1.0, &mut rng),
                        ) else {
                            return Ok(None);
                        };
                        let fit = |s: &Set| {
                            probe(
                                &pm::gather_rows(&data.pooled, d, &s.rows),
                                d,
                                &s.y,
                                st.probe_l1,
                            )
                            .map(|p| scored(p, data))
                        };
                        Ok(Some(ScrSeed {
                            pa: fit(&tr.a)?,
                            pb: fit(&tr.b)?,
                            biased: fit(&tr.biased)?,
                            tr,
                            te,
                        }))
                    },
                )?;
                let Some(b) = bundle.as_ref() else {
                    notes.push(format!(
                        "{ds}: a ({name_a}, {name_b}) quadrant is empty in train or test; SCR skipped"
                    ));
                    break;
                };
                any_scr = true;
                let acc = |s: &Scored, set: &Set| {
                    let pred: Vec<bool> = set.rows.iter().map(|&r| s.clean[r] > 0.0).collect();
                    pm::accuracy(&pred, &set.y)
                };
                let biased_on_a = acc(&b.biased, &b.te.a);
                let biased_on_b = acc(&b.biased, &b.te.b);
                let oracle_a = acc(&b.pa, &b.te.a);
                let oracle_b = acc(&b.pb, &b.te.b);
                let eff_a = effects(
                    &enc,
                    &sae,
                    &b.tr.a.rows,
                    &b.tr.a.y,
                    &b.pa.p,
                    pm::EffectKind::Scr,
                );
                let eff_b = effects(
                    &enc,
                    &sae,
                    &b.tr.b.rows,
                    &b.tr.b.y,
                    &b.pb.p,
                    pm::EffectKind::Scr,
                );
                let dot = pm::decoder_dot(&sae.w_dec, d, &b.biased.p.w);
                let selected = pm::scr_selected_direction(biased_on_a, biased_on_b);
                // (direction, SAEBench dir, ablated effects, eval set, A_biased, A_oracle)
                let dirs = [
                    (
                        format!("{name_b}->{name_a}"),
                        1,
                        &eff_b,
                        &b.te.a,
                        biased_on_a,
                        oracle_a,
                    ),
                    (
                        format!("{name_a}->{name_b}"),
                        2,
                        &eff_a,
                        &b.te.b,
                        biased_on_b,
                        oracle_b,
                    ),
                ];
                for (dir, dir_no, eff, eval, a_biased, a_oracle) in &dirs {
                    for &n in &st.ns {
                        let ablate = pm::top_n_effects(eff, n);
                        let a_abl = ablated_accuracy(
                            &enc, f, &b.biased, &dot, &eval.rows, &eval.y, &ablate,
                        );
                        let scr = pm::scr_score(a_abl, *a_biased, *a_oracle);
                        let ints = [Some(n as i64), Some(seed as i64)];
                        let strs = [variant, ds.as_str(), dir.as_str()];
                        scr_rows.push(&strs, &ints, "scr", scr);
                        scr_rows.push(&strs, &ints, "a_abl", a_abl);
                        scr_rows.push(&strs, &ints, "a_biased", *a_biased);
                        scr_rows.push(&strs, &ints, "a_oracle", *a_oracle);
                        let m = scr_json.entry(run_name.clone()).or_default();
                        m.entry(format!("scr_dir{dir_no}_threshold_{n}"))
                            .or_default()
                            .push(scr);
                        if *dir_no == selected {
                            scr_rows.push(&strs, &ints, "scr_metric", scr);
                            m.entry(format!("scr_metric_threshold_{n}"))
                                .or_default()
                                .push(scr);
                        }
                    }
                }
            }
        }

        if let Some(tt) = tpp_ok {
            let task = &data.tasks[tt];
            let probs = problems(data, task, true);
            let run_name = format!("{ds}_tpp");
            for seed in 0..st.seeds {
                let bundle = memo(
                    format!(
                        "tpp/{key}/{tt}/{seed}/{}/{}",
                        st.train_fraction, st.probe_l1
                    ),
                    || -> Result<(Vec<TppClassSet>, Vec<String>)> {
                        let mut sets = Vec::new();
                        let mut missing = Vec::new();
                        for p in &probs {
                            let salt = format!("tpp/{ds}/{}", p.name);
                            match p.sample(seed, &salt, st.train_fraction) {
                                Some((tr, ty, te, ey)) => {
                                    let lin = probe(
                                        &pm::gather_rows(&data.pooled, d, &tr),
                                        d,
                                        &ty,
                                        st.probe_l1,
                                    )?;
                                    sets.push(TppClassSet {
                                        name: p.name.clone(),
                                        train: Set { rows: tr, y: ty },
                                        test: Set { rows: te, y: ey },
                                        probe: scored(lin, data),
                                    });
                                }
                                None => missing.push(p.name.clone()),
                            }
                        }
                        Ok((sets, missing))
                    },
                )?;
                let (sets, missing) = bundle.as_ref();
                for m in missing {
                    notes.push(format!(
                        "{ds}: TPP class {m} has no train or test pieces; left out"
                    ));
                }
                if sets.len() < 2 {
                    notes.push(format!(
                        "{ds}: TPP needs two classes with pieces in both splits; skipped"
                    ));
                    break;
                }
                any_tpp = true;
                let clean: Vec<f64> = sets
                    .iter()
                    .map(|c| {
                        let pred: Vec<bool> = c
                            .test
                            .rows
                            .iter()
                            .map(|&r| c.probe.clean[r] > 0.0)
                            .collect();
                        pm::accuracy(&pred, &c.test.y)
                    })
                    .collect();
                let effs: Vec<Vec<f32>> = sets
                    .iter()
                    .map(|c| {
                        effects(
                            &enc,
                            &sae,
                            &c.train.rows,
                            &c.train.y,
                            &c.probe.p,
                            pm::EffectKind::Tpp,
                        )
                    })
                    .collect();
                let dots: Vec<Vec<f32>> = sets
                    .iter()
                    .map(|c| pm::decoder_dot(&sae.w_dec, d, &c.probe.p.w))
                    .collect();
                for &n in &st.ns {
                    let ablated: Vec<Vec<f64>> = effs
                        .iter()
                        .map(|eff| {
                            let ablate = pm::top_n_effects(eff, n);
                            sets.iter()
                                .zip(&dots)
                                .map(|(c, dot)| {
                                    ablated_accuracy(
                                        &enc,
                                        f,
                                        &c.probe,
                                        dot,
                                        &c.test.rows,
                                        &c.test.y,
                                        &ablate,
                                    )
                                })
                                .collect()
                        })
                        .collect();
                    let per_class = pm::tpp_scores(&clean, &ablated);
                    let mean = pm::tpp_mean(&per_class);
                    let ints = [Some(n as i64), Some(seed as i64)];
                    let strs = [variant, ds.as_str()];
                    tpp_rows.push(&strs, &ints, "tpp_total", mean.total);
                    tpp_rows.push(&strs, &ints, "tpp_intended_drop", mean.intended_drop);
                    tpp_rows.push(&strs, &ints, "tpp_unintended_drop", mean.unintended_drop);
                    let m = tpp_json.entry(run_name.clone()).or_default();
                    for (suffix, v) in [
                        ("total_metric", mean.total),
                        ("intended_diff_only", mean.intended_drop),
                        ("unintended_diff_only", mean.unintended_drop),
                    ] {
                        m.entry(format!("tpp_threshold_{n}_{suffix}"))
                            .or_default()
                            .push(v);
                    }
                    for (set, c) in sets.iter().zip(&per_class) {
                        let cm = tpp_classes
                            .entry(ds.clone())
                            .or_default()
                            .entry(set.name.clone())
                            .or_default();
                        for (suffix, v) in [
                            ("total_metric", c.total),
                            ("intended_diff_only", c.intended_drop),
                            ("unintended_diff_only", c.unintended_drop),
                        ] {
                            cm.entry(format!("tpp_threshold_{n}_{suffix}"))
                                .or_default()
                                .push(v);
                        }
                    }
                }
            }
        }
    }
    // Tasks named in the config must exist; the defaults (party, era,
    // period) may be missing from a corpus, and data may be too small.
    if st.scr_tasks.is_some() && !found_scr {
        bail!(
            "bench.scr_tpp.scr_tasks = [{name_a}, {name_b}]: no dataset has both as binary tasks"
        );
    }
    if st.tpp_task.is_some() && !found_tpp {
        bail!("bench.scr_tpp.tpp_task = {tpp_name}: no dataset has that task");
    }
    if !found_scr {
        notes.push(format!(
            "no dataset has the binary tasks {name_a} and {name_b}; SCR skipped (bench.scr_tpp.scr_tasks)"
        ));
    }
    if !found_tpp {
        notes.push(format!(
            "no dataset has the task {tpp_name}; TPP skipped (bench.scr_tpp.tpp_task)"
        ));
    }
    for n in &notes {
        input.progress.note(format!("scr_tpp/{variant}: {n}"));
    }

    // SAEBench-shaped JSON: per run, the mean over seeds; overall, the mean over runs.
    let means = |runs: &BTreeMap<String, BTreeMap<String, Vec<f64>>>| {
        let per_run: BTreeMap<String, BTreeMap<String, f64>> = runs
            .iter()
            .map(|(r, m)| {
                (
                    r.clone(),
                    m.iter()
                        .map(|(k, v)| (k.clone(), pm::mean_std(v).0))
                        .collect(),
                )
            })
            .collect();
        let mut overall: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in per_run.values() {
            for (k, v) in m {
                overall.entry(k.clone()).or_default().push(*v);
            }
        }
        let overall: BTreeMap<String, f64> = overall
            .into_iter()
            .map(|(k, v)| (k, pm::mean_std(&v).0))
            .collect();
        let spread: BTreeMap<String, BTreeMap<String, Value>> = runs
            .iter()
            .map(|(r, m)| {
                (
                    r.clone(),
                    m.iter()
                        .map(|(k, v)| {
                            let (mean, std) = pm::mean_std(v);
                            (k.clone(), json!({"mean": mean, "std": std, "seeds": v}))
                        })
                        .collect(),
                )
            })
            .collect();
        (per_run, overall, spread)
    };
    let cfg_json = json!({
        "n_values": st.ns,
        "seeds": st.seeds,
        "train_fraction": st.train_fraction,
        "probe_l1_penalty": st.probe_l1,
        "scr_tasks": [name_a, name_b],
        "tpp_task": tpp_name,
        "model_name": input.cfg.model.name,
    });
    let details = |per_run: BTreeMap<String, BTreeMap<String, f64>>| {
        Value::Array(
            per_run
                .into_iter()
                .map(|(r, m)| {
                    let mut o: serde_json::Map<String, Value> =
                        m.into_iter().map(|(k, v)| (k, json!(v))).collect();
                    o.insert("dataset_name".into(), json!(r));
                    Value::Object(o)
                })
                .collect(),
        )
    };
    let mut summary = serde_json::Map::new();
    let mut tables = BTreeMap::new();
    if any_scr {
        let (per_run, overall, spread) = means(&scr_json);
        let out = saebench_json(
            input,
            variant,
            "scr",
            json!({
                "eval_config": cfg_json.clone(),
                "eval_result_metrics": {"scr_metrics": overall},
                "eval_result_details": details(per_run),
                "eval_result_unstructured": {"seed_spread": spread},
            }),
            &sae_cfg,
        );
        std::fs::write(
            input.out_dir.join("scr.json"),
            serde_json::to_string_pretty(&out)?,
        )?;
        summary.insert("scr".into(), out["eval_result_metrics"].clone());
    }
    if any_tpp {
        let (per_run, overall, spread) = means(&tpp_json);
        let per_class: Value = tpp_classes
            .iter()
            .map(|(ds, classes)| {
                (
                    ds.clone(),
                    classes
                        .iter()
                        .map(|(c, m)| {
                            (
                                c.clone(),
                                m.iter()
                                    .map(|(k, v)| (k.clone(), json!(pm::mean_std(v).0)))
                                    .collect::<serde_json::Map<_, _>>()
                                    .into(),
                            )
                        })
                        .collect::<serde_json::Map<String, Value>>()
                        .into(),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
            .into();
        let out = saebench_json(
            input,
            variant,
            "tpp",
            json!({
                "eval_config": cfg_json,
                "eval_result_metrics": {"tpp_metrics": overall},
                "eval_result_details": details(per_run),
                "eval_result_unstructured": {"per_class": per_class, "seed_spread": spread},
            }),
            &sae_cfg,
        );
        std::fs::write(
            input.out_dir.join("tpp.json"),
            serde_json::to_string_pretty(&out)?,
        )?;
        summary.insert("tpp".into(), out["eval_result_metrics"].clone());
    }
    // Both tables always exist (empty when skipped), so that queries work.
    let (n, e) = scr_rows.write(input, "scr")?;
    tables.insert(n, e);
    let (n, e) = tpp_rows.write(input, "tpp")?;
    tables.insert(n, e);
    summary.insert("notes".into(), json!(notes));
    let total = started.elapsed().as_secs_f64();
    input.progress.note(format!(
        "scr_tpp/{variant}: done in {total:.1} s (load and encode {t_encode:.1} s, probes and ablations {:.1} s)",
        total - t_encode
    ));
    summary.insert(
        "seconds".into(),
        json!({"load_and_encode": t_encode, "probes_and_ablations": total - t_encode}),
    );
    Ok(StageOutput {
        tables,
        summary: Value::Object(summary),
    })
}
