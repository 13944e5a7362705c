//! The TURN requests: their dispatch, Refresh (RFC 8656 §8), CreatePermission (§10) and
//! ChannelBind (§12), and how answers are written. Allocate (§7) and the requests of TCP
//! allocations (RFC 6062: Connect, ConnectionBind) have their own modules.

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{
    AddressFamily, AttrType, AttributeError, ErrorCodeAttribute, Lifetime, Nonce,
    PasswordAlgorithms, Realm, RequestedAddressFamily, Software, UnknownAttributes, XorPeerAddress,
};
use icebreaker_wire::{
    ChannelNumber, ErrorCode, IntegrityAlgorithm, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId, WriteError,
};

use crate::allocation::{CHANNEL_LIFETIME, Channel};
use crate::auth::{AuthFailure, Authenticated, OFFERED_ALGORITHMS};
use crate::ports::RelaySockets;
use crate::server::{ClientAction, DeleteReason, Event, TurnServer};
use crate::{ClientTransport, FiveTuple};

/// Most unknown comprehension-required attributes listed in one 420.
const MAX_UNKNOWN: usize = 16;

/// How a response is signed: not at all before authentication, with the request's key and
/// algorithm after.
pub(crate) type Signer<'a> = Option<&'a Authenticated>;

pub(crate) fn family_of(ip: IpAddr) -> AddressFamily {
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
            // A new client connection that is to become a data connection: it holds no
            // allocation, its CONNECTION-ID names one (RFC 6062 §5.4).
            Method::CONNECTION_BIND => self.connection_bind(now, five_tuple, message, out),
            method @ (Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT) => {
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
                    Method::CONNECT => self.connect(now, index, message, out, &auth),
                    _ => self.channel_bind(now, index, message, out, &auth),
                }
            }
            _ => self.error(out, message, ErrorCode::BAD_REQUEST, None),
        }
    }

    /// The lifetime granted for a requested one: at most the maximum, at least the default
    /// (RFC 8656 §7.2).
    pub(crate) fn lifetime(&self, requested: Option<Lifetime>) -> Duration {
        let requested = requested.map_or(Duration::ZERO, |l| Duration::from_secs(l.0.into()));
        requested
            .min(self.config.max_lifetime)
            .max(self.config.default_lifetime)
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
        let (five_tuple, relay, second) = (
            allocation.five_tuple,
            allocation.relay.local,
            allocation.second,
        );
        // Both relays of a dual allocation share one lifetime: a Refresh that names either
        // family refreshes, or deletes, the allocation as a whole. Only a family it lacks is
        // refused (RFC 8656 §8.2).
        let holds = |family: AddressFamily| {
            family_of(relay.ip()) == family
                || second.is_some_and(|second| family_of(second.local.ip()) == family)
        };
        let requested = match (
            message.get::<Lifetime>(),
            message.get::<RequestedAddressFamily>(),
        ) {
            (Ok(lifetime), Ok(family)) => {
                if family.is_some_and(|RequestedAddressFamily(family)| !holds(family)) {
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

    /// Checks a peer of a CreatePermission, ChannelBind or Connect: of the family of one of the
    /// relays (443), and allowed by the policy (403).
    pub(crate) fn check_peer(&mut self, index: usize, peer: SocketAddr) -> Result<(), ErrorCode> {
        let Some(allocation) = self.allocations[index].as_ref() else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        if allocation.relay_for(peer).is_none() {
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
        // A TCP allocation relays over its connections only (RFC 6062).
        if self.allocations[index]
            .as_ref()
            .is_some_and(|a| a.tcp.is_some())
        {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        }
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
            return if five_tuple.transport == ClientTransport::Udp {
                ClientAction::Drop
            } else {
                ClientAction::Close
            };
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
        let written = self.write_response(
            out,
            message_type,
            message.transaction_id(),
            error,
            signer.map(|auth| (&auth.key, auth.algorithm)),
            message.fingerprint_offset().is_some(),
            body,
        );
        match written {
            Ok(len) => ClientAction::Reply(len),
            Err(_) => ClientAction::Drop,
        }
    }

    /// Writes a response of `message_type`: ERROR-CODE with no reason phrase when `error` is
    /// set, the attributes `body` adds, SOFTWARE if configured, the integrity attribute of
    /// `algorithm` with `key` when one is given, and FINGERPRINT when asked. Also for answers
    /// written after the request is gone (a Connect's, RFC 6062 §5.2).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_response(
        &self,
        out: &mut [u8],
        message_type: MessageType,
        transaction_id: TransactionId,
        error: Option<ErrorCode>,
        key: Option<(&IntegrityKey, IntegrityAlgorithm)>,
        fingerprint: bool,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    ) -> Result<usize, WriteError> {
        let mut w = MessageWriter::new(out, message_type, transaction_id)?;
        if let Some(code) = error {
            w.add(&ErrorCodeAttribute::bare(code))?;
        }
        body(&mut w)?;
        if let Some(software) = &self.config.software {
            w.add(&Software(software))?;
        }
        match key {
            Some((key, IntegrityAlgorithm::Sha256)) => w.add_message_integrity_sha256(key)?,
            Some((key, IntegrityAlgorithm::Sha1)) => w.add_message_integrity(key)?,
            None => {}
        }
        if fingerprint {
            w.add_fingerprint()?;
        }
        Ok(w.finish())
    }
}
