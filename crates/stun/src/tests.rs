//! One test per rule of the Binding service; the name says the rule.

use std::net::SocketAddr;

use icebreaker_wire::attr::{
    AttrType, ErrorCodeAttribute, OtherAddress, ResponseOrigin, Software, UnknownAttributes,
    XorMappedAddress,
};
use icebreaker_wire::{
    Class, ErrorCode, MAGIC_COOKIE, Message, MessageType, MessageWriter, Method, TransactionId,
};

use crate::{
    AlternateAddress, BindingConfig, BindingReply, BindingService, ConfigError, MAX_REPLY_LEN,
    MAX_UNKNOWN_LISTED,
};

const TID: TransactionId = TransactionId::new(*b"icebreaker!!");
const BINDING_REQUEST: MessageType = MessageType::new(Method::BINDING, Class::Request);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn local() -> SocketAddr {
    addr("192.0.2.1:3478")
}

fn alternate() -> SocketAddr {
    addr("192.0.2.2:3479")
}

fn remote() -> SocketAddr {
    addr("203.0.113.9:50000")
}

fn plain() -> BindingService {
    BindingService::new(BindingConfig::default()).expect("valid")
}

fn discovery() -> BindingService {
    BindingService::new(BindingConfig {
        software: None,
        rfc5780: Some(AlternateAddress {
            primary: local(),
            alternate: alternate(),
        }),
    })
    .expect("valid")
}

/// A message of type `message_type` with raw attributes, and FINGERPRINT when asked.
fn message(message_type: MessageType, attrs: &[(AttrType, &[u8])], fingerprint: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, message_type, TID).expect("fits");
    for (attr_type, value) in attrs {
        w.add_raw(*attr_type, value).expect("fits");
    }
    if fingerprint {
        w.add_fingerprint().expect("fits");
    }
    let len = w.finish();
    buf.truncate(len);
    buf
}

fn request(attrs: &[(AttrType, &[u8])]) -> Vec<u8> {
    message(BINDING_REQUEST, attrs, false)
}

const CHANGE_IP: &[u8] = &[0, 0, 0, 4];
const CHANGE_PORT: &[u8] = &[0, 0, 0, 2];
const CHANGE_BOTH: &[u8] = &[0, 0, 0, 6];

