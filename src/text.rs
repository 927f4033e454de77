//! Text to token sequences: tokenizer loading, packing documents into
//! fixed-length BOS-first sequences, and the document-level train/eval split.

use crate::rng::SplitMix64;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// A Hugging Face `tokenizer.json` with the BOS token the model expects.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: u32,
}

impl TextTokenizer {
    /// Loads `path` and looks up `bos_token` in its vocabulary.
    pub fn from_file(path: &Path, bos_token: &str) -> Result<Self> {
        if !path.is_file() {
            bail!("tokenizer file {} not found", path.display());
        }
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            anyhow!(
                "tokenizer {}: not a valid tokenizer.json: {e}",
                path.display()
            )
        })?;
        // Documents are packed by coact: a file's own truncation or padding
        // would silently cut or pad them.
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!("tokenizer {}: {e}", path.display()))?;
        inner.with_padding(None);
        let bos_id = inner.token_to_id(bos_token).ok_or_else(|| {
            anyhow!(
                "tokenizer {}: BOS token '{bos_token}' is not in its vocabulary",
                path.display()
            )
        })?;
        Ok(Self { inner, bos_id })
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Vocabulary of the tokenizer's model, without added tokens: what a
    /// language model's embedding table must match.
    pub fn base_vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }

    /// Token ids of `text`, without special tokens (BOS is added by packing).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding failed: {e}"))
    }

    /// A string that identifies the vocabulary, so that artifacts made with one
    /// tokenizer are not mixed with another.
    pub fn fingerprint(&self) -> String {
        format!("vocab={};bos={}", self.base_vocab_size(), self.bos_id)
    }
}

/// Cuts one document's tokens into sequences of `context_size` tokens, each
/// BOS followed by `context_size - 1` document tokens. A tail too short to
/// fill a sequence is dropped, so every sequence belongs to exactly one
/// document (labels stay exact).
pub fn pack_document(tokens: &[u32], context_size: usize, bos_id: u32) -> Vec<Vec<u32>> {
    assert!(context_size >= 2, "context_size must leave room after BOS");
    tokens
        .chunks_exact(context_size - 1)
        .map(|body| {
            let mut seq = Vec::with_capacity(context_size);
            seq.push(bos_id);
            seq.extend_from_slice(body);
            seq
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
    /// Past the token budget: the document is listed but gives no sequences.
    Unused,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
            Split::Unused => "unused",
        }
    }
}

/// How many of a document's sequences go into which split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub split: Split,
    pub sequences: usize,
}

/// Splits documents (never sequences of one document across splits) given
/// each document's number of available sequences. Documents are visited in
/// an order shuffled by `seed`; eval is filled first up to `eval_sequences`,
/// then train up to `train_sequences` (None: everything left). The document
/// that crosses a budget contributes only the sequences that fit.
pub fn allocate_splits(
    sequences_per_doc: &[usize],
    eval_sequences: usize,
    train_sequences: Option<usize>,
    seed: u64,
) -> Result<Vec<Allocation>> {
    let mut order: Vec<usize> = (0..sequences_per_doc.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let mut out = vec![
        Allocation {
            split: Split::Unused,
            sequences: 0
        };
        sequences_per_doc.len()
    ];
    let mut eval_left = eval_sequences;
    let mut train_left = train_sequences.unwrap_or(usize::MAX);
    for doc in order {
        let available = sequences_per_doc[doc];
        if available == 0 {
            continue;
        }
        let (split, left) = if eval_left > 0 {
            (Split::Eval, &mut eval_left)
        } else if train_left > 0 {
            (Split::Train, &mut train_left)
        } else {
            break;
        };
        let take = available.min(*left);
        *left -= take;
        out[doc] = Allocation {
            split,
            sequences: take,
        };
    }
    let total_eval: usize = out
        .iter()
        .filter(|a| a.split == Split::Eval)
        .map(|a| a.sequences)
        .sum();
    let total_train: usize = out
        .iter()
        .filter(|a| a.split == Split::Train)
        .map(|a| a.sequences)
        .sum();
    if total_eval == 0 || total_train == 0 {
        let available: usize = sequences_per_doc.iter().sum();
        bail!(
            "the corpus gives {available} sequences in {} documents: not enough for both an eval split \
             ({total_eval} sequences) and a train split ({total_train} sequences)",
            sequences_per_doc.len()
        );
    }
    Ok(out)
}

/// Tokenizes documents on all cores, keeping their order.
pub fn encode_all(tokenizer: &TextTokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = texts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|t| tokenizer.encode(t))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(texts.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow!("a tokenizing thread panicked"))?
                    .context("tokenizing")?,
            );
        }
        Ok(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_prepends_bos_and_drops_the_short_tail() {
        let toks: Vec<u32> = (10..20).collect(); // 10 tokens
        let seqs = pack_document(&toks, 4, 2);
        assert_eq!(
            seqs,
            vec![
                vec![2, 10, 11, 12],
                vec![2, 13, 14, 15],
                vec![2, 16, 17, 18]
            ]
        );
        assert!(pack_document(&toks[..2], 4, 2).is_empty());
    }

    #[test]
    fn splits_respect_budgets_and_never_share_a_document() {
        let per_doc = [5, 0, 7, 3, 9, 4];
        let alloc = allocate_splits(&per_doc, 6, Some(10), 42).unwrap();
        let sum = |s: Split| -> usize {
            alloc
                .iter()
                .filter(|a| a.split == s)
                .map(|a| a.sequences)
                .sum()
        };
        assert_eq!(sum(Split::Eval), 6);
        assert_eq!(sum(Split::Train), 10);
        for (a, &n) in alloc.iter().zip(&per_doc) {
            assert!(a.sequences <= n);
            if a.split == Split::Unused {
                assert_eq!(a.sequences, 0);
            }
        }
        // The empty document never gets a split.
        assert_eq!(alloc[1].split, Split::Unused);
        // Deterministic for a seed, different for another.
        assert_eq!(alloc, allocate_splits(&per_doc, 6, Some(10), 42).unwrap());
        let others: Vec<_> = (0..20)
            .map(|s| allocate_splits(&per_doc, 6, Some(10), s).unwrap())
            .collect();
        assert!(others.iter().any(|o| o != &alloc));
    }

    #[test]
    fn unbounded_train_takes_everything_left_and_too_small_corpus_fails() {
        let per_doc = [5, 7, 3];
        let alloc = allocate_splits(&per_doc, 2, None, 0).unwrap();
        let total: usize = alloc.iter().map(|a| a.sequences).sum();
        let eval_doc = alloc.iter().position(|a| a.split == Split::Eval).unwrap();
        // Only the eval document's unused sequences are lost.
        assert_eq!(total, 15 - (per_doc[eval_doc] - 2));
        let err = allocate_splits(&[3], 5, None, 0).unwrap_err().to_string();
        assert!(err.contains("not enough"), "{err}");
    }
}
