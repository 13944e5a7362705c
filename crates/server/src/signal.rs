//! `icebreaker signal`: a WebSocket signaling relay with rooms, for two WebRTC or ICE peers to
//! exchange their offer, answer and candidates before they can reach each other directly.
//!
//! # Protocol
//!
//! A peer opens a WebSocket to `ws://HOST:PORT/ROOM`. `ROOM` is a token the caller chooses and
//! hands to the callee out of band: 8 to 128 characters of `A-Z a-z 0-9 _ -`, random enough
//! that nobody else guesses it, since knowing it is all it takes to join. The first connection
//! creates the room; the room is deleted when its last member leaves.
//!
//! Every text message a member sends goes, unchanged and unread, to the other members of its
//! room. While a member is alone its messages wait in the room, at most
//! [`QUEUE_MESSAGES`] of them and [`QUEUE_SIZE_FACTOR`] times the message limit in bytes, and
//! reach the next member to join, in order: a caller may send its offer before the callee
//! arrives, and a peer that drops may reconnect to the same room and catch up.
//!
//! The relay closes a connection with a close frame that says why:
//!
//! | code | reason |
//! |------|--------|
//! | 1008 | the room token is malformed, the room is full, or too many messages are undelivered |
//! | 1013 | too many rooms |
//! | 1009 | a message is over the size limit |
//! | 1003 | a binary message |
//! | 1002 | a WebSocket protocol violation |
//! | 1007 | a text message that is not UTF-8 |
//! | 1001 | nothing received for the idle timeout, or the server is stopping |
//!
//! A request that is not a WebSocket upgrade gets `400 Bad Request`; a connection over the
//! connection cap gets `503 Service Unavailable`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use signal_hook::consts::{SIGINT, SIGTERM};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, error, info, warn};

/// How many messages wait in a room for a member to join, and how many may wait for a member
/// to read them.
pub const QUEUE_MESSAGES: usize = 64;

/// The bytes that may wait for a member, as a multiple of
/// [`SignalLimits::max_message_bytes`].
pub const QUEUE_SIZE_FACTOR: usize = 4;

/// The close reason for a malformed room token.
pub const BAD_TOKEN: &str = "room token must be 8 to 128 characters of A-Z a-z 0-9 _ -";
/// The close reason for a room that has its maximum of members.
pub const ROOM_FULL: &str = "room is full";
/// The close reason when a new room would exceed [`SignalLimits::max_rooms`].
pub const TOO_MANY_ROOMS: &str = "too many rooms, try again later";
/// The close reason for a binary message.
pub const TEXT_ONLY: &str = "only text messages are relayed";
/// The close reason for a connection that sent nothing for the idle timeout.
pub const IDLE: &str = "idle timeout";
/// The close reason for a member whose messages pile up: sent while alone beyond the room's
/// queue, or not read fast enough by the member they are for.
pub const UNDELIVERED: &str = "too many undelivered messages";
/// The close reason when the relay stops.
pub const STOPPING: &str = "server shutting down";

/// The shortest and longest room token.
const TOKEN_LENGTH: std::ops::RangeInclusive<usize> = 8..=128;

/// How long a client has to send its upgrade request: a connection that never does must not
/// hold a slot of the connection cap.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closed connection is read and discarded after our close frame: closing a socket
/// with unread input sends a reset, which can destroy the close frame before the client reads it.
const LINGER: Duration = Duration::from_secs(2);

/// How long connections get to take their close frame when the relay stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause after a failed accept, so that running out of file descriptors does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections refused for the connection cap may be answered at once; past it they
/// are dropped without an answer.
const BUSY_ANSWERS: usize = 64;

/// The relay's limits. [`SignalLimits::default`] is what `icebreaker signal` uses without flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalLimits {
    /// Rooms at once; a connection that would create one more is closed with 1013.
    pub max_rooms: usize,
    /// Members per room, at least 2; one more is closed with 1008 "room is full".
    pub max_members: usize,
    /// The largest text message in bytes; a larger one is closed with 1009 before it is read.
    pub max_message_bytes: usize,
    /// A connection that sends nothing, not even a ping, for this long is closed with 1001.
    pub idle_timeout: Duration,
    /// Open connections at once, refused ones in their last seconds included; more are
    /// answered `503 Service Unavailable`.
    pub max_connections: usize,
}

