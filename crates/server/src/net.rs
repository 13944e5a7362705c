//! Sockets and addresses: listeners shared by the workers through `SO_REUSEPORT`, relay sockets,
//! and the host's own addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffers asked for on listeners: a burst of small packets must not overflow
/// the kernel queue while a worker is busy. The kernel caps it at `net.core.rmem_max`.
const LISTENER_BUFFER: usize = 4 << 20;

/// A non-blocking UDP listener on `addr` that every worker binds: the kernel spreads clients
/// over the workers by hashing their 4-tuple, so a client always reaches the same worker.
pub fn udp_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Best effort: a smaller buffer only costs drops under bursts.
    let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Connections waiting to be accepted per listener: a burst of browsers reconnecting after a
/// network change must not be refused while a worker is busy.
const ACCEPT_BACKLOG: i32 = 1024;

/// A non-blocking TCP listener on `addr` that every worker binds: the kernel spreads new
/// connections over the workers.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // A restarted server must not wait for the old one's connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// Fails when another program (or another icebreaker) already listens on `addr` over
/// `protocol`. Listeners bind with `SO_REUSEPORT`, which would otherwise let a second server
/// start on the same port without error and quietly take half of its clients.
pub fn ensure_unused(addr: SocketAddr, protocol: ListenProtocol) -> io::Result<()> {
    let (kind, proto, name) = match protocol {
        ListenProtocol::Udp => (Type::DGRAM, Protocol::UDP, "udp"),
        ListenProtocol::Tcp => (Type::STREAM, Protocol::TCP, "tcp"),
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if protocol == ListenProtocol::Tcp {
        // Connections of an earlier run in TIME_WAIT do not make the port busy.
        socket.set_reuse_address(true)?;
    }
    socket
        .bind(&addr.into())
        .and_then(|()| match protocol {
            // Binding alone succeeds beside a SO_REUSEPORT listener of another user; listening
            // is what collides.
            ListenProtocol::Tcp => socket.listen(1),
            ListenProtocol::Udp => Ok(()),
        })
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("{name} {addr} is already in use by another program: {error}"),
            )
        })
}

/// The transport protocol of a listener, for [`ensure_unused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenProtocol {
    /// UDP.
    Udp,
    /// TCP, for TCP and TLS.
    Tcp,
}

/// A non-blocking relay socket on `addr`, without `SO_REUSEPORT`: a port another worker or
/// program holds must fail to bind, so that two allocations never share one.
pub fn relay_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // DF only when a client asks for it (RFC 8656 §14), not Linux's default of nearly always.
    crate::sockopt::set_dont_fragment(&socket, addr.is_ipv6(), false)?;
    Ok(socket.into())
}

/// The IP addresses of this host's interfaces, loopback included; IPv6 link-local addresses
/// are left out (they need a scope to be used).
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for interface in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let ip = v6.ip();
            if ip.segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
            IpAddr::V6(ip)
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The listen addresses with every wildcard (`0.0.0.0:P`, `[::]:P`) replaced by each interface
/// address of its family on port P. Binding each address on its own, as coturn does, means
/// every request arrives on a socket that knows which address it reached: answers leave from
/// it and relays are allocated on it.
pub fn expand_listen(listen: &[SocketAddr], interfaces: &[IpAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for addr in listen {
        if addr.ip().is_unspecified() {
            for ip in interfaces
                .iter()
                .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
            {
                push_unique(&mut out, SocketAddr::new(*ip, addr.port()));
            }
        } else {
            push_unique(&mut out, *addr);
        }
    }
    out
}

fn push_unique(out: &mut Vec<SocketAddr>, addr: SocketAddr) {
    if !out.contains(&addr) {
        out.push(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_expand_to_each_interface_of_their_family() {
        let interfaces: Vec<IpAddr> = ["127.0.0.1", "192.0.2.5", "::1", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().expect("literal"))
            .collect();
        let listen: Vec<SocketAddr> = ["0.0.0.0:3478", "127.0.0.1:3478", "[::]:3479"]
            .iter()
            .map(|s| s.parse().expect("literal"))
            .collect();
        let expanded: Vec<String> = expand_listen(&listen, &interfaces)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            expanded,
            [
                "127.0.0.1:3478",
                "192.0.2.5:3478",
                "[::1]:3479",
                "[2001:db8::5]:3479"
            ]
        );
    }

    #[test]
    fn this_host_has_a_loopback_address() {
        let addresses = interface_addresses().expect("getifaddrs");
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
    }

    #[test]
    fn relay_ports_are_exclusive_and_listeners_are_shared() {
        let relay = relay_socket("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let taken = relay.local_addr().expect("bound");
        assert!(relay_socket(taken).is_err(), "a relay port is never shared");
        let first = udp_listener("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let port = first.local_addr().expect("bound");
        udp_listener(port).expect("a second worker binds the same listener");
        assert!(
            ensure_unused(port, ListenProtocol::Udp).is_err(),
            "a port in use is reported"
        );
        let free = UdpSocketProbe::free();
        ensure_unused(free, ListenProtocol::Udp).expect("a free port is free");
    }

    #[test]
    fn tcp_listeners_are_shared_and_a_port_in_use_is_reported() {
        let first = tcp_listener("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let port = first.local_addr().expect("bound");
        tcp_listener(port).expect("a second worker binds the same listener");
        let error = ensure_unused(port, ListenProtocol::Tcp).expect_err("in use");
        assert!(
            error
                .to_string()
                .starts_with(&format!("tcp {port} is already in use"))
        );
        // A plain listener of another program, without SO_REUSEPORT, is reported too.
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = other.local_addr().expect("bound");
        assert!(ensure_unused(other, ListenProtocol::Tcp).is_err());
        drop(first);
    }

    struct UdpSocketProbe;

    impl UdpSocketProbe {
        fn free() -> SocketAddr {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.local_addr().expect("bound")
        }
    }
}
