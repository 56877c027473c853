//! Connection-table policy, pure enough to test on the host: when an entry
//! is superseded by a new connection, when a SNAT tuple may be taken over,
//! which TCP segments may change a connection's state (RFC 5961), and how
//! a connection's sequence space is followed.

use crate::{
    headers::{
        find_option, TcpOption, IPPROTO_TCP, IPPROTO_UDP, KIND_WINDOW_SCALE, TCP_ACK, TCP_FIN, TCP_RST,
        TCP_SYN,
    },
    maps::{
        Flow, FlowKey, Settings, FLOW_BACKEND_TIME_WAIT, FLOW_CHALLENGED, FLOW_CLOSING, FLOW_ESTABLISHED,
        FLOW_FIN_FROM_BACKEND, FLOW_FIN_FROM_CLIENT, FLOW_RESET, FLOW_SEQ_KNOWN, PROXY_NONE,
    },
};

/// Refresh `last_seen_ns` at most this often, to keep writes to shared
/// cache lines off the per-packet path.
pub const REFRESH_INTERVAL_NS: u64 = 1_000_000_000;

/// A half-open entry younger than this is never taken from its client, even
/// under pressure: its SYN-ACK may still be on the way (and is retransmitted
/// after a second).
pub const HALF_OPEN_EVICTABLE_NS: u64 = 1_000_000_000;

/// The receive window assumed for a direction that has not spoken yet: the
/// largest a SYN can announce.
pub const UNKNOWN_WINDOW: u32 = 65_535;

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
        // closed, expired half-open or long-idle one it is the client
        // reusing its port.
        IPPROTO_TCP => {
            opens_connection
                && (flow.state & FLOW_CLOSING != 0
                    || (flow.state & FLOW_ESTABLISHED == 0 && idle > settings.tcp_handshake_timeout_ns)
                    || idle > settings.tcp_idle_timeout_ns)
        }
        _ => false,
    }
}

/// Whether a TCP connection is over at both ends: reset, or a FIN each way.
#[inline(always)]
#[must_use]
pub const fn fully_closed(state: u8) -> bool {
    state & FLOW_RESET != 0
        || state & (FLOW_FIN_FROM_CLIENT | FLOW_FIN_FROM_BACKEND)
            == (FLOW_FIN_FROM_CLIENT | FLOW_FIN_FROM_BACKEND)
}

/// What the reply entry that owns a SNAT tuple means for a new connection
/// that wants the tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TupleOwner {
    /// The tuple belongs to a live connection (or one the backend may still
    /// remember): leave it.
    Held,
    /// The tuple may be taken at once.
    Free,
    /// Held, but may be taken when no free tuple is found ("under
    /// pressure"): a closed connection still within its hold, or a half-open
    /// one whose client has not answered in a second. The oldest goes first.
    /// `half_open`: the owner never completed its handshake (a tuple taken
    /// from one is a sign of a SYN flood: see SYN_PRESSURE).
    Evictable { age_ns: u64, half_open: bool },
}

