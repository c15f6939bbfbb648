//! Client thread pools and the interleaved schedule.
//!
//! Each target (echo server, a sidecar, Redis direct, ...) has a pool of
//! persistent client threads, one OS thread per client, each with its own
//! connection (an [`aft::client::IpcClient`] with its own thread id, or a
//! Redis connection) kept open for the whole run, so no slice pays for
//! connection setup. A slice runs one workload with the first `n` threads
//! of its pool for a bounded time (and count); a round runs every
//! (workload, clients) cell once; rounds alternate their order (A B, then
//! B A), so slow drifts of the machine hit every cell alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use crossbeam_channel::{Receiver, Sender};

use crate::proxy::{precise_timers_for_this_thread, wait_until};
use crate::session::{Recorder, Spec, Worker};

/// Makes the connection of one client thread (called on that thread).
pub type Connector = Arc<dyn Fn(u32) -> anyhow::Result<Worker> + Send + Sync>;

enum Job {
    Run {
        spec: Spec,
        start: Instant,
        until: Instant,
        max_ops: u64,
        measure: bool,
    },
    Load {
        prefix: String,
        indices: Vec<usize>,
    },
}

struct Done {
    recorder: Result<Recorder, String>,
    ended: Instant,
}

/// A pool of persistent client threads for one target.
pub struct Pool {
    /// The target's name.
    pub name: String,
    jobs: Vec<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

/// What one slice produced.
pub struct SliceOutcome {
    /// Everything the clients recorded, merged.
    pub recorder: Recorder,
    /// From the common start to the last client's end.
    pub wall: Duration,
}

impl Pool {
    /// Starts `size` client threads; thread ids come from `ids`.
    pub fn spawn(
        name: &str,
        size: usize,
        ids: &AtomicU32,
        connect: Connector,
    ) -> anyhow::Result<Pool> {
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..size {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            let done_tx = done_tx.clone();
            let connect = Arc::clone(&connect);
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{id}"))
                .spawn(move || client_thread(id, connect, rx, done_tx))
                .with_context(|| format!("cannot spawn a client thread for {name}"))?;
            jobs.push(tx);
            threads.push(thread);
        }
        Ok(Pool {
            name: name.to_string(),
            jobs,
            done,
            threads,
        })
    }

    /// Client threads in the pool.
    pub fn size(&self) -> usize {
        self.jobs.len()
    }

    fn collect(&self, n: usize) -> anyhow::Result<Vec<Done>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let done = self
                .done
                .recv()
                .map_err(|_| anyhow!("a client thread of {} died", self.name))?;
            out.push(done);
        }
        Ok(out)
    }

    /// Runs `spec` on the first `clients` threads for `duration` (or until
    /// `max_ops` operations in all), all starting together.
    pub fn run(
        &self,
        spec: &Spec,
        clients: usize,
        duration: Duration,
        max_ops: u64,
        measure: bool,
    ) -> anyhow::Result<SliceOutcome> {
        if self.size() == 0 {
            return Err(anyhow!("{} has no client threads", self.name));
        }
        let clients = clients.min(self.size()).max(1);
        let start = Instant::now() + Duration::from_millis(5);
        let until = start + duration;
        let per_client = max_ops.div_ceil(clients as u64).max(1);
        for tx in &self.jobs[..clients] {
            tx.send(Job::Run {
                spec: spec.clone(),
                start,
                until,
                max_ops: per_client,
                measure,
            })
            .map_err(|_| anyhow!("a client thread of {} died", self.name))?;
        }
        let mut recorder = Recorder::new(measure);
        let mut last = start;
        let mut failure = None;
        for done in self.collect(clients)? {
            last = last.max(done.ended);
            match done.recorder {
                Ok(r) => recorder.merge(r),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(anyhow!("{}: {e}", self.name));
        }
        Ok(SliceOutcome {
            recorder,
            wall: last.saturating_duration_since(start),
        })
    }

    /// Fills keys `0..keys` of `prefix`, split over every thread.
    pub fn load(&self, prefix: &str, keys: usize) -> anyhow::Result<Recorder> {
        let n = self.size().min(keys).max(1);
        for (i, tx) in self.jobs[..n].iter().enumerate() {
            let indices: Vec<usize> = (i..keys).step_by(n).collect();
            tx.send(Job::Load {
                prefix: prefix.to_string(),
                indices,
            })
            .map_err(|_| anyhow!("a client thread of {} died", self.name))?;
        }
        let mut recorder = Recorder::new(false);
        for done in self.collect(n)? {
            recorder.merge(done.recorder.map_err(|e| anyhow!("{}: {e}", self.name))?);
        }
        Ok(recorder)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn client_thread(id: u32, connect: Connector, jobs: Receiver<Job>, done: Sender<Done>) {
    precise_timers_for_this_thread();
    let mut worker = connect(id).map_err(|e| format!("{e:#}"));
    while let Ok(job) = jobs.recv() {
        let recorder = match (&mut worker, job) {
            (Err(e), _) => Err(e.clone()),
            (
                Ok(worker),
                Job::Run {
                    spec,
                    start,
                    until,
                    max_ops,
                    measure,
                },
            ) => {
                let mut rec = Recorder::new(measure);
                wait_until(start, Duration::from_micros(200));
                while Instant::now() < until && rec.ops + rec.errors < max_ops {
                    worker.run_op(&spec, &mut rec);
                }
                worker.finish(&mut rec);
                Ok(rec)
            }
            (Ok(worker), Job::Load { prefix, indices }) => {
                let mut rec = Recorder::new(false);
                worker.load(&prefix, &indices, &mut rec);
                match rec.first_error.take() {
                    Some(e) => Err(e),
                    None => Ok(rec),
                }
            }
        };
        let ended = Instant::now();
        if done.send(Done { recorder, ended }).is_err() {
            return;
        }
    }
}
