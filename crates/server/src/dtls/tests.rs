#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use dimpl::ProtocolVersion;
use icebreaker_wire::ChannelRange;

use super::*;

const LOCAL: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5349,
));

fn client_addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + n))
}

fn five_tuple(client: SocketAddr) -> FiveTuple {
    FiveTuple {
        client,
        server: LOCAL,
        transport: ClientTransport::Dtls,
    }
}

fn ecdsa_pair(name: &str) -> DtlsCertificate {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    DtlsCertificate {
        certificate: certified.cert.der().to_vec(),
        private_key: certified.signing_key.serialize_der(),
    }
}

/// A certificate source whose pair a test can replace, as a reload does.
struct Swappable(Mutex<Option<DtlsCertificate>>);

impl Certificates for Swappable {
    fn current(&self) -> Option<DtlsCertificate> {
        self.0.lock().unwrap().clone()
    }
}

/// What the table did, seen from the server around it.
#[derive(Default)]
struct TestHost {
    /// Datagrams sent, by client address.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    served: Vec<Vec<u8>>,
    opened: Vec<FiveTuple>,
    closed: Vec<(FiveTuple, CloseReason)>,
    allocated: bool,
    /// What `serve` answers: an echo in capitals, or a close.
    close_on_serve: Option<CloseReason>,
    reply: Vec<u8>,
}

impl Transmit for TestHost {
    fn transmit(&mut self, local: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        assert_eq!(local, LOCAL);
        self.sent.push((to, datagram.to_vec()));
    }
}

impl Host for TestHost {
    fn serve(&mut self, _client: &FiveTuple, message: &[u8]) -> Served<'_> {
        self.served.push(message.to_vec());
        if let Some(reason) = self.close_on_serve {
            return Served::Close(reason);
        }
        self.reply = message.to_ascii_uppercase();
        Served::Reply(&self.reply)
    }

    fn has_allocation(&self, _client: &FiveTuple) -> bool {
        self.allocated
    }

    fn opened(&mut self, client: &FiveTuple) {
        self.opened.push(*client);
    }

    fn closed(&mut self, client: &FiveTuple, reason: CloseReason) {
        self.closed.push((*client, reason));
    }
}

impl TestHost {
    fn take_sent_to(&mut self, client: SocketAddr) -> Vec<Vec<u8>> {
        let (to_client, others) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(to, _)| *to == client);
        self.sent = others;
        to_client.into_iter().map(|(_, d)| d).collect()
    }
}

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Bench {
    server: DtlsServer,
    host: TestHost,
    open: Arc<AtomicUsize>,
    certificates: Arc<Swappable>,
    now: Instant,
}

fn bench(max_connections: usize, max_unverified: usize) -> Bench {
    bench_with(max_connections, max_unverified, 1000)
}

fn bench_with(max_connections: usize, max_unverified: usize, new_per_second: u32) -> Bench {
    let open = Arc::new(AtomicUsize::new(0));
    let certificates = Arc::new(Swappable(Mutex::new(Some(ecdsa_pair("localhost")))));
    let settings = DtlsSettings {
        limits: StreamLimits {
            idle_timeout: IDLE_TIMEOUT,
            frame_timeout: FRAME_TIMEOUT,
            max_frame: 16_384,
            channels: ChannelRange::Rfc8656,
        },
        max_connections,
        open: open.clone(),
        max_unverified,
        new_per_second,
        certificates: certificates.clone(),
    };
    Bench {
        server: DtlsServer::new(settings).unwrap(),
        host: TestHost::default(),
        open,
        certificates,
        now: Instant::now(),
    }
}

