//! The full-NAT rewrite: new addresses and ports, TTL decrement, and the
//! incremental update of the IPv4 and TCP/UDP checksums, applied together so
//! that a packet is either fully translated or not touched at all.

use crate::{
    csum::ChecksumDelta,
    headers::{split_words, IcmpHdr, Ipv4Hdr, QuotedPorts, TcpHdr, UdpHdr, IPPROTO_TCP, IPPROTO_UDP},
    maps::Endpoints,
};

/// The transport header of a packet being translated.
pub enum L4<'a> {
    Tcp(&'a mut TcpHdr),
    Udp(&'a mut UdpHdr),
}

/// Why a packet was left untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteError {
    /// TTL is 0 or 1: forwarding it would send a packet with TTL 0.
    TtlExceeded,
}

/// Rewrites `ip` and `l4` to leave with endpoints `to`, decrementing the TTL
/// and keeping both checksums valid. Nothing is written on error.
#[inline(always)]
pub fn rewrite(ip: &mut Ipv4Hdr, l4: L4<'_>, to: &Endpoints) -> Result<(), RewriteError> {
    if ip.ttl <= 1 {
        return Err(RewriteError::TtlExceeded);
    }
    let new_saddr = split_words(to.src_addr);
    let new_daddr = split_words(to.dst_addr);
    // The addresses are covered by both checksums (TCP/UDP via the pseudo-header).
    let addresses = ChecksumDelta::new()
        .replace32(ip.saddr, new_saddr)
        .replace32(ip.daddr, new_daddr);

    // TTL shares a 16-bit word with the protocol byte.
    let old_ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
    let new_ttl_word = u16::from_ne_bytes([ip.ttl - 1, ip.protocol]);
    ip.check = addresses.replace16(old_ttl_word, new_ttl_word).apply(ip.check);
    ip.ttl -= 1;
    ip.saddr = new_saddr;
    ip.daddr = new_daddr;

    match l4 {
        L4::Tcp(tcp) => {
            tcp.check = addresses
                .replace16(tcp.source, to.src_port)
                .replace16(tcp.dest, to.dst_port)
                .apply(tcp.check);
            tcp.source = to.src_port;
            tcp.dest = to.dst_port;
        }
        L4::Udp(udp) => {
            // A zero UDP checksum means "none" and must stay so; a computed
            // zero is sent as all ones (RFC 768).
            if udp.check != 0 {
                let check = addresses
                    .replace16(udp.source, to.src_port)
                    .replace16(udp.dest, to.dst_port)
                    .apply(udp.check);
                udp.check = if check == 0 { 0xffff } else { check };
            }
            udp.source = to.src_port;
            udp.dest = to.dst_port;
        }
    }
    Ok(())
}

