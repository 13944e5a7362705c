//! TCP and TLS client connections: the bytes of a stream cut into STUN messages and ChannelData
//! frames (RFC 8656 §3.1), the limits that keep a connection from holding memory or a slot
//! forever, and the buffered, optionally encrypted, way back.
//!
//! The logic here reads no clock and opens no socket of its own: the worker passes the time and
//! the stream, so the limits are unit-tested on made-up instants.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use icebreaker_wire::ChannelRange;
use icebreaker_wire::framing::{self, Framing, FramingError};

use crate::proxy_protocol::{self, ProxyHeader};

/// Bytes queued towards a client that does not read, beyond which relayed data to it is
/// dropped, as a full UDP socket buffer would drop it. Answers to requests are small and
/// always queued.
pub(crate) const MAX_PENDING: usize = 1 << 20;

/// Why a connection was closed: a metric label each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it, or the network did.
    Peer,
    /// Silent for longer than the idle timeout without an allocation.
    Idle,
    /// Half a frame (or a handshake, or a PROXY header) held longer than the frame timeout.
    SlowFrame,
    /// A length field beyond the maximum frame.
    FrameTooLong,
    /// Bytes that are neither STUN nor ChannelData: the stream cannot be resynchronised.
    BadFrame,
    /// The TLS or DTLS handshake or a record failed.
    Tls,
    /// A missing or malformed PROXY protocol header.
    Proxy,
    /// The server is at its connection limit.
    Limit,
    /// The client sends faster than it reads: its queue outgrew every bound.
    Backlog,
    /// The client kept failing authentication.
    Throttled,
    /// A data connection (RFC 6062) whose peer connection or allocation ended.
    PeerConnection,
}

impl CloseReason {
    /// Every reason, in metric-label order.
    pub(crate) const ALL: [CloseReason; 11] = [
        CloseReason::Peer,
        CloseReason::Idle,
        CloseReason::SlowFrame,
        CloseReason::FrameTooLong,
        CloseReason::BadFrame,
        CloseReason::Tls,
        CloseReason::Proxy,
        CloseReason::Limit,
        CloseReason::Backlog,
        CloseReason::Throttled,
        CloseReason::PeerConnection,
    ];

    /// The metric label.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Idle => "idle",
            CloseReason::SlowFrame => "slow_frame",
            CloseReason::FrameTooLong => "frame_too_long",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::Tls => "tls",
            CloseReason::Proxy => "proxy_protocol",
            CloseReason::Limit => "limit",
            CloseReason::Backlog => "backlog",
            CloseReason::Throttled => "throttled",
            CloseReason::PeerConnection => "peer_connection",
        }
    }

    /// Its index in [`CloseReason::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// The limits every stream connection lives under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    /// Silence tolerated from a connection without an allocation.
    pub(crate) idle_timeout: Duration,
    /// How long half a frame, a TLS handshake or a PROXY header may take.
    pub(crate) frame_timeout: Duration,
    /// The longest frame accepted.
    pub(crate) max_frame: usize,
    /// The channel numbers ChannelData may carry.
    pub(crate) channels: ChannelRange,
}

/// The bytes read from a stream and not yet handled, cut into frames.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Where the unhandled bytes start.
    start: usize,
    /// When the current partial frame began, if one is pending.
    partial_since: Option<Instant>,
}

impl FrameReader {
    /// Appends bytes read at `now`.
    pub(crate) fn push(&mut self, bytes: &[u8], now: Instant) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if !bytes.is_empty() && self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, as a range of [`FrameReader::bytes`]; `Ok(None)` when more bytes
    /// are needed. After an error the stream has lost sync and must be closed.
    pub(crate) fn next_frame(
        &mut self,
        limits: &StreamLimits,
        now: Instant,
    ) -> Result<Option<Range<usize>>, CloseReason> {
        let max_frame = limits.max_frame;
        let pending = &self.buf[self.start..];
        if pending.is_empty() {
            self.partial_since = None;
            return Ok(None);
        }
        match framing::frame_in(pending, limits.channels) {
            Ok(Framing::Complete(frame)) if frame.len > max_frame => Err(CloseReason::FrameTooLong),
            Ok(Framing::Complete(frame)) => {
                let range = self.start..self.start + frame.len;
                self.start += frame.len;
                // The next frame's clock starts when its first byte is already here.
                self.partial_since = (self.start < self.buf.len()).then_some(now);
                Ok(Some(range))
            }
            Ok(Framing::Incomplete { needed }) if needed > max_frame => {
                Err(CloseReason::FrameTooLong)
            }
            Ok(Framing::Incomplete { .. }) => {
                // Keep the buffer from creeping: move a partial frame to the front.
                if self.start > 0 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(None)
            }
            Err(FramingError::UnknownFrame(_))
            | Err(FramingError::InvalidChannel(_))
            | Err(FramingError::UnalignedLength(_))
            | Err(FramingError::BadMagicCookie(_)) => Err(CloseReason::BadFrame),
        }
    }

