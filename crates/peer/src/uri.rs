//! The STUN and TURN URIs ice-peer takes: the RFC 7064/7065 forms of
//! [`icebreaker_ice::uri`], resolved with the system's resolver.
//!
//! TURN servers are reached over UDP (`turn:`, `?transport=udp`), TCP (`?transport=tcp`),
//! TLS (`turns:`) or DTLS (`turns:…?transport=udp`); the relayed candidate is UDP whichever it
//! is. STUN servers are reached over UDP only: a server-reflexive address learnt over TCP or
//! TLS (`stuns:`) would be a TCP one, and one learnt over DTLS (`stuns:…?transport=udp`) that
//! of the association's own socket, of no use to the agent's sockets; both are refused with
//! an error that says so.

use std::io;
use std::net::SocketAddr;

pub use icebreaker_ice::uri::{DEFAULT_PORT, Host, Scheme, ServerUri, Transport, UriError};

/// Parses a URI that must be a `stun:` one over UDP (the value of `--stun`).
pub fn parse_stun(text: &str) -> Result<ServerUri, UriError> {
    let uri: ServerUri = text.parse()?;
    if uri.scheme != Scheme::Stun {
        return Err(UriError::new(format!(
            "{text:?} is a TURN URI: give it to --turn (with --user and --password)"
        )));
    }
    match uri.transport {
        Transport::Udp => Ok(uri),
        Transport::Dtls => Err(UriError::new(format!(
            "{text:?}: ice-peer asks STUN servers over plain UDP only (over DTLS the server \
             would report the address of the DTLS socket, not of the sockets ICE uses); use \
             stun:, or a turns:...?transport=udp server for a path over DTLS"
        ))),
        Transport::Tcp | Transport::Tls => Err(UriError::new(format!(
            "{text:?}: ice-peer asks STUN servers over UDP only (a stuns: server would report \
             a TCP address); use stun:, or a turns: server for a path over TLS"
        ))),
    }
}

/// Parses a `turn:` or `turns:` URI (the value of `--turn`): over UDP, TCP
/// (`?transport=tcp`), TLS (`turns:`) or DTLS (`turns:…?transport=udp`).
pub fn parse_turn(text: &str) -> Result<ServerUri, UriError> {
    let uri: ServerUri = text.parse()?;
    if uri.scheme != Scheme::Turn {
        return Err(UriError::new(format!(
            "{text:?} is a STUN URI: give it to --stun"
        )));
    }
    Ok(uri)
}

/// The server's addresses: the literal, or for a name its first IPv4 and first IPv6 address
/// (the agent pairs each socket with the server of its own family, so more of one family
/// would only repeat the same requests).
pub async fn resolve(uri: &ServerUri) -> io::Result<Vec<SocketAddr>> {
    let name = match &uri.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, uri.port)]),
        Host::Name(name) => name,
    };
    let mut v4 = None;
    let mut v6 = None;
    for addr in tokio::net::lookup_host((name.as_str(), uri.port)).await? {
        let slot = if addr.is_ipv4() { &mut v4 } else { &mut v6 };
        slot.get_or_insert(addr);
    }
    let found: Vec<SocketAddr> = v4.into_iter().chain(v6).collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no address"),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn turn_over_tcp_and_tls_is_accepted_stun_over_tls_is_not() {
        let tcp = parse_turn("turn:host?transport=tcp").unwrap();
        assert_eq!((tcp.transport, tcp.port), (Transport::Tcp, DEFAULT_PORT));
        let tls = parse_turn("turns:host").unwrap();
        assert_eq!((tls.transport, tls.port), (Transport::Tls, 5349));
        assert_eq!(
            parse_turn("turns:host:443?transport=tcp")
                .unwrap()
                .transport,
            Transport::Tls
        );
        assert_eq!(parse_turn("turn:host").unwrap().transport, Transport::Udp);
        let stuns = parse_stun("stuns:host:5349").unwrap_err().to_string();
        assert!(stuns.contains("over UDP only"), "{stuns}");
    }

    #[test]
    fn turn_over_dtls_is_taken_stun_over_dtls_is_not() {
        let turns = parse_turn("turns:host?transport=udp").unwrap();
        assert_eq!((turns.transport, turns.port), (Transport::Dtls, 5349));
        let stuns = parse_stun("stuns:host?transport=udp")
            .unwrap_err()
            .to_string();
        assert!(stuns.contains("over plain UDP only"), "{stuns}");
        assert!(stuns.contains("turns:...?transport=udp"), "{stuns}");
    }

    #[test]
    fn stun_and_turn_flags_take_their_own_scheme() {
        assert!(parse_stun("stun:host").is_ok());
        assert!(parse_turn("turn:host?transport=udp").is_ok());
        assert!(
            parse_stun("turn:host")
                .unwrap_err()
                .to_string()
                .contains("--turn")
        );
        assert!(
            parse_turn("stun:host")
                .unwrap_err()
                .to_string()
                .contains("--stun")
        );
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        let uri: ServerUri = "turn:127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            resolve(&uri).await.unwrap(),
            vec!["127.0.0.1:4000".parse().unwrap()]
        );
        let uri: ServerUri = "stun:localhost:4000".parse().unwrap();
        let resolved = resolve(&uri).await.unwrap();
        assert!(!resolved.is_empty());
        assert!(
            resolved
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4000)
        );
    }
}