/// Translates an ICMP error about a tracked connection, like the packets of
/// the direction it travels in: `to` is the rewrite of the connection entry
/// whose key is the quoted packet reversed (the error travels against the
/// quoted packet). The outer header leaves from `to.src_addr` to
/// `to.dst_addr` with TTL − 1; the quoted packet becomes the one its sender
/// sent before translation (from `to.dst`, to `to.src`). The outer IPv4,
/// quoted IPv4, quoted UDP (when present) and ICMP checksums are updated
/// incrementally; the quoted TCP checksum is not among the quoted bytes.
/// A quoted TCP sequence number moves by `quoted_seq_shift` (a connection
/// opened by SYN cookie: the error quotes a segment in the sequence space
/// its receiver saw, its sender must find its own). Nothing is written on
/// error.
#[inline(always)]
pub fn rewrite_icmp_error(
    ip: &mut Ipv4Hdr,
    icmp: &mut IcmpHdr,
    quoted_ip: &mut Ipv4Hdr,
    quoted: &mut QuotedPorts,
    to: &Endpoints,
    quoted_seq_shift: u32,
) -> Result<(), RewriteError> {
    if ip.ttl <= 1 {
        return Err(RewriteError::TtlExceeded);
    }
    // The outer header: no transport pseudo-header covers ICMP.
    let new_saddr = split_words(to.src_addr);
    let new_daddr = split_words(to.dst_addr);
    let old_ttl_word = u16::from_ne_bytes([ip.ttl, ip.protocol]);
    let new_ttl_word = u16::from_ne_bytes([ip.ttl - 1, ip.protocol]);
    ip.check = ChecksumDelta::new()
        .replace32(ip.saddr, new_saddr)
        .replace32(ip.daddr, new_daddr)
        .replace16(old_ttl_word, new_ttl_word)
        .apply(ip.check);
    ip.ttl -= 1;
    ip.saddr = new_saddr;
    ip.daddr = new_daddr;

    // The quoted packet, and every word of it the ICMP checksum covers.
    let quoted_saddr = split_words(to.dst_addr);
    let quoted_daddr = split_words(to.src_addr);
    let addresses = ChecksumDelta::new()
        .replace32(quoted_ip.saddr, quoted_saddr)
        .replace32(quoted_ip.daddr, quoted_daddr);
    let quoted_check = addresses.apply(quoted_ip.check);
    let mut icmp_delta = addresses
        .replace16(quoted_ip.check, quoted_check)
        .replace16(quoted.source, to.dst_port)
        .replace16(quoted.dest, to.src_port);
    if quoted_ip.protocol == IPPROTO_UDP && quoted.rest[1] != 0 {
        let udp_check = addresses
            .replace16(quoted.source, to.dst_port)
            .replace16(quoted.dest, to.src_port)
            .apply(quoted.rest[1]);
        let udp_check = if udp_check == 0 { 0xffff } else { udp_check };
        icmp_delta = icmp_delta.replace16(quoted.rest[1], udp_check);
        quoted.rest[1] = udp_check;
    }
    if quoted_ip.protocol == crate::headers::IPPROTO_TCP && quoted_seq_shift != 0 {
        let seq = u32::from_be(crate::headers::join_words(quoted.rest)).wrapping_add(quoted_seq_shift);
        let new = split_words(seq.to_be());
        icmp_delta = icmp_delta.replace32(quoted.rest, new);
        quoted.rest = new;
    }
    quoted_ip.check = quoted_check;
    quoted_ip.saddr = quoted_saddr;
    quoted_ip.daddr = quoted_daddr;
    quoted.source = to.dst_port;
    quoted.dest = to.src_port;
    icmp.check = icmp_delta.apply(icmp.check);
    Ok(())
}

/// Turns the SYN in `ip`/`tcp` into the RST+ACK that refuses it, sent back
/// to its source. `payload_len` is the SYN's data length (normally 0). The
/// caller trims the frame to the two headers. Checksums are computed from
/// scratch: nothing of the original header survives.
#[inline(always)]
pub fn refuse_syn(ip: &mut Ipv4Hdr, tcp: &mut TcpHdr, payload_len: u16) {
    let seq = u32::from_be(crate::headers::join_words(tcp.seq));
    let refusal = NewSegment {
        src_addr: ip.dst(),
        dst_addr: ip.src(),
        src_port: tcp.dest,
        dst_port: tcp.source,
        seq: 0,
        // The SYN itself counts as one sequence number.
        ack: seq.wrapping_add(1).wrapping_add(u32::from(payload_len)),
        flags: crate::headers::TCP_RST | crate::headers::TCP_ACK,
        window: 0,
    };
    write_segment(ip, tcp, None, &refusal);
}

