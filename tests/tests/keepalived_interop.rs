//! Interop with a real keepalived (the Debian package, VRRP only, no IPVS),
//! unicast peers, VRID 50, in both of xlb's wire formats: version 2 with
//! one-second adverts and auth_type PASS (the reference's configuration),
//! and version 3 (xlb's default) with 100 ms adverts. xlb runs on node 0 of
//! a pair, keepalived on node 1; each in turn is the master, the other takes
//! over from it and hands back. Adverts xlb must refuse (a wrong password,
//! another VRID, the other version) change no election. Needs root.

use std::time::Duration;

use lb_tests::{
    keepalived::{self, Keepalived, State},
    testbed::{base_services, Testbed, NODE_PRIVATE, VRID},
    unique_tag,
    wait::until,
};

const XLB: usize = 0;
const KEEPALIVED: usize = 1;
const WAIT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "ref-pass";

/// The VRRP both sides speak.
#[derive(Clone, Copy, Debug)]
enum Wire {
    /// The reference's: version 2, one-second adverts, auth_type PASS.
    V2,
    /// Version 3 with 100 ms adverts (keepalived: `vrrp_version 3`,
    /// `advert_int 0.1`).
    V3,
}

impl Wire {
    const V3_INTERVAL: Duration = Duration::from_millis(100);

    /// xlb's `[vrrp]` lines for this wire.
    fn xlb_settings(self, bed: &Testbed) -> String {
        match self {
            Self::V2 => {
                let pass_file = bed.dir.join("vrrp-pass");
                std::fs::write(&pass_file, PASSWORD).expect("write the password file");
                format!(
                    "version = 2\nadvert_interval = \"1s\"\nauth_pass_file = \"{}\"",
                    pass_file.display()
                )
            }
            Self::V3 => format!(
                "version = 3\nadvert_interval = \"{}ms\"",
                Self::V3_INTERVAL.as_millis()
            ),
        }
    }

    /// A backup's Master_Down_Interval is three advert intervals plus a
    /// skew under one: a node deaf to its master's adverts takes over within
    /// four. Counting this many adverts past a backup's start leaves it time
    /// to, with more to spare at 100 ms, where the delays of a loaded
    /// machine are as long as an interval.
    fn adverts_past_master_down(self) -> u64 {
        match self {
            Self::V2 => 6,
            Self::V3 => 20,
        }
    }

    /// keepalived on its node with `priority`, speaking this wire.
    fn keepalived(self, priority: u8) -> keepalived::Config {
        let config = keepalived::Config::node(KEEPALIVED, priority);
        match self {
            Self::V2 => config.auth_pass(PASSWORD),
            Self::V3 => config.version3(Self::V3_INTERVAL),
        }
    }
}

fn pair() -> Testbed {
    Testbed::pair(&unique_tag("xk")).expect("testbed")
}

