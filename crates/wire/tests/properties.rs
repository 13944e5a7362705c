//! Property tests: whatever the writer produces parses back to the same content, and no input,
//! however hostile, makes the codec panic.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};

use icebreaker_wire::attr::*;
use icebreaker_wire::framing::{FrameKind, Framing, frame};
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, ErrorCode, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId, Transport, VerifyError, write_channel_data,
};
use proptest::prelude::*;

/// An attribute with owned contents, from which an [`AnyAttribute`] borrows.
#[derive(Clone, Debug)]
enum Spec {
    Address(u8, SocketAddr),
    Text(u8, String),
    Bytes(u8, Vec<u8>),
    ErrorCode(u16, String),
    AddressErrorCode(bool, u16, String),
    UnknownAttributes(Vec<u16>),
    PasswordAlgorithm(u16, Vec<u8>),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    U32(u8, u32),
    U64(bool, u64),
    Flag(bool),
    Channel(u16),
    Family(bool, bool),
    EvenPort(bool),
    Transport(u8),
    Token([u8; 8]),
    Icmp(u8, u16, u32),
    ChangeRequest(bool, bool),
    ResponsePort(u16),
    UserHash([u8; 32]),
    Unknown(u16, Vec<u8>),
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let text = "\\PC{0,40}";
    let bytes = prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (0u8..7, socket_addr()).prop_map(|(k, a)| Spec::Address(k, a)),
        (0u8..5, text).prop_map(|(k, s)| Spec::Text(k, s)),
        (0u8..2, bytes.clone()).prop_map(|(k, b)| Spec::Bytes(k, b)),
        (300u16..700, text).prop_map(|(c, s)| Spec::ErrorCode(c, s)),
        (any::<bool>(), 300u16..700, text).prop_map(|(f, c, s)| Spec::AddressErrorCode(f, c, s)),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(Spec::UnknownAttributes),
        (any::<u16>(), bytes.clone()).prop_map(|(a, p)| Spec::PasswordAlgorithm(a, p)),
        prop::collection::vec(
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..9)),
            0..4
        )
        .prop_map(Spec::PasswordAlgorithms),
        (0u8..3, any::<u32>()).prop_map(|(k, v)| Spec::U32(k, v)),
        (any::<bool>(), any::<u64>()).prop_map(|(k, v)| Spec::U64(k, v)),
        any::<bool>().prop_map(Spec::Flag),
        (0x4000u16..=0x4FFF).prop_map(Spec::Channel),
        (any::<bool>(), any::<bool>()).prop_map(|(k, v6)| Spec::Family(k, v6)),
        any::<bool>().prop_map(Spec::EvenPort),
        any::<u8>().prop_map(Spec::Transport),
        any::<[u8; 8]>().prop_map(Spec::Token),
        (0u8..128, 0u16..512, any::<u32>()).prop_map(|(t, c, d)| Spec::Icmp(t, c, d)),
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Spec::ChangeRequest(a, b)),
        any::<u16>().prop_map(Spec::ResponsePort),
        any::<[u8; 32]>().prop_map(Spec::UserHash),
        (any::<u16>(), bytes)
            .prop_filter("not a known type", |(t, _)| !AttrType(*t).is_known())
            .prop_map(|(t, b)| Spec::Unknown(t, b)),
    ]
}

/// Holds the borrowed lists that [`UnknownAttributes`] and [`PasswordAlgorithms`] point into.
struct Lists {
    types: Vec<Vec<AttrType>>,
    algorithms: Vec<Vec<PasswordAlgorithm<'static>>>,
}

fn lists(specs: &'static [Spec]) -> Lists {
    let mut out = Lists {
        types: Vec::new(),
        algorithms: Vec::new(),
    };
    for s in specs {
        match s {
            Spec::UnknownAttributes(t) => out.types.push(t.iter().copied().map(AttrType).collect()),
            Spec::PasswordAlgorithms(list) => out.algorithms.push(
                list.iter()
                    .map(|(a, p)| PasswordAlgorithm {
                        algorithm: *a,
                        parameters: p,
                    })
                    .collect(),
            ),
            _ => {}
        }
    }
    out
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Ipv6
    } else {
        AddressFamily::Ipv4
    }
}

