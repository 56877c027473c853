//! The connection table on the packet path: creating connections (backend
//! by round robin, the SNAT tuple, both directions' entries) and following
//! a TCP connection's sequence space and close.
//!
//! The SNAT tuple of a new connection (SNAT address and port towards the
//! backend) is, in order of preference:
//! 1. the client's own port, at each SNAT address, unless the port is
//!    privileged, inside the host's own ephemeral range, or used by a local
//!    socket (`bpf_skc_lookup_tcp`): the way nf_nat and Cilium keep ports;
//! 2. pool ports (`snat_ports`), the first few chosen by a hash of the
//!    client's address and port (so a client that reuses its port meets
//!    its own closed tuples again), then random ones.
//!
//! A tuple whose owner (the reply entry) is free (see `tuple_owner`: the
//! same client connection's closed one, or past its hold) is taken at once;
//! if none is, the oldest evictable one seen is taken (`forward_new_evicting`).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS},
    helpers::{bpf_get_prandom_u32, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};
use lb_common::{
    conntrack::{
        challenges_syn, closing_bits, completes_handshake, may_advance, may_close, seq_after, tuple_owner,
        Segment, TupleOwner, MAX_WINDOW_SCALE, REFRESH_INTERVAL_NS,
    },
    headers::{IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    limits::{slot_index, SNAT_PORT_RETRIES},
    maps::{
        Endpoints, Flow, FlowKey, NextHop, Service, Settings, DIRECTION_FORWARD, DIRECTION_REPLY,
        FLOW_CHALLENGED, FLOW_CLOSING, FLOW_ESTABLISHED, FLOW_SEQ_KNOWN, MAX_SNAT_ADDRS, PROXY_NONE,
        PROXY_PENDING,
    },
    stats::Counter,
};

use crate::maps::{CURSORS, FLOWS, NEW_ENTRIES, SLOTS, SYN_PRESSURE};

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = -17;

/// SNAT addresses at which the client's own port is tried: the one its
/// hash picks and the next. More would cost the verifier more than they
/// bring: pool probes follow anyway.
const KEPT_PORT_ATTEMPTS: u32 = 2;
/// Pool probes placed by the client's hash before random ones.
const HASHED_PROBES: u32 = 4;
/// Ports below this are never kept: backends may trust privileged source
/// ports (NFS's `secure`, rsh).
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// What the SYN (or first datagram) of a new connection tells its entries.
pub struct Opening {
    /// TCP: the client's sequence space from its SYN.
    pub seq_next: u32,
    pub window: u32,
    pub window_scale: u8,
    /// Opened by the client's answer to a SYN cookie: the cookie (the
    /// client's view of the backend's ISN) and the window scale the cookie
    /// SYN-ACK announced. The client is proven (see `tuple_owner`).
    pub by_cookie: Option<CookieOpening>,
}

/// See `Opening::by_cookie`.
pub struct CookieOpening {
    pub cookie: u32,
    pub client_window_scale: u8,
}

/// How long a service answers SYNs with cookies after a sign of a SYN
/// flood (see SYN_PRESSURE).
const SYN_PRESSURE_NS: u64 = 10_000_000_000;

/// A new connection's translation: how to rewrite its first packet, its
/// backend, and whether it took a held tuple over.
pub struct Opened {
    pub rewrite: Endpoints,
    pub backend_id: u32,
    pub evicted: bool,
}

/// A new connection to open: its first packet's key and context.
#[derive(Clone, Copy)]
pub struct NewConnection<'a> {
    pub ctx: &'a XdpContext,
    pub key: &'a FlowKey,
    pub service: &'a Service,
    pub settings: &'a Settings,
    pub now_ns: u64,
}