/// A dimpl client of `version` (`None`: auto, offering both).
struct Client {
    addr: SocketAddr,
    dtls: Dtls,
    connected: bool,
    closed: bool,
    received: Vec<Vec<u8>>,
    peer_cert: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl Client {
    fn new(n: u16, version: Option<ProtocolVersion>, now: Instant) -> Client {
        let config = Arc::new(
            dimpl::Config::builder()
                .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
                .build()
                .unwrap(),
        );
        let cert = ecdsa_pair("client");
        let mut dtls = match version {
            Some(ProtocolVersion::DTLS1_2) => Dtls::new_12(config, cert, now),
            Some(_) => Dtls::new_13(config, cert, now),
            None => Dtls::new_auto(config, cert, now),
        };
        dtls.set_active(true);
        dtls.handle_timeout(now).unwrap();
        Client {
            addr: client_addr(n),
            dtls,
            connected: false,
            closed: false,
            received: Vec::new(),
            peer_cert: None,
            buf: vec![0; 4096],
        }
    }

    /// Drains the client: the datagrams it sends.
    fn outgoing(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => out.push(p.to_vec()),
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(_) => return out,
                Output::Connected => self.connected = true,
                Output::ApplicationData(data) => self.received.push(data.to_vec()),
                Output::PeerCert(der) => self.peer_cert = Some(der.to_vec()),
                Output::CloseNotify => self.closed = true,
                _ => {}
            }
        }
    }

    fn take(&mut self, datagrams: Vec<Vec<u8>>, now: Instant) {
        for datagram in datagrams {
            self.dtls.handle_timeout(now).unwrap();
            self.dtls.handle_packet(&datagram).unwrap();
        }
    }
}

impl Bench {
    /// Passes datagrams both ways until both sides are quiet; `forward` picks what of the
    /// client's reaches the server.
    fn exchange(&mut self, client: &mut Client, forward: impl Fn(&[u8]) -> bool) {
        for _ in 0..20 {
            let outgoing = client.outgoing();
            let mut moved = false;
            for datagram in outgoing.iter().filter(|d| forward(d)) {
                self.server
                    .receive(self.now, LOCAL, client.addr, datagram, &mut self.host);
                moved = true;
            }
            let incoming = self.host.take_sent_to(client.addr);
            moved |= !incoming.is_empty();
            client.take(incoming, self.now);
            if !moved {
                return;
            }
        }
        panic!("the handshake did not settle");
    }

    fn connect(&mut self, client: &mut Client) {
        self.exchange(client, |_| true);
        assert!(client.connected, "the handshake did not complete");
    }

    /// Moves the clock on and runs what is due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now, &mut self.host);
    }
}

#[test]
fn both_versions_complete_and_carry_one_message_per_record() {
    for version in [
        Some(ProtocolVersion::DTLS1_2),
        Some(ProtocolVersion::DTLS1_3),
        None,
    ] {
        let mut bench = bench(10, 10);
        let mut client = Client::new(1, version, bench.now);
        bench.connect(&mut client);
        let expected = version.unwrap_or(ProtocolVersion::DTLS1_3);
        assert_eq!(client.dtls.protocol_version(), Some(expected));
        assert_eq!(bench.host.opened, [five_tuple(client.addr)], "{version:?}");
        assert_eq!(bench.open.load(Ordering::Relaxed), 1);

        client.dtls.send_application_data(b"binding").unwrap();
        client.dtls.send_application_data(b"allocate").unwrap();
        bench.exchange(&mut client, |_| true);
        assert_eq!(
            bench.host.served,
            [b"binding".to_vec(), b"allocate".to_vec()]
        );
        assert_eq!(client.received, [b"BINDING".to_vec(), b"ALLOCATE".to_vec()]);
        assert!(bench.host.closed.is_empty());
    }
}

#[test]
fn relayed_data_reaches_only_a_connected_session() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, None, bench.now);
    let key = five_tuple(client.addr);
    // Before the handshake there is nothing to send to.
    assert!(
        !bench
            .server
            .send_to(bench.now, &key, b"early", &mut bench.host)
    );
    bench.connect(&mut client);
    let big = vec![7u8; 1400];
    assert!(
        bench
            .server
            .send_to(bench.now, &key, b"data", &mut bench.host)
    );
    assert!(bench.server.send_to(bench.now, &key, &big, &mut bench.host));
    let incoming = bench.host.take_sent_to(client.addr);
    client.take(incoming, bench.now);
    client.outgoing();
    assert_eq!(client.received, [b"data".to_vec(), big]);
    let stranger = five_tuple(client_addr(2));
    assert!(
        !bench
            .server
            .send_to(bench.now, &stranger, b"x", &mut bench.host)
    );
}

