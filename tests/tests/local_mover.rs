//! The `local` floating-IP mover on real links between namespaces: the VIP
//! goes on and off the node's interface, gratuitous ARPs reach the segment
//! and move a client's neighbour entry from one node to another, leftovers of
//! a killed daemon are removed, and the guard removes the VIP once the
//! process holding its pipe is killed. Needs root.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use lb_tests::{
    arp::{ArpFrame, ArpSocket, Mac},
    netns::{veth, Netns},
    unique_tag, wait,
};
use lb_user::{
    failover::{
        garp::{BROADCAST_MAC, OP_REPLY, OP_REQUEST},
        guard::run_guard_on,
        local::{block_on, LocalError, LocalMover, LocalSettings},
    },
    netdev::parse_mac,
};

const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 101);
const NODE_IF: &str = "lb0";
const CLIENT_IF: &str = "cl0";
/// How long a test waits for a frame that should (or should not) arrive.
const QUIET: Duration = Duration::from_millis(500);
/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(5);

/// A node and a client joined by a veth pair, in one /24.
struct Segment {
    node: Netns,
    client: Netns,
}

fn segment() -> Segment {
    let node = Netns::new(&unique_tag("xlm")).expect("node namespace");
    let client = Netns::new(&unique_tag("xlm")).expect("client namespace");
    veth(&node, NODE_IF, &client, CLIENT_IF, None).expect("veth pair");
    add_address(&node, NODE_IF, &format!("{NODE}/24"));
    add_address(&client, CLIENT_IF, &format!("{CLIENT}/24"));
    Segment { node, client }
}

fn settings(addresses: &[Ipv4Addr], garp_count: u32) -> LocalSettings {
    LocalSettings {
        interface: NODE_IF.to_owned(),
        addresses: addresses.iter().map(|&address| (address, 32)).collect(),
        garp_count,
        garp_interval: Duration::from_millis(50),
        garp_refresh: None,
    }
}

/// Runs a mover operation inside `ns`, as the daemon would in its own.
fn on_node<T: Send + 'static>(
    ns: &Netns,
    settings: &LocalSettings,
    operation: impl AsyncFnOnce(&LocalMover) -> Result<T, LocalError> + Send + 'static,
) -> T {
    let settings = settings.clone();
    ns.run(move || {
        let mover = LocalMover::new(settings).expect("valid settings");
        block_on(operation(&mover))
            .expect("runtime")
            .map_err(|e| e.to_string())
    })
    .expect("enter the namespace")
    .unwrap_or_else(|e| panic!("mover operation failed: {e}"))
}

fn add_address(ns: &Netns, interface: &str, cidr: &str) {
    ns.ip(&["addr", "add", cidr, "dev", interface])
        .unwrap_or_else(|e| panic!("add {cidr}: {e}"));
}

/// The interface's IPv4 addresses as `ip -o` shows them, e.g.
/// `inet 198.51.100.100/32 scope global lb0`.
fn addresses(ns: &Netns, interface: &str) -> Vec<String> {
    ns.ip(&["-4", "-o", "addr", "show", "dev", interface])
        .expect("ip addr show")
        .lines()
        .filter_map(|line| {
            let start = line.find("inet ")?;
            let end = line.find('\\').unwrap_or(line.len());
            Some(line[start..end].trim().to_owned())
        })
        .collect()
}

fn has_address(ns: &Netns, interface: &str, address: Ipv4Addr) -> bool {
    let prefix = format!("inet {address}/");
    addresses(ns, interface)
        .iter()
        .any(|line| line.starts_with(&prefix))
}

fn mac_of(ns: &Netns, interface: &str) -> Mac {
    let brief = ns
        .ip(&["-br", "link", "show", "dev", interface])
        .expect("ip link show");
    let mac = brief.split_whitespace().nth(2).expect("a MAC column");
    parse_mac(mac).unwrap_or_else(|| panic!("not a MAC: {mac:?}"))
}

/// The client's neighbour entry for `address`: its MAC (if any) and state.
fn neighbour(ns: &Netns, interface: &str, address: Ipv4Addr) -> Option<(Option<Mac>, String)> {
    let shown = ns
        .ip(&["neigh", "show", &address.to_string(), "dev", interface])
        .expect("ip neigh show");
    let words: Vec<&str> = shown.split_whitespace().collect();
    let state = (*words.last()?).to_owned();
    let mac = words
        .iter()
        .position(|&word| word == "lladdr")
        .and_then(|at| words.get(at + 1))
        .map(|mac| parse_mac(mac).unwrap_or_else(|| panic!("not a MAC: {mac:?}")));
    Some((mac, state))
}

