//! Real TCP and UDP through the XDP load balancer, in namespaces wired like
//! the droplets (see lb_tests::testbed). Needs root.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use lb_tests::{
    http,
    testbed::{
        base_services, Testbed, ANCHOR, API_PORT, CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, LB_PUBLIC,
        UDP_PORT, VIP, WEB_ADDRS,
    },
    unique_tag, wait,
};

fn testbed() -> Testbed {
    Testbed::new(&unique_tag("xf")).expect("testbed")
}

/// Accepts the next connection on `listener`, or fails naming `what` once a
/// generous bound has passed: a connection the load balancer lost fails the
/// test instead of hanging it. The accepted stream blocks, its reads bounded.
fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).expect("non-blocking listener");
    let accepted = wait::until_some(what, Duration::from_secs(20), || match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        result => Some(result),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (stream, from) = accepted.unwrap_or_else(|e| panic!("{what}: {e}"));
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (stream, from)
}

fn assert_even_split(counts: &HashMap<String, usize>, expected: [&str; 2], n: usize) {
    assert_eq!(counts.len(), 2, "answers: {counts:?}");
    for name in expected {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            got.abs_diff(n / 2) <= 1,
            "{name} answered {got} of {n}: {counts:?}"
        );
    }
}

#[test]
fn sequential_connections_alternate_exactly_on_both_services() {
    let mut bed = testbed();
    bed.start_lb(&base_services(), &[]).expect("daemon");
    let frontend = bed.tally((VIP, FRONTEND_PORT), 1000).unwrap();
    assert_even_split(&frontend, ["web1 frontend", "web2 frontend"], 1000);
    let api = bed.tally((VIP, API_PORT), 1000).unwrap();
    assert_even_split(&api, ["web1 api", "web2 api"], 1000);
    // The anchor address reaches the same service.
    let anchor = bed.tally((ANCHOR, FRONTEND_PORT), 10).unwrap();
    assert_even_split(&anchor, ["web1 frontend", "web2 frontend"], 10);
}

#[test]
fn long_lived_connection_keeps_its_backend_while_others_rotate() {
    let mut bed = testbed();
    bed.start_lb(&base_services(), &[]).expect("daemon");
    let mut long = bed
        .connect((CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT))
        .expect("connect");
    let first = http::get(&mut long).expect("first answer");
    let mut others = HashMap::new();
    for round in 0..50 {
        let body = bed
            .request((VIP, FRONTEND_PORT))
            .unwrap_or_else(|e| panic!("new connection {round}: {e:#}"));
        *others.entry(body).or_insert(0) += 1;
        let again = http::get(&mut long).unwrap_or_else(|e| panic!("long-lived request {round}: {e}"));
        assert_eq!(again, first, "long-lived connection moved at round {round}");
    }
    assert_eq!(others.len(), 2, "new connections kept rotating: {others:?}");
}

