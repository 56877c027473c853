//! Interop with a real keepalived (the Debian package, VRRP only, no IPVS)
//! configured like the reference: version 2, one-second adverts, unicast
//! peers, auth_type PASS, VRID 50. xlb runs on node 0 of a pair, keepalived
//! on node 1; each in turn is the master, the other takes over from it and
//! hands back. Needs root.

use std::time::{Duration, Instant};

use lb_tests::{
    keepalived::{self, Keepalived, State},
    testbed::{base_services, Testbed, NODE_PRIVATE},
    unique_tag,
};

const XLB: usize = 0;
const KEEPALIVED: usize = 1;
const WAIT: Duration = Duration::from_secs(15);
/// Longer than a version 2 backup's Master_Down_Interval at one-second
/// adverts (3 s plus the skew): a node that ignored its peer's adverts
/// would have taken over by then.
const BEYOND_MASTER_DOWN: Duration = Duration::from_secs(5);
const PASSWORD: &str = "ref-pass";

fn pair() -> Testbed {
    Testbed::pair(&unique_tag("xk")).expect("testbed")
}

/// xlb on its node, speaking the reference's VRRP: version 2, 1 s, PASS.
fn start_xlb(bed: &mut Testbed, priority: u8) {
    let pass_file = bed.dir.join("vrrp-pass");
    std::fs::write(&pass_file, PASSWORD).expect("write the password file");
    let extra = format!(
        "version = 2\nadvert_interval = \"1s\"\nauth_pass_file = \"{}\"",
        pass_file.display()
    );
    let config = format!("{}\n{}", base_services(), bed.vrrp_section(XLB, priority, &extra));
    bed.start_node(XLB, &config).expect("xlb starts");
}

fn start_keepalived(bed: &Testbed, config: &keepalived::Config) -> Keepalived {
    Keepalived::start(bed.node(KEEPALIVED), &bed.dir, "keepalived", config).expect("keepalived starts")
}

fn kill_xlb(bed: &mut Testbed) {
    bed.take_node_daemon(XLB)
        .expect("xlb runs")
        .stop_with(libc::SIGKILL, WAIT)
        .expect("xlb killed");
}

/// xlb's `vrrp` status.
fn xlb_vrrp(bed: &Testbed) -> serde_json::Value {
    bed.node_status(XLB).expect("xlb status")["vrrp"].clone()
}

