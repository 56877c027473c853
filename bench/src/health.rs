//! Health checks: how long a dead backend stays in rotation and how long a
//! returning one stays out, against the windows its `inter`/`fastinter`/
//! `downinter`/`rise`/`fall` allow; and what checking costs the daemon in
//! CPU and memory when nothing else happens.
//!
//! Detection is timed from the client's side: a prober in the client
//! namespace opens a new connection to the frontend every
//! [`PROBE_INTERVAL`] and notes which backend answered, or that the
//! connection was refused (a dead backend still in rotation: its kernel
//! answers the forwarded SYN with a reset). While both backends are in
//! rotation the probes alternate between them, so a change of rotation
//! shows within two probes. Next to it, the time the daemon's log line
//! arrives (it logs after the maps changed).

use std::{
    fs::File,
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use lb_tests::{
    daemon::Daemon,
    http,
    netns::Netns,
    testbed::{base_services, Testbed, API_PORT, FRONTEND_PORT, VIP, WEB_ADDRS, WEB_NAMES},
    wait,
};

use super::{
    process::{cpu_of, memory_of, Cpu, Memory},
    Spread,
};

/// A new connection to the frontend this often.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// A probe that takes longer than this (connect, or the answer) failed.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long after the daemon's log line the probes keep running, so that
/// they see the change.
const SETTLE: Duration = Duration::from_millis(250);
/// A measured time counts as inside the configured window when it is at
/// most this far outside: nginx takes a few ms to stop and start, and the
/// probes see a change up to two probe intervals late.
pub const TOLERANCE: Duration = Duration::from_millis(50);
/// The backend that dies and returns (web1), and the one that stays (web2).
const VICTIM: usize = 0;
const SURVIVOR: usize = 1;
/// The service the measurement watches (the API shares the nginx processes
/// and goes down and up with it, on its own default schedule).
const SERVICE: &str = "frontend";

/// How many deaths and returns per check schedule, and the schedules.
pub const SCHEDULES: [(Timing, usize); 2] = [
    (
        Timing {
            inter: Duration::from_secs(1),
            fastinter: Duration::from_secs(1),
            downinter: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        },
        10,
    ),
    (
        Timing {
            inter: Duration::from_secs(2),
            fastinter: Duration::from_millis(500),
            downinter: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        },
        5,
    ),
];

/// The daemon checking the reference config with no traffic: the check
/// kinds compared, and how long each is watched.
pub const IDLE_RUNS: [(IdleChecks, Duration); 3] = [
    (IdleChecks::None, Duration::from_secs(15)),
    (IdleChecks::Tcp, Duration::from_secs(40)),
    (IdleChecks::Http, Duration::from_secs(20)),
];
/// Before the CPU counters are first read: start-up (loading the program,
/// first checks) is not what is measured.
pub const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// A check schedule, as in the `check` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub inter: Duration,
    pub fastinter: Duration,
    pub downinter: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Timing {
    /// The `check` line of the frontend service.
    #[must_use]
    pub fn config_line(&self) -> String {
        format!(
            "check = {{ inter = \"{}ms\", fastinter = \"{}ms\", downinter = \"{}ms\", rise = {}, fall = {} }}\n",
            self.inter.as_millis(),
            self.fastinter.as_millis(),
            self.downinter.as_millis(),
            self.rise,
            self.fall
        )
    }

    /// As an operator would write it: intervals equal to `inter` omitted.
    #[must_use]
    pub fn label(&self) -> String {
        let mut parts = vec![format!("inter {}", short(self.inter))];
        if self.fastinter != self.inter {
            parts.push(format!("fastinter {}", short(self.fastinter)));
        }
        if self.downinter != self.inter {
            parts.push(format!("downinter {}", short(self.downinter)));
        }
        parts.push(format!("rise {}", self.rise));
        parts.push(format!("fall {}", self.fall));
        parts.join(", ")
    }

    /// From death to removal, for a backend that is UP and has passed a
    /// check: the next regular check (up to `inter` away) fails, then
    /// `fall - 1` more at `fastinter`.
    #[must_use]
    pub fn removal_window(&self) -> (Duration, Duration) {
        let tail = self.fastinter * self.fall.saturating_sub(1);
        (tail, self.inter + tail)
    }

    /// From return to re-entry: the next check while down (up to
    /// `downinter` away) passes, then `rise - 1` more at `fastinter`.
    #[must_use]
    pub fn reentry_window(&self) -> (Duration, Duration) {
        let tail = self.fastinter * self.rise.saturating_sub(1);
        (tail, self.downinter + tail)
    }
}

/// "1s", "500ms".
fn short(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What one probe got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This backend (index into WEB_NAMES) answered.
    Backend(usize),
    /// The connection was refused: forwarded to a backend with no listener.
    Refused,
    /// Anything else (timeout, reset mid-answer, unexpected answer).
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// When the probe started (before its SYN left).
    pub at: Instant,
    /// How long it took to get the outcome.
    pub took: Duration,
    pub outcome: Outcome,
}

/// One death and return of web1.
#[derive(Clone, Debug)]
pub struct Trial {
    /// From nginx gone to the first probe showing web1 out of rotation.
    pub removal_probes: Option<Duration>,
    /// From nginx gone to the daemon's "backend DOWN" line.
    pub removal_log: Duration,
    /// From nginx listening again to the first probe web1 answered.
    pub reentry_probes: Option<Duration>,
    /// From nginx listening again to the daemon's "backend UP" line.
    pub reentry_log: Duration,
    /// Probes refused while web1 was dead but still in rotation, of all
    /// probes between its death and its removal.
    pub refused: usize,
    pub probes_while_in_rotation: usize,
    /// How long stopping and starting nginx took.
    pub stop_took: Duration,
    pub start_took: Duration,
    /// When the trial's probes end.
    pub end: Instant,
    /// What should not happen: refused probes after the log said DOWN,
    /// failures other than refusals, web1 answering after its removal.
    pub anomalies: Vec<String>,
}

/// All trials of one schedule.
pub struct Detection {
    pub timing: Timing,
    pub trials: Vec<Trial>,
    /// The data plane's packet counters by outcome at the end (the
    /// prober's and the checks' packets), from the metrics endpoint.
    pub counters: Vec<(String, u64)>,
    /// SYNs the backends refused because they matched a connection of
    /// theirs in TIME_WAIT with newer timestamps (TcpExtPAWSTimewait), and
    /// SYNs the client had to send again (TcpExtTCPSynRetrans), over the
    /// trials.
    pub backend_paws_timewait: u64,
    pub client_syn_retransmits: u64,
}

impl Detection {
    /// Seconds, over the trials where the value is known.
    fn spread(&self, value: impl Fn(&Trial) -> Option<Duration>) -> Option<Spread> {
        let values: Vec<f64> = self
            .trials
            .iter()
            .filter_map(|t| value(t).map(|d| d.as_secs_f64()))
            .collect();
        (!values.is_empty()).then(|| Spread::of(values))
    }

    #[must_use]
    pub fn removal_probes(&self) -> Option<Spread> {
        self.spread(|t| t.removal_probes)
    }

    #[must_use]
    pub fn removal_log(&self) -> Option<Spread> {
        self.spread(|t| Some(t.removal_log))
    }

    #[must_use]
    pub fn reentry_probes(&self) -> Option<Spread> {
        self.spread(|t| t.reentry_probes)
    }

    #[must_use]
    pub fn reentry_log(&self) -> Option<Spread> {
        self.spread(|t| Some(t.reentry_log))
    }

    /// Trials whose probe-measured time lies in `window`, give or take
    /// [`TOLERANCE`]; and how many trials had a probe measurement.
    #[must_use]
    pub fn within(
        &self,
        value: impl Fn(&Trial) -> Option<Duration>,
        window: (Duration, Duration),
    ) -> (usize, usize) {
        let measured: Vec<Duration> = self.trials.iter().filter_map(value).collect();
        let inside = measured
            .iter()
            .filter(|d| **d + TOLERANCE >= window.0 && **d <= window.1 + TOLERANCE)
            .count();
        (inside, measured.len())
    }
}

/// Which checks the idle daemon runs on the frontend and API services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleChecks {
    None,
    Tcp,
    Http,
}

