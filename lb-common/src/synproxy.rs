//! SYN cookies and the SYN proxy, pure enough to test on the host.
//!
//! Under a SYN flood (or always, if configured) the program answers a
//! service's SYNs itself, with a SYN-ACK whose sequence number is a cookie:
//! nothing is stored and no SNAT tuple is taken. Only a client that
//! answers with the cookie (its ACK acknowledges cookie + 1, RFC 4987 §3.6)
//! gets a connection to a backend: the program turns that ACK into the SYN
//! the client sent, the backend's SYN-ACK into the ACK that completes its
//! handshake, and from then on shifts the acknowledgement numbers (and SACK
//! towards the backend and the sequence numbers towards the client by the
//! difference between the backend's ISN and the cookie.
//!
//! The cookie is a keyed hash (SipHash-2-4, as the kernel's own cookies)
//! of the connection's 4-tuple, the client's ISN, a time period and the
//! SYN's options, with the options carried in its low bits: the MSS (four
//! values, as Linux encodes it) and the window scale. Linux keeps the
//! window scale only in a TCP timestamp; carrying it in the cookie keeps
//! window scaling for connections opened by cookie, with a 24-bit hash as
//! Linux's (a blind attacker guesses it once in 16 million tries, and
//! gains one connection to a backend: what any client can have).
//! Timestamps and SACK are not offered on such connections (as Linux's
//! cookies without timestamps): the backend's timestamps and the SACK
//! blocks towards it would have to be translated too.

use crate::{
    csum::ChecksumDelta,
    headers::{
        find_option, join_words, split_words, TcpHdr, TcpOption, KIND_MSS, KIND_WINDOW_SCALE, TCP_ACK,
        TCP_SYN,
    },
    maps::FlowKey,
    nat::NewSegment,
};

/// The MSS values a cookie can carry (Linux's table for IPv4): the
/// client's MSS is rounded down to one of them.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// The MSS announced to clients on the backends' behalf.
pub const ADVERTISED_MSS: u16 = 1460;
/// The window scale announced to clients on the backends' behalf (Linux's
/// with its default buffers). A backend that announces another has its
/// windows rescaled towards the client.
pub const ADVERTISED_WINDOW_SCALE: u8 = 7;
/// The window announced in the cookie SYN-ACK (a SYN's is never scaled).
pub const ADVERTISED_WINDOW: u16 = 65_535;
/// A cookie's time period: 2^36 ns, about 69 s. A cookie is accepted in
/// its period and the next (69-137 s, like Linux's two minutes).
pub const COOKIE_PERIOD_SHIFT: u32 = 36;
/// A TCP header with the options of a SYN or SYN-ACK the program builds
/// (MSS, window scale, SACK-permitted, padded with NOPs).
pub const SYN_OPTIONS_LEN: usize = 12;

const INFO_BITS: u32 = 8;
/// `SynOptions::window_scale` without the option.
pub const NO_WINDOW_SCALE: u8 = 15;

/// What a SYN's options announce, as far as the SYN proxy keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: u16,
    /// 0-14, or NO_WINDOW_SCALE without the option. Not an Option: in XDP
    /// LLVM may load the payload of a None, and the verifier refuses a
    /// read of a stack slot that held a pointer on another path.
    pub window_scale: u8,
    pub sack_permitted: bool,
}

impl SynOptions {
    /// The shift the window is scaled by: 0 without the option.
    #[inline(always)]
    #[must_use]
    pub const fn shift(&self) -> u8 {
        if self.window_scale == NO_WINDOW_SCALE {
            0
        } else {
            self.window_scale
        }
    }
}

/// The key of SYN cookies: random per daemon start, in the settings.
pub type CookieKey = [u64; 2];

