//! Frames for BPF_PROG_TEST_RUN fixtures, and their from-scratch check.
//! The checksum code here is deliberately independent of lb-common's.

use std::net::Ipv4Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// A frame to build.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    /// The fixture's public interface ([`crate::fixture::PUBLIC_MAC`])
    /// unless set.
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub payload: Vec<u8>,
    /// UDP only: send without a checksum (zero).
    pub udp_no_checksum: bool,
    /// TCP sequence number, and acknowledgement number (sent only with ACK).
    pub seq: u32,
    pub ack: u32,
    /// TCP options (padded to a multiple of four bytes with EOL).
    pub tcp_options: Vec<u8>,
}

impl Frame {
    #[must_use]
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            src_mac: crate::fixture::CLIENT_MAC,
            dst_mac: crate::fixture::PUBLIC_MAC,
            src: src.0,
            dst: dst.0,
            proto: TCP,
            src_port: src.1,
            dst_port: dst.1,
            tcp_flags: flags,
            ttl: 64,
            payload: Vec::new(),
            udp_no_checksum: false,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            tcp_options: Vec::new(),
        }
    }

    /// The segment with these sequence and acknowledgement numbers.
    #[must_use]
    pub fn with_seq(mut self, seq: u32, ack: u32) -> Self {
        self.seq = seq;
        self.ack = ack;
        self
    }

    /// The segment with these TCP options.
    #[must_use]
    pub fn with_tcp_options(mut self, options: &[u8]) -> Self {
        self.tcp_options = options.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        self
    }

    #[must_use]
    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Self {
        Self {
            proto: UDP,
            tcp_flags: 0,
            payload: payload.to_vec(),
            ..Self::tcp(src, dst, 0)
        }
    }

    #[must_use]
    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The frame addressed to `mac`.
    #[must_use]
    pub fn addressed_to(mut self, mac: [u8; 6]) -> Self {
        self.dst_mac = mac;
        self
    }

    /// The frame's bytes, every checksum correct.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let l4_len = if self.proto == TCP {
            20 + self.tcp_options.len()
        } else {
            8
        } + self.payload.len();
        let mut f = Vec::with_capacity(34 + l4_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800_u16.to_be_bytes());
        // IPv4
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, self.ttl, self.proto, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let ip_check = internet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ip_check.to_be_bytes());
        // L4
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        if self.proto == TCP {
            f.extend_from_slice(&self.seq.to_be_bytes());
            f.extend_from_slice(&(if self.tcp_flags & ACK != 0 { self.ack } else { 0 }).to_be_bytes());
            let data_offset = ((20 + self.tcp_options.len()) / 4) as u8;
            f.extend_from_slice(&[data_offset << 4, self.tcp_flags, 0xfa, 0xf0, 0, 0, 0, 0]);
            f.extend_from_slice(&self.tcp_options);
        } else {
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(&self.payload);
        if !(self.proto == UDP && self.udp_no_checksum) {
            let check = l4_checksum(&f[14..34], &f[34..]);
            let at = if self.proto == TCP { 34 + 16 } else { 34 + 6 };
            let check = if self.proto == UDP && check == 0 {
                0xffff
            } else {
                check
            };
            f[at..at + 2].copy_from_slice(&check.to_be_bytes());
        }
        f
    }
}

/// A payload for a UDP datagram from `src` to `dst` whose checksum, computed
/// from scratch, is exactly 0 (which RFC 768 sends as 0xffff, since 0 means
/// "no checksum"): `text`, padded to an even length, then one filler word
/// that brings the ones' complement sum of the datagram to 0xffff.
#[must_use]
pub fn udp_payload_summing_to_zero(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), text: &[u8]) -> Vec<u8> {
    let mut payload = text.to_vec();
    if payload.len() % 2 == 1 {
        payload.push(0);
    }
    payload.extend_from_slice(&[0, 0]);
    let mut frame = Frame::udp(src, dst, &payload);
    frame.udp_no_checksum = true;
    let bytes = frame.build();
    // The checksum of the datagram with a zero filler is the complement of
    // its sum: as the filler, it completes the sum to 0xffff.
    let filler = l4_checksum(&bytes[14..34], &bytes[34..]);
    let at = payload.len() - 2;
    payload[at..].copy_from_slice(&filler.to_be_bytes());
    payload
}