fn to_any<'a>(specs: &'a [Spec], lists: &'a Lists) -> Vec<AnyAttribute<'a>> {
    let (mut types, mut algorithms) = (lists.types.iter(), lists.algorithms.iter());
    specs
        .iter()
        .map(|s| match s {
            Spec::Address(k, a) => match k {
                0 => AnyAttribute::MappedAddress(MappedAddress(*a)),
                1 => AnyAttribute::XorMappedAddress(XorMappedAddress(*a)),
                2 => AnyAttribute::XorPeerAddress(XorPeerAddress(*a)),
                3 => AnyAttribute::XorRelayedAddress(XorRelayedAddress(*a)),
                4 => AnyAttribute::AlternateServer(AlternateServer(*a)),
                5 => AnyAttribute::ResponseOrigin(ResponseOrigin(*a)),
                _ => AnyAttribute::OtherAddress(OtherAddress(*a)),
            },
            Spec::Text(k, t) => match k {
                0 => AnyAttribute::Username(Username(t)),
                1 => AnyAttribute::Realm(Realm(t)),
                2 => AnyAttribute::Nonce(Nonce(t)),
                3 => AnyAttribute::Software(Software(t)),
                _ => AnyAttribute::AlternateDomain(AlternateDomain(t)),
            },
            Spec::Bytes(k, b) => match k {
                0 => AnyAttribute::Data(Data(b)),
                _ => AnyAttribute::Padding(Padding(b)),
            },
            Spec::ErrorCode(c, r) => AnyAttribute::ErrorCode(ErrorCodeAttribute {
                code: ErrorCode::new(*c).expect("in range"),
                reason: r,
            }),
            Spec::AddressErrorCode(f, c, r) => AnyAttribute::AddressErrorCode(AddressErrorCode {
                family: family(*f),
                code: ErrorCode::new(*c).expect("in range"),
                reason: r,
            }),
            Spec::UnknownAttributes(_) => AnyAttribute::UnknownAttributes(UnknownAttributes::new(
                types.next().expect("collected"),
            )),
            Spec::PasswordAlgorithm(a, p) => AnyAttribute::PasswordAlgorithm(PasswordAlgorithm {
                algorithm: *a,
                parameters: p,
            }),
            Spec::PasswordAlgorithms(_) => AnyAttribute::PasswordAlgorithms(
                PasswordAlgorithms::new(algorithms.next().expect("collected")),
            ),
            Spec::U32(k, v) => match k {
                0 => AnyAttribute::Lifetime(Lifetime(*v)),
                1 => AnyAttribute::ConnectionId(ConnectionId(*v)),
                _ => AnyAttribute::Priority(Priority(*v)),
            },
            Spec::U64(k, v) => {
                if *k {
                    AnyAttribute::IceControlling(IceControlling(*v))
                } else {
                    AnyAttribute::IceControlled(IceControlled(*v))
                }
            }
            Spec::Flag(k) => {
                if *k {
                    AnyAttribute::DontFragment(DontFragment)
                } else {
                    AnyAttribute::UseCandidate(UseCandidate)
                }
            }
            Spec::Channel(c) => AnyAttribute::ChannelNumber(ChannelNumber::new(*c).expect("range")),
            Spec::Family(k, v6) => {
                if *k {
                    AnyAttribute::RequestedAddressFamily(RequestedAddressFamily(family(*v6)))
                } else {
                    AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(family(*v6)))
                }
            }
            Spec::EvenPort(r) => AnyAttribute::EvenPort(EvenPort { reserve_next: *r }),
            Spec::Transport(p) => AnyAttribute::RequestedTransport(RequestedTransport(*p)),
            Spec::Token(t) => AnyAttribute::ReservationToken(ReservationToken(*t)),
            Spec::Icmp(t, c, d) => AnyAttribute::Icmp(Icmp {
                icmp_type: *t,
                code: *c,
                error_data: *d,
            }),
            Spec::ChangeRequest(a, b) => AnyAttribute::ChangeRequest(ChangeRequest {
                change_ip: *a,
                change_port: *b,
            }),
            Spec::ResponsePort(p) => AnyAttribute::ResponsePort(ResponsePort(*p)),
            Spec::UserHash(h) => AnyAttribute::UserHash(UserHash(*h)),
            Spec::Unknown(t, v) => AnyAttribute::Unknown(RawAttribute {
                attr_type: AttrType(*t),
                value: v,
            }),
        })
        .collect()
}

fn message_type() -> impl Strategy<Value = MessageType> {
    (0u16..0x1000, 0u8..4).prop_map(|(m, c)| {
        let class = [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ][usize::from(c)];
        MessageType::new(Method::new(m).expect("12 bits"), class)
    })
}