/// SipHash-2-4 of three 64-bit words (24 bytes, little-endian), with key
/// `key`: the same value as any SipHash-2-4 of those bytes.
#[inline(always)]
#[must_use]
pub fn siphash24(key: &CookieKey, message: [u64; 3]) -> u64 {
    // Four scalars rather than an array: in XDP they stay in registers.
    let mut v0 = key[0] ^ 0x736f_6d65_7073_6575;
    let mut v1 = key[1] ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = key[0] ^ 0x6c79_6765_6e65_7261;
    let mut v3 = key[1] ^ 0x7465_6462_7974_6573;
    macro_rules! round {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13) ^ v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16) ^ v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21) ^ v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17) ^ v2;
            v2 = v2.rotate_left(32);
        };
    }
    macro_rules! compress {
        ($block:expr) => {
            let block = $block;
            v3 ^= block;
            round!();
            round!();
            v0 ^= block;
        };
    }
    compress!(message[0]);
    compress!(message[1]);
    compress!(message[2]);
    // The last block holds only the length (24 bytes, no leftover bytes).
    compress!(24_u64 << 56);
    v2 ^= 0xff;
    round!();
    round!();
    round!();
    round!();
    v0 ^ v1 ^ v2 ^ v3
}

/// The options' low bits of a cookie (without the period).
#[inline(always)]
fn option_bits(options: &SynOptions) -> u32 {
    let mut mss_index = 0;
    let mut i = 1;
    while i < MSS_TABLE.len() {
        if options.mss >= MSS_TABLE[i] {
            mss_index = i as u32;
        }
        i += 1;
    }
    let scale = u32::from(options.window_scale.min(NO_WINDOW_SCALE));
    mss_index | scale << 2
}

#[inline(always)]
fn cookie_hash(key: &CookieKey, client: &FlowKey, client_isn: u32, period: u64, info: u32) -> u32 {
    let hash = siphash24(
        key,
        [
            u64::from(client.src_addr) << 32 | u64::from(client.dst_addr),
            u64::from(client.src_port) << 48 | u64::from(client.dst_port) << 32 | u64::from(client_isn),
            period << 16 | u64::from(info),
        ],
    );
    ((hash >> 32) as u32) & !((1 << INFO_BITS) - 1)
}

/// The cookie for a SYN with key `client` (as it arrived), sequence number
/// `client_isn` and options `options`, at time `now_ns`.
#[inline(always)]
#[must_use]
pub fn make_cookie(
    key: &CookieKey,
    client: &FlowKey,
    client_isn: u32,
    now_ns: u64,
    options: &SynOptions,
) -> u32 {
    let period = now_ns >> COOKIE_PERIOD_SHIFT;
    let info = option_bits(options) | ((period & 3) as u32) << 6;
    cookie_hash(key, client, client_isn, period, info) | info
}

/// The options of the SYN that `cookie` was made for, if it was made for
/// a SYN from `client` with sequence number `client_isn` in this period or
/// the previous one.
#[inline(always)]
#[must_use]
pub fn check_cookie(
    key: &CookieKey,
    client: &FlowKey,
    client_isn: u32,
    now_ns: u64,
    cookie: u32,
) -> Option<SynOptions> {
    let now_period = now_ns >> COOKIE_PERIOD_SHIFT;
    let info = cookie & ((1 << INFO_BITS) - 1);
    let age = now_period.wrapping_sub(u64::from(info >> 6)) & 3;
    if age > 1 || age > now_period {
        return None;
    }
    let period = now_period - age;
    if cookie_hash(key, client, client_isn, period, info) | info != cookie {
        return None;
    }
    Some(cookie_options(cookie))
}

/// The SYN options a cookie carries (whether it is valid is
/// `check_cookie`'s to say).
#[inline(always)]
#[must_use]
pub const fn cookie_options(cookie: u32) -> SynOptions {
    SynOptions {
        mss: MSS_TABLE[(cookie & 3) as usize],
        window_scale: ((cookie >> 2) & 15) as u8,
        sack_permitted: false,
    }
}