impl SignalLimits {
    /// The defaults: 1000 rooms of 2 members, 64 KiB messages, 300 s idle timeout, 4096
    /// connections.
    pub const DEFAULT: SignalLimits = SignalLimits {
        max_rooms: 1000,
        max_members: 2,
        max_message_bytes: 65_536,
        idle_timeout: Duration::from_secs(300),
        max_connections: 4096,
    };

    /// The bytes that may wait for one member.
    fn queue_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(QUEUE_SIZE_FACTOR)
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.max_rooms >= 1, "max-rooms must be at least 1");
        ensure!(self.max_members >= 2, "max-members must be at least 2");
        ensure!(
            self.max_message_bytes >= 1,
            "max-message-bytes must be at least 1"
        );
        ensure!(
            !self.idle_timeout.is_zero(),
            "idle-timeout must be more than 0"
        );
        ensure!(
            (1..=Semaphore::MAX_PERMITS).contains(&self.max_connections),
            "max-connections must be between 1 and {}",
            Semaphore::MAX_PERMITS
        );
        Ok(())
    }
}

impl Default for SignalLimits {
    fn default() -> Self {
        SignalLimits::DEFAULT
    }
}

/// Runs the relay on `listener` until the future is dropped. Fails at once when `limits` are
/// out of range (fewer than 2 members, a zero limit).
pub async fn run(listener: TcpListener, limits: SignalLimits) -> anyhow::Result<()> {
    run_until(listener, limits, std::future::pending()).await
}

/// Runs the relay on `listener` until `stop` completes, then closes every connection with 1001
/// "server shutting down" and returns.
pub async fn run_until(
    listener: TcpListener,
    limits: SignalLimits,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    limits.check()?;
    let shared = Arc::new(Shared {
        limits,
        state: Mutex::new(State::default()),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let busy_answers = Arc::new(Semaphore::new(BUSY_ANSWERS));
    let (stopping, stop_seen) = watch::channel(false);
    // Dropping the set aborts the connections, so dropping `run` stops everything it started.
    let mut connections = JoinSet::new();
    let mut stop = pin!(stop);
    info!(local = ?listener.local_addr().ok(), ?limits, "signaling relay listening");

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(connection(tcp, peer, shared.clone(),
                                                     stop_seen.clone(), slot));
                    }
                    Err(_) => {
                        info!(%peer, reason = "too many connections", "connection refused");
                        if let Ok(answer) = busy_answers.clone().try_acquire_owned() {
                            connections.spawn(answer_busy(tcp, answer));
                        }
                    }
                },
                Err(error) => {
                    warn!(%error, "cannot accept a connection");
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended {
                    error!(%error, "a connection task failed");
                }
            }
            () = &mut stop => break,
        }
    }

    info!(
        connections = connections.len(),
        "stopping: closing connections"
    );
    let _ = stopping.send(true);
    let _ = timeout(STOP_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Runs `icebreaker signal`: binds `listen`, prints the URL form, and relays on one thread until
/// SIGTERM or SIGINT.
pub fn serve(listen: SocketAddr, limits: SignalLimits) -> anyhow::Result<()> {
    limits.check()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on tcp {listen}"))?;
        let local = listener.local_addr()?;
        println!(
            "icebreaker {}: signaling relay on ws://{}/ROOM{}",
            env!("CARGO_PKG_VERSION"),
            shown_address(local),
            if local.ip().is_unspecified() {
                format!(" (listening on {local})")
            } else {
                String::new()
            }
        );
        let stop = stop_signal()?;
        run_until(listener, limits, async {
            // An error means the signal thread is gone, which leaves nothing to wait for.
            let _ = stop.await;
        })
        .await
    })
}

/// The address a peer would use: the first non-loopback interface address of the same family
/// when listening on every interface.
fn shown_address(local: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    crate::net::interface_addresses()
        .ok()
        .and_then(|ips| {
            ips.into_iter()
                .find(|ip| !ip.is_loopback() && ip.is_ipv4() == local.is_ipv4())
        })
        .map_or(local, |ip| SocketAddr::new(ip, local.port()))
}

