//! Absorption per first letter, one row per variant.

use super::*;
use crate::report::VariantInfo;
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

pub(super) fn absorption_plot(data: &ReportData, out: &Path) -> Result<Option<Plot>> {
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
