//! The byte budget: how many bytes the relay may hold for destinations that
//! have not read them yet. Pure bookkeeping: stream ids and byte counts in,
//! window grants out.
//!
//! A client may only send what the relay granted (the stream's window), and
//! the relay keeps every byte it received until the destination took it. So
//! the credit a stream holds, granted and not yet drained into its
//! destination, bounds what the relay holds for it. Handing out a fixed
//! window at every open would let a client holding 1,024 streams to a sink
//! that never reads pin 1,024 windows; instead each session takes credit from
//! its own budget and from one budget shared by all sessions:
//!
//! - a stream starts with a small window that doubles each time its
//!   destination drained a whole window, up to the largest;
//! - credit drained by the destination is returned and granted again;
//! - when a budget is spent, streams get no more credit (a window of zero is
//!   allowed) and wait, oldest first, for some to come back. Nothing is
//!   buffered beyond the budget and no data is refused.
//!
//! Every session may use a small floor whatever the shared budget says, so
//! clients flooding the relay cannot stall an honest one's next request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devnet_proto::StreamId;

/// A new stream's window.
pub const INITIAL_WINDOW: usize = 256 * 1024;
/// The window a stream grows to when its destination keeps up (4 MiB carries
/// 3.3 Gbit/s at 10 ms).
pub const MAX_WINDOW: usize = 4 * 1024 * 1024;
/// Credit one session may hold across its streams.
pub const SESSION_BUDGET: usize = 16 * 1024 * 1024;
/// Credit all sessions together may hold beyond their floors. The relay
/// holds at most twice its credit in memory (the received bytes and the copy
/// its socket writer is writing), well inside the pod's 256 MiB limit.
pub const GLOBAL_BUDGET: usize = 64 * 1024 * 1024;
/// Credit a session may hold whatever the shared budget says.
pub const SESSION_FLOOR: usize = 1024 * 1024;

/// The budget shared by all sessions.
#[derive(Debug)]
pub struct Global {
    limit: usize,
    held: AtomicUsize,
}

impl Global {
    pub fn new(limit: usize) -> Self {
        Self { limit, held: AtomicUsize::new(0) }
    }

    /// Credit held by all sessions now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes up to `want`, as much as is left below the limit.
    fn try_take(&self, want: usize) -> usize {
        let mut current = self.held.load(Ordering::Relaxed);
        loop {
            let take = want.min(self.limit.saturating_sub(current));
            if take == 0 {
                return 0;
            }
            match self.held.compare_exchange_weak(current, current + take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(seen) => current = seen,
            }
        }
    }

    fn add(&self, n: usize) {
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The sizes a session's credit follows (the constants above, smaller in tests).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub initial_window: usize,
    pub max_window: usize,
    pub session: usize,
    pub floor: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { initial_window: INITIAL_WINDOW, max_window: MAX_WINDOW, session: SESSION_BUDGET, floor: SESSION_FLOOR }
    }
}

#[derive(Debug)]
struct StreamCredit {
    /// Granted and not yet drained into the destination.
    outstanding: usize,
    window: usize,
    /// Drained since the window last grew.
    drained: usize,
    /// Waiting in [`Credit::owed`].
    owed: bool,
}

/// One session's credit.
#[derive(Debug)]
pub struct Credit {
    global: Arc<Global>,
    limits: Limits,
    held: usize,
    streams: HashMap<StreamId, StreamCredit>,
    /// Streams owed credit, in the order they asked.
    owed: VecDeque<StreamId>,
}

impl Credit {
    pub fn new(global: Arc<Global>, limits: Limits) -> Self {
        Self { global, limits, held: 0, streams: HashMap::new(), owed: VecDeque::new() }
    }

    /// Credit this session holds now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A stream was accepted: its first window (zero when the budget is spent;
    /// it is owed and comes with a later grant).
    pub fn open(&mut self, id: StreamId) -> u32 {
        let window = self.limits.initial_window;
        // Streams already waiting come first.
        let got = if self.owed.is_empty() { self.take(window) } else { 0 };
        let owed = got < window;
        if owed {
            self.owed.push_back(id);
        }
        self.streams.insert(id, StreamCredit { outstanding: got, window, drained: 0, owed });
        to_u32(got)
    }

