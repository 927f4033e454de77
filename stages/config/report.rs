//! report: what the report shows and the font its plots use.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Latents per variant on the feature dashboards, taken in the order the
    /// compete stage chose them (the most-competing first, then random ones).
    #[serde(default = "default_dashboard_latents")]
    pub dashboard_latents: usize,
    /// Top-activating contexts shown per dashboard latent.
    #[serde(default = "default_dashboard_contexts")]
    pub dashboard_contexts: usize,
    /// Strongest competitors (by c_ij) listed per dashboard latent.
    #[serde(default = "default_dashboard_competitors")]
    pub dashboard_competitors: usize,
    /// Top competing pairs shown per variant, each with an example context
    /// where both fire (from compete_examples).
    #[serde(default = "default_dashboard_pairs")]
    pub dashboard_pairs: usize,
    /// Competition threshold of the decoder-cosine histograms and of the
    /// competition table: pairs with c_ij >= this count as competing.
    #[serde(default = "default_histogram_tau")]
    pub histogram_tau: f64,
    /// Bins of the decoder-cosine histograms, over the range the cosines
    /// span (0.1st to 99.9th percentile, shared by every panel).
    #[serde(default = "default_histogram_bins")]
    pub histogram_bins: usize,
    /// TrueType font for the plots' text (Debian: fonts-dejavu-core;
    /// `make setup` installs it). Relative paths are from pipeline.yaml's folder.
    #[serde(default = "default_font")]
    pub font: PathBuf,
}

fn default_dashboard_latents() -> usize {
    4
}
fn default_dashboard_contexts() -> usize {
    5
}
fn default_dashboard_competitors() -> usize {
    5
}
fn default_dashboard_pairs() -> usize {
    3
}
fn default_histogram_tau() -> f64 {
    0.1
}
fn default_histogram_bins() -> usize {
    40
}
pub fn default_font() -> PathBuf {
    PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            dashboard_latents: default_dashboard_latents(),
            dashboard_contexts: default_dashboard_contexts(),
            dashboard_competitors: default_dashboard_competitors(),
            dashboard_pairs: default_dashboard_pairs(),
            histogram_tau: default_histogram_tau(),
            histogram_bins: default_histogram_bins(),
            font: default_font(),
        }
    }
}

impl ReportConfig {
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("dashboard_latents", self.dashboard_latents),
            ("dashboard_competitors", self.dashboard_competitors),
            ("dashboard_pairs", self.dashboard_pairs),
        ] {
            if v > 50 {
                bail!("report.{key} = {v}: expected at most 50 (0 to leave them out)");
            }
        }
        if !(1..=50).contains(&self.dashboard_contexts) {
            bail!(
                "report.dashboard_contexts = {}: expected 1 to 50 contexts per latent",
                self.dashboard_contexts
            );
        }
        if !(self.histogram_tau.is_finite() && (0.0..=1.0).contains(&self.histogram_tau)) {
            bail!(
                "report.histogram_tau = {}: expected a competition threshold in [0, 1]",
                self.histogram_tau
            );
        }
        if !(2..=200).contains(&self.histogram_bins) {
            bail!(
                "report.histogram_bins = {}: expected 2 to 200 bins",
                self.histogram_bins
            );
        }
        if self.font.as_os_str().is_empty() {
            bail!("report.font is empty: expected the path of a TrueType font file");
        }
        Ok(())
    }
}
