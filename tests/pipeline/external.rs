//! bench.external on the tiny study: a JumpReLU SAE in SAELens layout is
//! imported, benchmarked beside the trained variants and encodes as its
//! source does; a wrong layer, a wrong d_in and an unreachable hub folder
//! are errors that name the entry and both values.

use crate::{csv_rows, Study};
use coact::sae::{load_saelens, save_saelens, Sae, SaeConfig, SaeKind, SaelensMeta};
use std::process::Command;

/// The tiny study's model width and studied layer.
const D_MODEL: usize = 48;
const LAYER: usize = 1;

fn jumprelu(dir: &std::path::Path, d_in: usize, layer: usize) -> Sae {
    let mut sae = Sae::init(
        SaeConfig {
            d_in,
            d_sae: 24,
            kind: SaeKind::JumpRelu,
        },
        5,
    )
    .unwrap();
    sae.threshold = (0..24).map(|i| 0.01 * i as f32).collect();
    sae.b_enc = (0..24).map(|i| 0.02 * (i % 5) as f32).collect();
    let meta = SaelensMeta {
        model_name: "tiny".into(),
        hook_name: format!("blocks.{layer}.hook_resid_post"),
        hook_layer: Some(layer),
        ..Default::default()
    };
    save_saelens(&sae, dir, &meta).unwrap();
    sae
}

fn with_external(s: &Study, entries: &str) {
    let base = s.config();
    let base = base.split("bench:\n").next().unwrap();
    s.set_config(&format!(
        "{base}bench:\n  benchmarks: [core]\n  core:\n    ce_sequences: 2\n  external:\n{entries}"
    ));
}

#[test]
fn an_external_sae_is_benchmarked_beside_the_variants() {
    let s = Study::new(8, 40);
    let source = jumprelu(&s.dir.join("ext/scope"), D_MODEL, LAYER);
    with_external(&s, "    - name: scope\n      path: ext/scope\n");
    let status = s.ok(&["status"]);
    assert!(status.contains("external"), "{status}");
    s.ok(&["run", "bench", "-q"]);
    let rows = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select distinct variant from bench_core order by variant",
    ]));
    let names: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["guided-tau0", "guided-tau0.5", "scope", "topk"]);

    // The stored copy is the source SAE, hook set to the study's layer.
    let keys = s.artifacts("external");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (stored, meta) = load_saelens(&s.dir.join("data/external").join(&keys[0])).unwrap();
    assert_eq!(stored, source);
    assert_eq!(meta.hook_name, "blocks.1.hook_resid_post");

    // Replacing the source file re-imports it (the key hashes its content).
    jumprelu(&s.dir.join("ext/scope"), D_MODEL, LAYER);
    let mut other = source.clone();
    other.threshold[0] = 9.0;
    save_saelens(
        &other,
        &s.dir.join("ext/scope"),
        &SaelensMeta {
            hook_layer: Some(LAYER),
            ..Default::default()
        },
    )
    .unwrap();
    let status = s.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("external") && l.contains("stale") && l.contains("[scope]")),
        "{status}"
    );
}

#[test]
fn a_mismatched_external_sae_is_an_error_naming_the_entry_and_both_values() {
    let s = Study::new(8, 40);
    jumprelu(&s.dir.join("ext/deep"), D_MODEL, 2);
    jumprelu(&s.dir.join("ext/narrow"), 16, LAYER);
    with_external(&s, "    - name: deep\n      path: ext/deep\n");
    let e = s.fails(&["run", "bench", "-q"]);
    assert!(
        e.contains("bench.external[0]") && e.contains("layer 2") && e.contains("model.layer = 1"),
        "{e}"
    );
    // Nothing trained is lost: the variants' SAEs were built before the import failed.
    assert_eq!(s.artifacts("train").len(), 3);

    with_external(&s, "    - name: narrow\n      path: ext/narrow\n");
    let e = s.fails(&["run", "bench", "-q"]);
    assert!(e.contains("d_in = 16") && e.contains("d_model = 48"), "{e}");

    with_external(&s, "    - name: gone\n      path: ext/missing\n");
    let e = s.fails(&["run", "bench", "-q"]);
    assert!(e.contains("bench.external[0].path = ext/missing"), "{e}");

    with_external(&s, "    - name: topk\n      path: ext/deep\n");
    let e = s.fails(&["status"]);
    assert!(e.contains("already the name of a train variant"), "{e}");
}

#[test]
fn a_hub_sae_offline_fails_fast_naming_the_repo_and_the_local_way() {
    let s = Study::new(8, 40);
    with_external(
        &s,
        "    - name: scope\n      hf: google/gemma-scope-2-270m-pt\n      subfolder: resid_post_all/layer_1_width_16k_l0_small\n",
    );
    let cache = s.dir.join("hf-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_coact"))
        .current_dir(&s.dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &cache)
        .args(["run", "bench", "-q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("google/gemma-scope-2-270m-pt")
            && e.contains("resid_post_all/layer_1_width_16k_l0_small")
            && e.contains("bench.external[0].path"),
        "{e}"
    );
}
