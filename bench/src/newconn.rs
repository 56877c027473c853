//! New connections: one request per connection (`wrk -H 'Connection:
//! close'`) for minutes, through xlb, nftables, HAProxy and no load
//! balancer, each on a fresh testbed. Long enough to pass every hold time:
//! the backends close each connection and keep its 4-tuple in TIME_WAIT for
//! 60 s, and a load balancer that holds a closed connection's SNAT port
//! until then runs out of ports at this rate. Beside wrk's report: the
//! client's connection rate over time, xlb's drops by reason, the SYNs the
//! backends refused for matching one of their TIME_WAIT connections
//! (TcpExtPAWSTimewait) and the SYNs the client had to send again
//! (TcpExtTCPSynRetrans).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use lb_tests::{
    http,
    netns::Netns,
    testbed::{base_services, Testbed, FRONTEND_PORT, LB_PRIVATE, VIP, WEB_ADDRS, WEB_NAMES},
};

use super::{
    e2e::{self, DirectLink, NftTable, DIRECT_CLIENT},
    haproxy::Haproxy,
    health::{backends_paws_timewait, dataplane_counters, netstat_value, scrape, tcp_ext},
    report::{grouped, latency, ratio, Table},
    wrk::{self, Load, SocketErrors},
};

pub const HEADING: &str = "## New connections: one request per connection";
/// The load: wrk threads and connections, as in the end-to-end run.
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 32;
const CLOSE: &str = "Connection: close";
/// The client's connection counter is read this often.
const SAMPLE: Duration = Duration::from_secs(1);
/// Progress on stderr this often.
const PROGRESS: Duration = Duration::from_secs(30);
/// The slowest stretch of a run is looked for over windows this long.
const WINDOW: Duration = Duration::from_secs(10);
/// xlb's SNAT ports on the testbed (`Testbed::write_config`).
const XLB_SNAT_PORTS: &str = "20000-29999";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Xlb,
    Nftables,
    Haproxy,
    Direct,
}

impl System {
    pub const ALL: [System; 4] = [System::Xlb, System::Nftables, System::Haproxy, System::Direct];

    const fn label(self) -> &'static str {
        match self {
            System::Xlb => "through xlb",
            System::Nftables => "through nftables",
            System::Haproxy => "through HAProxy",
            System::Direct => "straight to the backends",
        }
    }
}

/// One configuration's run.
pub struct Run {
    pub system: System,
    /// Its row's name.
    pub name: String,
    pub load: Load,
    pub errors: SocketErrors,
    /// Connections the client opened (TcpActiveOpens) since wrk started,
    /// sampled every [`SAMPLE`]: (time since the start, count).
    pub opened: Vec<(Duration, u64)>,
    /// xlb only: the data plane's counters over the run.
    pub counters: Option<Vec<(String, u64)>>,
    /// Over the run: SYNs the backends refused as matching a TIME_WAIT
    /// connection (TcpExtPAWSTimewait, both backends), SYNs the client sent
    /// again (TcpExtTCPSynRetrans).
    pub paws_timewait: u64,
    pub syn_retransmits: u64,
}

impl Run {
    /// Connections opened per second from `from` to `to` (since the start),
    /// read between the samples around them; None outside the samples.
    #[must_use]
    pub fn opened_per_s(&self, from: Duration, to: Duration) -> Option<f64> {
        let (a, b) = (count_at(&self.opened, from)?, count_at(&self.opened, to)?);
        let span = to.saturating_sub(from).as_secs_f64();
        (span > 0.0).then(|| (b - a) / span)
    }

    /// The rate by consecutive periods of `bucket` over `duration`.
    #[must_use]
    pub fn timeline(&self, duration: Duration, bucket: Duration) -> Vec<f64> {
        let mut rates = Vec::new();
        let mut from = Duration::ZERO;
        while from < duration {
            let to = (from + bucket).min(duration);
            if let Some(rate) = self.opened_per_s(from, to) {
                rates.push(rate);
            }
            from = to;
        }
        rates
    }