/// Judges reply entry `owner` for a new connection whose client-side key is
/// `client` (network order).
///
/// A closed connection's tuple is free at once for the same client
/// connection again: the same client address and port to the same VIP and
/// port. Its TCP timestamps and ISN only grow (Linux offsets both per
/// 4-tuple; since the offsets are random per 4-tuple, another port of the
/// same client is as foreign as another client), so the backend's
/// TIME_WAIT accepts the new SYN (RFC 6191), as nf_nat relies on when a
/// SYN reopens a closed conntrack entry. Against every other connection
/// the tuple is held while the backend may keep it in TIME_WAIT:
/// `tcp_time_wait_ns` when the backend closed first, only
/// `tcp_close_linger_ns` when the client closed first (the backend then
/// closes passively and keeps no TIME_WAIT) or a reset ended it.
///
/// A `proven` client (its ACK carried a valid SYN cookie) may also take
/// the tuple of a half-open connection younger than a second: under a SYN
/// flood the young half-open ones are the flood's; not one that another
/// proven client opened.
#[inline(always)]
#[must_use]
pub fn tuple_owner(
    owner: &Flow,
    client: &FlowKey,
    now_ns: u64,
    settings: &Settings,
    proven: bool,
) -> TupleOwner {
    let idle = now_ns.saturating_sub(owner.last_seen_ns);
    if client.proto != IPPROTO_TCP {
        return if idle > settings.udp_timeout_ns {
            TupleOwner::Free
        } else {
            TupleOwner::Held
        };
    }
    let state = owner.state;
    if fully_closed(state) {
        let same_client = owner.rewrite.reply_key(client.proto) == *client;
        let hold = if state & FLOW_RESET == 0 && state & FLOW_BACKEND_TIME_WAIT != 0 {
            settings.tcp_time_wait_ns
        } else {
            settings.tcp_close_linger_ns
        };
        return if same_client || idle > hold {
            TupleOwner::Free
        } else {
            TupleOwner::Evictable {
                age_ns: idle,
                half_open: false,
            }
        };
    }
    if state & FLOW_CLOSING != 0 && idle > settings.tcp_time_wait_ns {
        // Half-closed and silent for a TIME_WAIT: conntrack forgets such
        // connections after 60-120 s too.
        return TupleOwner::Free;
    }
    if state & FLOW_ESTABLISHED == 0 {
        if idle > settings.tcp_handshake_timeout_ns {
            return TupleOwner::Free;
        }
        // A connection opened by cookie is a proven client's too.
        if idle > HALF_OPEN_EVICTABLE_NS || (proven && owner.proxy == PROXY_NONE) {
            return TupleOwner::Evictable {
                age_ns: idle,
                half_open: true,
            };
        }
        return TupleOwner::Held;
    }
    if idle > settings.tcp_idle_timeout_ns {
        TupleOwner::Free
    } else {
        TupleOwner::Held
    }
}

/// `a` comes after `b` in sequence space (RFC 1982 serial arithmetic).
#[inline(always)]
#[must_use]
pub const fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The window that bounds the sequence numbers sent towards `receiver`
/// (None: its entry is gone, e.g. evicted).
#[inline(always)]
#[must_use]
pub fn receive_window(receiver: Option<&Flow>) -> u32 {
    let Some(receiver) = receiver else {
        return UNKNOWN_WINDOW;
    };
    if receiver.state & FLOW_SEQ_KNOWN == 0 {
        UNKNOWN_WINDOW
    } else if receiver.max_window == 0 {
        1
    } else {
        receiver.max_window
    }
}

/// Whether a segment (not a SYN) from the direction of `sender` may move its
/// tracked sequence space on: it must start within the window the other
/// direction offers (`peer_window`; the largest unscaled one until it has
/// spoken), so that a blind segment cannot drag the window away from the
/// real one and make the real RST look out of window.
#[inline(always)]
#[must_use]
pub fn may_advance(segment: &Segment, sender: &Flow) -> bool {
    let window = if sender.peer_window == 0 {
        UNKNOWN_WINDOW
    } else {
        sender.peer_window
    };
    segment.flags & TCP_SYN == 0 && in_window(segment.seq, sender.seq_next, window)
}

/// Whether `seq` is within `window` of `expected` either way. A blind
/// attacker must guess a sequence number within the window.
#[inline(always)]
#[must_use]
pub const fn in_window(seq: u32, expected: u32, window: u32) -> bool {
    (seq.wrapping_sub(expected) as i32).unsigned_abs() <= window
}

/// The fields of a TCP segment that tracking needs, host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Payload bytes (not counting SYN or FIN).
    pub payload_len: u32,
}

impl Segment {
    /// The sequence number after this segment (SYN and FIN count one).
    #[inline(always)]
    #[must_use]
    pub const fn end(&self) -> u32 {
        let mut end = self.seq.wrapping_add(self.payload_len);
        if self.flags & TCP_SYN != 0 {
            end = end.wrapping_add(1);
        }
        if self.flags & TCP_FIN != 0 {
            end = end.wrapping_add(1);
        }
        end
    }
}

