//! Every size and bound of the data plane, in one place.

/// Services (VIP address, port, protocol) the service map can hold.
pub const MAX_SERVICE_KEYS: u32 = 1024;
/// Distinct services (a service can listen on several VIP addresses).
pub const MAX_SERVICES: u32 = 64;
/// Round-robin slots one service's table can hold (a backend of weight w takes w slots).
pub const MAX_SLOTS_PER_SERVICE: u32 = 256;
/// Each service has two slot tables: the live one and the one being written.
pub const SLOT_TABLE_GENERATIONS: u32 = 2;
/// Total entries of the slot array.
pub const SLOT_ARRAY_SIZE: u32 = MAX_SERVICES * SLOT_TABLE_GENERATIONS * MAX_SLOTS_PER_SERVICE;
/// Backend identities the data plane can count separately.
pub const MAX_BACKENDS: u32 = 4096;
/// Default size of the connection table; each connection uses two entries.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;
/// Interfaces the program can serve: the slots of INTERFACE_MACS, which the
/// program scans for the ingress interface.
pub const MAX_INTERFACES: u32 = 16;
/// Local addresses that may own SNAT ports (the LB's private addresses).
pub const MAX_LOCAL_ADDRS: u32 = 16;
/// Pool ports probed for a new connection (after the client's own port at
/// each SNAT address) before the oldest evictable tuple is taken or the
/// connection dropped.
pub const SNAT_PORT_RETRIES: u32 = 12;

/// Index of a slot in the slot array.
#[inline(always)]
#[must_use]
pub const fn slot_index(service_id: u32, generation: u32, slot: u32) -> u32 {
    (service_id * SLOT_TABLE_GENERATIONS + generation) * MAX_SLOTS_PER_SERVICE + slot
}
