//! The report stage: rendering from hand-made data (table, best marks,
//! verdicts, plots that are real PNGs, escaped dashboards), generic column
//! reading, and the stage run end to end on the tiny study.

use coact::sae::Architecture;
use coact_pipeline::registry::REGISTRY;
use coact_pipeline::report::{
    collect, render, CompetitionSummary, Competitor, ContextRow, CurvePoint, LatentCard,
    PairExample, ReportConfig, ReportData, Timing, VariantInfo,
};
use std::collections::BTreeMap;
use std::path::Path;

fn variant(name: &str, kind: &str, ortho: &str, lambda: f64, tau: f64, seed: u64) -> VariantInfo {
    VariantInfo {
        name: name.into(),
        kind: Architecture::from_name(kind).unwrap(),
        d_sae: 64,
        k: 4,
        l1_coeff: if kind == "relu_l1" { 0.06 } else { 0.0 },
        ortho: ortho.into(),
        lambda,
        tau,
        seed,
        groups: Vec::new(),
        chunks: 0,
        b_dec_fixed: false,
        external: false,
    }
}

#[test]
fn a_fixed_decoder_bias_is_its_own_setting_and_named() {
    let trained = variant("g", "topk", "guided", 0.1, 0.1, 0);
    let fixed = VariantInfo {
        b_dec_fixed: true,
        ..trained.clone()
    };
    assert_eq!(trained.describe(), "TopK k 4, guided τ 0.1 λ 0.1");
    assert_eq!(
        fixed.describe(),
        "TopK k 4, b_dec fixed, guided τ 0.1 λ 0.1"
    );
    // Seeds of one setting share a group; the two b_dec choices do not.
    assert_ne!(trained.group_key(), fixed.group_key());
    let other_seed = VariantInfo {
        seed: 1,
        ..fixed.clone()
    };
    assert_eq!(other_seed.group_key(), fixed.group_key());
}

