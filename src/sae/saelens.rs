//! SAELens-compatible folders: `cfg.json` + `sae_weights.safetensors`.
//!
//! Field names follow SAELens 6 (`sae_lens/saes/sae.py`, `topk_sae.py`,
//! `jumprelu_sae.py`): top level `architecture` ("topk" | "standard" |
//! "jumprelu"; coact's BatchTopK and Matryoshka SAEs are saved, as SAELens
//! saves its own, in their JumpReLU inference form with the learned
//! threshold), `d_in`, `d_sae`, `k` (topk), `dtype`, `device`,
//! `apply_b_dec_to_input`, `normalize_activations`, `reshape_activations`,
//! and `metadata` with `model_name`, `hook_name`, `hook_layer`,
//! `context_size`, `prepend_bos`, `dataset_path`. The same metadata keys are
//! repeated at the top level for older readers (SAELens < 6, SAEBench),
//! which ignore unknown fields, with `activation_fn` (and SAELens 5's
//! `activation_fn_str`) and `activation_fn_kwargs` (`{"k": k}` for TopK),
//! which SAELens 5 reads instead of `architecture`. Weights: `W_enc` [d_in,
//! d_sae], `W_dec` [d_sae, d_in], `b_enc`, `b_dec`, and `threshold` [d_sae]
//! for JumpReLU.

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
    // SAELens < 6 picks the activation from `activation_fn` (read as
    // `activation_fn_str`) and its kwargs, not from `architecture`: without
    // them a TopK SAE loads there as a ReLU one.
    let (act, kwargs) = match &sae.cfg.kind {
        SaeKind::TopK { k } => {
            obj.insert("k".into(), json!(k));
            ("topk", json!({ "k": k }))
        }
        SaeKind::ReluL1 { l1_coeff } => {
            obj.insert("l1_coefficient".into(), json!(l1_coeff));
            ("relu", json!({}))
        }
        SaeKind::BatchTopK { .. } | SaeKind::Matryoshka { .. } | SaeKind::JumpRelu => {
            ("relu", json!({}))
        }
    };
    obj.insert("activation_fn".into(), json!(act));
    obj.insert("activation_fn_str".into(), json!(act));
    obj.insert("activation_fn_kwargs".into(), kwargs);
    // How coact trained it (SAELens ignores the field; a batch kind's
    // inference form is the jumprelu above).
    obj.insert("coact_kind".into(), serde_json::to_value(&sae.cfg.kind)?);
    let w_enc = sae.w_enc();
    let mut tensors: Vec<(&str, Vec<u8>, Vec<usize>)> = vec![
        ("W_enc", f32_bytes(&w_enc), vec![d, f]),
        ("W_dec", f32_bytes(&sae.w_dec), vec![f, d]),
        ("b_enc", f32_bytes(&sae.b_enc), vec![f]),
        ("b_dec", f32_bytes(&sae.b_dec), vec![d]),
    ];
    if sae.cfg.kind.has_threshold() {
        tensors.push(("threshold", f32_bytes(&sae.threshold), vec![f]));
    }
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

/// Gemma Scope's own layout (`google/gemma-scope-2-*` on the hub): these
/// two files instead of cfg.json and sae_weights.safetensors.
pub const GEMMA_SCOPE_CFG: &str = "config.json";
pub const GEMMA_SCOPE_WEIGHTS: &str = "params.safetensors";

