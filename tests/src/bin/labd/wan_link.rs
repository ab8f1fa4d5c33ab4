//! `devnet-labd wan-link`: a WAN link in userspace, for kernels without netem.
//!
//! Two TAP devices, each created inside its own network namespace, joined by
//! this process: every Ethernet frame read from one is written to the other
//! after a fixed one-way delay, unless the direction's loss drops it. TAP (L2)
//! rather than TUN so that ARP and neighbour discovery cross the link as they
//! would a cable. Per direction one thread reads frames into a queue and
//! one writes them out when due; the delay is fixed, so each queue is in
//! deadline order and a `VecDeque` is the deadline queue.
//!
//! Like netem with the bench's command (`delay D loss P`): uniform random loss,
//! decided once per frame per direction (each direction its own seeded RNG,
//! so a run is repeatable). At most `limit` frames in flight per direction,
//! the rest tail-dropped; the default is far above what this machine fills,
//! as netem's default of 1000 is in practice (netem on a veth counts GSO
//! packets of up to 64 KB; a TAP hands over single frames), so that the only
//! loss is the loss asked for.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// The largest frame a TAP hands over without offloads (no IFF_VNET_HDR):
/// the kernel segments before the device, so frames are MTU + 14 at most;
/// the slack is for an MTU raised by hand.
const FRAME_MAX: usize = 65_536;

/// SplitMix64: small, seeded, good enough for a Bernoulli loss decision.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of the link, sans IO: frames in, frames out when due.
pub struct Direction {
    queue: VecDeque<(Instant, Vec<u8>)>,
    delay: Duration,
    loss: f64,
    limit: usize,
    rng: SplitMix64,
    pub passed: u64,
    pub lost: u64,
    pub overflowed: u64,
}

impl Direction {
    /// `loss` is a probability (0.001 for 0.1 %).
    pub fn new(delay: Duration, loss: f64, limit: usize, seed: u64) -> Self {
        Self { queue: VecDeque::new(), delay, loss, limit, rng: SplitMix64(seed), passed: 0, lost: 0, overflowed: 0 }
    }

    /// A frame arrived at `now`: queue it for `now + delay`, or drop it (lost,
    /// or the queue is full). Returns the buffer when it was dropped, for reuse.
    pub fn offer(&mut self, now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        if self.loss > 0.0 && self.rng.next_f64() < self.loss {
            self.lost += 1;
            return Some(frame);
        }
        if self.queue.len() >= self.limit {
            self.overflowed += 1;
            return Some(frame);
        }
        self.queue.push_back((now + self.delay, frame));
        None
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _)| *due)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        self.passed += 1;
        self.queue.pop_front().map(|(_, frame)| frame)
    }
}

/// An end of the link: `NETNS:IFNAME`.
pub fn parse_end(s: &str) -> Result<(String, String)> {
    let (ns, ifname) =
        s.split_once(':').with_context(|| format!("link end {s:?}: want NETNS:IFNAME, e.g. bench-laptop:eth0"))?;
    if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
        bail!("link end {s:?}: {ns:?} is not a network namespace name (see `ip netns list`)");
    }
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') {
        bail!("link end {s:?}: an interface name has 1 to 15 characters and no '/'");
    }
    Ok((ns.to_string(), ifname.to_string()))
}

/// Create TAP `ifname` inside network namespace `ns` (`/run/netns/<ns>`). A
/// TAP belongs to the namespace of the thread that opened `/dev/net/tun`, so
/// this thread steps into `ns` for the open and back out.
pub fn open_tap_in(ns: &str, ifname: &str) -> Result<SyncDevice> {
    let home = File::open("/proc/thread-self/ns/net").context("open this thread's network namespace")?;
    let target = File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("network namespace {ns}: not found under /run/netns (is the lab up?)"))?;
    setns(&target, CloneFlags::CLONE_NEWNET).with_context(|| format!("enter network namespace {ns} (needs root)"))?;
    let tap = DeviceBuilder::new().name(ifname).layer(Layer::L2).mtu(1500).build_sync().with_context(|| {
        format!("create TAP {ifname} in {ns} (an interface of that name already there? the tun driver missing?)")
    });
    // Not being able to step back would leave the next TAP in the wrong namespace.
    setns(&home, CloneFlags::CLONE_NEWNET).context("return to this process's network namespace")?;
    tap
}

pub struct Config {
    pub a: (String, String),
    pub b: (String, String),
    pub delay: Duration,
    pub loss_percent: f64,
    pub limit: usize,
    pub seed: u64,
}

/// One direction's queue, shared by the thread reading its source TAP and
/// the thread writing its destination TAP.
struct Shared {
    dir: Mutex<Direction>,
    due: Condvar,
}