impl IdleChecks {
    fn config_line(self) -> Option<&'static str> {
        match self {
            IdleChecks::None => Some("check = { type = \"none\" }\n"),
            // The default: TCP connect every 2 s.
            IdleChecks::Tcp => None,
            IdleChecks::Http => Some("check = { type = \"http\", path = \"/health\" }\n"),
        }
    }

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            IdleChecks::None => "no checks (`type = \"none\"`): the baseline",
            IdleChecks::Tcp => "TCP connect every 2 s (the default)",
            IdleChecks::Http => "HTTP `GET /health` every 2 s",
        }
    }
}

/// The daemon left alone with its checks.
pub struct Idle {
    pub checks: IdleChecks,
    pub wall: Duration,
    pub cpu: Cpu,
    /// Checks run and failed in the window, from the metrics endpoint.
    pub checks_run: u64,
    pub check_failures: u64,
    /// Backends with a check (the UDP service has none).
    pub backends_checked: u32,
    pub memory: Memory,
}

/// The default check interval, which the idle runs use.
pub const DEFAULT_INTER: Duration = Duration::from_secs(2);

impl Idle {
    /// Checks the schedule calls for in the window.
    #[must_use]
    pub fn checks_expected(&self) -> f64 {
        f64::from(self.backends_checked) * self.wall.as_secs_f64() / DEFAULT_INTER.as_secs_f64()
    }

