//! STUN and TURN server URIs: `stun:` and `stuns:` (RFC 7064), `turn:` and `turns:` with
//! `?transport=udp|tcp` (RFC 7065), and `stuns:` or `turns:` with `?transport=udp` for DTLS
//! (RFC 7350).
//!
//! Parsing only: resolving a host name is I/O and is left to the caller. Which transports a
//! program supports is its own decision; this module reads every form the RFCs define.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// The port of `stun:` and `turn:` URIs without one (RFC 7064 §3.2, RFC 7065 §3.2).
pub const DEFAULT_PORT: u16 = 3478;
/// The port of `stuns:` and `turns:` URIs without one, over TLS and over DTLS alike.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// Whether a URI names a STUN server or a TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `stun:` or `stuns:`: server-reflexive addresses.
    Stun,
    /// `turn:` or `turns:`: relayed addresses (and server-reflexive ones from the same
    /// allocation).
    Turn,
}

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: `stun:`, `turn:`, `turn:...?transport=udp`.
    Udp,
    /// TCP: `turn:...?transport=tcp`.
    Tcp,
    /// TLS over TCP: `stuns:`, `turns:`, `turns:...?transport=tcp`.
    Tls,
    /// DTLS over UDP: `stuns:...?transport=udp`, `turns:...?transport=udp` (RFC 7350).
    Dtls,
}

impl Transport {
    /// `udp`, `tcp`, `tls` or `dtls`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }

    /// TCP or TLS: a byte stream, which delivers in order or breaks; UDP and DTLS carry
    /// datagrams, which may be lost.
    pub const fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

/// The host of a server URI: an IP literal, or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address or a bracketed IPv6 literal.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed STUN or TURN URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerUri {
    /// STUN or TURN.
    pub scheme: Scheme,
    /// UDP, TCP, TLS or DTLS.
    pub transport: Transport,
    /// Where the server is.
    pub host: Host,
    /// Its port.
    pub port: u16,
}

/// Why a URI was refused, in words that say what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(String);

impl UriError {
    /// An error with this explanation, for programs that refuse a URI this module accepts
    /// (a transport they do not support).
    pub fn new(message: impl Into<String>) -> UriError {
        UriError(message.into())
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for UriError {}

fn error(message: impl Into<String>) -> UriError {
    UriError(message.into())
}

impl ServerUri {
    /// The URI's scheme as written: `stun`, `stuns`, `turn` or `turns`.
    pub const fn scheme_name(&self) -> &'static str {
        match (self.scheme, self.transport) {
            (Scheme::Stun, Transport::Tls | Transport::Dtls) => "stuns",
            (Scheme::Stun, _) => "stun",
            (Scheme::Turn, Transport::Tls | Transport::Dtls) => "turns",
            (Scheme::Turn, _) => "turn",
        }
    }
}

impl ServerUri {
    /// Parses `text` and refuses every transport but UDP with an error naming `program`,
    /// for programs that do not speak TCP, TLS or DTLS yet.
    pub fn parse_udp_only(text: &str, program: &str) -> Result<ServerUri, UriError> {
        let uri: ServerUri = text.parse()?;
        match uri.transport {
            Transport::Udp => Ok(uri),
            Transport::Tls => Err(error(format!(
                "{text:?}: {program} does not speak STUN or TURN over TLS ({}:) yet (UDP only); \
                 use {}: over UDP",
                uri.scheme_name(),
                &uri.scheme_name()[..4]
            ))),
            Transport::Tcp => Err(error(format!(
                "{text:?}: {program} does not speak TURN over TCP yet (UDP only); use \
                 ?transport=udp or no query"
            ))),
            Transport::Dtls => Err(error(format!(
                "{text:?}: {program} does not speak STUN or TURN over DTLS ({}:...?transport=udp) \
                 yet (UDP only); use {}: over UDP",
                uri.scheme_name(),
                &uri.scheme_name()[..4]
            ))),
        }
    }
}

impl fmt::Display for ServerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.scheme_name(), self.host, self.port)?;
        match self.transport {
            Transport::Tcp => f.write_str("?transport=tcp"),
            Transport::Dtls => f.write_str("?transport=udp"),
            Transport::Udp | Transport::Tls => Ok(()),
        }
    }
}

