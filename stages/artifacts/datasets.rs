//! The datasets stage's artifact (`datasets/<name>`): a labelled dataset cut
//! into pieces, with the model's activations on them. The probing
//! benchmarks read it through here.
//!
//! Files:
//! * `pieces.parquet` (table `pieces`): per piece its dataset, number,
//!   document id, chunk, split (`train` / `test`), number of non-BOS tokens,
//!   the class of each task (`task_<name>`, null outside the task's classes)
//!   and the residual mean-pooled over its non-BOS tokens (`activation`,
//!   f32);
//! * `tokens-NNNNN.parquet` (table `tokens`): each non-BOS token's residual
//!   (piece, pos, activation in f16 or f32), in piece order.
//!
//! The reader also needs these fields of the manifest's summary, which the
//! stage writes: `dataset` (the name), `d_model` and `tasks` (each with its
//! `name` and its `classes`, in class order).

use crate::config::ExtractDtype;
use crate::pipeline::store::{Store, TableEntry};
use anyhow::{bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float16Array, Float32Array, Int32Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Int32Type, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// The table of pieces (one row each) and its one file.
pub const PIECES_TABLE: &str = "pieces";
pub const PIECES_FILE: &str = "pieces.parquet";
/// The table of per-token activations, in shards.
pub const TOKENS_TABLE: &str = "tokens";
/// Token rows per shard file.
const TOKENS_PER_SHARD: usize = 65536;

/// The name of token shard `i`.
pub fn token_shard_file(i: usize) -> String {
    format!("tokens-{i:05}.parquet")
}

// ---------------------------------------------------------------------------
// Writing.

/// The columns of `pieces.parquet`, one entry per piece.
pub struct PiecesTable<'a> {
    pub dataset: &'a str,
    pub doc_ids: Vec<&'a str>,
    /// The chunk of its document each piece is.
    pub chunks: Vec<usize>,
    pub is_test: Vec<bool>,
    /// Non-BOS tokens per piece.
    pub n_tokens: Vec<usize>,
    /// Per task: its name and each piece's class, if any.
    pub tasks: Vec<(&'a str, Vec<Option<&'a str>>)>,
    pub d_model: usize,
    /// Mean-pooled residual per piece, [pieces, d_model].
    pub pooled: Vec<f32>,
}

/// Writes `pieces.parquet` into `dir`; its table entry.
pub fn write_pieces(dir: &Path, t: PiecesTable) -> Result<TableEntry> {
    let n = t.doc_ids.len();
    let dm = t.d_model as i32;
    let item32 = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("piece", DataType::Int32, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("chunk", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("n_tokens", DataType::Int32, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![t.dataset; n])),
        Arc::new(Int32Array::from_iter_values(0..n as i32)),
        Arc::new(StringArray::from(t.doc_ids)),
        Arc::new(Int32Array::from_iter_values(
            t.chunks.iter().map(|&c| c as i32),
        )),
        Arc::new(StringArray::from_iter_values(
            t.is_test
                .iter()
                .map(|&test| if test { "test" } else { "train" }),
        )),
        Arc::new(Int32Array::from_iter_values(
            t.n_tokens.iter().map(|&c| c as i32),
        )),
    ];
    for (name, classes) in t.tasks {
        fields.push(Field::new(format!("task_{name}"), DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(classes)));
    }
    fields.push(Field::new(
        "activation",
        DataType::FixedSizeList(item32.clone(), dm),
        false,
    ));
    cols.push(Arc::new(FixedSizeListArray::try_new(
        item32,
        dm,
        Arc::new(Float32Array::from(t.pooled)),
        None,
    )?));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    let rows = crate::artifacts::parquet_io::write_all(&dir.join(PIECES_FILE), &[batch])?;
    Ok(TableEntry {
        files: vec![PIECES_FILE.into()],
        rows,
    })
}

/// Writes the `tokens` table in shards of `TOKENS_PER_SHARD` rows, pieces
/// in order.
pub struct TokenWriter<'a> {
    dir: &'a Path,
    d_model: usize,
    dtype: ExtractDtype,
    pieces: Vec<i32>,
    pos: Vec<i32>,
    values: Vec<f32>,
    files: Vec<String>,
    rows: u64,
}

impl<'a> TokenWriter<'a> {
    pub fn new(dir: &'a Path, d_model: usize, dtype: ExtractDtype) -> Self {
        TokenWriter {
            dir,
            d_model,
            dtype,
            pieces: Vec::new(),
            pos: Vec::new(),
            values: Vec::new(),
            files: Vec::new(),
            rows: 0,
        }
    }

