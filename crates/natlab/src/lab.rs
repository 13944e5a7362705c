//! Real NATs in Linux network namespaces, for running the real binaries behind them.
//!
//! ```text
//! h1 10.0.1.2 --lan-- r1 (wan 198.51.100.18/28) --+
//!                                                 pub: servers on 203.0.113.1 and .2
//! h2 10.0.2.2 --lan-- r2 (wan 198.51.100.34/28) --+
//! ```
//!
//! [`Lab::new`] builds five namespaces joined by point-to-point veth pairs, each pair created
//! directly inside its two namespaces, so nothing is added to the namespace the process runs
//! in and nothing in the lab has a route to a real network. Names start with a prefix unique
//! to the lab (`ib<pid>x<n>`), so labs run side by side. Each router is one of the four
//! [`NatType`]s, made by one nftables table in the router; switching replaces the table
//! atomically and flushes the router's conntrack table, whose entries are the mappings.
//! Dropping the lab kills the processes it started and deletes its namespaces, also while a
//! test panics.
//!
//! Sockets are opened inside the lab from Rust with [`Lab::run_in`] (a thread that enters the
//! namespace; the sockets stay in it afterwards), programs are started with [`Lab::spawn`].
//! Everything needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the tools `ip` (iproute2),
//! `nft` (nftables) and `conntrack`: see [`Lab::check_available`].
//!
//! Addresses are from the RFC 5737 documentation ranges and 10.0.0.0/16; they never leave
//! the lab.

mod ns;
mod process;
mod rules;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::thread;

pub use process::LabProcess;

use crate::NatType;
use ns::{NETNS_DIR, in_namespace, run_tool, sysctl};
use rules::{FLUSH_MAPS, LAN_IF, RouterRules, WAN_IF};

/// The STUN/TURN server's primary address, in [`Node::Public`].
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The server's second address, in [`Node::Public`], for RFC 5780's OTHER-ADDRESS and for
/// "another remote IP".
pub const SERVER_IP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// [`Node::Router1`]'s WAN address: the external address of host 1's mappings.
pub const ROUTER1_WAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 18);
/// [`Node::Router2`]'s WAN address: the external address of host 2's mappings.
pub const ROUTER2_WAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 34);
/// [`Node::Public`]'s address on the link to router 1, router 1's default gateway.
pub const PUBLIC_TO_ROUTER1_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 17);
/// [`Node::Public`]'s address on the link to router 2, router 2's default gateway.
pub const PUBLIC_TO_ROUTER2_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 33);
/// Prefix length of the two WAN links.
pub const WAN_PREFIX_LEN: u8 = 28;
/// [`Node::Host1`]'s address.
pub const HOST1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// [`Node::Host2`]'s address.
pub const HOST2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// [`Node::Router1`]'s LAN address, host 1's default gateway.
pub const ROUTER1_LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// [`Node::Router2`]'s LAN address, host 2's default gateway.
pub const ROUTER2_LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// Prefix length of the two LANs.
pub const LAN_PREFIX_LEN: u8 = 24;

/// The mapping lifetime before [`Lab::set_udp_timeout`]: the kernel's default
/// `nf_conntrack_udp_timeout_stream`, the longest a conntrack UDP entry lives untouched.
pub const DEFAULT_MAPPING_TIMEOUT_SECS: u32 = 120;

/// The tools the lab runs, with the Debian packages that hold them.
const TOOLS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
];

/// One namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// The public network: routes between the routers; servers on [`SERVER_IP`] and
    /// [`SERVER_IP2`] (both on its loopback interface).
    Public,
    /// Host 1's NAT: WAN [`ROUTER1_WAN_IP`], LAN [`ROUTER1_LAN_IP`].
    Router1,
    /// Host 2's NAT: WAN [`ROUTER2_WAN_IP`], LAN [`ROUTER2_LAN_IP`].
    Router2,
    /// [`HOST1_IP`], behind router 1.
    Host1,
    /// [`HOST2_IP`], behind router 2.
    Host2,
}

