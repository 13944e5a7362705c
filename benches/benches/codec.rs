//! Codec benchmarks: `icebreaker-wire` against `stun-rs` 0.1.11, the same operation on the same
//! bytes in the same run, each pair in one criterion group so that the rows sit side by side.
//!
//! Run with `cargo bench -p icebreaker-benches --bench codec`; after criterion's own output the
//! bench prints a ratio table read back from criterion's `estimates.json` files. See
//! `benches/README.md` for what each group measures and the fairness notes.

// A benchmark is a test harness: a setup that does not hold is a broken benchmark, and
// stopping loudly is the only useful reaction.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../../crates/wire/tests/vectors/mod.rs"]
#[rustfmt::skip]
mod vectors;

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use icebreaker_wire::attr::{
    AnyAttribute, Lifetime, Nonce, Realm, Username, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, IntegrityKey, Message, MessageType, MessageWriter, Method,
    TransactionId, Transport, write_channel_data,
};
use stun_rs::attributes::stun as srs_stun;
use stun_rs::attributes::turn as srs_turn;
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass, MessageDecoder,
    MessageDecoderBuilder, MessageEncoder, StunMessageBuilder,
};
use vectors::{RFC5769_PASSWORD, RFC5769_REQUEST};

const ICEBREAKER: &str = "icebreaker";
const ICEBREAKER_KEY_PER_MESSAGE: &str = "icebreaker (key per message)";
const ICEBREAKER_KEY_PER_MESSAGE_WALK: &str = "icebreaker (key per message + walk)";
const STUN_RS: &str = "stun-rs";
const BASELINE: &str = "baseline (hand-written header read)";

// TURN long-term credentials shared by the TURN inputs; the realm and nonce are what a
// coturn-like server sends (the nonce starts with RFC 8489's nonce cookie).
const TURN_USERNAME: &str = "alice";
const TURN_REALM: &str = "example.org";
const TURN_PASSWORD: &str = "correct horse battery staple";
const TURN_NONCE: &str = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";
const TID: [u8; 12] = [
    0x4a, 0x1c, 0x2e, 0x90, 0x07, 0x55, 0xd3, 0x61, 0xbe, 0x08, 0x7f, 0x13,
];

fn main() {
    // Estimates older than this are left over from an earlier (perhaps filtered) run.
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    parse_walk(&mut c);
    parse_verify(&mut c);
    write_binding_success(&mut c);
    write_allocate_success(&mut c);
    parse_channel_data(&mut c);

    c.final_summary();
    if is_benchmark_run() {
        print_ratios(started);
    }
}

fn client_addr() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

fn relayed_addr() -> SocketAddr {
    "203.0.113.9:49152".parse().unwrap()
}

fn peer_addr() -> SocketAddr {
    "198.51.100.7:61000".parse().unwrap()
}

fn turn_key() -> IntegrityKey {
    IntegrityKey::long_term(KeyAlgorithm::Md5, TURN_USERNAME, TURN_REALM, TURN_PASSWORD)
}

fn turn_key_stun_rs() -> HMACKey {
    HMACKey::new_long_term(
        TURN_USERNAME,
        TURN_REALM,
        TURN_PASSWORD,
        Algorithm::from(AlgorithmId::MD5),
    )
    .unwrap()
}

/// An authenticated TURN ChannelBind request as a client sends it after the 401: CHANNEL-NUMBER,
/// XOR-PEER-ADDRESS, USERNAME, REALM, NONCE, MESSAGE-INTEGRITY (long-term MD5), FINGERPRINT.
fn turn_channel_bind_request() -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::CHANNEL_BIND, Class::Request),
        TransactionId::new(TID),
    )
    .unwrap();
    w.add(&ChannelNumber::new(0x4001).unwrap()).unwrap();
    w.add(&XorPeerAddress(peer_addr())).unwrap();
    w.add(&Username(TURN_USERNAME)).unwrap();
    w.add(&Realm(TURN_REALM)).unwrap();
    w.add(&Nonce(TURN_NONCE)).unwrap();
    w.add_message_integrity(&turn_key()).unwrap();
    w.add_fingerprint().unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