/// Reads a SYN's MSS and window scale options; `byte(i)` is the options'
/// i-th byte, None past their end. Without an MSS option a peer takes 536
/// (RFC 9293 §3.7.1); a malformed option list ends the search.
/// SACK-permitted is not read: connections opened by cookie go without.
///
/// Two searches that each stop at their option, rather than one pass that
/// records everything: the verifier follows every path through such a
/// loop, and a pass that goes on after each option has too many.
#[inline(always)]
#[must_use]
pub fn parse_syn_options(byte: impl Fn(usize) -> Option<u8>) -> SynOptions {
    let mss = match find_option(&byte, KIND_MSS, 4) {
        TcpOption::At(at) => match (byte(at + 2), byte(at + 3)) {
            (Some(high), Some(low)) => u16::from_be_bytes([high, low]),
            _ => MSS_TABLE[0],
        },
        TcpOption::Absent | TcpOption::Unreadable => MSS_TABLE[0],
    };
    let scale = match find_option(&byte, KIND_WINDOW_SCALE, 3) {
        TcpOption::At(at) => byte(at + 2),
        TcpOption::Absent | TcpOption::Unreadable => None,
    };
    let window_scale = match scale {
        // RFC 7323 §2.3: a larger shift is taken as 14.
        Some(scale) => scale.min(crate::conntrack::MAX_WINDOW_SCALE),
        None => NO_WINDOW_SCALE,
    };
    SynOptions {
        mss,
        window_scale,
        sack_permitted: false,
    }
}

/// The option bytes of a SYN or SYN-ACK announcing `options` (absent ones
/// as NOPs, so the length is fixed).
#[inline(always)]
#[must_use]
pub fn syn_option_bytes(options: &SynOptions) -> [u8; SYN_OPTIONS_LEN] {
    let [mss_high, mss_low] = options.mss.to_be_bytes();
    let scale = if options.window_scale == NO_WINDOW_SCALE {
        [1, 1, 1, 1]
    } else {
        [1, 3, 3, options.window_scale]
    };
    let sack = if options.sack_permitted {
        [1, 1, 4, 2]
    } else {
        [1, 1, 1, 1]
    };
    [
        2, 4, mss_high, mss_low, scale[0], scale[1], scale[2], scale[3], sack[0], sack[1], sack[2], sack[3],
    ]
}

/// The cookie SYN-ACK answering a SYN with key `client` and sequence number
/// `client_isn`: from the VIP, acknowledging the SYN.
#[inline(always)]
#[must_use]
pub fn cookie_syn_ack(client: &FlowKey, client_isn: u32, cookie: u32) -> NewSegment {
    NewSegment {
        src_addr: client.dst_addr,
        dst_addr: client.src_addr,
        src_port: client.dst_port,
        dst_port: client.src_port,
        seq: cookie,
        ack: client_isn.wrapping_add(1),
        flags: TCP_SYN | TCP_ACK,
        window: ADVERTISED_WINDOW,
    }
}

/// What the cookie SYN-ACK announces for a client whose SYN announced
/// `client`: the backends' MSS, and window scaling only if the client
/// offered it (RFC 7323: never offered unasked); never SACK (see above).
#[inline(always)]
#[must_use]
pub const fn advertised_options(client: &SynOptions) -> SynOptions {
    SynOptions {
        mss: ADVERTISED_MSS,
        window_scale: if client.window_scale == NO_WINDOW_SCALE {
            NO_WINDOW_SCALE
        } else {
            ADVERTISED_WINDOW_SCALE
        },
        sack_permitted: false,
    }
}

/// A window field scaled by `from` as the same window scaled by `to`
/// (rounded down; at most the field's largest value).
#[inline(always)]
#[must_use]
pub fn rescale_window(window: u16, from: u8, to: u8) -> u16 {
    let bytes = u64::from(window) << (from & 15);
    let field = bytes >> (to & 15);
    if field > u64::from(u16::MAX) {
        u16::MAX
    } else {
        field as u16
    }
}

