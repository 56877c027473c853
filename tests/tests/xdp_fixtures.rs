//! Packet fixtures through the real XDP object with BPF_PROG_TEST_RUN: a
//! specification of the data plane, one behaviour per test. Needs root.

use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use lb_common::{
    conntrack::REFRESH_INTERVAL_NS,
    maps::{Flow, FlowKey, NextHop, FLOW_CHALLENGED, FLOW_CLOSING, FLOW_RESET, FLOW_SEQ_KNOWN},
    stats::Counter,
};
use lb_tests::{
    fixture::{
        coarse_now_ns, flow_key, services, with_fixture, with_fixture_settings, Fixture, Verdict, CLIENT_MAC,
        HAIRPIN_PORT, PRIVATE_IF, PRIVATE_MAC, PUBLIC_BACKEND, PUBLIC_BACKEND_MAC, PUBLIC_IF, PUBLIC_MAC,
        UNRESOLVED_BACKEND, UNRESOLVED_PORT, WEB_MACS, XDP_DROP, XDP_PASS, XDP_REDIRECT,
    },
    packet::{
        internet_checksum, parse_and_verify, udp_payload_summing_to_zero, Frame, Parsed, ACK, FIN, RST, SYN,
        TCP, UDP,
    },
    testbed::{CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, LB_PUBLIC, UDP_PORT, VIP, WEB_ADDRS},
};
use lb_user::netdev::format_mac;

const CLIENT: (Ipv4Addr, u16) = (CLIENT_ADDRS[0], 40_000);
const FRONTEND: (Ipv4Addr, u16) = (VIP, FRONTEND_PORT);

fn fixture<T: Send + 'static>(f: impl FnOnce(&Fixture) -> T + Send + 'static) -> T {
    with_fixture(&services(), f).expect("fixture namespace and program")
}

/// `frame` arriving from the clients' side (addressed to the public
/// interface, as [`Frame`]s are unless told otherwise).
fn from_client(fx: &Fixture, frame: &Frame) -> Verdict {
    fx.run(&frame.build(), fx.public_ifindex)
}

/// `frame` arriving from the backends' side, addressed to the private
/// interface.
fn from_backend(fx: &Fixture, frame: &Frame) -> Verdict {
    fx.run(
        &frame.clone().addressed_to(fx.private_mac).build(),
        fx.private_ifindex,
    )
}

fn forwarded(verdict: &Verdict) -> Parsed {
    assert_eq!(
        verdict.action, XDP_REDIRECT,
        "expected a redirect, got {verdict:?}"
    );
    parse_and_verify(&verdict.frame).unwrap_or_else(|e| panic!("forwarded frame invalid: {e}"))
}

fn counters(fx: &Fixture) -> Vec<(Counter, u64)> {
    fx.dataplane.lock().unwrap().counters().unwrap()
}

fn counter(fx: &Fixture, which: Counter) -> u64 {
    counters(fx)
        .into_iter()
        .find(|(c, _)| *c == which)
        .map(|(_, n)| n)
        .unwrap()
}

/// Runs `input` arriving on `ifindex` and checks its fate: `action`, a
/// passed frame untouched, and `counted` (alone) counted exactly once.
fn assert_outcome(fx: &Fixture, label: &str, input: &[u8], ifindex: u32, action: u32, counted: Counter) {
    let before = counters(fx);
    let verdict = fx.run(input, ifindex);
    assert_eq!(
        verdict.action, action,
        "{label}: action (frame {:02x?})",
        verdict.frame
    );
    if action == XDP_PASS {
        assert_eq!(verdict.frame, input, "{label}: a passed frame must be untouched");
    }
    let changed: Vec<(&str, i128)> = counters(fx)
        .into_iter()
        .zip(before)
        .filter(|((_, after), (_, before))| after != before)
        .map(|((c, after), (_, before))| (c.name(), i128::from(after) - i128::from(before)))
        .collect();
    assert_eq!(changed, [(counted.name(), 1)], "{label}: counters changed");
}

/// Sets a connection-table entry's `last_seen_ns`: its age as the program
/// will see it, set rather than waited for.
fn set_last_seen(flows: &mut HashMap<MapData, FlowKey, Flow>, key: &FlowKey, last_seen_ns: u64) {
    let mut entry = flows.get(key, 0).expect("tracked entry");
    entry.last_seen_ns = last_seen_ns;
    flows.insert(key, entry, 0).expect("update entry");
}

const SEC: u64 = 1_000_000_000;

/// The sequence number [`Frame`]s carry unless told otherwise.
const CLIENT_ISN: u32 = 0x0102_0304;

/// The coarse clock `age` ago: a last-seen time that makes an entry that old.
fn ago(age: u64) -> u64 {
    coarse_now_ns()
        .checked_sub(age)
        .expect("the clock has run that long since boot")
}

/// Opens a connection from `client`; returns the frame the backend receives.
fn open(fx: &Fixture, client: (Ipv4Addr, u16)) -> Parsed {
    forwarded(&from_client(fx, &Frame::tcp(client, FRONTEND, SYN)))
}

#[test]
fn new_connection_is_fully_translated_towards_the_round_robin_backend() {
    fixture(|fx| {
        let out = open(fx, CLIENT);
        assert_eq!((out.dst, out.dst_port), (WEB_ADDRS[0], FRONTEND_PORT));
        assert_eq!(out.src, LB_PRIVATE);
        assert!(
            (20_000..=29_999).contains(&out.src_port),
            "SNAT port {}",
            out.src_port
        );
        assert_eq!(out.dst_mac, WEB_MACS[0]);
        assert_eq!(out.src_mac, fx.private_mac);
        assert_eq!(out.ttl, 63);
        assert_eq!(counter(fx, Counter::ForwardNew), 1);
    });
}

#[test]
fn new_connections_rotate_exactly_and_retransmitted_syn_sticks() {
    fixture(|fx| {
        let mut backends = Vec::new();
        for port in 40_000..40_010 {
            backends.push(open(fx, (CLIENT.0, port)).dst);
            // A retransmitted SYN keeps its backend and does not advance the rotation.
            assert_eq!(open(fx, (CLIENT.0, port)).dst, *backends.last().unwrap());
        }
        let expected: Vec<Ipv4Addr> = (0..10).map(|i| WEB_ADDRS[i % 2]).collect();
        assert_eq!(backends, expected);
    });
}

#[test]
fn established_packets_follow_their_connection_with_payload_intact() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        open(fx, (CLIENT.0, 40_001)); // another connection in between
        let data = Frame::tcp(CLIENT, FRONTEND, ACK).with_payload(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = forwarded(&from_client(fx, &data));
        assert_eq!(
            (out.src, out.src_port, out.dst, out.dst_port),
            (first.src, first.src_port, first.dst, first.dst_port)
        );
        assert_eq!(out.payload, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(counter(fx, Counter::ForwardEstablished), 1);
    });
}

/// The next hop is looked up once and cached in the connection's entry; an
/// entry older than the refresh interval (1 s) looks it up again, so a
/// changed neighbour is followed within a second. The entry's age is set
/// through the map rather than waited for, so the outcome does not depend on
/// how long anything here takes.
#[test]
fn established_packets_use_the_cached_next_hop_and_follow_a_change_within_a_second() {
    assert_eq!(REFRESH_INTERVAL_NS, SEC, "the interval this test's name promises");
    fixture(|fx| {
        open(fx, CLIENT);
        let key = flow_key(CLIENT, FRONTEND, TCP);
        let mut flows = fx.flows();
        let data = Frame::tcp(CLIENT, FRONTEND, ACK);
        // The first established packet looks the next hop up and caches it.
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, WEB_MACS[0]);
        let cached = NextHop {
            ifindex: fx.private_ifindex,
            src_mac: fx.private_mac,
            dst_mac: WEB_MACS[0],
        };
        assert_eq!(flows.get(&key, 0).unwrap().next_hop, cached);

        // The backend's MAC changes (e.g. it was replaced).
        let moved = [0x02, 0, 0, 0, 0, 0x99];
        let backend = WEB_ADDRS[0].to_string();
        let args = [
            "-n",
            &fx.netns,
            "neigh",
            "replace",
            &backend,
            "lladdr",
            "02:00:00:00:00:99",
        ];
        lb_tests::run(
            "ip",
            &[
                &args[..],
                &["dev", lb_tests::fixture::PRIVATE_IF, "nud", "permanent"],
            ]
            .concat(),
        )
        .unwrap();

        // Refreshed less than the interval ago (a last-seen time in the
        // future reads as age 0, however long `ip` took): the cached next
        // hop, although a lookup would now give the new MAC.
        set_last_seen(&mut flows, &key, coarse_now_ns() + 3600 * SEC);
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, WEB_MACS[0], "cached");
        assert_eq!(flows.get(&key, 0).unwrap().next_hop, cached);

        // Refreshed just over the interval ago: looked up again, followed,
        // and the entry caches the new next hop from now on.
        let before = coarse_now_ns();
        set_last_seen(&mut flows, &key, ago(REFRESH_INTERVAL_NS + SEC / 100));
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, moved, "refreshed");
        let entry = flows.get(&key, 0).unwrap();
        assert_eq!(
            entry.next_hop,
            NextHop {
                dst_mac: moved,
                ..cached
            }
        );
        assert!(entry.last_seen_ns >= before, "the refresh restarts the interval");
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, moved, "cached again");
        assert_eq!(counter(fx, Counter::ForwardEstablished), 4);
    });
}

#[test]
fn reply_is_reverse_translated_to_the_client() {
    fixture(|fx| {
        let out = open(fx, CLIENT);
        let reply = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), SYN | ACK)
            .with_payload(b"odd-length");
        let back = forwarded(&from_backend(fx, &reply));
        assert_eq!((back.src, back.src_port), FRONTEND);
        assert_eq!((back.dst, back.dst_port), CLIENT);
        assert_eq!(back.dst_mac, CLIENT_MAC);
        assert_eq!(back.src_mac, fx.public_mac);
        assert_eq!(back.payload, b"odd-length");
        assert_eq!(counter(fx, Counter::ForwardReply), 1);
    });
}

