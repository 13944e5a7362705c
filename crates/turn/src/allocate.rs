//! Allocate (RFC 8656 §7.2): relay sockets of one family or both (a dual allocation), UDP or
//! a TCP listener (RFC 6062 §5.1), the relay IP of each family, and the redirect to another
//! server when this one is full (300 Try Alternate, RFC 8489 §10).

use core::net::{IpAddr, SocketAddr};
use std::time::Instant;

use icebreaker_wire::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AlternateServer, AttrType,
    AttributeError, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorMappedAddress, XorRelayedAddress,
};
use icebreaker_wire::{ErrorCode, Message};
use rand_core::RngCore;

use crate::FiveTuple;
use crate::allocation::{ALLOCATE_RETRANSMIT_WINDOW, Allocation, Creation, Relayed, TokenBucket};
use crate::ports::{RESERVATION_LIFETIME, RelayProtocol, RelaySockets, bind_port};
use crate::quotas::QuotaExceeded;
use crate::requests::{Signer, family_of};
use crate::server::{ClientAction, Event, TurnServer};
use crate::tcp::TcpRelay;

impl TurnServer {
    pub(crate) fn allocate(
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
        // Before any redirect: a 300 to a stranger would let anyone steer clients elsewhere.
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
            return self.refuse_for_capacity(out, message, five_tuple, signer);
        }
        let tcp = match transport {
            RequestedTransport::UDP => false,
            RequestedTransport::TCP if self.config.tcp_relay => true,
            _ => {
                return self.error(
                    out,
                    message,
                    ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    signer,
                );
            }
        };
        // RFC 6062 §5.1: a TCP allocation only over a TCP or TLS control connection, and
        // without the attributes that mean nothing for a stream relay. Nor is it ever dual:
        // each relayed address is a listener of its own, named in every Connect.
        let tcp_misfit = || {
            !five_tuple.transport.is_stream()
                || [
                    AttrType::DONT_FRAGMENT,
                    AttrType::EVEN_PORT,
                    AttrType::RESERVATION_TOKEN,
                    AttrType::ADDITIONAL_ADDRESS_FAMILY,
                ]
                .into_iter()
                .any(|attr| message.has(attr))
        };
        if tcp && tcp_misfit() {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        }
        let protocol = if tcp {
            RelayProtocol::Tcp
        } else {
            RelayProtocol::Udp
        };
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
        // A token names one reserved port of one family, and a reserved neighbour has no
        // meaning for two relays of two families (RFC 8656 §7.2).
        let reserve_next = even_port.is_some_and(|e| e.reserve_next);
        let conflicting = (token.is_some()
            && (even_port.is_some() || family.is_some() || additional.is_some()))
            || (family.is_some() && additional.is_some())
            || additional.is_some_and(|a| a.0 != AddressFamily::Ipv6)
            || (additional.is_some() && reserve_next);
        if conflicting {
            return self.error(out, message, ErrorCode::BAD_REQUEST, signer);
        }

