//! letters stage: the model's activations for the first-letter
//! prompts of the absorption benchmark, and the ground-truth letter probes,
//! shared by every variant (a new SAE variant never reruns the model).
//!
//! Following SAEBench (sae_bench/evals/absorption/: vocab.py, prompting.py,
//! probing.py):
//! - words: the word list's lowercase alphabetic words that are a single
//!   token with a leading space (SAEBench takes every alphabetic token of
//!   the vocabulary; coact takes real words from `bench.absorption.words`),
//!   a seeded sample of `max_words`, shuffled and split train / test
//!   (`test_fraction`, SAEBench 0.2);
//! - prompt: "\n" then lines joined by "\n", a line being the template with
//!   `{word}` = " word", answered with " <FIRST LETTER UPPERCASE>" when it is
//!   a solved example; examples come from the word's own split, never the
//!   word itself;
//! - packing (coact's difference, for the CPU budget): SAEBench makes one
//!   prompt per word with 10 examples. coact packs `words_per_prompt` words
//!   into one sequence after `icl_examples` examples, each word's line being
//!   answered and so a solved example for the words after it. Attention is
//!   causal, so each word's activation is exactly that of the prompt made of
//!   the lines before it (stored in the `prompt` column, with its number of
//!   `examples`); ~11 tokens a word instead of ~90.
//! - activation: resid_post at the study layer at the word's token (BOS
//!   first; SAEBench's prompt_token_pos -6 for its template). A word whose
//!   token does not survive tokenization of the whole sequence (a merge
//!   across the boundary) is not measured, and listed.
//! - ground-truth probes: coact::metrics::absorption::train_ground_truth on
//!   the train words, F1 on the test words.
//!
//! Outputs: table `words` (`letters_words`: word, letter, split, token_id,
//! sequence, position, examples, prompt, probe_score = the ground-truth
//! score of the word's own letter, activation FixedSizeList<f32>[d_model]) and table `probes`
//! (`letters_probes`: letter, trained, train_words, test_words, test_f1,
//! test_precision, test_recall, bias, weight FixedSizeList<f32>[d_model]).

use crate::artifacts::letters::{write_probes, write_words, LetterPrompt, PROBES_FILE, WORDS_FILE};
use crate::config::Config;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use coact::lm::hook_name;
use coact::metrics::absorption::{train_ground_truth, GroundTruthProbe, LETTERS};
use coact::rng::SplitMix64;
use coact::text::TextTokenizer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The part of the config a letters artifact's key hashes: the prompt and
/// probe settings and the word list's fingerprint (the model and tokenizer
/// reach it through the extract artifact's key, its input).
pub fn key_config(cfg: &Config) -> Value {
    let a = &cfg.bench.absorption;
    json!({
        "words": a.words,
        "words_fingerprint": crate::pipeline::fingerprint::fingerprint(cfg, &cfg.resolve(&a.words), None),
        "max_words": a.max_words,
        "test_fraction": a.test_fraction,
        "icl_examples": a.icl_examples,
        "words_per_prompt": a.words_per_prompt,
        "template": a.template,
        "seed": a.seed,
        "batch_size": a.batch_size,
        "probe_l2": a.probe_l2,
        "probe_max_iter": a.probe_max_iter,
        "layer": cfg.model.layer,
    })
}

/// The template's line for a word (the word gets its leading space).
fn line(template: &str, word: &str) -> String {
    template.replace("{word}", &format!(" {word}"))
}

/// The single token of " word", when the tokenizer has one that decodes back
/// to the word.
fn single_token(tok: &TextTokenizer, word: &str) -> Result<Option<u32>> {
    let ids = tok.encode(&format!(" {word}"))?;
    if ids.len() != 1 {
        return Ok(None);
    }
    Ok((tok.decode(&ids)?.trim() == word).then_some(ids[0]))
}