#[test]
fn same_client_port_from_two_clients_gets_distinct_translations() {
    fixture(|fx| {
        let a = open(fx, (CLIENT_ADDRS[0], 41_000));
        let b = open(fx, (CLIENT_ADDRS[1], 41_000));
        let c = open(fx, (CLIENT_ADDRS[0], 41_001));
        // a and c share a backend; their SNAT ports must differ.
        assert_eq!(a.dst, c.dst);
        assert_ne!(a.src_port, c.src_port);
        for (out, client) in [(a, CLIENT_ADDRS[0]), (b, CLIENT_ADDRS[1])] {
            let reply = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), ACK);
            let back = forwarded(&from_backend(fx, &reply));
            assert_eq!((back.dst, back.dst_port), (client, 41_000));
        }
    });
}

#[test]
fn unknown_reply_and_non_service_traffic_pass_untouched() {
    fixture(|fx| {
        let frames = [
            // A backend packet to a SNAT port nobody holds.
            (
                Frame::tcp((WEB_ADDRS[0], FRONTEND_PORT), (LB_PRIVATE, 20_000), ACK)
                    .addressed_to(fx.private_mac),
                fx.private_ifindex,
            ),
            // SSH to the LB's own address, and to another port of the VIP.
            (Frame::tcp(CLIENT, (LB_PUBLIC, 22), SYN), fx.public_ifindex),
            (Frame::tcp(CLIENT, (VIP, 8080), SYN), fx.public_ifindex),
            // Mid-connection segment to a service without a tracked flow.
            (Frame::tcp(CLIENT, FRONTEND, ACK), fx.public_ifindex),
            // UDP to a TCP service's port.
            (Frame::udp(CLIENT, FRONTEND, b"x"), fx.public_ifindex),
        ];
        for (frame, ifindex) in frames {
            let input = frame.build();
            let verdict = fx.run(&input, ifindex);
            assert_eq!(verdict.action, XDP_PASS, "{frame:?}");
            assert_eq!(verdict.frame, input, "passed frame must be untouched: {frame:?}");
        }
        // ICMP echo to the VIP and an ARP request.
        let mut icmp = Frame::tcp(CLIENT, FRONTEND, 0).build();
        icmp[23] = 1;
        let arp = {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&[0; 28]);
            f
        };
        for input in [icmp, arp] {
            let verdict = fx.run(&input, fx.public_ifindex);
            assert_eq!((verdict.action, &verdict.frame), (XDP_PASS, &input));
        }
        assert_eq!(counter(fx, Counter::PassTcpNoFlow), 1);
        assert_eq!(counter(fx, Counter::PassNotIpv4), 1);
    });
}

/// A unicast MAC address that is not the fixture's: another host's.
const OTHER_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

fn tracked_entries(fx: &Fixture) -> u64 {
    fx.dataplane.lock().unwrap().scan_connections().unwrap().entries
}

/// The README: frames not addressed to the interface (destination MAC
/// neither its own, nor broadcast or multicast) pass to the kernel
/// untouched and are never translated. A switch floods the master's frames
/// to the backup, which must not forward them too. The same SYN sent to the
/// interface's own MAC afterwards opens the connection, on the first
/// backend of the rotation: the flooded one left nothing behind. Broadcast
/// and multicast frames are translated as always.
#[test]
fn a_flooded_frame_for_another_mac_passes_untouched_and_is_never_translated() {
    fixture(|fx| {
        let syn = Frame::tcp(CLIENT, FRONTEND, SYN);
        let udp = Frame::udp(CLIENT, (VIP, UDP_PORT), b"query");
        let reply = Frame::tcp((WEB_ADDRS[0], FRONTEND_PORT), (LB_PRIVATE, 20_000), SYN | ACK);
        let cases = [
            (
                "a SYN to the VIP for another MAC",
                syn.clone().addressed_to(OTHER_HOST_MAC),
                fx.public_ifindex,
            ),
            (
                "a SYN for the private interface's MAC on the public one",
                syn.clone().addressed_to(fx.private_mac),
                fx.public_ifindex,
            ),
            (
                "UDP to the VIP for another MAC",
                udp.addressed_to(OTHER_HOST_MAC),
                fx.public_ifindex,
            ),
            (
                "a backend's segment for another MAC",
                reply.addressed_to(OTHER_HOST_MAC),
                fx.private_ifindex,
            ),
        ];
        for (label, frame, ifindex) in cases {
            assert_outcome(
                fx,
                label,
                &frame.build(),
                ifindex,
                XDP_PASS,
                Counter::PassOtherHost,
            );
        }
        assert_eq!(tracked_entries(fx), 0, "nothing tracked");

        let to_us = forwarded(&from_client(fx, &syn.clone().addressed_to(fx.public_mac)));
        assert_eq!(to_us.dst, WEB_ADDRS[0], "the rotation did not move");
        let group = [
            ("broadcast", [0xff; 6]),
            ("multicast", [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]),
        ];
        for (port, (label, dst)) in (40_001..).zip(group) {
            let out = forwarded(&from_client(
                fx,
                &Frame::tcp((CLIENT.0, port), FRONTEND, SYN).addressed_to(dst),
            ));
            assert_eq!((out.dst_port, out.src), (FRONTEND_PORT, LB_PRIVATE), "{label}");
        }
        assert_eq!(counter(fx, Counter::ForwardNew), 3);
        assert_eq!(tracked_entries(fx), 6, "three connections, two entries each");
    });
}

/// Userspace writes every interface's MAC before it marks the program
/// ready; a unicast frame on an interface it has not written (here the
/// namespace's loopback) is passed as not ready, untouched.
#[test]
fn a_unicast_frame_on_an_interface_without_a_known_mac_passes_as_not_ready() {
    fixture(|fx| {
        let loopback = 1;
        let syn = Frame::tcp(CLIENT, FRONTEND, SYN).build();
        assert_outcome(fx, "on loopback", &syn, loopback, XDP_PASS, Counter::PassNotReady);
        assert_eq!(tracked_entries(fx), 0);
    });
}

/// An operator changes the public interface's MAC address. Until the data
/// plane reads it again (the daemon does every second), frames sent to the
/// new address pass as another host's; afterwards they are translated, and
/// the old address is another host's.
#[test]
fn a_changed_interface_mac_is_followed_once_read_again() {
    fixture(|fx| {
        const NEW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
        let new_mac = format_mac(&NEW_MAC);
        lb_tests::run(
            "ip",
            &["-n", &fx.netns, "link", "set", PUBLIC_IF, "address", &new_mac],
        )
        .unwrap();
        let syn = |port| Frame::tcp((CLIENT.0, port), FRONTEND, SYN);
        assert_outcome(
            fx,
            "to the new MAC, not read yet",
            &syn(40_000).addressed_to(NEW_MAC).build(),
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassOtherHost,
        );
        fx.dataplane.lock().unwrap().refresh_interface_macs().unwrap();
        forwarded(&from_client(fx, &syn(40_000).addressed_to(NEW_MAC)));
        assert_outcome(
            fx,
            "to the old MAC",
            &syn(40_001).addressed_to(fx.public_mac).build(),
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassOtherHost,
        );
    });
}

#[test]
fn udp_flows_are_translated_and_a_missing_checksum_stays_missing() {
    fixture(|fx| {
        let to = (VIP, UDP_PORT);
        let out = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"query")));
        assert_eq!(
            (out.dst, out.dst_port, out.src),
            (WEB_ADDRS[0], UDP_PORT, LB_PRIVATE)
        );
        let second = forwarded(&from_client(fx, &Frame::udp((CLIENT.0, 40_001), to, b"query")));
        assert_eq!(second.dst, WEB_ADDRS[1]);

        let mut unchecked = Frame::udp((CLIENT.0, 40_002), to, b"no checksum");
        unchecked.udp_no_checksum = true;
        let verdict = from_client(fx, &unchecked);
        let out = forwarded(&verdict);
        assert_eq!(&verdict.frame[40..42], &[0, 0], "UDP checksum must stay absent");
        let reply = Frame::udp((out.dst, out.dst_port), (out.src, out.src_port), b"answer");
        let back = forwarded(&from_backend(fx, &reply));
        assert_eq!(
            ((back.src, back.src_port), (back.dst, back.dst_port)),
            (to, (CLIENT.0, 40_002))
        );
    });
}

/// RFC 768: a UDP checksum that computes to 0 is sent as 0xffff, because 0
/// means "no checksum". Each datagram's payload is crafted so that the
/// translated datagram's checksum computes to exactly 0; one SNAT port makes
/// the forward translation known in advance.
#[test]
fn udp_checksum_that_translates_to_zero_leaves_as_all_ones() {
    with_fixture_settings("snat_ports = \"20000-20000\"", &services(), |fx| {
        let to = (VIP, UDP_PORT);
        let backend = (WEB_ADDRS[0], UDP_PORT);
        let snat = (LB_PRIVATE, 20_000);
        let query = Frame::udp(CLIENT, to, &udp_payload_summing_to_zero(snat, backend, b"query")).build();
        assert_ne!(query[40..42], [0, 0], "the client's datagram has a checksum");
        let verdict = fx.run(&query, fx.public_ifindex);
        let out = forwarded(&verdict);
        assert_eq!(
            ((out.src, out.src_port), (out.dst, out.dst_port)),
            (snat, backend),
            "the translation the payload was crafted for"
        );
        assert_eq!(verdict.frame[40..42], [0xff, 0xff], "forward: 0 sent as 0xffff");

        let answer = udp_payload_summing_to_zero(to, CLIENT, b"answer");
        let reply = Frame::udp(backend, snat, &answer)
            .addressed_to(fx.private_mac)
            .build();
        assert_ne!(reply[40..42], [0, 0]);
        let verdict = fx.run(&reply, fx.private_ifindex);
        let back = forwarded(&verdict);
        assert_eq!(
            ((back.src, back.src_port), (back.dst, back.dst_port)),
            (to, CLIENT)
        );
        assert_eq!(verdict.frame[40..42], [0xff, 0xff], "reply: 0 sent as 0xffff");
        assert_eq!(back.payload, answer);
    })
    .expect("fixture");
}

