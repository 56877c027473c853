//! The results as Markdown: printed as they come, and written to
//! BENCHMARKS.md with the machine they came from.

use std::process::Command;

use lb_tests::testbed::{FRONTEND_PORT, VIP};

use super::{
    e2e::{self, Results, Summary},
    health::{self, IdleChecks},
    micro::{self, Case, Micro},
    process::Memory,
    Spread,
};

/// Where and when the numbers were taken.
pub struct Machine {
    pub date: String,
    pub cpus: String,
    pub cpu_model: String,
    pub virtual_machine: bool,
    pub kernel: String,
    pub revision: String,
    pub tools: Vec<String>,
    pub keepalived_installed: bool,
}

impl Machine {
    pub fn detect() -> anyhow::Result<Self> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpuinfo_field = |name: &str| {
            cpuinfo
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_owned())
        };
        Ok(Self {
            date: lb_tests::run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?
                .trim()
                .to_owned(),
            cpus: lb_tests::run("nproc", &[])?.trim().to_owned(),
            cpu_model: cpuinfo_field("model name").unwrap_or_else(|| "unknown CPU".to_owned()),
            virtual_machine: cpuinfo_field("flags")
                .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor")),
            kernel: lb_tests::run("uname", &["-r"])?.trim().to_owned(),
            revision: revision(),
            tools: [
                ("haproxy", "-v"),
                ("nginx", "-v"),
                ("nft", "--version"),
                ("wrk", "--version"),
                ("keepalived", "--version"),
            ]
            .iter()
            .map(|(tool, flag)| version(tool, flag))
            .collect(),
            keepalived_installed: ["/usr/sbin/keepalived", "/usr/bin/keepalived"]
                .iter()
                .any(|p| std::path::Path::new(p).exists()),
        })
    }
}

/// The commit, marked when the tree has changes.
fn revision() -> String {
    let root = crate::root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain"]),
    ) {
        (Some(commit), Some(changes)) if changes.is_empty() => commit,
        (Some(commit), Some(_)) => format!("{commit} with uncommitted changes"),
        _ => "unknown revision".to_owned(),
    }
}

