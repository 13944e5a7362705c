//! The traffic: the client thread, the fixed-rate sender and the echo peer, with batched I/O.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, recvmmsg, sendmmsg};

use crate::messages::{Ident, Templates};
use crate::{BATCH, BUF_LEN, Clock, Window};

/// An outstanding round trip older than this is counted lost and its slot reused.
pub(crate) const LOSS_TIMEOUT_NS: u64 = 250_000_000;
/// RTT histogram: 1 µs buckets up to 100 ms, then one overflow bucket.
const HIST_BUCKETS: usize = 100_001;
/// How often the client thread looks for lost round trips and refills free slots.
pub(crate) const SWEEP_NS: u64 = 20_000_000;

// ---------------------------------------------------------------------------------------------
// The client thread: sends, receives, matches replies to outstanding round trips.

pub(crate) struct Stats {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) late: u64,
    pub(crate) invalid: u64,
    /// Connections the server closed (TCP and TLS) or sessions that ended (DTLS) during the
    /// run.
    pub(crate) closed: u64,
    hist: Vec<u32>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            sent: 0,
            received: 0,
            late: 0,
            invalid: 0,
            closed: 0,
            hist: vec![0; HIST_BUCKETS],
        }
    }

    /// Adds another client thread's counts and histogram.
    pub(crate) fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.received += other.received;
        self.late += other.late;
        self.invalid += other.invalid;
        self.closed += other.closed;
        for (mine, theirs) in self.hist.iter_mut().zip(&other.hist) {
            *mine += theirs;
        }
    }

    pub(crate) fn record(&mut self, rtt_ns: u64) {
        let us = usize::try_from(rtt_ns / 1_000).unwrap_or(usize::MAX);
        self.hist[us.min(HIST_BUCKETS - 1)] += 1;
        self.received += 1;
    }

    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.received == 0 {
            return None;
        }
        let rank = ((self.received as f64 * q).ceil() as u64).clamp(1, self.received);
        let mut seen = 0u64;
        for (us, &count) in self.hist.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(us as u64);
            }
        }
        None
    }
}

/// Batch buffers and headers for `recvmmsg`/`sendmmsg` on connected sockets.
pub(crate) struct Batch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    recv_headers: MultiHeaders<()>,
    send_headers: MultiHeaders<()>,
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            bufs: vec![0; BATCH * BUF_LEN],
            lens: [0; BATCH],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Receives what is queued on `fd`, up to [`BATCH`] datagrams, without waiting.
    pub(crate) fn recv(&mut self, fd: RawFd) -> nix::Result<usize> {
        let mut chunks = self.bufs.chunks_exact_mut(BUF_LEN);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let results = recvmmsg(
            fd,
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut n = 0;
        for (len, result) in self.lens.iter_mut().zip(results) {
            *len = result.bytes;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn received(&self, i: usize) -> &[u8] {
        &self.bufs[i * BUF_LEN..i * BUF_LEN + self.lens[i].min(BUF_LEN)]
    }

    /// Sends the first `n` received datagrams back where they came from (the echo peer).
    fn echo(&mut self, fd: RawFd, n: usize) -> nix::Result<usize> {
        let (bufs, lens) = (&self.bufs, &self.lens);
        send_many(fd, &mut self.send_headers, n, |i| {
            &bufs[i * BUF_LEN..i * BUF_LEN + lens[i].min(BUF_LEN)]
        })
    }
}

/// One `sendmmsg` of `n` (at most [`BATCH`]) datagrams on a connected socket; returns how many
/// the kernel took.
pub(crate) fn send_many<'b>(
    fd: RawFd,
    headers: &mut MultiHeaders<()>,
    n: usize,
    datagram: impl Fn(usize) -> &'b [u8],
) -> nix::Result<usize> {
    let n = n.min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let iovs: [[IoSlice<'b>; 1]; BATCH] =
        std::array::from_fn(|i| [IoSlice::new(if i < n { datagram(i) } else { &[] })]);
    let addrs = [None::<()>; BATCH];
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let results = sendmmsg(
        fd,
        headers,
        &iovs[..n],
        &addrs[..n],
        cmsgs,
        MsgFlags::empty(),
    )?;
    Ok(results.count())
}

/// The per-slot datagrams of the saturated mode: `W` copies of each allocation's template, so
/// that one `sendmmsg` can carry a whole window.
struct SlotBuffers {
    window: usize,
    bufs: Vec<Vec<u8>>,
    /// Send time of the round trip outstanding in each slot, 0 when free.
    outstanding: Vec<u64>,
}

/// The client thread: receives the replies on every client socket, matches them to their round
/// trips and, in the saturated mode, keeps every allocation's window full. Runs until `stop_at`.
pub(crate) fn client_loop(
    sockets: &[UdpSocket],
    templates: &Templates,
    clock: &Clock,
    saturated: bool,
    window_size: usize,
    window: Window,
    stop_at: u64,
) -> Result<Stats> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, socket) in sockets.iter().enumerate() {
        epoll.add(socket, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); sockets.len().min(256)];
    let mut batch = Batch::new();
    let mut stats = Stats::new();
    let w = if saturated { window_size } else { 0 };
    let mut slots = SlotBuffers {
        window: w,
        bufs: (0..sockets.len() * w)
            .map(|k| templates.datagrams[k / w.max(1)].clone())
            .collect(),
        outstanding: vec![0; sockets.len() * w],
    };
    if saturated {
        for a in 0..sockets.len() {
            refill(
                &mut slots, &mut batch, sockets, templates, clock, a, window, &mut stats,
            )?;
        }
    }
    let mut next_sweep = clock.now_ns() + SWEEP_NS;
    loop {
        let now = clock.now_ns();
        if now >= stop_at {
            break;
        }
        let sending = now < window.end;
        let ready = wait_ready(&epoll, &mut events, 5)?;
        for event in &events[..ready] {
            let a = usize::try_from(event.data()).unwrap_or(usize::MAX);
            let Some(socket) = sockets.get(a) else {
                continue;
            };
            let n = match batch.recv(socket.as_raw_fd()) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(error) => return Err(error.into()),
            };
            let now = clock.now_ns();
            let mut freed = 0;
            for i in 0..n {
                let Some(ident) = templates.reply(batch.received(i)) else {
                    stats.invalid += 1;
                    continue;
                };
                if usize::from(ident.alloc) != a {
                    stats.invalid += 1;
                    continue;
                }
                if !saturated {
                    if window.contains(ident.ts) {
                        stats.record(now.saturating_sub(ident.ts));
                    }
                    continue;
                }
                let slot = usize::from(ident.slot);
                if slot >= w {
                    stats.invalid += 1;
                    continue;
                }
                let k = a * w + slot;
                if slots.outstanding[k] != ident.ts {
                    // Counted lost already, or a duplicate.
                    stats.late += 1;
                    continue;
                }
                slots.outstanding[k] = 0;
                freed += 1;
                if window.contains(ident.ts) {
                    stats.record(now.saturating_sub(ident.ts));
                }
            }
            if saturated && sending && freed > 0 {
                refill(
                    &mut slots, &mut batch, sockets, templates, clock, a, window, &mut stats,
                )?;
            }
        }
        let now = clock.now_ns();
        if saturated && now >= next_sweep {
            next_sweep = now + SWEEP_NS;
            expire_lost(&mut slots.outstanding, now);
            if now < window.end {
                for a in 0..sockets.len() {
                    refill(
                        &mut slots, &mut batch, sockets, templates, clock, a, window, &mut stats,
                    )?;
                }
            }
        }
    }
    Ok(stats)
}

