//! SAE variants of the train stage: a base setting, per-variant overrides,
//! and list-valued fields that expand into sweeps.

use anyhow::{bail, Result};
use coact::sae::{Architecture, DecoderBias};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrthoKind {
    None,
    Uniform,
    Guided,
    /// OrtSAE's chunk-wise max-cosine term (Korznikov et al. 2025).
    Ortsae,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// Everything that defines one SAE (besides the shared training schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    pub kind: Architecture,
    /// Number of latents F.
    pub d_sae: usize,
    /// Latents kept per token (topk; on average for batchtopk, matryoshka).
    pub k: usize,
    /// Matryoshka's group sizes, summing to d_sae (absent for other kinds,
    /// so that their cache keys do not change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<usize>,
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
    /// OrtSAE's number of chunks K (0 when ortho is not ortsae).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: usize,
    #[serde(default)]
    pub seed: u64,
    /// The decoder bias after its geometric-median init: trained (the
    /// reference recipe) or fixed.
    #[serde(default)]
    pub b_dec: DecoderBias,
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
    pub groups: Option<Vec<usize>>,
    #[serde(default)]
    pub l1_coeff: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub ortho: Option<OrthoKind>,
    #[serde(default)]
    pub lambda: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub tau: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub chunks: Option<OneOrMany<usize>>,
    #[serde(default)]
    pub seed: Option<OneOrMany<u64>>,
    #[serde(default)]
    pub b_dec: Option<DecoderBias>,
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
        super::check_name(&origin, &spec.name)?;
        let mut s = base.clone();
        if let Some(k) = spec.kind {
            s.kind = k;
        }
        if let Some(o) = spec.ortho {
            s.ortho = o;
        }
        if let Some(b) = spec.b_dec {
            s.b_dec = b;
        }
        if let Some(g) = &spec.groups {
            s.groups = g.clone();
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
        sweep!(chunks);
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
    if !s.kind.trainable() {
        bail!(
            "{at}.kind = {}: coact reads {} SAEs (bench.external) but does not train them; expected one of {}",
            s.kind,
            s.kind,
            Architecture::ALL
                .into_iter()
                .filter(|a| a.trainable())
                .map(Architecture::name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if s.kind != Architecture::ReluL1 && (s.k == 0 || s.k >= s.d_sae) {
        bail!("{at}.k = {}: expected 1 <= k < d_sae = {}", s.k, s.d_sae);
    }
    if s.kind == Architecture::Matryoshka {
        let sum: usize = s.groups.iter().sum();
        if s.groups.is_empty() || s.groups.contains(&0) || sum != s.d_sae {
            bail!(
                "{at}.groups = {:?}: expected positive group sizes summing to d_sae = {} (they sum to {sum})",
                s.groups,
                s.d_sae
            );
        }
    } else if !s.groups.is_empty() {
        bail!(
            "{at}.groups = {:?}: set, but kind is {} (groups are matryoshka's)",
            s.groups,
            s.kind
        );
    }
    if s.ortho == OrthoKind::Ortsae {
        if s.chunks == 0 || 2 * s.chunks > s.d_sae {
            bail!(
                "{at}.chunks = {}: expected 1 <= chunks <= d_sae / 2 = {} (each chunk needs 2 latents)",
                s.chunks,
                s.d_sae / 2
            );
        }
    } else if s.chunks != 0 {
        bail!(
            "{at}.chunks = {}: set, but ortho is {:?} (chunks are ortsae's)",
            s.chunks,
            s.ortho
        );
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
            "{at}.lambda = {}: set, but ortho is none (set ortho: uniform, guided or ortsae)",
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
            groups: Vec::new(),
            l1_coeff: 0.0,
            ortho: OrthoKind::None,
            lambda: 0.0,
            tau: 0.0,
            chunks: 0,
            seed: 0,
            b_dec: DecoderBias::Trained,
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
    fn a_variant_overrides_the_bases_decoder_bias() {
        let b = VariantSettings {
            b_dec: DecoderBias::Fixed,
            ..base()
        };
        let v = expand(&b, &spec("- name: a\n- name: r\n  b_dec: trained")).unwrap();
        assert_eq!(v[0].settings.b_dec, DecoderBias::Fixed);
        assert_eq!(v[1].settings.b_dec, DecoderBias::Trained);
        assert!(serde_yaml::from_str::<Vec<VariantSpec>>("- name: a\n  b_dec: frozen").is_err());
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
        let err = serde_yaml::from_str::<Vec<VariantSpec>>("- name: a\n  kind: gated")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gated") && err.contains("batchtopk"), "{err}");
        // JumpReLU is a kind coact reads, not one it trains.
        let e = expand(&base(), &spec("- name: a\n  kind: jumprelu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.variants[0].kind = jumprelu") && e.contains("does not train"),
            "{e}"
        );
    }

    #[test]
    fn matryoshka_groups_and_ortsae_chunks_are_checked_against_d_sae() {
        let ok = expand(
            &base(),
            &spec("- name: m\n  kind: matryoshka\n  groups: [8, 16, 40]\n- name: o\n  kind: batchtopk\n  ortho: ortsae\n  lambda: 0.25\n  chunks: [2, 4]"),
        )
        .unwrap();
        assert_eq!(ok[0].settings.groups, vec![8, 16, 40]);
        assert_eq!(ok[2].name, "o-chunks4");
        assert_eq!(ok[2].settings.chunks, 4);
        let e = expand(
            &base(),
            &spec("- name: m\n  kind: matryoshka\n  groups: [8, 16]"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("train.variants[0].groups = [8, 16]")
                && e.contains("d_sae = 64")
                && e.contains("sum to 24"),
            "{e}"
        );
        let e = expand(&base(), &spec("- name: m\n  kind: matryoshka"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups = []"), "{e}");
        let e = expand(&base(), &spec("- name: t\n  groups: [64]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind is topk"), "{e}");
        let e = expand(
            &base(),
            &spec("- name: o\n  ortho: ortsae\n  lambda: 0.1\n  chunks: 33"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("train.variants[0].chunks = 33") && e.contains("d_sae / 2 = 32"),
            "{e}"
        );
        let e = expand(&base(), &spec("- name: o\n  ortho: ortsae\n  lambda: 0.1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunks = 0"), "{e}");
        let e = expand(
            &base(),
            &spec("- name: g\n  ortho: guided\n  lambda: 0.1\n  chunks: 2"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chunks are ortsae's"), "{e}");
    }
}
