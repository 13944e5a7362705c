//! `turn-load`: a load generator for STUN/TURN servers on loopback, over UDP, TCP, TLS or DTLS.
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
//! I/O over UDP: one client thread serves every client socket and one echo thread every echo
//! socket, each with a level-triggered epoll, `recvmmsg` and `sendmmsg` through `nix` (one
//! syscall for up to 64 datagrams); the sockets are `connect`ed, so no address is copied per
//! datagram. In `--rate` mode a third thread paces the sends with one `send` per datagram.
//!
//! Over TCP and TLS (`--transport`), each allocation is its own connection to the server, its
//! messages framed as RFC 8656 §3.1 says; `--stream-threads` client threads share the
//! connections, and the echo peer stays on UDP. See `stream.rs`.
//!
//! Over DTLS, each allocation is its own DTLS session on its own connected UDP socket, one
//! message per record and one record per datagram; losses count as over UDP. The client
//! threads are `--stream-threads` as over TCP. See `dtls.rs`.
//!
//! `--report FILE` prints a comparison table from the `--json` lines of several runs.
//! See `benches/README.md`.

mod dtls;
mod messages;
mod report;
mod setup;
mod stream;
mod traffic;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use icebreaker_wire::attr::{Lifetime, XorPeerAddress};
use icebreaker_wire::{ChannelNumber, Method};

use dtls::{DtlsConn, DtlsConnector, dtls_client_loop};
use messages::{Templates, templates};
use report::{Outcome, clock_tick, cpu_ticks, report};
use setup::{Allocation, Exchange, TidGenerator, binding, drain_socket, probe, udp_socket};
use stream::{Connector, StreamConn, stream_client_loop};
use traffic::{Stats, client_loop, echo_peer, paced_sender};

/// Datagrams per `recvmmsg`/`sendmmsg`, and the largest window.
const BATCH: usize = 64;
/// Room for one received datagram: the largest payload plus a Data indication's header.
const BUF_LEN: usize = 2048;
/// Payload sizes accepted: room for the identification, and no IP fragmentation anywhere.
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 1400;
/// After the measured interval: time for the round trips in flight to come back.
const DRAIN: Duration = Duration::from_millis(300);
/// Hard limit of `--duration`.
const MAX_DURATION: f64 = 60.0;
/// Whole setup (allocations, permissions, channels) and teardown limits.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// The one channel of each allocation (channels are per allocation).
const CHANNEL: u16 = 0x4000;
/// Most client threads over TCP, TLS and DTLS.
const MAX_STREAM_THREADS: usize = 16;

/// Drive ChannelData, Send-indication or Binding round trips through a STUN/TURN server.
#[derive(Parser, Debug)]
#[command(name = "turn-load")]
struct Args {
    /// The server's address (IPv4, loopback): its UDP port, or with --transport its TCP, TLS
    /// or DTLS port.
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// How the clients reach the server: UDP, or one TCP or TLS connection or DTLS session per
    /// allocation. The relayed side (server to echo peer) is UDP in every case.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// TLS and DTLS: a PEM file with the certificate(s) to trust for the server, which must
    /// name the server's IP address (the test certificate itself, or the CA that signed it;
    /// over DTLS, the CA that signed it directly). Required with --transport tls and dtls: the
    /// generator verifies the server as a client would.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// TLS and DTLS: offer only this version (both 1.2 and 1.3 are offered by default).
    #[arg(long, value_enum, value_name = "VERSION")]
    tls_version: Option<TlsVersion>,
    /// TCP, TLS and DTLS: client threads sharing the connections, 1 to 16.
    #[arg(long, default_value_t = 1)]
    stream_threads: usize,
    /// Long-term credential user name.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Long-term credential password.
    #[arg(long, default_value = "bench")]
    password: String,
    /// What a round trip is.
    #[arg(long, value_enum, default_value_t = Mode::Channel)]
    mode: Mode,
    /// Allocations (client sockets or connections in binding mode), 1 to 1024.
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

/// How the clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// One UDP socket per allocation.
    Udp,
    /// One TCP connection per allocation.
    Tcp,
    /// One TLS connection per allocation (rustls, ALPN stun.turn).
    Tls,
    /// One DTLS session per allocation, each on its own UDP socket (dimpl).
    Dtls,
}

