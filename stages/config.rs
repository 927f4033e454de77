//! pipeline.yaml: the study's schema, loading with errors that name the key
//! path, and semantic validation.

use anyhow::{anyhow, bail, Result};
use coact::linalg::Compute;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A name for the study, shown in status and reports.
    pub study: String,
    /// Where artifacts live, relative to the config file's folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub model: ModelConfig,
    pub corpus: CorpusConfig,
    pub tokenize: TokenizeConfig,
    #[serde(default)]
    pub extract: ExtractConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub compete: crate::compete::CompeteConfig,
    /// The benchmarks, the first-letter prompts (letters stage) and the
    /// labelled datasets (datasets stage).
    #[serde(default)]
    pub bench: crate::bench::BenchConfig,
    #[serde(default)]
    pub report: crate::report::ReportConfig,
    /// The config file itself and its folder (relative paths resolve there).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSourceKind {
    /// A local GGUF file (`path`).
    Gguf,
    /// A local folder with config.json and *.safetensors (`path`).
    Safetensors,
    /// A Hugging Face model id (`hf_id`), fetched into the HF cache.
    Hf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Recorded in artifacts and SAELens cfg.json (e.g. gemma-3-270m).
    pub name: String,
    pub source: ModelSourceKind,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub hf_id: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// A tokenizer.json path, or `hf` for the tokenizer.json of `hf_id`.
    pub tokenizer: String,
    #[serde(default = "default_bos")]
    pub bos_token: String,
    /// The block whose resid_post is studied (0-based).
    pub layer: usize,
}

fn default_bos() -> String {
    "<bos>".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusFormat {
    /// A folder of .txt files, one document each.
    TxtDir,
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    pub path: PathBuf,
    /// Inferred from the path when absent (folder, .jsonl, .parquet).
    #[serde(default)]
    pub format: Option<CorpusFormat>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column naming each document; the row number when absent.
    #[serde(default)]
    pub id_column: Option<String>,
    /// Columns carried into `tokenize_documents` (for probing tasks).
    #[serde(default)]
    pub label_columns: Vec<String>,
}

fn default_text_column() -> String {
    "text".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeConfig {
    /// Tokens per sequence, BOS included.
    pub context_size: usize,
    /// Eval split size in tokens (rounded down to whole sequences).
    pub eval_tokens: u64,
    /// Train split size in tokens; absent or null: every remaining document.
    #[serde(default)]
    pub train_tokens: Option<u64>,
    /// Seed of the document-level split.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractDtype {
    F32,
    F16,
}

/// `compute:` of extract and train: the arithmetic of the large products
/// (see coact::linalg). `auto` is bf16 where the CPU has bf16 hardware
/// (AVX512-BF16 or AMX), else f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeSetting {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl ComputeSetting {
    /// What this setting means on this machine; `key` names it in errors
    /// and in the note printed when `auto` falls back to f32.
    pub fn resolve(self, key: &str) -> Result<Compute> {
        let requested = match self {
            ComputeSetting::Auto => None,
            ComputeSetting::F32 => Some(Compute::F32),
            ComputeSetting::Bf16 => Some(Compute::Bf16),
        };
        let (c, note) = coact::linalg::resolve(requested, key)?;
        if let Some(n) = note {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("note: {n}"));
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// Sequences per forward pass.
    #[serde(default = "default_extract_batch")]
    pub batch_size: usize,
    /// Stored activation type.
    #[serde(default = "default_extract_dtype")]
    pub dtype: ExtractDtype,
    /// Tokens (rows) per Parquet shard.
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: usize,
    /// The forward's linear layers (and, for every stage that runs the
    /// model, the unembedding): auto, f32 or bf16.
    #[serde(default)]
    pub compute: ComputeSetting,
}

fn default_extract_batch() -> usize {
    8
}
fn default_extract_dtype() -> ExtractDtype {
    ExtractDtype::F32
}
fn default_shard_tokens() -> usize {
    65536
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            batch_size: default_extract_batch(),
            dtype: default_extract_dtype(),
            shard_tokens: default_shard_tokens(),
            compute: ComputeSetting::Auto,
        }
    }
}

