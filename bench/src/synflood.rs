//! SYN flood: spoofed SYNs (random sources in 10.0.0.0/8, random ports) to
//! the VIP's frontend port, as fast as one thread of the client namespace
//! sends them from a packet socket, while a prober opens real connections
//! through the load balancer; then the prober goes on after the flood for
//! the half-open timeouts. Through xlb (with 1,000 SNAT ports, so that
//! exhaustion shows), nftables (any free port, and the same 1,000 ports)
//! and HAProxy, each on a fresh testbed.
//!
//! The spoofed sources stay inside the testbed: the LB namespace routes
//! 10.0.0.0/8 to the client namespace (as a load balancer's default route
//! would send them to its gateway), and the client namespace, which does not
//! forward, has a blackhole route for it: every answer to a spoofed source
//! (the backends' SYN-ACKs, HAProxy's kernel's SYN cookies) ends there.

use std::{
    ffi::CString,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, ensure, Context};
use lb_tests::{
    daemon::Daemon,
    http,
    netns::Netns,
    testbed::{base_services, Testbed, CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, VIP},
};

use super::{
    e2e::{self, NftTable},
    haproxy::Haproxy,
    health::{dataplane_counters, netstat_value, scrape, tcp_ext},
    report::{grouped, Table},
};

pub const HEADING: &str = "## SYN flood: new connections while spoofed SYNs arrive";
/// How long to flood, and to probe after the flood.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub flood: Duration,
    pub after: Duration,
    /// The second pass's flood rate, SYNs/s: one the link takes whole, so
    /// that what remains is the load balancer's doing, not the testbed's
    /// shared CPU.
    pub paced: u64,
}
/// Probing before the flood: the configuration serves.
const BEFORE: Duration = Duration::from_secs(3);
/// A new connection with a request this often, each on a thread of its own.
pub const PROBE_PACE: Duration = Duration::from_millis(25);
/// A probe's connect, and each read of its answer, fails after this.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in flight at most (a bound, far above what the pace and the
/// time-out give).
const MAX_IN_FLIGHT: usize = 400;
/// xlb's (and the second nftables run's) SNAT ports: few, so that their
/// exhaustion shows.
pub const SMALL_SNAT: (u16, u16) = (20000, 20999);
/// Where the spoofed sources come from.
const SPOOFED: &str = "10.0.0.0/8";
/// A bound on the frames one flood sends, whatever its duration.
pub const MAX_FRAMES: u64 = 100_000_000;
/// Frames per sendmmsg(2).
const BATCH: usize = 64;
/// Ethernet, IPv4, TCP with an MSS option.
const FRAME_LEN: usize = 14 + 20 + 24;
/// The prober is back to 100% once every probe from some moment to the end
/// succeeded, for at least this long.
pub const STEADY: Duration = Duration::from_secs(5);
/// Success after the flood is given by periods this long.
pub const PERIOD: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Xlb,
    Nftables,
    NftablesSmall,
    Haproxy,
}

impl System {
    pub const ALL: [System; 4] = [
        System::Xlb,
        System::Nftables,
        System::NftablesSmall,
        System::Haproxy,
    ];

    #[must_use]
    pub fn name(self) -> String {
        let (first, last) = SMALL_SNAT;
        let ports = u32::from(last) - u32::from(first) + 1;
        match self {
            System::Xlb => format!("xlb, SNAT ports {first}-{last} ({})", grouped(u64::from(ports))),
            System::Nftables => "nftables, SNAT from any free port".to_owned(),
            System::NftablesSmall => format!(
                "nftables, SNAT ports {first}-{last} ({})",
                grouped(u64::from(ports))
            ),
            System::Haproxy => "HAProxy (reference configuration)".to_owned(),
        }
    }
}

/// Why a probe failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// No SYN-ACK within the time-out.
    ConnectTimeout,
    Refused,
    Reset,
    /// Connected, but no (complete) answer within the time-out.
    AnswerTimeout,
    /// Anything else (another error, an answer other than 200, the prober
    /// at its bound).
    Other,
}

impl Failure {
    const fn label(self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect timed out",
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::AnswerTimeout => "answer timed out",
            Failure::Other => "other",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub started: Instant,
    pub failure: Option<Failure>,
}

/// What the flood thread did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodStats {
    /// Frames the kernel took (the client's link passed them on).
    pub sent: u64,
    /// Frames the link refused (ENOBUFS: the LB's side had no room).
    pub refused: u64,
    pub elapsed: Duration,
    /// Stopped by [`MAX_FRAMES`] rather than the clock.
    pub capped: bool,
}