/// A TLS or DTLS version to offer alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TlsVersion {
    /// TLS or DTLS 1.2.
    #[value(name = "1.2")]
    V1_2,
    /// TLS or DTLS 1.3.
    #[value(name = "1.3")]
    V1_3,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }

    /// How ChannelData is written: padded to 4 bytes over a stream, not over DTLS, whose
    /// records are datagrams.
    fn framing(self) -> icebreaker_wire::Transport {
        match self {
            Transport::Udp | Transport::Dtls => icebreaker_wire::Transport::Datagram,
            Transport::Tcp | Transport::Tls => icebreaker_wire::Transport::Stream,
        }
    }
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
    ensure!(
        (1..=MAX_STREAM_THREADS).contains(&args.stream_threads),
        "--stream-threads must be 1 to {MAX_STREAM_THREADS}"
    );
    let secured = matches!(args.transport, Transport::Tls | Transport::Dtls);
    ensure!(
        secured == args.ca.is_some(),
        "--ca is required with --transport tls and dtls, and only there"
    );
    ensure!(
        args.tls_version.is_none() || secured,
        "--tls-version is for --transport tls and dtls"
    );
    ensure!(
        args.transport == Transport::Udp || args.rate.is_none(),
        "--rate is for --transport udp only; over TCP, TLS and DTLS use --window"
    );
    if args.probe {
        let limit = Duration::from_secs_f64(args.duration);
        let deadline = Instant::now() + limit;
        // Over the secured transports the reason is worth telling: a certificate refused looks
        // the same as a server not up from the outside.
        let answered = match args.transport {
            Transport::Udp if probe(args.server, limit)? => Ok(()),
            Transport::Udp => Err(anyhow::anyhow!("no answer over UDP")),
            Transport::Tcp | Transport::Tls => {
                Connector::new(&args)?
                    .connect(deadline)
                    .and_then(|mut conn| {
                        let answered = binding(&mut conn, &mut TidGenerator::new(), deadline);
                        conn.close();
                        answered
                    })
            }
            Transport::Dtls => DtlsConnector::new(&args)?
                .connect(deadline)
                .and_then(|mut conn| {
                    let answered = binding(&mut conn, &mut TidGenerator::new(), deadline);
                    conn.close();
                    answered
                }),
        };
        return Ok(match answered {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("turn-load: {} did not answer: {error:#}", args.server);
                ExitCode::FAILURE
            }
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

fn load(args: &Args) -> Result<Outcome> {
    let clock = Clock::new();
    let mut tids = TidGenerator::new();
    let n = args.allocations;
    let deadline = Instant::now() + SETUP_TIMEOUT;

    // Client side: one UDP socket connected to the server, or one TCP or TLS connection, or
    // one DTLS session, per allocation.
    let mut clients = match args.transport {
        Transport::Udp => {
            let mut sockets = Vec::with_capacity(n);
            for _ in 0..n {
                let socket = udp_socket()?;
                socket
                    .connect(args.server)
                    .with_context(|| format!("connect to {}", args.server))?;
                sockets.push(socket);
            }
            Clients::Udp(sockets)
        }
        Transport::Tcp | Transport::Tls => {
            let connector = Connector::new(args)?;
            let conns = (0..n).map(|i| {
                let conn = connector.connect(deadline);
                conn.with_context(|| format!("connection {i}"))
            });
            Clients::Stream(conns.collect::<Result<_>>()?)
        }
        Transport::Dtls => {
            let connector = DtlsConnector::new(args)?;
            let conns = (0..n).map(|i| {
                let conn = connector.connect(deadline);
                conn.with_context(|| format!("DTLS session {i}"))
            });
            Clients::Dtls(conns.collect::<Result<_>>()?)
        }
    };
    // In the TURN modes, one echo socket per allocation, connected to that allocation's relay
    // address once known.
    let mut allocations = Vec::new();
    let mut echoes = Vec::new();
    if args.mode != Mode::Binding {
        for i in 0..n {
            let (allocation, echo) = match &mut clients {
                Clients::Udp(sockets) => set_up(&mut sockets[i], args, &mut tids, deadline),
                Clients::Stream(conns) => set_up(&mut conns[i], args, &mut tids, deadline),
                Clients::Dtls(conns) => set_up(&mut conns[i], args, &mut tids, deadline),
            }
            .with_context(|| format!("allocation {i}"))?;
            echoes.push(echo);
            allocations.push(allocation);
        }
    } else {
        match &mut clients {
            Clients::Udp(_) => {
                if !probe(args.server, Duration::from_secs(5))? {
                    bail!("{} does not answer Binding requests", args.server);
                }
            }
            Clients::Stream(conns) => {
                for (i, conn) in conns.iter_mut().enumerate() {
                    binding(conn, &mut tids, deadline)
                        .with_context(|| format!("Binding on connection {i}"))?;
                }
            }
            Clients::Dtls(conns) => {
                for (i, conn) in conns.iter_mut().enumerate() {
                    binding(conn, &mut tids, deadline)
                        .with_context(|| format!("Binding on DTLS session {i}"))?;
                }
            }
        }
    }
    // Stale setup answers must not be taken for round trips (a stream has none left over: its
    // answers were read in order).
    match &mut clients {
        Clients::Udp(sockets) => {
            for socket in sockets {
                drain_socket(socket);
            }
        }
        Clients::Dtls(conns) => {
            for conn in conns {
                conn.discard_pending();
            }
        }
        Clients::Stream(_) => {}
    }
    let tls = match &clients {
        Clients::Stream(conns) => conns.first().and_then(StreamConn::tls_description),
        Clients::Dtls(conns) => conns.first().map(DtlsConn::description),
        Clients::Udp(_) => None,
    };

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
        let mut sender = None;
        let mut client_threads = Vec::new();
        let share = Share {
            templates: &templates,
            clock: &clock,
            slots: args.window,
            window,
            stop_at,
        };
        match &mut clients {
            Clients::Udp(sockets) => {
                let (sockets, templates, clock) = (&*sockets, &templates, &clock);
                if let Some(rate) = args.rate {
                    sender = Some(
                        thread::Builder::new()
                            .name("sender".into())
                            .spawn_scoped(scope, move || {
                                paced_sender(sockets, templates, clock, rate, start, window)
                            })?,
                    );
                }
                let saturated = args.rate.is_none();
                let slots = args.window;
                client_threads.push(thread::Builder::new().name("client".into()).spawn_scoped(
                    scope,
                    move || {
                        client_loop(sockets, templates, clock, saturated, slots, window, stop_at)
                    },
                )?);
            }
            Clients::Stream(conns) => client_threads.extend(spawn_shares(
                scope,
                conns,
                args.stream_threads,
                share,
                stream_client_loop,
            )?),
            Clients::Dtls(conns) => client_threads.extend(spawn_shares(
                scope,
                conns,
                args.stream_threads,
                share,
                dtls_client_loop,
            )?),
        }

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

        let mut stats = Stats::new();
        for handle in client_threads {
            stats.merge(&join(handle)??);
        }
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
            closed: stats.closed,
            p50_us: stats.quantile(0.50),
            p99_us: stats.quantile(0.99),
            max_us: stats.quantile(1.0),
            server_cpu_s: server_before.zip(server_after).map(|(a, b)| ticks(a, b)),
            generator_cpu_s: ticks(self_before, self_after),
            load_average,
            tls,
        })
    })?;

    // Free the allocations (best effort), so that repeated runs do not fill the user's quota.
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    let each = |now: Instant| deadline.min(now + Duration::from_millis(300));
    match &mut clients {
        Clients::Udp(sockets) => {
            for (socket, allocation) in sockets.iter_mut().zip(&mut allocations) {
                drain_socket(socket);
                release(socket, allocation, &mut tids, each(Instant::now()));
            }
        }
        Clients::Stream(conns) => {
            release_and_close(conns, StreamConn::close, &mut allocations, &mut tids, each);
        }
        Clients::Dtls(conns) => {
            release_and_close(conns, DtlsConn::close, &mut allocations, &mut tids, each);
        }
    }
    Ok(outcome)
}

