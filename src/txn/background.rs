//! The engine's background tasks: GC with the lease reaper, the orphan
//! sweep, the publication sweep, and a liveness ticker (how the engine
//! notices it was paused).

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::engine::Engine;

/// Handles of the background tasks; dropping it stops them.
#[derive(Debug)]
pub struct BackgroundTasks {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

impl Engine {
    /// Starts GC + lease reaping (every `gc_interval`), the orphan sweep
    /// (every `orphan_sweep_interval`) and the publication sweep (every
    /// `publish_sweep_interval`), each first right away. They hold only a
    /// weak reference, so they also stop when the engine is dropped.
    pub fn spawn_background(self: &Arc<Self>) -> BackgroundTasks {
        let gc = {
            let engine = Arc::downgrade(self);
            let every = self.config.gc_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.reap_expired();
                    if engine.remote.get().is_some() {
                        engine.settle_prepared(engine.config.decision_timeout).await;
                    }
                    engine.collect_garbage().await;
                    engine
                        .metrics
                        .cache_bytes
                        .set(engine.cache.weighted_bytes() as i64);
                }
            })
        };
        let sweep = {
            let engine = Arc::downgrade(self);
            let every = self.config.orphan_sweep_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.sweep_orphans().await;
                }
            })
        };
        let publications = {
            let engine = Arc::downgrade(self);
            let every = self.config.publish_sweep_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.sweep_publications().await;
                }
            })
        };
        let liveness = {
            let engine = Arc::downgrade(self);
            let every = (self.config.client_timeout / 20).max(std::time::Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.beat();
                }
            })
        };
        BackgroundTasks {
            handles: vec![gc, sweep, publications, liveness],
        }
    }
}
