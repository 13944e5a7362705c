//! Icebreaker, the STUN/TURN server: the parts of the `icebreaker` binary that other code
//! reuses. For now that is the configuration ([`config`]): defaults, a TOML file and
//! command-line flags merged into one checked [`Config`]. The daemon's live counters and
//! their HTTP endpoint are in [`metrics`]. The WebSocket signaling relay of `icebreaker signal`
//! is in [`signal`].
//!
//! The daemon builds on the same [`Flags`] and [`Config`], so every subcommand that takes
//! configuration understands the same keys and reports errors the same way.

// Denied everywhere but `sockopt`, which sets the one socket option no safe crate exposes.
#![deny(unsafe_code)]

mod batch;
pub mod config;
mod dtls;
pub mod metrics;
pub mod net;
pub mod proxy_protocol;
pub mod serve;
pub mod signal;
mod sockopt;
mod stream;
pub mod tls;
mod worker;

pub use config::{Config, ConfigError, Flags};