/// A study of 11 variants: TopK, uniform and guided tau 0.1 at three seeds,
/// a tau sweep, a lambda point and a ReLU+L1 SAE, with every table filled.
fn hand_made() -> ReportData {
    let mut d = ReportData::new("hand-made", &REGISTRY);
    let specs = [
        ("topk", "topk", "none", 0.0, 0.0, 0),
        ("topk-seed1", "topk", "none", 0.0, 0.0, 1),
        ("topk-seed2", "topk", "none", 0.0, 0.0, 2),
        ("relu-l1", "relu_l1", "none", 0.0, 0.0, 0),
        ("uniform", "topk", "uniform", 0.1, 0.0, 0),
        ("uniform-seed1", "topk", "uniform", 0.1, 0.0, 1),
        ("uniform-seed2", "topk", "uniform", 0.1, 0.0, 2),
        ("guided-tau0", "topk", "guided", 0.1, 0.0, 0),
        ("guided-tau0.1", "topk", "guided", 0.1, 0.1, 0),
        ("guided-tau0.1-seed1", "topk", "guided", 0.1, 0.1, 1),
        ("guided-tau0.1-seed2", "topk", "guided", 0.1, 0.1, 2),
        ("guided-tau0.5", "topk", "guided", 0.1, 0.5, 0),
        ("guided-tau0.1-lambda0.3", "topk", "guided", 0.3, 0.1, 0),
    ];
    for (n, (name, kind, ortho, lambda, tau, seed)) in specs.iter().enumerate() {
        d.variants
            .push(variant(name, kind, ortho, *lambda, *tau, *seed));
        let jitter = n as f64 * 0.001;
        // CE score: guided tau 0.1 in [0.950, 0.952], TopK in [0.900, 0.902]
        // (no overlap: guided beats), uniform in [0.940, 0.960] (overlap).
        let ce = match *name {
            "topk" => 0.900,
            "topk-seed1" => 0.901,
            "topk-seed2" => 0.902,
            "uniform" => 0.940,
            "uniform-seed1" => 0.960,
            "uniform-seed2" => 0.950,
            "guided-tau0.1" => 0.950,
            "guided-tau0.1-seed1" => 0.951,
            "guided-tau0.1-seed2" => 0.952,
            "guided-tau0.5" => 0.990, // the best of the column
            _ => 0.93,
        };
        // Absorption (lower is better): relu-l1 is the best.
        let absorption = if *name == "relu-l1" {
            0.001
        } else {
            0.02 + jitter
        };
        let mut vals = BTreeMap::new();
        for (k, v) in [
            ("l0", if *kind == "relu_l1" { 5.5 } else { 4.0 }),
            ("mse", 0.03 + jitter),
            ("explained_variance", 0.8 - jitter),
            ("explained_variance_legacy", 0.85 - jitter),
            ("ce_loss_score", ce),
            ("kl_div_score", ce - 0.01),
            ("absorption", absorption),
            ("full_absorption", absorption / 2.0),
            ("probe_top1", 0.7 + jitter),
            ("probe_top2", 0.75 + jitter),
            ("probe_top5", 0.8 + jitter),
            ("scr_10", 0.1 + jitter),
            ("scr_20", 0.2 + jitter),
            ("tpp_10", 0.01 + jitter),
            ("tpp_20", 0.02 + jitter),
            ("mean_max_dec_cos", 0.5 - jitter),
            ("frac_dead", 0.01),
        ] {
            vals.insert(k.to_string(), v);
        }
        d.values.insert(name.to_string(), vals);
        d.absorption_letters.insert(
            name.to_string(),
            ('a'..='z')
                .filter(|c| *c != 'q')
                .enumerate()
                .map(|(i, c)| (c.to_string(), (i as f64 * 0.003 + jitter) % 0.08))
                .collect(),
        );
        d.competing_cos.insert(
            name.to_string(),
            (0..200)
                .map(|i| (i as f64 * 0.37 + n as f64).sin() * 0.4 + 0.1)
                .collect(),
        );
        d.competition.insert(
            name.to_string(),
            CompetitionSummary {
                tau: 0.1,
                competing_pairs: Some(200.0),
                mean_abs_cos_competing: Some(0.2),
                mean_abs_cos_random: Some(0.05),
                share_cos_over_0_3: Some(0.1),
                share_random_cos_over_0_3: Some(0.0),
                latents_without_competitor: Some(3.0),
            },
        );
        d.train_curves.insert(
            name.to_string(),
            (1..=20)
                .map(|s| CurvePoint {
                    tokens: s as f64 * 2048.0,
                    mse: 1.0 / (s as f64 + n as f64 * 0.1),
                    l0: 4.0,
                    dead_fraction: 0.001 * s as f64,
                })
                .collect(),
        );
        d.dashboards.insert(
            name.to_string(),
            vec![
                LatentCard {
                    latent: 7,
                    reason: "competing".into(),
                    frequency: Some(0.01),
                    max_act: Some(3.2),
                    contexts: vec![
                        ContextRow {
                            activation: 3.2,
                            context: "the union is «strong» & <script>alert(1)</script>".into(),
                        },
                        ContextRow {
                            activation: 2.0,
                            context: "we must« build» roads".into(),
                        },
                    ],
                    competitors: vec![Competitor {
                        latent: 12,
                        c_ij: 0.8,
                        dec_cos: 0.31,
                        cofirings: Some(40.0),
                    }],
                },
                LatentCard {
                    latent: 30,
                    reason: "random".into(),
                    frequency: None,
                    max_act: None,
                    contexts: vec![ContextRow {
                        activation: 1.0,
                        context: "«peace» and trade".into(),
                    }],
                    competitors: vec![],
                },
            ],
        );
        d.pair_examples.insert(
            name.to_string(),
            vec![PairExample {
                i: 7,
                j: 12,
                c_ij: 0.8,
                dec_cos: Some(0.31),
                act_i: Some(2.5),
                act_j: Some(1.5),
                context: "schools for «all» people".into(),
            }],
        );
        d.timings.push(Timing {
            stage: "train".into(),
            unit: Some(name.to_string()),
            elapsed_s: 20.0 + n as f64,
            // Trained two at once: each counts half its time in the total.
            wall_s: (20.0 + n as f64) / 2.0,
        });
    }
    d.timings.push(Timing {
        stage: "extract".into(),
        unit: None,
        elapsed_s: 300.0,
        wall_s: 300.0,
    });
    d.timings.push(Timing {
        stage: "bench".into(),
        unit: Some("core/topk".into()),
        elapsed_s: 12.0,
        wall_s: 12.0,
    });
    d.dense_probe = Some(0.9);
    d
}

