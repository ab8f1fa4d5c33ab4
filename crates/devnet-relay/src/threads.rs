//! Session threads: each client session lives on one thread, a
//! current-thread runtime of its own, from its TLS handshake to its end.
//!
//! Why not the multi-thread runtime: a session is one task that drives its
//! TLS link and its destination sockets. There, every time the I/O driver
//! woke that task, tokio also woke an idle worker to look for work to
//! steal, which found none and slept again. In the lab (`bench/counts.sh`,
//! 2 GiB through one stream, on two cores, two runs of each build) the
//! relay switched context 25,000–38,000 times uploading and 21,000–25,000
//! times downloading; on session threads, 3,900–6,800 and 2,600, in 10–17 %
//! fewer syscalls.
//!
//! Sessions still use every core the relay may: a new session goes to the
//! thread with the fewest live sessions, and there is one thread per core
//! (`available_parallelism` follows the container's CPU limit).
//!
//! **What it does not do:** move a session once it is placed, or weigh
//! sessions by their traffic.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Where sessions run: see the module's doc.
#[derive(Debug)]
pub struct SessionThreads {
    threads: Vec<SessionThread>,
}

#[derive(Debug)]
struct SessionThread {
    runtime: Handle,
    /// Sessions placed here and not yet ended.
    live: Arc<AtomicUsize>,
    /// Dropped with the pool, which ends the thread (its sessions, if any
    /// are still running, are dropped with its runtime).
    _stop: Option<oneshot::Sender<()>>,
}

impl SessionThreads {
    /// `count` threads, named `devnet-session-<n>`.
    pub fn start(count: NonZeroUsize) -> io::Result<Self> {
        let threads = (0..count.get())
            .map(|n| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let handle = runtime.handle().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                std::thread::Builder::new().name(format!("devnet-session-{n}")).spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
                Ok(SessionThread { runtime: handle, live: Arc::default(), _stop: Some(stop) })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// One thread per core this process may use.
    pub fn per_core() -> io::Result<Self> {
        Self::start(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }

    /// Sessions run on the caller's own runtime: for tests, and for
    /// embedding the relay in a runtime that is already there.
    pub fn here() -> Self {
        Self { threads: vec![SessionThread { runtime: Handle::current(), live: Arc::default(), _stop: None }] }
    }

    /// How many threads sessions are spread over.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Never true: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Runs `make(thread)`'s future on the thread with the fewest live
    /// sessions, in `set`. `make` is called on the chosen thread, so what it
    /// registers with a runtime (a socket from `from_std`, a timer) belongs
    /// to that thread's.
    pub fn spawn<F, Fut>(&self, set: &mut JoinSet<Fut::Output>, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let thread = &self.threads[fewest(self.threads.iter().map(|t| t.live.load(Ordering::Relaxed)))];
        let live = Live::enter(thread.live.clone());
        set.spawn_on(
            async move {
                let _live = live;
                make().await
            },
            &thread.runtime,
        );
    }

    /// Live sessions on each thread, in thread order.
    pub fn live(&self) -> Vec<usize> {
        self.threads.iter().map(|t| t.live.load(Ordering::Relaxed)).collect()
    }
}

/// The index of the smallest count, the first of equals.
fn fewest(counts: impl Iterator<Item = usize>) -> usize {
    counts.enumerate().min_by_key(|&(i, n)| (n, i)).map_or(0, |(i, _)| i)
}

/// Counts one live session on a thread until dropped (when its task ends,
/// or is aborted).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn enter(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_with_fewest_sessions_wins_and_the_first_of_equals() {
        let cases: &[(&[usize], usize)] =
            &[(&[0], 0), (&[0, 0], 0), (&[1, 0], 1), (&[2, 1, 1], 1), (&[3, 5, 2, 2], 2), (&[0, 7], 0)];
        for (counts, want) in cases {
            assert_eq!(fewest(counts.iter().copied()), *want, "{counts:?}");
        }
    }

    #[tokio::test]
    async fn sessions_spread_over_the_threads_run_there_and_are_counted_while_they_live() {
        let threads = SessionThreads::start(NonZeroUsize::new(2).expect("2")).expect("threads");
        let mut set = JoinSet::new();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..3 {
            let mut released = released.clone();
            threads.spawn(&mut set, move || async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = released.wait_for(|r| *r).await;
                // Still on the same thread after waiting.
                assert_eq!(std::thread::current().name().map(str::to_owned), name);
                name
            });
        }
        // Placed on spawning, not when the task first runs.
        assert_eq!(threads.live(), [2, 1]);
        release.send(true).expect("release");
        let mut names = Vec::new();
        while let Some(done) = set.join_next().await {
            names.push(done.expect("session task").expect("a named thread"));
        }
        names.sort();
        assert_eq!(names, ["devnet-session-0", "devnet-session-0", "devnet-session-1"]);
        assert_eq!(threads.live(), [0, 0]);
        // The next one goes to the first thread again.
        threads.spawn(&mut set, || async { std::thread::current().name().map(str::to_owned) });
        let next = set.join_next().await.expect("one").expect("ran");
        assert_eq!(next.as_deref(), Some("devnet-session-0"));
    }

    #[tokio::test]
    async fn an_aborted_session_is_no_longer_counted() {
        let threads = SessionThreads::start(NonZeroUsize::MIN).expect("threads");
        let mut set = JoinSet::new();
        threads.spawn(&mut set, std::future::pending::<()>);
        assert_eq!(threads.live(), [1]);
        set.abort_all();
        while set.join_next().await.is_some() {}
        assert_eq!(threads.live(), [0]);
    }
}
