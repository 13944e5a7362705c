//! STUN and TURN server URIs: `stun:host[:port]` (RFC 7064) and
//! `turn:host[:port][?transport=udp]` (RFC 7065).
//!
//! Only UDP is supported: `stuns:`, `turns:` and `?transport=tcp` are refused with an error
//! that says so rather than being silently treated as UDP.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The port of `stun:` and `turn:` URIs without one (RFC 7064 §3.2, RFC 7065 §3.2).
pub const DEFAULT_PORT: u16 = 3478;

/// Whether a URI names a STUN server or a TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `stun:`: server-reflexive candidates.
    Stun,
    /// `turn:`: relayed candidates (and server-reflexive ones from the same allocation).
    Turn,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Stun => "stun",
            Scheme::Turn => "turn",
        }
    }
}

/// The host of a server URI: an IP literal, or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 address or a bracketed IPv6 literal.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

/// A parsed `stun:` or `turn:` URI. UDP is the only transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUri {
    /// STUN or TURN.
    pub scheme: Scheme,
    /// Where the server is.
    pub host: Host,
    /// Its UDP port.
    pub port: u16,
}

/// Why a URI was refused, in words that say what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

fn error(message: impl Into<String>) -> UriError {
    UriError(message.into())
}

impl ServerUri {
    /// Parses a URI that must be a `stun:` one (the value of `--stun`).
    pub fn parse_stun(text: &str) -> Result<ServerUri, UriError> {
        let uri: ServerUri = text.parse()?;
        if uri.scheme != Scheme::Stun {
            return Err(error(format!(
                "{text:?} is a TURN URI: give it to --turn (with --user and --password)"
            )));
        }
        Ok(uri)
    }

    /// Parses a URI that must be a `turn:` one (the value of `--turn`).
    pub fn parse_turn(text: &str) -> Result<ServerUri, UriError> {
        let uri: ServerUri = text.parse()?;
        if uri.scheme != Scheme::Turn {
            return Err(error(format!("{text:?} is a STUN URI: give it to --stun")));
        }
        Ok(uri)
    }

    /// The server's addresses: the literal, or for a name its first IPv4 and first IPv6
    /// address (the agent pairs each socket with the server of its own family, so more of
    /// one family would only repeat the same requests).
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let mut v4 = None;
        let mut v6 = None;
        for addr in tokio::net::lookup_host((name.as_str(), self.port)).await? {
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
}

impl fmt::Display for ServerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        match &self.host {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}")?,
            Host::Name(name) => f.write_str(name)?,
        }
        write!(f, ":{}", self.port)
    }
}

impl FromStr for ServerUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<ServerUri, UriError> {
        let usage = "expected stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp]";
        let Some((scheme_text, rest)) = text.split_once(':') else {
            return Err(error(format!("{text:?}: {usage}")));
        };
        // URI schemes are case-insensitive (RFC 3986 §3.1).
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "stun" => Scheme::Stun,
            "turn" => Scheme::Turn,
            "stuns" | "turns" => {
                return Err(error(format!(
                    "{text:?}: STUN and TURN over TLS ({scheme_text}:) are not supported yet; \
                     use {}: over UDP",
                    &scheme_text[..4]
                )));
            }
            _ => {
                return Err(error(format!(
                    "{text:?}: unknown scheme {scheme_text:?}; {usage}"
                )));
            }
        };
        if rest.starts_with("//") {
            return Err(error(format!(
                "{text:?}: a {0}: URI has no \"//\" (RFC 7064/7065): write {0}:HOST[:PORT]",
                scheme.as_str()
            )));
        }
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        if let Some(query) = query {
            check_query(text, scheme, query)?;
        }
        if authority.contains('@') {
            return Err(error(format!(
                "{text:?}: credentials go in --user and --password, not in the URI"
            )));
        }
        let (host, port) = split_host_port(text, authority)?;
        Ok(ServerUri { scheme, host, port })
    }
}

fn check_query(text: &str, scheme: Scheme, query: &str) -> Result<(), UriError> {
    if scheme == Scheme::Stun {
        return Err(error(format!(
            "{text:?}: a stun: URI takes no query (RFC 7064)"
        )));
    }
    let Some(transport) = query
        .split_once('=')
        .filter(|(key, _)| key.eq_ignore_ascii_case("transport"))
        .map(|(_, value)| value)
    else {
        return Err(error(format!(
            "{text:?}: the only query of a turn: URI is ?transport=udp (RFC 7065)"
        )));
    };
    if transport.eq_ignore_ascii_case("udp") {
        Ok(())
    } else if transport.eq_ignore_ascii_case("tcp") {
        Err(error(format!(
            "{text:?}: TURN over TCP is not supported yet; use ?transport=udp or no query"
        )))
    } else {
        Err(error(format!(
            "{text:?}: unknown transport {transport:?}; only udp is supported"
        )))
    }
}

