//! ICE candidates: kinds, priorities and foundations (RFC 8445 §5.1.2), and their text form,
//! the `a=candidate:` line of RFC 8839 §5.1.

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::str::FromStr;

/// The kind of a candidate (RFC 8445 §5.1.1), `typ` in a candidate line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of the agent's own interface.
    Host,
    /// The agent's address as a STUN server sees it: its NAT's external mapping.
    ServerReflexive,
    /// An address learned from a connectivity check: a mapping no STUN server reported.
    PeerReflexive,
    /// An address allocated on a TURN server.
    Relayed,
}

impl CandidateKind {
    /// The type preference of RFC 8445 §5.1.2.2: direct paths first, the relay last.
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    /// The `typ` token of a candidate line.
    pub fn token(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    /// Whether a pair with this local and remote kind goes through a TURN relay.
    pub fn is_relayed(self) -> bool {
        self == CandidateKind::Relayed
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The transport protocol of a candidate. Only UDP candidates are paired; TCP ones
/// (RFC 6544) are parsed so that a browser's offer is read whole, and then skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CandidateTransport {
    /// UDP.
    Udp,
    /// TCP (RFC 6544).
    Tcp,
}

/// One ICE candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Candidates with the same foundation share a base, a kind and a server (RFC 8445
    /// §5.1.1.3): the check of one tells about the others.
    pub foundation: String,
    /// The component: 1 for the only component this agent serves.
    pub component: u16,
    /// UDP or TCP.
    pub transport: CandidateTransport,
    /// The priority (RFC 8445 §5.1.2).
    pub priority: u32,
    /// The transport address.
    pub address: SocketAddr,
    /// Host, server-reflexive, peer-reflexive or relayed.
    pub kind: CandidateKind,
    /// `raddr`/`rport`: the base of a reflexive candidate, the mapped address of a relayed one.
    pub related: Option<SocketAddr>,
    /// Attributes of the line this agent does not interpret (`generation`, `ufrag`,
    /// `network-id`, ...), kept in order.
    pub extensions: Vec<(String, String)>,
}

/// The priority formula of RFC 8445 §5.1.2.1.
pub fn candidate_priority(kind: CandidateKind, local_preference: u16, component: u16) -> u32 {
    (kind.type_preference() << 24)
        | (u32::from(local_preference) << 8)
        | (256 - u32::from(component.clamp(1, 256)))
}

/// A foundation: equal for candidates of the same kind, base IP, server and transport
/// (RFC 8445 §5.1.1.3), short and made of `ice-char`s.
pub fn foundation(kind: CandidateKind, base: IpAddr, server: Option<IpAddr>) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(kind.token().as_bytes());
    hash_ip(&mut hasher, base);
    if let Some(server) = server {
        hash_ip(&mut hasher, server);
    }
    hasher.update(b"udp");
    hasher.finalize().to_string()
}

fn hash_ip(hasher: &mut crc32fast::Hasher, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => hasher.update(&v4.octets()),
        IpAddr::V6(v6) => hasher.update(&v6.octets()),
    }
}

impl Candidate {
    /// A candidate of component 1 over UDP with a computed priority.
    pub fn new(
        kind: CandidateKind,
        address: SocketAddr,
        foundation: String,
        local_preference: u16,
        related: Option<SocketAddr>,
    ) -> Candidate {
        Candidate {
            foundation,
            component: 1,
            transport: CandidateTransport::Udp,
            priority: candidate_priority(kind, local_preference, 1),
            address,
            kind,
            related,
            extensions: Vec::new(),
        }
    }

    /// The candidate's `a=candidate:` attribute value, without `a=` (the form trickled in
    /// JSON by browsers and by ice-peer). `Display` prints the same.
    pub fn to_sdp_value(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            CandidateTransport::Udp => "udp",
            CandidateTransport::Tcp => "tcp",
        };
        write!(
            f,
            "candidate:{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            transport,
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind
        )?;
        if let Some(related) = self.related {
            write!(f, " raddr {} rport {}", related.ip(), related.port())?;
        }
        for (name, value) in &self.extensions {
            write!(f, " {name} {value}")?;
        }
        Ok(())
    }
}