/// The flow's idle time is set through the map rather than waited for: the
/// configured timeout decides, not how long the test takes.
#[test]
fn idle_udp_flow_times_out_and_the_next_datagram_is_balanced_anew() {
    const TIMEOUT: u64 = 60 * SEC;
    with_fixture_settings("udp_timeout_secs = 60", &services(), |fx| {
        let to = (VIP, UDP_PORT);
        let key = flow_key(CLIENT, to, UDP);
        let mut flows = fx.flows();
        let first = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"a")));
        // Idle for half the timeout: the flow sticks (and the rotation does not move).
        set_last_seen(&mut flows, &key, ago(TIMEOUT / 2));
        let again = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"b")));
        assert_eq!(
            (again.dst, again.src_port),
            (first.dst, first.src_port),
            "within the timeout"
        );
        // Idle just over the timeout: a new flow, on the next backend.
        set_last_seen(&mut flows, &key, ago(TIMEOUT + SEC / 100));
        let after = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"c")));
        assert_ne!(after.dst, first.dst, "an expired flow takes the next backend");
        assert_eq!(counter(fx, Counter::ForwardNew), 2);
        // The old reply entry is gone with it: the old backend cannot answer.
        // (Its key names the old backend's address, which the new flow's
        // reply entry does not, whatever SNAT port the new flow drew.)
        let stale = Frame::udp((first.dst, first.dst_port), (first.src, first.src_port), b"late");
        assert_outcome(
            fx,
            "reply of the expired flow",
            &stale.addressed_to(fx.private_mac).build(),
            fx.private_ifindex,
            XDP_PASS,
            Counter::PassNotService,
        );
    })
    .expect("fixture");
}

#[test]
fn unresolved_next_hop_goes_to_the_kernel_already_translated() {
    fixture(|fx| {
        let verdict = from_client(fx, &Frame::tcp(CLIENT, (VIP, UNRESOLVED_PORT), SYN));
        assert_eq!(verdict.action, XDP_PASS);
        let out = parse_and_verify(&verdict.frame).unwrap();
        assert_eq!(
            (out.dst, out.dst_port, out.src),
            (UNRESOLVED_BACKEND, UNRESOLVED_PORT, LB_PRIVATE)
        );
        assert_eq!(counter(fx, Counter::PassNoNeighbour), 1);
    });
}

#[test]
fn next_hop_on_the_ingress_interface_is_sent_back_out_of_it() {
    fixture(|fx| {
        // A redirect to the ingress interface (not XDP_TX, which veth holds
        // back until its next packet).
        let verdict = from_client(fx, &Frame::tcp(CLIENT, (VIP, HAIRPIN_PORT), SYN));
        assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
        let out = parse_and_verify(&verdict.frame).unwrap();
        assert_eq!((out.dst, out.dst_port), (PUBLIC_BACKEND, HAIRPIN_PORT));
        assert_eq!((out.dst_mac, out.src_mac), (PUBLIC_BACKEND_MAC, fx.public_mac));
    });
}

#[test]
fn closed_connection_port_reuse_picks_a_new_backend() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        forwarded(&from_client(fx, &Frame::tcp(CLIENT, FRONTEND, FIN | ACK)));
        // The client reuses its port for a new connection: a fresh decision.
        let again = open(fx, CLIENT);
        assert_ne!(again.dst, first.dst, "a new connection takes the next backend");
        // The backend refusing it (RST+ACK of the SYN) also ends it.
        let refusal = Frame::tcp(
            (again.dst, again.dst_port),
            (again.src, again.src_port),
            RST | ACK,
        )
        .with_seq(0, CLIENT_ISN + 1);
        forwarded(&from_backend(fx, &refusal));
        assert_eq!(open(fx, CLIENT).dst, first.dst);
    });
}

/// The sequence number the fixtures' backends start with.
const BACKEND_ISN: u32 = 0x7000_0000;

/// The key of the reply entry of the connection whose first packet left as `out`.
fn reply_key(out: &Parsed) -> FlowKey {
    flow_key((out.dst, out.dst_port), (out.src, out.src_port), TCP)
}

/// Completes the handshake of the connection from `client` whose SYN left
/// as `out`: the backend's SYN-ACK (window scale 7), the client's ACK.
fn handshake(fx: &Fixture, client: (Ipv4Addr, u16), to: (Ipv4Addr, u16), out: &Parsed) {
    let syn_ack = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), SYN | ACK)
        .with_seq(BACKEND_ISN, CLIENT_ISN + 1)
        .with_tcp_options(&[3, 3, 7]);
    forwarded(&from_backend(fx, &syn_ack));
    let ack = Frame::tcp(client, to, ACK).with_seq(CLIENT_ISN + 1, BACKEND_ISN + 1);
    forwarded(&from_client(fx, &ack));
}

/// Closes the connection the way an HTTP server with `Connection: close`
/// does: the backend's FIN first (so it keeps the tuple in TIME_WAIT),
/// then the client's.
fn backend_closes(fx: &Fixture, client: (Ipv4Addr, u16), to: (Ipv4Addr, u16), out: &Parsed) {
    let fin = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), FIN | ACK)
        .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 1);
    forwarded(&from_backend(fx, &fin));
    let fin = Frame::tcp(client, to, FIN | ACK).with_seq(CLIENT_ISN + 1, BACKEND_ISN + 2);
    forwarded(&from_client(fx, &fin));
}

/// A client address of the fixtures' own besides the testbed's two.
const THIRD_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// One SNAT pool port and one backend: the only pool tuple towards it.
const ONE_PORT: &str = "snat_ports = \"20000-20000\"";

/// The fixture's services, the hairpin one answering SYNs with cookies
/// when `syn_cookies` says (`"under-pressure"` is the default).
fn services_with_cookies(syn_cookies: &str) -> String {
    services().replace(
        "name = \"hairpin\"\n",
        &format!("name = \"hairpin\"\nsyn_cookies = \"{syn_cookies}\"\n"),
    )
}

#[test]
fn a_client_keeps_its_own_port_unless_it_is_privileged_or_the_hosts_own() {
    fixture(|fx| {
        let kept = open(fx, (CLIENT_ADDRS[0], 12_345));
        assert_eq!(kept.src_port, 12_345, "a free client port is kept");
        let other_client = open(fx, (CLIENT_ADDRS[1], 12_345));
        assert_eq!(
            other_client.src_port, 12_345,
            "the other backend (round robin): the tuple is free there too"
        );
        let third = open(fx, (THIRD_CLIENT, 12_345));
        assert_eq!(third.dst, kept.dst, "back to the first backend");
        assert_ne!(third.src_port, 12_345, "the tuple towards it is taken");
        // Inside the kernel's ip_local_port_range (32768-60999 in the
        // fixture's namespace), or privileged: a pool port.
        for port in [40_000, 80] {
            let pooled = open(fx, (CLIENT_ADDRS[0], port));
            assert!(
                (20_000..=29_999).contains(&pooled.src_port),
                "{port} -> {}",
                pooled.src_port
            );
        }
    });
}

#[test]
fn a_closed_tuple_is_reused_at_once_by_its_client_connection_and_taken_from_others_only_as_the_oldest() {
    // Without SYN cookies, which would answer the refused SYN below.
    with_fixture_settings(ONE_PORT, &services_with_cookies("never"), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let client = (CLIENT_ADDRS[0], 40_000);
        let first = forwarded(&fx.run(&Frame::tcp(client, to, SYN).build(), fx.public_ifindex));
        assert_eq!(first.src_port, 20_000);
        // While the connection lives, nobody else gets its tuple.
        let other = (CLIENT_ADDRS[1], 40_000);
        let refused = fx.run(&Frame::tcp(other, to, SYN).build(), fx.public_ifindex);
        assert_eq!(refused.action, XDP_DROP, "{refused:?}");
        assert_eq!(counter(fx, Counter::DropNatPortsExhausted), 1);

        handshake(fx, client, to, &first);
        backend_closes(fx, client, to, &first);
        // The same client connection again (same address and port), at once:
        // its timestamps and ISN on this 4-tuple only grow, so the backend's
        // TIME_WAIT accepts it.
        let again = forwarded(&fx.run(&Frame::tcp(client, to, SYN).build(), fx.public_ifindex));
        assert_eq!((again.src_port, again.dst), (20_000, first.dst));
        assert_eq!(counter(fx, Counter::ForwardNew), 2);
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 0);

        handshake(fx, client, to, &again);
        backend_closes(fx, client, to, &again);
        // The same client from its next port has timestamps of another
        // random offset (Linux draws it per 4-tuple): as foreign as another
        // client, so only as the oldest closed tuple under pressure, counted.
        let next = (CLIENT_ADDRS[0], 40_001);
        let taken = forwarded(&fx.run(&Frame::tcp(next, to, SYN).build(), fx.public_ifindex));
        assert_eq!(taken.src_port, 20_000);
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 1);
        // The old connection's client-side entry is gone with its tuple.
        assert!(fx.flows().get(&flow_key(client, to, TCP), 0).is_err());
        handshake(fx, next, to, &taken);
        backend_closes(fx, next, to, &taken);
        let from_other = forwarded(&fx.run(&Frame::tcp(other, to, SYN).build(), fx.public_ifindex));
        assert_eq!(from_other.src_port, 20_000);
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 2);
    })
    .expect("fixture");
}

#[test]
fn only_a_connection_the_backend_closed_first_holds_its_tuple_for_time_wait() {
    with_fixture_settings(ONE_PORT, &services(), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let client = (CLIENT_ADDRS[0], 40_000);
        let first = forwarded(&fx.run(&Frame::tcp(client, to, SYN).build(), fx.public_ifindex));
        handshake(fx, client, to, &first);
        // The client closes first: the backend closes passively, no TIME_WAIT.
        let fin = Frame::tcp(client, to, FIN | ACK).with_seq(CLIENT_ISN + 1, BACKEND_ISN + 1);
        forwarded(&from_client(fx, &fin));
        let fin = Frame::tcp(
            (first.dst, first.dst_port),
            (first.src, first.src_port),
            FIN | ACK,
        )
        .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 2);
        forwarded(&from_backend(fx, &fin));
        // Stray segments have two seconds to drain; then the tuple is free
        // for anyone, without eviction.
        let mut flows = fx.flows();
        set_last_seen(&mut flows, &reply_key(&first), ago(3 * SEC));
        let other = (CLIENT_ADDRS[1], 40_000);
        forwarded(&fx.run(&Frame::tcp(other, to, SYN).build(), fx.public_ifindex));
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 0);
        assert_eq!(counter(fx, Counter::ForwardNew), 2);
    })
    .expect("fixture");
}

