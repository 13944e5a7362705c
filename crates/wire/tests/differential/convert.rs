//! Writing a case with each codec, and checking what each decoded against the case.

use super::*;

pub(crate) fn write_icebreaker(writer: &mut MessageWriter<'_>, spec: &Spec) {
    let written = match spec {
        Spec::XorMappedAddress(a) => writer.add(&ib::XorMappedAddress(*a)),
        Spec::MappedAddress(a) => writer.add(&ib::MappedAddress(*a)),
        Spec::XorPeerAddress(a) => writer.add(&ib::XorPeerAddress(*a)),
        Spec::XorRelayedAddress(a) => writer.add(&ib::XorRelayedAddress(*a)),
        Spec::AlternateServer(a) => writer.add(&ib::AlternateServer(*a)),
        Spec::ResponseOrigin(a) => writer.add(&ib::ResponseOrigin(*a)),
        Spec::OtherAddress(a) => writer.add(&ib::OtherAddress(*a)),
        Spec::Username(s) => writer.add(&ib::Username(s)),
        Spec::Realm(s) => writer.add(&ib::Realm(s)),
        Spec::Nonce(s) => writer.add(&ib::Nonce(s)),
        Spec::Software(s) => writer.add(&ib::Software(s)),
        Spec::ErrorCode(code, reason) => writer.add(&ib::ErrorCodeAttribute {
            code: error_code(*code),
            reason,
        }),
        Spec::UnknownAttributes(types) => {
            let types: Vec<AttrType> = types.iter().copied().map(AttrType).collect();
            writer.add(&ib::UnknownAttributes::new(&types))
        }
        Spec::UserHash(user, realm) => writer.add(&ib::UserHash(user_hash(user, realm))),
        Spec::PasswordAlgorithm(algorithm, parameters) => writer.add(&ib::PasswordAlgorithm {
            algorithm: *algorithm,
            parameters,
        }),
        Spec::PasswordAlgorithms(list) => {
            let list: Vec<ib::PasswordAlgorithm<'_>> = list
                .iter()
                .map(|(algorithm, parameters)| ib::PasswordAlgorithm {
                    algorithm: *algorithm,
                    parameters,
                })
                .collect();
            writer.add(&ib::PasswordAlgorithms::new(&list))
        }
        Spec::Lifetime(v) => writer.add(&ib::Lifetime(*v)),
        Spec::ChannelNumber(n) => {
            writer.add(&ChannelNumber::new(*n).expect("generated in 0x4000..=0x4FFF"))
        }
        Spec::Data(d) => writer.add(&ib::Data(d)),
        Spec::RequestedTransport(p) => writer.add(&ib::RequestedTransport(*p)),
        Spec::RequestedAddressFamily(f) => writer.add(&ib::RequestedAddressFamily(*f)),
        Spec::AdditionalAddressFamily(f) => writer.add(&ib::AdditionalAddressFamily(*f)),
        Spec::EvenPort(reserve_next) => writer.add(&ib::EvenPort {
            reserve_next: *reserve_next,
        }),
        Spec::DontFragment => writer.add(&ib::DontFragment),
        Spec::ReservationToken(t) => writer.add(&ib::ReservationToken(*t)),
        Spec::AddressErrorCode(family, code, reason) => writer.add(&ib::AddressErrorCode {
            family: *family,
            code: error_code(*code),
            reason,
        }),
        Spec::Icmp(icmp_type, code, error_data) => writer.add(&ib::Icmp {
            icmp_type: *icmp_type,
            code: *code,
            error_data: *error_data,
        }),
        Spec::Priority(v) => writer.add(&ib::Priority(*v)),
        Spec::UseCandidate => writer.add(&ib::UseCandidate),
        Spec::IceControlled(v) => writer.add(&ib::IceControlled(*v)),
        Spec::IceControlling(v) => writer.add(&ib::IceControlling(*v)),
        Spec::ChangeRequest {
            change_ip,
            change_port,
        } => writer.add(&ib::ChangeRequest {
            change_ip: *change_ip,
            change_port: *change_port,
        }),
        Spec::ResponsePort(p) => writer.add(&ib::ResponsePort(*p)),
        Spec::Padding(p) => writer.add(&ib::Padding(p)),
    };
    written.expect("the buffer holds every generated message");
}

