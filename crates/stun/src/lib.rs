//! Sans-IO STUN Binding service, with NAT behaviour discovery (RFC 5780), server side.
//!
//! A [`BindingService`] answers Binding requests (RFC 8489 §3): it tells each client the
//! address and port its packets came from, in XOR-MAPPED-ADDRESS. With a second IP and port
//! configured ([`AlternateAddress`]) it also serves RFC 5780: every answer names its source
//! (RESPONSE-ORIGIN) and the server's other address (OTHER-ADDRESS), CHANGE-REQUEST chooses
//! which of the four addresses answers, and RESPONSE-PORT where it goes.
//!
//! The service opens no socket, reads no clock, draws no randomness, keeps no state between
//! requests and does not allocate per request: it reads a parsed [`Message`] and writes its
//! answer into a caller's buffer.
//!
//! # Call order
//!
//! 1. At start-up, build the service with [`BindingService::new`]. With RFC 5780, bind one
//!    socket on each of [`BindingService::rfc5780_addresses`].
//! 2. For each datagram, [`Message::parse`] it; drop it silently when that fails
//!    (RFC 8489 §6.3).
//! 3. Dispatch by [`Message::method`]: [`Method::BINDING`] goes to
//!    [`BindingService::handle`], every other method to the TURN core.
//! 4. On `Some(reply)`, send `out[..reply.len]` from the socket bound to `reply.from` to
//!    `reply.to`; on `None`, send nothing.
//!
//! Over TCP, TLS or DTLS call [`BindingService::handle_connected`] instead: the answer goes
//! back on the connection.
//!
//! # Answers stay small
//!
//! A spoofed request makes the server send its answer to a victim, so the answer is kept close
//! to the request's size (security.md): no SOFTWARE and no reason phrase unless configured,
//! no MAPPED-ADDRESS, no PADDING echo. The smallest Binding request (20 bytes) draws 32 bytes
//! over IPv4 (1.6 times), 56 bytes with RFC 5780 (2.8 times), and 92 bytes with RFC 5780 for
//! an IPv6 client (4.6 times; 2.1 times counting the IPv6 and UDP headers on both).
//!
//! # Example
//!
//! ```
//! use icebreaker_stun::{AlternateAddress, BindingConfig, BindingService, MAX_REPLY_LEN};
//! use icebreaker_wire::attr::{ChangeRequest, OtherAddress, ResponseOrigin, XorMappedAddress};
//! use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
//! use std::net::SocketAddr;
//!
//! let primary: SocketAddr = "192.0.2.1:3478".parse()?;
//! let alternate: SocketAddr = "192.0.2.2:3479".parse()?;
//! let service = BindingService::new(BindingConfig {
//!     software: None,
//!     rfc5780: Some(AlternateAddress { primary, alternate }),
//! })?;
//! assert_eq!(service.rfc5780_addresses().len(), 4);
//!
//! // A client testing its NAT's filtering asks for the answer from the other IP and port
//! // (RFC 5780 §4.4).
//! let mut datagram = [0u8; 64];
//! let binding = MessageType::new(Method::BINDING, Class::Request);
//! let mut writer = MessageWriter::new(&mut datagram, binding, TransactionId::new([7; 12]))?;
//! writer.add(&ChangeRequest { change_ip: true, change_port: true })?;
//! let len = writer.finish();
//!
//! // What the driver does with each datagram.
//! let remote: SocketAddr = "203.0.113.9:50000".parse()?;
//! let mut out = [0u8; MAX_REPLY_LEN];
//! let request = Message::parse(&datagram[..len])?;
//! assert_eq!(request.method(), Method::BINDING);
//! let reply = service.handle(&request, primary, remote, &mut out).ok_or("no answer")?;
//! assert_eq!((reply.from, reply.to), (alternate, remote));
//!
//! // What the client reads.
//! let answer = Message::parse(&out[..reply.len])?;
//! assert_eq!(answer.get::<XorMappedAddress>()?, Some(XorMappedAddress(remote)));
//! assert_eq!(answer.get::<ResponseOrigin>()?, Some(ResponseOrigin(alternate)));
//! assert_eq!(answer.get::<OtherAddress>()?, Some(OtherAddress(alternate)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Message`]: icebreaker_wire::Message
//! [`Message::parse`]: icebreaker_wire::Message::parse
//! [`Message::method`]: icebreaker_wire::Message::method
//! [`Method::BINDING`]: icebreaker_wire::Method::BINDING

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod config;
mod service;

pub use config::{AlternateAddress, BindingConfig, ConfigError, MAX_SOFTWARE_CHARS};
pub use service::{BindingReply, BindingService, MAX_REPLY_LEN, MAX_UNKNOWN_LISTED};

#[cfg(test)]
mod tests;
