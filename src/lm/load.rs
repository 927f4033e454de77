//! The three loaders: GGUF file, local safetensors folder, Hugging Face hub.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::GemmaConfig;
use super::model::{Block, Gemma, MultiProj, Proj};
use super::ops::gemma_norm_scale;
use super::{Activation, ModelSource};
use crate::linalg::Compute;

/// How GGUF weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Dequantize every matrix at load (to f32, or bf16 with
    /// `LoadOptions::compute`) and run the products on [`crate::linalg`].
    /// The default, chosen by measurement (tests/lm_speed.rs, gemma-3-270m,
    /// 8 x 128-token batches, 2 cores, same run): to layer 8, dense f32 (then
    /// on candle's gemm) 332 tokens/s vs QMatMul 19 tokens/s; candle's
    /// quantized CPU matmul is built for one-token decoding. Costs ~1.1 GB
    /// instead of ~0.3 GB.
    #[default]
    Dense,
    /// Keep GGUF matrices quantized and use candle's `QMatMul` (the embedding
    /// is still dequantized for lookups). Safetensors checkpoints are always dense.
    Quantized,
}

/// Loading options; `LoadOptions::default()` is what [`Gemma::load`] uses.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub weights: WeightFormat,
    /// Overrides the MLP activation read from the checkpoint (for comparisons
    /// with code that uses another one).
    pub activation: Option<Activation>,
    /// The arithmetic of the linear layers: f32 (the default) or bf16 inputs
    /// with f32 accumulation, the weights held in bf16 (see [`crate::linalg`]).
    pub compute: Compute,
}

impl Gemma {
    /// Loads a model with the default options (GGUF dequantized to f32).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, &LoadOptions::default())
    }

    /// Loads a model with explicit options.
    pub fn load_with(source: &ModelSource, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let mut model = match source {
            ModelSource::Gguf(path) => load_gguf(path, device, opts.weights)?,
            ModelSource::Safetensors(dir) => load_safetensors(dir, device)?,
            ModelSource::Hub { repo, revision } => {
                let dir = resolve_hub(repo, revision.as_deref())?;
                load_safetensors(&dir, device)
                    .with_context(|| format!("loading hub model {repo} from {}", dir.display()))?
            }
        };
        if let Some(a) = opts.activation {
            model.cfg.activation = a;
        }
        if opts.compute == Compute::Bf16 {
            model.hold_in_bf16()?;
        }
        Ok(model)
    }
}

impl Gemma {
    /// Holds every block's dense weights in bf16 (the unembedding follows at
    /// the first full forward).
    fn hold_in_bf16(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            for mp in [&mut b.qkv, &mut b.gate_up] {
                match mp {
                    MultiProj::Fused(p, _) => *p = p.to_bf16()?,
                    MultiProj::Separate(ps) => {
                        for p in ps {
                            *p = p.to_bf16()?;
                        }
                    }
                }
            }
            b.o = b.o.to_bf16()?;
            b.down = b.down.to_bf16()?;
        }
        self.compute = Compute::Bf16;
        Ok(())
    }
}

fn check_heads(cfg: &GemmaConfig, what: &str) -> Result<()> {
    if cfg.n_kv_heads == 0 || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
        bail!(
            "{what}: {} attention heads is not a multiple of {} kv heads",
            cfg.n_heads,
            cfg.n_kv_heads
        );
    }
    if !cfg.head_dim.is_multiple_of(2) || cfg.n_layers == 0 {
        bail!("{what}: odd head_dim {} or no layers", cfg.head_dim);
    }
    Ok(())
}

