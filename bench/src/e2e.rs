//! End to end: the same HTTP load (wrk in the client namespace, keep-alive
//! connections to the two nginx backends) through xlb, HAProxy and nftables
//! in the LB namespace, then with no load balancer at all, one after another
//! on one testbed. Also the resident memory of xlb and HAProxy.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use lb_tests::{
    http,
    netns::Netns,
    testbed::{base_services, Testbed, CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, VIP, WEB_ADDRS, WEB_NAMES},
};

use super::{
    haproxy::Haproxy,
    process::{memory_of, Memory},
    wrk::{self, Load},
    Spread,
};

/// Load: wrk threads and connections, and how long it runs.
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 32;
pub const DURATION: Duration = Duration::from_secs(10);
/// A short run before each measured one, so that every configuration is
/// measured warm (connections, caches, conntrack entries).
pub const WARM_UP: Duration = Duration::from_secs(2);
/// The client's address on the private network, for the no-LB runs.
pub(super) const DIRECT_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
const NFT_TABLE: &str = "xlb_bench";

/// Rounds: each runs every configuration once, the order rotating from
/// round to round, so that drift in the machine's background load does not
/// favour one configuration.
pub const ROUNDS: usize = 3;

/// What a client got through one configuration, round by round.
pub struct Summary {
    pub runs: Vec<Load>,
}

impl Summary {
    #[must_use]
    pub fn requests_per_s(&self) -> Spread {
        Spread::of(self.runs.iter().map(|l| l.requests_per_s).collect())
    }

    #[must_use]
    pub fn p50_us(&self) -> f64 {
        Spread::of(self.runs.iter().map(|l| l.p50_us).collect()).median
    }

    #[must_use]
    pub fn p99_us(&self) -> f64 {
        Spread::of(self.runs.iter().map(|l| l.p99_us).collect()).median
    }

    #[must_use]
    pub fn errors(&self) -> Vec<String> {
        self.runs.iter().flat_map(|l| l.errors.clone()).collect()
    }
}

pub struct Results {
    pub xlb: Summary,
    /// XDP mode(s) the daemon attached in, from its log.
    pub xdp_mode: String,
    /// xlb's memory right after its first start, and after its last run.
    pub xlb_started: Memory,
    pub xlb_loaded: Memory,
    pub haproxy: Summary,
    /// HAProxy's memory after its last run.
    pub haproxy_loaded: Memory,
    pub nftables: Summary,
    /// Both backends' runs as one.
    pub direct: Summary,
}

#[derive(Clone, Copy)]
enum Configuration {
    Xlb,
    Haproxy,
    Nftables,
    Direct,
}

impl Configuration {
    const fn label(self) -> &'static str {
        match self {
            Configuration::Xlb => "through xlb",
            Configuration::Haproxy => "through HAProxy",
            Configuration::Nftables => "through nftables",
            Configuration::Direct => "straight to the backends",
        }
    }
}

pub fn measure() -> anyhow::Result<Results> {
    let tag = lb_tests::unique_tag("xb");
    let mut bed = Testbed::new(&tag).context("build the testbed")?;
    let mut order = [
        Configuration::Xlb,
        Configuration::Haproxy,
        Configuration::Nftables,
        Configuration::Direct,
    ];
    let (mut xlb, mut haproxy, mut nftables, mut direct) = (vec![], vec![], vec![], vec![]);
    let (mut xlb_memory, mut haproxy_memory, mut xdp_modes) = (vec![], vec![], BTreeSet::new());
    for round in 1..=ROUNDS {
        for configuration in order {
            super::check_interrupted()?;
            eprintln!(
                "xtask bench: end to end, round {round}/{ROUNDS}: wrk {}",
                configuration.label()
            );
            let load = match configuration {
                Configuration::Xlb => {
                    let (load, modes, started, loaded) = through_xlb(&mut bed)?;
                    xdp_modes.insert(modes);
                    xlb_memory.push((started, loaded));
                    xlb.push(load.clone());
                    load
                }
                Configuration::Haproxy => {
                    let (load, loaded) = through_haproxy(&bed)?;
                    haproxy_memory.push(loaded);
                    haproxy.push(load.clone());
                    load
                }
                Configuration::Nftables => {
                    let load = through_nftables(&bed)?;
                    nftables.push(load.clone());
                    load
                }
                Configuration::Direct => {
                    let load = straight_to_backends(&bed, &tag)?;
                    direct.push(load.clone());
                    load
                }
            };
            eprintln!(
                "  {:.0} req/s, p50 {:.0} us, p99 {:.0} us",
                load.requests_per_s, load.p50_us, load.p99_us
            );
        }
        order.rotate_left(1);
    }
    let first_or_last = "no end-to-end round ran";
    Ok(Results {
        xdp_mode: xdp_modes.into_iter().collect::<Vec<_>>().join("; "),
        xlb_started: xlb_memory.first().context(first_or_last)?.0,
        xlb_loaded: xlb_memory.last().context(first_or_last)?.1,
        haproxy_loaded: *haproxy_memory.last().context(first_or_last)?,
        xlb: Summary { runs: xlb },
        haproxy: Summary { runs: haproxy },
        nftables: Summary { runs: nftables },
        direct: Summary { runs: direct },
    })
}

