//! The SYN proxy on the packet path (see `lb_common::synproxy`): SYNs
//! answered with cookies, a cookie's ACK turned into the SYN to a backend,
//! the backend's SYN-ACK into the ACK that completes its handshake, and the
//! sequence shift of such connections.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    conntrack::Segment,
    csum::ChecksumDelta,
    headers::{
        split_words, EthHdr, Ipv4Hdr, TcpHdr, ETH_P_IP, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    maps::{
        Endpoints, Flow, FlowKey, Service, Settings, DIRECTION_FORWARD, FLOW_CLOSING, FLOW_ESTABLISHED,
        FLOW_SEQ_KNOWN, PROXY_OPEN, SERVICE_SYN_COOKIES_ALWAYS, SERVICE_SYN_COOKIES_NEVER,
    },
    nat::{write_segment, NewSegment},
    stats::Counter,
    synproxy::{
        advertised_options, check_cookie, cookie_options, cookie_syn_ack, make_cookie, parse_syn_options,
        rescale_window, shift_segment, syn_option_bytes, SYN_OPTIONS_LEN,
    },
};

use crate::{
    conntrack::{other_direction, CookieOpening, Opening},
    forward, interface_mac,
    maps::SYN_PRESSURE,
    parse, tcp_checksum_ok, Outcome, L4_OFFSET,
};

/// A SYN or SYN-ACK the program builds.
#[repr(C)]
struct SynFrame {
    eth: EthHdr,
    ip: Ipv4Hdr,
    tcp: TcpHdr,
    options: [u8; SYN_OPTIONS_LEN],
}

/// An ACK the program builds.
#[repr(C)]
struct AckFrame {
    eth: EthHdr,
    ip: Ipv4Hdr,
    tcp: TcpHdr,
}

/// A frame the program builds, with its Ethernet header first.
trait Built {
    fn eth(&mut self) -> &mut EthHdr;
}

impl Built for SynFrame {
    fn eth(&mut self) -> &mut EthHdr {
        &mut self.eth
    }
}

impl Built for AckFrame {
    fn eth(&mut self) -> &mut EthHdr {
        &mut self.eth
    }
}

/// The frame's sender's MAC and the ingress interface's own, read before
/// the frame is rebuilt.
#[inline(always)]
fn macs(ctx: &XdpContext) -> Result<([u8; 6], [u8; 6]), Outcome> {
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Err(Outcome::drop(Counter::DropMalformed));
    };
    // SAFETY: bounds-checked by ptr_at.
    let sender = unsafe { (*eth).src };
    let own = interface_mac(ctx).ok_or(Outcome::pass(Counter::PassNotReady))?;
    Ok((sender, own))
}

/// The frame resized to a `T`, which the caller writes whole, its Ethernet
/// header already addressed to `dst` from `src`.
#[inline(always)]
fn rebuild<'a, T: Built>(ctx: &'a XdpContext, dst: [u8; 6], src: [u8; 6]) -> Result<&'a mut T, Outcome> {
    if !forward::resize(ctx, core::mem::size_of::<T>()) {
        return Err(Outcome::drop(Counter::DropSynProxyFrame));
    }
    let frame = parse::ptr_at::<T>(ctx, 0).ok_or(Outcome::drop(Counter::DropSynProxyFrame))?;
    // SAFETY: bounds-checked by ptr_at; the frame is ours for the run.
    let frame = unsafe { &mut *frame };
    *frame.eth() = EthHdr {
        dst,
        src,
        ether_type: ETH_P_IP,
    };
    Ok(frame)
}

/// Whether the service's SYNs are answered with cookies now.
#[inline(always)]
pub fn cookies_active(service: &Service, now_ns: u64) -> bool {
    if service.flags & SERVICE_SYN_COOKIES_ALWAYS != 0 {
        return true;
    }
    if service.flags & SERVICE_SYN_COOKIES_NEVER != 0 {
        return false;
    }
    // SAFETY: a plain u64 slot, written whole.
    SYN_PRESSURE.get(service.id).is_some_and(|until| *until > now_ns)
}

