//! The nftables rules that turn a router namespace into one of the four NAT types.
//!
//! Everything lives in one table, `ip natlab`, replaced atomically. Plain Linux source NAT
//! is the base: endpoint-independent mapping with port preservation and
//! address-and-port-dependent filtering (conntrack lets in only replies from the exact
//! remote address and port). `fully-random` makes the mapping address-and-port dependent.
//! The two cone types add a map from external port to internal address and port, filled
//! after NAT, through which inbound packets from new remotes are translated.

use core::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::NatType;

/// The router's interfaces, as [`super::Lab`] names them in every router namespace.
pub(super) const WAN_IF: &str = "wan";
/// See [`WAN_IF`].
pub(super) const LAN_IF: &str = "lan";

/// What one router's table is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RouterRules {
    /// The router's WAN address, the external address of every mapping.
    pub(super) wan: Ipv4Addr,
    /// The LAN network behind it, `10.0.N.0/24`.
    pub(super) lan: (Ipv4Addr, u8),
    pub(super) nat: NatType,
    pub(super) hairpin: bool,
    /// Lifetime of the cone mappings in the nft map, refreshed by every outbound packet; the
    /// conntrack entries behind them follow the namespace's UDP timeouts.
    pub(super) timeout_secs: u32,
}

impl RouterRules {
    /// The whole table, as one `nft -f -` transaction that replaces any previous one: the
    /// empty `table` statement makes the `delete` succeed on the first run.
    pub(super) fn ruleset(&self) -> String {
        let wan = self.wan;
        let (lan_ip, lan_len) = self.lan;
        let t = self.timeout_secs;
        let random = if self.nat == NatType::Symmetric {
            " fully-random"
        } else {
            ""
        };
        let mut inbound = String::new();
        match self.nat {
            NatType::FullCone => {
                let _ = writeln!(
                    inbound,
                    "\t\tiifname \"{WAN_IF}\" ip daddr {wan} meta l4proto udp \
                     dnat to udp dport map @fullcone"
                );
            }
            NatType::RestrictedCone => {
                let _ = writeln!(
                    inbound,
                    "\t\tiifname \"{WAN_IF}\" ip daddr {wan} udp dport . ip saddr @contacted \
                     dnat to udp dport map @fullcone"
                );
            }
            NatType::PortRestricted | NatType::Symmetric => {}
        }
        let mut hairpin_dnat = String::new();
        let mut hairpin_snat = String::new();
        if self.hairpin {
            let _ = writeln!(
                hairpin_dnat,
                "\t\tiifname \"{LAN_IF}\" ip daddr {wan} meta l4proto udp \
                 dnat to udp dport map @fullcone"
            );
            let _ = writeln!(
                hairpin_snat,
                "\t\tiifname \"{LAN_IF}\" oifname \"{LAN_IF}\" ct status dnat snat to {wan}{random}"
            );
        }
        let mappings = self.mapping_rules();
        format!(
            "table ip natlab {{}}
delete table ip natlab
table ip natlab {{
\tmap fullcone {{
\t\ttype inet_service : ipv4_addr . inet_service
\t\tflags dynamic,timeout
\t\ttimeout {t}s
\t}}
\tset contacted {{
\t\ttype inet_service . ipv4_addr
\t\tflags dynamic,timeout
\t\ttimeout {t}s
\t}}
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
{inbound}{hairpin_dnat}\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname \"{WAN_IF}\" meta l4proto udp ct state new drop
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tct state established,related accept
\t\tiifname \"{LAN_IF}\" accept
\t\tiifname \"{WAN_IF}\" ct status dnat accept
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname \"{WAN_IF}\" ip saddr {lan_ip}/{lan_len} snat to {wan}{random}
{hairpin_snat}\t}}
\tchain mappings {{
\t\ttype filter hook postrouting priority srcnat + 10; policy accept;
{mappings}\t}}
}}
"
        )
    }

    /// Replaces only the rules that record mappings, keeping the mappings learned so far:
    /// used when the timeout changes.
    pub(super) fn retime(&self) -> String {
        let mut out = String::from("flush chain ip natlab mappings\n");
        for line in self.mapping_rules().lines() {
            let _ = writeln!(out, "add rule ip natlab mappings {}", line.trim());
        }
        out
    }

    /// The rules of the `mappings` chain. They run after source NAT, so `udp sport` is the
    /// external port. Every type records its mappings, not just the cones: hairpinning looks
    /// them up too. The reply-direction rule refreshes mappings that an inbound packet opened.
    fn mapping_rules(&self) -> String {
        let t = self.timeout_secs;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\t\toifname \"{WAN_IF}\" meta l4proto udp ct direction original update @fullcone \
             {{ udp sport timeout {t}s : ct original ip saddr . ct original proto-src }}"
        );
        let _ = writeln!(
            out,
            "\t\toifname \"{WAN_IF}\" meta l4proto udp ct direction reply update @fullcone \
             {{ udp sport timeout {t}s : ct reply ip saddr . ct reply proto-src }}"
        );
        if self.nat == NatType::RestrictedCone {
            let _ = writeln!(
                out,
                "\t\toifname \"{WAN_IF}\" meta l4proto udp update @contacted \
                 {{ udp sport . ip daddr timeout {t}s }}"
            );
        }
        out
    }
}

/// Forgets the cone mappings; conntrack's are flushed separately.
pub(super) const FLUSH_MAPS: &str = "flush map ip natlab fullcone\nflush set ip natlab contacted\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(nat: NatType, hairpin: bool) -> RouterRules {
        RouterRules {
            wan: Ipv4Addr::new(198, 51, 100, 18),
            lan: (Ipv4Addr::new(10, 0, 1, 0), 24),
            nat,
            hairpin,
            timeout_secs: 120,
        }
    }

    #[test]
    fn only_symmetric_randomises_ports() {
        for nat in NatType::ALL {
            let text = rules(nat, true).ruleset();
            assert_eq!(
                text.matches("fully-random").count(),
                if nat == NatType::Symmetric { 2 } else { 0 },
                "{nat}"
            );
        }
    }

    #[test]
    fn only_cones_translate_unsolicited_inbound_packets() {
        for nat in NatType::ALL {
            let text = rules(nat, false).ruleset();
            let inbound = text.contains("iifname \"wan\" ip daddr 198.51.100.18");
            assert_eq!(
                inbound,
                matches!(nat, NatType::FullCone | NatType::RestrictedCone),
                "{nat}"
            );
            assert!(!text.contains("iifname \"lan\" ip daddr"), "{nat}");
            assert!(text.contains("ct state new drop"), "{nat}");
        }
    }

    #[test]
    fn retime_keeps_the_chain_and_changes_the_timeout() {
        let mut r = rules(NatType::RestrictedCone, false);
        r.timeout_secs = 3;
        let text = r.retime();
        assert!(text.starts_with("flush chain ip natlab mappings\n"));
        assert_eq!(text.matches("add rule ip natlab mappings").count(), 3);
        assert_eq!(text.matches("timeout 3s").count(), 3);
    }
}
