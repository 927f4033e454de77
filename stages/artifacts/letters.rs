//! The letters stage's artifact, the absorption benchmark's input:
//! `words.parquet` (one row per measured word: letter, split, prompt, its
//! activation at the word's token and the ground-truth probe's score) and
//! `probes.parquet` (the 26 ground-truth letter probes, in letter order).

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{
    AsArray, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use coact::metrics::absorption::{GroundTruthProbe, LETTERS};
use std::path::Path;
use std::sync::Arc;

pub const WORDS_FILE: &str = "words.parquet";
pub const PROBES_FILE: &str = "probes.parquet";

/// One measured word: its split, its packed sequence and its position there,
/// and its effective prompt (the sequence's text up to and including it).
pub struct LetterPrompt {
    pub word: String,
    pub letter: u8,
    pub test: bool,
    pub token_id: u32,
    pub sequence: usize,
    pub position: usize,
    pub examples: usize,
    pub text: String,
}

pub fn write_words(
    out_dir: &Path,
    prompts: &[LetterPrompt],
    acts: &[f32],
    d: usize,
    probes: &[GroundTruthProbe],
) -> Result<u64> {
    let n = prompts.len();
    let letter_s: Vec<String> = prompts
        .iter()
        .map(|p| (LETTERS[p.letter as usize] as char).to_string())
        .collect();
    let score: Vec<f32> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| probes[p.letter as usize].score(&acts[i * d..(i + 1) * d]) as f32)
        .collect();
    let schema = Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("letter", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("token_id", DataType::Int32, false),
        Field::new("sequence", DataType::Int32, false),
        Field::new("position", DataType::Int32, false),
        Field::new("examples", DataType::Int32, false),
        Field::new("prompt", DataType::Utf8, false),
        Field::new("probe_score", DataType::Float32, false),
        Field::new("activation", list_type(d), false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                prompts.iter().map(|p| p.word.as_str()),
            )),
            Arc::new(StringArray::from(letter_s)),
            Arc::new(StringArray::from_iter_values(prompts.iter().map(|p| {
                if p.test {
                    "test"
                } else {
                    "train"
                }
            }))),
            Arc::new(Int32Array::from_iter_values(
                prompts.iter().map(|p| p.token_id as i32),
            )),
            Arc::new(Int32Array::from_iter_values(
                prompts.iter().map(|p| p.sequence as i32),
            )),
            Arc::new(Int32Array::from_iter_values(
                prompts.iter().map(|p| p.position as i32),
            )),
            Arc::new(Int32Array::from_iter_values(
                prompts.iter().map(|p| p.examples as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                prompts.iter().map(|p| p.text.as_str()),
            )),
            Arc::new(Float32Array::from(score)),
            Arc::new(fixed_list(acts.to_vec(), d)?),
        ],
    )?;
    debug_assert_eq!(batch.num_rows(), n);
    crate::artifacts::parquet_io::write_all(&out_dir.join(WORDS_FILE), &[batch])
        .context("writing the letters words table")
}

pub fn write_probes(out_dir: &Path, probes: &[GroundTruthProbe], d: usize) -> Result<()> {
    let schema = Schema::new(vec![
        Field::new("letter", DataType::Utf8, false),
        Field::new("trained", DataType::Boolean, false),
        Field::new("train_words", DataType::Int32, false),
        Field::new("test_words", DataType::Int32, false),
        Field::new("test_f1", DataType::Float64, false),
        Field::new("test_precision", DataType::Float64, false),
        Field::new("test_recall", DataType::Float64, false),
        Field::new("bias", DataType::Float32, false),
        Field::new("weight", list_type(d), false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                probes
                    .iter()
                    .map(|p| (LETTERS[p.letter as usize] as char).to_string()),
            )),
            Arc::new(BooleanArray::from(
                probes.iter().map(|p| p.trained).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from_iter_values(
                probes.iter().map(|p| p.train_words as i32),
            )),
            Arc::new(Int32Array::from_iter_values(
                probes.iter().map(|p| p.test_words as i32),
            )),
            Arc::new(Float64Array::from_iter_values(
                probes.iter().map(|p| p.test_f1),
            )),
            Arc::new(Float64Array::from_iter_values(
                probes.iter().map(|p| p.test_precision),
            )),
            Arc::new(Float64Array::from_iter_values(
                probes.iter().map(|p| p.test_recall),
            )),
            Arc::new(Float32Array::from_iter_values(probes.iter().map(|p| p.b))),
            Arc::new(fixed_list(
                probes.iter().flat_map(|p| p.w.iter().copied()).collect(),
                d,
            )?),
        ],
    )?;
    crate::artifacts::parquet_io::write_all(&out_dir.join(PROBES_FILE), &[batch])
        .context("writing the letters probes table")?;
    Ok(())
}

