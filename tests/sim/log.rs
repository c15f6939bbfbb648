//! A run's log in virtual time: every engine event and every seeded choice
//! of the simulation (with the line that made it), stamped with virtual
//! microseconds since the run started. Two logs of one seed are identical;
//! where they are not, the first differing line shows what leaked
//! nondeterminism into the run.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Virtual time since the run started (the first event it stamps).
struct VirtualTime {
    start: Mutex<Option<Instant>>,
}

impl FormatTime for VirtualTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = Instant::now();
        let start = *self.start.lock().get_or_insert(now);
        write!(w, "{:>12}", (now - start).as_micros())
    }
}

#[derive(Clone)]
struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().flush()
    }
}

/// Runs `run` (on this thread) with every event at trace level written to
/// `path`.
pub fn logged<T>(path: &str, run: impl FnOnce() -> T) -> io::Result<T> {
    let file = SharedFile(Arc::new(Mutex::new(File::create(path)?)));
    let subscriber = tracing_subscriber::fmt()
        .with_timer(VirtualTime {
            start: Mutex::new(None),
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || file.clone())
        .finish();
    Ok(tracing::subscriber::with_default(subscriber, run))
}
