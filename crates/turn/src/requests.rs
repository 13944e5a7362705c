//! The TURN requests: Allocate (RFC 8656 §7), Refresh (§8), CreatePermission (§10) and
//! ChannelBind (§12), and how their answers are written.

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AttrType, AttributeError,
    ErrorCodeAttribute, EvenPort, Lifetime, Nonce, PasswordAlgorithms, Realm,
    RequestedAddressFamily, RequestedTransport, ReservationToken, Software, UnknownAttributes,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::{
    ChannelNumber, ErrorCode, IntegrityAlgorithm, Message, MessageWriter, Method, WriteError,
};

use crate::FiveTuple;
use crate::allocation::{
    ALLOCATE_RETRANSMIT_WINDOW, Allocation, CHANNEL_LIFETIME, Channel, Creation, TokenBucket,
};
use crate::auth::{AuthFailure, Authenticated, OFFERED_ALGORITHMS};
use crate::ports::{RESERVATION_LIFETIME, RelaySockets, bind_port};
use crate::quotas::QuotaExceeded;
use crate::server::{ClientAction, DeleteReason, Event, TurnServer};

/// Most unknown comprehension-required attributes listed in one 420.
const MAX_UNKNOWN: usize = 16;

/// How a response is signed: not at all before authentication, with the request's key and
/// algorithm after.
type Signer<'a> = Option<&'a Authenticated>;

fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Ipv4
    } else {
        AddressFamily::Ipv6
    }
}

