//! SAEBench's metric definitions, as plain functions of arrays: the core
//! reconstruction and sparsity metrics, the splice losses (CE / KL with the
//! residual replaced), the absorption calculator, and the probing / SCR / TPP
//! formulas; [`mean_std`] for their aggregates. The pipeline's bench stage
//! feeds them.

pub mod absorption;
pub mod core_eval;
pub mod logit_stats;
pub mod probing;
pub mod splice;

/// Mean and sample standard deviation (`ddof = 1`, Bessel's correction), the
/// convention of SAEBench's aggregates (`statistics.stdev` in its absorption
/// eval; pandas' and torch's `std` default alike).
///
/// - n = 0: `(NaN, NaN)`.
/// - n = 1: `(x, NaN)`: a sample of one has no spread to estimate
///   (`statistics.stdev` raises, pandas and torch give NaN).
/// - n >= 2: `(sum x / n, sqrt(sum (x - mean)^2 / (n - 1)))`.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}