fn split_host_port(text: &str, authority: &str) -> Result<(Host, u16), UriError> {
    let (host_text, port_text) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return Err(error(format!(
                "{text:?}: an IPv6 literal is missing its \"]\""
            )));
        };
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                error(format!(
                    "{text:?}: expected \":PORT\" after the IPv6 literal"
                ))
            })?),
        };
        let ip = literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| error(format!("{text:?}: {literal:?} is not an IPv6 address")))?;
        return Ok((Host::Ip(IpAddr::V6(ip)), parse_port(text, port)?));
    } else {
        match authority.split_once(':') {
            Some((_, after)) if after.contains(':') => {
                return Err(error(format!(
                    "{text:?}: an IPv6 address goes in brackets, as in turn:[2001:db8::1]:3478"
                )));
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host_text.is_empty() {
        return Err(error(format!("{text:?}: the host is missing")));
    }
    let host = match host_text.parse::<std::net::Ipv4Addr>() {
        Ok(v4) => Host::Ip(IpAddr::V4(v4)),
        Err(_) => {
            let valid = host_text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(error(format!(
                    "{text:?}: {host_text:?} is neither an IP address nor a host name"
                )));
            }
            Host::Name(host_text.to_owned())
        }
    };
    Ok((host, parse_port(text, port_text)?))
}

fn parse_port(text: &str, port: Option<&str>) -> Result<u16, UriError> {
    match port {
        None => Ok(DEFAULT_PORT),
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| error(format!("{text:?}: bad port {port:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ok(text: &str) -> ServerUri {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        match text.parse::<ServerUri>() {
            Ok(uri) => panic!("{text} parsed as {uri:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn hosts_ports_and_defaults() {
        let uri = ok("stun:stun.example.org");
        assert_eq!(uri.scheme, Scheme::Stun);
        assert_eq!(uri.host, Host::Name("stun.example.org".into()));
        assert_eq!(uri.port, DEFAULT_PORT);

        let uri = ok("turn:192.0.2.1:3479");
        assert_eq!(uri.scheme, Scheme::Turn);
        assert_eq!(uri.host, Host::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(uri.port, 3479);

        let uri = ok("turn:[2001:db8::1]:5000?transport=udp");
        assert_eq!(uri.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(uri.port, 5000);
        assert_eq!(ok("turn:[2001:db8::1]").port, DEFAULT_PORT);
        assert_eq!(ok("TURN:host?Transport=UDP").scheme, Scheme::Turn);
    }

    #[test]
    fn display_is_a_uri_that_parses_back() {
        for text in [
            "stun:192.0.2.1:3478",
            "turn:[2001:db8::1]:5000",
            "turn:example.org:3478",
        ] {
            assert_eq!(ok(text).to_string(), text);
            assert_eq!(ok(&ok(text).to_string()), ok(text));
        }
    }

    #[test]
    fn tcp_tls_and_malformed_uris_are_refused_with_a_reason() {
        assert!(refused("turn:host?transport=tcp").contains("TCP is not supported yet"));
        assert!(refused("turns:host").contains("TLS"));
        assert!(refused("stuns:host:5349").contains("TLS"));
        assert!(refused("stun:host?transport=udp").contains("no query"));
        assert!(refused("turn://host").contains("no \"//\""));
        assert!(refused("http:host").contains("unknown scheme"));
        assert!(refused("host:3478").contains("unknown scheme"));
        assert!(refused("stun.example.org").contains("expected stun:HOST"));
        assert!(refused("turn:2001:db8::1").contains("brackets"));
        assert!(refused("turn:[2001:db8::1").contains("\"]\""));
        assert!(refused("turn:host:0").contains("bad port"));
        assert!(refused("turn:host:99999").contains("bad port"));
        assert!(refused("turn:host:").contains("bad port"));
        assert!(refused("turn::3478").contains("host is missing"));
        assert!(refused("turn:user@host").contains("--user"));
        assert!(refused("turn:host?transport=sctp").contains("unknown transport"));
        assert!(refused("turn:ho st").contains("neither"));
    }

    #[test]
    fn stun_and_turn_flags_take_their_own_scheme() {
        assert!(ServerUri::parse_stun("stun:host").is_ok());
        assert!(ServerUri::parse_turn("turn:host").is_ok());
        assert!(
            ServerUri::parse_stun("turn:host")
                .unwrap_err()
                .to_string()
                .contains("--turn")
        );
        assert!(
            ServerUri::parse_turn("stun:host")
                .unwrap_err()
                .to_string()
                .contains("--stun")
        );
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        let uri = ok("turn:127.0.0.1:4000");
        assert_eq!(
            uri.resolve().await.unwrap(),
            vec!["127.0.0.1:4000".parse().unwrap()]
        );
        let uri = ok("stun:localhost:4000");
        let resolved = uri.resolve().await.unwrap();
        assert!(!resolved.is_empty());
        assert!(
            resolved
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4000)
        );
    }
}