/// Chooses the backend of a new connection, its SNAT tuple, and records
/// both directions. The caller handles an empty pool.
///
#[inline(always)]
pub fn open(new: &NewConnection, opening: &Opening) -> Result<Opened, Counter> {
    let NewConnection {
        ctx,
        key,
        service,
        settings,
        now_ns,
    } = *new;
    // The caller refuses connections to an empty pool; this also keeps the
    // modulo below free of a division-by-zero panic path.
    if service.slot_count == 0 {
        return Err(Counter::DropNoBackend);
    }
    let cursor = CURSORS.get_ptr_mut(service.id).ok_or(Counter::DropNoBackend)?;
    // The BPF target has no atomic types (no compare-and-swap), but it has
    // fetch-and-add, which makes the round robin exact across CPUs.
    // SeqCst, not Relaxed: LLVM 22's BPF backend lowers a relaxed
    // fetch-and-add whose result is used to a plain `lock add` and then reads
    // the addend as the result. BPF atomics are full barriers anyway.
    // SAFETY: the map value is a live, aligned u64 shared by all CPUs; all
    // access to it is atomic.
    let turn = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(cursor, 1) };
    let slot = (turn % u64::from(service.slot_count)) as u32;
    let backend = SLOTS
        .get(slot_index(service.id, service.generation & 1, slot))
        .ok_or(Counter::DropNoBackend)?;

    let tcp = key.proto == IPPROTO_TCP;
    // The two new entries are built in per-CPU scratch space: the stack
    // (512 bytes) cannot hold them next to everything else.
    let scratch = NEW_ENTRIES.get_ptr_mut(0).ok_or(Counter::DropConntrackFull)?;
    // SAFETY: this CPU's slot, used by nobody else while the program runs.
    let (forward, reply) = unsafe { (&mut (*scratch).forward, &mut (*scratch).reply) };
    *forward = Flow {
        rewrite: Endpoints {
            src_addr: 0,
            dst_addr: backend.addr,
            src_port: 0,
            dst_port: backend.port,
        },
        backend_id: backend.backend_id,
        service_id: service.id as u16,
        direction: DIRECTION_FORWARD,
        state: if tcp { FLOW_SEQ_KNOWN } else { 0 },
        next_hop: NextHop {
            ifindex: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        },
        claim: 0,
        last_seen_ns: now_ns,
        seq_next: opening.seq_next,
        max_window: opening.window,
        window_scale: opening.window_scale,
        retired: 0,
        next_hop_mtu: 0,
        peer_window: 0,
        seq_shift: 0,
        ack_shift: 0,
        proxy_isn: 0,
        proxy: PROXY_NONE,
        client_window_scale: 0,
        backend_window_scale: 0,
        _pad: 0,
    };
    if let Some(by_cookie) = &opening.by_cookie {
        forward.proxy = PROXY_PENDING;
        forward.proxy_isn = by_cookie.cookie;
        forward.client_window_scale = by_cookie.client_window_scale;
    }
    *reply = Flow {
        rewrite: Endpoints {
            src_addr: key.dst_addr,
            dst_addr: key.src_addr,
            src_port: key.dst_port,
            dst_port: key.src_port,
        },
        direction: DIRECTION_REPLY,
        state: 0,
        seq_next: 0,
        max_window: 0,
        window_scale: 0,
        peer_window: opening.window,
        ..*forward
    };

    let client_port = u16::from_be(key.src_port);
    let first = u32::from(settings.snat_port_first);
    let mut search = TupleSearch {
        xdp: ctx.ctx,
        settings,
        reply,
        key: *key,
        backend_addr: backend.addr,
        backend_port: backend.port,
        now_ns,
        hash: spread(
            settings.hash_seed,
            key.src_addr,
            key.src_port,
            backend.addr,
            backend.port,
        ),
        // Not clamped to MAX_SNAT_ADDRS here: the mask on the index must
        // stay, for the verifier. A zero count would be a userspace bug.
        addr_count: match settings.snat_addr_count {
            0 => 1,
            n => n,
        },
        keep_port: client_port >= FIRST_UNPRIVILEGED_PORT
            && !(settings.local_port_first..=settings.local_port_last).contains(&client_port),
        port_first: first,
        port_range: u32::from(settings.snat_port_last).saturating_sub(first) + 1,
        proven: opening.by_cookie.is_some(),
        found: Found::Nothing,
        chosen: *key,
        evictable: false,
        oldest_evictable: *key,
        oldest_age_ns: 0,
        oldest_half_open: false,
    };
    for attempt in 0..(KEPT_PORT_ATTEMPTS + SNAT_PORT_RETRIES) {
        if probe_tuple(&mut search, attempt) {
            break;
        }
    }
    let (chosen, evicted) = match search.found {
        Found::Inserted => {
            forward.rewrite.src_addr = search.chosen.dst_addr;
            forward.rewrite.src_port = search.chosen.dst_port;
            return finish(key, forward, &search.chosen, false);
        }
        Found::TableFull => return Err(Counter::DropConntrackFull),
        Found::Free => (search.chosen, false),
        // Under pressure: the oldest closed or stalled half-open tuple seen.
        Found::Nothing if search.evictable => {
            if search.oldest_half_open {
                mark_syn_pressure(service.id, now_ns);
            }
            (search.oldest_evictable, true)
        }
        Found::Nothing => {
            mark_syn_pressure(service.id, now_ns);
            return Err(Counter::DropNatPortsExhausted);
        }
    };
    let Some(owner) = FLOWS.get_ptr_mut(&chosen) else {
        return Err(Counter::DropNatPortsExhausted);
    };
    if !take_over(owner, &chosen, reply) {
        return Err(Counter::DropNatPortsExhausted);
    }
    forward.rewrite.src_addr = chosen.dst_addr;
    forward.rewrite.src_port = chosen.dst_port;
    finish(key, forward, &chosen, evicted)
}

