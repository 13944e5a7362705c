//! Any bytes through the STUN message view and every accessor, then back through the writer:
//! no panic, and a message that parses re-encodes to the same attributes.

#![no_main]

use icebreaker_wire::attr::{AnyAttribute, AttrType, PasswordAlgorithms, UnknownAttributes, XorPeerAddress};
use icebreaker_wire::{IntegrityKey, Message, MessageWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = Message::parse(bytes) else {
        return;
    };
    let tid = message.transaction_id();
    let key = IntegrityKey::short_term("fuzz");
    let _ = message.verify_integrity(&key);
    let _ = message.verify_message_integrity(&key);
    let _ = message.verify_message_integrity_sha256(&key);
    let _ = message.verify_fingerprint();
    let _ = message.unknown_comprehension_required().count();
    let _ = message.get_all::<XorPeerAddress>().count();
    if let Ok(Some(list)) = message.get::<PasswordAlgorithms>() {
        let _ = list.iter().count();
    }
    if let Ok(Some(list)) = message.get::<UnknownAttributes>() {
        let _ = list.iter().count();
    }
    let _ = format!("{message:?}");

    // Every attribute that decodes is written again and must decode to the same value.
    let mut out = vec![0u8; bytes.len() + 64];
    let Ok(mut writer) = MessageWriter::new(&mut out, message.message_type(), tid) else {
        panic!("a header always fits");
    };
    let mut kept = Vec::new();
    for raw in message.attributes() {
        if matches!(
            raw.attr_type,
            AttrType::MESSAGE_INTEGRITY | AttrType::MESSAGE_INTEGRITY_SHA256 | AttrType::FINGERPRINT
        ) {
            continue;
        }
        if let Ok(attr) = AnyAttribute::decode(raw, &tid) {
            writer.add_any(&attr).expect("a decoded attribute re-encodes");
            kept.push(attr);
        }
    }
    let len = writer.finish();
    let again = Message::parse(&out[..len]).expect("the writer's output parses");
    let decoded: Vec<_> = again
        .attributes()
        .map(|raw| AnyAttribute::decode(raw, &tid).expect("the writer's attributes decode"))
        .collect();
    assert_eq!(decoded, kept);
});