/// One packed sequence: "\n", then a line per warm-up example and per
/// measured word, each line answered (" <LETTER>") except the last, lines
/// joined by "\n". Returns the tokens (BOS first) and, per measured word,
/// Some((position, effective prompt)) or None when its token does not
/// survive tokenization of the sequence (a merge across the boundary).
#[allow(clippy::type_complexity)]
fn build_sequence(
    tok: &TextTokenizer,
    bos: u32,
    template: &str,
    warmup: &[&str],
    measured: &[(&str, u32)],
) -> Result<(Vec<u32>, Vec<Option<(usize, String)>>)> {
    let before = &template[..template.find("{word}").expect("validated")];
    let answer = |w: &str| w.chars().next().expect("non-empty").to_ascii_uppercase();
    let mut text = String::from("\n");
    for ex in warmup {
        text += &format!("{} {}\n", line(template, ex), answer(ex));
    }
    let mut ends = Vec::with_capacity(measured.len());
    for (i, (w, _)) in measured.iter().enumerate() {
        let start = text.len();
        text += &line(template, w);
        // Where " word" ends, and where the word's line (unanswered) ends.
        ends.push((start + before.len() + 1 + w.len(), text.len()));
        if i + 1 < measured.len() {
            text += &format!(" {}\n", answer(w));
        }
    }
    let full = tok.encode(&text)?;
    let mut out = Vec::with_capacity(measured.len());
    for ((_, id), &(word_end, line_end)) in measured.iter().zip(&ends) {
        let prefix = tok.encode(&text[..word_end])?;
        out.push(
            (prefix.last() == Some(id) && full.starts_with(&prefix))
                .then(|| (prefix.len(), text[..line_end].to_string())),
        );
    }
    let mut tokens = Vec::with_capacity(full.len() + 1);
    tokens.push(bos);
    tokens.extend(full);
    Ok((tokens, out))
}

/// Words with their token id, the list's line count and its count of
/// lowercase alphabetic words.
type Candidates = (Vec<(String, u32)>, usize, usize);

/// The lowercase alphabetic words of the list that are one token, in file
/// order without repeats: (word, token id), and counts for the summary.
fn candidate_words(tok: &TextTokenizer, text: &str) -> Result<Candidates> {
    let mut seen = std::collections::HashSet::new();
    let mut lines = 0usize;
    let mut alpha = Vec::new();
    for l in text.lines() {
        lines += 1;
        let w = l.trim();
        if !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()) && seen.insert(w) {
            alpha.push(w);
        }
    }
    let n_alpha = alpha.len();
    let mut out = Vec::new();
    for w in alpha {
        if let Some(id) = single_token(tok, w)? {
            out.push((w.to_string(), id));
        }
    }
    Ok((out, lines, n_alpha))
}

/// Builds the absorption benchmark's first-letter prompts and probes.
pub struct Letters;

impl Stage for Letters {
    fn name(&self) -> &'static str {
        "letters"
    }
    fn about(&self) -> &'static str {
        "first-letter prompts and ground-truth letter probes (absorption's input)"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["extract"]
    }
    fn on_demand(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(Unit::single(key_config(cfg)))
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let ac = &cfg.bench.absorption;
    let layer = cfg.model.layer;
    let started = std::time::Instant::now();

    let (path, text) = read_word_list(input)?;
    let tok = input.tokenizer()?;
    let mut choice = choose_words(input, &tok, path, &text)?;
    let packed = build_prompts(input, &tok, &mut choice)?;
    let fwd = run_model(input, &packed)?;
    let d = fwd.d;
    let (probes, y_train, y_test) = train_probes(input, &packed.prompts, &fwd.acts, d)?;

    let words_rows = write_words(input.out_dir, &packed.prompts, &fwd.acts, d, &probes)?;
    write_probes(input.out_dir, &probes, d)?;

    let letter_counts: BTreeMap<String, Value> = (0..26u8)
        .map(|l| {
            let tr = y_train.iter().filter(|&&v| v == l).count();
            let te = y_test.iter().filter(|&&v| v == l).count();
            (
                (LETTERS[l as usize] as char).to_string(),
                json!({ "train": tr, "test": te, "probe_f1": probes[l as usize].test_f1 }),
            )
        })
        .collect();
    let weak: Vec<String> = probes
        .iter()
        .filter(|p| p.test_f1.partial_cmp(&ac.min_probe_f1) != Some(std::cmp::Ordering::Greater))
        .map(|p| (LETTERS[p.letter as usize] as char).to_string())
        .collect();
    let (prompts, sequences) = (&packed.prompts, &packed.sequences);
    let (lens, total_tokens, forward_s) = (&fwd.lens, fwd.total_tokens, fwd.seconds);
    // Tokens after the word in its line (SAEBench's prompt_token_pos -6
    // for its template counts from the end of the prompt).
    let after = tok.encode(&ac.template.replace("{word}", " x"))?.len() as i64 - 1;
    input.progress.note(format!(
        "letters: {} words ({} train, {} test) in {} sequences, {total_tokens} tokens in {forward_s:.1} s; {} letters with probe F1 <= {}",
        prompts.len(),
        y_train.len(),
        y_test.len(),
        sequences.len(),
        weak.len(),
        ac.min_probe_f1
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([
            (
                "words".to_string(),
                TableEntry {
                    files: vec![WORDS_FILE.into()],
                    rows: words_rows,
                },
            ),
            (
                "probes".to_string(),
                TableEntry {
                    files: vec![PROBES_FILE.into()],
                    rows: 26,
                },
            ),
        ]),
        summary: json!({
            "model": cfg.model.name,
            "layer": layer,
            "hook_name": hook_name(layer),
            "d_model": d,
            "words_file": choice.path.display().to_string(),
            "word_list_lines": choice.lines,
            "lowercase_alphabetic_words": choice.n_alpha,
            "single_token_words": choice.n_single,
            "words_used": prompts.len(),
            "words_skipped": packed.skipped,
            "train_words": y_train.len(),
            "test_words": y_test.len(),
            "sequences": sequences.len(),
            "sequence_tokens": { "min": lens.first(), "max": lens.last() },
            "prompt_token_pos": -(after + 1),
            "icl_examples": ac.icl_examples,
            "words_per_prompt": ac.words_per_prompt,
            "tokens": total_tokens,
            "forward_seconds": forward_s,
            "tokens_per_second": total_tokens as f64 / forward_s.max(1e-9),
            "seconds": started.elapsed().as_secs_f64(),
            "mean_probe_f1": probes.iter().map(|p| p.test_f1).sum::<f64>() / 26.0,
            "letters_probe_f1_at_or_below_threshold": weak,
            "letters": letter_counts,
        }),
    })
}

