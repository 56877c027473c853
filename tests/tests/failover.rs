//! Failover between two xlb nodes over VRRP, in namespaces with real nginx
//! backends: a killed, stopped or unhealthy master is replaced, the
//! primary takes the floating IP back, bad adverts change nothing, and a
//! split brain heals. Needs root.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use lb_tests::{
    packet::{Frame, FIN, RST, SYN, TCP},
    packet_socket::{PacketSocket, ETHERTYPE_IPV4, EVERY_ETHERTYPE},
    probe::{outage, ConnectionProbe},
    status::{dataplane_counter, service_counter},
    testbed::{base_services, base_services_checked, Testbed, API_PORT, FRONTEND_PORT, NODE_PRIVATE, VIP},
    unique_tag, wait,
};

const PRIMARY: usize = 0;
const SECONDARY: usize = 1;
const WAIT: Duration = Duration::from_secs(15);

fn pair() -> Testbed {
    Testbed::pair(&unique_tag("xf")).expect("testbed")
}

/// Starts both nodes: the primary at priority 200, the secondary at 100.
fn start_both(bed: &mut Testbed, primary_extra: &str, secondary_extra: &str) {
    let primary = format!(
        "{}\n{}",
        base_services(),
        bed.vrrp_section(PRIMARY, 200, primary_extra)
    );
    bed.start_node(PRIMARY, &primary).expect("primary starts");
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT)
        .expect("primary is master");
    let secondary = format!(
        "{}\n{}",
        base_services(),
        bed.vrrp_section(SECONDARY, 100, secondary_extra)
    );
    bed.start_node(SECONDARY, &secondary).expect("secondary starts");
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT)
        .expect("secondary is backup");
}

/// Whether one HTTP request to the floating IP from the client gets the
/// frontend's answer. Short time-outs: while the IP moves, a lost SYN costs
/// one attempt, not the kernel's one-second retransmission.
fn request(bed: &Testbed) -> bool {
    bed.request_with_timeouts(
        (VIP, FRONTEND_PORT),
        Duration::from_millis(200),
        Duration::from_millis(500),
    )
    .is_ok_and(|body| body.contains("frontend"))
}

/// The last transition in a node's VRRP status (from, to, reason).
fn transition_in(vrrp: &serde_json::Value) -> Option<(String, String, String)> {
    let t = vrrp["transitions"].as_array()?.last()?;
    let text = |key: &str| t[key].as_str().unwrap_or_default().to_owned();
    Some((text("from"), text("to"), text("reason")))
}

/// Both nodes' counts of VRRP state changes.
fn both_transitions(bed: &Testbed) -> [u64; 2] {
    [transitions_total(bed, PRIMARY), transitions_total(bed, SECONDARY)]
}

/// Neither node changed state since `before` (`both_transitions`), and the
/// primary alone holds the floating IP.
fn assert_nothing_moved(bed: &Testbed, before: [u64; 2]) {
    let after = both_transitions(bed);
    if after != before {
        panic!(
            "a state changed ({before:?} -> {after:?}): primary {:?}, secondary {:?}",
            last_transition(bed, PRIMARY),
            last_transition(bed, SECONDARY)
        );
    }
    assert!(bed.has_vip(PRIMARY).unwrap() && !bed.has_vip(SECONDARY).unwrap());
}

/// The last transition of node `i` (from, to, reason).
fn last_transition(bed: &Testbed, i: usize) -> (String, String, String) {
    let status = bed.node_status(i).expect("status");
    transition_in(&status["vrrp"]).unwrap_or_else(|| panic!("node {i} has no transition: {status}"))
}

/// Node `i`'s count of VRRP state changes.
fn transitions_total(bed: &Testbed, i: usize) -> u64 {
    let status = bed.node_status(i).expect("status");
    status["vrrp"]["transitions_total"]
        .as_u64()
        .unwrap_or_else(|| panic!("node {i} has no transitions_total: {status}"))
}

/// Node `i`'s data-plane counter `name` (e.g. `forward_new`).
fn counter(bed: &Testbed, i: usize, name: &str) -> u64 {
    dataplane_counter(&bed.node_status(i).expect("status"), name).unwrap()
}

/// Connections node `i` has opened to the frontend service.
fn frontend_connections(bed: &Testbed, i: usize) -> u64 {
    service_counter(
        &bed.node_status(i).expect("status"),
        "frontend",
        "connections_total",
    )
    .unwrap()
}

#[test]
fn the_primary_serves_the_floating_ip_and_the_secondary_waits() {
    let mut bed = pair();
    start_both(&mut bed, "", "");
    assert!(bed.has_vip(PRIMARY).unwrap());
    assert!(!bed.has_vip(SECONDARY).unwrap());
    for _ in 0..5 {
        assert!(request(&bed), "the floating IP answers through the primary");
    }
    let status = bed
        .wait_vrrp(
            SECONDARY,
            "the primary as master and the peer link up",
            WAIT,
            |v| v["current_master"] == NODE_PRIVATE[PRIMARY].to_string() && v["peer_links"][0]["up"] == true,
        )
        .unwrap();
    assert!(status["vrrp"]["adverts_received_total"].as_u64() > Some(0));
}

/// The election runs on a thread of its own: with the daemon's main loop
/// blocked for 2 s (a test hook standing in for a slow request, reload or
/// table walk), the master's adverts keep flowing (100 ms apart, so the
/// backup would take over after about 360 ms without them) and neither
/// node changes state.
#[test]
fn a_blocked_main_loop_stops_no_advert_and_moves_nothing() {
    let mut bed = pair();
    let primary = format!("{}\n{}", base_services(), bed.vrrp_section(PRIMARY, 200, ""));
    bed.start_node_with_args(PRIMARY, &primary, &["--stall-on-sigusr1", "2s"])
        .expect("primary starts");
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT)
        .expect("primary is master");
    let secondary = format!("{}\n{}", base_services(), bed.vrrp_section(SECONDARY, 100, ""));
    bed.start_node(SECONDARY, &secondary).expect("secondary starts");
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT)
        .expect("secondary is backup");
    let transitions = both_transitions(&bed);
    let adverts_received = |bed: &Testbed| {
        bed.node_status(SECONDARY).expect("status")["vrrp"]["adverts_received_total"]
            .as_u64()
            .expect("adverts_received_total")
    };

    let daemon = bed.node_daemon(PRIMARY).expect("primary runs");
    daemon.signal(libc::SIGUSR1).expect("SIGUSR1");
    daemon
        .wait_for_line("test hook: blocking the main loop", WAIT)
        .expect("the main loop blocks");
    let received_at_block = adverts_received(&bed);
    // The primary's admin API is served by the blocked loop: a status
    // request waits for the stall to end.
    let asked = Instant::now();
    bed.node_status(PRIMARY)
        .expect("the primary answers after the stall");
    let waited = asked.elapsed();
    let daemon = bed.node_daemon(PRIMARY).expect("primary runs");
    daemon
        .wait_for_line("test hook: main loop unblocked", WAIT)
        .expect("the main loop resumes");
    let received_during = adverts_received(&bed) - received_at_block;
    println!("status waited {waited:?} for the blocked loop; the backup received {received_during} adverts meanwhile");
    assert!(
        waited >= Duration::from_secs(1),
        "the hook did not block the loop the admin API runs on (answered after {waited:?})"
    );
    assert!(
        received_during > 0,
        "no advertisement reached the backup while the master's main loop was blocked"
    );
    assert_nothing_moved(&bed, transitions);
}

