//! The compete stage on the tiny study: tables queryable and consistent with
//! each other and with the SAEs, cache hits, per-variant reruns, config errors.

use crate::{csv_rows, Study};

const COMPETE: &str = "compete:\n  taus: [0.1, 0.3]\n  min_cofirings: 2\n  example_pairs: 3\n  \
                       examples_per_pair: 2\n  context_window: 2\n  dashboard_latents: 2\n  top_contexts: 3\n";

/// The tiny study plus a variant of its own (`solo`, lambda 0.05) and a
/// compete section.
fn study() -> Study {
    let s = Study::new(8, 40);
    s.write_config_with(8, 32, "null", 0, COMPETE);
    s.edit_config(
        "      tau: [0.0, 0.5]\n",
        "      tau: [0.0, 0.5]\n    - name: solo\n      ortho: uniform\n      lambda: 0.05\n",
    );
    s
}

fn q(s: &Study, sql: &str) -> Vec<Vec<String>> {
    csv_rows(&s.ok(&["query", "--format", "csv", sql]))
}

/// The single value of a one-row, one-column query.
fn one(s: &Study, sql: &str) -> String {
    let rows = q(s, sql);
    assert_eq!(rows.len(), 2, "{sql}: {rows:?}");
    rows[1][0].clone()
}