/// Sends a round trip in every free slot of allocation `a` with one `sendmmsg`.
#[allow(clippy::too_many_arguments)]
fn refill(
    slots: &mut SlotBuffers,
    batch: &mut Batch,
    sockets: &[UdpSocket],
    templates: &Templates,
    clock: &Clock,
    a: usize,
    window: Window,
    stats: &mut Stats,
) -> Result<()> {
    let w = slots.window;
    let mut free = [0usize; BATCH];
    let mut n = 0;
    for slot in 0..w {
        if slots.outstanding[a * w + slot] == 0 {
            free[n] = slot;
            n += 1;
        }
    }
    if n == 0 {
        return Ok(());
    }
    let ts = clock.now_ns();
    for &slot in &free[..n] {
        let ident = Ident {
            ts,
            alloc: a as u16,
            slot: slot as u16,
        };
        ident.write(&mut slots.bufs[a * w + slot][templates.ident_at..]);
    }
    let bufs = &slots.bufs;
    let sent = match send_many(sockets[a].as_raw_fd(), &mut batch.send_headers, n, |i| {
        &bufs[a * w + free[i]]
    }) {
        Ok(sent) => sent,
        // A full buffer or an ICMP error from an earlier datagram: the sweep retries.
        Err(Errno::EAGAIN | Errno::ECONNREFUSED | Errno::ENOBUFS | Errno::EINTR) => 0,
        Err(error) => return Err(error.into()),
    };
    for &slot in &free[..sent] {
        slots.outstanding[a * w + slot] = ts;
    }
    if window.contains(ts) {
        stats.sent += sent as u64;
    }
    Ok(())
}

