//! Documents to pieces: the train/test split by document, the pieces of a
//! document, and which documents' pieces are kept under a class cap.

use coact::rng::SplitMix64;
use std::collections::{BTreeMap, HashMap};

/// A piece of a document: BOS and up to piece_tokens - 1 tokens.
pub(crate) struct Piece {
    pub doc: usize,
    /// Which chunk of the document it is.
    pub chunk: usize,
    pub tokens: Vec<u32>,
}

/// Up to `m` pieces of a document, evenly spaced through it; a text shorter
/// than one piece gives one shorter piece.
pub(crate) fn doc_pieces(
    doc: usize,
    tokens: &[u32],
    piece_tokens: usize,
    m: usize,
    bos: u32,
) -> Vec<Piece> {
    let chunks = coact::text::pack_document(tokens, piece_tokens, bos);
    if chunks.is_empty() {
        if tokens.is_empty() {
            return vec![];
        }
        let mut t = vec![bos];
        t.extend_from_slice(tokens);
        return vec![Piece {
            doc,
            chunk: 0,
            tokens: t,
        }];
    }
    let n = chunks.len();
    let take = m.min(n);
    let picks: Vec<usize> = (0..take).map(|j| (2 * j + 1) * n / (2 * take)).collect();
    picks
        .into_iter()
        .map(|c| Piece {
            doc,
            chunk: c,
            tokens: chunks[c].clone(),
        })
        .collect()
}

/// Test membership per document, stratified by the documents' classes:
/// documents are grouped by their combination of classes (each group in a
/// seeded order, groups one after the other) and every 1/fraction-th
/// document of that sequence goes to test, so each group is split in
/// proportion and the test split holds round(fraction * n) documents even
/// when the groups are small.
pub(crate) fn split_documents(
    docs: &[usize],
    classes: &[Vec<Option<usize>>],
    fraction: f64,
    seed: u64,
) -> HashMap<usize, bool> {
    let mut groups: BTreeMap<Vec<Option<usize>>, Vec<usize>> = BTreeMap::new();
    for &d in docs {
        groups.entry(classes[d].clone()).or_default().push(d);
    }
    let mut rng = SplitMix64::new(seed ^ 0x5B11_7D0C);
    let mut sequence = Vec::with_capacity(docs.len());
    for (_, mut g) in groups {
        rng.shuffle(&mut g);
        sequence.extend(g);
    }
    // A seeded phase, so that the first document of each run is not always train.
    let phase = rng.next_f64();
    sequence
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let a = (i as f64 * fraction + phase).floor();
            let b = ((i + 1) as f64 * fraction + phase).floor();
            (d, b > a)
        })
        .collect()
}

/// The documents whose pieces are kept, in document order: all with
/// pieces, unless `cap` (pieces_per_class) applies; then documents are
/// taken in a seeded order as long as their pieces keep every class they
/// belong to within `cap` pieces in their split.
pub(crate) fn choose_documents(
    docs: &[usize],
    pieces_of: &HashMap<usize, Vec<Piece>>,
    is_test: &HashMap<usize, bool>,
    classes: &[Vec<Option<usize>>],
    cap: Option<usize>,
    seed: u64,
) -> Vec<usize> {
    let mut order = docs.to_vec();
    if cap.is_some() {
        SplitMix64::new(seed ^ 0xDA7A_5E75).shuffle(&mut order);
    }
    let mut counts: HashMap<(bool, usize, usize), usize> = HashMap::new();
    let mut chosen: Vec<usize> = Vec::new();
    for &doc in &order {
        let n = pieces_of[&doc].len();
        if n == 0 {
            continue;
        }
        let test = is_test[&doc];
        let classes = &classes[doc];
        if let Some(cap) = cap {
            let full = classes.iter().enumerate().any(|(t, c)| {
                c.is_some_and(|c| counts.get(&(test, t, c)).copied().unwrap_or(0) + n > cap)
            });
            if full {
                continue;
            }
        }
        for (t, c) in classes.iter().enumerate() {
            if let Some(c) = c {
                *counts.entry((test, t, *c)).or_default() += n;
            }
        }
        chosen.push(doc);
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_stratified_and_seeded() {
        // Two classes of 10 documents each, a test fraction of 0.2.
        let docs: Vec<usize> = (0..20).collect();
        let classes: Vec<Vec<Option<usize>>> = (0..20).map(|d| vec![Some(d % 2)]).collect();
        let split = split_documents(&docs, &classes, 0.2, 7);
        assert_eq!(split.len(), 20);
        for c in 0..2 {
            let test = docs.iter().filter(|&&d| d % 2 == c && split[&d]).count();
            assert_eq!(test, 2, "class {c}: {split:?}");
        }
        assert_eq!(split, split_documents(&docs, &classes, 0.2, 7));
        assert_ne!(split, split_documents(&docs, &classes, 0.2, 8));
    }

    #[test]
    fn pieces_are_evenly_spaced_and_short_texts_give_one() {
        let tokens: Vec<u32> = (10..50).collect();
        // 40 tokens in pieces of 1 + 3 tokens: 13 chunks, 3 kept.
        let p = doc_pieces(4, &tokens, 4, 3, 0);
        let chunks: Vec<usize> = p.iter().map(|p| p.chunk).collect();
        let n = coact::text::pack_document(&tokens, 4, 0).len();
        assert_eq!(
            chunks,
            (0..3).map(|j| (2 * j + 1) * n / 6).collect::<Vec<_>>()
        );
        assert!(p.iter().all(|p| p.doc == 4 && p.tokens[0] == 0));
        let short = doc_pieces(1, &[7, 8], 4, 3, 0);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].tokens, vec![0, 7, 8]);
        assert!(doc_pieces(1, &[], 4, 3, 0).is_empty());
    }

    #[test]
    fn the_class_cap_limits_pieces_per_class_and_split() {
        let docs: Vec<usize> = (0..6).collect();
        let pieces_of: HashMap<usize, Vec<Piece>> = docs
            .iter()
            .map(|&d| {
                let ps = (0..2)
                    .map(|c| Piece {
                        doc: d,
                        chunk: c,
                        tokens: vec![0, 1],
                    })
                    .collect();
                (d, ps)
            })
            .collect();
        let is_test: HashMap<usize, bool> = docs.iter().map(|&d| (d, false)).collect();
        let classes: Vec<Vec<Option<usize>>> = (0..6).map(|d| vec![Some(d % 2)]).collect();
        let all = choose_documents(&docs, &pieces_of, &is_test, &classes, None, 0);
        assert_eq!(all, docs);
        // Two pieces per document, at most 4 per class: two documents each.
        let capped = choose_documents(&docs, &pieces_of, &is_test, &classes, Some(4), 0);
        assert_eq!(capped.len(), 4, "{capped:?}");
        for c in 0..2 {
            assert_eq!(capped.iter().filter(|&&d| d % 2 == c).count(), 2);
        }
        assert!(capped.windows(2).all(|w| w[0] < w[1]), "document order");
    }
}