/// Completes on the first SIGTERM or SIGINT. tokio's own signal support is a feature this crate
/// does without; signal-hook's iterator on a thread of its own does the same job.
fn stop_signal() -> anyhow::Result<oneshot::Receiver<()>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                info!(signal, "stop signal received");
                let _ = sender.send(());
            }
        })
        .context("cannot start the signal thread")?;
    Ok(receiver)
}

/// Whether `token` is a well-formed room token.
pub fn valid_token(token: &str) -> bool {
    TOKEN_LENGTH.contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The relay's rooms and limits, shared by every connection.
struct Shared {
    limits: SignalLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// Rooms are named in logs by a number, never by their token, which is the key to them.
    next_room: u64,
    next_member: u64,
}

struct Room {
    id: u64,
    members: Vec<Member>,
    /// Messages sent while a member was alone, for the next one to join.
    queue: VecDeque<Utf8Bytes>,
    queued_bytes: usize,
}

/// A member as its room sees it: where its messages go.
struct Member {
    id: u64,
    outbox: mpsc::Sender<Utf8Bytes>,
    /// Bytes sent to `outbox` and not yet taken out by the member's connection.
    backlog: Arc<AtomicUsize>,
}

impl Member {
    /// Hands `text` to the member; false when too much already waits for it.
    fn offer(&self, text: &Utf8Bytes, limit: usize) -> bool {
        let len = text.len();
        // Counted before the send so that the reader, which subtracts, never sees less than 0.
        let before = self.backlog.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > limit {
            self.backlog.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        match self.outbox.try_send(text.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.backlog.fetch_sub(len, Ordering::Relaxed);
                false
            }
            // The member's connection is ending and is about to leave the room.
            Err(TrySendError::Closed(_)) => true,
        }
    }
}

/// A member as its connection sees it.
struct Membership {
    token: String,
    room: u64,
    id: u64,
    inbox: mpsc::Receiver<Utf8Bytes>,
    backlog: Arc<AtomicUsize>,
}

/// Why a connection cannot join its room.
#[derive(Clone, Copy)]
enum Refusal {
    Full,
    TooManyRooms,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the rooms stay consistent if it did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a member to the room `token`, creating the room if need be; the member's inbox
    /// starts with what the room queued.
    fn join(&self, token: &str) -> Result<Membership, Refusal> {
        let limits = self.limits;
        let mut state = self.lock();
        let state = &mut *state;
        let rooms = state.rooms.len();
        let room = match state.rooms.entry(token.to_owned()) {
            Entry::Occupied(room) if room.get().members.len() >= limits.max_members => {
                return Err(Refusal::Full);
            }
            Entry::Occupied(room) => room.into_mut(),
            Entry::Vacant(_) if rooms >= limits.max_rooms => return Err(Refusal::TooManyRooms),
            Entry::Vacant(room) => {
                state.next_room = state.next_room.wrapping_add(1);
                info!(room = state.next_room, "room created");
                room.insert(Room {
                    id: state.next_room,
                    members: Vec::new(),
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                })
            }
        };
        state.next_member = state.next_member.wrapping_add(1);
        let (outbox, inbox) = mpsc::channel(QUEUE_MESSAGES);
        let backlog = Arc::new(AtomicUsize::new(room.queued_bytes));
        // The queue is no longer than the inbox, so every queued message fits.
        for text in room.queue.drain(..) {
            let _ = outbox.try_send(text);
        }
        room.queued_bytes = 0;
        room.members.push(Member {
            id: state.next_member,
            outbox,
            backlog: backlog.clone(),
        });
        debug!(
            room = room.id,
            members = room.members.len(),
            "member joined"
        );
        Ok(Membership {
            token: token.to_owned(),
            room: room.id,
            id: state.next_member,
            inbox,
            backlog,
        })
    }

    /// Sends `text` from `from` to the other members, or queues it when there are none. An
    /// error means the sender must be closed: its queue is full, or it was dropped from the room.
    fn forward(&self, from: &Membership, text: Utf8Bytes) -> Result<(), ()> {
        let limit = self.limits.queue_bytes();
        let mut state = self.lock();
        let Some(room) = state.rooms.get_mut(&from.token) else {
            return Err(());
        };
        if room.id != from.room || !room.members.iter().any(|m| m.id == from.id) {
            return Err(());
        }
        if room.members.iter().all(|m| m.id == from.id) {
            if room.queue.len() >= QUEUE_MESSAGES
                || room.queued_bytes.saturating_add(text.len()) > limit
            {
                info!(room = room.id, "member closed: too many queued messages");
                return Err(());
            }
            room.queued_bytes = room.queued_bytes.saturating_add(text.len());
            room.queue.push_back(text);
            return Ok(());
        }
        let room_id = room.id;
        room.members.retain(|member| {
            let keep = member.id == from.id || member.offer(&text, limit);
            if !keep {
                // Dropping its outbox tells the member's connection to close.
                info!(
                    room = room_id,
                    "member dropped: too many undelivered messages"
                );
            }
            keep
        });
        Ok(())
    }

    /// Removes a member from its room, and the room when it is left empty.
    fn leave(&self, member: &Membership) {
        let mut state = self.lock();
        let Some(room) = state.rooms.get_mut(&member.token) else {
            return;
        };
        if room.id != member.room {
            return;
        }
        room.members.retain(|m| m.id != member.id);
        debug!(room = room.id, members = room.members.len(), "member left");
        if room.members.is_empty() {
            state.rooms.remove(&member.token);
            info!(room = member.room, "room deleted");
        }
    }
}

/// How a connection ended.
enum Ending {
    /// The client closed the WebSocket; its close frame is answered.
    ClosedByClient,
    /// The connection is gone or stuck: nothing more to say.
    Lost,
    /// The relay closes the connection with this code and reason.
    Close(CloseCode, Utf8Bytes),
}

type Ws<'a> = WebSocketStream<&'a mut TcpStream>;

/// One connection, from the upgrade request to the close.
async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Signaling is a burst of small messages (offer, then candidates as they come): Nagle's
    // algorithm would hold each one after the first for a delayed ACK.
    let _ = tcp.set_nodelay(true);
    let max = shared.limits.max_message_bytes;
    let config = WebSocketConfig::default()
        // The default 128 KiB read buffer per connection is sized for bulk transfer, not for a
        // few kilobytes of signaling.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        // The frame limit too: tungstenite checks it against the header, so an oversized
        // message is refused before any of it is buffered.
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut path = None;
    // The error type is tungstenite's, for a refusal in HTTP, which this callback never makes.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = Some(request.uri().path().to_owned());
        Ok(response)
    };
    // Borrowing the stream leaves it here to answer a request that is not an upgrade.
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(&mut tcp, callback, Some(config));
    let mut ws = match timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(WsError::Io(error))) => {
            debug!(%peer, %error, "handshake failed");
            return;
        }
        Ok(Err(error)) => {
            info!(%peer, %error, "connection refused: not a WebSocket upgrade");
            answer_bad_request(&tcp).await;
            return;
        }
        Err(_) => {
            debug!(%peer, "handshake timed out");
            return;
        }
    };
    let token = path
        .as_deref()
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");

    let ending = if !valid_token(token) {
        info!(%peer, reason = "bad room token", "connection refused");
        Ending::Close(CloseCode::Policy, BAD_TOKEN.into())
    } else {
        match shared.join(token) {
            Ok(mut member) => {
                let ending = relay(&mut ws, &shared, &mut member, stop).await;
                // Before the close is answered, so that a client that saw its close complete
                // finds the room already updated.
                shared.leave(&member);
                ending
            }
            Err(refusal) => {
                let (code, reason) = match refusal {
                    Refusal::Full => (CloseCode::Policy, ROOM_FULL),
                    Refusal::TooManyRooms => (CloseCode::Again, TOO_MANY_ROOMS),
                };
                info!(%peer, reason, "connection refused");
                Ending::Close(code, reason.into())
            }
        }
    };

    match ending {
        Ending::ClosedByClient => {
            let _ = timeout(LINGER, ws.close(None)).await;
        }
        Ending::Lost => {}
        Ending::Close(code, reason) => {
            debug!(%peer, code = u16::from(code), %reason, "closing");
            let frame = CloseFrame { code, reason };
            let _ = timeout(LINGER, ws.close(Some(frame))).await;
            drop(ws);
            linger(&tcp).await;
        }
    }
}

