//! The core benchmark's downstream part: CE and KL with the SAE spliced in,
//! sharing the original and zero-ablated forwards across the run's variants.

use super::*;

/// What the core units of one run share: per group of CE sequences, the
/// original forward (within `keep_original_mib`) and the zero-ablated
/// forward's per-token CE and KL, under a key naming the extract artifact,
/// model, layer, chosen sequences and forward batch.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) original: BTreeMap<usize, Arc<Original>>,
    pub(super) zero: BTreeMap<usize, Arc<TokenLosses>>,
    pub(super) bytes: usize,
    /// Units of this run that have finished with them.
    pub(super) done: usize,
}

/// Per-token CE and KL of one patched forward.
pub(super) type TokenLosses = (Vec<f64>, Vec<f64>);

/// The run's shared reference forwards for `key`; a unit holds the handle
/// for its whole downstream pass.
fn shared_forwards(input: &StageInput, key: &str) -> Result<Arc<Mutex<Shared>>> {
    input
        .cache
        .get_or_try_insert(&stage_key("bench", &format!("core/forwards/{key}")), || {
            Ok(Mutex::new(Shared::default()))
        })
}

/// Results of the downstream (CE / KL) part.
pub(super) struct Downstream {
    pub(super) ce_orig: f64,
    pub(super) ce_sae: f64,
    pub(super) ce_zero: f64,
    pub(super) kl_sae: f64,
    pub(super) kl_zero: f64,
    pub(super) ce_tokens: usize,
    pub(super) kl_tokens: usize,
    pub(super) sequences: usize,
    pub(super) forwards: usize,
}

pub(super) fn downstream(
    input: &StageInput,
    variant: &str,
    model: &Gemma,
    sae: &Sae,
    eval: &EvalSplit,
    chosen: &[usize],
) -> Result<Downstream> {
    let c = &input.cfg.bench.core;
    let layer = input.cfg.model.layer;
    let key = format!(
        "{}|{}|{layer}|{}|{:?}",
        input.input_key("extract")?,
        model_source(input.cfg),
        c.forward_batch_size,
        chosen
    );
    let cap = c.keep_original_mib.saturating_mul(1 << 20);
    let t_total: usize = chosen.iter().map(|&s| eval.sequences[s].len()).sum();
    let bar = input
        .progress
        .bar(t_total as u64, format!("core/{variant} CE/KL"), "tokens");
    let (mut ce_orig, mut ce_sae, mut ce_zero) = (vec![], vec![], vec![]);
    let (mut kl_sae, mut kl_zero) = (vec![], vec![]);
    let mut forwards = 0;
    let shared = shared_forwards(input, &key)?;
    let groups = forward_groups(chosen, |s| eval.sequences[s].len(), c.forward_batch_size);
    for (g, group) in groups.iter().enumerate() {
        let seqs: Vec<&[u32]> = group
            .iter()
            .map(|&s| &eval.tokens[eval.sequences[s].clone()])
            .collect();
        let special: Vec<&[bool]> = group
            .iter()
            .map(|&s| &eval.special[eval.sequences[s].clone()])
            .collect();
        // The reference forwards of a group are made under the shared lock:
        // units running at once wait for the first one's instead of
        // repeating them (which unit makes them depends on scheduling; the
        // figures do not).
        let (original, zero) = {
            let mut sh = shared.lock().map_err(|_| anyhow!("core cache poisoned"))?;
            let original = match sh.original.get(&g).cloned() {
                Some(o) => o,
                None => {
                    forwards += 1;
                    let o = Arc::new(Original::compute(model, layer, &seqs, &special)?);
                    if sh.bytes + o.bytes() <= cap {
                        sh.bytes += o.bytes();
                        sh.original.insert(g, o.clone());
                    }
                    o
                }
            };
            let zero = match sh.zero.get(&g).cloned() {
                Some(z) => z,
                None => {
                    forwards += 1;
                    let z = Arc::new(patched_losses(
                        model,
                        layer,
                        &seqs,
                        &special,
                        &original,
                        &zero_patch,
                    )?);
                    sh.zero.insert(g, z.clone());
                    z
                }
            };
            (original, zero)
        };
        let keep: Vec<bool> = special
            .iter()
            .flat_map(|m| {
                m.iter()
                    .map(|&s| s && c.exclude_special_tokens_from_reconstruction)
            })
            .collect();
        let patch = sae_patch(sae, &keep);
        let (ce, kl) = patched_losses(model, layer, &seqs, &special, &original, &patch)?;
        forwards += 1;
        ce_orig.extend_from_slice(&original.ce);
        ce_sae.extend(ce);
        kl_sae.extend(kl);
        ce_zero.extend_from_slice(&zero.0);
        kl_zero.extend_from_slice(&zero.1);
        bar.inc(seqs.iter().map(|s| s.len() as u64).sum());
    }
    bar.finish_and_clear();
    // Freed once every variant's unit of this run is done with them (with
    // units at once the last variant need not finish last; when some
    // variants were cache hits, at the end of the bench stage).
    let all_done = {
        let mut sh = shared.lock().map_err(|_| anyhow!("core cache poisoned"))?;
        sh.done += 1;
        sh.done >= input.cfg.variants().len()
    };
    if all_done {
        input
            .cache
            .evict(&stage_key("bench", &format!("core/forwards/{key}")));
    }
    Ok(Downstream {
        ce_orig: m::mean(&ce_orig),
        ce_sae: m::mean(&ce_sae),
        ce_zero: m::mean(&ce_zero),
        kl_sae: m::mean(&kl_sae),
        kl_zero: m::mean(&kl_zero),
        ce_tokens: ce_orig.len(),
        kl_tokens: kl_sae.len(),
        sequences: chosen.len(),
        forwards,
    })
}