/// Makes the service answer SYNs with cookies for a while: its SNAT
/// tuples are running out to half-open connections.
#[inline(always)]
fn mark_syn_pressure(service_id: u32, now_ns: u64) {
    if let Some(until) = SYN_PRESSURE.get_ptr_mut(service_id) {
        // SAFETY: a live array slot; a torn or lost write between CPUs
        // leaves one of their deadlines, which is as good.
        unsafe { *until = now_ns + SYN_PRESSURE_NS };
    }
}

/// What the search for a SNAT tuple found.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Found {
    /// Nothing free (yet).
    Nothing,
    /// An unused tuple, now recorded with the new reply entry.
    Inserted,
    /// A tuple whose owner may be replaced (see `tuple_owner`).
    Free,
    /// The table refused an insert.
    TableFull,
}

/// The state of the search for a new connection's SNAT tuple.
struct TupleSearch<'a> {
    xdp: *mut aya_ebpf::bindings::xdp_md,
    settings: &'a Settings,
    reply: &'a Flow,
    key: FlowKey,
    backend_addr: u32,
    backend_port: u16,
    now_ns: u64,
    hash: u32,
    addr_count: u32,
    keep_port: bool,
    port_first: u32,
    port_range: u32,
    /// The client answered a SYN cookie (see `tuple_owner`).
    proven: bool,
    found: Found,
    chosen: FlowKey,
    evictable: bool,
    oldest_evictable: FlowKey,
    oldest_age_ns: u64,
    oldest_half_open: bool,
}

