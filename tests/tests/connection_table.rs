//! The connection table with real TCP and UDP through the XDP load balancer
//! (see lb_tests::testbed): SNAT tuples reused right after a close, client
//! ports kept beyond a tiny pool, half-open connections held, taken over
//! and expired, blind resets refused, a one-way UDP flow kept alive by its
//! replies, closed connections swept from the table, and transfers through
//! a smaller-MTU link by path-MTU discovery. The single-frame versions of these are in xdp_fixtures.rs.
//! Needs root.

use std::{
    collections::{BTreeSet, HashMap},
    io::{self, Read},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    http,
    netns::Netns,
    packet::{Frame, ACK, FIN, RST, SYN},
    status,
    testbed::{
        connect_from_within, Testbed, CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, VIP, WEB_ADDRS, WEB_NAMES,
    },
    unique_tag, wait,
};
use socket2::{Domain, Protocol, Socket, Type};

// ---------------------------------------------------------------------------
// The testbed, configured by each test.

/// The service port of the TCP services these tests define (their backends
/// are the testbed's nginx on FRONTEND_PORT).
const SERVICE_PORT: u16 = 3001;
/// The UDP service of the one-way flow test, and its backends' port.
const STREAM_PORT: u16 = 5454;
/// An address of the client's subnet that nobody owns: a spoofed source
/// whose SYN-ACKs go nowhere, as in a SYN flood.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
/// The ISN of every spoofed SYN, so that a backend can be told to ignore them.
const SPOOFED_ISN: u32 = 0x1234_5678;
/// A second SNAT address on the LB's private side.
const SECOND_SNAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// `[dataplane]` lines that put the LB's own range (local_ports) over the
/// clients' ephemeral ports (the kernel default, 32768-60999), so that their
/// ports go to the pool. By default the daemon moves its range away
/// (10000-19999) and keeps them.
const CLIENT_PORTS_POOLED: &str = "local_ports = \"32768-60999\"";

fn testbed() -> Testbed {
    Testbed::new(&unique_tag("ct")).expect("testbed")
}

/// A service on the VIP, unchecked (no health-check connections at the
/// backends to blur what the clients' connections left there).
fn service(name: &str, port: u16, protocol: &str, backends: &[(&str, Ipv4Addr, u16)]) -> String {
    let backends: String = backends
        .iter()
        .map(|(name, addr, port)| format!("  {{ name = \"{name}\", address = \"{addr}:{port}\" }},\n"))
        .collect();
    format!(
        "[[service]]\nname = \"{name}\"\naddresses = [\"{VIP}\"]\nport = {port}\nprotocol = \"{protocol}\"\n\
         check = {{ type = \"none\" }}\nbackends = [\n{backends}]\n"
    )
}

/// The two nginx backends behind SERVICE_PORT.
fn both_webs() -> String {
    service(
        "both",
        SERVICE_PORT,
        "tcp",
        &[
            (WEB_NAMES[0], WEB_ADDRS[0], FRONTEND_PORT),
            (WEB_NAMES[1], WEB_ADDRS[1], FRONTEND_PORT),
        ],
    )
}

/// web1's nginx alone behind SERVICE_PORT: one backend, so a pool of one
/// port is one tuple per SNAT address.
fn web1_only() -> String {
    service(
        "single",
        SERVICE_PORT,
        "tcp",
        &[(WEB_NAMES[0], WEB_ADDRS[0], FRONTEND_PORT)],
    )
}

/// A service's config with `syn_cookies` set (the default is
/// "under-pressure": a SYN that finds no tuple gets a cookie).
fn with_syn_cookies(service: &str, syn_cookies: &str) -> String {
    service.replacen(
        "check = ",
        &format!("syn_cookies = \"{syn_cookies}\"\ncheck = "),
        1,
    )
}

/// Starts the daemon with `dataplane` (the `[dataplane]` settings besides
/// the interfaces) and `services`. The testbed's own config has a fixed
/// SNAT pool, hence a config of our own.
fn start(bed: &mut Testbed, dataplane: &str, services: &str) {
    let text = format!(
        "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\n{dataplane}\n\n[admin]\nsocket = \"{}\"\n\n{services}",
        bed.admin_socket().display()
    );
    let path = bed.dir.join("connection-table.toml");
    std::fs::write(&path, text).expect("config");
    bed.daemon = Some(Daemon::start(&bed.lb, &path, &[]).expect("daemon"));
}

/// `snat_address` (the LB's private address) and `snat_ports = "{ports}"`.
fn pool(ports: &str) -> String {
    format!("snat_address = \"{LB_PRIVATE}\"\nsnat_ports = \"{ports}\"")
}

/// A data-plane counter.
fn counter(bed: &Testbed, name: &str) -> u64 {
    let status = bed.node_status(0).expect("xlb status");
    status::dataplane_counter(&status, name).expect("counter")
}