        // A dual allocation is an IPv4 relay and an IPv6 one, IPv4 first (RFC 8656 §7.2).
        let wanted = match (family, additional) {
            (Some(RequestedAddressFamily(family)), _) => family,
            (None, Some(_)) => AddressFamily::Ipv4,
            (None, None) => family_of(five_tuple.server.ip()),
        };
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
            // Another server would count the same user: no redirect.
            Err(QuotaExceeded::User) => {
                return self.error(out, message, ErrorCode::ALLOCATION_QUOTA_REACHED, signer);
            }
            Err(QuotaExceeded::Total) => {
                return self.refuse_for_capacity(out, message, five_tuple, signer);
            }
        }
        let even = even_port.is_some();
        let (relay, reserved) = match token {
            Some(ReservationToken(token)) => {
                match self
                    .quotas
                    .redeem(token, now)
                    .filter(|&addr| sockets.bind(addr))
                {
                    Some(addr) => (addr, None),
                    None => {
                        // A token is good on this server only: no redirect.
                        self.quotas.release(&auth.username);
                        return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
                    }
                }
            }
            None => match self.bind_relay(bind_ip, protocol, even, reserve_next, now, sockets) {
                Some(bound) => bound,
                None => {
                    self.quotas.release(&auth.username);
                    return self.refuse_for_capacity(out, message, five_tuple, signer);
                }
            },
        };
        let (second, additional_family_error) = match additional {
            Some(_) => match self.relay_ip(five_tuple, AddressFamily::Ipv6) {
                None => (None, Some(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED)),
                // The IPv4 half stands on its own when the IPv6 one cannot be had.
                Some((bind, advertised)) => {
                    match self.bind_relay(bind, RelayProtocol::Udp, even, false, now, sockets) {
                        Some((local, _)) => (
                            Some(Relayed {
                                local,
                                advertised: SocketAddr::new(advertised, local.port()),
                            }),
                            None,
                        ),
                        None => (None, Some(ErrorCode::INSUFFICIENT_CAPACITY)),
                    }
                }
            },
            None => (None, None),
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
            relay: Relayed {
                local: relay,
                advertised: SocketAddr::new(advertised_ip, relay.port()),
            },
            second,
            username: auth.username.clone(),
            expires: now + lifetime,
            creation: Creation {
                transaction_id: message.transaction_id(),
                at: now,
                lifetime: lifetime.as_secs() as u32,
                reservation_token,
                additional_family_error,
            },
            permissions: Vec::new(),
            channels: Vec::new(),
            dont_fragment: message.has(AttrType::DONT_FRAGMENT),
            bandwidth: TokenBucket::new(self.config.max_bandwidth, now),
            tcp: tcp.then(TcpRelay::default),
        };
        let index = self.insert(allocation);
        self.schedule_sweep(now);
        self.events.push_back(Event::AllocationCreated {
            five_tuple,
            relay,
            username: auth.username.clone(),
            lifetime,
        });
        self.allocate_success(out, message, index, signer)
    }

    /// Binds a relay port of `protocol` on `ip`, avoiding the ports of this core's allocations
    /// of either protocol (so that a relayed address names one allocation) and the ports
    /// reserved for tokens.
    fn bind_relay(
        &mut self,
        ip: IpAddr,
        protocol: RelayProtocol,
        even: bool,
        reserve_next: bool,
        now: Instant,
        sockets: &mut dyn RelaySockets,
    ) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let (by_relay, by_tcp_relay) = (&self.by_relay, &self.tcp.by_relay);
        let reserved = self.quotas.reserved(now);
        let in_use = |addr: SocketAddr| {
            by_relay.contains_key(&addr)
                || by_tcp_relay.contains_key(&addr)
                || reserved.contains(&addr)
        };
        bind_port(
            ip,
            &self.config.relay_ports,
            protocol,
            even,
            reserve_next,
            &in_use,
            &mut *self.rng,
            sockets,
        )
    }

    /// The relay IP to bind and to advertise for a relay of `family` requested on
    /// `five_tuple`: the configured relay address of that family, or else the server address
    /// the client reached when it is of that family, or else the fallback of that family.
    fn relay_ip(&self, five_tuple: FiveTuple, family: AddressFamily) -> Option<(IpAddr, IpAddr)> {
        let usable = |ip: &IpAddr| family_of(*ip) == family && !ip.is_unspecified();
        self.config
            .relay
            .iter()
            .find(|r| family_of(r.bind) == family)
            .map(|r| (r.bind, r.advertised))
            .or_else(|| {
                let ip = five_tuple.server.ip();
                usable(&ip).then_some((ip, ip))
            })
            .or_else(|| {
                let ip = self.config.family_fallback.iter().copied().find(usable)?;
                Some((ip, ip))
            })
    }

    /// Answers an Allocate this server has no room for: 300 towards another server of the
    /// fleet when there is one, so that the client need not give up, else 508.
    fn refuse_for_capacity(
        &mut self,
        out: &mut [u8],
        message: &Message<'_>,
        five_tuple: FiveTuple,
        signer: Signer<'_>,
    ) -> ClientAction {
        match self.next_alternate_server(five_tuple.server) {
            Some(alternate) => {
                self.respond(out, message, Some(ErrorCode::TRY_ALTERNATE), signer, |w| {
                    w.add(&AlternateServer(alternate))
                })
            }
            None => self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer),
        }
    }

    /// The alternate server for the next redirected client that reached `server`: in turn
    /// among those of its family, so that the load spreads, or among all when none is of it.
    fn next_alternate_server(&mut self, server: SocketAddr) -> Option<SocketAddr> {
        let alternates = &self.config.alternate_servers;
        let same_family = |a: &&SocketAddr| a.is_ipv4() == server.is_ipv4();
        let of_family = alternates.iter().filter(same_family).count();
        let candidates = if of_family > 0 {
            of_family
        } else {
            alternates.len()
        };
        if candidates == 0 {
            return None;
        }
        let turn = &mut self.next_alternate[usize::from(server.is_ipv6())];
        let at = *turn % candidates;
        *turn = at + 1;
        if of_family > 0 {
            alternates.iter().filter(same_family).nth(at).copied()
        } else {
            alternates.get(at).copied()
        }
    }

    /// The success answer to the Allocate that made allocation `index`, identical for its
    /// retransmissions: the relayed addresses (IPv4 first), why an IPv6 half is missing, the
    /// lifetime granted, the reservation token and the client's mapped address.
    pub(crate) fn allocate_success(
        &mut self,
        out: &mut [u8],
        message: &Message<'_>,
        index: usize,
        signer: Signer<'_>,
    ) -> ClientAction {
        let Some(allocation) = self.allocations.get(index).and_then(Option::as_ref) else {
            return ClientAction::Drop;
        };
        let relayed = XorRelayedAddress(allocation.relay.advertised);
        let second = allocation
            .second
            .map(|second| XorRelayedAddress(second.advertised));
        let client = XorMappedAddress(allocation.five_tuple.client);
        let creation = allocation.creation.clone();
        self.respond(out, message, None, signer, |w| {
            w.add(&relayed)?;
            if let Some(second) = second {
                w.add(&second)?;
            }
            if let Some(code) = creation.additional_family_error {
                w.add(&AddressErrorCode {
                    family: AddressFamily::Ipv6,
                    code,
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
}