/// The words measured: a seeded sample of the list's single-token words,
/// shuffled, the first `n_train` training the probes; the counts behind it;
/// and the seeded generator, which goes on to draw the warm-up examples.
struct WordChoice {
    words: Vec<(String, u32)>,
    n_train: usize,
    rng: SplitMix64,
    path: PathBuf,
    lines: usize,
    n_alpha: usize,
    n_single: usize,
}

/// `bench.absorption.words`: its resolved path and its text.
fn read_word_list(input: &StageInput) -> Result<(PathBuf, String)> {
    let ac = &input.cfg.bench.absorption;
    let path = input.cfg.resolve(&ac.words);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "bench.absorption.words = {}: cannot read {}: {e} (`make setup` fetches the default word list)",
            ac.words.display(),
            path.display()
        )
    })?;
    Ok((path, text))
}

/// Chooses the words from the word list's text (SAEBench: the first
/// (1 - test_fraction) of the shuffled words train).
fn choose_words(
    input: &StageInput,
    tok: &TextTokenizer,
    path: PathBuf,
    text: &str,
) -> Result<WordChoice> {
    let ac = &input.cfg.bench.absorption;
    let (mut words, lines, n_alpha) = candidate_words(tok, text)?;
    let n_single = words.len();
    if n_single < 2 {
        bail!(
            "bench.absorption.words = {}: only {n_single} of its {lines} lines are lowercase alphabetic words that are one token (with a leading space) in the tokenizer; need at least 2",
            ac.words.display()
        );
    }
    let mut rng = SplitMix64::new(ac.seed);
    rng.shuffle(&mut words);
    words.truncate(ac.max_words);
    let n_train = ((words.len() as f64 * (1.0 - ac.test_fraction)).floor() as usize)
        .clamp(1, words.len() - 1);
    Ok(WordChoice {
        words,
        n_train,
        rng,
        path,
        lines,
        n_alpha,
        n_single,
    })
}

/// The packed sequences (BOS first), the measured words' prompts in them,
/// and the words whose token did not survive tokenization.
struct Packed {
    prompts: Vec<LetterPrompt>,
    sequences: Vec<Vec<u32>>,
    skipped: Vec<String>,
}

/// Packed sequences per split: `words_per_prompt` measured words after
/// `icl_examples` warm-up examples drawn from the rest of the split; each
/// measured word is a solved example for the words after it. Attention is
/// causal, so a word's activation is exactly that of the prompt made of the
/// lines before it (SAEBench builds one prompt per word with 10 examples;
/// packing gives every word at least `icl_examples` examples at a fraction
/// of the tokens).
fn build_prompts(
    input: &StageInput,
    tok: &TextTokenizer,
    choice: &mut WordChoice,
) -> Result<Packed> {
    let ac = &input.cfg.bench.absorption;
    let (words, n_train, rng) = (&choice.words, choice.n_train, &mut choice.rng);
    let bos = tok.bos_id();
    let mut prompts: Vec<LetterPrompt> = Vec::with_capacity(words.len());
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (test, range) in [(false, 0..n_train), (true, n_train..words.len())] {
        let split: Vec<usize> = range.collect();
        for group in split.chunks(ac.words_per_prompt) {
            let mut pool: Vec<usize> = split
                .iter()
                .copied()
                .filter(|j| !group.contains(j))
                .collect();
            let m = ac.icl_examples.min(pool.len());
            // Partial Fisher-Yates: the first m of a seeded shuffle.
            for a in 0..m {
                let b = a + rng.below((pool.len() - a) as u64) as usize;
                pool.swap(a, b);
            }
            let warmup: Vec<&str> = pool[..m].iter().map(|&j| words[j].0.as_str()).collect();
            let measured: Vec<(&str, u32)> = group
                .iter()
                .map(|&j| (words[j].0.as_str(), words[j].1))
                .collect();
            let (tokens, found) = build_sequence(tok, bos, &ac.template, &warmup, &measured)?;
            for (k, ((w, id), f)) in measured.iter().zip(found).enumerate() {
                match f {
                    Some((position, text)) => prompts.push(LetterPrompt {
                        word: w.to_string(),
                        letter: w.as_bytes()[0] - b'a',
                        test,
                        token_id: *id,
                        sequence: sequences.len(),
                        position,
                        examples: m + k,
                        text,
                    }),
                    None => skipped.push(w.to_string()),
                }
            }
            sequences.push(tokens);
        }
    }
    if prompts.iter().all(|p| p.test) || prompts.iter().all(|p| !p.test) {
        bail!(
            "bench.absorption: {} usable words leave no train or no test word; raise bench.absorption.max_words",
            prompts.len()
        );
    }
    Ok(Packed {
        prompts,
        sequences,
        skipped,
    })
}

