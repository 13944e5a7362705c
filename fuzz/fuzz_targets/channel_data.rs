//! Any bytes through the ChannelData view; whatever parses is written again identically.

#![no_main]

use icebreaker_wire::{ChannelData, Transport, write_channel_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(parsed) = ChannelData::parse(bytes) else {
        return;
    };
    let mut out = vec![0u8; parsed.framed_len(Transport::Stream)];
    let n = write_channel_data(&mut out, parsed.channel(), parsed.data(), Transport::Stream)
        .expect("fits");
    let again = ChannelData::parse(&out[..n]).expect("the writer's output parses");
    assert_eq!(again, parsed);
});