#[test]
fn kill_9_of_the_primary_fails_over_and_its_restart_cleans_up_and_preempts() {
    let mut bed = pair();
    start_both(&mut bed, "", "");
    bed.wait_vrrp(SECONDARY, "the peer link to the master", WAIT, |v| {
        v["current_master"] == NODE_PRIVATE[PRIMARY].to_string() && v["peer_links"][0]["up"] == true
    })
    .unwrap();
    // Overlapping attempts: one stuck in its time-out when the primary dies
    // does not hold back those that follow, so every attempt started once
    // the secondary serves is recorded by the time the probe stops.
    let probe = ConnectionProbe::start_overlapping(
        &bed.client,
        SocketAddrV4::new(VIP, FRONTEND_PORT),
        Duration::from_millis(5),
    )
    .unwrap();
    // The primary serves before the fault (the probe's baseline).
    wait::consecutive("the primary serves new connections", 5, WAIT, || request(&bed)).unwrap();
    let fault = Instant::now();
    bed.take_node_daemon(PRIMARY)
        .expect("primary")
        .stop_with(libc::SIGKILL, WAIT)
        .expect("killed");
    let status = bed
        .wait_vrrp_state(SECONDARY, "MASTER", WAIT)
        .expect("the secondary takes over");
    // Service is back, not by one lucky connection: twenty in a row, while
    // the probe still runs.
    wait::consecutive("the secondary serves every new connection", 20, WAIT, || {
        request(&bed)
    })
    .unwrap();
    let attempts = probe.stop().unwrap();
    let outage = outage(&attempts, fault).expect("new connections succeed again after the kill");
    println!(
        "kill -9 of the master: first new connection {:?} after the kill, gap {:?}, {} failed attempts",
        outage.to_first_success, outage.gap, outage.failed_attempts
    );
    let reason = status["vrrp"]["transitions"].as_array().unwrap().last().unwrap()["reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("peer link"),
        "the peer link revealed the crash at once: {reason}"
    );
    assert!(frontend_connections(&bed, SECONDARY) > 0, "through the secondary");

    // The killed node's guard removed the floating IP: it attracts nothing,
    // even for a client that has to ask ARP again.
    wait::until("the killed node's VIP is removed", WAIT, || {
        !bed.has_vip(PRIMARY).unwrap()
    })
    .unwrap();
    assert!(bed.has_vip(SECONDARY).unwrap());
    bed.client.ip(&["neigh", "flush", "dev", "eth0"]).unwrap();
    let before = frontend_connections(&bed, SECONDARY);
    for _ in 0..10 {
        assert!(request(&bed));
    }
    assert_eq!(
        frontend_connections(&bed, SECONDARY) - before,
        10,
        "all through the secondary"
    );
    let secondary_mac = bed.node_public_mac(SECONDARY).unwrap();
    assert_eq!(
        bed.client_vip_mac().unwrap().as_deref(),
        Some(secondary_mac.as_str())
    );

    // Suppose the guard died too: the address is left behind. The restarted
    // primary removes it before joining, then preempts.
    bed.lb
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])
        .unwrap();
    let primary = format!("{}\n{}", base_services(), bed.vrrp_section(PRIMARY, 200, ""));
    let daemon = bed.start_node(PRIMARY, &primary).expect("the primary restarts");
    // Logged before the daemon reports it is running.
    assert!(daemon
        .log_text()
        .contains("removed floating addresses left by a previous run"));
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT)
        .expect("the primary preempts");
    let (_, to, reason) = wait_transition(&bed, SECONDARY, "BACKUP");
    assert_eq!(to, "BACKUP");
    assert!(reason.contains("priority 200"), "{reason}");
    wait::until("the secondary released the VIP", WAIT, || {
        !bed.has_vip(SECONDARY).unwrap()
    })
    .unwrap();
    // The primary's gratuitous ARP moved the client's entry without any
    // traffic from the client.
    let primary_mac = bed.node_public_mac(PRIMARY).unwrap();
    wait::until("the client learned the primary's MAC from its GARP", WAIT, || {
        bed.client_vip_mac().unwrap().as_deref() == Some(primary_mac.as_str())
    })
    .unwrap();
    let before = frontend_connections(&bed, PRIMARY);
    assert!(request(&bed));
    assert_eq!(
        frontend_connections(&bed, PRIMARY) - before,
        1,
        "served by the primary again"
    );
}

/// Waits until node `i`'s last transition went to `state`; returns it.
fn wait_transition(bed: &Testbed, i: usize, state: &str) -> (String, String, String) {
    let status = bed
        .wait_vrrp(i, &format!("a transition to {state}"), WAIT, |v| {
            transition_in(v).is_some_and(|(_, to, _)| to == state)
        })
        .unwrap();
    transition_in(&status["vrrp"]).expect("just seen")
}

#[test]
fn with_nopreempt_the_returning_primary_stays_backup() {
    let mut bed = pair();
    let secondary = format!("{}\n{}", base_services(), bed.vrrp_section(SECONDARY, 100, ""));
    bed.start_node(SECONDARY, &secondary).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let primary = format!(
        "{}\n{}",
        base_services(),
        bed.vrrp_section(PRIMARY, 200, "preempt = false")
    );
    bed.start_node(PRIMARY, &primary).unwrap();
    let status = bed
        .wait_vrrp(PRIMARY, "the secondary's adverts", WAIT, |v| {
            v["state"] == "BACKUP" && v["current_master"] == NODE_PRIVATE[SECONDARY].to_string()
        })
        .unwrap();
    let transitions = both_transitions(&bed);
    // Twenty advert intervals, far beyond Master_Down_Interval, counted in
    // the adverts the primary hears rather than slept.
    let heard = status["vrrp"]["adverts_received_total"].as_u64().unwrap();
    bed.wait_vrrp(PRIMARY, "twenty more adverts from the secondary", WAIT, |v| {
        v["adverts_received_total"].as_u64() >= Some(heard + 20)
    })
    .unwrap();
    assert_eq!(bed.vrrp_state(PRIMARY).as_deref(), Some("BACKUP"));
    assert_eq!(bed.vrrp_state(SECONDARY).as_deref(), Some("MASTER"));
    assert_eq!(
        both_transitions(&bed),
        transitions,
        "neither node changed state in the meantime"
    );
    assert!(bed.has_vip(SECONDARY).unwrap() && !bed.has_vip(PRIMARY).unwrap());
}

