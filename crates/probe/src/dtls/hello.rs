//! What the server's plaintext handshake messages say that the DTLS library does not report:
//! the cipher suite and key exchange group it chose, and under DTLS 1.2 the whole certificate
//! chain it sent (the library hands out the leaf only; verifying a certificate issued by an
//! intermediate CA needs the intermediates).
//!
//! [`Observer::observe`] reads each datagram the server sends during the handshake: records
//! of epoch 0 (RFC 6347 §4.1, RFC 9147 §4 for DTLSPlaintext), handshake fragments reassembled
//! by message (§4.2.3), then ServerHello (RFC 5246 §7.4.1.3, RFC 8446 §4.1.3), Certificate
//! (RFC 5246 §7.4.2) and ServerKeyExchange (RFC 8422 §5.4). DTLS 1.3 encrypts everything after
//! the ServerHello, so there only the suite and group are seen. This is for the report only:
//! the library runs the handshake, and anything unexpected here is passed over.

use std::collections::HashMap;

/// A record of the handshake content type.
const HANDSHAKE: u8 = 22;
/// The DTLSPlaintext header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// A handshake fragment's header: type, length, message_seq, fragment_offset,
/// fragment_length.
const FRAGMENT_HEADER: usize = 12;
const SERVER_HELLO: u8 = 2;
const CERTIFICATE: u8 = 11;
const SERVER_KEY_EXCHANGE: u8 = 12;
/// The key_share extension (RFC 8446 §4.2.8).
const KEY_SHARE: u16 = 0x0033;
/// `named_curve` ECParameters of a ServerKeyExchange (RFC 8422 §5.4).
const NAMED_CURVE: u8 = 3;
/// No message the probe reads is longer; longer ones are passed over.
const MAX_MESSAGE: usize = 1 << 16;
/// Messages being reassembled at once, at most.
const MAX_PARTIAL: usize = 8;

/// What the server's handshake showed so far.
#[derive(Debug, Default)]
pub struct Observer {
    /// The cipher suite of the last ServerHello.
    pub cipher_suite: Option<u16>,
    /// The key exchange group: from the ServerHello's key_share (DTLS 1.3) or the
    /// ServerKeyExchange (DTLS 1.2).
    pub group: Option<u16>,
    /// The certificates of a DTLS 1.2 Certificate message, the server's own first.
    pub chain: Vec<Vec<u8>>,
    /// Messages in pieces, by type and message_seq.
    partial: HashMap<(u8, u16), Partial>,
}

/// A handshake message being reassembled.
#[derive(Debug)]
struct Partial {
    body: Vec<u8>,
    /// Which bytes of `body` arrived.
    have: Vec<bool>,
    missing: usize,
}

