//! The datagrams: their templates, the identification each carries, the replies recognised.

use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context as _, Result, ensure};
use icebreaker_wire::attr::{Data, XorPeerAddress};
use icebreaker_wire::{ChannelNumber, Class, Message, MessageType, MessageWriter, Method};

use crate::setup::TidGenerator;
use crate::{Args, BUF_LEN, CHANNEL, Mode};

/// Marks the generator's payloads, after the 12 identification bytes.
const MAGIC: [u8; 4] = *b"IBLG";
const IDENT_LEN: usize = 12;

/// Where a datagram came from: its send time, allocation and window slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) ts: u64,
    pub(crate) alloc: u16,
    pub(crate) slot: u16,
}

impl Ident {
    pub(crate) fn write(self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.ts.to_le_bytes());
        out[8..10].copy_from_slice(&self.alloc.to_le_bytes());
        out[10..12].copy_from_slice(&self.slot.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Ident> {
        let b: &[u8; IDENT_LEN] = bytes.first_chunk()?;
        Some(Ident {
            ts: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            alloc: u16::from_le_bytes([b[8], b[9]]),
            slot: u16::from_le_bytes([b[10], b[11]]),
        })
    }

    /// The identification at the start of a payload the generator wrote.
    fn from_payload(data: &[u8]) -> Option<Ident> {
        if data.get(IDENT_LEN..IDENT_LEN + MAGIC.len())? != MAGIC {
            return None;
        }
        Ident::read(data)
    }
}

/// One datagram per allocation, ready to send but for the identification at `ident_at`.
pub(crate) struct Templates {
    mode: Mode,
    pub(crate) datagrams: Vec<Vec<u8>>,
    pub(crate) ident_at: usize,
}

pub(crate) fn templates(
    args: &Args,
    echoes: &[(UdpSocket, SocketAddr)],
    tids: &mut TidGenerator,
) -> Result<Templates> {
    let mut payload = vec![0xA5u8; args.size];
    payload[IDENT_LEN..IDENT_LEN + MAGIC.len()].copy_from_slice(&MAGIC);
    let mut datagrams = Vec::with_capacity(args.allocations);
    let mut ident_at = 0;
    for i in 0..args.allocations {
        let mut buf = vec![0u8; BUF_LEN];
        let len = match args.mode {
            Mode::Channel => {
                let channel = ChannelNumber::new(CHANNEL).context("channel number")?;
                ident_at = icebreaker_wire::CHANNEL_DATA_HEADER_LEN;
                // Padded to 4 bytes over TCP and TLS (RFC 8656 §12.5), not over UDP and DTLS.
                icebreaker_wire::write_channel_data(
                    &mut buf,
                    channel,
                    &payload,
                    args.transport.framing(),
                )?
            }
            Mode::Send => {
                let (_, echo) = echoes.get(i).context("an echo socket per allocation")?;
                let kind = MessageType::new(Method::SEND, Class::Indication);
                let mut w = MessageWriter::new(&mut buf, kind, tids.next())?;
                w.add(&XorPeerAddress(*echo))?;
                w.add(&Data(&payload))?;
                let len = w.finish();
                // DATA is last: its value ends the message, before its padding.
                ident_at = len - args.size.next_multiple_of(4);
                len
            }
            Mode::Binding => {
                let kind = MessageType::new(Method::BINDING, Class::Request);
                let len = MessageWriter::new(&mut buf, kind, tids.next())?.finish();
                // The transaction ID carries the identification.
                ident_at = 8;
                len
            }
        };
        buf.truncate(len);
        if args.mode != Mode::Binding {
            ensure!(
                Ident::from_payload(&buf[ident_at..]).is_some(),
                "template: payload not where expected"
            );
        }
        datagrams.push(buf);
    }
    Ok(Templates {
        mode: args.mode,
        datagrams,
        ident_at,
    })
}

impl Templates {
    /// The identification of a reply from the server, if it is one of ours.
    pub(crate) fn reply(&self, datagram: &[u8]) -> Option<Ident> {
        match self.mode {
            Mode::Channel => {
                let (&[first, ..], data) = (datagram, datagram.get(4..)?) else {
                    return None;
                };
                if first & 0xC0 != 0x40 {
                    return None;
                }
                Ident::from_payload(data)
            }
            Mode::Send => {
                let message = Message::parse(datagram).ok()?;
                if message.method() != Method::DATA || message.class() != Class::Indication {
                    return None;
                }
                Ident::from_payload(message.get::<Data>().ok()??.0)
            }
            Mode::Binding => {
                // A Binding success response: type 0x0101.
                if datagram.get(..2)? != [0x01, 0x01] {
                    return None;
                }
                Ident::read(datagram.get(8..20)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use icebreaker_wire::TransactionId;

    use super::*;

    #[test]
    fn ident_round_trips_through_a_payload() {
        let mut payload = [0u8; 32];
        payload[IDENT_LEN..IDENT_LEN + 4].copy_from_slice(&MAGIC);
        let ident = Ident {
            ts: 0x0102_0304_0506_0708,
            alloc: 31,
            slot: 7,
        };
        ident.write(&mut payload);
        assert_eq!(Ident::from_payload(&payload), Some(ident));
        payload[IDENT_LEN] ^= 1;
        assert_eq!(Ident::from_payload(&payload), None);
    }

    #[test]
    fn replies_are_recognised_in_every_mode() -> Result<()> {
        let mut payload = vec![0u8; 100];
        payload[IDENT_LEN..IDENT_LEN + 4].copy_from_slice(&MAGIC);
        let ident = Ident {
            ts: 99,
            alloc: 3,
            slot: 1,
        };
        ident.write(&mut payload);
        let templates = |mode| Templates {
            mode,
            datagrams: Vec::new(),
            ident_at: 0,
        };

        let mut buf = [0u8; 256];
        let channel = ChannelNumber::new(CHANNEL).context("channel")?;
        let n = icebreaker_wire::write_channel_data(
            &mut buf,
            channel,
            &payload,
            icebreaker_wire::Transport::Datagram,
        )?;
        assert_eq!(templates(Mode::Channel).reply(&buf[..n]), Some(ident));

        let kind = MessageType::new(Method::DATA, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, kind, TransactionId::new([7; 12]))?;
        w.add(&XorPeerAddress("127.0.0.1:9".parse()?))?;
        w.add(&Data(&payload))?;
        let n = w.finish();
        assert_eq!(templates(Mode::Send).reply(&buf[..n]), Some(ident));
        assert_eq!(templates(Mode::Channel).reply(&buf[..n]), None);

        let mut tid = [0u8; 12];
        ident.write(&mut tid);
        let kind = MessageType::new(Method::BINDING, Class::Success);
        let n = MessageWriter::new(&mut buf, kind, TransactionId::new(tid))?.finish();
        assert_eq!(templates(Mode::Binding).reply(&buf[..n]), Some(ident));
        Ok(())
    }

    #[test]
    fn channel_data_is_padded_over_streams_only() -> Result<()> {
        use clap::Parser as _;

        for (transport, framed) in [
            ("udp", 4 + 101),
            ("tcp", 4 + 104),
            ("tls", 4 + 104),
            ("dtls", 4 + 101),
        ] {
            let mut argv = vec!["turn-load", "--transport", transport, "--size", "101"];
            argv.extend(["--allocations", "1"]);
            if transport == "tls" || transport == "dtls" {
                argv.extend(["--ca", "unused.pem"]);
            }
            let args = Args::parse_from(argv);
            let t = super::templates(&args, &[], &mut TidGenerator::new())?;
            let mut frame = t.datagrams[0].clone();
            assert_eq!(frame.len(), framed, "{transport}");
            let ident = Ident {
                ts: 5,
                alloc: 0,
                slot: 3,
            };
            ident.write(&mut frame[t.ident_at..]);
            assert_eq!(t.reply(&frame), Some(ident), "{transport}");
        }
        Ok(())
    }
}