    /// The destination of `id` took `n` bytes: the credit returns, and the
    /// grants to send now (this stream's and any owed ones).
    pub fn drained(&mut self, id: StreamId, n: usize) -> Vec<(StreamId, u32)> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Vec::new();
        };
        let n = n.min(stream.outstanding);
        stream.outstanding -= n;
        stream.drained += n;
        if stream.drained >= stream.window && stream.window < self.limits.max_window {
            stream.window = (stream.window * 2).min(self.limits.max_window);
            stream.drained = 0;
        }
        // Grants go out in batches of a quarter window, so credit frames stay rare.
        if !stream.owed && stream.window - stream.outstanding >= stream.window / 4 {
            stream.owed = true;
            self.owed.push_back(id);
        }
        self.give(n);
        self.serve_owed()
    }

    /// Stream `id` is gone: its credit returns to whoever is owed some.
    pub fn close(&mut self, id: StreamId) -> Vec<(StreamId, u32)> {
        let Some(stream) = self.streams.remove(&id) else {
            return Vec::new();
        };
        self.give(stream.outstanding);
        self.serve_owed()
    }

    fn serve_owed(&mut self) -> Vec<(StreamId, u32)> {
        let mut grants = Vec::new();
        while let Some(&id) = self.owed.front() {
            // Closed streams leave their place behind; skip it.
            let Some(want) = self.streams.get(&id).map(|s| s.window - s.outstanding) else {
                self.owed.pop_front();
                continue;
            };
            let got = self.take(want);
            if got == 0 {
                break;
            }
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.outstanding += got;
                if got == want {
                    stream.owed = false;
                }
            }
            grants.push((id, to_u32(got)));
            if got < want {
                break;
            }
            self.owed.pop_front();
        }
        grants
    }

    fn take(&mut self, want: usize) -> usize {
        let want = want.min(self.limits.session.saturating_sub(self.held));
        let from_floor = want.min(self.limits.floor.saturating_sub(self.held));
        self.global.add(from_floor);
        let got = from_floor + self.global.try_take(want - from_floor);
        self.held += got;
        got
    }

    fn give(&mut self, n: usize) {
        self.held -= n;
        self.global.give(n);
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.global.give(self.held);
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn limits() -> Limits {
        Limits { initial_window: 64 * KIB, max_window: 256 * KIB, session: 1024 * KIB, floor: 128 * KIB }
    }

    #[test]
    fn sinks_that_never_read_hold_at_most_the_session_budget() {
        let global = Arc::new(Global::new(64 * 1024 * KIB));
        let mut credit = Credit::new(global.clone(), limits());
        let granted: usize = (1..2000).step_by(2).map(|id| credit.open(id) as usize).sum();
        assert_eq!(granted, 1024 * KIB, "16 streams get a window, the rest wait");
        assert_eq!(credit.held(), 1024 * KIB);
        assert_eq!(global.held(), 1024 * KIB);
        drop(credit);
        assert_eq!(global.held(), 0, "a session's credit returns when it ends");
    }

    #[test]
    fn drained_credit_goes_to_the_oldest_waiting_stream_and_windows_grow() {
        let global = Arc::new(Global::new(64 * 1024 * KIB));
        let mut credit = Credit::new(global, Limits { session: 128 * KIB, ..limits() });
        assert_eq!(credit.open(1), 64 * 1024);
        assert_eq!(credit.open(3), 64 * 1024);
        assert_eq!(credit.open(5), 0, "budget spent: a zero window");
        // Stream 1's destination takes a quarter window: 5 is owed first.
        assert_eq!(credit.drained(1, 16 * KIB), vec![(5, 16 * 1024)]);
        // 3 closes: its credit goes to 5, then to 1.
        assert_eq!(credit.close(3), vec![(5, 48 * 1024), (1, 16 * 1024)]);
        // 1 drains a whole window: it doubles (the budget now has room for it).
        assert_eq!(credit.close(5), vec![]);
        let grants = credit.drained(1, 64 * KIB);
        assert_eq!(grants, vec![(1, 128 * 1024)], "the window grew to 128 KiB and is full again");
        assert_eq!(credit.held(), 128 * KIB);
    }

    #[test]
    fn a_session_keeps_its_floor_when_others_spent_the_shared_budget() {
        let global = Arc::new(Global::new(512 * KIB));
        let mut flood = Credit::new(global.clone(), limits());
        for id in (1..200).step_by(2) {
            flood.open(id);
        }
        assert_eq!(global.held(), 512 * KIB, "the flood took every shared byte");
        let mut honest = Credit::new(global, limits());
        assert_eq!(honest.open(1), 64 * 1024, "the floor still gives a window");
        assert_eq!(honest.open(3), 64 * 1024);
        assert_eq!(honest.open(5), 0, "beyond the floor it waits like everyone");
    }
}