#[test]
fn compete_tables_are_consistent_cached_and_rerun_per_variant() {
    let s = study();
    s.ok(&["run", "compete", "-q"]);
    let status = s.ok(&["status"]);
    for v in ["[topk]", "[guided-tau0]", "[guided-tau0.5]", "[solo]"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("compete   fresh") && l.contains(v)),
            "{status}"
        );
    }
    let tables = s.ok(&["query", "--tables"]);
    for t in [
        "compete_latents",
        "compete_pairs",
        "compete_summary",
        "compete_examples",
        "compete_top_contexts",
    ] {
        assert!(tables.contains(t), "{tables}");
    }

    // One row per latent and tau; 28 eval tokens (4 sequences of 7 after BOS).
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_latents where variant = 'topk'"
        ),
        "64"
    );
    assert_eq!(
        one(
            &s,
            "select min(eval_tokens) || '/' || max(eval_tokens) from compete_summary"
        ),
        "28/28"
    );
    // Pairs: i < j, the filters hold, c_ij = C_ij / min(n_i, n_j) exactly.
    let pairs: usize = one(&s, "select count(*) from compete_pairs")
        .parse()
        .unwrap();
    assert!(pairs > 0);
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_pairs where i >= j or cofirings < 2 or c_ij < 0.1 \
             or c_ij <> cast(cofirings as double) / least(n_i, n_j) or cofirings > least(n_i, n_j) \
             or abs(dec_cos) > 1.000001 or abs(enc_cos) > 1.000001"
        ),
        "0"
    );
    // n_i and n_j are the latents' firing counts; frequencies are n / tokens.
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_pairs p join compete_latents a on a.variant = p.variant and a.latent = p.i \
             join compete_latents b on b.variant = p.variant and b.latent = p.j \
             where a.tau = 0.1 and b.tau = 0.1 and (a.n_fired <> p.n_i or b.n_fired <> p.n_j)"
        ),
        "0"
    );
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_latents l join compete_summary m on m.variant = l.variant and m.tau = l.tau \
             where abs(l.frequency - cast(l.n_fired as double) / m.eval_tokens) > 1e-12 \
             or (l.n_fired = 0) <> (l.mean_activation is null) or l.max_activation < l.mean_activation"
        ),
        "0"
    );
    // Each latent's competitors at tau are its pairs with c_ij >= tau.
    let competitors_check = "select count(*) from compete_latents l left join ( \
           select variant, latent, tau, count(*) as k from ( \
             select p.variant, p.i as latent, t.tau, p.c_ij from compete_pairs p \
               join (select distinct variant, tau from compete_summary) t on t.variant = p.variant \
             union all \
             select p.variant, p.j as latent, t.tau, p.c_ij from compete_pairs p \
               join (select distinct variant, tau from compete_summary) t on t.variant = p.variant \
           ) where c_ij >= tau group by variant, latent, tau) c \
         on c.variant = l.variant and c.latent = l.latent and c.tau = l.tau \
         where l.competitors <> coalesce(c.k, 0) \
            or (l.competitors = 0) <> (l.max_abs_dec_cos_competitor is null) \
            or l.max_abs_dec_cos_competitor > l.max_abs_dec_cos + 1e-6";
    assert_eq!(one(&s, competitors_check), "0");
    assert_ne!(one(&s, "select sum(competitors) from compete_latents"), "0");
    // The summary agrees with the pairs and latents tables.
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_summary m \
             join (select t.variant, t.tau, count(p.i) as k from compete_summary t \
                   left join compete_pairs p on p.variant = t.variant and p.c_ij >= t.tau \
                   group by t.variant, t.tau) c on c.variant = m.variant and c.tau = m.tau \
             join (select variant, tau, sum(case when competitors = 0 then 1 else 0 end) as lonely, \
                          sum(case when n_fired = 0 then 1 else 0 end) as dead \
                   from compete_latents group by variant, tau) l on l.variant = m.variant and l.tau = m.tau \
             where m.competing_pairs <> c.k or m.random_pairs <> m.competing_pairs \
                or m.latents_without_competitor <> l.lonely or m.dead_latents <> l.dead"
        ),
        "0"
    );
    // Examples: the top pairs by c_ij (ties by co-firings), both latents
    // firing, the token marked in its context.
    let ex = q(
        &s,
        "select e.pair_rank, e.c_ij, e.cofirings, p.c_ij, e.act_i, e.act_j, e.context \
         from compete_examples e join compete_pairs p on p.variant = e.variant and p.i = e.i and p.j = e.j \
         where e.variant = 'topk' order by e.pair_rank, e.example",
    );
    assert!(ex.len() > 1, "{ex:?}");
    let best = one(
        &s,
        "select max(c_ij) from compete_pairs where variant = 'topk'",
    );
    assert_eq!(ex[1][1], best);
    for r in &ex[1..] {
        assert_eq!(r[1], r[3]);
        assert!(r[4].parse::<f64>().unwrap() > 0.0 && r[5].parse::<f64>().unwrap() > 0.0);
        assert!(r[6].contains('«') && r[6].contains('»'), "{r:?}");
    }
    // Dashboards: two competing and two random latents, contexts by activation.
    let dash = q(
        &s,
        "select reason, count(distinct latent), min(rank), max(rank) from compete_top_contexts \
         where variant = 'topk' group by reason order by reason",
    );
    assert_eq!(dash[1][..2], ["competing", "2"]);
    assert_eq!(dash[2][..2], ["random", "2"]);
    assert_eq!(
        one(
            &s,
            "select count(*) from compete_top_contexts a join compete_top_contexts b \
             on a.variant = b.variant and a.latent = b.latent and b.rank = a.rank + 1 \
             where b.activation > a.activation"
        ),
        "0"
    );
    let most = one(
        &s,
        "select max(competitors) from compete_latents where variant = 'topk' and tau = 0.1",
    );
    assert_eq!(
        one(
            &s,
            &format!(
                "select count(*) from compete_top_contexts t join compete_latents l \
                 on l.variant = t.variant and l.latent = t.latent and l.tau = 0.1 \
                 where t.variant = 'topk' and t.reason = 'competing' and l.competitors = {most}"
            )
        )
        .parse::<usize>()
        .unwrap()
        .min(1),
        1,
        "the most competing latent has a dashboard"
    );

    // The statistics are the SAE's own on the eval tokens, BOS excluded.
    check_against_the_sae(&s, "topk");

    // A second run is a cache hit for every unit.
    let out = s.coact(&["run", "compete"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("compete/") && l.contains("cache hit"))
            .count(),
        4,
        "{err}"
    );

    // Changing one variant's lambda reruns train and compete for it alone.
    s.edit_config("lambda: 0.05", "lambda: 0.2");
    let out = s.coact(&["run", "compete"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("train/solo done") && err.contains("compete/solo done"),
        "{err}"
    );
    for v in ["topk", "guided-tau0", "guided-tau0.5"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("compete/{v} ")) && l.contains("cache hit")),
            "{v}: {err}"
        );
    }
    assert_eq!(err.matches(" done ").count(), 2, "{err}");
}