    /// The slowest [`WINDOW`] of the run (consecutive windows from the
    /// start), and when it began.
    #[must_use]
    pub fn slowest_window(&self, duration: Duration) -> Option<(Duration, f64)> {
        let mut slowest: Option<(Duration, f64)> = None;
        let mut from = Duration::ZERO;
        while from + WINDOW <= duration {
            if let Some(rate) = self.opened_per_s(from, from + WINDOW) {
                if slowest.is_none_or(|(_, s)| rate < s) {
                    slowest = Some((from, rate));
                }
            }
            from += WINDOW;
        }
        slowest
    }

    /// Non-zero drops, resets and hand-overs of the data plane, by reason.
    #[must_use]
    pub fn drops(&self) -> Option<Vec<(String, u64)>> {
        self.counters.as_ref().map(|counters| {
            counters
                .iter()
                .filter(|(name, value)| {
                    *value > 0
                        && (name.starts_with("drop_")
                            || name.starts_with("reset_")
                            || name.starts_with("pass_no_"))
                })
                .cloned()
                .collect()
        })
    }

    fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .as_ref()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// The cumulative count at `t`, interpolated between the samples around it.
fn count_at(samples: &[(Duration, u64)], t: Duration) -> Option<f64> {
    let after = samples.iter().position(|(at, _)| *at >= t)?;
    let (t1, c1) = samples[after];
    if after == 0 {
        // The first sample is taken before wrk starts: nothing was opened
        // before it.
        return Some(c1 as f64);
    }
    let (t0, c0) = samples[after - 1];
    let span = (t1 - t0).as_secs_f64();
    let part = if span > 0.0 {
        (t - t0).as_secs_f64() / span
    } else {
        1.0
    };
    Some(c0 as f64 + (c1 as f64 - c0 as f64) * part)
}

pub struct Results {
    pub duration: Duration,
    pub runs: Vec<Run>,
}

impl Results {
    fn run(&self, system: System) -> Option<&Run> {
        self.runs.iter().find(|r| r.system == system)
    }