/// One attempt at a SNAT tuple: attempts below KEPT_PORT_ATTEMPTS try the
/// client's own port at successive SNAT addresses, the rest probe the pool.
/// True (stop) once a tuple is found or the table is full.
#[inline(always)]
fn probe_tuple(search: &mut TupleSearch, attempt: u32) -> bool {
    // Never zero (see `open`); the check keeps the modulos below free of a
    // division-by-zero panic path, which the verifier refuses.
    let (addr_count, port_range) = (search.addr_count, search.port_range);
    if addr_count == 0 || port_range == 0 {
        return true;
    }
    let (addr_slot, port, kept) = if attempt < KEPT_PORT_ATTEMPTS {
        if !search.keep_port || attempt >= addr_count {
            return false;
        }
        (
            search.hash.wrapping_add(attempt) % addr_count,
            u16::from_be(search.key.src_port),
            true,
        )
    } else {
        let probe = attempt - KEPT_PORT_ATTEMPTS;
        let offset = if probe < HASHED_PROBES {
            (search.hash >> 8).wrapping_add(probe.wrapping_mul(port_range / HASHED_PROBES + 1))
        } else {
            // SAFETY: plain helper call.
            unsafe { bpf_get_prandom_u32() }
        };
        (
            search.hash.wrapping_add(probe) % addr_count,
            (search.port_first + offset % port_range) as u16,
            false,
        )
    };
    let Some(&snat_addr) = search
        .settings
        .snat_addrs
        .get((addr_slot as usize) & (MAX_SNAT_ADDRS - 1))
    else {
        return false;
    };
    let candidate = Endpoints {
        src_addr: snat_addr,
        dst_addr: search.backend_addr,
        src_port: port.to_be(),
        dst_port: search.backend_port,
    }
    .reply_key(search.key.proto);
    if kept && local_socket_holds(search.xdp, &candidate) {
        return false;
    }
    match FLOWS.insert(&candidate, search.reply, BPF_NOEXIST) {
        Ok(()) => {
            search.found = Found::Inserted;
            search.chosen = candidate;
            return true;
        }
        Err(EEXIST) => {}
        Err(_) => {
            search.found = Found::TableFull;
            return true;
        }
    }
    let Some(owner) = FLOWS.get_ptr(&candidate) else {
        return false;
    };
    // SAFETY: a live entry that other CPUs may update in place; a torn read
    // at worst misjudges one tuple, and the claim settles races between
    // CPUs that judged it free.
    let owner = unsafe { &*owner };
    match tuple_owner(owner, &search.key, search.now_ns, search.settings, search.proven) {
        TupleOwner::Free => {
            search.found = Found::Free;
            search.chosen = candidate;
            return true;
        }
        TupleOwner::Evictable { age_ns, half_open } => {
            if !search.evictable || age_ns > search.oldest_age_ns {
                search.evictable = true;
                search.oldest_evictable = candidate;
                search.oldest_age_ns = age_ns;
                search.oldest_half_open = half_open;
            }
        }
        TupleOwner::Held => {}
    }
    false
}

/// Records the client-side entry once the tuple is ours.
#[inline(always)]
fn finish(key: &FlowKey, forward: &Flow, reply_key: &FlowKey, evicted: bool) -> Result<Opened, Counter> {
    // NOEXIST: the caller removed any stale entry, so an existing one was
    // created just now by another CPU for the same packet (a SYN
    // retransmitted onto another queue). Its decision stands.
    match FLOWS.insert(key, forward, BPF_NOEXIST) {
        Ok(()) => Ok(Opened {
            rewrite: forward.rewrite,
            backend_id: forward.backend_id,
            evicted,
        }),
        Err(error) => {
            let _ = FLOWS.remove(reply_key);
            // SAFETY: read of a live entry, as in the caller.
            match unsafe { FLOWS.get(key) } {
                Some(winner) if error == EEXIST => Ok(Opened {
                    rewrite: winner.rewrite,
                    backend_id: winner.backend_id,
                    evicted: false,
                }),
                _ => Err(Counter::DropConntrackFull),
            }
        }
    }
}

/// Takes the tuple of reply entry `owner` for a new connection, whose
/// reply entry is `reply`: of the CPUs that judged it free, only the first
/// to bump its claim counter wins. The old connection's client-side entry
/// goes too, if it still points at the tuple.
#[inline(always)]
fn take_over(owner: *mut Flow, reply_key: &FlowKey, reply: &mut Flow) -> bool {
    // SAFETY: owner points into a live map value; the claim is only ever
    // changed atomically, and the old connection's rewrite never changes.
    let (expected, old_client) = unsafe { ((*owner).claim, (*owner).rewrite) };
    // SAFETY: as above.
    let seen = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(&raw mut (*owner).claim, 1) };
    if seen != expected {
        return false;
    }
    reply.claim = seen.wrapping_add(1);
    if FLOWS.insert(reply_key, reply, BPF_ANY).is_err() {
        return false;
    }
    let old_forward_key = old_client.reply_key(reply_key.proto);
    // SAFETY: read of a live entry.
    if let Some(old) = unsafe { FLOWS.get(&old_forward_key) } {
        if old.rewrite.reply_key(reply_key.proto) == *reply_key {
            let _ = FLOWS.remove(&old_forward_key);
        }
    }
    true
}

