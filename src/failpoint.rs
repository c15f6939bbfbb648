//! Failpoints: named steps of the commit protocol where a test can make a
//! node die, to prove what survives.
//!
//! The engine asks its [`Failpoints`] at each step. In the binary they come
//! from the environment ([`EnvFailpoints`]): `AFT_FAILPOINTS=name=exit[,...]`
//! makes the process exit on the spot with status 137, as if killed with
//! `kill -9`. A simulation installs its own, which stops the node's tasks
//! there instead. Unset (the normal case), a failpoint costs one load of a
//! cached empty list.

use std::sync::OnceLock;

/// Every failpoint the engine has, in protocol order.
pub const ALL: &[&str] = &[
    "continue.failed",
    "prepare.after_data",
    "commit.after_prepare",
    "commit.before_data",
    "commit.after_data",
    "commit.after_record",
];

/// Decides, at each named step, whether the node dies there.
pub trait Failpoints: Send + Sync + std::fmt::Debug + 'static {
    /// Called when the engine reaches failpoint `name`. Returns `true` if
    /// the node must stop here: the engine then never goes past this step
    /// (it awaits forever; whoever asked for the crash tears the node down).
    fn hit(&self, name: &str) -> bool;
}

/// Failpoints armed by `AFT_FAILPOINTS=name=exit[,name=exit...]`: the
/// process exits with status 137 at an armed one.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvFailpoints;

impl Failpoints for EnvFailpoints {
    fn hit(&self, name: &str) -> bool {
        if configured().iter().any(|p| p == name) {
            eprintln!("aft failpoint `{name}` hit: exiting as if killed");
            std::process::exit(137);
        }
        false
    }
}

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
