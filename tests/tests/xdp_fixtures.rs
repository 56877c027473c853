//! Packet fixtures through the real XDP object with BPF_PROG_TEST_RUN: a
//! specification of the data plane, one behaviour per test. Needs root.

use std::net::Ipv4Addr;

use lb_common::stats::Counter;
use lb_tests::{
    fixture::{
        services, with_fixture, with_fixture_settings, Fixture, Verdict, CLIENT_MAC, HAIRPIN_PORT,
        PUBLIC_BACKEND, PUBLIC_BACKEND_MAC, UNRESOLVED_BACKEND, UNRESOLVED_PORT, WEB_MACS, XDP_DROP,
        XDP_PASS, XDP_REDIRECT,
    },
    packet::{internet_checksum, parse_and_verify, Frame, Parsed, ACK, FIN, RST, SYN},
    testbed::{CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, LB_PUBLIC, UDP_PORT, VIP, WEB_ADDRS},
};

const CLIENT: (Ipv4Addr, u16) = (CLIENT_ADDRS[0], 40_000);
const FRONTEND: (Ipv4Addr, u16) = (VIP, FRONTEND_PORT);

fn fixture<T: Send + 'static>(f: impl FnOnce(&Fixture) -> T + Send + 'static) -> T {
    with_fixture(&services(), f).expect("fixture namespace and program")
}

fn from_client(fx: &Fixture, frame: &Frame) -> Verdict {
    fx.run(&frame.build(), fx.public_ifindex)
}

fn forwarded(verdict: &Verdict) -> Parsed {
    assert_eq!(
        verdict.action, XDP_REDIRECT,
        "expected a redirect, got {verdict:?}"
    );
    parse_and_verify(&verdict.frame).unwrap_or_else(|e| panic!("forwarded frame invalid: {e}"))
}

fn counter(fx: &Fixture, which: Counter) -> u64 {
    let dataplane = fx.dataplane.lock().unwrap();
    dataplane
        .counters()
        .unwrap()
        .into_iter()
        .find(|(c, _)| *c == which)
        .map(|(_, n)| n)
        .unwrap()
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

#[test]
fn established_packets_use_the_cached_next_hop_and_follow_a_change_within_a_second() {
    fixture(|fx| {
        let first = open(fx, CLIENT);
        let data = Frame::tcp(CLIENT, FRONTEND, ACK);
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, WEB_MACS[0]);
        // The backend's MAC changes (e.g. it was replaced): packets keep the
        // cached next hop until the entry's refresh, then follow.
        let moved = [0x02, 0, 0, 0, 0, 0x99];
        let backend = first.dst.to_string();
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
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, WEB_MACS[0], "cached");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(forwarded(&from_client(fx, &data)).dst_mac, moved, "refreshed");
    });
}

#[test]
fn reply_is_reverse_translated_to_the_client() {
    fixture(|fx| {
        let out = open(fx, CLIENT);
        let reply = Frame::tcp((out.dst, out.dst_port), (out.src, out.src_port), SYN | ACK)
            .with_payload(b"odd-length");
        let back = forwarded(&fx.run(&reply.build(), fx.private_ifindex));
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
            let back = forwarded(&fx.run(&reply.build(), fx.private_ifindex));
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
                Frame::tcp((WEB_ADDRS[0], FRONTEND_PORT), (LB_PRIVATE, 20_000), ACK),
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
        let back = forwarded(&fx.run(&reply.build(), fx.private_ifindex));
        assert_eq!(
            ((back.src, back.src_port), (back.dst, back.dst_port)),
            (to, (CLIENT.0, 40_002))
        );
    });
}

#[test]
fn idle_udp_flow_times_out_and_the_next_datagram_is_balanced_anew() {
    with_fixture_settings("udp_timeout_secs = 1", &services(), |fx| {
        let to = (VIP, UDP_PORT);
        let first = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"a")));
        // Within the timeout the flow sticks (and the rotation does not move).
        assert_eq!(
            forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"b"))).dst,
            first.dst
        );
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let after = forwarded(&from_client(fx, &Frame::udp(CLIENT, to, b"c")));
        assert_ne!(after.dst, first.dst, "an expired flow takes the next backend");
        // The old reply entry is gone with it: the old backend cannot answer.
        let stale = Frame::udp((first.dst, first.dst_port), (first.src, first.src_port), b"late");
        if first.src_port != after.src_port {
            assert_eq!(fx.run(&stale.build(), fx.private_ifindex).action, XDP_PASS);
        }
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
        // An RST from the backend also ends the connection.
        let reply = Frame::tcp((again.dst, again.dst_port), (again.src, again.src_port), RST);
        forwarded(&fx.run(&reply.build(), fx.private_ifindex));
        assert_eq!(open(fx, CLIENT).dst, first.dst);
    });
}

