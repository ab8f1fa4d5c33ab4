//! Per-OS network state: routes and device ownership.
//!
//! One module per OS with the same functions; the engine calls
//! `os::platform::…` and never names an OS. Planning is pure (state in,
//! commands out) and tested with golden commands; applying goes through the
//! injectable [`Runner`](crate::runner::Runner).

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux as platform;
