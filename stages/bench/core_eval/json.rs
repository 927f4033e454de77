//! The SAEBench-shaped JSON of the core benchmark (`<variant>_eval_results.json`).

use super::*;

/// SAEBench writes NaN as -1.
pub(super) fn num(v: f64) -> Value {
    if v.is_nan() {
        json!(-1)
    } else {
        json!(v)
    }
}

/// SAEBench's per-latent `eval_result_details`.
pub(super) fn latent_details(sae: &Sae, d: usize, r: &Recon) -> Vec<Value> {
    let cah = r.density.consistent_activation_heuristic();
    let w_enc_norm: Vec<f64> = sae
        .w_enc_t
        .chunks_exact(d)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let enc_dec_cos: Vec<f64> = sae
        .w_enc_t
        .chunks_exact(d)
        .zip(sae.w_dec.chunks_exact(d))
        .zip(&w_enc_norm)
        .map(|((e, dd), &ne)| {
            let dot: f64 = e.iter().zip(dd).map(|(&a, &b)| a as f64 * b as f64).sum();
            let nd: f64 = dd.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            if ne == 0.0 || nd == 0.0 {
                0.0
            } else {
                dot / (ne * nd)
            }
        })
        .collect();
    (0..sae.cfg.d_sae)
        .map(|i| {
            json!({
                "index": i,
                "feature_density": num(r.freq[i]),
                "consistent_activation_heuristic": num(cah[i]),
                "encoder_bias": num(sae.b_enc[i] as f64),
                "encoder_norm": num(w_enc_norm[i]),
                "encoder_decoder_cosine_sim": num(enc_dec_cos[i]),
                "max_decoder_cosine_sim": num(r.max_dec[i]),
                "max_encoder_cosine_sim": num(r.max_enc[i]),
            })
        })
        .collect()
}

/// What the SAEBench-shaped JSON is built from.
pub(super) struct EvalJson<'a> {
    pub(super) variant: &'a str,
    pub(super) vs: &'a VariantSae,
    pub(super) eval: &'a EvalSplit,
    pub(super) recon: &'a Recon,
    pub(super) ds: &'a Downstream,
    pub(super) chosen: &'a [usize],
    pub(super) scores: &'a Scores,
}

/// Writes `<variant>_eval_results.json`, shaped like SAEBench's core output;
/// returns its file name.
pub(super) fn write_eval_json(input: &StageInput, e: &EvalJson) -> Result<String> {
    let (cfg, c) = (input.cfg, &input.cfg.bench.core);
    let (variant, eval, ds, chosen) = (e.variant, e.eval, e.ds, e.chosen);
    let (rec, dens) = (&e.recon.rec, &e.recon.dens);
    let (ce_loss_score, kl_div_score) = (e.scores.ce_loss, e.scores.kl_div);
    let (max_dec, max_enc) = (&e.recon.max_dec, &e.recon.max_enc);
    let lens: Vec<usize> = chosen.iter().map(|&s| eval.sequences[s].len()).collect();
    let details = latent_details(&e.vs.sae, eval.d, e.recon);
    let context = eval.sequences.first().map_or(0, |r| r.len());
    let eval_json = json!({
        "eval_type_id": "core",
        "eval_config": {
            "model_name": cfg.model.name,
            "llm_dtype": "float32",
            "batch_size_prompts": c.batch_size_prompts,
            "n_eval_reconstruction_batches": ds.sequences.div_ceil(c.batch_size_prompts),
            "n_eval_sparsity_variance_batches": e.recon.batch_lens.len(),
            "dataset": cfg.corpus.path,
            "context_size": context,
            "compute_kl": true,
            "compute_ce_loss": true,
            "compute_l2_norms": true,
            "compute_sparsity_metrics": true,
            "compute_variance_metrics": true,
            "compute_featurewise_density_statistics": true,
            "compute_featurewise_weight_based_metrics": true,
            "exclude_special_tokens_from_reconstruction": c.exclude_special_tokens_from_reconstruction,
            "verbose": false,
            // coact's own settings (SAEBench ignores unknown keys).
            "ce_sequences": ds.sequences,
            "ce_selection": c.ce_selection,
            "seed": c.seed,
            "forward_batch_size": c.forward_batch_size,
        },
        "eval_id": input.planned.key,
        "datetime_epoch_millis": crate::pipeline::store::now_unix() * 1000,
        "eval_result_metrics": {
            "model_behavior_preservation": {
                "kl_div_score": num(kl_div_score),
                "kl_div_with_ablation": num(ds.kl_zero),
                "kl_div_with_sae": num(ds.kl_sae),
            },
            "model_performance_preservation": {
                "ce_loss_score": num(ce_loss_score),
                "ce_loss_with_ablation": num(ds.ce_zero),
                "ce_loss_with_sae": num(ds.ce_sae),
                "ce_loss_without_sae": num(ds.ce_orig),
            },
            "reconstruction_quality": {
                "explained_variance": num(rec.explained_variance),
                "explained_variance_legacy": num(rec.explained_variance_legacy),
                "mse": num(rec.mse),
                "cossim": num(rec.cossim),
            },
            "shrinkage": {
                "l2_norm_in": num(rec.norms.l2_norm_in),
                "l2_norm_out": num(rec.norms.l2_norm_out),
                "l2_ratio": num(rec.norms.l2_ratio),
                "relative_reconstruction_bias": num(rec.relative_reconstruction_bias),
            },
            "sparsity": { "l0": num(e.recon.l0), "l1": num(e.recon.l1) },
            "token_stats": {
                // As SAEBench counts them: every token of the sequences used.
                "total_tokens_eval_reconstruction": lens.iter().sum::<usize>(),
                "total_tokens_eval_sparsity_variance": eval.tokens.len(),
            },
            "misc_metrics": {
                "freq_over_1_percent": num(dens.frac_dense_1pct),
                "freq_over_10_percent": num(dens.frac_dense_10pct),
                "normalized_freq_over_1_percent": num(dens.normalized_freq_over_1_percent),
                "normalized_freq_over_10_percent": num(dens.normalized_freq_over_10_percent),
                "average_max_encoder_cosine_sim": num(m::mean(max_enc)),
                "average_max_decoder_cosine_sim": num(m::mean(max_dec)),
                "frac_alive": num(1.0 - dens.frac_dead),
            },
        },
        "eval_result_details": details,
        "eval_result_unstructured": {
            "coact": {
                "explained_variance_definition": "1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d) over all non-BOS eval tokens",
                "sse_per_token": num(rec.sse_per_token),
                "eval_tokens": e.recon.n,
                "ce_tokens": ds.ce_tokens,
                "kl_tokens": ds.kl_tokens,
                "ce_sequence_ids": chosen.iter().map(|&s| eval.seq_ids[s]).collect::<Vec<_>>(),
            }
        },
        "sae_bench_commit_hash": format!("coact {}", env!("CARGO_PKG_VERSION")),
        "sae_lens_id": variant,
        "sae_lens_release_id": cfg.study,
        "sae_lens_version": Value::Null,
        "sae_cfg_dict": e.vs.cfg_json,
    });
    let json_name = format!("{variant}_eval_results.json");
    std::fs::write(
        input.out_dir.join(&json_name),
        serde_json::to_string_pretty(&eval_json)?,
    )
    .with_context(|| format!("writing {json_name}"))?;
    Ok(json_name)
}