    /// The buffer the ranges of [`FrameReader::next_frame`] index.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Since when a partial frame has been waiting, if one is.
    pub(crate) fn partial_since(&self) -> Option<Instant> {
        if self.start < self.buf.len() {
            self.partial_since
        } else {
            None
        }
    }
}

/// Where a connection stands before its frames can be read.
#[derive(Debug)]
enum Preface {
    /// A PROXY protocol header is expected first; these bytes of it have arrived.
    Proxy(Vec<u8>),
    /// Frames (or TLS records) flow.
    Done,
}

/// What a read of a data connection's plaintext found ([`Link::read_plain`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PlainRead {
    /// Bytes were read, or none were waiting; the client may send more.
    Open,
    /// The client finished sending: a FIN, or a TLS close_notify.
    End,
    /// The connection failed: a reset, or a TLS record refused.
    Failed,
}

/// What arrived on a connection in one read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Bytes were read (maybe none yet usable); the connection lives on.
    Open,
    /// The PROXY header named the client: use this address from now on.
    ClientAddress(SocketAddr),
    /// The connection must close.
    Closed(CloseReason),
}

/// One client connection's transport: the stream, its TLS session if any, the PROXY header
/// state, and the bytes queued towards the client.
pub(crate) struct Link<S> {
    stream: S,
    tls: Option<Box<rustls::ServerConnection>>,
    preface: Preface,
    /// Ciphertext (TLS) or plain bytes waiting for the socket to take them.
    outbox: Vec<u8>,
    /// When the connection was accepted: a handshake or PROXY header is timed from here.
    opened: Instant,
}

impl<S: Read + Write> Link<S> {
    /// A link over `stream`, encrypted when `tls` is given, expecting a PROXY header first
    /// when `proxy` is set.
    pub(crate) fn new(
        stream: S,
        tls: Option<rustls::ServerConnection>,
        proxy: bool,
        now: Instant,
    ) -> Link<S> {
        Link {
            stream,
            tls: tls.map(Box::new),
            preface: if proxy {
                Preface::Proxy(Vec::new())
            } else {
                Preface::Done
            },
            outbox: Vec::new(),
            opened: now,
        }
    }

    /// The stream, to register with the poller.
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// Since when the connection has been setting up (PROXY header, TLS handshake), if it
    /// still is.
    pub(crate) fn setting_up_since(&self) -> Option<Instant> {
        let handshaking = self.tls.as_ref().is_some_and(|tls| tls.is_handshaking());
        (handshaking || matches!(self.preface, Preface::Proxy(_))).then_some(self.opened)
    }