impl Observer {
    /// Reads one datagram from the server.
    pub fn observe(&mut self, datagram: &[u8]) {
        let mut rest = datagram;
        while rest.len() >= RECORD_HEADER {
            // DTLS 1.3 ciphertext has a unified header (first bits 001) of another shape;
            // nothing after it is plaintext.
            if rest[0] & 0xE0 == 0x20 {
                return;
            }
            let epoch = u16::from_be_bytes([rest[3], rest[4]]);
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
                return;
            };
            if rest[0] == HANDSHAKE && epoch == 0 {
                self.fragments(body);
            }
            rest = &rest[RECORD_HEADER + len..];
        }
    }

    /// The handshake fragments of one record.
    fn fragments(&mut self, mut record: &[u8]) {
        while record.len() >= FRAGMENT_HEADER {
            let kind = record[0];
            let length = u24(&record[1..4]);
            let seq = u16::from_be_bytes([record[4], record[5]]);
            let offset = u24(&record[6..9]);
            let fragment_len = u24(&record[9..12]);
            let Some(fragment) = record.get(FRAGMENT_HEADER..FRAGMENT_HEADER + fragment_len) else {
                return;
            };
            record = &record[FRAGMENT_HEADER + fragment_len..];
            if matches!(kind, SERVER_HELLO | CERTIFICATE | SERVER_KEY_EXCHANGE)
                && let Some(message) = self.reassemble(kind, seq, length, offset, fragment)
            {
                self.read(kind, &message);
            }
        }
    }

    /// Adds a fragment to its message: the whole message once it is complete.
    fn reassemble(
        &mut self,
        kind: u8,
        seq: u16,
        length: usize,
        offset: usize,
        fragment: &[u8],
    ) -> Option<Vec<u8>> {
        let end = offset.checked_add(fragment.len())?;
        if length > MAX_MESSAGE || end > length {
            return None;
        }
        if offset == 0 && fragment.len() == length {
            self.partial.remove(&(kind, seq));
            return Some(fragment.to_vec());
        }
        if !self.partial.contains_key(&(kind, seq)) && self.partial.len() >= MAX_PARTIAL {
            return None;
        }
        let partial = self.partial.entry((kind, seq)).or_insert_with(|| Partial {
            body: vec![0; length],
            have: vec![false; length],
            missing: length,
        });
        if partial.body.len() != length {
            return None;
        }
        for (i, byte) in fragment.iter().enumerate() {
            let at = offset + i;
            if !partial.have[at] {
                partial.have[at] = true;
                partial.body[at] = *byte;
                partial.missing -= 1;
            }
        }
        if partial.missing > 0 {
            return None;
        }
        self.partial.remove(&(kind, seq)).map(|p| p.body)
    }

    fn read(&mut self, kind: u8, body: &[u8]) {
        match kind {
            SERVER_HELLO => self.server_hello(body),
            CERTIFICATE => {
                if let Some(chain) = certificates(body) {
                    self.chain = chain;
                }
            }
            SERVER_KEY_EXCHANGE => {
                if let [NAMED_CURVE, high, low, ..] = *body {
                    self.group = Some(u16::from_be_bytes([high, low]));
                }
            }
            _ => {}
        }
    }

    /// version, random, session id, cipher suite, compression, extensions.
    fn server_hello(&mut self, body: &[u8]) {
        let Some(&session_len) = body.get(34) else {
            return;
        };
        let at = 35 + usize::from(session_len);
        let Some(suite) = body.get(at..at + 2) else {
            return;
        };
        self.cipher_suite = Some(u16::from_be_bytes([suite[0], suite[1]]));
        let Some(length) = body.get(at + 3..at + 5) else {
            return;
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let Some(mut extensions) = body.get(at + 5..at + 5 + length) else {
            return;
        };
        while extensions.len() >= 4 {
            let kind = u16::from_be_bytes([extensions[0], extensions[1]]);
            let len = usize::from(u16::from_be_bytes([extensions[2], extensions[3]]));
            let Some(data) = extensions.get(4..4 + len) else {
                return;
            };
            // A ServerHello's KeyShareEntry and a HelloRetryRequest's selected group both
            // begin with the group.
            if kind == KEY_SHARE
                && let [high, low, ..] = *data
            {
                self.group = Some(u16::from_be_bytes([high, low]));
            }
            extensions = &extensions[4 + len..];
        }
    }
}

/// The certificates of a TLS 1.2 Certificate message: a 24-bit length, then each
/// certificate with its own 24-bit length.
fn certificates(body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let total = u24(body.get(..3)?);
    let mut list = body.get(3..3 + total)?;
    let mut chain = Vec::new();
    while !list.is_empty() {
        let len = u24(list.get(..3)?);
        chain.push(list.get(3..3 + len)?.to_vec());
        list = &list[3 + len..];
    }
    Some(chain)
}

