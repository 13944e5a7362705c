//! No heap allocation on any parse or write path: a counting global allocator watches every
//! operation of the codec.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::net::SocketAddr;

use icebreaker_tests::alloc_counter::{CountingAllocator, allocations};

use icebreaker_wire::attr::*;
use icebreaker_wire::credentials::{
    KeyAlgorithm, LongTermKey, RestPassword, RestUsername, user_hash,
};
use icebreaker_wire::framing::frame;
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, ErrorCode, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId, Transport, write_channel_data, write_channel_data_header,
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn the_counter_sees_allocations() {
    // Without this, a broken counter would make every other test here pass.
    assert!(allocations(|| vec![1u8; 64]).0 >= 1);
    assert_eq!(allocations(|| [1u8; 64]).0, 0);
}

#[test]
fn writing_and_parsing_never_allocate() {
    // Keys are built once per session or user, outside the hot path; build them first.
    let short = IntegrityKey::short_term("VOkJxbRl1RmTxUk/WvJxBt");
    let long = IntegrityKey::long_term(KeyAlgorithm::Sha256, "alice", "example.org", "secret");
    let tid = TransactionId::new([5; 12]);
    let peer: SocketAddr = "[2001:db8::7]:40000".parse().expect("literal");
    let relayed: SocketAddr = "203.0.113.1:50000".parse().expect("literal");
    let types = [AttrType(0x0031)];
    let algorithms = [
        PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
        PasswordAlgorithm::new(PasswordAlgorithm::MD5),
    ];
    let mut buf = [0u8; 1500];

    let (write, len) = allocations(|| {
        let allocate = MessageType::new(Method::ALLOCATE, Class::Success);
        let mut w = MessageWriter::new(&mut buf, allocate, tid).expect("fits");
        w.add(&XorRelayedAddress(relayed)).expect("fits");
        w.add(&XorMappedAddress(peer)).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
        w.add(&Lifetime(600)).expect("fits");
        w.add(&Username("alice")).expect("fits");
        w.add(&Realm("example.org")).expect("fits");
        w.add(&Nonce("obMatJos2gAAAnonce")).expect("fits");
        w.add(&Software("icebreaker")).expect("fits");
        w.add(&ErrorCodeAttribute {
            code: ErrorCode::STALE_NONCE,
            reason: "Stale Nonce",
        })
        .expect("fits");
        w.add(&UnknownAttributes::new(&types)).expect("fits");
        w.add(&PasswordAlgorithms::new(&algorithms)).expect("fits");
        w.add(&PasswordAlgorithm::new(PasswordAlgorithm::SHA256))
            .expect("fits");
        w.add(&UserHash([1; 32])).expect("fits");
        w.add(&ChannelNumber::MIN).expect("fits");
        w.add(&Data(b"payload")).expect("fits");
        w.add(&RequestedTransport::UDP).expect("fits");
        w.add(&RequestedAddressFamily(AddressFamily::Ipv6))
            .expect("fits");
        w.add(&AdditionalAddressFamily(AddressFamily::Ipv6))
            .expect("fits");
        w.add(&EvenPort { reserve_next: true }).expect("fits");
        w.add(&DontFragment).expect("fits");
        w.add(&ReservationToken([2; 8])).expect("fits");
        w.add(&AddressErrorCode {
            family: AddressFamily::Ipv6,
            code: ErrorCode::INSUFFICIENT_CAPACITY,
            reason: "",
        })
        .expect("fits");
        w.add(&Icmp {
            icmp_type: 3,
            code: 4,
            error_data: 1280,
        })
        .expect("fits");
        w.add(&ConnectionId(7)).expect("fits");
        w.add(&ChangeRequest {
            change_ip: true,
            change_port: true,
        })
        .expect("fits");
        w.add(&ResponseOrigin(relayed)).expect("fits");
        w.add(&OtherAddress(relayed)).expect("fits");
        w.add(&ResponsePort(9)).expect("fits");
        w.add(&Padding(&[0; 8])).expect("fits");
        w.add(&Priority(1)).expect("fits");
        w.add(&UseCandidate).expect("fits");
        w.add(&IceControlled(1)).expect("fits");
        w.add(&IceControlling(2)).expect("fits");
        w.add(&AlternateServer(relayed)).expect("fits");
        w.add(&AlternateDomain("turn.example.org")).expect("fits");
        w.add(&MappedAddress(relayed)).expect("fits");
        w.add_message_integrity(&long).expect("fits");
        w.add_message_integrity_sha256(&long).expect("fits");
        w.add_fingerprint().expect("fits");
        w.finish()
    });
    assert_eq!(write, 0, "writing allocated");

    let bytes = &buf[..len];

    let (parse, decoded) = allocations(|| {
        let message = Message::parse(bytes).expect("valid");
        assert_eq!(message.verify_message_integrity(&long), Ok(()));
        assert_eq!(message.verify_message_integrity_sha256(&long), Ok(()));
        assert!(message.verify_integrity(&long).is_ok());
        assert_eq!(message.verify_fingerprint(), Ok(()));
        let mut decoded = 0;
        for raw in message.attributes() {
            black_box(AnyAttribute::decode(raw, &message.transaction_id()).expect("valid"));
            decoded += 1;
        }
        for peer in message.get_all::<XorPeerAddress>() {
            black_box(peer.expect("valid"));
        }
        black_box(
            message
                .get::<PasswordAlgorithms>()
                .expect("valid")
                .map(|p| p.iter().count()),
        );
        black_box(
            message
                .get::<UnknownAttributes>()
                .expect("valid")
                .map(|u| u.iter().count()),
        );
        black_box(message.unknown_comprehension_required().count());
        black_box(frame(bytes).expect("valid"));
        decoded
    });
    assert_eq!(parse, 0, "parsing allocated");
    assert_eq!(
        decoded, 39,
        "one of each of the 39 attribute types was decoded"
    );

    // Short-term integrity on a Binding request, as ICE checks use it.
    let (binding, ()) = allocations(|| {
        let request = MessageType::new(Method::BINDING, Class::Request);
        let mut w = MessageWriter::new(&mut buf, request, tid).expect("fits");
        w.add(&Username("a:b")).expect("fits");
        w.add(&Priority(1)).expect("fits");
        w.add_message_integrity(&short).expect("fits");
        w.add_fingerprint().expect("fits");
        let len = w.finish();
        let message = Message::parse(&buf[..len]).expect("valid");
        message.verify_message_integrity(&short).expect("valid");
    });
    assert_eq!(binding, 0, "the ICE check path allocated");
}