/// Recomputes firing counts, one pair's co-firings and the max decoder
/// cosine from the SAE and the eval shards, and compares with the tables.
fn check_against_the_sae(s: &Study, variant: &str) {
    let train_dir = s
        .artifacts("train")
        .into_iter()
        .map(|k| s.dir.join("data/train").join(k))
        .find(|d| {
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap())
                    .unwrap();
            m["unit"] == variant
        })
        .unwrap();
    let (sae, _) = coact::sae::load_saelens(&train_dir).unwrap();
    let extract = s
        .dir
        .join("data/extract")
        .join(s.artifacts("extract").remove(0));
    let mut x = Vec::new();
    let mut at = Vec::new();
    let mut shards: Vec<_> = std::fs::read_dir(&extract)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("eval-") && n.ends_with(".parquet"))
        .collect();
    shards.sort();
    for f in shards {
        for (seq, pos, _, special, act) in crate::read_shard(&extract.join(f)) {
            if !special {
                x.extend(act);
                at.push((seq, pos));
            }
        }
    }
    let codes = sae.encode(&x, at.len()).unwrap();
    let f = sae.cfg.d_sae;
    let mut n = vec![0u64; f];
    for t in 0..codes.n_tokens() {
        let (idx, val) = codes.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            if v > 0.0 {
                n[j as usize] += 1;
            }
        }
    }
    let got: Vec<u64> = q(
        s,
        &format!(
            "select n_fired from compete_latents where variant = '{variant}' and tau = 0.1 order by latent"
        ),
    )[1..]
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(got, n, "n_fired of {variant}");
    // The pair with the most co-firings, counted here.
    let top = &q(
        s,
        &format!(
            "select i, j, cofirings from compete_pairs where variant = '{variant}' order by cofirings desc, i, j limit 1"
        ),
    )[1];
    let (i, j): (u32, u32) = (top[0].parse().unwrap(), top[1].parse().unwrap());
    let both = (0..codes.n_tokens())
        .filter(|&t| {
            let (idx, val) = codes.row(t);
            let fires = |l: u32| idx.iter().zip(val).any(|(&a, &v)| a == l && v > 0.0);
            fires(i) && fires(j)
        })
        .count();
    assert_eq!(top[2], both.to_string(), "C_{i},{j}");
    // Examples point at tokens where both latents have the stated activations.
    for r in &q(
        s,
        &format!(
            "select i, j, sequence, position, act_i, act_j from compete_examples where variant = '{variant}'"
        ),
    )[1..]
    {
        let key = (r[2].parse::<i64>().unwrap(), r[3].parse::<i32>().unwrap());
        let t = at.iter().position(|&a| a == key).unwrap();
        let (idx, val) = codes.row(t);
        for (l, want) in [(&r[0], &r[4]), (&r[1], &r[5])] {
            let l: u32 = l.parse().unwrap();
            let p = idx.iter().position(|&a| a == l).unwrap();
            let want: f32 = want.parse().unwrap();
            assert!((val[p] - want).abs() <= 1e-5 * want.abs().max(1.0), "{r:?}");
        }
    }
    // SAEBench's mean max decoder cosine (signed max over the other latents).
    let d = sae.cfg.d_in;
    let row = |a: usize| &sae.w_dec[a * d..(a + 1) * d];
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut mean = 0.0f64;
    for a in 0..f {
        let mut best = f64::NEG_INFINITY;
        for b in (0..f).filter(|&b| b != a) {
            let dot: f32 = row(a).iter().zip(row(b)).map(|(p, q)| p * q).sum();
            best = best.max((dot / (norm(row(a)) * norm(row(b)))) as f64);
        }
        mean += best / f as f64;
    }
    let got: f64 = one(
        s,
        &format!("select avg(max_dec_cos) from compete_latents where variant = '{variant}' and tau = 0.1"),
    )
    .parse()
    .unwrap();
    assert!(
        (got - mean).abs() < 1e-5,
        "mean max decoder cosine {got} vs {mean}"
    );
}

#[test]
fn bad_compete_settings_name_the_key() {
    let s = Study::new(4, 30);
    for (section, want) in [
        ("compete:\n  taus: [0.1, 1.5]\n", "compete.taus[1] = 1.5"),
        ("compete:\n  taus: []\n", "compete.taus: empty"),
        (
            "compete:\n  taus: [0.2, 0.2]\n",
            "compete.taus[1] = 0.2: listed twice",
        ),
        (
            "compete:\n  min_cofirings: 0\n",
            "compete.min_cofirings = 0",
        ),
        (
            "compete:\n  context_window: 500\n",
            "compete.context_window = 500",
        ),
        ("compete:\n  tau: [0.1]\n", "tau"),
    ] {
        s.write_config_with(8, 32, "null", 0, section);
        let err = s.fails(&["status"]);
        assert!(
            err.contains(want) && err.contains("compete"),
            "{section}: {err}"
        );
    }
}
