//! The XDP load balancer: full NAT with per-connection round robin.
//!
//! Pipeline: parse -> look up the connection -> (new connection: find the
//! service, pick a backend, allocate a SNAT port) -> rewrite -> forward.
//! Every packet's fate is counted once, by reason, at the entry point.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod conntrack;
mod forward;
mod icmp;
mod maps;
mod parse;
mod stats;
mod synproxy;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    conntrack::{superseded, window_scale, Segment, REFRESH_INTERVAL_NS},
    headers::{
        join_words, opens_connection, EthHdr, Ipv4Defect, Ipv4Hdr, TcpHdr, UdpHdr, ETH_P_IP, IPPROTO_TCP,
        IPPROTO_UDP, TCP_SYN,
    },
    limits::MAX_INTERFACES,
    maps::{
        FlowKey, ServiceKey, DIRECTION_FORWARD, PROXY_PENDING, SERVICE_RESET_WHEN_EMPTY,
        SERVICE_SYN_COOKIES_NEVER, SETTINGS_READY,
    },
    nat::{self, L4},
    stats::Counter,
};

use crate::{
    conntrack::Opening,
    forward::{NextHopCache, Route},
    maps::{INTERFACE_MACS, PEER, SERVICES, SETTINGS, VIP_ADDRS},
};

/// What to do with a packet and why.
pub struct Outcome {
    action: u32,
    counter: Counter,
}

impl Outcome {
    #[inline(always)]
    pub(crate) const fn new(action: u32, counter: Counter) -> Self {
        Self { action, counter }
    }
    #[inline(always)]
    pub(crate) const fn pass(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_PASS, counter)
    }
    #[inline(always)]
    pub(crate) const fn drop(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_DROP, counter)
    }
}

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    // ICMP goes its own way from the start (see `icmp_error`).
    let outcome = match icmp::icmp_frame(&ctx) {
        Some(ip) => icmp::icmp_error(&ctx, ip),
        None => process(&ctx),
    };
    stats::count(outcome.counter);
    outcome.action
}

pub(crate) const IP_OFFSET: usize = EthHdr::LEN;
pub(crate) const L4_OFFSET: usize = EthHdr::LEN + Ipv4Hdr::LEN;