/// Parses and decodes every attribute; the count keeps the loop from being optimised away and
/// lets the setup check that nothing failed.
fn icebreaker_walk(bytes: &[u8]) -> usize {
    let message = Message::parse(bytes).unwrap();
    let tid = message.transaction_id();
    let mut decoded = 0;
    for raw in message.attributes() {
        if black_box(AnyAttribute::decode(raw, &tid)).is_ok() {
            decoded += 1;
        }
    }
    decoded
}

fn parse_walk(c: &mut Criterion) {
    let turn = turn_channel_bind_request();
    let stun_rs = MessageDecoder::default();
    for (group_name, input, attrs) in [
        ("parse_walk", &RFC5769_REQUEST[..], 6),
        ("parse_walk_turn", &turn[..], 7),
    ] {
        // Both codecs must see the same, fully valid message, or the comparison means nothing.
        assert_eq!(icebreaker_walk(input), attrs, "{group_name}: icebreaker");
        let (message, _) = stun_rs.decode(input).unwrap();
        assert_eq!(message.attributes().len(), attrs, "{group_name}: stun-rs");

        let mut group = c.benchmark_group(group_name);
        group.bench_function(ICEBREAKER, |b| {
            b.iter(|| icebreaker_walk(black_box(input)));
        });
        group.bench_function(STUN_RS, |b| {
            b.iter(|| {
                // Its decode builds every attribute; dropping the message is part of its cost.
                let (message, consumed) = stun_rs.decode(black_box(input)).unwrap();
                black_box(&message);
                consumed
            });
        });
        group.finish();
    }
}

fn parse_verify(c: &mut Criterion) {
    let input = &RFC5769_REQUEST[..];
    let key = IntegrityKey::short_term(RFC5769_PASSWORD);
    let stun_rs = MessageDecoderBuilder::default()
        .with_context(
            DecoderContextBuilder::default()
                .with_key(HMACKey::new_short_term(RFC5769_PASSWORD).unwrap())
                // Without it stun-rs checks nothing.
                .with_validation()
                .build(),
        )
        .build();

    let message = Message::parse(input).unwrap();
    message.verify_message_integrity(&key).unwrap();
    message.verify_fingerprint().unwrap();
    stun_rs.decode(input).unwrap();
    let wrong = MessageDecoderBuilder::default()
        .with_context(
            DecoderContextBuilder::default()
                .with_key(HMACKey::new_short_term("wrong").unwrap())
                .with_validation()
                .build(),
        )
        .build();
    assert!(
        wrong.decode(input).is_err(),
        "stun-rs must really validate MESSAGE-INTEGRITY"
    );

    let mut group = c.benchmark_group("parse_verify");
    group.bench_function(ICEBREAKER, |b| {
        b.iter(|| {
            let message = Message::parse(black_box(input)).unwrap();
            message.verify_message_integrity(black_box(&key)).unwrap();
            message.verify_fingerprint().unwrap();
            message
        });
    });
    group.bench_function(ICEBREAKER_KEY_PER_MESSAGE, |b| {
        b.iter(|| {
            let message = Message::parse(black_box(input)).unwrap();
            let key = IntegrityKey::short_term(black_box(RFC5769_PASSWORD));
            message.verify_message_integrity(&key).unwrap();
            message.verify_fingerprint().unwrap();
            message
        });
    });
    // stun-rs's decode also decodes every attribute, so this row does everything it does.
    group.bench_function(ICEBREAKER_KEY_PER_MESSAGE_WALK, |b| {
        b.iter(|| {
            let message = Message::parse(black_box(input)).unwrap();
            let key = IntegrityKey::short_term(black_box(RFC5769_PASSWORD));
            message.verify_message_integrity(&key).unwrap();
            message.verify_fingerprint().unwrap();
            let tid = message.transaction_id();
            for raw in message.attributes() {
                black_box(AnyAttribute::decode(raw, &tid)).unwrap();
            }
        });
    });
    group.bench_function(STUN_RS, |b| {
        b.iter(|| {
            let (message, consumed) = stun_rs.decode(black_box(input)).unwrap();
            black_box(&message);
            consumed
        });
    });
    group.finish();
}

fn icebreaker_binding_success(buf: &mut [u8], tid: TransactionId, mapped: SocketAddr) -> usize {
    let mut w =
        MessageWriter::new(buf, MessageType::new(Method::BINDING, Class::Success), tid).unwrap();
    w.add(&XorMappedAddress(mapped)).unwrap();
    w.add_fingerprint().unwrap();
    w.finish()
}