/// Which trailers to append: none, MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 (with a
/// truncation), both, each optionally followed by FINGERPRINT.
fn trailers() -> impl Strategy<Value = (bool, Option<usize>, bool)> {
    (
        any::<bool>(),
        prop::option::of((4usize..=8).prop_map(|n| n * 4)),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn written_messages_parse_back_to_the_same_attributes(
        message_type in message_type(),
        tid in any::<[u8; 12]>(),
        specs in prop::collection::vec(spec(), 0..12),
        (with_mi, with_mi256, with_fp) in trailers(),
        password in "[ -~]{0,40}",
    ) {
        // Leak to get 'static borrows for the lists; a few kilobytes per case in a test.
        let specs: &'static [Spec] = Box::leak(specs.into_boxed_slice());
        let lists = lists(specs);
        let attrs = to_any(specs, &lists);
        let tid = TransactionId::new(tid);
        let key = IntegrityKey::short_term(&password);

        let mut buf = vec![0xA5u8; 8192];
        let mut w = MessageWriter::new(&mut buf, message_type, tid).expect("header fits");
        for a in &attrs {
            w.add_any(a).expect("fits");
        }
        if with_mi {
            w.add_message_integrity(&key).expect("fits");
        }
        if let Some(len) = with_mi256 {
            w.add_message_integrity_sha256_truncated(&key, len).expect("fits");
        }
        if with_fp {
            w.add_fingerprint().expect("fits");
        }
        let len = w.finish();

        let message = Message::parse(&buf[..len]).expect("the writer's output parses");
        prop_assert_eq!(message.message_type(), message_type);
        prop_assert_eq!(message.transaction_id(), tid);
        let decoded: Vec<AnyAttribute<'_>> = message
            .attributes()
            .filter(|raw| !matches!(
                raw.attr_type,
                AttrType::MESSAGE_INTEGRITY | AttrType::MESSAGE_INTEGRITY_SHA256 | AttrType::FINGERPRINT
            ))
            .map(|raw| AnyAttribute::decode(raw, &tid).expect("the writer's attributes decode"))
            .collect();
        prop_assert_eq!(&decoded, &attrs);

        let expect = |present: bool| if present { Ok(()) } else { Err(VerifyError::Missing) };
        prop_assert_eq!(message.verify_message_integrity(&key), expect(with_mi));
        prop_assert_eq!(message.verify_message_integrity_sha256(&key), expect(with_mi256.is_some()));
        prop_assert_eq!(message.verify_fingerprint(), expect(with_fp));

        // Padding is zero everywhere: walk the raw layout independently of the parser.
        let mut at = 20;
        while at < len {
            let vlen = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
            let padded = (vlen + 3) & !3;
            prop_assert!(buf[at + 4 + vlen..at + 4 + padded].iter().all(|&b| b == 0));
            at += 4 + padded;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn stun_shaped_bytes_never_panic(
        type_and_tid in any::<[u8; 2]>(),
        attrs in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)), 0..10),
        length_delta in -8i32..8,
    ) {
        // A valid header with garbage attributes and a length field that may be off.
        let mut bytes = vec![type_and_tid[0] & 0x3F, type_and_tid[1], 0, 0, 0x21, 0x12, 0xA4, 0x42];
        bytes.extend_from_slice(&[7; 12]);
        for (t, v) in &attrs {
            bytes.extend_from_slice(&t.to_be_bytes());
            bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
            bytes.extend_from_slice(v);
            bytes.resize((bytes.len() + 3) & !3, 0);
        }
        let length = (bytes.len() as i32 - 20 + length_delta).clamp(0, 0xFFFF) as u16;
        bytes[2..4].copy_from_slice(&length.to_be_bytes());
        exercise(&bytes);
        if length_delta == 0 {
            prop_assert!(Message::parse(&bytes).is_ok());
        }
    }

    #[test]
    fn truncations_are_refused(specs in prop::collection::vec(spec(), 1..6), cut in any::<prop::sample::Index>()) {
        let specs: &'static [Spec] = Box::leak(specs.into_boxed_slice());
        let lists = lists(specs);
        let attrs = to_any(specs, &lists);
        let mut buf = vec![0u8; 4096];
        let request = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut w = MessageWriter::new(&mut buf, request, TransactionId::new([1; 12])).expect("fits");
        for a in &attrs {
            w.add_any(a).expect("fits");
        }
        let len = w.finish();
        let cut = cut.index(len);
        prop_assert!(Message::parse(&buf[..cut]).is_err());
        exercise(&buf[..cut]);
    }

    /// CRC-32 detects every single-bit error, and an HMAC every change: a flipped bit anywhere
    /// in a message with both is refused by the parser or by one of the two checks.
    #[test]
    fn bit_flips_are_caught(specs in prop::collection::vec(spec(), 0..6), bit in any::<prop::sample::Index>()) {
        let specs: &'static [Spec] = Box::leak(specs.into_boxed_slice());
        let lists = lists(specs);
        let attrs = to_any(specs, &lists);
        let key = IntegrityKey::short_term("pass");
        let mut buf = vec![0u8; 4096];
        let request = MessageType::new(Method::BINDING, Class::Request);
        let mut w = MessageWriter::new(&mut buf, request, TransactionId::new([3; 12])).expect("fits");
        for a in &attrs {
            w.add_any(a).expect("fits");
        }
        w.add_message_integrity(&key).expect("fits");
        w.add_fingerprint().expect("fits");
        let len = w.finish();
        let bit = bit.index(len * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        let bytes = &buf[..len];
        exercise(bytes);
        if let Ok(message) = Message::parse(bytes) {
            prop_assert!(message.verify_fingerprint().is_err());
            prop_assert!(
                message.verify_message_integrity(&key).is_err()
                    || message.integrity_offset().is_some_and(|at| bit / 8 >= at + 24)
            );
        }
    }

    #[test]
    fn channel_data_round_trips(channel in 0x4000u16..=0x4FFF, data in prop::collection::vec(any::<u8>(), 0..300), stream in any::<bool>()) {
        let transport = if stream { Transport::Stream } else { Transport::Datagram };
        let channel = ChannelNumber::new(channel).expect("range");
        let mut buf = vec![0xEEu8; 320];
        let n = write_channel_data(&mut buf, channel, &data, transport).expect("fits");
        let parsed = ChannelData::parse(&buf[..n]).expect("valid");
        prop_assert_eq!(parsed.channel(), channel);
        prop_assert_eq!(parsed.data(), &data[..]);
        prop_assert!(buf[4 + data.len()..n].iter().all(|&b| b == 0));
    }

    /// Any sequence of frames, concatenated and delivered in arbitrary pieces, is cut back into
    /// the same frames.
    #[test]
    fn stream_framing_recovers_frames(
        frames in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)), 1..8),
        cuts in prop::collection::vec(1usize..64, 1..40),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, (is_stun, payload)) in frames.iter().enumerate() {
            let start = stream.len();
            let mut buf = vec![0u8; 4 + 200 + 20 + 4];
            let n = if *is_stun {
                let indication = MessageType::new(Method::SEND, Class::Indication);
                let mut w = MessageWriter::new(&mut buf, indication, TransactionId::new([i as u8; 12])).expect("fits");
                w.add(&Data(payload)).expect("fits");
                w.finish()
            } else {
                let channel = ChannelNumber::new(0x4000 + i as u16).expect("range");
                write_channel_data(&mut buf, channel, payload, Transport::Stream).expect("fits")
            };
            stream.extend_from_slice(&buf[..n]);
            let kind = if *is_stun { FrameKind::Stun } else { FrameKind::ChannelData };
            expected.push((kind, start, n));
        }

        // Feed the stream in pieces, as reads would deliver it.
        let mut received = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while fed < stream.len() {
            let step = (*cut.next().expect("cycle")).min(stream.len() - fed);
            pending.extend_from_slice(&stream[fed..fed + step]);
            fed += step;
            loop {
                match frame(&pending).expect("valid stream") {
                    Framing::Complete(f) => {
                        received.push((f.kind, consumed, f.len));
                        let bytes = &pending[..f.len];
                        match f.kind {
                            FrameKind::Stun => prop_assert!(Message::parse(bytes).is_ok()),
                            FrameKind::ChannelData => prop_assert!(ChannelData::parse(bytes).is_ok()),
                        }
                        consumed += f.len;
                        pending.drain(..f.len);
                    }
                    Framing::Incomplete { needed } => {
                        prop_assert!(needed > pending.len());
                        break;
                    }
                }
            }
        }
        prop_assert_eq!(received, expected);
        prop_assert!(pending.is_empty());
    }
}

/// Runs every read-only operation on `bytes`; none may panic.
fn exercise(bytes: &[u8]) {
    let _ = frame(bytes);
    let _ = ChannelData::parse(bytes);
    let Ok(message) = Message::parse(bytes) else {
        return;
    };
    let tid = message.transaction_id();
    for raw in message.attributes() {
        let _ = AnyAttribute::decode(raw, &tid);
    }
    let _ = format!("{message:?}");
    let key = IntegrityKey::short_term("x");
    let _ = message.verify_integrity(&key);
    let _ = message.verify_message_integrity(&key);
    let _ = message.verify_message_integrity_sha256(&key);
    let _ = message.verify_fingerprint();
    let _ = message.unknown_comprehension_required().count();
    let _ = message.get::<XorPeerAddress>();
    let _ = message.get_all::<XorPeerAddress>().count();
    let _ = message.get::<ErrorCodeAttribute>();
    let _ = message
        .get::<PasswordAlgorithms>()
        .map(|p| p.map(|p| p.iter().count()));
    let _ = message
        .get::<UnknownAttributes>()
        .map(|p| p.map(|p| p.iter().count()));
}