/// The model's resid_post at each measured word ([prompts, d] row-major),
/// the distinct sequence lengths, and the forward's tokens and seconds.
struct Forward {
    acts: Vec<f32>,
    d: usize,
    lens: Vec<usize>,
    total_tokens: u64,
    seconds: f64,
}

/// The forward: sequences of equal token length share a batch (no padding).
fn run_model(input: &StageInput, packed: &Packed) -> Result<Forward> {
    let (ac, layer) = (&input.cfg.bench.absorption, input.cfg.model.layer);
    let (prompts, sequences) = (&packed.prompts, &packed.sequences);
    let model = input.model()?;
    let mc = model.config().clone();
    if let Some(t) = sequences
        .iter()
        .flatten()
        .find(|&&t| t as usize >= mc.vocab)
    {
        bail!(
            "model.tokenizer gives token id {t}, outside the model's vocabulary of {}",
            mc.vocab
        );
    }
    let d = mc.d_model;
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sequences.iter().enumerate() {
        by_len.entry(s.len()).or_default().push(i);
    }
    let mut at: Vec<Vec<(usize, usize)>> = vec![Vec::new(); sequences.len()];
    for (i, p) in prompts.iter().enumerate() {
        at[p.sequence].push((p.position, i));
    }
    let total_tokens: u64 = sequences.iter().map(|s| s.len() as u64).sum();
    let forward_started = std::time::Instant::now();
    let bar = input.progress.bar(
        total_tokens,
        format!("letters {}", hook_name(layer)),
        "tokens",
    );
    let mut acts = vec![0.0f32; prompts.len() * d];
    for (&t, idx) in &by_len {
        for chunk in idx.chunks(ac.batch_size) {
            let flat: Vec<u32> = chunk
                .iter()
                .flat_map(|&i| sequences[i].iter().copied())
                .collect();
            let ids = Tensor::from_vec(flat, (chunk.len(), t), &Device::Cpu)?;
            let resid = model.resid_post(&ids, layer)?;
            let resid = resid.flatten_all()?.to_vec1::<f32>()?;
            for (b, &s) in chunk.iter().enumerate() {
                for &(pos, i) in &at[s] {
                    let src = &resid[(b * t + pos) * d..(b * t + pos + 1) * d];
                    acts[i * d..(i + 1) * d].copy_from_slice(src);
                }
            }
            bar.inc((chunk.len() * t) as u64);
        }
    }
    bar.finish_and_clear();
    Ok(Forward {
        acts,
        d,
        lens: by_len.keys().copied().collect(),
        total_tokens,
        seconds: forward_started.elapsed().as_secs_f64(),
    })
}

/// The ground-truth probes, trained on the train words and scored on the
/// test words; also each split's letters.
fn train_probes(
    input: &StageInput,
    prompts: &[LetterPrompt],
    acts: &[f32],
    d: usize,
) -> Result<(Vec<GroundTruthProbe>, Vec<u8>, Vec<u8>)> {
    let ac = &input.cfg.bench.absorption;
    let (mut x_train, mut y_train, mut x_test, mut y_test) = (vec![], vec![], vec![], vec![]);
    for (i, p) in prompts.iter().enumerate() {
        let row = &acts[i * d..(i + 1) * d];
        if p.test {
            x_test.extend_from_slice(row);
            y_test.push(p.letter);
        } else {
            x_train.extend_from_slice(row);
            y_train.push(p.letter);
        }
    }
    let probes = train_ground_truth(
        &x_train,
        &y_train,
        &x_test,
        &y_test,
        d,
        ac.probe_l2,
        ac.probe_max_iter,
    )?;
    Ok((probes, y_train, y_test))
}
