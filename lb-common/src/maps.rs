//! Keys and values of the BPF maps. Addresses and ports are in network byte
//! order (the u32/u16 whose memory holds the wire bytes), so the packet path
//! never swaps; settings that are only compared are in host order.

/// A service is found by the address, port and protocol a client sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// What a new connection to a service needs: where its live slot table is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Index of the service's round-robin cursor and slot tables.
    pub id: u32,
    /// Slots in the live table; 0 means no backend can take a connection.
    pub slot_count: u32,
    /// Which of the two slot tables is live. Userspace writes the other one,
    /// then replaces this value in one map update, so a packet never sees a
    /// half-written table.
    pub generation: u32,
    pub flags: u32,
}

/// `Service::flags`: answer a new TCP connection with a reset (instead of
/// dropping it) when the service has no backend to take it.
pub const SERVICE_RESET_WHEN_EMPTY: u32 = 0x1;
/// `Service::flags`: answer every SYN with a SYN cookie (`syn_cookies =
/// "always"`). Without this flag or SERVICE_SYN_COOKIES_NEVER, SYNs are
/// answered with cookies only under pressure (see SYN_PRESSURE).
pub const SERVICE_SYN_COOKIES_ALWAYS: u32 = 0x2;
/// `Service::flags`: never answer SYNs with cookies (`syn_cookies = "never"`).
pub const SERVICE_SYN_COOKIES_NEVER: u32 = 0x4;

/// Per-service traffic, per CPU. "In" is from clients, "out" is to clients.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub connections: u64,
    /// New connections refused (reset or dropped) because no backend could take them.
    pub refused: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// Per-backend traffic, per CPU. "To" is towards the backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub connections: u64,
    pub packets_to: u64,
    pub bytes_to: u64,
    pub packets_from: u64,
    pub bytes_from: u64,
}

/// One entry of a service's round-robin table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSlot {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
    pub backend_id: u32,
}

/// The 5-tuple of a packet as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of packets travelling the other way.
    #[inline(always)]
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// The addresses and ports a packet leaves with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Endpoints {
    /// The flow key of packets that answer a packet sent with these endpoints.
    #[inline(always)]
    #[must_use]
    pub const fn reply_key(&self, proto: u8) -> FlowKey {
        FlowKey {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto,
            _pad: [0; 3],
        }
    }
}

/// `Flow::direction` of client-to-backend packets.
pub const DIRECTION_FORWARD: u8 = 0;
/// `Flow::direction` of backend-to-client packets.
pub const DIRECTION_REPLY: u8 = 1;

/// `Flow::state` bit, on both entries: a valid FIN or RST was seen in
/// either direction; a SYN on the tuple now starts a new connection.
pub const FLOW_CLOSING: u8 = 0x01;
/// `Flow::state` bit, on both entries: the client acknowledged the backend's
/// SYN-ACK, so the connection is no longer half-open.
pub const FLOW_ESTABLISHED: u8 = 0x02;
/// `Flow::state` bit, on one entry: `seq_next`, `max_window` and
/// `window_scale` hold this direction's values (set by its first segment:
/// the SYN, or the SYN-ACK).
pub const FLOW_SEQ_KNOWN: u8 = 0x04;
/// `Flow::state` bit, on both entries: the client sent a valid FIN.
pub const FLOW_FIN_FROM_CLIENT: u8 = 0x08;
/// `Flow::state` bit, on both entries: a valid RST ended the connection;
/// neither end keeps a TIME_WAIT for it.
pub const FLOW_RESET: u8 = 0x10;
/// `Flow::state` bit, on both entries: the backend sent its FIN before the
/// client did, so the backend holds the tuple in TIME_WAIT after close.
pub const FLOW_BACKEND_TIME_WAIT: u8 = 0x20;
/// `Flow::state` bit, on both entries: the backend sent a valid FIN.
pub const FLOW_FIN_FROM_BACKEND: u8 = 0x40;
/// `Flow::state` bit, on the reply entry of a connection whose backend has
/// not sent its SYN-ACK: the backend answered the client's SYN with a plain
/// ACK instead (it still has an older connection on the tuple: TIME_WAIT,
/// SYN_RECV), whose acknowledgement number `seq_next` holds. The client
/// answers that ACK with a RST carrying this number as its sequence number
/// (RFC 793 SYN-SENT), which must reach the backend to clear the old
/// connection; conntrack accepts it the same way.
pub const FLOW_CHALLENGED: u8 = 0x80;

