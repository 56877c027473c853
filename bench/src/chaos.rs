//! The chaos soak (`--only chaos`): an xlb pair at 20 ms adverts serving
//! client load through the floating IP for minutes, while what an
//! operator's month brings happens on a schedule: a backend going away and
//! coming back every 20 s, a reload of both nodes every 30 s, a metrics
//! scrape of the master every second over a table of more than 100,000
//! entries, the backup's public cable pulled for 2 s every minute, and the
//! master killed with -9 (and restarted) every 2 minutes. Each fault
//! declares a window; what counts is what happens outside them: VRRP
//! transitions (spurious), failed new connections of a prober, and the
//! daemons' memory and open files over the run.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use lb_tests::{
    probe::ConnectionProbe,
    testbed::{Testbed, FRONTEND_PORT, VIP},
};

use super::{
    failover::{wait_until, xlb_node_config, FAST, REALTIME_PRIORITY},
    report::Table,
    wrk,
};

const PRIMARY: usize = 0;
const SECONDARY: usize = 1;
const WAIT: Duration = Duration::from_secs(30);
const BACKEND_FLAP: Duration = Duration::from_secs(20);
const RELOAD_EVERY: Duration = Duration::from_secs(30);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const LINK_FLAP_EVERY: Duration = Duration::from_secs(60);
const LINK_DOWN_FOR: Duration = Duration::from_secs(2);
const KILL_EVERY: Duration = Duration::from_secs(120);
/// A killed master stays down this long before its restart.
const DEAD_FOR: Duration = Duration::from_secs(3);
const PROBE_PACE: Duration = Duration::from_millis(50);
/// UDP flows opened to fill the master's table (two entries each).
const FLOWS: u16 = 64_000;
/// How long after a backend stops new connections may still reach it.
const BACKEND_GONE_WINDOW: Duration = Duration::from_secs(2);
/// After a fault's end, how long its effects may last (ARP, a last advert).
const AFTERMATH: Duration = Duration::from_secs(1);

/// A declared fault and when it may show.
#[derive(Clone, Debug)]
pub struct Window {
    pub what: &'static str,
    pub from: SystemTime,
    pub to: SystemTime,
}

/// A transition seen in a node's status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub at_unix_ms: u64,
    pub node: usize,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Memory and open files of one daemon's life: first and last samples.
#[derive(Clone, Debug)]
pub struct Life {
    pub node: usize,
    pub first: (Duration, u64, usize),
    pub last: (Duration, u64, usize),
}

