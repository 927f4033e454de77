//! The report's PNG plots (plotters' bitmap backend; text through ab_glyph
//! with a TrueType font read at run time, so no fontconfig or freetype).

use super::{Better, Group, ReportConfig, ReportData, Spread, VariantInfo};
use anyhow::{anyhow, bail, Context, Result};
use coact::sae::Architecture;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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

const FONT: &str = "sans-serif";

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

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

// ---------------------------------------------------------------- colours

const GUIDED_PALETTE: &[(u8, u8, u8)] = &[
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
const BASELINE: RGBColor = RGBColor(40, 40, 40);
const UNIFORM: RGBColor = RGBColor(255, 127, 14);
const OTHER: RGBColor = RGBColor(140, 86, 75);
const SWEEP: RGBColor = RGBColor(31, 119, 180);
const GRID: RGBColor = RGBColor(225, 225, 225);

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

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

// ---------------------------------------------------------------- all plots

/// Draws every plot the data allows; returns them in page order.
pub fn draw_all(data: &ReportData, cfg: &ReportConfig, out: &Path) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    for axis in [Axis::Tau, Axis::Lambda] {
        if let Some(p) = sweep_plot(data, out, axis)? {
            plots.push(p);
        }
    }
    if let Some(p) = l0_plot(data, out)? {
        plots.push(p);
    }
    if let Some(p) = absorption_plot(data, out)? {
        plots.push(p);
    }
    if let Some(p) = histogram_plot(data, cfg, out)? {
        plots.push(p);
    }
    if let Some(p) = training_plot(data, out)? {
        plots.push(p);
    }
    Ok(plots)
}

/// Widens a range that is empty or a point, and pads it by 8%.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
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