    /// The periods the rate over time is given by: minutes for runs of two
    /// minutes or more, else quarters of the run.
    #[must_use]
    pub fn bucket(&self) -> Duration {
        if self.duration >= Duration::from_secs(120) {
            Duration::from_secs(60)
        } else {
            Duration::from_secs((self.duration.as_secs() / 4).max(1))
        }
    }
}

/// Each configuration for `duration`, one after the other, each on a
/// testbed of its own: no backend holds another configuration's
/// connections in TIME_WAIT.
pub fn measure(duration: Duration) -> anyhow::Result<Results> {
    let mut runs = Vec::new();
    for system in System::ALL {
        super::check_interrupted()?;
        eprintln!(
            "xtask bench: new connections, one request each, {} for {} s",
            system.label(),
            duration.as_secs()
        );
        let run = measure_system(system, duration)
            .with_context(|| format!("new connections {}", system.label()))?;
        let errors = run.errors;
        eprintln!(
            "  {:.0} req/s, p99 {:.0} us; wrk errors: connect {}, read {}, write {}, timeout {}; PAWS refusals {}, \
             client SYN retransmits {}{}",
            run.load.requests_per_s,
            run.load.p99_us,
            errors.connect,
            errors.read,
            errors.write,
            errors.timeout,
            run.paws_timewait,
            run.syn_retransmits,
            run.drops().map_or_else(String::new, |drops| format!(
                "; data plane: {}",
                drop_list(&drops)
            )),
        );
        runs.push(run);
    }
    Ok(Results { duration, runs })
}

fn measure_system(system: System, duration: Duration) -> anyhow::Result<Run> {
    let tag = lb_tests::unique_tag("xn");
    let mut bed = Testbed::new(&tag).context("build the testbed")?;
    let vip = vec![(e2e::vip_url(), THREADS, CONNECTIONS)];
    let (name, measured) = match system {
        System::Xlb => {
            let daemon = bed.start_lb(&base_services(), &[]).context("start xlb")?;
            let modes = e2e::attach_modes(&daemon.log_text());
            e2e::answers_from_both_backends(&bed, Duration::from_secs(5)).context("xlb")?;
            let measured = load(&bed, &vip, duration, true)?;
            // On error the testbed kills it.
            let daemon = bed.daemon.take().context("xlb is not running")?;
            let status = daemon
                .stop_with(libc::SIGTERM, Duration::from_secs(10))
                .context("stop xlb")?;
            ensure!(status.success(), "xlb exited with {status}");
            (
                format!("xlb: XDP full NAT ({modes} mode), SNAT ports {XLB_SNAT_PORTS}"),
                measured,
            )
        }
        System::Nftables => {
            bed.lb.sysctl("net.ipv4.ip_forward", "1")?;
            let table = NftTable::install(&bed.lb, &bed.dir)?;
            e2e::answers_from_both_backends(&bed, Duration::from_secs(5)).context("nftables")?;
            let measured = load(&bed, &vip, duration, false)?;
            drop(table);
            (
                format!("nftables: DNAT (numgen inc) + SNAT to {LB_PRIVATE}, kernel conntrack"),
                measured,
            )
        }
        System::Haproxy => {
            let mut haproxy = Haproxy::start(&bed.lb, &bed.dir, "haproxy")?;
            if let Err(e) = e2e::answers_from_both_backends(&bed, Duration::from_secs(10)) {
                let exited = if haproxy.running() { "" } else { " (it exited)" };
                anyhow::bail!("HAProxy{exited}: {e:#}; its log:\n{}", haproxy.log());
            }
            let measured = load(&bed, &vip, duration, false)?;
            drop(haproxy);
            (
                "HAProxy: the reference configuration (mode http, roundrobin)".to_owned(),
                measured,
            )
        }
        System::Direct => {
            let link = DirectLink::add(&bed.client, &format!("{tag}-sw"))?;
            for (addr, name) in WEB_ADDRS.iter().zip(WEB_NAMES) {
                let mut stream = bed
                    .connect((DIRECT_CLIENT, 0), (*addr, FRONTEND_PORT))
                    .with_context(|| format!("connect straight to {name}"))?;
                let body = http::get(&mut stream)?;
                ensure!(body.starts_with(name), "{addr} answered {body:?}");
            }
            let targets: Vec<(String, u32, u32)> = WEB_ADDRS
                .iter()
                .map(|addr| {
                    (
                        format!("http://{addr}:{FRONTEND_PORT}/"),
                        THREADS / 2,
                        CONNECTIONS / 2,
                    )
                })
                .collect();
            let measured = load(&bed, &targets, duration, false)?;
            drop(link);
            (
                "no load balancer: client straight to both backends".to_owned(),
                measured,
            )
        }
    };
    Ok(Run {
        system,
        name,
        errors: SocketErrors::of(&measured.load),
        load: measured.load,
        opened: measured.opened,
        counters: measured.counters,
        paws_timewait: measured.paws_timewait,
        syn_retransmits: measured.syn_retransmits,
    })
}

struct Measured {
    load: Load,
    opened: Vec<(Duration, u64)>,
    counters: Option<Vec<(String, u64)>>,
    paws_timewait: u64,
    syn_retransmits: u64,
}

/// wrk with `Connection: close` against each of `targets` (URL, threads,
/// connections) at once for `duration`; the runs seen as one, and the
/// counters around them (`xlb`: the data plane's too).
fn load(
    bed: &Testbed,
    targets: &[(String, u32, u32)],
    duration: Duration,
    xlb: bool,
) -> anyhow::Result<Measured> {
    let paws_before = backends_paws_timewait(bed)?;
    let retransmits_before = tcp_ext(&bed.client, "TCPSynRetrans")?;
    let counters_before = if xlb {
        Some(dataplane_counters(&scrape(&bed.lb)?))
    } else {
        None
    };
    let started = Instant::now();
    let sampler = Sampler::start(&bed.client, started)?;
    // All started before any is waited for; an error drops (kills) the rest.
    let mut runs = targets
        .iter()
        .map(|(url, threads, connections)| {
            wrk::start_with_headers(&bed.client, url, *threads, *connections, duration, &[CLOSE])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut next_progress = PROGRESS;
    // wrk ends on its own; past this, `finish` reports it stuck.
    let bound = duration + Duration::from_secs(30);
    while runs.iter_mut().any(wrk::Running::running) && started.elapsed() < bound {
        super::check_interrupted()?;
        let elapsed = started.elapsed();
        if elapsed >= next_progress {
            let samples = sampler.samples();
            let rate = samples.last().and_then(|&(at, now)| {
                let from = count_at(&samples, at.checked_sub(PROGRESS)?)?;
                Some((now as f64 - from) / PROGRESS.as_secs_f64())
            });
            eprintln!(
                "  {:>4} s: {} connections/s opened over the last {} s",
                next_progress.as_secs(),
                rate.map_or_else(|| "?".to_owned(), |r| grouped(r.round() as u64)),
                PROGRESS.as_secs()
            );
            next_progress += PROGRESS;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // A Ctrl-C reaches wrk too, which then ends early.
    super::check_interrupted()?;
    let loads = runs
        .into_iter()
        .map(wrk::Running::finish)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opened = sampler.stop();
    let counters = match counters_before {
        Some(before) => {
            let after = dataplane_counters(&scrape(&bed.lb)?);
            Some(
                after
                    .into_iter()
                    .map(|(name, value)| {
                        let was = before.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
                        (name, value.saturating_sub(was))
                    })
                    .collect(),
            )
        }
        None => None,
    };
    Ok(Measured {
        load: Load::combined(&loads),
        opened,
        counters,
        paws_timewait: backends_paws_timewait(bed)?.saturating_sub(paws_before),
        syn_retransmits: tcp_ext(&bed.client, "TCPSynRetrans")?.saturating_sub(retransmits_before),
    })
}

/// Reads the client's TcpActiveOpens every [`SAMPLE`] on a thread inside
/// its namespace (from /proc/thread-self/net/snmp: /proc/self/net is the
/// main thread's namespace); stopped on drop.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sampler {
    fn start(ns: &Netns, started: Instant) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (Arc::clone(&stop), Arc::clone(&samples));
        let thread = ns.spawn(move || {
            let mut next = Instant::now();
            loop {
                let opened = std::fs::read_to_string("/proc/thread-self/net/snmp")
                    .ok()
                    .and_then(|text| netstat_value(&text, "Tcp", "ActiveOpens"));
                if let (Some(opened), Ok(mut samples)) = (opened, sink.lock()) {
                    samples.push((started.elapsed(), opened));
                }
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                next += SAMPLE;
                while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(
                        Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())),
                    );
                }
            }
        })?;
        let sampler = Self {
            stop,
            samples,
            thread: Some(thread),
        };
        // The first sample before wrk starts: the counts start from it.
        lb_tests::wait::until(
            "the first reading of the client's TcpActiveOpens",
            Duration::from_secs(5),
            || !sampler.samples().is_empty(),
        )?;
        Ok(sampler)
    }