/// Frees `allocation` with a Refresh of lifetime 0 over `conn`, best effort, by `deadline`.
fn release(
    conn: &mut impl Exchange,
    allocation: &mut Allocation,
    tids: &mut TidGenerator,
    deadline: Instant,
) {
    let _ = allocation.request(
        conn,
        Method::REFRESH,
        |w| w.add(&Lifetime(0)),
        tids,
        deadline,
    );
}

/// Frees the allocation of each connection, then closes it with `close`; each release may
/// take until `deadline` says.
fn release_and_close<C: Exchange>(
    conns: &mut [C],
    close: fn(&mut C),
    allocations: &mut [Allocation],
    tids: &mut TidGenerator,
    deadline: impl Fn(Instant) -> Instant,
) {
    for (i, conn) in conns.iter_mut().enumerate() {
        if let Some(allocation) = allocations.get_mut(i) {
            release(conn, allocation, tids, deadline(Instant::now()));
        }
        close(conn);
    }
}

/// The client side of every allocation.
enum Clients {
    Udp(Vec<UdpSocket>),
    Stream(Vec<StreamConn>),
    Dtls(Vec<DtlsConn>),
}

/// Allocate, CreatePermission and, in channel mode, ChannelBind on `conn`, for a new echo
/// socket; the echo socket is then connected to the relay address.
fn set_up(
    conn: &mut impl Exchange,
    args: &Args,
    tids: &mut TidGenerator,
    deadline: Instant,
) -> Result<(Allocation, (UdpSocket, SocketAddr))> {
    let echo = udp_socket()?;
    let echo_addr = echo.local_addr()?;
    let mut allocation = Allocation::new(conn, args, tids, deadline)?;
    allocation
        .request(
            conn,
            Method::CREATE_PERMISSION,
            |w| w.add(&XorPeerAddress(echo_addr)),
            tids,
            deadline,
        )
        .context("CreatePermission")?;
    if args.mode == Mode::Channel {
        let channel = ChannelNumber::new(CHANNEL).context("channel number")?;
        allocation
            .request(
                conn,
                Method::CHANNEL_BIND,
                |w| {
                    w.add(&channel)?;
                    w.add(&XorPeerAddress(echo_addr))
                },
                tids,
                deadline,
            )
            .context("ChannelBind")?;
    }
    echo.connect(allocation.relay)
        .with_context(|| format!("connect the echo socket to {}", allocation.relay))?;
    Ok((allocation, (echo, echo_addr)))
}

