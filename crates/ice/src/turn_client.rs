//! Sans-IO TURN client (RFC 8656) over UDP: one allocation on one server, its permissions and
//! channels, kept alive until deallocated.
//!
//! [`TurnClient`] opens no socket, reads no clock and draws no randomness of its own. Its
//! owner moves datagrams and time:
//!
//! 1. [`TurnClient::allocate`] starts; every datagram from the server goes to
//!    [`TurnClient::handle_input`], which returns the data peers sent through the relay.
//! 2. Whenever [`TurnClient::poll_timeout`] passes: [`TurnClient::handle_timeout`], which
//!    retransmits requests (RFC 8489 §6.2.1) and refreshes the allocation, permissions and
//!    channels before they expire.
//! 3. After any call, drain [`TurnClient::poll_transmit`] (datagrams for the server) and
//!    [`TurnClient::poll_event`].
//!
//! Data for a peer is wrapped by [`TurnClient::send_to`]: ChannelData once the server has
//! confirmed a channel to that peer, a Send indication otherwise.
//!
//! ```
//! use std::time::Instant;
//! use icebreaker_ice::turn_client::{TurnClient, TurnClientConfig, TurnState};
//!
//! # struct Rng(u64);
//! # impl rand_core::RngCore for Rng {
//! #     fn next_u32(&mut self) -> u32 { self.next_u64() as u32 }
//! #     fn next_u64(&mut self) -> u64 { self.0 += 1; self.0 }
//! #     fn fill_bytes(&mut self, dst: &mut [u8]) { rand_core::impls::fill_bytes_via_next(self, dst) }
//! # }
//! # let mut rng = Rng(0);
//! let config = TurnClientConfig::new("203.0.113.1:3478".parse()?, "alice", "secret");
//! let mut client = TurnClient::new(config);
//! client.allocate(Instant::now(), &mut rng);
//! let allocate = client.poll_transmit().expect("an Allocate request");
//! // ... send `allocate` to client.server(), feed answers to handle_input ...
//! assert_eq!(client.state(), TurnState::Allocating);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod error;

use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{
    AlternateServer, Data, ErrorCodeAttribute, Lifetime, RequestedTransport, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, ErrorCode, HEADER_LEN, Message, MessageType, MessageWriter,
    Method, TransactionId, Transport, WriteError, write_channel_data,
};
use rand_core::RngCore;

use auth::Credentials;
pub use error::{TurnError, TurnSendError};

/// Permissions live 300 s on the server (RFC 8656 §9). Refreshing after 240 s leaves a minute,
/// more than the 39.5 s a request may take with the default retransmissions.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channel bindings live 600 s on the server (RFC 8656 §12); refreshed a minute early.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// How long before the allocation expires it is refreshed (see [`refresh_delay`]).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Rm of RFC 8489 §6.2.1: after the last transmission, wait 16 RTOs before giving up.
const LAST_WAIT_FACTOR: u32 = 16;
/// 438 answers an Allocate follows before giving up: a nonce can go stale between a challenge
/// and the retry, but not every time unless the server's clocks disagree.
const ALLOCATE_STALE_RETRIES: u32 = 3;
/// 438 answers any other request follows (RFC 8489 §9.2.5: retry with the new nonce).
const STALE_RETRIES: u32 = 1;
/// Lowest channel number (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;

/// Retransmission timing of requests over UDP (RFC 8489 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnTiming {
    /// RTO: the wait after the first transmission, doubled after each retransmission.
    /// RFC 8489 recommends 500 ms.
    pub initial_rto: Duration,
    /// Rc: how many times a request is sent in all, the first transmission included. After
    /// the last one the client waits 16 × `initial_rto` (Rm) and then reports
    /// [`TurnError::Timeout`]. RFC 8489 recommends 7, which gives up after 39.5 s.
    pub max_retransmits: u32,
}

impl Default for TurnTiming {
    fn default() -> TurnTiming {
        TurnTiming {
            initial_rto: Duration::from_millis(500),
            max_retransmits: 7,
        }
    }
}

impl TurnTiming {
    /// How many times a request is sent: at least once.
    fn transmissions(&self) -> u32 {
        self.max_retransmits.max(1)
    }

    /// The wait after transmission number `sent` (counted from 1) before the next one, or
    /// before giving up after the last.
    fn wait_after(&self, sent: u32) -> Duration {
        if sent < self.transmissions() {
            let doublings = sent.saturating_sub(1).min(31);
            self.initial_rto.saturating_mul(1 << doublings)
        } else {
            self.initial_rto.saturating_mul(LAST_WAIT_FACTOR)
        }
    }

