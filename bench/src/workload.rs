//! The workload: key space, Zipf key choice, the DAG's shape, and values
//! that name their writer (so the history checker can tell what each read saw).

use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

/// Parameters of the workload, after the AFT paper's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadParams {
    /// Keys in each workload's key space.
    pub keys: usize,
    /// Zipf exponent of key popularity (0 = uniform).
    pub zipf: f64,
    /// Bytes of each value written (the 4 KB of the paper).
    pub value_bytes: usize,
    /// Functions per DAG (a linear chain).
    pub functions: usize,
    /// Single-key reads per function.
    pub reads_per_function: usize,
    /// Single-key writes per function.
    pub writes_per_function: usize,
    /// Whether a downstream function calls `continue` on the node its
    /// upstream ran on (Cloudburst's executor skips it; the issue's DAG has it).
    pub continue_same_node: bool,
    /// Reads per transaction in the cached-read workload (start and commit
    /// around them are not timed).
    pub reads_per_txn: usize,
    /// Keys written by each loader transaction that fills a key space.
    pub load_batch: usize,
}

impl Default for WorkloadParams {
    fn default() -> Self {
        WorkloadParams {
            keys: 1000,
            zipf: 1.1,
            value_bytes: 4096,
            functions: 2,
            reads_per_function: 2,
            writes_per_function: 1,
            continue_same_node: true,
            reads_per_txn: 50,
            load_batch: 2,
        }
    }
}

impl WorkloadParams {
    /// Checks the parameters make a workload.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.keys > 0, "--keys must be at least 1");
        anyhow::ensure!(
            self.zipf >= 0.0 && self.zipf.is_finite(),
            "--zipf must be a finite number >= 0"
        );
        anyhow::ensure!(self.functions > 0, "--functions must be at least 1");
        anyhow::ensure!(
            self.reads_per_function + self.writes_per_function > 0,
            "a function must read or write something"
        );
        anyhow::ensure!(self.reads_per_txn > 0, "--reads-per-txn must be at least 1");
        anyhow::ensure!(self.load_batch > 0, "--load-batch must be at least 1");
        Ok(())
    }

    /// IPC round trips of one DAG through a sidecar on one node: start, the
    /// reads and writes, the continues, commit.
    pub fn ipc_round_trips(&self) -> usize {
        let continues = if self.continue_same_node {
            self.functions - 1
        } else {
            0
        };
        2 + self.functions * (self.reads_per_function + self.writes_per_function) + continues
    }

    /// Round trips of the same DAG straight against Redis (no start,
    /// continue or commit).
    pub fn redis_round_trips(&self) -> usize {
        self.functions * (self.reads_per_function + self.writes_per_function)
    }
}

/// Chooses keys by Zipf popularity: index 0 is the hottest.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    zipf: Zipf<f64>,
    keys: usize,
}

impl KeyPicker {
    /// A picker over `keys` keys with exponent `s`.
    pub fn new(keys: usize, s: f64) -> anyhow::Result<Self> {
        let zipf = Zipf::new(keys as f64, s)
            .map_err(|e| anyhow::anyhow!("invalid Zipf distribution ({keys} keys, s={s}): {e}"))?;
        Ok(KeyPicker { zipf, keys })
    }

    /// A key index in `0..keys`.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let sample = self.zipf.sample(rng);
        // Zipf samples are integers in [1, keys] as floats.
        (sample as usize).clamp(1, self.keys) - 1
    }
}

/// The name of key `index` in the key space `prefix`.
pub fn key_name(prefix: &str, index: usize) -> String {
    format!("{prefix}:{index:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trips_match_the_issue() {
        let p = WorkloadParams::default();
        // start, get, get, put, continue, get, get, put, commit
        assert_eq!(p.ipc_round_trips(), 9);
        assert_eq!(p.redis_round_trips(), 6);
        let p = WorkloadParams {
            continue_same_node: false,
            ..p
        };
        assert_eq!(p.ipc_round_trips(), 8);
    }

    #[test]
    fn zipf_prefers_low_indices_and_stays_in_range() {
        let picker = KeyPicker::new(1000, 1.1).expect("valid");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut hot = 0;
        for _ in 0..10_000 {
            let k = picker.pick(&mut rng);
            assert!(k < 1000);
            if k == 0 {
                hot += 1;
            }
        }
        assert!(hot > 1000, "key 0 should be hot, got {hot}");
    }
}
