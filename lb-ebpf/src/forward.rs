//! Where a translated packet goes: its next hop (cached in the connection's
//! entry, or a FIB lookup) and the path MTU, looked up before the packet is
//! rewritten, so that a packet too big for the path can still be answered
//! about as it arrived; then the MAC rewrite and the redirect.

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams,
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    headers::EthHdr,
    maps::{Flow, NextHop},
    stats::Counter,
};

use crate::{parse, Outcome};

const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;
const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 8;
/// The smallest MTU an IPv4 link may have (RFC 791).
const MIN_IPV4_MTU: u16 = 68;

/// A connection's cached next hop and path MTU: the copy read with the
/// entry, and the entry, where a fresh lookup is stored.
pub struct NextHopCache {
    pub cached: NextHop,
    pub mtu: u16,
    /// The cached value may be used (it is recent and was resolved).
    pub fresh: bool,
    pub flow: *mut Flow,
}

/// Where a packet goes once translated.
pub enum Route {
    /// To this next hop, through XDP.
    Via(NextHop),
    /// To the kernel, translated, counted as this (unresolved neighbour, no
    /// route).
    Kernel(Counter),
    /// Larger than the path's MTU (given): a router answers it with
    /// "fragmentation needed" if it forbids fragmentation, else fragments
    /// it.
    TooBig(u16),
}

/// The route of a packet of `total_len` bytes and protocol `proto` that
/// will leave with source `src` and destination `dst` (network order): the
/// connection's cached next hop while it is fresh, else a FIB lookup, whose
/// result is cached.
#[inline(always)]
pub fn route(
    ctx: &XdpContext,
    proto: u8,
    total_len: u16,
    src: u32,
    dst: u32,
    cache: Option<&NextHopCache>,
) -> Route {
    if let Some(cache) = cache {
        if cache.fresh && cache.cached.ifindex != 0 {
            if cache.mtu != 0 && total_len > cache.mtu {
                return Route::TooBig(cache.mtu);
            }
            return Route::Via(cache.cached);
        }
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = proto;
    // The lookup checks it against the route's or device's MTU (XDP).
    fib.__bindgen_anon_1.tot_len = total_len;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_3.ipv4_src = src;
    fib.__bindgen_anon_4.ipv4_dst = dst;

    // SAFETY: ctx.ctx is the program's xdp_md, fib is a valid, sized buffer.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    // SAFETY: after the lookup the union holds the MTU (kernel 5.12+): of
    // the path when it succeeded, the one exceeded when fragmentation is
    // needed. Older kernels leave the packet's length there: not an MTU.
    let mtu = match unsafe { fib.__bindgen_anon_1.mtu_result } {
        mtu if mtu == total_len || mtu < MIN_IPV4_MTU => 0,
        mtu => mtu,
    };
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let next_hop = NextHop {
                ifindex: fib.ifindex,
                src_mac: fib.smac,
                dst_mac: fib.dmac,
            };
            if let Some(cache) = cache {
                // SAFETY: the connection's live map value.
                unsafe {
                    (*cache.flow).next_hop = next_hop;
                    (*cache.flow).next_hop_mtu = mtu;
                }
            }
            Route::Via(next_hop)
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED if mtu != 0 => Route::TooBig(mtu),
        // Too big, but the MTU unknown: the kernel fragments it or answers.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::Kernel(Counter::PassToFragment),
        // The kernel's forwarding path resolves the neighbour and sends it.
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::Kernel(Counter::PassNoNeighbour),
        _ => Route::Kernel(Counter::PassNoRoute),
    }
}

/// Sends the translated packet where `route` says, `forwarded` counting it
/// when it leaves through XDP. One still too big for the path (without DF,
/// or an ICMP error, which gets no error of its own: RFC 1122) goes to the
/// kernel, which fragments it.
#[inline(always)]
pub fn deliver(ctx: &XdpContext, route: Route, forwarded: Counter) -> Outcome {
    let next_hop = match route {
        Route::Via(next_hop) => next_hop,
        Route::Kernel(counter) => return Outcome::pass(counter),
        Route::TooBig(_) => return Outcome::pass(Counter::PassToFragment),
    };
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Outcome::drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    unsafe {
        (*eth).src = next_hop.src_mac;
        (*eth).dst = next_hop.dst_mac;
    }
    // A redirect even when the next hop is on the ingress interface: veth
    // (containers, the test bed) holds XDP_TX frames until its next packet
    // arrives, while redirected frames are flushed at the end of the poll.
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(next_hop.ifindex, 0) } as u32;
    Outcome::new(action, forwarded)
}

/// Sends an answer built in the frame (its MACs already set) back out of
/// the interface it came in, cut to its first `len` bytes: `sent` counts
/// it, `failed` a frame that could not be cut.
#[inline(always)]
pub fn send_back(ctx: &XdpContext, len: usize, sent: Counter, failed: Counter) -> Outcome {
    if !resize(ctx, len) {
        return Outcome::drop(failed);
    }
    // A redirect rather than XDP_TX, for veth: see `deliver`.
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(ctx.ingress_ifindex() as u32, 0) } as u32;
    Outcome::new(action, sent)
}

/// Resizes the frame to `len` bytes: cut at the end, or grown at the front
/// (the caller then writes every byte in front of what was there).
#[inline(always)]
pub fn resize(ctx: &XdpContext, len: usize) -> bool {
    let frame_len = ctx.data_end() - ctx.data();
    // SAFETY: ctx.ctx is the program's xdp_md; the kernel checks the bounds.
    unsafe {
        if frame_len > len {
            bpf_xdp_adjust_tail(ctx.ctx, -((frame_len - len) as i32)) == 0
        } else if frame_len < len {
            bpf_xdp_adjust_head(ctx.ctx, -((len - frame_len) as i32)) == 0
        } else {
            true
        }
    }
}