fn stun_rs_binding_success(
    encoder: &MessageEncoder,
    buf: &mut [u8],
    tid: [u8; 12],
    mapped: SocketAddr,
) -> usize {
    let message = StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::SuccessResponse)
        // Otherwise the builder draws a random one from a thread RNG.
        .with_transaction_id(stun_rs::TransactionId::from(tid))
        .with_attribute(srs_stun::XorMappedAddress::from(mapped))
        .with_attribute(srs_stun::Fingerprint::default())
        .build();
    encoder.encode(buf, &message).unwrap()
}

fn write_binding_success(c: &mut Criterion) {
    let encoder = MessageEncoder::default();
    let mut buf = [0u8; 1500];
    let mut other = [0u8; 1500];
    let n = icebreaker_binding_success(&mut buf, TransactionId::new(TID), client_addr());
    let m = stun_rs_binding_success(&encoder, &mut other, TID, client_addr());
    assert_eq!(
        buf[..n],
        other[..m],
        "both codecs must write the same bytes"
    );

    let mut group = c.benchmark_group("write_binding_success");
    group.bench_function(ICEBREAKER, |b| {
        b.iter(|| {
            icebreaker_binding_success(
                black_box(&mut buf),
                TransactionId::new(black_box(TID)),
                black_box(client_addr()),
            )
        });
    });
    group.bench_function(STUN_RS, |b| {
        b.iter(|| {
            stun_rs_binding_success(
                &encoder,
                black_box(&mut buf),
                black_box(TID),
                black_box(client_addr()),
            )
        });
    });
    group.finish();
}

fn icebreaker_allocate_success(buf: &mut [u8], tid: TransactionId, key: &IntegrityKey) -> usize {
    let mut w =
        MessageWriter::new(buf, MessageType::new(Method::ALLOCATE, Class::Success), tid).unwrap();
    w.add(&XorRelayedAddress(relayed_addr())).unwrap();
    w.add(&Lifetime(600)).unwrap();
    w.add(&XorMappedAddress(client_addr())).unwrap();
    w.add_message_integrity(key).unwrap();
    w.add_fingerprint().unwrap();
    w.finish()
}

fn stun_rs_allocate_success(
    encoder: &MessageEncoder,
    buf: &mut [u8],
    tid: [u8; 12],
    key: &HMACKey,
) -> usize {
    let message =
        StunMessageBuilder::new(stun_rs::methods::ALLOCATE, MessageClass::SuccessResponse)
            .with_transaction_id(stun_rs::TransactionId::from(tid))
            .with_attribute(srs_turn::XorRelayedAddress::from(relayed_addr()))
            .with_attribute(srs_turn::LifeTime::new(600))
            .with_attribute(srs_stun::XorMappedAddress::from(client_addr()))
            // An Arc clone: the key itself was derived once, outside the loop.
            .with_attribute(srs_stun::MessageIntegrity::new(key.clone()))
            .with_attribute(srs_stun::Fingerprint::default())
            .build();
    encoder.encode(buf, &message).unwrap()
}

fn write_allocate_success(c: &mut Criterion) {
    let key = turn_key();
    let key_stun_rs = turn_key_stun_rs();
    let encoder = MessageEncoder::default();
    let mut buf = [0u8; 1500];
    let mut other = [0u8; 1500];
    let n = icebreaker_allocate_success(&mut buf, TransactionId::new(TID), &key);
    let m = stun_rs_allocate_success(&encoder, &mut other, TID, &key_stun_rs);
    assert_eq!(
        buf[..n],
        other[..m],
        "both codecs must write the same bytes"
    );

    let mut group = c.benchmark_group("write_allocate_success");
    group.bench_function(ICEBREAKER, |b| {
        b.iter(|| {
            icebreaker_allocate_success(
                black_box(&mut buf),
                TransactionId::new(black_box(TID)),
                black_box(&key),
            )
        });
    });
    group.bench_function(STUN_RS, |b| {
        b.iter(|| {
            stun_rs_allocate_success(
                &encoder,
                black_box(&mut buf),
                black_box(TID),
                black_box(&key_stun_rs),
            )
        });
    });
    group.finish();
}

/// What a relay would write by hand: the same checks as `ChannelData::parse` (channel range,
/// length within the buffer), nothing more.
fn hand_written_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (header, rest) = buf.split_first_chunk::<4>()?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    if !(0x4000..=0x4FFF).contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    Some((channel, rest.get(..len)?))
}

