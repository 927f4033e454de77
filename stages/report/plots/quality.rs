//! L0 against explained variance and CE score.

use super::*;
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

pub(super) fn l0_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
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
            let front = pareto_front(&pts);
            if front.len() > 1 {
                chart
                    .draw_series(DashedLineSeries::new(
                        front,
                        6,
                        4,
                        RGBColor(120, 120, 120).stroke_width(2),
                    ))
                    .map_err(perr)?;
            }
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
        caption: "Every variant, one dot each (seeds of a setting share a colour); the dashed line is the Pareto front, the SAEs no other beats on both L0 and the score. Up and to the left is better: more reconstruction for fewer active latents.".into(),
    }))
}

/// The points no other point beats on both axes (lower L0, higher score),
/// by L0 ascending.
fn pareto_front(pts: &[(f64, f64, RGBColor)]) -> Vec<(f64, f64)> {
    let mut by_l0: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    // Ascending L0; at equal L0 the best score first.
    by_l0.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in by_l0 {
        if front.last().is_none_or(|l| p.1 > l.1) {
            front.push(p);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_keeps_what_nothing_beats_on_both_axes() {
        let c = RGBColor(0, 0, 0);
        let pts = [
            (32.0, 0.90, c),
            (30.0, 0.89, c),
            (32.0, 0.91, c),
            (31.0, 0.85, c),
            (37.0, 0.60, c),
            (29.0, 0.88, c),
        ];
        assert_eq!(
            pareto_front(&pts),
            vec![(29.0, 0.88), (30.0, 0.89), (32.0, 0.91)]
        );
    }
}