/// The first line a tool prints about its version (some print it on
/// stderr, wrk exits non-zero), cut before URLs and copyright notices.
fn version(tool: &str, flag: &str) -> String {
    let Ok(output) = Command::new(tool).arg(flag).output() else {
        return format!("{tool}: not found");
    };
    let text = [output.stdout, output.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().next().unwrap_or(tool);
    let line = line.split(" - http").next().unwrap_or(line);
    let line = line.split(" Copyright").next().unwrap_or(line);
    line.trim().to_owned()
}

/// A Markdown table with aligned columns.
pub(super) struct Table {
    head: Vec<String>,
    /// Right-aligned (numeric) columns.
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(columns: &[(&str, bool)]) -> Self {
        Self {
            head: columns.iter().map(|(name, _)| (*name).to_owned()).collect(),
            right: columns.iter().map(|(_, right)| *right).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn render(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|row| row.get(i).map_or(0, |cell| cell.chars().count()))
                .chain([self.head[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        };
        let widths: Vec<usize> = (0..self.head.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = String>| {
            let mut text = String::from("|");
            for (i, cell) in cells.enumerate() {
                let w = widths[i];
                if self.right[i] {
                    text.push_str(&format!(" {cell:>w$} |"));
                } else {
                    text.push_str(&format!(" {cell:<w$} |"));
                }
            }
            text.push('\n');
            text
        };
        let mut out = line(&mut self.head.iter().cloned());
        out.push('|');
        for (w, right) in widths.iter().zip(&self.right) {
            let rule = if *right {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(*w)
            };
            out.push_str(&format!(" {rule} |"));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().cloned()));
        }
        out
    }
}

/// 1234567 -> "1,234,567".
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn latency(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(super) fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

pub fn micro_section(m: &Micro) -> String {
    let floor = m.net(Case::Floor);
    let mut table = Table::new(&[
        ("Case", false),
        ("Frame", false),
        ("Packets", true),
        ("Per call, ns", true),
        ("Rounds' range", true),
        ("Net, ns", true),
        ("Net / floor", true),
    ]);
    for case in Case::ALL {
        let spread = m.per_call(case);
        table.row(vec![
            case.label().to_owned(),
            case.frame(),
            grouped(m.packets(case)),
            format!("{:.0}", spread.median),
            format!("{:.0}-{:.0}", spread.min, spread.max),
            format!("{:.0}", m.net(case)),
            ratio(m.net(case), floor),
        ]);
    }
    let established = Case::Established;
    format!(
        "## Per-packet cost of the XDP program\n\n\
         The real program, configured with the testbed's services, run by \
         BPF_PROG_TEST_RUN in a namespace whose routes and neighbours let its FIB \
         lookups succeed; next to it `bench_floor`, the least any XDP forwarder does \
         (parse Ethernet and IPv4, swap the MACs, XDP_TX). {rounds} rounds, each in a \
         fresh namespace with a freshly loaded program and empty tables, the cases \
         interleaved in chunks so that the machine's noise falls on all of them alike. \
         *Per call* is the median over the rounds of the kernel's mean time for one \
         packet; the range is the fastest and the slowest round. New flows: 4,000 per \
         round, each a SYN from a new source port, filling the table from empty to 20% \
         of the frontend's SNAT ports.\n\n\
         Method: one packet per call. With `repeat`, the kernel runs the program again \
         on the frame the previous run left behind; xlb rewrites its frame, so from the \
         second run on it sees a frame addressed to the backend's MAC, another host's, \
         and the repeat would time that cheap path instead of the one named (every \
         round checks it: {shown} repeats of the established frame count 1 \
         `forward_established` and {shown_pass} `pass_other_host`). A one-packet call also \
         times the kernel's timing window (clock reads, entering the program): the \
         floor per call minus the floor repeated {repeat} times in the kernel (which it \
         can be: its output is as valid as its input) gives that overhead, \
         **{overhead:.0} ns**, subtracted in the *net* column; the floor's net is its \
         repeated time. Cross-check: the not-a-service frame, which the program leaves \
         untouched and so can also be repeated, measures {ns_repeated:.1} ns repeated \
         against {ns_net:.0} ns net by subtraction. After every round the program's \
         counters must match: every packet of every case took the path it is named \
         after.\n\n\
         {table}\n\
         **Established flow / floor: {net_ratio} net** ({raw_ratio} per call, timing \
         window included). Goal: within 2x. What a known connection's translation and \
         forwarding (rewrite, FIB lookup, redirect) add to a packet that is only looked \
         up and passed: {forwarding:.0} ns (established minus not a service).\n",
        rounds = micro::ROUNDS,
        shown = grouped(u64::from(micro::REPEAT_SHOWN)),
        shown_pass = grouped(u64::from(micro::REPEAT_SHOWN - 1)),
        repeat = grouped(u64::from(micro::IN_KERNEL_REPEAT)),
        overhead = m.overhead(),
        ns_repeated = m.not_service_repeated.median,
        ns_net = m.net(Case::NotService),
        table = table.render(),
        net_ratio = ratio(m.net(established), floor),
        forwarding = m.net(established) - m.net(Case::NotService),
        raw_ratio = ratio(m.per_call(established).median, m.per_call(Case::Floor).median),
    )
}

fn load_row(table: &mut Table, name: String, this: &Summary, xlb: &Summary) {
    let rate = this.requests_per_s();
    let errors = this.errors();
    table.row(vec![
        name,
        grouped(rate.median.round() as u64),
        format!(
            "{}-{}",
            grouped(rate.min.round() as u64),
            grouped(rate.max.round() as u64)
        ),
        latency(this.p50_us()),
        latency(this.p99_us()),
        ratio(xlb.requests_per_s().median, rate.median),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join("; ")
        },
    ]);
}

pub fn e2e_section(r: &Results, machine: &Machine) -> String {
    let haproxy_version = machine
        .tools
        .iter()
        .find_map(|t| t.strip_prefix("HAProxy version "))
        .and_then(|v| v.split_whitespace().next())
        .map_or_else(|| "HAProxy".to_owned(), |v| format!("HAProxy {v}"));
    let mut table = Table::new(&[
        ("Configuration", false),
        ("Requests/s", true),
        ("Rounds' range", true),
        ("p50", true),
        ("p99", true),
        ("xlb / this", true),
        ("wrk errors", false),
    ]);
    let rows = [
        (format!("xlb: XDP full NAT ({} mode)", r.xdp_mode), &r.xlb),
        (
            format!(
                "{haproxy_version}: mode http, roundrobin, forwardfor, {} threads",
                r.haproxy_loaded.threads
            ),
            &r.haproxy,
        ),
        (
            "nftables: DNAT (numgen inc) + SNAT, kernel conntrack".to_owned(),
            &r.nftables,
        ),
        (
            "no load balancer: client straight to both backends".to_owned(),
            &r.direct,
        ),
    ];
    for (name, summary) in rows {
        load_row(&mut table, name, summary, &r.xlb);
    }
    let xlb = r.xlb.requests_per_s().median;
    format!(
        "## End to end: HTTP through each load balancer\n\n\
         `wrk -t{threads} -c{conns} -d{secs}s --latency http://{VIP}:{FRONTEND_PORT}/` from \
         the client namespace to the two nginx backends (one worker each, keep-alive), \
         each run after a {warm} s warm-up run. {rounds} rounds on one testbed, each \
         running every configuration once, in an order that rotates from round to round; \
         the table gives the medians over the rounds, and the slowest and fastest \
         round's requests/s. HAProxy runs the reference configuration's frontends and \
         backends (without its stats pages) in the foreground with its default thread \
         count; nftables does in the kernel what xlb does (full NAT, round robin per \
         connection). The no-LB row is two `wrk -t{half_threads} -c{half_conns}` at once, \
         one per backend, over an extra link from the client into the private network: \
         their requests add up, their latencies are the worse of the two.\n\n\
         {table}\n\
         **xlb / nftables: {vs_nft}** (goal: above 1). **xlb / HAProxy: {vs_haproxy}.** \
         **xlb / no LB: {vs_direct:.2}** (goal: at least 0.90).\n\n\
         Everything shares the machine's {cpus} CPUs: wrk, both nginx and the load \
         balancer, so a balancer that costs CPU takes it from the backends and the client. \
         The links are veth pairs, where native XDP is at a disadvantage a NIC driver does \
         not impose: veth copies each frame whose buffer is cloned or short of headroom \
         (every TCP segment a local socket sends) into a fresh page before the program runs, \
         and the peer rebuilds a socket buffer from every redirected frame; nftables and \
         the no-LB path forward the socket buffers as they are.\n",
        threads = e2e::THREADS,
        conns = e2e::CONNECTIONS,
        secs = e2e::DURATION.as_secs(),
        warm = e2e::WARM_UP.as_secs(),
        rounds = e2e::ROUNDS,
        half_threads = e2e::THREADS / 2,
        half_conns = e2e::CONNECTIONS / 2,
        table = table.render(),
        vs_nft = ratio(xlb, r.nftables.requests_per_s().median),
        vs_haproxy = ratio(xlb, r.haproxy.requests_per_s().median),
        vs_direct = xlb / r.direct.requests_per_s().median,
        cpus = machine.cpus,
    )
}

pub fn memory_section(r: &Results, machine: &Machine) -> String {
    let mut table = Table::new(&[
        ("Process", false),
        ("VmRSS", true),
        ("VmHWM (peak)", true),
        ("When", false),
    ]);
    let mut row = |name: &str, m: &Memory, when: &str| {
        table.row(vec![
            name.to_owned(),
            mib(m.rss_kib),
            mib(m.peak_kib),
            when.to_owned(),
        ]);
    };
    row("xlb", &r.xlb_started, "just started");
    row("xlb", &r.xlb_loaded, "after its last end-to-end run");
    row(
        &format!("HAProxy ({} threads)", r.haproxy_loaded.threads),
        &r.haproxy_loaded,
        "after its last end-to-end run",
    );
    if !machine.keepalived_installed {
        table.row(vec![
            "keepalived".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "not installed on this machine: not measured".to_owned(),
        ]);
    }
    format!(
        "## Memory\n\n\
         Resident memory from /proc/PID/status, the daemon running the example \
         configuration (the testbed's frontend, API and UDP services).\n\n\
         {}\n\
         Reference: HAProxy and keepalived together ~21 MB on the reference droplets. \
         Goal: xlb under 16 MB.\n",
        table.render()
    )
}

/// Seconds, to the millisecond.
fn seconds(s: f64) -> String {
    format!("{s:.3} s")
}

fn window(w: (std::time::Duration, std::time::Duration)) -> String {
    format!("{:.2}-{:.2} s", w.0.as_secs_f64(), w.1.as_secs_f64())
}

fn spread_cells(spread: Option<Spread>) -> [String; 2] {
    spread.map_or_else(
        || ["-".to_owned(), "-".to_owned()],
        |s| [seconds(s.median), format!("{:.3}-{:.3}", s.min, s.max)],
    )
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    if values.is_empty() {
        0.0
    } else {
        Spread::of(values).median
    }
}

pub fn health_section(h: &health::Results) -> String {
    let mut detection = Table::new(&[
        ("Check (frontend)", false),
        ("web1", false),
        ("Window", true),
        ("Probes: median", true),
        ("Probes: range, s", true),
        ("Log: median", true),
        ("Log: range, s", true),
        ("In window", true),
    ]);
    let mut anomalies = Vec::new();
    for d in &h.detection {
        let removal = d.timing.removal_window();
        let reentry = d.timing.reentry_window();
        let (inside, of) = d.within(|t| t.removal_probes, removal);
        let [probes_median, probes_range] = spread_cells(d.removal_probes());
        let [log_median, log_range] = spread_cells(d.removal_log());
        detection.row(vec![
            d.timing.label(),
            "dies: out of rotation".to_owned(),
            window(removal),
            probes_median,
            probes_range,
            log_median,
            log_range,
            format!("{inside}/{of}"),
        ]);
        let (inside, of) = d.within(|t| t.reentry_probes, reentry);
        let [probes_median, probes_range] = spread_cells(d.reentry_probes());
        let [log_median, log_range] = spread_cells(d.reentry_log());
        detection.row(vec![
            String::new(),
            "returns: back in rotation".to_owned(),
            window(reentry),
            probes_median,
            probes_range,
            log_median,
            log_range,
            format!("{inside}/{of}"),
        ]);
        for (i, t) in d.trials.iter().enumerate() {
            for a in &t.anomalies {
                anomalies.push(format!("{}, trial {}: {a}", d.timing.label(), i + 1));
            }
            if t.removal_probes.is_none() {
                anomalies.push(format!(
                    "{}, trial {}: the probes did not show web1's removal",
                    d.timing.label(),
                    i + 1
                ));
            }
            if t.reentry_probes.is_none() {
                anomalies.push(format!(
                    "{}, trial {}: web1 answered no probe after its return",
                    d.timing.label(),
                    i + 1
                ));
            }
        }
    }
    let counters = h
        .detection
        .iter()
        .map(|d| {
            let count = |name: &str| d.counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
            let unusual: Vec<String> = d
                .counters
                .iter()
                .filter(|(name, value)| {
                    *value > 0
                        && (name.starts_with("drop_")
                            || name.starts_with("reset_")
                            || name.starts_with("pass_no_"))
                })
                .map(|(name, value)| format!("{name} {}", grouped(*value)))
                .collect();
            format!(
                "with {}, {} new connections forwarded, {}; {} SYNs refused by a backend's TIME_WAIT, \
                 {} SYNs sent again by the client",
                d.timing.label(),
                grouped(count("forward_new")),
                if unusual.is_empty() {
                    "no packet dropped, reset or handed to the kernel unresolved".to_owned()
                } else {
                    unusual.join(", ")
                },
                grouped(d.backend_paws_timewait),
                grouped(d.client_syn_retransmits),
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let collided = h
        .detection
        .iter()
        .any(|d| d.backend_paws_timewait > 0 || d.client_syn_retransmits > 0);
    let collisions = if collided {
        "A backend refuses a SYN that matches one of its own connections still in TIME_WAIT \
         (the probes' answers close from the backend's side, so the backend keeps the SNAT \
         address and port for 60 s) when the SYN's timestamp is older, which with \
         per-connection timestamp offsets is a coin toss; the client then resets and sends \
         its SYN again, at once, or after its 1 s retransmission timeout, which a probe \
         (500 ms) reports as a timeout. The data plane holds a closed connection's SNAT port \
         back for 61 s against this. Possible gaps: a backend's 60 s TIME_WAIT timer may fire \
         up to a couple of seconds late, and, reading the code, the port is given back at \
         once when the client reuses its own source port for a new connection (both \
         entries of the old one are removed). A restarted daemon has no record of the \
         ports at all, which is why each schedule here runs on a fresh testbed.\n\n"
    } else {
        ""
    };
    let trials: Vec<&health::Trial> = h.detection.iter().flat_map(|d| &d.trials).collect();
    let refused = median_of(trials.iter().map(|t| t.refused as f64));
    let in_rotation = median_of(trials.iter().map(|t| t.probes_while_in_rotation as f64));
    let stop_ms = median_of(trials.iter().map(|t| t.stop_took.as_secs_f64() * 1000.0));
    let start_ms = median_of(trials.iter().map(|t| t.start_took.as_secs_f64() * 1000.0));
    let trial_counts = h
        .detection
        .iter()
        .map(|d| format!("{} with {}", d.trials.len(), d.timing.label()))
        .collect::<Vec<_>>()
        .join(", ");
    let anomalies = if anomalies.is_empty() {
        "Nothing unexpected: no probe was refused after the DOWN line, no probe failed \
         other than by a refusal, and no frontend backend went down or up unprompted."
            .to_owned()
    } else {
        format!(
            "Unexpected ({}):\n\n{}",
            anomalies.len(),
            anomalies
                .iter()
                .map(|a| format!("- {a}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };

    let mut idle = Table::new(&[
        ("Checks on frontend and API", false),
        ("Watched", true),
        ("Checks run", true),
        ("Expected", true),
        ("Failed", true),
        ("CPU, schedstat", true),
        ("CPU, utime+stime", true),
        ("Per check, above baseline", true),
        ("VmRSS", true),
        ("VmHWM", true),
    ]);
    let baseline = h
        .idle
        .iter()
        .find(|i| i.checks == IdleChecks::None)
        .map(health::Idle::cpu_percent_sched);
    for run in &h.idle {
        let per_check = match (baseline, run.checks_run) {
            (Some(base), n) if n > 0 && run.checks != IdleChecks::None => {
                let extra_s = (run.cpu_percent_sched() - base) / 100.0 * run.wall.as_secs_f64();
                format!("{:.0} µs", extra_s / n as f64 * 1e6)
            }
            _ => "-".to_owned(),
        };
        idle.row(vec![
            run.checks.label().to_owned(),
            format!("{:.0} s", run.wall.as_secs_f64()),
            grouped(run.checks_run),
            format!("{:.0}", run.checks_expected()),
            grouped(run.check_failures),
            format!("{:.3}%", run.cpu_percent_sched()),
            format!("{:.2}%", run.cpu_percent_ticks()),
            per_check,
            mib(run.memory.rss_kib),
            mib(run.memory.peak_kib),
        ]);
    }
    let reference = h.idle.iter().find(|i| i.checks == IdleChecks::Tcp);
    let goal = reference.map_or_else(
        || "not measured".to_owned(),
        |r| {
            format!(
                "{:.3}% of one core with the default TCP checks",
                r.cpu_percent_sched()
            )
        },
    );
    format!(
        "## Health checks\n\n\
         How long a dead backend stays in rotation and a returning one stays out, \
         against the windows its check schedule allows; and what checking costs the \
         daemon. On the namespace testbed, the frontend service gets the schedule \
         below (the API keeps the default TCP check every 2 s). Each trial waits a \
         random part of `inter`, stops web1's nginx, waits for the daemon's `backend \
         DOWN` line, waits a random part of `downinter`, starts nginx again and waits \
         for `backend UP (rise reached)`. Trials: {trial_counts}.\n\n\
         Throughout, a prober in the client namespace opens a new connection to \
         `{VIP}:{FRONTEND_PORT}` every {probe_ms} ms and sends one request. While web1 \
         is dead but in rotation, the connections sent to it are refused (its kernel \
         resets the forwarded SYN); while both are in rotation the probes alternate \
         between the backends, so a change shows within two probes. *Probes* is the \
         client's view: from nginx gone (it has exited, its sockets closed) to the \
         first probe that shows web1 out of rotation (the second after the last \
         refused one), and from nginx listening again to the first probe web1 \
         answers. *Log* is the time the daemon's line arrived, which it writes after \
         the maps changed. *Window*: for a backend that is UP and has passed a check, \
         the next regular check (up to `inter` away) fails, then `fall` - 1 more at \
         `fastinter`: from (`fall` - 1) x `fastinter` to `inter` + (`fall` - 1) x \
         `fastinter`; a returning backend passes the next check while down (up to \
         `downinter` away), then `rise` - 1 more at `fastinter`. *In window*: trials \
         whose probe time lies inside it, give or take {tolerance} ms (nginx takes \
         {stop_ms:.0} ms to stop and {start_ms:.0} ms to start, medians; the probes \
         see a change up to two probes late).\n\n\
         {detection}\n\
         While web1 was dead and still in rotation, a median {refused:.0} of the \
         {in_rotation:.0} new connections the prober opened were refused: every other \
         one, as round robin sends them. Each schedule runs on a fresh testbed and daemon. \
         Counters over the trials (the data plane's, and the kernel's TcpExt \
         PAWSTimewait in the backends and TCPSynRetrans in the client): {counters}. \
         {anomalies}\n\n\
         {collisions}\
         HAProxy with the same `inter`, `fastinter`, `downinter`, `rise` and `fall` \
         schedules its checks the same way (fastinter while a change is pending, \
         downinter while down), so a clean death and return take it the same number of \
         checks at the same intervals: the same windows. It counts differently under \
         flapping: its health counter moves one step per result (a success between \
         failures undoes one of them), where xlb needs `fall` failures in a row. With \
         the reference configuration's plain `check` (inter 2s, rise 2, fall 3), \
         which is also xlb's default, the windows are 4-6 s out and 2-4 s back.\n\n\
         CPU and memory: the daemon with the testbed's services, its frontend and API \
         (2 backends each, the reference configuration's pools) checked as below and \
         the UDP service unchecked, no traffic, watched after {settle} s of start-up. \
         CPU is the daemon's on-CPU time over the wall time, as a share of one core: \
         *schedstat* by the scheduler's nanosecond clock (its threads, from \
         /proc/PID/task/*/schedstat), *utime+stime* from /proc/PID/stat at the clock \
         tick's resolution. The baseline has no checks: what remains is the \
         daemon's own periodic work (sampling the rates every 2 s). Checks counted by \
         the daemon's metrics, read outside the window; *expected*: one per checked \
         backend every 2 s. *Per check* is the CPU above the baseline divided by the \
         checks: it includes the kernel's work for the check's packets (on veth much \
         of the receiving side, the backend's included, runs in the sender's \
         context), and XDP running on them. VmRSS and VmHWM (peak) at the end of the \
         window.\n\n\
         {idle}\n\
         **Checking the reference configuration: {goal}** (goal: under 1%).\n",
        probe_ms = health::PROBE_INTERVAL.as_millis(),
        tolerance = health::TOLERANCE.as_millis(),
        settle = health::IDLE_SETTLE.as_secs(),
        detection = detection.render(),
        idle = idle.render(),
    )
}

/// The line before a section written by `--write --only PART`: the file's
/// head describes the last full run, not this one.
/// `binary`: the daemon measured, named by when it was built (it need not
/// be built from the tree the revision names).
pub fn alone_preface(machine: &Machine, part: &str, binary: &std::path::Path) -> String {
    let built = binary
        .to_str()
        .and_then(|path| lb_tests::run("date", &["-u", "-r", path, "+%Y-%m-%d %H:%M UTC"]).ok())
        .map_or_else(|| "unknown".to_owned(), |d| d.trim().to_owned());
    format!(
        "_Measured on its own (`cargo xtask bench --only {part} --write`) on {date}, at {revision} \
         (the xlb binary built {built}), on {cpus} CPUs, kernel {kernel}:_",
        date = machine.date,
        revision = machine.revision,
        cpus = machine.cpus,
        kernel = machine.kernel,
    )
}

pub fn document(machine: &Machine, sections: &[String]) -> String {
    let virt = if machine.virtual_machine {
        ", virtual machine"
    } else {
        ""
    };
    format!(
        "# Benchmarks\n\n\
         Produced by `cargo xtask bench --write` on {date}, at {revision}.\n\n\
         Machine: {cpus} CPUs ({model}{virt}), kernel {kernel}. Tools: {tools}.\n\n\
         One run on a shared machine: the numbers are noisy, and comparisons hold \
         within the run better than across runs. This is a measurement, not a test: \
         the goals are stated for context.\n\n\
         {body}",
        date = machine.date,
        revision = machine.revision,
        cpus = machine.cpus,
        model = machine.cpu_model,
        kernel = machine.kernel,
        tools = machine.tools.join(", "),
        body = sections.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn tables_align() {
        let mut table = Table::new(&[("Name", false), ("n", true)]);
        table.row(vec!["a".to_owned(), "1,000".to_owned()]);
        assert_eq!(
            table.render(),
            "| Name |     n |\n| ---- | ----: |\n| a    | 1,000 |\n"
        );
    }

    #[test]
    fn latencies_read_naturally() {
        assert_eq!(latency(224.0), "224 µs");
        assert_eq!(latency(1050.0), "1.05 ms");
    }
}
