//! The Binding service: one request in, at most one answer out, nothing remembered.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use icebreaker_wire::attr::{
    AttrType, ChangeRequest, ErrorCodeAttribute, OtherAddress, ResponseOrigin, ResponsePort,
    Software, UnknownAttributes, XorMappedAddress,
};
use icebreaker_wire::{
    Class, ErrorCode, HEADER_LEN, Message, MessageType, MessageWriter, Method, WriteError,
};

use crate::config::{
    BindingConfig, ConfigError, MAX_SOFTWARE_CHARS, Position, Topology, check_software,
};

/// Most attribute types one 420 lists in UNKNOWN-ATTRIBUTES. RFC 8489 §6.3.1 asks for the
/// unknown attributes without a bound; a bounded, deduplicated list keeps the answer on the
/// stack and never longer than the request (each listed type cost the sender at least 4 bytes
/// and costs the answer 2).
pub const MAX_UNKNOWN_LISTED: usize = 16;

/// An `out` buffer of this many bytes holds any answer [`BindingService::handle`] writes: an
/// RFC 5780 success to an IPv6 client (three 24-byte address attributes), SOFTWARE of 127
/// four-byte characters, and FINGERPRINT. A 420 with [`MAX_UNKNOWN_LISTED`] types is smaller.
pub const MAX_REPLY_LEN: usize = {
    let address = 4 + 20;
    let software = 4 + MAX_SOFTWARE_CHARS * 4;
    let fingerprint = 4 + 4;
    let success = HEADER_LEN + 3 * address + software + fingerprint;
    let error = HEADER_LEN + (4 + 4) + (4 + 2 * MAX_UNKNOWN_LISTED) + software + fingerprint;
    if success > error { success } else { error }
};

/// Where an answer goes: the driver sends `out[..len]` from the socket bound to `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindingReply {
    /// The local address to send from: the one the request reached, or with RFC 5780 the one
    /// CHANGE-REQUEST chose.
    pub from: SocketAddr,
    /// The destination: the request's source, or with RFC 5780 its IP at RESPONSE-PORT.
    pub to: SocketAddr,
    /// Length of the answer at the start of `out`.
    pub len: usize,
}

/// A sans-IO STUN Binding server (RFC 8489 §3, §6.3) with optional NAT behaviour discovery
/// (RFC 5780 §6), answering from a caller's buffer into a caller's buffer.
///
/// It keeps no state between requests, so spoofed floods create none, and it can be shared by
/// every worker thread behind an `Arc` or cloned into each. A retransmitted request is simply
/// answered again, which RFC 8489 §6.3.1 allows because Binding is idempotent.
///
/// Only Binding requests are answered. The caller dispatches by [`Message::method`]: Binding
/// here, every other method to the TURN core. What the service does not do, by design:
///
/// - Authentication (RFC 8489 §9): MESSAGE-INTEGRITY in a request is neither checked nor
///   answered. Binding requests that need credentials are ICE connectivity checks, which
///   belong to the ICE agent, not to the server.
/// - MAPPED-ADDRESS: RFC 5780 §6.1 says a discovery answer MUST carry it beside
///   XOR-MAPPED-ADDRESS, for RFC 3489 clients. Such clients send no magic cookie, so
///   [`Message::parse`] already drops their requests; the attribute would only add 12 to 24
///   bytes to every answer to a stranger.
/// - PADDING echo: RFC 5780 §6.1 says an answer MUST carry PADDING when the request did,
///   SHOULD as long as the path MTU. A spoofed request with 4 bytes of PADDING would then draw
///   an MTU-sized answer at its victim; the service accepts PADDING (with RFC 5780) and
///   answers without it. A client measuring fragmentation still learns whether its padded
///   request got through.
/// - SOFTWARE by default: RFC 8489 §6.3.1.1 says a server SHOULD add it; here only when
///   configured, so that strangers learn nothing about the server (security.md).
#[derive(Clone, Debug)]
pub struct BindingService {
    software: Option<String>,
    topology: Option<Topology>,
}

impl BindingService {
    /// Checks `config` and builds the service. RFC 5780 needs two addresses of one family
    /// with different IPs and different ports, both specific; SOFTWARE must be fewer than 128
    /// characters.
    pub fn new(config: BindingConfig) -> Result<BindingService, ConfigError> {
        check_software(config.software.as_deref())?;
        let topology = config.rfc5780.map(Topology::new).transpose()?;
        Ok(BindingService {
            software: config.software,
            topology,
        })
    }

    /// The four addresses the driver must listen on for RFC 5780 (empty without it):
    /// ip1:port1, ip1:port2, ip2:port1, ip2:port2. Each must be bound exactly, not through a
    /// wildcard, or the driver cannot choose the source of an answer.
    pub fn rfc5780_addresses(&self) -> Vec<SocketAddr> {
        self.topology
            .map(|t| t.addresses().to_vec())
            .unwrap_or_default()
    }

