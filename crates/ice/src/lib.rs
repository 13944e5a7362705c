//! Sans-IO ICE agent (RFC 8445), TURN client (RFC 8656), candidate lines (RFC 8839) and
//! STUN/TURN URIs (RFC 7064, RFC 7065).

mod agent;
pub mod candidate;
mod messages;
pub mod turn_client;
pub mod uri;

pub use agent::{
    Agent, AgentConfig, ConnectionState, Credentials, Event, SendError, Timing, Transmit,
    TurnConnection, TurnServerConfig,
};
pub use candidate::{Candidate, CandidateKind, CandidateParseError, CandidateTransport};
