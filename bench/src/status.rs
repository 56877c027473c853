//! Status and metrics at any table size (`--only status`): how long
//! `xlb status` and a `/metrics` scrape take with an empty connection table
//! and with a million entries, side by side in one run. The million are
//! written straight into the daemon's table (live UDP entries, refreshed
//! as traffic would), since no client of the testbed can open that many
//! flows; the daemon's sweeper then counts them like any others.

use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{HashMap, Map, MapData};
use lb_common::{
    headers::IPPROTO_UDP,
    maps::{Endpoints, Flow, FlowKey, DIRECTION_FORWARD},
};
use lb_tests::testbed::{base_services, Testbed};

use super::{report::Table, Spread};

/// Entries of the full table.
pub const ENTRIES: u32 = 1_000_000;
/// The table's capacity: room for the million and the testbed's own.
const CAPACITY: u32 = 1_100_000;
const ROUNDS: usize = 100;
const PACE: Duration = Duration::from_millis(200);

/// One table size's answers.
pub struct Sample {
    pub entries_reported: u64,
    /// `GET /v1/status` on the admin socket, from this process: the
    /// daemon's own answer time.
    pub api: Spread,
    /// `xlb status --json`: the same through the CLI, its start included.
    pub status: Spread,
    pub metrics: Spread,
}

/// One `GET /v1/status` on the admin socket; its time.
fn ask_api(socket: &std::path::Path) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    let asked = Instant::now();
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).context("connect to the admin socket")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: xlb\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let took = asked.elapsed();
    anyhow::ensure!(
        answer.lines().next().is_some_and(|l| l.contains(" 200")),
        "status failed: {answer}"
    );
    Ok(took)
}

