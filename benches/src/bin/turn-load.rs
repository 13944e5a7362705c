//! `turn-load`: a load generator for STUN/TURN servers over UDP on loopback.
//!
//! It makes `--allocations` TURN allocations (Allocate with the 401/NONCE exchange and
//! long-term credentials, CreatePermission, ChannelBind), each relaying to its own socket of an
//! in-process UDP echo peer, then drives round trips through the server: client → server →
//! relay → echo peer → relay → server → client, as ChannelData (`--mode channel`) or
//! Send/Data indications (`--mode send`). `--mode binding` sends STUN Binding requests instead.
//! Either every allocation keeps `--window` round trips outstanding (saturated), or the
//! generator sends `--rate` round trips per second in total.
//!
//! Every datagram carries its send time, allocation and slot (in the payload, or in the
//! transaction ID for Binding), so the RTT is measured per round trip. The server's CPU time
//! is read from `/proc/PID/stat` (utime + stime, every thread) at the start and the end of the
//! measured interval.
//!
//! I/O: one client thread serves every client socket and one echo thread every echo socket,
//! each with a level-triggered epoll, `recvmmsg` and `sendmmsg` through `nix` (one syscall for
//! up to 64 datagrams); the sockets are `connect`ed, so no address is copied per datagram. In
//! `--rate` mode a third thread paces the sends with one `send` per datagram.
//!
//! `--report FILE` prints a comparison table from the `--json` lines of several runs.
//! See `benches/README.md`.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use icebreaker_wire::attr::{
    Data, ErrorCodeAttribute, Lifetime, Nonce, Realm, RequestedTransport, Username, XorPeerAddress,
    XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    ChannelNumber, Class, ErrorCode, IntegrityKey, Message, MessageType, MessageWriter, Method,
    TransactionId, WriteError,
};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, recvmmsg, sendmmsg, setsockopt, sockopt,
};
use serde_json::{Value, json};

/// Datagrams per `recvmmsg`/`sendmmsg`, and the largest window.
const BATCH: usize = 64;
/// Room for one received datagram: the largest payload plus a Data indication's header.
const BUF_LEN: usize = 2048;
/// Payload sizes accepted: room for the identification, and no IP fragmentation anywhere.
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 1400;
/// Marks the generator's payloads, after the 12 identification bytes.
const MAGIC: [u8; 4] = *b"IBLG";
const IDENT_LEN: usize = 12;
/// An outstanding round trip older than this is counted lost and its slot reused.
const LOSS_TIMEOUT_NS: u64 = 250_000_000;
/// After the measured interval: time for the round trips in flight to come back.
const DRAIN: Duration = Duration::from_millis(300);
/// Hard limit of `--duration`.
const MAX_DURATION: f64 = 60.0;
/// Whole setup (allocations, permissions, channels) and teardown limits.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Socket buffers asked for; the kernel caps them at `net.core.[rw]mem_max`.
const SOCKET_BUFFER: usize = 4 << 20;
/// RTT histogram: 1 µs buckets up to 100 ms, then one overflow bucket.
const HIST_BUCKETS: usize = 100_001;
/// How often the client thread looks for lost round trips and refills free slots.
const SWEEP_NS: u64 = 20_000_000;
/// The one channel of each allocation (channels are per allocation).
const CHANNEL: u16 = 0x4000;