#[test]
fn a_half_open_connection_yields_its_tuple_after_a_second_and_expires_after_the_handshake_timeout() {
    // Without SYN cookies, which would answer the refused SYN below.
    with_fixture_settings(ONE_PORT, &services_with_cookies("never"), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let spoofed = (CLIENT_ADDRS[0], 40_000);
        let first = forwarded(&fx.run(&Frame::tcp(spoofed, to, SYN).build(), fx.public_ifindex));
        let mut flows = fx.flows();
        let owner = reply_key(&first);
        // Its SYN-ACK may still be on its way: held.
        let real = (CLIENT_ADDRS[1], 40_000);
        assert_eq!(
            fx.run(&Frame::tcp(real, to, SYN).build(), fx.public_ifindex)
                .action,
            XDP_DROP
        );
        // Unanswered for two seconds: a real client under pressure takes it.
        set_last_seen(&mut flows, &owner, ago(2 * SEC));
        let taken = forwarded(&fx.run(&Frame::tcp(real, to, SYN).build(), fx.public_ifindex));
        assert_eq!(taken.src_port, 20_000);
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 1);
        // Past the handshake timeout (10 s) a half-open tuple is simply free.
        set_last_seen(&mut flows, &owner, ago(11 * SEC));
        let third = (THIRD_CLIENT, 40_000);
        forwarded(&fx.run(&Frame::tcp(third, to, SYN).build(), fx.public_ifindex));
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 1);
        // And the half-open client's own entry is superseded by its next SYN,
        // which may take the same tuple: the backend never had a connection.
        let key = flow_key(third, to, TCP);
        set_last_seen(&mut flows, &key, ago(11 * SEC));
        set_last_seen(&mut flows, &owner, ago(11 * SEC));
        let again = forwarded(&fx.run(&Frame::tcp(third, to, SYN).build(), fx.public_ifindex));
        assert_eq!(again.src_port, 20_000);
        assert_eq!(counter(fx, Counter::ForwardNew), 3);
        assert_eq!(counter(fx, Counter::ForwardNewEvicting), 1);
    })
    .expect("fixture");
}

#[test]
fn a_reset_or_fin_outside_the_window_changes_nothing_and_one_inside_closes() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &first);
        let far = CLIENT_ISN.wrapping_add(1).wrapping_add(0x8000_0000);
        for flags in [RST, FIN | ACK, RST | ACK] {
            let blind = Frame::tcp(CLIENT, FRONTEND, flags).with_seq(far, BACKEND_ISN + 1);
            assert_outcome(
                fx,
                "blind",
                &blind.build(),
                fx.public_ifindex,
                XDP_DROP,
                Counter::DropTcpOutOfWindow,
            );
        }
        // A blind RST from the backend's side too.
        let blind = Frame::tcp((first.dst, first.dst_port), (first.src, first.src_port), RST)
            .with_seq(BACKEND_ISN.wrapping_add(0x4000_0000), 0);
        let blind = blind.addressed_to(fx.private_mac).build();
        assert_outcome(
            fx,
            "blind reply",
            &blind,
            fx.private_ifindex,
            XDP_DROP,
            Counter::DropTcpOutOfWindow,
        );
        // The spoofed SYN that follows is a retransmission of a live
        // connection: same backend, same tuple, nothing rebalanced.
        let syn = Frame::tcp(CLIENT, FRONTEND, SYN).with_seq(0x5555_0000, 0);
        let stuck = forwarded(&from_client(fx, &syn));
        assert_eq!((stuck.dst, stuck.src_port), (first.dst, first.src_port));
        assert_eq!(counter(fx, Counter::ForwardNew), 1);
        // A reset within the window (RFC 5961: the endpoints check it exactly) closes it.
        let rst = Frame::tcp(CLIENT, FRONTEND, RST).with_seq(CLIENT_ISN + 1 + 1000, 0);
        forwarded(&from_client(fx, &rst));
        let new = forwarded(&from_client(fx, &syn));
        assert_ne!(new.dst, first.dst, "a new connection, balanced anew");
        assert_eq!(counter(fx, Counter::ForwardNew), 2);
    });
}

/// A backend that still has an older connection on the tuple (TIME_WAIT
/// after a PAWS refusal, SYN_RECV of a spoofed SYN) answers the SYN with a
/// plain ACK of that connection's numbers; the client answers it with a
/// RST carrying the ACK's acknowledgement number, far outside the new
/// connection's window. That RST must reach the backend, or the old
/// connection is never cleared and the client's retransmitted SYNs meet
/// it again until it expires. Only that exact number: a blind RST still
/// changes nothing.
#[test]
fn the_clients_reset_answering_a_backends_stale_ack_reaches_the_backend() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        let stale_ack = Frame::tcp((first.dst, first.dst_port), (first.src, first.src_port), ACK)
            .with_seq(0x0bad_0001, 0x7777_0000);
        let answered = forwarded(&from_backend(fx, &stale_ack));
        assert_eq!((answered.dst, answered.dst_port), CLIENT);
        let blind = Frame::tcp(CLIENT, FRONTEND, RST).with_seq(0x7777_0001, 0);
        assert_outcome(
            fx,
            "not the challenged number",
            &blind.build(),
            fx.public_ifindex,
            XDP_DROP,
            Counter::DropTcpOutOfWindow,
        );
        let rst = Frame::tcp(CLIENT, FRONTEND, RST).with_seq(0x7777_0000, 0);
        let reset = forwarded(&from_client(fx, &rst));
        assert_eq!((reset.dst, reset.src_port), (first.dst, first.src_port));
        // The connection is over: the client's retransmitted SYN starts a
        // new one, balanced anew.
        let again = forwarded(&from_client(fx, &Frame::tcp(CLIENT, FRONTEND, SYN)));
        assert_ne!(again.dst, first.dst);
        assert_eq!(counter(fx, Counter::ForwardNew), 2);
    });
}

#[test]
fn a_connection_whose_reply_entry_was_evicted_is_rebuilt_not_left_half() {
    fixture(|fx| {
        let out = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &out);
        let mut flows = fx.flows();
        flows.remove(&reply_key(&out)).expect("reply entry");
        // At its next refresh (a second on), the client's packet rebuilds it.
        set_last_seen(&mut flows, &flow_key(CLIENT, FRONTEND, TCP), ago(2 * SEC));
        let data = Frame::tcp(CLIENT, FRONTEND, ACK)
            .with_seq(CLIENT_ISN + 1, BACKEND_ISN + 1)
            .with_payload(b"GET / HTTP/1.1\r\n\r\n");
        forwarded(&from_client(fx, &data));
        assert!(flows.get(&reply_key(&out), 0).is_ok(), "the reply entry is back");
        let reply = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), ACK)
            .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 19)
            .with_payload(b"HTTP/1.1 200 OK\r\n");
        let back = forwarded(&from_backend(fx, &reply));
        assert_eq!(
            (back.src, back.src_port, back.dst, back.dst_port),
            (VIP, FRONTEND_PORT, CLIENT.0, CLIENT.1)
        );
        // Its sequence space is picked up from that segment (not taken for
        // a backend answering a SYN with a stale ACK).
        let rebuilt = flows.get(&reply_key(&out), 0).expect("the reply entry");
        assert_ne!(rebuilt.state & FLOW_SEQ_KNOWN, 0, "picked up: {rebuilt:?}");
        assert_eq!(rebuilt.state & FLOW_CHALLENGED, 0, "{rebuilt:?}");
        // And the rebuilt direction can still close the connection.
        let fin = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), FIN | ACK)
            .with_seq(BACKEND_ISN + 18, CLIENT_ISN + 19);
        forwarded(&from_backend(fx, &fin));
        assert_eq!(counter(fx, Counter::DropTcpOutOfWindow), 0);
    });
}

/// A half-closed connection (the client sent its FIN, the backend still
/// sends) whose reply entry the LRU evicted is rebuilt like any other: only
/// a connection its client replaced by a new one is never rebuilt.
#[test]
fn a_half_closed_connections_evicted_half_is_rebuilt() {
    fixture(|fx| {
        let out = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &out);
        let fin = Frame::tcp(CLIENT, FRONTEND, FIN | ACK).with_seq(CLIENT_ISN + 1, BACKEND_ISN + 1);
        forwarded(&from_client(fx, &fin));
        let mut flows = fx.flows();
        flows.remove(&reply_key(&out)).expect("reply entry");
        set_last_seen(&mut flows, &flow_key(CLIENT, FRONTEND, TCP), ago(2 * SEC));
        let ack = Frame::tcp(CLIENT, FRONTEND, ACK).with_seq(CLIENT_ISN + 2, BACKEND_ISN + 1);
        forwarded(&from_client(fx, &ack));
        assert!(flows.get(&reply_key(&out), 0).is_ok(), "the reply entry is back");
        let data = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), ACK)
            .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 2)
            .with_payload(b"still sending");
        let back = forwarded(&from_backend(fx, &data));
        assert_eq!((back.dst, back.dst_port), CLIENT);
    });
}

/// A closed connection's reply entry stays (it holds the tuple) after its
/// client reopened the port as a new connection. A late segment of the old
/// connection from its backend must not rebuild the old client-side entry
/// over the new connection's (found by the fuzzer: the client's next
/// segment went out on the old tuple, to the old backend).
#[test]
fn a_closed_connections_late_reply_never_rebuilds_its_client_side_over_a_new_connection() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &first);
        backend_closes(fx, CLIENT, FRONTEND, &first);
        let second = open(fx, CLIENT);
        assert_ne!(second.dst, first.dst, "round robin: the other backend");
        // The new connection's client-side entry is lost (the LRU, or its
        // tuple taken over).
        let mut flows = fx.flows();
        flows.remove(&flow_key(CLIENT, FRONTEND, TCP)).expect("remove");
        set_last_seen(&mut flows, &reply_key(&first), ago(2 * SEC));
        let late = Frame::tcp((first.dst, first.dst_port), (first.src, first.src_port), ACK)
            .with_seq(BACKEND_ISN + 2, CLIENT_ISN + 2);
        fx.run(
            &late.clone().addressed_to(fx.private_mac).build(),
            fx.private_ifindex,
        );
        assert!(
            fx.flows().get(&flow_key(CLIENT, FRONTEND, TCP), 0).is_err(),
            "the old connection's client side was rebuilt"
        );
    });
}