/// Relays between the member's WebSocket and its room until one of them ends it.
async fn relay(
    ws: &mut Ws<'_>,
    shared: &Shared,
    member: &mut Membership,
    mut stop: watch::Receiver<bool>,
) -> Ending {
    let idle = shared.limits.idle_timeout;
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => return ending_for(&error, shared.limits.max_message_bytes),
                    None => return Ending::Lost,
                };
                deadline = Instant::now() + idle;
                match message {
                    Message::Text(text) => {
                        if shared.forward(member, text).is_err() {
                            return Ending::Close(CloseCode::Policy, UNDELIVERED.into());
                        }
                        // On one thread, the recipients get to write out what this member
                        // sent before it reads more, instead of their backlogs filling up in a
                        // burst and getting them dropped.
                        tokio::task::yield_now().await;
                    }
                    Message::Binary(_) => {
                        return Ending::Close(CloseCode::Unsupported, TEXT_ONLY.into());
                    }
                    Message::Close(_) => return Ending::ClosedByClient,
                    // tungstenite answers pings itself; any frame counts as activity.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            outgoing = member.inbox.recv() => {
                let Some(text) = outgoing else {
                    // The room dropped this member for not reading.
                    return Ending::Close(CloseCode::Policy, UNDELIVERED.into());
                };
                member.backlog.fetch_sub(text.len(), Ordering::Relaxed);
                match timeout(idle, ws.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return Ending::Lost,
                }
            }
            () = sleep_until(deadline) => {
                return Ending::Close(CloseCode::Away, IDLE.into());
            }
            _ = stop.changed() => {
                return Ending::Close(CloseCode::Away, STOPPING.into());
            }
        }
    }
}