/// Stacks `[out_i, in]` f32 matrices and stores them `[in, sum out_i]`.
fn fused_dense(parts: &[Tensor]) -> Result<(Proj, Vec<usize>)> {
    let widths = parts
        .iter()
        .map(|p| p.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let w = Tensor::cat(parts, 0)?.t()?.contiguous()?;
    Ok((Proj::Dense(w), widths))
}

fn dense(w: Tensor) -> Result<Proj> {
    Ok(Proj::Dense(w.t()?.contiguous()?))
}

// ---------------------------------------------------------------- GGUF

fn load_gguf(path: &Path, device: &Device, format: WeightFormat) -> Result<Gemma> {
    let what = format!("GGUF file {}", path.display());
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {what}"))?;
    let mut reader = std::io::BufReader::new(&mut file);
    let ct = gguf_file::Content::read(&mut reader)
        .map_err(|e| anyhow!("{what} is not a readable GGUF file: {e}"))?;
    let embed_info = ct
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| anyhow!("{what}: no token_embd.weight tensor"))?;
    let vocab = embed_info.shape.dims()[0];
    let cfg = GemmaConfig::from_gguf(&ct, &what, vocab)?;
    check_heads(&cfg, &what)?;
    let mut get = |name: &str| -> Result<QTensor> {
        ct.tensor(&mut reader, name, device)
            .map_err(|e| anyhow!("{what}: reading tensor {name}: {e}"))
    };
    let deq = |q: QTensor| -> Result<Tensor> { Ok(q.dequantize(device)?.to_dtype(DType::F32)?) };
    let embed = deq(get("token_embd.weight")?)?;
    // llama.cpp's converter stores Gemma norm weights as 1 + w already.
    let final_norm = deq(get("output_norm.weight")?)?;
    let has_output = ct.tensor_infos.contains_key("output.weight");
    let unembed = match (has_output, format) {
        (false, WeightFormat::Dense) => Proj::DenseT(embed.clone()),
        (true, WeightFormat::Dense) => Proj::DenseT(deq(get("output.weight")?)?),
        (false, WeightFormat::Quantized) => {
            Proj::Quant(QMatMul::from_qtensor(get("token_embd.weight")?)?)
        }
        (true, WeightFormat::Quantized) => {
            Proj::Quant(QMatMul::from_qtensor(get("output.weight")?)?)
        }
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let mut t = |n: &str| get(&format!("blk.{l}.{n}.weight"));
        let attn_norm = deq(t("attn_norm")?)?;
        let post_attn_norm = deq(t("post_attention_norm")?)?;
        let mlp_norm = deq(t("ffn_norm")?)?;
        let post_mlp_norm = deq(t("post_ffw_norm")?)?;
        let (q_norm, k_norm) = if cfg.arch.has_qk_norm() {
            (Some(deq(t("attn_q_norm")?)?), Some(deq(t("attn_k_norm")?)?))
        } else {
            (None, None)
        };
        let (q, k, v) = (t("attn_q")?, t("attn_k")?, t("attn_v")?);
        let o = t("attn_output")?;
        let (gate, up, down) = (t("ffn_gate")?, t("ffn_up")?, t("ffn_down")?);
        let block = match format {
            WeightFormat::Dense => {
                let (qkv, wq) = fused_dense(&[deq(q)?, deq(k)?, deq(v)?])?;
                let (gu, wg) = fused_dense(&[deq(gate)?, deq(up)?])?;
                Block {
                    attn_norm,
                    post_attn_norm,
                    mlp_norm,
                    post_mlp_norm,
                    q_norm,
                    k_norm,
                    qkv: MultiProj::Fused(qkv, wq),
                    o: dense(deq(o)?)?,
                    gate_up: MultiProj::Fused(gu, wg),
                    down: dense(deq(down)?)?,
                }
            }
            WeightFormat::Quantized => {
                let qm =
                    |x: QTensor| -> Result<Proj> { Ok(Proj::Quant(QMatMul::from_qtensor(x)?)) };
                Block {
                    attn_norm,
                    post_attn_norm,
                    mlp_norm,
                    post_mlp_norm,
                    q_norm,
                    k_norm,
                    qkv: MultiProj::Separate(vec![qm(q)?, qm(k)?, qm(v)?]),
                    o: qm(o)?,
                    gate_up: MultiProj::Separate(vec![qm(gate)?, qm(up)?]),
                    down: qm(down)?,
                }
            }
        };
        blocks.push(block);
    }
    Ok(Gemma {
        cfg,
        embed,
        blocks,
        final_norm,
        unembed,
        compute: Compute::F32,
        unembed_bf16: Default::default(),
        kernels: Default::default(),
        device: device.clone(),
    })
}