/// Checks that the HTML's tags nest properly (every non-void tag is closed
/// by the matching tag, in order), and returns the img srcs.
fn check_html(html: &str) -> Vec<String> {
    const VOID: &[&str] = &["img", "meta", "br", "hr", "link", "input", "!doctype"];
    let mut stack: Vec<String> = Vec::new();
    let mut srcs = Vec::new();
    let mut rest = html;
    let mut in_style = false;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>').expect("unterminated tag");
        let tag = &after[..end];
        rest = &after[end + 1..];
        if in_style && tag != "/style" {
            continue;
        }
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap()
            .to_ascii_lowercase();
        if name == "img" {
            let s = tag.split("src=\"").nth(1).expect("img without src");
            srcs.push(s[..s.find('"').unwrap()].to_string());
        }
        if VOID.contains(&name.as_str()) {
            continue;
        }
        if closing {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name, "<{open}> closed by </{name}>");
            in_style = false;
        } else {
            in_style = name == "style";
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    srcs
}

/// A PNG's width and height from its signature and IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 1000,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn report_renders_the_table_plots_verdicts_and_dashboards() {
    let data = hand_made();
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&data, &ReportConfig::default(), dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();

    // Well-formed, and every image is a real PNG beside the page.
    let srcs = check_html(&html);
    let mut plots = rendered.plots.clone();
    plots.sort();
    assert_eq!(
        plots,
        [
            "absorption_letters.png",
            "dec_cos_competing.png",
            "l0_vs_quality.png",
            "metrics_vs_lambda.png",
            "metrics_vs_tau.png",
            "training_curves.png"
        ]
    );
    let mut srcs_sorted = srcs.clone();
    srcs_sorted.sort();
    assert_eq!(srcs_sorted, plots, "one <img> per plot");
    for s in &srcs {
        assert!(
            !s.contains('/') && !s.starts_with("data:"),
            "relative, beside the page: {s}"
        );
        let (w, h) = png_size(&dir.path().join(s));
        assert!(w >= 300 && h >= 200, "{s}: {w}x{h}");
    }

    // A row per variant in the comparison table.
    for v in &data.variants {
        let row = format!("data-variant=\"{}\"><td class=\"name\" title=", v.name);
        assert_eq!(html.matches(&row).count(), 1, "row of {}", v.name);
    }
    // Best per column: the highest CE score, the lowest absorption; one each.
    assert!(html.contains(
        "<td data-variant=\"guided-tau0.5\" data-metric=\"ce_loss_score\" class=\"best\">0.990</td>"
    ));
    assert_eq!(
        html.matches("data-metric=\"ce_loss_score\" class=\"best\"")
            .count(),
        1
    );
    assert!(
        html.contains("<td data-variant=\"relu-l1\" data-metric=\"absorption\" class=\"best\">")
    );
    assert_eq!(
        html.matches("data-metric=\"absorption\" class=\"best\"")
            .count(),
        1
    );
    // L0 has no better direction: never marked.
    assert_eq!(html.matches("data-metric=\"l0\" class=\"best\"").count(), 0);

    // Verdicts: guided tau 0.1's seed range lies above TopK's (beats) and
    // inside uniform's (overlap).
    let cell = |against: &str| {
        let tag = format!("<td data-metric=\"ce_loss_score\" data-against=\"{against}\">");
        let at = html
            .find(&tag)
            .unwrap_or_else(|| panic!("no verdict cell {tag}"));
        html[at..at + html[at..].find("</td>").unwrap()].to_string()
    };
    let vs_topk = cell("the TopK baseline");
    assert!(vs_topk.contains("beats beyond seed spread"), "{vs_topk}");
    assert!(
        vs_topk.contains(
            "guided-tau0.1: 0.9500 to 0.9520 (3 seeds); topk: 0.9000 to 0.9020 (3 seeds)"
        ),
        "{vs_topk}"
    );
    let vs_uniform = cell("uniform orthogonality");
    assert!(
        vs_uniform.contains("no difference beyond seed noise"),
        "{vs_uniform}"
    );

    // The reference figures are labelled as another model, quoted.
    assert!(html.contains("gemma-2-2b, quoted from SPEC.md"));
    assert!(html.contains("0.0113") && html.contains("L0 49"));
    // Dashboards: the firing token highlighted, everything else escaped.
    assert!(html.contains("<mark>strong</mark> &amp; &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("latent 12"));
    assert!(html.contains("7 &amp; 12</td><td>0.800</td><td>0.310</td><td>2.50 / 1.50</td>"));
    assert!(html.contains("schools for <mark>all</mark> people"));
    assert!(
        html.contains("we must <mark>build</mark> roads"),
        "leading space outside the mark"
    );
    // Time per stage, summed per stage.
    assert!(html.contains("<td class=\"name\">extract</td><td>1</td><td>5.0 min</td>"));
    assert!(html.contains("bench core"));

    // Markdown: the same table and verdicts, images linked.
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    // 13 units of 20-32 s each, trained two at once: 169 s of wall time,
    // the longest unit its own 32 s.
    assert!(
        md.contains("| train | 13 | 2.8 min | guided-tau0.1-lambda0.3 (32.0 s) |"),
        "{md}"
    );
    assert!(md.contains("| guided-tau0.5 |") && md.contains("**0.990** ★"));
    assert!(md.contains("vs the TopK baseline: **beats beyond seed spread**"));
    assert!(md.contains("vs uniform orthogonality: **no difference beyond seed noise**"));
    assert!(md.contains(
        "Against the TopK baseline, guided beats it beyond seed spread on CE score, KL score"
    ));
    for p in &plots {
        assert!(
            md.contains(&format!("]({p})")),
            "{p} not linked in report.md"
        );
    }
}

#[test]
fn missing_benchmarks_read_not_run_and_verdicts_say_so() {
    let mut data = hand_made();
    for v in data.values.values_mut() {
        v.retain(|k, _| !k.starts_with("scr") && !k.starts_with("tpp"));
    }
    data.not_run
        .insert("scr_tpp".into(), "no bench/scr_tpp artifacts".into());
    // One seed only for uniform: no spread to compare with.
    data.variants
        .retain(|v| !v.name.starts_with("uniform-seed"));
    data.competing_cos.clear();
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&data, &ReportConfig::default(), dir.path()).unwrap();
    assert!(!rendered.plots.iter().any(|p| p == "dec_cos_competing.png"));
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    check_html(&html);
    assert!(html.contains("data-metric=\"scr_10\" class=\"na\">not run</td>"));
    assert!(html.contains("No verdict, the benchmark did not run: SCR@10, SCR@20, TPP@10, TPP@20."));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains(
        "vs the TopK baseline: **not run** (scr_tpp was not run: no bench/scr_tpp artifacts)"
    ));
    assert!(html.contains("cannot tell (one seed)"));
    assert!(html.contains("Decoder-cosine histograms: need compete_pairs"));
}