pub struct Chaos {
    pub duration: Duration,
    pub windows: Vec<Window>,
    pub transitions: Vec<Seen>,
    pub spurious: Vec<Seen>,
    pub probe_attempts: usize,
    pub probe_failed_outside: usize,
    pub probe_failed_inside: usize,
    pub scrapes: usize,
    pub scrape_failures: usize,
    pub scrape_median: Duration,
    pub scrape_max: Duration,
    /// Scrapes over a table of at least 100,000 entries, of those counted.
    pub full_scrapes: usize,
    pub entries_counted: usize,
    pub entries_median: u64,
    pub reloads: usize,
    pub cpu_busy_percent: f64,
    pub load: Option<wrk::Load>,
    pub lives: Vec<Life>,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn inside(windows: &[Window], at: SystemTime) -> bool {
    windows.iter().any(|w| w.from <= at && at <= w.to)
}

/// (VmRSS in KiB, open descriptors) of a process.
fn footprint(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// The daemons' lives: one per start of each node.
struct Lives {
    started: Instant,
    current: [Option<(u32, Life)>; 2],
    done: Vec<Life>,
}

impl Lives {
    fn sample(&mut self, bed: &mut Testbed) {
        let at = self.started.elapsed();
        for node in [PRIMARY, SECONDARY] {
            let Some(pid) = bed.node_daemon(node).map(|d| d.pid()) else {
                continue;
            };
            let Some((rss, fds)) = footprint(pid) else {
                continue;
            };
            match &mut self.current[node] {
                Some((known, life)) if *known == pid => life.last = (at, rss, fds),
                slot => {
                    if let Some((_, life)) = slot.take() {
                        self.done.push(life);
                    }
                    *slot = Some((
                        pid,
                        Life {
                            node,
                            first: (at, rss, fds),
                            last: (at, rss, fds),
                        },
                    ));
                }
            }
        }
    }

    fn finish(mut self) -> Vec<Life> {
        for slot in &mut self.current {
            if let Some((_, life)) = slot.take() {
                self.done.push(life);
            }
        }
        self.done
    }
}

/// The primary master with the VIP, the secondary backup.
fn steady(bed: &Testbed) -> bool {
    bed.vrrp_state(PRIMARY).as_deref() == Some("MASTER")
        && bed.vrrp_state(SECONDARY).as_deref() == Some("BACKUP")
        && bed.has_vip(PRIMARY).unwrap_or(false)
}

/// Reads both nodes' transitions into `seen`.
fn collect_transitions(bed: &Testbed, seen: &mut BTreeSet<Seen>) {
    for node in [PRIMARY, SECONDARY] {
        let Ok(status) = bed.node_status(node) else {
            continue;
        };
        for t in status["vrrp"]["transitions"].as_array().into_iter().flatten() {
            let text = |key: &str| t[key].as_str().unwrap_or_default().to_owned();
            seen.insert(Seen {
                at_unix_ms: t["at_unix_ms"].as_u64().unwrap_or(0),
                node,
                from: text("from"),
                to: text("to"),
                reason: text("reason"),
            });
        }
    }
}

/// The master's node, if one is.
fn master(bed: &Testbed) -> Option<usize> {
    [PRIMARY, SECONDARY]
        .into_iter()
        .find(|&n| bed.vrrp_state(n).as_deref() == Some("MASTER"))
}

pub fn measure(duration: Duration) -> anyhow::Result<Chaos> {
    let mut bed = Testbed::pair(&lb_tests::unique_tag("xc")).context("build the testbed pair")?;
    bed.dataplane_extra = "conntrack_entries = 524288\nudp_timeout_secs = 3600".to_owned();
    let configs = [
        xlb_node_config(&bed, PRIMARY, FAST)?,
        xlb_node_config(&bed, SECONDARY, FAST)?,
    ];
    bed.start_node(PRIMARY, &configs[PRIMARY])?;
    wait_until("the primary is master", || {
        bed.vrrp_state(PRIMARY).as_deref() == Some("MASTER")
    })?;
    bed.start_node(SECONDARY, &configs[SECONDARY])?;
    wait_until("the pair settles", || steady(&bed))?;
    bed.open_udp_flows(FLOWS)?;

    let url = format!("http://{VIP}:{FRONTEND_PORT}/");
    let load = wrk::start(&bed.client, &url, 2, 32, duration)?;
    let probe = ConnectionProbe::start_overlapping(
        &bed.client,
        std::net::SocketAddrV4::new(VIP, FRONTEND_PORT),
        PROBE_PACE,
    )?;
    let cpu_before = super::failover::cpu_jiffies()?;
    let started = Instant::now();
    let mut windows: Vec<Window> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut lives = Lives {
        started,
        current: [None, None],
        done: Vec::new(),
    };
    let (mut scrape_times, mut entries, mut scrape_failures, mut reloads) = (Vec::new(), Vec::new(), 0, 0);
    // Scrape, backend flap, reload, link flap (offset from the kills), kill.
    let mut next = [
        started + SCRAPE_EVERY,
        started + BACKEND_FLAP,
        started + RELOAD_EVERY,
        started + Duration::from_secs(70),
        started + KILL_EVERY,
    ];
    let mut backend_up = true;
    // A killed primary's restart: when it is due, and the window it opened.
    let mut restart: Option<(Instant, usize)> = None;
    // After a restart: refill the table once the primary serves again.
    let mut refill_after_restart = false;
    let mut next_report = started + Duration::from_secs(60);
    while started.elapsed() < duration {
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now >= next[0] {
            next[0] += SCRAPE_EVERY;
            collect_transitions(&bed, &mut seen);
            lives.sample(&mut bed);
            if let Some(node) = master(&bed) {
                let asked = Instant::now();
                match bed.scrape_metrics(node) {
                    Ok(response) if response.lines().next().is_some_and(|l| l.contains(" 200")) => {
                        scrape_times.push(asked.elapsed());
                    }
                    _ => scrape_failures += 1,
                }
                if let Ok(status) = bed.node_status(node) {
                    if let Some(n) = status["conntrack_entries"].as_u64() {
                        entries.push(n);
                    }
                }
            }
        }
        if now >= next[1] {
            next[1] += BACKEND_FLAP;
            if backend_up {
                let from = SystemTime::now();
                bed.stop_web(0);
                windows.push(Window {
                    what: "backend web1 stopped",
                    from,
                    to: from + BACKEND_GONE_WINDOW,
                });
            } else {
                bed.start_web(0, 200)?;
            }
            backend_up = !backend_up;
        }
        if now >= next[2] {
            next[2] += RELOAD_EVERY;
            for node in [PRIMARY, SECONDARY] {
                if let Some(daemon) = bed.node_daemon(node) {
                    daemon.signal(libc::SIGHUP)?;
                    reloads += 1;
                }
            }
        }
        if now >= next[3] {
            next[3] += LINK_FLAP_EVERY;
            let from = SystemTime::now();
            bed.switch.ip(&["link", "set", "lb2pub", "down"])?;
            std::thread::sleep(LINK_DOWN_FOR);
            bed.switch.ip(&["link", "set", "lb2pub", "up"])?;
            wait_until("the secondary back after its link flap", || {
                bed.vrrp_state(SECONDARY).as_deref() == Some("BACKUP")
            })?;
            windows.push(Window {
                what: "the backup's public cable pulled for 2 s",
                from,
                to: SystemTime::now() + AFTERMATH,
            });
        }
        // A kill needs time to heal before the end: none in the last 30 s.
        let time_left = duration.saturating_sub(started.elapsed());
        if now >= next[4] && restart.is_none() && time_left > Duration::from_secs(30) {
            next[4] += KILL_EVERY;
            let from = SystemTime::now();
            let daemon = bed.take_node_daemon(PRIMARY).context("the primary runs")?;
            daemon.stop_with(libc::SIGKILL, WAIT)?;
            windows.push(Window {
                what: "the master killed with -9, restarted 3 s later",
                from,
                to: from,
            });
            restart = Some((now + DEAD_FOR, windows.len() - 1));
        }
        if let Some((due, window)) = restart {
            if now >= due {
                bed.start_node(PRIMARY, &configs[PRIMARY])?;
                wait_until("the restarted primary takes the VIP back", || steady(&bed))?;
                windows[window].to = SystemTime::now() + AFTERMATH;
                restart = None;
                refill_after_restart = true;
            }
        }
        if refill_after_restart {
            bed.open_udp_flows(FLOWS)?;
            refill_after_restart = false;
        }
        if now >= next_report {
            next_report += Duration::from_secs(60);
            eprintln!(
                "  {} s: {} transitions seen, {} windows declared",
                started.elapsed().as_secs(),
                seen.len(),
                windows.len()
            );
        }
    }
    let cpu_after = super::failover::cpu_jiffies()?;
    let elapsed = started.elapsed();
    collect_transitions(&bed, &mut seen);
    lives.sample(&mut bed);
    let attempts = probe.stop()?;
    let load = load.finish().ok();
    if !backend_up {
        bed.start_web(0, 200)?;
    }

    let start_ms = unix_ms(SystemTime::now() - elapsed);
    let transitions: Vec<Seen> = seen.into_iter().filter(|t| t.at_unix_ms >= start_ms).collect();
    let spurious = transitions
        .iter()
        .filter(|t| !inside(&windows, UNIX_EPOCH + Duration::from_millis(t.at_unix_ms)))
        .cloned()
        .collect();
    let wall = |at: Instant| SystemTime::now() - Instant::now().saturating_duration_since(at);
    let failed: Vec<_> = attempts.iter().filter(|a| !a.ok).collect();
    let probe_failed_inside = failed
        .iter()
        .filter(|a| inside(&windows, wall(a.started)))
        .count();
    scrape_times.sort();
    entries.sort_unstable();
    let (busy, total) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    Ok(Chaos {
        duration: elapsed,
        windows,
        transitions,
        spurious,
        probe_attempts: attempts.len(),
        probe_failed_outside: failed.len() - probe_failed_inside,
        probe_failed_inside,
        scrapes: scrape_times.len(),
        scrape_failures,
        scrape_median: scrape_times
            .get(scrape_times.len() / 2)
            .copied()
            .unwrap_or_default(),
        scrape_max: scrape_times.last().copied().unwrap_or_default(),
        entries_counted: entries.len(),
        full_scrapes: entries.iter().filter(|&&n| n >= 100_000).count(),
        entries_median: entries.get(entries.len() / 2).copied().unwrap_or(0),
        reloads,
        cpu_busy_percent: 100.0 * busy as f64 / total.max(1) as f64,
        load,
        lives: lives.finish(),
    })
}

pub fn section(c: &Chaos) -> String {
    let mut lives = Table::new(&[
        ("Daemon", false),
        ("From", true),
        ("To", true),
        ("VmRSS", true),
        ("VmRSS after", true),
        ("Open files", true),
        ("after", true),
    ]);
    for life in &c.lives {
        lives.row(vec![
            ["primary", "secondary"][life.node].to_owned(),
            format!("{} s", life.first.0.as_secs()),
            format!("{} s", life.last.0.as_secs()),
            format!("{:.1} MiB", life.first.1 as f64 / 1024.0),
            format!("{:.1} MiB", life.last.1 as f64 / 1024.0),
            life.first.2.to_string(),
            life.last.2.to_string(),
        ]);
    }
    let faults = |what: &str| c.windows.iter().filter(|w| w.what == what).count();
    let spurious = if c.spurious.is_empty() {
        "none".to_owned()
    } else {
        c.spurious
            .iter()
            .map(|t| {
                format!(
                    "{} {} -> {} ({})",
                    ["primary", "secondary"][t.node],
                    t.from,
                    t.to,
                    t.reason
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let load = c.load.as_ref().map_or_else(
        || "wrk gave no report".to_owned(),
        |l| {
            format!(
                "{:.0} requests/s, {} requests{}",
                l.requests_per_s,
                l.requests,
                if l.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", l.errors.join("; "))
                }
            )
        },
    );
    format!(
        "## Chaos soak\n\n\
         An xlb pair (priorities 255/254, version 3 with 20 ms adverts, the election at \
         real-time priority {rt}, the frontends checked every 500 ms, rise 2, fall 2) on \
         the pair testbed for {minutes:.1} minutes, serving wrk (2 threads, 32 keep-alive \
         connections through `{VIP}:{FRONTEND_PORT}`: {load}; all CPUs {busy:.0}% busy, \
         from /proc/stat) and a prober opening a new connection with a request every \
         {pace} ms on a thread of its own ({attempts} attempts), while: web1's nginx \
         stopped and started every {flap} s ({stops} stops), both nodes reloaded (SIGHUP) \
         every {reload} s ({reloads} reloads), the master's `/metrics` scraped every \
         second ({scrapes} scrapes, median {scrape_median:?}, max {scrape_max:?}, \
         {scrape_failures} failed) over a table of {entries_median} entries (median; \
         {full_scrapes} of {counted} scrapes over at least 100,000: {flows} UDP flows \
         opened at the start and after each restart, counted by the sweeper's passes), \
         the backup's public cable pulled at the switch for 2 s every minute ({pulls} \
         times), and the master killed with -9 every 2 minutes and restarted 3 s later \
         ({kills} times). Each fault declares a window: a stopped backend 2 s (until the \
         checks take it out), a pulled cable until the backup is back plus 1 s, a kill \
         until the restarted primary has the VIP back plus 1 s. \
         `cargo xtask bench --only chaos`.\n\n\
         **Spurious transitions (outside the windows): {spurious}** (goal: none; {total} \
         transitions in all, inside the windows). **Failed new connections outside the \
         windows: {outside}** (goal: 0; {inside} inside them).\n\n\
         Memory and open files of each daemon's life (a killed primary's life ends at \
         its kill):\n\n{lives}",
        rt = REALTIME_PRIORITY,
        minutes = c.duration.as_secs_f64() / 60.0,
        busy = c.cpu_busy_percent,
        pace = PROBE_PACE.as_millis(),
        attempts = c.probe_attempts,
        flap = BACKEND_FLAP.as_secs(),
        stops = faults("backend web1 stopped"),
        reload = RELOAD_EVERY.as_secs(),
        reloads = c.reloads,
        scrapes = c.scrapes,
        scrape_median = c.scrape_median,
        scrape_max = c.scrape_max,
        scrape_failures = c.scrape_failures,
        entries_median = c.entries_median,
        full_scrapes = c.full_scrapes,
        counted = c.entries_counted,
        flows = FLOWS,
        pulls = faults("the backup's public cable pulled for 2 s"),
        kills = faults("the master killed with -9, restarted 3 s later"),
        total = c.transitions.len(),
        outside = c.probe_failed_outside,
        inside = c.probe_failed_inside,
        lives = lives.render(),
    )
}
