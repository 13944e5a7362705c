//! Random cases: attributes with owned contents, keys and trailers, and the mapping of
//! methods, classes and families between the two codecs.

use super::*;

/// One attribute with owned contents, from which both codecs' attributes are built.
#[derive(Clone, Debug)]
pub(crate) enum Spec {
    XorMappedAddress(SocketAddr),
    MappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    AlternateServer(SocketAddr),
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    ErrorCode(u16, String),
    UnknownAttributes(Vec<u16>),
    /// Username and realm: stun-rs can only build USERHASH from them.
    UserHash(String, String),
    PasswordAlgorithm(u16, Vec<u8>),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    Lifetime(u32),
    ChannelNumber(u16),
    Data(Vec<u8>),
    RequestedTransport(u8),
    RequestedAddressFamily(AddressFamily),
    AdditionalAddressFamily(AddressFamily),
    EvenPort(bool),
    DontFragment,
    ReservationToken([u8; 8]),
    AddressErrorCode(AddressFamily, u16, String),
    Icmp(u8, u16, u32),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    ChangeRequest {
        change_ip: bool,
        change_port: bool,
    },
    ResponsePort(u16),
    Padding(Vec<u8>),
}

/// Which codec writes: the generators differ where stun-rs cannot write what the RFC allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    Icebreaker,
    StunRs,
}

// stun-rs runs USERNAME through PRECIS OpaqueString and REALM and NONCE through the
// quoted-string grammar of RFC 3261 as well. RFC 8489 §14.3, §14.9 and §14.10 ask for that, but
// this crate passes text through untouched, so only text both treat as the identity is drawn.
pub(crate) const USERNAME: &str = "[A-Za-z0-9][A-Za-z0-9._@:-]{0,31}";
pub(crate) const REALM: &str = "[A-Za-z0-9][A-Za-z0-9.-]{0,31}";
pub(crate) const NONCE: &str = "[A-Za-z0-9/+=]{1,40}";
pub(crate) const PASSWORD: &str = "[A-Za-z0-9]{1,24}";
// SOFTWARE and reason phrases are free UTF-8 in both codecs.
pub(crate) const TEXT: &str = "\\PC{0,40}";

pub(crate) fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

pub(crate) fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::Ipv4), Just(AddressFamily::Ipv6)]
}

/// Algorithm parameters of 0, 4 or 8 bytes. stun-rs does not pad the parameters of the last
/// entry (RFC 8489 §14.11, §14.12 say they are padded "in the same manner as an attribute"),
/// so unaligned lengths are left out; see
/// `stun_rs_leaves_the_last_password_algorithm_parameters_unpadded`.
pub(crate) fn algorithm_parameters() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<[u8; 4]>(), 0..3).prop_map(|words| words.concat())
}