/// The chosen sequences in forward passes: consecutive ones of equal
/// length, at most `batch` per pass (a pass needs equal lengths).
pub(super) fn forward_groups(
    chosen: &[usize],
    len: impl Fn(usize) -> usize,
    batch: usize,
) -> Vec<&[usize]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=chosen.len() {
        let end_here =
            i == chosen.len() || i - start == batch.max(1) || len(chosen[i]) != len(chosen[start]);
        if end_here {
            groups.push(&chosen[start..i]);
            start = i;
        }
    }
    groups
}

/// Indices of the eval sequences for CE / KL.
pub(super) fn choose_sequences(c: &CoreConfig, available: usize) -> Vec<usize> {
    let n = c.ce_sequences.min(available);
    match c.ce_selection {
        CeSelection::First => (0..n).collect(),
        CeSelection::Seeded => {
            let mut all: Vec<usize> = (0..available).collect();
            SplitMix64::new(c.seed).shuffle(&mut all);
            let mut chosen = all[..n].to_vec();
            chosen.sort_unstable();
            chosen
        }
    }
}

/// CE loss score and KL divergence score.
pub(super) struct Scores {
    pub(super) ce_loss: f64,
    pub(super) kl_div: f64,
}

/// CE / KL with the splice, on the chosen eval sequences (returned too).
pub(super) fn ce_kl(
    input: &StageInput,
    variant: &str,
    sae: &Sae,
    eval: &EvalSplit,
) -> Result<(Vec<usize>, Downstream)> {
    let c = &input.cfg.bench.core;
    let layer = input.cfg.model.layer;
    let chosen = choose_sequences(c, eval.sequences.len());
    if chosen.len() < c.ce_sequences {
        input.progress.note(format!(
            "core/{variant}: bench.core.ce_sequences = {} but the eval split holds {} sequences; using all",
            c.ce_sequences,
            eval.sequences.len()
        ));
    }
    let model = input.model()?;
    if layer >= model.config().n_layers {
        bail!(
            "model.layer = {layer}: the model has {} layers",
            model.config().n_layers
        );
    }
    let ds = downstream(input, variant, &model, sae, eval, &chosen)?;
    Ok((chosen, ds))
}

#[cfg(test)]
mod tests {
    use super::forward_groups;

    #[test]
    fn forward_groups_hold_equal_lengths_up_to_the_batch() {
        let lens = [128, 128, 128, 90, 128, 128];
        let len = |s: usize| lens[s];
        let chosen = [0, 1, 2, 3, 4, 5];
        assert_eq!(
            forward_groups(&chosen, len, 2),
            [&[0, 1][..], &[2], &[3], &[4, 5]]
        );
        assert_eq!(
            forward_groups(&chosen, len, 8),
            [&[0, 1, 2][..], &[3], &[4, 5]]
        );
        assert_eq!(forward_groups(&chosen, len, 1).len(), 6);
        assert_eq!(forward_groups(&[1, 4], len, 8), [&[1, 4][..]]);
        assert!(forward_groups(&[], len, 8).is_empty());
    }
}
