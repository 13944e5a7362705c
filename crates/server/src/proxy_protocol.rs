//! PROXY protocol version 2: the binary header a load balancer writes at the start of a TCP
//! or TLS connection to tell the server which client the connection really comes from.
//!
//! Behind a load balancer the server's TCP peer is the balancer, yet nonces, XOR-MAPPED-ADDRESS
//! and the per-source limits all need the client's own address. With `proxy-protocol` on, the
//! stream listeners read a header first and take the addresses from it.
//!
//! [`parse`] is sans-IO: it looks at the bytes received so far and answers "complete header",
//! "need more bytes" or "this cannot be a PROXY v2 header". The caller reads until it gets an
//! answer, drops [`ProxyHeader::header_len`] bytes and hands what follows to STUN framing. Bytes are
//! judged as they arrive (a TLS ClientHello or a STUN message fails on its first byte), and the
//! length field is checked against [`MAX_HEADER_LEN`] before any byte it announces is awaited,
//! so a peer can never make the server buffer more than that.
//!
//! The header, as the HAProxy specification lays it out (numbers big-endian):
//!
//! ```text
//! 0..12   signature  \r \n \r \n \0 \r \n Q U I T \n
//! 12      version (high nibble, always 2) | command (low nibble: 0 LOCAL, 1 PROXY)
//! 13      family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX)
//!           | transport (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//! 14..16  length of what follows: the address block, then TLVs
//! 16..    address block: INET 12 bytes (source IP, destination IP, source port, destination
//!         port), INET6 36 bytes in the same order, UNIX 216 bytes (two socket paths);
//!         then type-length-value extensions up to the length, which this parser skips
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// How many bytes of TLV extensions a header may carry after its address block. Load
/// balancers send a few dozen (an AWS VPC endpoint ID, a unique connection ID, TLS facts);
/// 512 leaves room for all of those while bounding what a header can make the server hold.
pub const MAX_TLV_LEN: usize = 512;

/// The fixed part: signature, version and command, family and transport, length.
const FIXED_LEN: usize = 16;

/// The largest header [`parse`] accepts: the fixed part, the largest address block (UNIX) and
/// [`MAX_TLV_LEN`]. A reader never needs to buffer more than this before [`parse`] decides.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + UNIX_BLOCK_LEN + MAX_TLV_LEN;

/// What the v1 text form starts with; recognised only to explain the refusal.
const TEXT_PREFIX: &[u8] = b"PROXY ";

const VERSION: u8 = 2;
const COMMAND_LOCAL: u8 = 0;
const COMMAND_PROXY: u8 = 1;

const FAMILY_UNSPEC: u8 = 0;
const FAMILY_INET: u8 = 1;
const FAMILY_INET6: u8 = 2;
const FAMILY_UNIX: u8 = 3;

const TRANSPORT_UNSPEC: u8 = 0;
const TRANSPORT_DGRAM: u8 = 2;
const LAST_TRANSPORT: u8 = TRANSPORT_DGRAM;

const INET_BLOCK_LEN: usize = 12;
const INET6_BLOCK_LEN: usize = 36;
const UNIX_BLOCK_LEN: usize = 216;

/// A complete PROXY v2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    /// The connection's own endpoints are the real ones: a LOCAL command (the balancer's
    /// health check), or a PROXY command for a family whose addresses the server has no use
    /// for (UNSPEC, UNIX, or an UNSPEC transport).
    Local {
        /// Bytes the header takes at the start of the stream.
        len: usize,
    },
    /// A TCP connection relayed for a client.
    Proxy {
        /// Bytes the header takes at the start of the stream.
        len: usize,
        /// The client: the address to treat as the connection's source.
        source: SocketAddr,
        /// The address the client connected to on the balancer.
        destination: SocketAddr,
    },
}

