//! The namespace lab against the real kernel: bring-up and teardown, the mapping and filtering
//! behaviour of each NAT type seen from plain UDP sockets inside the lab, hairpinning, mapping
//! expiry and flushing, a host dropping off its LAN, processes started in the lab, and
//! coturn's `turnutils_natdiscovery` classifying each type against `icebreaker serve`.
//!
//! Every test needs root and `ip`, `nft` and `conntrack`; without them it prints why and
//! passes, unless `ICEBREAKER_REQUIRE_TOOLS` is set (`scripts/test` sets it), which makes it
//! fail instead. Every wait is bounded.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_natlab::lab::{
    HOST1_IP, Lab, Node, ROUTER1_WAN_IP, ROUTER2_WAN_IP, SERVER_IP, SERVER_IP2,
};
use icebreaker_natlab::{Filtering, Mapping, NatType};
use icebreaker_tests::have_tool;

mod common;
use common::{available, lab, serve_with_rfc5780};

/// How long a datagram that should arrive may take. Veth hops take microseconds; this covers
/// a loaded machine.
const ARRIVES: Duration = Duration::from_secs(2);
/// How long to listen for a datagram that should not arrive.
const QUIET: Duration = Duration::from_millis(300);

/// A UDP socket bound to `addr` inside `node`.
fn udp(lab: &Lab, node: Node, addr: SocketAddr) -> UdpSocket {
    let socket = lab
        .run_in(node, || UdpSocket::bind(addr))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in {node:?}: {e}"));
    socket.set_read_timeout(Some(QUIET)).unwrap();
    socket
}

/// A socket on a port of the system's choosing in a host.
fn host_socket(lab: &Lab, host: Node) -> UdpSocket {
    udp(lab, host, SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Reads from `socket` until a datagram carrying `payload` arrives (others are skipped) or
/// `wait` passes; returns its source.
fn receive(socket: &UdpSocket, payload: &[u8], wait: Duration) -> Option<SocketAddr> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && &buf[..n] == payload
        {
            return Some(from);
        }
    }
}

/// Sends `payload` from `from` to `to` until `to` receives it (three tries); returns the
/// source `to` saw, the mapping when `from` is behind a NAT.
fn deliver(from: &UdpSocket, to: &UdpSocket, payload: &[u8]) -> SocketAddr {
    let target = to.local_addr().unwrap();
    for _ in 0..3 {
        from.send_to(payload, target).unwrap();
        if let Some(source) = receive(to, payload, ARRIVES / 2) {
            return source;
        }
    }
    panic!(
        "{:?} never reached {target}",
        String::from_utf8_lossy(payload)
    );
}

/// A server in the public network that answers every datagram with the source address it
/// saw, as text: a STUN Binding in miniature. Stops when dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start(lab: &Lab, addr: SocketAddr) -> Echo {
        let socket = udp(lab, Node::Public, addr);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(from.to_string().as_bytes(), from);
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The address under which `socket`'s datagrams reach this server.
    fn mapped(&self, socket: &UdpSocket) -> SocketAddr {
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            socket.send_to(b"who am I", self.addr).unwrap();
            let deadline = Instant::now() + ARRIVES / 2;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                socket
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.addr => {
                        let text = std::str::from_utf8(&buf[..n]).unwrap();
                        return text.parse().unwrap();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        panic!("no answer from the echo server {}", self.addr);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The names in `ip netns list` that start with `prefix`.
fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn read_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/{key}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn bring_up_and_teardown_leave_nothing_behind() {
    if !available() {
        return;
    }
    let forward_before = read_sysctl("ipv4/ip_forward");
    let links_before = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let mut timings = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let lab = Lab::new().unwrap();
        let up = started.elapsed();
        let prefix = format!("{}-", lab.prefix());
        let mut names = namespaces_named(&prefix);
        names.sort();
        let mut want: Vec<String> = Node::ALL
            .iter()
            .map(|&n| lab.namespace(n).to_owned())
            .collect();
        want.sort();
        assert_eq!(names, want);
        // Forwarding is on in the routers and the public network, off in the hosts, and the
        // hosts reach the servers.
        for (node, forward) in [
            (Node::Public, "1"),
            (Node::Router1, "1"),
            (Node::Host1, "0"),
            (Node::Host2, "0"),
        ] {
            let value = lab.run_in(node, || read_sysctl("ipv4/ip_forward")).unwrap();
            assert_eq!(value, forward, "{node:?}");
        }
        let server = udp(&lab, Node::Public, addr(SERVER_IP, 7000));
        for host in [Node::Host1, Node::Host2] {
            let wan = if host == Node::Host1 {
                ROUTER1_WAN_IP
            } else {
                ROUTER2_WAN_IP
            };
            assert_eq!(deliver(&host_socket(&lab, host), &server, b"up").ip(), wan);
        }
        // TCP leaves through the NAT too, for signalling.
        let listener = lab
            .run_in(Node::Public, || TcpListener::bind(addr(SERVER_IP, 7001)))
            .unwrap()
            .unwrap();
        let stream = lab
            .run_in(Node::Host1, || {
                TcpStream::connect_timeout(&addr(SERVER_IP, 7001), ARRIVES)
            })
            .unwrap()
            .unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), ROUTER1_WAN_IP);
        drop(stream);
        let started = Instant::now();
        drop(lab);
        let down = started.elapsed();
        assert!(namespaces_named(&prefix).is_empty(), "{prefix} left behind");
        timings.push((up, down));
    }
    for (up, down) in &timings {
        eprintln!(
            "bring-up {} ms, teardown {} ms",
            up.as_millis(),
            down.as_millis()
        );
    }
    // Nothing of the labs ever reached the namespace the tests run in.
    assert_eq!(read_sysctl("ipv4/ip_forward"), forward_before);
    let links_after = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let ours = format!("ib{}x", std::process::id());
    let mentions_lab = |out: &[u8]| String::from_utf8_lossy(out).contains(&ours);
    assert!(!mentions_lab(&links_after.stdout) || mentions_lab(&links_before.stdout));
}