/// Whether a socket of this host (any process: a health check, an
/// operator's connection, a listener) has the tuple the backend would
/// answer to.
#[inline(always)]
fn local_socket_holds(xdp: *mut aya_ebpf::bindings::xdp_md, reply_key: &FlowKey) -> bool {
    // SAFETY: all-zero is a valid value of this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.saddr = reply_key.src_addr;
    tuple.__bindgen_anon_1.ipv4.daddr = reply_key.dst_addr;
    tuple.__bindgen_anon_1.ipv4.sport = reply_key.src_port;
    tuple.__bindgen_anon_1.ipv4.dport = reply_key.dst_port;
    let size = 12; // the IPv4 member
                   // SAFETY: xdp is the program's xdp_md; the tuple is a valid buffer.
    let socket = unsafe {
        if reply_key.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(xdp.cast(), &mut tuple, size, BPF_F_CURRENT_NETNS as u64, 0)
        } else {
            bpf_sk_lookup_udp(xdp.cast(), &mut tuple, size, BPF_F_CURRENT_NETNS as u64, 0)
        }
    };
    if socket.is_null() {
        return false;
    }
    // SAFETY: a socket reference the lookup took; released exactly once.
    unsafe { bpf_sk_release(socket.cast()) };
    true
}

/// A hash of the client and backend that spreads connections over SNAT
/// addresses and pool ports (a multiply-xorshift mix; seeded per start).
#[inline(always)]
fn spread(seed: u32, client_addr: u32, client_port: u16, backend_addr: u32, backend_port: u16) -> u32 {
    let mut h = seed ^ client_addr.wrapping_mul(0x9e37_79b9);
    h ^= (u32::from(client_port) << 16 | u32::from(backend_port)).wrapping_mul(0x85eb_ca6b);
    h ^= backend_addr.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^ (h >> 15)
}

/// Forgets a connection, given its client-side entry (superseded by a new
/// SYN, or an expired UDP flow). Only the reply entry that belongs to it is
/// touched: its tuple may already serve another connection.
#[inline(always)]
pub fn close(key: &FlowKey, flow: &Flow, now_ns: u64) {
    let reply_key = flow.rewrite.reply_key(key.proto);
    let _ = FLOWS.remove(key);
    let Some(reply) = FLOWS.get_ptr_mut(&reply_key) else {
        return;
    };
    // SAFETY: a copy of a live entry.
    let owner = unsafe { *reply };
    if owner.rewrite.reply_key(key.proto) != *key {
        return;
    }
    // A UDP flow, or a TCP connection whose handshake never completed: the
    // backend keeps nothing that the next user of the tuple could meet.
    if key.proto != IPPROTO_TCP || owner.state & FLOW_ESTABLISHED == 0 {
        let _ = FLOWS.remove(&reply_key);
        return;
    }
    // An established TCP connection's reply entry stays, marked closing: it
    // holds the tuple while the backend may remember it (see `tuple_owner`).
    // SAFETY: field writes into a live map value.
    unsafe {
        (*reply).state |= FLOW_CLOSING;
        (*reply).retired = 1;
        (*reply).last_seen_ns = now_ns;
    }
}

/// The entry of the other direction of the connection `flow` belongs to,
/// if it is there and belongs to it.
#[inline(always)]
pub(crate) fn other_direction(key: &FlowKey, flow: &Flow) -> Option<*mut Flow> {
    let other_key = flow.rewrite.reply_key(key.proto);
    let other = FLOWS.get_ptr_mut(&other_key)?;
    // SAFETY: a field of a live entry.
    let back = unsafe { (*other).rewrite };
    (back.reply_key(key.proto) == *key).then_some(other)
}

