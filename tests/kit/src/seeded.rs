//! The seed and length of a randomised fault run, from the environment, so
//! every run can be replayed: `AFT_FAULT_SEED` (a random one otherwise,
//! printed) and `AFT_FAULT_SECS`.

/// A randomised run's seed and length.
#[derive(Debug, Clone, Copy)]
pub struct FaultRun {
    /// Seeds the fault schedule and the workload.
    pub seed: u64,
    /// How long faults are injected, in seconds.
    pub secs: u64,
}

impl FaultRun {
    /// `AFT_FAULT_SEED` or a random seed, and `AFT_FAULT_SECS` or
    /// `default_secs`. Prints both with the line that replays the run.
    pub fn from_env(what: &str, default_secs: u64) -> FaultRun {
        let seed = env_u64("AFT_FAULT_SEED").unwrap_or_else(rand::random);
        let secs = env_u64("AFT_FAULT_SECS").unwrap_or(default_secs);
        println!("{what}: seed {seed}, {secs} s (replay: AFT_FAULT_SEED={seed})");
        FaultRun { seed, secs }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}