/// Hands `bytes` to `service.handle` as a datagram that reached `local` from `remote`.
fn answer_at(
    service: &BindingService,
    bytes: &[u8],
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<(BindingReply, Vec<u8>)> {
    let request = Message::parse(bytes).expect("valid request");
    let mut out = [0u8; MAX_REPLY_LEN];
    let reply = service.handle(&request, local, remote, &mut out)?;
    Some((reply, out[..reply.len].to_vec()))
}

fn answer(service: &BindingService, bytes: &[u8]) -> Option<(BindingReply, Vec<u8>)> {
    answer_at(service, bytes, local(), remote())
}

fn types(answer: &[u8]) -> Vec<AttrType> {
    let message = Message::parse(answer).expect("the answer parses");
    assert_eq!(message.transaction_id(), TID);
    message.attributes().map(|raw| raw.attr_type).collect()
}

/// The error code of an error answer, after checking its shape: Binding error response, no
/// reason phrase.
fn error_code(answer: &[u8]) -> ErrorCode {
    let message = Message::parse(answer).expect("the answer parses");
    assert_eq!(message.method(), Method::BINDING);
    assert_eq!(message.class(), Class::Error);
    let error = message
        .get::<ErrorCodeAttribute>()
        .expect("decodes")
        .expect("present");
    assert_eq!(error.reason, "", "strangers get no reason phrase");
    error.code
}

fn unknown_listed(answer: &[u8]) -> Vec<AttrType> {
    let message = Message::parse(answer).expect("the answer parses");
    let unknown = message.get::<UnknownAttributes>().expect("decodes");
    unknown.expect("present").iter().collect()
}

fn get<'a, A: icebreaker_wire::attr::Attribute<'a>>(answer: &'a [u8]) -> Option<A> {
    Message::parse(answer)
        .expect("the answer parses")
        .get::<A>()
        .expect("decodes")
}

// Plain Binding (RFC 8489).

#[test]
fn binding_success_carries_exactly_xor_mapped_address() {
    let (_, out) = answer(&plain(), &request(&[])).expect("answered");
    let message = Message::parse(&out).expect("parses");
    assert_eq!(message.message_type(), BINDING_REQUEST.success());
    assert_eq!(types(&out), [AttrType::XOR_MAPPED_ADDRESS]);
    assert_eq!(get(&out), Some(XorMappedAddress(remote())));
}

#[test]
fn answer_leaves_from_the_address_the_request_reached_towards_its_source() {
    let (reply, _) = answer(&plain(), &request(&[])).expect("answered");
    assert_eq!((reply.from, reply.to), (local(), remote()));
}

#[test]
fn answer_has_fingerprint_if_and_only_if_the_request_had_one() {
    let with = message(BINDING_REQUEST, &[], true);
    let (_, out) = answer(&plain(), &with).expect("answered");
    assert_eq!(
        types(&out),
        [AttrType::XOR_MAPPED_ADDRESS, AttrType::FINGERPRINT]
    );
    Message::parse(&out)
        .expect("parses")
        .verify_fingerprint()
        .expect("verifies");

    let (_, out) = answer(&plain(), &request(&[])).expect("answered");
    assert!(!types(&out).contains(&AttrType::FINGERPRINT));
}

#[test]
fn request_whose_fingerprint_does_not_verify_is_dropped() {
    let mut bytes = message(BINDING_REQUEST, &[], true);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(answer(&plain(), &bytes), None);
    assert_eq!(answer(&discovery(), &bytes), None);
}

#[test]
fn software_is_added_only_when_configured() {
    let service = BindingService::new(BindingConfig {
        software: Some("icebreaker".into()),
        rfc5780: None,
    })
    .expect("valid");
    let (_, out) = answer(&service, &message(BINDING_REQUEST, &[], true)).expect("answered");
    assert_eq!(
        types(&out),
        [
            AttrType::XOR_MAPPED_ADDRESS,
            AttrType::SOFTWARE,
            AttrType::FINGERPRINT
        ]
    );
    assert_eq!(get(&out), Some(Software("icebreaker")));

    let unknown = request(&[(AttrType(0x7F00), &[])]);
    let (_, out) = answer(&service, &unknown).expect("answered");
    assert_eq!(get(&out), Some(Software("icebreaker")), "errors too");
}

#[test]
fn binding_indications_get_no_answer() {
    // RFC 8489 §6.3.2: indications are keepalives, never answered.
    let indication = MessageType::new(Method::BINDING, Class::Indication);
    assert_eq!(answer(&plain(), &message(indication, &[], false)), None);
    assert_eq!(answer(&discovery(), &message(indication, &[], true)), None);
}

#[test]
fn responses_get_no_answer() {
    for class in [Class::Success, Class::Error] {
        let response = MessageType::new(Method::BINDING, class);
        assert_eq!(answer(&plain(), &message(response, &[], false)), None);
    }
}

#[test]
fn other_methods_are_left_to_the_caller() {
    for method in [Method::ALLOCATE, Method::REFRESH, Method::CREATE_PERMISSION] {
        let other = MessageType::new(method, Class::Request);
        assert_eq!(answer(&plain(), &message(other, &[], false)), None);
    }
}

#[test]
fn message_integrity_is_neither_checked_nor_answered() {
    // No credentials here: an authenticated Binding is an ICE check and belongs to the agent.
    let bytes = request(&[
        (AttrType::USERNAME, b"a:b"),
        (AttrType::MESSAGE_INTEGRITY, &[0; 20]),
    ]);
    let (_, out) = answer(&plain(), &bytes).expect("answered");
    assert_eq!(types(&out), [AttrType::XOR_MAPPED_ADDRESS]);
}

#[test]
fn comprehension_required_attributes_the_codec_knows_are_ignored() {
    let bytes = request(&[
        (AttrType::LIFETIME, &[0, 0, 2, 88]),
        (AttrType::PRIORITY, &[1, 2, 3, 4]),
        (AttrType::XOR_PEER_ADDRESS, &[]),
    ]);
    let (_, out) = answer(&plain(), &bytes).expect("answered");
    assert_eq!(types(&out), [AttrType::XOR_MAPPED_ADDRESS]);
}

// Errors (RFC 8489 §6.3.1, §14.8).

#[test]
fn unknown_comprehension_required_attributes_get_420_listing_them() {
    let bytes = message(
        BINDING_REQUEST,
        &[(AttrType(0x7F00), b"x"), (AttrType(0x0031), &[])],
        true,
    );
    let (reply, out) = answer(&plain(), &bytes).expect("answered");
    assert_eq!((reply.from, reply.to), (local(), remote()));
    assert_eq!(error_code(&out), ErrorCode::UNKNOWN_ATTRIBUTE);
    assert_eq!(unknown_listed(&out), [AttrType(0x7F00), AttrType(0x0031)]);
    assert_eq!(
        types(&out),
        [
            AttrType::ERROR_CODE,
            AttrType::UNKNOWN_ATTRIBUTES,
            AttrType::FINGERPRINT
        ]
    );
    Message::parse(&out)
        .expect("parses")
        .verify_fingerprint()
        .expect("verifies");
}

#[test]
fn error_answers_have_no_fingerprint_when_the_request_had_none() {
    let (_, out) = answer(&plain(), &request(&[(AttrType(0x0031), &[])])).expect("answered");
    assert_eq!(
        types(&out),
        [AttrType::ERROR_CODE, AttrType::UNKNOWN_ATTRIBUTES]
    );
}

#[test]
fn unknown_comprehension_optional_attributes_are_ignored() {
    let (_, out) = answer(&plain(), &request(&[(AttrType(0xC001), b"opt")])).expect("answered");
    assert_eq!(types(&out), [AttrType::XOR_MAPPED_ADDRESS]);
}

#[test]
fn unknown_list_names_each_type_once_and_at_most_the_bound() {
    let many: Vec<(AttrType, &[u8])> = (0..40u16)
        .flat_map(|i| {
            [
                (AttrType(0x7000 + i), &[][..]),
                (AttrType(0x7000 + i), &[][..]),
            ]
        })
        .collect();
    let bytes = request(&many);
    let (_, out) = answer(&plain(), &bytes).expect("answered");
    let listed = unknown_listed(&out);
    let expected: Vec<AttrType> = (0..MAX_UNKNOWN_LISTED as u16)
        .map(|i| AttrType(0x7000 + i))
        .collect();
    assert_eq!(listed, expected);
    assert!(out.len() <= bytes.len());
}

#[test]
fn malformed_change_request_gets_400() {
    for value in [&[][..], &[0, 0, 4][..], &[0, 0, 0, 0, 0, 0, 0, 6][..]] {
        let (reply, out) =
            answer(&discovery(), &request(&[(AttrType::CHANGE_REQUEST, value)])).expect("answered");
        assert_eq!(error_code(&out), ErrorCode::BAD_REQUEST);
        assert_eq!(types(&out), [AttrType::ERROR_CODE]);
        assert_eq!((reply.from, reply.to), (local(), remote()));
    }
}

#[test]
fn malformed_response_port_gets_400() {
    for value in [&[][..], &[0x13, 0x88][..], &[0x13, 0x88, 0, 0, 0, 0][..]] {
        let (_, out) =
            answer(&discovery(), &request(&[(AttrType::RESPONSE_PORT, value)])).expect("answered");
        assert_eq!(error_code(&out), ErrorCode::BAD_REQUEST);
    }
}

// RFC 5780 turned off.

#[test]
fn change_request_without_rfc5780_gets_420_listing_it() {
    // RFC 5780 §6: a server without a second address treats CHANGE-REQUEST as unknown.
    for value in [CHANGE_IP, &[0, 0, 0, 0][..], &[][..]] {
        let (_, out) =
            answer(&plain(), &request(&[(AttrType::CHANGE_REQUEST, value)])).expect("answered");
        assert_eq!(error_code(&out), ErrorCode::UNKNOWN_ATTRIBUTE);
        assert_eq!(unknown_listed(&out), [AttrType::CHANGE_REQUEST]);
    }
}

#[test]
fn response_port_without_rfc5780_gets_420_listing_it() {
    // RFC 5780 §5: support is optional, clients expect 420.
    let bytes = request(&[(AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0])]);
    let (reply, out) = answer(&plain(), &bytes).expect("answered");
    assert_eq!(error_code(&out), ErrorCode::UNKNOWN_ATTRIBUTE);
    assert_eq!(unknown_listed(&out), [AttrType::RESPONSE_PORT]);
    assert_eq!(reply.to, remote());
}

