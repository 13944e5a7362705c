//! `icebreaker serve`: builds the cores from the configuration, starts one worker per thread and
//! the metrics endpoint, prints how to connect, and handles SIGHUP (reload) and SIGTERM (drain).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use icebreaker_stun::{AlternateAddress, BindingConfig, BindingService};
use icebreaker_turn::{PeerPolicy, Quotas, RelayAddress, TurnConfig, TurnServer};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};

use crate::config::{Config, Flags, UserCredential};
use crate::dtls::{DtlsSettings, MAX_UNVERIFIED, NEW_SESSIONS_PER_SECOND};
use crate::metrics::Metrics;
use crate::net::{self, ListenProtocol};
use crate::stream::StreamLimits;
use crate::tls::CertificateStore;
use crate::worker::{
    Control, Crew, ListenAddresses, Sibling, StreamSettings, TcpRelayPorts, Worker,
};

/// How often the certificate files are checked for a renewal.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(2);

/// How often the main thread looks at pending signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// Where the configuration came from, to load it again on SIGHUP.
pub struct Source {
    /// The `--config` file, if any.
    pub file: Option<PathBuf>,
    /// The command-line flags.
    pub flags: Flags,
}

/// The name of the user generated when none is configured.
const GENERATED_USER: &str = "icebreaker";

