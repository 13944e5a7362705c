//! A peer connection and its client data connection, spliced: two bounded buffers, and the
//! passing on of each side's end.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use icebreaker_turn::{ConnectionId, FiveTuple};
use mio::net::TcpStream;

use crate::metrics::{Direction, WorkerMetrics};
use crate::stream::{Link, PlainRead};

/// Bytes buffered each way between a peer connection and its data connection; also the most
/// a peer connection sends before its ConnectionBind that is kept (then it is not read).
pub(super) const PIPE_BUFFER: usize = 64 * 1024;
/// Bytes one pair may move per wakeup before the other connections get their turn.
const PUMP_BUDGET: usize = 1 << 20;
/// A client data connection, spliced with a peer connection.
pub(super) struct DataConnection {
    pub(super) link: Link<TcpStream>,
    pub(super) five_tuple: FiveTuple,
}

/// A peer connection, and once bound its data connection.
pub(super) struct Pair {
    pub(super) id: ConnectionId,
    pub(super) peer: TcpStream,
    /// A Connect's connection, not established yet.
    pub(super) connecting: bool,
    pub(super) client: Option<DataConnection>,
    /// What the peer sent before the ConnectionBind.
    pub(super) early: Vec<u8>,
    /// What the client sent that the peer has not taken yet.
    pub(super) to_peer: Vec<u8>,
    /// The peer sent its FIN.
    pub(super) peer_done: bool,
    /// The client sent its FIN or close_notify.
    pub(super) client_done: bool,
    /// The FIN towards the peer is sent.
    pub(super) peer_shut: bool,
    /// The close_notify towards a TLS client is queued.
    pub(super) client_notified: bool,
    /// The FIN towards the client is sent.
    pub(super) client_shut: bool,
}

/// What a round of [`Pair::pump`] came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Nothing more to do until a socket is ready.
    Idle,
    /// The budget ran out with bytes still flowing.
    Again,
    /// Both directions ended, everything delivered.
    Done,
    /// The peer connection failed (reset, refused write).
    PeerFailed,
    /// The data connection failed.
    ClientFailed,
}

impl Pair {
    pub(super) fn new(id: ConnectionId, peer: TcpStream, connecting: bool) -> Pair {
        Pair {
            id,
            peer,
            connecting,
            client: None,
            early: Vec::new(),
            to_peer: Vec::new(),
            peer_done: false,
            client_done: false,
            peer_shut: false,
            client_notified: false,
            client_shut: false,
        }
    }

    /// Moves what both sides can give and take, up to the budget.
    pub(super) fn pump(&mut self, scratch: &mut [u8], metrics: &WorkerMetrics) -> Pumped {
        let mut total = 0;
        loop {
            let mut moved = 0;
            // Client to peer.
            if let Some(client) = self.client.as_mut()
                && !self.client_done
                && self.to_peer.len() < PIPE_BUFFER
            {
                let before = self.to_peer.len();
                let read = client
                    .link
                    .read_plain(&mut self.to_peer, PIPE_BUFFER, scratch);
                let n = self.to_peer.len() - before;
                if n > 0 {
                    metrics.tcp_relayed(Direction::ClientToPeer, n);
                    moved += n;
                }
                match read {
                    PlainRead::Open => {}
                    PlainRead::End => self.client_done = true,
                    PlainRead::Failed => return Pumped::ClientFailed,
                }
            }
            match write_some(&mut self.peer, &mut self.to_peer) {
                Ok(n) => moved += n,
                Err(_) => return Pumped::PeerFailed,
            }
            if self.client_done && self.to_peer.is_empty() && !self.peer_shut {
                self.peer_shut = true;
                // Fails only when the peer is gone, which the next read or write tells.
                let _ = self.peer.shutdown(Shutdown::Write);
            }
            // Peer to client, or to the early buffer before the bind.
            if !self.peer_done {
                let queued = self
                    .client
                    .as_ref()
                    .map_or(self.early.len(), |c| c.link.pending());
                let room = PIPE_BUFFER.saturating_sub(queued).min(scratch.len());
                if room > 0 {
                    match read_some(&mut self.peer, &mut scratch[..room]) {
                        Ok(None) => {}
                        Ok(Some(0)) => self.peer_done = true,
                        Ok(Some(n)) => {
                            moved += n;
                            match self.client.as_mut() {
                                Some(client) => {
                                    if !client.link.send(&scratch[..n], false) {
                                        return Pumped::ClientFailed;
                                    }
                                    metrics.tcp_relayed(Direction::PeerToClient, n);
                                }
                                None => self.early.extend_from_slice(&scratch[..n]),
                            }
                        }
                        Err(_) => return Pumped::PeerFailed,
                    }
                }
            }
            if let Some(client) = self.client.as_mut() {
                if self.peer_done && !self.client_notified && client.link.pending() == 0 {
                    self.client_notified = true;
                    client.link.close_notify();
                }
                let before = client.link.pending();
                if client.link.flush().is_err() {
                    return Pumped::ClientFailed;
                }
                moved += before - client.link.pending();
                if self.client_notified && !self.client_shut && client.link.pending() == 0 {
                    self.client_shut = true;
                    let _ = client.link.stream_mut().shutdown(Shutdown::Write);
                }
            }
            total += moved;
            if moved == 0 {
                break;
            }
            if total >= PUMP_BUDGET {
                return Pumped::Again;
            }
        }
        if self.client.is_some()
            && self.client_done
            && self.peer_done
            && self.peer_shut
            && self.client_shut
        {
            return Pumped::Done;
        }
        Pumped::Idle
    }
}

