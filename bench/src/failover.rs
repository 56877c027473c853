//! Failover: how long new connections through the floating IP fail when the
//! master fails (kill -9 of its daemons, the death of its host: both cables
//! cut at the switch, no FIN, no advert; a clean stop), and what the
//! primary's return (restart, or the cables put back: the heal) costs new
//! and established connections; for an xlb pair and for the reference stack
//! (keepalived + HAProxy on each node), with VRRP version 3 at 20 ms and
//! 100 ms adverts and version 2 at 1 s. And the soak: an xlb pair at 20 ms
//! adverts for minutes with every core busy, counting spurious takeovers.
//!
//! Timed from the client's side: a probe in the client namespace opens a new
//! connection to the VIP every [`PROBE_PACE`], each on a thread of its own,
//! and sends a request, with short time-outs (a lost SYN costs one attempt,
//! not the kernel's one-second retransmission, and holds no other back).

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{SocketAddrV4, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use lb_tests::{
    http,
    keepalived::{self, Keepalived},
    probe::{self, outage, Attempt, ConnectionProbe, Outage},
    testbed::{base_services_checked, Testbed, CLIENT_ADDRS, FRONTEND_PORT, NODE_PRIVATE, VIP},
};

use super::{haproxy::Haproxy, report::Table, Spread};

/// The health checks of the frontends, the same for xlb and HAProxy: quick
/// enough that a host dead for a few seconds comes back with its backends
/// marked down (the heal's hard case) within a short trial.
const CHECK_INTER: Duration = Duration::from_millis(500);
const CHECK_RISE: u32 = 2;
const CHECK_FALL: u32 = 2;
/// xlb's election thread priority (vrrp.realtime_priority), and keepalived's
/// (vrrp_rt_priority): both systems at the same one.
pub const REALTIME_PRIORITY: u8 = 10;

/// Trials per system and fault (the issue asks for at least 20).
pub const TRIALS: usize = 20;
/// Keep-alive connections open through the secondary when the primary returns.
pub const ESTABLISHED: usize = 10;
/// The probe opens a new connection this often.
pub const PROBE_PACE: Duration = Duration::from_millis(5);
/// Probing before each fault, so that the trial starts from a served VIP.
const BASELINE: Duration = Duration::from_millis(200);
/// Probing after the pair is back in shape, so that the probe sees it.
const AFTER_RETURN: Duration = Duration::from_millis(100);
/// Bound on every wait for a state: far above any takeover measured.
const WAIT: Duration = Duration::from_secs(20);
const PRIMARY: usize = 0;
const SECONDARY: usize = 1;
/// The reference's priorities (keepalived-primary.conf, -secondary.conf).
pub const PRIORITIES: [u8; 2] = [255, 254];
/// The VRRP password of the version 2 runs (auth_type PASS, as the reference).
const PASSWORD: &str = "bench";
/// The soak's new connection through the VIP this often.
const SOAK_PROBE_PACE: Duration = Duration::from_millis(100);

/// Which daemons elect the master and serve the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// xlb on both nodes (VRRP, the floating IP and the data plane).
    Xlb,
    /// keepalived and HAProxy on both nodes, as the reference.
    Reference,
}

impl Stack {
    const fn label(self) -> &'static str {
        match self {
            Self::Xlb => "xlb",
            Self::Reference => "keepalived + HAProxy",
        }
    }
}

/// The advertisement settings both nodes share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adverts {
    pub version: u8,
    pub interval: Duration,
}

impl Adverts {
    fn label(self) -> String {
        let interval = if self.interval < Duration::from_secs(1) {
            format!("{} ms", self.interval.as_millis())
        } else {
            format!("{} s", self.interval.as_secs())
        };
        format!("v{}, {interval}", self.version)
    }
}

/// Short adverts: a dead host is noticed after about 60 ms.
pub const FAST: Adverts = Adverts {
    version: 3,
    interval: Duration::from_millis(20),
};
/// xlb's default.
const DEFAULT_TIMING: Adverts = Adverts {
    version: 3,
    interval: Duration::from_millis(100),
};
const REFERENCE_TIMING: Adverts = Adverts {
    version: 2,
    interval: Duration::from_secs(1),
};

/// The systems compared, in the order they run and are reported.
pub const SYSTEMS: [(Stack, Adverts); 6] = [
    (Stack::Xlb, FAST),
    (Stack::Reference, FAST),
    (Stack::Xlb, DEFAULT_TIMING),
    (Stack::Reference, DEFAULT_TIMING),
    (Stack::Xlb, REFERENCE_TIMING),
    (Stack::Reference, REFERENCE_TIMING),
];

/// The systems this run measures: both stacks at 20 ms adverts, and with
/// `XLB_BENCH_FAILOVER_ALL=1` at 100 ms and 1 s as well (about 10 minutes
/// per system on this machine).
fn systems_to_measure() -> Vec<(Stack, Adverts)> {
    let all = std::env::var("XLB_BENCH_FAILOVER_ALL").is_ok_and(|v| v == "1");
    SYSTEMS
        .into_iter()
        .filter(|(_, adverts)| all || *adverts == FAST)
        .collect()
}

/// What happens to the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of its daemon(s).
    Kill,
    /// Both of its cables cut at the switch: to the others, the host is
    /// dead (no FIN, no advert). It comes back with the cables, the VRRP
    /// (private) side first: the heal.
    HostDeath,
    /// SIGTERM, as `systemctl stop`.
    Stop,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::Kill, Fault::HostDeath, Fault::Stop];

    fn label(self, stack: Stack) -> &'static str {
        match (self, stack) {
            (Fault::Kill, Stack::Xlb) => "kill -9 of xlb",
            (Fault::Kill, Stack::Reference) => "kill -9 of keepalived and HAProxy",
            (Fault::HostDeath, _) => "host death (both cables cut)",
            (Fault::Stop, Stack::Xlb) => "clean stop (SIGTERM)",
            (Fault::Stop, Stack::Reference) => "clean stop (SIGTERM to keepalived)",
        }
    }

    /// How the primary comes back afterwards.
    const fn return_label(self) -> &'static str {
        match self {
            Fault::Kill | Fault::Stop => "restarted (after kill -9 or stop)",
            Fault::HostDeath => "healed (cables back, VRRP side first)",
        }
    }
}

