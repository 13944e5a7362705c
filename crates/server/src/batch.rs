//! Receiving many datagrams with one system call (`recvmmsg`), where the kernel offers it.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

/// Datagrams received per system call at most.
pub(crate) const BATCH: usize = 32;
/// Free bytes before each datagram, where a ChannelData header can be written in place.
pub(crate) const HEADROOM: usize = 4;
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
}
