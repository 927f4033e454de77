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
//!
//! Why one file over 600 lines: SCR and TPP are one benchmark (one unit,
//! one pass over the datasets) sharing the probe, effect and ablation
//! helpers above and the SAEBench aggregation below; every function is
//! short, and a split into scr/ and tpp/ files is a change of its own.

use super::probing::{
    dataset_inputs, encode_dataset, problem_rng, problems, saebench_json, Encoded, MetricTable,
    Problem,
};
use crate::artifacts::datasets::{self, DatasetData};
use crate::artifacts::sae::VariantSae;
use crate::config::bench::scr_tpp::ScrTppConfig;
use crate::config::Config;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::cache::stage_key;
use crate::pipeline::stage::{StageInput, StageOutput};
use anyhow::{bail, Result};
use coact::metrics::probing as pm;
use coact::probe::{fit_probe, Linear, Penalty};
use coact::sae::Sae;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

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

fn scored(p: Linear, data: &DatasetData) -> Scored {
    let clean = p.decisions(&data.pooled);
    Scored { p, clean }
}

/// Effects of every latent on a probe: mean difference of the pooled
/// latents over the probe's train rows, times the probe's weight along the
/// decoder row.
fn effects(enc: &Encoded, sae: &Sae, train: &Set, p: &Linear, kind: pm::EffectKind) -> Vec<f32> {
    let f = sae.cfg.d_sae;
    let lat = pm::gather_rows(&enc.latents, f, &train.rows);
    let diff = pm::mean_difference(&lat, f, &train.y);
    pm::latent_effects(&diff, &p.w, &sae.w_dec, sae.cfg.d_in, kind)
}

/// Accuracy of a probe on a test set after ablating `ablate` (error kept):
/// its decisions shift by -sum_{i in ablate} f̄_i (w . d_i), which equals
/// scoring the ablated pooled activations (coact::metrics::probing).
fn ablated_accuracy(
    enc: &Encoded,
    f: usize,
    s: &Scored,
    dot: &[f32],
    test: &Set,
    ablate: &[usize],
) -> f64 {
    let clean: Vec<f64> = test.rows.iter().map(|&r| s.clean[r]).collect();
    let lat = pm::gather_rows(&enc.latents, f, &test.rows);
    let z = pm::ablated_decisions(&clean, &lat, dot, ablate);
    let pred: Vec<bool> = z.iter().map(|&v| v > 0.0).collect();
    pm::accuracy(&pred, &test.y)
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
    data: &DatasetData,
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

/// Per run name (`<dataset>_scr_<a>_<b>`, `<dataset>_tpp`, or a TPP class):
/// metric -> per-seed values.
type SeedValues = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

/// What a run gathers over datasets and seeds.
struct Results {
    scr_rows: MetricTable,
    tpp_rows: MetricTable,
    notes: Vec<String>,
    scr: SeedValues,
    tpp: SeedValues,
    /// Per dataset: TPP per class.
    tpp_classes: BTreeMap<String, SeedValues>,
    /// Some seed was scored.
    any_scr: bool,
    any_tpp: bool,
    /// Some dataset has the tasks.
    found_scr: bool,
    found_tpp: bool,
    t_encode: f64,
}

/// One variant's run: its SAE and the settings.
struct Ctx<'a, 'b> {
    input: &'a StageInput<'b>,
    st: &'a ScrTppConfig,
    variant: &'a str,
    sae: &'a VariantSae,
    /// Residual and latent widths.
    d: usize,
    f: usize,
    scr_tasks: (String, String),
    tpp_task: String,
}

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let st = &input.cfg.bench.scr_tpp;
    let started = Instant::now();
    let sae = input.variant_sae(variant)?;
    let cx = Ctx {
        input,
        st,
        variant,
        sae: &sae,
        d: sae.sae.cfg.d_in,
        f: sae.sae.cfg.d_sae,
        scr_tasks: st.scr_pair(),
        tpp_task: st.tpp(),
    };
    let mut r = Results {
        scr_rows: MetricTable::new(&["variant", "dataset", "direction"], &["n", "seed"]),
        tpp_rows: MetricTable::new(&["variant", "dataset"], &["n", "seed"]),
        notes: Vec::new(),
        scr: BTreeMap::new(),
        tpp: BTreeMap::new(),
        tpp_classes: BTreeMap::new(),
        any_scr: false,
        any_tpp: false,
        found_scr: false,
        found_tpp: false,
        t_encode: 0.0,
    };
    for (_, key) in dataset_inputs(input)? {
        cx.dataset(&key, &mut r)?;
    }
    cx.check_found(&mut r)?;
    for n in &r.notes {
        input.progress.note(format!("scr_tpp/{variant}: {n}"));
    }
    cx.write(r, started)
}