    /// Share of one CPU by utime + stime (clock ticks).
    #[must_use]
    pub fn cpu_percent_ticks(&self) -> f64 {
        self.cpu.ticks_seconds() / self.wall.as_secs_f64() * 100.0
    }

    /// Share of one CPU by the scheduler's on-CPU time (ns).
    #[must_use]
    pub fn cpu_percent_sched(&self) -> f64 {
        self.cpu.sched_ns as f64 / 1e9 / self.wall.as_secs_f64() * 100.0
    }
}

pub struct Results {
    pub detection: Vec<Detection>,
    pub idle: Vec<Idle>,
}

pub fn measure() -> anyhow::Result<Results> {
    let mut detection = Vec::new();
    for (timing, trials) in SCHEDULES {
        // A fresh testbed each time: the backends must not hold connections
        // (TIME_WAIT) of another daemon, whose SNAT ports this one does not
        // know about.
        let mut bed = testbed()?;
        detection.push(detect(&mut bed, timing, trials)?);
    }
    let mut bed = testbed()?;
    let mut idle = Vec::new();
    for (checks, duration) in IDLE_RUNS {
        super::check_interrupted()?;
        eprintln!(
            "xtask bench: health checks, daemon idle for {} s: {}",
            duration.as_secs(),
            checks.label()
        );
        let run = idle_cost(&mut bed, checks, duration)?;
        eprintln!(
            "  CPU {:.3}% of one core (schedstat), {:.2}% (utime+stime), {} checks, VmRSS {} KiB",
            run.cpu_percent_sched(),
            run.cpu_percent_ticks(),
            run.checks_run,
            run.memory.rss_kib
        );
        idle.push(run);
    }
    Ok(Results { detection, idle })
}

/// A fresh testbed whose private network carries traffic: on links a few
/// hundred ms old, the LB's first ARP requests for the backends sometimes go
/// unanswered until the kernel's retry a second later, long enough to fail
/// a first check with a 1 s timeout. Connecting from the LB to every backend
/// first settles that before a daemon starts.
fn testbed() -> anyhow::Result<Testbed> {
    let bed = Testbed::new(&lb_tests::unique_tag("xh")).context("build the testbed")?;
    for addr in WEB_ADDRS {
        let target = SocketAddr::from((addr, FRONTEND_PORT));
        wait::until(
            &format!("the LB reaches {target} on the new testbed"),
            Duration::from_secs(10),
            || {
                bed.lb
                    .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok())
                    .unwrap_or(false)
            },
        )?;
    }
    Ok(bed)
}

/// `services` with `line` added to the service on `port`.
fn with_check(services: &str, port: u16, line: &str) -> anyhow::Result<String> {
    let anchor = format!("port = {port}\n");
    let at = services
        .find(&anchor)
        .with_context(|| format!("no {anchor:?} in the testbed's services"))?
        + anchor.len();
    Ok(format!("{}{line}{}", &services[..at], &services[at..]))
}

/// Deaths and returns of web1 under one schedule, on a fresh daemon.
fn detect(bed: &mut Testbed, timing: Timing, trials: usize) -> anyhow::Result<Detection> {
    let services = with_check(&base_services(), FRONTEND_PORT, &timing.config_line())?;
    // On error the testbed, which outlives this call, kills the daemon.
    bed.start_lb(&services, &[]).context("start xlb")?;
    let prober = Prober::start(&bed.client)?;
    let result = detect_with(bed, &prober, timing, trials);
    drop(prober);
    let stopped = stop_daemon(bed);
    let detection = result?;
    stopped?;
    Ok(detection)
}

