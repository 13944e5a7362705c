//! Many datagrams per system call where the kernel offers it: `recvmmsg` to receive, and
//! `sendmmsg` to send what one received batch produced.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto,
};
use tracing::debug;

/// Datagrams received per system call at most.
pub(crate) const BATCH: usize = 32;
/// Free bytes before each datagram: the room the TURN core needs to write a ChannelData header
/// in place.
pub(crate) use icebreaker_turn::PEER_HEADROOM as HEADROOM;
/// Room for the largest UDP payload, the headroom before it and stream padding after it.
const SLOT: usize = HEADROOM + 65_536 + 4;

/// Buffers and headers for one `recvmmsg`, reused for every call.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    headers: MultiHeaders<SockaddrStorage>,
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            sources: [None; BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Receives what is queued on `fd`, up to [`BATCH`] datagrams, without waiting; returns
    /// how many. `Ok(0)` when nothing is queued.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut slots = self.bufs.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            let slot = slots.next().unwrap_or_default();
            [IoSliceMut::new(
                slot.get_mut(HEADROOM..SLOT - 4).unwrap_or_default(),
            )]
        });
        let results = match recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => results,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(errno) => return Err(errno.into()),
        };
        let mut n = 0;
        for result in results {
            self.lens[n] = result.bytes;
            self.sources[n] = result.address.as_ref().and_then(socket_addr);
            n += 1;
        }
        Ok(n)
    }

    /// Datagram `i` of the last call: its source, and its whole slot with the data at
    /// `HEADROOM..HEADROOM + len`.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        let source = (*self.sources.get(i)?)?;
        let len = self.lens[i];
        let slot = self.bufs.get_mut(i * SLOT..(i + 1) * SLOT)?;
        Some((source, slot, len))
    }
}

/// Datagrams waiting to be sent, copied in as they are produced and sent with one `sendmmsg`
/// per socket and [`BATCH`] datagrams when flushed. Order is kept per socket.
pub(crate) struct SendQueue {
    data: Vec<u8>,
    entries: Vec<Entry>,
    headers: MultiHeaders<SockaddrStorage>,
}

#[derive(Clone, Copy)]
struct Entry {
    fd: RawFd,
    to: SocketAddr,
    start: usize,
    len: usize,
}

impl SendQueue {
    pub(crate) fn new() -> SendQueue {
        SendQueue {
            data: Vec::with_capacity(BATCH * 2048),
            entries: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Queues `bytes` to be sent on `fd` to `to`.
    pub(crate) fn push(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.entries.push(Entry {
            fd,
            to,
            start,
            len: bytes.len(),
        });
    }

    /// Datagrams queued and not yet sent.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sends everything queued. A datagram the kernel refuses (a full socket buffer, an
    /// unreachable destination) is dropped, as UDP may.
    pub(crate) fn flush(&mut self) {
        // A stable sort groups each socket's datagrams and keeps their order.
        self.entries.sort_by_key(|e| e.fd);
        let mut rest = &self.entries[..];
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take(BATCH)
                .take_while(|e| e.fd == first.fd)
                .count();
            let (group, tail) = rest.split_at(run);
            send_group(&mut self.headers, &self.data, group);
            rest = tail;
        }
        self.entries.clear();
        self.data.clear();
    }
}

/// Sends a group of at most [`BATCH`] datagrams, all on one socket: one `sendto` for a lone
/// datagram (cheaper than a one-entry `sendmmsg`), else `sendmmsg`, resumed where the kernel
/// stopped until it refuses outright.
fn send_group(headers: &mut MultiHeaders<SockaddrStorage>, data: &[u8], group: &[Entry]) {
    let bytes = |e: &Entry| &data[e.start..e.start + e.len];
    if let [only] = group {
        if let Err(errno) = sendto(
            only.fd,
            bytes(only),
            &SockaddrStorage::from(only.to),
            MsgFlags::MSG_DONTWAIT,
        ) {
            debug!(to = %only.to, %errno, "send failed");
        }
        return;
    }
    let mut sent = 0;
    while sent < group.len() {
        let pending = &group[sent..group.len().min(sent + BATCH)];
        let fd = pending[0].fd;
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(pending.get(i).map_or(&[][..], bytes))]);
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| pending.get(i).map(|e| SockaddrStorage::from(e.to)));
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let n = pending.len();
        match sendmmsg(
            fd,
            headers,
            &iovs[..n],
            &addrs[..n],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => {
                let done = results.count();
                if done == 0 {
                    return;
                }
                sent += done;
            }
            Err(errno) => {
                // The first datagram could not go: drop it and carry on with the others.
                debug!(to = %pending[0].to, %errno, "send failed");
                if errno == Errno::EAGAIN {
                    return;
                }
                sent += 1;
            }
        }
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = address.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        v6.ip(),
        v6.port(),
        v6.flowinfo(),
        v6.scope_id(),
    )))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn receives_a_burst_with_sources_and_headroom() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_nonblocking(true).expect("non-blocking");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = server.local_addr().expect("bound");
        for i in 0..40u8 {
            a.send_to(&[i; 10], to).expect("send");
        }
        let mut batch = RecvBatch::new();
        let first = batch.recv(server.as_raw_fd()).expect("recvmmsg");
        assert_eq!(first, BATCH);
        let (source, slot, len) = batch.get_mut(3).expect("datagram 3");
        assert_eq!(source, a.local_addr().expect("bound"));
        assert_eq!(&slot[HEADROOM..HEADROOM + len], &[3; 10]);
        assert_eq!(batch.recv(server.as_raw_fd()).expect("recvmmsg"), 8);
        assert_eq!(
            batch.recv(server.as_raw_fd()).expect("recvmmsg"),
            0,
            "drained"
        );
    }

    #[test]
    fn a_queue_sends_in_order_per_socket_with_one_flush() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let to = sink.local_addr().expect("bound");
        let mut queue = SendQueue::new();
        for i in 0..40u8 {
            let from = if i % 3 == 0 { &b } else { &a };
            queue.push(from.as_raw_fd(), to, &[i; 5]);
        }
        assert_eq!(queue.len(), 40);
        queue.flush();
        assert_eq!(queue.len(), 0);
        let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 16];
        for _ in 0..40 {
            let (n, from) = sink.recv_from(&mut buf).expect("all 40 arrive");
            assert_eq!(n, 5);
            if from == b.local_addr().expect("bound") {
                from_b.push(buf[0]);
            } else {
                from_a.push(buf[0]);
            }
        }
        let expected_b: Vec<u8> = (0..40).filter(|i| i % 3 == 0).collect();
        let expected_a: Vec<u8> = (0..40).filter(|i| i % 3 != 0).collect();
        assert_eq!(
            (from_a, from_b),
            (expected_a, expected_b),
            "order kept per socket"
        );
    }
}