/// Adds `seq_shift` to the segment's sequence number and, when it carries
/// an ACK, `ack_shift` to its acknowledgement number; `window`, if given,
/// replaces the window field. Returns the checksum change (the caller adds
/// that of any SACK blocks and applies it).
#[inline(always)]
pub fn shift_segment(tcp: &mut TcpHdr, seq_shift: u32, ack_shift: u32, window: Option<u16>) -> ChecksumDelta {
    let mut delta = ChecksumDelta::new();
    if seq_shift != 0 {
        let seq = u32::from_be(join_words(tcp.seq)).wrapping_add(seq_shift);
        let new = split_words(seq.to_be());
        delta = delta.replace32(tcp.seq, new);
        tcp.seq = new;
    }
    if ack_shift != 0 && tcp.flags() & TCP_ACK != 0 {
        let ack = u32::from_be(join_words(tcp.ack_seq)).wrapping_add(ack_shift);
        let new = split_words(ack.to_be());
        delta = delta.replace32(tcp.ack_seq, new);
        tcp.ack_seq = new;
    }
    if let Some(window) = window {
        let new = window.to_be();
        delta = delta.replace16(tcp.window, new);
        tcp.window = new;
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum::sum_bytes;
    use crate::{
        headers::{Ipv4Hdr, IPPROTO_TCP},
        nat::write_segment,
    };
    use siphasher::sip::SipHasher24;
    use std::hash::Hasher;

    const KEY: CookieKey = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    fn client() -> FlowKey {
        FlowKey {
            src_addr: u32::from_ne_bytes([10, 1, 2, 3]),
            dst_addr: u32::from_ne_bytes([198, 51, 100, 100]),
            src_port: 40_000_u16.to_be(),
            dst_port: 3000_u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        }
    }

    const OPTIONS: SynOptions = SynOptions {
        mss: 1460,
        window_scale: 7,
        sack_permitted: true,
    };
    /// What a cookie keeps of OPTIONS.
    const KEPT: SynOptions = SynOptions {
        sack_permitted: false,
        ..OPTIONS
    };
    const NOW: u64 = 5_000 * 1_000_000_000;
    const PERIOD_NS: u64 = 1 << COOKIE_PERIOD_SHIFT;

    #[test]
    fn siphash_matches_the_reference_implementation() {
        for message in [[0, 0, 0], [1, 2, 3], [u64::MAX, 0x0123_4567_89ab_cdef, 42]] {
            let mut reference = SipHasher24::new_with_keys(KEY[0], KEY[1]);
            for word in message {
                reference.write(&word.to_le_bytes());
            }
            assert_eq!(siphash24(&KEY, message), reference.finish(), "{message:x?}");
        }
    }

    #[test]
    fn a_cookie_gives_back_the_syn_options() {
        for options in [
            KEPT,
            SynOptions {
                mss: 1440,
                window_scale: NO_WINDOW_SCALE,
                sack_permitted: false,
            },
            SynOptions {
                mss: 536,
                window_scale: 14,
                sack_permitted: false,
            },
            SynOptions {
                mss: 1300,
                window_scale: 0,
                sack_permitted: false,
            },
        ] {
            let cookie = make_cookie(&KEY, &client(), 1000, NOW, &options);
            assert_eq!(check_cookie(&KEY, &client(), 1000, NOW, cookie), Some(options));
        }
    }

    #[test]
    fn mss_rounds_down_to_the_table() {
        let options = SynOptions { mss: 1452, ..OPTIONS };
        let cookie = make_cookie(&KEY, &client(), 1000, NOW, &options);
        let back = check_cookie(&KEY, &client(), 1000, NOW, cookie).map(|o| o.mss);
        assert_eq!(back, Some(1440));
        let tiny = make_cookie(&KEY, &client(), 1000, NOW, &SynOptions { mss: 100, ..OPTIONS });
        assert_eq!(
            check_cookie(&KEY, &client(), 1000, NOW, tiny).map(|o| o.mss),
            Some(536)
        );
    }

    #[test]
    fn a_cookie_is_bound_to_the_tuple_the_isn_and_the_key() {
        let cookie = make_cookie(&KEY, &client(), 1000, NOW, &OPTIONS);
        let other_port = FlowKey {
            src_port: 40_001_u16.to_be(),
            ..client()
        };
        let other_vip = FlowKey {
            dst_addr: u32::from_ne_bytes([198, 51, 100, 101]),
            ..client()
        };
        assert_eq!(check_cookie(&KEY, &other_port, 1000, NOW, cookie), None);
        assert_eq!(check_cookie(&KEY, &other_vip, 1000, NOW, cookie), None);
        assert_eq!(check_cookie(&KEY, &client(), 1001, NOW, cookie), None);
        assert_eq!(check_cookie(&[1, 2], &client(), 1000, NOW, cookie), None);
    }

    #[test]
    fn tampered_option_bits_are_refused() {
        let cookie = make_cookie(&KEY, &client(), 1000, NOW, &OPTIONS);
        for bit in 0..32 {
            assert_eq!(
                check_cookie(&KEY, &client(), 1000, NOW, cookie ^ (1 << bit)),
                None,
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_cookie_expires_after_its_period_and_the_next() {
        let start = NOW - NOW % PERIOD_NS;
        let cookie = make_cookie(&KEY, &client(), 1000, start, &OPTIONS);
        for (later, valid) in [
            (0, true),
            (PERIOD_NS - 1, true),
            (PERIOD_NS, true),
            (2 * PERIOD_NS - 1, true),
            (2 * PERIOD_NS, false),
            (3 * PERIOD_NS, false),
            (4 * PERIOD_NS, false),
            (5 * PERIOD_NS, false),
        ] {
            let back = check_cookie(&KEY, &client(), 1000, start + later, cookie);
            assert_eq!(back.is_some(), valid, "{later} ns later");
        }
        // Nor is one from the future (a clock gone back) accepted.
        assert_eq!(check_cookie(&KEY, &client(), 1000, start - 1, cookie), None);
    }

    #[test]
    fn random_acks_almost_never_pass() {
        let mut state = 0x9e37_79b9_u32;
        let mut passed = 0;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if check_cookie(&KEY, &client(), 1000, NOW, state).is_some() {
                passed += 1;
            }
        }
        // 2^-24 per try after the 8 option bits: about 0.01 expected.
        assert!(passed <= 2, "{passed} random cookies passed");
    }

    fn options_reader(bytes: &[u8]) -> impl Fn(usize) -> Option<u8> + '_ {
        |at| bytes.get(at).copied()
    }

    #[test]
    fn syn_options_are_read_as_linux_and_macos_send_them() {
        // Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
        let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7];
        assert_eq!(parse_syn_options(options_reader(&linux)), KEPT);
        // macOS: MSS, NOP, WS, NOP, NOP, TS, SACK-permitted, EOL.
        let macos = [
            2, 4, 5, 0xac, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0,
        ];
        let read = parse_syn_options(options_reader(&macos));
        assert_eq!(
            read,
            SynOptions {
                mss: 1452,
                window_scale: 6,
                sack_permitted: false
            }
        );
        assert_eq!(
            parse_syn_options(options_reader(&[])),
            SynOptions {
                mss: 536,
                window_scale: NO_WINDOW_SCALE,
                sack_permitted: false
            }
        );
        // A malformed option ends the scan with what came before it.
        let broken = [2, 4, 5, 0xb4, 3, 0, 3, 7];
        assert_eq!(
            parse_syn_options(options_reader(&broken)),
            SynOptions {
                mss: 1460,
                window_scale: NO_WINDOW_SCALE,
                sack_permitted: false
            }
        );
        // An over-large shift is taken as 14.
        let large = [1, 3, 3, 20];
        assert_eq!(parse_syn_options(options_reader(&large)).window_scale, 14);
    }

    #[test]
    fn built_options_read_back() {
        for options in [
            KEPT,
            SynOptions {
                mss: 536,
                window_scale: NO_WINDOW_SCALE,
                sack_permitted: false,
            },
        ] {
            let bytes = syn_option_bytes(&options);
            assert_eq!(parse_syn_options(options_reader(&bytes)), options);
        }
    }

    fn segment_checksum_ok(ip: &Ipv4Hdr, tcp: &TcpHdr, options: &[u8]) -> bool {
        let mut bytes = std::vec::Vec::new();
        bytes.extend_from_slice(&ip.saddr[0].to_ne_bytes());
        bytes.extend_from_slice(&ip.saddr[1].to_ne_bytes());
        bytes.extend_from_slice(&ip.daddr[0].to_ne_bytes());
        bytes.extend_from_slice(&ip.daddr[1].to_ne_bytes());
        bytes.extend_from_slice(&[0, IPPROTO_TCP]);
        bytes.extend_from_slice(&((TcpHdr::LEN + options.len()) as u16).to_be_bytes());
        // SAFETY: TcpHdr is repr(C) plain integers, 20 bytes.
        let header: [u8; 20] = unsafe { core::mem::transmute(*tcp) };
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(options);
        sum_bytes(0, &bytes) as u16 == 0xffff
    }

    fn blank() -> (Ipv4Hdr, TcpHdr) {
        // SAFETY: plain integer structs.
        unsafe { (core::mem::zeroed(), core::mem::zeroed()) }
    }

    #[test]
    fn built_segments_have_valid_checksums() {
        let (mut ip, mut tcp) = blank();
        let options = syn_option_bytes(&OPTIONS);
        let segment = cookie_syn_ack(&client(), 0xffff_ffff, 0x1234_5678);
        write_segment(&mut ip, &mut tcp, Some(&options), &segment);
        assert!(ip.checksum_ok());
        assert!(segment_checksum_ok(&ip, &tcp, &options));
        assert_eq!(usize::from(ip.total_len()), 52);
        assert_eq!(tcp.header_len(), 32);
        assert_eq!(tcp.flags(), TCP_SYN | TCP_ACK);
        assert_eq!(u32::from_be(join_words(tcp.ack_seq)), 0, "the ISN + 1 wraps");
        assert_eq!((ip.src(), ip.dst()), (client().dst_addr, client().src_addr));

        let ack = NewSegment {
            flags: TCP_ACK,
            ..segment
        };
        write_segment(&mut ip, &mut tcp, None, &ack);
        assert!(ip.checksum_ok());
        assert!(segment_checksum_ok(&ip, &tcp, &[]));
        assert_eq!(tcp.header_len(), 20);
    }

    #[test]
    fn shifted_segments_keep_valid_checksums() {
        let (mut ip, mut tcp) = blank();
        let segment = NewSegment {
            flags: TCP_ACK,
            ..cookie_syn_ack(&client(), 77, 0xfff0_0000)
        };
        write_segment(&mut ip, &mut tcp, None, &segment);
        let delta = shift_segment(&mut tcp, 0x20_0000, 0u32.wrapping_sub(5), Some(300));
        tcp.check = delta.apply(tcp.check);
        assert!(segment_checksum_ok(&ip, &tcp, &[]));
        assert_eq!(u32::from_be(join_words(tcp.seq)), 0x0010_0000);
        assert_eq!(u32::from_be(join_words(tcp.ack_seq)), 73);
        assert_eq!(u16::from_be(tcp.window), 300);

        // Without ACK the acknowledgement number is left alone.
        let reset = NewSegment {
            flags: crate::headers::TCP_RST,
            ack: 73,
            ..segment
        };
        write_segment(&mut ip, &mut tcp, None, &reset);
        let delta = shift_segment(&mut tcp, 1, 1, None);
        tcp.check = delta.apply(tcp.check);
        assert_eq!(u32::from_be(join_words(tcp.ack_seq)), 73);
        assert!(segment_checksum_ok(&ip, &tcp, &[]));
    }

    #[test]
    fn windows_rescale() {
        assert_eq!(rescale_window(1000, 7, 7), 1000);
        assert_eq!(rescale_window(1000, 9, 7), 4000);
        assert_eq!(rescale_window(1000, 0, 7), 7);
        assert_eq!(rescale_window(60_000, 14, 7), u16::MAX);
        assert_eq!(rescale_window(u16::MAX, 0, 0), u16::MAX);
    }

    #[test]
    fn the_client_is_told_only_what_it_offered() {
        let plain = SynOptions {
            mss: 1400,
            window_scale: NO_WINDOW_SCALE,
            sack_permitted: false,
        };
        assert_eq!(
            advertised_options(&plain),
            SynOptions {
                mss: ADVERTISED_MSS,
                window_scale: NO_WINDOW_SCALE,
                sack_permitted: false
            }
        );
        assert_eq!(
            advertised_options(&OPTIONS),
            SynOptions {
                mss: ADVERTISED_MSS,
                window_scale: ADVERTISED_WINDOW_SCALE,
                sack_permitted: false
            }
        );
    }
}
