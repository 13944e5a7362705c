//! Property tests: whatever message `Message::parse` accepts, from wherever, `handle` never
//! panics, and every answer it writes is a well-formed Binding response that keeps the
//! request's FINGERPRINT promise.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};

use icebreaker_stun::{AlternateAddress, BindingConfig, BindingService, MAX_REPLY_LEN};
use icebreaker_wire::attr::AttrType;
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
use proptest::prelude::*;

const V4: [&str; 4] = [
    "192.0.2.1:3478",
    "192.0.2.1:3479",
    "192.0.2.2:3478",
    "192.0.2.2:3479",
];
const V6: [&str; 4] = [
    "[2001:db8::1]:3478",
    "[2001:db8::1]:3479",
    "[2001:db8::2]:3478",
    "[2001:db8::2]:3479",
];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

/// The services under test: plain, RFC 5780 on either family, and one with SOFTWARE.
fn service(which: u8) -> BindingService {
    let rfc5780 = |list: [&str; 4]| AlternateAddress {
        primary: addr(list[0]),
        alternate: addr(list[3]),
    };
    let config = match which {
        0 => BindingConfig::default(),
        1 => BindingConfig {
            software: None,
            rfc5780: Some(rfc5780(V4)),
        },
        2 => BindingConfig {
            software: None,
            rfc5780: Some(rfc5780(V6)),
        },
        _ => BindingConfig {
            software: Some("icebreaker \u{1F9CA}".into()),
            rfc5780: Some(rfc5780(V4)),
        },
    };
    BindingService::new(config).expect("valid")
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| (IpAddr::from(ip), port).into()),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| (IpAddr::from(ip), port).into()),
    ]
}

/// Mostly one of the eight addresses the RFC 5780 services listen on, so that discovery runs.
fn local() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        3 => prop::sample::select(V4.to_vec()).prop_map(addr),
        3 => prop::sample::select(V6.to_vec()).prop_map(addr),
        1 => socket_addr(),
    ]
}

fn attr_type() -> impl Strategy<Value = u16> {
    // Mostly types the service reads or the codec knows: an unknown comprehension-required
    // type ends processing with 420 before the RFC 5780 paths run.
    prop_oneof![
        8 => prop::sample::select(vec![
            AttrType::CHANGE_REQUEST.0,
            AttrType::CHANGE_REQUEST.0,
            AttrType::CHANGE_REQUEST.0,
            AttrType::RESPONSE_PORT.0,
            AttrType::RESPONSE_PORT.0,
            AttrType::PADDING.0,
            AttrType::MESSAGE_INTEGRITY.0,
            AttrType::USERNAME.0,
            AttrType::XOR_MAPPED_ADDRESS.0,
            AttrType::SOFTWARE.0,
            AttrType::FINGERPRINT.0,
            AttrType::LIFETIME.0,
        ]),
        1 => 0x0000u16..0x8000,
        1 => any::<u16>(),
    ]
}

fn attr_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // The length CHANGE-REQUEST and RESPONSE-PORT need, so that they often decode.
        2 => prop::collection::vec(any::<u8>(), 4),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// A STUN message, mostly Binding requests, with raw attributes and FINGERPRINT absent, right
/// or wrong.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let message_type = prop_oneof![
        4 => Just(MessageType::new(Method::BINDING, Class::Request).to_u16()),
        1 => Just(MessageType::new(Method::BINDING, Class::Indication).to_u16()),
        1 => Just(MessageType::new(Method::BINDING, Class::Success).to_u16()),
        1 => any::<u16>().prop_map(|t| t & 0x3FFF),
    ];
    let attrs = prop::collection::vec((attr_type(), attr_value()), 0..6);
    (message_type, any::<[u8; 12]>(), attrs, 0u8..3).prop_map(|(t, tid, attrs, ending)| {
        let mut buf = vec![0u8; 1024];
        let message_type = MessageType::from_u16(t).expect("top bits clear");
        let mut w =
            MessageWriter::new(&mut buf, message_type, TransactionId::new(tid)).expect("fits");
        for (attr_type, value) in &attrs {
            // Refused when out of order after FINGERPRINT or an integrity attribute: skip.
            let _ = w.add_raw(AttrType(*attr_type), value);
        }
        if ending > 0 {
            let _ = w.add_fingerprint();
        }
        let len = w.finish();
        buf.truncate(len);
        if ending == 2 {
            buf[len - 1] ^= 0x40;
        }
        buf
    })
}

/// Bytes that `Message::parse` may or may not accept.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => message(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Checks one answer against its request.
fn check_answer(request: &Message<'_>, answer: &[u8]) -> Result<(), TestCaseError> {
    let parsed = Message::parse(answer);
    prop_assert!(parsed.is_ok(), "answer does not parse: {:?}", parsed.err());
    let parsed = parsed.expect("checked");
    prop_assert_eq!(parsed.method(), Method::BINDING);
    prop_assert!(parsed.class().is_response());
    prop_assert_eq!(parsed.transaction_id(), request.transaction_id());
    if request.fingerprint_offset().is_some() {
        prop_assert!(parsed.verify_fingerprint().is_ok());
    } else {
        prop_assert!(parsed.fingerprint_offset().is_none());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn handle_never_panics_and_answers_are_well_formed(
        bytes in bytes(),
        which in 0u8..4,
        local in local(),
        remote in socket_addr(),
        out_len in prop_oneof![3 => Just(MAX_REPLY_LEN), 1 => 0..MAX_REPLY_LEN],
    ) {
        let Ok(request) = Message::parse(&bytes) else {
            return Ok(());
        };
        let service = service(which);
        let mut out = vec![0u8; out_len];

        if let Some(reply) = service.handle(&request, local, remote, &mut out) {
            prop_assert_eq!(request.method(), Method::BINDING);
            prop_assert_eq!(request.class(), Class::Request);
            prop_assert!(reply.len <= out.len());
            check_answer(&request, &out[..reply.len])?;
            // Only ever from an address the driver listens on, only ever to the client's IP.
            let listened = service.rfc5780_addresses();
            prop_assert!(reply.from == local || listened.contains(&reply.from));
            prop_assert_eq!(reply.to.ip(), remote.ip());
            if !request.has(AttrType::RESPONSE_PORT) {
                prop_assert_eq!(reply.to, remote);
            }
            // Without RFC 5780 and SOFTWARE, no answer is more than 3 times its request.
            if which == 0 {
                prop_assert!(reply.len <= 3 * request.len());
            }
        }

        if let Some(len) = service.handle_connected(&request, local, remote, &mut out) {
            prop_assert!(len <= out.len());
            check_answer(&request, &out[..len])?;
        }
    }
}