    /// How long a request goes unanswered before it fails with [`TurnError::Timeout`]:
    /// 39.5 s with the defaults.
    pub fn transaction_timeout(&self) -> Duration {
        (1..=self.transmissions())
            .map(|sent| self.wait_after(sent))
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

/// What a [`TurnClient`] needs to know.
#[derive(Clone)]
pub struct TurnClientConfig {
    /// The TURN server; every datagram of [`TurnClient::poll_transmit`] goes there.
    pub server: SocketAddr,
    /// The long-term credentials' username.
    pub username: String,
    /// The long-term credentials' password.
    pub password: String,
    /// The allocation lifetime asked for in Allocate and Refresh; the server grants what it
    /// wants (RFC 8656 §7.2: 600 s unless it allows more).
    pub lifetime: Duration,
    /// Retransmission timing.
    pub timing: TurnTiming,
    /// Whether the transport to the server is a TCP or TLS stream: each request is then sent
    /// once and fails after [`TurnTiming::transaction_timeout`] (RFC 8489 §6.2.2), and
    /// ChannelData is padded to a multiple of 4 bytes (RFC 8656 §12.5). The caller frames
    /// what it reads with [`icebreaker_wire::framing::frame`].
    pub reliable: bool,
}

impl TurnClientConfig {
    /// A configuration for `server` and the given credentials, asking for the default
    /// lifetime of 600 s, with the retransmission timing of RFC 8489.
    pub fn new(
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> TurnClientConfig {
        TurnClientConfig {
            server,
            username: username.into(),
            password: password.into(),
            lifetime: Duration::from_secs(600),
            timing: TurnTiming::default(),
            reliable: false,
        }
    }
}

impl fmt::Debug for TurnClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClientConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("timing", &self.timing)
            .field("reliable", &self.reliable)
            .finish()
    }
}

/// Where a [`TurnClient`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TurnState {
    /// Nothing asked yet.
    Idle,
    /// An Allocate is under way (challenge and retries included).
    Allocating,
    /// The allocation exists and is kept alive.
    Allocated,
    /// A Refresh with LIFETIME 0 is under way.
    Deallocating,
    /// The allocation was released, or never made because deallocation came first.
    Deallocated,
    /// The Allocate failed, or the allocation was lost (a Refresh failed).
    Failed,
}

/// Data a peer sent through the relay, borrowed from the datagram it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerData<'a> {
    /// The peer that sent it, to the relayed address.
    pub peer: SocketAddr,
    /// The application data.
    pub data: &'a [u8],
}

/// Something the owner of a [`TurnClient`] should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation was made.
    Allocated {
        /// The relayed transport address: the relay candidate.
        relayed: SocketAddr,
        /// The client's address as the server saw it: a server-reflexive candidate.
        mapped: Option<SocketAddr>,
        /// The lifetime the server granted.
        lifetime: Duration,
    },
    /// The Allocate failed; the client is [`TurnState::Failed`].
    AllocationFailed(TurnError),
    /// The server installed the first permission for this IP address.
    PermissionCreated(IpAddr),
    /// A permission could not be created or refreshed; it is forgotten.
    PermissionFailed {
        /// The peer's IP address.
        peer: IpAddr,
        /// Why.
        error: TurnError,
    },
    /// The server confirmed a channel; [`TurnClient::send_to`] now uses ChannelData.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// Its channel.
        channel: ChannelNumber,
    },
    /// A channel could not be bound or refreshed; it is forgotten, and data to the peer goes
    /// in Send indications.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: TurnError,
    },
    /// The allocation was refreshed.
    Refreshed {
        /// The lifetime the server granted.
        lifetime: Duration,
    },
    /// A Refresh failed: the allocation is lost and the client is [`TurnState::Failed`].
    RefreshFailed(TurnError),
    /// The allocation is released as far as this client is concerned; the server expires
    /// it anyway if it did not hear.
    Deallocated {
        /// Why the server did not confirm the release: no answer, or an error other than 437
        /// (no such allocation, which is what a release wants). `None` once it confirmed.
        unconfirmed: Option<TurnError>,
    },
}