/// The train stage: the schedule shared by every variant, the base SAE and
/// the variants (see stages/variants.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Tokens per step.
    #[serde(default = "default_train_batch")]
    pub batch_size: usize,
    /// Passes over the train split.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// None: 2e-4 / sqrt(d_sae / 2^14).
    #[serde(default)]
    pub lr: Option<f64>,
    /// None: min(1000, steps / 10).
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    #[serde(default = "default_decay_frac")]
    pub decay_frac: f64,
    /// A latent that has not fired for this many tokens is dead (AuxK).
    #[serde(default = "default_dead_after")]
    pub dead_after_tokens: u64,
    /// Pairs sampled per step by the uniform orthogonality term.
    #[serde(default = "default_uniform_pairs")]
    pub uniform_pairs: usize,
    /// Steps between checkpoints (a killed run resumes from the last one).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// The SAE encoder's product: auto, f32 or bf16 (bf16 chooses the active
    /// latents, their values and every gradient stay f32).
    #[serde(default)]
    pub compute: ComputeSetting,
    pub base: crate::variants::VariantSettings,
    pub variants: Vec<crate::variants::VariantSpec>,
}

fn default_train_batch() -> usize {
    4096
}
fn default_epochs() -> usize {
    1
}
fn default_decay_frac() -> f64 {
    0.2
}
fn default_dead_after() -> u64 {
    10_000_000
}
fn default_uniform_pairs() -> usize {
    8192
}
fn default_checkpoint_every() -> usize {
    50
}

