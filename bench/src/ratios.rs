//! The headline ratios as a table: each row names two cells, the statistic
//! compared and the goal; [`Results::ratios_at`] evaluates the rows in
//! order, then adds the anomaly counts ([`anomaly_counts`]).

use crate::results::{CellResult, Ratio, Results};

/// Which statistic of a cell a ratio compares, and at which client count.
#[derive(Debug, Clone, Copy)]
pub enum Stat {
    /// Median latency, µs, at the latency client count.
    P50,
    /// 99th-percentile latency, µs, at the latency client count.
    P99,
    /// Mean throughput, operations per second, at the throughput client count.
    Throughput,
}

impl Stat {
    /// The statistic in `cell`.
    fn of(self, cell: &CellResult) -> f64 {
        match self {
            Stat::P50 => cell.latency_us.p50,
            Stat::P99 => cell.latency_us.p99,
            Stat::Throughput => cell.throughput.mean,
        }
    }

    /// The unit written after a measured value.
    fn unit(self) -> &'static str {
        match self {
            Stat::P50 | Stat::P99 => "µs",
            Stat::Throughput => "/s",
        }
    }
}

/// The workload of one side of a ratio.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// This workload.
    Workload(&'static str),
    /// `multi-node-N`, N the largest node count that ran (3 if none did).
    MultiNodeTop,
}

impl Side {
    /// The workload's name, `top` being the largest node count.
    fn name(self, top: usize) -> String {
        match self {
            Side::Workload(name) => name.to_string(),
            Side::MultiNodeTop => format!("multi-node-{top}"),
        }
    }
}

/// What the denominator's statistic is multiplied by.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// Nothing.
    One,
    /// A fixed factor.
    Times(f64),
    /// The IPC round trips of one DAG; the row is left out when they are 8
    /// (the `Times(8.0)` row already says it).
    IpcRoundTrips,
}

impl Scale {
    /// The factor for a DAG of `ipc_round_trips`, `None` if the row is left out.
    fn factor(self, ipc_round_trips: usize) -> Option<f64> {
        match self {
            Scale::One => Some(1.0),
            Scale::Times(factor) => Some(factor),
            Scale::IpcRoundTrips => (ipc_round_trips != 8).then_some(ipc_round_trips as f64),
        }
    }
}

/// One row of the table: the ratio numerator / (scale × denominator).
#[derive(Debug, Clone, Copy)]
pub struct RatioDef {
    /// Stable identifier.
    pub id: &'static str,
    /// What it compares; `{ipc_round_trips}` stands for the DAG's IPC round
    /// trips, `{top}` for the largest node count.
    pub description: &'static str,
    /// The goal, as text (`<= 1.5`), empty when there is none.
    pub goal: &'static str,
    /// The cell on top.
    pub numerator: Side,
    /// The cell below.
    pub denominator: Side,
    /// The statistic compared (which also picks the client count).
    pub stat: Stat,
    /// The denominator's factor.
    pub scale: Scale,
}

/// A row comparing `stat` of two workloads, with no scale.
const fn row(
    id: &'static str,
    description: &'static str,
    goal: &'static str,
    numerator: &'static str,
    denominator: &'static str,
    stat: Stat,
) -> RatioDef {
    RatioDef {
        id,
        description,
        goal,
        numerator: Side::Workload(numerator),
        denominator: Side::Workload(denominator),
        stat,
        scale: Scale::One,
    }
}