    /// Answers one Binding request that reached `local` from `remote` over a datagram
    /// transport (UDP). Writes the answer into `out`; returns where it must be sent from and
    /// to, or `None` when the message gets no answer.
    ///
    /// `local` is the specific address the request reached (with a wildcard socket, the
    /// destination from `IP_PKTINFO`). Without RFC 5780, or when `local` is not one of the
    /// four RFC 5780 addresses (a TURN-only listener, say), the request is answered as if
    /// RFC 5780 were off: CHANGE-REQUEST, RESPONSE-PORT and PADDING get 420.
    ///
    /// No answer for: anything but a Binding request (indications are keepalives,
    /// RFC 8489 §6.3.2; responses are not ours), a FINGERPRINT that does not verify
    /// (RFC 8489 §6.3, §7), or an `out` too small for the answer (see [`MAX_REPLY_LEN`]).
    ///
    /// A success carries XOR-MAPPED-ADDRESS of `remote` (RFC 8489 §6.3.1.1) and leaves from
    /// `local` towards `remote` (RFC 8489 §6.3.1.2) unless RFC 5780 steers it.
    ///
    /// Error responses carry ERROR-CODE without a reason phrase, and always go back from
    /// `local` to `remote`: CHANGE-REQUEST and RESPONSE-PORT only steer successes.
    #[must_use = "an answer written into `out` must be sent"]
    pub fn handle(
        &self,
        request: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        out: &mut [u8],
    ) -> Option<BindingReply> {
        let outcome = self.decide(request, local, remote, Transport::Datagram)?;
        let len = self.write(request, remote, &outcome, out).ok()?;
        let (from, to) = match outcome {
            Outcome::Success { from, to, .. } => (from, to),
            Outcome::Error { .. } => (local, remote),
        };
        Some(BindingReply { from, to, len })
    }

    /// Answers one Binding request that arrived on a connection (TCP, TLS, DTLS), where the
    /// answer can only go back on that same connection. Returns the length written into `out`,
    /// or `None` when the message gets no answer, as for [`handle`](Self::handle).
    ///
    /// RESPONSE-ORIGIN and OTHER-ADDRESS are added as over UDP, so that a client can test
    /// TCP mapping behaviour against OTHER-ADDRESS; but CHANGE-REQUEST with a flag set and
    /// RESPONSE-PORT ask for something a connection cannot do, and get 400 (not 420: the
    /// server knows the attributes, and a 420 would tell the client it has no RFC 5780).
    #[must_use = "an answer written into `out` must be sent"]
    pub fn handle_connected(
        &self,
        request: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        out: &mut [u8],
    ) -> Option<usize> {
        let outcome = self.decide(request, local, remote, Transport::Connected)?;
        self.write(request, remote, &outcome, out).ok()
    }

    /// Everything but the writing: which answer, from where, to where.
    fn decide(
        &self,
        request: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        transport: Transport,
    ) -> Option<Outcome> {
        if request.method() != Method::BINDING || request.class() != Class::Request {
            return None;
        }
        if request.fingerprint_offset().is_some() && request.verify_fingerprint().is_err() {
            return None;
        }
        let discovery = self
            .topology
            .as_ref()
            .and_then(|t| t.locate(local).map(|at| (t, at)));

        // RFC 8489 §6.3.1: unknown comprehension-required attributes are refused before
        // anything else is read.
        let unknown = UnknownList::collect(request, discovery.is_some());
        if !unknown.is_empty() {
            return Some(Outcome::Error {
                code: ErrorCode::UNKNOWN_ATTRIBUTE,
                unknown,
            });
        }
        let Some((topology, at)) = discovery else {
            return Some(Outcome::Success {
                from: local,
                to: remote,
                discovery: None,
            });
        };
        Some(discover(request, topology, at, remote, transport).unwrap_or(BAD_REQUEST))
    }

    fn write(
        &self,
        request: &Message<'_>,
        remote: SocketAddr,
        outcome: &Outcome,
        out: &mut [u8],
    ) -> Result<usize, WriteError> {
        let tid = request.transaction_id();
        let writer = match outcome {
            Outcome::Success { discovery, .. } => {
                let mut w = MessageWriter::new(out, BINDING_SUCCESS, tid)?;
                // A client behind IPv4 that reached a dual-stack socket shows up as
                // ::ffff:a.b.c.d; its reflexive address is the IPv4 one.
                let mapped = SocketAddr::new(remote.ip().to_canonical(), remote.port());
                w.add(&XorMappedAddress(mapped))?;
                if let Some(Discovery { origin, other }) = discovery {
                    w.add(&ResponseOrigin(*origin))?;
                    w.add(&OtherAddress(*other))?;
                }
                w
            }
            Outcome::Error { code, unknown } => {
                let mut w = MessageWriter::new(out, BINDING_ERROR, tid)?;
                w.add(&ErrorCodeAttribute::bare(*code))?;
                if !unknown.is_empty() {
                    w.add(&UnknownAttributes::new(unknown.as_slice()))?;
                }
                w
            }
        };
        self.finish(writer, request.fingerprint_offset().is_some())
    }