/// The counters these tests look at, for failure messages.
fn counters(bed: &Testbed) -> String {
    [
        "forward_new",
        "forward_new_evicting",
        "drop_nat_ports_exhausted",
        "drop_tcp_out_of_window",
        "pass_tcp_no_flow",
    ]
    .iter()
    .map(|name| format!("{name}={}", counter(bed, name)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// The (local, peer) addresses of the TCP sockets in `state` in `ns`.
fn sockets(ns: &Netns, state: &str) -> Vec<(SocketAddrV4, SocketAddrV4)> {
    let text = ns.exec("ss", &["-Htn", "state", state]).expect("ss");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [.., local, peer] = fields.as_slice() else {
                return None;
            };
            Some((local.parse().ok()?, peer.parse().ok()?))
        })
        .collect()
}

/// The peers of web `i`'s nginx (port FRONTEND_PORT) in `state` that are
/// the load balancer's SNAT tuples.
fn nginx_peers(bed: &Testbed, i: usize, state: &str) -> Vec<SocketAddrV4> {
    sockets(&bed.webs[i], state)
        .into_iter()
        .filter(|(local, peer)| {
            local.port() == FRONTEND_PORT && [LB_PRIVATE, SECOND_SNAT].contains(peer.ip())
        })
        .map(|(_, peer)| peer)
        .collect()
}

/// Adds `addr/24` to the client's interface and makes sure the LB can
/// answer it (its neighbour entry).
fn add_client_address(bed: &Testbed, addr: Ipv4Addr) {
    bed.client
        .ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .expect("client address");
    bed.client
        .exec(
            "ping",
            &["-c", "1", "-W", "3", "-I", &addr.to_string(), "198.51.100.2"],
        )
        .unwrap_or_else(|e| panic!("ping from {addr}: {e}"));
}

/// Runs `nft` commands in `ns` (the rules go with the namespace).
fn nft(ns: &Netns, commands: &[&str]) {
    for command in commands {
        let args: Vec<&str> = command.split(' ').collect();
        ns.exec("nft", &args)
            .unwrap_or_else(|e| panic!("nft {command}: {e}"));
    }
}

/// Sends `frame`'s IPv4 packet from the client namespace through a raw
/// socket: any source address and port, no socket behind them.
fn send_raw(bed: &Testbed, frame: &Frame) {
    let bytes = frame.build();
    let to = SocketAddr::from((frame.dst, 0));
    bed.client
        .run(move || -> io::Result<()> {
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
            socket.send_to(&bytes[14..], &to.into())?;
            Ok(())
        })
        .expect("client namespace")
        .expect("raw send");
}

/// A connection from the client namespace, from `source` (port 0: any),
/// bounded by `timeout`; its reads bounded by 5 s.
fn connect(bed: &Testbed, source: (Ipv4Addr, u16), timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream = bed
        .client
        .run(move || connect_from_within(source, (VIP, SERVICE_PORT), timeout))??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// One `GET /` with `Connection: close` on a fresh connection from
/// `source`: nginx answers and closes first, so it keeps the tuple in
/// TIME_WAIT. Returns the answering backend's name.
fn request_and_close(bed: &Testbed, source: (Ipv4Addr, u16)) -> anyhow::Result<String> {
    let mut stream = connect(bed, source, Duration::from_secs(5))?;
    let answer = http::exchange(&mut stream, &http::get_and_close("/"), Duration::from_secs(5))?;
    anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "answer {answer:?}");
    let body = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
    Ok(body.split_whitespace().next().unwrap_or_default().to_owned())
}

/// Closes `stream` from the client's side first and waits (bounded) for
/// nginx's FIN, so the connection is fully closed when this returns.
fn close_from_client(mut stream: TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("nginx closes too");
}

/// The next sequence number the socket will send (TCP_REPAIR's view of
/// its send queue; the socket leaves repair mode without a window probe).
fn send_seq(stream: &TcpStream) -> u32 {
    const TCP_SEND_QUEUE: libc::c_int = 2;
    const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
    let fd = stream.as_raw_fd();
    let set = |option: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt with a valid fd and an int-sized value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt {option}: {}", io::Error::last_os_error());
    };
    set(libc::TCP_REPAIR, 1);
    set(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    let mut seq: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt into a u32 of the length given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUEUE_SEQ,
            (&raw mut seq).cast(),
            &mut len,
        )
    };
    let error = io::Error::last_os_error();
    set(libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    assert_eq!(rc, 0, "TCP_QUEUE_SEQ: {error}");
    seq
}

// ---------------------------------------------------------------------------
// 1. A tuple reused by its own client right after a close.

/// `n` sequential `Connection: close` requests from CLIENT_ADDRS[0], the
/// i-th from port `port(i)` (0: any), to a service on both webs. nginx
/// answers and closes first, so it keeps each tuple in TIME_WAIT, where it
/// accepts a new SYN on the tuple only if the SYN's timestamp (or sequence
/// number) is newer than the old connection's, and counts a refusal in
/// TcpExtPAWSTimewait; the refused client would hang until the TIME_WAIT
/// ends. Checks that all are answered, balanced exactly, each on its first
/// SYN, none refused for want of a tuple nor given one by eviction;
/// returns the TIME_WAIT peers (SNAT tuples) left at the webs.
fn sequential_requests_that_nginx_closes(
    bed: &Testbed,
    n: usize,
    port: impl Fn(usize) -> u16,
) -> Vec<SocketAddrV4> {
    let paws_before: Vec<u64> = bed.webs.iter().map(|ns| ns.tcp_ext("PAWSTimewait")).collect();
    let syn_retrans_before = bed.client.tcp_ext("TCPSynRetrans");
    let mut answers: HashMap<String, usize> = HashMap::new();
    for i in 0..n {
        let paws: Vec<u64> = bed.webs.iter().map(|ns| ns.tcp_ext("PAWSTimewait")).collect();
        let name = request_and_close(bed, (CLIENT_ADDRS[0], port(i))).unwrap_or_else(|e| {
            panic!(
                "connection {} of {n}: {e:#}; {}; PAWSTimewait at the webs: {paws:?} before it, {:?} now",
                i + 1,
                counters(bed),
                bed.webs
                    .iter()
                    .map(|ns| ns.tcp_ext("PAWSTimewait"))
                    .collect::<Vec<_>>()
            )
        });
        *answers.entry(name).or_insert(0) += 1;
    }
    for name in WEB_NAMES {
        assert_eq!(answers.get(name), Some(&(n / 2)), "round robin: {answers:?}");
    }
    assert_eq!(counter(bed, "drop_nat_ports_exhausted"), 0, "{}", counters(bed));
    assert_eq!(counter(bed, "forward_new"), n as u64, "{}", counters(bed));
    assert_eq!(counter(bed, "forward_new_evicting"), 0, "{}", counters(bed));
    for (i, ns) in bed.webs.iter().enumerate() {
        assert_eq!(
            ns.tcp_ext("PAWSTimewait"),
            paws_before[i],
            "{}: a SYN on a tuple in TIME_WAIT was refused (PAWS): the tuple was reused unsafely",
            WEB_NAMES[i]
        );
    }
    assert_eq!(
        bed.client.tcp_ext("TCPSynRetrans"),
        syn_retrans_before,
        "every connection got in with its first SYN"
    );
    let peers: Vec<SocketAddrV4> = (0..bed.webs.len())
        .flat_map(|i| nginx_peers(bed, i, "time-wait"))
        .collect();
    assert!(!peers.is_empty(), "nginx closed first, so it holds TIME_WAITs");
    assert!(peers.iter().all(|p| *p.ip() == LB_PRIVATE), "{peers:?}");
    peers
}