/// The ratios, in report order (the anomaly counts follow them).
pub const RATIOS: &[RatioDef] = &[
    row(
        "cached_read_p50",
        "cached transactional read through the sidecar vs raw ZeroMQ round trip (p50)",
        "<= 1.15",
        "sidecar-get",
        "echo-get",
        Stat::P50,
    ),
    row(
        "cached_read_p99",
        "cached transactional read through the sidecar vs raw ZeroMQ round trip (p99)",
        "",
        "sidecar-get",
        "echo-get",
        Stat::P99,
    ),
    row(
        "net_dag_p50",
        "DAG p50, Redis behind the simulated network hop: sidecar vs direct Redis",
        "<= 0.5",
        "sidecar-redis-net-dag",
        "redis-net-dag",
        Stat::P50,
    ),
    row(
        "net_dag_p99",
        "DAG p99, Redis behind the simulated network hop: sidecar vs direct Redis",
        "<= 1.0",
        "sidecar-redis-net-dag",
        "redis-net-dag",
        Stat::P99,
    ),
    row(
        "grpc_net_dag_p50",
        "DAG p50, client and Redis each behind the simulated network hop: one gRPC transaction vs direct Redis (Redis only behind the hop)",
        "",
        "sidecar-grpc-net-dag",
        "redis-net-dag",
        Stat::P50,
    ),
    row(
        "grpc_vs_ipc_net_dag_p50",
        "DAG p50, Redis behind the simulated network hop: gRPC front across a network hop vs IPC on the node",
        "",
        "sidecar-grpc-net-dag",
        "sidecar-redis-net-dag",
        Stat::P50,
    ),
    row(
        "loopback_dag_p50",
        "DAG p50, Redis on loopback: sidecar vs direct Redis (floor: 9 IPC round trips against 6 Redis ones)",
        "",
        "sidecar-redis-dag",
        "redis-dag",
        Stat::P50,
    ),
    row(
        "loopback_dag_p99",
        "DAG p99, Redis on loopback: sidecar vs direct Redis",
        "",
        "sidecar-redis-dag",
        "redis-dag",
        Stat::P99,
    ),
    RatioDef {
        scale: Scale::Times(8.0),
        ..row(
            "loopback_dag_vs_8_rtt",
            "sidecar DAG over loopback Redis vs 8 x raw ZeroMQ round trip (what the sidecar adds)",
            "",
            "sidecar-redis-dag",
            "echo-get",
            Stat::P50,
        )
    },
    RatioDef {
        scale: Scale::IpcRoundTrips,
        ..row(
            "loopback_dag_vs_k_rtt",
            "sidecar DAG over loopback Redis vs {ipc_round_trips} x raw round trip (this DAG's IPC round trips)",
            "",
            "sidecar-redis-dag",
            "echo-get",
            Stat::P50,
        )
    },
    row(
        "loopback_dag_vs_echo_dag",
        "sidecar DAG over loopback Redis vs the same DAG against the echo server (ideal no-work sidecar)",
        "<= 1.25",
        "sidecar-redis-dag",
        "echo-dag",
        Stat::P50,
    ),
    row(
        "file_dag_vs_echo_dag",
        "sidecar DAG over the embedded store vs the same DAG against the echo server",
        "",
        "sidecar-file-dag",
        "echo-dag",
        Stat::P50,
    ),
    row(
        "cross_node_2_p50",
        "DAG p50 with its functions on 2 nodes vs the same DAG on 1 node (same cluster)",
        "<= 1.3",
        "multi-node-2",
        "multi-node-1",
        Stat::P50,
    ),
    row(
        "cross_node_3_p50",
        "DAG p50 with its functions on 3 nodes vs the same DAG on 1 node (same cluster)",
        "<= 1.4",
        "multi-node-3",
        "multi-node-1",
        Stat::P50,
    ),
    row(
        "throughput_vs_echo",
        "sidecar cached-read throughput vs echo server request rate, same clients",
        ">= 0.5",
        "sidecar-get",
        "echo-get",
        Stat::Throughput,
    ),
    row(
        "dag_throughput_vs_echo",
        "sidecar DAG throughput (loopback Redis) vs the echo server's DAG rate",
        "",
        "sidecar-redis-dag",
        "echo-dag",
        Stat::Throughput,
    ),
    RatioDef {
        id: "multi_node_scaling",
        description: "multi-node throughput: {top} sidecars vs 1 (one shared Redis)",
        goal: "",
        numerator: Side::MultiNodeTop,
        denominator: Side::Workload("multi-node-1"),
        stat: Stat::Throughput,
        scale: Scale::One,
    },
];