fn ping(ns: &Netns, address: Ipv4Addr) -> anyhow::Result<String> {
    ns.exec("ping", &["-n", "-c", "1", "-W", "2", &address.to_string()])
}

fn capture(ns: &Netns, interface: &'static str) -> ArpSocket {
    ns.run(move || ArpSocket::open(interface))
        .expect("enter the namespace")
        .expect("ARP socket")
}

/// Asks "who has `target`?" from the client and returns the replies heard.
fn ask(socket: &ArpSocket, client_mac: Mac, target: Ipv4Addr) -> Vec<ArpFrame> {
    socket
        .send(&ArpFrame {
            destination: BROADCAST_MAC,
            source: client_mac,
            op: OP_REQUEST,
            sender_mac: client_mac,
            sender_ip: CLIENT,
            target_mac: [0; 6],
            target_ip: target,
        })
        .expect("send an ARP request");
    socket
        .receive_all(QUIET)
        .expect("receive")
        .into_iter()
        .filter(|frame| frame.op == OP_REPLY && frame.sender_ip == target)
        .collect()
}

#[test]
fn take_over_adds_the_vips_and_announces_them_in_a_burst() {
    let segment = segment();
    let arrivals = capture(&segment.client, CLIENT_IF);
    let settings = settings(&[VIP, VIP2], 3);
    let node_mac = mac_of(&segment.node, NODE_IF);
    let announcement = [
        ArpFrame::gratuitous(node_mac, VIP),
        ArpFrame::gratuitous(node_mac, VIP2),
    ];

    let description = on_node(&segment.node, &settings, async |mover| mover.take_over().await);
    assert!(
        description.starts_with("lb0: added 198.51.100.100/32, 198.51.100.101/32; gratuitous ARP sent"),
        "{description}"
    );
    for vip in [VIP, VIP2] {
        let expected = format!("inet {vip}/32 scope global lb0");
        assert!(
            addresses(&segment.node, NODE_IF).contains(&expected),
            "{expected:?} not in {:?}",
            addresses(&segment.node, NODE_IF)
        );
    }
    // take_over sends the first announcement and no more.
    assert_eq!(arrivals.receive_all(QUIET).expect("receive"), announcement);

    on_node(&segment.node, &settings, async |mover| {
        mover.announce_burst().await
    });
    assert_eq!(
        arrivals.receive_all(QUIET).expect("receive"),
        [announcement, announcement].concat(),
        "the rest of a burst of 3"
    );

    on_node(&segment.node, &settings, async |mover| mover.announce().await);
    assert_eq!(arrivals.receive_all(QUIET).expect("receive"), announcement);

    ping(&segment.client, VIP).expect("the VIP answers ping");
    let (mac, _) = neighbour(&segment.client, CLIENT_IF, VIP).expect("a neighbour entry");
    assert_eq!(mac, Some(node_mac));
}

#[test]
fn take_over_and_release_are_idempotent_and_release_stops_arp_replies() {
    let segment = segment();
    let settings = settings(&[VIP], 1);
    let client_mac = mac_of(&segment.client, CLIENT_IF);
    let node_mac = mac_of(&segment.node, NODE_IF);
    let client_socket = capture(&segment.client, CLIENT_IF);

    on_node(&segment.node, &settings, async |mover| mover.take_over().await);
    let again = on_node(&segment.node, &settings, async |mover| mover.take_over().await);
    assert!(
        again.starts_with("lb0: already there 198.51.100.100/32;"),
        "{again}"
    );
    let vip_lines = addresses(&segment.node, NODE_IF)
        .into_iter()
        .filter(|line| line.starts_with("inet 198.51.100.100/"))
        .count();
    assert_eq!(vip_lines, 1);

    let replies = ask(&client_socket, client_mac, VIP);
    assert_eq!(
        replies.len(),
        1,
        "one ARP reply while the node holds the VIP: {replies:?}"
    );
    assert_eq!(replies[0].sender_mac, node_mac);

    let released = on_node(&segment.node, &settings, async |mover| mover.release().await);
    assert_eq!(released, "lb0: removed 198.51.100.100/32");
    assert!(!has_address(&segment.node, NODE_IF, VIP));
    let again = on_node(&segment.node, &settings, async |mover| mover.release().await);
    assert_eq!(again, "lb0: not there 198.51.100.100/32");

    assert_eq!(ask(&client_socket, client_mac, VIP), []);
    // The node's own address still answers: the silence is the release's.
    assert_eq!(ask(&client_socket, client_mac, NODE).len(), 1);
}

