//! The client's side of long-term credentials (RFC 8489 §9.2): what a 401 or 438 challenge
//! teaches, how requests are signed, and how responses are checked.

use icebreaker_wire::attr::{
    AttrType, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Username,
};
use icebreaker_wire::credentials::{KeyAlgorithm, SecurityFeatures};
use icebreaker_wire::{IntegrityKey, Message, MessageWriter, WriteError};

use super::TurnError;

/// What the server's last challenge said, and the key derived from it.
#[derive(Clone, Debug)]
pub(super) struct Credentials {
    realm: String,
    nonce: String,
    algorithm: KeyAlgorithm,
    /// PASSWORD-ALGORITHMS exactly as the server sent it: RFC 8489 §9.2.4 makes the server
    /// compare the echo with its offer, which is what defeats a bid-down to MD5.
    offered: Option<Vec<u8>>,
    key: IntegrityKey,
}

impl Credentials {
    /// Learns realm, nonce and password algorithm from a 401 or 438 response. `previous`
    /// spares deriving the key again when realm and algorithm stay the same.
    pub(super) fn from_challenge(
        challenge: &Message<'_>,
        username: &str,
        password: &str,
        previous: Option<&Credentials>,
    ) -> Result<Credentials, TurnError> {
        let realm = match challenge.get::<Realm>() {
            Ok(Some(Realm(realm))) => realm,
            _ => {
                return Err(TurnError::InvalidResponse(
                    "a challenge without a valid REALM",
                ));
            }
        };
        let nonce = match challenge.get::<Nonce>() {
            Ok(Some(Nonce(nonce))) => nonce,
            _ => {
                return Err(TurnError::InvalidResponse(
                    "a challenge without a valid NONCE",
                ));
            }
        };
        let announced = SecurityFeatures::from_nonce(nonce).is_some_and(|f| f.password_algorithms);
        let (algorithm, offered) = if announced {
            // RFC 8489 §9.2.5: a nonce that announces password algorithms without listing them
            // is a downgrade attempt, and the request must not be retried.
            let list = match challenge.get::<PasswordAlgorithms>() {
                Ok(Some(list)) => list,
                _ => {
                    return Err(TurnError::InvalidResponse(
                        "the nonce announces PASSWORD-ALGORITHMS but none are listed",
                    ));
                }
            };
            // The server lists its algorithms in its order of preference (RFC 8489 §14.11).
            let algorithm = list
                .iter()
                .filter(|a| a.parameters.is_empty())
                .find_map(|a| KeyAlgorithm::from_password_algorithm(a.algorithm))
                .ok_or(TurnError::InvalidResponse(
                    "no password algorithm in common with the server",
                ))?;
            let raw = challenge
                .raw(AttrType::PASSWORD_ALGORITHMS)
                .map(|raw| raw.value.to_vec());
            (algorithm, raw)
        } else {
            // Without the nonce cookie the server may be an RFC 5389 one, which knows MD5 only;
            // a PASSWORD-ALGORITHMS it did not announce is ignored.
            (KeyAlgorithm::Md5, None)
        };
        let key = match previous {
            Some(p) if p.realm == realm && p.algorithm == algorithm => p.key.clone(),
            _ => IntegrityKey::long_term(algorithm, username, realm, password),
        };
        Ok(Credentials {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            algorithm,
            offered,
            key,
        })
    }

    /// Bytes the credential attributes add to a request, integrity included.
    pub(super) fn encoded_len(&self, username: &str) -> usize {
        let attr = |len: usize| 4 + len.next_multiple_of(4);
        attr(username.len())
            + attr(self.realm.len())
            + attr(self.nonce.len())
            + self.offered.as_ref().map_or(0, |o| attr(o.len()) + attr(4))
            + attr(32)
    }

    /// Appends USERNAME, REALM, NONCE, the password algorithm choice when the server offered
    /// one, and the integrity attribute.
    pub(super) fn sign(&self, w: &mut MessageWriter<'_>, username: &str) -> Result<(), WriteError> {
        w.add(&Username(username))?;
        w.add(&Realm(&self.realm))?;
        w.add(&Nonce(&self.nonce))?;
        if let Some(offered) = &self.offered {
            w.add_raw(AttrType::PASSWORD_ALGORITHMS, offered)?;
            w.add(&PasswordAlgorithm::new(self.algorithm.password_algorithm()))?;
        }
        // A server that offered SHA-256 speaks RFC 8489 and so MESSAGE-INTEGRITY-SHA256; one
        // that did not may be an RFC 5389 server, which knows only MESSAGE-INTEGRITY.
        match self.algorithm {
            KeyAlgorithm::Sha256 => w.add_message_integrity_sha256(&self.key),
            KeyAlgorithm::Md5 => w.add_message_integrity(&self.key),
        }
    }

    /// Whether a response carries a valid integrity attribute made with this key.
    pub(super) fn verify(&self, response: &Message<'_>) -> bool {
        response.verify_integrity(&self.key).is_ok()
    }

    /// The password algorithm in use.
    pub(super) fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }
}