/// A 24-bit big-endian number of three bytes.
fn u24(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take(3)
        .fold(0usize, |n, b| (n << 8) | usize::from(*b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A DTLSPlaintext record of `kind` and `epoch` around `body`.
    fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0xFE, 0xFD];
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A handshake fragment of message `kind` (whole length `length`) from `offset`.
    fn fragment(kind: u8, seq: u16, length: usize, offset: usize, data: &[u8]) -> Vec<u8> {
        let u24 = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let mut out = vec![kind];
        out.extend_from_slice(&u24(length));
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&u24(offset));
        out.extend_from_slice(&u24(data.len()));
        out.extend_from_slice(data);
        out
    }

    fn server_hello(suite: u16, extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0xFE, 0xFD];
        body.extend_from_slice(&[7; 32]);
        body.push(4);
        body.extend_from_slice(&[1, 2, 3, 4]);
        body.extend_from_slice(&suite.to_be_bytes());
        body.push(0);
        body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
        body.extend_from_slice(extensions);
        body
    }

    fn certificate_message(chain: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for cert in chain {
            list.extend_from_slice(&[0, 0, u8::try_from(cert.len()).unwrap()]);
            list.extend_from_slice(cert);
        }
        let mut body = vec![0, 0, u8::try_from(list.len()).unwrap()];
        body.extend_from_slice(&list);
        body
    }

    #[test]
    fn a_dtls_12_flight_shows_suite_group_and_chain() {
        let hello = server_hello(0xC02C, &[0x00, 0x17, 0x00, 0x00]);
        let certificate = certificate_message(&[b"leaf", b"intermediate"]);
        let key_exchange = [NAMED_CURVE, 0x00, 0x17, 65, 4, 4, 4];
        // ServerHello and the first half of Certificate in one record, the rest and the
        // ServerKeyExchange in another record of the same datagram.
        let (head, tail) = certificate.split_at(7);
        let mut first = fragment(SERVER_HELLO, 1, hello.len(), 0, &hello);
        first.extend(fragment(CERTIFICATE, 2, certificate.len(), 0, head));
        let mut second = fragment(CERTIFICATE, 2, certificate.len(), 7, tail);
        second.extend(fragment(SERVER_KEY_EXCHANGE, 3, 7, 0, &key_exchange));
        let mut datagram = record(HANDSHAKE, 0, &first);
        datagram.extend(record(HANDSHAKE, 0, &second));
        let mut observer = Observer::default();
        observer.observe(&datagram);
        assert_eq!(observer.cipher_suite, Some(0xC02C));
        assert_eq!(observer.group, Some(0x0017));
        assert_eq!(observer.chain, [b"leaf".to_vec(), b"intermediate".to_vec()]);
        assert!(observer.partial.is_empty());
    }

    #[test]
    fn fragments_out_of_order_and_repeated_are_joined() {
        let certificate = certificate_message(&[b"0123456789"]);
        let mut observer = Observer::default();
        for (offset, len) in [(8, 8), (0, 4), (8, 8), (3, 6)] {
            let piece = &certificate[offset..offset + len];
            let datagram = record(
                HANDSHAKE,
                0,
                &fragment(CERTIFICATE, 2, certificate.len(), offset, piece),
            );
            observer.observe(&datagram);
        }
        assert_eq!(observer.chain, [b"0123456789".to_vec()]);
    }

    #[test]
    fn a_dtls_13_hello_shows_suite_and_group_and_ciphertext_is_passed_over() {
        // supported_versions (DTLS 1.3), then key_share with X25519 and its key.
        let mut extensions = vec![0x00, 0x2B, 0x00, 0x02, 0xFE, 0xFC];
        extensions.extend_from_slice(&[0x00, 0x33, 0x00, 0x08, 0x00, 0x1D, 0x00, 0x04, 9, 9, 9, 9]);
        let hello = server_hello(0x1302, &extensions);
        let mut datagram = record(
            HANDSHAKE,
            0,
            &fragment(SERVER_HELLO, 0, hello.len(), 0, &hello),
        );
        // A unified-header ciphertext record follows.
        datagram.extend_from_slice(&[0x2C, 0x00, 0x01, 0x00, 0x10]);
        datagram.extend_from_slice(&[0xAA; 16]);
        let mut observer = Observer::default();
        observer.observe(&datagram);
        assert_eq!(observer.cipher_suite, Some(0x1302));
        assert_eq!(observer.group, Some(0x001D));
        assert!(observer.chain.is_empty());
    }

    #[test]
    fn other_epochs_and_garbage_are_passed_over_without_a_panic() {
        let certificate = certificate_message(&[b"x"]);
        let mut observer = Observer::default();
        let encrypted = fragment(CERTIFICATE, 2, certificate.len(), 0, &certificate);
        observer.observe(&record(HANDSHAKE, 1, &encrypted));
        assert!(observer.chain.is_empty());
        let hello = server_hello(0xC02B, &[]);
        let whole = record(
            HANDSHAKE,
            0,
            &fragment(SERVER_HELLO, 1, hello.len(), 0, &hello),
        );
        for len in 0..whole.len() {
            observer.observe(&whole[..len]);
        }
        let mut flipped = whole.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xFF;
            observer.observe(&flipped);
            flipped[i] ^= 0xFF;
        }
        // A fragment claiming more than the message's length, and a huge message.
        observer.observe(&record(
            HANDSHAKE,
            0,
            &fragment(CERTIFICATE, 5, 4, 2, b"abcd"),
        ));
        observer.observe(&record(
            HANDSHAKE,
            0,
            &fragment(CERTIFICATE, 6, MAX_MESSAGE + 1, 0, b"ab"),
        ));
        assert!(observer.partial.len() <= MAX_PARTIAL);
        assert_eq!(certificates(&[0, 0, 9, 0, 0, 1]), None);
    }
}