/// The daemon's sweeper on a table of more entries than one of its batches
/// (5,000): every dead entry goes (closed by a reset ten seconds ago, past
/// its 2 s hold), every live one stays, whatever the walk's position when
/// the batch before it was removed.
#[test]
fn the_sweeper_removes_every_dead_entry_across_batches_and_no_live_one() {
    const DEAD: u16 = 12_000;
    const LIVE: u16 = 50;
    fixture(|fx| {
        let out = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &out);
        let mut flows = fx.flows();
        let template = flows.get(&flow_key(CLIENT, FRONTEND, TCP), 0).expect("entry");
        let key = |i: u16| {
            flow_key(
                (Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8), 1000 + i),
                FRONTEND,
                TCP,
            )
        };
        for i in 0..DEAD + LIVE {
            let entry = if i < DEAD {
                Flow {
                    state: template.state | FLOW_CLOSING | FLOW_RESET,
                    last_seen_ns: ago(10 * SEC),
                    ..template
                }
            } else {
                Flow {
                    last_seen_ns: coarse_now_ns(),
                    ..template
                }
            };
            flows.insert(key(i), entry, 0).expect("insert");
        }
        let entries = || fx.flows().keys().filter_map(Result::ok).count();
        assert_eq!(entries(), usize::from(DEAD + LIVE) + 2);
        let _sweeper = fx.dataplane.lock().unwrap().start_sweeper().expect("sweeper");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        while entries() > usize::from(LIVE) + 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let flows = fx.flows();
        for i in 0..DEAD + LIVE {
            assert_eq!(flows.get(&key(i), 0).is_ok(), i >= DEAD, "entry {i}");
        }
        assert!(flows.get(&flow_key(CLIENT, FRONTEND, TCP), 0).is_ok());
        assert!(flows.get(&reply_key(&out), 0).is_ok());

        // Each pass publishes the census of what it left, which the status
        // and metrics use: on a table that no longer changes, exactly what
        // a scan finds.
        let scan = fx.dataplane.lock().unwrap().scan_connections().expect("scan");
        assert_eq!(scan.entries, u64::from(LIVE) + 2);
        assert_eq!(
            scan.active_by_backend.get(&template.backend_id),
            Some(&(u64::from(LIVE) + 1))
        );
        let census = || fx.dataplane.lock().unwrap().census().map(|(_, census)| census);
        while census().as_ref() != Some(&scan) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(census(), Some(scan), "the sweeper's census");
    });
}

/// Checks that `verdict` is the "fragmentation needed" error a router sends
/// about `packet` (a frame as it arrived, on interface `mac`): back to its
/// sender's MAC from `mac`, from the address it was sent to, announcing
/// `mtu`, quoting its IPv4 header and 8 bytes untouched, every checksum
/// right.
fn assert_frag_needed(verdict: &Verdict, packet: &[u8], mac: [u8; 6], mtu: u16) {
    assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
    let f = &verdict.frame;
    assert_eq!(f.len(), 70, "headers and the quote only: {f:02x?}");
    assert_eq!(&f[0..6], &packet[6..12], "back to the sender's MAC");
    assert_eq!(f[6..12], mac, "from the interface's own MAC");
    assert_eq!(f[12..14], [0x08, 0x00]);
    assert_eq!((f[14], u16::from_be_bytes([f[16], f[17]]), f[23]), (0x45, 56, 1));
    assert_eq!(internet_checksum(&f[14..34]), 0, "IPv4 header checksum");
    assert_eq!(&f[26..30], &packet[30..34], "from the address it was sent to");
    assert_eq!(&f[30..34], &packet[26..30], "to its source");
    assert_eq!(
        (f[34], f[35]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), mtu, "the next hop's MTU");
    assert_eq!(internet_checksum(&f[34..]), 0, "ICMP checksum");
    assert_eq!(&f[42..70], &packet[14..42], "the packet quoted as it arrived");
}

/// A packet larger than the path it would take (the next hop's MTU, from
/// the FIB lookup and cached with the next hop) is answered as a router
/// would, before anything is rewritten: with DF, "fragmentation needed" to
/// its sender, in both directions; without DF it is translated and handed
/// to the kernel to fragment. A packet that fits goes on.
#[test]
fn a_packet_too_big_for_the_path_gets_fragmentation_needed_in_both_directions() {
    fixture(|fx| {
        for (dev, mtu) in [(PUBLIC_IF, "1300"), (PRIVATE_IF, "1400")] {
            let status = std::process::Command::new("ip")
                .args(["-n", &fx.netns, "link", "set", dev, "mtu", mtu])
                .status()
                .expect("ip");
            assert!(status.success(), "set {dev}'s MTU");
        }
        let first = open(fx, CLIENT);
        handshake(fx, CLIENT, FRONTEND, &first);
        let flows = fx.flows();
        let mtu_of = |key: &FlowKey| flows.get(key, 0).expect("entry").next_hop_mtu;
        assert_eq!(mtu_of(&flow_key(CLIENT, FRONTEND, TCP)), 1400);
        assert_eq!(mtu_of(&reply_key(&first)), 1300);

        let data = |len: usize| {
            Frame::tcp(CLIENT, FRONTEND, ACK)
                .with_seq(CLIENT_ISN + 1, BACKEND_ISN + 1)
                .with_payload(&vec![0x55; len])
        };
        // 20 + 20 + 1360 = 1400: fits.
        forwarded(&from_client(fx, &data(1360)));
        let big = data(1361).build();
        assert_frag_needed(&fx.run(&big, fx.public_ifindex), &big, PUBLIC_MAC, 1400);
        assert_eq!(counter(fx, Counter::IcmpFragNeeded), 1);
        // Without DF: the kernel fragments it, translated.
        let mut no_df = big.clone();
        no_df[20] = 0;
        no_df[24..26].copy_from_slice(&[0, 0]);
        let check = internet_checksum(&no_df[14..34]);
        no_df[24..26].copy_from_slice(&check.to_be_bytes());
        let verdict = fx.run(&no_df, fx.public_ifindex);
        assert_eq!(verdict.action, XDP_PASS, "{verdict:?}");
        let translated = parse_and_verify(&verdict.frame).expect("a valid translated packet");
        assert_eq!((translated.dst, translated.src_port), (first.dst, first.src_port));
        assert_eq!(counter(fx, Counter::PassToFragment), 1);

        // The backend's answer, too big for the clients' side (1300).
        let reply = Frame::tcp((first.dst, first.dst_port), (first.src, first.src_port), ACK)
            .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 1)
            .with_payload(&[0x66; 1261])
            .addressed_to(fx.private_mac)
            .build();
        assert_frag_needed(&fx.run(&reply, fx.private_ifindex), &reply, PRIVATE_MAC, 1300);
        assert_eq!(counter(fx, Counter::IcmpFragNeeded), 2);
        assert_eq!(counter(fx, Counter::DropTooBig), 0);
    });
}

/// An ICMP "fragmentation needed" (MTU 1280) from `from` to `to`, arriving
/// addressed to `mac`, quoting `packet` (a frame as it left the LB): its
/// IPv4 header and the first eight bytes of its transport header.
fn frag_needed(mac: [u8; 6], from: Ipv4Addr, to: Ipv4Addr, packet: &[u8]) -> Vec<u8> {
    let quoted = &packet[14..14 + 28];
    let mut f = Vec::new();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&from.octets());
    f.extend_from_slice(&to.octets());
    let check = internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&[3, 4, 0, 0, 0, 0, 0x05, 0x00]);
    f.extend_from_slice(quoted);
    let check = internet_checksum(&f[34..]);
    f[36..38].copy_from_slice(&check.to_be_bytes());
    f
}

/// The outer and quoted addresses and ports of a forwarded ICMP error,
/// after checking every checksum from scratch and the MTU it carries.
fn icmp_translation(verdict: &Verdict) -> ((Ipv4Addr, Ipv4Addr), (Ipv4Addr, u16, Ipv4Addr, u16)) {
    assert_eq!(
        verdict.action, XDP_REDIRECT,
        "expected a redirect, got {verdict:?}"
    );
    let f = &verdict.frame;
    assert_eq!(internet_checksum(&f[14..34]), 0, "outer IPv4 checksum");
    assert_eq!(internet_checksum(&f[34..]), 0, "ICMP checksum");
    assert_eq!(internet_checksum(&f[42..62]), 0, "quoted IPv4 checksum");
    assert_eq!(&f[34..36], &[3, 4], "still fragmentation needed");
    assert_eq!(&f[40..42], &[0x05, 0x00], "the MTU (1280) is kept");
    let addr = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    ((addr(26), addr(30)), (addr(54), port(62), addr(58), port(64)))
}

