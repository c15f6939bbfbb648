//! Failpoints for crash tests: named places in the commit protocol where a
//! test can make the process die as if killed, to prove what survives.
//!
//! Set `AFT_FAILPOINTS=name=exit[,name=exit...]` in the sidecar's
//! environment. Unset (the normal case), a failpoint costs one load of a
//! cached empty list.

use std::sync::OnceLock;

fn configured() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("AFT_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|entry| entry.trim().strip_suffix("=exit").map(str::to_string))
            .collect()
    })
}

/// Dies at once (exit status 137, no cleanup) if failpoint `name` is armed.
pub fn hit(name: &str) {
    if configured().iter().any(|p| p == name) {
        eprintln!("aft failpoint `{name}` hit: exiting as if killed");
        std::process::exit(137);
    }
}