/// A TCP segment without data that the program builds from scratch (the
/// RST+ACK refusing a SYN; the SYN proxy's cookie SYN-ACK, SYN and ACK).
/// Addresses and ports in network order, the rest in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSegment {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// Writes `segment` into `ip` and `tcp`, with `options` (a SYN's) after
/// the TCP header or none; the caller has sized the frame to match
/// (`Ipv4Hdr::LEN + TcpHdr::LEN`, plus SYN_OPTIONS_LEN with options).
/// Checksums are computed from scratch.
#[inline(always)]
pub fn write_segment(
    ip: &mut Ipv4Hdr,
    tcp: &mut TcpHdr,
    options: Option<&[u8; crate::synproxy::SYN_OPTIONS_LEN]>,
    segment: &NewSegment,
) {
    let tcp_len = TcpHdr::LEN
        + if options.is_some() {
            crate::synproxy::SYN_OPTIONS_LEN
        } else {
            0
        };
    *ip = Ipv4Hdr {
        version_ihl: 0x45,
        tos: 0,
        tot_len: ((Ipv4Hdr::LEN + tcp_len) as u16).to_be(),
        id: 0,
        frag_off: 0x4000_u16.to_be(),
        ttl: 64,
        protocol: IPPROTO_TCP,
        check: 0,
        saddr: split_words(segment.src_addr),
        daddr: split_words(segment.dst_addr),
    };
    ip.check = !fold(ipv4_header_sum(ip));
    *tcp = TcpHdr {
        source: segment.src_port,
        dest: segment.dst_port,
        seq: split_words(segment.seq.to_be()),
        ack_seq: split_words(segment.ack.to_be()),
        doff_flags: [((tcp_len / 4) as u8) << 4, segment.flags],
        window: segment.window.to_be(),
        check: 0,
        urg_ptr: 0,
    };
    let mut sum: u32 = u32::from(ip.saddr[0])
        + u32::from(ip.saddr[1])
        + u32::from(ip.daddr[0])
        + u32::from(ip.daddr[1])
        + u32::from(u16::from_ne_bytes([0, IPPROTO_TCP]))
        + u32::from((tcp_len as u16).to_be())
        + u32::from(tcp.source)
        + u32::from(tcp.dest)
        + u32::from(tcp.seq[0])
        + u32::from(tcp.seq[1])
        + u32::from(tcp.ack_seq[0])
        + u32::from(tcp.ack_seq[1])
        + u32::from(u16::from_ne_bytes(tcp.doff_flags))
        + u32::from(tcp.window);
    if let Some(options) = options {
        let mut i = 0;
        while i < options.len() {
            sum += u32::from(u16::from_ne_bytes([options[i], options[i + 1]]));
            i += 2;
        }
    }
    tcp.check = !fold(sum);
}