#[test]
fn an_icmp_error_about_a_connection_is_translated_both_ways_and_others_pass() {
    fixture(|fx| {
        let syn = from_client(fx, &Frame::tcp(CLIENT, FRONTEND, SYN));
        let out = forwarded(&syn);
        // From the backends' side (a router or the backend itself): about
        // the SYN as it left the LB; the client gets it about its own SYN.
        let error = frag_needed(fx.private_mac, out.dst, out.src, &syn.frame);
        let before = counter(fx, Counter::ForwardIcmpError);
        let (outer, quoted) = icmp_translation(&fx.run(&error, fx.private_ifindex));
        assert_eq!(outer, (VIP, CLIENT.0));
        assert_eq!(quoted, (CLIENT.0, CLIENT.1, VIP, FRONTEND_PORT));
        assert_eq!(counter(fx, Counter::ForwardIcmpError), before + 1);

        // From the clients' side (a router on the way to the client): about
        // a reply as it left the LB; the backend gets it about its own reply.
        let reply = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), SYN | ACK)
            .with_seq(BACKEND_ISN, CLIENT_ISN + 1);
        let back = from_backend(fx, &reply);
        forwarded(&back);
        let router = Ipv4Addr::new(203, 0, 113, 1);
        let error = frag_needed(PUBLIC_MAC, router, VIP, &back.frame);
        let (outer, quoted) = icmp_translation(&fx.run(&error, fx.public_ifindex));
        assert_eq!(outer, (LB_PRIVATE, out.dst));
        assert_eq!(quoted, (out.dst, out.dst_port, LB_PRIVATE, out.src_port));

        // About a connection the LB does not track, or not an error: untouched.
        let stranger = Frame::tcp((CLIENT_ADDRS[1], 41_000), FRONTEND, SYN).build();
        let untracked = frag_needed(PUBLIC_MAC, router, CLIENT_ADDRS[1], &stranger);
        assert_outcome(
            fx,
            "untracked",
            &untracked,
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassNotService,
        );
        let mut echo = frag_needed(PUBLIC_MAC, router, VIP, &back.frame);
        echo[34] = 8; // echo request
        echo[36..38].fill(0);
        let check = internet_checksum(&echo[34..]);
        echo[36..38].copy_from_slice(&check.to_be_bytes());
        assert_outcome(
            fx,
            "echo",
            &echo,
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassNotService,
        );
    });
}

#[test]
fn a_one_way_udp_flow_is_kept_alive_by_replies() {
    fixture(|fx| {
        let client = (CLIENT_ADDRS[0], 5353);
        let to = (VIP, UDP_PORT);
        let out = forwarded(&from_client(fx, &Frame::udp(client, to, b"subscribe")));
        let forward_key = flow_key(client, to, UDP);
        let reply_key = flow_key((out.dst, out.dst_port), (out.src, out.src_port), UDP);
        let mut flows = fx.flows();
        set_last_seen(&mut flows, &forward_key, ago(25 * SEC));
        set_last_seen(&mut flows, &reply_key, ago(25 * SEC));
        // The server streams; the client never sends again.
        let stream = Frame::udp((out.dst, out.dst_port), (out.src, out.src_port), b"tick");
        forwarded(&from_backend(fx, &stream));
        let refreshed = flows
            .get(&forward_key, 0)
            .expect("client-side entry")
            .last_seen_ns;
        assert!(
            refreshed >= ago(2 * SEC),
            "the client-side entry was refreshed by a reply"
        );
    });
}

/// `frame` after `edit`, with the IPv4 header checksum recomputed over the
/// header length the (edited) header claims, as far as the frame holds it.
fn edited(frame: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = frame.to_vec();
    edit(&mut frame);
    let end = (14 + usize::from(frame[14] & 0x0f) * 4).clamp(34, frame.len());
    frame[24..26].fill(0);
    let check = internet_checksum(&frame[14..end]);
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    frame
}

fn set_total_len(frame: &mut [u8], total: usize) {
    frame[16..18].copy_from_slice(&(total as u16).to_be_bytes());
}

/// Four bytes of IPv4 options (NOP NOP NOP EOL) after the fixed header.
fn add_ip_options(frame: &mut Vec<u8>) {
    frame[14] = 0x46;
    frame.splice(34..34, [1, 1, 1, 0]);
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    set_total_len(frame, total + 4);
}

/// A labelled edit of a sound frame, and the counter of its outcome.
type EditCase = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, Counter);

/// Edits that break the IPv4 header itself. The README: such a frame
/// addressed to a VIP is dropped as `drop_malformed` (anything else passes
/// to the kernel untouched).
fn broken_ipv4_headers() -> Vec<EditCase> {
    vec![
        (
            "IPv6 version in an IPv4 frame",
            Box::new(|f| f[14] = 0x65),
            Counter::DropMalformed,
        ),
        ("IHL below 5", Box::new(|f| f[14] = 0x44), Counter::DropMalformed),
        (
            "total length beyond the frame",
            Box::new(|f| set_total_len(f, 200)),
            Counter::DropMalformed,
        ),
        (
            "total length below the header",
            Box::new(|f| set_total_len(f, 19)),
            Counter::DropMalformed,
        ),
    ]
}

/// Packets whose IPv4 header is sound but says the L4 header is shorter
/// than TCP's or UDP's, the frame cut there or padded to its old length.
fn l4_cut_short(label: &str, frame: &[u8], l4_header: usize) -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    for l4_len in 0..l4_header {
        let short = edited(frame, |f| set_total_len(f, 20 + l4_len));
        cases.push((
            format!("{label}: {l4_len}-byte L4 header, frame cut there"),
            short[..34 + l4_len].to_vec(),
        ));
        cases.push((format!("{label}: {l4_len}-byte L4 header, frame padded"), short));
    }
    cases
}

/// Every way a packet for a VIP can be broken, and what happens to it: the
/// README says fragments, packets with IP options and truncated TCP or UDP
/// headers addressed to a VIP are dropped, never forwarded half-rewritten, and
/// so is a VIP packet whose IPv4 header itself is broken (wrong version or
/// header length, total length outside the frame: `drop_malformed`); a frame
/// cut inside its IPv4 header has no destination to go by and passes to the
/// kernel untouched; and every packet is counted once, by
/// outcome. Each case is checked on its own: its action and the one counter
/// that goes up by exactly one.
#[test]
fn malformed_packets_are_never_forwarded() {
    fixture(|fx| {
        let syn = Frame::tcp(CLIENT, FRONTEND, SYN)
            .with_payload(b"0123456789")
            .build();
        let udp = Frame::udp(CLIENT, (VIP, UDP_PORT), b"0123456789").build();
        let mut cases: Vec<(String, Vec<u8>, Counter)> = Vec::new();
        let mut headless: Vec<(String, Vec<u8>)> = Vec::new();
        // Cut at every byte from the end of the Ethernet header on: either
        // the IPv4 header is incomplete (so is the destination, up to 33
        // bytes: nothing says it is for a VIP, so the kernel gets it), or its
        // total length runs past the frame (a malformed IPv4 packet for a
        // VIP, whatever its transport).
        for (name, frame) in [("TCP SYN", &syn), ("UDP", &udp)] {
            for len in 14..frame.len() {
                let label = format!("{name} truncated to {len} of {} bytes", frame.len());
                if len < 34 {
                    headless.push((label, frame[..len].to_vec()));
                } else {
                    cases.push((label, frame[..len].to_vec(), Counter::DropMalformed));
                }
            }
        }
        // Sound IPv4 headers, transport header cut short.
        for (label, frame) in l4_cut_short("TCP SYN", &syn, 20)
            .into_iter()
            .chain(l4_cut_short("UDP", &udp, 8))
        {
            cases.push((label, frame, Counter::DropTruncatedL4));
        }

        let cases_for = |frame: &[u8], table: Vec<EditCase>| {
            table
                .into_iter()
                .map(|(label, edit, counter)| (label.to_owned(), edited(frame, edit), counter))
                .collect::<Vec<_>>()
        };
        let mut tcp_cases = broken_ipv4_headers();
        tcp_cases.extend::<Vec<EditCase>>(vec![
            (
                "more-fragments flag",
                Box::new(|f| f[20] |= 0x20),
                Counter::DropFragment,
            ),
            (
                "non-zero fragment offset",
                Box::new(|f| f[21] = 1),
                Counter::DropFragment,
            ),
            ("IP options", Box::new(add_ip_options), Counter::DropIpOptions),
            (
                "IP options on a fragment (counted once, as options)",
                Box::new(|f| {
                    f[20] |= 0x20;
                    add_ip_options(f);
                }),
                Counter::DropIpOptions,
            ),
            (
                "TCP data offset below 5",
                Box::new(|f| f[46] = 0x40),
                Counter::DropTruncatedL4,
            ),
            (
                "TCP data offset beyond the segment",
                Box::new(|f| f[46] = 0xf0),
                Counter::DropTruncatedL4,
            ),
            ("TTL 1", Box::new(|f| f[22] = 1), Counter::DropTtlExceeded),
            ("TTL 0", Box::new(|f| f[22] = 0), Counter::DropTtlExceeded),
        ]);
        let udp_cases: Vec<EditCase> = vec![
            (
                "UDP length beyond the datagram",
                Box::new(|f| f[38..40].copy_from_slice(&500_u16.to_be_bytes())),
                Counter::DropTruncatedL4,
            ),
            (
                "UDP length below its header",
                Box::new(|f| f[38..40].copy_from_slice(&7_u16.to_be_bytes())),
                Counter::DropTruncatedL4,
            ),
            (
                "UDP more-fragments flag",
                Box::new(|f| f[20] |= 0x20),
                Counter::DropFragment,
            ),
            ("UDP TTL 1", Box::new(|f| f[22] = 1), Counter::DropTtlExceeded),
        ];
        cases.extend(cases_for(&syn, tcp_cases));
        cases.extend(cases_for(&udp, udp_cases));

        for (label, input, counter) in &cases {
            assert_outcome(fx, label, input, fx.public_ifindex, XDP_DROP, *counter);
        }
        for (label, input) in &headless {
            assert_outcome(
                fx,
                label,
                input,
                fx.public_ifindex,
                XDP_PASS,
                Counter::PassUntranslatable,
            );
        }
        // Nothing was forwarded, so nothing was tracked.
        assert_eq!(
            fx.dataplane.lock().unwrap().scan_connections().unwrap().entries,
            0
        );
    });
}

