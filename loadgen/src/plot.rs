//! `skiff bench plot`: runs' latency-percentile curves in one SVG, x on the log scale of
//! 1/(1-p) (50%, 90%, 99%, 99.9%, ... equally spaced), y the latency.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}")]
    Input(String),
    #[error("cannot draw {path}: {problem}")]
    Draw { path: String, problem: String },
}

/// One curve: a run and its legend label.
#[derive(Clone, Debug)]
pub struct PlotRun {
    pub label: String,
    pub report: Report,
}

/// The x coordinate of percentile `p` (0-100): log10(1/(1-p)).
fn x_of(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    -rest.log10()
}

/// Write the SVG. Runs without samples are refused by name.
pub fn plot(runs: &[PlotRun], out: &Path) -> Result<(), PlotError> {
    if runs.is_empty() {
        return Err(PlotError::Input("no runs to plot".into()));
    }
    for run in runs {
        if run.report.percentiles.is_empty() {
            return Err(PlotError::Input(format!(
                "{}: the run recorded no answered requests, nothing to plot",
                run.label
            )));
        }
    }
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: out.display().to_string(),
        problem: e.to_string(),
    };
    // The last point is the maximum (100%, infinitely far right): it is drawn at the edge of the
    // decade after the highest finite percentile.
    let x_max = runs
        .iter()
        .flat_map(|r| r.report.percentiles.iter())
        .filter(|p| p[0] < 100.0)
        .map(|p| x_of(p[0]))
        .fold(2.0_f64, f64::max)
        .ceil();
    let y_max = runs
        .iter()
        .flat_map(|r| r.report.percentiles.iter().map(|p| p[1]))
        .fold(1.0_f64, f64::max);
    // Microseconds or milliseconds, whichever reads better.
    let (unit, scale) = if y_max >= 10_000.0 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let root = SVGBackend::new(out, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..(y_max / scale * 1.05))
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                let digits = (x.round() as usize).saturating_sub(2);
                format!("{p:.digits$}%")
            }
        })
        .x_desc("percentile")
        .y_desc(format!("latency ({unit})"))
        .draw()
        .map_err(|e| draw_err(&e))?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = run
            .report
            .percentiles
            .iter()
            .map(|p| (x_of(p[0]).min(x_max), p[1] / scale))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| draw_err(&e))?
            .label(format!(
                "{} (p99 {:.0}{unit})",
                run.label,
                run.report.latency_us.p99 / scale
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_equal_steps() {
        assert!((x_of(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert!(x_of(100.0).is_finite());
    }
}
