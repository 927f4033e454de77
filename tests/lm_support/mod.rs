//! Shared helpers of the `lm_*` integration tests: the real-asset paths and a
//! tiny random Gemma checkpoint in the Hugging Face layout.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// The repository's data/raw folder, where `make setup` puts the real files.
pub fn raw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("raw")
}

/// A file under data/raw, or a failure telling how to get it.
pub fn real_asset(name: &str) -> PathBuf {
    let p = raw_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make setup` to fetch the default model and tokenizer into data/raw/",
        p.display()
    );
    p
}

pub fn gguf_path() -> PathBuf {
    real_asset("gemma-3-270m-q4_k_m.gguf")
}

pub fn tokenizer_path() -> PathBuf {
    real_asset("tokenizer.json")
}

/// Tokenizes `prompts` with BOS (id 2) first.
pub fn tokenize(prompts: &[&str]) -> Vec<Vec<u32>> {
    let tok = tokenizers::Tokenizer::from_file(tokenizer_path()).expect("loading tokenizer.json");
    prompts
        .iter()
        .map(|p| {
            let enc = tok.encode(*p, false).expect("tokenizing");
            std::iter::once(2u32)
                .chain(enc.get_ids().iter().copied())
                .collect()
        })
        .collect()
}

/// Shape of a tiny checkpoint.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub gemma3: bool,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_mlp: usize,
    pub vocab: usize,
    pub sliding_window: usize,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
}

impl Tiny {
    pub fn gemma2() -> Self {
        Tiny {
            gemma3: false,
            d_model: 32,
            n_layers: 3,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            d_mlp: 64,
            vocab: 97,
            sliding_window: 64,
            // Small caps so that the random weights actually reach them.
            attn_softcap: Some(2.0),
            final_softcap: Some(3.0),
        }
    }

    pub fn gemma3() -> Self {
        Tiny {
            gemma3: true,
            d_model: 48,
            n_layers: 7,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 16,
            d_mlp: 96,
            vocab: 89,
            sliding_window: 64,
            attn_softcap: None,
            final_softcap: None,
        }
    }

    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "model_type": if self.gemma3 { "gemma3_text" } else { "gemma2" },
            "architectures": [if self.gemma3 { "Gemma3ForCausalLM" } else { "Gemma2ForCausalLM" }],
            "attention_bias": false,
            "head_dim": self.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": self.d_model,
            "intermediate_size": self.d_mlp,
            "num_attention_heads": self.n_heads,
            "num_hidden_layers": self.n_layers,
            "num_key_value_heads": self.n_kv_heads,
            "rms_norm_eps": 1e-6,
            "vocab_size": self.vocab,
            "attn_logit_softcapping": self.attn_softcap,
            "final_logit_softcapping": self.final_softcap,
            // = head_dim, because candle-transformers' gemma2/gemma3 scale
            // attention by 1/sqrt(head_dim) whatever this says.
            "query_pre_attn_scalar": self.head_dim,
            "sliding_window": self.sliding_window,
            "max_position_embeddings": 256,
        });
        if self.gemma3 {
            c["rope_theta"] = 1_000_000.0.into();
            c["rope_local_base_freq"] = 10_000.0.into();
            c["sliding_window_pattern"] = 6.into();
        } else {
            c["rope_theta"] = 10_000.0.into();
        }
        c
    }

    /// Random weights in Hugging Face names (norm weights are the raw `w` of
    /// `1 + w`).
    pub fn weights(&self, seed: u64) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let mut rng = seed;
        let mut randn = |shape: &[usize], std: f32| -> Tensor {
            // A small xorshift + Box-Muller, so the test does not depend on
            // candle's global RNG.
            let n: usize = shape.iter().product();
            let mut v = Vec::with_capacity(n);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            while v.len() < n {
                let (u1, u2) = (next(), next());
                let r = (-2.0 * u1.ln()).sqrt();
                v.push((r * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std);
            }
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let (d, hd, i) = (self.d_model, self.head_dim, self.d_mlp);
        let mut w = HashMap::new();
        w.insert(
            "model.embed_tokens.weight".into(),
            randn(&[self.vocab, d], 1.0),
        );
        w.insert("model.norm.weight".into(), randn(&[d], 0.3));
        let proj = 1.0 / (d as f32).sqrt();
        for l in 0..self.n_layers {
            let p = format!("model.layers.{l}.");
            let mut put = |n: &str, t: Tensor| {
                w.insert(format!("{p}{n}"), t);
            };
            put(
                "self_attn.q_proj.weight",
                randn(&[self.n_heads * hd, d], 3.0 * proj),
            );
            put(
                "self_attn.k_proj.weight",
                randn(&[self.n_kv_heads * hd, d], 3.0 * proj),
            );
            put(
                "self_attn.v_proj.weight",
                randn(&[self.n_kv_heads * hd, d], proj),
            );
            put(
                "self_attn.o_proj.weight",
                randn(
                    &[d, self.n_heads * hd],
                    1.0 / ((self.n_heads * hd) as f32).sqrt(),
                ),
            );
            put("mlp.gate_proj.weight", randn(&[i, d], proj));
            put("mlp.up_proj.weight", randn(&[i, d], proj));
            put(
                "mlp.down_proj.weight",
                randn(&[d, i], 1.0 / (i as f32).sqrt()),
            );
            for n in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                put(&format!("{n}.weight"), randn(&[d], 0.3));
            }
            if self.gemma3 {
                put("self_attn.q_norm.weight", randn(&[hd], 0.3));
                put("self_attn.k_norm.weight", randn(&[hd], 0.3));
            }
        }
        w
    }

    /// Writes config.json + model.safetensors into `dir`.
    pub fn write(&self, dir: &Path, seed: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config_json()).unwrap(),
        )
        .unwrap();
        candle_core::safetensors::save(&self.weights(seed), dir.join("model.safetensors")).unwrap();
    }
}

/// Random token ids `[b, t]` below `vocab`.
pub fn random_tokens(b: usize, t: usize, vocab: usize, seed: u64) -> Tensor {
    let mut s = seed.max(1);
    let ids: Vec<u32> = (0..b * t)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect();
    Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
}

/// max |a - b| / max |b|.
pub fn rel_max_abs(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = b.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-12)
}

/// Pearson correlation of two tensors' entries.
pub fn correlation(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let n = a.len() as f64;
    let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (*x as f64 - ma, *y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

/// Index of the largest entry of a 1-D tensor.
pub fn argmax(v: &Tensor) -> u32 {
    v.flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap()
}