impl FloodStats {
    #[must_use]
    pub fn offered_per_s(&self) -> f64 {
        (self.sent + self.refused) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    #[must_use]
    pub fn sent_per_s(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// nftables' connection tracking in the LB namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conntrack {
    /// Entries when the flood ended, and at the end.
    pub entries_after_flood: u64,
    pub entries_at_end: u64,
    /// Over the run (/proc/net/stat/nf_conntrack, all CPUs).
    pub drop: u64,
    pub early_drop: u64,
    pub insert_failed: u64,
}

pub struct Run {
    pub system: System,
    /// The flood's rate when paced (SYNs/s); None: as fast as it can.
    pub paced: Option<u64>,
    pub flood: FloodStats,
    /// The client's eth0 over the flood: frames sent and dropped.
    pub link_tx: u64,
    pub link_dropped: u64,
    pub attempts: Vec<Attempt>,
    pub flood_start: Instant,
    pub flood_end: Instant,
    /// When the prober stopped.
    pub end: Instant,
    /// xlb: the data plane's counters over the run.
    pub dataplane: Option<Vec<(String, u64)>>,
    pub conntrack: Option<Conntrack>,
    /// Over the run: SYN cookies the LB's kernel sent (HAProxy's listener),
    /// and SYNs it dropped at a full listen queue (TcpExt ListenDrops).
    pub lb_syncookies: u64,
    pub lb_listen_drops: u64,
    /// SYN cookies both backends sent.
    pub backend_syncookies: u64,
    /// SYNs the prober's connections sent again.
    pub client_syn_retransmits: u64,
    /// Answers to spoofed sources that reached the client and ended there
    /// (Ip InAddrErrors in the client namespace).
    pub ended_in_client: u64,
}

/// A share of probes: (succeeded, of).
pub type Share = (usize, usize);

impl Run {
    /// The configuration and the flood's pace, as a table's first cell.
    #[must_use]
    pub fn label(&self) -> String {
        match self.paced {
            Some(rate) => format!("{}, flood paced at {}/s", self.system.name(), grouped(rate)),
            None => self.system.name(),
        }
    }
}

impl Run {
    fn share(&self, keep: impl Fn(&Attempt) -> bool) -> Share {
        let chosen: Vec<&Attempt> = self.attempts.iter().filter(|a| keep(a)).collect();
        (
            chosen.iter().filter(|a| a.failure.is_none()).count(),
            chosen.len(),
        )
    }

    #[must_use]
    pub fn before(&self) -> Share {
        self.share(|a| a.started < self.flood_start)
    }

    #[must_use]
    pub fn during(&self) -> Share {
        self.share(|a| a.started >= self.flood_start && a.started < self.flood_end)
    }

    #[must_use]
    pub fn after(&self) -> Share {
        self.share(|a| a.started >= self.flood_end)
    }

    /// Success by [`PERIOD`] over the `after` that followed the flood (the
    /// last period shorter if `after` is not a multiple).
    #[must_use]
    pub fn after_by_period(&self, after: Duration) -> Vec<Share> {
        let mut shares = Vec::new();
        let end = self.flood_end + after;
        let mut from = self.flood_end;
        while from < end {
            let to = (from + PERIOD).min(end);
            shares.push(self.share(|a| a.started >= from && a.started < to));
            from = to;
        }
        shares
    }

    /// From the end of the flood to the first probe from which on every
    /// probe succeeded, if that lasted [`STEADY`] to the end; zero when no
    /// probe failed after the flood.
    #[must_use]
    pub fn back_to_full(&self) -> Option<Duration> {
        let after: Vec<&Attempt> = self
            .attempts
            .iter()
            .filter(|a| a.started >= self.flood_end)
            .collect();
        let from = match after
            .iter()
            .filter(|a| a.failure.is_some())
            .map(|a| a.started)
            .max()
        {
            None => self.flood_end,
            Some(last_failure) => after
                .iter()
                .map(|a| a.started)
                .filter(|t| *t > last_failure)
                .min()?,
        };
        (self.end.saturating_duration_since(from) >= STEADY).then(|| from - self.flood_end)
    }

    /// Failed probes by why, over the whole run.
    #[must_use]
    pub fn failures(&self) -> Vec<(Failure, usize)> {
        let mut counts: Vec<(Failure, usize)> = Vec::new();
        for failure in self.attempts.iter().filter_map(|a| a.failure) {
            match counts.iter_mut().find(|(f, _)| *f == failure) {
                Some((_, n)) => *n += 1,
                None => counts.push((failure, 1)),
            }
        }
        counts.sort();
        counts
    }
}

pub struct Results {
    pub timing: Timing,
    /// The flood thread alone: frames addressed to a MAC no one has, which
    /// the LB's link drops as soon as it receives them.
    pub alone: FloodStats,
    pub runs: Vec<Run>,
}

/// How long the flood thread is timed alone.
pub const CALIBRATION: Duration = Duration::from_secs(3);
/// A unicast MAC no interface of the testbed has.
const NOBODY: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The flood thread's rate when nothing downstream works on its frames.
fn calibrate() -> anyhow::Result<FloodStats> {
    let bed = Testbed::new(&lb_tests::unique_tag("xs")).context("build the testbed")?;
    route_spoofed_sources(&bed)?;
    let flood = Flood::start(
        &bed.client,
        "eth0",
        (NOBODY, mac_of(&bed.client, "eth0")?),
        CALIBRATION,
        None,
        seed(),
    )?;
    flood.finish()
}

pub fn measure(timing: Timing) -> anyhow::Result<Results> {
    eprintln!(
        "xtask bench: SYN flood, the flood thread alone for {} s (frames to a MAC no one has)",
        CALIBRATION.as_secs()
    );
    let alone = calibrate().context("SYN flood: the flood alone")?;
    eprintln!(
        "  {} frames/s offered, {} taken",
        grouped(alone.offered_per_s().round() as u64),
        grouped(alone.sent_per_s().round() as u64)
    );
    let mut runs = Vec::new();
    for (paced, system) in [None, Some(timing.paced)]
        .into_iter()
        .flat_map(|paced| System::ALL.map(|system| (paced, system)))
    {
        super::check_interrupted()?;
        eprintln!(
            "xtask bench: SYN flood through {} for {} s{}, probing {} s before and {} s after",
            system.name(),
            timing.flood.as_secs(),
            paced.map_or_else(String::new, |rate| format!(" at {}/s", grouped(rate))),
            BEFORE.as_secs(),
            timing.after.as_secs()
        );
        let run = measure_system(system, timing, paced)
            .with_context(|| format!("SYN flood through {}", system.name()))?;
        let pct = |(ok, of): Share| percent(ok, of);
        eprintln!(
            "  flood: {} SYNs/s offered, {} taken; probes ok before {}, during {}, after {}; 100% again after {}",
            grouped(run.flood.offered_per_s().round() as u64),
            grouped(run.flood.sent_per_s().round() as u64),
            pct(run.before()),
            pct(run.during()),
            pct(run.after()),
            run.back_to_full()
                .map_or_else(|| format!("more than {} s", timing.after.as_secs()), seconds),
        );
        runs.push(run);
    }
    Ok(Results { timing, alone, runs })
}

fn measure_system(system: System, timing: Timing, paced: Option<u64>) -> anyhow::Result<Run> {
    let tag = lb_tests::unique_tag("xs");
    let mut bed = Testbed::new(&tag).context("build the testbed")?;
    route_spoofed_sources(&bed)?;
    match system {
        System::Xlb => {
            let (first, last) = SMALL_SNAT;
            let config = format!(
                "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nsnat_address = \"{LB_PRIVATE}\"\n\
                 snat_ports = \"{first}-{last}\"\n\n[admin]\nsocket = \"{}\"\n\n{}",
                bed.admin_socket().display(),
                base_services()
            );
            let path = bed.dir.join("xlb-synflood.toml");
            std::fs::write(&path, config).context("write the xlb config")?;
            // On error the testbed kills it.
            bed.daemon = Some(Daemon::start(&bed.lb, &path, &[]).context("start xlb")?);
            e2e::answers_from_both_backends(&bed, Duration::from_secs(5)).context("xlb")?;
            let run = flood_and_probe(&bed, system, timing, paced)?;
            let daemon = bed.daemon.take().context("xlb is not running")?;
            let status = daemon
                .stop_with(libc::SIGTERM, Duration::from_secs(10))
                .context("stop xlb")?;
            ensure!(status.success(), "xlb exited with {status}");
            Ok(run)
        }
        System::Nftables | System::NftablesSmall => {
            bed.lb.sysctl("net.ipv4.ip_forward", "1")?;
            let ports = (system == System::NftablesSmall).then_some(SMALL_SNAT);
            let table = NftTable::install_with(&bed.lb, &bed.dir, ports)?;
            e2e::answers_from_both_backends(&bed, Duration::from_secs(5)).context("nftables")?;
            let run = flood_and_probe(&bed, system, timing, paced)?;
            drop(table);
            Ok(run)
        }
        System::Haproxy => {
            let mut haproxy = Haproxy::start(&bed.lb, &bed.dir, "haproxy")?;
            if let Err(e) = e2e::answers_from_both_backends(&bed, Duration::from_secs(10)) {
                let exited = if haproxy.running() { "" } else { " (it exited)" };
                bail!("HAProxy{exited}: {e:#}; its log:\n{}", haproxy.log());
            }
            let run = flood_and_probe(&bed, system, timing, paced)?;
            drop(haproxy);
            Ok(run)
        }
    }
}

/// The LB reaches the spoofed sources through the client namespace, which
/// drops whatever arrives for them.
fn route_spoofed_sources(bed: &Testbed) -> anyhow::Result<()> {
    bed.client.sysctl("net.ipv4.ip_forward", "0")?;
    bed.client.ip(&["route", "add", "blackhole", SPOOFED])?;
    bed.lb.ip(&[
        "route",
        "add",
        SPOOFED,
        "via",
        &CLIENT_ADDRS[0].to_string(),
        "dev",
        "eth0",
    ])?;
    Ok(())
}

fn flood_and_probe(bed: &Testbed, system: System, timing: Timing, paced: Option<u64>) -> anyhow::Result<Run> {
    let xlb = system == System::Xlb;
    let nft = matches!(system, System::Nftables | System::NftablesSmall);
    let dataplane_before = if xlb {
        Some(dataplane_counters(&scrape(&bed.lb)?))
    } else {
        None
    };
    let conntrack_before = if nft {
        Some(conntrack_stats(&bed.lb)?)
    } else {
        None
    };
    let lb_before = (
        tcp_ext(&bed.lb, "SyncookiesSent")?,
        tcp_ext(&bed.lb, "ListenDrops")?,
    );
    let backends_before = backends_syncookies(bed)?;
    let retransmits_before = tcp_ext(&bed.client, "TCPSynRetrans")?;
    let ended_before = ip_counter(&bed.client, "InAddrErrors")?;
    let macs = (mac_of(&bed.lb, "eth0")?, mac_of(&bed.client, "eth0")?);

    let prober = Prober::start(&bed.client)?;
    wait(BEFORE)?;
    let link_before = link_tx(&bed.client, "eth0")?;
    let flood_start = Instant::now();
    let flood = Flood::start(&bed.client, "eth0", macs, timing.flood, paced, seed())?;
    let stats = flood.finish()?;
    let flood_end = Instant::now();
    let link_after = link_tx(&bed.client, "eth0")?;
    let entries_after_flood = if nft {
        Some(conntrack_entries(&bed.lb)?)
    } else {
        None
    };
    wait(timing.after)?;
    let end = Instant::now();
    let attempts = prober.stop()?;

    let dataplane = match dataplane_before {
        Some(before) => Some(counter_deltas(&before, &dataplane_counters(&scrape(&bed.lb)?))),
        None => None,
    };
    let conntrack = match (conntrack_before, entries_after_flood) {
        (Some(before), Some(entries_after_flood)) => {
            let after = conntrack_stats(&bed.lb)?;
            let delta = |name: &str| {
                let value =
                    |stats: &[(String, u64)]| stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
                value(&after).saturating_sub(value(&before))
            };
            Some(Conntrack {
                entries_after_flood,
                entries_at_end: conntrack_entries(&bed.lb)?,
                drop: delta("drop"),
                early_drop: delta("early_drop"),
                insert_failed: delta("insert_failed"),
            })
        }
        _ => None,
    };
    Ok(Run {
        system,
        paced,
        flood: stats,
        link_tx: link_after.0.saturating_sub(link_before.0),
        link_dropped: link_after.1.saturating_sub(link_before.1),
        attempts,
        flood_start,
        flood_end,
        end,
        dataplane,
        conntrack,
        lb_syncookies: tcp_ext(&bed.lb, "SyncookiesSent")?.saturating_sub(lb_before.0),
        lb_listen_drops: tcp_ext(&bed.lb, "ListenDrops")?.saturating_sub(lb_before.1),
        backend_syncookies: backends_syncookies(bed)?.saturating_sub(backends_before),
        client_syn_retransmits: tcp_ext(&bed.client, "TCPSynRetrans")?.saturating_sub(retransmits_before),
        ended_in_client: ip_counter(&bed.client, "InAddrErrors")?.saturating_sub(ended_before),
    })
}

/// Sleeps `d`; Ctrl-C ends it early, as an error.
fn wait(d: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())));
    }
    super::check_interrupted()
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn counter_deltas(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(name, value)| {
            let was = before.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
            (name.clone(), value.saturating_sub(was))
        })
        .collect()
}

