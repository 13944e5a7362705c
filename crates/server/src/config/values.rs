//! Typed configuration values. Each parses from the same string in a TOML file and on the
//! command line, so a file and a flag are checked by the same rules.

use std::fmt;
use std::str::FromStr;

use icebreaker_wire::credentials::{KeyAlgorithm, LongTermKey};
use serde::Deserialize;

/// Why a single value is refused. The caller adds the key or the flag it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    fn new(reason: impl Into<String>) -> InvalidValue {
        InvalidValue(reason.into())
    }
}

/// Placeholder text the example config puts where a secret goes. A secret starting with it is
/// refused: a secret everyone can read in the example would make the server an open relay.
pub const SECRET_PLACEHOLDER: &str = "CHANGE-ME";

/// The shortest accepted REST secret, in bytes. A client holds a username and its password,
/// which is enough to guess the secret offline; 16 random characters put that out of reach.
pub const MIN_SECRET_LEN: usize = 16;

/// A static long-term user: `NAME:PASSWORD`, or `NAME:0x<32 hex digits>` for an MD5 key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct User {
    /// The USERNAME the client sends.
    pub name: String,
    /// What the server holds to check it.
    pub credential: UserCredential,
}

/// What the server holds for a static user.
#[derive(Clone, PartialEq, Eq)]
pub enum UserCredential {
    /// The password: any key algorithm can be derived from it.
    Password(String),
    /// The MD5 long-term key, MD5(`name:realm:password`): only MD5 integrity can be checked.
    Md5Key([u8; 16]),
}

impl User {
    /// The long-term key for `algorithm` in `realm`, or `None` when the user was configured
    /// with an MD5 key and `algorithm` is not MD5 (the password is not known to derive it).
    ///
    /// An MD5 key was computed for one realm; it only matches if that is the configured realm.
    pub fn key(&self, algorithm: KeyAlgorithm, realm: &str) -> Option<LongTermKey> {
        match (&self.credential, algorithm) {
            (UserCredential::Password(password), _) => {
                Some(LongTermKey::new(algorithm, &self.name, realm, password))
            }
            (UserCredential::Md5Key(key), KeyAlgorithm::Md5) => Some(LongTermKey::Md5(*key)),
            (UserCredential::Md5Key(_), KeyAlgorithm::Sha256) => None,
        }
    }

    /// The user as `check-config` prints it: the name, never the password or key.
    pub fn redacted(&self) -> String {
        format!("{}:<redacted>", self.name)
    }
}

impl FromStr for User {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<User, InvalidValue> {
        // Split at the first colon: names have none, passwords may.
        let Some((name, secret)) = s.split_once(':') else {
            return Err(InvalidValue::new(
                "expected NAME:PASSWORD or NAME:0x<32 hex digits>",
            ));
        };
        if name.is_empty() {
            return Err(InvalidValue::new("empty user name"));
        }
        // RFC 8489 §14.3: USERNAME is less than 513 bytes.
        if name.len() > 512 {
            return Err(InvalidValue::new("user name longer than 512 bytes"));
        }
        if secret.is_empty() {
            return Err(InvalidValue::new(format!(
                "empty password for user `{name}`"
            )));
        }
        let credential = match secret.strip_prefix("0x") {
            Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let key = decode_md5_hex(hex).ok_or_else(|| {
                    InvalidValue::new(format!(
                        "the MD5 key of user `{name}` has {} hex digits, not 32",
                        hex.len()
                    ))
                })?;
                UserCredential::Md5Key(key)
            }
            _ => UserCredential::Password(secret.to_owned()),
        };
        Ok(User {
            name: name.to_owned(),
            credential,
        })
    }
}

impl TryFrom<String> for User {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<User, InvalidValue> {
        s.parse()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.credential {
            UserCredential::Password(_) => "password",
            UserCredential::Md5Key(_) => "md5-key",
        };
        write!(f, "User({}, {kind})", self.name)
    }
}

fn decode_md5_hex(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

/// A TURN REST API shared secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes, the HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl FromStr for Secret {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Secret, InvalidValue> {
        if s.starts_with(SECRET_PLACEHOLDER) {
            return Err(InvalidValue::new(
                "this is the example's placeholder: generate a secret, e.g. `openssl rand -base64 32`",
            ));
        }
        if s.len() < MIN_SECRET_LEN {
            return Err(InvalidValue::new(format!(
                "secret shorter than {MIN_SECRET_LEN} bytes: any client could guess it offline \
                 from one username and password; use e.g. `openssl rand -base64 32`"
            )));
        }
        Ok(Secret(s.to_owned()))
    }
}

