//! The messages two ice-peers exchange through the signaling relay: one JSON object per
//! WebSocket text message, told apart by `type`.
//!
//! | `type` | fields | sent by |
//! |---|---|---|
//! | `offer` | `ufrag`, `pwd` | the offerer, first |
//! | `answer` | `ufrag`, `pwd` | the answerer, on an `offer` or a `restart` |
//! | `candidate` | `candidate` (an RFC 8839 `candidate:...` line), `ufrag` | both, trickled |
//! | `end-of-candidates` | `ufrag` | both, when gathering is over |
//! | `restart` | `ufrag`, `pwd` (the offerer's new ones) | the offerer, for an ICE restart |
//! | `bye` | `reason` when the sender failed | the side that ends the run |
//!
//! `ufrag` in `candidate` and `end-of-candidates` is the sender's ufrag of the generation the
//! candidate belongs to, so that a candidate of an older generation that crosses a restart is
//! dropped rather than paired with new credentials. It may be absent (a peer that does not tag
//! its candidates): the candidate then belongs to the generation current at the receiver.
//! Unknown fields are ignored, so that later versions may add some.

use serde::{Deserialize, Serialize};

/// One signaling message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SignalMessage {
    /// The offerer's credentials; the first message of a run.
    Offer {
        /// `ice-ufrag`.
        ufrag: String,
        /// `ice-pwd`.
        pwd: String,
    },
    /// The answerer's credentials, in answer to an `offer` or a `restart`.
    Answer {
        /// `ice-ufrag`.
        ufrag: String,
        /// `ice-pwd`.
        pwd: String,
    },
    /// A trickled candidate.
    Candidate {
        /// The candidate line, `candidate:...` (RFC 8839 §5.1).
        candidate: String,
        /// The sender's ufrag of the candidate's generation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ufrag: Option<String>,
    },
    /// The sender has no more candidates for this generation.
    EndOfCandidates {
        /// The sender's ufrag of the generation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ufrag: Option<String>,
    },
    /// An ICE restart: the offerer's new credentials. The answerer restarts too and answers.
    Restart {
        /// The new `ice-ufrag`.
        ufrag: String,
        /// The new `ice-pwd`.
        pwd: String,
    },
    /// The run is over. With a reason, the sender failed and the receiver should fail too.
    Bye {
        /// Why the sender gave up; absent after a successful run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl SignalMessage {
    /// The message as JSON text.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// Parses a message.
    pub fn from_json(text: &str) -> serde_json::Result<SignalMessage> {
        serde_json::from_str(text)
    }

    /// The `type` of the message, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SignalMessage::Offer { .. } => "offer",
            SignalMessage::Answer { .. } => "answer",
            SignalMessage::Candidate { .. } => "candidate",
            SignalMessage::EndOfCandidates { .. } => "end-of-candidates",
            SignalMessage::Restart { .. } => "restart",
            SignalMessage::Bye { .. } => "bye",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn creds() -> (String, String) {
        ("AbCd1234".into(), "0123456789abcdefghijklmn".into())
    }

    #[test]
    fn messages_have_the_documented_json_form() {
        let (ufrag, pwd) = creds();
        let cases = [
            (
                SignalMessage::Offer {
                    ufrag: ufrag.clone(),
                    pwd: pwd.clone(),
                },
                r#"{"type":"offer","ufrag":"AbCd1234","pwd":"0123456789abcdefghijklmn"}"#,
            ),
            (
                SignalMessage::Answer {
                    ufrag: ufrag.clone(),
                    pwd: pwd.clone(),
                },
                r#"{"type":"answer","ufrag":"AbCd1234","pwd":"0123456789abcdefghijklmn"}"#,
            ),
            (
                SignalMessage::Restart {
                    ufrag: ufrag.clone(),
                    pwd,
                },
                r#"{"type":"restart","ufrag":"AbCd1234","pwd":"0123456789abcdefghijklmn"}"#,
            ),
            (
                SignalMessage::Candidate {
                    candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
                    ufrag: Some(ufrag.clone()),
                },
                r#"{"type":"candidate","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","ufrag":"AbCd1234"}"#,
            ),
            (
                SignalMessage::EndOfCandidates { ufrag: Some(ufrag) },
                r#"{"type":"end-of-candidates","ufrag":"AbCd1234"}"#,
            ),
            (SignalMessage::Bye { reason: None }, r#"{"type":"bye"}"#),
            (
                SignalMessage::Bye {
                    reason: Some("consent lost".into()),
                },
                r#"{"type":"bye","reason":"consent lost"}"#,
            ),
        ];
        for (message, json) in cases {
            assert_eq!(message.to_json().unwrap(), json);
            assert_eq!(SignalMessage::from_json(json).unwrap(), message);
        }
    }

    #[test]
    fn optional_fields_may_be_absent_and_unknown_ones_are_ignored() {
        assert_eq!(
            SignalMessage::from_json(r#"{"type":"candidate","candidate":"candidate:x"}"#).unwrap(),
            SignalMessage::Candidate {
                candidate: "candidate:x".into(),
                ufrag: None
            }
        );
        assert_eq!(
            SignalMessage::from_json(r#"{"type":"end-of-candidates"}"#).unwrap(),
            SignalMessage::EndOfCandidates { ufrag: None }
        );
        assert_eq!(
            SignalMessage::from_json(r#"{"type":"bye","at":12,"reason":null}"#).unwrap(),
            SignalMessage::Bye { reason: None }
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        for text in [
            "",
            "{}",
            r#"{"type":"hello"}"#,
            r#"{"type":"offer","ufrag":"a"}"#,
            r#"{"type":"candidate"}"#,
            r#"["offer"]"#,
        ] {
            assert!(SignalMessage::from_json(text).is_err(), "{text}");
        }
    }
}
