//! Gemma hyper-parameters, read from a Hugging Face `config.json` or from GGUF
//! metadata.

use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file;
use serde_json::Value;

/// Which Gemma generation a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// gemma-2: attention and final logit softcaps, alternating local/global
    /// layers (even layers local), one rope base.
    Gemma2,
    /// gemma-3: q/k RMSNorms, 5 local : 1 global layers, rope base 10k on local
    /// and 1M on global layers, no softcaps unless configured.
    Gemma3,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        })
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh`, the tanh approximation every Gemma uses.
    GeluTanh,
    /// Exact (erf) GELU, HF's `gelu`.
    GeluErf,
    /// SiLU; not a Gemma activation, kept so that the forward can reproduce
    /// code that uses it (candle-transformers' quantized_gemma3 does).
    Silu,
}

impl Activation {
    /// Maps a Hugging Face activation name.
    pub fn from_hf(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "silu" | "swish" => Activation::Silu,
            other => bail!("unsupported hidden activation {other:?}"),
        })
    }
}

/// Everything the forward needs to know about a Gemma model.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub arch: Arch,
    /// Residual stream width.
    pub d_model: usize,
    pub n_layers: usize,
    pub vocab: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    pub rms_norm_eps: f64,
    /// Attention scores are multiplied by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    /// Rope base of the global (full-attention) layers.
    pub rope_theta: f64,
    /// Rope base of the local (sliding-window) layers.
    pub rope_local_theta: f64,
    /// Linear rope scaling factor of the global layers (positions divided by
    /// it; 1 for none). gemma-3 4b and larger use 8.
    pub rope_global_scale: f64,
    /// Sliding window of the local layers: a query at position i sees keys at
    /// positions j with `i - window < j <= i` (Hugging Face's convention).
    pub sliding_window: usize,
    /// `local_layers[l]` is true when layer `l` uses the sliding window.
    pub local_layers: Vec<bool>,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    pub activation: Activation,
    /// Longest context the model was trained for (informational).
    pub max_position_embeddings: usize,
}

impl GemmaConfig {
    /// Index of the last layer, for error messages.
    pub(crate) fn check_layer(&self, layer: usize) -> Result<()> {
        if layer >= self.n_layers {
            bail!(
                "layer {layer} is out of range: the model has {} layers (valid layers are 0..={})",
                self.n_layers,
                self.n_layers - 1
            );
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json` (gemma2, gemma3_text, or gemma3 with
    /// a nested `text_config`).
    pub fn from_hf_json(json: &Value) -> Result<Self> {
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let text = match json.get("text_config") {
            Some(t) if t.is_object() => t,
            _ => json,
        };
        let arch = match model_type {
            "gemma2" => Arch::Gemma2,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            other => bail!(
                "config.json: model_type {other:?} is not supported (coact's Gemma forward reads gemma2, gemma3 and gemma3_text)"
            ),
        };
        let usize_key = |k: &str| -> Result<usize> {
            text.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| anyhow!("config.json: missing or non-integer key {k:?}"))
        };
        let f64_opt = |k: &str| -> Option<f64> { text.get(k).and_then(Value::as_f64) };
        let d_model = usize_key("hidden_size")?;
        let n_layers = usize_key("num_hidden_layers")?;
        let n_heads = usize_key("num_attention_heads")?;
        let n_kv_heads = usize_key("num_key_value_heads").unwrap_or(n_heads);
        let head_dim = usize_key("head_dim").unwrap_or(d_model / n_heads);
        let act = text
            .get("hidden_activation")
            .or_else(|| text.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        let rope_theta = f64_opt("rope_theta").unwrap_or(match arch {
            Arch::Gemma2 => 10_000.0,
            Arch::Gemma3 => 1_000_000.0,
        });
        let rope_local_theta = match arch {
            Arch::Gemma2 => rope_theta,
            Arch::Gemma3 => f64_opt("rope_local_base_freq").unwrap_or(10_000.0),
        };
        let rope_global_scale = match text.get("rope_scaling") {
            Some(s) if s.is_object() => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("linear");
                if kind != "linear" && kind != "default" {
                    bail!("config.json: rope_scaling type {kind:?} is not supported (only linear)");
                }
                s.get("factor").and_then(Value::as_f64).unwrap_or(1.0)
            }
            _ => 1.0,
        };
        let sliding_window = usize_key("sliding_window").unwrap_or(4096);
        let local_layers = match text.get("layer_types").and_then(Value::as_array) {
            Some(types) => {
                if types.len() != n_layers {
                    bail!(
                        "config.json: layer_types has {} entries for {n_layers} layers",
                        types.len()
                    );
                }
                types
                    .iter()
                    .map(|t| t.as_str() == Some("sliding_attention"))
                    .collect()
            }
            None => {
                let pattern = match arch {
                    Arch::Gemma2 => 2,
                    Arch::Gemma3 => usize_key("sliding_window_pattern").unwrap_or(6),
                };
                local_pattern(n_layers, pattern)
            }
        };
        Ok(GemmaConfig {
            arch,
            d_model,
            n_layers,
            vocab: usize_key("vocab_size")?,
            n_heads,
            n_kv_heads,
            head_dim,
            d_mlp: usize_key("intermediate_size")?,
            rms_norm_eps: f64_opt("rms_norm_eps").unwrap_or(1e-6),
            query_pre_attn_scalar: f64_opt("query_pre_attn_scalar").unwrap_or(head_dim as f64),
            rope_theta,
            rope_local_theta,
            rope_global_scale,
            sliding_window,
            local_layers,
            attn_softcap: f64_opt("attn_logit_softcapping"),
            final_softcap: f64_opt("final_logit_softcapping"),
            activation: Activation::from_hf(act)?,
            max_position_embeddings: usize_key("max_position_embeddings").unwrap_or(8192),
        })
    }

    /// Reads GGUF metadata (llama.cpp's `gemma2.*` / `gemma3.*` keys). `what`
    /// names the file in errors. The vocabulary size comes from the
    /// embedding's shape, which the caller passes.
    pub fn from_gguf(ct: &gguf_file::Content, what: &str, vocab: usize) -> Result<Self> {
        let arch_name = match ct.metadata.get("general.architecture") {
            Some(v) => v.to_string().map(|s| s.to_string()).unwrap_or_default(),
            None => String::from("(none)"),
        };
        let arch = match arch_name.as_str() {
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => bail!(
                "{what}: GGUF architecture {other:?} is not supported; coact's Gemma forward reads gemma3 and gemma2 GGUF files"
            ),
        };
        let p = arch_name.as_str();
        let get = |k: &str| ct.metadata.get(&format!("{p}.{k}"));
        let req_usize = |k: &str| -> Result<usize> {
            get(k)
                .and_then(gguf_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    anyhow!("{what}: GGUF metadata {p}.{k} is missing or not an integer")
                })
        };
        let opt_f64 = |k: &str| get(k).and_then(gguf_f64);
        let d_model = req_usize("embedding_length")?;
        let n_layers = req_usize("block_count")?;
        let n_heads = req_usize("attention.head_count")?;
        let n_kv_heads = req_usize("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = req_usize("attention.key_length").unwrap_or(d_model / n_heads);
        let rope_theta = opt_f64("rope.freq_base").unwrap_or(match arch {
            Arch::Gemma2 => 10_000.0,
            Arch::Gemma3 => 1_000_000.0,
        });
        let rope_local_theta = match arch {
            Arch::Gemma2 => rope_theta,
            Arch::Gemma3 => opt_f64("rope.local_freq_base").unwrap_or(10_000.0),
        };
        let rope_global_scale = match get("rope.scaling.type").and_then(|v| v.to_string().ok()) {
            Some(t) if t == "linear" => opt_f64("rope.scaling.factor").unwrap_or(1.0),
            Some(t) if t == "none" => 1.0,
            Some(t) => bail!("{what}: rope scaling {t:?} is not supported (only linear)"),
            None => 1.0,
        };
        let pattern = match arch {
            Arch::Gemma2 => 2,
            Arch::Gemma3 => req_usize("attention.sliding_window_type").unwrap_or(6),
        };
        // llama.cpp has no key for gemma's query_pre_attn_scalar: it uses the
        // head size, except for gemma-2 27b (46 layers) where it is d_model / heads.
        let query_pre_attn_scalar = match opt_f64("attention.query_pre_attn_scalar") {
            Some(v) => v,
            None if arch == Arch::Gemma2 && n_layers == 46 => (d_model / n_heads) as f64,
            None => head_dim as f64,
        };
        Ok(GemmaConfig {
            arch,
            d_model,
            n_layers,
            vocab,
            n_heads,
            n_kv_heads,
            head_dim,
            d_mlp: req_usize("feed_forward_length")?,
            rms_norm_eps: opt_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            query_pre_attn_scalar,
            rope_theta,
            rope_local_theta,
            rope_global_scale,
            sliding_window: req_usize("attention.sliding_window").unwrap_or(4096),
            local_layers: local_pattern(n_layers, pattern),
            attn_softcap: opt_f64("attn_logit_softcapping"),
            final_softcap: opt_f64("final_logit_softcapping"),
            activation: Activation::GeluTanh,
            max_position_embeddings: req_usize("context_length").unwrap_or(8192),
        })
    }
}

