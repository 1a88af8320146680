//! Consumer-group membership: several processes share a topic's partitions, each owning some.
//! Ownership moves only through a revocation the member acknowledges after it has stopped
//! working on those partitions, so no partition ever has two owners at once.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// How long a member may take to acknowledge a revocation before the group moves on anyway.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Partitions taken away from this member. Stop working on them, then call [`Self::done`].
pub struct Revocation {
    pub partitions: BTreeSet<u32>,
    ack: std::sync::mpsc::Sender<()>,
}

impl Revocation {
    pub fn new(partitions: BTreeSet<u32>) -> (Revocation, std::sync::mpsc::Receiver<()>) {
        let (ack, rx) = std::sync::mpsc::channel();
        (Revocation { partitions, ack }, rx)
    }

    pub fn done(self) {
        let _ = self.ack.send(());
    }
}

/// This process's membership of a group. Dropping it leaves the group.
pub struct Membership {
    /// Partitions owned now.
    pub assigned: watch::Receiver<BTreeSet<u32>>,
    /// Revocations to acknowledge.
    pub revoked: mpsc::UnboundedReceiver<Revocation>,
    /// Keeps the membership alive (the backend's consumer, or nothing).
    pub(crate) _guard: Box<dyn Send + Sync>,
}

impl Membership {
    /// A membership that owns `partitions` for good (a backend with a single process).
    pub fn fixed(partitions: BTreeSet<u32>) -> Membership {
        let (tx, assigned) = watch::channel(partitions);
        let (revoke_tx, revoked) = mpsc::unbounded_channel();
        Membership {
            assigned,
            revoked,
            _guard: Box::new((tx, revoke_tx)),
        }
    }
}