#[test]
fn a_clean_stop_of_the_master_hands_over_with_priority_0() {
    let mut bed = pair();
    // No peer link and one-second adverts: only priority 0 can explain a
    // takeover quicker than three intervals, and the reason must say so.
    let extra = "advert_interval = \"1s\"\npeer_link_port = 0";
    // keepalived-style notify commands record the transitions, in order.
    let notes = bed.dir.join("notify.log");
    let notify = |node: usize| {
        let command = format!(
            "echo {node} $XLB_VRRP_STATE $XLB_VRRP_PREVIOUS_STATE >> {}",
            notes.display()
        );
        format!("\n[vrrp.notify]\nmaster = [\"sh\", \"-c\", \"{command}\"]\nbackup = [\"sh\", \"-c\", \"{command}\"]\nstop = [\"sh\", \"-c\", \"{command}\"]\n")
    };
    let primary = format!(
        "{}\n{}{}",
        base_services(),
        bed.vrrp_section(PRIMARY, 200, extra),
        notify(PRIMARY)
    );
    bed.start_node(PRIMARY, &primary).unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    let secondary = format!(
        "{}\n{}{}",
        base_services(),
        bed.vrrp_section(SECONDARY, 100, extra),
        notify(SECONDARY)
    );
    bed.start_node(SECONDARY, &secondary).unwrap();
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT).unwrap();
    let stopped_at = Instant::now();
    bed.take_node_daemon(PRIMARY)
        .unwrap()
        .stop_with(libc::SIGTERM, WAIT)
        .unwrap();
    assert!(
        !bed.has_vip(PRIMARY).unwrap(),
        "the primary released the VIP before exiting"
    );
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let (from, _, reason) = last_transition(&bed, SECONDARY);
    println!(
        "clean stop: secondary master {:?} after SIGTERM: {reason}",
        stopped_at.elapsed()
    );
    assert_eq!(from, "BACKUP");
    assert!(reason.contains("sent priority 0"), "{reason}");
    assert!(request(&bed), "the secondary serves");
    wait::until("the secondary's master notification ran", WAIT, || {
        std::fs::read_to_string(&notes).is_ok_and(|n| n.contains("1 master backup"))
    })
    .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&notes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Per node, in the order of its transitions (the primary's backup →
    // master at start-up, then stop at SIGTERM).
    let of = |node: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(node))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("0 "), ["0 backup init", "0 master backup", "0 stop master"]);
    assert_eq!(of("1 "), ["1 backup init", "1 master backup"]);
}

#[test]
fn a_failing_track_command_gives_up_the_ip_and_its_recovery_takes_it_back() {
    let mut bed = pair();
    let flag = bed.dir.join("primary-healthy");
    std::fs::write(&flag, "").unwrap();
    let track = format!(
        "\n[[vrrp.track]]\ntype = \"command\"\ncommand = [\"test\", \"-e\", \"{}\"]\ninterval = \"100ms\"\nfall = 2\n",
        flag.display()
    );
    // The track goes after the [vrrp] keys, before [vrrp.local].
    start_both(&mut bed, &track, "");
    std::fs::remove_file(&flag).unwrap();
    bed.wait_vrrp_state(PRIMARY, "FAULT", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    wait::until("the VIP moved", WAIT, || {
        !bed.has_vip(PRIMARY).unwrap() && bed.has_vip(SECONDARY).unwrap()
    })
    .unwrap();
    let (_, _, reason) = last_transition(&bed, PRIMARY);
    assert_eq!(reason, "tracked health failed");
    let status = bed.node_status(PRIMARY).unwrap();
    let failing: Vec<&serde_json::Value> = status["vrrp"]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(failing[0]["name"].as_str().unwrap().starts_with("command test"));
    assert!(request(&bed), "the secondary serves");

    std::fs::write(&flag, "").unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT).unwrap();
    wait::until("the VIP came back", WAIT, || {
        bed.has_vip(PRIMARY).unwrap() && !bed.has_vip(SECONDARY).unwrap()
    })
    .unwrap();
}

#[test]
fn a_tracked_service_without_backends_gives_up_the_ip() {
    let mut bed = pair();
    let fast_checks = base_services_checked(&[FRONTEND_PORT], "{ inter = \"200ms\", fall = 1, rise = 1 }");
    let track = "\n[[vrrp.track]]\ntype = \"service\"\nservice = \"frontend\"\n";
    let primary = format!("{fast_checks}\n{}", bed.vrrp_section(PRIMARY, 200, track));
    bed.start_node(PRIMARY, &primary).unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    let secondary = format!("{}\n{}", base_services(), bed.vrrp_section(SECONDARY, 100, ""));
    bed.start_node(SECONDARY, &secondary).unwrap();
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT).unwrap();
    bed.stop_web(0);
    bed.stop_web(1);
    bed.wait_vrrp_state(PRIMARY, "FAULT", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    bed.start_web(0, 200).unwrap();
    bed.start_web(1, 200).unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT).unwrap();
    assert!(request(&bed));
}