#[inline(always)]
fn process(ctx: &XdpContext) -> Outcome {
    let Some(settings) = SETTINGS.get(0) else {
        return Outcome::pass(Counter::PassNotReady);
    };
    if settings.flags & SETTINGS_READY == 0 {
        return Outcome::pass(Counter::PassNotReady);
    }
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Outcome::drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { &*eth };
    if let Some(counter) = not_addressed_here(ctx, eth) {
        return Outcome::pass(counter);
    }
    if eth.ether_type != ETH_P_IP {
        return Outcome::pass(Counter::PassNotIpv4);
    }
    let Some(ip) = parse::ptr_at::<Ipv4Hdr>(ctx, IP_OFFSET) else {
        // Cut inside the IPv4 header: no destination to judge it by; the
        // kernel drops it.
        return Outcome::pass(Counter::PassUntranslatable);
    };
    // SAFETY: bounds-checked by ptr_at; the frame is ours for the program's run.
    let ip = unsafe { &mut *ip };
    let proto = ip.protocol;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Outcome::pass(Counter::PassNotService);
    }
    if let Err(defect) = ip.check_translatable(parse::bytes_from(ctx, IP_OFFSET)) {
        return untranslatable(ip, defect);
    }
    let l4_len = usize::from(ip.total_len()) - Ipv4Hdr::LEN;

    // Both TCP and UDP start with the two ports, which is all the lookup needs.
    let (l4, src_port, dst_port, segment) = if proto == IPPROTO_TCP {
        let Some(tcp) = parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET) else {
            return truncated_l4(ip);
        };
        // SAFETY: bounds-checked by ptr_at.
        let tcp = unsafe { &mut *tcp };
        if !tcp.is_well_formed(l4_len) {
            return truncated_l4(ip);
        }
        let segment = Segment {
            flags: tcp.flags(),
            seq: u32::from_be(join_words(tcp.seq)),
            ack: u32::from_be(join_words(tcp.ack_seq)),
            window: u16::from_be(tcp.window),
            payload_len: (l4_len - tcp.header_len()) as u32,
        };
        let (s, d) = (tcp.source, tcp.dest);
        (L4::Tcp(tcp), s, d, Some(segment))
    } else {
        let Some(udp) = parse::ptr_at::<UdpHdr>(ctx, L4_OFFSET) else {
            return truncated_l4(ip);
        };
        // SAFETY: bounds-checked by ptr_at.
        let udp = unsafe { &mut *udp };
        if !udp.is_well_formed(l4_len) {
            return truncated_l4(ip);
        }
        let (s, d) = (udp.source, udp.dest);
        (L4::Udp(udp), s, d, None)
    };
    let opens_connection = segment.is_some_and(|s| opens_connection(s.flags));

    let key = FlowKey {
        src_addr: ip.src(),
        dst_addr: ip.dst(),
        src_port,
        dst_port,
        proto,
        _pad: [0; 3],
    };
    // Coarse time (a tick's resolution) is enough for timeouts of seconds,
    // and much cheaper to read in a VM.
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };

    if let Some(flow) = maps::FLOWS.get_ptr_mut(&key) {
        // SAFETY: a live map value; concurrent writers only touch fields
        // whose torn values are harmless (see Flow).
        let current = unsafe { *flow };
        let mut reopen = false;
        if current.proxy == PROXY_PENDING {
            if let Some(segment) = &segment {
                match synproxy::pending(ctx, &key, flow, &current, segment, now) {
                    synproxy::Pending::Done(outcome) => return outcome,
                    synproxy::Pending::Reopen => reopen = true,
                    synproxy::Pending::Ordinary => {}
                }
            }
        }
        if !reopen && !superseded(&current, proto, opens_connection, now, settings) {
            let stale = now.saturating_sub(current.last_seen_ns) > REFRESH_INTERVAL_NS;
            if stale {
                if let Err(counter) = conntrack::heal(&key, &current) {
                    return Outcome::drop(counter);
                }
            }
            if let Some(segment) = &segment {
                let scale = || syn_window_scale(ctx, segment);
                if let Err(counter) = conntrack::track_tcp(&key, flow, &current, segment, scale, now) {
                    return Outcome::drop(counter);
                }
            } else if stale {
                conntrack::refresh_udp(&key, flow, &current, now);
            }
            let counter = if current.direction == DIRECTION_FORWARD {
                Counter::ForwardEstablished
            } else {
                Counter::ForwardReply
            };
            let cache = NextHopCache {
                cached: current.next_hop,
                mtu: current.next_hop_mtu,
                fresh: !stale,
                flow,
            };
            stats::count_traffic(
                u32::from(current.service_id),
                current.backend_id,
                current.direction,
                u64::from(ip.total_len()),
                false,
            );
            let shift = synproxy::Shift::of(&current);
            return translate(ctx, ip, l4, &current.rewrite, counter, Some(cache), shift);
        }
        if current.direction == DIRECTION_FORWARD {
            conntrack::close(&key, &current, now);
        }
    }

    let service_key = ServiceKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto,
        _pad: 0,
    };
    // SAFETY: services are replaced whole by userspace, never written in place.
    let Some(service) = (unsafe { SERVICES.get(&service_key) }) else {
        return Outcome::pass(Counter::PassNotService);
    };
    // A segment without a connection: the client's answer to a SYN cookie
    // opens one; anything else belongs to a connection we do not know (the
    // VRRP peer's from before the floating IP moved here, or from before a
    // restart).
    let mut answer = None;
    if let Some(segment) = segment.as_ref().filter(|_| !opens_connection) {
        answer = synproxy::check_answer(&key, segment, service, settings, now);
        if answer.is_none() {
            return hand_off(ctx);
        }
    }
    let by_cookie = answer.is_some();
    if ip.ttl <= 1 {
        return Outcome::drop(Counter::DropTtlExceeded);
    }
    // Nothing opens a connection (a SNAT tuple) or is answered on the
    // strength of a corrupted header.
    if !ip.checksum_ok() {
        return Outcome::drop(Counter::DropBadChecksum);
    }
    if service.slot_count == 0 {
        stats::count_refused(service.id);
        return match l4 {
            // The client of a cookie believes it is connected: its data
            // finds no backend and it times out, as behind a full pool.
            L4::Tcp(_) if by_cookie => Outcome::drop(Counter::DropNoBackend),
            L4::Tcp(_) if service.flags & SERVICE_RESET_WHEN_EMPTY != 0 => refuse(ctx, ip),
            _ => Outcome::drop(Counter::DropNoBackend),
        };
    }
    if let Some(segment) = &segment {
        if !by_cookie && synproxy::cookies_active(service, now) {
            return synproxy::answer_syn(ctx, &key, segment, settings, now);
        }
    }
    let opening = match (&segment, answer) {
        (_, Some(opening)) => opening,
        (Some(segment), None) => Opening {
            seq_next: segment.end(),
            window: u32::from(segment.window),
            window_scale: syn_window_scale(ctx, segment),
            by_cookie: None,
        },
        _ => Opening {
            seq_next: 0,
            window: 0,
            window_scale: 0,
            by_cookie: None,
        },
    };
    let new = conntrack::NewConnection {
        ctx,
        key: &key,
        service,
        settings,
        now_ns: now,
    };
    match conntrack::open(&new, &opening) {
        Ok(opened) => {
            stats::count_traffic(
                service.id,
                opened.backend_id,
                DIRECTION_FORWARD,
                u64::from(ip.total_len()),
                true,
            );
            if let Some(by_cookie) = &opening.by_cookie {
                return synproxy::send_syn(
                    ctx,
                    &opened.rewrite,
                    opening.seq_next.wrapping_sub(1),
                    by_cookie.cookie,
                    opening.window,
                    Counter::ForwardNewByCookie,
                );
            }
            let counter = if opened.evicted {
                Counter::ForwardNewEvicting
            } else {
                Counter::ForwardNew
            };
            translate(ctx, ip, l4, &opened.rewrite, counter, None, None)
        }
        // No tuple left: this SYN is answered with a cookie instead (the
        // search has put the service under pressure).
        Err(Counter::DropNatPortsExhausted)
            if !by_cookie && service.flags & SERVICE_SYN_COOKIES_NEVER == 0 =>
        {
            match &segment {
                Some(segment) => synproxy::answer_syn(ctx, &key, segment, settings, now),
                None => Outcome::drop(Counter::DropNatPortsExhausted),
            }
        }
        Err(counter) => Outcome::drop(counter),
    }
}