fn legend(
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
enum LegendMark {
    Line,
    Dashed,
    Band,
    Dot,
}

fn group_legend(data: &ReportData, groups: &[Group]) -> Vec<(RGBColor, String, LegendMark)> {
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

fn grid_shape(n: usize, cols: usize) -> (usize, usize) {
    let cols = cols.min(n).max(1);
    (n.div_ceil(cols), cols)
}

/// A tick formatter for an axis over lo..hi with about `n` labels: as many
/// decimals as the tick step needs, so that neighbouring labels differ.
fn tick_fmt(lo: f64, hi: f64, n: usize) -> impl Fn(&f64) -> String {
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

fn fmt_tick(v: f64) -> String {
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

// ---------------------------------------------------------------- metric sweeps

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Tau,
    Lambda,
}

/// Each metric against tau (guided, lambda fixed) or against lambda (guided,
/// tau fixed), with the TopK baseline and uniform as references.
fn sweep_plot(data: &ReportData, out: &Path, axis: Axis) -> Result<Option<Plot>> {
    let vg = data.verdict_groups();
    let Some(guided) = vg.guided.as_ref() else {
        return Ok(None);
    };
    let g0 = data.variants[guided.members[0]].clone();
    let same = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let sweep: Vec<&VariantInfo> = data
        .variants
        .iter()
        .filter(|v| v.ortho == "guided" && v.kind == g0.kind && v.k == g0.k && v.d_sae == g0.d_sae)
        .filter(|v| match axis {
            Axis::Tau => same(v.lambda, g0.lambda),
            Axis::Lambda => same(v.tau, g0.tau) && v.lambda > 0.0,
        })
        .collect();
    let x_of = |v: &VariantInfo| match axis {
        Axis::Tau => v.tau,
        Axis::Lambda => v.lambda.log10(),
    };
    let mut xs: Vec<f64> = sweep.iter().map(|v| x_of(v)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup_by(|a, b| same(*a, *b));
    if xs.len() < 2 {
        return Ok(None);
    }
    let metrics: Vec<_> = data
        .metrics
        .iter()
        .filter(|m| sweep.iter().any(|v| data.value(&v.name, m.key).is_some()))
        .collect();
    if metrics.is_empty() {
        return Ok(None);
    }
    let (file, title, x_desc, fixed) = match axis {
        Axis::Tau => (
            "metrics_vs_tau.png",
            format!(
                "Each metric against the competition threshold tau (guided, lambda {}, k {})",
                super::num(g0.lambda),
                g0.k
            ),
            "tau",
            format!("lambda {}", super::num(g0.lambda)),
        ),
        Axis::Lambda => (
            "metrics_vs_lambda.png",
            format!(
                "Each metric against lambda (guided, tau {}, k {}; log axis)",
                super::num(g0.tau),
                g0.k
            ),
            "lambda (log scale)",
            format!("tau {}", super::num(g0.tau)),
        ),
    };
    let (rows, cols) = grid_shape(metrics.len(), 4);
    let (pw, ph) = (330u32, 260u32);
    let (w, h) = (pw * cols as u32, ph * rows as u32 + 100);
    let path = out.join(file);
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled(&title, (FONT, 22)).map_err(perr)?;
        let (leg, body) = root.split_vertically(60);
        let leg_items = [
            (
                SWEEP,
                format!(
                    "guided, {fixed}: one dot per seed, line through the means, bar = seed range"
                ),
                LegendMark::Dot,
            ),
            (
                BASELINE,
                "TopK baseline: mean, band = seed range".to_string(),
                LegendMark::Band,
            ),
            (
                UNIFORM,
                "uniform orthogonality: mean, band = seed range".to_string(),
                LegendMark::Dashed,
            ),
        ];
        let (l1, l2) = leg.split_horizontally(w / 2);
        legend(&l1, &leg_items[..1])?;
        legend(&l2, &leg_items[1..])?;
        let panels = body.split_evenly((rows, cols));
        let (xlo, xhi) = padded(xs[0], xs[xs.len() - 1]);
        for (panel, m) in panels.iter().zip(&metrics) {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for v in &sweep {
                if let Some(y) = data.value(&v.name, m.key) {
                    pts.push((x_of(v), y));
                }
            }
            let base = vg.baseline.as_ref().and_then(|g| data.spread(g, m.key));
            let uni = vg.uniform.as_ref().and_then(|g| data.spread(g, m.key));
            let mut lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let mut hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            for s in [base, uni].into_iter().flatten() {
                lo = lo.min(s.min);
                hi = hi.max(s.max);
            }
            let (ylo, yhi) = padded(lo, hi);
            let arrow = match m.better {
                Better::Higher => " (higher better)",
                Better::Lower => " (lower better)",
                Better::Neither => "",
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{}{arrow}", m.label), (FONT, 16))
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(58)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(perr)?;
            let tau_fmt = tick_fmt(xlo, xhi, 5);
            let xfmt = |x: &f64| match axis {
                Axis::Tau => tau_fmt(x),
                // Lambda gets its ticks at the swept values, drawn below.
                Axis::Lambda => String::new(),
            };
            let yfmt = tick_fmt(ylo, yhi, 5);
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .x_labels(if axis == Axis::Tau { 5 } else { 0 })
                .y_labels(5)
                .x_label_formatter(&xfmt)
                .y_label_formatter(&yfmt)
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()
                .map_err(perr)?;
            if axis == Axis::Lambda {
                // Grid lines and labels at the swept lambdas (a log axis).
                let (bx, by) = panel.get_base_pixel();
                let style = (FONT, 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top));
                for &x in &xs {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, ylo), (x, yhi)],
                            GRID,
                        )))
                        .map_err(perr)?;
                    let (px, py) = chart.backend_coord(&(x, ylo));
                    let (px, py) = (px - bx, py - by);
                    panel
                        .draw(&PathElement::new(vec![(px, py), (px, py + 4)], BLACK))
                        .map_err(perr)?;
                    panel
                        .draw(&Text::new(
                            super::num(10f64.powf(x)),
                            (px, py + 6),
                            style.clone(),
                        ))
                        .map_err(perr)?;
                }
            }
            if let Some(s) = base {
                band(&mut chart, xlo, xhi, s, BASELINE, false)?;
            }
            if let Some(s) = uni {
                band(&mut chart, xlo, xhi, s, UNIFORM, true)?;
            }
            // Per x: seed range bar, dots, and the line through the means.
            let mut means = Vec::new();
            for &x in &xs {
                let ys: Vec<f64> = pts.iter().filter(|p| same(p.0, x)).map(|p| p.1).collect();
                if ys.is_empty() {
                    continue;
                }
                let mn = ys.iter().sum::<f64>() / ys.len() as f64;
                means.push((x, mn));
                if ys.len() > 1 {
                    let (a, b) = (
                        ys.iter().cloned().fold(f64::INFINITY, f64::min),
                        ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                    );
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, a), (x, b)],
                            SWEEP.stroke_width(2),
                        )))
                        .map_err(perr)?;
                }
            }
            chart
                .draw_series(LineSeries::new(means, SWEEP.stroke_width(2)))
                .map_err(perr)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, SWEEP.filled())))
                .map_err(perr)?;
        }
        root.present().map_err(perr)?;
    }
    let caption = match axis {
        Axis::Tau => format!(
            "Guided variants at {fixed} and k {}, against tau. The dark band is the TopK baseline's seed range (line: its mean), the orange one uniform orthogonality's.",
            g0.k
        ),
        Axis::Lambda => format!(
            "Guided variants at {fixed} and k {}, against lambda on a log axis, with the same references.",
            g0.k
        ),
    };
    Ok(Some(Plot {
        file: file.into(),
        title,
        caption,
    }))
}

