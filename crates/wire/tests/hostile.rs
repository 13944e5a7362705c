//! The codec items of the abuse catalogue: each hostile input gets the error value that makes
//! a server drop it or answer 400/420, never a panic.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use icebreaker_wire::attr::*;
use icebreaker_wire::framing::{FrameKind, Framing, FramingError, frame};
use icebreaker_wire::{
    Class, IntegrityKey, Message, MessageType, MessageWriter, Method, ParseError, TransactionId,
    VerifyError, WriteError,
};

const TID: TransactionId = TransactionId::new([0x42; 12]);

fn request(method: Method) -> MessageType {
    MessageType::new(method, Class::Request)
}

/// An Allocate request assembled by hand from raw attributes, bypassing the writer's ordering
/// rules, with a correct header and zero padding.
fn raw_message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x03, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    bytes.extend_from_slice(TID.as_bytes());
    for (t, v) in attrs {
        bytes.extend_from_slice(&t.to_be_bytes());
        bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
        bytes.extend_from_slice(v);
        bytes.resize((bytes.len() + 3) & !3, 0);
    }
    let length = (bytes.len() - 20) as u16;
    bytes[2..4].copy_from_slice(&length.to_be_bytes());
    bytes
}

#[test]
fn short_datagrams_are_dropped() {
    for len in 0..20 {
        assert_eq!(
            Message::parse(&[0u8; 20][..len]).map(|_| ()),
            Err(ParseError::TooShort(len))
        );
    }
}

#[test]
fn top_bits_must_be_zero() {
    let mut bytes = raw_message(&[]);
    for top in [0x40, 0x80, 0xC0] {
        bytes[0] = top;
        assert_eq!(Message::parse(&bytes).map(|_| ()), Err(ParseError::NotStun));
    }
}

#[test]
fn wrong_magic_cookie_is_dropped() {
    let mut bytes = raw_message(&[]);
    bytes[4] ^= 0x01;
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::BadMagicCookie(0x2012_A442))
    );
}

#[test]
fn unaligned_length_is_dropped() {
    let mut bytes = raw_message(&[(0x8022, b"abcd")]);
    bytes[3] = 6;
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::UnalignedLength(6))
    );
}

#[test]
fn length_beyond_the_datagram_is_dropped() {
    let mut bytes = raw_message(&[(0x8022, b"abcd")]);
    bytes[3] = 12;
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::LengthMismatch {
            declared: 12,
            available: 8
        })
    );
    // Trailing bytes after the declared length are refused too: one datagram, one message.
    let mut bytes = raw_message(&[]);
    bytes.extend_from_slice(&[0; 4]);
    assert!(matches!(
        Message::parse(&bytes),
        Err(ParseError::LengthMismatch { .. })
    ));
}

#[test]
fn attribute_running_past_the_end_is_dropped() {
    let mut bytes = raw_message(&[(0x8022, b"abcd")]);
    bytes[23] = 5; // SOFTWARE claims 5 bytes, padded to 8, only 4 are there
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::AttributeOverrun(20))
    );
    let mut bytes = raw_message(&[(0x8022, b"abcd")]);
    bytes[23] = 0xFF;
    bytes[22] = 0xFF;
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::AttributeOverrun(20))
    );
}

#[test]
fn bad_fingerprint_is_detected() {
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, request(Method::BINDING), TID).expect("fits");
    w.add_fingerprint().expect("fits");
    let len = w.finish();
    buf[len - 1] ^= 0xFF;
    let message = Message::parse(&buf[..len]).expect("layout is fine");
    assert_eq!(message.verify_fingerprint(), Err(VerifyError::Mismatch));
    // A FINGERPRINT of the wrong size is refused, not read out of bounds.
    let bytes = raw_message(&[(0x8028, &[1, 2])]);
    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(
        message.verify_fingerprint(),
        Err(VerifyError::InvalidLength)
    );
}

#[test]
fn fingerprint_must_be_last() {
    let bytes = raw_message(&[(0x8028, &[0; 4]), (0x8022, b"late")]);
    assert_eq!(
        Message::parse(&bytes).map(|_| ()),
        Err(ParseError::AttributeAfterFingerprint)
    );
}

