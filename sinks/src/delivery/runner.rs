//! One running subscription: a member of the consumer group named after it, delivering the
//! partitions the group assigns to this node (all of them with the embedded log; a share of
//! them when several nodes run on Kafka). A partition is handed back only after its worker
//! stopped and committed, so two nodes never deliver the same partition at once. Each
//! partition's worker feeds the run's sink as its kind wants: request by request
//! (`partition.rs`), or as a stream (`feed.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidemark_core::OBJECTS_TOPIC;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::context::{RunCtx, Target};
use super::{Engine, feed, partition};

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn stop_workers(workers: &mut HashMap<u32, Worker>, which: impl Fn(u32) -> bool) {
    let chosen: Vec<u32> = workers.keys().copied().filter(|p| which(*p)).collect();
    for p in &chosen {
        let _ = workers[p].stop.send(true);
    }
    for p in chosen {
        if let Some(w) = workers.remove(&p) {
            let _ = w.task.await;
        }
    }
}

pub(super) async fn run(engine: Arc<Engine>, ctx: Arc<RunCtx>, mut stop: watch::Receiver<bool>) {
    let mut membership = loop {
        match ctx.log.join_group(&ctx.consumer, OBJECTS_TOPIC).await {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(
                    subscription = ctx.name,
                    "joining the delivery group: {e}; retrying in 1s"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    tracing::info!(subscription = ctx.name, "delivering");
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<u32, Worker> = HashMap::new();
    let mut assignment_changed = true;
    loop {
        if assignment_changed {
            let assigned = membership.assigned.borrow_and_update().clone();
            stop_workers(&mut workers, |p| !assigned.contains(&p)).await;
            for p in assigned {
                if workers.contains_key(&p) {
                    continue;
                }
                let (wstop, wstopped) = watch::channel(false);
                let task = spawn_worker(&ctx, p, wstopped, &gone_tx);
                workers.insert(p, Worker { stop: wstop, task });
            }
            assignment_changed = false;
        }
        tokio::select! {
            _ = stop.changed() => break,
            revoked = membership.revoked.recv() => {
                let Some(revocation) = revoked else { break };
                stop_workers(&mut workers, |p| revocation.partitions.contains(&p)).await;
                revocation.done();
            }
            changed = membership.assigned.changed() => {
                if changed.is_err() { break }
                assignment_changed = true;
            }
            Some(message) = gone_rx.recv() => {
                let reason = format!(
                    "the endpoint {} is gone ({message}); delivery stopped at the first undelivered event. \
                     Replace the subscription (PUT) to resume.",
                    ctx.target.endpoint()
                );
                tracing::error!(subscription = ctx.name, "{reason}");
                stop_workers(&mut workers, |_| true).await;
                if let Err(e) = engine.subscriptions.disable(&ctx.name, reason).await {
                    tracing::error!(subscription = ctx.name, "cannot record that the subscription is disabled: {e}");
                }
                return;
            }
        }
    }
    stop_workers(&mut workers, |_| true).await;
}

/// The worker of `partition`; a request sink's endpoint that is gone (410) is reported on
/// `gone`.
fn spawn_worker(
    ctx: &Arc<RunCtx>,
    partition: u32,
    stop: watch::Receiver<bool>,
    gone: &mpsc::UnboundedSender<String>,
) -> JoinHandle<()> {
    match &ctx.target {
        Target::Request(to) => {
            let (ctx, to, gone) = (ctx.clone(), to.clone(), gone.clone());
            tokio::spawn(async move {
                if let Some(message) = partition::run(ctx, to, partition, stop).await {
                    let _ = gone.send(message);
                }
            })
        }
        Target::Stream(sink) => tokio::spawn(feed::run(ctx.clone(), sink.clone(), partition, stop)),
    }
}
