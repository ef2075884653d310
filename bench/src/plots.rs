//! PNG plots with plotters' bitmap backend. Text uses DejaVu Sans through
//! ab_glyph (no system font lookup); without the font file the plots are
//! drawn without text.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (900, 500);

/// Registers the font; answers whether text can be drawn.
pub fn init_fonts() -> bool {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

fn error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// A line chart of (x, y) points; `log_x` for cardinalities.
pub fn lines(
    path: &Path,
    text: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_x: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(error)?;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max, mut x_min) = (1e-9f64, 1e-9f64, f64::MAX);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
        x_min = x_min.min(x);
    }
    let x_min = if log_x { x_min.max(1.0) } else { 0.0 };
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK, CYAN];
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc(x_label).y_desc(y_label);
            } else {
                mesh.disable_x_mesh()
                    .disable_y_mesh()
                    .x_labels(0)
                    .y_labels(0);
            }
            mesh.draw().map_err(error)?;
            for (index, (name, data)) in series.iter().enumerate() {
                let color = colors[index % colors.len()];
                let drawn = chart
                    .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                    .map_err(error)?;
                if text {
                    drawn.label(*name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
                chart
                    .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(error)?;
            }
            if text {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(error)?;
            }
        }};
    }
    if log_x {
        draw!(builder
            .build_cartesian_2d((x_min..x_max * 1.2).log_scale(), 0.0..y_max * 1.1)
            .map_err(error)?);
    } else {
        draw!(builder
            .build_cartesian_2d(x_min..x_max * 1.02, 0.0..y_max * 1.1)
            .map_err(error)?);
    }
    root.present().map_err(error)?;
    Ok(())
}

/// A histogram of latencies (ms) in `bins` equal bins.
pub fn histogram(
    path: &Path,
    text: bool,
    title: &str,
    values_ms: &[f64],
    bins: usize,
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(error)?;
    let max = values_ms.iter().copied().fold(1e-6, f64::max);
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for &value in values_ms {
        counts[((value / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1);
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..max * 1.02, 0u32..top + top / 10 + 1)
        .map_err(error)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("latency (ms)").y_desc("queries");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(error)?;
    chart
        .draw_series(counts.iter().enumerate().map(|(index, &count)| {
            let x0 = index as f64 * width;
            Rectangle::new([(x0, 0), (x0 + width, count)], BLUE.mix(0.6).filled())
        }))
        .map_err(error)?;
    root.present().map_err(error)?;
    Ok(())
}