impl RatioDef {
    /// This row evaluated on `results`: latency rows at `lat` clients,
    /// throughput rows at `tput`; `None` if the row is left out (see
    /// [`Scale::IpcRoundTrips`]). A side whose cell was not measured gives
    /// no value.
    pub fn evaluate(&self, results: &Results, lat: usize, tput: usize) -> Option<Ratio> {
        let rtt = results.config.params.ipc_round_trips;
        let factor = self.scale.factor(rtt)?;
        let top = results.multi_node.nodes.iter().copied().max().unwrap_or(3);
        let clients = match self.stat {
            Stat::P50 | Stat::P99 => lat,
            Stat::Throughput => tput,
        };
        let (num, den) = (self.numerator.name(top), self.denominator.name(top));
        let n = results.cell(&num, clients).map(|c| self.stat.of(c));
        let d = results
            .cell(&den, clients)
            .map(|c| self.stat.of(c) * factor);
        let scale = if factor == 1.0 {
            String::new()
        } else {
            format!("{factor} × ")
        };
        let unit = self.stat.unit();
        Some(Ratio {
            id: self.id.into(),
            description: self
                .description
                .replace("{ipc_round_trips}", &rtt.to_string())
                .replace("{top}", &top.to_string()),
            value: ratio(n, d),
            goal: self.goal.into(),
            numerator: describe(&num, n, unit),
            denominator: format!("{scale}{}", describe(&den, d.map(|d| d / factor), unit)),
            clients,
        })
    }
}

/// The row after the ratios: read-atomicity anomalies through the sidecar
/// (goal 0) beside those of direct Redis (no value: counts, not a ratio).
pub fn anomaly_counts(results: &Results) -> Ratio {
    let count = |through_sidecar: bool| {
        let spaces = results
            .anomalies
            .iter()
            .filter(|a| a.through_sidecar == through_sidecar);
        let total: usize = spaces.clone().map(|a| a.total).sum();
        (spaces.count() > 0).then_some(total)
    };
    Ratio {
        id: "anomalies".into(),
        description: "read-atomicity anomalies: through the sidecar (goal 0) beside direct Redis"
            .into(),
        value: None,
        goal: "sidecar = 0".into(),
        numerator: match count(true) {
            Some(n) => format!("sidecar: {n}"),
            None => "sidecar: not run".into(),
        },
        denominator: match count(false) {
            Some(n) => format!("direct Redis: {n}"),
            None => "direct Redis: not run".into(),
        },
        clients: 0,
    }
}

/// `n / d`, if both were measured and `d` is positive.
fn ratio(n: Option<f64>, d: Option<f64>) -> Option<f64> {
    match (n, d) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// `workload` and its measured value (`not measured` if none), in `unit`.
fn describe(workload: &str, value: Option<f64>, unit: &str) -> String {
    match value {
        Some(v) if unit == "µs" => format!("{workload} {v:.1} µs"),
        Some(v) => format!("{workload} {v:.0}{unit}"),
        None => format!("{workload} (not measured)"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Scale, RATIOS};

    #[test]
    fn ids_are_stable_in_report_order() {
        let ids: Vec<&str> = RATIOS.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [
                "cached_read_p50",
                "cached_read_p99",
                "net_dag_p50",
                "net_dag_p99",
                "grpc_net_dag_p50",
                "grpc_vs_ipc_net_dag_p50",
                "loopback_dag_p50",
                "loopback_dag_p99",
                "loopback_dag_vs_8_rtt",
                "loopback_dag_vs_k_rtt",
                "loopback_dag_vs_echo_dag",
                "file_dag_vs_echo_dag",
                "cross_node_2_p50",
                "cross_node_3_p50",
                "throughput_vs_echo",
                "dag_throughput_vs_echo",
                "multi_node_scaling",
            ]
        );
    }

    #[test]
    fn the_k_rtt_row_is_left_out_when_it_repeats_the_8_rtt_row() {
        assert_eq!(Scale::IpcRoundTrips.factor(8), None);
        assert_eq!(Scale::IpcRoundTrips.factor(9), Some(9.0));
        assert_eq!(Scale::Times(8.0).factor(9), Some(8.0));
    }
}