pub struct Results {
    pub empty: Sample,
    pub full: Sample,
    /// How long the sweeper took to count the million (the census's age).
    pub census_after: Duration,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ROUNDS` rounds of `xlb status --json` and a scrape, `PACE` apart.
fn sample(bed: &Testbed) -> anyhow::Result<Sample> {
    let (mut api, mut status, mut metrics) = (Vec::new(), Vec::new(), Vec::new());
    let mut entries = 0;
    for _ in 0..ROUNDS {
        super::check_interrupted()?;
        let round = Instant::now();
        api.push(millis(ask_api(&bed.admin_socket())?));
        let round_cli = Instant::now();
        let answer = bed.node_status(0)?;
        status.push(millis(round_cli.elapsed()));
        entries = answer["conntrack_entries"].as_u64().unwrap_or(0);
        let scraped = Instant::now();
        let response = bed.scrape_metrics(0)?;
        anyhow::ensure!(
            response.lines().next().is_some_and(|l| l.contains(" 200")),
            "scrape failed"
        );
        metrics.push(millis(scraped.elapsed()));
        std::thread::sleep(PACE.saturating_sub(round.elapsed()));
    }
    Ok(Sample {
        entries_reported: entries,
        api: Spread::of(api),
        status: Spread::of(status),
        metrics: Spread::of(metrics),
    })
}

/// The daemon's connection table: the only FLOWS map of this capacity.
fn daemon_table() -> anyhow::Result<HashMap<MapData, FlowKey, Flow>> {
    let info = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .find(|m| m.name_as_str() == Some("FLOWS") && m.max_entries() == CAPACITY)
        .context("no FLOWS map of the bench's capacity: is the daemon running?")?;
    let data = MapData::from_id(info.id()).context("open the daemon's FLOWS")?;
    HashMap::try_from(Map::LruHashMap(data)).context("FLOWS as a hash map")
}

/// Writes `count` live UDP entries (client 10.x.y.z, to a backend).
fn fill(table: &mut HashMap<MapData, FlowKey, Flow>, count: u32) -> anyhow::Result<()> {
    let now = lb_tests::fixture::coarse_now_ns();
    for i in 0..count {
        let key = FlowKey {
            src_addr: u32::from_be_bytes([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]).to_be(),
            dst_addr: u32::from_be_bytes([198, 51, 100, 100]).to_be(),
            src_port: 40_000_u16.to_be(),
            dst_port: 5353_u16.to_be(),
            proto: IPPROTO_UDP,
            _pad: [0; 3],
        };
        let flow = Flow {
            rewrite: Endpoints {
                src_addr: u32::from_be_bytes([203, 0, 113, 2]).to_be(),
                dst_addr: u32::from_be_bytes([203, 0, 113, 11]).to_be(),
                src_port: 40_000_u16.to_be(),
                dst_port: 5353_u16.to_be(),
            },
            direction: DIRECTION_FORWARD,
            last_seen_ns: now,
            ..Flow::default()
        };
        table
            .insert(key, flow, 0)
            .with_context(|| format!("insert entry {i}"))?;
    }
    Ok(())
}

pub fn measure() -> anyhow::Result<Results> {
    let mut bed = Testbed::new(&lb_tests::unique_tag("xq")).context("build the testbed")?;
    bed.dataplane_extra = format!("conntrack_entries = {CAPACITY}\nudp_timeout_secs = 3600");
    bed.start_lb(&base_services(), &[])?;
    let empty = sample(&bed)?;

    let mut table = daemon_table()?;
    let filled = Instant::now();
    fill(&mut table, ENTRIES)?;
    eprintln!(
        "xtask bench: status, {ENTRIES} entries written in {:.1} s; waiting for the sweeper's census",
        filled.elapsed().as_secs_f64()
    );
    let entries = || {
        bed.node_status(0)
            .ok()
            .and_then(|s| s["conntrack_entries"].as_u64())
            .unwrap_or(0)
    };
    lb_tests::wait::until("the census counts the million", Duration::from_secs(120), || {
        entries() >= u64::from(ENTRIES)
    })
    .map_err(|e| anyhow::anyhow!("{e}: {} entries", entries()))?;
    let census_after = filled.elapsed();
    let full = sample(&bed)?;
    Ok(Results {
        empty,
        full,
        census_after,
    })
}

pub fn section(r: &Results) -> String {
    let mut table = Table::new(&[
        ("Table", false),
        ("Entries reported", true),
        ("GET /v1/status: p50", true),
        ("max", true),
        ("xlb status: p50", true),
        ("max", true),
        ("/metrics: p50", true),
        ("max", true),
    ]);
    for (label, s) in [("empty", &r.empty), ("a million entries", &r.full)] {
        table.row(vec![
            label.to_owned(),
            s.entries_reported.to_string(),
            format!("{:.2} ms", s.api.median),
            format!("{:.2} ms", s.api.max),
            format!("{:.1} ms", s.status.median),
            format!("{:.1} ms", s.status.max),
            format!("{:.1} ms", s.metrics.median),
            format!("{:.1} ms", s.metrics.max),
        ]);
    }
    let ratio = |full: f64, empty: f64| full / empty.max(f64::EPSILON);
    format!(
        "## Status and metrics at any table size\n\n\
         One xlb on the testbed, its table sized for {capacity} entries. {rounds} rounds, \
         {pace} ms apart, of `GET /v1/status` on the admin socket from the bench's process \
         (the daemon's own answer time), `xlb status --json` (the same through the CLI: \
         the time includes starting the process) and a `GET /metrics` from inside the \
         namespace: \
         first with the table empty, then with {entries} live UDP entries written into it \
         (the daemon's sweeper counted them {census:.0} s after the writes began, at its \
         bounded pace). Both answer from the sweeper's census: no request walks the table. \
         `cargo xtask bench --only status`.\n\n\
         {table}\n\
         **With a million entries against an empty table: status p50 {api:.2}x, metrics \
         p50 {metrics:.2}x; the daemon's slowest answer {max:.1} ms** (goal: under 10 ms at \
         any size; the CLI's slowest, process start included: {cli_max:.1} ms).\n",
        capacity = CAPACITY,
        rounds = ROUNDS,
        pace = PACE.as_millis(),
        entries = ENTRIES,
        census = r.census_after.as_secs_f64(),
        table = table.render(),
        api = ratio(r.full.api.median, r.empty.api.median),
        metrics = ratio(r.full.metrics.median, r.empty.metrics.median),
        max = r.full.api.max.max(r.full.metrics.max),
        cli_max = r.full.status.max,
    )
}