/// Whether a RST or FIN from the direction of `sender` may change the
/// connection's state, judged against the sequence space tracked for it
/// (RFC 5961 §3 and §4 for a middlebox: the endpoints check exactly, we
/// check the window, so that a blind reset cannot make the table drop or
/// rebalance a live connection).
///
/// A direction that has not spoken yet has no sequence space: only a RST
/// that acknowledges the other direction's SYN is acceptable from it (a
/// backend refusing the connection). Towards a backend that answered the
/// SYN with a plain ACK (`FLOW_CHALLENGED`), the RST answering exactly that
/// ACK is acceptable too.
#[inline(always)]
#[must_use]
pub fn may_close(segment: &Segment, sender: &Flow, receiver: Option<&Flow>) -> bool {
    if sender.state & FLOW_SEQ_KNOWN == 0 {
        return segment.flags & (TCP_RST | TCP_ACK) == (TCP_RST | TCP_ACK)
            && receiver.is_some_and(|r| r.state & FLOW_SEQ_KNOWN != 0 && segment.ack == r.seq_next);
    }
    if segment.flags & TCP_RST != 0
        && receiver.is_some_and(|r| {
            r.state & (FLOW_SEQ_KNOWN | FLOW_CHALLENGED) == FLOW_CHALLENGED && segment.seq == r.seq_next
        })
    {
        return true;
    }
    in_window(segment.seq, sender.seq_next, receive_window(receiver))
}

/// Whether a segment from a backend that has not sent its SYN-ACK is a
/// plain ACK answering the client's SYN (see `FLOW_CHALLENGED`).
#[inline(always)]
#[must_use]
pub const fn challenges_syn(segment: &Segment) -> bool {
    segment.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK
}

/// The state bits, set on both entries, that a valid closing segment from
/// `direction` adds, given the state before it.
#[inline(always)]
#[must_use]
pub const fn closing_bits(flags: u8, from_client: bool, state: u8) -> u8 {
    if flags & TCP_RST != 0 {
        return FLOW_CLOSING | FLOW_RESET;
    }
    if from_client {
        FLOW_CLOSING | FLOW_FIN_FROM_CLIENT
    } else if state & FLOW_FIN_FROM_CLIENT == 0 {
        // The backend closes first: it will hold the tuple in TIME_WAIT.
        FLOW_CLOSING | FLOW_FIN_FROM_BACKEND | FLOW_BACKEND_TIME_WAIT
    } else {
        FLOW_CLOSING | FLOW_FIN_FROM_BACKEND
    }
}

/// Whether a segment from the client completes the handshake: a plain ACK
/// that acknowledges the backend's SYN-ACK, tracked in `reply`.
#[inline(always)]
#[must_use]
pub fn completes_handshake(segment: &Segment, reply: &Flow) -> bool {
    segment.flags & (TCP_SYN | TCP_RST | TCP_ACK) == TCP_ACK
        && reply.state & FLOW_SEQ_KNOWN != 0
        && segment.ack == reply.seq_next
}

/// The largest window scale (RFC 7323).
pub const MAX_WINDOW_SCALE: u8 = 14;