#[test]
fn remove_leftovers_removes_only_our_addresses_whatever_their_prefix() {
    let segment = segment();
    add_address(&segment.node, NODE_IF, &format!("{VIP}/32"));
    // A leftover with another prefix than configured is still ours.
    add_address(&segment.node, NODE_IF, &format!("{VIP2}/24"));
    add_address(&segment.node, NODE_IF, "198.51.100.77/32");
    let settings = settings(&[VIP, VIP2], 1);

    let mut removed = on_node(&segment.node, &settings, async |mover| {
        mover.remove_leftovers().await
    });
    removed.sort();
    assert_eq!(removed, [VIP, VIP2]);
    assert_eq!(
        addresses(&segment.node, NODE_IF),
        [
            "inet 198.51.100.2/24 scope global lb0",
            "inet 198.51.100.77/32 scope global lb0"
        ]
    );
    let none = on_node(&segment.node, &settings, async |mover| {
        mover.remove_leftovers().await
    });
    assert!(none.is_empty(), "removed again: {none:?}");
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon's side of the guard pipe lives in a process that is then
/// killed with SIGKILL: the guard, blocked until then, removes the VIP.
#[test]
fn guard_removes_the_vip_when_the_pipe_holder_is_killed() {
    let segment = segment();
    let settings = settings(&[VIP], 0);
    on_node(&segment.node, &settings, async |mover| mover.take_over().await);
    assert!(has_address(&segment.node, NODE_IF, VIP));

    let (reader, writer) = std::io::pipe().expect("pipe");
    // The stand-in daemon holds the only write end once ours is closed.
    let mut daemon = KillOnDrop(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(writer)
            .spawn()
            .expect("spawn the stand-in daemon"),
    );
    let addresses = settings.addresses.clone();
    std::thread::scope(|scope| {
        let guard = scope.spawn(|| {
            segment
                .node
                .run(move || run_guard_on(reader, NODE_IF, &addresses).map_err(|e| format!("{e:#}")))
        });
        std::thread::sleep(QUIET);
        let waiting = !guard.is_finished() && has_address(&segment.node, NODE_IF, VIP);
        daemon.0.kill().expect("SIGKILL the stand-in daemon");
        daemon.0.wait().expect("reap the stand-in daemon");
        assert!(waiting, "the guard acted while the daemon was alive");
        let outcome = guard.join().expect("guard thread").expect("enter the namespace");
        assert_eq!(outcome, Ok(()));
    });
    assert!(!has_address(&segment.node, NODE_IF, VIP));
}

/// Failover: the client's neighbour entry for the VIP points at node A
/// (REACHABLE); node B's gratuitous ARP moves it to B without any sysctl on
/// the client.
#[test]
fn gratuitous_arp_moves_a_clients_neighbour_entry_to_the_new_master() {
    let switch = Netns::new(&unique_tag("xlm")).expect("switch namespace");
    switch
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    switch.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    let node_a = Netns::new(&unique_tag("xlm")).expect("node A namespace");
    let node_b = Netns::new(&unique_tag("xlm")).expect("node B namespace");
    let client = Netns::new(&unique_tag("xlm")).expect("client namespace");
    for (ns, interface, port, address) in [
        (&node_a, NODE_IF, "pa", NODE),
        (&node_b, NODE_IF, "pb", NODE_B),
        (&client, CLIENT_IF, "pc", CLIENT),
    ] {
        veth(ns, interface, &switch, port, Some("br0")).expect("veth to the bridge");
        add_address(ns, interface, &format!("{address}/24"));
    }
    for key in ["net.ipv4.conf.all.arp_accept", "net.ipv4.conf.cl0.arp_accept"] {
        let value = client.exec("sysctl", &["-n", key]).expect("sysctl");
        assert_eq!(value.trim(), "0", "{key}: the client must have the default");
    }
    let settings = settings(&[VIP], 1);
    let mac_a = mac_of(&node_a, NODE_IF);
    let mac_b = mac_of(&node_b, NODE_IF);

    on_node(&node_a, &settings, async |mover| mover.take_over().await);
    ping(&client, VIP).expect("node A answers for the VIP");
    assert_eq!(
        neighbour(&client, CLIENT_IF, VIP),
        Some((Some(mac_a), "REACHABLE".to_owned()))
    );

    // A leaves (its release or its guard), B takes over and announces.
    on_node(&node_a, &settings, async |mover| mover.release().await);
    on_node(&node_b, &settings, async |mover| mover.take_over().await);
    wait::until("the client's entry for the VIP points at node B", WAIT, || {
        neighbour(&client, CLIENT_IF, VIP).and_then(|(mac, _)| mac) == Some(mac_b)
    })
    .unwrap();
    ping(&client, VIP).expect("node B answers for the VIP");
    let (mac, _) = neighbour(&client, CLIENT_IF, VIP).expect("a neighbour entry");
    assert_eq!(mac, Some(mac_b));
}
