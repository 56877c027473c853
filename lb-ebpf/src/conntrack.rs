//! Creating connections: backend choice by round robin, SNAT port
//! allocation, and the insert of both directions of the connection table.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::headers::IPPROTO_TCP;
use lb_common::{
    conntrack::port_reusable,
    limits::{slot_index, SNAT_PORT_RETRIES},
    maps::{Endpoints, Flow, FlowKey, NextHop, Service, Settings, DIRECTION_FORWARD, DIRECTION_REPLY},
    stats::Counter,
};

use crate::maps::{CURSORS, FLOWS, SLOTS};

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = -17;

/// Chooses the backend of a new connection with key `key`, allocates its
/// SNAT port and records both directions. Returns how to rewrite the packet
/// and the backend's id. The caller handles an empty pool.
#[inline(always)]
pub fn open(
    key: &FlowKey,
    service: &Service,
    settings: &Settings,
    now_ns: u64,
) -> Result<(Endpoints, u32), Counter> {
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

    let reply_rewrite = Endpoints {
        src_addr: key.dst_addr,
        dst_addr: key.src_addr,
        src_port: key.dst_port,
        dst_port: key.src_port,
    };
    let mut forward = Flow {
        rewrite: Endpoints {
            src_addr: settings.snat_addr,
            dst_addr: backend.addr,
            src_port: 0,
            dst_port: backend.port,
        },
        backend_id: backend.backend_id,
        service_id: service.id as u16,
        direction: DIRECTION_FORWARD,
        state: 0,
        next_hop: NextHop {
            ifindex: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        },
        _pad: 0,
        last_seen_ns: now_ns,
    };
    let reply = Flow {
        rewrite: reply_rewrite,
        direction: DIRECTION_REPLY,
        ..forward
    };

    let first = u32::from(settings.snat_port_first);
    let range = u32::from(settings.snat_port_last).saturating_sub(first) + 1;
    for _ in 0..SNAT_PORT_RETRIES {
        // SAFETY: plain helper call.
        let port = ((first + unsafe { bpf_get_prandom_u32() } % range) as u16).to_be();
        forward.rewrite.src_port = port;
        let reply_key = forward.rewrite.reply_key(key.proto);
        match FLOWS.insert(&reply_key, &reply, BPF_NOEXIST) {
            Ok(()) => {}
            Err(EEXIST) => {
                // SAFETY: read-only peek at an entry that may be replaced concurrently;
                // a torn read only makes us skip or take a port that was free anyway.
                let reusable = unsafe { FLOWS.get(&reply_key) }
                    .is_some_and(|old| port_reusable(old, key.proto, now_ns, settings));
                if !reusable || FLOWS.insert(&reply_key, &reply, BPF_ANY).is_err() {
                    continue;
                }
            }
            Err(_) => return Err(Counter::DropConntrackFull),
        }
        // NOEXIST: the caller removed any stale entry, so an existing one was
        // created just now by another CPU for the same packet (a SYN
        // retransmitted onto another queue). Its decision stands.
        return match FLOWS.insert(key, &forward, BPF_NOEXIST) {
            Ok(()) => Ok((forward.rewrite, forward.backend_id)),
            Err(error) => {
                let _ = FLOWS.remove(&reply_key);
                // SAFETY: read of a live entry, as in the caller.
                match unsafe { FLOWS.get(key) } {
                    Some(winner) if error == EEXIST => Ok((winner.rewrite, winner.backend_id)),
                    _ => Err(Counter::DropConntrackFull),
                }
            }
        };
    }
    Err(Counter::DropNatPortsExhausted)
}

/// Forgets a connection, given its client-side entry.
#[inline(always)]
pub fn close(key: &FlowKey, flow: &Flow, now_ns: u64) {
    let reply_key = flow.rewrite.reply_key(key.proto);
    if key.proto != IPPROTO_TCP {
        let _ = FLOWS.remove(&reply_key);
        let _ = FLOWS.remove(key);
        return;
    }
    // A TCP reply entry stays, marked closed: it holds the SNAT port until
    // the backend's TIME_WAIT for it is over (see `port_reusable`), so that
    // the next connection does not reuse a 4-tuple the backend remembers.
    if let Some(reply) = FLOWS.get_ptr_mut(&reply_key) {
        mark_entry_closing(reply, now_ns);
    }
    let _ = FLOWS.remove(key);
}

/// Marks one entry closed as of `now_ns`.
#[inline(always)]
fn mark_entry_closing(entry: *mut Flow, now_ns: u64) {
    // SAFETY: entry points into a live map value; field writes only.
    unsafe {
        (*entry).state |= lb_common::maps::FLOW_CLOSING;
        (*entry).last_seen_ns = now_ns;
    }
}

/// Marks both entries of the connection that `flow` (found under `key`)
/// belongs to as closing.
#[inline(always)]
pub fn mark_closing(flow: *mut Flow, proto: u8, now_ns: u64) {
    mark_entry_closing(flow, now_ns);
    // SAFETY: flow points into the map value found by the caller.
    let other_key = unsafe { (*flow).rewrite.reply_key(proto) };
    if let Some(other) = FLOWS.get_ptr_mut(&other_key) {
        mark_entry_closing(other, now_ns);
    }
}
