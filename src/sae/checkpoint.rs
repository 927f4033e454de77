//! Trainer checkpoints: one safetensors file holding the parameters, Adam
//! moments and dead-latent counters, with the step, RNG state and both
//! configurations as JSON metadata (`coact_trainer`). Format
//! `coact-sae-trainer-1`; continuing a restored trainer gives bit-identical
//! results to a run that was never interrupted.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::model::{Sae, SaeConfig};
use super::train::{Trainer, TrainerConfig};
use crate::rng::SplitMix64;

impl Trainer {
    /// Writes params, Adam moments, step, dead-latent counters, RNG state and
    /// both configs to one safetensors file (atomically, via a temp file).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT.into(),
            step: self.step,
            rng: self.rng.clone(),
            trainer: self.cfg.clone(),
            sae: self.sae.cfg.clone(),
        };
        let (d, f) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let mut f32s: Vec<(&str, &Vec<f32>, Vec<usize>)> = vec![
            ("w_enc_t", &self.sae.w_enc_t, vec![f, d]),
            ("w_dec", &self.sae.w_dec, vec![f, d]),
            ("b_enc", &self.sae.b_enc, vec![f]),
            ("b_dec", &self.sae.b_dec, vec![d]),
            ("m_enc", &self.m_enc, vec![f, d]),
            ("v_enc", &self.v_enc, vec![f, d]),
            ("m_dec", &self.m_dec, vec![f, d]),
            ("v_dec", &self.v_dec, vec![f, d]),
            ("m_benc", &self.m_benc, vec![f]),
            ("v_benc", &self.v_benc, vec![f]),
            ("m_bdec", &self.m_bdec, vec![d]),
            ("v_bdec", &self.v_bdec, vec![d]),
        ];
        if self.sae.cfg.kind.has_threshold() {
            f32s.push(("threshold", &self.sae.threshold, vec![f]));
        }
        let bytes: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = f32s
            .into_iter()
            .map(|(k, v, s)| (k.to_string(), f32_bytes(v), s, Dtype::F32))
            .chain(std::iter::once((
                "since_fired".to_string(),
                self.since_fired
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![f],
                Dtype::U64,
            )))
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(k, b, s, dt)| Ok((k.clone(), TensorView::new(*dt, s.clone(), b)?)))
            .collect::<Result<_>>()?;
        let mut info = HashMap::new();
        info.insert("coact_trainer".to_string(), serde_json::to_string(&meta)?);
        let tmp = path.with_extension("tmp");
        safetensors::serialize_to_file(views, Some(info), &tmp)
            .with_context(|| format!("writing checkpoint {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// Restores a trainer saved by [`Trainer::save_checkpoint`]; continuing it
    /// gives bit-identical results to a run that was never interrupted.
    pub fn load_checkpoint(path: &Path) -> Result<Trainer> {
        let buf = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        let st = SafeTensors::deserialize(&buf).context("parsing checkpoint")?;
        let (_, md) = SafeTensors::read_metadata(&buf)?;
        let meta_s = md
            .metadata()
            .as_ref()
            .and_then(|m| m.get("coact_trainer"))
            .context("checkpoint lacks coact_trainer metadata")?;
        let meta: CheckpointMeta = serde_json::from_str(meta_s)?;
        ensure!(
            meta.format == CHECKPOINT_FORMAT,
            "unknown checkpoint format {}",
            meta.format
        );
        meta.trainer.validate()?;
        meta.sae.validate()?;
        let (d, f) = (meta.sae.d_in, meta.sae.d_sae);
        let get = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .with_context(|| format!("checkpoint lacks {name}"))?;
            ensure!(t.dtype() == Dtype::F32, "{name} is not f32");
            let v = f32_from_bytes(t.data());
            ensure!(
                v.len() == len,
                "{name} has {} values, expected {len}",
                v.len()
            );
            Ok(v)
        };
        let sae = Sae {
            w_enc_t: get("w_enc_t", d * f)?,
            w_dec: get("w_dec", d * f)?,
            b_enc: get("b_enc", f)?,
            b_dec: get("b_dec", d)?,
            threshold: if meta.sae.kind.has_threshold() {
                get("threshold", f)?
            } else {
                Vec::new()
            },
            cfg: meta.sae.clone(),
        };
        let mut tr = Trainer::from_parts(meta.trainer, sae);
        tr.m_enc = get("m_enc", d * f)?;
        tr.v_enc = get("v_enc", d * f)?;
        tr.m_dec = get("m_dec", d * f)?;
        tr.v_dec = get("v_dec", d * f)?;
        tr.m_benc = get("m_benc", f)?;
        tr.v_benc = get("v_benc", f)?;
        tr.m_bdec = get("m_bdec", d)?;
        tr.v_bdec = get("v_bdec", d)?;
        let sf = st
            .tensor("since_fired")
            .context("checkpoint lacks since_fired")?;
        ensure!(
            sf.dtype() == Dtype::U64 && sf.data().len() == 8 * f,
            "bad since_fired"
        );
        tr.since_fired = sf
            .data()
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        tr.step = meta.step;
        tr.rng = meta.rng;
        Ok(tr)
    }
}

/// The format tag stored in (and required of) every checkpoint.
const CHECKPOINT_FORMAT: &str = "coact-sae-trainer-1";

/// The checkpoint's JSON metadata (`coact_trainer`).
#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    format: String,
    step: u64,
    rng: SplitMix64,
    trainer: TrainerConfig,
    sae: SaeConfig,
}

/// Little-endian bytes of f32 values (safetensors' layout; also SAELens IO).
pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// f32 values from little-endian bytes (a trailing partial value is dropped).
pub(crate) fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