fn fixed_list(values: Vec<f32>, d: usize) -> Result<FixedSizeListArray> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Ok(FixedSizeListArray::try_new(
        item,
        d as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?)
}

fn list_type(d: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        d as i32,
    )
}

/// The words of a letters artifact: activations [n, d] and letter indices,
/// by split.
pub struct LetterWords {
    pub d: usize,
    pub x_train: Vec<f32>,
    pub y_train: Vec<u8>,
    pub x_test: Vec<f32>,
    pub y_test: Vec<u8>,
}

fn letter_index(s: &str, file: &Path) -> Result<u8> {
    match s.as_bytes() {
        [c] if c.is_ascii_lowercase() => Ok(c - b'a'),
        _ => bail!("{}: letter {s:?} is not one of a..z", file.display()),
    }
}

/// Reads `words.parquet` of a letters artifact.
pub fn read_words(dir: &Path) -> Result<LetterWords> {
    let path = dir.join(WORDS_FILE);
    let mut w = LetterWords {
        d: 0,
        x_train: vec![],
        y_train: vec![],
        x_test: vec![],
        y_test: vec![],
    };
    for batch in crate::artifacts::parquet_io::read_all(&path)? {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| anyhow!("{}: no column {name}", path.display()))
        };
        let letters = col("letter")?.as_string::<i32>().clone();
        let splits = col("split")?.as_string::<i32>().clone();
        let acts = col("activation")?.as_fixed_size_list().clone();
        w.d = acts.value_length() as usize;
        let values = acts.values().as_primitive::<Float32Type>().values();
        for r in 0..batch.num_rows() {
            let l = letter_index(letters.value(r), &path)?;
            let row = &values[r * w.d..(r + 1) * w.d];
            match splits.value(r) {
                "train" => {
                    w.x_train.extend_from_slice(row);
                    w.y_train.push(l);
                }
                "test" => {
                    w.x_test.extend_from_slice(row);
                    w.y_test.push(l);
                }
                s => bail!("{}: split {s:?} is not train or test", path.display()),
            }
        }
    }
    Ok(w)
}

/// Reads `probes.parquet` of a letters artifact (26 rows in letter order).
pub fn read_probes(dir: &Path) -> Result<Vec<GroundTruthProbe>> {
    let path = dir.join(PROBES_FILE);
    let mut out = Vec::new();
    for batch in crate::artifacts::parquet_io::read_all(&path)? {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| anyhow!("{}: no column {name}", path.display()))
        };
        let letters = col("letter")?.as_string::<i32>().clone();
        let f64s = |name: &str| -> Result<Float64Array> {
            Ok(col(name)?
                .as_primitive_opt::<arrow::datatypes::Float64Type>()
                .ok_or_else(|| anyhow!("{}: {name} is not float64", path.display()))?
                .clone())
        };
        let i32s = |name: &str| -> Result<Int32Array> {
            Ok(col(name)?
                .as_primitive_opt::<arrow::datatypes::Int32Type>()
                .ok_or_else(|| anyhow!("{}: {name} is not int32", path.display()))?
                .clone())
        };
        let (f1, pr, rc) = (
            f64s("test_f1")?,
            f64s("test_precision")?,
            f64s("test_recall")?,
        );
        let (trw, tew) = (i32s("train_words")?, i32s("test_words")?);
        let bias = col("bias")?.as_primitive::<Float32Type>().clone();
        let trained = col("trained")?.as_boolean().clone();
        let weights = col("weight")?.as_fixed_size_list().clone();
        let d = weights.value_length() as usize;
        let wv = weights.values().as_primitive::<Float32Type>().values();
        for r in 0..batch.num_rows() {
            out.push(GroundTruthProbe {
                letter: letter_index(letters.value(r), &path)?,
                w: wv[r * d..(r + 1) * d].to_vec(),
                b: bias.value(r),
                test_f1: f1.value(r),
                test_precision: pr.value(r),
                test_recall: rc.value(r),
                train_words: trw.value(r) as usize,
                test_words: tew.value(r) as usize,
                trained: trained.value(r),
            });
        }
    }
    out.sort_by_key(|p| p.letter);
    if out.len() != 26 || out.iter().enumerate().any(|(i, p)| p.letter as usize != i) {
        bail!(
            "{}: expected one probe per letter a..z, found {}",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}
