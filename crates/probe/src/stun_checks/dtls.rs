//! The STUN checks over DTLS: `dtls` (the handshake) and `tls-certificate`, then `binding` and
//! `mapped-address` inside that one association, with retransmissions as over UDP. NAT
//! behaviour discovery needs answers from the server's other address, which one association
//! cannot carry, and is skipped with the reason.

use std::net::SocketAddr;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::stream::{binding_checks, skipped_bindings};
use super::{BindingInfo, Failure, NO_CHANGE, ask};
use crate::dtls::DTLS;
use crate::net::StunSocket;
use crate::report::Check;
use crate::stream::{ConnectError, Dialer, Link};
use crate::tls::{self, TLS_CERTIFICATE};
use crate::{Settings, Target};

/// Runs the DTLS handshake with `target` and sends `settings.count` Binding requests one
/// after another inside the association. Returns `dtls`, `tls-certificate`, `binding` and
/// `mapped-address`, and what the answers said when the server answered.
///
/// When the handshake fails in a way that suggests a port without DTLS, a Binding request
/// over plain UDP tells whether the port speaks plain STUN, for the explanation.
pub async fn binding_over_dtls(
    target: &Target,
    settings: &Settings,
) -> (Vec<Check>, Option<BindingInfo>) {
    let label = target.label();
    let dialer = Dialer::new(target, settings);
    let mut checks = Vec::new();
    let connection = match dialer.dtls(settings.timeout).await {
        Ok(connection) => connection,
        Err(ConnectError::Dtls(mut failure)) => {
            if failure.maybe_plain() {
                failure.plain_stun = Some(answers_plain_stun(target.server, settings).await);
            }
            checks.extend(tls::failed_checks(&label, &failure, dialer.host()));
            checks.extend(skipped_bindings(&label, DTLS));
            return (checks, None);
        }
        Err(error) => {
            checks.push(Check::fail(&label, DTLS, "", error.explain(&dialer)));
            let reason = format!("depends on {DTLS}, which failed");
            checks.push(Check::skip(&label, TLS_CERTIFICATE, reason));
            checks.extend(skipped_bindings(&label, DTLS));
            return (checks, None);
        }
    };
    checks.extend(tls::checks(&label, &connection.handshake));
    let mut link = Link::Dtls {
        conn: connection.conn,
        rng: StdRng::from_os_rng(),
    };
    let info = binding_checks(&label, &dialer, &mut link, settings, &mut checks).await;
    (checks, info)
}

/// Whether the server answers a Binding request over plain UDP on the same port, with a
/// success or an error.
async fn answers_plain_stun(server: SocketAddr, settings: &Settings) -> bool {
    let Ok(mut socket) = StunSocket::connected_to(server).await else {
        return false;
    };
    matches!(
        ask(&mut socket, server, NO_CHANGE, settings.timeout).await,
        Ok(_) | Err(Failure::Refused(_))
    )
}