fn backends_syncookies(bed: &Testbed) -> anyhow::Result<u64> {
    bed.webs.iter().map(|ns| tcp_ext(ns, "SyncookiesSent")).sum()
}

/// A counter of the `Ip:` group of /proc/net/snmp in `ns`.
fn ip_counter(ns: &Netns, name: &str) -> anyhow::Result<u64> {
    let text = ns.exec("cat", &["/proc/net/snmp"])?;
    netstat_value(&text, "Ip", name).with_context(|| format!("no Ip {name} in {}", ns.name()))
}

/// Frames sent and dropped by `dev` in `ns`, from its statistics.
fn link_tx(ns: &Netns, dev: &str) -> anyhow::Result<(u64, u64)> {
    let dir = format!("/sys/class/net/{dev}/statistics");
    let text = ns.exec(
        "cat",
        &[&format!("{dir}/tx_packets"), &format!("{dir}/tx_dropped")],
    )?;
    let mut values = text.split_whitespace().map(str::parse::<u64>);
    match (values.next(), values.next()) {
        (Some(Ok(tx)), Some(Ok(dropped))) => Ok((tx, dropped)),
        _ => bail!("unexpected statistics of {dev} in {}: {text:?}", ns.name()),
    }
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<[u8; 6]> {
    let link = ns.ip(&["-o", "link", "show", "dev", dev])?;
    let text = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC on {dev} in {}", ns.name()))?;
    parse_mac(text).with_context(|| format!("bad MAC {text:?}"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// /proc/net/stat/nf_conntrack summed over the CPUs (hexadecimal columns).
fn conntrack_stats(lb: &Netns) -> anyhow::Result<Vec<(String, u64)>> {
    let text = lb.exec("cat", &["/proc/net/stat/nf_conntrack"])?;
    parse_conntrack_stats(&text).with_context(|| format!("unexpected nf_conntrack statistics: {text:?}"))
}

fn parse_conntrack_stats(text: &str) -> Option<Vec<(String, u64)>> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut sums = vec![0_u64; names.len()];
    for line in lines {
        for (sum, value) in sums.iter_mut().zip(line.split_whitespace()) {
            *sum += u64::from_str_radix(value, 16).ok()?;
        }
    }
    Some(names.into_iter().map(str::to_owned).zip(sums).collect())
}

fn conntrack_entries(lb: &Netns) -> anyhow::Result<u64> {
    let text = lb.exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"])?;
    text.trim()
        .parse()
        .with_context(|| format!("unexpected nf_conntrack_count {text:?}"))
}

/// New connections to the VIP's frontend from the client namespace, one
/// every [`PROBE_PACE`], each on a thread of its own (a probe waiting out
/// its time-out holds no later one back); stopped on drop.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<std::io::Result<Vec<Attempt>>>>,
}

impl Prober {
    fn start(client: &Netns) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = client.spawn(move || {
            let target = SocketAddr::from((VIP, FRONTEND_PORT));
            let (done, results) = mpsc::channel();
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let spawned = if in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT {
                    let (done, in_flight) = (done.clone(), Arc::clone(&in_flight));
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    // A thread inherits the network namespace of the one
                    // that spawns it.
                    let spawned = std::thread::Builder::new().spawn(move || {
                        let failure = attempt(target);
                        let _ = done.send(Attempt { started, failure });
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                    spawned.is_ok()
                } else {
                    false
                };
                if !spawned {
                    let _ = done.send(Attempt {
                        started,
                        failure: Some(Failure::Other),
                    });
                }
                next = (next + PROBE_PACE).max(Instant::now());
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            drop(done);
            // Every probe ends within its time-outs.
            let mut attempts: Vec<Attempt> = results.iter().collect();
            attempts.sort_by_key(|a| a.started);
            attempts
        })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops, waits for the probes under way, returns every probe in the
    /// order they started.
    fn stop(mut self) -> anyhow::Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().context("the prober was stopped")?;
        match handle.join() {
            Ok(result) => Ok(result.context("prober: enter the client namespace")?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// One probe: a new connection and `GET /` with `Connection: close`.
fn attempt(target: SocketAddr) -> Option<Failure> {
    let kind = |e: &std::io::Error, timeout: Failure| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => timeout,
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => Failure::Reset,
        _ => Failure::Other,
    };
    let mut stream = match TcpStream::connect_timeout(&target, PROBE_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return Some(kind(&e, Failure::ConnectTimeout)),
    };
    match http::exchange(&mut stream, &http::get_and_close("/"), PROBE_TIMEOUT) {
        Ok(answer) if answer.starts_with("HTTP/1.1 200") => None,
        Ok(_) => Some(Failure::Other),
        Err(e) => Some(kind(&e, Failure::AnswerTimeout)),
    }
}

/// The flood: a thread in the client namespace sending spoofed SYNs from a
/// packet socket until its time is up or [`MAX_FRAMES`] are sent; stopped
/// on drop.
struct Flood {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<std::io::Result<std::io::Result<FloodStats>>>>,
}

impl Flood {
    /// `macs`: the LB's (destination) and the client's (source).
    fn start(
        ns: &Netns,
        dev: &str,
        macs: ([u8; 6], [u8; 6]),
        duration: Duration,
        paced: Option<u64>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let dev = dev.to_owned();
        let handle = ns.spawn(move || send_flood(&dev, macs, duration, paced, seed, &flag))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Waits for the flood to end (Ctrl-C stops it early, as an error).
    fn finish(mut self) -> anyhow::Result<FloodStats> {
        while self.handle.as_ref().is_some_and(|h| !h.is_finished()) {
            super::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let handle = self.handle.take().context("the flood was stopped")?;
        match handle.join() {
            Ok(result) => Ok(result
                .context("flood: enter the client namespace")?
                .context("flood: send")?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// xorshift64*: random enough for addresses and ports, and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A packet socket on `dev` that sends whole frames and receives nothing
/// (protocol 0), past the queueing discipline.
fn packet_socket(dev: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(dev).map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "device name"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = ifindex as i32;
    // SAFETY: a valid address of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: an int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            std::ptr::from_ref(&one).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// The frame's fixed part: Ethernet to the LB, IPv4 to the VIP (DF, TTL
/// 64), TCP SYN to the frontend port with window 64240 and MSS 1460.
fn template(macs: ([u8; 6], [u8; 6])) -> [u8; FRAME_LEN] {
    let mut f = [0_u8; FRAME_LEN];
    f[0..6].copy_from_slice(&macs.0);
    f[6..12].copy_from_slice(&macs.1);
    f[12..14].copy_from_slice(&0x0800_u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
    f[20..22].copy_from_slice(&0x4000_u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[30..34].copy_from_slice(&VIP.octets());
    f[36..38].copy_from_slice(&FRONTEND_PORT.to_be_bytes());
    f[46] = 6 << 4;
    f[47] = 0x02;
    f[48..50].copy_from_slice(&64240_u16.to_be_bytes());
    f[54..58].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    f
}

/// A random spoofed source in 10.0.0.0/8 (never .0 or .255 in its last
/// byte), source port from 1024, sequence number and IP id; both checksums.
fn randomize(f: &mut [u8; FRAME_LEN], rng: &mut Rng) {
    let r = rng.next();
    let host = (r as u32) & 0x00ff_ffff;
    let last = 1 + (host & 0xff) % 254;
    let source = Ipv4Addr::from(0x0a00_0000 | (host & 0x00ff_ff00) | last);
    let port = 1024 + ((r >> 24) as u16) % (u16::MAX - 1023);
    let id = (r >> 40) as u16;
    let seq = rng.next() as u32;
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[26..30].copy_from_slice(&source.octets());
    f[34..36].copy_from_slice(&port.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[24..26].fill(0);
    let ip = checksum(0, &f[14..34]);
    f[24..26].copy_from_slice(&ip.to_be_bytes());
    f[50..52].fill(0);
    // Pseudo-header: addresses, protocol, TCP length.
    let pseudo = sum_words(0, &f[26..34]) + 6 + (FRAME_LEN - 34) as u32;
    let tcp = checksum(pseudo, &f[34..FRAME_LEN]);
    f[50..52].copy_from_slice(&tcp.to_be_bytes());
}

/// The ones' complement sum of big-endian words (even length) onto `sum`.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    for word in bytes.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    sum
}

fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = sum_words(initial, bytes);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The flood loop, on a thread inside the client namespace.
fn send_flood(
    dev: &str,
    macs: ([u8; 6], [u8; 6]),
    duration: Duration,
    paced: Option<u64>,
    seed: u64,
    stop: &AtomicBool,
) -> std::io::Result<FloodStats> {
    let socket = packet_socket(dev)?;
    let mut rng = Rng(seed | 1);
    let mut frames = vec![template(macs); BATCH];
    let mut iovecs: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: FRAME_LEN,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all zero is a valid value.
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut stats = FloodStats::default();
    let started = Instant::now();
    let deadline = started + duration;
    let mut offered: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Some(rate) = paced {
            // Each batch when its turn comes at the paced rate.
            let due = started + Duration::from_secs_f64(offered as f64 / rate.max(1) as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        offered += BATCH as u64;
        if stats.sent + stats.refused >= MAX_FRAMES {
            stats.capped = true;
            break;
        }
        for frame in &mut frames {
            randomize(frame, &mut rng);
        }
        // SAFETY: BATCH messages, each pointing at one iovec of one live
        // frame; none of them moves while the call runs.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), BATCH as u32, 0) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // The link had no room: the frame is lost, as on a wire.
                Some(libc::ENOBUFS | libc::EAGAIN) => stats.refused += 1,
                _ => return Err(error),
            }
        } else {
            let sent = sent as u64;
            stats.sent += sent;
            // sendmmsg stops at the first frame the link refused.
            if sent < BATCH as u64 {
                stats.refused += 1;
            }
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn percent(ok: usize, of: usize) -> String {
    if of == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", ok as f64 / of as f64 * 100.0)
    }
}

fn share_cell((ok, of): Share) -> String {
    if of == 0 {
        "-".to_owned()
    } else {
        format!("{} ({ok}/{of})", percent(ok, of))
    }
}

fn seconds(d: Duration) -> String {
    if d.is_zero() {
        "at once".to_owned()
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

pub fn section(r: &Results) -> String {
    let after_secs = r.timing.after.as_secs();
    let mut main = Table::new(&[
        ("Configuration", false),
        ("Flood: SYNs/s offered", true),
        ("taken by the link", true),
        ("Probes before", true),
        ("During the flood", true),
        (&format!("After it ({after_secs} s)"), true),
        ("100% again after", true),
        ("Failed probes", false),
    ]);
    for run in &r.runs {
        let failures = run.failures();
        main.row(vec![
            run.label(),
            grouped(run.flood.offered_per_s().round() as u64),
            grouped(run.flood.sent_per_s().round() as u64),
            share_cell(run.before()),
            share_cell(run.during()),
            share_cell(run.after()),
            run.back_to_full()
                .map_or_else(|| format!("not within {after_secs} s"), seconds),
            if failures.is_empty() {
                "none".to_owned()
            } else {
                failures
                    .iter()
                    .map(|(f, n)| format!("{} {}", f.label(), grouped(*n as u64)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ]);
    }

    let periods = after_secs.div_ceil(PERIOD.as_secs()) as usize;
    let heads: Vec<String> = (0..periods)
        .map(|i| {
            let from = PERIOD.as_secs() * i as u64;
            format!("+{}-{} s", from, (from + PERIOD.as_secs()).min(after_secs))
        })
        .collect();
    let mut columns: Vec<(&str, bool)> = vec![("Configuration", false)];
    columns.extend(heads.iter().map(|h| (h.as_str(), true)));
    let mut timeline = Table::new(&columns);
    for run in &r.runs {
        let mut cells = vec![run.label()];
        let shares = run.after_by_period(r.timing.after);
        cells.extend((0..periods).map(|i| {
            shares
                .get(i)
                .map_or_else(|| "-".to_owned(), |&(ok, of)| percent(ok, of))
        }));
        timeline.row(cells);
    }

    let mut counters = Table::new(&[
        ("Configuration", false),
        ("Load balancer (over the run)", false),
        ("Backends: SYN cookies sent", true),
        ("Client: SYN retransmits", true),
        ("Answers to spoofed sources ended in the client", true),
    ]);
    for run in &r.runs {
        let lb = match (&run.dataplane, &run.conntrack) {
            (Some(dataplane), _) => {
                let shown: Vec<String> = dataplane
                    .iter()
                    .filter(|(name, value)| {
                        *value > 0
                            && (name.starts_with("forward_new")
                                || name.starts_with("syn_")
                                || name.starts_with("drop_")
                                || name.starts_with("reset_")
                                || name.starts_with("pass_no_"))
                    })
                    .map(|(name, value)| format!("`{name}` {}", grouped(*value)))
                    .collect();
                if shown.is_empty() {
                    "no new connection, drop or reset counted".to_owned()
                } else {
                    shown.join(", ")
                }
            }
            (None, Some(c)) => format!(
                "conntrack entries {} after the flood, {} at the end; drop {}, early_drop {}, insert_failed {}",
                grouped(c.entries_after_flood),
                grouped(c.entries_at_end),
                grouped(c.drop),
                grouped(c.early_drop),
                grouped(c.insert_failed),
            ),
            (None, None) => format!(
                "SYN cookies sent {}, listen drops {}",
                grouped(run.lb_syncookies),
                grouped(run.lb_listen_drops)
            ),
        };
        counters.row(vec![
            run.label(),
            lb,
            grouped(run.backend_syncookies),
            grouped(run.client_syn_retransmits),
            grouped(run.ended_in_client),
        ]);
    }

    let rates: Vec<f64> = r
        .runs
        .iter()
        .filter(|run| run.paced.is_none())
        .map(|run| run.flood.offered_per_s())
        .collect();
    let fastest = rates.iter().copied().fold(0.0, f64::max);
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let capped = if r.runs.iter().any(|run| run.flood.capped) {
        format!(
            " (a flood stopped at its bound of {} frames)",
            grouped(MAX_FRAMES)
        )
    } else {
        String::new()
    };
    let refused: u64 = r.runs.iter().map(|run| run.flood.refused).sum();
    let link_dropped: u64 = r.runs.iter().map(|run| run.link_dropped).sum();
    let link_tx: u64 = r.runs.iter().map(|run| run.link_tx).sum();
    let taken: u64 = r.runs.iter().map(|run| run.flood.sent).sum();
    let verdicts: Vec<String> = r
        .runs
        .iter()
        .filter(|run| run.system == System::Xlb)
        .map(|x| {
        format!(
            "**xlb with {} SNAT ports, flood {}: {} of probes succeeded during the flood, {} after it, 100% again {}.**",
            grouped(u64::from(SMALL_SNAT.1 - SMALL_SNAT.0) + 1),
            x.paced.map_or_else(|| "as fast as the client sends".to_owned(), |rate| format!("paced at {}/s", grouped(rate))),
            percent(x.during().0, x.during().1),
            percent(x.after().0, x.after().1),
            x.back_to_full().map_or_else(
                || format!("not within {after_secs} s"),
                |d| if d.is_zero() {
                    "at once".to_owned()
                } else {
                    format!("after {}", seconds(d))
                }
            ),
        )
    })
    .collect();
    let verdict = verdicts.join("\n\n");
    format!(
        "{HEADING}\n\n\
         One thread in the client namespace sends SYNs from a packet socket (AF_PACKET, \
         `sendmmsg` of {BATCH} frames, past the queueing discipline) to `{VIP}:{FRONTEND_PORT}`, \
         each from a random address in {SPOOFED} and a random port, with a random sequence \
         number and an MSS option, as fast as it can for {flood} s: alone (its frames addressed to \
         a MAC no one has, dropped as soon as the LB's link receives them) it sends \
         **{alone} frames/s** ({alone_taken} taken by the link); meanwhile a prober in the same \
         namespace opens a new connection to the VIP every {pace} ms, each on a thread of its own, \
         and sends `GET /` (time-outs: {timeout} s to connect, {timeout} s for each read of the \
         answer: a SYN lost once fails the probe, since the client's first retransmission comes \
         after 1 s). Probing starts {before} s before the flood and goes on {after_secs} s after \
         it. Each configuration on a fresh testbed: xlb with {small} SNAT ports ({first}-{last}), \
         so that their exhaustion shows, and its default `syn_cookies = \"under-pressure\"`: once \
         a SYN finds no tuple, or takes one from a half-open connection, the XDP program answers \
         the service's SYNs itself with SYN cookies for 10 s, and opens a backend connection only \
         for a client that answers its cookie; nftables (DNAT and SNAT, conntrack) from any free port, \
         and from the same {small} ports; HAProxy with the reference configuration, whose \
         kernel answers the SYNs itself (SYN cookies once its queue is full). The flood's rate \
         depends on what receives it: on veth, the receiving side's work (XDP, or the kernel's \
         stack up to the backend) runs on the sending CPU: through the load balancers it offered \
         {fastest} SYNs/s at most, {slowest} at least{capped}; *offered* counts every frame handed to the link, *taken* those it passed \
         on ({taken} over all runs, and {refused} refused; the client's link counted {link_tx} frames sent, \
         the prober's included, and {link_dropped} dropped). \
         The spoofed sources never leave the testbed: the LB namespace routes {SPOOFED} to the \
         client namespace, which does not forward and has a blackhole route for it, so every \
         answer to a spoofed source (the backends' SYN-ACKs, xlb's and HAProxy's kernel's SYN \
         cookies) ends there (last column below). *100% again after*: from the end of the flood to the \
         first probe from which on every probe succeeded, for at least {steady} s to the end.\n\n\
         On this 2-core machine the flood and the link's receiving side share a CPU, so at full \
         speed the link drops frames before any load balancer sees them: the prober's SYNs and \
         ACKs among them, whatever the load balancer does. Every configuration is therefore run \
         a second time with the flood paced at {paced} SYNs/s (about {paced_mbit} Mbit/s of \
         64-byte frames), which the link takes whole through xlb: what fails then fails in the \
         load balancer.\n\n\
         {main}\n\
         Probes succeeded after the flood, by {period} s:\n\n\
         {timeline}\n\
         What the flood left, over each run: xlb's data plane counters (metrics endpoint: new \
         connections forwarded, drops by reason), nftables' connection tracking in the LB \
         namespace (entries, and /proc/net/stat/nf_conntrack), the LB kernel's SYN cookies and \
         listen drops for HAProxy (TcpExt), the backends' SYN cookies, the prober's SYN \
         retransmissions (TcpExtTCPSynRetrans in the client) and the client's IP InAddrErrors, \
         the packets for an address it neither has nor forwards to.\n\n\
         {counters}\n\
         {verdict}\n",
        flood = r.timing.flood.as_secs(),
        alone = grouped(r.alone.offered_per_s().round() as u64),
        alone_taken = grouped(r.alone.sent_per_s().round() as u64),
        pace = PROBE_PACE.as_millis(),
        timeout = PROBE_TIMEOUT.as_secs(),
        before = BEFORE.as_secs(),
        small = grouped(u64::from(SMALL_SNAT.1 - SMALL_SNAT.0) + 1),
        first = SMALL_SNAT.0,
        last = SMALL_SNAT.1,
        fastest = grouped(fastest.round() as u64),
        slowest = grouped(if slowest.is_finite() { slowest.round() as u64 } else { 0 }),
        refused = grouped(refused),
        taken = grouped(taken),
        link_tx = grouped(link_tx),
        link_dropped = grouped(link_dropped),
        steady = STEADY.as_secs(),
        paced = grouped(r.timing.paced),
        paced_mbit = r.timing.paced * 64 * 8 / 1_000_000,
        period = PERIOD.as_secs(),
        main = main.render(),
        timeline = timeline.render(),
        counters = counters.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_frame(f: &[u8]) -> lb_tests::packet::Parsed {
        lb_tests::packet::parse_and_verify(f).unwrap()
    }

    #[test]
    fn flood_frames_are_valid_spoofed_syns() {
        let macs = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut frame = template(macs);
        let mut rng = Rng(42);
        let mut sources = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            randomize(&mut frame, &mut rng);
            let p = parse_frame(&frame);
            assert_eq!((p.dst, p.dst_port, p.proto, p.ttl), (VIP, FRONTEND_PORT, 6, 64));
            assert_eq!(p.src.octets()[0], 10);
            assert!(!matches!(p.src.octets()[3], 0 | 255));
            assert!(p.src_port >= 1024);
            assert_eq!(frame[47], 0x02, "SYN only");
            assert_eq!((p.dst_mac, p.src_mac), macs);
            sources.insert(p.src);
        }
        assert!(sources.len() > 990, "random sources: {}", sources.len());
    }

    #[test]
    fn conntrack_statistics_add_up_over_cpus() {
        let text = "entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop\n\
                    0000000a 00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000010 00000000\n\
                    0000000a 00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000001 00000001 00000003\n";
        let stats = parse_conntrack_stats(text).unwrap();
        let get = |n: &str| stats.iter().find(|(name, _)| name == n).unwrap().1;
        assert_eq!((get("drop"), get("early_drop"), get("insert_failed")), (17, 3, 3));
        assert!(parse_conntrack_stats("a b\nzz 1\n").is_none());
    }

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("02:ab:00:00:00:ff"), Some([2, 0xab, 0, 0, 0, 0xff]));
        assert_eq!(parse_mac("02:ab:00"), None);
    }

    fn run(outcomes: &[(u64, bool)], flood: (u64, u64), end_ms: u64) -> Run {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        Run {
            system: System::Xlb,
            paced: None,
            flood: FloodStats::default(),
            link_tx: 0,
            link_dropped: 0,
            attempts: outcomes
                .iter()
                .map(|&(ms, ok)| Attempt {
                    started: at(ms),
                    failure: (!ok).then_some(Failure::ConnectTimeout),
                })
                .collect(),
            flood_start: at(flood.0),
            flood_end: at(flood.1),
            end: at(end_ms),
            dataplane: None,
            conntrack: None,
            lb_syncookies: 0,
            lb_listen_drops: 0,
            backend_syncookies: 0,
            client_syn_retransmits: 0,
            ended_in_client: 0,
        }
    }

    #[test]
    fn shares_and_recovery() {
        // Flood from 1 s to 2 s; failures until 4 s; ends at 12 s.
        let outcomes: Vec<(u64, bool)> = (0..48)
            .map(|i| (i * 250, !(1000..4000).contains(&(i * 250))))
            .collect();
        let r = run(&outcomes, (1000, 2000), 12_000);
        assert_eq!(r.before(), (4, 4));
        assert_eq!(r.during(), (0, 4));
        assert_eq!(r.after(), (32, 40));
        assert_eq!(r.back_to_full(), Some(Duration::from_secs(2)));
        assert_eq!(r.after_by_period(Duration::from_secs(10)), [(32, 40)]);
        assert_eq!(r.after_by_period(Duration::from_secs(15)), [(32, 40), (0, 0)]);
        assert_eq!(r.failures(), [(Failure::ConnectTimeout, 12)]);
        // Not long enough at 100% before the end.
        let r = run(&outcomes, (1000, 2000), 8_000);
        assert_eq!(r.back_to_full(), None);
        // No failure after the flood: at once.
        let r = run(&outcomes, (1000, 4000), 12_000);
        assert_eq!(r.back_to_full(), Some(Duration::ZERO));
        // The last probe failed: never.
        let r = run(&[(0, true), (3000, false)], (1000, 2000), 12_000);
        assert_eq!(r.back_to_full(), None);
    }

    #[test]
    fn the_section_renders() {
        let outcomes: Vec<(u64, bool)> = (0..48).map(|i| (i * 250, i % 2 == 0)).collect();
        let results = Results {
            timing: Timing {
                flood: Duration::from_secs(1),
                after: Duration::from_secs(10),
                paced: 100_000,
            },
            alone: FloodStats::default(),
            runs: vec![run(&outcomes, (1000, 2000), 12_000)],
        };
        let text = section(&results);
        assert!(text.starts_with(HEADING));
        assert!(text.contains("| +0-10 s |"));
        assert!(text.contains("not within 10 s"));
    }
}
