//! Bounded execution of CPU-heavy inference off the async runtime.
//!
//! At most `threads` inferences run at once (each on tokio's blocking pool), at most `queue`
//! more wait for a thread, and a request that finds the queue full is refused at once (503 with
//! `Retry-After`) rather than piling up. Waiting for a thread and running are both bounded by
//! deadlines; a run past its deadline is answered 504 (the computation finishes in the
//! background and frees its thread; it cannot be interrupted mid-layer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Why a job did not run to completion.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The queue is full.
    #[error("server saturated: {queued} requests are already waiting for an inference thread")]
    Saturated {
        /// Queue capacity.
        queued: usize,
    },
    /// No thread became free within the queue deadline.
    #[error("no inference thread became free within {0:?}")]
    QueueTimeout(Duration),
    /// The job ran past its deadline.
    #[error("inference did not finish within {0:?}")]
    Timeout(Duration),
    /// The job panicked or was cancelled.
    #[error("inference task failed: {0}")]
    Failed(String),
}

/// How long a job waited and ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobTimes {
    /// Waiting for a thread.
    pub queue: Duration,
    /// Running.
    pub compute: Duration,
}

/// The inference pool.
#[derive(Debug, Clone)]
pub struct InferencePool {
    admitted: Arc<Semaphore>,
    threads: Arc<Semaphore>,
    queue: usize,
    queue_timeout: Duration,
    run_timeout: Duration,
}

impl InferencePool {
    /// A pool of `threads` (≥ 1) concurrent jobs and `queue` waiting ones.
    pub fn new(threads: usize, queue: usize, queue_timeout: Duration, run_timeout: Duration) -> Self {
        let threads = threads.max(1);
        Self {
            admitted: Arc::new(Semaphore::new(threads + queue)),
            threads: Arc::new(Semaphore::new(threads)),
            queue,
            queue_timeout,
            run_timeout,
        }
    }

    /// Runs `job` on a blocking thread, within the pool's bounds.
    pub async fn run<T, F>(&self, job: F) -> Result<(T, JobTimes), PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted =
            self.admitted.clone().try_acquire_owned().map_err(|_| PoolError::Saturated { queued: self.queue })?;
        let waited = Instant::now();
        let thread = tokio::time::timeout(self.queue_timeout, self.threads.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::QueueTimeout(self.queue_timeout))?
            .map_err(|e| PoolError::Failed(e.to_string()))?;
        let queue = waited.elapsed();
        let handle = tokio::task::spawn_blocking(move || {
            // Both permits are held until the job really ends, even after a timeout answered.
            let _permits = (admitted, thread);
            let start = Instant::now();
            let out = job();
            (out, start.elapsed())
        });
        match tokio::time::timeout(self.run_timeout, handle).await {
            Err(_) => Err(PoolError::Timeout(self.run_timeout)),
            Ok(Err(join)) => Err(PoolError::Failed(join.to_string())),
            Ok(Ok((out, compute))) => Ok((out, JobTimes { queue, compute })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (at most 5 s) until `ready` holds.
    async fn until(ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_saturated_and_times_out() {
        let pool = InferencePool::new(1, 1, Duration::from_millis(50), Duration::from_millis(300));
        let slow = |ms: u64| move || std::thread::sleep(Duration::from_millis(ms));
        let running = tokio::spawn({
            let p = pool.clone();
            async move { p.run(slow(400)).await }
        });
        until(|| pool.threads.available_permits() == 0).await;
        let queued = tokio::spawn({
            let p = pool.clone();
            async move { p.run(slow(1)).await }
        });
        until(|| pool.admitted.available_permits() == 0).await;
        // One running, one queued: the third is refused immediately.
        assert_eq!(pool.run(slow(1)).await.err(), Some(PoolError::Saturated { queued: 1 }));
        // The queued one gives up after 50 ms (the first runs 400 ms).
        assert!(matches!(queued.await, Ok(Err(PoolError::QueueTimeout(_)))));
        // The running one outlives the 300 ms run deadline.
        assert!(matches!(running.await, Ok(Err(PoolError::Timeout(_)))));
        // Its thread stays busy until the job really ends, then frees up.
        until(|| pool.threads.available_permits() == 1).await;
        let (v, times) = match pool.run(|| 41 + 1).await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(v, 42);
        assert!(times.compute < Duration::from_millis(100));
        assert_eq!(pool.admitted.available_permits(), 2);
    }
}