#[test]
fn a_missing_font_is_an_error_naming_report_font() {
    let cfg = ReportConfig {
        font: "/nonexistent/NoSuchFont.ttf".into(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let err = render(&hand_made(), &cfg, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("report.font = /nonexistent/NoSuchFont.ttf")
            && err.contains("fonts-dejavu-core"),
        "{err}"
    );
}

#[test]
fn columns_are_read_whatever_their_integer_or_float_type() {
    use arrow::array::{Float32Array, RecordBatch, StringArray, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Schema::new(vec![
        Field::new("latent", DataType::UInt32, false),
        Field::new("value", DataType::Float32, true),
        Field::new("variant", DataType::Utf8, false),
    ]);
    let b = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt32Array::from(vec![3, 4000000000])),
            Arc::new(Float32Array::from(vec![Some(0.5), None])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap();
    assert_eq!(
        collect::i64s(&b, "latent").unwrap(),
        [Some(3), Some(4000000000)]
    );
    assert_eq!(collect::f64s(&b, "value").unwrap(), [Some(0.5), None]);
    assert_eq!(
        collect::strs(&b, "variant").unwrap(),
        [Some("a".to_string()), Some("b".to_string())]
    );
    let err = collect::f64s(&b, "nope").unwrap_err().to_string();
    assert!(
        err.contains("no column 'nope'") && err.contains("latent"),
        "{err}"
    );
}

#[test]
fn the_report_stage_runs_on_the_tiny_study() {
    let s = crate::Study::new(8, 40);
    s.ok(&["run", "report", "-q"]);
    let status = s.ok(&["status"]);
    assert!(
        status.lines().any(|l| l.starts_with("report    fresh")),
        "{status}"
    );
    let keys = s.artifacts("report");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let dir = s.dir.join("data/report").join(&keys[0]);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let srcs = check_html(&html);
    for v in ["topk", "guided-tau0", "guided-tau0.5"] {
        assert!(
            html.contains(&format!("data-variant=\"{v}\"><td class=\"name\" title=")),
            "no row for {v}"
        );
    }
    assert!(srcs.iter().any(|s| s == "training_curves.png"), "{srcs:?}");
    for src in &srcs {
        let (w, h) = png_size(&dir.join(src));
        assert!(w > 0 && h > 0);
    }
    assert!(dir.join("report.md").is_file());
    // Times come from the upstream manifests, tokenize and extract included.
    assert!(
        html.contains("<td class=\"name\">tokenize</td>"),
        "no tokenize time"
    );
    assert!(html.contains("<td class=\"name\">train</td><td>3</td>"));
}

/// Publishes an artifact with the given tables (name -> batch) in `store`.
fn publish(
    store: &coact_pipeline::pipeline::store::Store,
    stage: &str,
    key: &str,
    unit: Option<&str>,
    config: serde_json::Value,
    inputs: &[(&str, &str)],
    tables: Vec<(&str, arrow::array::RecordBatch)>,
) {
    use coact_pipeline::pipeline::store::{Manifest, TableEntry};
    let staging = store.begin(stage, key).unwrap();
    let mut entries = BTreeMap::new();
    for (name, batch) in tables {
        let file = format!("{name}.parquet");
        let rows =
            coact_pipeline::artifacts::parquet_io::write_all(&staging.path().join(&file), &[batch])
                .unwrap();
        entries.insert(
            name.to_string(),
            TableEntry {
                files: vec![file],
                rows,
            },
        );
    }
    staging
        .publish(Manifest {
            stage: stage.into(),
            unit: unit.map(|u| u.to_string()),
            key: key.into(),
            format_version: 1,
            inputs: inputs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            config,
            coact_version: "test".into(),
            created_unix: 0,
            elapsed_s: 1.0,
            threads: None,
            files: vec![],
            tables: entries,
            summary: serde_json::Value::Null,
        })
        .unwrap();
}

/// A batch from (name, column) pairs, every column nullable.
fn batch(cols: Vec<(&str, arrow::array::ArrayRef)>) -> arrow::array::RecordBatch {
    use arrow::datatypes::{Field, Schema};
    let schema = Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

#[test]
fn collect_reads_every_table_of_the_agreed_schemas() {
    use arrow::array::{
        ArrayRef, Float32Array, Float64Array, Int64Array, StringArray, UInt32Array,
    };
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let store = coact_pipeline::pipeline::store::Store::new(tmp.path());
    let s = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let f64a = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let f32a = |v: Vec<f32>| -> ArrayRef { Arc::new(Float32Array::from(v)) };
    let u32a = |v: Vec<u32>| -> ArrayRef { Arc::new(UInt32Array::from(v)) };
    let i64a = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let none = serde_json::Value::Null;

    publish(&store, "tokenize", "tk", None, none.clone(), &[], vec![]);
    publish(
        &store,
        "extract",
        "ex",
        None,
        none.clone(),
        &[("tokenize", "tk")],
        vec![],
    );
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    for (v, ortho, tau) in [("topk", "none", 0.0), ("guided", "guided", 0.1)] {
        let sae = serde_json::json!({"sae": {"kind": "topk", "d_sae": 64, "k": 4, "l1_coeff": 0.0,
            "ortho": ortho, "lambda": if ortho == "none" { 0.0 } else { 0.1 }, "tau": tau, "seed": 0}});
        let log = batch(vec![
            ("variant", s(vec![Some(v); 3])),
            ("step", i64a(vec![Some(1), Some(2), Some(3)])),
            ("tokens", i64a(vec![Some(100), Some(200), Some(300)])),
            ("mse", f64a(vec![Some(0.5), Some(0.3), Some(0.2)])),
            ("l0", f64a(vec![Some(4.0); 3])),
            ("dead_fraction", f64a(vec![Some(0.0), Some(0.1), Some(0.1)])),
        ]);
        let tkey = format!("t-{v}");
        publish(
            &store,
            "train",
            &tkey,
            Some(v),
            sae,
            &[("extract", "ex")],
            vec![("log", log)],
        );
        inputs.insert(format!("train/{v}"), tkey.clone());

        let ckey = format!("c-{v}");
        let latents = batch(vec![
            ("variant", s(vec![Some(v); 4])),
            ("latent", u32a(vec![1, 1, 2, 9])),
            ("tau", f32a(vec![0.0, 0.1, 0.1, 0.1])),
            (
                "frequency",
                f64a(vec![Some(0.5), Some(0.02), Some(0.03), Some(0.001)]),
            ),
            (
                "max_act",
                f64a(vec![Some(1.0), Some(4.0), Some(2.0), Some(0.5)]),
            ),
        ]);
        let pairs = batch(vec![
            ("variant", s(vec![Some(v); 3])),
            ("i", u32a(vec![1, 1, 2])),
            ("j", u32a(vec![2, 9, 9])),
            ("cofirings", i64a(vec![Some(10), Some(2), Some(1)])),
            ("c_ij", f32a(vec![0.5, 0.05, 0.2])),
            ("dec_cos", f32a(vec![0.25, 0.5, -0.125])),
        ]);
        let summary = batch(vec![
            ("variant", s(vec![Some(v); 2])),
            ("tau", f64a(vec![Some(0.0), Some(0.1)])),
            ("competing_pairs", i64a(vec![Some(3), Some(2)])),
            (
                "mean_abs_cos_competing",
                f64a(vec![Some(0.3), Some(0.1875)]),
            ),
            ("mean_abs_cos_random", f64a(vec![Some(0.05), Some(0.05)])),
        ]);
        let contexts = batch(vec![
            ("variant", s(vec![Some(v); 4])),
            ("latent", u32a(vec![1, 1, 2, 9])),
            (
                "reason",
                s(vec![
                    Some("competing"),
                    Some("competing"),
                    Some("competing"),
                    Some("random"),
                ]),
            ),
            ("rank", i64a(vec![Some(1), Some(0), Some(0), Some(0)])),
            ("activation", f32a(vec![2.0, 4.0, 2.0, 0.5])),
            (
                "context",
                s(vec![
                    Some("b «x»"),
                    Some("a «y»"),
                    Some("c «z»"),
                    Some("d «w»"),
                ]),
            ),
        ]);
        let examples = batch(vec![
            ("variant", s(vec![Some(v); 2])),
            ("pair_rank", i64a(vec![Some(0), Some(0)])),
            ("i", u32a(vec![1, 1])),
            ("j", u32a(vec![2, 2])),
            ("c_ij", f32a(vec![0.5, 0.5])),
            ("act_i", f32a(vec![1.5, 1.0])),
            ("act_j", f32a(vec![0.5, 0.25])),
            (
                "context",
                s(vec![Some("both «here»"), Some("again «there»")]),
            ),
        ]);
        publish(
            &store,
            "compete",
            &ckey,
            Some(v),
            none.clone(),
            &[("train", &tkey)],
            vec![
                ("latents", latents),
                ("pairs", pairs),
                ("summary", summary),
                ("top_contexts", contexts),
                ("examples", examples),
            ],
        );
        inputs.insert(format!("compete/{v}"), ckey);

        let (ce, absorb) = if v == "topk" {
            (0.9, 0.04)
        } else {
            (0.95, 0.02)
        };
        let core = batch(vec![
            ("variant", s(vec![Some(v); 3])),
            (
                "metric",
                s(vec![
                    Some("ce_loss_score"),
                    Some("l0"),
                    Some("explained_variance"),
                ]),
            ),
            ("value", f64a(vec![Some(ce), Some(4.0), Some(0.8)])),
        ]);
        let absorption = batch(vec![
            ("variant", s(vec![Some(v); 4])),
            ("letter", s(vec![Some("a"), Some("b"), None, None])),
            (
                "metric",
                s(vec![
                    Some("absorption_fraction"),
                    Some("absorption_fraction"),
                    Some("mean_absorption_fraction"),
                    Some("mean_full_absorption_rate"),
                ]),
            ),
            (
                "value",
                f64a(vec![Some(0.01), Some(0.03), Some(absorb), Some(0.01)]),
            ),
        ]);
        let probing = batch(vec![
            ("variant", s(vec![Some(v); 4])),
            (
                "dataset",
                s(vec![
                    Some("party"),
                    Some("party"),
                    Some("year"),
                    Some("party"),
                ]),
            ),
            (
                "task",
                s(vec![Some("d"), Some("r"), Some("old"), Some("d")]),
            ),
            ("k", i64a(vec![Some(1), Some(1), Some(1), None])),
            ("seed", i64a(vec![Some(0); 4])),
            (
                "metric",
                s(vec![
                    Some("sae_test_accuracy"),
                    Some("sae_test_accuracy"),
                    Some("sae_test_accuracy"),
                    Some("llm_test_accuracy"),
                ]),
            ),
            (
                "value",
                f64a(vec![Some(0.6), Some(0.7), Some(0.8), Some(0.95)]),
            ),
        ]);
        // guided also has SAEBench's headline rows (scr_metric).
        let headline = if v == "guided" {
            Some("scr_metric")
        } else {
            None
        };
        let scr = batch(vec![
            ("variant", s(vec![Some(v); 4])),
            ("dataset", s(vec![Some("p"); 4])),
            (
                "direction",
                s(vec![Some("dir1"), Some("dir2"), Some("dir1"), Some("dir2")]),
            ),
            ("n", i64a(vec![Some(10), Some(10), Some(20), Some(10)])),
            ("seed", i64a(vec![Some(0); 4])),
            (
                "metric",
                s(vec![Some("scr"), Some("scr"), Some("scr"), headline]),
            ),
            (
                "value",
                f64a(vec![Some(0.1), Some(0.3), Some(0.5), Some(0.4)]),
            ),
        ]);
        let tpp = batch(vec![
            ("variant", s(vec![Some(v); 2])),
            ("dataset", s(vec![Some("p"); 2])),
            ("n", i64a(vec![Some(10), Some(10)])),
            ("seed", i64a(vec![Some(0); 2])),
            (
                "metric",
                s(vec![Some("tpp_total"), Some("tpp_intended_drop")]),
            ),
            ("value", f64a(vec![Some(0.07), Some(0.09)])),
        ]);
        for (bench, tables) in [
            ("core", vec![("core", core)]),
            ("absorption", vec![("absorption", absorption)]),
            ("sparse_probing", vec![("sparse_probing", probing)]),
            ("scr_tpp", vec![("scr", scr), ("tpp", tpp)]),
        ] {
            let key = format!("b-{bench}-{v}");
            let unit = format!("{bench}/{v}");
            publish(
                &store,
                "bench",
                &key,
                Some(&unit),
                none.clone(),
                &[("train", &tkey)],
                tables,
            );
            inputs.insert(format!("bench/{unit}"), key);
        }
    }

    let cfg = ReportConfig {
        dashboard_latents: 2,
        ..Default::default()
    };
    let d = collect::collect(&store, &inputs, "study", &cfg, &REGISTRY).unwrap();
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    assert!(d.not_run.is_empty(), "{:?}", d.not_run);
    assert_eq!(d.variants.len(), 2);
    let g = d.variants.iter().find(|v| v.name == "guided").unwrap();
    assert_eq!((g.ortho.as_str(), g.tau, g.k), ("guided", 0.1, 4));
    let val = |v: &str, m: &str| d.value(v, m).unwrap_or_else(|| panic!("no {m} for {v}"));
    assert_eq!(val("guided", "ce_loss_score"), 0.95);
    assert_eq!(val("guided", "absorption"), 0.02);
    assert_eq!(val("guided", "full_absorption"), 0.01);
    assert_eq!(d.absorption_letters["guided"]["b"], 0.03);
    assert!(
        (val("topk", "probe_top1") - 0.7).abs() < 1e-12,
        "mean of three tasks"
    );
    assert_eq!(d.dense_probe, Some(0.95));
    assert!(
        (val("topk", "scr_10") - 0.2).abs() < 1e-12,
        "mean of both directions"
    );
    assert_eq!(val("topk", "scr_20"), 0.5);
    assert_eq!(
        val("guided", "scr_10"),
        0.4,
        "SAEBench's headline when present"
    );
    assert_eq!(val("topk", "tpp_10"), 0.07);
    assert_eq!(d.train_curves["topk"].len(), 3);
    assert_eq!(d.train_curves["topk"][2].mse, 0.2);
    // Competition at tau 0.1: pairs with c_ij >= 0.1, the summary row at 0.1.
    assert_eq!(d.competing_cos["topk"], vec![0.25, -0.125]);
    assert_eq!(d.competition["topk"].mean_abs_cos_competing, Some(0.1875));
    // Dashboards: one competing and one random latent; contexts by rank;
    // competitors by c_ij; frequency at tau 0.1.
    let cards = &d.dashboards["guided"];
    assert_eq!(cards.iter().map(|c| c.latent).collect::<Vec<_>>(), [1, 9]);
    assert_eq!(cards[0].contexts[0].context, "a «y»");
    assert_eq!(cards[0].competitors[0].latent, 2);
    assert_eq!(cards[0].competitors[0].dec_cos, 0.25);
    assert_eq!(cards[0].frequency, Some(0.02));
    assert_eq!(d.pair_examples["guided"].len(), 1);
    assert_eq!(d.pair_examples["guided"][0].dec_cos, Some(0.25));
    // Times of every upstream artifact, tokenize and extract included.
    let stages: std::collections::BTreeSet<&str> =
        d.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(
        stages.into_iter().collect::<Vec<_>>(),
        ["bench", "compete", "extract", "tokenize", "train"]
    );
    assert_eq!(d.timings.len(), 2 + 2 + 2 + 8);

    // It renders, and a benchmark without artifacts reads "not run".
    inputs.retain(|k, _| !k.starts_with("bench/scr_tpp/"));
    let d = collect::collect(&store, &inputs, "study", &cfg, &REGISTRY).unwrap();
    assert!(d.not_run.contains_key("scr_tpp"));
    let dir = tempfile::tempdir().unwrap();
    render(&d, &cfg, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    check_html(&html);
    assert!(html.contains("data-metric=\"tpp_10\" class=\"na\">not run</td>"));
}

#[test]
fn a_tiny_scr_denominator_warns_that_scr_is_noise() {
    use coact_pipeline::report::{SCR_GAP, SCR_GAP_WARN};
    let mut data = hand_made();
    for v in data.values.values_mut() {
        v.insert(SCR_GAP.to_string(), 0.2);
    }
    let dir = tempfile::tempdir().unwrap();
    render(&data, &ReportConfig::default(), dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        !html.contains("dominated by noise"),
        "a clear gap warns nothing"
    );

    for v in data.values.values_mut() {
        v.insert(SCR_GAP.to_string(), SCR_GAP_WARN / 5.0);
    }
    render(&data, &ReportConfig::default(), dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        html.contains("dominated by noise") && html.contains("0.010"),
        "html"
    );
    assert!(md.contains("dominated by noise"), "md");
}
