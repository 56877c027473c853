//! Wire headers as they sit in the packet. Every field keeps network byte
//! order; no field needs more than 2-byte alignment, because the IPv4 header
//! starts 14 bytes into the frame.

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network order.
    pub ether_type: u16,
}

impl EthHdr {
    pub const LEN: usize = 14;

    /// Whether the frame is addressed to one host (the group bit of the
    /// destination, bit 0 of its first byte, is clear), not to a group
    /// (broadcast or multicast).
    #[inline(always)]
    #[must_use]
    pub const fn is_unicast(&self) -> bool {
        self.dst[0] & 1 == 0
    }
}

/// `ether_type` of IPv4, as stored in the frame.
pub const ETH_P_IP: u16 = 0x0800_u16.to_be();
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u16; 2],
    pub daddr: [u16; 2],
}

/// Why an IPv4 header cannot be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Defect {
    /// Version is not 4, the header length is under 20 bytes, or the total
    /// length disagrees with the header length or the frame.
    Malformed,
    /// The header carries options (IHL > 5).
    Options,
    /// A fragment: the L4 header is absent or incomplete.
    Fragment,
}

impl Ipv4Hdr {
    pub const LEN: usize = 20;
    const DONT_FRAGMENT: u16 = 0x4000;
    const MORE_FRAGMENTS: u16 = 0x2000;
    const OFFSET_MASK: u16 = 0x1fff;

    #[inline(always)]
    #[must_use]
    pub fn src(&self) -> u32 {
        join_words(self.saddr)
    }

    #[inline(always)]
    #[must_use]
    pub fn dst(&self) -> u32 {
        join_words(self.daddr)
    }

    /// Checks the header against the number of bytes the frame holds from the
    /// start of this header on. Structural defects come before options, and
    /// options before fragments, so that each packet is counted once.
    #[inline(always)]
    pub fn check_translatable(&self, bytes_available: usize) -> Result<(), Ipv4Defect> {
        let version = self.version_ihl >> 4;
        let header_len = usize::from(self.version_ihl & 0x0f) * 4;
        let total_len = usize::from(u16::from_be(self.tot_len));
        if version != 4 || header_len < Self::LEN || total_len < header_len || total_len > bytes_available {
            return Err(Ipv4Defect::Malformed);
        }
        if header_len != Self::LEN {
            return Err(Ipv4Defect::Options);
        }
        let frag = u16::from_be(self.frag_off);
        if frag & (Self::MORE_FRAGMENTS | Self::OFFSET_MASK) != 0 {
            return Err(Ipv4Defect::Fragment);
        }
        Ok(())
    }

    /// Whether the header checksum is right (a 20-byte header: options are
    /// never translated).
    #[inline(always)]
    #[must_use]
    pub fn checksum_ok(&self) -> bool {
        let words = [
            u16::from_ne_bytes([self.version_ihl, self.tos]),
            self.tot_len,
            self.id,
            self.frag_off,
            u16::from_ne_bytes([self.ttl, self.protocol]),
            self.check,
            self.saddr[0],
            self.saddr[1],
            self.daddr[0],
            self.daddr[1],
        ];
        let mut sum: u32 = 0;
        for word in words {
            sum += u32::from(word);
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum == 0xffff
    }

    /// Total length from the header, in host order.
    #[inline(always)]
    #[must_use]
    pub fn total_len(&self) -> u16 {
        u16::from_be(self.tot_len)
    }

    /// The sender forbids fragmentation (DF): a router that cannot forward
    /// it whole answers "fragmentation needed" (path-MTU discovery).
    #[inline(always)]
    #[must_use]
    pub fn dont_fragment(&self) -> bool {
        u16::from_be(self.frag_off) & Self::DONT_FRAGMENT != 0
    }
}

/// TCP header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: [u16; 2],
    pub ack_seq: [u16; 2],
    /// Data offset (high nibble of the first byte) and flags (second byte).
    pub doff_flags: [u8; 2],
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// TCP option kinds (RFC 9293, RFC 7323).
pub const KIND_END: u8 = 0;
pub const KIND_NOP: u8 = 1;
pub const KIND_MSS: u8 = 2;
pub const KIND_WINDOW_SCALE: u8 = 3;

/// Options scanned in a TCP header: real stacks send at most eight
/// (macOS: MSS, NOP, WS, NOP, NOP, TS, SACK-permitted, EOL).
pub const SCANNED_OPTIONS: usize = 8;

/// Where [`find_option`] found an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption {
    /// It starts at this byte of the options.
    At(usize),
    /// The options end without it.
    Absent,
    /// The options are malformed, or longer than scanned, before it.
    Unreadable,
}

