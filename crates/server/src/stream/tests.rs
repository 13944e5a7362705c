#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::Arc;

use icebreaker_wire::{Class, MessageType, MessageWriter, Method, TransactionId};

use super::*;

/// An in-memory socket: reads what the test put in, would block when empty, and takes at
/// most `room` bytes of writes before it would block.
#[derive(Default)]
struct Pipe {
    input: VecDeque<u8>,
    eof: bool,
    output: Vec<u8>,
    room: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.input.len());
        for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn limits(max_frame: usize) -> StreamLimits {
    StreamLimits {
        idle_timeout: Duration::from_secs(60),
        frame_timeout: Duration::from_secs(10),
        max_frame,
        channels: ChannelRange::Rfc8656,
    }
}

fn binding_request(id: u8) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        TransactionId::new([id; 12]),
    )
    .unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

fn frames(reader: &mut FrameReader, max: usize, now: Instant) -> Result<Vec<Vec<u8>>, CloseReason> {
    let mut out = Vec::new();
    while let Some(range) = reader.next_frame(&limits(max), now)? {
        out.push(reader.bytes()[range].to_vec());
    }
    Ok(out)
}

#[test]
fn a_frame_split_across_reads_and_many_frames_in_one_read() {
    let now = Instant::now();
    let first = binding_request(1);
    // ChannelData with 3 bytes of data is padded to 8 on a stream.
    let channel = [0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c', 0];
    let second = binding_request(2);
    let stream: Vec<u8> = [first.as_slice(), &channel, &second].concat();

    for split in 0..=stream.len() {
        let mut reader = FrameReader::default();
        reader.push(&stream[..split], now);
        let mut got = frames(&mut reader, 16_384, now).unwrap();
        reader.push(&stream[split..], now);
        got.extend(frames(&mut reader, 16_384, now).unwrap());
        assert_eq!(
            got,
            [first.clone(), channel.to_vec(), second.clone()],
            "split at {split}"
        );
        assert_eq!(reader.partial_since(), None);
    }
}

#[test]
fn a_length_field_near_65535_closes_the_connection_before_the_bytes_arrive() {
    let now = Instant::now();
    let mut reader = FrameReader::default();
    // A STUN header announcing 65532 bytes of attributes.
    let mut header = binding_request(1);
    header[2..4].copy_from_slice(&65_532u16.to_be_bytes());
    reader.push(&header[..8], now);
    assert_eq!(
        reader.next_frame(&limits(16_384), now),
        Err(CloseReason::FrameTooLong)
    );

    let mut reader = FrameReader::default();
    reader.push(&[0x40, 0x01, 0xFF, 0xFF], now);
    assert_eq!(
        reader.next_frame(&limits(16_384), now),
        Err(CloseReason::FrameTooLong)
    );
    // With the largest maximum the same ChannelData is merely incomplete.
    let mut reader = FrameReader::default();
    reader.push(&[0x40, 0x01, 0xFF, 0xFF], now);
    assert_eq!(reader.next_frame(&limits(65_555), now), Ok(None));
}

#[test]
fn bytes_that_are_neither_stun_nor_channel_data_close_the_connection() {
    let now = Instant::now();
    // An HTTP request reads as ChannelData on channel 0x4745 ("GE") of 21536 bytes ("T "):
    // refused for its length before anything waits for those bytes.
    let mut reader = FrameReader::default();
    reader.push(b"GET / HTTP/1.1\r\n", now);
    assert_eq!(
        reader.next_frame(&limits(16_384), now),
        Err(CloseReason::FrameTooLong)
    );
    for garbage in [
        &[0x80, 0, 0, 0][..],
        &[0x50, 0x00, 0x00, 0x04],
        &[0x00, 0x01, 0x00, 0x03],
    ] {
        let mut reader = FrameReader::default();
        reader.push(garbage, now);
        assert_eq!(
            reader.next_frame(&limits(16_384), now),
            Err(CloseReason::BadFrame),
            "{garbage:?}"
        );
    }
    // A TLS ClientHello on the plain TCP port starts with 0x16: neither either.
    let mut reader = FrameReader::default();
    reader.push(
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
        ],
        now,
    );
    assert_eq!(
        reader.next_frame(&limits(16_384), now),
        Err(CloseReason::BadFrame)
    );
}

#[test]
fn a_partial_frame_is_timed_from_its_first_byte() {
    let start = Instant::now();
    let limits = limits(16_384);
    let request = binding_request(1);
    let mut reader = FrameReader::default();
    reader.push(&request[..5], start);
    assert_eq!(reader.next_frame(&limits, start), Ok(None));
    assert_eq!(reader.partial_since(), Some(start));
    // A byte at a time keeps the connection "reading" but never finishes the frame.
    let later = start + Duration::from_secs(9);
    reader.push(&request[5..6], later);
    assert_eq!(
        overdue(&limits, later, later, reader.partial_since(), true),
        None
    );
    let late = start + Duration::from_secs(11);
    assert_eq!(
        overdue(&limits, late, late, reader.partial_since(), true),
        Some(CloseReason::SlowFrame)
    );

    reader.push(&request[6..], late);
    assert_eq!(frames(&mut reader, 16_384, late).unwrap().len(), 1);
    assert_eq!(reader.partial_since(), None, "nothing pending");
    assert_eq!(
        overdue(&limits, late, late, reader.partial_since(), false),
        None
    );
}

#[test]
fn silence_closes_only_a_connection_without_an_allocation() {
    let start = Instant::now();
    let limits = limits(16_384);
    let later = start + Duration::from_secs(61);
    assert_eq!(
        overdue(&limits, later, start, None, false),
        Some(CloseReason::Idle)
    );
    assert_eq!(overdue(&limits, later, start, None, true), None);
    assert_eq!(
        overdue(&limits, start + Duration::from_secs(59), start, None, false),
        None
    );
}