    /// Adds piece `piece`'s non-BOS token activations, [tokens, d_model]
    /// (positions 1, 2, ...).
    pub fn push_piece(&mut self, piece: usize, acts: &[f32]) -> Result<()> {
        for (pos, row) in acts.chunks_exact(self.d_model).enumerate() {
            self.pieces.push(piece as i32);
            self.pos.push(pos as i32 + 1);
            self.values.extend_from_slice(row);
            self.rows += 1;
            if self.pieces.len() == TOKENS_PER_SHARD {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what is left; the table entry.
    pub fn finish(mut self) -> Result<TableEntry> {
        self.flush()?;
        Ok(TableEntry {
            files: self.files,
            rows: self.rows,
        })
    }

    fn flush(&mut self) -> Result<()> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        let name = token_shard_file(self.files.len());
        write_token_shard(
            &self.dir.join(&name),
            std::mem::take(&mut self.pieces),
            std::mem::take(&mut self.pos),
            std::mem::take(&mut self.values),
            self.d_model,
            self.dtype,
        )?;
        self.files.push(name);
        Ok(())
    }
}

fn write_token_shard(
    path: &Path,
    pieces: Vec<i32>,
    pos: Vec<i32>,
    values: Vec<f32>,
    dm: usize,
    dtype: ExtractDtype,
) -> Result<()> {
    let (item_type, arr): (DataType, ArrayRef) = match dtype {
        ExtractDtype::F32 => (DataType::Float32, Arc::new(Float32Array::from(values))),
        ExtractDtype::F16 => (
            DataType::Float16,
            Arc::new(Float16Array::from(
                values
                    .iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>(),
            )),
        ),
    };
    let item = Arc::new(Field::new("item", item_type, false));
    let schema = Schema::new(vec![
        Field::new("piece", DataType::Int32, false),
        Field::new("pos", DataType::Int32, false),
        Field::new(
            "activation",
            DataType::FixedSizeList(item.clone(), dm as i32),
            false,
        ),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int32Array::from(pieces)),
            Arc::new(Int32Array::from(pos)),
            Arc::new(FixedSizeListArray::try_new(item, dm as i32, arr, None)?),
        ],
    )?;
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(8192))
        .build();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading.

/// A dataset artifact as the benchmarks use it.
pub struct DatasetData {
    pub name: String,
    pub d_model: usize,
    /// Per piece: in the test split.
    pub is_test: Vec<bool>,
    /// Mean-pooled residual per piece, [pieces, d_model].
    pub pooled: Vec<f32>,
    /// Non-BOS token activations in piece order, [tokens, d_model].
    pub tokens: Vec<f32>,
    /// Piece p's tokens are rows offsets[p]..offsets[p + 1] of `tokens`.
    pub offsets: Vec<usize>,
    pub tasks: Vec<TaskData>,
}

pub struct TaskData {
    pub name: String,
    pub classes: Vec<String>,
    /// Per piece: its class, if any.
    pub labels: Vec<Option<usize>>,
}

impl DatasetData {
    pub fn pieces(&self) -> usize {
        self.is_test.len()
    }