/// Reads an SAE folder: SAELens's layout (written by [`save_saelens`] or by
/// SAELens 5 / 6: `topk`, `standard`, `jumprelu`; a pre-6 `standard` with
/// `activation_fn` `topk` is TopK) or Gemma Scope's (`config.json` +
/// `params.safetensors`, JumpReLU). Weights may be f32, f16 or bf16.
///
/// Whatever the file says is folded into coact's one form, `pre = (x -
/// b_dec) W_enc + b_enc` with unit-free decoder rows: `apply_b_dec_to_input
/// = false` (Gemma Scope) moves `b_dec W_enc` into b_enc, and
/// `rescale_acts_by_decoder_norm` (SAELens 6 TopK) scales encoder column i
/// and b_enc_i by `|d_i|` and decoder row i by `1 / |d_i|`, which gives the
/// same selection and the same reconstruction. Activation normalisation
/// other than "none" is refused (coact cannot fold a per-input norm).
pub fn load_saelens(dir: &Path) -> Result<(Sae, SaelensMeta)> {
    if !dir.join(CFG_FILE).exists() && dir.join(GEMMA_SCOPE_CFG).exists() {
        return load_gemma_scope(dir);
    }
    let cfg_s = std::fs::read_to_string(dir.join(CFG_FILE)).with_context(|| {
        format!(
            "reading {} (an SAE folder holds {CFG_FILE} + {WEIGHTS_FILE}, or Gemma Scope's {GEMMA_SCOPE_CFG} + {GEMMA_SCOPE_WEIGHTS})",
            dir.join(CFG_FILE).display()
        )
    })?;
    let cfg: Value = serde_json::from_str(&cfg_s)
        .with_context(|| format!("parsing {}", dir.join(CFG_FILE).display()))?;
    let get_u = |k: &str| -> Result<usize> {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .with_context(|| format!("{CFG_FILE} lacks integer {k}"))
    };
    let d = get_u("d_in")?;
    let f = get_u("d_sae")?;
    let arch = cfg
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or(Architecture::ReluL1.saelens());
    let act = cfg
        .get("activation_fn_str")
        .or_else(|| cfg.get("activation_fn"))
        .and_then(Value::as_str)
        .unwrap_or("relu");
    let kwarg_k = cfg
        .get("activation_fn_kwargs")
        .and_then(|v| v.get("k"))
        .and_then(Value::as_u64)
        .map(|v| v as usize);
    let kind = match Architecture::from_saelens(arch) {
        Some(Architecture::TopK) => SaeKind::TopK {
            k: match kwarg_k {
                Some(k) => k,
                None => get_u("k")?,
            },
        },
        Some(Architecture::ReluL1) if act == "topk" => SaeKind::TopK {
            k: kwarg_k.context("activation_fn topk without activation_fn_kwargs.k")?,
        },
        Some(Architecture::ReluL1) => SaeKind::ReluL1 {
            l1_coeff: cfg
                .get("l1_coefficient")
                .and_then(Value::as_f64)
                .unwrap_or(0.0) as f32,
        },
        Some(Architecture::JumpRelu) => SaeKind::JumpRelu,
        _ => bail!("{CFG_FILE}: architecture {arch:?} is not supported (topk, standard, jumprelu)"),
    };
    let norm = cfg
        .get("normalize_activations")
        .and_then(Value::as_str)
        .unwrap_or("none");
    ensure!(
        norm == "none",
        "{CFG_FILE}: normalize_activations {norm:?} is not supported (expected \"none\"; fold the scale into the weights first)"
    );
    let apply_b_dec = cfg
        .get("apply_b_dec_to_input")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let rescale = cfg
        .get("rescale_acts_by_decoder_norm")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let st_path = dir.join(WEIGHTS_FILE);
    let w = Weights::read(&st_path, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"])?;
    let sae = w.into_sae(
        SaeConfig {
            d_in: d,
            d_sae: f,
            kind,
        },
        apply_b_dec,
        rescale,
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
            .map(|v| v as usize)
            .or_else(|| hook_layer_of(field("hook_name").and_then(Value::as_str).unwrap_or(""))),
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

/// The block of a TransformerLens hook name (`blocks.6.hook_resid_post` -> 6).
fn hook_layer_of(hook: &str) -> Option<usize> {
    hook.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Gemma Scope's layout: JumpReLU, lower-case tensor names, no b_dec
/// subtraction on the input; `hf_hook_point_in` `model.layers.L.output` is
/// the residual stream after block L.
fn load_gemma_scope(dir: &Path) -> Result<(Sae, SaelensMeta)> {
    let path = dir.join(GEMMA_SCOPE_CFG);
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let arch = cfg
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or("");
    ensure!(
        arch == "jump_relu",
        "{}: architecture {arch:?} is not supported (expected \"jump_relu\")",
        path.display()
    );
    let w = Weights::read(
        &dir.join(GEMMA_SCOPE_WEIGHTS),
        ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"],
    )?;
    let (d, f) = match w.shape(0) {
        [d, f] => (*d, *f),
        s => bail!("{GEMMA_SCOPE_WEIGHTS}: w_enc has shape {s:?}, expected [d_in, d_sae]"),
    };
    let sae = w.into_sae(
        SaeConfig {
            d_in: d,
            d_sae: f,
            kind: SaeKind::JumpRelu,
        },
        false,
        false,
    )?;
    let hook_in = cfg
        .get("hf_hook_point_in")
        .and_then(Value::as_str)
        .unwrap_or("");
    let hook_layer = hook_in
        .strip_prefix("model.layers.")
        .and_then(|r| r.strip_suffix(".output"))
        .and_then(|l| l.parse::<usize>().ok());
    let meta = SaelensMeta {
        model_name: cfg
            .get("model_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        hook_name: hook_layer
            .map(|l| format!("blocks.{l}.hook_resid_post"))
            .unwrap_or_else(|| hook_in.to_string()),
        hook_layer,
        context_size: 0,
        prepend_bos: true,
        dataset_path: String::new(),
    };
    Ok((sae, meta))
}

/// The tensors of one weights file, by role: encoder [d_in, d_sae], decoder
/// [d_sae, d_in], the two biases and the threshold (may be absent).
struct Weights {
    path: std::path::PathBuf,
    names: [&'static str; 5],
    tensors: Vec<Option<(Vec<usize>, Vec<f32>)>>,
}

impl Weights {
    fn read(path: &Path, names: [&'static str; 5]) -> Result<Weights> {
        let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let st = SafeTensors::deserialize(&buf)
            .with_context(|| format!("parsing {}", path.display()))?;
        let tensors = names
            .iter()
            .map(|&n| match st.tensor(n) {
                Ok(t) => Ok(Some((t.shape().to_vec(), to_f32(&t, n)?))),
                Err(_) => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Weights {
            path: path.to_path_buf(),
            names,
            tensors,
        })
    }

    fn shape(&self, i: usize) -> &[usize] {
        self.tensors[i].as_ref().map_or(&[], |t| &t.0[..])
    }

    fn take(&mut self, i: usize, shape: &[usize]) -> Result<Vec<f32>> {
        let name = self.names[i];
        let (s, v) = self.tensors[i]
            .take()
            .with_context(|| format!("{} lacks {name}", self.path.display()))?;
        ensure!(
            s == shape,
            "{}: {name} has shape {s:?}, expected {shape:?}",
            self.path.display()
        );
        Ok(v)
    }

    fn into_sae(mut self, cfg: SaeConfig, apply_b_dec: bool, rescale: bool) -> Result<Sae> {
        let (d, f) = (cfg.d_in, cfg.d_sae);
        let mut w_enc = self.take(0, &[d, f])?;
        let mut w_dec = self.take(1, &[f, d])?;
        let mut b_enc = self.take(2, &[f])?;
        let b_dec = self.take(3, &[d])?;
        // A threshold compares the (rescaled) pre-activation, which the fold
        // below leaves as it was, so it is not rescaled.
        let threshold = if cfg.kind.has_threshold() {
            self.take(4, &[f])?
        } else {
            Vec::new()
        };
        if !apply_b_dec {
            // x W + b = (x - b_dec) W + (b + b_dec W).
            for (r, &bd) in b_dec.iter().enumerate() {
                for (be, &we) in b_enc.iter_mut().zip(&w_enc[r * f..(r + 1) * f]) {
                    *be += bd * we;
                }
            }
        }
        if rescale {
            for j in 0..f {
                let row = &mut w_dec[j * d..(j + 1) * d];
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if n > 0.0 {
                    row.iter_mut().for_each(|v| *v /= n);
                    b_enc[j] *= n;
                    for r in 0..d {
                        w_enc[r * f + j] *= n;
                    }
                }
            }
        }
        Sae::from_saelens(cfg, &w_enc, w_dec, b_enc, b_dec, threshold)
    }
}
