//! Background loops that keep records honest: agent replies nobody waited for are applied, and
//! the leader sweeps sandboxes — those of vanished nodes become LOST, those whose deadline key
//! etcd deleted are destroyed as EXPIRED (see `deadlines.rs`), creates stuck in SCHEDULED are
//! re-published (after one create timeout) and then fail (after two). What a sweep does lives in
//! `sandboxes/sweep.rs`; this loop decides when.
//!
//! The sweeps run on the elected leader only (`leader.rs`); every write is a CAS through
//! `records::update`, so a deposed leader sweeping once more cannot corrupt a record.

use std::sync::Arc;
use std::time::Duration;

use corral_core::protocol::WorkReply;
use tokio::sync::mpsc;

use crate::leader::Leadership;
use crate::sandboxes::Sandboxes;

/// How often the loops look for work.
pub const TICK: Duration = Duration::from_millis(500);

pub async fn run(
    sandboxes: Arc<Sandboxes>,
    leadership: Leadership,
    mut unclaimed: mpsc::UnboundedReceiver<WorkReply>,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            reply = unclaimed.recv() => {
                let Some(reply) = reply else { return Err("reply inbox closed".into()) };
                if let Err(e) = sandboxes.apply_reply(reply, None, 0).await {
                    tracing::warn!(error = %e, "could not apply an agent reply");
                }
            }
            // Only the leader sweeps; every coordinator applies the replies addressed to it.
            _ = tick.tick() => if leadership.is_leader() { sandboxes.sweep().await },
        }
    }
}