#[test]
fn a_split_brain_makes_both_masters_and_heals_to_one() {
    let mut bed = pair();
    start_both(&mut bed, "", "");
    let primary_transitions = transitions_total(&bed, PRIMARY);
    // Cut the private segment between the two nodes only (links stay up).
    for command in [
        "add table bridge xlbcut",
        "add chain bridge xlbcut forward { type filter hook forward priority 0; }",
        "add rule bridge xlbcut forward iifname \"lb\" oifname \"lb2\" drop",
        "add rule bridge xlbcut forward iifname \"lb2\" oifname \"lb\" drop",
    ] {
        let args: Vec<&str> = command.split(' ').collect();
        bed.switch.exec("nft", &args).unwrap();
    }
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let (_, _, reason) = last_transition(&bed, SECONDARY);
    assert!(reason.contains("Master_Down_Timer expired"), "{reason}");
    assert_eq!(
        bed.vrrp_state(PRIMARY).as_deref(),
        Some("MASTER"),
        "both are master, as VRRP says"
    );
    let healed = Instant::now();
    bed.switch
        .exec("nft", &["delete", "table", "bridge", "xlbcut"])
        .unwrap();
    let (_, to, reason) = wait_transition(&bed, SECONDARY, "BACKUP");
    println!(
        "split brain healed: one master {:?} after the link returned ({reason})",
        healed.elapsed()
    );
    assert_eq!(to, "BACKUP");
    assert!(
        reason.contains(&format!("advertisement from {}", NODE_PRIVATE[PRIMARY])),
        "{reason}"
    );
    assert_eq!(bed.vrrp_state(PRIMARY).as_deref(), Some("MASTER"));
    assert_eq!(
        transitions_total(&bed, PRIMARY),
        primary_transitions,
        "the primary never left MASTER"
    );
    wait::until("only the primary holds the VIP", WAIT, || {
        bed.has_vip(PRIMARY).unwrap() && !bed.has_vip(SECONDARY).unwrap()
    })
    .unwrap();
}

/// Sends raw VRRP datagrams from a namespace, as any host on the link could.
fn send_raw(bed: &Testbed, from: usize, destination: Ipv4Addr, ttl: u8, datagrams: Vec<Vec<u8>>) {
    let source = NODE_PRIVATE[from];
    bed.node(from)
        .run(move || {
            // SAFETY: plain socket calls on a descriptor this closure owns and closes.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                let ttl = libc::c_int::from(ttl);
                for option in [libc::IP_TTL, libc::IP_MULTICAST_TTL] {
                    libc::setsockopt(fd, libc::IPPROTO_IP, option, (&raw const ttl).cast(), 4);
                }
                let interface = libc::in_addr {
                    s_addr: u32::from_ne_bytes(source.octets()),
                };
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    (&raw const interface).cast(),
                    4,
                );
                let address = |ip: Ipv4Addr| libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(ip.octets()),
                    },
                    sin_zero: [0; 8],
                };
                let local = address(source);
                let len = size_of::<libc::sockaddr_in>() as u32;
                assert_eq!(libc::bind(fd, (&raw const local).cast(), len), 0);
                let remote = address(destination);
                for datagram in &datagrams {
                    let sent = libc::sendto(
                        fd,
                        datagram.as_ptr().cast(),
                        datagram.len(),
                        0,
                        (&raw const remote).cast(),
                        len,
                    );
                    assert_eq!(
                        sent,
                        datagram.len() as isize,
                        "{}",
                        std::io::Error::last_os_error()
                    );
                }
                libc::close(fd);
            }
        })
        .unwrap();
}