/// The fixed-rate sender: round trips spread evenly over time and over the allocations, one
/// `send` each. Returns how many were sent in the measured interval.
pub(crate) fn paced_sender(
    sockets: &[UdpSocket],
    templates: &Templates,
    clock: &Clock,
    rate: u64,
    start: u64,
    window: Window,
) -> Result<u64> {
    let interval_ns = 1e9 / rate as f64;
    let mut bufs = templates.datagrams.clone();
    let mut total: u64 = 0;
    let mut sent_in_window = 0;
    loop {
        let now = clock.now_ns();
        if now >= window.end {
            break;
        }
        let due = (now.saturating_sub(start) as f64 / interval_ns) as u64 + 1;
        // Never more than 10 ms worth at once, should this thread have been descheduled.
        let cap = (rate / 100).max(1);
        if due > total + cap {
            total = due - cap;
        }
        while total < due {
            let a = (total % sockets.len() as u64) as usize;
            let buf = &mut bufs[a];
            Ident {
                ts: now,
                alloc: a as u16,
                slot: 0,
            }
            .write(&mut buf[templates.ident_at..]);
            match sockets[a].send(buf) {
                Ok(_) if window.contains(now) => sent_in_window += 1,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
            total += 1;
        }
        let next = start + ((total as f64) * interval_ns) as u64;
        clock.sleep_until(next.min(window.end));
    }
    Ok(sent_in_window)
}

// ---------------------------------------------------------------------------------------------
// The echo peer: one socket per allocation, connected to its relay address.

pub(crate) fn echo_peer(
    sockets: &[UdpSocket],
    clock: &Clock,
    hard_stop: u64,
    stop: &AtomicBool,
) -> Result<u64> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, socket) in sockets.iter().enumerate() {
        epoll.add(socket, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); sockets.len().min(256)];
    let mut batch = Batch::new();
    let mut echoed = 0u64;
    while !stop.load(Ordering::Relaxed) && clock.now_ns() < hard_stop {
        let ready = wait_ready(&epoll, &mut events, 10)?;
        for event in &events[..ready] {
            let Some(socket) = usize::try_from(event.data())
                .ok()
                .and_then(|i| sockets.get(i))
            else {
                continue;
            };
            let fd = socket.as_raw_fd();
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(error) => return Err(error.into()),
            };
            match batch.echo(fd, n) {
                Ok(sent) => echoed += sent as u64,
                Err(Errno::EAGAIN | Errno::ECONNREFUSED | Errno::ENOBUFS | Errno::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(echoed)
}

/// Waits up to `timeout_ms` for readiness; the number of `events` filled, 0 when a signal
/// cut the wait short.
pub(crate) fn wait_ready(
    epoll: &Epoll,
    events: &mut [EpollEvent],
    timeout_ms: u16,
) -> Result<usize> {
    match epoll.wait(events, EpollTimeout::from(timeout_ms)) {
        Ok(n) => Ok(n),
        Err(Errno::EINTR) => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// Frees the slots of round trips outstanding for longer than [`LOSS_TIMEOUT_NS`]: they are
/// lost, and a reply that comes later counts as late.
pub(crate) fn expire_lost(outstanding: &mut [u64], now: u64) {
    for ts in outstanding {
        if *ts != 0 && now.saturating_sub(*ts) > LOSS_TIMEOUT_NS {
            *ts = 0;
        }
    }
}

/// The round trips outstanding on one client thread's connections (TCP, TLS) or sessions
/// (DTLS).
pub(crate) struct Slots {
    /// The allocation index of the thread's first connection.
    pub(crate) first: usize,
    /// Slots per connection.
    pub(crate) w: usize,
    /// Send time of the round trip outstanding in each slot (connection × slot), 0 when free.
    pub(crate) outstanding: Vec<u64>,
    pub(crate) window: Window,
}

impl Slots {
    /// Accounts for one frame or record received on connection `a`; returns 1 if it freed a slot.
    pub(crate) fn reply(
        &mut self,
        templates: &Templates,
        record: &[u8],
        a: usize,
        now: u64,
        stats: &mut Stats,
    ) -> usize {
        let Some(ident) = templates.reply(record) else {
            stats.invalid += 1;
            return 0;
        };
        let slot = usize::from(ident.slot);
        if usize::from(ident.alloc) != self.first + a || slot >= self.w {
            stats.invalid += 1;
            return 0;
        }
        let k = a * self.w + slot;
        if self.outstanding[k] != ident.ts {
            // Counted lost already, or a duplicate.
            stats.late += 1;
            return 0;
        }
        self.outstanding[k] = 0;
        if self.window.contains(ident.ts) {
            stats.record(now.saturating_sub(ident.ts));
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut stats = Stats::new();
        assert_eq!(stats.quantile(0.5), None);
        for us in 1..=100u64 {
            stats.record(us * 1_000 + 500);
        }
        stats.record(u64::MAX);
        assert_eq!(stats.quantile(0.5), Some(51));
        assert_eq!(stats.quantile(0.99), Some(100));
        assert_eq!(stats.quantile(1.0), Some(HIST_BUCKETS as u64 - 1));

        let mut total = Stats::new();
        total.merge(&stats);
        total.merge(&stats);
        assert_eq!(total.received, 202);
        assert_eq!(total.quantile(0.5), Some(51));
    }
}
