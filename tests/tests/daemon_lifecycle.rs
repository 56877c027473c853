//! The daemon's life: start, detach on signals, restart without cleanup,
//! refuse bad input before touching anything. Needs root.

use std::time::Duration;

use lb_tests::{
    daemon::binary,
    testbed::{base_services, Testbed, FRONTEND_PORT, VIP},
    unique_tag,
};

fn xdp_attached(bed: &Testbed, dev: &str) -> bool {
    bed.lb
        .ip(&["link", "show", dev])
        .expect("ip link")
        .contains("prog/xdp")
}

fn serves(bed: &Testbed) -> bool {
    bed.request((VIP, FRONTEND_PORT))
        .is_ok_and(|body| body.ends_with("frontend"))
}

/// Runs `xlb run` with `config_text` to completion (it must fail) and returns stderr.
fn run_expecting_failure(bed: &Testbed, config_text: &str) -> String {
    let path = bed.dir.join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let output = bed
        .lb
        .command(binary().unwrap().to_str().unwrap())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "xlb accepted a bad setup");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn sigterm_detaches_and_a_second_start_works() {
    let mut bed = Testbed::new(&unique_tag("xl")).unwrap();
    bed.start_lb(&base_services(), &[]).unwrap();
    assert!(xdp_attached(&bed, "eth0") && xdp_attached(&bed, "eth1"));
    assert!(serves(&bed));

    let daemon = bed.daemon.take().unwrap();
    let status = daemon.stop_with(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        !xdp_attached(&bed, "eth0") && !xdp_attached(&bed, "eth1"),
        "XDP left attached"
    );

    bed.start_lb(&base_services(), &[]).unwrap();
    assert!(serves(&bed), "second start does not serve");
    let status = bed
        .daemon
        .take()
        .unwrap()
        .stop_with(libc::SIGINT, Duration::from_secs(10))
        .unwrap();
    assert!(status.success());
    assert!(!xdp_attached(&bed, "eth0"));
}

#[test]
fn restart_after_sigkill_needs_no_cleanup() {
    let mut bed = Testbed::new(&unique_tag("xl")).unwrap();
    bed.start_lb(&base_services(), &[]).unwrap();
    let daemon = bed.daemon.take().unwrap();
    daemon.stop_with(libc::SIGKILL, Duration::from_secs(10)).unwrap();
    // The XDP links belonged to the process: the kernel removed them.
    assert!(!xdp_attached(&bed, "eth0"));
    bed.start_lb(&base_services(), &[]).unwrap();
    assert!(serves(&bed));
}

#[test]
fn bad_input_is_refused_before_anything_is_attached() {
    let bed = Testbed::new(&unique_tag("xl")).unwrap();
    let good = bed.write_config("good.toml", &base_services()).unwrap();
    let good = std::fs::read_to_string(good).unwrap();

    let broken = good.replace("203.0.113.12:3000", "203.0.113.12:99999");
    let err = run_expecting_failure(&bed, &broken);
    assert!(err.contains("bad.toml:") && err.contains("web2"), "{err}");

    let missing_interface = good.replace("[\"eth0\", \"eth1\"]", "[\"eth0\", \"nosuch0\"]");
    let err = run_expecting_failure(&bed, &missing_interface);
    assert!(err.contains("nosuch0"), "{err}");

    let overlap = good.replace("20000-29999", "15000-25000");
    let err = run_expecting_failure(&bed, &overlap);
    assert!(err.contains("overlap local_ports 10000-19999"), "{err}");

    assert!(!xdp_attached(&bed, "eth0") && !xdp_attached(&bed, "eth1"));
    // And `xlb check` agrees with `run` on what is valid: it accepts the
    // good file and refuses the broken one with the same line.
    let check = |text: &str| {
        let path = bed.dir.join("check.toml");
        std::fs::write(&path, text).unwrap();
        bed.lb
            .command(binary().unwrap().to_str().unwrap())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let accepted = check(&good);
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(
        stdout.contains("check.toml: ok (3 services, 6 backends"),
        "{stdout}"
    );
    let refused = check(&broken);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "xlb check accepted {stderr}");
    assert!(
        stderr.contains("check.toml:") && stderr.contains("web2"),
        "{stderr}"
    );
}