/// One fault and the primary's return.
pub struct Trial {
    pub fault: Fault,
    /// None: no new connection succeeded after the fault.
    pub takeover: Option<Outage>,
    /// How the secondary learned that it had to take over.
    pub mechanism: String,
    /// The longest wait between successful new connections from the
    /// primary's return until the pair was back in shape.
    pub return_gap: Duration,
    pub return_failed_attempts: usize,
    /// Established keep-alive connections through the secondary that failed
    /// their next request after the primary took the VIP back.
    pub established_failed: usize,
    pub established_opened: usize,
    /// How those requests failed ("reset", "timed out", ...), by count.
    pub established_errors: BTreeMap<String, usize>,
}

pub struct SystemResults {
    pub stack: Stack,
    pub adverts: Adverts,
    pub trials: Vec<Trial>,
}

pub struct Results {
    pub systems: Vec<SystemResults>,
}

/// The daemons of one stack on the two nodes of a testbed pair.
trait Pair {
    /// Starts node `node`'s daemons.
    fn start(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()>;
    /// kill -9 of node `node`'s daemons, all at once; returns once they are gone.
    fn kill(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()>;
    /// A clean stop of node `node`'s daemons; returns once they exited.
    fn stop(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()>;
    /// Node `node`'s VRRP state ("MASTER", "BACKUP", "FAULT"), if known.
    fn state(&self, bed: &Testbed, node: usize) -> Option<String>;
    /// Whatever else the pair needs to be fully formed, beyond the states.
    fn formed(&self, bed: &Testbed) -> bool;
    /// A mark in node `node`'s history, for [`Pair::takeover_mechanism`].
    fn mark(&self, bed: &Testbed, node: usize) -> usize;
    /// How node `node` learned to take over, since `mark`.
    fn takeover_mechanism(&self, bed: &Testbed, node: usize, mark: usize) -> String;
}

/// Two xlb nodes.
struct XlbPair {
    configs: [String; 2],
}

/// Node `node`'s xlb config for a pair at `adverts`: the testbed's services,
/// the frontends checked as the bench's HAProxy checks them, the election at
/// [`REALTIME_PRIORITY`]. Version 2 writes its password file in the bed.
pub fn xlb_node_config(bed: &Testbed, node: usize, adverts: Adverts) -> anyhow::Result<String> {
    let extra = if adverts.version == 2 {
        let pass_file = bed.dir.join("vrrp-pass");
        std::fs::write(&pass_file, PASSWORD).context("write the VRRP password file")?;
        format!(
            "version = 2\nadvert_interval = \"{}s\"\nauth_pass_file = \"{}\"",
            adverts.interval.as_secs(),
            pass_file.display()
        )
    } else {
        format!(
            "version = 3\nadvert_interval = \"{}ms\"",
            adverts.interval.as_millis()
        )
    };
    let extra = format!("{extra}\nrealtime_priority = {REALTIME_PRIORITY}");
    let check = format!(
        "{{ type = \"tcp\", inter = \"{}ms\", rise = {CHECK_RISE}, fall = {CHECK_FALL} }}",
        CHECK_INTER.as_millis()
    );
    Ok(format!(
        "{}\n{}",
        base_services_checked(&[FRONTEND_PORT], &check),
        bed.vrrp_section(node, PRIORITIES[node], &extra)
    ))
}

impl XlbPair {
    fn new(bed: &Testbed, adverts: Adverts) -> anyhow::Result<Self> {
        Ok(Self {
            configs: [
                xlb_node_config(bed, PRIMARY, adverts)?,
                xlb_node_config(bed, SECONDARY, adverts)?,
            ],
        })
    }

    fn take_daemon(bed: &mut Testbed, node: usize) -> anyhow::Result<lb_tests::daemon::Daemon> {
        bed.take_node_daemon(node)
            .with_context(|| format!("xlb does not run on node {node}"))
    }
}

impl Pair for XlbPair {
    fn start(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        bed.start_node(node, &self.configs[node])
            .with_context(|| format!("start xlb on node {node}"))
            .map(drop)
    }

    fn kill(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        Self::take_daemon(bed, node)?.stop_with(libc::SIGKILL, WAIT)?;
        Ok(())
    }

    fn stop(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        let status = Self::take_daemon(bed, node)?.stop_with(libc::SIGTERM, WAIT)?;
        anyhow::ensure!(status.success(), "xlb on node {node} exited with {status}");
        Ok(())
    }

    fn state(&self, bed: &Testbed, node: usize) -> Option<String> {
        bed.vrrp_state(node)
    }

    /// Both peer links up, and the secondary following the primary: a
    /// restarted node's peer reconnects within a second (its retries back
    /// off to 1 s), and a backup acts on the link's close only for the
    /// master it has heard adverts from; until then a crash is noticed by
    /// the advert timers alone. A pair in service has had the time.
    fn formed(&self, bed: &Testbed) -> bool {
        let statuses: Vec<serde_json::Value> = (0..2)
            .filter_map(|node| bed.node_status(node).ok().map(|s| s["vrrp"].clone()))
            .collect();
        statuses.len() == 2
            && statuses.iter().all(|vrrp| {
                vrrp["peer_links"]
                    .as_array()
                    .is_some_and(|links| !links.is_empty() && links.iter().all(|l| l["up"] == true))
            })
            && statuses[SECONDARY]["current_master"] == NODE_PRIVATE[PRIMARY].to_string()
    }

    fn mark(&self, bed: &Testbed, node: usize) -> usize {
        bed.node_status(node)
            .ok()
            .and_then(|s| s["vrrp"]["transitions_total"].as_u64())
            .map_or(0, |n| n as usize)
    }

    fn takeover_mechanism(&self, bed: &Testbed, node: usize, _mark: usize) -> String {
        let Ok(status) = bed.node_status(node) else {
            return "unknown (no status)".to_owned();
        };
        let reason = status["vrrp"]["transitions"]
            .as_array()
            .and_then(|t| t.iter().rev().find(|t| t["to"] == "MASTER"))
            .and_then(|t| t["reason"].as_str())
            .unwrap_or("unknown");
        if reason.contains("peer link") {
            "peer link closed".to_owned()
        } else if reason.contains("priority 0") {
            "priority 0 advert".to_owned()
        } else if reason.contains("Master_Down_Timer") {
            "adverts stopped (Master_Down_Timer)".to_owned()
        } else {
            reason.to_owned()
        }
    }
}

/// keepalived and HAProxy on both nodes, configured like the reference.
struct ReferencePair {
    adverts: Adverts,
    // Fields drop in order: keepalived first, so that no HAProxy track
    // fails while it still runs.
    keepalived: [Option<Keepalived>; 2],
    haproxy: [Option<Haproxy>; 2],
}

impl ReferencePair {
    fn new(bed: &Testbed, adverts: Adverts) -> anyhow::Result<Self> {
        // HAProxy binds the VIP, which only the master has.
        for node in bed.nodes() {
            node.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
        }
        Ok(Self {
            adverts,
            keepalived: [None, None],
            haproxy: [None, None],
        })
    }

    fn config(&self, node: usize, haproxy_pid: u32) -> keepalived::Config {
        let initial = if node == PRIMARY {
            keepalived::State::Master
        } else {
            keepalived::State::Backup
        };
        // The reference tracks `pidof haproxy` every 2 s; the testbed's
        // namespaces share one PID namespace, where pidof would also see the
        // other node's HAProxy, so the track names this node's.
        let config = keepalived::Config::node(node, PRIORITIES[node])
            .initial_state(initial)
            .realtime_priority(REALTIME_PRIORITY)
            .track_script("check_haproxy", &format!("/bin/kill -0 {haproxy_pid}"), 2);
        if self.adverts.version == 3 {
            config.version3(self.adverts.interval)
        } else {
            config.auth_pass(PASSWORD)
        }
    }
}

impl Pair for ReferencePair {
    fn start(&mut self, bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        let checks = format!(
            " check inter {} rise {CHECK_RISE} fall {CHECK_FALL}",
            CHECK_INTER.as_millis()
        );
        let haproxy = Haproxy::start_with(
            bed.node(node),
            &bed.dir,
            &format!("haproxy-{node}"),
            &super::haproxy::config_with_checks(&checks),
        )?;
        let config = self.config(node, haproxy.pid());
        self.haproxy[node] = Some(haproxy);
        self.keepalived[node] = Some(Keepalived::start(
            bed.node(node),
            &bed.dir,
            &format!("keepalived-{node}"),
            &config,
        )?);
        Ok(())
    }

    fn kill(&mut self, _bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        let keepalived = self.keepalived[node]
            .take()
            .with_context(|| format!("keepalived does not run on node {node}"))?;
        // Dropping HAProxy kills it with SIGKILL.
        let haproxy = self.haproxy[node].take();
        keepalived.kill()?;
        drop(haproxy);
        Ok(())
    }

    fn stop(&mut self, _bed: &mut Testbed, node: usize) -> anyhow::Result<()> {
        let keepalived = self.keepalived[node]
            .take()
            .with_context(|| format!("keepalived does not run on node {node}"))?;
        keepalived.stop(WAIT)?;
        // Once the VIP has moved: HAProxy serves nothing here any more.
        self.haproxy[node] = None;
        Ok(())
    }

    fn state(&self, _bed: &Testbed, node: usize) -> Option<String> {
        self.keepalived[node]
            .as_ref()?
            .state()
            .map(|s| s.name().to_owned())
    }

    fn formed(&self, _bed: &Testbed) -> bool {
        true
    }

    fn mark(&self, _bed: &Testbed, node: usize) -> usize {
        self.keepalived[node].as_ref().map_or(0, |k| k.log_lines().len())
    }

    fn takeover_mechanism(&self, _bed: &Testbed, node: usize, mark: usize) -> String {
        let Some(keepalived) = self.keepalived[node].as_ref() else {
            return "unknown (not running)".to_owned();
        };
        let lines = keepalived.log_lines();
        let since = lines.get(mark..).unwrap_or_default();
        if since.iter().any(|l| l.contains("received priority 0")) {
            "priority 0 advert".to_owned()
        } else if since.iter().any(|l| l.contains("Receive advertisement timeout")) {
            "adverts stopped (master down timer)".to_owned()
        } else {
            "unknown".to_owned()
        }
    }
}

/// The primary's two switch ports (private, public) set `state`.
fn cables(bed: &Testbed, state: &str) -> anyhow::Result<()> {
    for port in ["lb", "lb1pub"] {
        bed.switch.ip(&["link", "set", port, state])?;
    }
    Ok(())
}

fn target() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, FRONTEND_PORT)
}

/// One new connection through the VIP, as the probe makes them.
fn vip_answers(bed: &Testbed) -> bool {
    bed.client.run(|| probe::attempt(target())).unwrap_or(false)
}

/// Waits (bounded) until `condition` holds.
/// Ctrl-C ends the wait early, as an error.
pub fn wait_until(what: &str, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    lb_tests::wait::until(what, WAIT, || super::interrupted() || condition())?;
    super::check_interrupted()
}

/// Waits until the pair is as it should be: the primary master with the
/// VIP, the secondary backup without, the client sending the VIP's traffic
/// to the primary, and a new connection through the VIP succeeding.
fn wait_steady(bed: &Testbed, pair: &dyn Pair) -> anyhow::Result<()> {
    let primary_mac = bed.node_public_mac(PRIMARY)?;
    wait_until("the primary master with the VIP, the secondary backup", || {
        pair.state(bed, PRIMARY).as_deref() == Some("MASTER")
            && pair.state(bed, SECONDARY).as_deref() == Some("BACKUP")
            && bed.has_vip(PRIMARY).unwrap_or(false)
            && !bed.has_vip(SECONDARY).unwrap_or(true)
    })?;
    wait_until("the client reaching the VIP at the primary", || {
        vip_answers(bed) && bed.client_vip_mac().ok().flatten().as_deref() == Some(primary_mac.as_str())
    })?;
    wait_until("the pair fully formed", || pair.formed(bed))
}

/// Measures every system; each on a testbed of its own.
pub fn measure() -> anyhow::Result<Results> {
    let mut systems = Vec::new();
    let mut jitter = Jitter::seeded();
    for (stack, adverts) in systems_to_measure() {
        super::check_interrupted()?;
        systems.push(
            measure_system(stack, adverts, &mut jitter)
                .with_context(|| format!("failover of {} ({})", stack.label(), adverts.label()))?,
        );
    }
    Ok(Results { systems })
}

fn measure_system(stack: Stack, adverts: Adverts, jitter: &mut Jitter) -> anyhow::Result<SystemResults> {
    let mut bed = Testbed::pair(&lb_tests::unique_tag("xv")).context("build the testbed pair")?;
    // Declared after the testbed: its daemons stop before the namespaces go.
    let mut pair: Box<dyn Pair> = match stack {
        Stack::Xlb => Box::new(XlbPair::new(&bed, adverts)?),
        Stack::Reference => Box::new(ReferencePair::new(&bed, adverts)?),
    };
    pair.start(&mut bed, PRIMARY)?;
    wait_until("the primary is master", || {
        pair.state(&bed, PRIMARY).as_deref() == Some("MASTER")
    })?;
    pair.start(&mut bed, SECONDARY)?;
    wait_steady(&bed, pair.as_ref()).context("the pair settles after start-up")?;
    let started = Instant::now();
    let mut trials = Vec::new();
    for round in 1..=TRIALS {
        for fault in Fault::ALL {
            super::check_interrupted()?;
            let t = trial(&mut bed, pair.as_mut(), adverts, fault, jitter)
                .with_context(|| format!("{}, trial {round}", fault.label(stack)))?;
            eprintln!(
                "xtask bench: failover, {} ({}), {round}/{TRIALS}, {}: new connections back after {}, via {}; \
                 return gap {}, {}/{} established connections failed",
                stack.label(),
                adverts.label(),
                fault.label(stack),
                t.takeover
                    .map_or_else(|| "never".to_owned(), |o| duration(o.to_first_success)),
                t.mechanism,
                duration(t.return_gap),
                t.established_failed,
                t.established_opened,
            );
            trials.push(t);
        }
    }
    eprintln!(
        "xtask bench: failover, {} ({}): {} trials in {:.0} s",
        stack.label(),
        adverts.label(),
        trials.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(SystemResults {
        stack,
        adverts,
        trials,
    })
}

fn trial(
    bed: &mut Testbed,
    pair: &mut dyn Pair,
    adverts: Adverts,
    fault: Fault,
    jitter: &mut Jitter,
) -> anyhow::Result<Trial> {
    // A fault lands anywhere between two adverts.
    std::thread::sleep(jitter.below(adverts.interval));
    let probe = ConnectionProbe::start_overlapping(&bed.client, target(), PROBE_PACE)?;
    std::thread::sleep(BASELINE);
    let mark = pair.mark(bed, SECONDARY);
    // The fault's instant: a killed master still serves until its processes
    // are gone, and a link until `ip` has set it down (a new connection
    // started in between succeeds, and would be taken for the secondary's);
    // a clean stop is the failover itself, from the signal on.
    let fault_at = match fault {
        Fault::Kill => {
            pair.kill(bed, PRIMARY)?;
            Instant::now()
        }
        Fault::HostDeath => {
            cables(bed, "down")?;
            Instant::now()
        }
        Fault::Stop => {
            let signalled = Instant::now();
            pair.stop(bed, PRIMARY)?;
            signalled
        }
    };
    wait_until("the secondary takes over", || {
        pair.state(bed, SECONDARY).as_deref() == Some("MASTER")
    })?;
    wait_until("the VIP answers through the secondary", || vip_answers(bed))?;
    let mechanism = pair.takeover_mechanism(bed, SECONDARY, mark);
    let established = open_established(bed)?;

    let return_at = Instant::now();
    match fault {
        Fault::Kill | Fault::Stop => pair.start(bed, PRIMARY)?,
        Fault::HostDeath => {
            // Long enough for the dead host's checks to take its backends
            // down: it comes back with stale pools.
            std::thread::sleep(CHECK_INTER * (CHECK_FALL + 2));
            bed.switch.ip(&["link", "set", "lb", "up"])?;
            std::thread::sleep(Duration::from_millis(100));
            bed.switch.ip(&["link", "set", "lb1pub", "up"])?;
        }
    }
    wait_steady(bed, pair).context("the primary takes the VIP back")?;
    std::thread::sleep(AFTER_RETURN);
    let attempts = probe.stop()?;
    let (established_failed, established_errors) = next_requests_fail(established);
    let (return_gap, return_failed_attempts) = longest_gap(&attempts, return_at);
    Ok(Trial {
        fault,
        takeover: outage(&attempts, fault_at),
        mechanism,
        return_gap,
        return_failed_attempts,
        established_failed,
        established_opened: ESTABLISHED,
        established_errors,
    })
}

/// Keep-alive connections through the VIP, each past its first request.
fn open_established(bed: &Testbed) -> anyhow::Result<Vec<TcpStream>> {
    (0..ESTABLISHED)
        .map(|i| {
            let mut stream = bed
                .connect((CLIENT_ADDRS[1], 0), (VIP, FRONTEND_PORT))
                .with_context(|| format!("established connection {i}"))?;
            http::get(&mut stream).with_context(|| format!("first request on established connection {i}"))?;
            Ok(stream)
        })
        .collect()
}

/// Sends the next request on every connection, all at once; returns how
/// many failed, and how.
fn next_requests_fail(streams: Vec<TcpStream>) -> (usize, BTreeMap<String, usize>) {
    let outcomes: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .map(|mut stream| scope.spawn(move || http::get(&mut stream).map_err(|e| failure_kind(&e))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".to_owned())))
            .collect()
    });
    let mut errors = BTreeMap::new();
    for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        *errors.entry(error.clone()).or_default() += 1;
    }
    (errors.values().sum(), errors)
}

fn failure_kind(error: &anyhow::Error) -> String {
    match error.downcast_ref::<std::io::Error>().map(std::io::Error::kind) {
        Some(ErrorKind::ConnectionReset) => "reset".to_owned(),
        Some(ErrorKind::WouldBlock | ErrorKind::TimedOut) => "timed out".to_owned(),
        Some(ErrorKind::BrokenPipe) => "broken pipe".to_owned(),
        // http::get read nothing at all: the peer closed the connection.
        _ if error.to_string() == "unexpected status line \"\"" => "closed".to_owned(),
        _ => error.to_string(),
    }
}

/// The longest wait between successful attempts from `from` on (counting
/// from the last success before it), and the attempts that failed.
fn longest_gap(attempts: &[Attempt], from: Instant) -> (Duration, usize) {
    let mut previous = attempts
        .iter()
        .filter(|a| a.ok && a.finished <= from)
        .map(|a| a.finished)
        .max()
        .unwrap_or(from);
    let mut longest = Duration::ZERO;
    for attempt in attempts.iter().filter(|a| a.ok && a.finished > from) {
        longest = longest.max(attempt.finished.saturating_duration_since(previous));
        previous = attempt.finished;
    }
    let failed = attempts.iter().filter(|a| !a.ok && a.started >= from).count();
    (longest, failed)
}

/// A small xorshift generator: random phases for the faults.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| u64::from(d.subsec_nanos()));
        Self(nanos | 1)
    }

    /// A duration drawn evenly from [0, `max`).
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

