//! `cargo xtask run`: the testbed with the load balancer, until Ctrl-C.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use lb_tests::testbed::{
    base_services, Testbed, ANCHOR, API_PORT, CLIENT_ADDRS, FRONTEND_PORT, UDP_PORT, VIP,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn testbed(binary: &Path) -> anyhow::Result<()> {
    std::env::set_var("XLB_BIN", binary);
    // Ctrl-C reaches the daemon too (same process group); we stay to clean up.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let tag = lb_tests::unique_tag("xr");
    let mut bed = Testbed::new(&tag)?;
    bed.start_lb(&base_services(), &["--stats-interval", "2s"])?;
    let client = bed.client.name().to_owned();
    println!(
        "\nxlb is running in namespace {lb} on a testbed of namespaces {tag}-*.\n\
         Try, in another terminal:\n\
         \n  ip netns exec {client} curl -s http://{VIP}:{FRONTEND_PORT}/     # web frontends, round robin\
         \n  ip netns exec {client} curl -s http://{VIP}:{API_PORT}/     # APIs, round robin\
         \n  ip netns exec {client} curl -s http://{ANCHOR}:{FRONTEND_PORT}/      # the anchor address serves too\
         \n  ip netns exec {client} bash -c 'for i in $(seq 10); do curl -s http://{VIP}:{FRONTEND_PORT}/; done'\
         \n  ip netns exec {client} bash -c 'exec 3<>/dev/udp/{VIP}/{UDP_PORT}; echo hi >&3; timeout 1 head -n1 <&3'   # UDP service\
         \n  ip netns exec {client} ping -c1 {VIP}                           # not a service: the LB's own stack answers\
         \n\nOperate it (the admin socket is {socket}):\
         \n  {xlb} status --socket {socket}\
         \n  {xlb} drain frontend web1 --socket {socket}      # then curl again: only web2 answers\
         \n  {xlb} enable frontend web1 --socket {socket}\
         \n  ip netns exec {lb} curl -s 127.0.0.1:8404/metrics | grep xlb_server_sessions_total\
         \n  kill $(ip netns pids {web1})                   # web1 dies: its health check takes it out\
         \n\nClient addresses: {}, {}. Counters follow every 2 s. Ctrl-C stops and removes everything.\n",
        CLIENT_ADDRS[0],
        CLIENT_ADDRS[1],
        lb = bed.lb.name(),
        web1 = bed.webs[0].name(),
        socket = bed.admin_socket().display(),
        xlb = binary.display(),
    );
    while !STOP.load(Ordering::SeqCst) {
        if let Some(daemon) = bed.daemon.as_mut() {
            if let Some(line) = daemon.next_line(Duration::from_millis(200)) {
                if line.contains("counters") || line.contains("WARN") || line.contains("ERROR") {
                    println!("{line}");
                }
            }
            if daemon.exited() {
                println!("xlb exited:\n{}", daemon.log_text());
                break;
            }
        }
    }
    println!("\nstopping: detaching XDP, removing namespaces...");
    drop(bed);
    println!("done.");
    Ok(())
}