#[test]
fn a_closed_connections_snat_port_is_held_through_the_backends_time_wait() {
    // One SNAT port, one backend: the only 4-tuple towards the backend.
    with_fixture_settings("snat_ports = \"20000-20000\"", &services(), |fx| {
        let to = (VIP, HAIRPIN_PORT);
        let first = fx.run(&Frame::tcp(CLIENT, to, SYN).build(), fx.public_ifindex);
        assert_eq!(first.action, XDP_REDIRECT);
        fx.run(&Frame::tcp(CLIENT, to, FIN | ACK).build(), fx.public_ifindex);
        // The client reuses its port at once: the backend may still hold the
        // old connection in TIME_WAIT, so the port must not be reused yet.
        let again = fx.run(&Frame::tcp(CLIENT, to, SYN).build(), fx.public_ifindex);
        assert_eq!(again.action, XDP_DROP, "{again:?}");
        assert_eq!(counter(fx, Counter::DropNatPortsExhausted), 1);
    })
    .expect("fixture");
}

/// Every way a packet for a VIP can be broken: each is dropped or passed
/// unmodified, never forwarded, and counted by reason.
#[test]
fn malformed_packets_are_never_forwarded() {
    fixture(|fx| {
        let syn = Frame::tcp(CLIENT, FRONTEND, SYN).with_payload(b"0123456789");
        let udp = Frame::udp(CLIENT, (VIP, UDP_PORT), b"0123456789");
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // Truncated at every byte from the end of the Ethernet header on.
        for frame in [syn.build(), udp.build()] {
            for len in 14..frame.len() {
                cases.push((
                    format!("truncated to {len} of {}", frame.len()),
                    frame[..len].to_vec(),
                ));
            }
        }
        let with_ip = |label: &str, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = syn.build();
            edit(&mut frame);
            let check = internet_checksum(&{
                let mut header = frame[14..34].to_vec();
                header[10..12].fill(0);
                header
            });
            frame[24..26].copy_from_slice(&check.to_be_bytes());
            (label.to_owned(), frame)
        };
        cases.push(with_ip("more-fragments flag", &|f| f[20] |= 0x20));
        cases.push(with_ip("non-zero fragment offset", &|f| f[21] = 1));
        cases.push(with_ip("IPv6 version in an IPv4 frame", &|f| f[14] = 0x65));
        cases.push(with_ip("IHL below 5", &|f| f[14] = 0x44));
        cases.push(with_ip("total length beyond the frame", &|f| {
            f[16..18].copy_from_slice(&200_u16.to_be_bytes())
        }));
        cases.push(with_ip("total length below the header", &|f| {
            f[16..18].copy_from_slice(&19_u16.to_be_bytes())
        }));
        cases.push(with_ip("TCP data offset below 5", &|f| f[46] = 0x40));
        cases.push(with_ip("TCP data offset beyond the segment", &|f| f[46] = 0xf0));
        cases.push(with_ip("TTL 1", &|f| f[22] = 1));
        cases.push(with_ip("IP options", &|f| {
            f[14] = 0x46;
            f.splice(34..34, [1, 1, 1, 0]); // NOP NOP NOP EOL
            let total = u16::from_be_bytes([f[16], f[17]]) + 4;
            f[16..18].copy_from_slice(&total.to_be_bytes());
        }));
        let mut bad_udp = udp.build();
        bad_udp[38..40].copy_from_slice(&500_u16.to_be_bytes());
        cases.push(("UDP length beyond the datagram".into(), bad_udp));

        for (label, input) in &cases {
            let verdict = fx.run(input, fx.public_ifindex);
            assert!(
                verdict.action == XDP_DROP || (verdict.action == XDP_PASS && verdict.frame == *input),
                "{label}: action {} (frame {:02x?})",
                verdict.action,
                verdict.frame
            );
        }
        for reason in [
            Counter::DropMalformed,
            Counter::DropTruncatedL4,
            Counter::DropFragment,
            Counter::DropIpOptions,
            Counter::DropTtlExceeded,
        ] {
            assert!(counter(fx, reason) > 0, "{} never counted", reason.name());
        }
        // Nothing was forwarded, so nothing was tracked.
        assert_eq!(counter(fx, Counter::ForwardNew), 0);
        assert_eq!(
            fx.dataplane.lock().unwrap().scan_connections().unwrap().entries,
            0
        );
    });
}

#[test]
fn fragments_and_options_not_for_a_vip_pass() {
    fixture(|fx| {
        let mut frame = Frame::tcp(CLIENT, (LB_PUBLIC, 22), ACK).build();
        frame[20] |= 0x20;
        let verdict = fx.run(&frame, fx.public_ifindex);
        assert_eq!((verdict.action, &verdict.frame), (XDP_PASS, &frame));
        assert_eq!(counter(fx, Counter::PassUntranslatable), 1);
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
        let own_mac = input[..6].try_into().unwrap();
        handoff
            .set(Some(lb_common::maps::PeerHandoff {
                peer_mac: PEER_MAC,
                own_mac,
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
        let verdict = fx.run(&from_peer, fx.public_ifindex);
        assert_eq!(
            (verdict.action, &verdict.frame),
            (XDP_PASS, &from_peer),
            "never back to the peer"
        );
        assert_eq!(
            fx.run(&input, fx.private_ifindex).action,
            XDP_PASS,
            "only on the peer's link"
        );
        let mut flooded = input.clone();
        flooded[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(
            fx.run(&flooded, fx.public_ifindex).action,
            XDP_PASS,
            "only frames sent to us"
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