/// Runs the server until SIGTERM or SIGINT, then drains.
pub fn run(mut config: Config, source: Source) -> anyhow::Result<()> {
    let generated = generate_user_if_none(&mut config);
    let interfaces = net::interface_addresses().context("cannot list interface addresses")?;
    let mut listen = net::expand_listen(&config.listen, &interfaces);
    if listen.is_empty() {
        bail!(
            "no address to listen on: {:?} matched no interface",
            config.listen
        );
    }
    let binding = binding_service(&config, &listen)?;
    for addr in binding.rfc5780_addresses() {
        if !listen.contains(&addr) {
            listen.push(addr);
        }
    }

    // TCP serves the configured listen addresses; the RFC 5780 alternates are for UDP.
    let tcp_listen = net::expand_listen(&config.listen, &interfaces);
    let tls_listen = net::expand_listen(&config.effective_tls_listen(), &interfaces);
    for &addr in &listen {
        net::ensure_unused(addr, ListenProtocol::Udp)?;
    }
    for &addr in tcp_listen.iter().chain(&tls_listen) {
        net::ensure_unused(addr, ListenProtocol::Tcp)?;
    }
    let certificates = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(CertificateStore::open(cert, key)?)),
        _ => None,
    };
    let tls = certificates
        .as_ref()
        .map(|store| crate::tls::server_config(store.clone()))
        .transpose()?;
    let mut startup_warnings = config.warnings();
    let dtls_listen = dtls_listen(
        &config,
        &interfaces,
        certificates.as_ref(),
        &mut startup_warnings,
    )?;
    for &addr in &dtls_listen {
        if listen.contains(&addr) {
            bail!("dtls {addr} is also a UDP listen address: one UDP port cannot serve both");
        }
        net::ensure_unused(addr, ListenProtocol::Udp)?;
    }
    let limits = StreamLimits {
        idle_timeout: Duration::from_secs(config.idle_timeout.into()),
        frame_timeout: Duration::from_secs(config.frame_timeout.into()),
        max_frame: config.max_frame as usize,
        channels: if config.rfc5766_channels {
            icebreaker_wire::ChannelRange::Rfc5766
        } else {
            icebreaker_wire::ChannelRange::Rfc8656
        },
    };
    let stream_settings = StreamSettings {
        limits,
        tls,
        proxy_protocol: config.proxy_protocol,
        max_connections: config.max_connections as usize,
        open: Arc::new(AtomicUsize::new(0)),
    };
    let dtls_settings = match &certificates {
        Some(store) if !dtls_listen.is_empty() => Some(DtlsSettings {
            limits,
            max_connections: stream_settings.max_connections,
            // One limit for every kind of connection.
            open: stream_settings.open.clone(),
            max_unverified: MAX_UNVERIFIED,
            new_per_second: NEW_SESSIONS_PER_SECOND,
            certificates: store.clone(),
        }),
        _ => None,
    };

    let mut nonce_secret = [0u8; 32];
    StdRng::from_os_rng().fill_bytes(&mut nonce_secret);
    let core_config = turn_config(&config, &listen, &interfaces, nonce_secret);
    let quotas = Arc::new(Quotas::new(config.total_quota, config.user_quota));
    let metrics = Metrics::new(config.relay_ports.len() as u64);
    let (now, unix_now) = (Instant::now(), unix_time());

    let threads = config.worker_threads().get();
    let mut built = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (sender, receiver) = mpsc::channel();
        let core = TurnServer::new(
            core_config.clone(),
            quotas.clone(),
            Box::new(StdRng::from_os_rng()),
            now,
            unix_now,
        );
        let addresses = ListenAddresses {
            udp: &listen,
            tcp: &tcp_listen,
            tls: &tls_listen,
            dtls: &dtls_listen,
        };
        let (worker, waker) = Worker::new(
            &addresses,
            stream_settings.clone(),
            dtls_settings.clone(),
            core,
            binding.clone(),
            metrics.worker(),
            receiver,
        )?;
        built.push((worker, sender, Arc::new(waker)));
    }
    // Any worker may receive a ConnectionBind (RFC 6062) for another's connection, and
    // hands it over.
    let crew = Crew {
        workers: built
            .iter()
            .map(|(_, sender, waker)| Sibling {
                sender: sender.clone(),
                waker: waker.clone(),
            })
            .collect(),
        ports: TcpRelayPorts::default(),
    };
    let mut workers = Vec::with_capacity(threads);
    for (index, (mut worker, sender, waker)) in built.into_iter().enumerate() {
        worker.join_crew(index, crew.clone());
        let handle = thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || worker.run())?;
        workers.push((sender, waker, handle));
    }

    let ready = Arc::new(AtomicBool::new(true));
    let stop_http = Arc::new(AtomicBool::new(false));
    let http = match config.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let (metrics, ready, stop) = (metrics.clone(), ready.clone(), stop_http.clone());
            Some(
                thread::Builder::new()
                    .name("metrics".into())
                    .spawn(move || {
                        if let Err(error) =
                            crate::metrics::serve_http(listener, metrics, ready, stop)
                        {
                            error!(%error, "metrics endpoint failed");
                        }
                    })?,
            )
        }
        None => None,
    };

    print_banner(
        &config,
        &ListenAddresses {
            udp: &listen,
            tcp: &tcp_listen,
            tls: &tls_listen,
            dtls: &dtls_listen,
        },
        generated.as_deref(),
    );
    for warning in startup_warnings {
        warn!("{warning}");
    }
    info!(threads, udp = ?listen, tcp = ?tcp_listen, tls = ?tls_listen, dtls = ?dtls_listen, "serving");

    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    let mut next_certificate_check = Instant::now() + CERTIFICATE_CHECK;
    'serving: loop {
        thread::sleep(SIGNAL_CHECK);
        if let Some(store) = &certificates
            && Instant::now() >= next_certificate_check
        {
            next_certificate_check = Instant::now() + CERTIFICATE_CHECK;
            match store.reload_if_changed() {
                Ok(true) => info!("TLS certificate files changed: reloaded"),
                Ok(false) => {}
                Err(error) => {
                    error!(
                        error = format!("{error:#}"),
                        "TLS certificate refused; the old one stays"
                    );
                }
            }
        }
        for signal in signals.pending() {
            if signal != SIGHUP {
                break 'serving;
            }
            if let Some(store) = &certificates {
                match store.reload() {
                    Ok(()) => info!("TLS certificate reloaded"),
                    Err(error) => {
                        error!(
                            error = format!("{error:#}"),
                            "TLS certificate refused; the old one stays"
                        );
                    }
                }
            }
            match Config::load(source.file.as_deref(), &source.flags) {
                Ok(mut new) => {
                    new.users = if new.users.is_empty() && new.auth_secrets.is_empty() {
                        config.users.clone()
                    } else {
                        new.users
                    };
                    let reloaded = turn_config(&new, &listen, &interfaces, nonce_secret);
                    quotas.set_limits(new.total_quota, new.user_quota);
                    for (sender, waker, _) in &workers {
                        let _ = sender.send(Control::Reconfigure(Box::new(reloaded.clone())));
                        let _ = waker.wake();
                    }
                    info!("configuration reloaded");
                }
                Err(error) => error!(%error, "reload refused; the running configuration stays"),
            }
        }
    }

    info!(timeout = config.drain_timeout, "draining");
    ready.store(false, Ordering::Relaxed);
    for (sender, waker, _) in &workers {
        let _ = sender.send(Control::Drain);
        let _ = waker.wake();
    }
    let deadline = Instant::now() + Duration::from_secs(config.drain_timeout.into());
    while quotas.total() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for (sender, waker, _) in &workers {
        let _ = sender.send(Control::Stop);
        let _ = waker.wake();
    }
    for (_, _, handle) in workers {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => error!(%error, "worker failed"),
            Err(_) => error!("worker panicked"),
        }
    }
    stop_http.store(true, Ordering::Relaxed);
    if let Some(http) = http {
        let _ = http.join();
    }
    info!(remaining = quotas.total(), "stopped");
    Ok(())
}