impl Node {
    /// Every node, in the order the lab builds them.
    pub const ALL: [Node; 5] = [
        Node::Public,
        Node::Router1,
        Node::Router2,
        Node::Host1,
        Node::Host2,
    ];

    /// The suffix of the node's namespace name: `pub`, `r1`, `r2`, `h1`, `h2`.
    pub fn name(self) -> &'static str {
        match self {
            Node::Public => "pub",
            Node::Router1 => "r1",
            Node::Router2 => "r2",
            Node::Host1 => "h1",
            Node::Host2 => "h2",
        }
    }

    /// The node's address as the rest of the lab sees it: a host's LAN address, a router's
    /// WAN address, the public node's [`SERVER_IP`].
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Node::Public => SERVER_IP,
            Node::Router1 => ROUTER1_WAN_IP,
            Node::Router2 => ROUTER2_WAN_IP,
            Node::Host1 => HOST1_IP,
            Node::Host2 => HOST2_IP,
        }
    }

    /// The router in front of a host, or the router itself.
    pub fn router(self) -> Option<Node> {
        match self {
            Node::Router1 | Node::Host1 => Some(Node::Router1),
            Node::Router2 | Node::Host2 => Some(Node::Router2),
            Node::Public => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// What `ip -batch` sets up inside the node's namespace. Links go up before their
    /// addresses so that the connected routes exist for the gateways that follow.
    fn ip_batch(self) -> String {
        let mut out = String::from("link set lo up\n");
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        match self {
            Node::Public => {
                for ip in [SERVER_IP, SERVER_IP2] {
                    line(format!("address add {ip}/32 dev lo"));
                }
                for (dev, ip) in [("r1", PUBLIC_TO_ROUTER1_IP), ("r2", PUBLIC_TO_ROUTER2_IP)] {
                    line(format!("link set {dev} up"));
                    line(format!("address add {ip}/{WAN_PREFIX_LEN} dev {dev}"));
                }
            }
            Node::Router1 | Node::Router2 => {
                let (wan, lan, gateway) = router_addresses(self);
                line(format!("link set {WAN_IF} up"));
                line(format!("link set {LAN_IF} up"));
                line(format!("address add {wan}/{WAN_PREFIX_LEN} dev {WAN_IF}"));
                line(format!("address add {lan}/{LAN_PREFIX_LEN} dev {LAN_IF}"));
                line(format!("route add default via {gateway}"));
                // With its LAN link down (set_host_link), packets for the host vanish here
                // instead of following the default route out to the public network.
                line("route add blackhole 10.0.0.0/8".into());
            }
            Node::Host1 | Node::Host2 => {
                let gateway = if self == Node::Host1 {
                    ROUTER1_LAN_IP
                } else {
                    ROUTER2_LAN_IP
                };
                line(format!("link set {LAN_IF} up"));
                line(format!(
                    "address add {}/{LAN_PREFIX_LEN} dev {LAN_IF}",
                    self.ip()
                ));
                line(format!("route add default via {gateway}"));
            }
        }
        out
    }

    /// The node's interfaces besides `lo`.
    fn interfaces(self) -> &'static [&'static str] {
        match self {
            Node::Public => &["r1", "r2"],
            Node::Router1 | Node::Router2 => &[WAN_IF, LAN_IF],
            Node::Host1 | Node::Host2 => &[LAN_IF],
        }
    }
}

/// A router's WAN address, LAN address and default gateway.
fn router_addresses(router: Node) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    if router == Node::Router2 {
        (ROUTER2_WAN_IP, ROUTER2_LAN_IP, PUBLIC_TO_ROUTER2_IP)
    } else {
        (ROUTER1_WAN_IP, ROUTER1_LAN_IP, PUBLIC_TO_ROUTER1_IP)
    }
}

/// Five network namespaces with two NAT routers between two hosts and a public network.
/// Dropping it kills the processes it started and deletes the namespaces.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    /// Namespace names, by [`Node::index`].
    names: [String; 5],
    /// The current rules of router 1 and router 2.
    routers: [Mutex<RouterRules>; 2],
    /// Every process started with [`Lab::spawn`], to kill on drop.
    processes: Mutex<Vec<Weak<Mutex<std::process::Child>>>>,
}

