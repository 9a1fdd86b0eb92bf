//! The engine's task: started with the console, it loads the fleet and the
//! channels, then every [`EVALUATE_PERIOD`] runs the gates, stores new
//! channel members and saves the rollouts that changed, until stopped.

use std::path::Path;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{EVALUATE_PERIOD, REFRESH_PERIOD, Rollouts, now_ms};
use crate::console::store::Store;

impl Rollouts {
    /// Loads the fleet's reports and memberships, every channel's rollout,
    /// and starts the gate task; it ends when `stop` is cancelled.
    pub async fn start(data: &Path, store: Store, stop: CancellationToken) -> Rollouts {
        let engine = Rollouts::new(data);
        let reports = store.list().await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the fleet for rollouts");
            Vec::new()
        });
        let members = store.members().await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the channels' agents");
            Vec::new()
        });
        engine.lock().load(members, &reports);
        engine.load_suspended();
        engine.refresh_all_blocking().await;
        let task = engine.clone();
        tokio::spawn(async move { task.run(store, stop).await });
        engine
    }

    /// The gate task: evaluate, persist, until `stop`.
    async fn run(self, store: Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVALUATE_PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let refresh_every = (REFRESH_PERIOD.as_millis() / EVALUATE_PERIOD.as_millis()).max(1);
        let mut ticks: u128 = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            ticks += 1;
            if ticks.is_multiple_of(refresh_every) {
                self.refresh_all_blocking().await;
            }
            if self.evaluate(now_ms()) {
                self.bump();
            }
            let members = std::mem::take(&mut self.lock().unsaved_members);
            if !members.is_empty()
                && let Err(e) = store.add_members(members).await
            {
                warn!(error = %e, "cannot store the channels' agents");
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.save_dirty_blocking()).await;
        }
        self.save_dirty_blocking();
        debug!("rollout engine stopped");
    }
}