/// The IPv4 and ICMP headers of the "fragmentation needed" error (type 3,
/// code 4, RFC 1191) that a router sends about the packet `quoted_ip`
/// (option-less, as received) whose transport header starts with `quoted`:
/// from the address the packet was sent to (a VIP, or a SNAT address), back
/// to its source, announcing the next hop's `mtu`. The error quotes the
/// IPv4 header and 8 bytes (RFC 792), which it follows in the frame.
/// Checksums are computed from scratch.
#[inline(always)]
#[must_use]
pub fn frag_needed(quoted_ip: &Ipv4Hdr, quoted: &QuotedPorts, mtu: u16) -> (Ipv4Hdr, IcmpHdr) {
    let mut ip = Ipv4Hdr {
        version_ihl: 0x45,
        // Internetwork control, as Linux sends its ICMP errors.
        tos: 0xc0,
        tot_len: ((Ipv4Hdr::LEN + IcmpHdr::LEN + Ipv4Hdr::LEN + QuotedPorts::LEN) as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: 64,
        protocol: crate::headers::IPPROTO_ICMP,
        check: 0,
        saddr: quoted_ip.daddr,
        daddr: quoted_ip.saddr,
    };
    ip.check = !fold(ipv4_header_sum(&ip));
    let mut icmp = IcmpHdr {
        kind: crate::headers::ICMP_DEST_UNREACH,
        code: crate::headers::ICMP_FRAG_NEEDED,
        check: 0,
        rest: [0, mtu.to_be()],
    };
    icmp.check = !fold(
        words_sum(&[
            u16::from_ne_bytes([icmp.kind, icmp.code]),
            icmp.rest[0],
            icmp.rest[1],
            quoted_ip.check,
            quoted.source,
            quoted.dest,
            quoted.rest[0],
            quoted.rest[1],
        ]) + ipv4_header_sum(quoted_ip),
    );
    (ip, icmp)
}

/// The sum of an option-less IPv4 header's words but its checksum.
#[inline(always)]
pub(crate) fn ipv4_header_sum(ip: &Ipv4Hdr) -> u32 {
    words_sum(&[
        u16::from_ne_bytes([ip.version_ihl, ip.tos]),
        ip.tot_len,
        ip.id,
        ip.frag_off,
        u16::from_ne_bytes([ip.ttl, ip.protocol]),
        ip.saddr[0],
        ip.saddr[1],
        ip.daddr[0],
        ip.daddr[1],
    ])
}

#[inline(always)]
fn words_sum(words: &[u16]) -> u32 {
    let mut sum = 0_u32;
    for word in words {
        sum += u32::from(*word);
    }
    sum
}

#[inline(always)]
pub(crate) fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        csum::{checksum, sum_bytes},
        headers::{IPPROTO_TCP, IPPROTO_UDP},
    };
    use std::vec::Vec;

    fn addr(octets: [u8; 4]) -> u32 {
        u32::from_ne_bytes(octets)
    }

    fn ipv4(proto: u8, payload_len: u16, src: [u8; 4], dst: [u8; 4]) -> Ipv4Hdr {
        let mut ip = Ipv4Hdr {
            version_ihl: 0x45,
            tos: 0,
            tot_len: (20 + payload_len).to_be(),
            id: 0x1234_u16.to_be(),
            frag_off: 0x4000_u16.to_be(),
            ttl: 64,
            protocol: proto,
            check: 0,
            saddr: split_words(addr(src)),
            daddr: split_words(addr(dst)),
        };
        ip.check = checksum(0, as_bytes(&ip));
        ip
    }

    fn as_bytes<T>(value: &T) -> &[u8] {
        // SAFETY: the header types are repr(C) integers without padding.
        unsafe { core::slice::from_raw_parts((value as *const T).cast(), size_of::<T>()) }
    }

    fn pseudo_sum(ip: &Ipv4Hdr, l4_len: u16) -> u32 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(as_bytes(&ip.saddr));
        pseudo.extend_from_slice(as_bytes(&ip.daddr));
        pseudo.extend_from_slice(&[0, ip.protocol]);
        pseudo.extend_from_slice(&l4_len.to_be_bytes());
        sum_bytes(0, &pseudo)
    }

    fn tcp_checksum(ip: &Ipv4Hdr, tcp: &TcpHdr, payload: &[u8]) -> u16 {
        let mut segment = as_bytes(tcp).to_vec();
        segment.extend_from_slice(payload);
        checksum(pseudo_sum(ip, segment.len() as u16), &segment)
    }

    fn udp_checksum(ip: &Ipv4Hdr, udp: &UdpHdr, payload: &[u8]) -> u16 {
        let mut datagram = as_bytes(udp).to_vec();
        datagram.extend_from_slice(payload);
        checksum(pseudo_sum(ip, datagram.len() as u16), &datagram)
    }

    const TO: Endpoints = Endpoints {
        src_addr: u32::from_ne_bytes([203, 0, 113, 2]),
        dst_addr: u32::from_ne_bytes([203, 0, 113, 11]),
        src_port: 20_001_u16.to_be(),
        dst_port: 3000_u16.to_be(),
    };

    /// An ICMP error from `from` about the UDP datagram `quoted` carried
    /// (its header and the first 8 bytes of its datagram), every checksum
    /// computed from scratch.
    fn icmp_error(from: [u8; 4], quoted_ip: Ipv4Hdr, quoted: QuotedPorts) -> (Ipv4Hdr, IcmpHdr) {
        let ip = ipv4(1, 36, from, [0; 4]);
        let ip = Ipv4Hdr {
            daddr: quoted_ip.saddr,
            check: 0,
            ..ip
        };
        let ip = Ipv4Hdr {
            check: checksum(0, as_bytes(&ip)),
            ..ip
        };
        let mut icmp = IcmpHdr {
            kind: 3,
            code: 4,
            check: 0,
            rest: [0, 1400_u16.to_be()],
        };
        icmp.check = icmp_checksum(&icmp, &quoted_ip, &quoted);
        (ip, icmp)
    }

    fn icmp_checksum(icmp: &IcmpHdr, quoted_ip: &Ipv4Hdr, quoted: &QuotedPorts) -> u16 {
        let mut message = as_bytes(&IcmpHdr { check: 0, ..*icmp }).to_vec();
        message.extend_from_slice(as_bytes(quoted_ip));
        message.extend_from_slice(as_bytes(quoted));
        checksum(0, &message)
    }

    #[test]
    fn an_icmp_error_is_translated_with_every_checksum_valid() {
        // The LB sent a UDP datagram from its SNAT tuple to a backend; a
        // router answers "fragmentation needed". The error goes to the
        // client as if about the datagram the client sent to the VIP.
        let snat = [10, 0, 0, 2];
        let backend = [10, 0, 0, 11];
        let mut quoted_ip = ipv4(IPPROTO_UDP, 1472, snat, backend);
        let udp = UdpHdr {
            source: 20_001_u16.to_be(),
            dest: 53_u16.to_be(),
            len: 1472_u16.to_be(),
            check: 0,
        };
        // A checksum over a datagram we only see the head of: any value.
        let mut quoted = QuotedPorts {
            source: udp.source,
            dest: udp.dest,
            rest: [udp.len, 0x1234],
        };
        let (mut ip, mut icmp) = icmp_error([10, 0, 0, 1], quoted_ip, quoted);
        let vip = u32::from_ne_bytes([198, 51, 100, 100]);
        let client = u32::from_ne_bytes([198, 51, 100, 10]);
        let to = Endpoints {
            src_addr: vip,
            dst_addr: client,
            src_port: 53_u16.to_be(),
            dst_port: 40_000_u16.to_be(),
        };
        let old_udp_sum = {
            let datagram_head = as_bytes(&quoted).to_vec();
            sum_bytes(pseudo_sum(&quoted_ip, 1472), &datagram_head)
        };
        rewrite_icmp_error(&mut ip, &mut icmp, &mut quoted_ip, &mut quoted, &to, 0).unwrap();

        assert_eq!((ip.src(), ip.dst(), ip.ttl), (vip, client, 63));
        assert_eq!(checksum(0, as_bytes(&ip)), 0, "outer IPv4 checksum");
        assert_eq!((quoted_ip.src(), quoted_ip.dst()), (client, vip));
        assert_eq!((quoted.source, quoted.dest), (to.dst_port, to.src_port));
        assert_eq!(checksum(0, as_bytes(&quoted_ip)), 0, "quoted IPv4 checksum");
        assert_eq!(
            icmp.check,
            icmp_checksum(&icmp, &quoted_ip, &quoted),
            "ICMP checksum"
        );
        // The quoted UDP checksum moved exactly as the header changes demand.
        let new_udp_sum = sum_bytes(pseudo_sum(&quoted_ip, 1472), as_bytes(&quoted));
        assert_eq!(
            crate::csum::ChecksumDelta::new().apply(!(old_udp_sum as u16)),
            crate::csum::ChecksumDelta::new().apply(!(new_udp_sum as u16)),
            "the sum over what the quoted checksum covers is unchanged"
        );
        assert_eq!(icmp.rest, [0, 1400_u16.to_be()], "the MTU is kept");

        // TTL 1: untouched.
        let (mut ip, mut icmp) = icmp_error([10, 0, 0, 1], quoted_ip, quoted);
        ip.ttl = 1;
        let before = (ip, icmp, quoted_ip, quoted);
        assert!(rewrite_icmp_error(&mut ip, &mut icmp, &mut quoted_ip, &mut quoted, &to, 0).is_err());
        assert_eq!((ip, icmp, quoted_ip, quoted), before);
    }

    #[test]
    fn tcp_rewrite_keeps_checksums_valid() {
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let mut ip = ipv4(
            IPPROTO_TCP,
            20 + payload.len() as u16,
            [198, 51, 100, 10],
            [198, 51, 100, 100],
        );
        let mut tcp = TcpHdr {
            source: 40_000_u16.to_be(),
            dest: 3000_u16.to_be(),
            seq: [0x1111, 0x2222],
            ack_seq: [0x3333, 0x4444],
            doff_flags: [0x50, 0x18],
            window: 0xffff,
            check: 0,
            urg_ptr: 0,
        };
        tcp.check = tcp_checksum(&ip, &tcp, payload);

        rewrite(&mut ip, L4::Tcp(&mut tcp), &TO).unwrap();

        assert_eq!((ip.src(), ip.dst()), (TO.src_addr, TO.dst_addr));
        assert_eq!((tcp.source, tcp.dest), (TO.src_port, TO.dst_port));
        assert_eq!(ip.ttl, 63);
        let stored_ip = ip.check;
        ip.check = 0;
        assert_eq!(checksum(0, as_bytes(&ip)), stored_ip);
        ip.check = stored_ip;
        let stored_tcp = tcp.check;
        tcp.check = 0;
        assert_eq!(tcp_checksum(&ip, &tcp, payload), stored_tcp);
    }

    #[test]
    fn udp_rewrite_keeps_checksum_or_its_absence() {
        let payload = b"ping";
        for with_checksum in [true, false] {
            let mut ip = ipv4(IPPROTO_UDP, 12, [198, 51, 100, 10], [198, 51, 100, 100]);
            let mut udp = UdpHdr {
                source: 5353_u16.to_be(),
                dest: 53_u16.to_be(),
                len: 12_u16.to_be(),
                check: 0,
            };
            if with_checksum {
                udp.check = udp_checksum(&ip, &udp, payload);
            }
            rewrite(&mut ip, L4::Udp(&mut udp), &TO).unwrap();
            if with_checksum {
                let stored = udp.check;
                udp.check = 0;
                let expected = match udp_checksum(&ip, &udp, payload) {
                    0 => 0xffff,
                    c => c,
                };
                assert_eq!(expected, stored);
            } else {
                assert_eq!(udp.check, 0);
            }
        }
    }

    #[test]
    fn udp_checksum_that_updates_to_zero_is_sent_as_all_ones() {
        // The datagram as it leaves: addresses and ports of TO, and a payload
        // whose last word is chosen so that the whole datagram sums to 0xffff,
        // i.e. its checksum computed from scratch is 0 (RFC 768: sent as 0xffff).
        let mut payload = *b"zero-sum\0\0";
        let len = 8 + payload.len() as u16;
        let after = Ipv4Hdr {
            saddr: split_words(TO.src_addr),
            daddr: split_words(TO.dst_addr),
            ..ipv4(IPPROTO_UDP, len, [0; 4], [0; 4])
        };
        let leaving = UdpHdr {
            source: TO.src_port,
            dest: TO.dst_port,
            len: len.to_be(),
            check: 0,
        };
        let filler = udp_checksum(&after, &leaving, &payload);
        payload[8..].copy_from_slice(&filler.to_ne_bytes());
        assert_eq!(
            udp_checksum(&after, &leaving, &payload),
            0,
            "crafted to compute to 0"
        );

        // The same datagram as the client sent it, with its valid checksum.
        let mut ip = ipv4(IPPROTO_UDP, len, [198, 51, 100, 10], [198, 51, 100, 100]);
        let mut udp = UdpHdr {
            source: 40_000_u16.to_be(),
            dest: 5353_u16.to_be(),
            len: leaving.len,
            check: 0,
        };
        udp.check = udp_checksum(&ip, &udp, &payload);
        assert_ne!(udp.check, 0, "the incoming datagram carries a checksum");

        rewrite(&mut ip, L4::Udp(&mut udp), &TO).unwrap();

        assert_eq!((ip.saddr, ip.daddr), (after.saddr, after.daddr));
        assert_eq!((udp.source, udp.dest), (TO.src_port, TO.dst_port));
        assert_eq!(udp.check, 0xffff, "a computed 0 must not read as \"no checksum\"");
        // A receiver's full verification: the datagram with its checksum sums to 0xffff.
        let mut datagram = as_bytes(&udp).to_vec();
        datagram.extend_from_slice(&payload);
        assert_eq!(
            sum_bytes(pseudo_sum(&ip, datagram.len() as u16), &datagram),
            0xffff,
            "the rewritten datagram verifies"
        );
    }

    #[test]
    fn refusal_of_a_syn_is_a_valid_rst_ack_back_to_the_client() {
        let mut ip = ipv4(IPPROTO_TCP, 20, [198, 51, 100, 10], [198, 51, 100, 100]);
        let mut tcp = TcpHdr {
            source: 40_000_u16.to_be(),
            dest: 3000_u16.to_be(),
            seq: split_words(0xffff_ffff_u32.to_be()),
            ack_seq: [0; 2],
            doff_flags: [0x50, crate::headers::TCP_SYN],
            window: 0xffff,
            check: 0,
            urg_ptr: 0,
        };
        refuse_syn(&mut ip, &mut tcp, 0);
        assert_eq!(
            (ip.src(), ip.dst()),
            (addr([198, 51, 100, 100]), addr([198, 51, 100, 10]))
        );
        assert_eq!((u16::from_be(tcp.source), u16::from_be(tcp.dest)), (3000, 40_000));
        assert_eq!(
            u32::from_be(crate::headers::join_words(tcp.ack_seq)),
            0,
            "seq + 1 wraps"
        );
        assert_eq!(tcp.flags(), crate::headers::TCP_RST | crate::headers::TCP_ACK);
        assert_eq!(checksum(0, as_bytes(&ip)), 0, "IPv4 header checksum");
        let stored = tcp.check;
        tcp.check = 0;
        assert_eq!(tcp_checksum(&ip, &tcp, &[]), stored, "TCP checksum");
    }

    #[test]
    fn frag_needed_quotes_the_packet_back_to_its_source_with_valid_checksums() {
        let quoted_ip = ipv4(IPPROTO_TCP, 1460, [198, 51, 100, 10], [198, 51, 100, 100]);
        assert!(quoted_ip.dont_fragment());
        let quoted = QuotedPorts {
            source: 40_000_u16.to_be(),
            dest: 3000_u16.to_be(),
            rest: [0x1234, 0xabcd],
        };
        let (ip, icmp) = frag_needed(&quoted_ip, &quoted, 1400);
        assert_eq!(
            (ip.src(), ip.dst()),
            (addr([198, 51, 100, 100]), addr([198, 51, 100, 10]))
        );
        assert_eq!((ip.protocol, ip.total_len()), (crate::headers::IPPROTO_ICMP, 56));
        assert_eq!(checksum(0, as_bytes(&ip)), 0, "IPv4 header checksum");
        assert_eq!((icmp.kind, icmp.code), (3, 4));
        assert_eq!(u16::from_be(icmp.rest[1]), 1400, "the next hop's MTU");
        let mut message = as_bytes(&icmp).to_vec();
        message.extend_from_slice(as_bytes(&quoted_ip));
        message.extend_from_slice(as_bytes(&quoted));
        assert_eq!(message.len(), 36);
        assert_eq!(
            checksum(0, &message),
            0,
            "ICMP checksum over the error and its quote"
        );
    }

    #[test]
    fn ttl_one_is_not_forwarded_and_not_touched() {
        let mut ip = ipv4(IPPROTO_UDP, 8, [1, 2, 3, 4], [5, 6, 7, 8]);
        ip.ttl = 1;
        let before = ip;
        let mut udp = UdpHdr {
            source: 1,
            dest: 2,
            len: 8_u16.to_be(),
            check: 0,
        };
        assert_eq!(
            rewrite(&mut ip, L4::Udp(&mut udp), &TO),
            Err(RewriteError::TtlExceeded)
        );
        assert_eq!(ip, before);
        assert_eq!(udp.source, 1);
    }
}
