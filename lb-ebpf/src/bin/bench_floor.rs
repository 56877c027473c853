//! The cheapest useful XDP forwarder, as the floor of the benchmark: parse
//! Ethernet and IPv4, swap the MACs, send the frame back out.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::headers::{EthHdr, Ipv4Hdr, ETH_P_IP};

#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + EthHdr::LEN + Ipv4Hdr::LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut EthHdr;
    // SAFETY: bounds-checked above.
    unsafe {
        if (*eth).ether_type != ETH_P_IP {
            return xdp_action::XDP_PASS;
        }
        let ip = (start + EthHdr::LEN) as *const Ipv4Hdr;
        if (*ip).version_ihl >> 4 != 4 {
            return xdp_action::XDP_PASS;
        }
        core::mem::swap(&mut (*eth).src, &mut (*eth).dst);
    }
    xdp_action::XDP_TX
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
