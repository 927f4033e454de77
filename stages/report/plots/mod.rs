//! The report's PNG plots (plotters' bitmap backend; text through ab_glyph
//! with a TrueType font read at run time, so no fontconfig or freetype).

mod absorption;
mod histogram;
mod quality;
mod sweep;
mod training;

use super::{Group, ReportConfig, ReportData};
use anyhow::{anyhow, bail, Context, Result};
use coact::sae::Architecture;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One PNG written beside the page.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name in the output folder.
    pub file: String,
    pub title: String,
    /// What it shows, in a sentence or two.
    pub caption: String,
}

pub(super) const FONT: &str = "sans-serif";

static FONT_LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Registers the TTF at `path` as plotters' sans-serif font (once per path).
pub fn use_font(path: &Path) -> Result<()> {
    let mut loaded = FONT_LOADED
        .lock()
        .map_err(|_| anyhow!("font lock poisoned"))?;
    if loaded.as_deref() == Some(path) {
        return Ok(());
    }
    if !path.is_file() {
        bail!(
            "report.font = {}: font file not found; the plots need a TrueType font: \
             install Debian's fonts-dejavu-core (`make setup` does, through stages/setup.sh) \
             or set report.font to a .ttf file",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("reading report.font = {}", path.display()))?;
    // plotters keeps fonts for the life of the process; one leak per font path.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font(FONT, style, bytes).map_err(|_| {
            anyhow!(
                "report.font = {}: not a TrueType/OpenType font plotters can read",
                path.display()
            )
        })?;
    }
    *loaded = Some(path.to_path_buf());
    Ok(())
}

pub(super) fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

// ---------------------------------------------------------------- colours

pub(super) const GUIDED_PALETTE: &[(u8, u8, u8)] = &[
    (31, 119, 180),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (0, 0, 128),
    (128, 0, 0),
    (0, 128, 128),
    (127, 127, 127),
];
pub(super) const BASELINE: RGBColor = RGBColor(40, 40, 40);
pub(super) const UNIFORM: RGBColor = RGBColor(255, 127, 14);
/// OrtSAE, the other orthogonal SAE: a violet red no guided group gets.
pub(super) const ORTSAE: RGBColor = RGBColor(199, 21, 133);
pub(super) const OTHER: RGBColor = RGBColor(140, 86, 75);
pub(super) const SWEEP: RGBColor = RGBColor(31, 119, 180);
pub(super) const GRID: RGBColor = RGBColor(225, 225, 225);

/// A colour per seed group (by group key): the TopK baseline dark grey,
/// other kinds brown, uniform orange, guided groups from a palette.
pub fn group_colors(data: &ReportData) -> BTreeMap<String, (u8, u8, u8)> {
    let mut out = BTreeMap::new();
    // The guided setting of the verdicts is blue, as in the sweep plots.
    let main = data.verdict_groups().guided.map(|g| g.key);
    if let Some(k) = &main {
        out.insert(k.clone(), GUIDED_PALETTE[0]);
    }
    let mut next = 1usize;
    let mut seen_class: BTreeMap<&str, usize> = BTreeMap::new();
    for g in data.groups() {
        let v = &data.variants[g.members[0]];
        let class = match (v.ortho.as_str(), v.kind) {
            ("none", Architecture::TopK) => "baseline",
            ("none", _) => "other",
            ("uniform", _) => "uniform",
            ("ortsae", _) => "ortsae",
            _ => "guided",
        };
        if main.as_ref() == Some(&g.key) {
            continue;
        }
        let n = seen_class.entry(class).or_default();
        let first = *n == 0;
        *n += 1;
        let c = match class {
            "baseline" if first => (BASELINE.0, BASELINE.1, BASELINE.2),
            "other" if first => (OTHER.0, OTHER.1, OTHER.2),
            "uniform" if first => (UNIFORM.0, UNIFORM.1, UNIFORM.2),
            "ortsae" if first => (ORTSAE.0, ORTSAE.1, ORTSAE.2),
            _ => {
                let c = GUIDED_PALETTE[next % GUIDED_PALETTE.len()];
                next += 1;
                c
            }
        };
        out.insert(g.key.clone(), c);
    }
    out
}

pub(super) fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

// ---------------------------------------------------------------- all plots

