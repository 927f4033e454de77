//! SAELens-compatible folders: `cfg.json` + `sae_weights.safetensors`.
//!
//! Field names follow SAELens 6 (`sae_lens/saes/sae.py`, `topk_sae.py`):
//! top level `architecture` ("topk" | "standard"), `d_in`, `d_sae`, `k`
//! (topk), `dtype`, `device`, `apply_b_dec_to_input`,
//! `normalize_activations`, `reshape_activations`, and `metadata` with
//! `model_name`, `hook_name`, `hook_layer`, `context_size`, `prepend_bos`,
//! `dataset_path`. The same metadata keys are repeated at the top level for
//! older readers (SAELens < 6, SAEBench), which ignore unknown fields.
//! Weights: `W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc`, `b_dec`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::checkpoint::{f32_bytes, f32_from_bytes};
use super::model::{Architecture, Sae, SaeConfig, SaeKind};

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// Where the SAE's activations came from (SAELens `metadata`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SaelensMeta {
    pub model_name: String,
    /// e.g. "blocks.12.hook_resid_post".
    pub hook_name: String,
    pub hook_layer: Option<usize>,
    pub context_size: usize,
    pub prepend_bos: bool,
    pub dataset_path: String,
}

/// Writes `dir/cfg.json` and `dir/sae_weights.safetensors` (f32). The SAE must
/// act on raw activations (fold any scaling first with
/// [`super::fold_scaling`]): `normalize_activations` is written as "none".
pub fn save_saelens(sae: &Sae, dir: &Path, meta: &SaelensMeta) -> Result<()> {
    sae.cfg.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (d, f) = (sae.cfg.d_in, sae.cfg.d_sae);
    let metadata = json!({
        "model_name": meta.model_name,
        "hook_name": meta.hook_name,
        "hook_layer": meta.hook_layer,
        "hook_head_index": null,
        "context_size": meta.context_size,
        "prepend_bos": meta.prepend_bos,
        "dataset_path": meta.dataset_path,
    });
    let mut cfg = json!({
        "d_in": d,
        "d_sae": f,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata.clone(),
    });
    cfg["metadata"]["model_from_pretrained_kwargs"] = json!({});
    // The metadata fields are repeated at the top level for older SAELens readers.
    for (k, v) in metadata.as_object().expect("an object") {
        cfg[k.as_str()] = v.clone();
    }
    let obj = cfg.as_object_mut().unwrap();
    obj.insert(
        "architecture".into(),
        json!(sae.cfg.kind.architecture().saelens()),
    );
    match sae.cfg.kind {
        SaeKind::TopK { k } => {
            obj.insert("k".into(), json!(k));
        }
        SaeKind::ReluL1 { l1_coeff } => {
            obj.insert("l1_coefficient".into(), json!(l1_coeff));
        }
    }
    let w_enc = sae.w_enc();
    let tensors: Vec<(&str, Vec<u8>, Vec<usize>)> = vec![
        ("W_enc", f32_bytes(&w_enc), vec![d, f]),
        ("W_dec", f32_bytes(&sae.w_dec), vec![f, d]),
        ("b_enc", f32_bytes(&sae.b_enc), vec![f]),
        ("b_dec", f32_bytes(&sae.b_dec), vec![d]),
    ];
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, b, s)| Ok((k.to_string(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(
        views,
        None::<HashMap<String, String>>,
        &dir.join(WEIGHTS_FILE),
    )
    .context("writing sae_weights.safetensors")?;
    std::fs::write(dir.join(CFG_FILE), serde_json::to_string_pretty(&cfg)?)?;
    Ok(())
}

fn to_f32(t: &TensorView<'_>, name: &str) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        Dtype::F32 => f32_from_bytes(t.data()),
        Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("{name} has unsupported dtype {other:?}"),
    })
}

/// Reads a SAELens folder written by [`save_saelens`] or by SAELens itself
/// ("topk" or "standard", `apply_b_dec_to_input` true, no activation
/// normalisation; f32, f16 or bf16 weights).
pub fn load_saelens(dir: &Path) -> Result<(Sae, SaelensMeta)> {
    let cfg_s = std::fs::read_to_string(dir.join(CFG_FILE))
        .with_context(|| format!("reading {}", dir.join(CFG_FILE).display()))?;
    let cfg: Value = serde_json::from_str(&cfg_s).context("parsing cfg.json")?;
    let get_u = |k: &str| -> Result<usize> {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .with_context(|| format!("cfg.json lacks integer {k}"))
    };
    let d = get_u("d_in")?;
    let f = get_u("d_sae")?;
    let arch = cfg
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or(Architecture::ReluL1.saelens());
    let kind = match Architecture::from_saelens(arch) {
        Some(Architecture::TopK) => SaeKind::TopK { k: get_u("k")? },
        Some(Architecture::ReluL1) => SaeKind::ReluL1 {
            l1_coeff: cfg
                .get("l1_coefficient")
                .and_then(Value::as_f64)
                .unwrap_or(0.0) as f32,
        },
        None => bail!("architecture {arch:?} is not supported (topk, standard)"),
    };
    if let Some(false) = cfg.get("apply_b_dec_to_input").and_then(Value::as_bool) {
        bail!("apply_b_dec_to_input = false is not supported");
    }
    let norm = cfg
        .get("normalize_activations")
        .and_then(Value::as_str)
        .unwrap_or("none");
    ensure!(
        norm == "none",
        "normalize_activations {norm:?} is not supported (fold it first)"
    );
    let sae_cfg = SaeConfig {
        d_in: d,
        d_sae: f,
        kind,
    };
    let buf = std::fs::read(dir.join(WEIGHTS_FILE))
        .with_context(|| format!("reading {}", dir.join(WEIGHTS_FILE).display()))?;
    let st = SafeTensors::deserialize(&buf).context("parsing sae_weights.safetensors")?;
    let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .with_context(|| format!("weights lack {name}"))?;
        ensure!(
            t.shape() == shape,
            "{name} has shape {:?}, expected {shape:?}",
            t.shape()
        );
        to_f32(&t, name)
    };
    let w_enc = tensor("W_enc", &[d, f])?;
    let sae = Sae::from_saelens(
        sae_cfg,
        &w_enc,
        tensor("W_dec", &[f, d])?,
        tensor("b_enc", &[f])?,
        tensor("b_dec", &[d])?,
    )?;
    let m = cfg.get("metadata").cloned().unwrap_or(Value::Null);
    let field = |k: &str| m.get(k).filter(|v| !v.is_null()).or_else(|| cfg.get(k));
    let meta = SaelensMeta {
        model_name: field("model_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        hook_name: field("hook_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        hook_layer: field("hook_layer")
            .and_then(Value::as_u64)
            .map(|v| v as usize),
        context_size: field("context_size").and_then(Value::as_u64).unwrap_or(0) as usize,
        prepend_bos: field("prepend_bos")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        dataset_path: field("dataset_path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    };
    Ok((sae, meta))
}