/// What a frame that left the program says, read from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub proto: u8,
    pub payload: Vec<u8>,
}

/// Parses an Ethernet/IPv4/TCP-or-UDP frame and verifies, from scratch, the
/// IPv4 header checksum and the TCP/UDP checksum.
pub fn parse_and_verify(frame: &[u8]) -> Result<Parsed, String> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
        return Err(format!("not an option-less IPv4 frame: {frame:02x?}"));
    }
    let ip = &frame[14..34];
    if internet_checksum(ip) != 0 {
        return Err(format!("bad IPv4 header checksum in {ip:02x?}"));
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total + 14 > frame.len() || total < 20 {
        return Err(format!("bad IPv4 total length {total}"));
    }
    let l4 = &frame[34..14 + total];
    let proto = ip[9];
    let header_len = match proto {
        TCP => usize::from(l4[12] >> 4) * 4,
        UDP => 8,
        other => return Err(format!("protocol {other}")),
    };
    let udp_unchecked = proto == UDP && l4[6..8] == [0, 0];
    if !udp_unchecked && l4_checksum(ip, l4) != 0 {
        return Err(format!(
            "bad {} checksum",
            if proto == TCP { "TCP" } else { "UDP" }
        ));
    }
    let mac = |at: usize| -> [u8; 6] { frame[at..at + 6].try_into().unwrap_or_default() };
    Ok(Parsed {
        dst_mac: mac(0),
        src_mac: mac(6),
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([l4[0], l4[1]]),
        dst_port: u16::from_be_bytes([l4[2], l4[3]]),
        ttl: ip[8],
        proto,
        payload: l4[header_len..].to_vec(),
    })
}

/// RFC 1071 over big-endian words; 0 for a region that includes a valid checksum.
#[must_use]
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u64::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_checksum(ip_header: &[u8], l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + l4.len());
    pseudo.extend_from_slice(&ip_header[12..20]);
    pseudo.extend_from_slice(&[0, ip_header[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    internet_checksum(&pseudo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify_and_corruption_is_caught() {
        let a = (Ipv4Addr::new(198, 51, 100, 10), 40000);
        let b = (Ipv4Addr::new(198, 51, 100, 100), 3000);
        for frame in [
            Frame::tcp(a, b, SYN).with_payload(b"odd"),
            Frame::udp(a, b, b"hello"),
        ] {
            let mut bytes = frame.build();
            let parsed = parse_and_verify(&bytes).unwrap();
            assert_eq!((parsed.src, parsed.dst_port), (a.0, 3000));
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
            assert!(parse_and_verify(&bytes).is_err());
        }
    }

    #[test]
    fn a_udp_checksum_computing_to_zero_is_sent_as_all_ones_and_verifies() {
        let a = (Ipv4Addr::new(203, 0, 113, 2), 20_000);
        let b = (Ipv4Addr::new(203, 0, 113, 11), 5353);
        for text in [&b"odd"[..], b"even"] {
            let payload = udp_payload_summing_to_zero(a, b, text);
            assert!(payload.starts_with(text));
            let bytes = Frame::udp(a, b, &payload).build();
            let mut zeroed = bytes.clone();
            zeroed[40..42].fill(0);
            assert_eq!(l4_checksum(&zeroed[14..34], &zeroed[34..]), 0, "computes to 0");
            assert_eq!(bytes[40..42], [0xff, 0xff]);
            assert_eq!(parse_and_verify(&bytes).unwrap().payload, payload);
        }
    }
}