impl FromStr for ServerUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<ServerUri, UriError> {
        let usage = "expected stun:HOST[:PORT], stuns:HOST[:PORT][?transport=udp|tcp] or \
                     turn[s]:HOST[:PORT][?transport=udp|tcp]";
        let Some((scheme_text, rest)) = text.split_once(':') else {
            return Err(error(format!("{text:?}: {usage}")));
        };
        // URI schemes are case-insensitive (RFC 3986 §3.1).
        let (scheme, secure) = match scheme_text.to_ascii_lowercase().as_str() {
            "stun" => (Scheme::Stun, false),
            "stuns" => (Scheme::Stun, true),
            "turn" => (Scheme::Turn, false),
            "turns" => (Scheme::Turn, true),
            _ => {
                return Err(error(format!(
                    "{text:?}: unknown scheme {scheme_text:?}; {usage}"
                )));
            }
        };
        if rest.starts_with("//") {
            return Err(error(format!(
                "{text:?}: a {0}: URI has no \"//\" (RFC 7064/7065): write {0}:HOST[:PORT]",
                scheme_text.to_ascii_lowercase()
            )));
        }
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let transport = match query {
            Some(query) => parse_query(text, scheme, secure, query)?,
            None if secure => Transport::Tls,
            None => Transport::Udp,
        };
        if authority.contains('@') {
            return Err(error(format!(
                "{text:?}: credentials go in --user and --password, not in the URI"
            )));
        }
        let default_port = if secure {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let (host, port) = split_host_port(text, authority, default_port)?;
        Ok(ServerUri {
            scheme,
            transport,
            host,
            port,
        })
    }
}

fn parse_query(
    text: &str,
    scheme: Scheme,
    secure: bool,
    query: &str,
) -> Result<Transport, UriError> {
    // RFC 7350 gives stuns: the transport query of turns:, to tell DTLS from TLS; stun:
    // keeps none (RFC 7064).
    if scheme == Scheme::Stun && !secure {
        return Err(error(format!(
            "{text:?}: a stun: URI takes no query (RFC 7064)"
        )));
    }
    let Some(transport) = query
        .split_once('=')
        .filter(|(key, _)| key.eq_ignore_ascii_case("transport"))
        .map(|(_, value)| value)
    else {
        let name = match scheme {
            Scheme::Stun => "stuns:",
            Scheme::Turn => "turn:",
        };
        return Err(error(format!(
            "{text:?}: the only query of a {name} URI is ?transport=udp or ?transport=tcp \
             (RFC 7065, RFC 7350)"
        )));
    };
    if transport.eq_ignore_ascii_case("udp") {
        // The secure schemes over UDP are DTLS (RFC 7350).
        Ok(if secure {
            Transport::Dtls
        } else {
            Transport::Udp
        })
    } else if transport.eq_ignore_ascii_case("tcp") {
        Ok(if secure {
            Transport::Tls
        } else {
            Transport::Tcp
        })
    } else {
        Err(error(format!(
            "{text:?}: unknown transport {transport:?}; RFC 7065 knows udp and tcp"
        )))
    }
}

