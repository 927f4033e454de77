//! Parquet reading and writing shared by the stages.

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;

pub fn read_all(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes batches (all of one schema) to `path`; returns the row count.
pub fn write_all(path: &Path, batches: &[RecordBatch]) -> Result<u64> {
    let schema = batches.first().context("nothing to write")?.schema();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    let mut rows = 0u64;
    for b in batches {
        writer
            .write(b)
            .with_context(|| format!("writing {}", path.display()))?;
        rows += b.num_rows() as u64;
    }
    writer
        .close()
        .with_context(|| format!("closing {}", path.display()))?;
    Ok(rows)
}