impl TurnServer {
    pub(crate) fn request(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
        out: &mut [u8],
        sockets: &mut dyn RelaySockets,
    ) -> ClientAction {
        let mut unknown = [AttrType(0); MAX_UNKNOWN];
        let mut unknown_len = 0;
        for attr_type in message.unknown_comprehension_required() {
            if unknown_len < MAX_UNKNOWN && !unknown[..unknown_len].contains(&attr_type) {
                unknown[unknown_len] = attr_type;
                unknown_len += 1;
            }
        }
        if unknown_len > 0 {
            let list = UnknownAttributes::new(&unknown[..unknown_len]);
            return self.respond(
                out,
                message,
                Some(ErrorCode::UNKNOWN_ATTRIBUTE),
                None,
                |w| w.add(&list),
            );
        }
        match message.method() {
            Method::ALLOCATE => self.allocate(now, five_tuple, message, out, sockets),
            method @ (Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND) => {
                // Without an allocation there is nothing to authenticate against: answer
                // before spending an HMAC on a stranger (RFC 8656 §5).
                let Some(&index) = self.by_five_tuple.get(&five_tuple) else {
                    return self.error(out, message, ErrorCode::ALLOCATION_MISMATCH, None);
                };
                let auth = match self.authenticate(now, five_tuple, message) {
                    Ok(auth) => auth,
                    Err(failure) => return self.auth_error(now, five_tuple, message, out, failure),
                };
                let same_user = self.allocations[index]
                    .as_ref()
                    .is_some_and(|a| a.username == auth.username);
                if !same_user {
                    return self.error(out, message, ErrorCode::WRONG_CREDENTIALS, Some(&auth));
                }
                match method {
                    Method::REFRESH => self.refresh(now, index, message, out, &auth, sockets),
                    Method::CREATE_PERMISSION => {
                        self.create_permission(now, index, message, out, &auth)
                    }
                    _ => self.channel_bind(now, index, message, out, &auth),
                }
            }
            _ => self.error(out, message, ErrorCode::BAD_REQUEST, None),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
        out: &mut [u8],
        sockets: &mut dyn RelaySockets,
    ) -> ClientAction {
        // A missing REQUESTED-TRANSPORT is refused before authentication: a bare 400 is smaller
        // than the 401 challenge, which keeps the smallest request's answer small.
        let transport = match message.get::<RequestedTransport>() {
            Ok(Some(transport)) => transport,
            _ => return self.error(out, message, ErrorCode::BAD_REQUEST, None),
        };
        let auth = match self.authenticate(now, five_tuple, message) {
            Ok(auth) => auth,
            Err(failure) => return self.auth_error(now, five_tuple, message, out, failure),
        };
        let signer = Some(&auth);
        if let Some(&index) = self.by_five_tuple.get(&five_tuple) {
            let retransmission = self.allocations[index].as_ref().is_some_and(|a| {
                a.creation.transaction_id == message.transaction_id()
                    && now < a.creation.at + ALLOCATE_RETRANSMIT_WINDOW
            });
            if retransmission {
                return self.allocate_success(out, message, index, signer);
            }
            return self.error(out, message, ErrorCode::ALLOCATION_MISMATCH, signer);
        }
        if self.draining {
            return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
        }
        if transport != RequestedTransport::UDP {
            return self.error(
                out,
                message,
                ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                signer,
            );
        }
        let (token, even_port, family, additional, lifetime) = match (
            message.get::<ReservationToken>(),
            message.get::<EvenPort>(),
            message.get::<RequestedAddressFamily>(),
            message.get::<AdditionalAddressFamily>(),
            message.get::<Lifetime>(),
        ) {
            (_, _, Err(AttributeError::UnknownAddressFamily { .. }), _, _) => {
                return self.error(
                    out,
                    message,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    signer,
                );
            }
            (Ok(t), Ok(e), Ok(f), Ok(a), Ok(l)) => (t, e, f, a, l),
            _ => return self.error(out, message, ErrorCode::BAD_REQUEST, signer),
        };
        let conflicting = (token.is_some() && (even_port.is_some() || family.is_some()))
            || (family.is_some() && additional.is_some())
            || additional.is_some_and(|a| a.0 != AddressFamily::Ipv6);
        if conflicting {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        }

        let wanted = family.map_or(family_of(five_tuple.server.ip()), |f| f.0);
        let Some((bind_ip, advertised_ip)) = self.relay_ip(five_tuple, wanted) else {
            return self.error(
                out,
                message,
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                signer,
            );
        };
        match self.quotas.acquire(&auth.username) {
            Ok(()) => {}
            Err(QuotaExceeded::User) => {
                return self.error(out, message, ErrorCode::ALLOCATION_QUOTA_REACHED, signer);
            }
            Err(QuotaExceeded::Total) => {
                return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
            }
        }
        let bound = match token {
            Some(ReservationToken(token)) => self
                .quotas
                .redeem(token, now)
                .filter(|&addr| sockets.bind(addr))
                .map(|addr| (addr, None)),
            None => {
                let by_relay = &self.by_relay;
                let reserved = self.quotas.reserved(now);
                let in_use =
                    |addr: SocketAddr| by_relay.contains_key(&addr) || reserved.contains(&addr);
                let reserve_next = even_port.is_some_and(|e| e.reserve_next);
                bind_port(
                    bind_ip,
                    &self.config.relay_ports,
                    even_port.is_some(),
                    reserve_next,
                    &in_use,
                    &mut *self.rng,
                    sockets,
                )
            }
        };
        let Some((relay, reserved)) = bound else {
            self.quotas.release(&auth.username);
            return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
        };
        let reservation_token = reserved.map(|addr| {
            let mut token = [0u8; 8];
            self.rng.fill_bytes(&mut token);
            self.quotas.reserve(token, addr, now + RESERVATION_LIFETIME);
            token
        });
        let lifetime = self.lifetime(lifetime);
        let allocation = Allocation {
            five_tuple,
            relay,
            advertised: SocketAddr::new(advertised_ip, relay.port()),
            username: auth.username.clone(),
            expires: now + lifetime,
            creation: Creation {
                transaction_id: message.transaction_id(),
                at: now,
                lifetime: lifetime.as_secs() as u32,
                reservation_token,
                additional_family_refused: additional.is_some(),
            },
            permissions: Vec::new(),
            channels: Vec::new(),
            dont_fragment: message.has(AttrType::DONT_FRAGMENT),
            bandwidth: TokenBucket::new(self.config.max_bandwidth, now),
        };
        self.insert(allocation);
        self.schedule_sweep(now);
        self.events.push_back(Event::AllocationCreated {
            five_tuple,
            relay,
            username: auth.username.clone(),
            lifetime,
        });
        let index = self
            .by_five_tuple
            .get(&five_tuple)
            .copied()
            .unwrap_or(usize::MAX);
        self.allocate_success(out, message, index, signer)
    }

    /// The relay IP to bind and to advertise for an allocation of `family` requested on
    /// `five_tuple`: the configured relay address of that family, or else the server address
    /// the client reached, when it is of that family.
    fn relay_ip(&self, five_tuple: FiveTuple, family: AddressFamily) -> Option<(IpAddr, IpAddr)> {
        self.config
            .relay
            .iter()
            .find(|r| family_of(r.bind) == family)
            .map(|r| (r.bind, r.advertised))
            .or_else(|| {
                let ip = five_tuple.server.ip();
                (family_of(ip) == family && !ip.is_unspecified()).then_some((ip, ip))
            })
    }

    /// The lifetime granted for a requested one: at most the maximum, at least the default
    /// (RFC 8656 §7.2).
    fn lifetime(&self, requested: Option<Lifetime>) -> Duration {
        let requested = requested.map_or(Duration::ZERO, |l| Duration::from_secs(l.0.into()));
        requested
            .min(self.config.max_lifetime)
            .max(self.config.default_lifetime)
    }

    fn allocate_success(
        &mut self,
        out: &mut [u8],
        message: &Message<'_>,
        index: usize,
        signer: Signer<'_>,
    ) -> ClientAction {
        let Some(allocation) = self.allocations.get(index).and_then(Option::as_ref) else {
            return ClientAction::Drop;
        };
        let relayed = XorRelayedAddress(allocation.advertised);
        let client = XorMappedAddress(allocation.five_tuple.client);
        let creation = allocation.creation.clone();
        self.respond(out, message, None, signer, |w| {
            w.add(&relayed)?;
            if creation.additional_family_refused {
                w.add(&AddressErrorCode {
                    family: AddressFamily::Ipv6,
                    code: ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    reason: "",
                })?;
            }
            w.add(&Lifetime(creation.lifetime))?;
            if let Some(token) = creation.reservation_token {
                w.add(&ReservationToken(token))?;
            }
            w.add(&client)
        })
    }

    fn refresh(
        &mut self,
        now: Instant,
        index: usize,
        message: &Message<'_>,
        out: &mut [u8],
        auth: &Authenticated,
        sockets: &mut dyn RelaySockets,
    ) -> ClientAction {
        let signer = Some(auth);
        let Some(allocation) = self.allocations[index].as_ref() else {
            return ClientAction::Drop;
        };
        let (five_tuple, relay) = (allocation.five_tuple, allocation.relay);
        let requested = match (
            message.get::<Lifetime>(),
            message.get::<RequestedAddressFamily>(),
        ) {
            (Ok(lifetime), Ok(family)) => {
                if family.is_some_and(|f| f.0 != family_of(relay.ip())) {
                    return self.error(
                        out,
                        message,
                        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                        signer,
                    );
                }
                lifetime
            }
            (_, Err(AttributeError::UnknownAddressFamily { .. })) => {
                return self.error(
                    out,
                    message,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    signer,
                );
            }
            _ => return self.error(out, message, ErrorCode::BAD_REQUEST, signer),
        };
        if requested == Some(Lifetime(0)) {
            self.delete(index, DeleteReason::Refresh, sockets);
            return self.respond(out, message, None, signer, |w| w.add(&Lifetime(0)));
        }
        let lifetime = self.lifetime(requested);
        if let Some(allocation) = self.allocations[index].as_mut() {
            allocation.expires = now + lifetime;
        }
        self.events.push_back(Event::AllocationRefreshed {
            five_tuple,
            relay,
            lifetime,
        });
        let seconds = lifetime.as_secs() as u32;
        self.respond(out, message, None, signer, |w| w.add(&Lifetime(seconds)))
    }

    /// Checks a peer of a CreatePermission or ChannelBind: same family as the relay (443), and
    /// allowed by the policy (403).
    fn check_peer(&mut self, index: usize, peer: SocketAddr) -> Result<(), ErrorCode> {
        let Some(allocation) = self.allocations[index].as_ref() else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        if allocation.relay.is_ipv4() != peer.is_ipv4() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if let Err(reason) = self.config.peer_policy.check(peer) {
            self.events.push_back(Event::PeerDenied {
                five_tuple: allocation.five_tuple,
                peer,
                reason,
            });
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        index: usize,
        message: &Message<'_>,
        out: &mut [u8],
        auth: &Authenticated,
    ) -> ClientAction {
        let signer = Some(auth);
        let mut peers = [SocketAddr::from(([0, 0, 0, 0], 0)); 16];
        let mut count = 0;
        for peer in message.get_all::<XorPeerAddress>() {
            let Ok(XorPeerAddress(peer)) = peer else {
                return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
            };
            if count == peers.len() {
                return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
            }
            peers[count] = peer;
            count += 1;
        }
        if count == 0 {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        }
        // All or nothing: every peer is checked before any permission is installed.
        for &peer in &peers[..count] {
            if let Err(code) = self.check_peer(index, peer) {
                return self.error(out, message, code, signer);
            }
        }
        let max = self.config.max_permissions;
        let Some(allocation) = self.allocations[index].as_mut() else {
            return ClientAction::Drop;
        };
        let mut new_ips = 0;
        for (i, peer) in peers[..count].iter().enumerate() {
            let ip = peer.ip();
            let seen_before = peers[..i].iter().any(|p| p.ip() == ip);
            if !seen_before && !allocation.permissions.iter().any(|(p, _)| *p == ip) {
                new_ips += 1;
            }
        }
        if allocation.permissions.len() + new_ips > max {
            return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
        }
        for peer in &peers[..count] {
            allocation.permit(peer.ip(), now, max);
        }
        self.respond(out, message, None, signer, |_| Ok(()))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        index: usize,
        message: &Message<'_>,
        out: &mut [u8],
        auth: &Authenticated,
    ) -> ClientAction {
        let signer = Some(auth);
        let (Some(number), Ok(Some(XorPeerAddress(peer)))) = (
            self.channel_number(message),
            message.get::<XorPeerAddress>(),
        ) else {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        };
        if let Err(code) = self.check_peer(index, peer) {
            return self.error(out, message, code, signer);
        }
        let (max_channels, max_permissions) =
            (self.config.max_channels, self.config.max_permissions);
        let Some(allocation) = self.allocations[index].as_mut() else {
            return ClientAction::Drop;
        };
        // A channel, live or in its quarantine, stays with its peer and a peer with its channel
        // (RFC 8656 §12.2).
        let by_number = allocation.channels.iter().position(|c| c.number == number);
        let by_peer = allocation.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => {
                if allocation.channels.len() >= max_channels
                    || !allocation.has_room_for_permission(peer.ip(), max_permissions)
                {
                    return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
                }
            }
            _ => return self.error(out, message, ErrorCode::BAD_REQUEST, signer),
        }
        let expires = now + CHANNEL_LIFETIME;
        match by_number {
            Some(at) => allocation.channels[at].expires = expires,
            None => allocation.channels.push(Channel {
                number,
                peer,
                expires,
            }),
        }
        allocation.permit(peer.ip(), now, max_permissions);
        self.respond(out, message, None, signer, |_| Ok(()))
    }

    /// The CHANNEL-NUMBER of a ChannelBind, if present, well formed and in the configured
    /// range (RFC 8656 §12.2: otherwise 400).
    fn channel_number(&self, message: &Message<'_>) -> Option<ChannelNumber> {
        let value: [u8; 4] = message
            .raw(AttrType::CHANNEL_NUMBER)?
            .value
            .try_into()
            .ok()?;
        ChannelNumber::new_in(
            u16::from_be_bytes([value[0], value[1]]),
            self.config.channel_range,
        )
    }

    /// Answers an authentication failure: 401 or 438 with a fresh nonce, 400, or nothing.
    pub(crate) fn auth_error(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
        out: &mut [u8],
        failure: AuthFailure,
    ) -> ClientAction {
        let Some(code) = failure.error_code() else {
            return ClientAction::Drop;
        };
        if code == ErrorCode::BAD_REQUEST {
            return self.error(out, message, code, None);
        }
        // Announce PASSWORD-ALGORITHMS (RFC 8489 §9.2) only when the answer stays within three
        // times the request: a spoofed small request must not buy a big answer.
        let unix_now = self.unix_now(now);
        let mut announce = true;
        loop {
            let nonce = self.auth.nonce(five_tuple.client, unix_now, announce);
            let realm = Realm(self.auth.realm());
            let action = self.respond(out, message, Some(code), None, |w| {
                w.add(&realm)?;
                w.add(&Nonce(nonce.as_str()))?;
                if announce {
                    w.add(&PasswordAlgorithms::new(&OFFERED_ALGORITHMS))?;
                }
                Ok(())
            });
            match action {
                ClientAction::Reply(len) if announce && len > 3 * message.len() => {
                    announce = false;
                }
                action => return action,
            }
        }
    }

    pub(crate) fn error(
        &mut self,
        out: &mut [u8],
        message: &Message<'_>,
        code: ErrorCode,
        signer: Signer<'_>,
    ) -> ClientAction {
        self.respond(out, message, Some(code), signer, |_| Ok(()))
    }

    /// Writes the answer to `message`: ERROR-CODE with no reason phrase when `error` is set,
    /// the attributes `body` adds, SOFTWARE if configured, the integrity attribute the request
    /// used when `signer` is set, and FINGERPRINT when the request had one.
    pub(crate) fn respond(
        &self,
        out: &mut [u8],
        message: &Message<'_>,
        error: Option<ErrorCode>,
        signer: Signer<'_>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    ) -> ClientAction {
        let message_type = match error {
            Some(_) => message.message_type().error(),
            None => message.message_type().success(),
        };
        let written =
            MessageWriter::new(out, message_type, message.transaction_id()).and_then(|mut w| {
                if let Some(code) = error {
                    w.add(&ErrorCodeAttribute::bare(code))?;
                }
                body(&mut w)?;
                if let Some(software) = &self.config.software {
                    w.add(&Software(software))?;
                }
                match signer {
                    Some(auth) if auth.algorithm == IntegrityAlgorithm::Sha256 => {
                        w.add_message_integrity_sha256(&auth.key)?;
                    }
                    Some(auth) => w.add_message_integrity(&auth.key)?,
                    None => {}
                }
                if message.fingerprint_offset().is_some() {
                    w.add_fingerprint()?;
                }
                Ok(w.finish())
            });
        match written {
            Ok(len) => ClientAction::Reply(len),
            Err(_) => ClientAction::Drop,
        }
    }
}