pub(super) fn vip_url() -> String {
    format!("http://{VIP}:{FRONTEND_PORT}/")
}

/// Warm-up, then the measured run, against the VIP.
fn load_vip(bed: &Testbed) -> anyhow::Result<Load> {
    wrk::run(&bed.client, &vip_url(), THREADS, CONNECTIONS, WARM_UP).context("warm-up")?;
    super::check_interrupted()?;
    wrk::run(&bed.client, &vip_url(), THREADS, CONNECTIONS, DURATION)
}

fn through_xlb(bed: &mut Testbed) -> anyhow::Result<(Load, String, Memory, Memory)> {
    let daemon = bed.start_lb(&base_services(), &[]).context("start xlb")?;
    let pid = daemon.pid();
    let xdp_mode = attach_modes(&daemon.log_text());
    let started = memory_of(pid, "xlb")?;
    answers_from_both_backends(bed, Duration::from_secs(5)).context("xlb")?;
    let load = load_vip(bed)?;
    let loaded = memory_of(pid, "xlb")?;
    let daemon = bed.daemon.take().context("xlb is not running")?;
    let status = daemon
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .context("stop xlb")?;
    ensure!(status.success(), "xlb exited with {status}");
    // The next configurations must run on the kernel's own path.
    for dev in ["eth0", "eth1"] {
        let link = bed.lb.ip(&["link", "show", dev])?;
        ensure!(
            !link.contains("xdp"),
            "XDP is still attached to {dev} after xlb stopped: {link}"
        );
    }
    Ok((load, xdp_mode, started, loaded))
}

