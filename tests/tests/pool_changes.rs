//! Health-checked pools and live changes, end to end with real nginx
//! backends in namespaces. Needs root.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use lb_tests::{
    http, status,
    testbed::{base_services, Testbed, CLIENT_ADDRS, FRONTEND_PORT, LB_PUBLIC, VIP},
    unique_tag, wait,
};

const WAIT: Duration = Duration::from_secs(20);

/// The frontend service with `extra` lines (check settings, on_down, ...).
fn frontend_with(extra: &str) -> String {
    base_services().replacen(
        &format!("port = {FRONTEND_PORT}\n"),
        &format!("port = {FRONTEND_PORT}\n{extra}\n"),
        1,
    )
}

// The timeout is generous: the first check after XDP attaches can lose its
// SYN to the interface reconfiguring, and waits for the 1 s retransmit.
const FAST_CHECKS: &str = "check = { inter = \"300ms\", rise = 2, fall = 2, timeout = \"1500ms\" }";

const FRONTEND: (Ipv4Addr, u16) = (VIP, FRONTEND_PORT);

/// Waits for the daemon to log `event` ("backend DOWN", "backend UP") for
/// `backend` of `service` (other services share the web servers).
fn wait_for(bed: &mut Testbed, event: &str, service: &str, backend: &str) -> String {
    let service = format!("service=\"{service}\"");
    let backend = format!("backend=\"{backend}\"");
    bed.daemon
        .as_mut()
        .expect("daemon")
        .wait_for_line_where(&format!("{event:?} {service} {backend}"), WAIT, |line| {
            line.contains(event) && line.contains(&service) && line.contains(&backend)
        })
        .unwrap()
}

/// Writes `text` as the daemon's config, sends SIGHUP, and returns the log
/// line containing `outcome` ("config reloaded" or "reload refused").
fn reload_with(bed: &mut Testbed, text: &str, outcome: &str) -> String {
    std::fs::write(bed.dir.join("xlb.toml"), text).unwrap();
    bed.daemon
        .as_ref()
        .expect("daemon")
        .signal(libc::SIGHUP)
        .expect("SIGHUP the daemon");
    bed.daemon
        .as_mut()
        .expect("daemon")
        .wait_for_line(outcome, WAIT)
        .unwrap()
}