/// The same defects in packets not addressed to a VIP (here: SSH and DNS to
/// the LB's own address). The README says they all pass to the kernel
/// untouched, counted as untranslatable: fragments, IP options, truncated
/// TCP or UDP headers, and a broken IPv4 header itself (wrong version or
/// header length, total length outside the frame, cut short), which is the
/// kernel's to drop. Only for a VIP is a broken header dropped.
#[test]
fn not_for_a_vip_every_defect_passes_untouched() {
    fixture(|fx| {
        let ssh = Frame::tcp(CLIENT, (LB_PUBLIC, 22), ACK)
            .with_payload(b"SSH-2.0-x\r\n")
            .build();
        let dns = Frame::udp(CLIENT, (LB_PUBLIC, 53), b"query").build();
        let passes =
            |label: &str, frame: Vec<u8>| (label.to_owned(), frame, XDP_PASS, Counter::PassUntranslatable);
        let mut cases: Vec<(String, Vec<u8>, u32, Counter)> = vec![
            passes("more-fragments flag", edited(&ssh, |f| f[20] |= 0x20)),
            passes("non-zero fragment offset", edited(&ssh, |f| f[21] = 1)),
            passes("IP options", edited(&ssh, add_ip_options)),
            passes("TCP data offset below 5", edited(&ssh, |f| f[46] = 0x40)),
            passes(
                "TCP data offset beyond the segment",
                edited(&ssh, |f| f[46] = 0xf0),
            ),
            passes(
                "UDP length beyond the datagram",
                edited(&dns, |f| f[38..40].copy_from_slice(&500_u16.to_be_bytes())),
            ),
            passes("UDP more-fragments flag", edited(&dns, |f| f[20] |= 0x20)),
        ];
        for (label, frame) in l4_cut_short("SSH", &ssh, 20)
            .into_iter()
            .chain(l4_cut_short("DNS", &dns, 8))
        {
            cases.push(passes(&label, frame));
        }
        for (name, frame) in [("SSH", &ssh), ("DNS", &dns)] {
            for (label, edit, _) in broken_ipv4_headers() {
                cases.push(passes(&format!("{name}: {label}"), edited(frame, edit)));
            }
            // Cut at every byte from the end of the Ethernet header on: inside
            // the IPv4 header (up to 33 bytes), or after it with the total
            // length running past the frame.
            for len in 14..frame.len() {
                let place = if len < 34 {
                    "inside the IPv4 header"
                } else {
                    "after the IPv4 header"
                };
                cases.push(passes(
                    &format!("{name}: frame cut {place}, at {len} of {} bytes", frame.len()),
                    frame[..len].to_vec(),
                ));
            }
        }
        for (label, input, action, counter) in &cases {
            assert_outcome(fx, label, input, fx.public_ifindex, *action, *counter);
        }
        // Nothing was forwarded, so nothing was tracked.
        assert_eq!(
            fx.dataplane.lock().unwrap().scan_connections().unwrap().entries,
            0
        );
    });
}

#[test]
fn an_unknown_segment_is_handed_to_the_vrrp_peer_and_never_back() {
    fixture(|fx| {
        const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
        let input = Frame::tcp(CLIENT, FRONTEND, ACK)
            .with_payload(b"GET / HTTP/1.1\r\n")
            .build();
        assert_eq!(
            fx.run(&input, fx.public_ifindex).action,
            XDP_PASS,
            "no peer: the kernel resets it"
        );
        let mut handoff = fx.dataplane.lock().unwrap().take_peer_handoff().unwrap();
        handoff
            .set(Some(lb_common::maps::PeerHandoff {
                peer_mac: PEER_MAC,
                own_mac: fx.public_mac,
                ifindex: fx.public_ifindex,
                enabled: 1,
            }))
            .unwrap();

        let verdict = fx.run(&input, fx.public_ifindex);
        assert_eq!(verdict.action, XDP_REDIRECT);
        assert_eq!(verdict.frame[..6], PEER_MAC, "to the peer");
        assert_eq!(
            verdict.frame[6..12],
            input[..6],
            "from us (the frame's destination)"
        );
        assert_eq!(verdict.frame[12..], input[12..], "IP and TCP untouched");

        let mut from_peer = input.clone();
        from_peer[6..12].copy_from_slice(&PEER_MAC);
        assert_outcome(
            fx,
            "never back to the peer",
            &from_peer,
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassTcpNoFlow,
        );
        let mut on_private = input.clone();
        on_private[..6].copy_from_slice(&fx.private_mac);
        assert_outcome(
            fx,
            "only on the peer's link",
            &on_private,
            fx.private_ifindex,
            XDP_PASS,
            Counter::PassTcpNoFlow,
        );
        let mut flooded = input.clone();
        flooded[..6].copy_from_slice(&OTHER_HOST_MAC);
        assert_outcome(
            fx,
            "only frames sent to us",
            &flooded,
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassOtherHost,
        );
        assert_eq!(
            open(fx, (CLIENT.0, 40_001)).dst,
            WEB_ADDRS[0],
            "new connections are still balanced here"
        );
        assert_eq!(counter(fx, Counter::HandoffToPeer), 1);

        handoff.set(None).unwrap();
        assert_eq!(
            fx.run(&input, fx.public_ifindex).action,
            XDP_PASS,
            "the peer left"
        );
    });
}

// ---- SYN cookies -----------------------------------------------------------

/// The TCP fields of a frame the program sent (option-less IPv4).
#[derive(Debug)]
struct TcpFields {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
}

fn tcp_fields(frame: &[u8]) -> TcpFields {
    let tcp = &frame[34..];
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let be32 = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    TcpFields {
        seq: be32(4),
        ack: be32(8),
        flags: tcp[13],
        window: u16::from_be_bytes([tcp[14], tcp[15]]),
        options: tcp[20..header_len].to_vec(),
    }
}

/// Checks that the connection from `client` to `to` is marked reset.
fn assert_reset(fx: &Fixture, client: (Ipv4Addr, u16), to: (Ipv4Addr, u16)) {
    let entry = fx.flows().get(&flow_key(client, to, TCP), 0).expect("entry");
    assert_ne!(entry.state & FLOW_RESET, 0, "{entry:?}");
}

/// A Linux client's SYN options: MSS 1460, SACK-permitted, timestamps,
/// NOP, window scale 7.
const LINUX_SYN_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

/// The options the program announces: MSS 1460, window scale 7, the rest
/// NOPs (no SACK, no timestamps).
const COOKIE_OPTIONS: [u8; 12] = [2, 4, 5, 0xb4, 1, 3, 3, 7, 1, 1, 1, 1];

/// Sends `client`'s SYN to the hairpin service and returns the cookie of
/// the SYN-ACK the program answers with, checking that answer.
fn cookie_for(fx: &Fixture, client: (Ipv4Addr, u16)) -> u32 {
    let to = (VIP, HAIRPIN_PORT);
    let syn = Frame::tcp(client, to, SYN).with_tcp_options(&LINUX_SYN_OPTIONS);
    let verdict = from_client(fx, &syn);
    assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
    let answer = parse_and_verify(&verdict.frame).expect("the SYN-ACK's checksums");
    assert_eq!(
        (answer.src_mac, answer.dst_mac),
        (PUBLIC_MAC, CLIENT_MAC),
        "back where the SYN came from"
    );
    assert_eq!((answer.src, answer.src_port), to, "from the VIP");
    assert_eq!((answer.dst, answer.dst_port), client);
    let fields = tcp_fields(&verdict.frame);
    assert_eq!(fields.flags, SYN | ACK);
    assert_eq!(fields.ack, CLIENT_ISN + 1);
    assert_eq!(fields.options, COOKIE_OPTIONS);
    fields.seq
}

/// CLIENT's connection to the hairpin service opened by cookie: its cookie,
/// and the SYN the backend was sent.
fn open_by_cookie(fx: &Fixture) -> (u32, Parsed) {
    let cookie = cookie_for(fx, CLIENT);
    let answer = Frame::tcp(CLIENT, (VIP, HAIRPIN_PORT), ACK).with_seq(CLIENT_ISN + 1, cookie + 1);
    (cookie, forwarded(&from_client(fx, &answer)))
}