/// Checks, at a connection's refresh (at most once a second), that its
/// other direction's entry is still there: the LRU may have evicted one
/// entry of the two. A missing one is rebuilt from this one, so the
/// connection is never left half (replies untranslated); if its tuple has
/// meanwhile gone to another connection, this entry is removed and its
/// packet dropped (`drop_conntrack_full`): translating it would put it on
/// someone else's connection.
#[inline(always)]
pub fn heal(key: &FlowKey, current: &Flow) -> Result<(), Counter> {
    let other_key = current.rewrite.reply_key(key.proto);
    if let Some(other) = FLOWS.get_ptr(&other_key) {
        // SAFETY: a field of a live entry.
        let back = unsafe { (*other).rewrite };
        if back.reply_key(key.proto) == *key {
            return Ok(());
        }
        let _ = FLOWS.remove(key);
        return Err(Counter::DropConntrackFull);
    }
    if current.retired != 0 {
        // Its client reopened the port as a new connection (`close`), which
        // the old half must not be rebuilt over. Its last segments still
        // pass.
        return Ok(());
    }
    let scratch = NEW_ENTRIES.get_ptr_mut(0).ok_or(Counter::DropConntrackFull)?;
    // SAFETY: this CPU's slot, used by nobody else while the program runs.
    let rebuilt = unsafe { &mut (*scratch).reply };
    *rebuilt = Flow {
        rewrite: Endpoints {
            src_addr: key.dst_addr,
            dst_addr: key.src_addr,
            src_port: key.dst_port,
            dst_port: key.src_port,
        },
        direction: if current.direction == DIRECTION_FORWARD {
            DIRECTION_REPLY
        } else {
            DIRECTION_FORWARD
        },
        // Its own sequence space is unknown again; the mirrored bits stay.
        state: current.state & !(FLOW_SEQ_KNOWN | FLOW_CHALLENGED),
        next_hop: NextHop {
            ifindex: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        },
        claim: 0,
        seq_next: 0,
        max_window: current.peer_window,
        // Unknown: the widest, so its windows are never underestimated.
        window_scale: MAX_WINDOW_SCALE,
        retired: 0,
        next_hop_mtu: 0,
        peer_window: current.max_window,
        // The other direction's shifts mirror this one's (see Flow).
        seq_shift: 0_u32.wrapping_sub(current.ack_shift),
        ack_shift: 0_u32.wrapping_sub(current.seq_shift),
        ..*current
    };
    if FLOWS.insert(&other_key, rebuilt, BPF_NOEXIST).is_err() {
        // Taken a moment ago by a new connection, or the table refused.
        let _ = FLOWS.remove(key);
        return Err(Counter::DropConntrackFull);
    }
    Ok(())
}

