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