/// The close for a read error, if the connection can still take one.
fn ending_for(error: &WsError, max_message_bytes: usize) -> Ending {
    match error {
        WsError::Capacity(_) => Ending::Close(
            CloseCode::Size,
            format!("message too big: the limit is {max_message_bytes} bytes").into(),
        ),
        WsError::Utf8(_) => Ending::Close(CloseCode::Invalid, "text messages must be UTF-8".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Lost,
        WsError::Protocol(_) => {
            Ending::Close(CloseCode::Protocol, "WebSocket protocol error".into())
        }
        _ => Ending::Lost,
    }
}

/// Answers a request that is not a WebSocket upgrade.
async fn answer_bad_request(tcp: &TcpStream) {
    let body = "This is a WebSocket signaling relay: connect a WebSocket client to \
                ws://HOST:PORT/ROOM, ROOM being 8 to 128 characters of A-Z a-z 0-9 _ -.\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if timeout(LINGER, write_all(tcp, response.as_bytes()))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        linger(tcp).await;
    }
}

/// Answers a connection over the connection cap, which holds no slot of it.
async fn answer_busy(tcp: TcpStream, _answer: OwnedSemaphorePermit) {
    let body = "too many connections, try again later\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if timeout(LINGER, write_all(&tcp, response.as_bytes()))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        linger(&tcp).await;
    }
}

/// Writes all of `bytes`. tokio's `AsyncWriteExt` is a feature this crate does without.
async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Ends our side of the connection and discards what the client still sends, until it closes
/// or [`LINGER`] passes, so that the client reads everything we sent instead of a reset.
async fn linger(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).shutdown(Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            match tcp.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(valid_token("abcdEFGH"));
        assert!(valid_token("a-b_c-0123456789"));
        assert!(valid_token(&"x".repeat(128)));
        for bad in [
            "",
            "short",
            "abcdefg",
            "has space",
            "dot.dot.dot",
            "ünïcödé1",
        ] {
            assert!(!valid_token(bad), "{bad}");
        }
        assert!(!valid_token(&"x".repeat(129)));
    }

    #[test]
    fn limits() {
        assert!(SignalLimits::default().check().is_ok());
        let one_member = SignalLimits {
            max_members: 1,
            ..SignalLimits::DEFAULT
        };
        assert!(one_member.check().is_err());
        let no_idle = SignalLimits {
            idle_timeout: Duration::ZERO,
            ..SignalLimits::DEFAULT
        };
        assert!(no_idle.check().is_err());
    }
}