fn split_host_port(
    text: &str,
    authority: &str,
    default_port: u16,
) -> Result<(Host, u16), UriError> {
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
            .parse::<Ipv6Addr>()
            .map_err(|_| error(format!("{text:?}: {literal:?} is not an IPv6 address")))?;
        return Ok((
            Host::Ip(IpAddr::V6(ip)),
            parse_port(text, port, default_port)?,
        ));
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
    let host = match host_text.parse::<Ipv4Addr>() {
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
    Ok((host, parse_port(text, port_text, default_port)?))
}

fn parse_port(text: &str, port: Option<&str>, default_port: u16) -> Result<u16, UriError> {
    match port {
        None => Ok(default_port),
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
        assert_eq!(uri.transport, Transport::Udp);
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
    fn secure_schemes_and_transports() {
        let uri = ok("turns:example.org");
        assert_eq!(
            (uri.scheme, uri.transport, uri.port),
            (Scheme::Turn, Transport::Tls, DEFAULT_TLS_PORT)
        );
        assert_eq!(
            ok("turns:example.org:443?transport=tcp").transport,
            Transport::Tls
        );
        let uri = ok("stuns:example.org");
        assert_eq!((uri.scheme, uri.transport), (Scheme::Stun, Transport::Tls));
        assert_eq!(ok("turn:host?transport=tcp").transport, Transport::Tcp);
        assert_eq!(ok("turn:host?transport=TCP").port, DEFAULT_PORT);
    }

    #[test]
    fn secure_schemes_over_udp_are_dtls() {
        let uri = ok("turns:example.org?transport=udp");
        assert_eq!(
            (uri.scheme, uri.transport, uri.port),
            (Scheme::Turn, Transport::Dtls, DEFAULT_TLS_PORT)
        );
        let uri = ok("stuns:[2001:db8::1]?transport=UDP");
        assert_eq!(
            (uri.scheme, uri.transport, uri.port),
            (Scheme::Stun, Transport::Dtls, DEFAULT_TLS_PORT)
        );
        assert_eq!(ok("turns:h:443?transport=udp").port, 443);
        assert_eq!(ok("stuns:h?transport=tcp").transport, Transport::Tls);
        assert_eq!(ok("turns:h?transport=udp").scheme_name(), "turns");
        assert_eq!(Transport::Dtls.as_str(), "dtls");
        assert!(Transport::Tcp.is_stream() && Transport::Tls.is_stream());
        assert!(!Transport::Udp.is_stream() && !Transport::Dtls.is_stream());
        // Plain stun: still takes no query, and turns: no other transport.
        assert!(refused("stun:h?transport=udp").contains("no query"));
        assert!(refused("stuns:h?transport=sctp").contains("unknown transport"));
        assert!(refused("stuns:h?foo=bar").contains("the only query of a stuns: URI"));
    }

    #[test]
    fn display_is_a_uri_that_parses_back() {
        for text in [
            "stun:192.0.2.1:3478",
            "turn:[2001:db8::1]:5000",
            "turn:example.org:3478",
            "turn:example.org:3478?transport=tcp",
            "turns:example.org:443",
            "stuns:example.org:5349",
            "turns:example.org:5349?transport=udp",
            "stuns:[2001:db8::1]:443?transport=udp",
        ] {
            assert_eq!(ok(text).to_string(), text);
            assert_eq!(ok(&ok(text).to_string()), ok(text));
        }
    }

    #[test]
    fn udp_only_programs_refuse_tcp_and_tls_by_name() {
        assert_eq!(
            ServerUri::parse_udp_only("turn:h?transport=udp", "x").unwrap(),
            ok("turn:h")
        );
        let tcp = ServerUri::parse_udp_only("turn:h?transport=tcp", "prog").unwrap_err();
        assert!(
            tcp.to_string()
                .contains("prog does not speak TURN over TCP"),
            "{tcp}"
        );
        let tls = ServerUri::parse_udp_only("turns:h", "prog").unwrap_err();
        assert!(tls.to_string().contains("over TLS (turns:)"), "{tls}");
        assert!(tls.to_string().contains("use turn: over UDP"), "{tls}");
        let dtls = ServerUri::parse_udp_only("stuns:h?transport=udp", "prog").unwrap_err();
        assert!(
            dtls.to_string()
                .contains("prog does not speak STUN or TURN over DTLS (stuns:"),
            "{dtls}"
        );
        assert!(dtls.to_string().contains("use stun: over UDP"), "{dtls}");
        assert!(ServerUri::parse_udp_only("http:h", "prog").is_err());
    }

    #[test]
    fn malformed_uris_are_refused_with_a_reason() {
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
        assert!(refused("turn:host?foo=bar").contains("only query"));
        assert!(refused("turn:ho st").contains("neither"));
    }
}
