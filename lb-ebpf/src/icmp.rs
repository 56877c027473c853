//! ICMP on the packet path: errors about tracked connections translated
//! both ways, and the "fragmentation needed" error the load balancer sends,
//! as a router does, about a packet too big for the path it would take.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    headers::{EthHdr, IcmpHdr, Ipv4Hdr, QuotedPorts, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    maps::{FlowKey, PROXY_OPEN, SETTINGS_READY},
    nat,
    stats::Counter,
};

use crate::{forward, interface_mac, maps, not_addressed_here, parse, Outcome, IP_OFFSET, L4_OFFSET};

/// The IPv4 header of an option-less, unfragmented, ready-to-handle ICMP
/// packet addressed to this node's MAC, if the frame is one.
#[inline(always)]
pub fn icmp_frame(ctx: &XdpContext) -> Option<&mut Ipv4Hdr> {
    // The protocol first: every TCP and UDP packet passes through here, and
    // must not pay for the checks below twice (`process` makes them too).
    let eth = parse::ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { &*eth };
    if eth.ether_type != ETH_P_IP {
        return None;
    }
    let ip = parse::ptr_at::<Ipv4Hdr>(ctx, IP_OFFSET)?;
    // SAFETY: bounds-checked by ptr_at; the frame is ours for the run.
    let ip = unsafe { &mut *ip };
    if ip.protocol != IPPROTO_ICMP {
        return None;
    }
    let settings = maps::SETTINGS.get(0)?;
    if settings.flags & SETTINGS_READY == 0 || not_addressed_here(ctx, eth).is_some() {
        return None;
    }
    ip.check_translatable(parse::bytes_from(ctx, IP_OFFSET))
        .is_ok()
        .then_some(ip)
}

/// An ICMP error about a tracked connection (destination unreachable,
/// fragmentation needed among them, or time exceeded, from a router or a
/// backend on either side) is translated like the connection's packets in
/// its direction and forwarded, so that path-MTU discovery and errors work
/// through the LB, as with IPVS and Cilium. Anything else ICMP (echo, errors
/// about other traffic) goes to the kernel untouched. It is dispatched at
/// the very start (`lb`), apart from the TCP and UDP paths, whose code the
/// verifier then sees as before.
#[inline(always)]
pub fn icmp_error(ctx: &XdpContext, ip: &mut Ipv4Hdr) -> Outcome {
    /// The headers of an ICMP error, checked against the frame in one go
    /// (separate checks get merged by the compiler into one the verifier
    /// cannot follow).
    #[repr(C)]
    struct ErrorHead {
        icmp: IcmpHdr,
        quoted_ip: Ipv4Hdr,
        quoted: QuotedPorts,
    }
    if usize::from(ip.total_len()) < Ipv4Hdr::LEN + core::mem::size_of::<ErrorHead>() {
        return Outcome::pass(Counter::PassNotService);
    }
    let Some(head) = parse::ptr_at::<ErrorHead>(ctx, L4_OFFSET) else {
        return Outcome::pass(Counter::PassNotService);
    };
    // SAFETY: bounds-checked by ptr_at; the frame is ours for the run.
    let head = unsafe { &mut *head };
    let (icmp, quoted_ip, quoted) = (&mut head.icmp, &mut head.quoted_ip, &mut head.quoted);
    let quoted_proto = quoted_ip.protocol;
    if !icmp.is_error()
        || quoted_ip.version_ihl != 0x45
        || (quoted_proto != IPPROTO_TCP && quoted_proto != IPPROTO_UDP)
    {
        return Outcome::pass(Counter::PassNotService);
    }
    // The error travels against the quoted packet: the connection's entry
    // for its direction has the quoted packet's key reversed.
    let key = FlowKey {
        src_addr: quoted_ip.dst(),
        dst_addr: quoted_ip.src(),
        src_port: quoted.dest,
        dst_port: quoted.source,
        proto: quoted_proto,
        _pad: [0; 3],
    };
    let Some(flow) = maps::FLOWS.get_ptr(&key) else {
        return Outcome::pass(Counter::PassNotService);
    };
    // SAFETY: fields of a live entry: the rewrite never changes; a shift is
    // written once, when the backend's handshake completes.
    let (rewrite, proxy, ack_shift) = unsafe { ((*flow).rewrite, (*flow).proxy, (*flow).ack_shift) };
    // A connection opened by SYN cookie: the quoted segment's sequence
    // number is shifted back into its sender's space, as its
    // acknowledgements are (`Flow::ack_shift` of this direction).
    let quoted_seq_shift = if proxy == PROXY_OPEN { ack_shift } else { 0 };
    if nat::rewrite_icmp_error(ip, icmp, quoted_ip, quoted, &rewrite, quoted_seq_shift).is_err() {
        return Outcome::drop(Counter::DropTtlExceeded);
    }
    let route = forward::route(ctx, ip.protocol, ip.total_len(), ip.src(), ip.dst(), None);
    forward::deliver(ctx, route, Counter::ForwardIcmpError)
}

/// A "fragmentation needed" error about the packet in the frame: what it
/// quotes (the IPv4 header and the first 8 bytes of the transport header,
/// as the packet arrived) stays where it is, and the error's own headers
/// go in front of it.
#[repr(C)]
struct FragNeededFrame {
    eth: EthHdr,
    ip: Ipv4Hdr,
    icmp: IcmpHdr,
    quoted_ip: Ipv4Hdr,
    quoted: QuotedPorts,
}

/// Answers the (untranslated, option-less, DF) packet in the frame with
/// "fragmentation needed" announcing `mtu`, sent back where it came from:
/// path-MTU discovery through the load balancer, for clients and backends
/// alike. The frame grows by the error's headers and is cut after the quote.
#[inline(always)]
pub fn send_frag_needed(ctx: &XdpContext, mtu: u16) -> Outcome {
    const GROWTH: usize = Ipv4Hdr::LEN + IcmpHdr::LEN;
    let Some(own_mac) = interface_mac(ctx) else {
        return Outcome::drop(Counter::DropTooBig);
    };
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Outcome::drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    let sender_mac = unsafe { (*eth).src };
    // SAFETY: ctx.ctx is the program's xdp_md; growing into the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROWTH as i32)) } != 0 {
        return Outcome::drop(Counter::DropTooBig);
    }
    let Some(frame) = parse::ptr_at::<FragNeededFrame>(ctx, 0) else {
        return Outcome::drop(Counter::DropTooBig);
    };
    // SAFETY: bounds-checked by ptr_at; the frame is ours for the run.
    let frame = unsafe { &mut *frame };
    let (ip, icmp) = nat::frag_needed(&frame.quoted_ip, &frame.quoted, mtu);
    frame.eth = EthHdr {
        dst: sender_mac,
        src: own_mac,
        ether_type: ETH_P_IP,
    };
    frame.ip = ip;
    frame.icmp = icmp;
    forward::send_back(
        ctx,
        core::mem::size_of::<FragNeededFrame>(),
        Counter::IcmpFragNeeded,
        Counter::DropTooBig,
    )
}
