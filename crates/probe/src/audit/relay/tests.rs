//! The relay-target probes, their verdicts and how they add up to checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn probe(category: Category, peer: &str, request: RelayRequest) -> Probe {
    Probe {
        category,
        peer: peer.parse().unwrap(),
        request,
    }
}

#[test]
fn severity_follows_what_the_address_reaches_in_any_spelling() {
    for (address, severity) in [
        ("127.0.0.1", Severity::Critical),
        ("127.1.2.3", Severity::Critical),
        ("::1", Severity::Critical),
        ("169.254.169.254", Severity::Critical),
        ("fd00:ec2::254", Severity::Critical),
        ("::ffff:127.0.0.1", Severity::Critical),
        ("::127.0.0.1", Severity::Critical),
        ("64:ff9b::7f00:1", Severity::Critical),
        ("2002:7f00:1::", Severity::Critical),
        ("2001:0:7f00:1::80ff:fffe", Severity::Critical),
        ("64:ff9b::a9fe:a9fe", Severity::Critical),
        ("10.0.0.1", Severity::High),
        ("172.16.0.1", Severity::High),
        ("172.31.255.255", Severity::High),
        ("192.168.0.1", Severity::High),
        ("100.64.0.1", Severity::High),
        ("100.127.255.255", Severity::High),
        ("169.254.1.1", Severity::High),
        ("fc00::1", Severity::High),
        ("fdff::1", Severity::High),
        ("fe80::1", Severity::High),
        ("::ffff:10.1.2.3", Severity::High),
        ("0.0.0.0", Severity::Medium),
        ("::", Severity::Medium),
        ("224.0.0.1", Severity::Medium),
        ("255.255.255.255", Severity::Medium),
        ("ff02::1", Severity::Medium),
        ("8.8.8.8", Severity::Info),
        ("100.128.0.1", Severity::Info),
        ("172.32.0.1", Severity::Info),
        ("2001:db8::1", Severity::Info),
    ] {
        assert_eq!(address_severity(ip(address)), severity, "{address}");
    }
}

#[test]
fn embedded_ipv4_reads_every_spelling_and_nothing_else() {
    let loopback = Some(Ipv4Addr::LOCALHOST);
    for spelling in [
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2001:0:7f00:1::80ff:fffe",
    ] {
        let IpAddr::V6(v6) = ip(spelling) else {
            panic!("{spelling} is IPv6")
        };
        assert_eq!(embedded_ipv4(v6), loopback, "{spelling}");
    }
    for plain in ["::", "::1", "fc00::1", "2001:db8::1", "fe80::1"] {
        let IpAddr::V6(v6) = ip(plain) else {
            panic!("{plain} is IPv6")
        };
        assert_eq!(embedded_ipv4(v6), None, "{plain}");
    }
}

#[test]
fn the_server_address_is_critical_whatever_it_is() {
    let own = probe(
        Category::ServerAddress,
        "203.0.113.7:22",
        RelayRequest::CreatePermission,
    );
    assert_eq!(own.severity(), Severity::Critical);
    let public = probe(
        Category::Private,
        "203.0.113.7:22",
        RelayRequest::CreatePermission,
    );
    assert_eq!(public.severity(), Severity::Info);
}