/// A request and what it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Allocate,
    /// LIFETIME 0 deletes the allocation.
    Refresh {
        lifetime: u32,
    },
    CreatePermission {
        peer: SocketAddr,
    },
    ChannelBind {
        peer: SocketAddr,
        channel: ChannelNumber,
    },
}

impl Request {
    const fn method(self) -> Method {
        match self {
            Request::Allocate => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }

    const fn stale_retries(self) -> u32 {
        match self {
            Request::Allocate => ALLOCATE_STALE_RETRIES,
            _ => STALE_RETRIES,
        }
    }
}

/// A request waiting for its response.
#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    request: Request,
    bytes: Vec<u8>,
    /// Transmissions so far.
    sent: u32,
    /// When to retransmit, or give up after the last transmission.
    deadline: Instant,
    /// Whether the request carried credentials, so that its success must carry integrity.
    signed: bool,
    /// 438 answers already followed for this request.
    stale_retries: u32,
}

#[derive(Debug)]
struct Allocation {
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    /// `None` while a Refresh is under way.
    refresh_at: Option<Instant>,
}

#[derive(Debug)]
struct Permission {
    /// The first peer asked for at this IP: its port goes in XOR-PEER-ADDRESS.
    peer: SocketAddr,
    installed: bool,
    /// `None` while a CreatePermission is under way or the allocation is not made yet.
    refresh_at: Option<Instant>,
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    number: ChannelNumber,
    confirmed: bool,
    /// `None` while a ChannelBind is under way or the allocation is not made yet.
    refresh_at: Option<Instant>,
}

/// A sans-IO TURN client over UDP: one allocation on one server. See the
/// [module documentation](self) for the call order.
#[derive(Debug)]
pub struct TurnClient {
    config: TurnClientConfig,
    state: TurnState,
    credentials: Option<Credentials>,
    allocation: Option<Allocation>,
    transactions: Vec<Transaction>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    next_channel: u16,
    indication_base: [u8; 12],
    indications: u64,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

impl TurnClient {
    /// A client that does nothing until [`allocate`](TurnClient::allocate).
    pub fn new(config: TurnClientConfig) -> TurnClient {
        TurnClient {
            config,
            state: TurnState::Idle,
            credentials: None,
            allocation: None,
            transactions: Vec::new(),
            permissions: Vec::new(),
            channels: Vec::new(),
            next_channel: FIRST_CHANNEL,
            indication_base: [0; 12],
            indications: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The server every datagram of [`poll_transmit`](TurnClient::poll_transmit) goes to.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// Where the client stands.
    pub fn state(&self) -> TurnState {
        self.state
    }

    /// The relayed transport address: while allocated or deallocating, and after
    /// [`TurnEvent::RefreshFailed`] the address that was lost, so that its owner can tell
    /// which candidates went with it (until the next [`allocate`](TurnClient::allocate)).
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        self.allocation.as_ref().map(|a| a.relayed)
    }

    /// The XOR-MAPPED-ADDRESS of the Allocate success: the client's server-reflexive address,
    /// as long as [`relayed_address`](TurnClient::relayed_address) is known.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.allocation.as_ref().and_then(|a| a.mapped)
    }

    /// The long-term key's algorithm, once the server challenged: SHA-256 when it offered it
    /// (RFC 8489 §9.2.4), MD5 otherwise.
    pub fn password_algorithm(&self) -> Option<KeyAlgorithm> {
        self.credentials.as_ref().map(Credentials::algorithm)
    }

    /// Asks for an allocation (REQUESTED-TRANSPORT UDP). The first Allocate carries no
    /// credentials; the server's 401 challenge is answered with them. Does nothing unless the
    /// client is idle, failed or deallocated; from the last two it starts afresh.
    pub fn allocate(&mut self, now: Instant, rng: &mut dyn RngCore) {
        if !matches!(
            self.state,
            TurnState::Idle | TurnState::Failed | TurnState::Deallocated
        ) {
            return;
        }
        // From idle, keep the permissions and channels already asked for.
        if self.state != TurnState::Idle {
            self.reset();
        }
        self.credentials = None;
        rng.fill_bytes(&mut self.indication_base);
        self.state = TurnState::Allocating;
        self.start(now, rng, Request::Allocate, 0);
    }

