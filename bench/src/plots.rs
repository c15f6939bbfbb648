//! SVG plots of a run (plotters, SVG backend only): latency distributions
//! (CDFs on a log latency axis) and throughput against client count.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::prelude::*;

use crate::results::Results;

/// Distinguishable line colours (colour-blind-friendly palette).
const COLORS: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(150, 150, 150),
    RGBColor(136, 34, 85),
    RGBColor(153, 153, 51),
];

type Series = Vec<(String, Vec<(f64, f64)>)>;

/// A log-axis tick label: only 1, 2 and 5 of each decade are written.
fn label_125(v: f64) -> String {
    let lead = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|l| (lead - l).abs() < 0.01)
    {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// The power of ten at or below `v` (plotters labels a log axis from the
/// first power of ten inside its range).
fn decade_below(v: f64) -> f64 {
    10f64.powf(v.log10().floor())
}

/// One plot file: its path and a caption for the report.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Where it was written.
    pub path: PathBuf,
    /// What it shows.
    pub caption: String,
}

fn cdf_plot(path: &Path, title: &str, series: &Series) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let lo = points
        .clone()
        .map(|(x, _)| *x)
        .filter(|x| *x > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = points.map(|(x, _)| *x).fold(0.0, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return Err(anyhow!("no data for {title}"));
    }
    let (lo, hi) = (decade_below(lo), hi * 1.3);
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency, µs (log scale)")
        .y_desc("fraction of operations ≤ latency")
        .x_label_formatter(&|v| label_125(*v))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, y)| (x.max(lo), *y)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn line_plot(path: &Path, title: &str, y_desc: &str, series: &Series) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let x_max = xs.fold(1.0, f64::max).ceil();
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let y_max = ys.clone().fold(0.0, f64::max);
    let y_min = ys.filter(|y| *y > 0.0).fold(f64::INFINITY, f64::min);
    if y_max <= 0.0 || !y_min.is_finite() {
        return Err(anyhow!("no data for {title}"));
    }
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    // Clients on a log2-like axis would hide nothing here: client counts are
    // few small integers, so a linear axis with one tick per client count.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..x_max + 1.0,
            (decade_below(y_min)..y_max * 12.0).log_scale(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (one OS thread each)")
        .y_desc(y_desc)
        .x_labels(x_max as usize + 2)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_labels(40)
        .y_label_formatter(&|v| label_125(*v))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, y)| Circle::new((*x, *y), 3, color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Draws every plot of `results` into `dir`; returns what was drawn
/// (a plot with no data is skipped).
pub fn draw_all(results: &Results, dir: &Path) -> anyhow::Result<Vec<Plot>> {
    std::fs::create_dir_all(dir)?;
    let name = &results.name;
    let lat = results.latency_clients();
    let cdf_of = |workloads: &[&str]| -> Series {
        workloads
            .iter()
            .filter_map(|w| {
                results
                    .cell(w, lat)
                    .map(|c| ((*w).to_string(), c.cdf.clone()))
            })
            .collect()
    };
    let tput_of = |workloads: &[String]| -> Series {
        workloads
            .iter()
            .filter_map(|w| {
                let pts: Vec<(f64, f64)> = results
                    .cells
                    .iter()
                    .filter(|c| &c.workload == w && c.ops > 0)
                    .map(|c| (c.clients as f64, c.throughput.mean))
                    .collect();
                (!pts.is_empty()).then(|| (w.clone(), pts))
            })
            .collect()
    };
    let mut plots = Vec::new();
    let mut attempt =
        |file: String, caption: String, draw: &dyn Fn(&Path) -> anyhow::Result<()>| {
            let path = dir.join(file);
            if draw(&path).is_ok() {
                plots.push(Plot { path, caption });
            }
        };
    let requests = cdf_of(&["echo-get", "sidecar-get"]);
    attempt(
        format!("{name}-latency-requests.svg"),
        format!("Latency of one request, {lat} client(s): raw ZeroMQ echo vs cached read through the sidecar"),
        &|p| cdf_plot(p, &format!("One request, {lat} client(s)"), &requests),
    );
    let loopback = cdf_of(&[
        "echo-dag",
        "redis-dag",
        "sidecar-redis-dag",
        "sidecar-file-dag",
    ]);
    attempt(
        format!("{name}-latency-dag-loopback.svg"),
        format!("DAG latency on loopback, {lat} client(s)"),
        &|p| {
            cdf_plot(
                p,
                &format!("DAG latency, loopback, {lat} client(s)"),
                &loopback,
            )
        },
    );
    let net = cdf_of(&["redis-net-dag", "sidecar-redis-net-dag"]);
    attempt(
        format!("{name}-latency-dag-net.svg"),
        format!(
            "DAG latency with Redis behind the simulated network hop (+{} µs each way), {lat} client(s)",
            results.config.delay_us
        ),
        &|p| cdf_plot(p, &format!("DAG latency, Redis one hop away, {lat} client(s)"), &net),
    );
    let req_tput = tput_of(&["echo-get".into(), "sidecar-get".into()]);
    attempt(
        format!("{name}-throughput-requests.svg"),
        "Request throughput vs clients".into(),
        &|p| {
            line_plot(
                p,
                "Requests per second vs clients",
                "requests / s (log scale)",
                &req_tput,
            )
        },
    );
    let mut dag_workloads: Vec<String> = [
        "echo-dag",
        "redis-dag",
        "sidecar-redis-dag",
        "sidecar-file-dag",
        "redis-net-dag",
        "sidecar-redis-net-dag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    dag_workloads.extend(
        results
            .multi_node
            .nodes
            .iter()
            .map(|n| format!("multi-node-{n}")),
    );
    let dag_tput = tput_of(&dag_workloads);
    attempt(
        format!("{name}-throughput-dags.svg"),
        "DAG throughput vs clients".into(),
        &|p| {
            line_plot(
                p,
                "DAGs per second vs clients",
                "DAGs / s (log scale)",
                &dag_tput,
            )
        },
    );
    Ok(plots)
}