fn detect_with(
    bed: &mut Testbed,
    prober: &Prober,
    timing: Timing,
    trials: usize,
) -> anyhow::Result<Detection> {
    prober
        .wait_for_both(Duration::from_secs(5))
        .context("before the first trial")?;
    let paws_before = backends_paws_timewait(bed)?;
    let retransmits_before = tcp_ext(&bed.client, "TCPSynRetrans")?;
    let mut since = Instant::now();
    // Past web1's first passing check: from then on a failure alone does not
    // take it down (until a check has passed, one failure does).
    std::thread::sleep(timing.inter * 2);
    let mut done = Vec::new();
    for trial in 1..=trials {
        super::check_interrupted()?;
        eprintln!(
            "xtask bench: health checks ({}), web1 dies and returns, trial {trial}/{trials}",
            timing.label()
        );
        let t = one_trial(bed, prober, timing, since)?;
        since = t.end;
        eprintln!(
            "  out of rotation after {} (log {}), back after {} (log {}){}",
            secs(t.removal_probes),
            secs(Some(t.removal_log)),
            secs(t.reentry_probes),
            secs(Some(t.reentry_log)),
            if t.anomalies.is_empty() {
                String::new()
            } else {
                format!("; {}", t.anomalies.join("; "))
            }
        );
        done.push(t);
    }
    let counters = dataplane_counters(&scrape(&bed.lb)?);
    eprintln!(
        "  data plane: {}",
        counters
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let backend_paws_timewait = backends_paws_timewait(bed)?.saturating_sub(paws_before);
    let client_syn_retransmits = tcp_ext(&bed.client, "TCPSynRetrans")?.saturating_sub(retransmits_before);
    eprintln!(
        "  SYNs refused by a backend's TIME_WAIT (PAWS): {backend_paws_timewait}; client SYN retransmissions: \
         {client_syn_retransmits}"
    );
    Ok(Detection {
        timing,
        trials: done,
        counters,
        backend_paws_timewait,
        client_syn_retransmits,
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn daemon(bed: &mut Testbed) -> anyhow::Result<&mut Daemon> {
    bed.daemon.as_mut().context("xlb is not running")
}

/// One death and return; `since`: when the previous one ended.
fn one_trial(bed: &mut Testbed, prober: &Prober, timing: Timing, since: Instant) -> anyhow::Result<Trial> {
    let mut anomalies = Vec::new();
    // Transitions in the frontend nobody caused (a check failing under load).
    for line in pending_lines(daemon(bed)?) {
        let frontend = line.contains(&format!("service=\"{SERVICE}\""));
        if frontend && (line.contains("backend DOWN") || line.contains("backend UP")) {
            anomalies.push(format!("unprompted, before the trial: {line}"));
        }
    }
    // Die at a random point of the check schedule.
    std::thread::sleep(random_below(timing.inter));
    let stop_called = Instant::now();
    // With both backends up, every probe must be answered.
    let before = prober.between(since, stop_called);
    anomalies.extend(failures(
        &before.iter().collect::<Vec<_>>(),
        since,
        "the previous trial (or the start)",
    ));
    let refused_before = before.iter().filter(|p| p.outcome == Outcome::Refused).count();
    if refused_before > 0 {
        anomalies.push(format!("{refused_before} probe(s) refused before web1 died"));
    }
    prober.forget_before(stop_called);
    bed.stop_web(VICTIM);
    let dead = Instant::now();
    let removal_limit = timing.removal_window().1 + Duration::from_secs(10);
    let down_logged = wait_for_transition(daemon(bed)?, "backend DOWN", removal_limit)?;
    std::thread::sleep(SETTLE);
    // Return at a random point too.
    std::thread::sleep(random_below(timing.downinter));
    let start_called = Instant::now();
    bed.start_web(VICTIM, 200).context("restart web1")?;
    let back = Instant::now();
    let reentry_limit = timing.reentry_window().1 + Duration::from_secs(10);
    let up_logged = wait_for_transition(daemon(bed)?, "backend UP", reentry_limit)?;
    std::thread::sleep(SETTLE);
    let trial_end = Instant::now();
    let while_dead = prober.between(dead, start_called);
    let while_back = prober.between(start_called, trial_end);

    let removal = removal(&while_dead, dead, down_logged);
    anomalies.extend(removal.anomalies);
    let reentry = reentry(&while_back, start_called, up_logged);
    anomalies.extend(reentry.anomalies);
    Ok(Trial {
        removal_probes: removal.proven.map(|at| at.saturating_duration_since(dead)),
        removal_log: down_logged.saturating_duration_since(dead),
        reentry_probes: reentry.first_answer.map(|at| at.saturating_duration_since(back)),
        reentry_log: up_logged.saturating_duration_since(back),
        refused: removal.refused,
        probes_while_in_rotation: removal.in_rotation,
        stop_took: dead - stop_called,
        start_took: back - start_called,
        end: trial_end,
        anomalies,
    })
}

/// What the probes after web1's death show.
#[derive(Debug, PartialEq, Eq)]
struct Removal {
    /// The first probe that shows web1 out of rotation: the second after
    /// the last refused one (the first after it goes to web2 either way).
    proven: Option<Instant>,
    refused: usize,
    /// Probes from the death to the last refused one.
    in_rotation: usize,
    anomalies: Vec<String>,
}

fn removal(probes: &[Probe], dead: Instant, logged: Instant) -> Removal {
    let probes: Vec<&Probe> = probes.iter().filter(|p| p.at >= dead).collect();
    let last_refused = probes.iter().rposition(|p| p.outcome == Outcome::Refused);
    let proof = last_refused.map_or(1, |i| i + 2);
    let mut anomalies = Vec::new();
    let refused_after_log = probes
        .iter()
        .filter(|p| p.at > logged && p.outcome == Outcome::Refused)
        .count();
    if refused_after_log > 0 {
        anomalies.push(format!(
            "{refused_after_log} probe(s) refused after the DOWN line"
        ));
    }
    let victim = probes
        .iter()
        .filter(|p| p.outcome == Outcome::Backend(VICTIM))
        .count();
    if victim > 0 {
        anomalies.push(format!("web1 answered {victim} probe(s) while stopped"));
    }
    anomalies.extend(failures(&probes, dead, "web1 died"));
    Removal {
        proven: probes
            .get(proof)
            .filter(|p| p.outcome == Outcome::Backend(SURVIVOR))
            .map(|p| p.at),
        refused: probes.iter().filter(|p| p.outcome == Outcome::Refused).count(),
        in_rotation: last_refused.map_or(0, |i| i + 1),
        anomalies,
    }
}

/// What the probes after web1's return show.
#[derive(Debug, PartialEq, Eq)]
struct Reentry {
    first_answer: Option<Instant>,
    anomalies: Vec<String>,
}

fn reentry(probes: &[Probe], start_called: Instant, logged: Instant) -> Reentry {
    let probes: Vec<&Probe> = probes.iter().filter(|p| p.at >= start_called).collect();
    let first_answer = probes
        .iter()
        .find(|p| p.outcome == Outcome::Backend(VICTIM))
        .map(|p| p.at);
    let mut anomalies = failures(&probes, start_called, "web1's restart began");
    if let Some(at) = first_answer {
        if at + PROBE_INTERVAL < logged {
            // Not impossible (the maps change before the line is written),
            // but more than one probe early would mean the log is late.
            anomalies.push(format!(
                "web1 answered {:.0} ms before the UP line",
                (logged - at).as_secs_f64() * 1000.0
            ));
        }
    }
    let refused = probes.iter().filter(|p| p.outcome == Outcome::Refused).count();
    if refused > 0 {
        anomalies.push(format!("{refused} probe(s) refused while web1 was out or back"));
    }
    Reentry {
        first_answer,
        anomalies,
    }
}

/// Probes that failed other than by a refusal, each with its start
/// relative to `since` (described by `what`).
fn failures(probes: &[&Probe], since: Instant, what: &str) -> Vec<String> {
    probes
        .iter()
        .filter_map(|p| match &p.outcome {
            Outcome::Failed(why) => Some(format!(
                "a probe started {:.3} s after {what} failed after {:.0} ms: {why}",
                p.at.saturating_duration_since(since).as_secs_f64(),
                p.took.as_secs_f64() * 1000.0
            )),
            _ => None,
        })
        .collect()
}

/// Whether `line` is the daemon's `what` line for web1 of the frontend.
fn is_transition(line: &str, what: &str) -> bool {
    line.contains(what)
        && line.contains(&format!("service=\"{SERVICE}\""))
        && line.contains(&format!("backend=\"{}\"", WEB_NAMES[VICTIM]))
}

/// Waits for web1's `what` line; returns when it arrived.
fn wait_for_transition(daemon: &mut Daemon, what: &str, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match daemon.next_line(left) {
            Some(line) if is_transition(&line, what) => return Ok(Instant::now()),
            Some(_) => {}
            None => bail!(
                "xlb did not log {what:?} for {SERVICE}/{} within {timeout:?}; its log:\n{}",
                WEB_NAMES[VICTIM],
                daemon.log_text()
            ),
        }
        super::check_interrupted()?;
    }
}

/// The log lines that arrived since the last read.
fn pending_lines(daemon: &mut Daemon) -> Vec<String> {
    std::iter::from_fn(|| daemon.next_line(Duration::ZERO)).collect()
}

/// Uniform in [0, max).
fn random_below(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom(2) into a buffer we own; on failure the zeros give
    // no delay, which only makes the phase less random.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(u64::from_ne_bytes(bytes) % nanos)
}

/// SIGTERM to the daemon; it must exit cleanly.
fn stop_daemon(bed: &mut Testbed) -> anyhow::Result<()> {
    let daemon = bed.daemon.take().context("xlb is not running")?;
    let status = daemon
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .context("stop xlb")?;
    ensure!(status.success(), "xlb exited with {status}");
    Ok(())
}

/// New connections to the frontend from the client namespace, one every
/// [`PROBE_INTERVAL`], on a thread of their own; stopped on drop.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(client: &Netns) -> anyhow::Result<Self> {
        let path = format!("/run/netns/{}", client.name());
        let ns = File::open(&path).with_context(|| format!("open {path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = mpsc::channel();
        let (flag, sink) = (Arc::clone(&stop), Arc::clone(&probes));
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            drop(ns);
            let _ = ready_tx.send(Ok(()));
            let target = SocketAddr::from((VIP, FRONTEND_PORT));
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let outcome = probe(target);
                let took = at.elapsed();
                if let Ok(mut probes) = sink.lock() {
                    probes.push(Probe { at, took, outcome });
                }
                next += PROBE_INTERVAL;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        let prober = Self {
            stop,
            probes,
            thread: Some(thread),
        };
        match ready.recv() {
            Ok(Ok(())) => Ok(prober),
            Ok(Err(e)) => Err(e).context("prober: enter the client namespace"),
            Err(_) => bail!("the prober thread ended before it started"),
        }
    }

    /// Drops the probes started before `t`.
    fn forget_before(&self, t: Instant) {
        if let Ok(mut probes) = self.probes.lock() {
            probes.retain(|p| p.at >= t);
        }
    }

    /// The probes started from `from` to before `to`, once the prober has
    /// finished every one of them (it has recorded one started at `to` or
    /// later, or is stuck).
    fn between(&self, from: Instant, to: Instant) -> Vec<Probe> {
        let deadline = Instant::now() + PROBE_TIMEOUT * 2 + Duration::from_secs(1);
        loop {
            let probes = self.probes.lock().map(|p| p.clone()).unwrap_or_default();
            if probes.iter().any(|p| p.at >= to) || Instant::now() > deadline {
                return probes.into_iter().filter(|p| p.at >= from && p.at < to).collect();
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Until both backends have answered a probe.
    fn wait_for_both(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.probes.lock().map(|p| p.clone()).unwrap_or_default();
            let answered = |i| seen.iter().any(|p| p.outcome == Outcome::Backend(i));
            if answered(VICTIM) && answered(SURVIVOR) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the frontend did not answer from both backends within {timeout:?}; last probes: {:?}",
                    seen.iter().rev().take(4).map(|p| &p.outcome).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One new connection and one request (`Connection: close`).
fn probe(target: SocketAddr) -> Outcome {
    let mut stream = match TcpStream::connect_timeout(&target, PROBE_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Outcome::Refused,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    match http::exchange(&mut stream, &http::get_and_close("/"), PROBE_TIMEOUT) {
        Ok(answer) => backend_of(&answer).map_or_else(
            || Outcome::Failed(format!("unexpected answer {:?}", answer.lines().next())),
            Outcome::Backend,
        ),
        Err(e) => Outcome::Failed(format!("request: {e}")),
    }
}

/// Which backend wrote `answer` (its body is "NAME frontend").
fn backend_of(answer: &str) -> Option<usize> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let name = body.split_whitespace().next()?;
    WEB_NAMES.iter().position(|n| *n == name)
}

/// The daemon with the testbed's services, checks as `checks` on the
/// frontend and API (two backends each), no traffic.
fn idle_cost(bed: &mut Testbed, checks: IdleChecks, duration: Duration) -> anyhow::Result<Idle> {
    let mut services = base_services();
    if let Some(line) = checks.config_line() {
        for port in [FRONTEND_PORT, API_PORT] {
            services = with_check(&services, port, line)?;
        }
    }
    let daemon = bed.start_lb(&services, &[]).context("start xlb")?;
    let pid = daemon.pid();
    let result = watch_idle(bed, pid, checks, duration);
    let stopped = stop_daemon(bed);
    let idle = result?;
    stopped?;
    Ok(idle)
}

fn watch_idle(bed: &Testbed, pid: u32, checks: IdleChecks, duration: Duration) -> anyhow::Result<Idle> {
    std::thread::sleep(IDLE_SETTLE);
    // Scraped outside the measured window: answering costs the daemon CPU.
    let (checks_before, failures_before) = scrape_checks(&bed.lb)?;
    let before = cpu_of(pid, "xlb")?;
    let started = Instant::now();
    while started.elapsed() < duration {
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(250).min(duration.saturating_sub(started.elapsed())));
    }
    let after = cpu_of(pid, "xlb")?;
    let wall = started.elapsed();
    let memory = memory_of(pid, "xlb")?;
    let (checks_after, failures_after) = scrape_checks(&bed.lb)?;
    let backends_checked = match checks {
        IdleChecks::None => 0,
        // Frontend and API, two each; the UDP service is not checked.
        IdleChecks::Tcp | IdleChecks::Http => 4,
    };
    Ok(Idle {
        checks,
        wall,
        cpu: after.since(&before),
        checks_run: checks_after.saturating_sub(checks_before),
        check_failures: failures_after.saturating_sub(failures_before),
        backends_checked,
        memory,
    })
}

/// A TcpExt counter of namespace `ns` (/proc/net/netstat).
pub(super) fn tcp_ext(ns: &Netns, name: &str) -> anyhow::Result<u64> {
    let text = ns.exec("cat", &["/proc/net/netstat"])?;
    netstat_value(&text, "TcpExt", name).with_context(|| format!("no TcpExt {name} in {}", ns.name()))
}

pub(super) fn backends_paws_timewait(bed: &Testbed) -> anyhow::Result<u64> {
    bed.webs.iter().map(|ns| tcp_ext(ns, "PAWSTimewait")).sum()
}

/// A value of /proc/net/netstat: each group is a line of names and a line
/// of values, both starting with "GROUP:".
pub(super) fn netstat_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    names
        .zip(values)
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The daemon's metrics endpoint (in the LB namespace).
pub(super) fn scrape(lb: &Netns) -> anyhow::Result<String> {
    lb.run(|| -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], 8404)), Duration::from_secs(2))?;
        http::exchange(
            &mut stream,
            &http::get_and_close("/metrics"),
            Duration::from_secs(5),
        )
    })?
    .context("scrape the metrics endpoint")
}

/// Checks run and failed so far, summed over the backends.
fn scrape_checks(lb: &Netns) -> anyhow::Result<(u64, u64)> {
    let text = scrape(lb)?;
    Ok((
        metric_sum(&text, "xlb_server_checks_total"),
        metric_sum(&text, "xlb_server_check_failures_total"),
    ))
}

/// `xlb_dataplane_packets_total{outcome="NAME"} N` samples.
pub(super) fn dataplane_counters(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("xlb_dataplane_packets_total{outcome=\"")?;
            let (name, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((name.to_owned(), value as u64))
        })
        .collect()
}

/// The sum of a metric's samples (all label sets).
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(start: Instant, outcomes: &[Outcome]) -> Vec<Probe> {
        outcomes
            .iter()
            .enumerate()
            .map(|(i, outcome)| Probe {
                at: start + PROBE_INTERVAL * i as u32,
                took: Duration::from_millis(1),
                outcome: outcome.clone(),
            })
            .collect()
    }

    const W1: Outcome = Outcome::Backend(VICTIM);
    const W2: Outcome = Outcome::Backend(SURVIVOR);
    const R: Outcome = Outcome::Refused;

    #[test]
    fn windows_follow_haproxy_schedule() {
        let (timing, _) = SCHEDULES[0];
        assert_eq!(
            timing.removal_window(),
            (Duration::from_secs(2), Duration::from_secs(3))
        );
        assert_eq!(
            timing.reentry_window(),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(timing.label(), "inter 1s, rise 2, fall 3");
        let (fast, _) = SCHEDULES[1];
        assert_eq!(
            fast.removal_window(),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        assert_eq!(
            fast.reentry_window(),
            (Duration::from_millis(500), Duration::from_millis(1500))
        );
        assert_eq!(
            fast.label(),
            "inter 2s, fastinter 500ms, downinter 1s, rise 2, fall 3"
        );
    }

    #[test]
    fn check_lines_go_into_the_right_service() {
        let services = with_check(&base_services(), FRONTEND_PORT, "check = {}\n").unwrap();
        assert!(services.contains("port = 3000\ncheck = {}\nbackends"));
        assert!(services.contains("port = 5000\nbackends"));
    }

    #[test]
    fn removal_is_proven_by_the_second_probe_after_the_last_refusal() {
        let t0 = Instant::now();
        let p = probes(t0, &[W2, R, W2, R, W2, W2, W2]);
        let logged = t0 + PROBE_INTERVAL * 4;
        let r = removal(&p, t0, logged);
        assert_eq!(r.proven, Some(t0 + PROBE_INTERVAL * 5));
        assert_eq!(r.refused, 2);
        assert_eq!(r.in_rotation, 4);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    }

    #[test]
    fn removal_flags_refusals_after_the_log_line() {
        let t0 = Instant::now();
        let p = probes(t0, &[R, W2, R, W2, W2]);
        let r = removal(&p, t0, t0 + PROBE_INTERVAL);
        assert_eq!(r.proven, Some(t0 + PROBE_INTERVAL * 4));
        assert_eq!(r.anomalies.len(), 1, "{:?}", r.anomalies);
    }

    #[test]
    fn removal_unproven_without_enough_probes() {
        let t0 = Instant::now();
        let r = removal(&probes(t0, &[W2, R, W2]), t0, t0);
        assert_eq!(r.proven, None);
    }

    #[test]
    fn reentry_is_the_first_answer_from_web1() {
        let t0 = Instant::now();
        let p = probes(t0, &[W2, W2, W2, W1, W2]);
        let r = reentry(&p, t0, t0 + PROBE_INTERVAL * 3);
        assert_eq!(r.first_answer, Some(t0 + PROBE_INTERVAL * 3));
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    }

    #[test]
    fn answers_name_their_backend() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nweb2 frontend\n";
        assert_eq!(backend_of(ok), Some(1));
        assert_eq!(backend_of("HTTP/1.1 502 Bad Gateway\r\n\r\nweb1 frontend"), None);
    }

    #[test]
    fn log_lines_are_matched_on_service_and_backend() {
        let down = "WARN lb_user::controller: backend DOWN service=\"frontend\" backend=\"web1\" address=203.0.113.11:3000";
        assert!(is_transition(down, "backend DOWN"));
        assert!(!is_transition(&down.replace("frontend", "api"), "backend DOWN"));
        assert!(!is_transition(down, "backend UP"));
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# TYPE xlb_server_checks_total counter\n\
                    xlb_server_checks_total{proxy=\"frontend\",server=\"web1\"} 3\n\
                    xlb_server_checks_total{proxy=\"api\",server=\"web1\"} 4\n\
                    xlb_server_checks_total_other 100\n";
        assert_eq!(metric_sum(text, "xlb_server_checks_total"), 7);
    }

    #[test]
    fn dataplane_counters_are_read_by_outcome() {
        let text = "xlb_dataplane_packets_total{outcome=\"forward_new\"} 12\n\
                    xlb_dataplane_packets_total{outcome=\"drop_malformed\"} 0\n\
                    xlb_conntrack_entries 4\n";
        assert_eq!(
            dataplane_counters(text),
            vec![("forward_new".to_owned(), 12), ("drop_malformed".to_owned(), 0)]
        );
    }

    #[test]
    fn netstat_values_are_found_by_group_and_name() {
        let text = "TcpExt: SyncookiesSent PAWSTimewait\nTcpExt: 0 75\nIpExt: PAWSTimewait\nIpExt: 9\n";
        assert_eq!(netstat_value(text, "TcpExt", "PAWSTimewait"), Some(75));
        assert_eq!(netstat_value(text, "TcpExt", "Missing"), None);
    }

    #[test]
    fn random_delays_stay_below_the_bound() {
        for _ in 0..100 {
            assert!(random_below(Duration::from_millis(10)) < Duration::from_millis(10));
        }
    }
}