#[test]
fn channel_data_and_credentials_never_allocate() {
    let channel = ChannelNumber::new(0x4ABC).expect("range");
    let mut buf = [0u8; 1504];
    let (n, _) = allocations(|| {
        let n = write_channel_data(&mut buf, channel, &[7; 1200], Transport::Stream).expect("fits");
        write_channel_data_header(&mut buf, channel, 1200, Transport::Datagram).expect("fits");
        let parsed = ChannelData::parse(&buf[..n]).expect("valid");
        black_box(parsed.data());
        black_box(frame(&buf[..n]).expect("valid"));
        n
    });
    assert_eq!(n, 0, "ChannelData allocated");

    // The server's REST check runs per Allocate: parse the username, derive the password and
    // the long-term key, all on the stack. (Building the HMAC state is not the hot path but
    // needs no heap either.)
    let (n, ()) = allocations(|| {
        let username = "1700000000:alice";
        let parsed = RestUsername::check(username, 1_600_000_000).expect("not expired");
        let password = RestPassword::new(b"secret", username);
        let key = LongTermKey::new(
            KeyAlgorithm::Md5,
            username,
            "example.org",
            password.as_str(),
        );
        black_box((
            parsed,
            key.integrity_key(),
            user_hash("alice", "example.org"),
        ));
    });
    assert_eq!(n, 0, "credentials allocated");
}
