//! ice-peer: a reference ICE peer. Two of them meet in a room of a WebSocket signaling relay
//! (`icebreaker signal`), gather candidates from their interfaces and STUN/TURN servers,
//! connect with the sans-IO agent of `icebreaker-ice`, and measure the path: the offerer sends
//! numbered probes, the answerer echoes them, and the offerer reports the selected pair, the
//! time to connect, the RTT and the loss.
//!
//! The binary is a thin shell over [`driver::run`]; the pieces that need no network are
//! modules of their own so that they are tested alone: the command line ([`cli`]), server URIs
//! ([`uri`]), the signaling messages ([`signaling`]), the probes ([`probe`]) and the report
//! ([`report`]). [`connections`] keeps the TCP, TLS and DTLS connections to TURN servers.

pub mod cli;
pub mod connections;
pub mod driver;
pub mod interfaces;
pub mod probe;
pub mod report;
pub mod signaling;
pub mod uri;