/// xlb's last transition (to, reason).
fn xlb_last_transition(bed: &Testbed) -> (String, String) {
    let vrrp = xlb_vrrp(bed);
    let last = vrrp["transitions"]
        .as_array()
        .and_then(|t| t.last())
        .expect("a transition");
    (
        last["to"].as_str().unwrap_or_default().to_owned(),
        last["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Adverts xlb dropped, by reason.
fn xlb_rejected(bed: &Testbed) -> Vec<(String, u64)> {
    xlb_vrrp(bed)["adverts_rejected"]
        .as_array()
        .expect("adverts_rejected")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["value"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits (bounded) until `condition` holds.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "not true within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vip_only_on(bed: &Testbed, node: usize) -> bool {
    bed.has_vip(node).expect("addresses") && !bed.has_vip(1 - node).expect("addresses")
}

#[test]
fn xlb_as_master_keepalived_as_backup_both_take_over_and_xlb_preempts() {
    let mut bed = pair();
    start_xlb(&mut bed, 200);
    bed.wait_vrrp_state(XLB, "MASTER", WAIT).expect("xlb is master");
    let mut keepalived = start_keepalived(
        &bed,
        &keepalived::Config::node(KEEPALIVED, 100).auth_pass(PASSWORD),
    );
    keepalived
        .wait_state(State::Backup, WAIT)
        .expect("keepalived is backup");
    // keepalived accepts xlb's adverts: it stays backup past its timer.
    std::thread::sleep(BEYOND_MASTER_DOWN);
    assert_eq!(
        keepalived.state(),
        Some(State::Backup),
        "{}",
        keepalived.log_text()
    );
    assert!(
        keepalived.entered().iter().all(|e| e.state != State::Master),
        "keepalived never took over: {}",
        keepalived.log_text()
    );
    assert!(vip_only_on(&bed, XLB));

    // A crash of xlb: keepalived takes over, and xlb's guard removes the
    // address it left behind.
    kill_xlb(&mut bed);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived takes over");
    eventually("the VIP moved to keepalived's node", || {
        vip_only_on(&bed, KEEPALIVED)
    });

    // xlb returns with the higher priority and preempts.
    start_xlb(&mut bed, 200);
    bed.wait_vrrp_state(XLB, "MASTER", WAIT).expect("xlb preempts");
    keepalived
        .wait_state(State::Backup, WAIT)
        .expect("keepalived steps back");
    eventually("keepalived released the VIP", || vip_only_on(&bed, XLB));
    let vrrp = xlb_vrrp(&bed);
    assert!(
        vrrp["adverts_received_total"].as_u64() > Some(0),
        "xlb heard keepalived as master before preempting: {vrrp}"
    );
    assert_eq!(
        xlb_rejected(&bed),
        vec![],
        "keepalived's adverts pass xlb's checks"
    );
}

#[test]
fn keepalived_as_master_xlb_as_backup_both_take_over_and_keepalived_preempts() {
    let mut bed = pair();
    let config = keepalived::Config::node(KEEPALIVED, 200)
        .initial_state(State::Master)
        .auth_pass(PASSWORD);
    let mut keepalived = start_keepalived(&bed, &config);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived is master");
    start_xlb(&mut bed, 100);
    bed.wait_vrrp_state(XLB, "BACKUP", WAIT).expect("xlb is backup");
    // Several adverts accepted, none dropped, and no takeover past the timer.
    std::thread::sleep(BEYOND_MASTER_DOWN);
    let vrrp = xlb_vrrp(&bed);
    assert_eq!(vrrp["state"], "BACKUP", "{vrrp}");
    assert_eq!(vrrp["transitions_total"], 1, "INIT to BACKUP only: {vrrp}");
    assert_eq!(
        vrrp["current_master"],
        NODE_PRIVATE[KEEPALIVED].to_string(),
        "{vrrp}"
    );
    assert!(vrrp["adverts_received_total"].as_u64() >= Some(3), "{vrrp}");
    assert_eq!(
        xlb_rejected(&bed),
        vec![],
        "keepalived's adverts pass xlb's checks"
    );
    assert!(vip_only_on(&bed, KEEPALIVED));

    // A crash of keepalived: its adverts stop, xlb's timer runs out.
    keepalived.kill().expect("keepalived killed");
    bed.wait_vrrp_state(XLB, "MASTER", WAIT).expect("xlb takes over");
    let (_, reason) = xlb_last_transition(&bed);
    assert!(reason.contains("Master_Down_Timer expired"), "{reason}");
    assert!(bed.has_vip(XLB).unwrap());

    // keepalived returns with the higher priority and preempts (it removes
    // the address its crash left before it starts).
    let mut keepalived = start_keepalived(&bed, &config);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived preempts");
    bed.wait_vrrp_state(XLB, "BACKUP", WAIT).expect("xlb steps back");
    let (to, reason) = xlb_last_transition(&bed);
    assert_eq!(to, "BACKUP");
    assert!(
        reason.contains(&format!(
            "advertisement from {} with priority 200",
            NODE_PRIVATE[KEEPALIVED]
        )),
        "{reason}"
    );
    eventually("xlb released the VIP", || vip_only_on(&bed, KEEPALIVED));
    assert_eq!(xlb_rejected(&bed), vec![]);
    assert_eq!(keepalived.state(), Some(State::Master));
}

#[test]
fn a_wrong_password_on_keepalived_is_rejected_and_changes_no_election() {
    let mut bed = pair();
    start_xlb(&mut bed, 100);
    bed.wait_vrrp_state(XLB, "MASTER", WAIT)
        .expect("xlb is master alone");
    let before = xlb_vrrp(&bed);
    // A higher priority that would make xlb step back, were its adverts
    // accepted.
    let config = keepalived::Config::node(KEEPALIVED, 200)
        .initial_state(State::Master)
        .auth_pass("wrong");
    let mut keepalived = start_keepalived(&bed, &config);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived, deaf to xlb, is master too");
    eventually("xlb rejects keepalived's adverts for auth", || {
        xlb_rejected(&bed)
            .iter()
            .any(|(name, count)| name == "auth" && *count >= 3)
    });
    let after = xlb_vrrp(&bed);
    assert_eq!(after["state"], "MASTER", "{after}");
    assert_eq!(
        after["transitions_total"], before["transitions_total"],
        "no election change: {after}"
    );
    assert_eq!(
        after["adverts_received_total"], before["adverts_received_total"],
        "nothing accepted: {after}"
    );
    assert_eq!(
        xlb_rejected(&bed)
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        vec!["auth"],
        "rejected for auth only"
    );
}
