//! The study's language model (a raw input, not an artifact): every stage
//! that runs it loads it through here.

use crate::config::{Config, ModelSourceKind};
use crate::pipeline::progress::Progress;
use crate::pipeline::stage::StageInput;
use anyhow::{anyhow, bail, Result};
use candle_core::Device;
use coact::lm::{Gemma, LoadOptions, ModelSource};
use std::sync::Arc;

/// The model named by the config.
pub fn model_source(cfg: &Config) -> ModelSource {
    let m = &cfg.model;
    match m.source {
        ModelSourceKind::Gguf => {
            ModelSource::Gguf(cfg.resolve(m.path.as_deref().expect("validated")))
        }
        ModelSourceKind::Safetensors => {
            ModelSource::Safetensors(cfg.resolve(m.path.as_deref().expect("validated")))
        }
        ModelSourceKind::Hf => ModelSource::Hub {
            repo: m.hf_id.clone().expect("validated"),
            revision: m.revision.clone(),
        },
    }
}

/// The study's model on the CPU, checked to have the study layer; every
/// stage that runs the model loads it through here.
pub fn load_model(cfg: &Config, progress: &Progress) -> Result<Gemma> {
    let source = model_source(cfg);
    let spinner = progress.spinner(format!("loading {source}"));
    let opts = LoadOptions {
        compute: cfg.extract.compute.resolve("extract.compute")?,
        ..Default::default()
    };
    let model = Gemma::load_with(&source, &Device::Cpu, &opts)
        .map_err(|e| anyhow!("model ({source}): {e:#}"))?;
    spinner.finish_and_clear();
    let (layer, n_layers) = (cfg.model.layer, model.config().n_layers);
    if layer >= n_layers {
        bail!(
            "model.layer = {layer}: {} has {n_layers} layers (0..={})",
            cfg.model.name,
            n_layers - 1
        );
    }
    Ok(model)
}

impl StageInput<'_> {
    /// The study's model, loaded once per run for the stages after extract
    /// that run it (letters, datasets, the core benchmark).
    pub fn model(&self) -> Result<Arc<Gemma>> {
        let id = format!("model/{}", model_source(self.cfg));
        self.cache
            .get_or_try_insert(&id, || load_model(self.cfg, self.progress))
    }
}