#[test]
fn two_labs_side_by_side_keep_apart() {
    let (Some(a), Some(b)) = (lab(), lab()) else {
        return;
    };
    assert_ne!(a.prefix(), b.prefix());
    // The same addresses in both: each lab's server sees only its own lab's host.
    let server_a = udp(&a, Node::Public, addr(SERVER_IP, 5000));
    let server_b = udp(&b, Node::Public, addr(SERVER_IP, 5000));
    let host_a = host_socket(&a, Node::Host1);
    let host_b = host_socket(&b, Node::Host1);
    assert_eq!(deliver(&host_a, &server_a, b"to a").ip(), ROUTER1_WAN_IP);
    assert_eq!(deliver(&host_b, &server_b, b"to b").ip(), ROUTER1_WAN_IP);
    assert_eq!(receive(&server_b, b"to a", QUIET), None);
    assert_eq!(receive(&server_a, b"to b", QUIET), None);
    // Changing one lab's NAT leaves the other's alone.
    a.set_nat(Node::Router1, NatType::Symmetric, false).unwrap();
    assert_eq!(
        b.nat(Node::Router1).unwrap(),
        (NatType::PortRestricted, false)
    );
    let rules_b = b
        .command(Node::Router1, "nft")
        .args(["list", "table", "ip", "natlab"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules_b.stdout).contains("fully-random"));
}

#[test]
fn mapping_behaviour_of_each_nat_type() {
    let Some(lab) = lab() else {
        return;
    };
    let echoes = [
        Echo::start(&lab, addr(SERVER_IP, 3000)),
        Echo::start(&lab, addr(SERVER_IP, 3001)),
        Echo::start(&lab, addr(SERVER_IP2, 3000)),
    ];
    for nat in NatType::ALL {
        for (router, host, wan) in [
            (Node::Router1, Node::Host1, ROUTER1_WAN_IP),
            (Node::Router2, Node::Host2, ROUTER2_WAN_IP),
        ] {
            lab.set_nat(router, nat, false).unwrap();
            let socket = host_socket(&lab, host);
            let local = socket.local_addr().unwrap().port();
            let seen: Vec<SocketAddr> = echoes.iter().map(|e| e.mapped(&socket)).collect();
            assert!(seen.iter().all(|a| a.ip() == wan), "{nat}: {seen:?}");
            let mut ports: Vec<u16> = seen.iter().map(|a| a.port()).collect();
            match nat.mapping() {
                // One external port for every destination: the host's own, since Linux keeps
                // the source port when it is free.
                Mapping::EndpointIndependent => {
                    assert!(ports.iter().all(|&p| p == local), "{nat}: {seen:?}");
                }
                Mapping::AddressDependent | Mapping::AddressAndPortDependent => {
                    ports.sort_unstable();
                    ports.dedup();
                    assert_eq!(ports.len(), 3, "{nat}: {seen:?}");
                }
            }
            // Asking again keeps the mapping, whatever the type.
            assert_eq!(echoes[0].mapped(&socket), seen[0], "{nat}");
        }
    }
}