/// The ten ports the client cycles through in the reuse tests, bound
/// explicitly: a port comes back every ten connections (never onto its
/// predecessor still closing), always towards the same web (ten is even:
/// round robin), where nginx still holds the last connection's tuple in
/// TIME_WAIT. The same four-tuple from the client's side: its ISN and
/// timestamps only grow.
fn cycling_port(i: usize) -> u16 {
    40_000 + (i % 10) as u16
}

/// Pool path: the client's ports are inside the LB's own ephemeral range
/// (local_ports over the client's 32768-60999), so they are never kept. A client port that comes back meets its own closed pool
/// tuple first (the pool probes start at a hash of the client's address
/// and port), takes it at once, and nginx's TIME_WAIT accepts it: ten
/// tuples in all serve the 300 connections.
#[test]
fn a_returning_client_port_reuses_its_pool_tuple_right_after_close() {
    let mut bed = testbed();
    start(
        &mut bed,
        &format!("{}\n{CLIENT_PORTS_POOLED}", pool("20000-29999")),
        &both_webs(),
    );
    let peers = sequential_requests_that_nginx_closes(&bed, 300, cycling_port);
    assert!(
        peers.iter().all(|p| (20_000..=29_999).contains(&p.port())),
        "pool ports only: {peers:?}"
    );
    assert!(
        peers.len() <= 10,
        "each client port met its own tuple again: {peers:?}"
    );
}

/// Kept path: the same client, the LB's own range moved away (the daemon's
/// default local_ports): the client's ports are kept, each reused every ten
/// connections while nginx still holds it in TIME_WAIT.
#[test]
fn a_returning_kept_client_port_is_reused_right_after_close() {
    let mut bed = testbed();
    start(&mut bed, &pool("20000-20001"), &both_webs());
    let peers = sequential_requests_that_nginx_closes(&bed, 300, cycling_port);
    let ports: BTreeSet<u16> = peers.iter().map(SocketAddrV4::port).collect();
    assert_eq!(
        ports,
        (40_000..40_010).collect::<BTreeSet<u16>>(),
        "the client's own ports, never the pool's"
    );
}

/// A new client port (each connection from an ephemeral one, inside the
/// LB's range, so pooled) must not be given a pool tuple that nginx still
/// holds in TIME_WAIT from the same client's connection from another port:
/// that connection's ISN and timestamps (Linux offsets them per four-tuple)
/// are unrelated to the new one's, so nginx refuses the SYN about half the
/// time (PAWS) and answers with an ACK, the client's reset of which the LB
/// drops as out of its window; the client hangs until TIME_WAIT ends. The
/// pool (300 ports, 600 tuples) has room for every connection without
/// reusing a tuple, so no refusal is acceptable.
#[test]
fn a_tuple_in_time_wait_is_not_given_to_another_port_of_its_client() {
    let mut bed = testbed();
    start(
        &mut bed,
        &format!("{}\n{CLIENT_PORTS_POOLED}", pool("20000-20299")),
        &both_webs(),
    );
    sequential_requests_that_nginx_closes(&bed, 300, |_| 0);
}

// ---------------------------------------------------------------------------
// 2. Kept client ports scale beyond the pool.