    /// Asks the server to let `peer`'s IP address reach the relayed address (RFC 8656 §9),
    /// and keeps the permission alive until the allocation ends. Idempotent per IP address; a
    /// permission asked for before the allocation is made is requested once it is.
    ///
    /// The permission covers the whole IP, but the request names the peer's port too: a
    /// server refuses a port-less permission for one of its own addresses, which is where
    /// another client's relayed address lives.
    pub fn create_permission(&mut self, now: Instant, rng: &mut dyn RngCore, peer: SocketAddr) {
        if !self.accepts_peers() || self.permissions.iter().any(|p| p.peer.ip() == peer.ip()) {
            return;
        }
        self.permissions.push(Permission {
            peer,
            installed: false,
            refresh_at: None,
        });
        if self.state == TurnState::Allocated {
            self.start(now, rng, Request::CreatePermission { peer }, 0);
        }
    }

    /// Binds a channel to `peer` (RFC 8656 §12) and keeps it alive until the allocation ends;
    /// also creates a permission for its IP address, which the channel needs as long as it
    /// lives. Idempotent: returns the peer's channel, new or not. `None` when the client is
    /// failed or deallocated, or every channel number is taken.
    ///
    /// [`send_to`](TurnClient::send_to) uses the channel once the server confirmed it
    /// ([`TurnEvent::ChannelBound`]).
    pub fn bind_channel(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        peer: SocketAddr,
    ) -> Option<ChannelNumber> {
        if !self.accepts_peers() {
            return None;
        }
        if let Some(channel) = self.channels.iter().find(|c| c.peer == peer) {
            return Some(channel.number);
        }
        // Numbers are never reused within an allocation: the server keeps a released one
        // reserved for five minutes (RFC 8656 §12).
        let channel = ChannelNumber::new(self.next_channel)?;
        self.next_channel += 1;
        self.create_permission(now, rng, peer);
        self.channels.push(Channel {
            peer,
            number: channel,
            confirmed: false,
            refresh_at: None,
        });
        if self.state == TurnState::Allocated {
            self.start(now, rng, Request::ChannelBind { peer, channel }, 0);
        }
        Some(channel)
    }

    fn accepts_peers(&self) -> bool {
        matches!(
            self.state,
            TurnState::Idle | TurnState::Allocating | TurnState::Allocated
        )
    }