fn band<DB: DrawingBackend>(
    chart: &mut ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x0: f64,
    x1: f64,
    s: Spread,
    color: RGBColor,
    dashed: bool,
) -> Result<()> {
    if s.n > 1 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, s.min), (x1, s.max)],
                color.mix(0.15).filled(),
            )))
            .map_err(perr)?;
    }
    if dashed {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, s.mean), (x1, s.mean)],
                8,
                6,
                color.stroke_width(2),
            ))
            .map_err(perr)?;
    } else {
        chart
            .draw_series(LineSeries::new(
                vec![(x0, s.mean), (x1, s.mean)],
                color.stroke_width(2),
            ))
            .map_err(perr)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- L0 vs quality

fn l0_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
    let groups = data.groups();
    let colors = group_colors(data);
    let ys = [
        ("explained_variance", "explained variance (about the mean)"),
        ("ce_loss_score", "CE loss score"),
    ];
    let have = |m: &str| {
        data.variants
            .iter()
            .any(|v| data.value(&v.name, "l0").is_some() && data.value(&v.name, m).is_some())
    };
    if !ys.iter().any(|(m, _)| have(m)) {
        return Ok(None);
    }
    let file = "l0_vs_quality.png";
    let path = out.join(file);
    let (w, h) = (1300u32, 520u32);
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root
            .titled("Sparsity against reconstruction, every variant", (FONT, 22))
            .map_err(perr)?;
        let (plots, leg) = root.split_horizontally(w - 300);
        let panels = plots.split_evenly((1, 2));
        for (panel, (m, desc)) in panels.iter().zip(ys) {
            let pts: Vec<(f64, f64, RGBColor)> = groups
                .iter()
                .flat_map(|g| {
                    let c = rgb(colors[&g.key]);
                    g.members.iter().filter_map(move |&i| {
                        let n = &data.variants[i].name;
                        Some((data.value(n, "l0")?, data.value(n, m)?, c))
                    })
                })
                .collect();
            if pts.is_empty() {
                panel
                    .draw(&Text::new(
                        format!("{desc}: not measured"),
                        (20, 40),
                        (FONT, 16),
                    ))
                    .map_err(perr)?;
                continue;
            }
            let (xlo, xhi) = padded(
                pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
                pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
            );
            let (ylo, yhi) = padded(
                pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
                pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
            );
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("L0 against {desc}"), (FONT, 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(perr)?;
            let fx = tick_fmt(xlo, xhi, 8);
            let fy = tick_fmt(ylo, yhi, 8);
            chart
                .configure_mesh()
                .x_desc("L0 (active latents per token)")
                .y_desc(desc)
                .x_label_formatter(&fx)
                .y_label_formatter(&fy)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()
                .map_err(perr)?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y, c)| Circle::new((x, y), 6, c.filled())),
                )
                .map_err(perr)?;
        }
        legend(&leg.margin(50, 0, 10, 0), &group_legend(data, &groups))?;
        root.present().map_err(perr)?;
    }
    Ok(Some(Plot {
        file: file.into(),
        title: "L0 against explained variance and CE score".into(),
        caption: "Every variant, one dot each (seeds of a setting share a colour). Up and to the left is better: more reconstruction for fewer active latents.".into(),
    }))
}

