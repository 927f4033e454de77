//! Each metric against tau or lambda: the guided sweep with the TopK
//! baseline and uniform orthogonality as references.

use super::*;
use crate::report::{Better, Group, Metric, Spread, VariantInfo};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Tau,
    Lambda,
}

/// The chart of one panel.
type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The guided variants of a sweep: the verdicts' guided setting's kind, k
/// and d_sae, at its lambda (tau sweep) or its tau (lambda sweep), with
/// the baseline and uniform groups as references.
struct Sweep<'a> {
    axis: Axis,
    g0: VariantInfo,
    variants: Vec<&'a VariantInfo>,
    /// The distinct x values, ascending (log10 lambda on the lambda axis).
    xs: Vec<f64>,
    baseline: Option<Group>,
    uniform: Option<Group>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

impl<'a> Sweep<'a> {
    /// The sweep along `axis`, if it has two x values or more.
    fn select(data: &'a ReportData, axis: Axis) -> Option<Sweep<'a>> {
        let vg = data.verdict_groups();
        let guided = vg.guided.as_ref()?;
        let g0 = data.variants[guided.members[0]].clone();
        let variants: Vec<&VariantInfo> = data
            .variants
            .iter()
            .filter(|v| {
                v.ortho == "guided" && v.kind == g0.kind && v.k == g0.k && v.d_sae == g0.d_sae
            })
            .filter(|v| match axis {
                Axis::Tau => same(v.lambda, g0.lambda),
                Axis::Lambda => same(v.tau, g0.tau) && v.lambda > 0.0,
            })
            .collect();
        let mut sweep = Sweep {
            axis,
            g0,
            variants,
            xs: Vec::new(),
            baseline: vg.baseline,
            uniform: vg.uniform,
        };
        let mut xs: Vec<f64> = sweep.variants.iter().map(|v| sweep.x_of(v)).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup_by(|a, b| same(*a, *b));
        sweep.xs = xs;
        (sweep.xs.len() >= 2).then_some(sweep)
    }

    fn x_of(&self, v: &VariantInfo) -> f64 {
        match self.axis {
            Axis::Tau => v.tau,
            Axis::Lambda => v.lambda.log10(),
        }
    }

    /// File, title, x-axis description and the fixed setting in words.
    fn names(&self) -> (&'static str, String, &'static str, String) {
        let g0 = &self.g0;
        match self.axis {
            Axis::Tau => (
                "metrics_vs_tau.png",
                format!(
                    "Each metric against the competition threshold tau (guided, lambda {}, k {})",
                    crate::report::num(g0.lambda),
                    g0.k
                ),
                "tau",
                format!("lambda {}", crate::report::num(g0.lambda)),
            ),
            Axis::Lambda => (
                "metrics_vs_lambda.png",
                format!(
                    "Each metric against lambda (guided, tau {}, k {}; log axis)",
                    crate::report::num(g0.tau),
                    g0.k
                ),
                "lambda (log scale)",
                format!("tau {}", crate::report::num(g0.tau)),
            ),
        }
    }
}

/// Each metric against tau (guided, lambda fixed) or against lambda (guided,
/// tau fixed), with the TopK baseline and uniform as references.
pub(super) fn sweep_plot(data: &ReportData, out: &Path, axis: Axis) -> Result<Option<Plot>> {
    let Some(sweep) = Sweep::select(data, axis) else {
        return Ok(None);
    };
    let metrics: Vec<_> = data
        .metrics
        .iter()
        .filter(|m| {
            sweep
                .variants
                .iter()
                .any(|v| data.value(&v.name, m.key).is_some())
        })
        .collect();
    if metrics.is_empty() {
        return Ok(None);
    }
    let (file, title, x_desc, fixed) = sweep.names();
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
        for (panel, m) in panels.iter().zip(&metrics) {
            metric_panel(panel, data, &sweep, m, x_desc)?;
        }
        root.present().map_err(perr)?;
    }
    let caption = match axis {
        Axis::Tau => format!(
            "Guided variants at {fixed} and k {}, against tau. The dark band is the TopK baseline's seed range (line: its mean), the orange one uniform orthogonality's.",
            sweep.g0.k
        ),
        Axis::Lambda => format!(
            "Guided variants at {fixed} and k {}, against lambda on a log axis, with the same references.",
            sweep.g0.k
        ),
    };
    Ok(Some(Plot {
        file: file.into(),
        title,
        caption,
    }))
}

/// One metric's panel: the references' bands, then the sweep's seeds.
fn metric_panel(
    panel: &DrawingArea<BitMapBackend, Shift>,
    data: &ReportData,
    sweep: &Sweep,
    m: &Metric,
    x_desc: &str,
) -> Result<()> {
    let axis = sweep.axis;
    let xs = &sweep.xs;
    let (xlo, xhi) = padded(xs[0], xs[xs.len() - 1]);
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for v in &sweep.variants {
        if let Some(y) = data.value(&v.name, m.key) {
            pts.push((sweep.x_of(v), y));
        }
    }
    let base = sweep.baseline.as_ref().and_then(|g| data.spread(g, m.key));
    let uni = sweep.uniform.as_ref().and_then(|g| data.spread(g, m.key));
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
        lambda_ticks(panel, &mut chart, xs, ylo, yhi)?;
    }
    if let Some(s) = base {
        band(&mut chart, xlo, xhi, s, BASELINE, false)?;
    }
    if let Some(s) = uni {
        band(&mut chart, xlo, xhi, s, UNIFORM, true)?;
    }
    seed_points(&mut chart, xs, &pts)
}

/// Grid lines and labels at the swept lambdas (a log axis).
fn lambda_ticks(
    panel: &DrawingArea<BitMapBackend, Shift>,
    chart: &mut Chart,
    xs: &[f64],
    ylo: f64,
    yhi: f64,
) -> Result<()> {
    let (bx, by) = panel.get_base_pixel();
    let style = (FONT, 12)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for &x in xs {
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
                crate::report::num(10f64.powf(x)),
                (px, py + 6),
                style.clone(),
            ))
            .map_err(perr)?;
    }
    Ok(())
}

/// Per x: the seed range bar, then the line through the means and a dot
/// per seed.
fn seed_points(chart: &mut Chart, xs: &[f64], pts: &[(f64, f64)]) -> Result<()> {
    let mut means = Vec::new();
    for &x in xs {
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
    Ok(())
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