fn rejected(bed: &Testbed, i: usize) -> std::collections::BTreeMap<String, u64> {
    bed.node_status(i).unwrap()["vrrp"]["adverts_rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["value"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn bad_adverts_from_the_peer_address_change_nothing() {
    use lb_user::vrrp::packet::{auth_data, Advertisement, Version};
    let mut bed = pair();
    let password = bed.dir.join("vrrp-pass");
    std::fs::write(&password, "REDACTED\n").unwrap();
    let extra = format!(
        "version = 2\nadvert_interval = \"1s\"\nauth_pass_file = \"{}\"",
        password.display()
    );
    let secondary = format!(
        "{}\n{}",
        base_services(),
        bed.vrrp_section(SECONDARY, 100, &extra)
    );
    bed.start_node(SECONDARY, &secondary).unwrap();
    // Alone, it becomes master after Master_Down_Interval.
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let transitions = transitions_total(&bed, SECONDARY);

    let (me, peer) = (NODE_PRIVATE[PRIMARY], NODE_PRIVATE[SECONDARY]);
    let good = Advertisement {
        version: Version::V2,
        vrid: 50,
        priority: 255,
        interval_cs: 100,
        addresses: vec![VIP],
        auth: Some(auth_data("REDACTED")),
    };
    let encode = |a: &Advertisement| a.encode(me, peer).unwrap();
    let mut hostile = Vec::new();
    let mut wrong_auth = good.clone();
    wrong_auth.auth = Some(auth_data("guess"));
    let mut wrong_vrid = good.clone();
    wrong_vrid.vrid = 51;
    let mut wrong_interval = good.clone();
    wrong_interval.interval_cs = 200;
    let mut version_3 = good.clone();
    version_3.version = Version::V3;
    version_3.auth = None;
    let mut bad_checksum = encode(&good);
    bad_checksum[6] ^= 0xff;
    let truncated = encode(&good)[..6].to_vec();
    for _ in 0..3 {
        hostile.extend([
            encode(&wrong_auth),
            encode(&wrong_vrid),
            encode(&wrong_interval),
            encode(&version_3),
            bad_checksum.clone(),
            truncated.clone(),
        ]);
    }
    send_raw(&bed, PRIMARY, peer, 255, hostile);
    let expected: std::collections::BTreeMap<String, u64> =
        ["auth", "vrid", "interval", "version", "checksum", "truncated"]
            .iter()
            .map(|name| ((*name).to_owned(), 3))
            .collect();
    wait::until("all 18 counted", WAIT, || rejected(&bed, SECONDARY) == expected).unwrap();
    let status = bed.node_status(SECONDARY).unwrap();
    assert_eq!(status["vrrp"]["state"], "MASTER");
    assert_eq!(
        status["vrrp"]["transitions_total"].as_u64(),
        Some(transitions),
        "no state changed"
    );
    assert!(bed.has_vip(SECONDARY).unwrap());

    // The control: the same advert, well formed, does make it yield.
    send_raw(&bed, PRIMARY, peer, 255, vec![encode(&good)]);
    let (_, to, reason) = wait_transition(&bed, SECONDARY, "BACKUP");
    assert_eq!(to, "BACKUP");
    assert!(
        reason.contains(&format!("advertisement from {me} with priority 255")),
        "{reason}"
    );
}

#[test]
fn in_multicast_mode_an_advert_without_ttl_255_changes_nothing() {
    use lb_user::vrrp::packet::{Advertisement, Version, MULTICAST_GROUP};
    let mut bed = pair();
    let multicast = bed
        .vrrp_section(SECONDARY, 100, "")
        .replace(&format!("unicast_peers = [\"{}\"]\n", NODE_PRIVATE[PRIMARY]), "");
    assert!(!multicast.contains("unicast_peers"));
    bed.start_node(SECONDARY, &format!("{}\n{multicast}", base_services()))
        .unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let transitions = transitions_total(&bed, SECONDARY);
    let advert = Advertisement {
        version: Version::V3,
        vrid: 50,
        priority: 255,
        interval_cs: 10,
        addresses: vec![VIP],
        auth: None,
    };
    let bytes = advert.encode(NODE_PRIVATE[PRIMARY], MULTICAST_GROUP).unwrap();
    send_raw(&bed, PRIMARY, MULTICAST_GROUP, 254, vec![bytes.clone(); 3]);
    wait::until("counted as ttl", WAIT, || {
        rejected(&bed, SECONDARY).get("ttl") == Some(&3)
    })
    .unwrap();
    let status = bed.node_status(SECONDARY).unwrap();
    assert_eq!(status["vrrp"]["state"], "MASTER");
    assert_eq!(status["vrrp"]["transitions_total"].as_u64(), Some(transitions));
    send_raw(&bed, PRIMARY, MULTICAST_GROUP, 255, vec![bytes]);
    wait_transition(&bed, SECONDARY, "BACKUP");
}

#[test]
fn the_digitalocean_mover_assigns_retries_reconciles_and_never_shows_the_token() {
    use lb_tests::fake_digitalocean::{Endpoint, Failure, FakeDigitalOcean};
    const TOKEN: &str = "dop_v1_0123456789abcdef-never-show-me";
    const THIS_DROPLET: u64 = 7;
    const OTHER_DROPLET: u64 = 8;
    let mut bed = pair();
    // The API runs inside the node's namespace, on its loopback.
    let api = bed
        .lb
        .run(|| FakeDigitalOcean::start(TOKEN, VIP, THIS_DROPLET))
        .unwrap()
        .unwrap();
    api.point_at(Some(OTHER_DROPLET));
    api.keep_actions_in_progress_for(3);
    api.fail_next(
        Endpoint::PostAction,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
        1,
    );
    api.fail_next(Endpoint::GetAction, Failure::ServerError, 1);
    let token_file = bed.dir.join("do-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let vrrp = format!(
        "[vrrp]\ninterface = \"eth1\"\nvrid = 50\npriority = 200\nsource_address = \"{}\"\n\n\
         [vrrp.digitalocean]\nreserved_ip = \"{VIP}\"\ntoken_file = \"{}\"\napi_url = \"{url}\"\nmetadata_url = \"{url}\"\n\
         poll_interval = \"50ms\"\nreconcile_interval = \"1s\"\n",
        NODE_PRIVATE[PRIMARY],
        token_file.display(),
        url = api.url(),
    );
    bed.start_node(PRIMARY, &format!("{}\n{vrrp}", base_services()))
        .unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    wait::until("the reserved IP points here", WAIT, || {
        api.droplet() == Some(THIS_DROPLET)
    })
    .unwrap();
    let status = bed
        .wait_vrrp(PRIMARY, "the mover's report", WAIT, |v| {
            v["movers"][0]["actions_total"].as_u64() > Some(0)
        })
        .unwrap();
    let mover = &status["vrrp"]["movers"][0];
    assert_eq!(mover["mover"], "digitalocean");
    assert_eq!(mover["ok"], true, "{mover}");
    assert!(
        mover["detail"].as_str().unwrap().contains("was droplet 8"),
        "{mover}"
    );
    let posts = api.requests_to("POST", &format!("/v2/reserved_ips/{VIP}/actions"));
    assert_eq!(posts.len(), 2, "one 429, then the assignment");

    // A split brain (or a person) moves it away: reconciliation takes it back.
    api.point_at(Some(OTHER_DROPLET));
    wait::until("reconciled", WAIT, || api.droplet() == Some(THIS_DROPLET)).unwrap();

    let metrics = bed
        .lb
        .exec("curl", &["-s", "http://127.0.0.1:8404/metrics"])
        .unwrap();
    assert!(
        metrics.contains("xlb_vrrp_mover_actions_total{vrid=\"50\",mover=\"digitalocean\"}"),
        "{metrics}"
    );
    let output = bed.node_status(PRIMARY).unwrap().to_string() + &metrics;
    let text = bed
        .xlb(&["status", "--socket", bed.admin_socket().to_str().unwrap()])
        .unwrap();
    let daemon = bed.take_node_daemon(PRIMARY).unwrap();
    let log = daemon.log_text();
    daemon.stop_with(libc::SIGTERM, WAIT).unwrap();
    for (what, haystack) in [
        ("status", output),
        ("log", log),
        ("CLI", String::from_utf8_lossy(&text.stdout).into_owned()),
    ] {
        assert!(
            !haystack.contains(TOKEN) && !haystack.contains("never-show-me"),
            "the token leaked into the {what}"
        );
    }
    assert!(api
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/metadata") || r.auth == lb_tests::fake_digitalocean::Auth::Correct));
}

/// The README: frames not addressed to a node's interface (another
/// unicast MAC) pass to its kernel untouched and are never translated. A
/// switch that floods every frame to every port brings the backup each
/// frame the client sends the master; were the backup to translate them,
/// two nodes would forward the same SYN. Here the public bridge is made a
/// hub: with an ageing time of 0 it keeps no learned address, so it floods
/// every frame.
#[test]
fn a_backup_never_translates_the_masters_frames_that_a_switch_floods_to_it() {
    const CONNECTIONS: usize = 20;
    let mut bed = pair();
    bed.switch
        .ip(&["link", "set", "br1", "type", "bridge", "ageing_time", "0"])
        .unwrap();
    start_both(&mut bed, "", "");
    let flooded_before = counter(&bed, SECONDARY, "pass_other_host");
    let new_before = counter(&bed, PRIMARY, "forward_new");

    let answers = bed
        .tally((VIP, FRONTEND_PORT), CONNECTIONS)
        .expect("every connection through the floating IP succeeds");
    assert_eq!(answers.values().sum::<usize>(), CONNECTIONS, "{answers:?}");
    // Each connection's SYN at least reached the backup too (the bridge
    // floods), and was passed as another host's.
    let flooded = wait::until_some("the backup saw every SYN, flooded to it", WAIT, || {
        let flooded = counter(&bed, SECONDARY, "pass_other_host") - flooded_before;
        (flooded >= CONNECTIONS as u64).then_some(flooded)
    })
    .unwrap();
    println!("{CONNECTIONS} connections: the backup passed {flooded} flooded frames as another host's");
    assert_eq!(
        counter(&bed, SECONDARY, "forward_new"),
        0,
        "the backup translated none of them"
    );
    assert_eq!(
        counter(&bed, PRIMARY, "forward_new") - new_before,
        CONNECTIONS as u64,
        "the master translated each once"
    );
    assert_eq!(bed.vrrp_state(SECONDARY).as_deref(), Some("BACKUP"));
}

#[test]
fn preemption_back_keeps_the_established_connections() {
    let mut bed = pair();
    let secondary = format!("{}\n{}", base_services(), bed.vrrp_section(SECONDARY, 100, ""));
    bed.start_node(SECONDARY, &secondary).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    // Keep-alive connections through the secondary.
    let mut established: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut stream = bed
                .connect((lb_tests::testbed::CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT))
                .unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            lb_tests::http::get(&mut stream).unwrap();
            stream
        })
        .collect();
    let primary = format!("{}\n{}", base_services(), bed.vrrp_section(PRIMARY, 200, ""));
    bed.start_node(PRIMARY, &primary).unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    let primary_mac = bed.node_public_mac(PRIMARY).unwrap();
    wait::until("the client follows the primary's GARP", WAIT, || {
        bed.client_vip_mac().unwrap().as_deref() == Some(primary_mac.as_str())
    })
    .unwrap();
    let before = frontend_connections(&bed, PRIMARY);
    for (i, stream) in established.iter_mut().enumerate() {
        let answer = lb_tests::http::get(stream);
        assert!(
            answer.is_ok(),
            "connection {i} survived the preemption: {answer:?}"
        );
    }
    // They reached the primary and were handed to the secondary, which
    // tracks them; the primary opened none of them.
    assert_eq!(frontend_connections(&bed, PRIMARY), before);
    let handed = counter(&bed, PRIMARY, "handoff_to_peer");
    assert!(handed >= 10, "{handed} segments handed to the secondary");
    // New connections go through the primary.
    assert!(request(&bed));
    assert_eq!(frontend_connections(&bed, PRIMARY), before + 1);
}