/// The window scale a SYN or SYN-ACK announces (0 without the option, or
/// for any other segment).
#[inline(always)]
pub(crate) fn syn_window_scale(ctx: &XdpContext, segment: &Segment) -> u8 {
    if segment.flags & TCP_SYN == 0 {
        return 0;
    }
    let Some(tcp) = parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET) else {
        return 0;
    };
    // SAFETY: bounds-checked by ptr_at.
    let header_len = unsafe { (*tcp).header_len() };
    window_scale(parse::tcp_option_bytes(ctx, L4_OFFSET, header_len))
}

/// Why a frame is not this node's to handle, if it is not. A unicast frame
/// for another MAC (a switch flooded it here, e.g. the master's frames
/// reaching the backup; or the interface is promiscuous) goes to the kernel
/// untouched, which drops it: translating it would make two nodes forward
/// the same packet. Broadcast and multicast frames go on. A unicast frame
/// on an interface whose MAC userspace has not written (it writes every
/// interface's before marking the settings ready) is passed as not ready.
/// Segments handed to us by the VRRP peer arrive addressed to our MAC.
#[inline(always)]
pub(crate) fn not_addressed_here(ctx: &XdpContext, eth: &EthHdr) -> Option<Counter> {
    if !eth.is_unicast() {
        return None;
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    // A bounded scan; slot 0 or 1 on the usual two interfaces.
    for slot in 0..MAX_INTERFACES {
        let Some(entry) = INTERFACE_MACS.get(slot) else {
            break;
        };
        if entry.ifindex == 0 {
            break; // the end of the table
        }
        if entry.ifindex == ifindex {
            return (entry.mac != eth.dst).then_some(Counter::PassOtherHost);
        }
    }
    Some(Counter::PassNotReady)
}

/// Sends an unknown segment on to the VRRP peer, unchanged but for the
/// MACs; without a peer (or from it) the kernel answers it with a reset.
#[inline(always)]
fn hand_off(ctx: &XdpContext) -> Outcome {
    let Some(peer) = PEER.get(0) else {
        return Outcome::pass(Counter::PassTcpNoFlow);
    };
    if peer.enabled == 0 || peer.ifindex != ctx.ingress_ifindex() as u32 {
        return Outcome::pass(Counter::PassTcpNoFlow);
    }
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Outcome::drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { &mut *eth };
    // Not sent to us (broadcast or multicast: a unicast frame for another
    // MAC never gets here), or from the peer, which does not know it either:
    // never send it back.
    if eth.dst != peer.own_mac || eth.src == peer.peer_mac {
        return Outcome::pass(Counter::PassTcpNoFlow);
    }
    eth.src = peer.own_mac;
    eth.dst = peer.peer_mac;
    // A redirect rather than XDP_TX, for veth: see forward.
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(peer.ifindex, 0) } as u32;
    Outcome::new(action, Counter::HandoffToPeer)
}