    /// The samples so far, counted from the first.
    fn samples(&self) -> Vec<(Duration, u64)> {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let first = samples.first().map_or(0, |(_, c)| *c);
        samples
            .into_iter()
            .map(|(t, c)| (t, c.saturating_sub(first)))
            .collect()
    }

    /// Stops (after one last sample) and returns every sample.
    fn stop(mut self) -> Vec<(Duration, u64)> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

fn drop_list(drops: &[(String, u64)]) -> String {
    if drops.is_empty() {
        "none".to_owned()
    } else {
        drops
            .iter()
            .map(|(name, value)| format!("`{name}` {}", grouped(*value)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn rate(r: f64) -> String {
    grouped(r.round().max(0.0) as u64)
}

fn period(d: Duration) -> String {
    if d.as_secs().is_multiple_of(60) && d.as_secs() >= 60 {
        let m = d.as_secs() / 60;
        if m == 1 {
            "minute".to_owned()
        } else {
            format!("{m} minutes")
        }
    } else {
        format!("{} s", d.as_secs())
    }
}

pub fn section(r: &Results) -> String {
    let bucket = r.bucket();
    let mut table = Table::new(&[
        ("Configuration", false),
        ("Requests/s", true),
        ("p99", true),
        ("Connections/s by period", true),
        ("Slowest 10 s", true),
        ("wrk errors: connect / read / write / timeout", true),
        ("xlb: drops by reason", false),
        ("PAWS refusals (backends)", true),
        ("SYN retransmits (client)", true),
    ]);
    let xlb_rate = r.run(System::Xlb).map(|x| x.load.requests_per_s);
    for run in &r.runs {
        let e = run.errors;
        table.row(vec![
            run.name.clone(),
            rate(run.load.requests_per_s),
            latency(run.load.p99_us),
            run.timeline(r.duration, bucket)
                .into_iter()
                .map(rate)
                .collect::<Vec<_>>()
                .join(" / "),
            run.slowest_window(r.duration).map_or_else(
                || "-".to_owned(),
                |(at, slowest)| format!("{} (at {} s)", rate(slowest), at.as_secs()),
            ),
            format!(
                "{} / {} / {} / {}{}",
                grouped(e.connect),
                grouped(e.read),
                grouped(e.write),
                grouped(e.timeout),
                if e.non_2xx > 0 {
                    format!(", non-2xx {}", grouped(e.non_2xx))
                } else {
                    String::new()
                }
            ),
            run.drops().map_or_else(|| "-".to_owned(), |d| drop_list(&d)),
            grouped(run.paws_timewait),
            grouped(run.syn_retransmits),
        ]);
    }
    let goal = match (r.run(System::Xlb), r.run(System::Nftables)) {
        (Some(x), Some(n)) => {
            let drops: u64 = x.drops().unwrap_or_default().iter().map(|(_, v)| v).sum();
            let met = x.load.requests_per_s >= n.load.requests_per_s && drops == 0 && x.paws_timewait == 0;
            format!(
                "**xlb / nftables: {}**, with {} packets dropped or reset by the data plane and {} PAWS \
                 refusals (goal: at or above 1, with 0 drops and 0 PAWS refusals: {}).",
                ratio(x.load.requests_per_s, n.load.requests_per_s),
                grouped(drops),
                grouped(x.paws_timewait),
                if met { "met" } else { "not met" }
            )
        }
        _ => String::new(),
    };
    let others = r
        .runs
        .iter()
        .filter(|run| run.system != System::Xlb)
        .map(|run| {
            format!(
                "{} {}",
                match run.system {
                    System::Nftables => "nftables",
                    System::Haproxy => "HAProxy",
                    System::Direct => "no LB",
                    System::Xlb => "xlb",
                },
                xlb_rate.map_or_else(|| "-".to_owned(), |x| ratio(x, run.load.requests_per_s))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let forwarded = r.run(System::Xlb).and_then(|x| {
        Some(format!(
            " Through xlb the data plane forwarded {} new connections (`forward_new`) for the {} requests wrk \
             completed.",
            grouped(x.counter("forward_new")?),
            grouped(x.load.requests)
        ))
    });
    format!(
        "{HEADING}\n\n\
         `wrk -t{threads} -c{conns} -d{secs}s --latency -H '{CLOSE}' http://{VIP}:{FRONTEND_PORT}/` \
         from the client namespace: every request on a connection of its own, which the backend \
         closes after its answer, so that the backend holds each connection's 4-tuple (through a load \
         balancer: its private address and a source port it chose) in TIME_WAIT for 60 s. \
         Each configuration runs {secs} s, past every hold time, on a fresh testbed (no backend \
         holds another configuration's connections), one after the other: xlb with its defaults \
         (the client's ports, 32768-60999, kept: the daemon moves the LB's own range to \
         `local_ports`, 10000-19999; pool `snat_ports` {XLB_SNAT_PORTS} for the rest), nftables (DNAT to the backends in turn, SNAT to the \
         LB's private address from any free port), HAProxy with the reference configuration, and no \
         LB (two `wrk -t{half_threads} -c{half_conns}` at once, one per backend, over a link from the \
         client into the private network; their requests add up, their p99 is the worse). \
         *Connections/s*: the connections the client opened (TcpActiveOpens in its namespace, read \
         every second), by {period} and over the slowest 10 s window; wrk's latency starts when a \
         request is written, so a connection that waits for its SYN to be answered shows in these \
         rates and in the client's SYN retransmissions (TcpExtTCPSynRetrans), not in p99. wrk counts \
         a *timeout* for a request not answered within 2 s. *xlb: drops by reason*: the data plane's \
         counters over the run (metrics endpoint), every drop, reset and hand-over to the kernel; a \
         new connection's SYN is dropped as `drop_nat_ports_exhausted` when no SNAT port is free, \
         `drop_conntrack_full` when the connection table refuses it. *PAWS refusals*: SYNs the \
         backends refused because they matched a connection of theirs in TIME_WAIT with an older \
         timestamp (TcpExtPAWSTimewait, both backends).\n\n\
         {table}\n\
         {goal} xlb / others: {others}.{forwarded}\n",
        threads = THREADS,
        conns = CONNECTIONS,
        secs = r.duration.as_secs(),
        half_threads = THREADS / 2,
        half_conns = CONNECTIONS / 2,
        period = period(bucket),
        table = table.render(),
        forwarded = forwarded.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opened: Vec<(Duration, u64)>) -> Run {
        Run {
            system: System::Xlb,
            name: "xlb".to_owned(),
            load: wrk::parse(
                "  10 requests in 1.00s, 1KB read\nRequests/sec: 10.0\n     50%  1.00ms\n     99%  2.00ms\n",
            )
            .unwrap(),
            errors: SocketErrors::default(),
            opened,
            counters: Some(vec![
                ("forward_new".to_owned(), 10),
                ("drop_nat_ports_exhausted".to_owned(), 3),
                ("drop_malformed".to_owned(), 0),
                ("pass_not_service".to_owned(), 5),
            ]),
            paws_timewait: 0,
            syn_retransmits: 0,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn rates_come_from_the_samples_around_each_period() {
        // 100/s for 20 s, then 10/s for 20 s.
        let samples: Vec<(Duration, u64)> = (0..=40)
            .map(|t| (secs(t), if t <= 20 { t * 100 } else { 2000 + (t - 20) * 10 }))
            .collect();
        let r = run(samples);
        assert_eq!(r.timeline(secs(40), secs(20)), [100.0, 10.0]);
        assert_eq!(r.slowest_window(secs(40)), Some((secs(20), 10.0)));
        assert!(
            (r.opened_per_s(Duration::from_millis(500), Duration::from_millis(1500))
                .unwrap()
                - 100.0)
                .abs()
                < 1e-9
        );
        // Before the first sample: its count (it is taken before wrk starts).
        assert_eq!(r.opened_per_s(Duration::ZERO, secs(1)), Some(100.0));
        // Past the last sample: unknown.
        assert_eq!(r.opened_per_s(secs(30), secs(41)), None);
        assert_eq!(r.slowest_window(secs(5)), None);
    }

    #[test]
    fn drops_are_the_nonzero_drop_counters() {
        let r = run(vec![(secs(0), 0)]);
        assert_eq!(r.drops().unwrap(), [("drop_nat_ports_exhausted".to_owned(), 3)]);
        assert_eq!(drop_list(&r.drops().unwrap()), "`drop_nat_ports_exhausted` 3");
        assert_eq!(r.counter("forward_new"), Some(10));
    }

    #[test]
    fn periods_are_minutes_for_long_runs() {
        let results = |s| Results {
            duration: secs(s),
            runs: Vec::new(),
        };
        assert_eq!(results(300).bucket(), secs(60));
        assert_eq!(results(20).bucket(), secs(5));
        assert_eq!(period(secs(60)), "minute");
        assert_eq!(period(secs(5)), "5 s");
    }

    #[test]
    fn the_section_states_the_goal() {
        let samples: Vec<(Duration, u64)> = (0..=20).map(|t| (secs(t), t * 10)).collect();
        let mut nft = run(samples.clone());
        nft.system = System::Nftables;
        nft.counters = None;
        nft.name = "nftables".to_owned();
        let results = Results {
            duration: secs(20),
            runs: vec![run(samples), nft],
        };
        let text = section(&results);
        assert!(text.starts_with(HEADING));
        assert!(text.contains("**xlb / nftables: 1.00x**, with 3 packets dropped"));
        assert!(text.contains("not met"));
        assert!(text.contains("10 / 10 / 10 / 10"));
    }
}