pub(crate) fn spec(writer: Writer) -> BoxedStrategy<Spec> {
    let mut arms: Vec<BoxedStrategy<Spec>> = vec![
        socket_addr().prop_map(Spec::XorMappedAddress).boxed(),
        socket_addr().prop_map(Spec::MappedAddress).boxed(),
        socket_addr().prop_map(Spec::XorPeerAddress).boxed(),
        socket_addr().prop_map(Spec::XorRelayedAddress).boxed(),
        socket_addr().prop_map(Spec::AlternateServer).boxed(),
        socket_addr().prop_map(Spec::ResponseOrigin).boxed(),
        socket_addr().prop_map(Spec::OtherAddress).boxed(),
        USERNAME.prop_map(Spec::Username).boxed(),
        REALM.prop_map(Spec::Realm).boxed(),
        NONCE.prop_map(Spec::Nonce).boxed(),
        TEXT.prop_map(Spec::Software).boxed(),
        (300u16..700, TEXT)
            .prop_map(|(code, reason)| Spec::ErrorCode(code, reason))
            .boxed(),
        // stun-rs drops repeated types from UNKNOWN-ATTRIBUTES on decode and on construction;
        // RFC 8489 §14.13 does not forbid repeats, but a list without them says the same.
        prop::collection::vec(any::<u16>(), 0..7)
            .prop_map(|mut types| {
                let mut seen = Vec::new();
                types.retain(|t| {
                    if seen.contains(t) {
                        return false;
                    }
                    seen.push(*t);
                    true
                });
                Spec::UnknownAttributes(types)
            })
            .boxed(),
        (USERNAME, REALM)
            .prop_map(|(user, realm)| Spec::UserHash(user, realm))
            .boxed(),
        (any::<u16>(), algorithm_parameters())
            .prop_map(|(n, p)| Spec::PasswordAlgorithm(n, p))
            .boxed(),
        prop::collection::vec((any::<u16>(), algorithm_parameters()), 0..4)
            .prop_map(Spec::PasswordAlgorithms)
            .boxed(),
        any::<u32>().prop_map(Spec::Lifetime).boxed(),
        (0x4000u16..=0x4FFF).prop_map(Spec::ChannelNumber).boxed(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(Spec::Data)
            .boxed(),
        family().prop_map(Spec::RequestedAddressFamily).boxed(),
        family().prop_map(Spec::AdditionalAddressFamily).boxed(),
        any::<bool>().prop_map(Spec::EvenPort).boxed(),
        Just(Spec::DontFragment).boxed(),
        any::<[u8; 8]>().prop_map(Spec::ReservationToken).boxed(),
        (family(), 300u16..700, TEXT)
            .prop_map(|(f, code, reason)| Spec::AddressErrorCode(f, code, reason))
            .boxed(),
        (0u8..128, 0u16..512, any::<u32>())
            .prop_map(|(t, c, d)| Spec::Icmp(t, c, d))
            .boxed(),
        any::<u32>().prop_map(Spec::Priority).boxed(),
        Just(Spec::UseCandidate).boxed(),
        any::<u64>().prop_map(Spec::IceControlled).boxed(),
        any::<u64>().prop_map(Spec::IceControlling).boxed(),
        (any::<bool>(), any::<bool>())
            .prop_map(|(change_ip, change_port)| Spec::ChangeRequest {
                change_ip,
                change_port,
            })
            .boxed(),
        // stun-rs models PADDING as a UTF-8 string; RFC 5780 §7.6 calls its value a "freeform
        // string" whose content does not matter, so ASCII loses nothing.
        prop::collection::vec(0u8..0x80, 0..48)
            .prop_map(Spec::Padding)
            .boxed(),
    ];
    match writer {
        Writer::Icebreaker => {
            arms.push(any::<u8>().prop_map(Spec::RequestedTransport).boxed());
            arms.push(any::<u16>().prop_map(Spec::ResponsePort).boxed());
        }
        Writer::StunRs => {
            // stun-rs has no public constructor for a protocol number other than UDP.
            arms.push(Just(Spec::RequestedTransport(17)).boxed());
            // RESPONSE-PORT left out: stun-rs writes it with length 2, RFC 5780 §7.5 says 4; see
            // `stun_rs_writes_response_port_with_length_2`.
        }
    }
    Union::new(arms).boxed()
}

/// The attribute list of a message, with XOR-PEER-ADDRESS repeated at random places, as a
/// CreatePermission may carry it (RFC 8656 §18.3).
pub(crate) fn attributes(writer: Writer) -> impl Strategy<Value = Vec<Spec>> {
    (
        prop::collection::vec(spec(writer), 0..10),
        prop::collection::vec(socket_addr(), 0..4),
    )
        .prop_flat_map(|(mut specs, peers)| {
            specs.extend(peers.into_iter().map(Spec::XorPeerAddress));
            Just(specs).prop_shuffle()
        })
}

#[derive(Clone, Debug)]
pub(crate) enum Credentials {
    ShortTerm {
        password: String,
    },
    LongTerm {
        username: String,
        realm: String,
        password: String,
        sha256: bool,
    },
}

impl Credentials {
    pub(crate) fn icebreaker(&self) -> IntegrityKey {
        match self {
            Credentials::ShortTerm { password } => IntegrityKey::short_term(password),
            Credentials::LongTerm {
                username,
                realm,
                password,
                sha256,
            } => {
                let algorithm = if *sha256 {
                    KeyAlgorithm::Sha256
                } else {
                    KeyAlgorithm::Md5
                };
                IntegrityKey::long_term(algorithm, username, realm, password)
            }
        }
    }

    pub(crate) fn stun_rs(&self) -> HMACKey {
        match self {
            Credentials::ShortTerm { password } => {
                HMACKey::new_short_term(password).expect("alphanumeric password")
            }
            Credentials::LongTerm {
                username,
                realm,
                password,
                sha256,
            } => {
                let algorithm = if *sha256 {
                    AlgorithmId::SHA256
                } else {
                    AlgorithmId::MD5
                };
                HMACKey::new_long_term(username, realm, password, Algorithm::from(algorithm))
                    .expect("alphanumeric credentials")
            }
        }
    }

    /// The same credentials with another password.
    pub(crate) fn wrong(&self) -> Credentials {
        let mut wrong = self.clone();
        match &mut wrong {
            Credentials::ShortTerm { password } | Credentials::LongTerm { password, .. } => {
                password.push('x');
            }
        }
        wrong
    }
}

pub(crate) fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        PASSWORD.prop_map(|password| Credentials::ShortTerm { password }),
        (USERNAME, REALM, PASSWORD, any::<bool>()).prop_map(
            |(username, realm, password, sha256)| Credentials::LongTerm {
                username,
                realm,
                password,
                sha256,
            }
        ),
    ]
}