/// Where a translated packet leaves: the result of a FIB lookup, cached in
/// the connection's entry so that most packets skip the lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// 0: not looked up yet (or the neighbour was unresolved).
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// A connection-table entry: how to rewrite packets matching its key. Each
/// connection has two, one per direction, created together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub rewrite: Endpoints,
    pub backend_id: u32,
    pub service_id: u16,
    pub direction: u8,
    pub state: u8,
    /// Valid while `last_seen_ns` is less than a refresh interval old: the
    /// refresh looks it up again, so a changed neighbour is followed within
    /// a second.
    pub next_hop: NextHop,
    /// Bumped atomically by a CPU that takes this entry's tuple for a new
    /// connection: of two CPUs that saw the same value, only the one whose
    /// fetch-and-add returns it wins (the BPF target has no compare-and-swap
    /// in Rust, but it has fetch-and-add).
    pub claim: u32,
    /// `bpf_ktime_get_coarse_ns` at the last refresh (at most once a second).
    pub last_seen_ns: u64,
    /// TCP, host order: the sequence number after the last one this entry's
    /// direction has sent (SYN and FIN count one).
    pub seq_next: u32,
    /// TCP: the largest receive window this entry's direction has offered
    /// (scaled), which bounds how far the other direction's sequence
    /// numbers may move.
    pub max_window: u32,
    /// TCP: the window scale this direction announced in its SYN (0 without).
    pub window_scale: u8,
    /// 1 on a reply entry that `close` retired: its client reopened the
    /// port as a new connection, so its client-side entry is gone for good
    /// and must never be rebuilt from it (unlike one the LRU evicted).
    pub retired: u8,
    /// The path MTU towards `next_hop` (the FIB lookup's), valid with it: a
    /// larger packet gets "fragmentation needed" (DF) or goes to the kernel
    /// to be fragmented. 0: unknown.
    pub next_hop_mtu: u16,
    /// TCP: the other direction's `max_window`, copied here when it grows,
    /// so that this direction's segments are judged without a second lookup.
    /// 0 until the other direction has spoken.
    pub peer_window: u32,
    /// TCP: added to this direction's sequence numbers when it is
    /// translated; `ack_shift` to its acknowledgement numbers and SACK
    /// blocks. Each entry's `ack_shift` is the other's `seq_shift` negated.
    /// Zero but for a connection opened by SYN cookie (see PROXY_OPEN).
    pub seq_shift: u32,
    pub ack_shift: u32,
    /// SYN proxy: the ISN the client was given (its cookie).
    pub proxy_isn: u32,
    /// PROXY_NONE, PROXY_PENDING or PROXY_OPEN.
    pub proxy: u8,
    /// SYN proxy: the window scale the cookie SYN-ACK announced to the
    /// client (0 without the option)...
    pub client_window_scale: u8,
    /// ...and the one the backend announced in its SYN-ACK: the backend's
    /// windows are rescaled from one to the other towards the client.
    pub backend_window_scale: u8,
    pub _pad: u8,
}

/// `Flow::proxy`: an ordinary connection, whose handshake its ends made.
pub const PROXY_NONE: u8 = 0;
/// `Flow::proxy`: the client's handshake was answered by SYN cookie and
/// completed; the SYN sent on to the backend is not answered yet.
pub const PROXY_PENDING: u8 = 1;
/// `Flow::proxy`: both handshakes are done; the backend's sequence space
/// is shifted onto the cookie's (`seq_shift`, `ack_shift`).
pub const PROXY_OPEN: u8 = 2;

/// SNAT addresses the settings can hold.
pub const MAX_SNAT_ADDRS: usize = 8;