    /// Reads what the socket has, until it would block, into `reader` (plaintext), using
    /// `scratch` for raw bytes.
    pub(crate) fn read_into(
        &mut self,
        reader: &mut FrameReader,
        scratch: &mut [u8],
        now: Instant,
    ) -> Arrival {
        let mut arrival = Arrival::Open;
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Arrival::Closed(CloseReason::Peer),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return arrival,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Arrival::Closed(CloseReason::Peer),
            };
            let mut bytes = &scratch[..n];
            let after_header: Vec<u8>;
            if let Preface::Proxy(seen) = &mut self.preface {
                seen.extend_from_slice(bytes);
                match proxy_protocol::parse(seen) {
                    Ok(None) => continue,
                    Err(_) => return Arrival::Closed(CloseReason::Proxy),
                    Ok(Some(header)) => {
                        let len = match header {
                            ProxyHeader::Local { len } => len,
                            ProxyHeader::Proxy { len, source, .. } => {
                                // A dual-stack balancer may write an IPv4 client as
                                // `::ffff:a.b.c.d`; the client is IPv4 all the same.
                                let ip = source.ip().to_canonical();
                                arrival =
                                    Arrival::ClientAddress(SocketAddr::new(ip, source.port()));
                                len
                            }
                        };
                        after_header = seen.split_off(len.min(seen.len()));
                        self.preface = Preface::Done;
                        bytes = &after_header;
                    }
                }
            }
            if let Err(reason) = self.take(bytes, reader, now) {
                return Arrival::Closed(reason);
            }
        }
    }

    /// Hands raw bytes to TLS, or straight to the reader.
    fn take(
        &mut self,
        mut bytes: &[u8],
        reader: &mut FrameReader,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let Some(tls) = self.tls.as_mut() else {
            reader.push(bytes, now);
            return Ok(());
        };
        let mut plain = [0u8; 4096];
        while !bytes.is_empty() {
            if let Err(error) = tls.read_tls(&mut bytes) {
                tracing::debug!(%error, "TLS records refused");
                return Err(CloseReason::Tls);
            }
            let state = tls.process_new_packets();
            // An alert may explain the failure to the client: queue it before closing.
            while tls.wants_write() {
                if tls.write_tls(&mut self.outbox).is_err() {
                    break;
                }
            }
            let state = state.map_err(|error| {
                tracing::debug!(%error, "TLS failed");
                CloseReason::Tls
            })?;
            if state.plaintext_bytes_to_read() > 0 {
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(n) => reader.push(&plain[..n], now),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Err(CloseReason::Tls),
                    }
                }
            }
            if state.peer_has_closed() {
                return Err(CloseReason::Peer);
            }
        }
        Ok(())
    }

    /// Reads the plaintext of a data connection (RFC 6062), a raw byte stream, appending it
    /// to `out` while `out` holds less than `limit` bytes; `scratch` takes the raw bytes, so
    /// `out` may end up to one `scratch` of plaintext past `limit`. Bytes may still wait in the
    /// socket when it returns with `out` full: call again once it has room.
    pub(crate) fn read_plain(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        scratch: &mut [u8],
    ) -> PlainRead {
        while out.len() < limit {
            let n = match self.stream.read(scratch) {
                Ok(0) => return PlainRead::End,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PlainRead::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return PlainRead::Failed,
            };
            let Some(tls) = self.tls.as_mut() else {
                out.extend_from_slice(&scratch[..n]);
                continue;
            };
            let mut bytes = &scratch[..n];
            while !bytes.is_empty() {
                if tls.read_tls(&mut bytes).is_err() {
                    return PlainRead::Failed;
                }
                let state = tls.process_new_packets();
                while tls.wants_write() {
                    if tls.write_tls(&mut self.outbox).is_err() {
                        break;
                    }
                }
                let Ok(state) = state else {
                    return PlainRead::Failed;
                };
                let mut plain = [0u8; 4096];
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(k) => out.extend_from_slice(&plain[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return PlainRead::Failed,
                    }
                }
                if state.peer_has_closed() {
                    return PlainRead::End;
                }
            }
        }
        PlainRead::Open
    }

    /// Queues a TLS close_notify, the end of what the server sends; nothing without TLS, where
    /// the caller shuts the socket's write side once [`Link::flush`] has emptied the queue.
    pub(crate) fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut self.outbox).is_err() {
                    break;
                }
            }
        }
    }

    /// Queues a frame towards the client, encrypted if need be; false when it was dropped
    /// because the client is not reading.
    pub(crate) fn send(&mut self, frame: &[u8], droppable: bool) -> bool {
        if droppable && self.outbox.len() >= MAX_PENDING {
            return false;
        }
        match self.tls.as_mut() {
            None => self.outbox.extend_from_slice(frame),
            Some(tls) => {
                if tls.writer().write_all(frame).is_err() {
                    return false;
                }
                while tls.wants_write() {
                    if tls.write_tls(&mut self.outbox).is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Writes queued bytes until the socket would block; returns whether some remain.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        let mut written = 0;
        while written < self.outbox.len() {
            match self.stream.write(&self.outbox[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outbox.drain(..written);
        Ok(!self.outbox.is_empty())
    }
}

/// Whether a connection has outlived a limit at `now`, and which: half a frame or a setup held
/// too long, or silence without an allocation.
pub(crate) fn overdue(
    limits: &StreamLimits,
    now: Instant,
    last_read: Instant,
    partial_since: Option<Instant>,
    has_allocation: bool,
) -> Option<CloseReason> {
    if partial_since
        .is_some_and(|since| now.saturating_duration_since(since) > limits.frame_timeout)
    {
        return Some(CloseReason::SlowFrame);
    }
    if !has_allocation && now.saturating_duration_since(last_read) > limits.idle_timeout {
        return Some(CloseReason::Idle);
    }
    None
}

#[cfg(test)]
mod tests;
