//! bench.absorption: the first-letter prompts (letters stage) and the absorption benchmark.

use anyhow::{bail, Result};
use coact::metrics::absorption::{Settings, Thresholds};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `bench.absorption`: the first-letter prompts (letters stage) and the
/// benchmark's settings. Defaults follow SAEBench where it has one; the
/// prompt budget is sized for the 2-core default study.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsorptionConfig {
    /// The word list, one word a line (Debian's wamerican by default; `make
    /// setup` fetches it). Relative paths resolve against the config's folder.
    #[serde(default = "default_words")]
    pub words: PathBuf,
    /// Words used at most (a seeded random sample of the lowercase alphabetic
    /// words that are one token with a leading space). SAEBench uses every
    /// such token of the vocabulary; 4000 words (~43k tokens packed) fit the
    /// letters stage's ~90 s budget on the 2-core default study.
    #[serde(default = "default_max_words")]
    pub max_words: usize,
    /// Fraction of the words held out for testing (SAEBench: 0.2).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Solved examples that open each packed prompt, drawn from the same
    /// split; every measured word sees these plus the words measured before
    /// it in its prompt (SAEBench: one prompt per word with 10 examples).
    #[serde(default = "default_icl_examples")]
    pub icl_examples: usize,
    /// Words measured per packed prompt (each is a solved example for the
    /// ones after it; 1 gives SAEBench's one prompt per word).
    #[serde(default = "default_words_per_prompt")]
    pub words_per_prompt: usize,
    /// The prompt for one word; `{word}` is replaced by the word with its
    /// leading space. Solved examples append " <LETTER>".
    #[serde(default = "default_template")]
    pub template: String,
    /// Seed of the word sample, the split and the examples (SAEBench: 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Packed prompts per forward pass (prompts of equal token length share
    /// a batch).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// L2 strength of the ground-truth letter probes, on activations centred
    /// and divided by their RMS (see coact::metrics::absorption).
    #[serde(default = "default_probe_l2")]
    pub probe_l2: f64,
    /// Iterations of every probe fit.
    #[serde(default = "default_probe_max_iter")]
    pub probe_max_iter: usize,
    /// Largest k of the k-sparse probes (SAEBench max_k_value).
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// F1 improvement that makes one more latent a main latent
    /// (SAEBench f1_jump_threshold).
    #[serde(default = "default_f1_jump")]
    pub f1_jump: f64,
    /// L1 strength of the latent-ranking probe (SAEBench
    /// k_sparse_probe_l1_decay), on latents divided by their mean non-zero
    /// activation (see coact::metrics::absorption).
    #[serde(default = "default_k_sparse_l1")]
    pub k_sparse_l1: f64,
    /// Letters whose ground-truth probe test F1 is not above this are left
    /// out (SAEBench min_GT_probe_f1).
    #[serde(default = "default_min_probe_f1")]
    pub min_probe_f1: f64,
    /// Fewer letters kept than this marks the result as not evaluable
    /// (SAEBench min_feats_for_eval, where it stops instead).
    #[serde(default = "default_min_letters")]
    pub min_letters: usize,
}

fn default_words() -> PathBuf {
    PathBuf::from("data/raw/words.txt")
}
fn default_max_words() -> usize {
    4000
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_icl_examples() -> usize {
    5
}
fn default_words_per_prompt() -> usize {
    15
}
fn default_template() -> String {
    "{word} has the first letter:".into()
}
fn default_seed() -> u64 {
    42
}
fn default_batch_size() -> usize {
    8
}
fn default_probe_l2() -> f64 {
    1e-3
}
fn default_probe_max_iter() -> usize {
    500
}
fn default_max_k() -> usize {
    10
}
fn default_f1_jump() -> f64 {
    0.03
}
fn default_k_sparse_l1() -> f64 {
    0.01
}
fn default_min_probe_f1() -> f64 {
    0.6
}
fn default_min_letters() -> usize {
    20
}

impl Default for AbsorptionConfig {
    fn default() -> Self {
        Self {
            words: default_words(),
            max_words: default_max_words(),
            test_fraction: default_test_fraction(),
            icl_examples: default_icl_examples(),
            words_per_prompt: default_words_per_prompt(),
            template: default_template(),
            seed: default_seed(),
            batch_size: default_batch_size(),
            probe_l2: default_probe_l2(),
            probe_max_iter: default_probe_max_iter(),
            max_k: default_max_k(),
            f1_jump: default_f1_jump(),
            k_sparse_l1: default_k_sparse_l1(),
            min_probe_f1: default_min_probe_f1(),
            min_letters: default_min_letters(),
        }
    }
}

impl AbsorptionConfig {
    pub fn validate(&self) -> Result<()> {
        let p = "bench.absorption";
        if self.max_words < 2 {
            bail!(
                "{p}.max_words = {}: expected at least 2 (a train and a test word)",
                self.max_words
            );
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            bail!(
                "{p}.test_fraction = {}: expected a fraction strictly between 0 and 1",
                self.test_fraction
            );
        }
        if !self.template.contains("{word}") {
            bail!(
                "{p}.template = {:?}: expected a text containing {{word}}",
                self.template
            );
        }
        if self.template.contains('\n') {
            bail!(
                "{p}.template = {:?}: must be one line (examples are separated by newlines)",
                self.template
            );
        }
        if self.batch_size == 0 {
            bail!("{p}.batch_size = 0: expected at least 1 prompt per forward pass");
        }
        if self.words_per_prompt == 0 {
            bail!("{p}.words_per_prompt = 0: expected at least 1 word per prompt");
        }
        if !(self.probe_l2.is_finite() && self.probe_l2 >= 0.0) {
            bail!(
                "{p}.probe_l2 = {}: expected a finite strength >= 0",
                self.probe_l2
            );
        }
        if self.probe_max_iter == 0 {
            bail!("{p}.probe_max_iter = 0: expected at least 1 iteration");
        }
        if self.max_k == 0 {
            bail!("{p}.max_k = 0: expected at least 1 latent");
        }
        if !(self.f1_jump.is_finite() && self.f1_jump >= 0.0) {
            bail!(
                "{p}.f1_jump = {}: expected a finite F1 difference >= 0",
                self.f1_jump
            );
        }
        if !(self.k_sparse_l1.is_finite() && self.k_sparse_l1 >= 0.0) {
            bail!(
                "{p}.k_sparse_l1 = {}: expected a finite strength >= 0",
                self.k_sparse_l1
            );
        }
        if !(self.min_probe_f1.is_finite() && self.min_probe_f1 < 1.0) {
            bail!(
                "{p}.min_probe_f1 = {}: expected an F1 threshold below 1",
                self.min_probe_f1
            );
        }
        if self.min_letters > 26 {
            bail!(
                "{p}.min_letters = {}: expected at most 26",
                self.min_letters
            );
        }
        Ok(())
    }

    /// What the benchmark (not the letters stage) reads.
    pub fn settings(&self) -> Settings {
        Settings {
            max_k: self.max_k,
            f1_jump: self.f1_jump,
            k_sparse_l1: self.k_sparse_l1,
            min_probe_f1: self.min_probe_f1,
            max_iter: self.probe_max_iter,
            thresholds: Thresholds::default(),
        }
    }
}