#[test]
fn padding_without_rfc5780_gets_420_listing_it() {
    let (_, out) = answer(&plain(), &request(&[(AttrType::PADDING, &[0; 32])])).expect("answered");
    assert_eq!(unknown_listed(&out), [AttrType::PADDING]);
}

#[test]
fn success_without_rfc5780_has_no_discovery_attributes() {
    let (_, out) = answer(&plain(), &request(&[])).expect("answered");
    assert!(!types(&out).contains(&AttrType::RESPONSE_ORIGIN));
    assert!(!types(&out).contains(&AttrType::OTHER_ADDRESS));
}

// RFC 5780 turned on.

#[test]
fn rfc5780_success_carries_response_origin_and_other_address() {
    // RFC 5780 §6.1: both even when the request has no RFC 5780 attribute.
    let (reply, out) = answer(&discovery(), &request(&[])).expect("answered");
    assert_eq!((reply.from, reply.to), (local(), remote()));
    assert_eq!(
        types(&out),
        [
            AttrType::XOR_MAPPED_ADDRESS,
            AttrType::RESPONSE_ORIGIN,
            AttrType::OTHER_ADDRESS
        ]
    );
    assert_eq!(get(&out), Some(XorMappedAddress(remote())));
    assert_eq!(get(&out), Some(ResponseOrigin(local())));
    assert_eq!(get(&out), Some(OtherAddress(alternate())));
}

