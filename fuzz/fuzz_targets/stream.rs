//! Any bytes as a TCP/TLS stream: framing either cuts whole frames that their parsers accept
//! the layout of, asks for more, or reports lost sync; it never loops or panics.

#![no_main]

use icebreaker_wire::framing::{FrameKind, Framing, frame};
use icebreaker_wire::{ChannelData, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut rest = bytes;
    while let Ok(Framing::Complete(f)) = frame(rest) {
        assert!(f.len >= 4 && f.len <= rest.len());
        let bytes = &rest[..f.len];
        match f.kind {
            FrameKind::Stun => {
                let _ = Message::parse(bytes);
            }
            FrameKind::ChannelData => {
                ChannelData::parse(bytes).expect("a framed ChannelData message parses");
            }
        }
        rest = &rest[f.len..];
    }
    if let Ok(Framing::Incomplete { needed }) = frame(rest) {
        assert!(needed > rest.len());
    }
});