// ---- the soak ---------------------------------------------------------------

/// One node's view of the soak.
pub struct SoakNode {
    pub role: &'static str,
    pub state: String,
    /// Transitions during the soak, with their reasons.
    pub transitions: Vec<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub adverts_rejected: u64,
}

pub struct Soak {
    pub duration: Duration,
    pub busy_threads: usize,
    pub cpus: usize,
    /// Share of all CPU time not idle during the soak, percent.
    pub cpu_busy_percent: f64,
    pub nodes: Vec<SoakNode>,
    pub probe_attempts: usize,
    pub probe_failures: usize,
}

/// Threads that spin until dropped.
struct BusyLoops {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyLoops {
    fn start(count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
pub fn cpu_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    anyhow::ensure!(fields.len() >= 5, "short cpu line in /proc/stat");
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    Ok((total - idle, total))
}

/// An xlb pair at the default adverts for `duration`, with twice as many
/// busy threads as CPUs at normal priority.
pub fn soak(duration: Duration) -> anyhow::Result<Soak> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let busy_threads = 2 * cpus;
    let mut bed = Testbed::pair(&lb_tests::unique_tag("xs")).context("build the testbed pair")?;
    let mut pair = XlbPair::new(&bed, FAST)?;
    pair.start(&mut bed, PRIMARY)?;
    wait_until("the primary is master", || {
        pair.state(&bed, PRIMARY).as_deref() == Some("MASTER")
    })?;
    pair.start(&mut bed, SECONDARY)?;
    wait_steady(&bed, &pair).context("the pair settles after start-up")?;
    let before: Vec<serde_json::Value> = (0..2)
        .map(|node| bed.node_status(node).map(|s| s["vrrp"].clone()))
        .collect::<anyhow::Result<_>>()?;

