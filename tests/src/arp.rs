//! ARP on one interface, for tests: a packet socket that captures the ARP
//! frames arriving there and sends ARP frames out of it.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Context;
pub use lb_user::failover::garp::{ArpFrame, Mac};
use lb_user::failover::garp::{ETHERTYPE_ARP, ETHERTYPE_IPV4, FRAME_LEN, HARDWARE_ETHERNET};

use crate::packet_socket::PacketSocket;

/// A packet socket bound to one interface for ARP frames.
pub struct ArpSocket {
    socket: PacketSocket,
}

impl ArpSocket {
    /// Opens the socket in the calling thread's network namespace (open it
    /// inside `Netns::run`; it may be used from any thread afterwards).
    pub fn open(interface: &str) -> anyhow::Result<Self> {
        Ok(Self {
            socket: PacketSocket::open(interface, ETHERTYPE_ARP)?,
        })
    }

    /// The next ARP frame that arrives (not one this host sends) before
    /// `deadline`; `None` if none does.
    pub fn receive_until(&self, deadline: Instant) -> anyhow::Result<Option<ArpFrame>> {
        while let Some(bytes) = self.socket.receive_until(deadline)? {
            if let Some(frame) = parse(&bytes) {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// Every ARP frame that arrives until none has for `quiet`.
    pub fn receive_all(&self, quiet: Duration) -> anyhow::Result<Vec<ArpFrame>> {
        let mut frames = Vec::new();
        while let Some(frame) = self.receive_until(Instant::now() + quiet)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Sends `frame` out of the interface.
    pub fn send(&self, frame: &ArpFrame) -> anyhow::Result<()> {
        self.socket.send(&frame.encode()).context("send an ARP frame")
    }
}

/// An Ethernet frame carrying an IPv4 ARP packet, or `None`.
#[must_use]
pub fn parse(bytes: &[u8]) -> Option<ArpFrame> {
    if bytes.len() < FRAME_LEN {
        return None;
    }
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let mac_at = |at: usize| -> Mac { bytes[at..at + 6].try_into().expect("six bytes") };
    let ip_at = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    let is_ipv4_over_ethernet = u16_at(12) == ETHERTYPE_ARP
        && u16_at(14) == HARDWARE_ETHERNET
        && u16_at(16) == ETHERTYPE_IPV4
        && bytes[18] == 6
        && bytes[19] == 4;
    is_ipv4_over_ethernet.then(|| ArpFrame {
        destination: mac_at(0),
        source: mac_at(6),
        op: u16_at(20),
        sender_mac: mac_at(22),
        sender_ip: ip_at(28),
        target_mac: mac_at(32),
        target_ip: ip_at(38),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_what_encode_wrote() {
        let frame = ArpFrame::gratuitous([2, 0, 0, 0, 0, 7], Ipv4Addr::new(198, 51, 100, 100));
        assert_eq!(parse(&frame.encode()), Some(frame));
        let mut ipv4 = frame.encode();
        ipv4[13] = 0x00;
        assert_eq!(parse(&ipv4), None);
    }
}