    /// The attributes every answer ends with: SOFTWARE when configured (RFC 8489 §14.14),
    /// FINGERPRINT when the request had one, so that a client multiplexing STUN with media
    /// can tell the answer apart (RFC 8489 §7, §14.7).
    fn finish(
        &self,
        mut writer: MessageWriter<'_>,
        fingerprint: bool,
    ) -> Result<usize, WriteError> {
        if let Some(software) = &self.software {
            writer.add(&Software(software))?;
        }
        if fingerprint {
            writer.add_fingerprint()?;
        }
        Ok(writer.finish())
    }
}

const BINDING_SUCCESS: MessageType = MessageType::new(Method::BINDING, Class::Success);
const BINDING_ERROR: MessageType = MessageType::new(Method::BINDING, Class::Error);
const BAD_REQUEST: Outcome = Outcome::Error {
    code: ErrorCode::BAD_REQUEST,
    unknown: UnknownList::new(),
};

/// The request attributes RFC 5780 §7 defines. Without RFC 5780 the service does not
/// understand them, as RFC 5780 §6 requires of a server without a second address.
const DISCOVERY_REQUEST_ATTRIBUTES: [AttrType; 3] = [
    AttrType::CHANGE_REQUEST,
    AttrType::RESPONSE_PORT,
    AttrType::PADDING,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Datagram,
    Connected,
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Success {
        from: SocketAddr,
        to: SocketAddr,
        discovery: Option<Discovery>,
    },
    Error {
        code: ErrorCode,
        unknown: UnknownList,
    },
}

/// RESPONSE-ORIGIN (RFC 5780 §7.3) and OTHER-ADDRESS (RFC 5780 §7.4).
#[derive(Clone, Copy, Debug)]
struct Discovery {
    origin: SocketAddr,
    other: SocketAddr,
}

/// RFC 5780 §6.1 for a request that reached one of the four addresses. `None` means 400.
fn discover(
    request: &Message<'_>,
    topology: &Topology,
    at: Position,
    remote: SocketAddr,
    transport: Transport,
) -> Option<Outcome> {
    // A value that does not decode makes the request malformed: 400 (RFC 8489 §14.8).
    let change = request.get::<ChangeRequest>().ok()?.unwrap_or_default();
    let response_port = request.get::<ResponsePort>().ok()?;
    // RFC 5780 §7.5 allows 0, but nothing can be sent to port 0.
    if response_port == Some(ResponsePort(0)) {
        return None;
    }
    // RFC 5780 §6.1, §7.5, §10: both at once would aim a padded answer at any port of the
    // source, so the pair is refused whether or not the answer is padded.
    if response_port.is_some() && request.has(AttrType::PADDING) {
        return None;
    }
    // Some clients send CHANGE-REQUEST with no flag set; that asks for nothing.
    let steered = change.change_ip || change.change_port || response_port.is_some();
    if transport == Transport::Connected && steered {
        return None;
    }
    let from = topology.source(at, change);
    let mut to = remote;
    if let Some(ResponsePort(port)) = response_port {
        to.set_port(port);
    }
    Some(Outcome::Success {
        from,
        to,
        discovery: Some(Discovery {
            origin: from,
            other: topology.other(at),
        }),
    })
}

/// The comprehension-required attribute types a request carries and the service does not
/// understand, in order, each once, at most [`MAX_UNKNOWN_LISTED`]: the codec's rule
/// ([`Message::unknown_comprehension_required`]) plus the RFC 5780 request attributes when
/// discovery is off for the request.
///
/// Comprehension-required attributes the codec knows (TURN's, ICE's) are understood and,
/// having no meaning in a Binding request, ignored.
#[derive(Clone, Copy, Debug)]
struct UnknownList {
    types: [AttrType; MAX_UNKNOWN_LISTED],
    len: usize,
}

impl UnknownList {
    const fn new() -> UnknownList {
        UnknownList {
            types: [AttrType(0); MAX_UNKNOWN_LISTED],
            len: 0,
        }
    }

    fn collect(request: &Message<'_>, discovery: bool) -> UnknownList {
        let mut list = UnknownList::new();
        for attr_type in request.attributes().map(|raw| raw.attr_type) {
            if list.len == MAX_UNKNOWN_LISTED {
                break;
            }
            let unknown = attr_type.is_comprehension_required()
                && (!attr_type.is_known()
                    || (!discovery && DISCOVERY_REQUEST_ATTRIBUTES.contains(&attr_type)));
            if unknown && !list.as_slice().contains(&attr_type) {
                list.types[list.len] = attr_type;
                list.len += 1;
            }
        }
        list
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_slice(&self) -> &[AttrType] {
        &self.types[..self.len]
    }
}