/// Where the option of `kind`, `len` bytes long, is among a segment's
/// options; `byte(i)` is the options' i-th byte, None past their end. One
/// search that stops at its option: the verifier follows every path
/// through such a loop, and a pass that went on recording every option
/// has too many.
#[inline(always)]
#[must_use]
pub fn find_option(byte: &impl Fn(usize) -> Option<u8>, kind: u8, len: u8) -> TcpOption {
    let mut at = 0;
    for _ in 0..SCANNED_OPTIONS {
        let Some(found) = byte(at) else {
            return TcpOption::Absent;
        };
        if found == KIND_END {
            return TcpOption::Absent;
        }
        if found == KIND_NOP {
            at += 1;
            continue;
        }
        let Some(found_len) = byte(at + 1) else {
            return TcpOption::Unreadable;
        };
        if found == kind && found_len == len {
            return TcpOption::At(at);
        }
        if found_len < 2 {
            return TcpOption::Unreadable;
        }
        at += usize::from(found_len);
    }
    TcpOption::Unreadable
}

/// Whether TCP `flags` open a connection: SYN alone among SYN, ACK, RST, FIN.
#[inline(always)]
#[must_use]
pub const fn opens_connection(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

impl TcpHdr {
    pub const LEN: usize = 20;

    #[inline(always)]
    #[must_use]
    pub fn flags(&self) -> u8 {
        self.doff_flags[1]
    }

    /// A connection opening: SYN without ACK, RST or FIN (a SYN with either
    /// is invalid, RFC 9293 §3.10.7.1; conntrack too refuses it).
    #[inline(always)]
    #[must_use]
    pub fn is_syn(&self) -> bool {
        opens_connection(self.flags())
    }

    /// The header's length with options, from the data offset.
    #[inline(always)]
    #[must_use]
    pub fn header_len(&self) -> usize {
        usize::from(self.doff_flags[0] >> 4) * 4
    }

    /// Whether the data offset is sane for a segment of `l4_len` bytes.
    #[inline(always)]
    #[must_use]
    pub fn is_well_formed(&self, l4_len: usize) -> bool {
        let header_len = self.header_len();
        header_len >= Self::LEN && header_len <= l4_len
    }

    /// A segment that ends the connection in this direction.
    #[inline(always)]
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.flags() & (TCP_FIN | TCP_RST) != 0
    }
}

/// UDP header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

impl UdpHdr {
    pub const LEN: usize = 8;

    /// Whether the UDP length field fits the `l4_len` bytes the IP header announces.
    #[inline(always)]
    #[must_use]
    pub fn is_well_formed(&self, l4_len: usize) -> bool {
        let len = usize::from(u16::from_be(self.len));
        len >= Self::LEN && len <= l4_len
    }
}

/// ICMP header (RFC 792): type, code, checksum, and the type's four bytes
/// (for "fragmentation needed", the next hop's MTU in the second word).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: [u16; 2],
}

impl IcmpHdr {
    pub const LEN: usize = 8;

    /// An error that quotes the packet it is about: destination unreachable
    /// (fragmentation needed among them) or time exceeded.
    #[inline(always)]
    #[must_use]
    pub const fn is_error(&self) -> bool {
        self.kind == ICMP_DEST_UNREACH || self.kind == ICMP_TIME_EXCEEDED
    }
}

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable's code for "fragmentation needed and DF set".
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// The first eight bytes of the transport header an ICMP error quotes: the
/// ports, then UDP's length and checksum or TCP's sequence number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedPorts {
    pub source: u16,
    pub dest: u16,
    pub rest: [u16; 2],
}

impl QuotedPorts {
    pub const LEN: usize = 8;
}

/// The u32 whose memory holds the two words in order (network order value).
#[inline(always)]
#[must_use]
pub fn join_words(words: [u16; 2]) -> u32 {
    let [a, b] = words[0].to_ne_bytes();
    let [c, d] = words[1].to_ne_bytes();
    u32::from_ne_bytes([a, b, c, d])
}

