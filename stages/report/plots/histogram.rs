//! Histograms of the decoder cosines of competing pairs.

use super::*;
use crate::report::VariantInfo;
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

pub(super) fn histogram_plot(
    data: &ReportData,
    cfg: &ReportConfig,
    out: &Path,
) -> Result<Option<Plot>> {
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
                    crate::report::num(cfg.histogram_tau)
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
            crate::report::num(cfg.histogram_tau),
            bins,
            width,
            xlo,
            xhi
        ),
    }))
}