/// Data-plane settings (one entry, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Addresses the LB uses as source towards backends (network order);
    /// the first `snat_addr_count` are in use.
    pub snat_addrs: [u32; MAX_SNAT_ADDRS],
    pub snat_addr_count: u32,
    /// SNAT source port pool, host order, inclusive: where a connection's
    /// port comes from when the client's own cannot be kept.
    pub snat_port_first: u16,
    pub snat_port_last: u16,
    /// The kernel's own ephemeral range on this host (ip_local_port_range),
    /// host order: a client port inside it is never kept, so a tuple the
    /// program creates cannot be one the host's own connections (health
    /// checks) pick later.
    pub local_port_first: u16,
    pub local_port_last: u16,
    /// Seeds the hash that spreads clients over SNAT addresses and pool
    /// ports (random per daemon start, so the spread cannot be aimed at).
    pub hash_seed: u32,
    /// A UDP flow idle this long (both directions) is forgotten; the next datagram picks a new backend.
    pub udp_timeout_ns: u64,
    /// A TCP entry idle this long may be replaced by a new SYN with the same tuple.
    pub tcp_idle_timeout_ns: u64,
    /// A half-open connection (SYN seen, handshake not completed) idle this
    /// long is forgotten and its tuple freed.
    pub tcp_handshake_timeout_ns: u64,
    /// How long the tuple of a connection the backend closed first is held
    /// against other clients: the backend's TIME_WAIT.
    pub tcp_time_wait_ns: u64,
    /// How long the tuple of a connection closed by the client first or by
    /// a reset is held: stray segments of the old connection drain.
    pub tcp_close_linger_ns: u64,
    pub flags: u32,
    pub _pad: u32,
    /// The key of SYN cookies, random per daemon start.
    pub cookie_key: [u64; 2],
}

impl Settings {
    /// The SNAT addresses in use.
    #[inline(always)]
    #[must_use]
    pub fn snat_addr_count(&self) -> u32 {
        if self.snat_addr_count as usize > MAX_SNAT_ADDRS {
            MAX_SNAT_ADDRS as u32
        } else {
            self.snat_addr_count
        }
    }
}

/// `Settings::flags`: the program has been configured (set last by userspace).
pub const SETTINGS_READY: u32 = 0x1;

/// The peer load balancer of a VRRP pair (one entry, index 0). After the
/// floating IP moves here, the clients' established connections still
/// belong to the peer, which tracks them: a TCP segment for a service that
/// matches no connection here, arriving on `ifindex` from anyone but the
/// peer, is sent on to the peer's `mac` instead of being answered with a
/// reset. The peer forwards it and replies as before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerHandoff {
    pub peer_mac: [u8; 6],
    /// This node's MAC on `ifindex`: only frames sent to it are handed off
    /// (a frame flooded to us for someone else must not leave with our MAC).
    pub own_mac: [u8; 6],
    /// The interface the floating IP lives on (where the peer is a neighbour).
    pub ifindex: u32,
    /// 0: no peer known, hand nothing off.
    pub enabled: u32,
}

/// A data-plane interface's own MAC address: one slot of the INTERFACE_MACS
/// array. A unicast frame arriving on the interface for any other MAC is
/// for another host (a switch flooded it, or the interface is promiscuous):
/// the program passes it to the kernel untouched, which drops it (the
/// kernel's PACKET_OTHERHOST).
///
/// Userspace fills slots 0, 1, ... in the order of the configured
/// interfaces before it marks the settings ready; the first slot with
/// `ifindex` 0 (no interface has index 0) ends the table. The program scans
/// the slots for the ingress interface: with the usual two interfaces that
/// is one or two inlined array reads, about half the cost of a hash lookup
/// per packet. A unicast frame on an interface the table does not hold is
/// passed as not ready. A slot is rewritten in place only when its
/// interface's MAC changes, so a frame read meanwhile is judged by the old
/// address or the new one, or at worst passed to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are #[repr(C)], contain only integers, and have no
    // implicit padding (every gap is an explicit `_pad` field).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::BackendSlot {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::ServiceStats {}
    unsafe impl aya::Pod for super::BackendStats {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::PeerHandoff {}
    unsafe impl aya::Pod for super::InterfaceMac {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<Service>(), 16);
        assert_eq!(size_of::<BackendSlot>(), 12);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<Endpoints>(), 12);
        assert_eq!(size_of::<NextHop>(), 16);
        assert_eq!(size_of::<Flow>(), 80);
        assert_eq!(size_of::<Settings>(), 112);
        assert_eq!(size_of::<InterfaceMac>(), 12);
    }

    #[test]
    fn reply_key_of_rewrite_is_reverse_tuple() {
        let out = Endpoints {
            src_addr: 1,
            dst_addr: 2,
            src_port: 3,
            dst_port: 4,
        };
        let key = out.reply_key(6);
        assert_eq!(
            (key.src_addr, key.dst_addr, key.src_port, key.dst_port),
            (2, 1, 4, 3)
        );
        assert_eq!(key.reversed().reversed(), key);
    }
}