#[test]
fn a_lone_client_hello_is_answered_with_a_cookie_and_counted_nowhere() {
    for version in [
        Some(ProtocolVersion::DTLS1_2),
        Some(ProtocolVersion::DTLS1_3),
    ] {
        let mut bench = bench(10, 10);
        let mut client = Client::new(1, version, bench.now);
        let hello = client.outgoing();
        assert!(is_client_hello(&hello[0]));
        bench
            .server
            .receive(bench.now, LOCAL, client.addr, &hello[0], &mut bench.host);
        let answer = bench.host.take_sent_to(client.addr);
        assert_eq!(answer.len(), 1, "{version:?}: one cookie datagram");
        assert!(!verifies_address(&answer[0]), "{version:?}");
        assert_eq!(bench.server.len(), 1);
        assert!(bench.host.opened.is_empty(), "{version:?}");
        assert_eq!(bench.open.load(Ordering::Relaxed), 0);

        // Past the handshake limit it goes, silently.
        bench.advance(FRAME_TIMEOUT + Duration::from_secs(2));
        assert_eq!(bench.server.len(), 0);
        assert!(bench.host.closed.is_empty());
    }
}

#[test]
fn the_unverified_pool_is_bounded_and_drops_its_oldest() {
    let mut bench = bench(10, 3);
    let mut clients: Vec<Client> = (0..5)
        .map(|n| Client::new(n, Some(ProtocolVersion::DTLS1_2), bench.now))
        .collect();
    for client in &mut clients {
        let hello = client.outgoing();
        bench
            .server
            .receive(bench.now, LOCAL, client.addr, &hello[0], &mut bench.host);
    }
    assert_eq!(bench.server.len(), 3);
    // The newest still finishes its handshake.
    let newest = clients.last_mut().unwrap();
    let cookie = bench.host.take_sent_to(newest.addr);
    newest.take(cookie, bench.now);
    bench.connect(newest);
    assert_eq!(bench.host.opened, [five_tuple(newest.addr)]);
    assert_eq!(bench.server.len(), 3);
    assert!(
        bench.host.closed.is_empty(),
        "dropped unverified sessions are not counted"
    );
}

#[test]
fn new_sessions_are_started_at_a_bounded_rate() {
    let mut bench = bench_with(10, 100, 3);
    let hello = |bench: &mut Bench, n: u16| {
        let mut client = Client::new(n, Some(ProtocolVersion::DTLS1_2), bench.now);
        let hello = client.outgoing().remove(0);
        bench
            .server
            .receive(bench.now, LOCAL, client.addr, &hello, &mut bench.host);
    };
    for n in 0..5 {
        hello(&mut bench, n);
    }
    assert_eq!(bench.server.len(), 3, "two ClientHellos over the budget");
    bench.now += Duration::from_millis(999);
    hello(&mut bench, 5);
    assert_eq!(bench.server.len(), 3);
    bench.now += Duration::from_millis(1);
    hello(&mut bench, 6);
    assert_eq!(bench.server.len(), 4, "a new second, a new budget");
}

#[test]
fn strangers_without_a_client_hello_make_no_session() {
    let mut bench = bench(10, 10);
    for garbage in [&b""[..], &[22; 12], &[23; 40], &[0x01, 0x01, 0x00, 0x00]] {
        bench
            .server
            .receive(bench.now, LOCAL, client_addr(1), garbage, &mut bench.host);
    }
    assert_eq!(bench.server.len(), 0);
    assert!(bench.host.sent.is_empty());
    assert_eq!(bench.server.poll_timeout(), None);
}

#[test]
fn a_dtls_1_0_client_hello_is_refused_at_once_without_a_session() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, Some(ProtocolVersion::DTLS1_2), bench.now);
    let mut hello = client.outgoing().remove(0);
    // The same ClientHello, offering DTLS 1.0 alone.
    hello[RECORD_HEADER + HANDSHAKE_HEADER + 1] = 0xFF;
    bench
        .server
        .receive(bench.now, LOCAL, client.addr, &hello, &mut bench.host);
    assert_eq!(bench.server.len(), 0);
    let answer = bench.host.take_sent_to(client.addr);
    assert_eq!(answer.len(), 1);
    assert_eq!(&answer[0][..1], &[ALERT]);
    assert_eq!(&answer[0][13..], &[2, 70], "fatal protocol_version");
}