#[test]
fn dead_backend_leaves_rotation_and_rejoins_after_rise() {
    let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
    bed.start_lb(&frontend_with(FAST_CHECKS), &[]).unwrap();
    assert_eq!(bed.tally(FRONTEND, 10).unwrap().len(), 2);

    bed.stop_web(0);
    wait_for(&mut bed, "backend DOWN", "frontend", "web1");
    // Every new connection now goes to web2, and succeeds.
    let counts = bed.tally(FRONTEND, 20).unwrap();
    assert_eq!(counts.get("web2 frontend"), Some(&20), "{counts:?}");

    bed.start_web(0, 200).unwrap();
    wait_for(&mut bed, "backend UP", "frontend", "web1");
    let counts = bed.tally(FRONTEND, 20).unwrap();
    assert_eq!(counts.get("web1 frontend"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("web2 frontend"), Some(&10), "{counts:?}");
}

#[test]
fn http_check_expecting_200_takes_a_500_backend_down() {
    let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
    bed.start_web(1, 500).unwrap();
    let check = "check = { type = \"http\", path = \"/health\", expect_status = \"200\", inter = \"300ms\", timeout = \"1500ms\", rise = 2, fall = 2 }";
    bed.start_lb(&frontend_with(check), &[]).unwrap();
    let line = wait_for(&mut bed, "backend DOWN", "frontend", "web2");
    assert!(line.contains("500"), "{line}");
    let counts = bed.tally(FRONTEND, 10).unwrap();
    assert_eq!(counts.get("web1 frontend"), Some(&10), "{counts:?}");
}

#[test]
fn broken_reload_keeps_serving_and_a_good_one_adds_a_backend_without_breaking_connections() {
    let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
    bed.start_lb(&base_services(), &[]).unwrap();
    let mut long = bed.connect((CLIENT_ADDRS[0], 0), FRONTEND).unwrap();
    let first = http::get(&mut long).unwrap();
    assert_eq!(first, "web1 frontend");

    // A broken config: the daemon says what and where, and keeps serving.
    let config = bed.dir.join("xlb.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let line = reload_with(
        &mut bed,
        &good.replace("203.0.113.12:3000", "203.0.113.12:3000x"),
        "reload refused",
    );
    assert!(line.contains("xlb.toml:") && line.contains("web2"), "{line}");
    assert_eq!(bed.tally(FRONTEND, 10).unwrap().len(), 2);
    assert_eq!(http::get(&mut long).unwrap(), first);

    // A good one adds a third backend (web1's API port) to the frontend.
    let third = good.replacen(
        "  { name = \"web2\", address = \"203.0.113.12:3000\" },\n",
        "  { name = \"web2\", address = \"203.0.113.12:3000\" },\n  { name = \"web3\", address = \"203.0.113.11:5000\" },\n",
        1,
    );
    assert_ne!(third, good);
    reload_with(&mut bed, &third, "config reloaded");
    let counts = bed.tally(FRONTEND, 30).unwrap();
    for body in ["web1 frontend", "web2 frontend", "web1 api"] {
        assert_eq!(counts.get(body), Some(&10), "{counts:?}");
    }
    // The connection opened before both reloads still works, on its backend.
    assert_eq!(http::get(&mut long).unwrap(), first);
}

#[test]
fn all_backends_down_refuses_with_a_reset_and_the_lb_stays_reachable() {
    let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
    bed.start_lb(&frontend_with(FAST_CHECKS), &[]).unwrap();
    bed.stop_web(0);
    bed.stop_web(1);
    // The frontend's backends go down, in either order (the API service's
    // go down too: same nginx).
    wait::until("the frontend has no backend up", WAIT, || {
        bed.node_status(0)
            .is_ok_and(|json| status::service_counter(&json, "frontend", "active_backends").ok() == Some(0))
    })
    .unwrap();

    // Refused by a reset (ECONNREFUSED), not left to time out (ETIMEDOUT).
    let vip = SocketAddr::from((VIP, FRONTEND_PORT));
    let err = bed
        .client
        .run(move || TcpStream::connect_timeout(&vip, WAIT))
        .unwrap()
        .expect_err("a connection to an empty pool must be refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    let ssh = bed
        .lb
        .run(|| TcpListener::bind((LB_PUBLIC, 2222)))
        .unwrap()
        .unwrap();
    bed.connect((CLIENT_ADDRS[0], 0), (LB_PUBLIC, 2222))
        .expect("the LB's own services still answer");
    drop(ssh);

    let json = bed.node_status(0).unwrap();
    assert_eq!(
        status::service_counter(&json, "frontend", "refused_total").unwrap(),
        1
    );
    assert_eq!(
        status::service_counter(&json, "frontend", "active_backends").unwrap(),
        0
    );
}

/// A command check that fails while `DIR/down-<backend>` exists: a backend
/// can be marked down while its server keeps serving open connections.
fn flag_file_check(bed: &Testbed) -> String {
    format!(
        "check = {{ type = \"command\", command = [\"sh\", \"-c\", \"test ! -e {}/down-$XLB_SERVER_NAME\"], inter = \"200ms\", rise = 1, fall = 1 }}",
        bed.dir.display()
    )
}

#[test]
fn on_down_keep_spares_established_connections_and_shutdown_sessions_resets_them() {
    for (on_down, survives) in [("keep", true), ("shutdown-sessions", false)] {
        let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
        let extra = format!("on_down = \"{on_down}\"\n{}", flag_file_check(&bed));
        bed.start_lb(&frontend_with(&extra), &[]).unwrap();
        let mut long = bed.connect((CLIENT_ADDRS[0], 0), FRONTEND).unwrap();
        assert_eq!(http::get(&mut long).unwrap(), "web1 frontend");

        std::fs::write(bed.dir.join("down-web1"), "").unwrap();
        wait_for(&mut bed, "backend DOWN", "frontend", "web1");
        assert_eq!(bed.request(FRONTEND).unwrap(), "web2 frontend");
        if !survives {
            // The sweeper removes the backend's entries in the background
            // and says when it is done, and how many connections it reset.
            let done = bed
                .daemon
                .as_mut()
                .expect("daemon")
                .wait_for_line("shut down the backend's sessions", WAIT)
                .unwrap();
            assert!(
                done.contains("backend=\"frontend/web1\"") && done.contains("connections=1"),
                "{done}"
            );
        }
        let after = http::get(&mut long);
        if survives {
            assert_eq!(after.unwrap(), "web1 frontend", "on_down = keep");
        } else {
            // Reset: the LB forgot the connection, so its next segment
            // reaches the LB's own stack, which answers with a RST. Not a
            // time-out (the flow still forwarded somewhere silent) nor an
            // orderly close.
            let err = after.expect_err("on_down = shutdown-sessions: the connection must be reset");
            let kind = err.downcast_ref::<io::Error>().map(io::Error::kind);
            assert_eq!(
                kind,
                Some(io::ErrorKind::ConnectionReset),
                "on_down = shutdown-sessions: {err:#}"
            );
        }
    }
}

#[test]
fn weights_share_new_connections_and_weight_zero_drains() {
    let mut bed = Testbed::new(&unique_tag("xh")).unwrap();
    let weighted = base_services().replacen(
        "address = \"203.0.113.11:3000\" }",
        "address = \"203.0.113.11:3000\", weight = 3 }",
        1,
    );
    bed.start_lb(&weighted, &[]).unwrap();
    let counts = bed.tally(FRONTEND, 40).unwrap();
    assert_eq!(counts.get("web1 frontend"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("web2 frontend"), Some(&10), "{counts:?}");

    // Weight 0 by reload: web1 takes nothing new, its open connection stays.
    // The next connection is the first of a new round of four: web1's.
    let mut long = bed.connect((CLIENT_ADDRS[0], 0), FRONTEND).unwrap();
    assert_eq!(http::get(&mut long).unwrap(), "web1 frontend");
    let config = bed.dir.join("xlb.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    reload_with(
        &mut bed,
        &text.replace("weight = 3", "weight = 0"),
        "config reloaded",
    );
    let counts = bed.tally(FRONTEND, 10).unwrap();
    assert_eq!(counts.get("web2 frontend"), Some(&10), "{counts:?}");
    assert_eq!(
        http::get(&mut long).unwrap(),
        "web1 frontend",
        "the drained backend keeps its open connection"
    );
}
