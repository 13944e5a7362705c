//! The one socket option neither socket2 nor nix exposes: whether relayed datagrams carry the
//! don't-fragment bit (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER`).
//!
//! RFC 8656 §14 prefers that a relay set DF only when the client asked for it with
//! DONT-FRAGMENT; Linux's default (`IP_PMTUDISC_WANT`) sets it on every datagram that fits the
//! path MTU. Relay sockets are therefore switched to "never" when bound, and to "always" for an
//! allocation or a Send indication that carries DONT-FRAGMENT.

// The only unsafe code of the daemon: two libc calls with a pointer to a local c_int.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Sets or clears DF on the datagrams `socket` sends (an IPv6 socket when `ipv6`).
pub(crate) fn set_dont_fragment(socket: &impl AsRawFd, ipv6: bool, on: bool) -> io::Result<()> {
    let (level, name, value) = option(ipv6, on);
    let value: libc::c_int = value;
    // SAFETY: `value` lives for the call and its size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `socket` sets DF on every datagram.
#[cfg(test)]
pub(crate) fn dont_fragment(socket: &impl AsRawFd, ipv6: bool) -> io::Result<bool> {
    let (level, name, on) = option(ipv6, true);
    let mut value: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` live for the call; the kernel writes at most `len` bytes.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if result == 0 {
        Ok(value == on)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn option(ipv6: bool, on: bool) -> (libc::c_int, libc::c_int, libc::c_int) {
    match (ipv6, on) {
        (false, true) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        ),
        (false, false) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        ),
        (true, true) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        ),
        (true, false) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_sockets_start_without_df_and_switch_both_ways() {
        let socket =
            crate::net::relay_socket("127.0.0.1:0".parse().expect("literal")).expect("bind");
        assert!(
            !dont_fragment(&socket, false).expect("getsockopt"),
            "off when bound"
        );
        set_dont_fragment(&socket, false, true).expect("on");
        assert!(dont_fragment(&socket, false).expect("getsockopt"));
        set_dont_fragment(&socket, false, false).expect("off");
        assert!(!dont_fragment(&socket, false).expect("getsockopt"));
        if let Ok(v6) = crate::net::relay_socket("[::1]:0".parse().expect("literal")) {
            assert!(!dont_fragment(&v6, true).expect("getsockopt"));
            set_dont_fragment(&v6, true, true).expect("on");
            assert!(dont_fragment(&v6, true).expect("getsockopt"));
        }
    }
}