    pub fn task(&self, name: &str) -> Option<&TaskData> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

/// The task names and classes of a datasets artifact, from its manifest.
pub fn task_classes(store: &Store, key: &str) -> Result<Vec<(String, Vec<String>)>> {
    let m = store.manifest("datasets", key)?;
    let tasks = m.summary["tasks"]
        .as_array()
        .with_context(|| format!("datasets/{key}: manifest has no tasks"))?;
    Ok(tasks
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["classes"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// What `pieces.parquet` holds per piece, as the reader keeps it.
struct PiecesColumns {
    is_test: Vec<bool>,
    pooled: Vec<f32>,
    n_tokens: Vec<usize>,
    /// Per task: each piece's class.
    labels: Vec<Vec<Option<usize>>>,
}

fn read_pieces(dir: &Path, tasks: &[(String, Vec<String>)]) -> Result<PiecesColumns> {
    let mut out = PiecesColumns {
        is_test: Vec::new(),
        pooled: Vec::new(),
        n_tokens: Vec::new(),
        labels: vec![Vec::new(); tasks.len()],
    };
    for batch in crate::artifacts::parquet_io::read_all(&dir.join(PIECES_FILE))? {
        let split = batch
            .column_by_name("split")
            .context("pieces: no split column")?
            .as_string::<i32>();
        out.is_test
            .extend((0..batch.num_rows()).map(|r| split.value(r) == "test"));
        let nt = batch
            .column_by_name("n_tokens")
            .context("pieces: no n_tokens column")?
            .as_primitive::<Int32Type>();
        out.n_tokens.extend(nt.values().iter().map(|&v| v as usize));
        let act = batch
            .column_by_name("activation")
            .context("pieces: no activation column")?
            .as_fixed_size_list();
        out.pooled
            .extend_from_slice(act.values().as_primitive::<Float32Type>().values());
        for (j, (tname, classes)) in tasks.iter().enumerate() {
            let col = batch
                .column_by_name(&format!("task_{tname}"))
                .with_context(|| format!("pieces: no task_{tname} column"))?
                .as_string::<i32>();
            out.labels[j].extend((0..batch.num_rows()).map(|r| {
                if col.is_null(r) {
                    None
                } else {
                    classes.iter().position(|c| c == col.value(r))
                }
            }));
        }
    }
    Ok(out)
}

/// Every token activation of the `tokens` table's files, as f32.
fn read_tokens(dir: &Path, files: &[String], capacity: usize) -> Result<Vec<f32>> {
    let mut tokens = Vec::with_capacity(capacity);
    for f in files {
        for batch in crate::artifacts::parquet_io::read_all(&dir.join(f))? {
            let act = batch
                .column_by_name("activation")
                .context("tokens: no activation column")?
                .as_fixed_size_list();
            match act.values().data_type() {
                DataType::Float32 => {
                    tokens.extend_from_slice(act.values().as_primitive::<Float32Type>().values())
                }
                DataType::Float16 => tokens.extend(
                    act.values()
                        .as_primitive::<Float16Type>()
                        .values()
                        .iter()
                        .map(|v| v.to_f32()),
                ),
                t => bail!("{f}: activation values are {t}, expected float32 or float16"),
            }
        }
    }
    Ok(tokens)
}

/// Reads a datasets artifact; `with_tokens` also reads the per-token activations.
pub fn load(store: &Store, key: &str, with_tokens: bool) -> Result<DatasetData> {
    let m = store.manifest("datasets", key)?;
    let dir = store.artifact_dir("datasets", key);
    let name = m.summary["dataset"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let d_model = m.summary["d_model"].as_u64().unwrap_or(0) as usize;
    let tasks_meta = task_classes(store, key)?;
    let pieces = read_pieces(&dir, &tasks_meta)?;
    let mut offsets = vec![0usize];
    for n in &pieces.n_tokens {
        offsets.push(offsets.last().unwrap() + n);
    }
    let total = *offsets.last().unwrap();
    let mut tokens = Vec::new();
    if with_tokens {
        let files = &m.tables.get(TOKENS_TABLE).context("no tokens table")?.files;
        tokens = read_tokens(&dir, files, total * d_model)?;
        if tokens.len() != total * d_model {
            bail!(
                "datasets/{key}: {} token activations for {} tokens of {} pieces",
                tokens.len() / d_model.max(1),
                total,
                pieces.n_tokens.len()
            );
        }
    }
    Ok(DatasetData {
        name,
        d_model,
        is_test: pieces.is_test,
        pooled: pieces.pooled,
        tokens,
        offsets,
        tasks: tasks_meta
            .into_iter()
            .zip(pieces.labels)
            .map(|((name, classes), labels)| TaskData {
                name,
                classes,
                labels,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_writer_shards_in_piece_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TokenWriter::new(dir.path(), 2, ExtractDtype::F32);
        w.push_piece(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        w.push_piece(1, &[5.0, 6.0]).unwrap();
        let entry = w.finish().unwrap();
        assert_eq!(entry.rows, 3);
        assert_eq!(entry.files, vec![token_shard_file(0)]);
        let tokens = read_tokens(dir.path(), &entry.files, 6).unwrap();
        assert_eq!(tokens, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let batch =
            &crate::artifacts::parquet_io::read_all(&dir.path().join(&entry.files[0])).unwrap()[0];
        let pos = batch
            .column_by_name("pos")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(pos.values().to_vec(), vec![1, 2, 1], "BOS is position 0");
    }

    #[test]
    fn pieces_round_trip_with_task_classes() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write_pieces(
            dir.path(),
            PiecesTable {
                dataset: "d",
                doc_ids: vec!["a", "a", "b"],
                chunks: vec![0, 1, 0],
                is_test: vec![false, false, true],
                n_tokens: vec![3, 3, 2],
                tasks: vec![("party", vec![Some("R"), Some("R"), None])],
                d_model: 1,
                pooled: vec![0.5, 1.5, 2.5],
            },
        )
        .unwrap();
        assert_eq!(entry.rows, 3);
        let tasks = vec![("party".to_string(), vec!["D".to_string(), "R".to_string()])];
        let p = read_pieces(dir.path(), &tasks).unwrap();
        assert_eq!(p.is_test, vec![false, false, true]);
        assert_eq!(p.n_tokens, vec![3, 3, 2]);
        assert_eq!(p.pooled, vec![0.5, 1.5, 2.5]);
        assert_eq!(p.labels, vec![vec![Some(1), Some(1), None]]);
    }
}