#[test]
fn with_syn_cookies_a_syn_is_answered_by_the_program_and_only_its_answer_opens_a_connection() {
    with_fixture(&services_with_cookies("always"), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let cookie = cookie_for(fx, CLIENT);
        assert_eq!(counter(fx, Counter::SynCookieSent), 1);
        assert!(
            fx.flows().get(&flow_key(CLIENT, to, TCP), 0).is_err(),
            "a SYN answered by cookie records nothing"
        );

        // A segment that does not acknowledge the cookie opens nothing.
        let wrong = Frame::tcp(CLIENT, to, ACK).with_seq(CLIENT_ISN + 1, cookie.wrapping_add(2));
        assert_outcome(
            fx,
            "wrong cookie",
            &wrong.build(),
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassTcpNoFlow,
        );
        // Nor does the right cookie from another client port.
        let other_port = Frame::tcp((CLIENT.0, CLIENT.1 + 1), to, ACK).with_seq(CLIENT_ISN + 1, cookie + 1);
        assert_outcome(
            fx,
            "cookie of another port",
            &other_port.build(),
            fx.public_ifindex,
            XDP_PASS,
            Counter::PassTcpNoFlow,
        );

        // The client's answer: the backend gets the client's SYN, rebuilt.
        let answer = Frame::tcp(CLIENT, to, ACK).with_seq(CLIENT_ISN + 1, cookie + 1);
        let verdict = from_client(fx, &answer);
        let syn = forwarded(&verdict);
        assert_eq!((syn.dst, syn.dst_port), (PUBLIC_BACKEND, HAIRPIN_PORT));
        assert_eq!(syn.src, LB_PRIVATE);
        assert_eq!(syn.dst_mac, PUBLIC_BACKEND_MAC);
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.flags, fields.seq), (SYN, CLIENT_ISN));
        // The client's MSS and window scale; no SACK, no timestamps.
        assert_eq!(fields.options, COOKIE_OPTIONS);
        assert_eq!(counter(fx, Counter::ForwardNewByCookie), 1);

        // Client data before the backend answered waits (the client sends
        // it again).
        let early = Frame::tcp(CLIENT, to, ACK)
            .with_seq(CLIENT_ISN + 1, cookie + 1)
            .with_payload(b"GET");
        assert_outcome(
            fx,
            "data before the backend answered",
            &early.build(),
            fx.public_ifindex,
            XDP_DROP,
            Counter::DropSynProxyPending,
        );

        // The backend's SYN-ACK (window scale 6) is answered by the program
        // with the ACK that completes the backend's handshake.
        let backend = (syn.dst, syn.dst_port);
        let snat = (syn.src, syn.src_port);
        let syn_ack = Frame::tcp(backend, snat, SYN | ACK)
            .with_seq(BACKEND_ISN, CLIENT_ISN + 1)
            .with_tcp_options(&[2, 4, 5, 0xb4, 1, 3, 3, 6]);
        let verdict = from_backend(fx, &syn_ack);
        assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
        let ack = parse_and_verify(&verdict.frame).expect("the ACK's checksums");
        assert_eq!((ack.src, ack.src_port), snat);
        assert_eq!((ack.dst, ack.dst_port), backend);
        assert_eq!(ack.dst_mac, syn_ack.src_mac, "back to the backend");
        let fields = tcp_fields(&verdict.frame);
        assert_eq!(
            (fields.flags, fields.seq, fields.ack),
            (ACK, CLIENT_ISN + 1, BACKEND_ISN + 1)
        );
        assert_eq!(fields.window, 0xfaf0, "the client's window, in its scale");
        assert_eq!(counter(fx, Counter::SynProxyHandshake), 1);

        // From now on the backend's sequence numbers are the cookie's, for
        // the client; the client's acknowledgements the backend's.
        let request = Frame::tcp(CLIENT, to, ACK | 0x08)
            .with_seq(CLIENT_ISN + 1, cookie + 1)
            .with_payload(b"GET");
        let verdict = from_client(fx, &request);
        let out = forwarded(&verdict);
        assert_eq!((out.dst, out.dst_port), backend);
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.seq, fields.ack), (CLIENT_ISN + 1, BACKEND_ISN + 1));

        let response = Frame::tcp(backend, snat, ACK | 0x08)
            .with_seq(BACKEND_ISN + 1, CLIENT_ISN + 4)
            .with_payload(b"200 OK");
        let verdict = from_backend(fx, &response);
        let out = forwarded(&verdict);
        assert_eq!((out.src, out.src_port), to);
        assert_eq!((out.dst, out.dst_port), CLIENT);
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.seq, fields.ack), (cookie + 1, CLIENT_ISN + 4));
        // The backend's window (scale 6) in the scale the client was told (7).
        assert_eq!(fields.window, 0xfaf0 / 2);
        // A router on the client's side answers that segment with
        // "fragmentation needed": the backend gets it about its own
        // segment, its sequence number shifted back.
        let router = Ipv4Addr::new(203, 0, 113, 1);
        let error = frag_needed(PUBLIC_MAC, router, VIP, &verdict.frame);
        let translated = fx.run(&error, fx.public_ifindex);
        let (outer, quoted) = icmp_translation(&translated);
        assert_eq!(outer, (LB_PRIVATE, PUBLIC_BACKEND));
        assert_eq!(quoted, (backend.0, backend.1, snat.0, snat.1));
        let quoted_seq = u32::from_be_bytes(translated.frame[66..70].try_into().unwrap());
        assert_eq!(quoted_seq, BACKEND_ISN + 1, "in the backend's own sequence space");

        // A RST out of the window (the backend's, 4 MB in its scale) is
        // refused; one in the client's own sequence space closes.
        let blind = Frame::tcp(CLIENT, to, RST).with_seq(CLIENT_ISN + 100_000_000, 0);
        assert_outcome(
            fx,
            "blind reset",
            &blind.build(),
            fx.public_ifindex,
            XDP_DROP,
            Counter::DropTcpOutOfWindow,
        );
        let reset = Frame::tcp(CLIENT, to, RST).with_seq(CLIENT_ISN + 4, 0);
        let verdict = from_client(fx, &reset);
        forwarded(&verdict);
        assert_reset(fx, CLIENT, to);
    })
    .expect("fixture");
}

#[test]
fn a_backend_refusing_a_connection_opened_by_cookie_resets_the_client_in_its_sequence_space() {
    with_fixture(&services_with_cookies("always"), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let (cookie, syn) = open_by_cookie(fx);
        // A stray segment from the backend's side changes nothing.
        let stray = Frame::tcp((syn.dst, syn.dst_port), (syn.src, syn.src_port), RST | ACK)
            .with_seq(0, CLIENT_ISN + 7);
        assert_outcome(
            fx,
            "stray reset",
            &stray.clone().addressed_to(fx.private_mac).build(),
            fx.private_ifindex,
            XDP_DROP,
            Counter::DropSynProxyPending,
        );
        let refusal = Frame::tcp((syn.dst, syn.dst_port), (syn.src, syn.src_port), RST | ACK)
            .with_seq(0, CLIENT_ISN + 1);
        let verdict = from_backend(fx, &refusal);
        let out = forwarded(&verdict);
        assert_eq!(
            (out.src, out.src_port, out.dst, out.dst_port),
            (to.0, to.1, CLIENT.0, CLIENT.1)
        );
        let fields = tcp_fields(&verdict.frame);
        assert_eq!(fields.flags & RST, RST);
        assert_eq!(fields.seq, cookie + 1, "in the sequence space the client knows");
        assert_reset(fx, CLIENT, to);
        // The port is free again: the client's next SYN gets its cookie.
        cookie_for(fx, CLIENT);
        assert_eq!(counter(fx, Counter::SynCookieSent), 2);
    })
    .expect("fixture");
}

#[test]
fn a_backend_still_holding_the_tuple_gets_the_clients_reset_and_a_corrupted_syn_ack_changes_nothing() {
    with_fixture(&services_with_cookies("always"), |fx| {
        let (_, syn) = open_by_cookie(fx);
        let (backend, snat) = ((syn.dst, syn.dst_port), (syn.src, syn.src_port));
        // The backend answers the SYN with a plain ACK of an older
        // connection on the tuple: it gets the RST the client's kernel
        // would send, carrying that acknowledgement number.
        let challenge = Frame::tcp(backend, snat, ACK).with_seq(0x5000_0000, 0x6000_0000);
        let verdict = from_backend(fx, &challenge);
        assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
        let reset = parse_and_verify(&verdict.frame).expect("the RST's checksums");
        assert_eq!(
            (reset.src, reset.src_port, reset.dst, reset.dst_port),
            (snat.0, snat.1, backend.0, backend.1)
        );
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.flags, fields.seq), (RST, 0x6000_0000));
        assert_eq!(counter(fx, Counter::ResetStaleBackendConnection), 1);

        // A SYN-ACK corrupted on the way (its checksum no longer matches)
        // sets nothing; the intact one completes the handshake.
        let syn_ack = Frame::tcp(backend, snat, SYN | ACK).with_seq(BACKEND_ISN, CLIENT_ISN + 1);
        let mut corrupted = syn_ack.clone().addressed_to(fx.private_mac).build();
        corrupted[38] ^= 0x40;
        assert_outcome(
            fx,
            "corrupted SYN-ACK",
            &corrupted,
            fx.private_ifindex,
            XDP_DROP,
            Counter::DropBadChecksum,
        );
        let verdict = from_backend(fx, &syn_ack);
        assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.flags, fields.ack), (ACK, BACKEND_ISN + 1));
    })
    .expect("fixture");
}

#[test]
fn a_syn_to_the_backend_left_unanswered_goes_again_when_the_client_sends_again() {
    with_fixture(&services_with_cookies("always"), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let cookie = cookie_for(fx, CLIENT);
        let answer = Frame::tcp(CLIENT, to, ACK).with_seq(CLIENT_ISN + 1, cookie + 1);
        forwarded(&from_client(fx, &answer));
        // At once: the backend may still answer.
        assert_outcome(
            fx,
            "at once",
            &answer.build(),
            fx.public_ifindex,
            XDP_DROP,
            Counter::DropSynProxyPending,
        );
        // Unanswered for two seconds: the SYN goes again.
        let mut flows = fx.flows();
        set_last_seen(&mut flows, &flow_key(CLIENT, to, TCP), ago(2 * SEC));
        let request = Frame::tcp(CLIENT, to, ACK)
            .with_seq(CLIENT_ISN + 1, cookie + 1)
            .with_payload(b"GET");
        let verdict = from_client(fx, &request);
        let syn = forwarded(&verdict);
        assert_eq!((syn.dst, syn.dst_port), (PUBLIC_BACKEND, HAIRPIN_PORT));
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.flags, fields.seq), (SYN, CLIENT_ISN));
        assert_eq!(counter(fx, Counter::ForwardNewByCookie), 2);
    })
    .expect("fixture");
}

#[test]
fn under_pressure_syns_are_answered_with_cookies_and_a_proven_client_takes_a_flooded_tuple() {
    with_fixture_settings(ONE_PORT, &services(), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        // A spoofed SYN takes the only tuple (the kept-port attempts fail:
        // privileged source port).
        let spoofed = (CLIENT_ADDRS[1], 80);
        let half_open = forwarded(&from_client(fx, &Frame::tcp(spoofed, to, SYN)));
        assert_eq!(half_open.src_port, 20_000);
        // Ordinary until the tuples run out; then this SYN gets a cookie...
        let real = (CLIENT_ADDRS[0], 81);
        let syn = Frame::tcp(real, to, SYN).with_tcp_options(&LINUX_SYN_OPTIONS);
        let verdict = from_client(fx, &syn);
        assert_eq!(verdict.action, XDP_REDIRECT, "{verdict:?}");
        let fields = tcp_fields(&verdict.frame);
        assert_eq!((fields.flags, fields.ack), (SYN | ACK, CLIENT_ISN + 1));
        let cookie = fields.seq;
        // ...and so does every SYN for a while, without a search.
        let third = (THIRD_CLIENT, 82);
        let verdict = from_client(fx, &Frame::tcp(third, to, SYN));
        assert_eq!(tcp_fields(&verdict.frame).flags, SYN | ACK);
        assert_eq!(counter(fx, Counter::SynCookieSent), 2);
        assert_eq!(counter(fx, Counter::DropNatPortsExhausted), 0);

        // The real client answers: proven, it takes the young half-open
        // tuple, which a SYN could not.
        let answer = Frame::tcp(real, to, ACK).with_seq(CLIENT_ISN + 1, cookie + 1);
        let verdict = from_client(fx, &answer);
        let out = forwarded(&verdict);
        assert_eq!((out.src, out.src_port), (LB_PRIVATE, 20_000));
        assert_eq!(tcp_fields(&verdict.frame).flags, SYN);
        assert!(
            fx.flows().get(&flow_key(spoofed, to, TCP), 0).is_err(),
            "the flood's half-open connection is gone with its tuple"
        );
    })
    .expect("fixture");
}
