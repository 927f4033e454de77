//! external: SAEs trained elsewhere (`bench.external`), checked against the
//! study's model and layer and stored in coact's SAELens form, so that every
//! benchmark reads them exactly as it reads a trained variant.
//!
//! Reading folds whatever the source says into coact's one form (see
//! `coact::sae::load_saelens`): Gemma Scope's missing b_dec subtraction,
//! SAELens 6's `rescale_acts_by_decoder_norm`. The artifact's key hashes the
//! source files' content, so replacing a local SAE re-runs its benchmarks.

use crate::config::bench::external::ExternalSae;
use crate::config::Config;
use crate::pipeline::fingerprint::Fingerprints;
use crate::pipeline::stage::{Registry, Stage, StageInput, StageOutput, Unit};
use anyhow::{anyhow, bail, Context, Result};
use coact::sae::{load_saelens, save_saelens, Sae, SaelensMeta, CFG_FILE, WEIGHTS_FILE};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Imports each `bench.external` SAE.
pub struct External;

impl Stage for External {
    fn name(&self) -> &'static str {
        "external"
    }
    fn about(&self) -> &'static str {
        "import the SAEs of bench.external (SAELens or Gemma Scope folders), checked against the model and layer"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["extract"]
    }
    fn on_demand(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        let mut fp = Fingerprints::open(&cfg.data_dir());
        let units = cfg
            .bench
            .external
            .iter()
            .map(|e| {
                let source = match &e.path {
                    Some(p) => json!({ "path": p, "fingerprint": fp.path(&cfg.resolve(Path::new(p)), None) }),
                    None => json!({ "hf": e.hf, "subfolder": e.subfolder, "revision": e.revision }),
                };
                Unit {
                    unit: Some(e.name.clone()),
                    config: json!({ "name": e.name, "source": source }),
                    uses: None,
                }
            })
            .collect();
        fp.save();
        Ok(units)
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        let name = input.unit()?;
        let (i, entry) = input
            .cfg
            .bench
            .external
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == name)
            .ok_or_else(|| anyhow!("bench.external lost the entry {name}"))?;
        let at = format!("bench.external[{i}]");
        let dir = source_folder(input.cfg, entry, &at)?;
        let (sae, meta) =
            load_saelens(&dir).with_context(|| format!("{at} ({})", dir.display()))?;
        let acts = input.activations()?;
        check_fits(&sae, &meta, &acts.summary, &at, &dir)?;
        let meta = SaelensMeta {
            model_name: if meta.model_name.is_empty() {
                input.cfg.model.name.clone()
            } else {
                meta.model_name
            },
            hook_name: coact::lm::hook_name(input.cfg.model.layer),
            hook_layer: Some(input.cfg.model.layer),
            ..meta
        };
        save_saelens(&sae, input.out_dir, &meta)?;
        input.progress.note(format!(
            "external/{name}: {} SAE, {} latents, from {}",
            sae.cfg.kind.architecture(),
            sae.cfg.d_sae,
            dir.display()
        ));
        Ok(StageOutput {
            tables: BTreeMap::new(),
            summary: json!({
                "name": name,
                "source": dir.to_string_lossy(),
                "kind": sae.cfg.kind.architecture(),
                "sae_kind": sae.cfg.kind,
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "hook_name": meta.hook_name,
            }),
        })
    }
}

/// The local folder of an entry: its path, or the hub folder fetched into
/// the Hugging Face cache.
fn source_folder(cfg: &Config, e: &ExternalSae, at: &str) -> Result<PathBuf> {
    if let Some(p) = &e.path {
        let dir = cfg.resolve(Path::new(p));
        if !dir.is_dir() {
            bail!(
                "{at}.path = {p}: not a folder ({} does not exist or is a file); expected an SAE folder with {CFG_FILE} + {WEIGHTS_FILE} or Gemma Scope's config.json + params.safetensors",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let repo = e.hf.as_deref().unwrap_or_default();
    let sub = e.subfolder.as_deref().unwrap_or("").trim_matches('/');
    let file = |name: &str| {
        if sub.is_empty() {
            name.to_string()
        } else {
            format!("{sub}/{name}")
        }
    };
    let rev = e.revision.as_deref();
    let hint = |err: anyhow::Error| {
        anyhow!(
            "{at}: cannot fetch the SAE '{sub}' of the Hugging Face repository {repo}: {err:#}. \
             Offline, download that folder elsewhere (e.g. `huggingface-cli download {repo} --include '{}'`) and set {at}.path to the local folder instead of hf",
            file("*")
        )
    };
    // Gemma Scope's own layout first (what google/gemma-scope-2-* holds), then SAELens's.
    let (cfg_name, weights_name) = match coact::hub::fetch_file(repo, rev, &file("config.json")) {
        Ok(_) => ("config.json", "params.safetensors"),
        Err(first) => match coact::hub::fetch_file(repo, rev, &file(CFG_FILE)) {
            Ok(_) => (CFG_FILE, WEIGHTS_FILE),
            Err(_) => return Err(hint(first)),
        },
    };
    let weights = coact::hub::fetch_file(repo, rev, &file(weights_name)).map_err(hint)?;
    let cfg_path = coact::hub::fetch_file(repo, rev, &file(cfg_name)).map_err(hint)?;
    let dir = weights.parent().map(Path::to_path_buf).unwrap_or_default();
    if cfg_path.parent() != Some(dir.as_path()) {
        bail!("{at}: the hub cache put {cfg_name} and {weights_name} in different folders");
    }
    Ok(dir)
}

/// An external SAE must read the study's activations: the same d_in, and
/// (when its file names one) the same layer's residual stream.
fn check_fits(
    sae: &Sae,
    meta: &SaelensMeta,
    extract: &serde_json::Value,
    at: &str,
    dir: &Path,
) -> Result<()> {
    let d_model = extract["d_model"].as_u64().unwrap_or(0) as usize;
    let layer = extract["layer"].as_u64().map(|l| l as usize);
    if sae.cfg.d_in != d_model {
        bail!(
            "{at} ({}): the SAE's d_in = {} but the study's activations have d_model = {d_model}",
            dir.display(),
            sae.cfg.d_in
        );
    }
    if !meta.hook_name.is_empty() && !meta.hook_name.contains("resid_post") {
        bail!(
            "{at} ({}): the SAE reads hook {} but the study extracts the residual stream ({})",
            dir.display(),
            meta.hook_name,
            layer.map(coact::lm::hook_name).unwrap_or_default()
        );
    }
    if let (Some(l), Some(want)) = (meta.hook_layer, layer) {
        if l != want {
            bail!(
                "{at} ({}): the SAE reads layer {l} ({}) but the study extracts model.layer = {want}",
                dir.display(),
                meta.hook_name
            );
        }
    }
    Ok(())
}