/// Follows a TCP segment of a tracked connection: its entry `flow` (found
/// under `key`, copied as `current`). A RST or FIN outside the tracked
/// window is refused (it must not close, or let a SYN rebalance, a live
/// connection); the SYN-ACK starts the backend's sequence space; the
/// client's ACK of it ends the half-open state.
#[inline(always)]
pub fn track_tcp(
    key: &FlowKey,
    flow: *mut Flow,
    current: &Flow,
    segment: &Segment,
    syn_window_scale: impl Fn() -> u8,
    now_ns: u64,
) -> Result<(), Counter> {
    let from_client = current.direction == DIRECTION_FORWARD;
    let flags = segment.flags;
    let stale = now_ns.saturating_sub(current.last_seen_ns) > REFRESH_INTERVAL_NS;

    if current.state & FLOW_SEQ_KNOWN == 0 {
        if flags & (TCP_SYN | TCP_ACK | TCP_RST) == (TCP_SYN | TCP_ACK) && !from_client {
            let scale = syn_window_scale();
            // SAFETY: field writes into live map values.
            unsafe {
                if let Some(other) = other_direction(key, current) {
                    (*other).peer_window = u32::from(segment.window);
                    if scale == 0 {
                        // Without the option both ways, neither window is scaled.
                        (*other).window_scale = 0;
                    }
                }
                (*flow).seq_next = segment.end();
                (*flow).max_window = u32::from(segment.window);
                (*flow).window_scale = scale;
                (*flow).state |= FLOW_SEQ_KNOWN;
                (*flow).last_seen_ns = now_ns;
            }
            return Ok(());
        }
        // Only while the handshake is on: an established entry without a
        // sequence space is one `heal` rebuilt, picked up below.
        if !from_client && current.state & FLOW_ESTABLISHED == 0 && challenges_syn(segment) {
            // SAFETY: field writes into a live map value.
            unsafe {
                (*flow).seq_next = segment.ack;
                (*flow).state |= FLOW_CHALLENGED;
            }
            return Ok(());
        }
    }
    let picked_up =
        current.state & (FLOW_SEQ_KNOWN | FLOW_ESTABLISHED) == FLOW_ESTABLISHED && flags & TCP_SYN == 0;
    if picked_up {
        // An entry rebuilt mid-connection (see `heal`): its sequence space
        // is picked up from the first segment it sees, as conntrack picks
        // up connections mid-stream.
        // SAFETY: field writes into a live map value.
        unsafe {
            (*flow).seq_next = segment.seq;
            (*flow).state |= FLOW_SEQ_KNOWN;
        }
    }
    // SAFETY: the live entry, just written; read only from here on.
    let current: &Flow = if picked_up { unsafe { &*flow } } else { current };

    if flags & (TCP_RST | TCP_FIN) != 0 {
        let other = other_direction(key, current);
        // SAFETY: a live entry, read only.
        let receiver = other.map(|other| unsafe { &*other });
        if !may_close(segment, current, receiver) {
            return Err(Counter::DropTcpOutOfWindow);
        }
        let bits = closing_bits(
            flags,
            from_client,
            current.state | receiver.map_or(0, |r| r.state),
        );
        // SAFETY: field writes into live map values.
        unsafe {
            (*flow).state |= bits;
            (*flow).last_seen_ns = now_ns;
            if let Some(other) = other {
                (*other).state |= bits;
                (*other).last_seen_ns = now_ns;
            }
        }
        advance(key, flow, current, segment);
        return Ok(());
    }

    if from_client && current.state & FLOW_ESTABLISHED == 0 {
        if let Some(reply) = other_direction(key, current) {
            // SAFETY: a copy of a live entry; field writes into live entries.
            unsafe {
                if completes_handshake(segment, &*reply) {
                    (*reply).state |= FLOW_ESTABLISHED;
                    (*flow).state |= FLOW_ESTABLISHED;
                }
            }
        }
    }
    advance(key, flow, current, segment);
    if stale {
        // SAFETY: field write into a live map value.
        unsafe { (*flow).last_seen_ns = now_ns };
    }
    Ok(())
}

/// Moves this direction's sequence space and window on, writing only what
/// grows (most segments write nothing): `seq_next` for a segment within
/// the peer's window, and the offered window, mirrored into the other
/// direction's `peer_window`.
#[inline(always)]
fn advance(key: &FlowKey, flow: *mut Flow, current: &Flow, segment: &Segment) {
    if current.state & FLOW_SEQ_KNOWN == 0 {
        return;
    }
    let end = segment.end();
    if seq_after(end, current.seq_next) && may_advance(segment, current) {
        // SAFETY: field write into a live map value.
        unsafe { (*flow).seq_next = end };
    }
    // A SYN's window is never scaled (RFC 7323).
    let window = if segment.flags & TCP_SYN != 0 {
        u32::from(segment.window)
    } else {
        u32::from(segment.window) << (current.window_scale & 15)
    };
    if window > current.max_window {
        // SAFETY: field writes into live map values.
        unsafe {
            (*flow).max_window = window;
            if let Some(other) = other_direction(key, current) {
                (*other).peer_window = window;
            }
        }
    }
}

/// Refreshes a UDP flow: both directions, so that a flow kept alive only by
/// replies (a one-way stream to the client) does not expire.
#[inline(always)]
pub fn refresh_udp(key: &FlowKey, flow: *mut Flow, current: &Flow, now_ns: u64) {
    // SAFETY: field writes into live map values.
    unsafe {
        (*flow).last_seen_ns = now_ns;
        if let Some(other) = other_direction(key, current) {
            (*other).last_seen_ns = now_ns;
        }
    }
}