/// Drive ChannelData, Send-indication or Binding round trips through a STUN/TURN server.
#[derive(Parser, Debug)]
#[command(name = "turn-load")]
struct Args {
    /// The server's UDP address (IPv4, loopback).
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Long-term credential user name.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Long-term credential password.
    #[arg(long, default_value = "bench")]
    password: String,
    /// What a round trip is.
    #[arg(long, value_enum, default_value_t = Mode::Channel)]
    mode: Mode,
    /// Allocations (client sockets in binding mode), 1 to 1024.
    #[arg(long, default_value_t = 32)]
    allocations: usize,
    /// Payload bytes per datagram (channel and send modes), 16 to 1400.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Saturated mode: round trips kept outstanding per allocation, 1 to 64.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Fixed-rate mode: round trips per second in total, instead of a window.
    #[arg(long, conflicts_with = "window")]
    rate: Option<u64>,
    /// Seconds measured, at most 60.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before the measured interval, at most 10.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's process ID, to sample its CPU time in /proc/PID/stat.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON line on standard output (and the human line on standard error).
    #[arg(long)]
    json: bool,
    /// The server's name, carried into the JSON line (for --report).
    #[arg(long, default_value = "server")]
    name: String,
    /// The row's name, carried into the JSON line (for --report).
    #[arg(long)]
    row: Option<String>,
    /// Only wait (up to --duration seconds) until the server answers a Binding request.
    #[arg(long)]
    probe: bool,
    /// Print a comparison table from a file of --json lines, and exit.
    #[arg(long, value_name = "FILE")]
    report: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// ChannelData both ways.
    Channel,
    /// Send indications to the server, Data indications back.
    Send,
    /// STUN Binding requests and responses (no allocation).
    Binding,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Channel => "channel",
            Mode::Send => "send",
            Mode::Binding => "binding",
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("turn-load: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let args = Args::parse();
    if let Some(path) = &args.report {
        report(path)?;
        return Ok(ExitCode::SUCCESS);
    }
    ensure!(
        args.duration > 0.0 && args.duration <= MAX_DURATION,
        "--duration must be in (0, {MAX_DURATION}]"
    );
    ensure!(
        (0.0..=10.0).contains(&args.warmup),
        "--warmup must be in [0, 10]"
    );
    ensure!(
        (1..=1024).contains(&args.allocations),
        "--allocations must be 1 to 1024"
    );
    ensure!(
        (MIN_SIZE..=MAX_SIZE).contains(&args.size),
        "--size must be {MIN_SIZE} to {MAX_SIZE}"
    );
    ensure!(
        (1..=BATCH).contains(&args.window),
        "--window must be 1 to {BATCH}"
    );
    ensure!(
        args.rate.is_none_or(|r| (1..=10_000_000).contains(&r)),
        "--rate must be 1 to 10000000"
    );
    ensure!(
        args.server.is_ipv4(),
        "the server address must be IPv4 (loopback)"
    );
    if args.probe {
        let answered = probe(args.server, Duration::from_secs_f64(args.duration))?;
        return Ok(if answered {
            ExitCode::SUCCESS
        } else {
            eprintln!("turn-load: {} did not answer", args.server);
            ExitCode::FAILURE
        });
    }
    let outcome = load(&args)?;
    if args.json {
        eprintln!("{}", outcome.human(&args));
        println!("{}", outcome.to_json(&args));
    } else {
        println!("{}", outcome.human(&args));
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// The measured run.

/// What one run measured.
struct Outcome {
    seconds: f64,
    sent: u64,
    received: u64,
    late: u64,
    invalid: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    max_us: Option<u64>,
    server_cpu_s: Option<f64>,
    generator_cpu_s: f64,
    load_average: String,
}

fn load(args: &Args) -> Result<Outcome> {
    let clock = Clock::new();
    let mut tids = TidGenerator::new();
    let n = args.allocations;

    // Sockets: one client socket per allocation, connected to the server; in the TURN modes one
    // echo socket per allocation, connected to that allocation's relay address once known.
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = udp_socket()?;
        socket
            .connect(args.server)
            .with_context(|| format!("connect to {}", args.server))?;
        clients.push(socket);
    }
    let mut allocations = Vec::new();
    let mut echoes = Vec::new();
    let deadline = Instant::now() + SETUP_TIMEOUT;
    if args.mode != Mode::Binding {
        for (i, socket) in clients.iter().enumerate() {
            let echo = udp_socket()?;
            let echo_addr = echo.local_addr()?;
            let mut allocation = Allocation::new(socket, args, &mut tids, deadline)
                .with_context(|| format!("allocation {i}"))?;
            allocation
                .request(
                    Method::CREATE_PERMISSION,
                    |w| w.add(&XorPeerAddress(echo_addr)),
                    &mut tids,
                    deadline,
                )
                .with_context(|| format!("CreatePermission of allocation {i}"))?;
            if args.mode == Mode::Channel {
                let channel = ChannelNumber::new(CHANNEL).context("channel number")?;
                allocation
                    .request(
                        Method::CHANNEL_BIND,
                        |w| {
                            w.add(&channel)?;
                            w.add(&XorPeerAddress(echo_addr))
                        },
                        &mut tids,
                        deadline,
                    )
                    .with_context(|| format!("ChannelBind of allocation {i}"))?;
            }
            echo.connect(allocation.relay)
                .with_context(|| format!("connect the echo socket to {}", allocation.relay))?;
            echoes.push((echo, echo_addr));
            allocations.push(allocation);
        }
    } else if !probe(args.server, Duration::from_secs(5))? {
        bail!("{} does not answer Binding requests", args.server);
    }
    // Stale setup answers must not be taken for round trips.
    for socket in &clients {
        drain_socket(socket);
    }

    let templates = templates(args, &echoes, &mut tids)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo_sockets: Vec<UdpSocket> = echoes.into_iter().map(|(s, _)| s).collect();

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let start = clock.now_ns();
    let window = Window {
        start: start + as_ns(warmup),
        end: start + as_ns(warmup + duration),
    };
    let stop_at = window.end + as_ns(DRAIN);

    let outcome = thread::scope(|scope| -> Result<Outcome> {
        let echo_stop = stop.clone();
        let echo = if echo_sockets.is_empty() {
            None
        } else {
            let sockets = &echo_sockets;
            let clock = &clock;
            Some(
                thread::Builder::new()
                    .name("echo".into())
                    .spawn_scoped(scope, move || {
                        echo_peer(
                            sockets,
                            clock,
                            stop_at + as_ns(Duration::from_secs(1)),
                            &echo_stop,
                        )
                    })?,
            )
        };
        let sender = match args.rate {
            Some(rate) => {
                let (clients, templates, clock) = (&clients, &templates, &clock);
                Some(
                    thread::Builder::new()
                        .name("sender".into())
                        .spawn_scoped(scope, move || {
                            paced_sender(clients, templates, clock, rate, start, window)
                        })?,
                )
            }
            None => None,
        };
        let client = {
            let (clients, templates, clock) = (&clients, &templates, &clock);
            let saturated = args.rate.is_none();
            let slots = args.window;
            thread::Builder::new()
                .name("client".into())
                .spawn_scoped(scope, move || {
                    client_loop(clients, templates, clock, saturated, slots, window, stop_at)
                })?
        };

        // CPU samples at both ends of the measured interval (the end after the drain, so that
        // the work on the last round trips is counted).
        clock.sleep_until(window.start);
        let server_before = args.pid.map(cpu_ticks).transpose()?;
        let self_before = cpu_ticks(std::process::id())?;
        clock.sleep_until(stop_at);
        let server_after = args.pid.map(cpu_ticks).transpose()?;
        let self_after = cpu_ticks(std::process::id())?;
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();

        let stats = join(client)??;
        let paced_sent = match sender {
            Some(handle) => Some(join(handle)??),
            None => None,
        };
        stop.store(true, Ordering::Relaxed);
        if let Some(handle) = echo {
            join(handle)??;
        }
        let tick = clock_tick()?;
        let ticks = |a: u64, b: u64| b.saturating_sub(a) as f64 / tick;
        Ok(Outcome {
            seconds: duration.as_secs_f64(),
            sent: paced_sent.unwrap_or(stats.sent),
            received: stats.received,
            late: stats.late,
            invalid: stats.invalid,
            p50_us: stats.quantile(0.50),
            p99_us: stats.quantile(0.99),
            max_us: stats.quantile(1.0),
            server_cpu_s: server_before.zip(server_after).map(|(a, b)| ticks(a, b)),
            generator_cpu_s: ticks(self_before, self_after),
            load_average,
        })
    })?;

    // Free the allocations (best effort), so that repeated runs do not fill the user's quota.
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    for allocation in &mut allocations {
        drain_socket(allocation.socket);
        let _ = allocation.request(
            Method::REFRESH,
            |w| w.add(&Lifetime(0)),
            &mut tids,
            deadline.min(Instant::now() + Duration::from_millis(300)),
        );
    }
    Ok(outcome)
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a generator thread panicked"))
}

/// The measured interval, in the generator's clock.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Window {
    fn contains(&self, ts: u64) -> bool {
        (self.start..self.end).contains(&ts)
    }
}

/// Nanoseconds since the generator started: what the datagrams carry.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn now_ns(&self) -> u64 {
        // Never 0, which marks a free slot.
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX) | 1
    }

    fn sleep_until(&self, ns: u64) {
        let now = self.now_ns();
        if ns > now {
            thread::sleep(Duration::from_nanos(ns - now));
        }
    }
}