#[test]
fn probes_cover_every_category_encoding_and_own_port() {
    let server: SocketAddr = "198.51.100.1:3478".parse().unwrap();
    let relayed: SocketAddr = "198.51.100.2:50000".parse().unwrap();
    let all = probes(server, relayed);
    // 26 fixed targets; two own addresses on three ports, plus their mapped spelling; one
    // ChannelBind to the listener.
    assert_eq!(all.len(), 26 + 2 * 3 + 2 + 1);
    for category in Category::ALL {
        assert!(all.iter().any(|p| p.category == category), "{category:?}");
    }
    let has = |category, peer: &str, request| all.contains(&probe(category, peer, request));
    use Category::*;
    use RelayRequest::*;
    assert!(has(Loopback, "127.0.0.1:80", CreatePermission));
    assert!(has(Loopback, "127.0.0.1:80", ChannelBind));
    assert!(has(Metadata, "169.254.169.254:80", ChannelBind));
    assert!(has(Ipv6Forms, "[::ffff:127.0.0.1]:80", CreatePermission));
    assert!(has(Unspecified, "0.0.0.0:80", CreatePermission));
    for own in ["198.51.100.1", "198.51.100.2"] {
        for port in [3478, 22, 80] {
            let peer = format!("{own}:{port}");
            assert!(has(ServerAddress, &peer, CreatePermission), "{peer}");
        }
    }
    assert!(has(ServerAddress, "198.51.100.1:3478", ChannelBind));
    assert!(has(
        ServerAddress,
        "[::ffff:198.51.100.1]:3478",
        CreatePermission
    ));
    // Every IPv6 spelling stands for a denied IPv4 address.
    for p in all.iter().filter(|p| p.category == Ipv6Forms) {
        assert_eq!(p.severity(), Severity::Critical, "{}", p.peer);
    }

    // The same address relayed and listened on, on port 80: each port once.
    let server: SocketAddr = "198.51.100.1:80".parse().unwrap();
    let own: Vec<_> = probes(server, server)
        .into_iter()
        .filter(|p| {
            p.category == ServerAddress && p.request == CreatePermission && p.peer.is_ipv4()
        })
        .map(|p| p.peer.port())
        .collect();
    assert_eq!(own, [80, 22]);
}

#[test]
fn verdicts_from_answers() {
    let rejected = |code| {
        Err(TurnError::Rejected {
            code,
            reason: String::new(),
        })
    };
    assert_eq!(verdict(&Ok(())), Verdict::Accepted);
    assert_eq!(verdict(&rejected(403)), Verdict::Refused(403));
    assert_eq!(verdict(&rejected(400)), Verdict::Refused(400));
    assert_eq!(verdict(&rejected(443)), Verdict::NotApplicable);
    assert_eq!(verdict(&Err(TurnError::Timeout)), Verdict::NoAnswer);
    assert!(matches!(
        verdict(&Err(TurnError::InvalidResponse("x"))),
        Verdict::NotTested(_)
    ));
}

#[test]
fn a_check_fails_on_any_acceptance_passes_on_refusals_and_skips_otherwise() {
    use RelayRequest::*;
    let lo = probe(Category::Loopback, "127.0.0.1:80", CreatePermission);
    let lo_bind = probe(Category::Loopback, "127.0.0.1:80", ChannelBind);
    let other = probe(Category::Loopback, "127.1.2.3:80", CreatePermission);
    let v6 = probe(Category::Loopback, "[::1]:80", CreatePermission);

    let (status, value) = summarize(&[
        (lo.clone(), Verdict::Refused(403)),
        (other.clone(), Verdict::Refused(400)),
        (v6.clone(), Verdict::NotApplicable),
        (lo_bind.clone(), Verdict::Refused(403)),
    ]);
    assert_eq!(status, Status::Pass);
    assert_eq!(
        value,
        "refused 403: 127.0.0.1, 127.0.0.1 (ChannelBind); refused 400: 127.1.2.3; \
         not applicable (443, family mismatch): ::1"
    );

    let (status, value) = summarize(&[
        (lo.clone(), Verdict::Refused(403)),
        (lo_bind, Verdict::Accepted),
    ]);
    assert_eq!(status, Status::Fail);
    assert!(
        value.starts_with("accepted: 127.0.0.1 (ChannelBind); "),
        "{value}"
    );

    let only_v6 = [(v6.clone(), Verdict::NotApplicable)];
    assert_eq!(summarize(&only_v6).0, Status::Skip);
    assert!(skip_reason(&only_v6).contains("443"));
    let silent = [(lo, Verdict::NoAnswer), (v6, Verdict::NotApplicable)];
    assert_eq!(summarize(&silent).0, Status::Skip);
    assert!(skip_reason(&silent).contains("did not answer"));

    let compatible = probe(Category::Ipv6Forms, "[::127.0.0.1]:80", CreatePermission);
    let unspecified = probe(Category::Unspecified, "[::]:80", CreatePermission);
    let (_, value) = summarize(&[
        (compatible, Verdict::NotApplicable),
        (unspecified, Verdict::NotApplicable),
    ]);
    assert_eq!(
        value,
        "not applicable (443, family mismatch): ::127.0.0.1, ::"
    );

    let own = probe(Category::ServerAddress, "192.0.2.1:22", CreatePermission);
    assert_eq!(
        summarize(&[(own, Verdict::Refused(403))]).1,
        "refused 403: 192.0.2.1:22"
    );
}
