//! No heap allocation on the request path: a counting global allocator watches `handle` answer
//! a plain request, a 420 and an RFC 5780 change request.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;

use icebreaker_tests::alloc_counter::{CountingAllocator, allocations};

use icebreaker_stun::{AlternateAddress, BindingConfig, BindingService, MAX_REPLY_LEN};
use icebreaker_wire::attr::{AttrType, ChangeRequest, Padding, ResponsePort};
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

/// A Binding request with FINGERPRINT, built before watching starts.
fn request(buf: &mut [u8], build: impl FnOnce(&mut MessageWriter<'_>)) -> usize {
    let binding = MessageType::new(Method::BINDING, Class::Request);
    let mut w = MessageWriter::new(buf, binding, TransactionId::new([3; 12])).expect("fits");
    build(&mut w);
    w.add_fingerprint().expect("fits");
    w.finish()
}

#[test]
fn the_counter_sees_allocations() {
    // Without this, a broken counter would make every other test here pass.
    assert!(allocations(|| vec![1u8; 64]).0 >= 1);
    assert_eq!(allocations(|| [1u8; 64]).0, 0);
}

#[test]
fn handle_never_allocates() {
    // Start-up allocates (SOFTWARE is a String, the address list a Vec); requests must not.
    let primary = addr("192.0.2.1:3478");
    let alternate = addr("192.0.2.2:3479");
    let service = BindingService::new(BindingConfig {
        software: Some("icebreaker".into()),
        rfc5780: Some(AlternateAddress { primary, alternate }),
    })
    .expect("valid");
    let plain = BindingService::new(BindingConfig::default()).expect("valid");
    let remote = addr("203.0.113.9:50000");

    let mut normal = [0u8; 64];
    let normal_len = request(&mut normal, |_| {});
    let mut unknown = [0u8; 64];
    let unknown_len = request(&mut unknown, |w| {
        w.add_raw(AttrType(0x7F00), b"x").expect("fits");
        w.add_raw(AttrType(0x0031), &[]).expect("fits");
    });
    let mut change = [0u8; 1500];
    let change_len = request(&mut change, |w| {
        w.add(&ChangeRequest {
            change_ip: true,
            change_port: true,
        })
        .expect("fits");
        w.add(&Padding(&[0; 1000])).expect("fits");
    });
    let mut port = [0u8; 64];
    let port_len = request(&mut port, |w| w.add(&ResponsePort(5000)).expect("fits"));
    let mut out = [0u8; MAX_REPLY_LEN];

    let (n, ()) = allocations(|| {
        let message = Message::parse(&normal[..normal_len]).expect("valid");
        let reply = plain.handle(&message, primary, remote, &mut out);
        assert_eq!(reply.expect("answered").from, primary);
        let reply = service.handle(&message, primary, remote, &mut out);
        assert_eq!(reply.expect("answered").from, primary);
    });
    assert_eq!(n, 0, "a normal request allocated");

    let (n, ()) = allocations(|| {
        let message = Message::parse(&unknown[..unknown_len]).expect("valid");
        let reply = service.handle(&message, primary, remote, &mut out);
        assert!(reply.is_some());
        let message = Message::parse(&change[..change_len]).expect("valid");
        let reply = plain.handle(&message, primary, remote, &mut out);
        assert!(reply.is_some(), "420: CHANGE-REQUEST without RFC 5780");
    });
    assert_eq!(n, 0, "a 420 allocated");

    let (n, ()) = allocations(|| {
        let message = Message::parse(&change[..change_len]).expect("valid");
        let reply = service.handle(&message, primary, remote, &mut out);
        assert_eq!(reply.expect("answered").from, alternate);
        let message = Message::parse(&port[..port_len]).expect("valid");
        let reply = service.handle(&message, primary, remote, &mut out);
        assert_eq!(reply.expect("answered").to.port(), 5000);
        let len = service.handle_connected(&message, primary, remote, &mut out);
        assert!(len.is_some(), "400: RESPONSE-PORT on a connection");
    });
    assert_eq!(n, 0, "an RFC 5780 request allocated");
}
