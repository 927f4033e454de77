//! SAE variants of the train stage: a base setting, per-variant overrides,
//! and list-valued fields that expand into sweeps.

use anyhow::{bail, Result};
use coact::sae::Architecture;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrthoKind {
    None,
    Uniform,
    Guided,
}

/// Everything that defines one SAE (besides the shared training schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    pub kind: Architecture,
    /// Number of latents F.
    pub d_sae: usize,
    /// Latents kept per token (topk).
    pub k: usize,
    /// L1 coefficient (relu_l1).
    #[serde(default)]
    pub l1_coeff: f64,
    pub ortho: OrthoKind,
    /// Weight of the orthogonality term.
    #[serde(default)]
    pub lambda: f64,
    /// Competition threshold of the guided term.
    #[serde(default)]
    pub tau: f64,
    #[serde(default)]
    pub seed: u64,
}

/// A value or a list of values (a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One entry of `train.variants`: a name and overrides of the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    #[serde(default)]
    pub kind: Option<Architecture>,
    #[serde(default)]
    pub d_sae: Option<OneOrMany<usize>>,
    #[serde(default)]
    pub k: Option<OneOrMany<usize>>,
    #[serde(default)]
    pub l1_coeff: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub ortho: Option<OrthoKind>,
    #[serde(default)]
    pub lambda: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub tau: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub seed: Option<OneOrMany<u64>>,
}

/// A fully resolved variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    /// `train.variants[i]` it came from, for error messages.
    #[serde(skip)]
    pub origin: String,
    pub settings: VariantSettings,
}

/// Expands every spec over the base; a list in a field gives one variant per
/// value, named `<name>-<field><value>` (the cartesian product when several
/// fields are lists).
pub fn expand(base: &VariantSettings, specs: &[VariantSpec]) -> Result<Vec<Variant>> {
    let mut out: Vec<Variant> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let origin = format!("train.variants[{i}]");
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "{origin}.name = '{}': expected letters, digits, '-', '_' or '.'",
                spec.name
            );
        }
        let mut s = base.clone();
        if let Some(k) = spec.kind {
            s.kind = k;
        }
        if let Some(o) = spec.ortho {
            s.ortho = o;
        }
        let mut partial: Vec<(String, VariantSettings)> = vec![(spec.name.clone(), s)];
        macro_rules! sweep {
            ($field:ident) => {
                if let Some(v) = &spec.$field {
                    let values = v.values();
                    if values.is_empty() {
                        bail!("{origin}.{}: an empty list", stringify!($field));
                    }
                    let many = values.len() > 1;
                    partial = partial
                        .into_iter()
                        .flat_map(|(name, s)| {
                            values.iter().map(move |val| {
                                let mut s = s.clone();
                                s.$field = val.clone();
                                let name = if many {
                                    format!("{name}-{}{}", stringify!($field), val)
                                } else {
                                    name.clone()
                                };
                                (name, s)
                            })
                        })
                        .collect();
                }
            };
        }
        sweep!(d_sae);
        sweep!(k);
        sweep!(l1_coeff);
        sweep!(lambda);
        sweep!(tau);
        sweep!(seed);
        for (name, settings) in partial {
            validate(&settings, &origin)?;
            if out.iter().any(|v| v.name == name) {
                bail!("{origin}: variant name '{name}' is used twice");
            }
            out.push(Variant {
                name,
                origin: origin.clone(),
                settings,
            });
        }
    }
    if out.is_empty() {
        bail!("train.variants: empty; list at least one variant (e.g. `- name: topk`)");
    }
    Ok(out)
}

fn validate(s: &VariantSettings, at: &str) -> Result<()> {
    if s.d_sae < 2 {
        bail!("{at}.d_sae = {}: expected at least 2 latents", s.d_sae);
    }
    if s.kind == Architecture::TopK && (s.k == 0 || s.k >= s.d_sae) {
        bail!("{at}.k = {}: expected 1 <= k < d_sae = {}", s.k, s.d_sae);
    }
    if s.kind == Architecture::ReluL1 && !(s.l1_coeff.is_finite() && s.l1_coeff > 0.0) {
        bail!(
            "{at}.l1_coeff = {}: a relu_l1 SAE needs a positive L1 coefficient",
            s.l1_coeff
        );
    }
    if !(s.lambda.is_finite() && s.lambda >= 0.0) {
        bail!("{at}.lambda = {}: expected a number >= 0", s.lambda);
    }
    if !(0.0..=1.0).contains(&s.tau) {
        bail!(
            "{at}.tau = {}: expected a competition threshold in [0, 1]",
            s.tau
        );
    }
    if s.ortho == OrthoKind::None && s.lambda != 0.0 {
        bail!(
            "{at}.lambda = {}: set, but ortho is none (set ortho: uniform or guided)",
            s.lambda
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> VariantSettings {
        VariantSettings {
            kind: Architecture::TopK,
            d_sae: 64,
            k: 8,
            l1_coeff: 0.0,
            ortho: OrthoKind::None,
            lambda: 0.0,
            tau: 0.0,
            seed: 0,
        }
    }

    fn spec(yaml: &str) -> Vec<VariantSpec> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn lists_expand_into_named_sweeps() {
        let v = expand(&base(), &spec("- name: topk\n- name: guided\n  ortho: guided\n  lambda: 0.1\n  tau: [0.0, 0.1]\n  seed: [0, 1]")).unwrap();
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "topk",
                "guided-tau0-seed0",
                "guided-tau0-seed1",
                "guided-tau0.1-seed0",
                "guided-tau0.1-seed1"
            ]
        );
        assert_eq!(v[3].settings.tau, 0.1);
        assert_eq!(v[3].settings.lambda, 0.1);
        assert_eq!(v[3].settings.ortho, OrthoKind::Guided);
        assert_eq!(v[0].settings, base());
    }

    #[test]
    fn bad_values_name_the_variant_and_field() {
        let e = expand(
            &base(),
            &spec("- name: a\n- name: b\n  ortho: guided\n  tau: [0.1, 1.5]"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("train.variants[1].tau = 1.5"), "{e}");
        let e = expand(&base(), &spec("- name: a\n  k: 64"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.variants[0].k = 64") && e.contains("d_sae = 64"),
            "{e}"
        );
        let e = expand(&base(), &spec("- name: a\n  ortho: uniform\n  lambda: -1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lambda = -1"), "{e}");
        let e = expand(&base(), &spec("- name: a\n  kind: relu_l1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("l1_coeff"), "{e}");
        let e = expand(&base(), &spec("- name: a\n- name: a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used twice"), "{e}");
        let err = serde_yaml::from_str::<Vec<VariantSpec>>("- name: a\n  kind: jumprelu")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jumprelu"), "{err}");
    }
}
