//! Reading Arrow columns generically: any integer or float type as i64 or
//! f64, any string type as String, optional columns as all-None.

use anyhow::{anyhow, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| {
        anyhow!(
            "no column '{name}' (columns: {})",
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Any numeric column as f64.
pub fn f64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let c = cast(column(b, name)?, &DataType::Float64)
        .with_context(|| format!("column '{name}' is not numeric"))?;
    let a = c.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// Any integer (or whole float) column as i64.
pub fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let col = column(b, name)?;
    let c = if col.data_type().is_floating() {
        cast(&cast(col, &DataType::Float64)?, &DataType::Int64)?
    } else {
        cast(col, &DataType::Int64).with_context(|| format!("column '{name}' is not an integer"))?
    };
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// Any string (or dictionary of strings) column.
pub fn strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let c = cast(column(b, name)?, &DataType::Utf8)
        .with_context(|| format!("column '{name}' is not text"))?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

/// A numeric column that may be absent: all None then.
pub fn opt_f64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    f64s(b, name)
}

/// An integer column that may be absent: all None then.
pub fn opt_i64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    i64s(b, name)
}

/// A string column that may be absent: all None then.
pub fn opt_strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    strs(b, name)
}

/// The mean, None for no values.
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}