fn as_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Datagrams: templates, identification, replies.

/// Where a datagram came from: its send time, allocation and window slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ident {
    ts: u64,
    alloc: u16,
    slot: u16,
}

impl Ident {
    fn write(self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.ts.to_le_bytes());
        out[8..10].copy_from_slice(&self.alloc.to_le_bytes());
        out[10..12].copy_from_slice(&self.slot.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Ident> {
        let b: &[u8; IDENT_LEN] = bytes.first_chunk()?;
        Some(Ident {
            ts: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            alloc: u16::from_le_bytes([b[8], b[9]]),
            slot: u16::from_le_bytes([b[10], b[11]]),
        })
    }

    /// The identification at the start of a payload the generator wrote.
    fn from_payload(data: &[u8]) -> Option<Ident> {
        if data.get(IDENT_LEN..IDENT_LEN + MAGIC.len())? != MAGIC {
            return None;
        }
        Ident::read(data)
    }
}

/// One datagram per allocation, ready to send but for the identification at `ident_at`.
struct Templates {
    mode: Mode,
    datagrams: Vec<Vec<u8>>,
    ident_at: usize,
}

fn templates(
    args: &Args,
    echoes: &[(UdpSocket, SocketAddr)],
    tids: &mut TidGenerator,
) -> Result<Templates> {
    let mut payload = vec![0xA5u8; args.size];
    payload[IDENT_LEN..IDENT_LEN + MAGIC.len()].copy_from_slice(&MAGIC);
    let mut datagrams = Vec::with_capacity(args.allocations);
    let mut ident_at = 0;
    for i in 0..args.allocations {
        let mut buf = vec![0u8; BUF_LEN];
        let len = match args.mode {
            Mode::Channel => {
                let channel = ChannelNumber::new(CHANNEL).context("channel number")?;
                ident_at = icebreaker_wire::CHANNEL_DATA_HEADER_LEN;
                icebreaker_wire::write_channel_data(
                    &mut buf,
                    channel,
                    &payload,
                    icebreaker_wire::Transport::Datagram,
                )?
            }
            Mode::Send => {
                let (_, echo) = echoes.get(i).context("an echo socket per allocation")?;
                let kind = MessageType::new(Method::SEND, Class::Indication);
                let mut w = MessageWriter::new(&mut buf, kind, tids.next())?;
                w.add(&XorPeerAddress(*echo))?;
                w.add(&Data(&payload))?;
                let len = w.finish();
                // DATA is last: its value ends the message, before its padding.
                ident_at = len - args.size.next_multiple_of(4);
                len
            }
            Mode::Binding => {
                let kind = MessageType::new(Method::BINDING, Class::Request);
                let len = MessageWriter::new(&mut buf, kind, tids.next())?.finish();
                // The transaction ID carries the identification.
                ident_at = 8;
                len
            }
        };
        buf.truncate(len);
        if args.mode != Mode::Binding {
            ensure!(
                Ident::from_payload(&buf[ident_at..]).is_some(),
                "template: payload not where expected"
            );
        }
        datagrams.push(buf);
    }
    Ok(Templates {
        mode: args.mode,
        datagrams,
        ident_at,
    })
}

impl Templates {
    /// The identification of a reply from the server, if it is one of ours.
    fn reply(&self, datagram: &[u8]) -> Option<Ident> {
        match self.mode {
            Mode::Channel => {
                let (&[first, ..], data) = (datagram, datagram.get(4..)?) else {
                    return None;
                };
                if first & 0xC0 != 0x40 {
                    return None;
                }
                Ident::from_payload(data)
            }
            Mode::Send => {
                let message = Message::parse(datagram).ok()?;
                if message.method() != Method::DATA || message.class() != Class::Indication {
                    return None;
                }
                Ident::from_payload(message.get::<Data>().ok()??.0)
            }
            Mode::Binding => {
                // A Binding success response: type 0x0101.
                if datagram.get(..2)? != [0x01, 0x01] {
                    return None;
                }
                Ident::read(datagram.get(8..20)?)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client thread: sends, receives, matches replies to outstanding round trips.

struct Stats {
    sent: u64,
    received: u64,
    late: u64,
    invalid: u64,
    hist: Vec<u32>,
}

impl Stats {
    fn record(&mut self, rtt_ns: u64) {
        let us = usize::try_from(rtt_ns / 1_000).unwrap_or(usize::MAX);
        self.hist[us.min(HIST_BUCKETS - 1)] += 1;
        self.received += 1;
    }

    fn quantile(&self, q: f64) -> Option<u64> {
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
struct Batch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    recv_headers: MultiHeaders<()>,
    send_headers: MultiHeaders<()>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![0; BATCH * BUF_LEN],
            lens: [0; BATCH],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Receives what is queued on `fd`, up to [`BATCH`] datagrams, without waiting.
    fn recv(&mut self, fd: RawFd) -> nix::Result<usize> {
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

    fn received(&self, i: usize) -> &[u8] {
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
fn send_many<'b>(
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
fn client_loop(
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
    let mut stats = Stats {
        sent: 0,
        received: 0,
        late: 0,
        invalid: 0,
        hist: vec![0; HIST_BUCKETS],
    };
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
        let ready = match epoll.wait(&mut events, EpollTimeout::from(5u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
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
            for ts in &mut slots.outstanding {
                // Lost: the slot is reused; a reply that comes later counts as late.
                if *ts != 0 && now.saturating_sub(*ts) > LOSS_TIMEOUT_NS {
                    *ts = 0;
                }
            }
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
fn paced_sender(
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

fn echo_peer(
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
        let ready = match epoll.wait(&mut events, EpollTimeout::from(10u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
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

// ---------------------------------------------------------------------------------------------
// Setup: sockets, transactions, allocations.

fn udp_socket() -> Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a UDP socket")?;
    // Best effort: the kernel caps both at net.core.[rw]mem_max.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    Ok(socket)
}

/// Throws away whatever is queued on a socket.
fn drain_socket(socket: &UdpSocket) {
    let mut buf = [0u8; BUF_LEN];
    let _ = socket.set_nonblocking(true);
    for _ in 0..100_000 {
        match socket.recv(&mut buf) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
    }
    let _ = socket.set_nonblocking(false);
}

/// Transaction IDs: a xorshift generator seeded from the clock and the process ID.
struct TidGenerator(u64);

impl TidGenerator {
    fn new() -> TidGenerator {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        TidGenerator(nanos ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn next(&mut self) -> TransactionId {
        let (a, b) = (self.next_u64().to_le_bytes(), self.next_u64().to_le_bytes());
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&a);
        id[8..].copy_from_slice(&b[..4]);
        TransactionId::new(id)
    }
}

/// Sends `request` on a connected socket and waits for the response with its transaction ID,
/// retransmitting (100 ms, doubling up to 1 s) until `deadline`. Returns the response's length.
fn transact(
    socket: &UdpSocket,
    request: &[u8],
    tid: TransactionId,
    reply: &mut [u8],
    deadline: Instant,
) -> Result<usize> {
    let mut rto = Duration::from_millis(100);
    while Instant::now() < deadline {
        match socket.send(request) {
            Ok(_) => {}
            // The server is not listening (yet): an ICMP error; retry after the timeout.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(error) => return Err(error).context("send"),
        }
        let resend_at = (Instant::now() + rto).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match socket.recv(reply) {
                Ok(n) if n >= 20 && reply[8..20] == tid.as_bytes()[..] && reply[0] & 0xC0 == 0 => {
                    return Ok(n);
                }
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    thread::sleep(left.min(Duration::from_millis(50)));
                }
                Err(error) => return Err(error).context("receive"),
            }
        }
        rto = (rto * 2).min(Duration::from_secs(1));
    }
    bail!("no answer from the server")
}

/// Waits until the server answers a Binding request, at most `limit`.
fn probe(server: SocketAddr, limit: Duration) -> Result<bool> {
    let socket = udp_socket()?;
    socket.connect(server)?;
    let mut tids = TidGenerator::new();
    let tid = tids.next();
    let mut buf = [0u8; 64];
    let kind = MessageType::new(Method::BINDING, Class::Request);
    let len = MessageWriter::new(&mut buf, kind, tid)?.finish();
    let mut reply = [0u8; BUF_LEN];
    Ok(transact(
        &socket,
        &buf[..len],
        tid,
        &mut reply,
        Instant::now() + limit,
    )
    .is_ok())
}

/// One TURN allocation and its credentials.
struct Allocation<'s> {
    socket: &'s UdpSocket,
    user: String,
    key: IntegrityKey,
    realm: String,
    nonce: String,
    relay: SocketAddr,
}

fn error_code(message: &Message<'_>) -> (u16, String) {
    match message.get::<ErrorCodeAttribute>() {
        Ok(Some(e)) => (e.code.code(), e.reason.to_owned()),
        _ => (0, "no ERROR-CODE".to_owned()),
    }
}

impl<'s> Allocation<'s> {
    /// Allocate: first without credentials, for the 401 with REALM and NONCE, then with them.
    fn new(
        socket: &'s UdpSocket,
        args: &Args,
        tids: &mut TidGenerator,
        deadline: Instant,
    ) -> Result<Allocation<'s>> {
        let mut buf = [0u8; 512];
        let mut reply = vec![0u8; BUF_LEN];
        let tid = tids.next();
        let kind = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut w = MessageWriter::new(&mut buf, kind, tid)?;
        w.add(&RequestedTransport::UDP)?;
        let len = w.finish();
        let n = transact(socket, &buf[..len], tid, &mut reply, deadline)?;
        let message = Message::parse(&reply[..n])?;
        if message.class() != Class::Error {
            bail!("the server allocated without credentials");
        }
        let (code, reason) = error_code(&message);
        ensure!(
            code == ErrorCode::UNAUTHENTICATED.code(),
            "Allocate without credentials: {code} {reason}"
        );
        let realm = message
            .get::<Realm>()?
            .context("401 without REALM")?
            .0
            .to_owned();
        let nonce = message
            .get::<Nonce>()?
            .context("401 without NONCE")?
            .0
            .to_owned();
        let key = IntegrityKey::long_term(KeyAlgorithm::Md5, &args.user, &realm, &args.password);
        let mut allocation = Allocation {
            socket,
            user: args.user.clone(),
            key,
            realm,
            nonce,
            relay: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        };
        let reply = allocation.request(
            Method::ALLOCATE,
            |w| w.add(&RequestedTransport::UDP),
            tids,
            deadline,
        )?;
        let message = Message::parse(&reply)?;
        allocation.relay = message
            .get::<XorRelayedAddress>()?
            .context("Allocate success without XOR-RELAYED-ADDRESS")?
            .0;
        Ok(allocation)
    }

    /// An authenticated request with `attrs`; a 438 (or a 401 with a fresh NONCE) is retried
    /// with the new nonce. Returns the success response.
    fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>) -> Result<(), WriteError>,
        tids: &mut TidGenerator,
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        for _ in 0..3 {
            let tid = tids.next();
            let mut buf = [0u8; 512];
            let kind = MessageType::new(method, Class::Request);
            let mut w = MessageWriter::new(&mut buf, kind, tid)?;
            attrs(&mut w)?;
            w.add(&Username(&self.user))?;
            w.add(&Realm(&self.realm))?;
            w.add(&Nonce(&self.nonce))?;
            w.add_message_integrity(&self.key)?;
            let len = w.finish();
            let mut reply = vec![0u8; BUF_LEN];
            let n = transact(self.socket, &buf[..len], tid, &mut reply, deadline)?;
            reply.truncate(n);
            let message = Message::parse(&reply)?;
            match message.class() {
                Class::Success => return Ok(reply),
                Class::Error => {
                    let (code, reason) = error_code(&message);
                    let fresh = message.get::<Nonce>().ok().flatten();
                    match fresh {
                        Some(Nonce(nonce))
                            if code == ErrorCode::STALE_NONCE.code()
                                || (code == ErrorCode::UNAUTHENTICATED.code()
                                    && nonce != self.nonce) =>
                        {
                            self.nonce = nonce.to_owned();
                        }
                        _ => bail!("{method:?} refused: {code} {reason}"),
                    }
                }
                class => bail!("unexpected {class:?} answer to {method:?}"),
            }
        }
        bail!("{method:?}: the nonce kept going stale")
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time.

/// utime + stime of a process (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is the server running?)"))?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let (_, fields) = stat.rsplit_once(')').context("malformed /proc/PID/stat")?;
    // After ')': state is field 3, utime field 14, stime field 15.
    let mut fields = fields.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        Ok(fields
            .next()
            .context("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    Ok(next()? + next()?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_tick() -> Result<f64> {
    let tick =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK unknown")?;
    ensure!(tick > 0, "CLK_TCK is {tick}");
    Ok(tick as f64)
}

// ---------------------------------------------------------------------------------------------
// Output.

impl Outcome {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / self.sent as f64
        }
    }

    fn rate(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    fn per_rt_us(&self, cpu_s: f64) -> Option<f64> {
        (self.received > 0).then(|| cpu_s * 1e6 / self.received as f64)
    }

    fn to_json(&self, args: &Args) -> Value {
        json!({
            "name": args.name,
            "row": args.row.clone().unwrap_or_else(|| describe(args)),
            "mode": args.mode.name(),
            "size": if args.mode == Mode::Binding { Value::Null } else { json!(args.size) },
            "allocations": args.allocations,
            "window": if args.rate.is_some() { Value::Null } else { json!(args.window) },
            "target_rate": args.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost(),
            "late": self.late,
            "invalid": self.invalid,
            "round_trips_per_s": self.rate(),
            "loss_pct": self.loss_pct(),
            "rtt_p50_us": self.p50_us,
            "rtt_p99_us": self.p99_us,
            "rtt_max_us": self.max_us,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_rt": self.server_cpu_s.and_then(|c| self.per_rt_us(c)),
            "server_cores": self.server_cpu_s.map(|c| c / self.seconds),
            "generator_cpu_s": self.generator_cpu_s,
            "generator_cpu_us_per_rt": self.per_rt_us(self.generator_cpu_s),
            "generator_cores": self.generator_cpu_s / self.seconds,
            "load_average": self.load_average,
        })
    }

    fn human(&self, args: &Args) -> String {
        let us = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let server = match self.server_cpu_s {
            Some(c) => format!(
                "server CPU {:.2} µs/rt ({:.2} cores)",
                self.per_rt_us(c).unwrap_or(f64::NAN),
                c / self.seconds
            ),
            None => "server CPU not sampled (no --pid)".to_owned(),
        };
        format!(
            "{}: {}: {:.0} rt/s, loss {:.3} % ({} of {} sent, {} late, {} invalid), RTT p50 {} µs p99 {} µs, {}, generator CPU {:.2} µs/rt ({:.2} cores), load {}",
            args.name,
            args.row.clone().unwrap_or_else(|| describe(args)),
            self.rate(),
            self.loss_pct(),
            self.lost(),
            self.sent,
            self.late,
            self.invalid,
            us(self.p50_us),
            us(self.p99_us),
            server,
            self.per_rt_us(self.generator_cpu_s).unwrap_or(f64::NAN),
            self.generator_cpu_s / self.seconds,
            self.load_average,
        )
    }
}

fn describe(args: &Args) -> String {
    let what = match args.mode {
        Mode::Binding => "STUN Binding".to_owned(),
        mode => format!("{} {} B", mode.name(), args.size),
    };
    match args.rate {
        Some(rate) => format!("{what}, {rate} rt/s"),
        None => format!("{what}, saturated"),
    }
}

/// Prints a table comparing the servers of a file of `--json` lines: one row per `row`, the
/// servers in the order they first appear, ratios of the first to the second.
fn report(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut names: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value = serde_json::from_str(line).context("a --json line")?;
        let name = value["name"].as_str().unwrap_or("?").to_owned();
        let row = value["row"].as_str().unwrap_or("?").to_owned();
        if !names.contains(&name) {
            names.push(name.clone());
        }
        if !rows.contains(&row) {
            rows.push(row.clone());
        }
        cells.insert((row, name), value);
    }
    ensure!(!names.is_empty(), "no results in {}", path.display());
    let (a, b) = (names[0].clone(), names.get(1).cloned().unwrap_or_default());
    let get = |row: &str, name: &str, key: &str| -> Option<f64> {
        cells
            .get(&(row.to_owned(), name.to_owned()))
            .and_then(|v| v[key].as_f64())
    };
    let fmt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
        _ => "-".to_owned(),
    };
    println!(
        "| row | {a} rt/s | {b} rt/s | rt/s {a}/{b} | {a} CPU µs/rt | {b} CPU µs/rt | CPU/rt {a}/{b} | {a} loss % | {b} loss % | {a} p50/p99 µs | {b} p50/p99 µs | {a} cores | {b} cores |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let rate = |n: &str| get(row, n, "round_trips_per_s");
        let cpu = |n: &str| get(row, n, "server_cpu_us_per_rt");
        let loss = |n: &str| get(row, n, "loss_pct");
        let rtt = |n: &str| {
            format!(
                "{}/{}",
                fmt(get(row, n, "rtt_p50_us"), 0),
                fmt(get(row, n, "rtt_p99_us"), 0)
            )
        };
        let cores = |n: &str| get(row, n, "server_cores");
        println!(
            "| {row} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(rate(&a), 0),
            fmt(rate(&b), 0),
            ratio(rate(&a), rate(&b)),
            fmt(cpu(&a), 2),
            fmt(cpu(&b), 2),
            ratio(cpu(&a), cpu(&b)),
            fmt(loss(&a), 3),
            fmt(loss(&b), 3),
            rtt(&a),
            rtt(&b),
            fmt(cores(&a), 2),
            fmt(cores(&b), 2),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_round_trips_through_a_payload() {
        let mut payload = [0u8; 32];
        payload[IDENT_LEN..IDENT_LEN + 4].copy_from_slice(&MAGIC);
        let ident = Ident {
            ts: 0x0102_0304_0506_0708,
            alloc: 31,
            slot: 7,
        };
        ident.write(&mut payload);
        assert_eq!(Ident::from_payload(&payload), Some(ident));
        payload[IDENT_LEN] ^= 1;
        assert_eq!(Ident::from_payload(&payload), None);
    }

    #[test]
    fn replies_are_recognised_in_every_mode() -> Result<()> {
        let mut payload = vec![0u8; 100];
        payload[IDENT_LEN..IDENT_LEN + 4].copy_from_slice(&MAGIC);
        let ident = Ident {
            ts: 99,
            alloc: 3,
            slot: 1,
        };
        ident.write(&mut payload);
        let templates = |mode| Templates {
            mode,
            datagrams: Vec::new(),
            ident_at: 0,
        };

        let mut buf = [0u8; 256];
        let channel = ChannelNumber::new(CHANNEL).context("channel")?;
        let n = icebreaker_wire::write_channel_data(
            &mut buf,
            channel,
            &payload,
            icebreaker_wire::Transport::Datagram,
        )?;
        assert_eq!(templates(Mode::Channel).reply(&buf[..n]), Some(ident));

        let kind = MessageType::new(Method::DATA, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, kind, TransactionId::new([7; 12]))?;
        w.add(&XorPeerAddress("127.0.0.1:9".parse()?))?;
        w.add(&Data(&payload))?;
        let n = w.finish();
        assert_eq!(templates(Mode::Send).reply(&buf[..n]), Some(ident));
        assert_eq!(templates(Mode::Channel).reply(&buf[..n]), None);

        let mut tid = [0u8; 12];
        ident.write(&mut tid);
        let kind = MessageType::new(Method::BINDING, Class::Success);
        let n = MessageWriter::new(&mut buf, kind, TransactionId::new(tid))?.finish();
        assert_eq!(templates(Mode::Binding).reply(&buf[..n]), Some(ident));
        Ok(())
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut stats = Stats {
            sent: 0,
            received: 0,
            late: 0,
            invalid: 0,
            hist: vec![0; HIST_BUCKETS],
        };
        assert_eq!(stats.quantile(0.5), None);
        for us in 1..=100u64 {
            stats.record(us * 1_000 + 500);
        }
        stats.record(u64::MAX);
        assert_eq!(stats.quantile(0.5), Some(51));
        assert_eq!(stats.quantile(0.99), Some(100));
        assert_eq!(stats.quantile(1.0), Some(HIST_BUCKETS as u64 - 1));
    }

    #[test]
    fn reads_its_own_cpu_time() -> Result<()> {
        let before = cpu_ticks(std::process::id())?;
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks(std::process::id())? >= before);
        assert!(clock_tick()? > 0.0);
        Ok(())
    }
}
