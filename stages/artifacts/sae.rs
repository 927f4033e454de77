//! The train stage's artifact: one SAE per variant in SAELens layout
//! (cfg.json + sae_weights.safetensors, written by `coact::sae::save_saelens`)
//! beside its training log. Every later stage opens it through here.

use crate::pipeline::stage::StageInput;
use anyhow::{anyhow, Result};
use coact::sae::{load_saelens, Sae, SaelensMeta, CFG_FILE};
use serde_json::Value;
use std::path::Path;

/// A trained variant: the SAE, its SAELens metadata and cfg.json as written.
pub struct VariantSae {
    pub variant: String,
    /// The stage it was read from: "train", or "external" (bench.external).
    pub stage: &'static str,
    /// Its artifact's key.
    pub key: String,
    pub sae: Sae,
    pub meta: SaelensMeta,
    pub cfg_json: Value,
}

/// Reads the SAE of a train (or external) artifact folder; errors name it
/// as `<stage>/<variant>`.
pub fn read(dir: &Path, stage: &'static str, key: &str, variant: &str) -> Result<VariantSae> {
    let (sae, meta) =
        load_saelens(dir).map_err(|e| anyhow!("{stage}/{variant} ({}): {e:#}", dir.display()))?;
    let cfg_json: Value = std::fs::read_to_string(dir.join(CFG_FILE))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Ok(VariantSae {
        variant: variant.to_string(),
        stage,
        key: key.to_string(),
        sae,
        meta,
        cfg_json,
    })
}

impl StageInput<'_> {
    /// The SAE of `variant`: this unit's `train/<variant>` input, or its
    /// `external/<variant>` one for an SAE of bench.external. Not cached:
    /// reading it costs far less than any benchmark, and a run over many
    /// wide variants would otherwise hold them all.
    pub fn variant_sae(&self, variant: &str) -> Result<VariantSae> {
        let external = format!("external/{variant}");
        let stage = if self.planned.inputs.contains_key(&external) {
            "external"
        } else {
            "train"
        };
        let key = self.input_key(&format!("{stage}/{variant}"))?;
        read(&self.store.artifact_dir(stage, key), stage, key, variant)
    }
}