#[test]
fn change_request_flags_choose_the_source_as_in_rfc5780_table_1() {
    let service = discovery();
    let p1 = addr("192.0.2.1:3478");
    let p2 = addr("192.0.2.1:3479");
    let a1 = addr("192.0.2.2:3478");
    let a2 = addr("192.0.2.2:3479");
    // (where the request arrived, the other IP same port, same IP other port, both other)
    let cases = [
        (p1, a1, p2, a2),
        (p2, a2, p1, a1),
        (a1, p1, a2, p2),
        (a2, p2, a1, p1),
    ];
    for (da_dp, ca_dp, da_cp, ca_cp) in cases {
        for (flags, source) in [
            (&[0, 0, 0, 0][..], da_dp),
            (CHANGE_IP, ca_dp),
            (CHANGE_PORT, da_cp),
            (CHANGE_BOTH, ca_cp),
        ] {
            let bytes = request(&[(AttrType::CHANGE_REQUEST, flags)]);
            let (reply, out) = answer_at(&service, &bytes, da_dp, remote()).expect("answered");
            assert_eq!(reply.from, source, "arrived at {da_dp}, flags {flags:?}");
            assert_eq!(reply.to, remote());
            assert_eq!(get(&out), Some(ResponseOrigin(source)));
            assert_eq!(
                get(&out),
                Some(OtherAddress(ca_cp)),
                "Ca:Cp whatever the flags"
            );
        }
    }
}

#[test]
fn rfc5780_addresses_are_the_four_combinations() {
    let expected = [
        "192.0.2.1:3478",
        "192.0.2.1:3479",
        "192.0.2.2:3478",
        "192.0.2.2:3479",
    ]
    .map(addr);
    assert_eq!(discovery().rfc5780_addresses(), expected);
    assert!(plain().rfc5780_addresses().is_empty());
}