/// Run the link until killed (the TAPs vanish with the process). Per
/// direction a reader and a writer thread: the writer sleeps on a condvar
/// until the earliest frame is due (a futex timeout, so microseconds late,
/// not a millisecond tick), then sends every due frame.
pub fn run(cfg: Config) -> Result<()> {
    if !(0.0..=100.0).contains(&cfg.loss_percent) {
        bail!("--loss-percent {}: want a percentage from 0 to 100", cfg.loss_percent);
    }
    let a = Arc::new(open_tap_in(&cfg.a.0, &cfg.a.1)?);
    let b = Arc::new(open_tap_in(&cfg.b.0, &cfg.b.1)?);
    let loss = cfg.loss_percent / 100.0;
    println!(
        "wan-link {}:{} <-> {}:{}: {:?} each way, {}% loss each way, limit {} frames",
        cfg.a.0, cfg.a.1, cfg.b.0, cfg.b.1, cfg.delay, cfg.loss_percent, cfg.limit
    );
    // Independent RNG streams per direction.
    let seeds = [cfg.seed, cfg.seed ^ 0xb5ad_4ece_da1c_e2a9];
    // The first thread to stop (its TAP gone with its namespace) stops the
    // link: the process exits and the other TAP goes too.
    let (done, stopped) = std::sync::mpsc::channel::<Result<()>>();
    for (i, (from, to)) in [(a.clone(), b.clone()), (b, a)].into_iter().enumerate() {
        let shared = Arc::new(Shared {
            dir: Mutex::new(Direction::new(cfg.delay, loss, cfg.limit, seeds[i])),
            due: Condvar::new(),
        });
        let (s, d) = (shared.clone(), done.clone());
        std::thread::spawn(move || d.send(read_side(&from, &s)));
        let d = done.clone();
        std::thread::spawn(move || d.send(write_side(&to, &shared)));
    }
    stopped.recv().context("wan-link threads")??;
    Ok(())
}

fn read_side(tap: &SyncDevice, shared: &Shared) -> Result<()> {
    let mut buf = vec![0u8; FRAME_MAX];
    loop {
        let len = tap.recv(&mut buf).context("read from TAP (its namespace removed?)")?;
        let now = Instant::now();
        let mut dir = shared.dir.lock().expect("wan-link queue lock");
        let was_empty = dir.next_due().is_none();
        let overflowed = dir.overflowed;
        dir.offer(now, buf[..len].to_vec());
        if dir.overflowed > overflowed && dir.overflowed.is_power_of_two() {
            eprintln!("wan-link: queue full, {} frames tail-dropped so far (raise --limit)", dir.overflowed);
        }
        if was_empty {
            shared.due.notify_one();
        }
    }
}

fn write_side(tap: &SyncDevice, shared: &Shared) -> Result<()> {
    let mut out = Vec::new();
    loop {
        {
            let mut dir = shared.dir.lock().expect("wan-link queue lock");
            loop {
                let now = Instant::now();
                match dir.next_due() {
                    None => dir = shared.due.wait(dir).expect("wan-link queue lock"),
                    Some(due) if due > now => {
                        dir = shared.due.wait_timeout(dir, due - now).expect("wan-link queue lock").0;
                    }
                    Some(_) => break,
                }
            }
            let now = Instant::now();
            while let Some(frame) = dir.pop_due(now) {
                out.push(frame);
            }
        }
        for frame in out.drain(..) {
            // A write fails while the other end is down (EIO): a lost
            // frame, as on a wire.
            let _ = tap.send(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_leave_after_the_delay_in_order() {
        let t0 = Instant::now();
        let mut d = Direction::new(Duration::from_millis(10), 0.0, 1000, 1);
        assert!(d.offer(t0, vec![1]).is_none());
        assert!(d.offer(t0 + Duration::from_millis(1), vec![2]).is_none());
        assert_eq!(d.pop_due(t0 + Duration::from_millis(9)), None);
        assert_eq!(d.pop_due(t0 + Duration::from_millis(10)), Some(vec![1]));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(10)), None);
        assert_eq!(d.next_due(), Some(t0 + Duration::from_millis(11)));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(11)), Some(vec![2]));
    }

    #[test]
    fn loss_is_near_the_set_rate_and_repeatable() {
        let run = |seed| {
            let mut d = Direction::new(Duration::ZERO, 0.01, usize::MAX, seed);
            let t0 = Instant::now();
            for _ in 0..100_000 {
                d.offer(t0, Vec::new());
                while d.pop_due(t0).is_some() {}
            }
            d.lost
        };
        let lost = run(7);
        assert!((800..=1200).contains(&lost), "1 % of 100000 frames lost, got {lost}");
        assert_eq!(lost, run(7), "same seed, same losses");
    }

    #[test]
    fn a_full_queue_tail_drops() {
        let t0 = Instant::now();
        let mut d = Direction::new(Duration::from_millis(1), 0.0, 2, 1);
        assert!(d.offer(t0, vec![1]).is_none());
        assert!(d.offer(t0, vec![2]).is_none());
        assert_eq!(d.offer(t0, vec![3]), Some(vec![3]));
        assert_eq!(d.overflowed, 1);
    }

    #[test]
    fn a_bad_link_end_names_the_fix() {
        assert!(parse_end("eth0").expect_err("no namespace").to_string().contains("NETNS:IFNAME"));
        assert!(parse_end("ns:averyveryverylongname").is_err());
        assert_eq!(parse_end("bench-laptop:eth0").expect("a good end"), ("bench-laptop".into(), "eth0".into()));
    }
}