#[test]
fn two_clients_with_the_same_source_port_both_work() {
    let mut bed = testbed();
    // A single-backend service forces both connections onto one backend,
    // where only distinct SNAT ports can keep them apart. The backend is
    // this test's own listener, so it can tell what the load balancer sent.
    let backend_port = 3002;
    let services = format!(
        "{}\n[[service]]\nname = \"single\"\naddresses = [\"{VIP}\"]\nport = 3001\ncheck = {{ type = \"none\" }}\n\
         backends = [{{ name = \"web1\", address = \"{}:{backend_port}\" }}]\n",
        base_services(),
        WEB_ADDRS[0]
    );
    let backend = bed.webs[0]
        .run(move || TcpListener::bind((WEB_ADDRS[0], backend_port)))
        .unwrap()
        .unwrap();
    bed.start_lb(&services, &[]).expect("daemon");

    let mut clients = CLIENT_ADDRS.map(|client| {
        let stream = bed
            .connect((client, 41000), (VIP, 3001))
            .unwrap_or_else(|e| panic!("client {client}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    });
    // Each client names itself; the backend learns whose connection is whose.
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&[b'A' + i as u8]).unwrap();
    }
    let mut accepted = HashMap::new();
    for _ in 0..clients.len() {
        let (mut stream, seen_from) = accept(&backend, "a client's connection at the backend");
        let mut name = [0u8];
        stream.read_exact(&mut name).expect("the client's name");
        assert!(
            accepted.insert(name[0], (stream, seen_from)).is_none(),
            "two connections named {}",
            name[0] as char
        );
    }
    let mut servers: Vec<_> = (0..clients.len())
        .map(|i| {
            accepted
                .remove(&(b'A' + i as u8))
                .expect("every client reached the backend")
        })
        .collect();
    for (i, (_, seen_from)) in servers.iter().enumerate() {
        assert_eq!(
            seen_from.ip(),
            std::net::IpAddr::V4(LB_PRIVATE),
            "client {i}: the backend sees the LB, not the client"
        );
    }
    // One backend: the first client keeps its port, the second, whose
    // tuple would be the same, gets one from the pool.
    assert_eq!(servers[0].1.port(), 41000, "the first client's own port is kept");
    assert!(
        (20_000..=29_999).contains(&servers[1].1.port()),
        "the second client: source port {} outside snat_ports",
        servers[1].1.port()
    );
    // Interleaved both ways, each byte reaches the right end.
    for round in 0..5 {
        for (i, (client, (server, _))) in clients.iter_mut().zip(&mut servers).enumerate() {
            let request = format!("request {round} from {i}\n");
            client.write_all(request.as_bytes()).unwrap();
            let mut got = vec![0; request.len()];
            server.read_exact(&mut got).expect("request at the backend");
            assert_eq!(got, request.as_bytes());
            let answer = format!("answer {round} to {i}\n");
            server.write_all(answer.as_bytes()).unwrap();
            let mut got = vec![0; answer.len()];
            client.read_exact(&mut got).expect("answer at the client");
            assert_eq!(got, answer.as_bytes());
        }
    }
    drop((clients, servers));

    // The same on the two-backend service, through nginx.
    let mut a = bed
        .connect((CLIENT_ADDRS[0], 41000), (VIP, FRONTEND_PORT))
        .expect("client A");
    let mut b = bed
        .connect((CLIENT_ADDRS[1], 41000), (VIP, FRONTEND_PORT))
        .expect("client B");
    for _ in 0..5 {
        let from_a = http::get(&mut a).expect("A answered");
        let from_b = http::get(&mut b).expect("B answered");
        assert!(
            from_a.ends_with("frontend") && from_b.ends_with("frontend"),
            "{from_a} / {from_b}"
        );
    }
}

#[test]
fn udp_service_alternates_and_answers() {
    let mut bed = testbed();
    bed.start_lb(&base_services(), &[]).expect("daemon");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..20 {
        // A new source port per flow: each is a new UDP flow.
        let socket = bed
            .client
            .run(|| UdpSocket::bind((CLIENT_ADDRS[0], 0)))
            .unwrap()
            .unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        let mut answer = None;
        for _ in 0..2 {
            socket
                .send_to(format!("hello {i}").as_bytes(), (VIP, UDP_PORT))
                .unwrap();
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                assert_eq!(from, (VIP, UDP_PORT).into(), "reply must come from the VIP");
                answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                // The same flow sticks to its backend.
                socket.send_to(b"again", (VIP, UDP_PORT)).unwrap();
                let (n, _) = socket.recv_from(&mut buf).expect("second datagram answered");
                let second = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert_eq!(
                    second.split(' ').next(),
                    answer.as_deref().and_then(|a| a.split(' ').next())
                );
                break;
            }
        }
        let answer = answer.unwrap_or_else(|| panic!("no UDP answer for flow {i}"));
        assert!(answer.ends_with(&format!("hello {i}")), "{answer}");
        *counts
            .entry(answer.split(' ').next().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("web1"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("web2"), Some(&10), "{counts:?}");
}

#[test]
fn traffic_not_for_a_service_reaches_the_lb_itself() {
    let mut bed = testbed();
    bed.start_lb(&base_services(), &[]).expect("daemon");
    // SSH-like listener on the LB's own address, and one on another VIP port.
    let ssh = bed
        .lb
        .run(|| TcpListener::bind((LB_PUBLIC, 2222)))
        .unwrap()
        .unwrap();
    let other = bed.lb.run(|| TcpListener::bind((VIP, 8080))).unwrap().unwrap();
    for (listener, to) in [(&ssh, (LB_PUBLIC, 2222)), (&other, (VIP, 8080))] {
        let mut client = bed
            .connect((CLIENT_ADDRS[0], 0), to)
            .expect("connect to the LB's own stack");
        client.write_all(b"SSH-2.0-test\r\n").unwrap();
        let (mut server, _) = accept(listener, &format!("the connection to {}:{}", to.0, to.1));
        let mut buf = [0u8; 14];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"SSH-2.0-test\r\n");
    }
    for target in [LB_PUBLIC, VIP] {
        bed.client
            .exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", &target.to_string()])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
    }
    // The LB's own outgoing connection to a web server is not translated.
    let own = bed
        .lb
        .run(|| {
            lb_tests::testbed::connect_from(
                (Ipv4Addr::UNSPECIFIED, 0),
                (lb_tests::testbed::WEB_ADDRS[0], FRONTEND_PORT),
            )
        })
        .unwrap()
        .expect("LB connects to a backend directly");
    let mut own = own;
    assert_eq!(http::get(&mut own).unwrap(), "web1 frontend");
}

/// The program passes unicast frames for any MAC but its interface's, so it
/// must follow a change of that address: the daemon reads the addresses
/// again every second and says when one changed. After the public
/// interface's address changes and the client has learnt the new one (a
/// flush makes it ask ARP again), connections through the VIP are balanced
/// as before.
#[test]
fn a_changed_interface_mac_is_followed() {
    const NEW_MAC: &str = "02:00:00:00:aa:01";
    let mut bed = testbed();
    bed.start_lb(&base_services(), &[]).expect("daemon");
    bed.lb.ip(&["link", "set", "eth0", "address", NEW_MAC]).unwrap();
    let changed = bed
        .daemon
        .as_mut()
        .unwrap()
        .wait_for_line("the interface's MAC address changed", Duration::from_secs(15))
        .unwrap();
    assert!(
        changed.contains("interface=eth0") && changed.contains(NEW_MAC),
        "{changed}"
    );
    bed.client.ip(&["neigh", "flush", "dev", "eth0"]).unwrap();
    let frontend = bed.tally((VIP, FRONTEND_PORT), 10).unwrap();
    assert_even_split(&frontend, ["web1 frontend", "web2 frontend"], 10);
}