/// The DTLS listen addresses, wildcards expanded, once the certificate is known: DTLS needs an
/// ECDSA one. Asked for explicitly with another certificate, that is an error; by default, a
/// warning and no DTLS.
fn dtls_listen(
    config: &Config,
    interfaces: &[IpAddr],
    certificates: Option<&Arc<CertificateStore>>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let addresses = net::expand_listen(&config.effective_dtls_listen(), interfaces);
    let Some(store) = certificates.filter(|_| !addresses.is_empty()) else {
        return Ok(Vec::new());
    };
    match store.dtls_certificate() {
        Ok(_) => {
            store.require_dtls();
            Ok(addresses)
        }
        Err(reason) if config.dtls_listen.is_some() => bail!("dtls-listen: {reason}"),
        Err(reason) => {
            warnings.push(format!(
                "no DTLS: {reason}; set dtls-listen = [] to silence this, or use an ECDSA \
                 certificate"
            ));
            Ok(Vec::new())
        }
    }
}

/// With neither users nor REST secrets configured, nobody could use the relay: make one user
/// with a random password and return the password, to be printed.
fn generate_user_if_none(config: &mut Config) -> Option<String> {
    if !config.users.is_empty() || !config.auth_secrets.is_empty() {
        return None;
    }
    let mut bytes = [0u8; 18];
    StdRng::from_os_rng().fill_bytes(&mut bytes);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    config.users.push(crate::config::User {
        name: GENERATED_USER.into(),
        credential: UserCredential::Password(password.clone()),
    });
    Some(password)
}

fn binding_service(config: &Config, listen: &[SocketAddr]) -> anyhow::Result<BindingService> {
    let rfc5780 = match config.other_address {
        Some(alternate) => {
            let primary = listen
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == alternate.is_ipv4() && a.ip() != alternate.ip())
                .context("other-address needs a listen address of its family on another IP")?;
            Some(AlternateAddress { primary, alternate })
        }
        None => None,
    };
    BindingService::new(BindingConfig {
        software: config.software.clone(),
        rfc5780,
    })
    .context("invalid STUN configuration")
}

/// The TURN core's configuration from the server's.
pub fn turn_config(
    config: &Config,
    listen: &[SocketAddr],
    interfaces: &[IpAddr],
    nonce_secret: [u8; 32],
) -> TurnConfig {
    let relay_ports = config.relay_ports.min()..=config.relay_ports.max();
    let mut turn = TurnConfig::new(&config.realm, relay_ports.clone());
    turn.users = config
        .users
        .iter()
        .map(|user| {
            let credential = match &user.credential {
                UserCredential::Password(p) => icebreaker_turn::UserCredential::Password(p.clone()),
                UserCredential::Md5Key(k) => icebreaker_turn::UserCredential::Md5Key(*k),
            };
            (user.name.clone(), credential)
        })
        .collect();
    turn.rest_secrets = config
        .auth_secrets
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    turn.nonce_secret = nonce_secret;
    turn.nonce_lifetime = Duration::from_secs(config.nonce_lifetime.into());
    turn.default_lifetime = Duration::from_secs(config.default_lifetime.into());
    turn.max_lifetime = Duration::from_secs(config.max_lifetime.into());
    turn.max_permissions = config.max_permissions as usize;
    turn.max_channels = config.max_channels as usize;
    turn.max_bandwidth = config.max_bandwidth;
    turn.software = config.software.clone();
    turn.channel_range = if config.rfc5766_channels {
        icebreaker_turn::ChannelRange::Rfc5766
    } else {
        icebreaker_turn::ChannelRange::Rfc8656
    };
    turn.relay = relay_addresses(config, listen);
    turn.family_fallback = family_fallback(listen);
    turn.alternate_servers = config.alternate_servers.clone();
    turn.tcp_relay = config.tcp_relay;

    let mut own: Vec<IpAddr> = interfaces.to_vec();
    own.extend(listen.iter().map(SocketAddr::ip));
    own.extend(config.relay_ip);
    own.extend(config.external_ip);
    own.sort();
    own.dedup();
    // Without a relay address of its family, an allocation relays on the address the client
    // reached: a specific listen address is then a relay address too. A wildcard listener's
    // interface addresses are not counted, so that a loopback-only service on a high port
    // stays out of reach of remote clients.
    let mut relay_ips: Vec<IpAddr> = turn
        .relay
        .iter()
        .flat_map(|relay| [relay.bind, relay.advertised])
        .collect();
    relay_ips.extend(listen.iter().map(SocketAddr::ip).filter(|ip| {
        !ip.is_unspecified() && !turn.relay.iter().any(|r| r.bind.is_ipv4() == ip.is_ipv4())
    }));
    relay_ips.extend(turn.family_fallback.iter().copied());
    relay_ips.sort();
    relay_ips.dedup();
    turn.peer_policy = PeerPolicy {
        allow: config.allow_peers.clone(),
        deny: config.deny_peers.clone(),
        server_addresses: own,
        relay_ports,
        relay_addresses: relay_ips,
    };
    turn
}

