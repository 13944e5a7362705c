//! The few fields of an X.509 certificate an operator reads in a report: subject and issuer
//! (common name and organisation), the names it is valid for, and when it expires.
//!
//! rustls hands out certificates as DER only. The fields wanted here sit at fixed places of
//! the `TBSCertificate` (RFC 5280 §4.1), so a small DER walker finds them; a full X.509
//! parser would be a heavy dependency for four strings. Anything unexpected gives `None`
//! or leaves a field out: this is for display, never for a trust decision.

use std::net::IpAddr;

/// What a report shows of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// `CN=…, O=…` of the subject, or `(no CN or O)`.
    pub subject: String,
    /// The same of the issuer.
    pub issuer: String,
    /// Issuer and subject are the same name: self-signed, or at least self-issued.
    pub self_issued: bool,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub names: Vec<String>,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: Option<i64>,
}

/// Reads the fields of a DER certificate; `None` when it is not one this reader understands.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (tag, certificate) = Der(der).next()?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs) = Der(certificate).next()?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = Der(tbs);
    if fields.peek() == Some(VERSION) {
        fields.next()?;
    }
    let _serial = fields.next()?;
    let _signature_algorithm = fields.next()?;
    let issuer = fields.expect(SEQUENCE)?;
    let validity = fields.expect(SEQUENCE)?;
    let subject = fields.expect(SEQUENCE)?;
    let _public_key = fields.next()?;
    let mut names = Vec::new();
    while let Some((tag, content)) = fields.next() {
        if tag == EXTENSIONS {
            names = alt_names(content).unwrap_or_default();
        }
    }
    let mut validity = Der(validity);
    let _not_before = validity.next()?;
    let not_after = validity.next().and_then(|(tag, text)| time(tag, text));
    Some(CertInfo {
        subject: name(subject),
        issuer: name(issuer),
        self_issued: subject == issuer,
        names,
        not_after,
    })
}

impl CertInfo {
    /// One line for a report: subject, issuer, names and expiry judged at `now` (Unix
    /// seconds).
    pub fn describe(&self, now: i64) -> String {
        let mut text = self.subject.clone();
        if !self.names.is_empty() {
            text.push_str(&format!(" ({})", self.names.join(", ")));
        }
        if self.self_issued {
            text.push_str(", self-signed");
        } else {
            text.push_str(&format!(", issued by {}", self.issuer));
        }
        if let Some(not_after) = self.not_after {
            let days = (not_after - now).div_euclid(86_400);
            let date = date(not_after);
            if not_after < now {
                text.push_str(&format!(", expired {date} ({} days ago)", -days));
            } else {
                text.push_str(&format!(", expires {date} (in {days} days)"));
            }
        }
        text
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION: u8 = 0xA0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const EXTENSIONS: u8 = 0xA3;
/// `dNSName [2] IA5String` and `iPAddress [7] OCTET STRING` of a GeneralName.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// 2.5.4.3 commonName, 2.5.4.10 organizationName, 2.5.29.17 subjectAltName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// DER elements one after another.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and content. Only one-byte tags and definite lengths of up to
    /// four bytes, which is all DER certificates use.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
            (len, rest)
        };
        if rest.len() < len || tag & 0x1F == 0x1F {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, content))
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's content if it has tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next()
            .filter(|(t, _)| *t == tag)
            .map(|(_, content)| content)
    }
}

/// `CN=…, O=…` of a Name, from its first common name and organisation.
fn name(der: &[u8]) -> String {
    let mut common = None;
    let mut organization = None;
    let mut rdns = Der(der);
    while let Some((tag, set)) = rdns.next() {
        if tag != SET {
            continue;
        }
        let mut attributes = Der(set);
        while let Some(attribute) = attributes.expect(SEQUENCE) {
            let mut parts = Der(attribute);
            let (Some(oid), Some((_, value))) = (parts.expect(OID), parts.next()) else {
                continue;
            };
            let text = String::from_utf8_lossy(value).into_owned();
            if oid == COMMON_NAME {
                common.get_or_insert(text);
            } else if oid == ORGANIZATION {
                organization.get_or_insert(text);
            }
        }
    }
    let parts: Vec<String> = [("CN", common), ("O", organization)]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
        .collect();
    if parts.is_empty() {
        "(no CN or O)".into()
    } else {
        parts.join(", ")
    }
}

