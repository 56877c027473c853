//! Sending a translated packet on its way: FIB lookup, MAC rewrite, then
//! XDP_TX on the same interface or a redirect to another.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{
    headers::{EthHdr, Ipv4Hdr},
    stats::Counter,
};

use crate::Outcome;

const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

/// Forwards the (already translated) packet; `forwarded` is the counter of a
/// packet that leaves through XDP.
#[inline(always)]
pub fn forward(ctx: &XdpContext, eth: *mut EthHdr, ip: &Ipv4Hdr, forwarded: Counter) -> Outcome {
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
            // SAFETY: eth was bounds-checked by the caller.
            unsafe {
                (*eth).src = fib.smac;
                (*eth).dst = fib.dmac;
            }
            if fib.ifindex == ctx.ingress_ifindex() as u32 {
                Outcome::new(xdp_action::XDP_TX, forwarded)
            } else {
                // SAFETY: plain helper call.
                let action = unsafe { bpf_redirect(fib.ifindex, 0) } as u32;
                Outcome::new(action, forwarded)
            }
        }
        // The kernel's forwarding path resolves the neighbour and sends it.
        BPF_FIB_LKUP_RET_NO_NEIGH => Outcome::new(xdp_action::XDP_PASS, Counter::PassNoNeighbour),
        _ => Outcome::new(xdp_action::XDP_PASS, Counter::PassNoRoute),
    }
}
