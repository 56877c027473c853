//! Connection-table policy: when an existing entry may be replaced.

use crate::{
    headers::{IPPROTO_TCP, IPPROTO_UDP},
    maps::{Flow, Settings, FLOW_CLOSING},
};

/// Whether a packet that matched `flow` should start a new connection
/// instead of following the entry. `opens_connection` is true for a TCP SYN
/// without ACK; it is ignored for UDP.
#[inline(always)]
#[must_use]
pub fn superseded(flow: &Flow, proto: u8, opens_connection: bool, now_ns: u64, settings: &Settings) -> bool {
    let idle = now_ns.saturating_sub(flow.last_seen_ns);
    match proto {
        IPPROTO_UDP => idle > settings.udp_timeout_ns,
        // A SYN on a live connection is a retransmission and must stick; on a
        // closed or long-idle one it is the client reusing its port.
        IPPROTO_TCP => {
            opens_connection && (flow.state & FLOW_CLOSING != 0 || idle > settings.tcp_idle_timeout_ns)
        }
        _ => false,
    }
}

/// Whether the SNAT port held by reply entry `flow` may be given to a new
/// connection: its connection closed (or went idle) long enough ago that the
/// backend has forgotten it.
#[inline(always)]
#[must_use]
pub fn port_reusable(flow: &Flow, proto: u8, now_ns: u64, settings: &Settings) -> bool {
    let idle = now_ns.saturating_sub(flow.last_seen_ns);
    match proto {
        IPPROTO_UDP => idle > settings.udp_timeout_ns,
        IPPROTO_TCP => {
            (flow.state & FLOW_CLOSING != 0 && idle > settings.tcp_closed_reuse_ns)
                || idle > settings.tcp_idle_timeout_ns
        }
        _ => false,
    }
}

/// Refresh `last_seen_ns` at most this often, to keep writes to shared
/// cache lines off the per-packet path.
pub const REFRESH_INTERVAL_NS: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{Endpoints, DIRECTION_FORWARD};

    const SEC: u64 = 1_000_000_000;

    fn settings() -> Settings {
        Settings {
            snat_addr: 0,
            snat_port_first: 20_000,
            snat_port_last: 29_999,
            udp_timeout_ns: 30 * SEC,
            tcp_idle_timeout_ns: 3600 * SEC,
            tcp_closed_reuse_ns: 60 * SEC,
            flags: 0,
            _pad: 0,
        }
    }

    fn flow(state: u8, last_seen_ns: u64) -> Flow {
        Flow {
            rewrite: Endpoints {
                src_addr: 0,
                dst_addr: 0,
                src_port: 0,
                dst_port: 0,
            },
            backend_id: 0,
            service_id: 0,
            direction: DIRECTION_FORWARD,
            state,
            next_hop: crate::maps::NextHop::default(),
            _pad: 0,
            last_seen_ns,
        }
    }

    #[test]
    fn syn_retransmission_sticks() {
        assert!(!superseded(
            &flow(0, 10 * SEC),
            IPPROTO_TCP,
            true,
            11 * SEC,
            &settings()
        ));
    }

    #[test]
    fn syn_after_close_or_long_idle_starts_over() {
        assert!(superseded(
            &flow(FLOW_CLOSING, 10 * SEC),
            IPPROTO_TCP,
            true,
            11 * SEC,
            &settings()
        ));
        assert!(superseded(
            &flow(0, 0),
            IPPROTO_TCP,
            true,
            3601 * SEC,
            &settings()
        ));
        assert!(!superseded(
            &flow(FLOW_CLOSING, 0),
            IPPROTO_TCP,
            false,
            3601 * SEC,
            &settings()
        ));
    }

    #[test]
    fn udp_times_out() {
        assert!(!superseded(
            &flow(0, 0),
            IPPROTO_UDP,
            false,
            30 * SEC,
            &settings()
        ));
        assert!(superseded(&flow(0, 0), IPPROTO_UDP, false, 31 * SEC, &settings()));
    }

    #[test]
    fn closed_port_is_reused_only_after_time_wait() {
        assert!(!port_reusable(
            &flow(FLOW_CLOSING, 0),
            IPPROTO_TCP,
            59 * SEC,
            &settings()
        ));
        assert!(port_reusable(
            &flow(FLOW_CLOSING, 0),
            IPPROTO_TCP,
            61 * SEC,
            &settings()
        ));
        assert!(!port_reusable(&flow(0, 0), IPPROTO_TCP, 61 * SEC, &settings()));
    }
}