/// Inverse of [`join_words`].
#[inline(always)]
#[must_use]
pub fn split_words(value: u32) -> [u16; 2] {
    let [a, b, c, d] = value.to_ne_bytes();
    [u16::from_ne_bytes([a, b]), u16::from_ne_bytes([c, d])]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version_ihl: u8, total_len: u16, frag: u16) -> Ipv4Hdr {
        Ipv4Hdr {
            version_ihl,
            tos: 0,
            tot_len: total_len.to_be(),
            id: 0,
            frag_off: frag.to_be(),
            ttl: 64,
            protocol: IPPROTO_TCP,
            check: 0,
            saddr: [0; 2],
            daddr: [0; 2],
        }
    }

    #[test]
    fn the_header_checksum_is_verified() {
        // A real header (RFC 1071's example is for bytes; this is a SYN's).
        let bytes = [
            0x45, 0, 0, 0x28, 0x12, 0x34, 0x40, 0, 0x40, 6, 0xd3, 0xc6, 198, 51, 100, 10, 198, 51, 100, 100,
        ];
        let word = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        let ip = Ipv4Hdr {
            version_ihl: bytes[0],
            tos: bytes[1],
            tot_len: word(2),
            id: word(4),
            frag_off: word(6),
            ttl: bytes[8],
            protocol: bytes[9],
            check: word(10),
            saddr: [word(12), word(14)],
            daddr: [word(16), word(18)],
        };
        assert!(ip.checksum_ok());
        assert!(!Ipv4Hdr {
            check: ip.check ^ 1,
            ..ip
        }
        .checksum_ok());
        assert!(!Ipv4Hdr { ttl: 63, ..ip }.checksum_ok());
    }

    #[test]
    fn only_a_plain_syn_opens_a_connection() {
        assert!(opens_connection(TCP_SYN));
        assert!(opens_connection(TCP_SYN | 0x08 | 0x80)); // PSH, CWR: harmless
        for invalid in [
            TCP_SYN | TCP_ACK,
            TCP_SYN | TCP_RST,
            TCP_SYN | TCP_FIN,
            TCP_ACK,
            0,
        ] {
            assert!(!opens_connection(invalid), "{invalid:#x}");
        }
    }

    #[test]
    fn unicast_is_told_from_broadcast_and_multicast_by_the_group_bit() {
        let to = |dst: [u8; 6]| EthHdr {
            dst,
            src: [2, 0, 0, 0, 0, 1],
            ether_type: ETH_P_IP,
        };
        assert!(to([0x02, 0, 0, 0, 0, 0x02]).is_unicast());
        assert!(to([0x52, 0x54, 0, 0x12, 0x34, 0x56]).is_unicast());
        assert!(!to([0xff; 6]).is_unicast(), "broadcast");
        assert!(
            !to([0x01, 0, 0x5e, 0, 0, 0x12]).is_unicast(),
            "IPv4 multicast (VRRP)"
        );
        assert!(!to([0x33, 0x33, 0, 0, 0, 1]).is_unicast(), "IPv6 multicast");
    }

    #[test]
    fn words_round_trip_keep_network_order() {
        let addr = u32::from_ne_bytes([192, 0, 2, 7]);
        assert_eq!(join_words(split_words(addr)), addr);
        assert_eq!(split_words(addr)[0].to_ne_bytes(), [192, 0]);
    }

    #[test]
    fn translatable_header_passes() {
        assert_eq!(header(0x45, 40, 0x4000).check_translatable(40), Ok(()));
    }

    #[test]
    fn defects_are_classified() {
        assert_eq!(
            header(0x65, 40, 0).check_translatable(40),
            Err(Ipv4Defect::Malformed)
        );
        assert_eq!(
            header(0x44, 40, 0).check_translatable(40),
            Err(Ipv4Defect::Malformed)
        );
        assert_eq!(
            header(0x45, 19, 0).check_translatable(40),
            Err(Ipv4Defect::Malformed)
        );
        assert_eq!(
            header(0x45, 41, 0).check_translatable(40),
            Err(Ipv4Defect::Malformed)
        );
        assert_eq!(
            header(0x46, 44, 0).check_translatable(44),
            Err(Ipv4Defect::Options)
        );
        assert_eq!(
            header(0x45, 40, 0x2000).check_translatable(40),
            Err(Ipv4Defect::Fragment)
        );
        assert_eq!(
            header(0x45, 40, 0x0001).check_translatable(40),
            Err(Ipv4Defect::Fragment)
        );
    }

    #[test]
    fn syn_and_closing_flags() {
        let mut tcp = TcpHdr {
            source: 0,
            dest: 0,
            seq: [0; 2],
            ack_seq: [0; 2],
            doff_flags: [0x50, TCP_SYN],
            window: 0,
            check: 0,
            urg_ptr: 0,
        };
        assert!(tcp.is_syn());
        tcp.doff_flags[1] = TCP_SYN | TCP_ACK;
        assert!(!tcp.is_syn());
        assert!(!tcp.is_closing());
        tcp.doff_flags[1] = TCP_RST | TCP_ACK;
        assert!(tcp.is_closing());
    }
}
