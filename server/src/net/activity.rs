//! What a connection is doing, for its two timeouts: a request's headers must arrive within
//! the header timeout of its first byte (and a new connection's first request within the
//! header timeout of the connection), and a kept-alive connection with no request may stay
//! idle for the idle timeout. A request being served (its body read, its answer written,
//! a live watch streaming) is governed by neither.
//!
//! hyper's own header timer starts when it waits for a request, so it cannot tell a slow
//! client from an idle kept-alive one; these phases can, from the bytes the connection reads
//! ([`Watched`]) and the requests its service starts and finishes ([`Busy`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request's headers, since the instant.
    Head(Instant),
    /// Requests in progress.
    Busy(u32),
    /// Kept alive with no request, since the instant.
    Idle(Instant),
}

/// One connection's phase, shared by its IO, its service and its watchdog.
pub struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap();
        let next = f(*phase);
        if next != *phase {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// The connection read bytes: an idle connection has started a request.
    fn read_bytes(&self) {
        self.set(|p| match p {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// A request's headers are in and its handler starts.
    pub fn request_started(self: &Arc<Self>) -> Busy {
        self.set(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        Busy(self.clone())
    }

    /// Wait until the connection has been in one phase past its timeout; returns that phase.
    pub async fn expired(&self, header: Duration, idle: Duration) -> Phase {
        loop {
            let notified = self.changed.notified();
            let phase = *self.phase.lock().unwrap();
            let deadline = match phase {
                Phase::Head(since) => since + header,
                Phase::Idle(since) => since + idle,
                Phase::Busy(_) => {
                    notified.await;
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if *self.phase.lock().unwrap() == phase {
                        return phase;
                    }
                }
                _ = notified => {}
            }
        }
    }
}

/// A request in progress: dropped when its answer has been written (or abandoned), which
/// makes the connection idle again once no other request is in progress.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// A connection's IO, telling its [`Activity`] when bytes arrive.
pub struct Watched<T> {
    pub inner: T,
    pub activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_bytes();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that holds its request's [`Busy`] until hyper has written it all (or
/// dropped it), so a streamed answer counts as work, not idleness.
pub struct TrackedBody<B> {
    pub inner: B,
    pub _busy: Busy,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_and_their_deadlines() {
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        // A connection that sends nothing expires in its header phase.
        let a = Activity::new();
        let started = Instant::now();
        assert!(matches!(a.expired(header, idle).await, Phase::Head(_)));
        assert_eq!(started.elapsed(), header);
        // A request in progress never expires; once answered, the idle timeout runs.
        let a = Activity::new();
        let busy = a.request_started();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.expired(header, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished());
        let answered = Instant::now();
        drop(busy);
        assert!(matches!(waiting.await.unwrap(), Phase::Idle(_)));
        assert_eq!(answered.elapsed(), idle);
        // Bytes on an idle connection start the header timeout afresh.
        let a = Activity::new();
        drop(a.request_started());
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.read_bytes();
        let first_byte = Instant::now();
        assert!(matches!(a.expired(header, idle).await, Phase::Head(_)));
        assert_eq!(first_byte.elapsed(), header);
    }
}