/// What the daemon logs when its drain begins, when it ends because the
/// connections closed, and when `stop_drain` runs out first
/// (`drain_connections` in lb-user/src/daemon.rs).
const DRAIN_BEGINS: &str = "draining established connections";
const DRAINED: &str = ": drained";
const DRAIN_TIME_OVER: &str = "drain time over";

#[test]
fn a_stopping_master_keeps_serving_its_connections_while_they_drain() {
    // Far longer than the test needs: only the closing connections can
    // end this drain in time.
    let stop_drain = Duration::from_secs(60);
    let mut bed = pair();
    start_both(
        &mut bed,
        &format!("stop_drain = \"{}s\"", stop_drain.as_secs()),
        "",
    );
    let mut established: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut stream = bed
                .connect((lb_tests::testbed::CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT))
                .unwrap();
            lb_tests::http::get(&mut stream).unwrap();
            stream
        })
        .collect();
    let mut daemon = bed.take_node_daemon(PRIMARY).unwrap();
    daemon.signal(libc::SIGTERM).expect("SIGTERM the primary");
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let draining = daemon.wait_for_line(DRAIN_BEGINS, WAIT).unwrap();
    assert!(draining.contains("connections=5"), "{draining}");
    let secondary_mac = bed.node_public_mac(SECONDARY).unwrap();
    wait::until("the client follows the secondary", WAIT, || {
        bed.client_vip_mac().unwrap().as_deref() == Some(secondary_mac.as_str())
    })
    .unwrap();
    assert!(!daemon.exited(), "the primary is draining");
    for (i, stream) in established.iter_mut().enumerate() {
        let answer = lb_tests::http::get(stream);
        assert!(answer.is_ok(), "connection {i} still served: {answer:?}");
    }
    let before = frontend_connections(&bed, SECONDARY);
    assert!(request(&bed));
    assert_eq!(
        frontend_connections(&bed, SECONDARY),
        before + 1,
        "new connections go to the secondary"
    );
    // Closing them ends the drain, and the daemon says why it ended.
    drop(established);
    let end = daemon
        .wait_for_line_where("the end of the drain", stop_drain + WAIT, |line| {
            line.ends_with(DRAINED) || line.contains(DRAIN_TIME_OVER)
        })
        .unwrap();
    assert!(
        end.ends_with(DRAINED),
        "the drain ended because the connections closed, not at stop_drain: {end}"
    );
    daemon.wait_exit(WAIT).unwrap();
    let log = daemon.log_text();
    assert!(!log.contains(DRAIN_TIME_OVER), "{log}");
}

/// The id of the XDP program on node `i`'s eth0, as `ip -d link` shows it.
fn xdp_program_on(bed: &Testbed, i: usize) -> Option<u32> {
    let link = bed.node(i).ip(&["-d", "link", "show", "dev", "eth0"]).unwrap();
    let after = link.split("prog/xdp id ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// Detaches every bpf_link of program `program_id`, as `bpftool link
/// detach` would (BPF_LINK_GET_FD_BY_ID, then BPF_LINK_DETACH).
fn detach_links_of(program_id: u32) -> usize {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let mut detached = 0;
    for link in aya::programs::loaded_links().filter_map(Result::ok) {
        if link.program_id() != program_id {
            continue;
        }
        // union bpf_attr: { link_id, next_id, open_flags } then { link_fd }.
        let mut attr = [0_u32; 32];
        attr[0] = link.id();
        // SAFETY: bpf(2) with a zeroed attribute block large enough for both commands.
        unsafe {
            let fd = libc::syscall(libc::SYS_bpf, BPF_LINK_GET_FD_BY_ID, attr.as_ptr(), 128);
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let mut detach = [0_u32; 32];
            detach[0] = fd as u32;
            assert_eq!(
                libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, detach.as_ptr(), 128),
                0
            );
            libc::close(fd as i32);
        }
        detached += 1;
    }
    detached
}

#[test]
fn a_detached_program_sends_the_master_to_fault() {
    let mut bed = pair();
    start_both(&mut bed, "", "");
    let program = xdp_program_on(&bed, PRIMARY).expect("XDP on the primary's eth0");
    assert_eq!(detach_links_of(program), 2, "eth0 and eth1");
    bed.wait_vrrp_state(PRIMARY, "FAULT", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    let status = bed.node_status(PRIMARY).unwrap();
    let tracks = status["vrrp"]["tracks"].as_array().unwrap().clone();
    let dataplane = tracks.iter().find(|t| t["name"] == "dataplane attached").unwrap();
    assert_eq!(dataplane["ok"], false, "{dataplane}");
    assert!(
        dataplane["detail"]
            .as_str()
            .unwrap()
            .starts_with("no XDP program on eth"),
        "{dataplane}"
    );
    assert!(request(&bed), "the secondary serves");
}

#[test]
fn the_masters_public_link_going_down_hands_over_at_once() {
    let mut bed = pair();
    start_both(&mut bed, "", "");
    let down = Instant::now();
    bed.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT).unwrap();
    println!(
        "public link down: the secondary was master {:?} later",
        down.elapsed()
    );
    bed.wait_vrrp_state(PRIMARY, "FAULT", WAIT).unwrap();
    let (_, _, reason) = last_transition(&bed, SECONDARY);
    assert!(
        reason.contains("sent priority 0"),
        "told over the private link: {reason}"
    );
    let status = bed.node_status(PRIMARY).unwrap();
    let failing: Vec<String> = status["vrrp"]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ok"] == false)
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failing, ["interface eth0 up"]);
    assert!(request(&bed), "the secondary serves");
    bed.lb.ip(&["link", "set", "eth0", "up"]).unwrap();
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT).unwrap();
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT).unwrap();
}