// ---------------------------------------------------------------- absorption heatmap

fn absorption_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
    let order: Vec<&VariantInfo> = data
        .ordered()
        .into_iter()
        .map(|i| &data.variants[i])
        .filter(|v| data.absorption_letters.contains_key(&v.name))
        .collect();
    if order.is_empty() {
        return Ok(None);
    }
    let mut letters: Vec<String> = order
        .iter()
        .flat_map(|v| data.absorption_letters[&v.name].keys().cloned())
        .collect();
    letters.sort();
    letters.dedup();
    let vmax = order
        .iter()
        .flat_map(|v| data.absorption_letters[&v.name].values().copied())
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let cell_w = 34i32;
    let cell_h = 24i32;
    let left = 190i32;
    let top = 70i32;
    let w = (left + cell_w * letters.len() as i32 + 150).max(700) as u32;
    let h = (top + cell_h * order.len() as i32 + 16).max(top + 16 * 10 + 40) as u32;
    let file = "absorption_letters.png";
    let path = out.join(file);
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        root.draw(&Text::new(
            "Absorption fraction per first letter and variant (lower is better)",
            (12, 10),
            (FONT, 20),
        ))
        .map_err(perr)?;
        let label = (FONT, 14).into_font().color(&BLACK);
        for (c, l) in letters.iter().enumerate() {
            root.draw(&Text::new(
                l.clone(),
                (left + c as i32 * cell_w + cell_w / 2 - 4, top - 22),
                label.clone(),
            ))
            .map_err(perr)?;
        }
        let heat = |x: f64| {
            let t = (x / vmax).clamp(0.0, 1.0);
            RGBColor(
                255,
                (255.0 * (1.0 - 0.85 * t)) as u8,
                (255.0 * (1.0 - 0.95 * t)) as u8,
            )
        };
        for (r, v) in order.iter().enumerate() {
            let y = top + r as i32 * cell_h;
            root.draw(&Text::new(v.name.clone(), (10, y + 4), label.clone()))
                .map_err(perr)?;
            let row = &data.absorption_letters[&v.name];
            for (c, l) in letters.iter().enumerate() {
                let x = left + c as i32 * cell_w;
                let value = row.get(l).copied().filter(|v| v.is_finite());
                let fill = value.map_or(RGBColor(200, 200, 200), heat);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w - 1, y + cell_h - 1)],
                    fill.filled(),
                ))
                .map_err(perr)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w - 1, y + cell_h - 1)],
                    RGBColor(225, 225, 225),
                ))
                .map_err(perr)?;
                // Values that matter are printed (two decimals, ".12").
                if let Some(v) = value.filter(|v| *v >= 0.005) {
                    let text = format!("{v:.2}");
                    let text = text.trim_start_matches('0').to_string();
                    let color = if v / vmax > 0.55 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        text,
                        (x + cell_w / 2, y + cell_h / 2),
                        (FONT, 11)
                            .into_font()
                            .color(&color)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    ))
                    .map_err(perr)?;
                }
            }
        }
        // Colour bar.
        let bx = left + cell_w * letters.len() as i32 + 30;
        let steps = 10;
        for s in 0..steps {
            let t0 = s as f64 / steps as f64;
            let y = top + (steps - 1 - s) * 16;
            root.draw(&Rectangle::new(
                [(bx, y), (bx + 20, y + 15)],
                heat(t0 * vmax + vmax / steps as f64 / 2.0).filled(),
            ))
            .map_err(perr)?;
        }
        root.draw(&Text::new(
            format!("{:.3}", vmax),
            (bx + 26, top - 4),
            label.clone(),
        ))
        .map_err(perr)?;
        root.draw(&Text::new(
            "0",
            (bx + 26, top + (steps - 1) * 16),
            label.clone(),
        ))
        .map_err(perr)?;
        root.draw(&Rectangle::new(
            [
                (bx, top + steps * 16 + 12),
                (bx + 20, top + steps * 16 + 27),
            ],
            RGBColor(200, 200, 200).filled(),
        ))
        .map_err(perr)?;
        root.draw(&Text::new(
            "no data",
            (bx + 26, top + steps * 16 + 12),
            label.clone(),
        ))
        .map_err(perr)?;
        root.present().map_err(perr)?;
    }
    Ok(Some(Plot {
        file: file.into(),
        title: "Absorption per letter".into(),
        caption: format!("Absorption fraction per first letter (columns) and variant (rows); white is 0, dark red {:.3}; grey: the letter was left out for that variant. Values of 0.005 and above are printed in the cell.", vmax),
    }))
}