/// Writes the front of `queue` to `stream` until it would block; returns how much went.
fn write_some(stream: &mut TcpStream, queue: &mut Vec<u8>) -> io::Result<usize> {
    let mut written = 0;
    let result = loop {
        if written == queue.len() {
            break Ok(written);
        }
        match stream.write(&queue[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    queue.drain(..written);
    result
}

/// One read: `Ok(None)` when nothing is waiting, `Ok(Some(0))` at the end of the stream.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::thread;
    use std::time::{Duration, Instant};

    use icebreaker_turn::ClientTransport;

    use super::*;
    use crate::metrics::Metrics;

    /// A connected pair of loopback sockets: the server's end, non-blocking, and the far end.
    fn socket_pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let far = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (near, _) = listener.accept().unwrap();
        near.set_nonblocking(true).unwrap();
        (TcpStream::from_std(near), far)
    }

    /// A bound pair, with the far ends of the peer and the client.
    struct Rig {
        pair: Pair,
        peer: std::net::TcpStream,
        client: std::net::TcpStream,
        scratch: Vec<u8>,
        metrics: WorkerMetrics,
    }

    impl Rig {
        fn new() -> Rig {
            let (peer_near, peer) = socket_pair();
            let (client_near, client) = socket_pair();
            let mut pair = Pair::new(ConnectionId(7), peer_near, false);
            let five_tuple = FiveTuple {
                client: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
                server: SocketAddr::from((Ipv4Addr::LOCALHOST, 2)),
                transport: ClientTransport::Tcp,
            };
            pair.client = Some(DataConnection {
                link: Link::new(client_near, None, false, Instant::now()),
                five_tuple,
            });
            Rig {
                pair,
                peer,
                client,
                scratch: vec![0; 16 * 1024],
                metrics: Metrics::new(1).worker(),
            }
        }

        fn pump(&mut self) -> Pumped {
            self.pair.pump(&mut self.scratch, &self.metrics)
        }

        /// Pumps until `done` holds (bytes in flight on loopback take a moment), at most five
        /// seconds; returns the last outcome.
        fn pump_until(&mut self, done: impl Fn(&Pair) -> bool) -> Pumped {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let pumped = self.pump();
                if done(&self.pair) || Instant::now() > deadline {
                    return pumped;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }

        fn queued_to_client(&self) -> usize {
            self.pair.client.as_ref().map_or(0, |c| c.link.pending())
        }
    }

    fn read_exactly(stream: &mut std::net::TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        stream.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn bytes_cross_both_ways() {
        let mut rig = Rig::new();
        rig.peer.write_all(b"from the peer").unwrap();
        rig.client.write_all(b"from the client").unwrap();
        rig.pump_until(|p| p.to_peer.is_empty() && p.client.as_ref().unwrap().link.pending() == 0);
        // Either direction may need another round once the bytes land.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        rig.client.set_nonblocking(true).unwrap();
        while got.len() < 13 && Instant::now() < deadline {
            let mut buf = [0u8; 64];
            if let Ok(n) = rig.client.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            rig.pump();
        }
        assert_eq!(got, b"from the peer");
        assert_eq!(read_exactly(&mut rig.peer, 15), b"from the client");
    }

    #[test]
    fn a_side_that_does_not_read_holds_the_other_back() {
        const SIZE: usize = 32 << 20;
        let mut rig = Rig::new();
        let mut writer_end = rig.peer.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            for _ in 0..SIZE / chunk.len() {
                writer_end.write_all(&chunk).unwrap();
            }
        });
        // The client reads nothing: what the server holds for it stays bounded, and the peer
        // is left blocked by the closed windows.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            rig.pump();
            assert!(rig.queued_to_client() <= PIPE_BUFFER, "bounded");
            thread::sleep(Duration::from_millis(2));
        }
        assert!(!writer.is_finished(), "the peer is held back");
        // Once the client reads, everything arrives, in order.
        let mut reader_end = rig.client.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut offset = 0;
            while offset < SIZE {
                let n = reader_end.read(&mut buf).unwrap();
                assert!(n > 0, "the end came after {offset} bytes");
                for (i, byte) in buf[..n].iter().enumerate() {
                    assert_eq!(*byte, ((offset + i) % (64 * 1024) % 251) as u8);
                }
                offset += n;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reader.is_finished() && Instant::now() < deadline {
            rig.pump();
            assert!(rig.queued_to_client() <= PIPE_BUFFER, "bounded");
        }
        reader.join().unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn an_end_is_passed_on_after_the_data_and_the_pair_finishes_with_both() {
        let mut rig = Rig::new();
        rig.client.write_all(b"request").unwrap();
        rig.client.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|p| p.peer_shut);
        assert_eq!(read_exactly(&mut rig.peer, 7), b"request");
        let mut rest = [0u8; 8];
        assert_eq!(rig.peer.read(&mut rest).unwrap(), 0, "the client's end");
        // The other way still flows.
        rig.peer.write_all(b"response").unwrap();
        rig.peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(rig.pump_until(|p| p.client_shut), Pumped::Done);
        assert_eq!(read_exactly(&mut rig.client, 8), b"response");
        assert_eq!(rig.client.read(&mut rest).unwrap(), 0, "the peer's end");
    }

    #[test]
    fn before_the_bind_the_peer_is_read_no_further_than_the_buffer() {
        let (peer_near, mut peer) = socket_pair();
        let mut pair = Pair::new(ConnectionId(9), peer_near, false);
        peer.write_all(&vec![5u8; 3 * PIPE_BUFFER]).unwrap();
        let (mut scratch, metrics) = (vec![0u8; 16 * 1024], Metrics::new(1).worker());
        let deadline = Instant::now() + Duration::from_secs(5);
        while pair.early.len() < PIPE_BUFFER && Instant::now() < deadline {
            assert_eq!(pair.pump(&mut scratch, &metrics), Pumped::Idle);
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(pair.early.len(), PIPE_BUFFER);
        peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(pair.pump(&mut scratch, &metrics), Pumped::Idle);
        assert!(!pair.peer_done, "its end waits behind the unread bytes");
    }

    #[test]
    fn a_reset_peer_fails_the_pair() {
        let mut rig = Rig::new();
        // Any other socket in its place: the peer's end goes with a reset.
        let peer = std::mem::replace(&mut rig.peer, socket_pair().1);
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pumped = rig.pump();
        while pumped == Pumped::Idle && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
            pumped = rig.pump();
        }
        assert_eq!(
            pumped,
            Pumped::PeerFailed,
            "a reset is a failure, not an end"
        );
    }
}