/// Layer `l` is local unless `(l + 1)` is a multiple of `pattern`
/// (gemma-2: pattern 2, even layers local; gemma-3: pattern 6, layers 5, 11, ... global).
fn local_pattern(n_layers: usize, pattern: usize) -> Vec<bool> {
    (0..n_layers)
        .map(|l| pattern == 0 || (l + 1) % pattern != 0)
        .collect()
}

fn gguf_u64(v: &gguf_file::Value) -> Option<u64> {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => Some(*x as u64),
        V::I8(x) => u64::try_from(*x).ok(),
        V::U16(x) => Some(*x as u64),
        V::I16(x) => u64::try_from(*x).ok(),
        V::U32(x) => Some(*x as u64),
        V::I32(x) => u64::try_from(*x).ok(),
        V::U64(x) => Some(*x),
        V::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn gguf_f64(v: &gguf_file::Value) -> Option<f64> {
    use gguf_file::Value as V;
    match v {
        V::F32(x) => Some(*x as f64),
        V::F64(x) => Some(*x),
        other => gguf_u64(other).map(|x| x as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_patterns() {
        let g3 = local_pattern(18, 6);
        let globals: Vec<usize> = (0..18).filter(|&l| !g3[l]).collect();
        assert_eq!(globals, vec![5, 11, 17]);
        let g2 = local_pattern(4, 2);
        assert_eq!(g2, vec![true, false, true, false]);
    }

    #[test]
    fn hf_gemma3_config() {
        let json = serde_json::json!({
            "model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "intermediate_size": 2048, "vocab_size": 262144, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
            "query_pre_attn_scalar": 256, "final_logit_softcapping": null,
            "attn_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh",
            "rope_scaling": null, "max_position_embeddings": 32768
        });
        let c = GemmaConfig::from_hf_json(&json).unwrap();
        assert_eq!(c.arch, Arch::Gemma3);
        assert_eq!(c.final_softcap, None);
        assert_eq!(c.rope_global_scale, 1.0);
        assert!(!c.local_layers[5] && c.local_layers[4]);
        assert!(c.check_layer(17).is_ok());
        let e = c.check_layer(18).unwrap_err().to_string();
        assert!(e.contains("18") && e.contains("layers"), "{e}");
        let bad = serde_json::json!({"model_type": "llama"});
        assert!(GemmaConfig::from_hf_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("llama"));
    }
}
