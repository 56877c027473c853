//! Sending a translated packet on its way: FIB lookup, MAC rewrite, then a
//! redirect to the next hop's interface.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{
    headers::{EthHdr, Ipv4Hdr},
    maps::NextHop,
    stats::Counter,
};

use crate::Outcome;

const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

/// A connection's cached next hop: the copy read with the entry, and where
/// to store a fresh lookup.
pub struct NextHopCache {
    pub cached: NextHop,
    /// The cached value may be used (it is recent and was resolved).
    pub fresh: bool,
    pub slot: *mut NextHop,
}

/// Forwards the (already translated) packet; `forwarded` is the counter of a
/// packet that leaves through XDP.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv4Hdr,
    forwarded: Counter,
    cache: Option<NextHopCache>,
) -> Outcome {
    if let Some(cache) = &cache {
        if cache.fresh && cache.cached.ifindex != 0 {
            return send(eth, &cache.cached, forwarded);
        }
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = ip.protocol;
    fib.__bindgen_anon_1.tot_len = ip.total_len();
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_3.ipv4_src = ip.src();
    fib.__bindgen_anon_4.ipv4_dst = ip.dst();

    // SAFETY: ctx.ctx is the program's xdp_md, fib is a valid, sized buffer.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let next_hop = NextHop {
                ifindex: fib.ifindex,
                src_mac: fib.smac,
                dst_mac: fib.dmac,
            };
            if let Some(cache) = cache {
                // SAFETY: slot points into the connection's live map value.
                unsafe { *cache.slot = next_hop };
            }
            send(eth, &next_hop, forwarded)
        }
        // The kernel's forwarding path resolves the neighbour and sends it.
        BPF_FIB_LKUP_RET_NO_NEIGH => Outcome::new(xdp_action::XDP_PASS, Counter::PassNoNeighbour),
        _ => Outcome::new(xdp_action::XDP_PASS, Counter::PassNoRoute),
    }
}

#[inline(always)]
fn send(eth: *mut EthHdr, next_hop: &NextHop, forwarded: Counter) -> Outcome {
    // SAFETY: eth was bounds-checked by the caller.
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