pub(crate) fn stun_rs_algorithm(algorithm: u16, parameters: &[u8]) -> ss::PasswordAlgorithm {
    let parameters = (!parameters.is_empty()).then_some(parameters);
    ss::PasswordAlgorithm::new(Algorithm::new(AlgorithmId::from(algorithm), parameters))
}

pub(crate) fn to_stun_rs(spec: &Spec) -> StunAttribute {
    match spec {
        Spec::XorMappedAddress(a) => ss::XorMappedAddress::from(*a).into(),
        Spec::MappedAddress(a) => ss::MappedAddress::from(*a).into(),
        Spec::XorPeerAddress(a) => st::XorPeerAddress::from(*a).into(),
        Spec::XorRelayedAddress(a) => st::XorRelayedAddress::from(*a).into(),
        Spec::AlternateServer(a) => ss::AlternateServer::from(*a).into(),
        Spec::ResponseOrigin(a) => sd::ResponseOrigin::from(*a).into(),
        Spec::OtherAddress(a) => sd::OtherAddress::from(*a).into(),
        Spec::Username(s) => ss::UserName::new(s).expect("OpaqueString identity").into(),
        Spec::Realm(s) => ss::Realm::new(s).expect("quoted-string identity").into(),
        Spec::Nonce(s) => ss::Nonce::new(s).expect("quoted-string identity").into(),
        Spec::Software(s) => ss::Software::new(s.as_str()).expect("short").into(),
        Spec::ErrorCode(code, reason) => {
            ss::ErrorCode::new(stun_rs_error_code(*code, reason)).into()
        }
        Spec::UnknownAttributes(types) => ss::UnknownAttributes::from(&types[..]).into(),
        Spec::UserHash(user, realm) => ss::UserHash::new(user, realm)
            .expect("OpaqueString identity")
            .into(),
        Spec::PasswordAlgorithm(algorithm, parameters) => {
            stun_rs_algorithm(*algorithm, parameters).into()
        }
        Spec::PasswordAlgorithms(list) => ss::PasswordAlgorithms::from(
            list.iter()
                .map(|(algorithm, parameters)| stun_rs_algorithm(*algorithm, parameters))
                .collect::<Vec<_>>(),
        )
        .into(),
        Spec::Lifetime(v) => st::LifeTime::new(*v).into(),
        Spec::ChannelNumber(n) => st::ChannelNumber::new(*n).into(),
        Spec::Data(d) => st::Data::new(d).into(),
        Spec::RequestedTransport(p) => {
            assert_eq!(*p, 17, "stun-rs can only write UDP");
            st::RequestedTrasport::new(stun_rs::protocols::UDP).into()
        }
        Spec::RequestedAddressFamily(f) => {
            st::RequestedAddressFamily::new(stun_rs_family(*f)).into()
        }
        Spec::AdditionalAddressFamily(f) => {
            st::AdditionalAddressFamily::new(stun_rs_family(*f)).into()
        }
        Spec::EvenPort(reserve) => st::EvenPort::new(*reserve).into(),
        Spec::DontFragment => st::DontFragment::default().into(),
        Spec::ReservationToken(t) => st::ReservationToken::from(*t).into(),
        Spec::AddressErrorCode(family, code, reason) => {
            st::AddressErrorCode::new(stun_rs_family(*family), stun_rs_error_code(*code, reason))
                .into()
        }
        Spec::Icmp(icmp_type, code, error_data) => st::Icmp::new(
            st::IcmpType::new(*icmp_type).expect("generated in 0..128"),
            st::IcmpCode::new(*code).expect("generated in 0..512"),
            error_data.to_be_bytes(),
        )
        .into(),
        Spec::Priority(v) => si::Priority::new(*v).into(),
        Spec::UseCandidate => si::UseCandidate::default().into(),
        Spec::IceControlled(v) => si::IceControlled::new(*v).into(),
        Spec::IceControlling(v) => si::IceControlling::new(*v).into(),
        Spec::ChangeRequest {
            change_ip,
            change_port,
        } => {
            let flags = match (*change_ip, *change_port) {
                (true, true) => Some(ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort),
                (true, false) => Some(ChangeRequestFlags::ChangeIp.into()),
                (false, true) => Some(ChangeRequestFlags::ChangePort.into()),
                (false, false) => None,
            };
            sd::ChangeRequest::new(flags).into()
        }
        Spec::ResponsePort(p) => sd::ResponsePort::new(*p).into(),
        Spec::Padding(p) => sd::Padding::new(String::from_utf8(p.clone()).expect("ASCII"))
            .expect("short")
            .into(),
    }
}