fn start_xlb(bed: &mut Testbed, wire: Wire, priority: u8) {
    let extra = wire.xlb_settings(bed);
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

/// Waits (bounded) until xlb's VRRP counter `name` reaches `at_least`.
fn wait_xlb_counter(bed: &Testbed, name: &str, at_least: u64) {
    bed.wait_vrrp(XLB, &format!("{name} reaches {at_least}"), WAIT, |vrrp| {
        vrrp[name].as_u64() >= Some(at_least)
    })
    .expect("xlb's counter");
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
fn eventually(what: &str, condition: impl FnMut() -> bool) {
    until(what, WAIT, condition).unwrap_or_else(|e| panic!("{e}"));
}

fn vip_only_on(bed: &Testbed, node: usize) -> bool {
    bed.has_vip(node).expect("addresses") && !bed.has_vip(1 - node).expect("addresses")
}

fn xlb_as_master_keepalived_as_backup(wire: Wire) {
    let mut bed = pair();
    start_xlb(&mut bed, wire, 200);
    bed.wait_vrrp_state(XLB, "MASTER", WAIT).expect("xlb is master");
    let mut keepalived = start_keepalived(&bed, &wire.keepalived(100));
    keepalived
        .wait_state(State::Backup, WAIT)
        .expect("keepalived is backup");
    // keepalived accepts xlb's adverts: it stays backup past its timer.
    let sent = xlb_vrrp(&bed)["adverts_sent_total"]
        .as_u64()
        .expect("adverts_sent_total");
    wait_xlb_counter(&bed, "adverts_sent_total", sent + wire.adverts_past_master_down());
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
    start_xlb(&mut bed, wire, 200);
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
fn v2_xlb_as_master_keepalived_as_backup_both_take_over_and_xlb_preempts() {
    xlb_as_master_keepalived_as_backup(Wire::V2);
}

#[test]
fn v3_xlb_as_master_keepalived_as_backup_both_take_over_and_xlb_preempts() {
    xlb_as_master_keepalived_as_backup(Wire::V3);
}

fn keepalived_as_master_xlb_as_backup(wire: Wire) {
    let mut bed = pair();
    let config = wire.keepalived(200).initial_state(State::Master);
    let mut keepalived = start_keepalived(&bed, &config);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived is master");
    start_xlb(&mut bed, wire, 100);
    bed.wait_vrrp_state(XLB, "BACKUP", WAIT).expect("xlb is backup");
    // Adverts accepted past xlb's timer, none dropped, and no takeover.
    wait_xlb_counter(&bed, "adverts_received_total", wire.adverts_past_master_down());
    let vrrp = xlb_vrrp(&bed);
    assert_eq!(vrrp["state"], "BACKUP", "{vrrp}");
    assert_eq!(vrrp["transitions_total"], 1, "INIT to BACKUP only: {vrrp}");
    assert_eq!(
        vrrp["current_master"],
        NODE_PRIVATE[KEEPALIVED].to_string(),
        "{vrrp}"
    );
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
fn v2_keepalived_as_master_xlb_as_backup_both_take_over_and_keepalived_preempts() {
    keepalived_as_master_xlb_as_backup(Wire::V2);
}

#[test]
fn v3_keepalived_as_master_xlb_as_backup_both_take_over_and_keepalived_preempts() {
    keepalived_as_master_xlb_as_backup(Wire::V3);
}

/// xlb, master alone on `wire`, meets a keepalived at a higher priority
/// whose adverts it must drop for `reason`: it stays master, and nothing of
/// keepalived's is accepted.
fn refused_adverts_change_no_election(wire: Wire, keepalived: &keepalived::Config, reason: &str) {
    let mut bed = pair();
    start_xlb(&mut bed, wire, 100);
    bed.wait_vrrp_state(XLB, "MASTER", WAIT)
        .expect("xlb is master alone");
    let before = xlb_vrrp(&bed);
    // A higher priority that would make xlb step back, were its adverts
    // accepted.
    assert!(keepalived.priority > 100);
    let mut keepalived = start_keepalived(&bed, keepalived);
    keepalived
        .wait_state(State::Master, WAIT)
        .expect("keepalived, deaf to xlb, is master too");
    bed.wait_vrrp(
        XLB,
        &format!("3 of keepalived's adverts rejected for {reason}"),
        WAIT,
        |vrrp| {
            vrrp["adverts_rejected"].as_array().is_some_and(|counters| {
                counters
                    .iter()
                    .any(|c| c["name"] == reason && c["value"].as_u64() >= Some(3))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}; keepalived:\n{}", keepalived.log_text()));
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
        vec![reason],
        "rejected for {reason} only"
    );
}

#[test]
fn v2_a_wrong_password_on_keepalived_is_rejected_and_changes_no_election() {
    let config = Wire::V2
        .keepalived(200)
        .initial_state(State::Master)
        .auth_pass("wrong");
    refused_adverts_change_no_election(Wire::V2, &config, "auth");
}

#[test]
fn v3_another_vrid_on_keepalived_is_rejected_and_changes_no_election() {
    let config = Wire::V3
        .keepalived(200)
        .initial_state(State::Master)
        .vrid(VRID + 1);
    refused_adverts_change_no_election(Wire::V3, &config, "vrid");
}

#[test]
fn keepalived_on_v3_is_rejected_by_xlb_on_v2_and_changes_no_election() {
    // Not the other way round: a keepalived 2.2.7 master on version 2 stops
    // advertising while version 3 adverts arrive every 100 ms (it logs
    // "wrong version" for each), so xlb would see next to nothing of it.
    let config = Wire::V3.keepalived(200).initial_state(State::Master);
    refused_adverts_change_no_election(Wire::V2, &config, "version");
}