/// Eight client addresses, four connections each, all open at once, on a
/// pool of one port (two tuples: one per web). The LB's own range is away
/// from theirs (the default local_ports), so the clients' ports are kept and the 32 connections need no
/// pool tuple at all.
#[test]
fn kept_client_ports_carry_many_clients_beyond_a_one_port_pool() {
    const CLIENTS: u8 = 8;
    const PER_CLIENT: u16 = 4;
    let mut bed = testbed();
    start(&mut bed, &pool("20000-20000"), &both_webs());
    let clients: Vec<Ipv4Addr> = (0..CLIENTS)
        .map(|i| Ipv4Addr::new(198, 51, 100, 20 + i))
        .collect();
    for &addr in &clients {
        add_client_address(&bed, addr);
    }
    // Distinct ports: two clients on one port towards one web would need
    // the pool (tested below).
    let mut open = Vec::new();
    for (i, &addr) in clients.iter().enumerate() {
        for j in 0..PER_CLIENT {
            let source = (addr, 40_000 + 10 * i as u16 + j);
            let mut stream = connect(&bed, source, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{source:?}: {e:#}; {}", counters(&bed)));
            let first = http::get(&mut stream).unwrap_or_else(|e| panic!("{source:?}: {e:#}"));
            open.push((source, stream, first));
        }
    }
    // All of them are live at once, each with its backend.
    for (source, stream, first) in &mut open {
        let again = http::get(stream).unwrap_or_else(|e| panic!("{source:?} again: {e:#}"));
        assert_eq!(&again, first, "{source:?}");
    }
    let total = usize::from(CLIENTS) * usize::from(PER_CLIENT);
    assert_eq!(counter(&bed, "forward_new"), total as u64, "{}", counters(&bed));
    assert_eq!(counter(&bed, "drop_nat_ports_exhausted"), 0, "{}", counters(&bed));
    assert_eq!(counter(&bed, "forward_new_evicting"), 0, "{}", counters(&bed));
    let mut seen: Vec<u16> = (0..2)
        .flat_map(|i| nginx_peers(&bed, i, "established"))
        .map(|p| p.port())
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<u16> = open.iter().map(|((_, port), _, _)| *port).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "the webs see the clients' own ports");
}

/// Five clients on the same port (30000: above the privileged ports,
/// outside the LB's own range, so kept) to one web, with two SNAT addresses and a
/// pool of one port: the port kept at each SNAT address, then the pool
/// port at each, four tuples in all. The fifth connection finds none and
/// is dropped (drop_nat_ports_exhausted); once one of the four has closed
/// (client first) the fifth gets its tuple.
#[test]
fn one_client_port_is_kept_at_each_snat_address_then_pooled_then_refused() {
    const PORT: u16 = 30_000;
    let mut bed = testbed();
    bed.lb
        .ip(&["addr", "add", &format!("{SECOND_SNAT}/24"), "dev", "eth1"])
        .unwrap();
    start(
        &mut bed,
        &format!("snat_addresses = [\"{LB_PRIVATE}\", \"{SECOND_SNAT}\"]\nsnat_ports = \"20000-20000\""),
        // Without SYN cookies, which would answer the fifth.
        &with_syn_cookies(&web1_only(), "never"),
    );
    let clients: Vec<Ipv4Addr> = (0..5).map(|i| Ipv4Addr::new(198, 51, 100, 20 + i)).collect();
    for &addr in &clients {
        add_client_address(&bed, addr);
    }
    let mut open = Vec::new();
    for &addr in &clients[..4] {
        let mut stream = connect(&bed, (addr, PORT), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{addr}: {e:#}; {}", counters(&bed)));
        assert_eq!(http::get(&mut stream).unwrap(), "web1 frontend");
        open.push(stream);
    }
    let tuples: BTreeSet<SocketAddrV4> = nginx_peers(&bed, 0, "established").into_iter().collect();
    let expected = BTreeSet::from([
        SocketAddrV4::new(LB_PRIVATE, PORT),
        SocketAddrV4::new(SECOND_SNAT, PORT),
        SocketAddrV4::new(LB_PRIVATE, 20_000),
        SocketAddrV4::new(SECOND_SNAT, 20_000),
    ]);
    assert_eq!(
        tuples, expected,
        "kept at both addresses, then the pool port at both"
    );
    assert_eq!(counter(&bed, "drop_nat_ports_exhausted"), 0);

    let fifth = (clients[4], PORT);
    let refused = connect(&bed, fifth, Duration::from_millis(1500));
    assert!(refused.is_err(), "a fifth tuple out of four");
    assert!(
        counter(&bed, "drop_nat_ports_exhausted") >= 1,
        "{}",
        counters(&bed)
    );

    let before: BTreeSet<SocketAddrV4> = nginx_peers(&bed, 0, "established").into_iter().collect();
    close_from_client(open.remove(0));
    let freed: Vec<SocketAddrV4> = before
        .difference(&nginx_peers(&bed, 0, "established").into_iter().collect())
        .copied()
        .collect();
    assert_eq!(freed.len(), 1, "one connection closed: {freed:?}");
    let mut stream = connect(&bed, fifth, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the fifth after a close: {e:#}; {}", counters(&bed)));
    assert_eq!(http::get(&mut stream).unwrap(), "web1 frontend");
    let now: BTreeSet<SocketAddrV4> = nginx_peers(&bed, 0, "established").into_iter().collect();
    assert_eq!(now, expected, "the fifth took the freed tuple {freed:?}");
    for (i, stream) in open.iter_mut().enumerate() {
        assert_eq!(
            http::get(stream).unwrap(),
            "web1 frontend",
            "connection {i} lives on"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Half-open connections.

/// A spoofed SYN (never answered by the client) from `source` to the service.
fn spoofed_syn(bed: &Testbed, source: (Ipv4Addr, u16)) {
    send_raw(
        bed,
        &Frame::tcp(source, (VIP, SERVICE_PORT), SYN).with_seq(SPOOFED_ISN, 0),
    );
}

/// One web, one pool port (one tuple), client ports never kept (the
/// client's and the LB's ranges are both the kernel default), handshake
/// timeout 3 s. web1 drops the spoofed SYNs (nftables, by their ISN), as
/// if they were lost on the way: the half-open entry is then what the data
/// plane alone makes of it.
///
/// The half-open tests' daemon: web1 alone behind a one-port pool (one
/// tuple), the client's ports pooled, half-open connections forgotten after
/// HANDSHAKE_TIMEOUT, SYN cookies as `syn_cookies` says.
fn start_one_tuple_short_handshake(bed: &mut Testbed, syn_cookies: &str) {
    start(
        bed,
        &format!(
            "{}\n{CLIENT_PORTS_POOLED}\ntcp_handshake_timeout_secs = {}",
            pool("20000-20000"),
            HANDSHAKE_TIMEOUT.as_secs()
        ),
        &with_syn_cookies(&web1_only(), syn_cookies),
    );
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// web1 drops the spoofed SYNs (by their ISN), as if lost on the way.
fn web1_ignores_spoofed_syns(bed: &Testbed) {
    nft(
        &bed.webs[0],
        &[
            "add table ip xlbtest",
            "add chain ip xlbtest pre { type filter hook prerouting priority raw ; }",
            &format!("add rule ip xlbtest pre tcp sequence {SPOOFED_ISN} drop"),
        ],
    );
}

/// A spoofed SYN takes the tuple. A real connection at once is refused (a
/// half-open tuple is held for a second: its SYN-ACK may be on the way);
/// after a second it takes the tuple over, counted as an eviction. Another
/// spoofed SYN takes the tuple again, and past the handshake timeout a real
/// connection finds it simply free: no eviction.
#[test]
fn a_half_open_tuple_is_held_for_a_second_then_evictable_then_free_after_the_handshake_timeout() {
    let mut bed = testbed();
    // Without SYN cookies, which would answer the refused connection.
    start_one_tuple_short_handshake(&mut bed, "never");
    web1_ignores_spoofed_syns(&bed);
    let spoofed_at = Instant::now();
    spoofed_syn(&bed, (SPOOFED, 40_000));
    let refused = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_millis(300));
    assert!(
        spoofed_at.elapsed() < Duration::from_secs(1),
        "precondition: the first attempt came within the second"
    );
    assert!(
        refused.is_err(),
        "the half-open tuple is held for its first second"
    );
    assert_eq!(counter(&bed, "drop_nat_ports_exhausted"), 1, "{}", counters(&bed));
    assert_eq!(counter(&bed, "forward_new"), 1, "{}", counters(&bed));

    std::thread::sleep(Duration::from_millis(1500).saturating_sub(spoofed_at.elapsed()));
    let client = (CLIENT_ADDRS[0], 40_001);
    let mut evicting = connect(&bed, client, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after a second: {e:#}; {}", counters(&bed)));
    assert!(
        spoofed_at.elapsed() < HANDSHAKE_TIMEOUT,
        "precondition: connected before the handshake timeout"
    );
    assert_eq!(http::get(&mut evicting).unwrap(), "web1 frontend");
    assert_eq!(counter(&bed, "forward_new_evicting"), 1, "{}", counters(&bed));
    assert_eq!(
        counter(&bed, "drop_nat_ports_exhausted"),
        1,
        "its first SYN got in: {}",
        counters(&bed)
    );
    // Closed, the tuple is free at once for the same client connection (same
    // address and port): a spoofed SYN as it takes it without eviction.
    close_from_client(evicting);
    let spoofed_again_at = Instant::now();
    spoofed_syn(&bed, client);
    assert_eq!(counter(&bed, "forward_new"), 2, "{}", counters(&bed));
    assert_eq!(counter(&bed, "forward_new_evicting"), 1, "{}", counters(&bed));

    std::thread::sleep(
        (HANDSHAKE_TIMEOUT + Duration::from_millis(500)).saturating_sub(spoofed_again_at.elapsed()),
    );
    let mut free = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after the handshake timeout: {e:#}; {}", counters(&bed)));
    assert_eq!(http::get(&mut free).unwrap(), "web1 frontend");
    assert_eq!(counter(&bed, "forward_new"), 3, "{}", counters(&bed));
    assert_eq!(
        counter(&bed, "forward_new_evicting"),
        1,
        "an expired half-open tuple is free, not evicted: {}",
        counters(&bed)
    );
    assert_eq!(counter(&bed, "drop_nat_ports_exhausted"), 1, "{}", counters(&bed));
}

/// As above, but web1 answers the spoofed SYN, as a backend does: its
/// SYN-ACKs go to an address nobody has, and web1 keeps the tuple in
/// SYN_RECV, retransmitting its SYN-ACK for about a minute. A real
/// connection that takes the tuple over (after a second) must still be
/// served, within the bounds of a connect: the client's reset of web1's
/// stale answer has to reach web1.
#[test]
fn a_tuple_taken_from_a_half_open_connection_the_backend_answered_serves_the_new_client() {
    let mut bed = testbed();
    start_one_tuple_short_handshake(&mut bed, "never");
    let spoofed_at = Instant::now();
    spoofed_syn(&bed, (SPOOFED, 40_000));
    wait::until("web1 answers the spoofed SYN", Duration::from_secs(5), || {
        !nginx_peers(&bed, 0, "syn-recv").is_empty()
    })
    .unwrap();
    let refused = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_millis(300));
    assert!(
        refused.is_err(),
        "the half-open tuple is held for its first second"
    );
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(spoofed_at.elapsed()));
    let outcome = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(10))
        .and_then(|mut s| http::get(&mut s))
        .map_err(|e| format!("{e:#}"));
    assert!(
        outcome.is_ok(),
        "the new client was not served: {outcome:?}; {}; web1 still in SYN_RECV with {:?}",
        counters(&bed),
        nginx_peers(&bed, 0, "syn-recv")
    );
    assert_eq!(counter(&bed, "forward_new_evicting"), 1, "{}", counters(&bed));
}

// ---------------------------------------------------------------------------
// 4. Blind resets.

/// A keep-alive connection survives blind (out-of-window) RST, RST+ACK and
/// FIN segments, then a SYN, all spoofed from its own address and port:
/// the three are dropped as drop_tcp_out_of_window, the SYN is taken for a
/// retransmission (no new connection, same backend), and the connection
/// answers on. Then its own reset (SO_LINGER 0: the real sequence number)
/// is accepted: it reaches the web, and a new connection from the same
/// port is balanced anew, to the other web.
#[test]
fn a_blind_reset_and_syn_leave_a_connection_alone_and_its_own_reset_ends_it() {
    const PORT: u16 = 41_000;
    let mut bed = testbed();
    start(&mut bed, &pool("20000-29999"), &both_webs());
    let source = (CLIENT_ADDRS[0], PORT);
    let mut stream = connect(&bed, source, Duration::from_secs(5)).expect("connect");
    let first = http::get(&mut stream).expect("first answer");
    let web = WEB_NAMES
        .iter()
        .position(|n| first.starts_with(n))
        .expect("a web answered");
    let other = 1 - web;
    assert_eq!(nginx_peers(&bed, web, "established").len(), 1);
    assert_eq!(counter(&bed, "forward_new"), 1);
    let out_of_window_before = counter(&bed, "drop_tcp_out_of_window");

    let seq = send_seq(&stream);
    let far = seq.wrapping_add(0x8000_0000);
    let to = (VIP, SERVICE_PORT);
    for flags in [RST, RST | ACK, FIN | ACK] {
        send_raw(&bed, &Frame::tcp(source, to, flags).with_seq(far, 0));
    }
    send_raw(&bed, &Frame::tcp(source, to, SYN).with_seq(0x5555_0000, 0));
    for round in 0..3 {
        let again = http::get(&mut stream)
            .unwrap_or_else(|e| panic!("answer {round} after the blind segments: {e:#}"));
        assert_eq!(again, first, "the connection kept its backend");
    }
    assert_eq!(
        counter(&bed, "drop_tcp_out_of_window") - out_of_window_before,
        3,
        "the blind RST, RST+ACK and FIN: {}",
        counters(&bed)
    );
    assert_eq!(
        counter(&bed, "forward_new"),
        1,
        "the SYN opened nothing: {}",
        counters(&bed)
    );
    assert_eq!(
        nginx_peers(&bed, web, "established").len(),
        1,
        "nothing reached nginx's socket"
    );

    // Its own reset: in the window, accepted and forwarded.
    Socket::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    wait::until("the reset reaches the web", Duration::from_secs(5), || {
        nginx_peers(&bed, web, "established").is_empty()
    })
    .unwrap();
    assert_eq!(
        counter(&bed, "drop_tcp_out_of_window") - out_of_window_before,
        3,
        "the real reset was in the window: {}",
        counters(&bed)
    );
    let mut again = connect(&bed, source, Duration::from_secs(5)).expect("the same port again");
    assert_eq!(
        http::get(&mut again).unwrap(),
        format!("{} frontend", WEB_NAMES[other]),
        "a new decision: the next web in turn"
    );
    assert_eq!(counter(&bed, "forward_new"), 2, "{}", counters(&bed));
}

// ---------------------------------------------------------------------------
// 5. A one-way UDP flow.

/// A UDP backend that answers "subscribe" with `ticks` datagrams, one every
/// `pace`, and anything else with "{name} {payload}"; each datagram names
/// the peer it came from. Stopped on drop.
struct Streamer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Streamer {
    fn start(ns: &Netns, name: &'static str, ticks: usize, pace: Duration) -> Self {
        let socket = ns
            .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, STREAM_PORT)))
            .unwrap()
            .unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&peers));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                seen.lock().unwrap().push(peer);
                if &buf[..n] != b"subscribe" {
                    let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = socket.send_to(reply.as_bytes(), peer);
                    continue;
                }
                for i in 0..ticks {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = socket.send_to(format!("{name} tick {i}").as_bytes(), peer);
                    std::thread::sleep(pace);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            peers,
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The client sends one datagram; its backend then streams to it for more
/// than twice `udp_timeout_secs` (2 s) while the client stays silent. The
/// client gets every datagram, and its next datagram, sent long after its
/// own entry would have expired had only its own packets refreshed it, is
/// still the same flow: the same web, from the same SNAT tuple (a new flow
/// would go to the other web, by round robin).
#[test]
fn a_one_way_udp_flow_is_kept_alive_by_replies() {
    const TICKS: usize = 24;
    let udp_timeout = Duration::from_secs(2);
    let mut bed = testbed();
    start(
        &mut bed,
        &format!("{}\nudp_timeout_secs = 2", pool("20000-29999")),
        &service(
            "stream",
            STREAM_PORT,
            "udp",
            &[
                (WEB_NAMES[0], WEB_ADDRS[0], STREAM_PORT),
                (WEB_NAMES[1], WEB_ADDRS[1], STREAM_PORT),
            ],
        ),
    );
    let streamers: Vec<Streamer> = bed
        .webs
        .iter()
        .zip(WEB_NAMES)
        .map(|(ns, name)| Streamer::start(ns, name, TICKS, Duration::from_millis(250)))
        .collect();
    let socket = bed
        .client
        .run(|| UdpSocket::bind((CLIENT_ADDRS[0], 0)))
        .unwrap()
        .unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let subscribed_at = Instant::now();
    socket.send_to(b"subscribe", (VIP, STREAM_PORT)).unwrap();
    let mut buf = [0u8; 1500];
    let mut web = None;
    for i in 0..TICKS {
        let (n, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("tick {i} of {TICKS}: {e}; {}", counters(&bed)));
        assert_eq!(from, SocketAddr::from((VIP, STREAM_PORT)), "from the VIP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (name, tick) = text.split_once(" tick ").unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(tick, i.to_string(), "every tick, in order");
        let name = name.to_owned();
        assert_eq!(web.get_or_insert(name.clone()), &name, "one web streams");
    }
    let web = web.unwrap();
    assert!(
        subscribed_at.elapsed() > 2 * udp_timeout,
        "precondition: the client was silent for more than twice the timeout"
    );
    socket.send_to(b"again", (VIP, STREAM_PORT)).unwrap();
    let (n, _) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("answer to the client's second datagram: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("{web} again"),
        "the same flow, to the same web"
    );
    let at = WEB_NAMES.iter().position(|n| *n == web).unwrap();
    let peers = streamers[at].peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(peers[0], peers[1], "the same SNAT tuple");
    assert!(
        streamers[1 - at].peers.lock().unwrap().is_empty(),
        "no second flow"
    );
    assert_eq!(counter(&bed, "forward_new"), 1, "{}", counters(&bed));
}

// ---------------------------------------------------------------------------
// 6. Table hygiene.

/// The table's entries (both directions of every connection), from the
/// status.
fn table_entries(bed: &Testbed) -> u64 {
    bed.node_status(0).expect("xlb status")["conntrack_entries"]
        .as_u64()
        .expect("conntrack_entries in the status")
}

/// Twenty connections that the client closes first (nobody keeps a
/// TIME_WAIT for them, so their tuples are free for anyone after two
/// seconds) leave forty entries; the daemon's sweeper removes them within a
/// couple of passes (every 2 s), and leaves alone an idle live connection,
/// which still answers afterwards. (The status's count of entries is the
/// sweeper's census: it need not ever show the forty, which a pass after
/// their hold removes uncounted.)
#[test]
fn closed_connections_are_swept_and_an_idle_live_one_is_kept() {
    let mut bed = testbed();
    start(&mut bed, &pool("20000-29999"), &both_webs());
    let mut idle = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5)).expect("connect");
    let idle_web = http::get(&mut idle).expect("first answer");
    for _ in 0..20 {
        let mut stream = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5)).expect("connect");
        http::get(&mut stream).expect("answer");
        close_from_client(stream);
    }
    assert_eq!(counter(&bed, "forward_new"), 21, "{}", counters(&bed));
    wait::until(
        "the closed connections are swept",
        Duration::from_secs(35),
        || table_entries(&bed) == 2,
    )
    .unwrap_or_else(|e| panic!("{e:#}: {} entries left", table_entries(&bed)));
    assert_eq!(
        http::get(&mut idle).expect("the idle connection answers"),
        idle_web
    );
    assert_eq!(counter(&bed, "forward_new"), 21, "{}", counters(&bed));
}

// ---------------------------------------------------------------------------
// 7. Path MTU.

/// Backend port of the transfer tests (a sink or a source in web1).
const TRANSFER_PORT: u16 = 7000;
/// Bytes per transfer: hundreds of full-sized segments.
const TRANSFER: usize = 2 << 20;

fn set_mtu(ns: &Netns, dev: &str, mtu: u16) {
    ns.ip(&["link", "set", dev, "mtu", &mtu.to_string()])
        .unwrap_or_else(|e| panic!("set {dev}'s MTU to {mtu}: {e:#}"));
}

/// The path MTU that `ns` learned towards `to` (from a "fragmentation
/// needed" error: `ip route get` shows the cached exception), if any.
fn learned_path_mtu(ns: &Netns, to: Ipv4Addr) -> Option<u16> {
    let route = ns.ip(&["route", "get", &to.to_string()]).ok()?;
    let mut words = route.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// SERVICE_PORT to web1's TRANSFER_PORT, where `serve` handles one
/// connection on a thread of its own; returns what it returned.
fn start_transfer_service(
    bed: &mut Testbed,
    serve: impl FnOnce(TcpStream) -> io::Result<usize> + Send + 'static,
) -> JoinHandle<io::Result<usize>> {
    start_transfer_service_with(bed, "under-pressure", serve)
}

/// As `start_transfer_service`, the service's `syn_cookies` as given.
fn start_transfer_service_with(
    bed: &mut Testbed,
    syn_cookies: &str,
    serve: impl FnOnce(TcpStream) -> io::Result<usize> + Send + 'static,
) -> JoinHandle<io::Result<usize>> {
    let listener = bed.webs[0]
        .run(|| std::net::TcpListener::bind((WEB_ADDRS[0], TRANSFER_PORT)))
        .expect("web1's namespace")
        .expect("bind in web1");
    start(
        bed,
        &pool("20000-29999"),
        &with_syn_cookies(
            &service(
                "transfer",
                SERVICE_PORT,
                "tcp",
                &[(WEB_NAMES[0], WEB_ADDRS[0], TRANSFER_PORT)],
            ),
            syn_cookies,
        ),
    );
    std::thread::spawn(move || {
        let (stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        serve(stream)
    })
}

/// web1 sends TRANSFER bytes on the one connection it accepts.
fn start_download_source(bed: &mut Testbed) -> JoinHandle<io::Result<usize>> {
    start_transfer_service(bed, |mut stream| {
        std::io::Write::write_all(&mut stream, &vec![0xa5; TRANSFER])?;
        stream.shutdown(Shutdown::Write)?;
        Ok(TRANSFER)
    })
}

/// Reads the whole download on `stream` (bounded) and checks that both
/// ends saw TRANSFER bytes.
fn download(bed: &Testbed, mut stream: TcpStream, source: JoinHandle<io::Result<usize>>) {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .unwrap_or_else(|e| panic!("download: {e}; {}", counters(bed)));
    assert_eq!(received.len(), TRANSFER);
    assert_eq!(source.join().expect("source thread").expect("source"), TRANSFER);
}

/// The link between the LB and the private switch carries at most 1400
/// bytes (both ends: a larger frame is dropped by the receiving end, as on
/// a real link), while the client's and web1's links carry 1500, so web1
/// announces an MSS of 1460 and the client's first full segments cannot
/// cross. The LB answers them with "fragmentation needed" (MTU 1400), the
/// client lowers its path MTU, and the 2 MiB upload completes; without
/// the answer every full segment would vanish and the upload would stall.
#[test]
fn an_upload_through_a_smaller_mtu_link_completes_by_path_mtu_discovery() {
    let mut bed = testbed();
    set_mtu(&bed.lb, "eth1", 1400);
    set_mtu(&bed.switch, "lb", 1400);
    let sink = start_transfer_service(&mut bed, |mut stream| {
        let received = io::copy(&mut stream, &mut io::sink())?;
        std::io::Write::write_all(&mut stream, &received.to_be_bytes())?;
        Ok(received as usize)
    });
    let mut stream = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5)).expect("connect");
    stream.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(&mut stream, &vec![0x5a; TRANSFER]).unwrap_or_else(|e| {
        panic!(
            "upload: {e}; icmp_frag_needed={}",
            counter(&bed, "icmp_frag_needed")
        )
    });
    stream.shutdown(Shutdown::Write).unwrap();
    let mut count = [0; 8];
    stream.read_exact(&mut count).expect("web1's count");
    assert_eq!(u64::from_be_bytes(count), TRANSFER as u64);
    assert_eq!(sink.join().expect("sink thread").expect("sink"), TRANSFER);
    assert!(counter(&bed, "icmp_frag_needed") >= 1, "{}", counters(&bed));
    assert_eq!(learned_path_mtu(&bed.client, VIP), Some(1400));
    assert_eq!(counter(&bed, "drop_too_big"), 0);
}

/// The other way: the LB's public link is the smaller one (1400), the
/// client's end of it 1500, so the client announces an MSS of 1460. web1's
/// full segments of a 2 MiB download are answered with "fragmentation
/// needed" from the SNAT address, web1 learns the path MTU towards it, and
/// the download completes.
#[test]
fn a_download_through_a_smaller_mtu_link_teaches_the_backend_its_path_mtu() {
    let mut bed = testbed();
    set_mtu(&bed.lb, "eth0", 1400);
    let source = start_download_source(&mut bed);
    let stream = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5)).expect("connect");
    download(&bed, stream, source);
    assert!(counter(&bed, "icmp_frag_needed") >= 1, "{}", counters(&bed));
    assert_eq!(learned_path_mtu(&bed.webs[0], LB_PRIVATE), Some(1400));
}

/// A client two hops away: behind the client namespace, which routes for
/// it and whose link to it carries at most 1400 bytes (its own end 1500,
/// so the far client announces an MSS of 1460). web1's full segments of a
/// download leave the LB whole; the client namespace's kernel, a real
/// router, answers them with "fragmentation needed" to the VIP. The LB
/// translates that error (outer and quoted headers) to web1, which learns
/// the path MTU towards the SNAT address, and the download completes.
#[test]
fn a_routers_fragmentation_needed_reaches_the_backend_translated() {
    const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const ROUTER_SIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    let mut bed = testbed();
    let far = Netns::new(&unique_tag("ctfar")).expect("namespace");
    lb_tests::netns::veth(&bed.client, "far0", &far, "eth0", None).expect("link");
    set_mtu(&bed.client, "far0", 1400);
    bed.client
        .ip(&["addr", "add", &format!("{ROUTER_SIDE}/24"), "dev", "far0"])
        .unwrap();
    bed.client.sysctl("net.ipv4.ip_forward", "1").unwrap();
    far.ip(&["addr", "add", &format!("{FAR_CLIENT}/24"), "dev", "eth0"])
        .unwrap();
    far.ip(&["route", "add", "default", "via", &ROUTER_SIDE.to_string()])
        .unwrap();
    bed.lb
        .ip(&[
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            &CLIENT_ADDRS[0].to_string(),
        ])
        .unwrap();
    let source = start_download_source(&mut bed);
    let stream = far
        .run(|| connect_from_within((FAR_CLIENT, 0), (VIP, SERVICE_PORT), Duration::from_secs(5)))
        .expect("far namespace")
        .expect("connect from the far client");
    download(&bed, stream, source);
    assert!(counter(&bed, "forward_icmp_error") >= 1, "{}", counters(&bed));
    assert_eq!(
        counter(&bed, "icmp_frag_needed"),
        0,
        "the LB's own links are 1500"
    );
    assert_eq!(learned_path_mtu(&bed.webs[0], LB_PRIVATE), Some(1400));
}

// ---------------------------------------------------------------------------
// 8. SYN cookies.

/// With `syn_cookies = "always"` the program answers every SYN itself and
/// opens the backend connection from the client's answer: 20 connections
/// in a row (one request each, nginx closing first) are all served, by
/// both webs, each opened by its cookie and none the ordinary way.
#[test]
fn with_syn_cookies_always_every_connection_is_opened_by_its_cookie_and_served() {
    let mut bed = testbed();
    start(
        &mut bed,
        &pool("20000-29999"),
        &with_syn_cookies(&both_webs(), "always"),
    );
    let mut served = BTreeSet::new();
    for i in 0..20 {
        let name = request_and_close(&bed, (CLIENT_ADDRS[0], 0))
            .unwrap_or_else(|e| panic!("connection {i}: {e:#}; {}", cookie_counters(&bed)));
        served.insert(name);
    }
    assert_eq!(served, BTreeSet::from(WEB_NAMES.map(str::to_owned)));
    assert_eq!(
        counter(&bed, "forward_new_by_cookie"),
        20,
        "{}",
        cookie_counters(&bed)
    );
    assert_eq!(
        counter(&bed, "syn_proxy_handshake"),
        20,
        "{}",
        cookie_counters(&bed)
    );
    assert!(
        counter(&bed, "syn_cookie_sent") >= 20,
        "{}",
        cookie_counters(&bed)
    );
    assert_eq!(counter(&bed, "forward_new"), 0, "{}", cookie_counters(&bed));
}

/// The SYN-proxy counters, for failure messages.
fn cookie_counters(bed: &Testbed) -> String {
    [
        "syn_cookie_sent",
        "forward_new_by_cookie",
        "syn_proxy_handshake",
        "drop_syn_proxy_pending",
        "forward_new",
        "forward_new_evicting",
        "drop_nat_ports_exhausted",
    ]
    .iter()
    .map(|name| format!("{name}={}", counter(bed, name)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// 2 MiB up and 2 MiB back down through a connection opened by cookie,
/// web1 announcing a window scale above 7 (receive buffers up to 32 MiB)
/// where the client was told 7: every segment web1 sends has its sequence number
/// shifted onto the cookie's and its window rescaled, every one the client
/// sends its acknowledgement number shifted onto web1's. A wrong shift
/// would stall the transfer (or reset it), a wrong window overrun web1's
/// buffer or starve the client.
#[test]
fn a_transfer_through_a_connection_opened_by_cookie_completes_both_ways() {
    let mut bed = testbed();
    bed.webs[0]
        .sysctl("net.ipv4.tcp_rmem", "4096 131072 33554432")
        .expect("web1's receive buffers");
    let echo = start_transfer_service_with(&mut bed, "always", |mut stream| {
        let mut received = vec![0; TRANSFER];
        stream.read_exact(&mut received)?;
        std::io::Write::write_all(&mut stream, &received)?;
        stream.shutdown(Shutdown::Write)?;
        Ok(received.len())
    });
    let mut stream = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5)).expect("connect");
    let web1_info = bed.webs[0]
        .exec("ss", &["-tinH", "state", "established"])
        .unwrap_or_default();
    let web1_scale = web1_info
        .split_whitespace()
        .find_map(|word| word.strip_prefix("wscale:"))
        .and_then(|scales| scales.split(',').nth(1))
        .and_then(|scale| scale.parse::<u8>().ok());
    assert!(
        web1_scale.is_some_and(|scale| scale != 7),
        "precondition: web1 scales its window by other than 7: {web1_info}"
    );
    let sent: Vec<u8> = (0..TRANSFER).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let sent = sent.clone();
        std::thread::spawn(move || {
            stream.set_write_timeout(Some(Duration::from_secs(20)))?;
            std::io::Write::write_all(&mut stream, &sent)
        })
    };
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .unwrap_or_else(|e| panic!("echo: {e}; {}", cookie_counters(&bed)));
    writer.join().expect("writer thread").expect("upload");
    assert!(received == sent, "the echo differs from what was sent");
    assert_eq!(echo.join().expect("echo thread").expect("echo"), TRANSFER);
    assert_eq!(
        counter(&bed, "forward_new_by_cookie"),
        1,
        "{}",
        cookie_counters(&bed)
    );
}

/// A spoofed SYN holds the only tuple (web1 ignores it). A real client's
/// SYN finds no tuple: the service is under pressure and answers it with a
/// cookie; the client's answer proves it, takes the young half-open tuple
/// and is served at once (without cookies it is refused for a second:
/// see the half-open test). Then 300 spoofed SYNs from as many ports,
/// with 10 real clients among them: every real one is served.
#[test]
fn under_a_syn_flood_real_clients_get_cookies_and_are_served() {
    let mut bed = testbed();
    start_one_tuple_short_handshake(&mut bed, "under-pressure");
    web1_ignores_spoofed_syns(&bed);
    spoofed_syn(&bed, (SPOOFED, 40_000));
    let mut stream = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("under pressure: {e:#}; {}", cookie_counters(&bed)));
    assert_eq!(http::get(&mut stream).unwrap(), "web1 frontend");
    assert_eq!(
        counter(&bed, "forward_new_by_cookie"),
        1,
        "{}",
        cookie_counters(&bed)
    );
    assert_eq!(
        counter(&bed, "drop_nat_ports_exhausted"),
        0,
        "{}",
        cookie_counters(&bed)
    );
    close_from_client(stream);

    for round in 0..10_u16 {
        for i in 0..30 {
            spoofed_syn(&bed, (SPOOFED, 41_000 + round * 30 + i));
        }
        let served = connect(&bed, (CLIENT_ADDRS[0], 0), Duration::from_secs(5))
            .and_then(|mut s| {
                let name = http::get(&mut s)?;
                close_from_client(s);
                Ok(name)
            })
            .unwrap_or_else(|e| panic!("round {round}: {e:#}; {}", cookie_counters(&bed)));
        assert_eq!(served, "web1 frontend");
    }
    assert_eq!(
        counter(&bed, "forward_new_by_cookie"),
        11,
        "{}",
        cookie_counters(&bed)
    );
    assert!(
        counter(&bed, "syn_cookie_sent") >= 311,
        "{}",
        cookie_counters(&bed)
    );
}