pub(crate) fn check_stun_rs_algorithm(
    algorithm: u16,
    parameters: &[u8],
    decoded: &ss::PasswordAlgorithm,
) {
    assert_eq!(u16::from(decoded.algorithm()), algorithm);
    assert_eq!(decoded.parameters().unwrap_or(&[]), parameters);
}

/// Checks that stun-rs decoded `attr` to the value `spec` was written with.
pub(crate) fn check_stun_rs(spec: &Spec, attr: &StunAttribute) {
    match (spec, attr) {
        (Spec::XorMappedAddress(a), StunAttribute::XorMappedAddress(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::MappedAddress(a), StunAttribute::MappedAddress(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::XorPeerAddress(a), StunAttribute::XorPeerAddress(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::XorRelayedAddress(a), StunAttribute::XorRelayedAddress(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::AlternateServer(a), StunAttribute::AlternateServer(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::ResponseOrigin(a), StunAttribute::ResponseOrigin(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::OtherAddress(a), StunAttribute::OtherAddress(x)) => {
            assert_eq!(x.socket_address(), a);
        }
        (Spec::Username(s), StunAttribute::UserName(x)) => assert_eq!(x.as_str(), s),
        (Spec::Realm(s), StunAttribute::Realm(x)) => assert_eq!(x.as_str(), s),
        (Spec::Nonce(s), StunAttribute::Nonce(x)) => assert_eq!(x.as_str(), s),
        (Spec::Software(s), StunAttribute::Software(x)) => assert_eq!(x.as_str(), s),
        (Spec::ErrorCode(code, reason), StunAttribute::ErrorCode(x)) => {
            let x = x.error_code();
            assert_eq!((x.error_code(), x.reason()), (*code, reason.as_str()));
        }
        (Spec::UnknownAttributes(types), StunAttribute::UnknownAttributes(x)) => {
            assert_eq!(x.attributes(), &types[..]);
        }
        (Spec::UserHash(user, realm), StunAttribute::UserHash(x)) => {
            assert_eq!(x.hash(), &user_hash(user, realm)[..]);
        }
        (Spec::PasswordAlgorithm(algorithm, parameters), StunAttribute::PasswordAlgorithm(x)) => {
            check_stun_rs_algorithm(*algorithm, parameters, x);
        }
        (Spec::PasswordAlgorithms(list), StunAttribute::PasswordAlgorithms(x)) => {
            assert_eq!(x.password_algorithms().len(), list.len());
            for ((algorithm, parameters), decoded) in list.iter().zip(x.iter()) {
                check_stun_rs_algorithm(*algorithm, parameters, decoded);
            }
        }
        (Spec::Lifetime(v), StunAttribute::LifeTime(x)) => assert_eq!(x.as_u32(), *v),
        (Spec::ChannelNumber(n), StunAttribute::ChannelNumber(x)) => assert_eq!(x.number(), *n),
        (Spec::Data(d), StunAttribute::Data(x)) => assert_eq!(x.as_bytes(), &d[..]),
        (Spec::RequestedTransport(p), StunAttribute::RequestedTrasport(x)) => {
            assert_eq!(x.protocol().as_u8(), *p);
        }
        (Spec::RequestedAddressFamily(f), StunAttribute::RequestedAddressFamily(x)) => {
            assert_eq!(x.family(), stun_rs_family(*f));
        }
        (Spec::AdditionalAddressFamily(f), StunAttribute::AdditionalAddressFamily(x)) => {
            assert_eq!(x.family(), stun_rs_family(*f));
        }
        (Spec::EvenPort(reserve), StunAttribute::EvenPort(x)) => assert_eq!(x.reserve(), *reserve),
        (Spec::DontFragment, StunAttribute::DontFragment(_))
        | (Spec::UseCandidate, StunAttribute::UseCandidate(_)) => {}
        (Spec::ReservationToken(t), StunAttribute::ReservationToken(x)) => {
            assert_eq!(x.token(), &t[..]);
        }
        (Spec::AddressErrorCode(family, code, reason), StunAttribute::AddressErrorCode(x)) => {
            let e = x.error_code();
            assert_eq!(
                (x.family(), e.error_code(), e.reason()),
                (stun_rs_family(*family), *code, reason.as_str())
            );
        }
        (Spec::Icmp(icmp_type, code, error_data), StunAttribute::Icmp(x)) => {
            assert_eq!(
                (x.icmp_type().get(), x.icmp_code().get(), x.error_data()),
                (*icmp_type, *code, &error_data.to_be_bytes()[..])
            );
        }
        (Spec::Priority(v), StunAttribute::Priority(x)) => assert_eq!(x.as_u32(), *v),
        (Spec::IceControlled(v), StunAttribute::IceControlled(x)) => assert_eq!(x.as_u64(), *v),
        (Spec::IceControlling(v), StunAttribute::IceControlling(x)) => assert_eq!(x.as_u64(), *v),
        (
            Spec::ChangeRequest {
                change_ip,
                change_port,
            },
            StunAttribute::ChangeRequest(x),
        ) => {
            let flags = x.flags();
            assert_eq!(
                (
                    flags.contains(ChangeRequestFlags::ChangeIp),
                    flags.contains(ChangeRequestFlags::ChangePort)
                ),
                (*change_ip, *change_port)
            );
        }
        (Spec::ResponsePort(p), StunAttribute::ResponsePort(x)) => assert_eq!(x.as_u16(), *p),
        (Spec::Padding(p), StunAttribute::Padding(x)) => assert_eq!(x.as_str().as_bytes(), &p[..]),
        (spec, attr) => panic!("wrote {spec:?}, stun-rs decoded {attr:?}"),
    }
}

/// Checks that this crate decoded `attr` to the value stun-rs was given as `spec`.
pub(crate) fn check_icebreaker(spec: &Spec, attr: &AnyAttribute<'_>) {
    match (spec, attr) {
        (Spec::XorMappedAddress(a), AnyAttribute::XorMappedAddress(x)) => assert_eq!(x.0, *a),
        (Spec::MappedAddress(a), AnyAttribute::MappedAddress(x)) => assert_eq!(x.0, *a),
        (Spec::XorPeerAddress(a), AnyAttribute::XorPeerAddress(x)) => assert_eq!(x.0, *a),
        (Spec::XorRelayedAddress(a), AnyAttribute::XorRelayedAddress(x)) => assert_eq!(x.0, *a),
        (Spec::AlternateServer(a), AnyAttribute::AlternateServer(x)) => assert_eq!(x.0, *a),
        (Spec::ResponseOrigin(a), AnyAttribute::ResponseOrigin(x)) => assert_eq!(x.0, *a),
        (Spec::OtherAddress(a), AnyAttribute::OtherAddress(x)) => assert_eq!(x.0, *a),
        (Spec::Username(s), AnyAttribute::Username(x)) => assert_eq!(x.0, s),
        (Spec::Realm(s), AnyAttribute::Realm(x)) => assert_eq!(x.0, s),
        (Spec::Nonce(s), AnyAttribute::Nonce(x)) => assert_eq!(x.0, s),
        (Spec::Software(s), AnyAttribute::Software(x)) => assert_eq!(x.0, s),
        (Spec::ErrorCode(code, reason), AnyAttribute::ErrorCode(x)) => {
            assert_eq!((x.code.code(), x.reason), (*code, reason.as_str()));
        }
        (Spec::UnknownAttributes(types), AnyAttribute::UnknownAttributes(x)) => {
            assert_eq!(x.iter().map(|t| t.0).collect::<Vec<_>>(), *types);
        }
        (Spec::UserHash(user, realm), AnyAttribute::UserHash(x)) => {
            assert_eq!(x.0, user_hash(user, realm));
        }
        (Spec::PasswordAlgorithm(algorithm, parameters), AnyAttribute::PasswordAlgorithm(x)) => {
            assert_eq!((x.algorithm, x.parameters), (*algorithm, &parameters[..]));
        }
        (Spec::PasswordAlgorithms(list), AnyAttribute::PasswordAlgorithms(x)) => {
            let decoded: Vec<(u16, Vec<u8>)> = x
                .iter()
                .map(|a| (a.algorithm, a.parameters.to_vec()))
                .collect();
            assert_eq!(decoded, *list);
        }
        (Spec::Lifetime(v), AnyAttribute::Lifetime(x)) => assert_eq!(x.0, *v),
        (Spec::ChannelNumber(n), AnyAttribute::ChannelNumber(x)) => assert_eq!(x.value(), *n),
        (Spec::Data(d), AnyAttribute::Data(x)) => assert_eq!(x.0, &d[..]),
        (Spec::RequestedTransport(p), AnyAttribute::RequestedTransport(x)) => assert_eq!(x.0, *p),
        (Spec::RequestedAddressFamily(f), AnyAttribute::RequestedAddressFamily(x)) => {
            assert_eq!(x.0, *f);
        }
        (Spec::AdditionalAddressFamily(f), AnyAttribute::AdditionalAddressFamily(x)) => {
            assert_eq!(x.0, *f);
        }
        (Spec::EvenPort(reserve), AnyAttribute::EvenPort(x)) => {
            assert_eq!(x.reserve_next, *reserve);
        }
        (Spec::DontFragment, AnyAttribute::DontFragment(_))
        | (Spec::UseCandidate, AnyAttribute::UseCandidate(_)) => {}
        (Spec::ReservationToken(t), AnyAttribute::ReservationToken(x)) => assert_eq!(x.0, *t),
        (Spec::AddressErrorCode(family, code, reason), AnyAttribute::AddressErrorCode(x)) => {
            assert_eq!(
                (x.family, x.code.code(), x.reason),
                (*family, *code, reason.as_str())
            );
        }
        (Spec::Icmp(icmp_type, code, error_data), AnyAttribute::Icmp(x)) => {
            assert_eq!(
                (x.icmp_type, x.code, x.error_data),
                (*icmp_type, *code, *error_data)
            );
        }
        (Spec::Priority(v), AnyAttribute::Priority(x)) => assert_eq!(x.0, *v),
        (Spec::IceControlled(v), AnyAttribute::IceControlled(x)) => assert_eq!(x.0, *v),
        (Spec::IceControlling(v), AnyAttribute::IceControlling(x)) => assert_eq!(x.0, *v),
        (
            Spec::ChangeRequest {
                change_ip,
                change_port,
            },
            AnyAttribute::ChangeRequest(x),
        ) => assert_eq!((x.change_ip, x.change_port), (*change_ip, *change_port)),
        (Spec::ResponsePort(p), AnyAttribute::ResponsePort(x)) => assert_eq!(x.0, *p),
        (Spec::Padding(p), AnyAttribute::Padding(x)) => assert_eq!(x.0, &p[..]),
        (spec, attr) => panic!("stun-rs wrote {spec:?}, decoded as {attr:?}"),
    }
}