impl Lab {
    /// Whether this process can build a lab: `Err` says why not (not root, or `ip`, `nft`
    /// or `conntrack` missing).
    pub fn check_available() -> Result<(), String> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        const CAP_NET_ADMIN: u64 = 1 << 12;
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        if effective & (CAP_NET_ADMIN | CAP_SYS_ADMIN) != CAP_NET_ADMIN | CAP_SYS_ADMIN {
            return Err(
                "the namespace lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_owned(),
            );
        }
        for (tool, package) in TOOLS {
            if !on_path(tool) {
                return Err(format!(
                    "the namespace lab needs `{tool}` (Debian package {package})"
                ));
            }
        }
        Ok(())
    }

    /// Builds the lab under a new, unique name prefix. Both routers start as
    /// [`NatType::PortRestricted`] without hairpinning.
    pub fn new() -> io::Result<Lab> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let prefix = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("ib{pid}x{n}");
            // A namespace left by a killed process that had our PID: leave it, pick another.
            let taken = Node::ALL.iter().any(|node| {
                Path::new(NETNS_DIR)
                    .join(format!("{prefix}-{}", node.name()))
                    .exists()
            });
            if !taken {
                break prefix;
            }
        };
        let names = Node::ALL.map(|node| format!("{prefix}-{}", node.name()));
        let router = |node: Node| {
            let (wan, lan, _) = router_addresses(node);
            let [a, b, c, _] = lan.octets();
            Mutex::new(RouterRules {
                wan,
                lan: (Ipv4Addr::new(a, b, c, 0), LAN_PREFIX_LEN),
                nat: NatType::PortRestricted,
                hairpin: false,
                timeout_secs: DEFAULT_MAPPING_TIMEOUT_SECS,
            })
        };
        // From here on, dropping `lab` deletes whatever part of it exists.
        let lab = Lab {
            prefix,
            names,
            routers: [router(Node::Router1), router(Node::Router2)],
            processes: Mutex::new(Vec::new()),
        };
        lab.create_namespaces()?;
        lab.configure_namespaces()?;
        Ok(lab)
    }

    /// The prefix of every namespace name of this lab, e.g. `ib4242x0`; the names are
    /// `<prefix>-pub`, `<prefix>-r1`, and so on.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of a node's namespace, for `ip netns exec` and `ip -n`.
    pub fn namespace(&self, node: Node) -> &str {
        &self.names[node.index()]
    }

    /// Makes `router` ([`Node::Router1`] or [`Node::Router2`], or the host behind it) a NAT of
    /// type `nat`, hairpinning or not: replaces its nft table in one transaction and flushes
    /// its conntrack table, so every mapping starts afresh under the new rules.
    pub fn set_nat(&self, router: Node, nat: NatType, hairpin: bool) -> io::Result<()> {
        let slot = self.router_slot(router)?;
        let mut rules = lock(&self.routers[slot]);
        let mut next = *rules;
        next.nat = nat;
        next.hairpin = hairpin;
        let namespace = self.namespace(router_node(slot));
        in_namespace(namespace, || run_tool("nft", &["-f", "-"], &next.ruleset()))??;
        *rules = next;
        // Conntrack state outlives rule changes: without the flush, flows opened under the
        // old type would keep its behaviour.
        in_namespace(namespace, || run_tool("conntrack", &["-F"], ""))?
    }

    /// The type and hairpinning of a router (or of the router in front of a host).
    pub fn nat(&self, router: Node) -> io::Result<(NatType, bool)> {
        let rules = lock(&self.routers[self.router_slot(router)?]);
        Ok((rules.nat, rules.hairpin))
    }

    /// Forgets every UDP mapping of a router: its UDP conntrack entries and the cone
    /// mappings of its nft table, as when short UDP timeouts run out. TCP connections through
    /// it (a signaling channel) live on.
    pub fn flush_mappings(&self, router: Node) -> io::Result<()> {
        let slot = self.router_slot(router)?;
        let _rules = lock(&self.routers[slot]);
        in_namespace(self.namespace(router_node(slot)), || {
            run_tool("nft", &["-f", "-"], FLUSH_MAPS)?;
            conntrack_udp(&["-D", "-p", "udp"])
        })?
    }

    /// Sets how long a router keeps an idle mapping: `nf_conntrack_udp_timeout` and
    /// `nf_conntrack_udp_timeout_stream` of its namespace (30 s and 120 s by default), and the
    /// lifetime of its cone mappings. Existing entries take the new value with their next
    /// packet; cone mappings learned so far are kept.
    pub fn set_udp_timeout(&self, router: Node, secs: u32) -> io::Result<()> {
        if secs == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a UDP timeout of 0 s",
            ));
        }
        let slot = self.router_slot(router)?;
        let mut rules = lock(&self.routers[slot]);
        let mut next = *rules;
        next.timeout_secs = secs;
        let value = secs.to_string();
        in_namespace(self.namespace(router_node(slot)), || {
            sysctl("netfilter/nf_conntrack_udp_timeout", &value)?;
            sysctl("netfilter/nf_conntrack_udp_timeout_stream", &value)?;
            run_tool("nft", &["-f", "-"], &next.retime())
        })??;
        *rules = next;
        Ok(())
    }

    /// A command that runs `program` inside a node's namespace: `ip netns exec NS program`,
    /// which also shows the program a `/sys` of the namespace. Add arguments and run it, or
    /// hand it to [`Lab::spawn`].
    pub fn command(&self, node: Node, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.namespace(node)])
            .arg(program);
        cmd
    }

    /// Starts `cmd` inside a node's namespace, with stdout and stderr collected by the
    /// returned [`LabProcess`]. A plain `Command` works: it is started from a thread inside
    /// the namespace (its `/sys` is still the outer one; build it with [`Lab::command`] for a
    /// program that reads `/sys`). The process is killed when the `LabProcess` or the lab is
    /// dropped.
    pub fn spawn(&self, node: Node, mut cmd: Command) -> io::Result<LabProcess> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = in_namespace(self.namespace(node), move || cmd.spawn())??;
        let process = LabProcess::new(child);
        let mut processes = lock(&self.processes);
        processes.retain(|p| p.strong_count() > 0);
        processes.push(process.handle());
        Ok(process)
    }

    /// Runs `f` on a thread inside a node's namespace and returns its result: sockets it opens
    /// belong to that namespace and stay there when they are returned to other threads. A
    /// panic in `f` resumes here; `Err` only when the thread could not enter the namespace.
    pub fn run_in<T: Send>(&self, node: Node, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        in_namespace(self.namespace(node), f)
    }

    /// Starts a thread inside a node's namespace that runs `f`, for work that outlives one
    /// call, such as a server loop or a current-thread async runtime. Returns once the thread
    /// is inside. The namespace lives on, nameless, while the thread holds sockets in it
    /// after the lab is dropped.
    pub fn thread_in<T: Send + 'static>(
        &self,
        node: Node,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<thread::JoinHandle<T>> {
        let name = self.namespace(node).to_owned();
        let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name(format!("lab-{}", node.name()))
            .spawn(move || {
                let entered = ns::enter(&name);
                let inside = entered.is_ok();
                let _ = entered_tx.send(entered);
                if !inside {
                    // Never run `f` outside the lab. The caller gets the error and no handle;
                    // unwinding ends this thread without running the panic hook.
                    std::panic::resume_unwind(Box::new(()));
                }
                f()
            })?;
        match entered_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the lab thread ended before entering")),
        }
    }

    /// Takes a host's LAN link down or up: the router's end of it, so that the host's packets
    /// vanish silently as with a pulled cable while the host's own interface, addresses and
    /// routes stay as they were, and packets for the host die at the router. Mappings stay
    /// until they time out.
    pub fn set_host_link(&self, host: Node, up: bool) -> io::Result<()> {
        let router = match host {
            Node::Host1 => Node::Router1,
            Node::Host2 => Node::Router2,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a host"),
                ));
            }
        };
        let state = if up { "up" } else { "down" };
        run_tool(
            "ip",
            &["-n", self.namespace(router), "link", "set", LAN_IF, state],
            "",
        )
    }

    /// One `ip -batch`: the namespaces, then the veth pairs, each end created directly in its
    /// namespace.
    fn create_namespaces(&self) -> io::Result<()> {
        let mut batch = String::new();
        for name in &self.names {
            let _ = writeln!(batch, "netns add {name}");
        }
        let ns = |node: Node| self.namespace(node);
        for (a, a_dev, b, b_dev) in [
            (Node::Router1, WAN_IF, Node::Public, "r1"),
            (Node::Router2, WAN_IF, Node::Public, "r2"),
            (Node::Host1, LAN_IF, Node::Router1, LAN_IF),
            (Node::Host2, LAN_IF, Node::Router2, LAN_IF),
        ] {
            let _ = writeln!(
                batch,
                "link add {a_dev} netns {} type veth peer name {b_dev} netns {}",
                ns(a),
                ns(b)
            );
        }
        run_tool("ip", &["-batch", "-"], &batch)
    }

    /// Configures the five namespaces in parallel, each from a thread inside it: sysctls
    /// (pitfall: a new namespace copies `conf/all` and `conf/default` from the initial one),
    /// addresses and routes, and the routers' rules.
    fn configure_namespaces(&self) -> io::Result<()> {
        thread::scope(|scope| {
            let jobs: Vec<_> = Node::ALL
                .iter()
                .map(|&node| scope.spawn(move || self.configure(node)))
                .collect();
            let mut result = Ok(());
            for job in jobs {
                let outcome = job
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a configuring thread panicked")));
                if result.is_ok() {
                    result = outcome;
                }
            }
            result
        })
    }

    fn configure(&self, node: Node) -> io::Result<()> {
        in_namespace(self.namespace(node), || {
            // No IPv6: duplicate address detection would delay the links.
            for conf in ["all", "default"] {
                sysctl(&format!("ipv6/conf/{conf}/disable_ipv6"), "1")?;
            }
            let routes = matches!(node, Node::Public | Node::Router1 | Node::Router2);
            let forward = if routes { "1" } else { "0" };
            sysctl("ipv4/ip_forward", forward)?;
            for conf in ["all", "default", "lo"].iter().chain(node.interfaces()) {
                // Strict reverse-path filtering would drop hairpinned and redirected packets;
                // redirects would teach hosts to bypass their router.
                sysctl(&format!("ipv4/conf/{conf}/rp_filter"), "0")?;
                sysctl(&format!("ipv4/conf/{conf}/send_redirects"), "0")?;
            }
            run_tool("ip", &["-batch", "-"], &node.ip_batch())?;
            if matches!(node, Node::Router1 | Node::Router2) {
                let rules = *lock(&self.routers[self.router_slot(node)?]);
                run_tool("nft", &["-f", "-"], &rules.ruleset())?;
            }
            Ok(())
        })?
    }

    fn router_slot(&self, node: Node) -> io::Result<usize> {
        match node.router() {
            Some(Node::Router1) => Ok(0),
            Some(_) => Ok(1),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{node:?} has no router"),
            )),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for process in lock(&self.processes).drain(..) {
            if let Some(child) = process.upgrade() {
                let _ = process::kill(&child);
            }
        }
        // -force: go on past a namespace that was never created.
        let mut batch = String::new();
        for name in &self.names {
            let _ = writeln!(batch, "netns delete {name}");
        }
        let _ = run_tool("ip", &["-force", "-batch", "-"], &batch);
    }
}

fn router_node(slot: usize) -> Node {
    if slot == 0 {
        Node::Router1
    } else {
        Node::Router2
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic: they are replaced whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `tool` is an executable file in a directory of `PATH` (or of the sbin directories,
/// which a non-root `PATH` often lacks).
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `conntrack` on the UDP entries; none matching is not an error, though conntrack exits
/// with status 1 then.
fn conntrack_udp(args: &[&str]) -> io::Result<()> {
    match run_tool("conntrack", args, "") {
        Err(error) if error.to_string().contains(" 0 flow entries") => Ok(()),
        other => other,
    }
}