#[test]
fn zero_length_values_are_bad_requests() {
    let bytes = raw_message(&[
        (0x0012, &[]), // XOR-PEER-ADDRESS
        (0x0020, &[]), // XOR-MAPPED-ADDRESS
        (0x0016, &[]), // XOR-RELAYED-ADDRESS
        (0x0009, &[]), // ERROR-CODE
        (0x000D, &[]), // LIFETIME
        (0x0019, &[]), // REQUESTED-TRANSPORT
    ]);
    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(
        message.get::<XorPeerAddress>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::XOR_PEER_ADDRESS,
            len: 0
        })
    );
    assert_eq!(
        message.get::<XorMappedAddress>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::XOR_MAPPED_ADDRESS,
            len: 0
        })
    );
    assert_eq!(
        message.get::<XorRelayedAddress>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::XOR_RELAYED_ADDRESS,
            len: 0
        })
    );
    assert_eq!(
        message.get::<ErrorCodeAttribute>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::ERROR_CODE,
            len: 0
        })
    );
    assert_eq!(
        message.get::<Lifetime>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::LIFETIME,
            len: 0
        })
    );
    assert_eq!(
        message.get::<RequestedTransport>().map(|_| ()),
        Err(AttributeError::InvalidLength {
            attr: AttrType::REQUESTED_TRANSPORT,
            len: 0
        })
    );
}

#[test]
fn message_integrity_of_the_wrong_size_is_a_bad_request() {
    let bytes = raw_message(&[(0x0006, b"user"), (0x0008, &[0; 16])]);
    let message = Message::parse(&bytes).expect("layout is fine");
    let key = IntegrityKey::short_term("pass");
    assert_eq!(
        message.verify_message_integrity(&key),
        Err(VerifyError::InvalidLength)
    );
    assert_eq!(
        message.verify_integrity(&key),
        Err(VerifyError::InvalidLength)
    );
    let bytes = raw_message(&[(0x001C, &[0; 12])]);
    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(
        message.verify_integrity(&key),
        Err(VerifyError::InvalidLength)
    );
    let empty = raw_message(&[]);
    let message = Message::parse(&empty).expect("valid");
    assert_eq!(message.verify_integrity(&key), Err(VerifyError::Missing));
}

#[test]
fn unknown_address_family_is_a_bad_request() {
    let bytes = raw_message(&[(0x0012, &[0, 0x03, 0, 0, 1, 2, 3, 4])]);
    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(
        message.get::<XorPeerAddress>(),
        Err(AttributeError::UnknownAddressFamily {
            attr: AttrType::XOR_PEER_ADDRESS,
            family: 3
        })
    );
}

#[test]
fn unknown_comprehension_required_attributes_are_listed() {
    let bytes = raw_message(&[
        (0x0031, b"x"),   // unknown, comprehension-required
        (0xC057, b"net"), // unknown, optional (Chrome's GOOG-NETWORK-INFO): ignored
        (0x0006, b"user"),
        (0x7FFF, b""), // unknown, comprehension-required
    ]);
    let message = Message::parse(&bytes).expect("valid");
    let unknown: Vec<AttrType> = message.unknown_comprehension_required().collect();
    assert_eq!(unknown, [AttrType(0x0031), AttrType(0x7FFF)]);
    assert!(
        message.has(AttrType(0xC057)),
        "unknown optional ones stay readable raw"
    );
}

/// RFC 8489 §14.5: a LIFETIME appended after MESSAGE-INTEGRITY, where an attacker on the path
/// could add it without knowing the key, has no effect.
#[test]
fn attributes_after_message_integrity_are_ignored() {
    let key = IntegrityKey::short_term("pass");
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, request(Method::REFRESH), TID).expect("fits");
    w.add(&Username("alice")).expect("fits");
    w.add_message_integrity(&key).expect("fits");
    let len = w.finish();
    // Append LIFETIME 0 by hand: the writer refuses to.
    let mut bytes = buf[..len].to_vec();
    bytes.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 0]);
    let new_len = (bytes.len() - 20) as u16;
    bytes[2..4].copy_from_slice(&new_len.to_be_bytes());

    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(message.get::<Lifetime>(), Ok(None));
    assert!(!message.has(AttrType::LIFETIME));
    assert_eq!(message.attributes().count(), 2);
    assert_eq!(message.verify_message_integrity(&key), Ok(()));
}

