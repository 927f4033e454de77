//! pipeline.yaml: the study's schema (one file per section), loading with
//! errors that name the key path, and semantic validation. It depends on
//! nothing of the pipeline: stages read it, it reads no stage.

pub mod bench;
pub mod compete;
pub mod corpus;
pub mod extract;
pub mod model;
pub mod report;
pub mod tokenize;
pub mod train;
pub mod variants;

pub use bench::BenchConfig;
pub use compete::CompeteConfig;
pub use corpus::{CorpusConfig, CorpusFormat};
pub use extract::{ComputeSetting, ExtractConfig, ExtractDtype};
pub use model::{ModelConfig, ModelSourceKind};
pub use report::ReportConfig;
pub use tokenize::TokenizeConfig;
pub use train::TrainConfig;

use anyhow::{anyhow, bail, Result};
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
    pub compete: CompeteConfig,
    /// The benchmarks, the first-letter prompts (letters stage) and the
    /// labelled datasets (datasets stage).
    #[serde(default)]
    pub bench: BenchConfig,
    #[serde(default)]
    pub report: ReportConfig,
    /// The config file itself and its folder (relative paths resolve there).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
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
        let names: Vec<String> = variants::expand(&tr.base, &tr.variants)?
            .into_iter()
            .map(|v| v.name)
            .collect();
        bench::external::validate(&self.bench.external, &names)?;
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

    pub fn variants(&self) -> Vec<variants::Variant> {
        variants::expand(&self.train.base, &self.train.variants).expect("validated at load")
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

/// A name that becomes part of file names and table values: `at.name` must
/// be letters, digits, '-', '_' or '.'.
pub(crate) fn check_name(at: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("{at}.name = '{name}': expected letters, digits, '-', '_' or '.'");
    }
    Ok(())
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