impl Config {
    /// Reads and validates a config file. Every error names the file, the key
    /// path, the value and what was expected.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read config {}: {e}", file.display()))?;
        Self::from_yaml(&text, file)
    }

    pub fn from_yaml(text: &str, file: &Path) -> Result<Self> {
        let de = serde_yaml::Deserializer::from_str(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml sometimes names the path itself.
            if path == "." || path.is_empty() || inner.starts_with(&format!("{path}: ")) {
                anyhow!("{}: {inner}", file.display())
            } else {
                anyhow!("{}: {path}: {inner}", file.display())
            }
        })?;
        cfg.file = file.to_path_buf();
        cfg.base_dir = file
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        cfg.validate()
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let m = &self.model;
        match m.source {
            ModelSourceKind::Gguf | ModelSourceKind::Safetensors if m.path.is_none() => bail!(
                "model.path: missing; model.source = {} needs a local path",
                serde_yaml::to_string(&m.source)?.trim()
            ),
            ModelSourceKind::Hf if m.hf_id.is_none() => {
                bail!("model.hf_id: missing; model.source = hf needs a Hugging Face model id such as google/gemma-2-2b")
            }
            _ => {}
        }
        if m.tokenizer == "hf" && m.hf_id.is_none() {
            bail!("model.tokenizer = hf: needs model.hf_id to say which repository's tokenizer.json to use")
        }
        let t = &self.tokenize;
        if t.context_size < 2 {
            bail!("tokenize.context_size = {}: expected an integer >= 2 (BOS plus at least one token)", t.context_size);
        }
        if t.eval_tokens < t.context_size as u64 {
            bail!(
                "tokenize.eval_tokens = {}: expected at least one sequence (>= tokenize.context_size = {})",
                t.eval_tokens,
                t.context_size
            );
        }
        if let Some(n) = t.train_tokens {
            if n < t.context_size as u64 {
                bail!(
                    "tokenize.train_tokens = {n}: expected at least one sequence (>= tokenize.context_size = {}), or null for all",
                    t.context_size
                );
            }
        }
        let e = &self.extract;
        if e.batch_size == 0 {
            bail!("extract.batch_size = 0: expected at least 1 sequence per forward pass");
        }
        if e.shard_tokens < t.context_size {
            bail!(
                "extract.shard_tokens = {}: expected at least one sequence (>= tokenize.context_size = {})",
                e.shard_tokens,
                t.context_size
            );
        }
        let tr = &self.train;
        if tr.batch_size == 0 || tr.epochs == 0 || tr.checkpoint_every == 0 || tr.uniform_pairs == 0
        {
            bail!("train.batch_size, train.epochs, train.checkpoint_every and train.uniform_pairs must be >= 1");
        }
        if !(0.0..1.0).contains(&tr.decay_frac) {
            bail!(
                "train.decay_frac = {}: expected a fraction in [0, 1)",
                tr.decay_frac
            );
        }
        if let Some(lr) = tr.lr {
            if !(lr.is_finite() && lr > 0.0) {
                bail!(
                    "train.lr = {lr}: expected a positive learning rate, or null for the default"
                );
            }
        }
        crate::variants::expand(&tr.base, &tr.variants)?;
        self.compete.validate()?;
        self.bench.validate()?;
        self.report.validate()?;
        if self
            .corpus
            .label_columns
            .iter()
            .any(|c| c == &self.corpus.text_column)
        {
            bail!(
                "corpus.label_columns: contains the text column '{}'",
                self.corpus.text_column
            );
        }
        for (i, c) in self.corpus.label_columns.iter().enumerate() {
            if ["doc_id", "source", "split", "n_tokens", "n_sequences"].contains(&c.as_str()) {
                bail!("corpus.label_columns[{i}] = '{c}': the name is taken by a column coact writes itself");
            }
        }
        Ok(())
    }

    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir)
    }

    pub fn variants(&self) -> Vec<crate::variants::Variant> {
        crate::variants::expand(&self.train.base, &self.train.variants).expect("validated at load")
    }

    pub fn corpus_format(&self) -> Result<CorpusFormat> {
        if let Some(f) = self.corpus.format {
            return Ok(f);
        }
        let path = self.resolve(&self.corpus.path);
        if path.is_dir() {
            return Ok(CorpusFormat::TxtDir);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("ndjson") => Ok(CorpusFormat::Jsonl),
            Some("parquet") => Ok(CorpusFormat::Parquet),
            _ => bail!(
                "corpus.path = {}: cannot tell the format; expected a folder of .txt files, a .jsonl or a .parquet file, or set corpus.format (txt_dir, jsonl, parquet)",
                self.corpus.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
study: t
model:
  name: tiny
  source: gguf
  path: m.gguf
  tokenizer: tok.json
  layer: 1
corpus:
  path: docs
tokenize:
  context_size: 8
  eval_tokens: 16
train:
  base: {kind: topk, d_sae: 16, k: 2, ortho: none}
  variants:
    - name: topk
    - name: guided
      ortho: guided
      lambda: 0.1
      tau: [0.1, 0.2]
"#;

    fn err(text: &str) -> String {
        Config::from_yaml(text, Path::new("cfg/p.yaml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_config_loads_with_defaults_and_resolves_paths() {
        let c = Config::from_yaml(GOOD, Path::new("cfg/p.yaml")).unwrap();
        assert_eq!(c.data_dir(), Path::new("cfg/data"));
        assert_eq!(c.corpus.text_column, "text");
        assert_eq!(c.model.bos_token, "<bos>");
        assert_eq!(c.tokenize.train_tokens, None);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let e = err(&GOOD.replace("  eval_tokens: 16", "  eval_tokens: 16\n  contxt: 3"));
        assert!(
            e.contains("cfg/p.yaml")
                && e.contains("tokenize")
                && e.contains("unknown field `contxt`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let e = err(&GOOD.replace("context_size: 8", "context_size: eight"));
        assert!(
            e.contains("tokenize.context_size") && e.contains("eight"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_key_value_and_expectation() {
        let e = err(&GOOD.replace("context_size: 8", "context_size: 1"));
        assert!(
            e.contains("tokenize.context_size = 1") && e.contains(">= 2"),
            "{e}"
        );
        let e = err(&GOOD.replace("eval_tokens: 16", "eval_tokens: 4"));
        assert!(e.contains("tokenize.eval_tokens = 4"), "{e}");
        let e = err(&GOOD.replace("  path: m.gguf\n", ""));
        assert!(e.contains("model.path: missing"), "{e}");
        let e = err(&GOOD.replace("tau: [0.1, 0.2]", "tau: [0.1, 2.0]"));
        assert!(e.contains("train.variants[1].tau = 2"), "{e}");
        let e = err(&GOOD.replace("lambda: 0.1", "lambda: lots"));
        assert!(e.contains("train.variants[1].lambda"), "{e}");
        let e = err(&GOOD.replace("kind: topk", "kind: gated"));
        assert!(e.contains("train.base.kind") && e.contains("gated"), "{e}");
        let e = err(&GOOD.replace("source: gguf", "source: onnx"));
        assert!(e.contains("model.source") && e.contains("onnx"), "{e}");
    }
}