impl ProxyHeader {
    /// Bytes the header takes at the start of the stream, TLVs included: drop these and the
    /// client's first byte follows.
    pub fn header_len(&self) -> usize {
        match *self {
            ProxyHeader::Local { len } | ProxyHeader::Proxy { len, .. } => len,
        }
    }
}

/// Why the start of a connection is not an acceptable PROXY v2 header. Every one means: close
/// the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection starts like the text header of PROXY protocol version 1.
    #[error(
        "PROXY protocol version 1 (text) header: only version 2 (binary) is accepted; \
         configure the load balancer to send version 2"
    )]
    TextHeader,
    /// The bytes differ from the version 2 signature: no header was sent.
    #[error(
        "no PROXY protocol v2 header: byte {offset} differs from the signature (a client \
         connected directly, or the load balancer does not send the PROXY protocol)"
    )]
    BadSignature {
        /// The first byte that differs, counted from 0.
        offset: usize,
    },
    /// The version nibble is not 2.
    #[error("PROXY protocol version {0} is not supported: only version 2")]
    UnsupportedVersion(u8),
    /// The command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("unknown PROXY protocol command {0}")]
    UnknownCommand(u8),
    /// The address family nibble is none of UNSPEC, INET, INET6, UNIX.
    #[error("unknown PROXY protocol address family {0}")]
    UnknownFamily(u8),
    /// The transport nibble is none of UNSPEC, STREAM, DGRAM.
    #[error("unknown PROXY protocol transport {0}")]
    UnknownTransport(u8),
    /// The header describes a UDP connection, but it arrived on a stream.
    #[error("the PROXY protocol header describes a UDP (DGRAM) connection on a TCP stream")]
    DatagramOnStream,
    /// The length field announces more than the address block and [`MAX_TLV_LEN`].
    #[error("PROXY protocol header too long: {len} bytes after the fixed part, at most {max}")]
    TooLong {
        /// The length field.
        len: usize,
        /// The most accepted for the header's family.
        max: usize,
    },
    /// The length field is too short for the addresses of the header's family.
    #[error("PROXY protocol address block of {len} bytes, but its family needs {needed} bytes")]
    ShortAddressBlock {
        /// The length field.
        len: usize,
        /// What the family's addresses take.
        needed: usize,
    },
}

/// Parses the PROXY v2 header at the start of `buf`, the bytes received on a connection so
/// far. `Ok(None)`: no verdict yet, read more and call again with everything received. An
/// error comes as soon as the bytes seen rule a valid header out, and never later than
/// [`MAX_HEADER_LEN`] bytes. Bytes after the header are left alone.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    check_signature(buf)?;
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    let (version, command) = (version_command >> 4, version_command & 0x0f);
    if version != VERSION {
        return Err(ProxyError::UnsupportedVersion(version));
    }
    if command != COMMAND_LOCAL && command != COMMAND_PROXY {
        return Err(ProxyError::UnknownCommand(command));
    }
    let Some(&family_transport) = buf.get(13) else {
        return Ok(None);
    };
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    let block_len = match family {
        FAMILY_UNSPEC => 0,
        FAMILY_INET => INET_BLOCK_LEN,
        FAMILY_INET6 => INET6_BLOCK_LEN,
        FAMILY_UNIX => UNIX_BLOCK_LEN,
        _ => return Err(ProxyError::UnknownFamily(family)),
    };
    if transport > LAST_TRANSPORT {
        return Err(ProxyError::UnknownTransport(transport));
    }
    let proxied = command == COMMAND_PROXY;
    let ip_family = family == FAMILY_INET || family == FAMILY_INET6;
    // A LOCAL command ignores the family; a PROXY one for UDP cannot describe this stream.
    if proxied && ip_family && transport == TRANSPORT_DGRAM {
        return Err(ProxyError::DatagramOnStream);
    }
    let Some(&[high, low]) = buf.get(14..FIXED_LEN) else {
        return Ok(None);
    };
    let payload_len = usize::from(u16::from_be_bytes([high, low]));
    let max = block_len + MAX_TLV_LEN;
    if payload_len > max {
        return Err(ProxyError::TooLong {
            len: payload_len,
            max,
        });
    }
    if proxied && payload_len < block_len {
        return Err(ProxyError::ShortAddressBlock {
            len: payload_len,
            needed: block_len,
        });
    }
    let len = FIXED_LEN + payload_len;
    if buf.len() < len {
        return Ok(None);
    }
    if !proxied || !ip_family || transport == TRANSPORT_UNSPEC {
        return Ok(Some(ProxyHeader::Local { len }));
    }
    // Complete, and a PROXY header's length covers its address block: this slice is whole.
    let block = &buf[FIXED_LEN..FIXED_LEN + block_len];
    let (source, destination) = if family == FAMILY_INET {
        addresses::<4>(block, |octets| Ipv4Addr::from(octets).into())
    } else {
        addresses::<16>(block, |octets| Ipv6Addr::from(octets).into())
    };
    Ok(Some(ProxyHeader::Proxy {
        len,
        source,
        destination,
    }))
}