    /// Wraps `data` for `peer` into the datagram to send to the server: ChannelData when the
    /// server confirmed a channel to `peer`, a Send indication otherwise. Indications carry no
    /// integrity (RFC 8656 §11.1).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnSendError> {
        if self.state != TurnState::Allocated {
            return Err(TurnSendError::NotAllocated);
        }
        if let Some(channel) = self.channels.iter().find(|c| c.peer == peer && c.confirmed) {
            // Over UDP ChannelData needs no padding; over a stream it does (RFC 8656 §12.5).
            let transport = if self.config.reliable {
                Transport::Stream
            } else {
                Transport::Datagram
            };
            let mut buf = vec![0u8; 4 + data.len().next_multiple_of(4)];
            let len = write_channel_data(&mut buf, channel.number, data, transport)
                .map_err(|_| TurnSendError::TooLarge(data.len()))?;
            buf.truncate(len);
            return Ok(buf);
        }
        if !self.permissions.iter().any(|p| p.peer.ip() == peer.ip()) {
            return Err(TurnSendError::NoPermission(peer.ip()));
        }
        let id = self.indication_id();
        let mut buf = vec![0u8; HEADER_LEN + 24 + 4 + data.len().next_multiple_of(4) + 8];
        let written = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::SEND, Class::Indication),
            id,
        )
        .and_then(|mut w| {
            w.add(&XorPeerAddress(peer))?;
            w.add(&Data(data))?;
            w.add_fingerprint()?;
            Ok(w.finish())
        });
        let len = written.map_err(|_| TurnSendError::TooLarge(data.len()))?;
        buf.truncate(len);
        Ok(buf)
    }

    /// A transaction id for a Send indication. Nothing answers an indication, so its id only
    /// needs to be unique, which a counter over a random base drawn at `allocate` gives
    /// without asking the caller for randomness on the data path.
    fn indication_id(&mut self) -> TransactionId {
        self.indications = self.indications.wrapping_add(1);
        let mut bytes = self.indication_base;
        for (b, c) in bytes[4..].iter_mut().zip(self.indications.to_be_bytes()) {
            *b ^= c;
        }
        TransactionId::new(bytes)
    }

    /// Refreshes the allocation now rather than when it is due, asking for the configured
    /// lifetime; [`TurnEvent::Refreshed`] or [`TurnEvent::RefreshFailed`] follows. Does
    /// nothing unless the client is allocated with no Refresh under way. A diagnostic tool
    /// uses it to check that the server refreshes.
    pub fn refresh(&mut self, now: Instant, rng: &mut dyn RngCore) {
        if self.state != TurnState::Allocated {
            return;
        }
        let Some(allocation) = &mut self.allocation else {
            return;
        };
        if allocation.refresh_at.take().is_none() {
            return;
        }
        let lifetime = self.requested_lifetime();
        self.start(now, rng, Request::Refresh { lifetime }, 0);
    }

    /// Releases the allocation with a Refresh of LIFETIME 0; [`TurnEvent::Deallocated`]
    /// follows its answer or its timeout. Permissions and channels are dropped at once.
    pub fn deallocate(&mut self, now: Instant, rng: &mut dyn RngCore) {
        if !matches!(self.state, TurnState::Allocating | TurnState::Allocated) {
            return;
        }
        // An Allocate may have succeeded on the server with its answer still on the way, so
        // the Refresh goes out even then; a server without the allocation answers 437.
        self.transactions.clear();
        self.permissions.clear();
        self.channels.clear();
        if let Some(allocation) = &mut self.allocation {
            allocation.refresh_at = None;
        }
        self.state = TurnState::Deallocating;
        self.start(now, rng, Request::Refresh { lifetime: 0 }, 0);
    }

    /// The next datagram to send to [`server`](TurnClient::server).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](TurnClient::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.transactions.iter().map(|t| Some(t.deadline));
        let timers = (self.state == TurnState::Allocated).then(|| {
            self.allocation
                .iter()
                .map(|a| a.refresh_at)
                .chain(self.permissions.iter().map(|p| p.refresh_at))
                .chain(self.channels.iter().map(|c| c.refresh_at))
        });
        deadlines
            .chain(timers.into_iter().flatten())
            .flatten()
            .min()
    }

    /// Retransmits requests whose time has come, fails those that went unanswered, and
    /// refreshes the allocation, permissions and channels due.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let timing = self.config.timing;
        let mut i = 0;
        while i < self.transactions.len() {
            let transaction = &mut self.transactions[i];
            if transaction.deadline > now {
                i += 1;
            } else if transaction.sent < timing.transmissions() {
                transaction.sent += 1;
                transaction.deadline = later(now, timing.wait_after(transaction.sent));
                self.transmits.push_back(transaction.bytes.clone());
                i += 1;
            } else {
                let transaction = self.transactions.swap_remove(i);
                // Failing an Allocate or a Refresh clears the list; the loop then ends.
                self.fail(transaction.request, TurnError::Timeout);
            }
        }
        if self.state != TurnState::Allocated {
            return;
        }
        let due = |at: &mut Option<Instant>| at.take_if(|at| *at <= now).is_some();
        let mut requests = Vec::new();
        if let Some(allocation) = &mut self.allocation
            && due(&mut allocation.refresh_at)
        {
            requests.push(Request::Refresh {
                lifetime: self.requested_lifetime(),
            });
        }
        for permission in &mut self.permissions {
            if due(&mut permission.refresh_at) {
                requests.push(Request::CreatePermission {
                    peer: permission.peer,
                });
            }
        }
        for channel in &mut self.channels {
            if due(&mut channel.refresh_at) {
                requests.push(Request::ChannelBind {
                    peer: channel.peer,
                    channel: channel.number,
                });
            }
        }
        for request in requests {
            self.start(now, rng, request, 0);
        }
    }

    /// Handles a datagram from the server. Responses are consumed; a Data indication, or
    /// ChannelData on a channel this client bound, returns the peer's data. Anything else,
    /// malformed or unexpected, is dropped silently (RFC 8489 §6.3).
    ///
    /// The caller must only pass datagrams whose source is [`server`](TurnClient::server).
    pub fn handle_input<'p>(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        packet: &'p [u8],
    ) -> Option<PeerData<'p>> {
        if packet.first().is_some_and(|b| b >> 6 == 0b01) {
            return self.channel_data(packet);
        }
        let message = Message::parse(packet).ok()?;
        if message.fingerprint_offset().is_some() && message.verify_fingerprint().is_err() {
            return None;
        }
        match message.class() {
            Class::Indication if message.method() == Method::DATA => self.data_indication(&message),
            Class::Success | Class::Error => {
                self.response(now, rng, &message);
                None
            }
            _ => None,
        }
    }

    fn channel_data<'p>(&self, packet: &'p [u8]) -> Option<PeerData<'p>> {
        if self.state != TurnState::Allocated {
            return None;
        }
        let message = ChannelData::parse(packet).ok()?;
        // A channel not yet confirmed counts: the server only sends on it once it has bound
        // it, which may be before its success response arrives.
        let channel = self
            .channels
            .iter()
            .find(|c| c.number == message.channel())?;
        Some(PeerData {
            peer: channel.peer,
            data: message.data(),
        })
    }

    fn data_indication<'p>(&self, message: &Message<'p>) -> Option<PeerData<'p>> {
        if self.state != TurnState::Allocated {
            return None;
        }
        let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) =
            (message.get::<XorPeerAddress>(), message.get::<Data<'p>>())
        else {
            return None;
        };
        // The server relays only from permitted peers; anything else did not come from it.
        if !self.permissions.iter().any(|p| p.peer.ip() == peer.ip()) {
            return None;
        }
        Some(PeerData { peer, data })
    }

    fn response(&mut self, now: Instant, rng: &mut dyn RngCore, message: &Message<'_>) {
        let Some(index) = self
            .transactions
            .iter()
            .position(|t| t.id == message.transaction_id())
        else {
            return;
        };
        let transaction = &self.transactions[index];
        if transaction.request.method() != message.method() {
            return;
        }
        let has_integrity =
            message.integrity_offset().is_some() || message.integrity_sha256_offset().is_some();
        let verified = has_integrity
            && self
                .credentials
                .as_ref()
                .is_some_and(|credentials| credentials.verify(message));
        if message.class() == Class::Success {
            // A signed request's success must prove the server knows the key; an unsigned
            // one's (a server without authentication) cannot.
            if transaction.signed && !verified {
                return;
            }
            let transaction = self.transactions.swap_remove(index);
            self.success(now, rng, transaction.request, message);
            return;
        }
        // Errors answered before authentication (401, 438, and 400 or 437 from this project's
        // server) carry no integrity, so a missing one is accepted: only a forger who sees the
        // 96-bit transaction id could make one. A present one must be right.
        if has_integrity && self.credentials.is_some() && !verified {
            return;
        }
        let Ok(Some(error)) = message.get::<ErrorCodeAttribute>() else {
            return;
        };
        let transaction = self.transactions.swap_remove(index);
        self.error(now, rng, transaction, message, error);
    }

    fn error(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        transaction: Transaction,
        message: &Message<'_>,
        error: ErrorCodeAttribute<'_>,
    ) {
        let request = transaction.request;
        let retry = match error.code {
            // A 401 to a request without credentials is the challenge; to one with them, a
            // refusal.
            ErrorCode::UNAUTHENTICATED if !transaction.signed => Some(transaction.stale_retries),
            ErrorCode::STALE_NONCE if transaction.stale_retries < request.stale_retries() => {
                Some(transaction.stale_retries + 1)
            }
            _ => None,
        };
        if let Some(stale_retries) = retry {
            let learned = Credentials::from_challenge(
                message,
                &self.config.username,
                &self.config.password,
                self.credentials.as_ref(),
            );
            match learned {
                Ok(credentials) => {
                    self.credentials = Some(credentials);
                    self.start(now, rng, request, stale_retries);
                }
                Err(error) => self.fail(request, error),
            }
            return;
        }
        let error = if error.code == ErrorCode::TRY_ALTERNATE {
            TurnError::TryAlternate {
                server: message.get::<AlternateServer>().ok().flatten().map(|a| a.0),
            }
        } else {
            TurnError::Rejected {
                code: error.code.code(),
                reason: error.reason.to_owned(),
            }
        };
        self.fail(request, error);
    }

    fn success(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        request: Request,
        message: &Message<'_>,
    ) {
        match request {
            Request::Allocate => self.allocated(now, rng, message),
            Request::Refresh { lifetime: 0 } => {
                self.reset();
                self.state = TurnState::Deallocated;
                self.events
                    .push_back(TurnEvent::Deallocated { unconfirmed: None });
            }
            Request::Refresh { lifetime } => {
                let granted = match message.get::<Lifetime>() {
                    Ok(Some(Lifetime(granted))) => granted,
                    Ok(None) => lifetime,
                    Err(_) => {
                        let error =
                            TurnError::InvalidResponse("a Refresh success with a bad LIFETIME");
                        return self.fail(request, error);
                    }
                };
                if granted == 0 {
                    let error = TurnError::InvalidResponse("a Refresh success with LIFETIME 0");
                    return self.fail(request, error);
                }
                let granted = Duration::from_secs(granted.into());
                if let Some(allocation) = &mut self.allocation {
                    allocation.refresh_at = Some(later(now, refresh_delay(granted)));
                }
                self.events
                    .push_back(TurnEvent::Refreshed { lifetime: granted });
            }
            Request::CreatePermission { peer } => {
                let Some(permission) = self.permissions.iter_mut().find(|p| p.peer == peer) else {
                    return;
                };
                permission.refresh_at = Some(later(now, PERMISSION_REFRESH));
                if !permission.installed {
                    permission.installed = true;
                    self.events
                        .push_back(TurnEvent::PermissionCreated(peer.ip()));
                }
            }
            Request::ChannelBind { peer, channel } => {
                let Some(bound) = self.channels.iter_mut().find(|c| c.number == channel) else {
                    return;
                };
                bound.refresh_at = Some(later(now, CHANNEL_REFRESH));
                if !bound.confirmed {
                    bound.confirmed = true;
                    self.events
                        .push_back(TurnEvent::ChannelBound { peer, channel });
                }
            }
        }
    }

    fn allocated(&mut self, now: Instant, rng: &mut dyn RngCore, message: &Message<'_>) {
        let relayed = match message.get::<XorRelayedAddress>() {
            Ok(Some(XorRelayedAddress(relayed))) => relayed,
            _ => {
                let error = TurnError::InvalidResponse(
                    "an Allocate success without a valid XOR-RELAYED-ADDRESS",
                );
                return self.fail(Request::Allocate, error);
            }
        };
        let lifetime = match message.get::<Lifetime>() {
            Ok(Some(Lifetime(seconds))) if seconds > 0 => Duration::from_secs(seconds.into()),
            _ => {
                let error =
                    TurnError::InvalidResponse("an Allocate success without a valid LIFETIME");
                return self.fail(Request::Allocate, error);
            }
        };
        let mapped = message
            .get::<XorMappedAddress>()
            .ok()
            .flatten()
            .map(|m| m.0);
        self.allocation = Some(Allocation {
            relayed,
            mapped,
            refresh_at: Some(later(now, refresh_delay(lifetime))),
        });
        self.state = TurnState::Allocated;
        self.events.push_back(TurnEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        });
        // Permissions and channels asked for while allocating.
        let permissions: Vec<SocketAddr> = self.permissions.iter().map(|p| p.peer).collect();
        for peer in permissions {
            self.start(now, rng, Request::CreatePermission { peer }, 0);
        }
        let channels: Vec<(SocketAddr, ChannelNumber)> =
            self.channels.iter().map(|c| (c.peer, c.number)).collect();
        for (peer, channel) in channels {
            self.start(now, rng, Request::ChannelBind { peer, channel }, 0);
        }
    }

    /// Ends a request that failed, and reports it.
    fn fail(&mut self, request: Request, error: TurnError) {
        match request {
            Request::Allocate => {
                self.reset();
                self.state = TurnState::Failed;
                self.events.push_back(TurnEvent::AllocationFailed(error));
            }
            // The allocation expires on the server anyway: whatever the answer, it is gone
            // as far as this client is concerned.
            Request::Refresh { lifetime: 0 } => {
                self.reset();
                self.state = TurnState::Deallocated;
                let gone = error.code() == Some(ErrorCode::ALLOCATION_MISMATCH.code());
                self.events.push_back(TurnEvent::Deallocated {
                    unconfirmed: (!gone).then_some(error),
                });
            }
            Request::Refresh { .. } => {
                let lost = self.allocation.take();
                self.reset();
                self.allocation = lost;
                self.state = TurnState::Failed;
                self.events.push_back(TurnEvent::RefreshFailed(error));
            }
            Request::CreatePermission { peer } => {
                self.permissions.retain(|p| p.peer != peer);
                self.events.push_back(TurnEvent::PermissionFailed {
                    peer: peer.ip(),
                    error,
                });
            }
            Request::ChannelBind { peer, channel } => {
                self.channels.retain(|c| c.number != channel);
                self.events
                    .push_back(TurnEvent::ChannelBindFailed { peer, error });
            }
        }
    }

    /// Forgets the allocation and everything that hangs on it.
    fn reset(&mut self) {
        self.allocation = None;
        self.transactions.clear();
        self.permissions.clear();
        self.channels.clear();
        self.next_channel = FIRST_CHANNEL;
    }

    fn requested_lifetime(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    /// Sends `request` in a new transaction.
    fn start(&mut self, now: Instant, rng: &mut dyn RngCore, request: Request, stale_retries: u32) {
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        let id = TransactionId::new(id);
        let Ok(bytes) = self.encode(request, id) else {
            return self.fail(request, TurnError::Encode);
        };
        self.transmits.push_back(bytes.clone());
        let timing = self.config.timing;
        // A stream delivers or breaks: no retransmission, one wait as long as UDP's whole.
        let (sent, wait) = if self.config.reliable {
            (timing.transmissions(), timing.transaction_timeout())
        } else {
            (1, timing.wait_after(1))
        };
        self.transactions.push(Transaction {
            id,
            request,
            bytes,
            sent,
            deadline: later(now, wait),
            signed: self.credentials.is_some(),
            stale_retries,
        });
    }

    /// Writes a request, signed once the server has challenged.
    ///
    /// Every request ends with FINGERPRINT: an ICE agent shares this socket with its
    /// connectivity checks and perhaps media, and FINGERPRINT is what tells STUN apart from
    /// the rest (RFC 8489 §7). The server then adds one to its answers too; eight bytes, and
    /// they grow the first Allocate enough that a server which bounds its answers to a few
    /// times the request's size can afford to offer SHA-256.
    fn encode(&self, request: Request, id: TransactionId) -> Result<Vec<u8>, WriteError> {
        let username = &self.config.username;
        let credentials_len = self
            .credentials
            .as_ref()
            .map_or(0, |c| c.encoded_len(username));
        let mut buf = vec![0u8; HEADER_LEN + 64 + credentials_len + 8];
        let message_type = MessageType::new(request.method(), Class::Request);
        let mut w = MessageWriter::new(&mut buf, message_type, id)?;
        match request {
            Request::Allocate => {
                w.add(&RequestedTransport::UDP)?;
                w.add(&Lifetime(self.requested_lifetime()))?;
            }
            Request::Refresh { lifetime } => w.add(&Lifetime(lifetime))?,
            Request::CreatePermission { peer } => w.add(&XorPeerAddress(peer))?,
            Request::ChannelBind { peer, channel } => {
                w.add(&channel)?;
                w.add(&XorPeerAddress(peer))?;
            }
        }
        if let Some(credentials) = &self.credentials {
            credentials.sign(&mut w, username)?;
        }
        w.add_fingerprint()?;
        let len = w.finish();
        buf.truncate(len);
        Ok(buf)
    }
}