    eprintln!(
        "xtask bench: soak, {busy_threads} busy threads on {cpus} CPUs for {} s",
        duration.as_secs()
    );
    let probe = ConnectionProbe::start(&bed.client, target(), SOAK_PROBE_PACE)?;
    let busy = BusyLoops::start(busy_threads);
    let cpu_before = cpu_jiffies()?;
    let started = Instant::now();
    let mut next_report = Duration::from_secs(60);
    while started.elapsed() < duration {
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(250));
        if started.elapsed() >= next_report {
            let during: Vec<String> = before
                .iter()
                .enumerate()
                .map(|(node, before)| {
                    let now = bed
                        .node_status(node)
                        .ok()
                        .and_then(|s| s["vrrp"]["transitions_total"].as_u64());
                    let then = before["transitions_total"].as_u64();
                    now.zip(then)
                        .map_or_else(|| "?".to_owned(), |(now, then)| (now - then).to_string())
                })
                .collect();
            eprintln!(
                "  {} s: transitions during the soak: primary {}, secondary {}",
                next_report.as_secs(),
                during[PRIMARY],
                during[SECONDARY]
            );
            next_report += Duration::from_secs(60);
        }
    }
    let cpu_after = cpu_jiffies()?;
    let elapsed = started.elapsed();
    drop(busy);
    let attempts = probe.stop()?;