/// Fails as soon as a byte of `buf` differs from [`SIGNATURE`].
fn check_signature(buf: &[u8]) -> Result<(), ProxyError> {
    let Some(offset) = buf
        .iter()
        .zip(SIGNATURE.iter())
        .position(|(got, want)| got != want)
    else {
        return Ok(());
    };
    let seen = &buf[..buf.len().min(TEXT_PREFIX.len())];
    if TEXT_PREFIX.starts_with(seen) {
        Err(ProxyError::TextHeader)
    } else {
        Err(ProxyError::BadSignature { offset })
    }
}

/// The source and destination of an address block of IPs of `N` bytes: source IP,
/// destination IP, source port, destination port. `block` holds at least `2 * N + 4` bytes;
/// missing bytes would read as zeros rather than panic.
fn addresses<const N: usize>(
    block: &[u8],
    ip: impl Fn([u8; N]) -> IpAddr,
) -> (SocketAddr, SocketAddr) {
    let field = |at: usize| -> [u8; N] {
        let mut bytes = [0u8; N];
        if let Some(src) = block.get(at..at + N) {
            bytes.copy_from_slice(src);
        }
        bytes
    };
    let port = |at: usize| match block.get(at..at + 2) {
        Some(&[high, low]) => u16::from_be_bytes([high, low]),
        _ => 0,
    };
    (
        SocketAddr::new(ip(field(0)), port(2 * N)),
        SocketAddr::new(ip(field(N)), port(2 * N + 2)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    /// A header built field by field: version/command byte, family/transport byte, length
    /// field, then `rest` (addresses and TLVs).
    fn header(version_command: u8, family_transport: u8, len: u16, rest: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family_transport);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    /// 203.0.113.7:51000 to 198.51.100.1:3478, as the spec orders an INET block.
    const INET_BLOCK: [u8; 12] = [
        203, 0, 113, 7, // source IP
        198, 51, 100, 1, // destination IP
        0xc7, 0x38, // source port 51000
        0x0d, 0x96, // destination port 3478
    ];

    /// [2001:db8::7]:51000 to [2001:db8::1]:443.
    fn inet6_block() -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        block.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        block.extend_from_slice(&[0xc7, 0x38, 0x01, 0xbb]);
        block
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_over_tcp4() {
        let bytes = header(0x21, 0x11, 12, &INET_BLOCK);
        assert_eq!(
            parse(&bytes),
            Ok(Some(ProxyHeader::Proxy {
                len: 28,
                source: addr("203.0.113.7:51000"),
                destination: addr("198.51.100.1:3478"),
            }))
        );
    }

    #[test]
    fn proxy_over_tcp6() {
        let bytes = header(0x21, 0x21, 36, &inet6_block());
        assert_eq!(
            parse(&bytes),
            Ok(Some(ProxyHeader::Proxy {
                len: 52,
                source: addr("[2001:db8::7]:51000"),
                destination: addr("[2001:db8::1]:443"),
            }))
        );
    }

    #[test]
    fn bytes_after_the_header_are_not_part_of_it() {
        let mut bytes = header(0x21, 0x11, 12, &INET_BLOCK);
        // The client's first STUN header follows at once.
        bytes.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(parse(&bytes).unwrap().unwrap().header_len(), 28);
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut rest = INET_BLOCK.to_vec();
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "turn.example", PP2_TYPE_NOOP of 3 bytes.
        rest.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        rest.extend_from_slice(&[0x02, 0x00, 0x0c]);
        rest.extend_from_slice(b"turn.example");
        rest.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let len = u16::try_from(rest.len()).unwrap();
        let bytes = header(0x21, 0x11, len, &rest);
        assert_eq!(
            parse(&bytes),
            Ok(Some(ProxyHeader::Proxy {
                len: 16 + rest.len(),
                source: addr("203.0.113.7:51000"),
                destination: addr("198.51.100.1:3478"),
            }))
        );
    }

    #[test]
    fn local_command_uses_the_real_endpoints() {
        // A health check: LOCAL, UNSPEC, no addresses.
        assert_eq!(
            parse(&header(0x20, 0x00, 0, &[])),
            Ok(Some(ProxyHeader::Local { len: 16 }))
        );
        // LOCAL ignores the family and any addresses that come with it.
        assert_eq!(
            parse(&header(0x20, 0x11, 12, &INET_BLOCK)),
            Ok(Some(ProxyHeader::Local { len: 28 }))
        );
        assert_eq!(
            parse(&header(0x20, 0x12, 0, &[])),
            Ok(Some(ProxyHeader::Local { len: 16 }))
        );
    }

    #[test]
    fn unspec_and_unix_families_use_the_real_endpoints() {
        assert_eq!(
            parse(&header(0x21, 0x00, 0, &[])),
            Ok(Some(ProxyHeader::Local { len: 16 }))
        );
        let unix = [0u8; 216];
        for family_transport in [0x31, 0x32] {
            assert_eq!(
                parse(&header(0x21, family_transport, 216, &unix)),
                Ok(Some(ProxyHeader::Local { len: 232 }))
            );
        }
        // INET with an UNSPEC transport: the addresses are there but not to be used.
        assert_eq!(
            parse(&header(0x21, 0x10, 12, &INET_BLOCK)),
            Ok(Some(ProxyHeader::Local { len: 28 }))
        );
    }

    #[test]
    fn udp_over_a_stream_is_refused() {
        assert_eq!(
            parse(&header(0x21, 0x12, 12, &INET_BLOCK)),
            Err(ProxyError::DatagramOnStream)
        );
        // Decided on the family byte, before the length and addresses arrive.
        assert_eq!(
            parse(&header(0x21, 0x22, 36, &[])[..14]),
            Err(ProxyError::DatagramOnStream)
        );
    }

    #[test]
    fn truncated_headers_need_more_bytes() {
        let bytes = header(0x21, 0x21, 36, &inet6_block());
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_signature_fails_at_the_first_differing_byte() {
        let mut bytes = header(0x21, 0x11, 12, &INET_BLOCK);
        bytes[3] = b'X';
        for seen in 4..=bytes.len() {
            assert_eq!(
                parse(&bytes[..seen]),
                Err(ProxyError::BadSignature { offset: 3 })
            );
        }
        // Three good bytes alone are still a possible header.
        assert_eq!(parse(&bytes[..3]), Ok(None));
    }

    #[test]
    fn a_client_without_header_fails_on_its_first_byte() {
        // A STUN Binding request and a TLS ClientHello, straight from a client.
        assert_eq!(
            parse(&[0x00, 0x01]),
            Err(ProxyError::BadSignature { offset: 0 })
        );
        assert_eq!(parse(&[0x16]), Err(ProxyError::BadSignature { offset: 0 }));
    }

    #[test]
    fn version_1_text_header_is_refused_clearly() {
        let text = b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 3478\r\n";
        assert_eq!(parse(text), Err(ProxyError::TextHeader));
        assert_eq!(parse(b"PRO"), Err(ProxyError::TextHeader));
        assert!(ProxyError::TextHeader.to_string().contains("version 1"));
        // Not every 'P' is version 1.
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n"),
            Err(ProxyError::BadSignature { offset: 0 })
        );
    }

    #[test]
    fn other_versions_and_commands_are_refused_on_their_byte() {
        let mut bytes = SIGNATURE.to_vec();
        bytes.push(0x11);
        assert_eq!(parse(&bytes), Err(ProxyError::UnsupportedVersion(1)));
        bytes[12] = 0x31;
        assert_eq!(parse(&bytes), Err(ProxyError::UnsupportedVersion(3)));
        bytes[12] = 0x22;
        assert_eq!(parse(&bytes), Err(ProxyError::UnknownCommand(2)));
        bytes[12] = 0x2f;
        assert_eq!(parse(&bytes), Err(ProxyError::UnknownCommand(15)));
    }

    #[test]
    fn unknown_families_and_transports_are_refused() {
        assert_eq!(
            parse(&header(0x21, 0x41, 12, &INET_BLOCK)),
            Err(ProxyError::UnknownFamily(4))
        );
        assert_eq!(
            parse(&header(0x21, 0x13, 12, &INET_BLOCK)),
            Err(ProxyError::UnknownTransport(3))
        );
        assert_eq!(
            parse(&header(0x20, 0xf0, 0, &[])),
            Err(ProxyError::UnknownFamily(15))
        );
    }

    #[test]
    fn too_long_is_refused_before_the_bytes_arrive() {
        // Exactly the limit for INET is fine once complete.
        let mut rest = INET_BLOCK.to_vec();
        rest.resize(12 + MAX_TLV_LEN, 0);
        let at_limit = header(0x21, 0x11, 12 + 512, &rest);
        assert_eq!(
            parse(&at_limit).unwrap().unwrap().header_len(),
            16 + 12 + 512
        );
        assert_eq!(parse(&at_limit[..16]), Ok(None));
        // One more, or the whole 16-bit range, fails on the length field alone.
        assert_eq!(
            parse(&header(0x21, 0x11, 12 + 513, &[])),
            Err(ProxyError::TooLong { len: 525, max: 524 })
        );
        assert_eq!(
            parse(&header(0x20, 0x00, u16::MAX, &[])),
            Err(ProxyError::TooLong {
                len: 65_535,
                max: 512
            })
        );
        // The largest header there is: UNIX with every TLV byte allowed.
        let unix = header(0x21, 0x31, 216 + 512, &[0; 216 + 512]);
        assert_eq!(unix.len(), MAX_HEADER_LEN);
        assert_eq!(
            parse(&unix),
            Ok(Some(ProxyHeader::Local {
                len: MAX_HEADER_LEN
            }))
        );
    }

    #[test]
    fn address_block_shorter_than_its_family_is_refused() {
        assert_eq!(
            parse(&header(0x21, 0x11, 11, &INET_BLOCK[..11])),
            Err(ProxyError::ShortAddressBlock {
                len: 11,
                needed: 12
            })
        );
        assert_eq!(
            parse(&header(0x21, 0x21, 12, &INET_BLOCK)),
            Err(ProxyError::ShortAddressBlock {
                len: 12,
                needed: 36
            })
        );
        assert_eq!(
            parse(&header(0x21, 0x31, 0, &[])),
            Err(ProxyError::ShortAddressBlock {
                len: 0,
                needed: 216
            })
        );
        // LOCAL discards the block, whatever its size.
        assert_eq!(
            parse(&header(0x20, 0x21, 0, &[])),
            Ok(Some(ProxyHeader::Local { len: 16 }))
        );
    }

    /// A PROXY header over TCP of `family_transport` (0x11 IPv4, 0x21 IPv6) from the source and
    /// destination given as their bytes and as the addresses they must parse to, followed by
    /// `tlvs`, with the result it must parse to.
    fn proxied(
        family_transport: u8,
        (src, source): (&[u8], IpAddr),
        (dst, destination): (&[u8], IpAddr),
        sport: u16,
        dport: u16,
        tlvs: &[u8],
    ) -> (Vec<u8>, ProxyHeader) {
        let mut rest = [src, dst, &sport.to_be_bytes(), &dport.to_be_bytes()].concat();
        rest.extend_from_slice(tlvs);
        let bytes = header(
            0x21,
            family_transport,
            u16::try_from(rest.len()).unwrap(),
            &rest,
        );
        let parsed = ProxyHeader::Proxy {
            len: bytes.len(),
            source: SocketAddr::new(source, sport),
            destination: SocketAddr::new(destination, dport),
        };
        (bytes, parsed)
    }

    /// A valid header of any kind, with the result it must parse to.
    fn valid_header() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        let tlvs = proptest::collection::vec(any::<u8>(), 0..=MAX_TLV_LEN);
        let tcp4 = (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
        );
        let tcp6 = (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
        );
        prop_oneof![
            (tcp4, tlvs.clone()).prop_map(|((src, dst, sport, dport), tlvs)| {
                let (source, destination) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
                proxied(
                    0x11,
                    (&src, source.into()),
                    (&dst, destination.into()),
                    sport,
                    dport,
                    &tlvs,
                )
            }),
            (tcp6, tlvs.clone()).prop_map(|((src, dst, sport, dport), tlvs)| {
                let (source, destination) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
                proxied(
                    0x21,
                    (&src, source.into()),
                    (&dst, destination.into()),
                    sport,
                    dport,
                    &tlvs,
                )
            }),
            (
                prop_oneof![Just(0x00u8), Just(0x10), Just(0x11), Just(0x21), Just(0x22)],
                tlvs
            )
                .prop_map(|(family_transport, rest)| {
                    let bytes = header(
                        0x20,
                        family_transport,
                        u16::try_from(rest.len()).unwrap(),
                        &rest,
                    );
                    let parsed = ProxyHeader::Local { len: bytes.len() };
                    (bytes, parsed)
                }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_signature_never_panic(
            rest in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let mut bytes = SIGNATURE.to_vec();
            bytes.extend_from_slice(&rest);
            if let Ok(Some(parsed)) = parse(&bytes) {
                prop_assert!(parsed.header_len() <= bytes.len().min(MAX_HEADER_LEN));
            }
        }

        #[test]
        fn truncated_or_corrupted_valid_headers_never_panic(
            (bytes, _) in valid_header(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            with in any::<u8>(),
        ) {
            let truncated = &bytes[..cut.index(bytes.len() + 1)];
            let _ = parse(truncated);
            let mut corrupted = bytes.clone();
            let at = flip.index(corrupted.len());
            corrupted[at] = with;
            let _ = parse(&corrupted);
            let _ = parse(&corrupted[..cut.index(corrupted.len() + 1)]);
        }

        #[test]
        fn a_valid_header_parses_the_same_whatever_the_reads(
            (bytes, parsed) in valid_header(),
            trailing in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            for split in 0..bytes.len() {
                prop_assert_eq!(parse(&bytes[..split]), Ok(None), "split at {}", split);
            }
            prop_assert_eq!(parse(&bytes), Ok(Some(parsed)));
            let mut stream = bytes.clone();
            stream.extend_from_slice(&trailing);
            prop_assert_eq!(parse(&stream), Ok(Some(parsed)));
        }
    }
}