#[test]
fn garbage_inside_a_session_is_dropped_and_the_session_lives() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, Some(ProtocolVersion::DTLS1_2), bench.now);
    bench.connect(&mut client);
    for garbage in [
        &[23u8, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4][..],
        &[0xFF; 64],
    ] {
        bench
            .server
            .receive(bench.now, LOCAL, client.addr, garbage, &mut bench.host);
    }
    assert!(bench.host.closed.is_empty(), "{:?}", bench.host.closed);
    client.dtls.send_application_data(b"still").unwrap();
    bench.exchange(&mut client, |_| true);
    assert_eq!(client.received, [b"STILL".to_vec()]);
}

#[test]
fn at_the_connection_limit_a_proved_client_is_refused_and_counted() {
    let mut bench = bench(1, 10);
    bench.open.store(1, Ordering::Relaxed);
    let mut client = Client::new(1, None, bench.now);
    bench.exchange(&mut client, |_| true);
    assert!(!client.connected);
    let key = five_tuple(client.addr);
    assert_eq!(bench.host.opened, [key]);
    assert_eq!(bench.host.closed, [(key, CloseReason::Limit)]);
    assert_eq!(bench.open.load(Ordering::Relaxed), 1);
    assert_eq!(bench.server.len(), 0);
}

#[test]
fn idle_sessions_close_unless_they_hold_an_allocation() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, None, bench.now);
    bench.connect(&mut client);
    bench.host.allocated = true;
    bench.advance(IDLE_TIMEOUT * 3);
    assert!(bench.host.closed.is_empty());

    bench.host.allocated = false;
    bench.advance(Duration::from_secs(2));
    let key = five_tuple(client.addr);
    assert_eq!(bench.host.closed, [(key, CloseReason::Idle)]);
    assert_eq!(bench.open.load(Ordering::Relaxed), 0);
    // The client is told.
    let goodbye = bench.host.take_sent_to(client.addr);
    client.take(goodbye, bench.now);
    client.outgoing();
    assert!(client.closed, "no close_notify");
}

#[test]
fn a_handshake_that_stalls_after_the_cookie_is_closed_as_slow() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, Some(ProtocolVersion::DTLS1_2), bench.now);
    // Only ClientHellos reach the server: the client proves its address, then goes quiet.
    bench.exchange(&mut client, is_client_hello);
    assert!(!client.connected);
    let key = five_tuple(client.addr);
    assert_eq!(bench.host.opened, [key]);
    assert_eq!(bench.open.load(Ordering::Relaxed), 1);
    // dimpl retransmits its flight meanwhile.
    bench.host.sent.clear();
    for _ in 0..10 {
        bench.advance(Duration::from_secs(1));
    }
    assert!(!bench.host.sent.is_empty(), "no retransmission");
    assert!(bench.host.closed.is_empty());
    bench.advance(Duration::from_secs(2));
    assert_eq!(bench.host.closed, [(key, CloseReason::SlowFrame)]);
    assert_eq!(bench.open.load(Ordering::Relaxed), 0);
}

#[test]
fn close_notify_and_a_close_from_the_core_end_the_session() {
    let mut bench = bench(10, 10);
    let mut client = Client::new(1, None, bench.now);
    bench.connect(&mut client);
    client.dtls.close().unwrap();
    bench.exchange(&mut client, |_| true);
    let key = five_tuple(client.addr);
    assert_eq!(bench.host.closed, [(key, CloseReason::Peer)]);

    let mut guesser = Client::new(2, None, bench.now);
    bench.connect(&mut guesser);
    bench.host.close_on_serve = Some(CloseReason::Throttled);
    guesser.dtls.send_application_data(b"guess").unwrap();
    bench.exchange(&mut guesser, |_| true);
    assert_eq!(
        bench.host.closed[1],
        (five_tuple(guesser.addr), CloseReason::Throttled)
    );
    assert!(guesser.closed, "the guesser got no close_notify");
    assert_eq!(bench.open.load(Ordering::Relaxed), 0);
    assert_eq!(bench.server.len(), 0);
}

#[test]
fn a_new_certificate_serves_new_sessions_and_old_ones_keep_going() {
    let mut bench = bench(10, 10);
    let first = bench.certificates.current().unwrap().certificate;
    let mut old = Client::new(1, None, bench.now);
    bench.connect(&mut old);
    assert_eq!(old.peer_cert.as_deref(), Some(&first[..]));

    let renewed = ecdsa_pair("renewed.localhost");
    *bench.certificates.0.lock().unwrap() = Some(renewed.clone());
    let mut new = Client::new(2, Some(ProtocolVersion::DTLS1_2), bench.now);
    bench.connect(&mut new);
    assert_eq!(new.peer_cert, Some(renewed.certificate));

    old.dtls.send_application_data(b"old").unwrap();
    bench.exchange(&mut old, |_| true);
    assert_eq!(old.received, [b"OLD".to_vec()]);

    // Without a certificate no session starts.
    *bench.certificates.0.lock().unwrap() = None;
    let mut refused = Client::new(3, None, bench.now);
    bench.exchange(&mut refused, |_| true);
    assert!(!refused.connected);
    assert_eq!(bench.server.len(), 2);
}