/// `now + by`, saturating: lifetimes come from the network and timings from configuration,
/// and neither may make the addition panic. A year out is as good as never.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// When to refresh an allocation granted `lifetime`: a minute before it expires, so that a
/// Refresh whose first transmissions are lost (up to 39.5 s of retransmissions) still lands in
/// time, but never before half the lifetime, so that a short lifetime is not refreshed almost
/// continuously.
fn refresh_delay(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN).max(lifetime / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmission_schedule_follows_rfc_8489() {
        let timing = TurnTiming::default();
        let waits: Vec<u64> = (1..=7)
            .map(|sent| timing.wait_after(sent).as_millis() as u64)
            .collect();
        // RFC 8489 §6.2.1: sent at 0, 500, 1500, 3500, 7500, 15500 and 31500 ms, failed at
        // 39500 ms.
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 8000]);
        assert_eq!(timing.transaction_timeout(), Duration::from_millis(39_500));
        let once = TurnTiming {
            initial_rto: Duration::from_millis(100),
            max_retransmits: 0,
        };
        assert_eq!(once.transaction_timeout(), Duration::from_millis(1600));
        let huge = TurnTiming {
            initial_rto: Duration::MAX,
            max_retransmits: u32::MAX,
        };
        assert_eq!(huge.wait_after(40), Duration::MAX);
    }

    #[test]
    fn refresh_comes_a_minute_early_but_not_before_half_the_lifetime() {
        assert_eq!(
            refresh_delay(Duration::from_secs(600)),
            Duration::from_secs(540)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(100)),
            Duration::from_secs(50)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn config_debug_hides_the_password() {
        let config = TurnClientConfig::new("192.0.2.1:3478".parse().unwrap(), "alice", "hunter2");
        let text = format!("{config:?}");
        assert!(
            text.contains("alice") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