#[test]
fn local_outside_the_four_addresses_is_answered_as_without_rfc5780() {
    // A request that reached, say, a TURN-only listener: the service cannot send from the
    // addresses RFC 5780 would name relative to it.
    let service = discovery();
    let elsewhere = addr("192.0.2.1:5349");
    let (reply, out) = answer_at(&service, &request(&[]), elsewhere, remote()).expect("answered");
    assert_eq!(reply.from, elsewhere);
    assert_eq!(types(&out), [AttrType::XOR_MAPPED_ADDRESS]);

    let bytes = request(&[(AttrType::CHANGE_REQUEST, CHANGE_BOTH)]);
    let (reply, out) = answer_at(&service, &bytes, elsewhere, remote()).expect("answered");
    assert_eq!(reply.from, elsewhere);
    assert_eq!(unknown_listed(&out), [AttrType::CHANGE_REQUEST]);
}

#[test]
fn response_port_sends_the_answer_to_that_port_of_the_source_ip() {
    let bytes = request(&[(AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0])]);
    let (reply, out) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!((reply.from, reply.to), (local(), addr("203.0.113.9:5000")));
    // The mapped address stays the request's source: the client compares the two.
    assert_eq!(get(&out), Some(XorMappedAddress(remote())));
}

#[test]
fn response_port_combines_with_change_request() {
    let bytes = request(&[
        (AttrType::CHANGE_REQUEST, CHANGE_PORT),
        (AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0]),
    ]);
    let (reply, _) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!(
        (reply.from, reply.to),
        (addr("192.0.2.1:3479"), addr("203.0.113.9:5000"))
    );
}

#[test]
fn response_port_zero_gets_400_at_the_source() {
    let bytes = request(&[(AttrType::RESPONSE_PORT, &[0, 0, 0, 0])]);
    let (reply, out) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!(error_code(&out), ErrorCode::BAD_REQUEST);
    assert_eq!(reply.to, remote());
}

#[test]
fn response_port_with_padding_gets_400() {
    // RFC 5780 §6.1, §7.5 and §10: the pair would aim padded answers at any port.
    let bytes = request(&[
        (AttrType::PADDING, &[0; 64]),
        (AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0]),
    ]);
    let (reply, out) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!(error_code(&out), ErrorCode::BAD_REQUEST);
    assert_eq!((reply.from, reply.to), (local(), remote()));
}

#[test]
fn padding_is_accepted_but_not_echoed() {
    // Deviation from RFC 5780 §6.1: echoing PADDING would turn a spoofed padded request
    // into an amplifier; the client still learns its padded request arrived.
    let bytes = request(&[(AttrType::PADDING, &[0xAB; 1400])]);
    let (reply, out) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!(reply.from, local());
    assert!(!types(&out).contains(&AttrType::PADDING));
    assert_eq!(out.len(), 56);
}

#[test]
fn errors_go_back_from_local_to_remote_whatever_the_request_asked() {
    let bytes = request(&[
        (AttrType::CHANGE_REQUEST, CHANGE_BOTH),
        (AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0]),
        (AttrType(0x7F00), &[]),
    ]);
    let (reply, out) = answer(&discovery(), &bytes).expect("answered");
    assert_eq!(error_code(&out), ErrorCode::UNKNOWN_ATTRIBUTE);
    assert_eq!((reply.from, reply.to), (local(), remote()));
}

// Connections (TCP, TLS, DTLS).

#[test]
fn connected_requests_cannot_be_steered_and_get_400() {
    let service = discovery();
    let mut out = [0u8; MAX_REPLY_LEN];
    for attrs in [
        &[(AttrType::CHANGE_REQUEST, CHANGE_IP)][..],
        &[(AttrType::RESPONSE_PORT, &[0x13, 0x88, 0, 0][..])][..],
    ] {
        let bytes = request(attrs);
        let request = Message::parse(&bytes).expect("valid");
        let len = service
            .handle_connected(&request, local(), remote(), &mut out)
            .expect("answered");
        assert_eq!(error_code(&out[..len]), ErrorCode::BAD_REQUEST);
    }
}