#[test]
fn only_integrity_sha256_and_fingerprint_may_follow_integrity() {
    let key = IntegrityKey::short_term("pass");
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, request(Method::BINDING), TID).expect("fits");
    w.add_message_integrity(&key).expect("fits");
    assert_eq!(
        w.add(&Lifetime(1)),
        Err(WriteError::OutOfOrder {
            attr: AttrType::LIFETIME,
            after: AttrType::MESSAGE_INTEGRITY
        })
    );
    w.add_message_integrity_sha256(&key)
        .expect("SHA-256 may follow");
    assert!(w.add_message_integrity(&key).is_err());
    w.add_fingerprint().expect("FINGERPRINT may follow");
    assert!(w.add_fingerprint().is_err());
    let len = w.finish();

    // A parser sees the same rule on a hand-made message: MESSAGE-INTEGRITY after
    // MESSAGE-INTEGRITY-SHA256 is invisible.
    let bytes = raw_message(&[(0x001C, &[0; 32]), (0x0008, &[0; 20]), (0x0006, b"late")]);
    let message = Message::parse(&bytes).expect("layout is fine");
    assert_eq!(message.integrity_offset(), None);
    assert!(!message.has(AttrType::USERNAME));
    assert_eq!(
        message.verify_message_integrity(&key),
        Err(VerifyError::Missing)
    );

    let message = Message::parse(&buf[..len]).expect("valid");
    assert_eq!(message.verify_message_integrity(&key), Ok(()));
    assert_eq!(message.verify_message_integrity_sha256(&key), Ok(()));
    assert_eq!(message.verify_fingerprint(), Ok(()));
}

#[test]
fn response_padding_is_always_zeroed() {
    let mut buf = [0xFFu8; 128];
    let mut w =
        MessageWriter::new(&mut buf, request(Method::BINDING).success(), TID).expect("fits");
    w.add(&Software("x")).expect("fits");
    w.add(&ErrorCodeAttribute {
        code: icebreaker_wire::ErrorCode::BAD_REQUEST,
        reason: "Bad",
    })
    .expect("fits");
    w.add(&EvenPort { reserve_next: true }).expect("fits");
    w.add_raw(AttrType(0x8055), &[1, 2]).expect("fits");
    let len = w.finish();
    let bytes = &buf[..len];
    assert_eq!(&bytes[24..28], &[b'x', 0, 0, 0]);
    assert_eq!(&bytes[32..40], &[0, 0, 4, 0, b'B', b'a', b'd', 0]);
    assert_eq!(&bytes[44..48], &[0x80, 0, 0, 0]);
    assert_eq!(&bytes[52..56], &[1, 2, 0, 0]);
}

#[test]
fn writer_refuses_small_buffers_and_long_values() {
    assert!(matches!(
        MessageWriter::new(&mut [0u8; 19], request(Method::BINDING), TID),
        Err(WriteError::BufferTooSmall { .. })
    ));
    let mut buf = [0u8; 28];
    let mut w = MessageWriter::new(&mut buf, request(Method::BINDING), TID).expect("fits");
    assert_eq!(
        w.add(&Software("too long")),
        Err(WriteError::BufferTooSmall {
            needed: 32,
            available: 28
        })
    );
    assert_eq!(w.len(), 20, "a failed add leaves the message as it was");
    let mut big = vec![0u8; 70_000];
    let mut w = MessageWriter::new(&mut big, request(Method::BINDING), TID).expect("fits");
    assert_eq!(w.add(&Data(&[0; 65_536])), Err(WriteError::TooLong));
    w.add(&Data(&[0; 65_000])).expect("fits");
    assert_eq!(w.add(&Data(&[0; 1_000])), Err(WriteError::TooLong));
    assert_eq!(
        w.add_message_integrity_sha256_truncated(&IntegrityKey::short_term("k"), 18),
        Err(WriteError::InvalidTruncation(18))
    );
}

#[test]
fn stream_framing_edge_cases() {
    // A length field near 65535 is reported so the reader can enforce its own maximum.
    assert_eq!(
        frame(&[0x00, 0x03, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42]),
        Ok(Framing::Incomplete { needed: 65_552 })
    );
    // Many frames in one read: the first is reported, the caller loops.
    let mut two = raw_message(&[]);
    two.extend(raw_message(&[(0x8022, b"abcd")]));
    let Ok(Framing::Complete(first)) = frame(&two) else {
        panic!("a whole frame is there");
    };
    assert_eq!((first.kind, first.len), (FrameKind::Stun, 20));
    assert_eq!(
        frame(&two[20..]).map(|f| matches!(f, Framing::Complete(f) if f.len == 28)),
        Ok(true)
    );
    // A frame split across reads asks for exactly what is missing.
    assert_eq!(frame(&two[20..30]), Ok(Framing::Incomplete { needed: 28 }));
    assert_eq!(
        frame(&[0xC0, 0, 0, 0]),
        Err(FramingError::UnknownFrame(0xC0))
    );
}