#[test]
fn filtering_behaviour_of_each_nat_type() {
    let Some(lab) = lab() else {
        return;
    };
    let server = udp(&lab, Node::Public, addr(SERVER_IP, 4001));
    let other_port = udp(&lab, Node::Public, addr(SERVER_IP, 4002));
    let other_ip = udp(&lab, Node::Public, addr(SERVER_IP2, 4003));
    for nat in NatType::ALL {
        lab.set_nat(Node::Router1, nat, false).unwrap();
        let host = host_socket(&lab, Node::Host1);
        let mapped = deliver(&host, &server, b"hello");
        assert_eq!(mapped.ip(), ROUTER1_WAN_IP);
        // Unsolicited ones first: a dropped first packet must not open anything.
        other_port.send_to(b"other port", mapped).unwrap();
        let wait = |pass: bool| if pass { ARRIVES } else { QUIET };
        let port_passes = nat.filtering() != Filtering::AddressAndPortDependent;
        let got = receive(&host, b"other port", wait(port_passes));
        assert_eq!(got.is_some(), port_passes, "{nat}: from another port");
        other_ip.send_to(b"other ip", mapped).unwrap();
        let ip_passes = nat.filtering() == Filtering::EndpointIndependent;
        let got = receive(&host, b"other ip", wait(ip_passes));
        assert_eq!(got.is_some(), ip_passes, "{nat}: from another IP");
        if let Some(source) = got {
            assert_eq!(source, other_ip.local_addr().unwrap(), "{nat}");
        }
        server.send_to(b"reply", mapped).unwrap();
        assert_eq!(
            receive(&host, b"reply", ARRIVES),
            Some(server.local_addr().unwrap()),
            "{nat}: the reply"
        );
    }
}

#[test]
fn an_inbound_packet_before_the_first_outbound_one_does_not_take_the_port() {
    let Some(lab) = lab() else {
        return;
    };
    let server = udp(&lab, Node::Public, addr(SERVER_IP, 3478));
    for nat in NatType::ALL {
        lab.set_nat(Node::Router1, nat, false).unwrap();
        let host = host_socket(&lab, Node::Host1);
        let port = host.local_addr().unwrap().port();
        // The peer's punch arrives first, at the port the host is about to use. Were it let
        // into conntrack, the host's own flow would collide with it and get another port.
        server
            .send_to(b"too early", addr(ROUTER1_WAN_IP, port))
            .unwrap();
        assert_eq!(receive(&host, b"too early", QUIET), None, "{nat}");
        let mapped = deliver(&host, &server, b"now");
        if nat.mapping() == Mapping::EndpointIndependent {
            assert_eq!(mapped, addr(ROUTER1_WAN_IP, port), "{nat}");
        }
        server.send_to(b"punched", mapped).unwrap();
        assert!(receive(&host, b"punched", ARRIVES).is_some(), "{nat}");
    }
}

#[test]
fn hairpinning_on_and_off() {
    let Some(lab) = lab() else {
        return;
    };
    let echo = Echo::start(&lab, addr(SERVER_IP, 3478));
    for nat in NatType::ALL {
        for hairpin in [true, false] {
            lab.set_nat(Node::Router1, nat, hairpin).unwrap();
            let (a, b) = (
                host_socket(&lab, Node::Host1),
                host_socket(&lab, Node::Host1),
            );
            let mapped_a = echo.mapped(&a);
            b.send_to(b"hairpin", mapped_a).unwrap();
            let wait = if hairpin { ARRIVES } else { QUIET };
            let got = receive(&a, b"hairpin", wait);
            assert_eq!(got.is_some(), hairpin, "{nat} hairpin {hairpin}");
            if let Some(from) = got {
                // The router rewrote the source too, so the answer goes back through it.
                assert_eq!(from.ip(), ROUTER1_WAN_IP, "{nat}");
                a.send_to(b"back", from).unwrap();
                assert_eq!(receive(&b, b"back", ARRIVES), Some(mapped_a), "{nat}");
            }
        }
    }
}