/// Draws every plot the data allows; returns them in page order.
pub fn draw_all(data: &ReportData, cfg: &ReportConfig, out: &Path) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    for axis in [sweep::Axis::Tau, sweep::Axis::Lambda] {
        if let Some(p) = sweep::sweep_plot(data, out, axis)? {
            plots.push(p);
        }
    }
    if let Some(p) = quality::l0_plot(data, out)? {
        plots.push(p);
    }
    if let Some(p) = absorption::absorption_plot(data, out)? {
        plots.push(p);
    }
    if let Some(p) = histogram::histogram_plot(data, cfg, out)? {
        plots.push(p);
    }
    if let Some(p) = training::training_plot(data, out)? {
        plots.push(p);
    }
    Ok(plots)
}

/// Widens a range that is empty or a point, and pads it by 8%.
pub(super) fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if (hi - lo).abs() < 1e-12 {
        let d = if lo.abs() > 1e-9 {
            lo.abs() * 0.05
        } else {
            0.05
        };
        (lo - d, hi + d)
    } else {
        (lo, hi)
    };
    let pad = (hi - lo) * 0.08;
    (lo - pad, hi + pad)
}

pub(super) fn legend(
    area: &DrawingArea<BitMapBackend, Shift>,
    items: &[(RGBColor, String, LegendMark)],
) -> Result<()> {
    let style = (FONT, 15).into_font().color(&BLACK);
    for (n, (c, label, mark)) in items.iter().enumerate() {
        let y = 10 + n as i32 * 22;
        match mark {
            LegendMark::Line => {
                area.draw(&PathElement::new(
                    vec![(4, y + 8), (26, y + 8)],
                    c.stroke_width(2),
                ))
                .map_err(perr)?;
            }
            LegendMark::Dashed => {
                for x in [4, 13, 22] {
                    area.draw(&PathElement::new(
                        vec![(x, y + 8), (x + 5, y + 8)],
                        c.stroke_width(2),
                    ))
                    .map_err(perr)?;
                }
            }
            LegendMark::Band => {
                area.draw(&Rectangle::new(
                    [(4, y + 2), (26, y + 14)],
                    c.mix(0.18).filled(),
                ))
                .map_err(perr)?;
                area.draw(&PathElement::new(
                    vec![(4, y + 8), (26, y + 8)],
                    c.stroke_width(2),
                ))
                .map_err(perr)?;
            }
            LegendMark::Dot => {
                area.draw(&Circle::new((15, y + 8), 4, c.filled()))
                    .map_err(perr)?;
            }
        }
        area.draw(&Text::new(label.clone(), (34, y), style.clone()))
            .map_err(perr)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(super) enum LegendMark {
    Line,
    Dashed,
    Band,
    Dot,
}

pub(super) fn group_legend(
    data: &ReportData,
    groups: &[Group],
) -> Vec<(RGBColor, String, LegendMark)> {
    let colors = group_colors(data);
    groups
        .iter()
        .map(|g| {
            let seeds = if g.members.len() > 1 {
                format!(" ({} seeds)", g.members.len())
            } else {
                String::new()
            };
            (
                rgb(colors[&g.key]),
                format!("{}{seeds}", g.label),
                LegendMark::Dot,
            )
        })
        .collect()
}

pub(super) fn grid_shape(n: usize, cols: usize) -> (usize, usize) {
    let cols = cols.min(n).max(1);
    (n.div_ceil(cols), cols)
}

/// A tick formatter for an axis over lo..hi with about `n` labels: as many
/// decimals as the tick step needs, so that neighbouring labels differ.
pub(super) fn tick_fmt(lo: f64, hi: f64, n: usize) -> impl Fn(&f64) -> String {
    let step = ((hi - lo).abs() / n.max(1) as f64).max(1e-12);
    let decimals = (-step.log10()).ceil().clamp(0.0, 8.0) as usize;
    move |v: &f64| {
        if v.abs() < step * 1e-6 {
            "0".to_string()
        } else {
            format!("{:.*}", decimals, v)
        }
    }
}

pub(super) fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{:.0}", v)
    } else if a >= 10.0 {
        format!("{:.1}", v)
    } else if a >= 0.1 {
        format!("{:.2}", v)
    } else if a >= 0.001 {
        format!("{:.3}", v)
    } else {
        format!("{:.1e}", v)
    }
}