#[test]
fn connected_requests_get_discovery_attributes_and_flagless_change_request_is_fine() {
    let service = discovery();
    let bytes = request(&[(AttrType::CHANGE_REQUEST, &[0, 0, 0, 0])]);
    let request = Message::parse(&bytes).expect("valid");
    let mut out = [0u8; MAX_REPLY_LEN];
    let len = service
        .handle_connected(&request, local(), remote(), &mut out)
        .expect("answered");
    assert_eq!(get(&out[..len]), Some(ResponseOrigin(local())));
    assert_eq!(get(&out[..len]), Some(OtherAddress(alternate())));
}

// Both families.

#[test]
fn ipv6_mapped_address_is_xored_with_cookie_and_transaction_id() {
    let client = addr("[2001:db8:1::77]:40000");
    let (reply, out) =
        answer_at(&plain(), &request(&[]), addr("[2001:db8::1]:3478"), client).expect("answered");
    assert_eq!(reply.to, client);
    assert_eq!(get(&out), Some(XorMappedAddress(client)));
    // RFC 8489 §14.2: the port with the cookie's top half, the address with cookie and ID.
    let value = Message::parse(&out)
        .expect("parses")
        .raw(AttrType::XOR_MAPPED_ADDRESS)
        .expect("present")
        .value;
    assert_eq!(value[..2], [0, 2]);
    assert_eq!(
        u16::from_be_bytes([value[2], value[3]]),
        40000 ^ (MAGIC_COOKIE >> 16) as u16
    );
    let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
    key.extend_from_slice(TID.as_bytes());
    let std::net::IpAddr::V6(ip) = client.ip() else {
        unreachable!()
    };
    let xored: Vec<u8> = ip.octets().iter().zip(&key).map(|(a, k)| a ^ k).collect();
    assert_eq!(value[4..], xored[..]);
}

#[test]
fn ipv6_rfc5780_topology_answers_from_the_other_ipv6_address() {
    let primary = addr("[2001:db8::1]:3478");
    let alternate = addr("[2001:db8::2]:3479");
    let service = BindingService::new(BindingConfig {
        software: None,
        rfc5780: Some(AlternateAddress { primary, alternate }),
    })
    .expect("valid");
    let client = addr("[2001:db8:1::77]:40000");
    let bytes = request(&[(AttrType::CHANGE_REQUEST, CHANGE_IP)]);
    let (reply, out) = answer_at(&service, &bytes, primary, client).expect("answered");
    assert_eq!(reply.from, addr("[2001:db8::2]:3478"));
    assert_eq!(get(&out), Some(XorMappedAddress(client)));
    assert_eq!(get(&out), Some(OtherAddress(alternate)));
}

#[test]
fn ipv4_mapped_client_is_reported_as_ipv4() {
    // What a dual-stack socket reports for an IPv4 client.
    let mapped = addr("[::ffff:203.0.113.9]:50000");
    let (reply, out) =
        answer_at(&plain(), &request(&[]), addr("[::]:3478"), mapped).expect("answered");
    assert_eq!(reply.to, mapped, "sent back in the socket's own terms");
    assert_eq!(get(&out), Some(XorMappedAddress(remote())));
}

// Amplification (security.md: at most 3 times the request).

#[test]
fn smallest_requests_get_at_most_three_times_their_size_without_rfc5780() {
    // 20-byte request: 32-byte answer, 1.6 times. 28 bytes with FINGERPRINT: 40, 1.43 times.
    for (fingerprint, expected) in [(false, 32), (true, 40)] {
        let bytes = message(BINDING_REQUEST, &[], fingerprint);
        let (_, out) = answer(&plain(), &bytes).expect("answered");
        assert_eq!(out.len(), expected);
        assert!(out.len() <= 3 * bytes.len());
    }
    // The smallest request that draws a 420 is 24 bytes; the answer is 36, 1.5 times.
    let bytes = request(&[(AttrType(0x7F00), &[])]);
    let (_, out) = answer(&plain(), &bytes).expect("answered");
    assert_eq!((bytes.len(), out.len()), (24, 36));
}