/// The modes named by the daemon's "XDP attached ... mode=..." lines.
pub(super) fn attach_modes(log: &str) -> String {
    let modes: BTreeSet<&str> = log
        .lines()
        .filter(|line| line.contains("XDP attached"))
        .filter_map(|line| line.split("mode=").nth(1)?.split_whitespace().next())
        .map(|mode| mode.trim_matches('"'))
        .collect();
    if modes.is_empty() {
        "unknown".to_owned()
    } else {
        modes.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// Fresh connections to the VIP, until both backends have answered (each
/// configuration balances new connections round robin).
pub(super) fn answers_from_both_backends(bed: &Testbed, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    let mut last_error = None;
    while seen.len() < WEB_NAMES.len() {
        if Instant::now() > deadline {
            bail!(
                "the VIP did not answer from both backends within {timeout:?} (answers: {seen:?}, last error: {last_error:?})"
            );
        }
        match bed
            .connect((CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT))
            .and_then(|mut stream| http::get(&mut stream))
        {
            Ok(body) => {
                seen.insert(body);
            }
            Err(e) => {
                last_error = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

fn through_haproxy(bed: &Testbed) -> anyhow::Result<(Load, Memory)> {
    let mut haproxy = Haproxy::start(&bed.lb, &bed.dir, "haproxy")?;
    if let Err(e) = answers_from_both_backends(bed, Duration::from_secs(10)) {
        let exited = if haproxy.running() { "" } else { " (it exited)" };
        bail!("HAProxy{exited}: {e:#}; its log:\n{}", haproxy.log());
    }
    let load = load_vip(bed)?;
    let memory = memory_of(haproxy.pid(), "haproxy")?;
    drop(haproxy);
    Ok((load, memory))
}

/// The kernel's NAT doing what xlb does: DNAT to the backends in turn, SNAT
/// to the LB's private address (from any free port, or from `snat_ports`).
fn nft_ruleset(snat_ports: Option<(u16, u16)>) -> String {
    let map = WEB_ADDRS
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{i} : {addr}"))
        .collect::<Vec<_>>()
        .join(", ");
    let backends = WEB_ADDRS
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let ports = snat_ports.map_or_else(String::new, |(first, last)| format!(":{first}-{last}"));
    format!(
        "table ip {NFT_TABLE} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   ip daddr {VIP} tcp dport {FRONTEND_PORT} dnat to numgen inc mod {} map {{ {map} }}\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip daddr {{ {backends} }} tcp dport {FRONTEND_PORT} snat to {LB_PRIVATE}{ports}\n\
         \x20 }}\n\
         }}\n",
        WEB_ADDRS.len()
    )
}

/// The nftables table, deleted on drop.
pub(super) struct NftTable<'a> {
    ns: &'a Netns,
}

impl<'a> NftTable<'a> {
    pub(super) fn install(ns: &'a Netns, dir: &Path) -> anyhow::Result<Self> {
        Self::install_with(ns, dir, None)
    }

    /// As [`NftTable::install`], SNAT from `snat_ports` (first, last) only.
    pub(super) fn install_with(
        ns: &'a Netns,
        dir: &Path,
        snat_ports: Option<(u16, u16)>,
    ) -> anyhow::Result<Self> {
        let path = dir.join("nat.nft");
        std::fs::write(&path, nft_ruleset(snat_ports)).context("write nat.nft")?;
        let path = path.to_str().context("non-UTF-8 temp path")?;
        ns.exec("nft", &["-f", path]).context("load the NAT ruleset")?;
        Ok(Self { ns })
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = self.ns.exec("nft", &["delete", "table", "ip", NFT_TABLE]);
    }
}

fn through_nftables(bed: &Testbed) -> anyhow::Result<Load> {
    // DNAT makes the LB namespace a router. Left on afterwards: xlb sets
    // per-interface forwarding itself, and HAProxy terminates connections.
    bed.lb.sysctl("net.ipv4.ip_forward", "1")?;
    let table = NftTable::install(&bed.lb, &bed.dir)?;
    answers_from_both_backends(bed, Duration::from_secs(5)).context("nftables")?;
    let load = load_vip(bed)?;
    drop(table);
    Ok(load)
}

/// A link from the client namespace into the private network's bridge,
/// removed on drop.
pub(super) struct DirectLink<'a> {
    client: &'a Netns,
}

pub(super) const DIRECT_DEV: &str = "eth1";

impl<'a> DirectLink<'a> {
    /// Wires it like the testbed's own links (tx checksum offload off, GRO
    /// on), in the switch namespace `switch`.
    pub(super) fn add(client: &'a Netns, switch: &str) -> anyhow::Result<Self> {
        let peer = "client";
        client.ip(&[
            "link", "add", DIRECT_DEV, "type", "veth", "peer", "name", peer, "netns", switch,
        ])?;
        let link = Self { client };
        let in_switch = |args: &[&str]| {
            let mut full = vec!["-n", switch];
            full.extend_from_slice(args);
            lb_tests::run("ip", &full)
        };
        in_switch(&["link", "set", peer, "master", "br0"])?;
        in_switch(&["link", "set", peer, "up"])?;
        client.ip(&["link", "set", DIRECT_DEV, "up"])?;
        client.exec("ethtool", &["-K", DIRECT_DEV, "tx", "off", "gro", "on"])?;
        lb_tests::run(
            "ip",
            &[
                "netns", "exec", switch, "ethtool", "-K", peer, "tx", "off", "gro", "on",
            ],
        )?;
        client.ip(&["addr", "add", &format!("{DIRECT_CLIENT}/24"), "dev", DIRECT_DEV])?;
        Ok(link)
    }
}

impl Drop for DirectLink<'_> {
    fn drop(&mut self) {
        let _ = self.client.ip(&["link", "del", DIRECT_DEV]);
    }
}

/// Half the load to each backend, at once, over a link that bypasses the
/// LB; the two runs seen as one.
fn straight_to_backends(bed: &Testbed, tag: &str) -> anyhow::Result<Load> {
    let link = DirectLink::add(&bed.client, &format!("{tag}-sw"))?;
    for (addr, name) in WEB_ADDRS.iter().zip(WEB_NAMES) {
        let mut stream = bed
            .connect((DIRECT_CLIENT, 0), (*addr, FRONTEND_PORT))
            .with_context(|| format!("connect straight to {name}"))?;
        let body = http::get(&mut stream)?;
        ensure!(body.starts_with(name), "{addr} answered {body:?}");
    }
    let urls = WEB_ADDRS.map(|addr| format!("http://{addr}:{FRONTEND_PORT}/"));
    let both = |duration: Duration| -> anyhow::Result<Load> {
        // All started before any is waited for; a failure drops (kills) the rest.
        let runs = urls
            .iter()
            .map(|url| wrk::start(&bed.client, url, THREADS / 2, CONNECTIONS / 2, duration))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let loads = runs
            .into_iter()
            .map(wrk::Running::finish)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Load::combined(&loads))
    };
    both(WARM_UP).context("warm-up")?;
    super::check_interrupted()?;
    let load = both(DURATION)?;
    drop(link);
    Ok(load)
}