#[test]
fn udp_timeout_expires_idle_mappings() {
    let Some(lab) = lab() else {
        return;
    };
    // The timeout outlives a change of type, and applies to every type's rules.
    lab.set_nat(Node::Router1, NatType::RestrictedCone, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::Symmetric, true)
        .unwrap();
    for router in [Node::Router1, Node::Router2] {
        lab.set_udp_timeout(router, 2).unwrap();
    }
    lab.set_nat(Node::Router1, NatType::PortRestricted, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::FullCone, false)
        .unwrap();
    for router in [Node::Router1, Node::Router2] {
        let rules = lab
            .command(router, "nft")
            .args(["list", "table", "ip", "natlab"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(rules.contains("timeout 2s"), "{rules}");
        assert!(lab.set_udp_timeout(router, 0).is_err());
        let value = lab
            .run_in(router, || read_sysctl("netfilter/nf_conntrack_udp_timeout"))
            .unwrap();
        assert_eq!(value, "2");
    }
    thread::scope(|scope| {
        for (host, port) in [(Node::Host1, 6001), (Node::Host2, 6002)] {
            let lab = &lab;
            scope.spawn(move || {
                let server = udp(lab, Node::Public, addr(SERVER_IP, port));
                let idle = host_socket(lab, host);
                let busy = host_socket(lab, host);
                let idle_mapped = deliver(&idle, &server, b"idle");
                let busy_mapped = deliver(&busy, &server, b"busy");
                thread::sleep(Duration::from_millis(500));
                server.send_to(b"early", idle_mapped).unwrap();
                assert!(receive(&idle, b"early", ARRIVES).is_some(), "{host:?}");
                // Four seconds with keepalives every half second on one socket only.
                let until = Instant::now() + Duration::from_secs(4);
                while Instant::now() < until {
                    busy.send_to(b"keepalive", server.local_addr().unwrap())
                        .unwrap();
                    thread::sleep(Duration::from_millis(500));
                }
                server.send_to(b"late", idle_mapped).unwrap();
                assert_eq!(receive(&idle, b"late", QUIET), None, "{host:?}: expired");
                server.send_to(b"kept", busy_mapped).unwrap();
                assert!(
                    receive(&busy, b"kept", ARRIVES).is_some(),
                    "{host:?}: kept alive"
                );
            });
        }
    });
}

#[test]
fn flush_mappings_forgets_them() {
    let Some(lab) = lab() else {
        return;
    };
    lab.set_nat(Node::Router1, NatType::Symmetric, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::FullCone, false)
        .unwrap();
    let echo = Echo::start(&lab, addr(SERVER_IP, 3478));
    let other_ip = udp(&lab, Node::Public, addr(SERVER_IP2, 4444));

    // Symmetric: the same destination keeps its random port until the flush.
    let host = host_socket(&lab, Node::Host1);
    let first = echo.mapped(&host);
    assert_eq!(echo.mapped(&host), first);
    lab.flush_mappings(Node::Router1).unwrap();
    let after = echo.mapped(&host);
    assert_eq!(after.ip(), ROUTER1_WAN_IP);
    assert_ne!(
        after.port(),
        first.port(),
        "a new random port after the flush"
    );

    // Full cone: the flush closes the mapping to everyone until the host sends again, and
    // port preservation then gives it the same port back.
    let host = host_socket(&lab, Node::Host2);
    let mapped = echo.mapped(&host);
    other_ip.send_to(b"before", mapped).unwrap();
    assert!(receive(&host, b"before", ARRIVES).is_some());
    lab.flush_mappings(Node::Router2).unwrap();
    other_ip.send_to(b"after", mapped).unwrap();
    assert_eq!(receive(&host, b"after", QUIET), None);
    assert_eq!(echo.mapped(&host), mapped);
    other_ip.send_to(b"again", mapped).unwrap();
    assert!(receive(&host, b"again", ARRIVES).is_some());
}

#[test]
fn a_host_whose_link_goes_down_vanishes_and_comes_back() {
    let Some(lab) = lab() else {
        return;
    };
    let server = udp(&lab, Node::Public, addr(SERVER_IP, 3478));
    let host = host_socket(&lab, Node::Host1);
    let mapped = deliver(&host, &server, b"hello");

    lab.set_host_link(Node::Host1, false).unwrap();
    // Sending may or may not report an error; nothing gets through either way.
    let _ = host.send_to(b"lost out", server.local_addr().unwrap());
    assert_eq!(receive(&server, b"lost out", QUIET), None);
    server.send_to(b"lost in", mapped).unwrap();
    assert_eq!(receive(&host, b"lost in", QUIET), None);

    lab.set_host_link(Node::Host1, true).unwrap();
    // The mapping outlived the outage.
    assert_eq!(deliver(&host, &server, b"back"), mapped);
    server.send_to(b"welcome back", mapped).unwrap();
    assert!(receive(&host, b"welcome back", ARRIVES).is_some());
    assert!(lab.set_host_link(Node::Router1, false).is_err());
}

#[test]
fn processes_run_inside_and_die_with_the_lab() {
    let Some(lab) = lab() else {
        return;
    };
    // A plain command, started from a thread inside the namespace.
    let ip = lab
        .spawn(Node::Host1, {
            let mut cmd = Command::new("ip");
            cmd.args(["-4", "-o", "address", "show"]);
            cmd
        })
        .unwrap();
    let status = ip.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{}", ip.stderr());
    let out = ip.stdout();
    assert!(out.contains(&format!("{HOST1_IP}/24")), "{out}");
    assert!(!out.contains("203.0.113"), "{out}");
    // One built with `command`, through `ip netns exec`.
    let rules = lab
        .command(Node::Router1, "nft")
        .args(["list", "table", "ip", "natlab"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains(&format!("snat to {ROUTER1_WAN_IP}")),
        "{rules}"
    );
    // Output is readable while the process runs.
    let talker = lab
        .spawn(Node::Public, {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo ready; echo oops >&2; exec sleep 30"]);
            cmd
        })
        .unwrap();
    assert_eq!(
        talker.wait_for_stdout("ready", Duration::from_secs(10)),
        Some("ready".to_owned())
    );
    assert!(
        talker
            .wait_for_stderr("oops", Duration::from_secs(10))
            .is_some()
    );
    assert!(talker.try_wait().unwrap().is_none());
    let sleeper = lab
        .spawn(Node::Host2, {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            cmd
        })
        .unwrap();
    drop(talker);
    assert!(sleeper.try_wait().unwrap().is_none());
    // Threads that enter a namespace, briefly or for long, and never the caller's.
    let netns_of_thread = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let here = netns_of_thread();
    let briefly = lab.run_in(Node::Host2, netns_of_thread).unwrap();
    let long = lab
        .thread_in(Node::Host2, netns_of_thread)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(briefly, long);
    assert_ne!(briefly, here);
    assert_eq!(netns_of_thread(), here);
    let pid = sleeper.id();
    drop(lab);
    // Killed by the lab, and reaped: the PID is free.
    assert!(sleeper.try_wait().unwrap().is_some());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// What `turnutils_natdiscovery` concludes for each behaviour.
fn mapping_verdict(mapping: Mapping) -> &'static str {
    match mapping {
        Mapping::EndpointIndependent => "NAT with Endpoint Independent Mapping!",
        Mapping::AddressDependent => "NAT with Address Dependent Mapping!",
        Mapping::AddressAndPortDependent => "NAT with Address and Port Dependent Mapping!",
    }
}

fn filtering_verdict(filtering: Filtering) -> &'static str {
    match filtering {
        Filtering::EndpointIndependent => "NAT with Endpoint Independent Filtering!",
        Filtering::AddressDependent => "NAT with Address Dependent Filtering!",
        Filtering::AddressAndPortDependent => "NAT with Address and Port Dependent Filtering!",
    }
}

#[test]
fn natdiscovery_classifies_each_nat_type_against_icebreaker() {
    if !have_tool("turnutils_natdiscovery") {
        return;
    }
    let Some(lab) = lab() else {
        return;
    };
    let server = serve_with_rfc5780(&lab);
    let all_mappings = [
        Mapping::EndpointIndependent,
        Mapping::AddressDependent,
        Mapping::AddressAndPortDependent,
    ];
    let all_filterings = [
        Filtering::EndpointIndependent,
        Filtering::AddressDependent,
        Filtering::AddressAndPortDependent,
    ];
    // Two types at a time, one behind each router.
    for pair in NatType::ALL.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .zip([Node::Host1, Node::Host2])
            .map(|(&nat, host)| {
                lab.set_nat(host, nat, false).unwrap();
                let mut cmd = Command::new("turnutils_natdiscovery");
                cmd.args(["-m", "-f", "-p", "3478", &SERVER_IP.to_string()]);
                (nat, lab.spawn(host, cmd).unwrap())
            })
            .collect();
        for (nat, run) in runs {
            let status = run.wait_timeout(Duration::from_secs(30)).unwrap();
            let out = format!("{}{}", run.stdout(), run.stderr());
            assert!(
                status.is_some_and(|s| s.success()),
                "{nat}: natdiscovery {status:?}:\n{out}"
            );
            for mapping in all_mappings {
                let verdict = mapping_verdict(mapping);
                assert_eq!(
                    out.contains(verdict),
                    mapping == nat.mapping(),
                    "{nat}: {verdict:?}\n{out}"
                );
            }
            for filtering in all_filterings {
                let verdict = filtering_verdict(filtering);
                assert_eq!(
                    out.contains(verdict),
                    filtering == nat.filtering(),
                    "{nat}: {verdict:?}\n{out}"
                );
            }
            assert!(!out.contains("No NAT!"), "{nat}:\n{out}");
        }
    }
    assert!(server.try_wait().unwrap().is_none(), "the server died");
}