/// The peer link's port (the config's default).
const PEER_LINK_PORT: u16 = lb_user::config::DEFAULT_PEER_LINK_PORT;

/// A segment of the peer link from the primary's listener to the
/// secondary's outbound connection (the one whose close makes the secondary
/// take over), captured on the switch: (primary MAC, secondary MAC,
/// secondary's port, the sequence number just past the segment).
fn sniff_peer_link(bed: &Testbed) -> ([u8; 6], [u8; 6], u16, u32) {
    let capture = bed
        .switch
        .run(|| PacketSocket::open("lb", EVERY_ETHERTYPE))
        .expect("switch namespace")
        .expect("capture on the primary's switch port");
    // Idle links carry keepalives every 2 s (probes and their answers).
    let deadline = Instant::now() + WAIT;
    while let Some(frame) = capture.receive_until(deadline).expect("capture") {
        // Not checksum-verified: a veth leaves TCP checksums to offload.
        if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 || frame[23] != TCP {
            continue;
        }
        let (ip, tcp) = (&frame[14..34], &frame[34..]);
        let address = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
        if address(12) != NODE_PRIVATE[PRIMARY]
            || address(16) != NODE_PRIVATE[SECONDARY]
            || port(0) != PEER_LINK_PORT
            || tcp[13] & (SYN | FIN | RST) != 0
        {
            continue;
        }
        let payload = usize::from(u16::from_be_bytes([ip[2], ip[3]])) - 20 - usize::from(tcp[12] >> 4) * 4;
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let mac = |at: usize| -> [u8; 6] { frame[at..at + 6].try_into().expect("six bytes") };
        return (mac(6), mac(0), port(2), seq.wrapping_add(payload as u32));
    }
    panic!("no segment of the peer link seen on the switch");
}

/// Forges resets of the secondary's peer link as a third party on the
/// private segment that sniffed it would: from the primary's address and
/// port, with the exact sequence number the secondary expects (an idle
/// link's last segment is either an answer, which ends at it, or a
/// keepalive probe, one byte before it: both are sent).
fn forge_peer_link_resets(bed: &Testbed) {
    let (primary_mac, secondary_mac, port, seq) = sniff_peer_link(bed);
    let frames: Vec<Vec<u8>> = [seq.wrapping_add(1), seq]
        .into_iter()
        .map(|seq| {
            let mut frame = Frame::tcp(
                (NODE_PRIVATE[PRIMARY], PEER_LINK_PORT),
                (NODE_PRIVATE[SECONDARY], port),
                RST,
            )
            .with_seq(seq, 0)
            .addressed_to(secondary_mac);
            frame.src_mac = primary_mac;
            frame.build()
        })
        .collect();
    bed.switch
        .run(move || -> anyhow::Result<()> {
            let injector = PacketSocket::open("lb2", ETHERTYPE_IPV4)?;
            for frame in &frames {
                injector.send(frame)?;
            }
            Ok(())
        })
        .expect("switch namespace")
        .expect("inject the resets");
}

/// The secondary's peer link to the primary: (up, closes so far).
fn secondary_peer_link(bed: &Testbed) -> (bool, u64) {
    let status = bed.node_status(SECONDARY).expect("status");
    let link = &status["vrrp"]["peer_links"][0];
    (
        link["up"] == true,
        link["closes_total"].as_u64().expect("closes_total"),
    )
}

/// Starts the pair with `extra` in both VRRP sections and waits for the
/// secondary's peer link to the primary.
fn start_both_linked(bed: &mut Testbed, extra: &str) {
    start_both(bed, extra, extra);
    bed.wait_vrrp(SECONDARY, "the peer link up", WAIT, |v| {
        v["peer_links"][0]["up"] == true
    })
    .expect("peer link");
}

/// Without a key, the forged reset works: the secondary's link closes and,
/// taking it for the primary's death, the secondary takes over. This is
/// what the signed link below prevents, and shows the forgery is real.
#[test]
fn a_forged_reset_of_an_unsigned_peer_link_makes_the_backup_take_over() {
    let mut bed = pair();
    start_both_linked(&mut bed, "");
    let (_, closes) = secondary_peer_link(&bed);
    let before = transitions_total(&bed, SECONDARY);
    forge_peer_link_resets(&bed);
    // It takes over at once; the primary's next advert sends it back.
    let status = bed
        .wait_vrrp(SECONDARY, "a takeover after the forged reset", WAIT, |v| {
            v["transitions"].as_array().is_some_and(|history| {
                history
                    .iter()
                    .rev()
                    .take(usize::try_from(v["transitions_total"].as_u64().unwrap_or(0) - before).unwrap_or(0))
                    .any(|t| {
                        t["to"] == "MASTER" && t["reason"].as_str().is_some_and(|r| r.contains("peer link"))
                    })
            })
        })
        .unwrap();
    assert!(status["vrrp"]["peer_links"][0]["closes_total"].as_u64() > Some(closes));
}

/// With `peer_link_key_file`, the link is signed with TCP-MD5: the same
/// forged reset is dropped by the secondary's kernel for lacking the
/// signature; the link stays up and nothing moves.
#[test]
fn a_forged_reset_of_a_signed_peer_link_changes_nothing() {
    let mut bed = pair();
    let key = bed.dir.join("peer-link.key");
    std::fs::write(&key, "a secret both nodes share\n").expect("key file");
    start_both_linked(&mut bed, &format!("peer_link_key_file = \"{}\"", key.display()));
    let transitions = both_transitions(&bed);
    let (_, closes) = secondary_peer_link(&bed);
    let unsigned_before = bed.node(SECONDARY).tcp_ext("TCPMD5NotFound");
    forge_peer_link_resets(&bed);
    wait::until("the secondary's kernel dropped the unsigned resets", WAIT, || {
        bed.node(SECONDARY).tcp_ext("TCPMD5NotFound") >= unsigned_before + 2
    })
    .unwrap();
    // A close would be reported within milliseconds.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        secondary_peer_link(&bed),
        (true, closes),
        "the link was not closed"
    );
    assert_nothing_moved(&bed, transitions);
}