// ---------------------------------------------------------------- decoder-cosine histograms

fn histogram_plot(data: &ReportData, cfg: &ReportConfig, out: &Path) -> Result<Option<Plot>> {
    let colors = group_colors(data);
    let groups = data.groups();
    let color_of = |name: &str| {
        groups
            .iter()
            .find(|g| g.members.iter().any(|&i| data.variants[i].name == name))
            .map(|g| rgb(colors[&g.key]))
            .unwrap_or(SWEEP)
    };
    let order: Vec<&VariantInfo> = data
        .ordered()
        .into_iter()
        .map(|i| &data.variants[i])
        .filter(|v| data.competing_cos.contains_key(&v.name))
        .collect();
    if order.is_empty() {
        return Ok(None);
    }
    // One x range for all panels: the 0.1st to 99.9th percentile of every
    // variant's cosines (the end bins take the tails), widened to include 0.
    let bins = cfg.histogram_bins;
    let mut all: Vec<f64> = order
        .iter()
        .flat_map(|v| data.competing_cos[&v.name].iter().copied())
        .filter(|c| c.is_finite())
        .collect();
    all.sort_by(f64::total_cmp);
    let (xlo, xhi) = if all.is_empty() {
        (-1.0, 1.0)
    } else {
        let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
        let (a, b) = (q(0.001).min(0.0), q(0.999).max(0.0));
        let pad = ((b - a) * 0.02).max(0.01);
        ((a - pad).max(-1.0), (b + pad).min(1.0))
    };
    let width = (xhi - xlo) / bins as f64;
    let hists: Vec<(Vec<f64>, usize, f64)> = order
        .iter()
        .map(|v| {
            let cos = &data.competing_cos[&v.name];
            let mut h = vec![0.0; bins];
            for &c in cos.iter().filter(|c| c.is_finite()) {
                let b = (((c.clamp(xlo, xhi) - xlo) / width) as usize).min(bins - 1);
                h[b] += 1.0;
            }
            let n = cos.len();
            if n > 0 {
                h.iter_mut().for_each(|x| *x /= n as f64);
            }
            let mean_abs = if n > 0 {
                cos.iter().map(|c| c.abs()).sum::<f64>() / n as f64
            } else {
                f64::NAN
            };
            (h, n, mean_abs)
        })
        .collect();
    let ymax = hists
        .iter()
        .flat_map(|h| h.0.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let (rows, cols) = grid_shape(order.len(), 4);
    let (pw, ph) = (320u32, 230u32);
    let (w, h) = (pw * cols as u32, ph * rows as u32 + 50);
    let file = "dec_cos_competing.png";
    let path = out.join(file);
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root
            .titled(
                &format!(
                    "Decoder cosine of competing pairs (c_ij >= {}), share of pairs per bin",
                    super::num(cfg.histogram_tau)
                ),
                (FONT, 20),
            )
            .map_err(perr)?;
        let panels = root.split_evenly((rows, cols));
        for ((panel, v), (hist, n, mean_abs)) in panels.iter().zip(&order).zip(&hists) {
            let color = color_of(&v.name);
            let caption = if *n > 0 {
                format!("{} ({} pairs, mean |cos| {:.3})", v.name, n, mean_abs)
            } else {
                format!("{} (no competing pairs)", v.name)
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, (FONT, 13))
                .margin(6)
                .x_label_area_size(30)
                .y_label_area_size(46)
                .build_cartesian_2d(xlo..xhi, 0.0..ymax)
                .map_err(perr)?;
            let fx = tick_fmt(xlo, xhi, 5);
            let fy = tick_fmt(0.0, ymax, 4);
            chart
                .configure_mesh()
                .x_desc("decoder cosine")
                .x_labels(5)
                .y_labels(4)
                .x_label_formatter(&fx)
                .y_label_formatter(&fy)
                .label_style((FONT, 11))
                .axis_desc_style((FONT, 12))
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()
                .map_err(perr)?;
            chart
                .draw_series(
                    hist.iter()
                        .enumerate()
                        .filter(|(_, y)| **y > 0.0)
                        .map(|(b, &y)| {
                            let x0 = xlo + b as f64 * width;
                            Rectangle::new([(x0, 0.0), (x0 + width, y)], color.mix(0.8).filled())
                        }),
                )
                .map_err(perr)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, 0.0), (0.0, ymax)],
                    BLACK.mix(0.4).stroke_width(1),
                )))
                .map_err(perr)?;
        }
        root.present().map_err(perr)?;
    }
    Ok(Some(Plot {
        file: file.into(),
        title: "Decoder cosines of competing pairs".into(),
        caption: format!(
            "Per variant, the decoder cosine of every pair that co-fires with c_ij >= {} on the eval tokens: the share of its pairs per bin ({} bins of width {:.3} from {:.3} to {:.3}; the end bins also hold the 0.1% tails). All panels share both axes. Guided orthogonality should move mass toward 0.",
            super::num(cfg.histogram_tau),
            bins,
            width,
            xlo,
            xhi
        ),
    }))
}