/// The DNS names and IP addresses of the subjectAltName extension in `extensions`.
fn alt_names(extensions: &[u8]) -> Option<Vec<String>> {
    let list = Der(extensions).expect(SEQUENCE)?;
    let mut list = Der(list);
    while let Some(extension) = list.expect(SEQUENCE) {
        let mut parts = Der(extension);
        if parts.expect(OID)? != SUBJECT_ALT_NAME {
            continue;
        }
        // An optional `critical` BOOLEAN comes before the value.
        let value = loop {
            let (tag, content) = parts.next()?;
            if tag == OCTET_STRING {
                break content;
            }
        };
        let general_names = Der(value).expect(SEQUENCE)?;
        let mut general_names = Der(general_names);
        let mut names = Vec::new();
        while let Some((tag, content)) = general_names.next() {
            match (tag, content.len()) {
                (DNS_NAME, _) => names.push(String::from_utf8_lossy(content).into_owned()),
                (IP_ADDRESS, 4) => {
                    let octets: [u8; 4] = content.try_into().ok()?;
                    names.push(IpAddr::from(octets).to_string());
                }
                (IP_ADDRESS, 16) => {
                    let octets: [u8; 16] = content.try_into().ok()?;
                    names.push(IpAddr::from(octets).to_string());
                }
                _ => {}
            }
        }
        return Some(names);
    }
    Some(Vec::new())
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return None,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        digits
            .get(range)?
            .iter()
            .try_fold(0i64, |n, d| Some(n * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = match (tag, digits.len()) {
        // RFC 5280 §4.1.2.5.1: two-digit years from 50 are 19xx.
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let month = number(rest..rest + 2)?;
    let day = number(rest + 2..rest + 4)?;
    let hour = number(rest + 4..rest + 6)?;
    let minute = number(rest + 6..rest + 8)?;
    let second = number(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known era arithmetic).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `YYYY-MM-DD` of a Unix time.
pub fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;

    use super::*;

    fn test_der(names: &[&str]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "ice-probe-cert-{}-{}",
            std::process::id(),
            names.join("-")
        ));
        let made = icebreaker_tests::test_certificate(&dir, names);
        let der = CertificateDer::from_pem_slice(made.cert_pem.as_bytes()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        der.to_vec()
    }

    #[test]
    fn a_self_signed_test_certificate_is_read() {
        let der = test_der(&["localhost", "127.0.0.1"]);
        let info = parse(&der).unwrap();
        assert_eq!(info.subject, "CN=rcgen self signed cert");
        assert_eq!(info.issuer, info.subject);
        assert!(info.self_issued);
        assert_eq!(info.names, ["localhost", "127.0.0.1"]);
        // rcgen's default validity ends on 4096-01-01.
        assert_eq!(info.not_after.map(date).as_deref(), Some("4096-01-01"));
        let now = days_from_civil(2026, 11, 21) * 86_400;
        let text = info.describe(now);
        assert!(
            text.starts_with("CN=rcgen self signed cert (localhost, 127.0.0.1), self-signed"),
            "{text}"
        );
        assert!(text.contains("expires 4096-01-01 (in "), "{text}");
        let later = info.not_after.unwrap() + 3 * 86_400;
        assert!(
            info.describe(later)
                .ends_with("expired 4096-01-01 (3 days ago)")
        );
    }

    #[test]
    fn anything_else_is_none_and_never_a_panic() {
        let der = test_der(&["example.test"]);
        for len in 0..der.len() {
            // Truncated certificates fail somewhere; the reader must only stop.
            let _ = parse(&der[..len]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xFF;
            let _ = parse(&flipped);
            flipped[i] ^= 0xFF;
        }
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"-----BEGIN CERTIFICATE-----"), None);
        assert_eq!(parse(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(time(UTC_TIME, b"700101000000"), None, "no Z");
        assert_eq!(time(UTC_TIME, b"701301000000Z"), None, "month 13");
        assert_eq!(
            time(GENERALIZED_TIME, b"700101000000Z"),
            None,
            "two-digit year"
        );
        assert_eq!(time(OID, b"700101000000Z"), None);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(-86_400), "1969-12-31");
        for days in [-1000, 0, 59, 60, 365, 11_016, 40_000, 800_000] {
            let (y, m, d) = {
                let text = date(days * 86_400);
                let parts: Vec<i64> = text.split('-').map(|p| p.parse().unwrap()).collect();
                (parts[0], parts[1], parts[2])
            };
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn names_fall_back_when_there_is_no_cn() {
        // SET { SEQUENCE { OID 2.5.4.6 (country), PrintableString "DE" } }
        let country = [
            0x31, 0x0B, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D', b'E',
        ];
        assert_eq!(name(&country), "(no CN or O)");
        // SET { SEQUENCE { OID 2.5.4.10, UTF8String "Org" } }
        let org = [
            0x31, 0x0C, 0x30, 0x0A, 0x06, 0x03, 0x55, 0x04, 0x0A, 0x0C, 0x03, b'O', b'r', b'g',
        ];
        assert_eq!(name(&org), "O=Org");
    }
}