#[test]
fn plain_tcp_queues_what_the_socket_does_not_take_and_drops_data_past_the_bound() {
    let now = Instant::now();
    let mut link = Link::new(
        Pipe {
            room: 10,
            ..Pipe::default()
        },
        None,
        false,
        now,
    );
    assert!(link.send(&[1; 25], true));
    assert!(link.flush().unwrap(), "15 bytes wait");
    assert_eq!(link.pending(), 15);
    link.stream_mut().room = 100;
    assert!(!link.flush().unwrap());
    assert_eq!(link.stream_mut().output, vec![1; 25]);

    link.stream_mut().room = 0;
    assert!(link.send(&vec![2; MAX_PENDING], true));
    assert!(!link.send(&[3; 100], true), "relayed data is dropped");
    assert!(link.send(&[4; 100], false), "answers are still queued");
}

#[test]
fn eof_and_garbage_close_with_their_reason() {
    let now = Instant::now();
    let mut scratch = [0u8; 1024];
    let mut reader = FrameReader::default();
    let mut link = Link::new(
        Pipe {
            eof: true,
            ..Pipe::default()
        },
        None,
        false,
        now,
    );
    assert_eq!(
        link.read_into(&mut reader, &mut scratch, now),
        Arrival::Closed(CloseReason::Peer)
    );

    let mut pipe = Pipe::default();
    pipe.input.extend(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n");
    let mut link = Link::new(pipe, None, true, now);
    assert_eq!(
        link.read_into(&mut reader, &mut scratch, now),
        Arrival::Closed(CloseReason::Proxy)
    );
    assert!(link.setting_up_since().is_some());
}

/// A PROXY protocol v2 header for TCP over IPv4 from `source` to `destination`.
fn proxy_v2(source: ([u8; 4], u16), destination: ([u8; 4], u16)) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x11, 0x00, 12]);
    header.extend(source.0);
    header.extend(destination.0);
    header.extend(source.1.to_be_bytes());
    header.extend(destination.1.to_be_bytes());
    header
}

#[test]
fn a_proxy_header_names_the_client_and_the_frames_after_it_are_read() {
    let now = Instant::now();
    let request = binding_request(7);
    let mut pipe = Pipe::default();
    pipe.input.extend(proxy_v2(
        ([198, 51, 100, 7], 40_000),
        ([203, 0, 113, 1], 3478),
    ));
    pipe.input.extend(&request);
    let mut link = Link::new(pipe, None, true, now);
    let mut reader = FrameReader::default();
    let mut scratch = [0u8; 7];
    assert_eq!(
        link.read_into(&mut reader, &mut scratch, now),
        Arrival::ClientAddress("198.51.100.7:40000".parse().unwrap())
    );
    assert_eq!(link.setting_up_since(), None);
    assert_eq!(frames(&mut reader, 16_384, now).unwrap(), [request]);
}

fn tls_pair() -> (rustls::ClientConnection, rustls::ServerConnection) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("icebreaker-stream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let store = Arc::new(crate::tls::CertificateStore::open(&cert, &key).unwrap());
    let server = rustls::ServerConnection::new(crate::tls::server_config(store).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    let client =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    (client, server)
}

#[test]
fn tls_carries_frames_both_ways_after_the_handshake() {
    let now = Instant::now();
    let (mut client, server) = tls_pair();
    let mut link = Link::new(
        Pipe {
            room: usize::MAX,
            ..Pipe::default()
        },
        Some(server),
        false,
        now,
    );
    let mut reader = FrameReader::default();
    let mut scratch = [0u8; 1500];
    let request = binding_request(9);
    client.writer().write_all(&request).unwrap();
    // Move records between the two ends until the request has arrived.
    for _ in 0..10 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        link.stream_mut().input.extend(wire);
        assert_eq!(
            link.read_into(&mut reader, &mut scratch, now),
            Arrival::Open
        );
        link.flush().unwrap();
        let mut back = std::mem::take(&mut link.stream_mut().output);
        let mut slice = back.as_slice();
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
        }
        back.clear();
        client.process_new_packets().unwrap();
        if reader.bytes().len() >= request.len() {
            break;
        }
    }
    assert_eq!(client.alpn_protocol(), Some(&b"stun.turn"[..]));
    assert_eq!(link.setting_up_since(), None, "handshake done");
    assert_eq!(
        frames(&mut reader, 16_384, now).unwrap(),
        std::slice::from_ref(&request)
    );

    assert!(link.send(&request, false));
    link.flush().unwrap();
    let back = std::mem::take(&mut link.stream_mut().output);
    let mut slice = back.as_slice();
    while !slice.is_empty() {
        client.read_tls(&mut slice).unwrap();
    }
    client.process_new_packets().unwrap();
    let mut plain = vec![0u8; 100];
    let n = client.reader().read(&mut plain).unwrap();
    assert_eq!(&plain[..n], request.as_slice());
}

#[test]
fn plain_bytes_on_the_tls_port_close_the_connection() {
    let now = Instant::now();
    let (_, server) = tls_pair();
    let mut pipe = Pipe {
        room: usize::MAX,
        ..Pipe::default()
    };
    pipe.input.extend(binding_request(1));
    let mut link = Link::new(pipe, Some(server), false, now);
    let mut reader = FrameReader::default();
    let mut scratch = [0u8; 1500];
    assert_eq!(
        link.read_into(&mut reader, &mut scratch, now),
        Arrival::Closed(CloseReason::Tls)
    );
}