fn parse_channel_data(c: &mut Criterion) {
    let payload = [0x5Au8; 100];
    let mut buf = [0u8; 104];
    let channel = ChannelNumber::new(0x4001).unwrap();
    let n = write_channel_data(&mut buf, channel, &payload, Transport::Datagram).unwrap();
    let input = &buf[..n];
    let parsed = ChannelData::parse(input).unwrap();
    assert_eq!((parsed.channel(), parsed.data()), (channel, &payload[..]));
    assert_eq!(
        hand_written_channel_data(input),
        Some((0x4001, &payload[..]))
    );

    let mut group = c.benchmark_group("parse_channel_data");
    // Both rows hand out the same thing, the channel and the data, as a relay uses them.
    group.bench_function(ICEBREAKER, |b| {
        b.iter(|| {
            let parsed = ChannelData::parse(black_box(input)).unwrap();
            (parsed.channel().value(), parsed.data())
        });
    });
    group.bench_function(BASELINE, |b| {
        b.iter(|| hand_written_channel_data(black_box(input)).unwrap());
    });
    group.finish();
}

/// Criterion writes estimates only when it benchmarks; `cargo test --benches`, `--test` and
/// `--list` would otherwise print a table of stale numbers. Mirrors criterion's own test.
fn is_benchmark_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"))
}

/// Where criterion puts its output, found the same way criterion does except for the
/// `cargo metadata` fallback: that only matters with a `target-dir` in a cargo config, which
/// this workspace does not have.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
            manifest.join("..").join("target")
        });
    target.join("criterion")
}

/// Criterion's mean in ns for one function, if it ran in this process.
fn mean_ns(group: &str, function: &str, started: SystemTime) -> Option<f64> {
    // Criterion's directory names replace these characters.
    let safe = |s: &str| s.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_");
    let path = criterion_dir()
        .join(safe(group))
        .join(safe(function))
        .join("new")
        .join("estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started);
    if !fresh {
        return None;
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_ratios(started: SystemTime) {
    // (label, group, icebreaker row, the row it is compared with)
    let rows = [
        (
            "parse_walk (RFC 5769 request)",
            "parse_walk",
            ICEBREAKER,
            STUN_RS,
        ),
        (
            "parse_walk_turn (REALM/NONCE)",
            "parse_walk_turn",
            ICEBREAKER,
            STUN_RS,
        ),
        ("parse_verify", "parse_verify", ICEBREAKER, STUN_RS),
        (
            "parse_verify, key per message",
            "parse_verify",
            ICEBREAKER_KEY_PER_MESSAGE,
            STUN_RS,
        ),
        (
            "parse_verify, key per msg + walk",
            "parse_verify",
            ICEBREAKER_KEY_PER_MESSAGE_WALK,
            STUN_RS,
        ),
        (
            "write_binding_success",
            "write_binding_success",
            ICEBREAKER,
            STUN_RS,
        ),
        (
            "write_allocate_success",
            "write_allocate_success",
            ICEBREAKER,
            STUN_RS,
        ),
        (
            "parse_channel_data (vs baseline)",
            "parse_channel_data",
            ICEBREAKER,
            BASELINE,
        ),
    ];
    let fmt_ns = |ns: Option<f64>| ns.map_or_else(|| "not run".to_owned(), |ns| format!("{ns:.1}"));
    println!();
    println!("RATIO TABLE (criterion mean, ns per operation)");
    println!(
        "| {:<34} | {:>13} | {:>13} | {:<14} |",
        "operation", "icebreaker ns", "stun-rs ns", "ratio"
    );
    println!("|{:-<36}|{:->15}|{:->15}|{:-<16}|", "", "", "", "");
    for (label, group, ours, theirs) in rows {
        let a = mean_ns(group, ours, started);
        let b = mean_ns(group, theirs, started);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 && b >= a => format!("{:.1}× faster", b / a),
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}× slower", a / b),
            _ => "-".to_owned(),
        };
        println!(
            "| {label:<34} | {:>13} | {:>13} | {ratio:<14} |",
            fmt_ns(a),
            fmt_ns(b)
        );
    }
    println!("(parse_channel_data: the second column is the hand-written baseline, not stun-rs,");
    println!(" which has no ChannelData.)");
}