#[test]
fn closing_all_tells_every_client() {
    let mut bench = bench(10, 10);
    let mut clients: Vec<Client> = (0..3).map(|n| Client::new(n, None, bench.now)).collect();
    for client in &mut clients {
        bench.connect(client);
    }
    bench.server.close_all(&mut bench.host);
    assert_eq!(bench.host.closed.len(), 3);
    for client in &mut clients {
        let goodbye = bench.host.take_sent_to(client.addr);
        client.take(goodbye, bench.now);
        client.outgoing();
        assert!(client.closed);
    }
    assert_eq!(bench.open.load(Ordering::Relaxed), 0);
}

#[test]
fn record_classification() {
    let record = |kind: u8, epoch: u16, body: &[u8]| {
        let mut r = vec![kind, 0xFE, 0xFD];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    };
    let handshake = |msg: u8, offset: u8, body: &[u8]| {
        let mut h = vec![msg, 0, 0, body.len() as u8, 0, 0, 0, 0, offset];
        h.extend_from_slice(&[0, 0, body.len() as u8]);
        h.extend_from_slice(body);
        h
    };
    let hello = record(HANDSHAKE, 0, &handshake(CLIENT_HELLO, 0, &[0; 40]));
    assert!(is_client_hello(&hello));
    assert!(!is_client_hello(&hello[..hello.len() - 1]), "truncated");
    assert!(!is_client_hello(&record(
        HANDSHAKE,
        1,
        &handshake(CLIENT_HELLO, 0, &[0; 40])
    )));
    assert!(!is_client_hello(&record(
        HANDSHAKE,
        0,
        &handshake(CLIENT_HELLO, 5, &[0; 40])
    )));
    assert!(!is_client_hello(&record(
        HANDSHAKE,
        0,
        &handshake(SERVER_HELLO, 0, &[0; 40])
    )));
    assert!(!is_client_hello(&record(
        23,
        0,
        &handshake(CLIENT_HELLO, 0, &[0; 40])
    )));

    assert_eq!(refuse_old_version(&hello), None, "a DTLS 1.2 ClientHello");
    let mut old_body = vec![0xFE, 0xFF];
    old_body.extend_from_slice(&[0; 38]);
    let mut old = record(HANDSHAKE, 0, &handshake(CLIENT_HELLO, 0, &old_body));
    old[2] = 0xFF;
    assert!(is_client_hello(&old));
    let alert = refuse_old_version(&old).unwrap();
    assert_eq!(
        alert,
        [ALERT, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 70]
    );
    assert!(!verifies_address(&alert));

    let hvr = record(HANDSHAKE, 0, &handshake(HELLO_VERIFY_REQUEST, 0, &[0; 35]));
    let mut hrr_body = vec![0xFE, 0xFD];
    hrr_body.extend_from_slice(&HELLO_RETRY_RANDOM);
    let hrr = record(HANDSHAKE, 0, &handshake(SERVER_HELLO, 0, &hrr_body));
    let alert = record(ALERT, 0, &[2, 40]);
    assert!(!verifies_address(&hvr));
    assert!(!verifies_address(&hrr));
    assert!(!verifies_address(&[hrr.clone(), alert.clone()].concat()));
    let mut hello_body = vec![0xFE, 0xFD];
    hello_body.extend_from_slice(&[7; 32]);
    let server_hello = record(HANDSHAKE, 0, &handshake(SERVER_HELLO, 0, &hello_body));
    assert!(verifies_address(&server_hello));
    assert!(verifies_address(&[hvr.clone(), server_hello].concat()));
    assert!(
        verifies_address(&[0x2C, 1, 2, 3]),
        "a DTLS 1.3 encrypted record"
    );
    assert!(verifies_address(&record(23, 1, &[1; 30])));
}