impl TryFrom<String> for Secret {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Secret, InvalidValue> {
        s.parse()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An inclusive range of UDP ports for relay sockets, `MIN-MAX`, with `1024 <= MIN <= MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// The lowest port a relay socket may use.
    pub const LOWEST: u16 = 1024;

    /// The range `min..=max`; refused when `min > max` or `min < 1024`.
    pub fn new(min: u16, max: u16) -> Result<PortRange, InvalidValue> {
        if min < PortRange::LOWEST {
            // Ports below 1024 belong to system services, and browsers refuse most of them.
            return Err(InvalidValue::new(format!(
                "lowest port {min} is below {}",
                PortRange::LOWEST
            )));
        }
        if min > max {
            return Err(InvalidValue::new(format!(
                "lowest port {min} is above highest port {max}"
            )));
        }
        Ok(PortRange { min, max })
    }

    /// The lowest port.
    pub fn min(self) -> u16 {
        self.min
    }

    /// The highest port.
    pub fn max(self) -> u16 {
        self.max
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    /// How many ports the range holds.
    pub fn len(self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    /// Always false: a range holds at least one port. Present because clippy pairs it with `len`.
    pub fn is_empty(self) -> bool {
        false
    }
}

impl Default for PortRange {
    /// 49152-65535, the IANA dynamic range (RFC 6335), as RFC 8656 §7.2 suggests.
    fn default() -> PortRange {
        PortRange {
            min: 49152,
            max: 65535,
        }
    }
}

impl FromStr for PortRange {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<PortRange, InvalidValue> {
        let parse = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| InvalidValue::new(format!("`{part}` is not a port number")))
        };
        let (min, max) = s
            .split_once('-')
            .ok_or_else(|| InvalidValue::new(format!("`{s}` is not MIN-MAX")))?;
        PortRange::new(parse(min)?, parse(max)?)
    }
}

impl TryFrom<String> for PortRange {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<PortRange, InvalidValue> {
        s.parse()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A value of a repeatable listen flag that may turn its listener off: an address, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOrNone(pub Option<std::net::SocketAddr>);

impl FromStr for ListenOrNone {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<ListenOrNone, InvalidValue> {
        if s == "none" {
            return Ok(ListenOrNone(None));
        }
        s.parse()
            .map(|a| ListenOrNone(Some(a)))
            .map_err(|_| InvalidValue::new(format!("`{s}` is neither IP:PORT nor `none`")))
    }
}

/// How much the server logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures that stop a listener or the process.
    Error,
    /// Refusals worth an operator's look: denied peers, quota exhaustion.
    Warn,
    /// Start, stop, reloads.
    #[default]
    Info,
    /// Allocation life cycle.
    Debug,
    /// Every packet: for a lab, never for production traffic.
    Trace,
}

impl LogLevel {
    /// The level's name, as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let user: User = "alice:pa:ss".parse().unwrap();
        assert_eq!(user.name, "alice");
        assert!(user.credential == UserCredential::Password("pa:ss".into()));

        let key = LongTermKey::new(KeyAlgorithm::Md5, "bob", "icebreaker", "pw");
        let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let user: User = format!("bob:0x{hex}").parse().unwrap();
        assert_eq!(user.key(KeyAlgorithm::Md5, "icebreaker"), Some(key));
        assert_eq!(user.key(KeyAlgorithm::Sha256, "icebreaker"), None);
        assert_eq!(user.redacted(), "bob:<redacted>");
        assert!(!format!("{user:?}").contains(&hex));

        for bad in ["alice", ":pw", "alice:", "bob:0xabc"] {
            assert!(bad.parse::<User>().is_err(), "{bad}");
        }
        // Not hex after 0x: an ordinary password.
        let user: User = "carol:0xzz".parse().unwrap();
        assert!(user.credential == UserCredential::Password("0xzz".into()));
    }

    #[test]
    fn secrets() {
        assert!("short".parse::<Secret>().is_err());
        assert!(
            "CHANGE-ME: openssl rand -base64 32"
                .parse::<Secret>()
                .is_err()
        );
        let secret: Secret = "0123456789abcdef".parse().unwrap();
        assert_eq!(secret.as_bytes(), b"0123456789abcdef");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn port_ranges() {
        let range: PortRange = "50000-50009".parse().unwrap();
        assert_eq!((range.min(), range.max(), range.len()), (50000, 50009, 10));
        assert!(range.contains(50000) && range.contains(50009) && !range.contains(50010));
        assert_eq!(range.to_string(), "50000-50009");
        assert_eq!(PortRange::default().to_string(), "49152-65535");
        assert!("1024-1024".parse::<PortRange>().is_ok());
        for bad in ["1023-2000", "3000-2000", "3000", "a-b", "3000-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}