/// What every client thread of a connection transport shares.
#[derive(Clone, Copy)]
struct Share<'a> {
    templates: &'a Templates,
    clock: &'a Clock,
    /// Round trips outstanding per connection.
    slots: usize,
    window: Window,
    stop_at: u64,
}

/// The client loop of a connection transport, over `conns`, whose first is allocation `first`.
type ConnectionLoop<C> =
    fn(&mut [C], usize, &Templates, &Clock, usize, Window, u64) -> Result<Stats>;

/// Runs `client_loop` on `threads` threads, each over a contiguous share of `conns`, so that
/// each thread's allocations are first..first + len.
fn spawn_shares<'scope, C: Send>(
    scope: &'scope thread::Scope<'scope, '_>,
    conns: &'scope mut [C],
    threads: usize,
    share: Share<'scope>,
    client_loop: ConnectionLoop<C>,
) -> Result<Vec<thread::ScopedJoinHandle<'scope, Result<Stats>>>> {
    let len = conns.len().div_ceil(threads).max(1);
    let mut handles = Vec::new();
    for (t, chunk) in conns.chunks_mut(len).enumerate() {
        handles.push(
            thread::Builder::new()
                .name(format!("client-{t}"))
                .spawn_scoped(scope, move || {
                    client_loop(
                        chunk,
                        t * len,
                        share.templates,
                        share.clock,
                        share.slots,
                        share.window,
                        share.stop_at,
                    )
                })?,
        );
    }
    Ok(handles)
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
