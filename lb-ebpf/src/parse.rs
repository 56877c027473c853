//! Bounds-checked access to the packet.

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset` bytes into the frame, if the frame holds it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Bytes of the frame from `offset` to its end.
#[inline(always)]
pub fn bytes_from(ctx: &XdpContext, offset: usize) -> usize {
    (ctx.data_end() - ctx.data()).saturating_sub(offset)
}

/// The options of the TCP header at `l4_offset`, `header_len` bytes long,
/// as the option readers of lb_common want them: byte `i`, or None past
/// their end (at most 40 bytes, for the verifier).
#[inline(always)]
pub fn tcp_option_bytes(
    ctx: &XdpContext,
    l4_offset: usize,
    header_len: usize,
) -> impl Fn(usize) -> Option<u8> + '_ {
    const TCP_HEADER: usize = 20;
    let options_len = header_len.saturating_sub(TCP_HEADER);
    let options = l4_offset + TCP_HEADER;
    move |at| {
        if at >= options_len || at >= 40 {
            return None;
        }
        // SAFETY: bounds-checked by ptr_at.
        ptr_at::<u8>(ctx, options + at).map(|byte| unsafe { *byte })
    }
}