/// Why a candidate line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CandidateParseError {
    /// The line does not start with `candidate:` (or `a=candidate:`).
    #[error("a candidate line starts with \"candidate:\"")]
    Prefix,
    /// A required field is missing.
    #[error("the candidate line ends before its {0}")]
    Missing(&'static str),
    /// A field has the wrong form.
    #[error("bad {field} in a candidate line: {value:?}")]
    Bad {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// The address is a name (an mDNS `.local` name or an FQDN), which a sans-IO agent
    /// cannot resolve: the application resolves it and passes an address.
    #[error("the candidate's address {0:?} is a name, not an IP address")]
    Hostname(String),
}

fn is_ice_chars(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn bad(field: &'static str, value: &str) -> CandidateParseError {
    CandidateParseError::Bad {
        field,
        value: value.into(),
    }
}

impl FromStr for Candidate {
    type Err = CandidateParseError;

    /// Parses `candidate:...` or `a=candidate:...` (RFC 8839 §5.1).
    fn from_str(line: &str) -> Result<Candidate, CandidateParseError> {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let rest = line
            .strip_prefix("candidate:")
            .ok_or(CandidateParseError::Prefix)?;
        let mut fields = rest.split_ascii_whitespace();
        let mut next = |name: &'static str| fields.next().ok_or(CandidateParseError::Missing(name));

        let foundation = next("foundation")?;
        if !is_ice_chars(foundation) {
            return Err(bad("foundation", foundation));
        }
        let component_text = next("component")?;
        let component: u16 = component_text
            .parse()
            .ok()
            .filter(|c| (1..=256).contains(c))
            .ok_or_else(|| bad("component", component_text))?;
        let transport_text = next("transport")?;
        let transport = if transport_text.eq_ignore_ascii_case("udp") {
            CandidateTransport::Udp
        } else if transport_text.eq_ignore_ascii_case("tcp") {
            CandidateTransport::Tcp
        } else {
            return Err(bad("transport", transport_text));
        };
        let priority_text = next("priority")?;
        let priority: u32 = priority_text
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("priority", priority_text))?;
        let address_text = next("address")?;
        let port_text = next("port")?;
        let port: u16 = port_text.parse().map_err(|_| bad("port", port_text))?;
        if next("typ")? != "typ" {
            return Err(bad("typ", line));
        }
        let kind_text = next("type")?;
        let kind = match kind_text {
            "host" => CandidateKind::Host,
            "srflx" => CandidateKind::ServerReflexive,
            "prflx" => CandidateKind::PeerReflexive,
            "relay" => CandidateKind::Relayed,
            other => return Err(bad("type", other)),
        };

        let mut related_ip: Option<IpAddr> = None;
        let mut related_port: Option<u16> = None;
        let mut extensions = Vec::new();
        while let Some(name) = fields.next() {
            let value = fields.next().ok_or(CandidateParseError::Missing(
                "value of an extension attribute",
            ))?;
            match name {
                "raddr" => related_ip = Some(value.parse().map_err(|_| bad("raddr", value))?),
                "rport" => related_port = Some(value.parse().map_err(|_| bad("rport", value))?),
                _ => extensions.push((name.to_owned(), value.to_owned())),
            }
        }
        // An IP address checked after the rest so that a line with a name is still
        // reported as such only when it is otherwise well formed.
        let ip: IpAddr = address_text
            .parse()
            .map_err(|_| CandidateParseError::Hostname(address_text.into()))?;
        let related = match (related_ip, related_port) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            (None, None) => None,
            _ => return Err(CandidateParseError::Missing("raddr and rport together")),
        };
        Ok(Candidate {
            foundation: foundation.into(),
            component,
            transport,
            priority,
            address: SocketAddr::new(ip, port),
            kind,
            related,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn priorities_follow_the_rfc_formula() {
        // RFC 8445 §5.1.2.1 with the recommended type preferences and the highest local
        // preference: host 126, component 1.
        assert_eq!(
            candidate_priority(CandidateKind::Host, 65535, 1),
            (126 << 24) + (65535 << 8) + 255
        );
        assert_eq!(candidate_priority(CandidateKind::Relayed, 0, 1), 255);
        assert!(
            candidate_priority(CandidateKind::ServerReflexive, 1, 1)
                > candidate_priority(CandidateKind::Relayed, 65535, 1)
        );
        assert!(
            candidate_priority(CandidateKind::PeerReflexive, 1, 1)
                > candidate_priority(CandidateKind::ServerReflexive, 65535, 1)
        );
    }

    #[test]
    fn foundations_group_by_kind_base_and_server() {
        let base: IpAddr = "10.0.1.2".parse().unwrap();
        let server: IpAddr = "203.0.113.1".parse().unwrap();
        let other: IpAddr = "203.0.113.2".parse().unwrap();
        let host = foundation(CandidateKind::Host, base, None);
        assert_eq!(host, foundation(CandidateKind::Host, base, None));
        assert_ne!(
            foundation(CandidateKind::ServerReflexive, base, Some(server)),
            foundation(CandidateKind::ServerReflexive, base, Some(other))
        );
        assert_ne!(host, foundation(CandidateKind::Relayed, base, Some(server)));
        assert!(is_ice_chars(&host));
    }

    #[test]
    fn a_chrome_candidate_line_round_trips() {
        let line = "candidate:842163049 1 udp 1677729535 198.51.100.18 40031 typ srflx raddr 10.0.1.2 rport 40031 generation 0 ufrag 4ZcD network-cost 999";
        let candidate: Candidate = line.parse().unwrap();
        assert_eq!(candidate.foundation, "842163049");
        assert_eq!(candidate.priority, 1_677_729_535);
        assert_eq!(candidate.kind, CandidateKind::ServerReflexive);
        assert_eq!(candidate.address, "198.51.100.18:40031".parse().unwrap());
        assert_eq!(candidate.related, Some("10.0.1.2:40031".parse().unwrap()));
        assert_eq!(candidate.extensions.len(), 3);
        assert_eq!(candidate.to_string(), line);
        let with_prefix: Candidate = format!("a={line}").parse().unwrap();
        assert_eq!(with_prefix, candidate);
    }

    #[test]
    fn ipv6_and_tcp_candidates_parse() {
        let candidate: Candidate =
            "candidate:1 1 TCP 2128609279 2001:db8::1 9 typ host tcptype active"
                .parse()
                .unwrap();
        assert_eq!(candidate.transport, CandidateTransport::Tcp);
        assert_eq!(candidate.address, "[2001:db8::1]:9".parse().unwrap());
        assert_eq!(
            candidate.extensions,
            vec![("tcptype".into(), "active".into())]
        );
    }

    #[test]
    fn our_candidates_print_as_rfc_8839_lines() {
        let base: SocketAddr = "10.0.1.2:5000".parse().unwrap();
        let relayed = Candidate::new(
            CandidateKind::Relayed,
            "203.0.113.1:50000".parse().unwrap(),
            "7".into(),
            65535,
            Some("198.51.100.18:5000".parse().unwrap()),
        );
        assert_eq!(
            relayed.to_string(),
            "candidate:7 1 udp 16777215 203.0.113.1 50000 typ relay raddr 198.51.100.18 rport 5000"
        );
        let host = Candidate::new(CandidateKind::Host, base, "1".into(), 65535, None);
        assert_eq!(host.to_string().parse::<Candidate>().unwrap(), host);
    }

    #[test]
    fn bad_lines_are_refused_with_the_field_named() {
        let cases = [
            ("", CandidateParseError::Prefix),
            (
                "candidate:1 1 udp",
                CandidateParseError::Missing("priority"),
            ),
            (
                "candidate:1 0 udp 1 10.0.0.1 1 typ host",
                bad("component", "0"),
            ),
            (
                "candidate:1 1 sctp 1 10.0.0.1 1 typ host",
                bad("transport", "sctp"),
            ),
            (
                "candidate:1 1 udp 1 10.0.0.1 99999 typ host",
                bad("port", "99999"),
            ),
            (
                "candidate:1 1 udp 1 10.0.0.1 1 typ bogus",
                bad("type", "bogus"),
            ),
            (
                "candidate:1 1 udp 1 10.0.0.1 1 typ host generation",
                CandidateParseError::Missing("value of an extension attribute"),
            ),
            (
                "candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 generation 0",
                CandidateParseError::Missing("raddr and rport together"),
            ),
            (
                "candidate:1 1 udp 1 4f1c0a5e-2c1b.local 1 typ host",
                CandidateParseError::Hostname("4f1c0a5e-2c1b.local".into()),
            ),
            (
                "candidate:has-dash 1 udp 1 10.0.0.1 1 typ host",
                bad("foundation", "has-dash"),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(line.parse::<Candidate>(), Err(expected), "{line}");
        }
    }
}