impl Ctx<'_, '_> {
    /// SCR and TPP on the datasets artifact `key`, where it has their tasks.
    fn dataset(&self, key: &str, r: &mut Results) -> Result<()> {
        let (name_a, name_b) = &self.scr_tasks;
        let tasks = datasets::task_classes(self.input.store, key)?;
        let idx = |n: &str| tasks.iter().position(|(t, _)| t == n);
        let scr_ok = match (idx(name_a), idx(name_b)) {
            (Some(a), Some(b)) if tasks[a].1.len() == 2 && tasks[b].1.len() == 2 => Some((a, b)),
            (Some(_), Some(_)) => {
                r.notes.push(format!(
                    "{key}: SCR needs binary tasks {name_a} and {name_b}; skipped"
                ));
                None
            }
            _ => None,
        };
        let tpp_ok = idx(&self.tpp_task);
        r.found_scr |= scr_ok.is_some();
        r.found_tpp |= tpp_ok.is_some();
        if scr_ok.is_none() && tpp_ok.is_none() {
            return Ok(());
        }
        let t0 = Instant::now();
        let enc = encode_dataset(self.input, self.sae, key)?;
        r.t_encode += t0.elapsed().as_secs_f64();
        if let Some((ta, tb)) = scr_ok {
            for seed in 0..self.st.seeds {
                if !self.scr_seed(&enc, key, (ta, tb), seed, r)? {
                    break;
                }
            }
        }
        if let Some(tt) = tpp_ok {
            let probs = problems(&enc.data, &enc.data.tasks[tt], true);
            for seed in 0..self.st.seeds {
                if !self.tpp_seed(&enc, key, tt, &probs, seed, r)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// A residual L1 probe on `s`, scored on every piece.
    fn fit(&self, data: &DatasetData, s: &Set) -> Result<Scored> {
        let x = pm::gather_rows(&data.pooled, self.d, &s.rows);
        probe(&x, self.d, &s.y, self.st.probe_l1).map(|p| scored(p, data))
    }

    /// SCR's sets and residual probes for a seed; None when a quadrant is
    /// empty. They do not depend on the SAE: cached for the run, shared by
    /// every variant.
    fn scr_probes(
        &self,
        enc: &Encoded,
        key: &str,
        (ta, tb): (usize, usize),
        seed: usize,
    ) -> Result<std::sync::Arc<Option<ScrSeed>>> {
        let st = self.st;
        let data = &enc.data;
        let cache_key = stage_key(
            "bench",
            &format!(
                "scr_tpp/scr/{key}/{ta}/{tb}/{seed}/{}/{}",
                st.train_fraction, st.probe_l1
            ),
        );
        self.input.cache.get_or_try_insert(&cache_key, || {
            let mut rng = problem_rng(seed, &format!("scr/{}", data.name));
            let (Some(tr), Some(te)) = (
                scr_sets(data, ta, tb, false, st.train_fraction, &mut rng),
                scr_sets(data, ta, tb, true, 1.0, &mut rng),
            ) else {
                return Ok(None);
            };
            Ok(Some(ScrSeed {
                pa: self.fit(data, &tr.a)?,
                pb: self.fit(data, &tr.b)?,
                biased: self.fit(data, &tr.biased)?,
                tr,
                te,
            }))
        })
    }

    /// One SCR seed, both directions at every N; false when it cannot run
    /// (and no later seed can).
    fn scr_seed(
        &self,
        enc: &Encoded,
        key: &str,
        tasks: (usize, usize),
        seed: usize,
        r: &mut Results,
    ) -> Result<bool> {
        let (name_a, name_b) = &self.scr_tasks;
        let ds = enc.data.name.as_str();
        let bundle = self.scr_probes(enc, key, tasks, seed)?;
        let Some(b) = bundle.as_ref() else {
            r.notes.push(format!(
                "{ds}: a ({name_a}, {name_b}) quadrant is empty in train or test; SCR skipped"
            ));
            return Ok(false);
        };
        r.any_scr = true;
        let sae = &self.sae.sae;
        let biased_on_a = clean_accuracy(&b.biased, &b.te.a);
        let biased_on_b = clean_accuracy(&b.biased, &b.te.b);
        let oracle_a = clean_accuracy(&b.pa, &b.te.a);
        let oracle_b = clean_accuracy(&b.pb, &b.te.b);
        let eff_a = effects(enc, sae, &b.tr.a, &b.pa.p, pm::EffectKind::Scr);
        let eff_b = effects(enc, sae, &b.tr.b, &b.pb.p, pm::EffectKind::Scr);
        let dot = pm::decoder_dot(&sae.w_dec, self.d, &b.biased.p.w);
        let selected = pm::scr_selected_direction(biased_on_a, biased_on_b);
        let dirs = [
            ScrDirection {
                name: format!("{name_b}->{name_a}"),
                saebench_dir: 1,
                effects: &eff_b,
                eval: &b.te.a,
                a_biased: biased_on_a,
                a_oracle: oracle_a,
            },
            ScrDirection {
                name: format!("{name_a}->{name_b}"),
                saebench_dir: 2,
                effects: &eff_a,
                eval: &b.te.b,
                a_biased: biased_on_b,
                a_oracle: oracle_b,
            },
        ];
        let run_name = format!("{ds}_scr_{name_a}_{name_b}");
        for dir in &dirs {
            for &n in &self.st.ns {
                let ablate = pm::top_n_effects(dir.effects, n);
                let a_abl = ablated_accuracy(enc, self.f, &b.biased, &dot, dir.eval, &ablate);
                let scr = pm::scr_score(a_abl, dir.a_biased, dir.a_oracle);
                let ints = [Some(n as i64), Some(seed as i64)];
                let strs = [self.variant, ds, dir.name.as_str()];
                r.scr_rows.push(&strs, &ints, "scr", scr);
                r.scr_rows.push(&strs, &ints, "a_abl", a_abl);
                r.scr_rows.push(&strs, &ints, "a_biased", dir.a_biased);
                r.scr_rows.push(&strs, &ints, "a_oracle", dir.a_oracle);
                let m = r.scr.entry(run_name.clone()).or_default();
                m.entry(format!("scr_dir{}_threshold_{n}", dir.saebench_dir))
                    .or_default()
                    .push(scr);
                if dir.saebench_dir == selected {
                    r.scr_rows.push(&strs, &ints, "scr_metric", scr);
                    m.entry(format!("scr_metric_threshold_{n}"))
                        .or_default()
                        .push(scr);
                }
            }
        }
        Ok(true)
    }

    /// TPP's per-class sets and residual probes for a seed, with the
    /// classes that have no pieces on a side. Cached for the run like
    /// SCR's.
    fn tpp_probes(
        &self,
        enc: &Encoded,
        key: &str,
        tt: usize,
        probs: &[Problem],
        seed: usize,
    ) -> Result<std::sync::Arc<(Vec<TppClassSet>, Vec<String>)>> {
        let st = self.st;
        let data = &enc.data;
        let cache_key = stage_key(
            "bench",
            &format!(
                "scr_tpp/tpp/{key}/{tt}/{seed}/{}/{}",
                st.train_fraction, st.probe_l1
            ),
        );
        self.input.cache.get_or_try_insert(&cache_key, || {
            let mut sets = Vec::new();
            let mut missing = Vec::new();
            for p in probs {
                let salt = format!("tpp/{}/{}", data.name, p.name);
                let Some(s) = p.sample(seed, &salt, st.train_fraction) else {
                    missing.push(p.name.clone());
                    continue;
                };
                let train = Set {
                    rows: s.train,
                    y: s.train_y,
                };
                sets.push(TppClassSet {
                    name: p.name.clone(),
                    probe: self.fit(data, &train)?,
                    train,
                    test: Set {
                        rows: s.test,
                        y: s.test_y,
                    },
                });
            }
            Ok((sets, missing))
        })
    }

    /// One TPP seed at every N; false when fewer than two classes can run
    /// (and no later seed can).
    fn tpp_seed(
        &self,
        enc: &Encoded,
        key: &str,
        tt: usize,
        probs: &[Problem],
        seed: usize,
        r: &mut Results,
    ) -> Result<bool> {
        let ds = enc.data.name.as_str();
        let bundle = self.tpp_probes(enc, key, tt, probs, seed)?;
        let (sets, missing) = bundle.as_ref();
        for m in missing {
            r.notes.push(format!(
                "{ds}: TPP class {m} has no train or test pieces; left out"
            ));
        }
        if sets.len() < 2 {
            r.notes.push(format!(
                "{ds}: TPP needs two classes with pieces in both splits; skipped"
            ));
            return Ok(false);
        }
        r.any_tpp = true;
        let sae = &self.sae.sae;
        let clean: Vec<f64> = sets
            .iter()
            .map(|c| clean_accuracy(&c.probe, &c.test))
            .collect();
        let effs: Vec<Vec<f32>> = sets
            .iter()
            .map(|c| effects(enc, sae, &c.train, &c.probe.p, pm::EffectKind::Tpp))
            .collect();
        let dots: Vec<Vec<f32>> = sets
            .iter()
            .map(|c| pm::decoder_dot(&sae.w_dec, self.d, &c.probe.p.w))
            .collect();
        let run_name = format!("{ds}_tpp");
        for &n in &self.st.ns {
            // Per ablated class: every class probe's ablated accuracy.
            let ablated: Vec<Vec<f64>> = effs
                .iter()
                .map(|eff| {
                    let ablate = pm::top_n_effects(eff, n);
                    sets.iter()
                        .zip(&dots)
                        .map(|(c, dot)| {
                            ablated_accuracy(enc, self.f, &c.probe, dot, &c.test, &ablate)
                        })
                        .collect()
                })
                .collect();
            let per_class = pm::tpp_scores(&clean, &ablated);
            let mean = pm::tpp_mean(&per_class);
            let ints = [Some(n as i64), Some(seed as i64)];
            let strs = [self.variant, ds];
            r.tpp_rows.push(&strs, &ints, "tpp_total", mean.total);
            r.tpp_rows
                .push(&strs, &ints, "tpp_intended_drop", mean.intended_drop);
            r.tpp_rows
                .push(&strs, &ints, "tpp_unintended_drop", mean.unintended_drop);
            push_tpp(r.tpp.entry(run_name.clone()).or_default(), n, &mean);
            let classes = r.tpp_classes.entry(ds.to_string()).or_default();
            for (set, c) in sets.iter().zip(&per_class) {
                push_tpp(classes.entry(set.name.clone()).or_default(), n, c);
            }
        }
        Ok(true)
    }

    /// Tasks named in the config must exist; the defaults (party, era,
    /// period) may be missing from a corpus, and data may be too small.
    fn check_found(&self, r: &mut Results) -> Result<()> {
        let (name_a, name_b) = &self.scr_tasks;
        let tpp_name = &self.tpp_task;
        if self.st.scr_tasks.is_some() && !r.found_scr {
            bail!(
                "bench.scr_tpp.scr_tasks = [{name_a}, {name_b}]: no dataset has both as binary tasks"
            );
        }
        if self.st.tpp_task.is_some() && !r.found_tpp {
            bail!("bench.scr_tpp.tpp_task = {tpp_name}: no dataset has that task");
        }
        if !r.found_scr {
            r.notes.push(format!(
                "no dataset has the binary tasks {name_a} and {name_b}; SCR skipped (bench.scr_tpp.scr_tasks)"
            ));
        }
        if !r.found_tpp {
            r.notes.push(format!(
                "no dataset has the task {tpp_name}; TPP skipped (bench.scr_tpp.tpp_task)"
            ));
        }
        Ok(())
    }

    /// Writes `scr.json` and `tpp.json` (for what ran) and both tables
    /// (always, empty when skipped, so that queries work); the output.
    fn write(&self, r: Results, started: Instant) -> Result<StageOutput> {
        let (input, st) = (self.input, self.st);
        let cfg_json = json!({
            "n_values": st.ns,
            "seeds": st.seeds,
            "train_fraction": st.train_fraction,
            "probe_l1_penalty": st.probe_l1,
            "scr_tasks": [self.scr_tasks.0, self.scr_tasks.1],
            "tpp_task": self.tpp_task,
            "model_name": input.cfg.model.name,
        });
        let mut summary = serde_json::Map::new();
        let mut tables = BTreeMap::new();
        if r.any_scr {
            let m = SeedMeans::of(&r.scr);
            let out = self.write_json(
                "scr",
                json!({
                    "eval_config": cfg_json.clone(),
                    "eval_result_metrics": {"scr_metrics": m.overall},
                    "eval_result_details": details(m.per_run),
                    "eval_result_unstructured": {"seed_spread": m.spread},
                }),
            )?;
            summary.insert("scr".into(), out["eval_result_metrics"].clone());
        }
        if r.any_tpp {
            let m = SeedMeans::of(&r.tpp);
            let out = self.write_json(
                "tpp",
                json!({
                    "eval_config": cfg_json,
                    "eval_result_metrics": {"tpp_metrics": m.overall},
                    "eval_result_details": details(m.per_run),
                    "eval_result_unstructured": {
                        "per_class": tpp_per_class(&r.tpp_classes),
                        "seed_spread": m.spread,
                    },
                }),
            )?;
            summary.insert("tpp".into(), out["eval_result_metrics"].clone());
        }
        let (n, e) = r.scr_rows.write(input.out_dir, "scr")?;
        tables.insert(n, e);
        let (n, e) = r.tpp_rows.write(input.out_dir, "tpp")?;
        tables.insert(n, e);
        summary.insert("notes".into(), json!(r.notes));
        let total = started.elapsed().as_secs_f64();
        let t_encode = r.t_encode;
        input.progress.note(format!(
            "scr_tpp/{}: done in {total:.1} s (load and encode {t_encode:.1} s, probes and ablations {:.1} s)",
            self.variant,
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

    /// Writes `<eval_type>.json` in SAEBench's envelope; the JSON.
    fn write_json(&self, eval_type: &str, results: Value) -> Result<Value> {
        let out = saebench_json(
            self.input,
            self.variant,
            eval_type,
            results,
            &self.sae.cfg_json,
        );
        std::fs::write(
            self.input.out_dir.join(format!("{eval_type}.json")),
            serde_json::to_string_pretty(&out)?,
        )?;
        Ok(out)
    }
}

/// One SCR direction `X->Y`: X's effects ablated, the biased probe scored
/// on Y's test set.
struct ScrDirection<'a> {
    name: String,
    /// SAEBench's dir1 (`B->A`) or dir2 (`A->B`).
    saebench_dir: usize,
    effects: &'a [f32],
    eval: &'a Set,
    a_biased: f64,
    a_oracle: f64,
}

/// A probe's clean accuracy on a set.
fn clean_accuracy(s: &Scored, set: &Set) -> f64 {
    let pred: Vec<bool> = set.rows.iter().map(|&r| s.clean[r] > 0.0).collect();
    pm::accuracy(&pred, &set.y)
}

/// One seed's TPP scores at N into a run's (or class's) per-seed values.
fn push_tpp(m: &mut BTreeMap<String, Vec<f64>>, n: usize, s: &pm::TppClass) {
    for (suffix, v) in [
        ("total_metric", s.total),
        ("intended_diff_only", s.intended_drop),
        ("unintended_diff_only", s.unintended_drop),
    ] {
        m.entry(format!("tpp_threshold_{n}_{suffix}"))
            .or_default()
            .push(v);
    }
}

/// SAEBench-shaped means: per run, the mean over seeds; overall, the mean
/// over runs; and each run's per-seed spread.
struct SeedMeans {
    per_run: BTreeMap<String, BTreeMap<String, f64>>,
    overall: BTreeMap<String, f64>,
    spread: BTreeMap<String, BTreeMap<String, Value>>,
}

impl SeedMeans {
    fn of(runs: &SeedValues) -> Self {
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
        let overall = overall
            .into_iter()
            .map(|(k, v)| (k, pm::mean_std(&v).0))
            .collect();
        let spread = runs
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
        SeedMeans {
            per_run,
            overall,
            spread,
        }
    }
}

/// eval_result_details: one object per run, its metrics and its name.
fn details(per_run: BTreeMap<String, BTreeMap<String, f64>>) -> Value {
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
}

/// TPP per dataset and class: the mean over seeds of each metric.
fn tpp_per_class(classes: &BTreeMap<String, SeedValues>) -> Value {
    classes
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
        .into()
}