/// Answers a SYN with a RST+ACK from the VIP, sent back where it came from
/// with this interface's own MAC. Only a SYN whose TCP checksum is right
/// and that carries no data is answered (RFC 1122 §4.2.2.7; a SYN with data
/// to an empty pool is dropped).
#[inline(always)]
fn refuse(ctx: &XdpContext, ip: &mut Ipv4Hdr) -> Outcome {
    // Checked again here, for the verifier (see translate).
    let Some(tcp) = parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET) else {
        return Outcome::drop(Counter::DropTruncatedL4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let tcp = unsafe { &mut *tcp };
    let segment_len = usize::from(ip.total_len()).saturating_sub(Ipv4Hdr::LEN);
    if segment_len > tcp.header_len() || segment_len > MAX_TCP_HEADER {
        return Outcome::drop(Counter::DropNoBackend);
    }
    if !tcp_checksum_ok(ctx, ip, segment_len) {
        return Outcome::drop(Counter::DropBadChecksum);
    }
    let Some(own_mac) = interface_mac(ctx) else {
        return Outcome::drop(Counter::DropNoBackend);
    };
    nat::refuse_syn(ip, tcp, 0);
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Outcome::drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    unsafe {
        (*eth).dst = (*eth).src;
        (*eth).src = own_mac;
    }
    forward::send_back(
        ctx,
        EthHdr::LEN + Ipv4Hdr::LEN + TcpHdr::LEN,
        Counter::ResetNoBackend,
        Counter::DropNoBackend,
    )
}

/// The longest TCP header (with options).
const MAX_TCP_HEADER: usize = 60;

/// Whether the TCP checksum of a segment of `segment_len` bytes (at most
/// MAX_TCP_HEADER) is right: the pseudo-header plus the segment, summed
/// from scratch.
#[inline(always)]
pub(crate) fn tcp_checksum_ok(ctx: &XdpContext, ip: &Ipv4Hdr, segment_len: usize) -> bool {
    let mut sum: u32 = u32::from(ip.saddr[0])
        + u32::from(ip.saddr[1])
        + u32::from(ip.daddr[0])
        + u32::from(ip.daddr[1])
        + u32::from(u16::from_ne_bytes([0, IPPROTO_TCP]))
        + u32::from((segment_len as u16).to_be());
    for word in 0..MAX_TCP_HEADER / 2 {
        let at = word * 2;
        if at >= segment_len {
            break;
        }
        if at + 1 == segment_len {
            let Some(byte) = parse::ptr_at::<u8>(ctx, L4_OFFSET + at) else {
                return false;
            };
            // SAFETY: bounds-checked by ptr_at.
            sum += u32::from(u16::from_ne_bytes([unsafe { *byte }, 0]));
            break;
        }
        let Some(pair) = parse::ptr_at::<[u8; 2]>(ctx, L4_OFFSET + at) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        sum += u32::from(u16::from_ne_bytes(unsafe { *pair }));
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// The ingress interface's own MAC, from INTERFACE_MACS.
#[inline(always)]
pub(crate) fn interface_mac(ctx: &XdpContext) -> Option<[u8; 6]> {
    let ifindex = ctx.ingress_ifindex() as u32;
    for slot in 0..MAX_INTERFACES {
        let entry = INTERFACE_MACS.get(slot)?;
        if entry.ifindex == 0 {
            return None;
        }
        if entry.ifindex == ifindex {
            return Some(entry.mac);
        }
    }
    None
}

#[inline(always)]
fn translate(
    ctx: &XdpContext,
    ip: &mut Ipv4Hdr,
    l4: L4<'_>,
    to: &lb_common::maps::Endpoints,
    counter: Counter,
    next_hop: Option<NextHopCache>,
    shift: Option<synproxy::Shift>,
) -> Outcome {
    // The transport header is bounds-checked again right here: the compiler
    // may merge the TCP and UDP paths' pointers (the same address), and the
    // verifier must see the check that covers the header being written.
    let l4 = match l4 {
        L4::Tcp(_) => match parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET) {
            // SAFETY: bounds-checked by ptr_at.
            Some(tcp) => L4::Tcp(unsafe { &mut *tcp }),
            None => return Outcome::drop(Counter::DropTruncatedL4),
        },
        L4::Udp(_) => match parse::ptr_at::<UdpHdr>(ctx, L4_OFFSET) {
            // SAFETY: bounds-checked by ptr_at.
            Some(udp) => L4::Udp(unsafe { &mut *udp }),
            None => return Outcome::drop(Counter::DropTruncatedL4),
        },
    };
    if ip.ttl <= 1 {
        return Outcome::drop(Counter::DropTtlExceeded);
    }
    let route = forward::route(
        ctx,
        ip.protocol,
        ip.total_len(),
        to.src_addr,
        to.dst_addr,
        next_hop.as_ref(),
    );
    if let Route::TooBig(mtu) = route {
        if ip.dont_fragment() {
            // Answered about the packet as it arrived: nothing rewritten yet.
            return icmp::send_frag_needed(ctx, mtu);
        }
    }
    let mut l4 = l4;
    if let (Some(shift), L4::Tcp(tcp)) = (&shift, &mut l4) {
        synproxy::apply(tcp, shift);
    }
    if nat::rewrite(ip, l4, to).is_err() {
        return Outcome::drop(Counter::DropTtlExceeded);
    }
    forward::deliver(ctx, route, counter)
}

#[inline(always)]
fn is_vip(ip: &Ipv4Hdr) -> bool {
    VIP_ADDRS.get_ptr(ip.dst()).is_some()
}

#[inline(always)]
fn untranslatable(ip: &Ipv4Hdr, defect: Ipv4Defect) -> Outcome {
    match defect {
        // Not ours to judge: the kernel drops what is broken.
        _ if !is_vip(ip) => Outcome::pass(Counter::PassUntranslatable),
        Ipv4Defect::Malformed => Outcome::drop(Counter::DropMalformed),
        Ipv4Defect::Options => Outcome::drop(Counter::DropIpOptions),
        Ipv4Defect::Fragment => Outcome::drop(Counter::DropFragment),
    }
}

#[inline(always)]
fn truncated_l4(ip: &Ipv4Hdr) -> Outcome {
    if is_vip(ip) {
        Outcome::drop(Counter::DropTruncatedL4)
    } else {
        Outcome::pass(Counter::PassUntranslatable)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
