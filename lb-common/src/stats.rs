//! Global data-plane counters: one per-CPU slot per outcome, so each packet
//! is counted exactly once, by the reason for what happened to it.

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($(#[doc = $doc])* $variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// Stable snake_case name, used in logs and metrics.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    /// Forwarded: first packet of a new connection.
    ForwardNew = "forward_new",
    /// Forwarded: first packet of a new connection, which took over the
    /// SNAT tuple of a closed connection still within its hold, or of a
    /// half-open one, because no free tuple was found (see README: SNAT
    /// capacity). The oldest such tuple goes first.
    ForwardNewEvicting = "forward_new_evicting",
    /// Forwarded: later client-to-backend packet.
    ForwardEstablished = "forward_established",
    /// Forwarded: backend-to-client packet, reverse-translated.
    ForwardReply = "forward_reply",
    /// Forwarded: an ICMP error (destination unreachable, fragmentation
    /// needed, time exceeded) about a tracked connection, translated like
    /// the connection's packets in its direction (outer and quoted headers).
    ForwardIcmpError = "forward_icmp_error",
    /// A packet too big for the path it would take, with DF set: answered,
    /// as a router does, with ICMP "fragmentation needed" and the path's
    /// MTU, back to its sender (a client or a backend), untranslated.
    IcmpFragNeeded = "icmp_frag_needed",
    /// A packet too big for the path, without DF (or an ICMP error too
    /// big): translated and handed to the kernel, which fragments it.
    PassToFragment = "pass_to_fragment",
    /// Translated, but the next hop's MAC is unknown: handed to the kernel to resolve and forward.
    PassNoNeighbour = "pass_no_neighbour",
    /// Translated, but no route (or forwarding disabled): handed to the kernel.
    PassNoRoute = "pass_no_route",
    /// A unicast frame for another host's MAC (a switch flooded it here, or
    /// the interface is promiscuous), passed untouched and never translated;
    /// the kernel drops it (its PACKET_OTHERHOST). A backup node counts the
    /// master's frames here when the switch floods them.
    PassOtherHost = "pass_other_host",
    /// Not IPv4 (ARP, IPv6, ...).
    PassNotIpv4 = "pass_not_ipv4",
    /// IPv4 that is neither a tracked flow nor for a service.
    PassNotService = "pass_not_service",
    /// A TCP segment other than SYN for a service with no tracked flow.
    PassTcpNoFlow = "pass_tcp_no_flow",
    /// Such a segment sent on to the VRRP peer, which tracks the connection
    /// (it was master when the connection opened).
    HandoffToPeer = "handoff_to_peer",
    /// Fragment, options, cut L4 header or broken IPv4 header not addressed
    /// to a VIP (or a frame cut inside its IPv4 header): the kernel's to judge.
    PassUntranslatable = "pass_untranslatable",
    /// Malformed IPv4 header (bad version, length) of a packet for a VIP, or
    /// a frame too short for its Ethernet header.
    DropMalformed = "drop_malformed",
    /// L4 header of a VIP packet cut short.
    DropTruncatedL4 = "drop_truncated_l4",
    /// IP fragment addressed to a VIP.
    DropFragment = "drop_fragment",
    /// IPv4 options on a packet addressed to a VIP.
    DropIpOptions = "drop_ip_options",
    /// TTL would reach zero.
    DropTtlExceeded = "drop_ttl_exceeded",
    /// A packet too big for the path whose "fragmentation needed" answer
    /// could not be built (no headroom, or the interface's MAC unknown).
    DropTooBig = "drop_too_big",
    /// New UDP flow, or TCP connection of a service configured to drop, when the pool is empty.
    DropNoBackend = "drop_no_backend",
    /// New TCP connection answered with a reset: the service's pool is empty.
    ResetNoBackend = "reset_no_backend",
    /// A RST or FIN of a tracked connection whose sequence number is outside
    /// the window tracked for its direction (a blind reset): dropped, and
    /// the connection left as it was (RFC 5961).
    DropTcpOutOfWindow = "drop_tcp_out_of_window",
    /// A SYN for a service whose IPv4 header checksum (or, when it would be
    /// answered with a reset, TCP checksum) is wrong: it neither opens a
    /// connection nor gets an answer.
    DropBadChecksum = "drop_bad_checksum",
    /// No free SNAT port after bounded retries.
    DropNatPortsExhausted = "drop_nat_ports_exhausted",
    /// The connection table refused an insert.
    DropConntrackFull = "drop_conntrack_full",
    /// A SYN answered with a SYN cookie (a SYN-ACK from the VIP that stores
    /// nothing): the service answers all its SYNs so (`syn_cookies =
    /// "always"`), or is under pressure: a new connection found no SNAT
    /// tuple, or had to take one from a half-open connection, in the last
    /// 10 s.
    SynCookieSent = "syn_cookie_sent",
    /// A client's ACK that carried a valid SYN cookie opened a connection:
    /// sent to the backend as the client's SYN (also again, when the
    /// backend has not answered the first in a second).
    ForwardNewByCookie = "forward_new_by_cookie",
    /// The backend's SYN-ACK of a connection opened by cookie, answered with
    /// the ACK that completes its handshake; from then on the backend's
    /// sequence numbers are shifted onto the cookie's.
    SynProxyHandshake = "syn_proxy_handshake",
    /// The backend answered the SYN of a connection opened by cookie with a
    /// plain ACK (it still has an older connection on the tuple): answered
    /// with the RST the client's kernel would send, which clears it, so
    /// that the SYN sent again gets in.
    ResetStaleBackendConnection = "reset_stale_backend_connection",
    /// Any other segment of a connection opened by cookie while the backend
    /// has not answered (the client sends it again).
    DropSynProxyPending = "drop_syn_proxy_pending",
    /// A SYN carrying data (TCP Fast Open) while SYNs are answered with
    /// cookies: dropped, the client tries again without data.
    DropSynWithData = "drop_syn_with_data",
    /// A SYN-proxy answer (cookie SYN-ACK, SYN or ACK to the backend) that
    /// could not be built: the frame could not be resized.
    DropSynProxyFrame = "drop_syn_proxy_frame",
    /// The program has not been configured yet, or a unicast frame arrived
    /// on an interface whose MAC it has not been told.
    PassNotReady = "pass_not_ready",
}

/// Number of counters.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;