    let mut nodes = Vec::new();
    for (node, before) in before.iter().enumerate() {
        let after = bed.node_status(node)?["vrrp"].clone();
        let count = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
        let new = count(&after, "transitions_total").saturating_sub(count(before, "transitions_total"));
        let history = after["transitions"].as_array().cloned().unwrap_or_default();
        let transitions = history
            .iter()
            .rev()
            .take(new as usize)
            .rev()
            .map(|t| {
                format!(
                    "{} -> {} ({})",
                    t["from"].as_str().unwrap_or("?"),
                    t["to"].as_str().unwrap_or("?"),
                    t["reason"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let rejected = |v: &serde_json::Value| -> u64 {
            v["adverts_rejected"]
                .as_array()
                .map_or(0, |a| a.iter().filter_map(|c| c["value"].as_u64()).sum())
        };
        nodes.push(SoakNode {
            role: if node == PRIMARY { "primary" } else { "secondary" },
            state: after["state"].as_str().unwrap_or("?").to_owned(),
            transitions,
            adverts_sent: count(&after, "adverts_sent_total") - count(before, "adverts_sent_total"),
            adverts_received: count(&after, "adverts_received_total")
                - count(before, "adverts_received_total"),
            adverts_rejected: rejected(&after) - rejected(before),
        });
    }
    let (busy_jiffies, total_jiffies) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    Ok(Soak {
        duration: elapsed,
        busy_threads,
        cpus,
        cpu_busy_percent: 100.0 * busy_jiffies as f64 / total_jiffies.max(1) as f64,
        nodes,
        probe_attempts: attempts.len(),
        probe_failures: attempts.iter().filter(|a| !a.ok).count(),
    })
}

// ---- the report ---------------------------------------------------------------

fn duration(d: Duration) -> String {
    seconds(d.as_secs_f64())
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn spread(values: Vec<f64>) -> Option<Spread> {
    (!values.is_empty()).then(|| Spread::of(values))
}

fn cells(spread: Option<Spread>) -> [String; 2] {
    spread.map_or_else(
        || ["-".to_owned(), "-".to_owned()],
        |s| [seconds(s.median), seconds(s.max)],
    )
}

/// "peer link closed (20)", most frequent first.
fn tally<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
        .iter()
        .map(|(item, n)| format!("{item} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// xlb's p50 against keepalived's, for one fault and interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ahead,
    /// Within the probe's resolution of each other.
    Level,
    Behind,
}

impl Verdict {
    fn of(xlb: f64, reference: f64) -> Self {
        // Two paces apart: closer than that, the probe cannot tell them apart.
        let resolution = 2.0 * PROBE_PACE.as_secs_f64();
        if xlb + resolution < reference {
            Self::Ahead
        } else if reference + resolution < xlb {
            Self::Behind
        } else {
            Self::Level
        }
    }

    const fn word(self) -> &'static str {
        match self {
            Self::Ahead => "ahead",
            Self::Level => "level",
            Self::Behind => "behind",
        }
    }
}

impl SystemResults {
    fn of(&self, fault: Fault) -> impl Iterator<Item = &Trial> {
        self.trials.iter().filter(move |t| t.fault == fault)
    }

    /// p50 and max of the time to the first new connection after `fault`.
    fn takeover(&self, fault: Fault) -> Option<Spread> {
        spread(
            self.of(fault)
                .filter_map(|t| t.takeover)
                .map(|o| o.to_first_success.as_secs_f64())
                .collect(),
        )
    }

    fn label(&self) -> String {
        format!("{} ({})", self.stack.label(), self.adverts.label())
    }
}

impl Results {
    fn system(&self, stack: Stack, adverts: Adverts) -> Option<&SystemResults> {
        self.systems
            .iter()
            .find(|s| s.stack == stack && s.adverts == adverts)
    }
}

pub fn section(r: &Results) -> String {
    let mut takeover = Table::new(&[
        ("System", false),
        ("Fault on the master", false),
        ("Trials", true),
        ("New connections back: p50", true),
        ("max", true),
        ("Gap: p50", true),
        ("max", true),
        ("Failed new connections: median", true),
        ("The secondary learned by", false),
    ]);
    let mut returns = Table::new(&[
        ("System", false),
        ("Primary", false),
        ("Trials", true),
        ("Longest gap: p50", true),
        ("max", true),
        ("Failed new connections: median", true),
        ("max", true),
        ("Established reset", true),
        ("How they failed", false),
    ]);
    let mut unserved = Vec::new();
    for system in &r.systems {
        for fault in Fault::ALL {
            let trials: Vec<&Trial> = system.of(fault).collect();
            let outages: Vec<Outage> = trials.iter().filter_map(|t| t.takeover).collect();
            if outages.len() < trials.len() {
                unserved.push(format!(
                    "{}, {}: {} trials without a new connection after the fault",
                    system.label(),
                    fault.label(system.stack),
                    trials.len() - outages.len()
                ));
            }
            let [first_p50, first_max] = cells(system.takeover(fault));
            let [gap_p50, gap_max] = cells(spread(outages.iter().map(|o| o.gap.as_secs_f64()).collect()));
            let failed = spread(outages.iter().map(|o| o.failed_attempts as f64).collect());
            takeover.row(vec![
                system.label(),
                fault.label(system.stack).to_owned(),
                trials.len().to_string(),
                first_p50,
                first_max,
                gap_p50,
                gap_max,
                failed.map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.median)),
                tally(trials.iter().map(|t| t.mechanism.as_str())),
            ]);
        }
        for (label, faults) in [
            (Fault::Kill.return_label(), [Fault::Kill, Fault::Stop].as_slice()),
            (Fault::HostDeath.return_label(), [Fault::HostDeath].as_slice()),
        ] {
            let trials: Vec<&Trial> = system
                .trials
                .iter()
                .filter(|t| faults.contains(&t.fault))
                .collect();
            let [gap_p50, gap_max] = cells(spread(
                trials.iter().map(|t| t.return_gap.as_secs_f64()).collect(),
            ));
            let failed = spread(trials.iter().map(|t| t.return_failed_attempts as f64).collect());
            let reset: usize = trials.iter().map(|t| t.established_failed).sum();
            let opened: usize = trials.iter().map(|t| t.established_opened).sum();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for t in &trials {
                for (kind, n) in &t.established_errors {
                    *kinds.entry(kind.as_str()).or_default() += n;
                }
            }
            returns.row(vec![
                system.label(),
                label.to_owned(),
                trials.len().to_string(),
                gap_p50,
                gap_max,
                failed.map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.median)),
                failed.map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.max)),
                format!("{reset} of {opened}"),
                if kinds.is_empty() {
                    "-".to_owned()
                } else {
                    kinds
                        .iter()
                        .map(|(k, n)| format!("{k} ({n})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]);
        }
    }
    let p50 = |stack, adverts, fault| {
        r.system(stack, adverts)
            .and_then(|s| s.takeover(fault))
            .map(|s| s.median)
    };
    let goal = |value: Option<f64>, limit: f64| match value {
        Some(v) => format!("{} ({})", seconds(v), if v < limit { "met" } else { "not met" }),
        None => "not measured".to_owned(),
    };
    let mut comparisons = Vec::new();
    let mut verdicts = Vec::new();
    for adverts in [FAST, DEFAULT_TIMING, REFERENCE_TIMING] {
        for fault in Fault::ALL {
            let (Some(xlb), Some(reference)) = (
                p50(Stack::Xlb, adverts, fault),
                p50(Stack::Reference, adverts, fault),
            ) else {
                continue;
            };
            let verdict = Verdict::of(xlb, reference);
            verdicts.push(verdict);
            comparisons.push(format!(
                "{}, {}: {} against {}, {}",
                adverts.label(),
                fault.label(Stack::Xlb).split(" (").next().unwrap_or_default(),
                seconds(xlb),
                seconds(reference),
                verdict.word()
            ));
        }
    }
    let unserved = if unserved.is_empty() {
        String::new()
    } else {
        format!("\n\nUnexpected: {}.", unserved.join("; "))
    };
    format!(
        "## Failover\n\n\
         Two load balancers on the pair testbed (public bridge, private bridge, the two \
         nginx backends), the primary at priority {primary} and the secondary at {secondary} \
         as in the reference, VRRP over the private segment by unicast. Systems: xlb on both \
         nodes (VRRP, the floating IP on eth0 with gratuitous ARP, the data plane; its peer \
         link on), and the reference stack: keepalived (VRRP only) and HAProxy (the \
         reference's haproxy.cfg on the VIP, `ip_nonlocal_bind` on) on both nodes, \
         keepalived configured as the reference (state MASTER/BACKUP, unicast_src_ip and \
         unicast_peer, auth_type PASS in version 2, a track_script on HAProxy every 2 s; \
         `kill -0 PID` of this node's HAProxy instead of `pidof haproxy`, since the \
         testbed's namespaces share one PID namespace). Measured at VRRP {measured} (with \
         `XLB_BENCH_FAILOVER_ALL=1`, each system at version 3 with 20 ms adverts \
         (`vrrp_version 3`, `advert_int 0.02` for keepalived), at 100 ms (xlb's default) \
         and at version 2 with 1 s adverts (the reference's)); both systems' \
         election at real-time priority {rt} (xlb's `realtime_priority`, keepalived's \
         `vrrp_rt_priority`), and both checking the frontends alike (TCP every {inter} ms, \
         rise {rise}, fall {fall}: HAProxy's `check inter {inter} rise {rise} fall {fall}`). \
         keepalived has no `track_interface`: 2.2.7 already tracks the interface its \
         virtual_ipaddress is on.\n\n\
         Each trial: a random wait of up to one advert interval (so that faults land \
         anywhere between adverts), a probe in the client namespace opening a new \
         connection to `{VIP}:{FRONTEND_PORT}` every {pace} ms with a request (connect \
         time-out 100 ms, answer 500 ms), each on a thread of its own so that a SYN lost \
         to a dead node holds no later attempt back, then the fault on the master: kill -9 of its \
         daemons (keepalived's parent and VRRP child at once, and HAProxy: a crash, not \
         keepalived's own clean exit when only its parent dies), the death of its host (both \
         its cables cut at the switch: the switch's two ports to it set down, so no FIN \
         and no advert leave it), or SIGTERM (keepalived, then HAProxy once keepalived \
         exited). *New connections back*: from the fault to the end of the first \
         successful new connection started after it, the fault being the moment the \
         killed processes were reaped, the ports were down, or the signal of a clean stop \
         was sent; \
         *gap*: from the last success before the fault to that one. Then \
         {established} keep-alive connections through the secondary, and the primary \
         returns (restarted, or, after {dead} s dead, long enough for its checks to mark \
         every backend down, its cables put back, the VRRP side first: the heal) and takes \
         the VIP back; *longest gap*: \
         the longest wait between successful new connections from the return until the \
         client reaches the VIP at the primary again; *established reset*: those \
         connections whose next request failed afterwards. {trials} trials per fault and \
         system, the faults interleaved.\n\n\
         {takeover}\n\
         {returns}\n\
         The established connections: HAProxy on the two nodes shares no connection \
         state, so once the VIP is back, the primary's kernel answers the segments of \
         every connection the secondary's HAProxy held with a reset; an xlb node hands the \
         segments of connections it does not know to its peer (whose MAC the peer link \
         told it), which still tracks them.\n\n\
         **kill -9, xlb at 20 ms adverts: p50 {kill}** (goal: under 100 ms). \
         **Host death, xlb at 20 ms adverts: p50 {death}** (goal: under 100 ms). \
         **Heal and preemption, xlb at 20 ms adverts: {heal}** (goal: 0). \
         **xlb ahead of keepalived at every interval measured: {ahead}** ({comparisons}).\
         {unserved}\n",
        primary = PRIORITIES[PRIMARY],
        secondary = PRIORITIES[SECONDARY],
        pace = PROBE_PACE.as_millis(),
        measured = {
            let mut labels: Vec<String> = r.systems.iter().map(|s| s.adverts.label()).collect();
            labels.dedup();
            labels.join(", ")
        },
        rt = REALTIME_PRIORITY,
        inter = CHECK_INTER.as_millis(),
        rise = CHECK_RISE,
        fall = CHECK_FALL,
        dead = (CHECK_INTER * (CHECK_FALL + 2)).as_secs_f64(),
        established = ESTABLISHED,
        trials = TRIALS,
        takeover = takeover.render(),
        returns = returns.render(),
        kill = goal(p50(Stack::Xlb, FAST, Fault::Kill), 0.100),
        death = goal(p50(Stack::Xlb, FAST, Fault::HostDeath), 0.100),
        heal = r
            .system(Stack::Xlb, FAST)
            .map(|s| {
                let failed: usize = s.of(Fault::HostDeath).map(|t| t.return_failed_attempts).sum();
                let returns: usize = s.trials.iter().map(|t| t.return_failed_attempts).sum();
                format!(
                    "{failed} failed new connections at the heals, {returns} at all returns ({})",
                    if returns == 0 { "met" } else { "not met" }
                )
            })
            .unwrap_or_else(|| "not measured".to_owned()),
        ahead = if verdicts.is_empty() {
            "not measured"
        } else if verdicts.iter().all(|v| *v == Verdict::Ahead) {
            "yes"
        } else if verdicts.iter().all(|v| *v != Verdict::Behind) {
            "ahead or level"
        } else {
            "no"
        },
        comparisons = comparisons.join("; "),
    )
}

pub fn soak_section(s: &Soak) -> String {
    let mut table = Table::new(&[
        ("Node", false),
        ("State at the end", false),
        ("Transitions during the soak", true),
        ("Adverts sent", true),
        ("Adverts accepted", true),
        ("Adverts rejected", true),
    ]);
    let mut details = Vec::new();
    for node in &s.nodes {
        table.row(vec![
            node.role.to_owned(),
            node.state.clone(),
            node.transitions.len().to_string(),
            node.adverts_sent.to_string(),
            node.adverts_received.to_string(),
            node.adverts_rejected.to_string(),
        ]);
        for t in &node.transitions {
            details.push(format!("- {}: {t}", node.role));
        }
    }
    let spurious: usize = s.nodes.iter().map(|n| n.transitions.len()).sum();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!("\n\n{}", details.join("\n"))
    };
    format!(
        "## No spurious takeover under CPU load\n\n\
         An xlb pair at version 3 with {interval} ms adverts (Master_Down_Interval about \
         {down} ms), the election at real-time priority {rt} (`realtime_priority`), \
         priorities {primary}/{secondary}, peer link on, on the pair testbed for {minutes:.1} minutes, \
         with {threads} busy-looping threads at normal priority on the machine's {cpus} \
         CPUs (all CPUs {busy:.0}% busy over the soak, from /proc/stat) and a new \
         connection through the VIP every {pace} ms ({failures} of {attempts} failed). \
         Transitions are counted from after start-up; a backup that missed three adverts \
         in a row would have taken over. `cargo xtask bench --only soak`.\n\n\
         {table}\n\
         **Spurious transitions: {spurious}** (goal: none).{details}\n",
        primary = PRIORITIES[PRIMARY],
        secondary = PRIORITIES[SECONDARY],
        interval = FAST.interval.as_millis(),
        down = 3 * FAST.interval.as_millis(),
        rt = REALTIME_PRIORITY,
        minutes = s.duration.as_secs_f64() / 60.0,
        threads = s.busy_threads,
        cpus = s.cpus,
        busy = s.cpu_busy_percent,
        pace = SOAK_PROBE_PACE.as_millis(),
        failures = s.probe_failures,
        attempts = s.probe_attempts,
        table = table.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(base: Instant, start_ms: u64, end_ms: u64, ok: bool) -> Attempt {
        Attempt {
            started: base + Duration::from_millis(start_ms),
            finished: base + Duration::from_millis(end_ms),
            ok,
        }
    }

    #[test]
    fn the_longest_gap_counts_from_the_last_success_before() {
        let t = Instant::now();
        let attempts = [
            attempt(t, 0, 5, true),
            attempt(t, 10, 15, true),
            attempt(t, 20, 120, false),
            attempt(t, 120, 125, true),
            attempt(t, 130, 135, true),
        ];
        let (gap, failed) = longest_gap(&attempts, t + Duration::from_millis(17));
        assert_eq!(gap, Duration::from_millis(110));
        assert_eq!(failed, 1);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut jitter = Jitter::seeded();
        let max = Duration::from_millis(100);
        assert!((0..1000).all(|_| jitter.below(max) < max));
    }

    #[test]
    fn mechanisms_are_tallied_most_frequent_first() {
        assert_eq!(tally(["b", "a", "b"].into_iter()), "b (2), a (1)".to_owned());
    }
}