// ---------------------------------------------------------------- safetensors

/// The safetensors files of a Hugging Face checkpoint folder: those named by
/// `model.safetensors.index.json` when present, else `model.safetensors`,
/// else every `*.safetensors` file.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?,
        )
        .with_context(|| format!("parsing {}", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| anyhow!("{}: no weight_map", index.display()))?;
        let mut seen = HashSet::new();
        let mut files = vec![];
        for f in map.values().filter_map(|v| v.as_str()) {
            if seen.insert(f.to_string()) {
                files.push(dir.join(f));
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors files", dir.display());
    }
    Ok(files)
}

fn load_safetensors(dir: &Path, device: &Device) -> Result<Gemma> {
    let what = format!("checkpoint folder {}", dir.display());
    let cfg_path = dir.join("config.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{what}: reading config.json"))?,
    )
    .with_context(|| format!("{what}: parsing config.json"))?;
    let cfg = GemmaConfig::from_hf_json(&json).with_context(|| what.clone())?;
    check_heads(&cfg, &what)?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; they must not be
    // modified while loading (as with every mmap-based loader).
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .with_context(|| format!("{what}: opening safetensors files"))?;
    let prefix = ["model.", "language_model.model.", "model.language_model."]
        .into_iter()
        .find(|p| st.get(&format!("{p}embed_tokens.weight")).is_ok())
        .ok_or_else(|| anyhow!("{what}: no model.embed_tokens.weight tensor"))?;
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let full = format!("{prefix}{name}");
        let t = st
            .load(&full, device)
            .map_err(|e| anyhow!("{what}: reading tensor {full}: {e}"))?
            .to_dtype(DType::F32)?;
        if t.dims() != shape {
            bail!(
                "{what}: tensor {full} has shape {:?}, expected {shape:?}",
                t.dims()
            );
        }
        Ok(t)
    };
    let (d, hd, i) = (cfg.d_model, cfg.head_dim, cfg.d_mlp);
    let norm =
        |name: &str, n: usize| -> Result<Tensor> { Ok(gemma_norm_scale(&get(name, &[n])?)?) };
    let embed = get("embed_tokens.weight", &[cfg.vocab, d])?;
    let final_norm = norm("norm.weight", d)?;
    let unembed = match st.load("lm_head.weight", device) {
        Ok(w) => Proj::DenseT(w.to_dtype(DType::F32)?),
        Err(_) => Proj::DenseT(embed.clone()),
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("layers.{l}.");
        let w = |n: &str, shape: &[usize]| get(&format!("{p}{n}"), shape);
        let nrm = |n: &str, len: usize| norm(&format!("{p}{n}"), len);
        let (q_norm, k_norm) = if cfg.arch.has_qk_norm() {
            (
                Some(nrm("self_attn.q_norm.weight", hd)?),
                Some(nrm("self_attn.k_norm.weight", hd)?),
            )
        } else {
            (None, None)
        };
        let (qkv, wq) = fused_dense(&[
            w("self_attn.q_proj.weight", &[cfg.n_heads * hd, d])?,
            w("self_attn.k_proj.weight", &[cfg.n_kv_heads * hd, d])?,
            w("self_attn.v_proj.weight", &[cfg.n_kv_heads * hd, d])?,
        ])?;
        let (gu, wg) = fused_dense(&[
            w("mlp.gate_proj.weight", &[i, d])?,
            w("mlp.up_proj.weight", &[i, d])?,
        ])?;
        blocks.push(Block {
            attn_norm: nrm("input_layernorm.weight", d)?,
            post_attn_norm: nrm("post_attention_layernorm.weight", d)?,
            mlp_norm: nrm("pre_feedforward_layernorm.weight", d)?,
            post_mlp_norm: nrm("post_feedforward_layernorm.weight", d)?,
            q_norm,
            k_norm,
            qkv: MultiProj::Fused(qkv, wq),
            o: dense(w("self_attn.o_proj.weight", &[d, cfg.n_heads * hd])?)?,
            gate_up: MultiProj::Fused(gu, wg),
            down: dense(w("mlp.down_proj.weight", &[d, i])?)?,
        });
    }
    Ok(Gemma {
        cfg,
        embed,
        blocks,
        final_norm,
        unembed,
        compute: Compute::F32,
        unembed_bf16: Default::default(),
        kernels: Default::default(),
        device: device.clone(),
    })
}