// ---------------------------------------------------------------- training curves

/// Steps in the rolling mean of the plotted MSE (per-batch MSE is noisy).
const SMOOTH: usize = 5;

/// (tokens, MSE averaged over a centred window of SMOOTH steps).
fn smooth(cv: &[super::CurvePoint]) -> Vec<(f64, f64)> {
    let pts: Vec<&super::CurvePoint> = cv.iter().filter(|p| p.mse.is_finite()).collect();
    let half = SMOOTH / 2;
    (0..pts.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(pts.len()));
            let m = pts[a..b].iter().map(|p| p.mse).sum::<f64>() / (b - a) as f64;
            (pts[i].tokens, m)
        })
        .collect()
}

/// Tick values for a log axis over lo..hi: 1-2-5 per decade, or every digit
/// when that gives fewer than 4.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let ticks = |mults: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        let mut e = lo.log10().floor() as i32;
        while 10f64.powi(e) <= hi {
            for m in mults {
                let v = m * 10f64.powi(e);
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
            e += 1;
        }
        out
    };
    let t = ticks(&[1.0, 2.0, 5.0]);
    if t.len() >= 4 {
        t
    } else {
        ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

fn training_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
    let groups = data.groups();
    let colors = group_colors(data);
    let curves: Vec<(RGBColor, &Vec<super::CurvePoint>)> = groups
        .iter()
        .flat_map(|g| {
            let c = rgb(colors[&g.key]);
            g.members.iter().filter_map(move |&i| {
                data.train_curves
                    .get(&data.variants[i].name)
                    .map(|cv| (c, cv))
            })
        })
        .filter(|(_, cv)| !cv.is_empty())
        .collect();
    if curves.is_empty() {
        return Ok(None);
    }
    let pts = || curves.iter().flat_map(|(_, cv)| cv.iter());
    let tmax = pts().map(|p| p.tokens).fold(0.0f64, f64::max).max(1.0);
    let mses: Vec<f64> = pts()
        .map(|p| p.mse)
        .filter(|m| m.is_finite() && *m > 0.0)
        .collect();
    if mses.is_empty() {
        return Ok(None);
    }
    let smoothed: Vec<f64> = curves
        .iter()
        .flat_map(|(_, cv)| smooth(cv))
        .map(|p| p.1)
        .filter(|m| m.is_finite() && *m > 0.0)
        .collect();
    let mses = if smoothed.is_empty() { mses } else { smoothed };
    let mlo = mses.iter().cloned().fold(f64::INFINITY, f64::min) * 0.9;
    let mhi = mses.iter().cloned().fold(f64::NEG_INFINITY, f64::max) * 1.1;
    let dmax = pts()
        .map(|p| p.dead_fraction)
        .filter(|d| d.is_finite())
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.1;
    let file = "training_curves.png";
    let path = out.join(file);
    let (w, h) = (1300u32, 520u32);
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled("Training curves", (FONT, 22)).map_err(perr)?;
        let (plots, leg) = root.split_horizontally(w - 300);
        let panels = plots.split_evenly((1, 2));
        let tok = |x: &f64| {
            if tmax >= 1e6 {
                format!("{:.1}M", x / 1e6)
            } else if tmax >= 1e3 {
                format!("{:.0}k", x / 1e3)
            } else {
                format!("{x:.0}")
            }
        };
        {
            // log10(MSE) on a linear axis, labelled at 1-2-5 values (plotters'
            // own log axis labels only powers of ten above the range's start).
            let (ylo, yhi) = (mlo.log10(), mhi.log10());
            let mut chart = ChartBuilder::on(&panels[0])
                .caption(
                    format!("Reconstruction MSE (scaled activations, log axis; rolling mean of {SMOOTH} steps)"),
                    (FONT, 15),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..tmax, ylo..yhi)
                .map_err(perr)?;
            chart
                .configure_mesh()
                .x_desc("training tokens")
                .y_desc("MSE")
                .x_labels(6)
                .y_labels(0)
                .disable_y_mesh()
                .x_label_formatter(&tok)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()
                .map_err(perr)?;
            let (bx, by) = panels[0].get_base_pixel();
            let style = (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center));
            for t in log_ticks(mlo, mhi) {
                let y = t.log10();
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(0.0, y), (tmax, y)],
                        GRID,
                    )))
                    .map_err(perr)?;
                let (px, py) = chart.backend_coord(&(0.0, y));
                let (px, py) = (px - bx, py - by);
                panels[0]
                    .draw(&PathElement::new(vec![(px - 4, py), (px, py)], BLACK))
                    .map_err(perr)?;
                panels[0]
                    .draw(&Text::new(fmt_tick(t), (px - 6, py), style.clone()))
                    .map_err(perr)?;
            }
            for (c, cv) in &curves {
                chart
                    .draw_series(LineSeries::new(
                        smooth(cv)
                            .into_iter()
                            .filter(|p| p.1 > 0.0)
                            .map(|(t, m)| (t, m.log10())),
                        c.mix(0.85).stroke_width(2),
                    ))
                    .map_err(perr)?;
            }
        }
        {
            let mut chart = ChartBuilder::on(&panels[1])
                .caption("Dead latents (fraction)", (FONT, 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..tmax, 0.0..dmax)
                .map_err(perr)?;
            let f = tick_fmt(0.0, dmax, 10);
            chart
                .configure_mesh()
                .x_desc("training tokens")
                .y_desc("dead fraction")
                .x_labels(6)
                .x_label_formatter(&tok)
                .y_label_formatter(&f)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()
                .map_err(perr)?;
            for (c, cv) in &curves {
                chart
                    .draw_series(LineSeries::new(
                        cv.iter()
                            .filter(|p| p.dead_fraction.is_finite())
                            .map(|p| (p.tokens, p.dead_fraction)),
                        c.mix(0.85).stroke_width(2),
                    ))
                    .map_err(perr)?;
            }
        }
        let items: Vec<_> = group_legend(data, &groups)
            .into_iter()
            .map(|(c, l, _)| (c, l, LegendMark::Line))
            .collect();
        legend(&leg.margin(50, 0, 10, 0), &items)?;
        root.present().map_err(perr)?;
    }
    Ok(Some(Plot {
        file: file.into(),
        title: "Training curves".into(),
        caption: "Per training step, from train_log: the reconstruction MSE on scaled activations (log axis) and the fraction of dead latents, one line per variant (seeds of a setting share a colour).".into(),
    }))
}
