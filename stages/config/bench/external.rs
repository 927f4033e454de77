//! bench.external: SAEs trained elsewhere, benchmarked beside the study's
//! variants. Each is a local folder (SAELens's layout, or Gemma Scope's
//! config.json + params.safetensors) or, for users with network, a Hugging
//! Face repository and the folder inside it.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSae {
    /// The name it has in tables and the report (like a variant's).
    pub name: String,
    /// A local SAE folder (relative paths: to the config file's folder).
    #[serde(default)]
    pub path: Option<String>,
    /// A Hugging Face repository id, e.g. google/gemma-scope-2-270m-pt.
    #[serde(default)]
    pub hf: Option<String>,
    /// The SAE's folder inside `hf`, e.g.
    /// resid_post_all/layer_6_width_16k_l0_small.
    #[serde(default)]
    pub subfolder: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
}

/// Checks each entry on its own and the names among themselves; `variants`
/// are the trained variants' names, which an external name must not reuse.
pub fn validate(list: &[ExternalSae], variants: &[String]) -> Result<()> {
    for (i, e) in list.iter().enumerate() {
        let at = format!("bench.external[{i}]");
        crate::config::check_name(&at, &e.name)?;
        if list[..i].iter().any(|o| o.name == e.name) {
            bail!("{at}.name = '{}': used twice in bench.external", e.name);
        }
        if variants.contains(&e.name) {
            bail!(
                "{at}.name = '{}': already the name of a train variant",
                e.name
            );
        }
        match (&e.path, &e.hf) {
            (Some(_), None) => {
                if e.subfolder.is_some() || e.revision.is_some() {
                    bail!("{at}: subfolder and revision go with hf, not with path");
                }
            }
            (None, Some(_)) => {}
            (Some(_), Some(_)) => bail!("{at}: give either path or hf, not both"),
            (None, None) => bail!(
                "{at}: missing the SAE's location: path (a local SAELens or Gemma Scope folder) or hf (a Hugging Face repository, with subfolder)"
            ),
        }
    }
    Ok(())
}