// ---------------------------------------------------------------- hub

/// Files a hub checkpoint needs besides the weights.
const CONFIG_FILE: &str = "config.json";
const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

/// Resolves a hub model id to a local snapshot folder holding config.json and
/// the safetensors files: from the HF cache when they are there (no network),
/// else downloaded with hf-hub's sync API into that cache.
fn resolve_hub(repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};
    let hf_repo = match revision {
        Some(r) => Repo::with_revision(repo.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(repo.to_string(), RepoType::Model),
    };
    let cache = Cache::from_env();
    if let Some(dir) = cached_snapshot(&cache, &hf_repo) {
        return Ok(dir);
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let help = |cause: String| {
        anyhow!(
            "cannot fetch model {repo:?} from the Hugging Face hub at {endpoint}: {cause}. \
             It is not in the local HF cache ({}) either. If this machine is offline, download \
             the checkpoint elsewhere and give its local path instead: a folder with config.json \
             and *.safetensors (ModelSource::Safetensors) or a .gguf file (ModelSource::Gguf), or \
             copy it into the HF cache (HF_HOME)",
            cache.path().display()
        )
    };
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(help("HF_HUB_OFFLINE is set".into()));
    }
    // Fail fast when the endpoint cannot be reached at all, instead of
    // waiting on hf-hub's HTTP client.
    probe_endpoint(&endpoint, Duration::from_secs(5)).map_err(help)?;
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .with_retries(0)
        .build()
        .map_err(|e| help(e.to_string()))?;
    let api_repo = api.repo(hf_repo);
    let config = api_repo.get(CONFIG_FILE).map_err(|e| help(e.to_string()))?;
    match api_repo.get(INDEX_FILE) {
        Ok(index) => {
            let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
            for f in safetensors_files(&dir)? {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                api_repo
                    .get(name)
                    .map_err(|e| help(format!("{name}: {e}")))?;
            }
        }
        Err(_) => {
            api_repo
                .get(SINGLE_FILE)
                .map_err(|e| help(format!("{SINGLE_FILE}: {e}")))?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The cached snapshot folder of `repo` when config.json and its weights are
/// all there. A revision that is a commit hash is looked up directly.
fn cached_snapshot(cache: &hf_hub::Cache, repo: &hf_hub::Repo) -> Option<PathBuf> {
    let cache_repo = cache.repo(repo.clone());
    let config = cache_repo.get(CONFIG_FILE).or_else(|| {
        let dir = cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(repo.revision());
        let c = dir.join(CONFIG_FILE);
        c.exists().then_some(c)
    })?;
    let dir = config.parent()?.to_path_buf();
    let files = safetensors_files(&dir).ok()?;
    files.iter().all(|f| f.exists()).then_some(dir)
}

/// Connects to the endpoint's host within `timeout`.
fn probe_endpoint(endpoint: &str, timeout: Duration) -> std::result::Result<(), String> {
    use std::net::ToSocketAddrs;
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let default_port = if endpoint.starts_with("http://") {
        80
    } else {
        443
    };
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port} ({e})"))?
        .collect();
    let mut last = format!("no address for {host_port}");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {a} ({e})"),
        }
    }
    Err(last)
}
