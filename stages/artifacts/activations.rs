//! The extract stage's artifact: resid_post activations as Parquet shards,
//! one row per token (split, seq_id, pos, token, is_special, activation as
//! FixedSizeList<f32 or f16>), named `<split>-<shard:05>.parquet`; the
//! manifest's `activations` table lists them and its summary holds the norm
//! statistics.

use crate::pipeline::stage::StageInput;
use anyhow::{bail, ensure, Context, Result};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};

/// The splits, in the order extract writes them.
pub const SPLITS: [&str; 2] = ["train", "eval"];

/// The file name of shard `shard` of `split`.
pub fn shard_file(split: &str, shard: usize) -> String {
    format!("{split}-{shard:05}.parquet")
}

/// Where an extract artifact is and which shard files it lists.
pub struct Activations {
    pub key: String,
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// The extract manifest's summary (model, layer, d_model, statistics).
    pub summary: serde_json::Value,
}

impl Activations {
    /// One split as a dense row-major f32 matrix with each row's is_special flag.
    pub fn read(&self, split: &str) -> Result<(Vec<f32>, Vec<bool>, usize)> {
        read_activations(&self.dir, &self.files, split)
    }

    /// The eval split with each row's sequence and token.
    pub fn eval_split(&self) -> Result<EvalSplit> {
        EvalSplit::read(&self.dir, &self.files)
    }
}

impl StageInput<'_> {
    /// This unit's extract input.
    pub fn activations(&self) -> Result<Activations> {
        let a = self.artifact("extract")?;
        let files = a
            .manifest
            .tables
            .get("activations")
            .with_context(|| format!("extract/{} has no activations table", a.key))?
            .files
            .clone();
        Ok(Activations {
            key: a.key,
            dir: a.dir,
            files,
            summary: a.manifest.summary,
        })
    }
}

/// Writes a shard under a temporary name and renames it: a shard file that
/// exists is complete.
pub fn write_shard(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension("parquet.partial");
    let props = WriterProperties::builder()
        // Activations are noise to a general-purpose compressor or dictionary.
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(8192))
        .build();
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// Activations of one split as a dense row-major matrix, f32, with the
/// token's is_special flag; for the stages that train and evaluate on them.
/// Reads only those two columns, batch by batch, into a matrix sized once
/// from the shards' footers (the train split is GBs: no regrowth copies).
pub fn read_activations(
    dir: &Path,
    files: &[String],
    split: &str,
) -> Result<(Vec<f32>, Vec<bool>, usize)> {
    let mut readers = Vec::new();
    let mut total_rows = 0usize;
    for f in files.iter().filter(|f| f.starts_with(&format!("{split}-"))) {
        let path = dir.join(f);
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a Parquet file", path.display()))?;
        total_rows += builder.metadata().file_metadata().num_rows() as usize;
        let roots = ["activation", "is_special"]
            .iter()
            .map(|name| {
                builder
                    .schema()
                    .index_of(name)
                    .with_context(|| format!("{}: no {name} column", path.display()))
            })
            .collect::<Result<Vec<usize>>>()?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        readers.push((f, builder.with_projection(mask).build()?));
    }
    let mut data = Vec::new();
    let mut special = Vec::with_capacity(total_rows);
    let mut d = 0usize;
    for (f, reader) in readers {
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {f}"))?;
            let col = batch
                .column_by_name("activation")
                .context("no activation column")?
                .as_fixed_size_list();
            d = col.value_length() as usize;
            if data.capacity() == 0 {
                data.reserve_exact(total_rows * d);
            }
            let values = col.values();
            match values.data_type() {
                DataType::Float32 => data.extend_from_slice(
                    values
                        .as_primitive::<arrow::datatypes::Float32Type>()
                        .values(),
                ),
                DataType::Float16 => data.extend(
                    values
                        .as_primitive::<arrow::datatypes::Float16Type>()
                        .values()
                        .iter()
                        .map(|v| v.to_f32()),
                ),
                t => bail!("{f}: activation values are {t}, expected float32 or float16"),
            }
            let sp = batch
                .column_by_name("is_special")
                .context("no is_special column")?
                .as_boolean();
            special.extend((0..sp.len()).map(|i| sp.value(i)));
        }
    }
    Ok((data, special, d))
}

/// The eval split of an extract artifact: activations `[n, d]` and, per
/// row, its sequence, token and BOS flag; rows of a sequence are consecutive.
pub struct EvalSplit {
    pub d: usize,
    pub x: Vec<f32>,
    pub special: Vec<bool>,
    pub tokens: Vec<u32>,
    /// Row range of each sequence, in file (seq_id) order.
    pub sequences: Vec<std::ops::Range<usize>>,
    pub seq_ids: Vec<i64>,
}

impl EvalSplit {
    /// Reads the eval shards listed in the extract manifest.
    pub fn read(dir: &Path, files: &[String]) -> Result<EvalSplit> {
        let (x, special, d) = read_activations(dir, files, "eval")?;
        let mut tokens = Vec::with_capacity(special.len());
        let mut seq_col = Vec::with_capacity(special.len());
        let mut pos_col = Vec::with_capacity(special.len());
        for f in files.iter().filter(|f| f.starts_with("eval-")) {
            let path = dir.join(f);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{}: not a Parquet file", path.display()))?;
            let schema = builder.parquet_schema();
            let wanted: Vec<usize> = ["seq_id", "pos", "token"]
                .iter()
                .map(|name| {
                    (0..schema.num_columns())
                        .find(|&i| schema.column(i).name() == *name)
                        .with_context(|| format!("{}: no {name} column", path.display()))
                })
                .collect::<Result<_>>()?;
            let mask = ProjectionMask::leaves(schema, wanted);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch.with_context(|| format!("reading {}", path.display()))?;
                let col = |name: &str| {
                    batch
                        .column_by_name(name)
                        .with_context(|| format!("{}: no {name} column", path.display()))
                };
                seq_col.extend_from_slice(col("seq_id")?.as_primitive::<Int64Type>().values());
                pos_col.extend_from_slice(col("pos")?.as_primitive::<Int32Type>().values());
                tokens.extend(
                    col("token")?
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|&t| t as u32),
                );
            }
        }
        ensure!(
            d > 0 && !special.is_empty(),
            "{}: no eval activations",
            dir.display()
        );
        ensure!(
            tokens.len() == special.len() && x.len() == special.len() * d,
            "{}: the eval shards' columns disagree in length",
            dir.display()
        );
        let mut sequences = Vec::new();
        let mut seq_ids = Vec::new();
        let mut start = 0;
        for r in 1..=tokens.len() {
            if r == tokens.len() || seq_col[r] != seq_col[start] {
                let ok = (start..r).all(|i| pos_col[i] as usize == i - start);
                ensure!(
                    ok,
                    "{}: eval sequence {} is not stored as consecutive positions 0..",
                    dir.display(),
                    seq_col[start]
                );
                sequences.push(start..r);
                seq_ids.push(seq_col[start]);
                start = r;
            }
        }
        Ok(EvalSplit {
            d,
            x,
            special,
            tokens,
            sequences,
            seq_ids,
        })
    }
}
