//! What the tests that run the real TURN core share.

use std::collections::HashSet;
use std::net::SocketAddr;

use icebreaker_turn::RelaySockets;

/// Relay sockets that live in a set.
#[derive(Default)]
pub(crate) struct Sockets {
    pub(crate) bound: HashSet<SocketAddr>,
}

impl RelaySockets for Sockets {
    fn bind(&mut self, addr: SocketAddr) -> bool {
        self.bound.insert(addr)
    }

    fn release(&mut self, addr: SocketAddr) {
        assert!(self.bound.remove(&addr), "released {addr}, never bound");
    }
}
