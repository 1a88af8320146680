//! Running blocking work (index transactions) off the async threads.

use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Wait for a blocking task. A task cancelled because the runtime is shutting down becomes
/// `Error::Shutdown`; a panic in the task is re-raised here.
pub async fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    match handle.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Shutdown),
    }
}

/// Run `f` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    join(tokio::task::spawn_blocking(f)).await
}
