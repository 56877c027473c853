//! The maps shared with userspace. Sizes come from `lb_common::limits`;
//! userspace may resize FLOWS at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    limits::{
        DEFAULT_CONNTRACK_ENTRIES, MAX_BACKENDS, MAX_INTERFACES, MAX_SERVICES, MAX_SERVICE_KEYS,
        SLOT_ARRAY_SIZE,
    },
    maps::{
        BackendSlot, BackendStats, Flow, FlowKey, InterfaceMac, PeerHandoff, Service, ServiceKey,
        ServiceStats, Settings,
    },
    stats::COUNTER_COUNT,
};

#[map(name = "SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Each data-plane interface's index and own MAC, in slots from 0 (see
/// InterfaceMac): unicast frames for any other MAC are not ours.
#[map(name = "INTERFACE_MACS")]
pub static INTERFACE_MACS: Array<InterfaceMac> = Array::with_max_entries(MAX_INTERFACES, 0);

#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICE_KEYS, 0);

/// Every address a service listens on; value unused. Lets the program tell a
/// malformed packet for a VIP (dropped) from one for anything else (passed).
#[map(name = "VIP_ADDRS")]
pub static VIP_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_SERVICE_KEYS, 0);

/// Per-service round-robin slot tables, two generations each.
#[map(name = "SLOTS")]
pub static SLOTS: Array<BackendSlot> = Array::with_max_entries(SLOT_ARRAY_SIZE, 0);

/// Per-service count of connections handed out, shared by all CPUs.
#[map(name = "CURSORS")]
pub static CURSORS: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

/// The connection table: both directions of every connection.
#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Per-CPU scratch space for the two entries of a new connection.
#[map(name = "NEW_ENTRIES")]
pub static NEW_ENTRIES: PerCpuArray<NewEntries> = PerCpuArray::with_max_entries(1, 0);

/// A new connection's entries while they are built.
#[repr(C)]
pub struct NewEntries {
    pub forward: Flow,
    pub reply: Flow,
}

#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Traffic per service id.
#[map(name = "SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Traffic per backend id.
#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendStats> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per service id: until when (bpf_ktime_get_coarse_ns) its SYNs are
/// answered with SYN cookies, set when a new connection found no SNAT
/// tuple or took one from a half-open connection (a SYN flood).
#[map(name = "SYN_PRESSURE")]
pub static SYN_PRESSURE: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

/// The VRRP peer that unknown TCP segments are handed to (see PeerHandoff).
#[map(name = "PEER")]
pub static PEER: Array<PeerHandoff> = Array::with_max_entries(1, 0);
