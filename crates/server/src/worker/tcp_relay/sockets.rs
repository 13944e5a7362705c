//! The sockets of TCP allocations: the listeners on relayed addresses, shared out between the
//! workers, and connections opened from those addresses.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use super::{LISTENER_SLOTS, TCP_BASE};

/// Peers' connections waiting to be accepted per relayed address.
const RELAY_BACKLOG: i32 = 64;

/// The TCP relay ports the server's listeners hold, across all workers: `SO_REUSEPORT` (which
/// connections to peers need beside a listener) would let two workers listen on one port.
#[derive(Clone, Default)]
pub(crate) struct TcpRelayPorts(Arc<Mutex<HashSet<SocketAddr>>>);

impl TcpRelayPorts {
    fn lock(&self) -> MutexGuard<'_, HashSet<SocketAddr>> {
        // Every update leaves the set whole: a panic while it was held harms nothing.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The listeners of one worker's TCP allocations, lent to the core with the UDP relays.
#[derive(Default)]
pub(in crate::worker) struct Listeners {
    pub(super) slots: Vec<Option<(SocketAddr, TcpListener)>>,
    free: Vec<usize>,
    pub(super) by_addr: HashMap<SocketAddr, usize>,
    pub(super) ports: TcpRelayPorts,
}

impl Listeners {
    /// Listens on `addr` for peers ([`icebreaker_turn::RelaySockets::bind_tcp`]).
    pub(in crate::worker) fn bind(&mut self, registry: &Registry, addr: SocketAddr) -> bool {
        if self.by_addr.contains_key(&addr) {
            return false;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < LISTENER_SLOTS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return false,
        };
        let ports = self.ports.clone();
        let mut held = ports.lock();
        let listener = if held.contains(&addr) {
            Err(io::ErrorKind::AddrInUse.into())
        } else {
            relay_listener(addr)
        };
        let mut listener = match listener {
            Ok(listener) => TcpListener::from_std(listener),
            Err(error) => {
                debug!(%addr, %error, "TCP relay port unavailable");
                self.free.push(slot);
                return false;
            }
        };
        let token = Token(TCP_BASE + slot);
        if let Err(error) = registry.register(&mut listener, token, Interest::READABLE) {
            debug!(%addr, %error, "cannot watch a TCP relay listener");
            self.free.push(slot);
            return false;
        }
        held.insert(addr);
        self.slots[slot] = Some((addr, listener));
        self.by_addr.insert(addr, slot);
        true
    }

    /// Stops listening on `addr` ([`icebreaker_turn::RelaySockets::release_tcp`]).
    pub(in crate::worker) fn release(&mut self, registry: &Registry, addr: SocketAddr) {
        let Some(slot) = self.by_addr.remove(&addr) else {
            return;
        };
        if let Some((_, mut listener)) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(&mut listener);
        }
        self.free.push(slot);
        self.ports.lock().remove(&addr);
    }
}

/// A TCP listener on the relayed address `addr`, with `SO_REUSEADDR` and `SO_REUSEPORT` so
/// that connections to peers can be opened from the same address. A probe bound first without
/// `SO_REUSEPORT` fails on a port another program listens on, which the listener itself
/// would share.
pub(super) fn relay_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let new_socket = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        Ok(socket)
    };
    new_socket()?.bind(&addr.into())?;
    let socket = new_socket()?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(RELAY_BACKLOG)?;
    Ok(socket.into())
}

/// A connection from the relayed address `relay` to `peer`, under way.
pub(super) fn connect_from(relay: SocketAddr, peer: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(relay),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if relay.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&relay.into())?;
    match socket.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether a connection under way is made: `None` while it still is under way.
pub(super) fn connect_outcome(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(error)) | Err(error) => return Some(Err(error)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
}
