//! The small tokio runtime that object-store I/O runs on, beside the shards.
//!
//! The shards are glommio executors, not tokio, and `object_store` needs
//! tokio. So every object-store call runs on this runtime, and callers on
//! other threads get the result through a `futures_channel::oneshot`, which
//! any executor can await. Nothing here needs the caller to be inside a tokio
//! context.

use std::future::Future;
use std::sync::Arc;

use futures_channel::oneshot;
use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::WalError;

/// Largest worker count accepted: this runtime only waits on I/O.
pub const IO_THREADS_MAX: usize = 8;

/// A cloneable owner of the I/O runtime. The runtime stops (in the
/// background, without waiting for tasks) when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct IoRuntime {
    /// Held only to keep the runtime alive while any clone exists.
    _owner: Arc<Owner>,
    handle: Handle,
}

#[derive(Debug)]
struct Owner {
    runtime: Option<Runtime>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // `shutdown_background` is allowed anywhere, even inside an async
        // context, where dropping a runtime normally panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl IoRuntime {
    /// Starts a multi-thread tokio runtime with `worker_threads` workers
    /// (1..=`IO_THREADS_MAX`), named `ferry-io`.
    pub fn new(worker_threads: usize) -> Result<IoRuntime, WalError> {
        if !(1..=IO_THREADS_MAX).contains(&worker_threads) {
            return Err(WalError::config(
                "io_threads",
                format!("1..={IO_THREADS_MAX}"),
                worker_threads.to_string(),
            ));
        }
        let runtime = Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .max_blocking_threads(16)
            .thread_name("ferry-io")
            .enable_all()
            .build()
            .map_err(|e| WalError::Runtime {
                source: Arc::new(e),
            })?;
        let handle = runtime.handle().clone();
        Ok(IoRuntime {
            _owner: Arc::new(Owner {
                runtime: Some(runtime),
            }),
            handle,
        })
    }

    /// The tokio handle, for code that is already async on this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on the runtime; the receiver yields its output. If the
    /// runtime stops first, the receiver yields `Canceled`.
    pub fn spawn<F>(&self, fut: F) -> oneshot::Receiver<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx
    }

    /// Blocks the calling thread until `fut` completes on the runtime.
    ///
    /// For tests, tools and start-up. It blocks the thread, so a shard must
    /// not call it while serving, and it panics if called from inside a
    /// tokio runtime.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.handle.block_on(fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_works_from_a_plain_thread() {
        let io = IoRuntime::new(1).unwrap();
        let rx = io.spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            41 + 1
        });
        let io2 = io.clone();
        let got = std::thread::spawn(move || io2.block_on(rx)).join().unwrap();
        assert_eq!(got, Ok(42));
    }

    #[test]
    fn thread_count_is_bounded() {
        assert!(IoRuntime::new(0).is_err());
        assert!(IoRuntime::new(IO_THREADS_MAX + 1).is_err());
    }

    #[test]
    fn spawned_work_is_canceled_when_the_runtime_stops() {
        let io = IoRuntime::new(1).unwrap();
        let waiter = IoRuntime::new(1).unwrap();
        let rx = io.spawn(std::future::pending::<()>());
        drop(io);
        assert!(waiter.block_on(rx).is_err());
    }
}