/// Which integrity attributes close the message. MESSAGE-INTEGRITY-SHA256 is always full length:
/// stun-rs cannot read a truncated one (see `stun_rs_rejects_truncated_message_integrity_sha256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Integrity {
    Sha1,
    Sha1AndSha256,
    Sha256,
}

impl Integrity {
    pub(crate) fn has_sha1(self) -> bool {
        self != Integrity::Sha256
    }

    pub(crate) fn has_sha256(self) -> bool {
        self != Integrity::Sha1
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) method: Method,
    pub(crate) class: Class,
    pub(crate) tid: [u8; 12],
    pub(crate) attributes: Vec<Spec>,
    pub(crate) credentials: Credentials,
    pub(crate) integrity: Integrity,
    pub(crate) fingerprint: bool,
}

impl Case {
    /// The attribute types after the generated ones, in order.
    pub(crate) fn trailer(&self) -> Vec<u16> {
        let mut types = Vec::new();
        if self.integrity.has_sha1() {
            types.push(AttrType::MESSAGE_INTEGRITY.0);
        }
        if self.integrity.has_sha256() {
            types.push(AttrType::MESSAGE_INTEGRITY_SHA256.0);
        }
        if self.fingerprint {
            types.push(AttrType::FINGERPRINT.0);
        }
        types
    }

    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.attributes
            .iter()
            .filter_map(|spec| match spec {
                Spec::XorPeerAddress(addr) => Some(*addr),
                _ => None,
            })
            .collect()
    }
}

pub(crate) fn case(writer: Writer) -> impl Strategy<Value = Case> {
    let method = prop::sample::select(vec![
        Method::BINDING,
        Method::ALLOCATE,
        Method::REFRESH,
        Method::SEND,
        Method::DATA,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ]);
    let class = prop::sample::select(vec![
        Class::Request,
        Class::Indication,
        Class::Success,
        Class::Error,
    ]);
    let integrity = prop::sample::select(vec![
        Integrity::Sha1,
        Integrity::Sha1AndSha256,
        Integrity::Sha256,
    ]);
    (
        method,
        class,
        any::<[u8; 12]>(),
        attributes(writer),
        credentials(),
        integrity,
        any::<bool>(),
    )
        .prop_map(
            |(method, class, tid, attributes, credentials, integrity, fingerprint)| Case {
                method,
                class,
                tid,
                attributes,
                credentials,
                integrity,
                fingerprint,
            },
        )
}

pub(crate) fn stun_rs_method(method: Method) -> MessageMethod {
    match method {
        Method::BINDING => BINDING,
        Method::ALLOCATE => ALLOCATE,
        Method::REFRESH => REFRESH,
        Method::SEND => SEND,
        Method::DATA => DATA,
        Method::CREATE_PERMISSION => CREATE_PERMMISSION,
        Method::CHANNEL_BIND => CHANNEL_BIND,
        other => panic!("no stun-rs constant for {other:?}"),
    }
}

pub(crate) fn stun_rs_class(class: Class) -> MessageClass {
    match class {
        Class::Request => MessageClass::Request,
        Class::Indication => MessageClass::Indication,
        Class::Success => MessageClass::SuccessResponse,
        Class::Error => MessageClass::ErrorResponse,
    }
}

pub(crate) fn stun_rs_family(family: AddressFamily) -> stun_rs::AddressFamily {
    match family {
        AddressFamily::Ipv4 => stun_rs::AddressFamily::IPv4,
        AddressFamily::Ipv6 => stun_rs::AddressFamily::IPv6,
    }
}

pub(crate) fn error_code(code: u16) -> ErrorCode {
    ErrorCode::new(code).expect("generated in 300..700")
}

pub(crate) fn stun_rs_error_code(code: u16, reason: &str) -> stun_rs::ErrorCode {
    stun_rs::ErrorCode::new(code, reason).expect("generated in 300..700")
}