#[test]
fn smallest_requests_get_at_most_three_times_their_size_with_rfc5780_on_ipv4() {
    // 20-byte request: 56-byte answer, 2.8 times. 28 bytes with FINGERPRINT: 64, 2.29 times.
    // (An IPv6 client draws 92 bytes for 20, 4.6 times the STUN payload; 2.1 times counting
    // the 48 bytes of IPv6 and UDP headers each way.)
    for (fingerprint, expected) in [(false, 56), (true, 64)] {
        let bytes = message(BINDING_REQUEST, &[], fingerprint);
        let (_, out) = answer(&discovery(), &bytes).expect("answered");
        assert_eq!(out.len(), expected);
        assert!(out.len() <= 3 * bytes.len());
    }
}

// Buffers and configuration.

#[test]
fn too_small_an_output_buffer_gives_no_answer() {
    let bytes = request(&[]);
    let request = Message::parse(&bytes).expect("valid");
    for len in [0, 19, 20, 31] {
        let mut out = vec![0u8; len];
        assert_eq!(plain().handle(&request, local(), remote(), &mut out), None);
    }
}

#[test]
fn max_reply_len_holds_the_largest_answers() {
    let service = BindingService::new(BindingConfig {
        software: Some("\u{1F9CA}".repeat(127)),
        rfc5780: Some(AlternateAddress {
            primary: addr("[2001:db8::1]:3478"),
            alternate: addr("[2001:db8::2]:3479"),
        }),
    })
    .expect("127 characters are allowed");
    let client = addr("[2001:db8:1::77]:40000");
    let largest = message(BINDING_REQUEST, &[], true);
    let (_, out) =
        answer_at(&service, &largest, addr("[2001:db8::1]:3478"), client).expect("answered");
    assert_eq!(out.len(), MAX_REPLY_LEN);

    let unknown: Vec<(AttrType, &[u8])> = (0..40u16)
        .map(|i| (AttrType(0x7000 + i), &[][..]))
        .collect();
    let bytes = message(BINDING_REQUEST, &unknown, true);
    let (_, out) = answer(&service, &bytes).expect("answered");
    assert!(out.len() <= MAX_REPLY_LEN);
}

#[test]
fn config_rejects_rfc5780_addresses_that_cannot_serve_it() {
    let reject = |primary: &str, alternate: &str| {
        BindingService::new(BindingConfig {
            software: None,
            rfc5780: Some(AlternateAddress {
                primary: addr(primary),
                alternate: addr(alternate),
            }),
        })
        .expect_err("invalid")
    };
    assert!(matches!(
        reject("192.0.2.1:3478", "[2001:db8::2]:3479"),
        ConfigError::FamilyMismatch { .. }
    ));
    assert_eq!(
        reject("192.0.2.1:3478", "192.0.2.1:3479"),
        ConfigError::SameIp(addr("192.0.2.1:1").ip())
    );
    assert_eq!(
        reject("192.0.2.1:3478", "192.0.2.2:3478"),
        ConfigError::SamePort(3478)
    );
    assert_eq!(
        reject("0.0.0.0:3478", "192.0.2.2:3479"),
        ConfigError::Unspecified(addr("0.0.0.0:3478"))
    );
    assert_eq!(
        reject("[2001:db8::1]:3478", "[2001:db8::2]:0"),
        ConfigError::Unspecified(addr("[2001:db8::2]:0"))
    );
    // The message names the problem.
    assert_eq!(
        reject("192.0.2.1:3478", "192.0.2.2:3478").to_string(),
        "RFC 5780 needs two different ports: primary and alternate both use port 3478"
    );
}

#[test]
fn config_rejects_software_of_128_characters() {
    let config = |chars: usize| BindingConfig {
        software: Some("x".repeat(chars)),
        rfc5780: None,
    };
    assert!(BindingService::new(config(127)).is_ok());
    assert_eq!(
        BindingService::new(config(128)).expect_err("too long"),
        ConfigError::SoftwareTooLong(128)
    );
}
