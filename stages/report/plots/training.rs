//! Training curves: MSE, L0 and dead fraction against tokens.

use super::*;
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Steps in the rolling mean of the plotted MSE (per-batch MSE is noisy).
const SMOOTH: usize = 5;

/// (tokens, MSE averaged over a centred window of SMOOTH steps).
fn smooth(cv: &[crate::report::CurvePoint]) -> Vec<(f64, f64)> {
    let pts: Vec<&crate::report::CurvePoint> = cv.iter().filter(|p| p.mse.is_finite()).collect();
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

/// MSE and dead fraction against tokens, one line per variant in its seed
/// group's colour.
// Over 150 lines: the two panels (MSE on a log axis with its ticks placed
// by hand, dead fraction) and the legend share the token axis, ranges and
// colours computed at the top; split, each part would take them all.
pub(super) fn training_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
    let groups = data.groups();
    let colors = group_colors(data);
    let curves: Vec<(RGBColor, &Vec<crate::report::CurvePoint>)> = groups
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