/// Answers the SYN in the frame (key `key`) with a cookie SYN-ACK, sent
/// back where it came from. Nothing is recorded.
#[inline(always)]
pub fn answer_syn(
    ctx: &XdpContext,
    key: &FlowKey,
    segment: &Segment,
    settings: &Settings,
    now_ns: u64,
) -> Outcome {
    if segment.payload_len != 0 {
        return Outcome::drop(Counter::DropSynWithData);
    }
    let (Some(ip), Some(tcp)) = (
        parse::ptr_at::<Ipv4Hdr>(ctx, crate::IP_OFFSET),
        parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET),
    ) else {
        return Outcome::drop(Counter::DropTruncatedL4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let header_len = unsafe { (*tcp).header_len() };
    // SAFETY: as above.
    if !tcp_checksum_ok(ctx, unsafe { &*ip }, header_len) {
        return Outcome::drop(Counter::DropBadChecksum);
    }
    let (client_mac, own_mac) = match macs(ctx) {
        Ok(macs) => macs,
        Err(outcome) => return outcome,
    };
    let client = parse_syn_options(parse::tcp_option_bytes(ctx, L4_OFFSET, header_len));
    let cookie = make_cookie(&settings.cookie_key, key, segment.seq, now_ns, &client);
    let answer = cookie_syn_ack(key, segment.seq, cookie);
    let options = syn_option_bytes(&advertised_options(&client));
    let frame = match rebuild::<SynFrame>(ctx, client_mac, own_mac) {
        Ok(frame) => frame,
        Err(outcome) => return outcome,
    };
    frame.options = options;
    write_segment(&mut frame.ip, &mut frame.tcp, Some(&options), &answer);
    forward::send_back(
        ctx,
        core::mem::size_of::<SynFrame>(),
        Counter::SynCookieSent,
        Counter::DropSynProxyFrame,
    )
}

/// If `segment` (from a client, without a connection) acknowledges a valid
/// SYN cookie, what it tells the connection it opens: the client is proven,
/// and its backend is sent the SYN rebuilt from the cookie.
#[inline(always)]
pub fn check_answer(
    key: &FlowKey,
    segment: &Segment,
    service: &Service,
    settings: &Settings,
    now_ns: u64,
) -> Option<Opening> {
    if service.flags & SERVICE_SYN_COOKIES_NEVER != 0
        || segment.flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK
    {
        return None;
    }
    let cookie = segment.ack.wrapping_sub(1);
    let client = check_cookie(
        &settings.cookie_key,
        key,
        segment.seq.wrapping_sub(1),
        now_ns,
        cookie,
    )?;
    let scale = client.shift();
    Some(Opening {
        seq_next: segment.seq,
        window: u32::from(segment.window) << scale,
        window_scale: scale,
        by_cookie: Some(CookieOpening {
            cookie,
            client_window_scale: advertised_options(&client).shift(),
        }),
    })
}

/// Sends the backend of a connection opened by cookie (leaving with
/// `rewrite`) the client's SYN: sequence number `client_isn`, the options
/// the cookie kept, the client's window (`window`, in bytes).
#[inline(always)]
pub fn send_syn(
    ctx: &XdpContext,
    rewrite: &Endpoints,
    client_isn: u32,
    cookie: u32,
    window: u32,
    counter: Counter,
) -> Outcome {
    const LEN: usize = core::mem::size_of::<SynFrame>();
    let (sender_mac, own_mac) = match macs(ctx) {
        Ok(macs) => macs,
        Err(outcome) => return outcome,
    };
    // Addressed to this host, for the kernel to forward if the next hop is
    // not resolved (deliver sets the MACs otherwise).
    let frame = match rebuild::<SynFrame>(ctx, own_mac, sender_mac) {
        Ok(frame) => frame,
        Err(outcome) => return outcome,
    };
    // Written in place, and the route looked up after: the stack is short.
    frame.options = syn_option_bytes(&cookie_options(cookie));
    write_segment(
        &mut frame.ip,
        &mut frame.tcp,
        Some(&frame.options),
        &NewSegment {
            src_addr: rewrite.src_addr,
            dst_addr: rewrite.dst_addr,
            src_port: rewrite.src_port,
            dst_port: rewrite.dst_port,
            seq: client_isn,
            ack: 0,
            flags: TCP_SYN,
            // A SYN's window is never scaled.
            window: u16::try_from(window).unwrap_or(u16::MAX),
        },
    );
    let route = forward::route(
        ctx,
        IPPROTO_TCP,
        (LEN - EthHdr::LEN) as u16,
        rewrite.src_addr,
        rewrite.dst_addr,
        None,
    );
    forward::deliver(ctx, route, counter)
}

/// What becomes of a segment of a connection opened by cookie whose
/// backend has not answered its SYN.
pub enum Pending {
    Done(Outcome),
    /// It goes on the ordinary way (a RST, which may close the connection).
    Ordinary,
    /// The client's answer to its cookie again, or its first data, a
    /// second after the SYN went to the backend unanswered (lost): the
    /// connection is forgotten and opened again from this segment.
    Reopen,
}

/// A SYN sent to a backend and not answered in this long is taken for
/// lost when the client sends again (Linux sends a SYN again after 1 s).
const BACKEND_SYN_RETRY_NS: u64 = 1_000_000_000;

/// A segment (`segment`, key `key`) of a connection opened by cookie whose
/// backend has not answered its SYN: `current` is its entry, `flow`.
#[inline(always)]
pub fn pending(
    ctx: &XdpContext,
    key: &FlowKey,
    flow: *mut Flow,
    current: &Flow,
    segment: &Segment,
    now_ns: u64,
) -> Pending {
    let flags = segment.flags;
    if current.direction == DIRECTION_FORWARD {
        // A RST may close it; once closed, a SYN opens the port anew.
        if flags & TCP_RST != 0 || (flags & TCP_SYN != 0 && current.state & FLOW_CLOSING != 0) {
            return Pending::Ordinary;
        }
        if flags & (TCP_SYN | TCP_ACK) == TCP_ACK
            && segment.seq == current.seq_next
            && segment.ack == current.proxy_isn.wrapping_add(1)
            && now_ns.saturating_sub(current.last_seen_ns) > BACKEND_SYN_RETRY_NS
        {
            return Pending::Reopen;
        }
        return Pending::Done(Outcome::drop(Counter::DropSynProxyPending));
    }
    let Some(client_side) = other_direction(key, current) else {
        return Pending::Done(Outcome::drop(Counter::DropSynProxyPending));
    };
    // SAFETY: fields of a live entry (not a copy of it: the stack is short).
    let client_side_view = unsafe {
        ClientSide {
            seq_next: (*client_side).seq_next,
            max_window: (*client_side).max_window,
            window_scale: (*client_side).window_scale,
        }
    };
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK && segment.payload_len == 0 {
        // A plain ACK answering the SYN: the backend still has an older
        // connection on the tuple (TIME_WAIT, SYN_RECV). The client's
        // kernel would answer it with a RST carrying its acknowledgement
        // number (RFC 9293 SYN-SENT), which clears the old connection so
        // that the SYN sent again gets in; the program answers for it.
        return Pending::Done(reset_backend(ctx, key, segment.ack));
    }
    if segment.ack != client_side_view.seq_next {
        return Pending::Done(Outcome::drop(Counter::DropSynProxyPending));
    }
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN | TCP_ACK {
        return Pending::Done(complete_backend_handshake(
            ctx,
            key,
            flow,
            client_side,
            &client_side_view,
            segment,
            now_ns,
        ));
    }
    if flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK {
        // The backend refused the SYN: the client, which believes it is
        // connected, gets the reset in its own sequence space (the
        // ordinary path then closes the connection and translates it).
        let Some(tcp) = parse::ptr_at::<TcpHdr>(ctx, L4_OFFSET) else {
            return Pending::Done(Outcome::drop(Counter::DropTruncatedL4));
        };
        // SAFETY: bounds-checked by ptr_at.
        let tcp = unsafe { &mut *tcp };
        let seq = split_words(current.proxy_isn.wrapping_add(1).to_be());
        tcp.check = ChecksumDelta::new().replace32(tcp.seq, seq).apply(tcp.check);
        tcp.seq = seq;
        return Pending::Ordinary;
    }
    Pending::Done(Outcome::drop(Counter::DropSynProxyPending))
}

/// Answers a segment from the backend (key `key`) with a RST whose
/// sequence number is `seq`, back where it came from.
#[inline(always)]
fn reset_backend(ctx: &XdpContext, key: &FlowKey, seq: u32) -> Outcome {
    const LEN: usize = core::mem::size_of::<AckFrame>();
    let frame =
        match macs(ctx).and_then(|(backend_mac, own_mac)| rebuild::<AckFrame>(ctx, backend_mac, own_mac)) {
            Ok(frame) => frame,
            Err(outcome) => return outcome,
        };
    write_segment(
        &mut frame.ip,
        &mut frame.tcp,
        None,
        &NewSegment {
            src_addr: key.dst_addr,
            dst_addr: key.src_addr,
            src_port: key.dst_port,
            dst_port: key.src_port,
            seq,
            ack: 0,
            flags: TCP_RST,
            window: 0,
        },
    );
    forward::send_back(
        ctx,
        LEN,
        Counter::ResetStaleBackendConnection,
        Counter::DropSynProxyFrame,
    )
}

/// What the backend's SYN-ACK needs of the client side's entry.
struct ClientSide {
    seq_next: u32,
    max_window: u32,
    window_scale: u8,
}

/// The backend's SYN-ACK (in the frame, `segment`) to a connection opened
/// by cookie: both entries learn the shift between the backend's ISN and
/// the cookie, and the backend gets the ACK that completes its handshake,
/// with the client's window.
#[inline(always)]
fn complete_backend_handshake(
    ctx: &XdpContext,
    key: &FlowKey,
    flow: *mut Flow,
    client_side: *mut Flow,
    client_entry: &ClientSide,
    segment: &Segment,
    now_ns: u64,
) -> Outcome {
    const LEN: usize = core::mem::size_of::<AckFrame>();
    // Nothing of the SYN-ACK survives in the ACK built from it: a corrupted
    // one must not set the connection's shift.
    let Some(ip) = parse::ptr_at::<Ipv4Hdr>(ctx, crate::IP_OFFSET) else {
        return Outcome::drop(Counter::DropTruncatedL4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    let segment_len = usize::from(ip.total_len()).saturating_sub(Ipv4Hdr::LEN);
    if segment.payload_len != 0 || !ip.checksum_ok() || !tcp_checksum_ok(ctx, ip, segment_len) {
        return Outcome::drop(Counter::DropBadChecksum);
    }
    let backend_scale = crate::syn_window_scale(ctx, segment);
    let (backend_mac, own_mac) = match macs(ctx) {
        Ok(macs) => macs,
        Err(outcome) => return outcome,
    };
    let backend_isn = segment.seq;
    // SAFETY: field reads of live map values.
    let shift = backend_isn.wrapping_sub(unsafe { (*flow).proxy_isn });
    let client_scale = client_entry.window_scale;
    let client_window = client_entry.max_window >> (client_scale & 15);
    // SAFETY: field writes into live map values.
    unsafe {
        (*client_side).ack_shift = shift;
        (*client_side).peer_window = u32::from(segment.window);
        (*client_side).backend_window_scale = backend_scale;
        (*client_side).state |= FLOW_ESTABLISHED;
        (*client_side).proxy = PROXY_OPEN;
        (*flow).seq_shift = 0_u32.wrapping_sub(shift);
        (*flow).seq_next = backend_isn.wrapping_add(1);
        (*flow).max_window = u32::from(segment.window);
        (*flow).window_scale = backend_scale;
        (*flow).backend_window_scale = backend_scale;
        (*flow).state |= FLOW_SEQ_KNOWN | FLOW_ESTABLISHED;
        (*flow).last_seen_ns = now_ns;
        (*flow).proxy = PROXY_OPEN;
    }
    let ack = NewSegment {
        src_addr: key.dst_addr,
        dst_addr: key.src_addr,
        src_port: key.dst_port,
        dst_port: key.src_port,
        seq: segment.ack,
        ack: backend_isn.wrapping_add(1),
        flags: TCP_ACK,
        window: u16::try_from(client_window).unwrap_or(u16::MAX),
    };
    let frame = match rebuild::<AckFrame>(ctx, backend_mac, own_mac) {
        Ok(frame) => frame,
        Err(outcome) => return outcome,
    };
    write_segment(&mut frame.ip, &mut frame.tcp, None, &ack);
    forward::send_back(ctx, LEN, Counter::SynProxyHandshake, Counter::DropSynProxyFrame)
}

/// What translating a segment of a connection opened by cookie changes
/// besides the addresses (see `Flow::seq_shift`).
pub struct Shift {
    seq: u32,
    ack: u32,
    /// The backend's window scale and the client's view of it, when they
    /// differ (towards the client only).
    rescale: Option<(u8, u8)>,
}

impl Shift {
    /// The shift of segments matching `flow`, if it has one.
    #[inline(always)]
    pub fn of(flow: &Flow) -> Option<Self> {
        if flow.proxy != PROXY_OPEN {
            return None;
        }
        let rescale = (flow.direction != DIRECTION_FORWARD
            && flow.client_window_scale != flow.backend_window_scale)
            .then_some((flow.backend_window_scale, flow.client_window_scale));
        Some(Self {
            seq: flow.seq_shift,
            ack: flow.ack_shift,
            rescale,
        })
    }
}

/// Shifts the segment with TCP header `tcp` as `shift` says, and updates
/// its checksum.
#[inline(always)]
pub fn apply(tcp: &mut TcpHdr, shift: &Shift) {
    let flags = tcp.flags();
    // A SYN's window is never scaled.
    let window = match shift.rescale {
        Some((from, to)) if flags & TCP_SYN == 0 => Some(rescale_window(u16::from_be(tcp.window), from, to)),
        _ => None,
    };
    // No SACK blocks to shift: SACK is not offered on such connections.
    let delta = shift_segment(tcp, shift.seq, shift.ack, window);
    tcp.check = delta.apply(tcp.check);
}