/// Reads the window scale a SYN's options announce; `byte(i)` is the
/// options' i-th byte, None past their end. 0 when the options end without
/// one; MAX_WINDOW_SCALE when they are malformed or longer than scanned, so
/// that the tracked window is never too small for a real segment.
#[inline(always)]
#[must_use]
pub fn window_scale(byte: impl Fn(usize) -> Option<u8>) -> u8 {
    match find_option(&byte, KIND_WINDOW_SCALE, 3) {
        TcpOption::At(at) => byte(at + 2).map_or(MAX_WINDOW_SCALE, |scale| scale.min(MAX_WINDOW_SCALE)),
        TcpOption::Absent => 0,
        TcpOption::Unreadable => MAX_WINDOW_SCALE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{Endpoints, DIRECTION_FORWARD, DIRECTION_REPLY, MAX_SNAT_ADDRS};

    const SEC: u64 = 1_000_000_000;
    const CLIENT: u32 = 0x0a00_0001;
    const OTHER_CLIENT: u32 = 0x0a00_0002;
    const VIP: u32 = 0x0a00_00fe;

    fn settings() -> Settings {
        Settings {
            snat_addrs: [0; MAX_SNAT_ADDRS],
            snat_addr_count: 1,
            snat_port_first: 20_000,
            snat_port_last: 29_999,
            local_port_first: 32_768,
            local_port_last: 60_999,
            hash_seed: 0,
            udp_timeout_ns: 30 * SEC,
            tcp_idle_timeout_ns: 3600 * SEC,
            tcp_handshake_timeout_ns: 10 * SEC,
            tcp_time_wait_ns: 65 * SEC,
            tcp_close_linger_ns: 2 * SEC,
            flags: 0,
            _pad: 0,
            cookie_key: [0; 2],
        }
    }

    fn flow(state: u8, last_seen_ns: u64) -> Flow {
        Flow {
            rewrite: Endpoints {
                src_addr: VIP,
                dst_addr: CLIENT,
                src_port: 80,
                dst_port: 40_000,
            },
            direction: DIRECTION_REPLY,
            state,
            last_seen_ns,
            ..Flow::default()
        }
    }

    /// The client-side key of a new connection from `client`:`port` to `vip`:80.
    fn conn(client: u32, port: u16, vip: u32) -> FlowKey {
        FlowKey {
            src_addr: client,
            dst_addr: vip,
            src_port: port,
            dst_port: 80,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn tracked(seq_next: u32, max_window: u32) -> Flow {
        Flow {
            seq_next,
            max_window,
            direction: DIRECTION_FORWARD,
            ..flow(FLOW_SEQ_KNOWN | FLOW_ESTABLISHED, 0)
        }
    }

    const EST: u8 = FLOW_ESTABLISHED | FLOW_SEQ_KNOWN;
    const SERVER_CLOSED: u8 =
        EST | FLOW_CLOSING | FLOW_FIN_FROM_BACKEND | FLOW_BACKEND_TIME_WAIT | FLOW_FIN_FROM_CLIENT;
    const CLIENT_CLOSED: u8 = EST | FLOW_CLOSING | FLOW_FIN_FROM_CLIENT | FLOW_FIN_FROM_BACKEND;

    #[test]
    fn syn_retransmission_sticks() {
        assert!(!superseded(
            &flow(EST, 10 * SEC),
            IPPROTO_TCP,
            true,
            11 * SEC,
            &settings()
        ));
        assert!(!superseded(
            &flow(0, 10 * SEC),
            IPPROTO_TCP,
            true,
            19 * SEC,
            &settings()
        ));
    }

    #[test]
    fn syn_after_close_expired_handshake_or_long_idle_starts_over() {
        let s = settings();
        assert!(superseded(
            &flow(FLOW_CLOSING, 10 * SEC),
            IPPROTO_TCP,
            true,
            11 * SEC,
            &s
        ));
        assert!(superseded(&flow(0, 0), IPPROTO_TCP, true, 11 * SEC, &s));
        assert!(superseded(&flow(EST, 0), IPPROTO_TCP, true, 3601 * SEC, &s));
        assert!(!superseded(&flow(EST, 0), IPPROTO_TCP, true, 3599 * SEC, &s));
        assert!(!superseded(
            &flow(FLOW_CLOSING, 0),
            IPPROTO_TCP,
            false,
            3601 * SEC,
            &s
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
    fn a_closed_tuple_is_free_at_once_for_its_own_client_connection_only() {
        let s = settings();
        let closed = flow(SERVER_CLOSED, 10 * SEC);
        assert_eq!(
            tuple_owner(&closed, &conn(CLIENT, 40_000, VIP), 10 * SEC, &s, false),
            TupleOwner::Free
        );
        // Another port of the same client, or the same port through another
        // VIP, has other timestamps (offset per 4-tuple).
        assert_eq!(
            tuple_owner(&closed, &conn(CLIENT, 40_002, VIP), 11 * SEC, &s, false),
            TupleOwner::Evictable {
                age_ns: SEC,
                half_open: false
            }
        );
        assert_eq!(
            tuple_owner(&closed, &conn(CLIENT, 40_000, VIP + 1), 11 * SEC, &s, false),
            TupleOwner::Evictable {
                age_ns: SEC,
                half_open: false
            }
        );
        assert_eq!(
            tuple_owner(&closed, &conn(OTHER_CLIENT, 40_000, VIP), 70 * SEC, &s, false),
            TupleOwner::Evictable {
                age_ns: 60 * SEC,
                half_open: false
            }
        );
        assert_eq!(
            tuple_owner(&closed, &conn(OTHER_CLIENT, 40_000, VIP), 76 * SEC, &s, false),
            TupleOwner::Free
        );
    }

    #[test]
    fn only_a_backends_active_close_holds_the_tuple_for_time_wait() {
        let s = settings();
        let by_client = flow(CLIENT_CLOSED, 10 * SEC);
        assert_eq!(
            tuple_owner(&by_client, &conn(OTHER_CLIENT, 40_000, VIP), 13 * SEC, &s, false),
            TupleOwner::Free
        );
        let reset = flow(EST | FLOW_CLOSING | FLOW_RESET | FLOW_BACKEND_TIME_WAIT, 10 * SEC);
        assert_eq!(
            tuple_owner(&reset, &conn(OTHER_CLIENT, 40_000, VIP), 13 * SEC, &s, false),
            TupleOwner::Free
        );
    }

    #[test]
    fn a_half_closed_connection_is_held_until_it_falls_silent() {
        let s = settings();
        let half = flow(EST | FLOW_CLOSING | FLOW_FIN_FROM_CLIENT, 0);
        assert_eq!(
            tuple_owner(&half, &conn(CLIENT, 40_000, VIP), 60 * SEC, &s, false),
            TupleOwner::Held
        );
        assert_eq!(
            tuple_owner(&half, &conn(CLIENT, 40_000, VIP), 66 * SEC, &s, false),
            TupleOwner::Free
        );
    }

    #[test]
    fn a_half_open_tuple_is_evictable_after_a_second_and_free_after_the_handshake_timeout() {
        let s = settings();
        let half_open = flow(FLOW_SEQ_KNOWN, 0);
        assert_eq!(
            tuple_owner(&half_open, &conn(OTHER_CLIENT, 40_000, VIP), SEC / 2, &s, false),
            TupleOwner::Held
        );
        assert_eq!(
            tuple_owner(&half_open, &conn(OTHER_CLIENT, 40_000, VIP), 2 * SEC, &s, false),
            TupleOwner::Evictable {
                age_ns: 2 * SEC,
                half_open: true
            }
        );
        assert_eq!(
            tuple_owner(&half_open, &conn(OTHER_CLIENT, 40_000, VIP), 11 * SEC, &s, false),
            TupleOwner::Free
        );
        // Established and idle is held for the idle timeout.
        assert_eq!(
            tuple_owner(
                &flow(EST, 0),
                &conn(OTHER_CLIENT, 40_000, VIP),
                3000 * SEC,
                &s,
                false
            ),
            TupleOwner::Held
        );
    }

    #[test]
    fn a_client_proven_by_cookie_may_take_a_young_half_open_tuple_but_nothing_live() {
        let s = settings();
        let half_open = flow(FLOW_SEQ_KNOWN, 0);
        assert_eq!(
            tuple_owner(&half_open, &conn(OTHER_CLIENT, 40_000, VIP), SEC / 2, &s, true),
            TupleOwner::Evictable {
                age_ns: SEC / 2,
                half_open: true
            }
        );
        assert_eq!(
            tuple_owner(&flow(EST, 0), &conn(OTHER_CLIENT, 40_000, VIP), SEC / 2, &s, true),
            TupleOwner::Held
        );
        let opened_by_cookie = Flow {
            proxy: crate::maps::PROXY_PENDING,
            ..half_open
        };
        assert_eq!(
            tuple_owner(
                &opened_by_cookie,
                &conn(OTHER_CLIENT, 40_000, VIP),
                SEC / 2,
                &s,
                true
            ),
            TupleOwner::Held,
            "another proven client's"
        );
    }

    #[test]
    fn sequence_space_wraps() {
        assert!(seq_after(1, u32::MAX));
        assert!(!seq_after(u32::MAX, 1));
        assert!(in_window(5, u32::MAX - 5, 11));
        assert!(!in_window(5, u32::MAX - 5, 10));
        assert!(in_window(u32::MAX - 5, 5, 11));
    }

    #[test]
    fn a_reset_must_fall_in_the_tracked_window() {
        let sender = tracked(1_000_000, 0);
        let receiver = tracked(7, 64_000);
        let rst = |seq| Segment {
            flags: TCP_RST,
            seq,
            ack: 0,
            window: 0,
            payload_len: 0,
        };
        assert!(may_close(&rst(1_000_000), &sender, Some(&receiver)));
        assert!(may_close(&rst(1_064_000), &sender, Some(&receiver)));
        assert!(!may_close(&rst(1_064_001), &sender, Some(&receiver)));
        assert!(!may_close(&rst(3_000_000_000), &sender, Some(&receiver)));
        // The receiver's entry gone: the largest unscaled window.
        assert!(may_close(&rst(1_065_535), &sender, None));
        assert!(!may_close(&rst(1_065_536), &sender, None));
    }

    #[test]
    fn only_segments_within_the_peers_window_move_the_sequence_space() {
        let data = |seq| Segment {
            flags: TCP_ACK,
            seq,
            ack: 0,
            window: 0,
            payload_len: 100,
        };
        let sender = Flow {
            peer_window: 1000,
            ..tracked(5000, 0)
        };
        assert!(may_advance(&data(5000), &sender));
        assert!(may_advance(&data(6000), &sender));
        assert!(!may_advance(&data(6001), &sender));
        assert!(!may_advance(
            &Segment {
                flags: TCP_SYN,
                ..data(5000)
            },
            &sender
        ));
        // The peer has not spoken: the largest unscaled window.
        assert!(may_advance(&data(5000 + 65_535), &tracked(5000, 0)));
        assert!(!may_advance(&data(5000 + 65_536), &tracked(5000, 0)));
    }

    #[test]
    fn a_backend_that_has_not_spoken_may_only_refuse_the_syn() {
        let silent = flow(0, 0);
        let client = tracked(5001, 0);
        let refusal = Segment {
            flags: TCP_RST | TCP_ACK,
            seq: 0,
            ack: 5001,
            window: 0,
            payload_len: 0,
        };
        assert!(may_close(&refusal, &silent, Some(&client)));
        assert!(!may_close(
            &Segment { ack: 5002, ..refusal },
            &silent,
            Some(&client)
        ));
        assert!(!may_close(
            &Segment {
                flags: TCP_RST,
                ..refusal
            },
            &silent,
            Some(&client)
        ));
        assert!(!may_close(
            &Segment {
                flags: TCP_FIN | TCP_ACK,
                ..refusal
            },
            &silent,
            Some(&client)
        ));
    }

    #[test]
    fn the_clients_reset_of_a_backends_challenge_ack_is_accepted_and_nothing_else() {
        let client = tracked(5001, 0);
        let challenged = Flow {
            seq_next: 777_000,
            ..flow(FLOW_CHALLENGED, 0)
        };
        let rst = |seq| Segment {
            flags: TCP_RST,
            seq,
            ack: 0,
            window: 0,
            payload_len: 0,
        };
        assert!(may_close(&rst(777_000), &client, Some(&challenged)));
        assert!(!may_close(&rst(777_001), &client, Some(&challenged)));
        // Without the challenge, the same RST is far out of the window.
        assert!(!may_close(&rst(777_000), &client, Some(&flow(0, 0))));
        // Only a RST: a FIN with that number is still judged by the window.
        assert!(!may_close(
            &Segment {
                flags: TCP_FIN | TCP_ACK,
                ..rst(777_000)
            },
            &client,
            Some(&challenged)
        ));
        // Once the backend's SYN-ACK started its sequence space, no more.
        let answered = Flow {
            state: FLOW_CHALLENGED | FLOW_SEQ_KNOWN,
            ..challenged
        };
        assert!(!may_close(&rst(777_000), &client, Some(&answered)));
        assert!(challenges_syn(&Segment {
            flags: TCP_ACK,
            ..rst(0)
        }));
        assert!(!challenges_syn(&Segment {
            flags: TCP_ACK | TCP_SYN,
            ..rst(0)
        }));
        assert!(!challenges_syn(&Segment {
            flags: TCP_ACK | TCP_RST,
            ..rst(0)
        }));
    }

    #[test]
    fn who_closed_first_decides_the_time_wait() {
        let fin = TCP_FIN | TCP_ACK;
        assert_eq!(closing_bits(fin, true, EST), FLOW_CLOSING | FLOW_FIN_FROM_CLIENT);
        assert_eq!(
            closing_bits(fin, false, EST),
            FLOW_CLOSING | FLOW_FIN_FROM_BACKEND | FLOW_BACKEND_TIME_WAIT
        );
        assert_eq!(
            closing_bits(fin, false, EST | FLOW_FIN_FROM_CLIENT),
            FLOW_CLOSING | FLOW_FIN_FROM_BACKEND
        );
        assert_eq!(closing_bits(TCP_RST, false, EST), FLOW_CLOSING | FLOW_RESET);
        assert!(fully_closed(SERVER_CLOSED) && fully_closed(CLIENT_CLOSED));
        assert!(!fully_closed(EST | FLOW_CLOSING | FLOW_FIN_FROM_CLIENT));
    }

    #[test]
    fn the_handshake_completes_with_the_ack_of_the_syn_ack() {
        let reply = tracked(9001, 0);
        let ack = Segment {
            flags: TCP_ACK,
            seq: 5001,
            ack: 9001,
            window: 100,
            payload_len: 0,
        };
        assert!(completes_handshake(&ack, &reply));
        assert!(!completes_handshake(&Segment { ack: 1234, ..ack }, &reply));
        assert!(!completes_handshake(
            &Segment {
                flags: TCP_ACK | TCP_SYN,
                ..ack
            },
            &reply
        ));
        assert!(!completes_handshake(&ack, &flow(0, 0)));
    }

    #[test]
    fn segment_end_counts_syn_and_fin() {
        let s = Segment {
            flags: TCP_SYN,
            seq: u32::MAX,
            ack: 0,
            window: 0,
            payload_len: 0,
        };
        assert_eq!(s.end(), 0);
        assert_eq!(
            Segment {
                flags: TCP_FIN | TCP_ACK,
                payload_len: 10,
                ..s
            }
            .end(),
            10
        );
    }

    #[test]
    fn window_scale_is_found_among_other_options() {
        let parse = |options: &[u8]| window_scale(|i| options.get(i).copied());
        // MSS, SACK permitted, timestamps, NOP, window scale 7: Linux's SYN.
        let linux = [2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        assert_eq!(parse(&linux), 7);
        // MSS, NOP, WS 6, NOP, NOP, TS, SACK permitted, EOL: macOS.
        let macos = [
            2, 4, 5, 180, 1, 3, 3, 6, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0,
        ];
        assert_eq!(parse(&macos), 6);
        assert_eq!(parse(&[2, 4, 5, 180]), 0);
        assert_eq!(parse(&[]), 0);
        assert_eq!(parse(&[0, 3, 3, 7]), 0);
        assert_eq!(parse(&[1, 1, 3, 3, 20]), MAX_WINDOW_SCALE);
        // Malformed or beyond the scan: the widest window, never a too narrow one.
        assert_eq!(parse(&[2, 0, 3, 3, 7]), MAX_WINDOW_SCALE);
        assert_eq!(parse(&[3]), MAX_WINDOW_SCALE);
        assert_eq!(parse(&[1; 40]), MAX_WINDOW_SCALE);
    }
}