/// A master with more than 100,000 tracked entries answers `xlb status`
/// and a metrics scrape every 200 ms for 30 s, and nothing moves: neither
/// node changes state. (With a walk of the table on each request, 0.3 s at
/// this size on this machine, and adverts 100 ms apart, the backup took
/// over again and again.) The answer times are printed, not judged here:
/// `cargo xtask bench --only status` measures them up to a million entries.
#[test]
fn status_and_scrapes_on_a_full_table_move_nothing() {
    let mut bed = pair();
    bed.dataplane_extra = "conntrack_entries = 524288\nudp_timeout_secs = 600".to_owned();
    start_both(&mut bed, "", "");
    bed.open_udp_flows(64_000).expect("UDP flows");
    let entries = |bed: &Testbed| {
        bed.node_status(PRIMARY).expect("status")["conntrack_entries"]
            .as_u64()
            .expect("conntrack_entries")
    };
    wait::until("the sweeper's census counts the flows", WAIT, || {
        entries(&bed) >= 100_000
    })
    .unwrap_or_else(|e| panic!("{e:#}: {} entries", entries(&bed)));
    let transitions = both_transitions(&bed);

    let (mut status_times, mut scrape_times) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let round = Instant::now();
        bed.node_status(PRIMARY).expect("status answers");
        status_times.push(round.elapsed());
        let scraped = Instant::now();
        assert!(!bed.scrape_metrics(PRIMARY).expect("scrape").is_empty());
        scrape_times.push(scraped.elapsed());
        std::thread::sleep(Duration::from_millis(200).saturating_sub(round.elapsed()));
    }
    let summary = |times: &mut Vec<Duration>| {
        times.sort();
        format!(
            "median {:?}, max {:?}",
            times[times.len() / 2],
            times[times.len() - 1]
        )
    };
    println!(
        "{} entries; {} rounds; xlb status (the CLI process included): {}; metrics scrape: {}",
        entries(&bed),
        status_times.len(),
        summary(&mut status_times),
        summary(&mut scrape_times)
    );
    assert!(entries(&bed) >= 100_000, "the table stayed full");
    assert_nothing_moved(&bed, transitions);
}

/// The testbed's services with quick TCP checks: a backend is down after
/// two failed checks 100 ms apart, and up again after three passed ones.
fn services_with_quick_checks() -> String {
    base_services_checked(
        &[FRONTEND_PORT, API_PORT],
        "{ type = \"tcp\", inter = \"100ms\", rise = 3, fall = 2 }",
    )
}

/// Sets the switch's ports to node `i` (its private, then its public
/// cable) `state` ("up" or "down"): cables pulled or put back at the switch.
fn cables(bed: &Testbed, i: usize, state: &str) {
    let ports = if i == PRIMARY {
        ["lb", "lb1pub"]
    } else {
        ["lb2", "lb2pub"]
    };
    for port in ports {
        bed.switch.ip(&["link", "set", port, state]).expect("switch port");
    }
}

/// Both cables of the primary pulled at the switch long enough for its
/// checks to take every backend down, then put back, the VRRP (private)
/// side first: the primary takes the floating IP back only once its checks
/// have passed again, and no new connection from a prober every 5 ms fails
/// at the heal.
#[test]
fn a_healed_primary_takes_the_ip_back_only_when_ready_and_no_new_connection_fails() {
    let mut bed = pair();
    let services = services_with_quick_checks();
    let primary = format!("{services}\n{}", bed.vrrp_section(PRIMARY, 200, ""));
    bed.start_node(PRIMARY, &primary).expect("primary starts");
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT)
        .expect("primary is master");
    let secondary = format!("{services}\n{}", bed.vrrp_section(SECONDARY, 100, ""));
    bed.start_node(SECONDARY, &secondary).expect("secondary starts");
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT)
        .expect("secondary is backup");

    cables(&bed, PRIMARY, "down");
    bed.wait_vrrp_state(SECONDARY, "MASTER", WAIT)
        .expect("the secondary takes over");
    wait::until("the VIP answers through the secondary", WAIT, || request(&bed)).unwrap();
    // The primary's checks take its backends down (it cannot reach them).
    bed.node_daemon(PRIMARY)
        .expect("primary runs")
        .wait_for_line("backend DOWN", WAIT)
        .expect("the primary's backends go down");
    wait::until("every checked backend of the primary is down", WAIT, || {
        let status = bed.node_status(PRIMARY).expect("status");
        ["frontend", "api"].iter().all(|name| {
            lb_tests::status::service(&status, name).is_ok_and(|s| {
                s["backends"]
                    .as_array()
                    .is_some_and(|b| b.iter().all(|b| b["healthy"] == false))
            })
        })
    })
    .unwrap();

    let probe = ConnectionProbe::start_overlapping(
        &bed.client,
        SocketAddrV4::new(VIP, FRONTEND_PORT),
        Duration::from_millis(5),
    )
    .expect("prober");
    std::thread::sleep(Duration::from_millis(200));
    let healed = Instant::now();
    bed.switch
        .ip(&["link", "set", "lb", "up"])
        .expect("private cable back");
    std::thread::sleep(Duration::from_millis(100));
    bed.switch
        .ip(&["link", "set", "lb1pub", "up"])
        .expect("public cable back");
    bed.wait_vrrp_state(PRIMARY, "MASTER", WAIT)
        .expect("the primary takes the IP back");
    bed.wait_vrrp_state(SECONDARY, "BACKUP", WAIT)
        .expect("the secondary steps back");
    std::thread::sleep(Duration::from_millis(500));
    let attempts = probe.stop().expect("probe results");

    let after: Vec<_> = attempts.iter().filter(|a| a.started >= healed).collect();
    let failed = after.iter().filter(|a| !a.ok).count();
    let failures: Vec<_> = after
        .iter()
        .filter(|a| !a.ok)
        .map(|a| a.started.duration_since(healed))
        .collect();
    let (_, to, reason) = last_transition(&bed, PRIMARY);
    println!(
        "{} attempts after the heal, {failed} failed; the primary: {to} ({reason})",
        after.len()
    );
    assert!(
        after.len() > 100,
        "the prober ran through the heal: {} attempts",
        after.len()
    );
    assert_eq!(
        failed, 0,
        "new connections failed at the heal, started this long after it: {failures:?}"
    );
}