/// Where relay sockets bind and what clients are told: `relay-ip`, advertised as
/// `external-ip` when set. With only `external-ip`, relays bind on the first listen address of
/// its family.
fn relay_addresses(config: &Config, listen: &[SocketAddr]) -> Vec<RelayAddress> {
    let bind = config.relay_ip.or_else(|| {
        let external = config.external_ip?;
        listen
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| ip.is_ipv4() == external.is_ipv4())
    });
    match bind {
        Some(bind) => vec![RelayAddress {
            bind,
            advertised: config.external_ip.unwrap_or(bind),
        }],
        None => Vec::new(),
    }
}

/// One listen IP per family, for an allocation of the family the client did not reach (an
/// IPv6 relay asked over IPv4, the second half of a dual allocation): the first that is not
/// loopback, or loopback when the server listens on nothing else.
fn family_fallback(listen: &[SocketAddr]) -> Vec<IpAddr> {
    [true, false]
        .into_iter()
        .filter_map(|ipv4| {
            let mut ips = listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| ip.is_ipv4() == ipv4 && !ip.is_unspecified());
            let first = ips.clone().next();
            ips.find(|ip| !ip.is_loopback()).or(first)
        })
        .collect()
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The address shown to clients among `listen`: the first that is not loopback, if any.
fn shown_address(listen: &[SocketAddr]) -> Option<SocketAddr> {
    listen
        .iter()
        .find(|a| !a.ip().is_loopback())
        .or_else(|| listen.first())
        .copied()
}

/// Tells the operator how to connect: addresses, credentials, and an `iceServers` snippet.
fn print_banner(config: &Config, listen: &ListenAddresses<'_>, generated_password: Option<&str>) {
    let shown = shown_address(listen.udp);
    let addresses: Vec<String> = [
        ("udp", listen.udp),
        ("tcp", listen.tcp),
        ("tls", listen.tls),
        ("dtls", listen.dtls),
    ]
    .iter()
    .flat_map(|(name, addresses)| addresses.iter().map(move |a| format!("{name} {a}")))
    .collect();
    println!(
        "icebreaker {}: STUN and TURN on {}",
        env!("CARGO_PKG_VERSION"),
        addresses.join(", ")
    );
    let Some(shown) = shown else {
        return;
    };
    // Behind a 1:1 NAT clients must be given the public address. SocketAddr's Display is the
    // URL authority, IPv6 in brackets included.
    let public = SocketAddr::new(config.external_ip.unwrap_or(shown.ip()), shown.port());
    let stun = format!("stun:{public}");
    let mut turn = vec![format!("turn:{public}?transport=udp")];
    if listen.tcp.contains(&shown) {
        turn.push(format!("turn:{public}?transport=tcp"));
    }
    if let Some(tls) = shown_address(listen.tls) {
        // A certificate names the host: clients must use a name it covers, shown here as the
        // address until the operator puts the name in.
        let public = SocketAddr::new(config.external_ip.unwrap_or(tls.ip()), tls.port());
        turn.push(format!("turns:{public}?transport=tcp"));
    }
    println!("realm: {}", config.realm);
    match generated_password {
        Some(password) => {
            println!(
                "user: {GENERATED_USER}  password: {password}  (generated; set --user NAME:PASSWORD or --auth-secret to choose)"
            );
            let snippet = serde_json::json!({
                "iceServers": [
                    { "urls": [stun] },
                    { "urls": turn, "username": GENERATED_USER, "credential": password },
                ]
            });
            println!("iceServers: {snippet}");
        }
        None => {
            let snippet =
                serde_json::json!({ "iceServers": [ { "urls": [stun] }, { "urls": turn } ] });
            println!(
                "iceServers (add username and credential; `icebreaker credentials` makes REST ones): {snippet}"
            );
        }
    }
    if config.allow_peers.is_empty() {
        println!(
            "peers on private, loopback and link-local addresses are refused; --allow-peer CIDR opens them (for a lab)"
        );
    }
}
