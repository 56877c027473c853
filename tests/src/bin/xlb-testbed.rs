//! `xlb-testbed`, run by `cargo xtask run` once the toolchain is in place: a
//! pair of load balancers sharing a floating IP on the namespace testbed,
//! until Ctrl-C.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use lb_tests::testbed::{base_services, Testbed, API_PORT, CLIENT_ADDRS, FRONTEND_PORT, UDP_PORT, VIP};

const PRIMARY: usize = 0;
const SECONDARY: usize = 1;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let binary = match (args.next(), args.next()) {
        (Some(flag), Some(path)) if flag == "--xlb" => std::path::PathBuf::from(path),
        _ => anyhow::bail!("usage: xlb-testbed --xlb PATH-TO-XLB (`cargo xtask run` passes it)"),
    };
    anyhow::ensure!(
        // SAFETY: plain geteuid(2).
        unsafe { libc::geteuid() } == 0,
        "the testbed needs root (network namespaces, XDP): run `cargo xtask run` as root"
    );
    testbed(&binary)
}

fn testbed(binary: &Path) -> anyhow::Result<()> {
    std::env::set_var("XLB_BIN", binary);
    // Ctrl-C reaches the daemon too (same process group); we stay to clean up.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let tag = lb_tests::unique_tag("xr");
    let mut bed = Testbed::pair(&tag)?;
    // The primary (priority 200) first, so that it owns the floating IP;
    // the secondary (100) joins as backup.
    for (node, priority) in [(PRIMARY, 200), (SECONDARY, 100)] {
        let config = format!("{}\n{}", base_services(), bed.vrrp_section(node, priority, ""));
        bed.start_node(node, &config)?;
        let want = if node == PRIMARY { "MASTER" } else { "BACKUP" };
        bed.wait_vrrp_state(node, want, Duration::from_secs(15))?;
    }
    let client = bed.client.name().to_owned();
    let names = [bed.lb.name().to_owned(), bed.node(SECONDARY).name().to_owned()];
    let pid = bed.daemon.as_ref().map_or(0, lb_tests::daemon::Daemon::pid);
    println!(
        "\nTwo xlb nodes share the floating IP {VIP} over VRRP (version 3, 100 ms adverts,\n\
         unicast on the private segment): {primary} (priority 200, MASTER) and {secondary}\n\
         (priority 100, BACKUP), on a testbed of namespaces {tag}-*.\n\
         Try, in another terminal:\n\
         \n  ip netns exec {client} curl -s http://{VIP}:{FRONTEND_PORT}/     # web frontends, round robin\
         \n  ip netns exec {client} curl -s http://{VIP}:{API_PORT}/     # APIs, round robin\
         \n  ip netns exec {client} bash -c 'exec 3<>/dev/udp/{VIP}/{UDP_PORT}; echo hi >&3; timeout 1 head -n1 <&3'   # UDP service\
         \n\nWatch the floating IP move:\
         \n  ip netns exec {client} bash -c 'while :; do curl -s -m 0.3 http://{VIP}:{FRONTEND_PORT}/ || echo FAILED; sleep 0.1; done'\
         \n  {xlb} status --socket {socket0}      # the primary: MASTER, the VIP, the peer link\
         \n  {xlb} status --socket {socket1}\
         \n  kill -9 {pid}                              # the primary dies: the secondary takes over at once\
         \n  ip netns exec {primary} ip -br addr show eth0    # its guard removed the VIP\
         \n  ip netns exec {client} ip neigh show {VIP}        # the secondary's MAC, from its gratuitous ARP\
         \n  ip netns exec {primary} {xlb} run --config {config0} &   # back: it preempts\
         \n  ip netns exec {primary} ip link set eth0 down   # or: the primary's public link fails\
         \n  ip netns exec {primary} ip link set eth0 up\
         \n  ip netns exec {primary} curl -s 127.0.0.1:8404/metrics | grep xlb_vrrp_state\
         \n\nClient addresses: {}, {}. VRRP transitions and warnings follow. Ctrl-C stops and removes everything.\n",
        CLIENT_ADDRS[0],
        CLIENT_ADDRS[1],
        primary = names[PRIMARY],
        secondary = names[SECONDARY],
        socket0 = bed.node_admin_socket(PRIMARY).display(),
        socket1 = bed.node_admin_socket(SECONDARY).display(),
        config0 = bed.dir.join(format!("xlb-{PRIMARY}.toml")).display(),
        xlb = binary.display(),
    );
    let mut exited = [false, false];
    while !STOP.load(Ordering::SeqCst) {
        let mut quiet = true;
        for node in [PRIMARY, SECONDARY] {
            let Some(daemon) = bed.node_daemon(node) else {
                continue;
            };
            if let Some(line) = daemon.next_line(Duration::from_millis(20)) {
                quiet = false;
                if ["VRRP", "peer link", "WARN", "ERROR", "reserved IP"]
                    .iter()
                    .any(|k| line.contains(k))
                {
                    println!("[{}] {line}", names[node]);
                }
            }
            if !exited[node] && daemon.exited() {
                exited[node] = true;
                println!("[{}] xlb exited", names[node]);
            }
        }
        if quiet {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("\nstopping: detaching XDP, removing namespaces...");
    drop(bed);
    println!("done.");
    Ok(())
}
