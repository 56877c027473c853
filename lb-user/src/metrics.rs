//! The Prometheus endpoint: `GET /metrics` renders a fresh `Status` from the
//! controller, plus the standard `process_*` metrics read from `/proc/self`.
//!
//! Names follow HAProxy's built-in exporter with our prefix (an xlb service
//! is HAProxy's backend, `proxy="<service>"`; a backend server is HAProxy's
//! server, `server="<backend>"`), so dashboards and alerts port by renaming
//! `haproxy_` to `xlb_`. METRICS.md lists every metric and its HAProxy twin.
//!
//! The output is OpenMetrics text 1.0, what prometheus-client encodes and what
//! Prometheus asks for first by default (its `Accept` header prefers
//! `application/openmetrics-text`; 0.0.4 text is only a fallback).

use std::{
    fmt::{self, Write as _},
    future::Future,
    io,
    net::SocketAddr,
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use lb_common::stats::Counter;
use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    bounded_http::{self, Limits},
    control::ControlHandle,
    status::{BackendState, BackendStatus, ServiceStatus, Status, VrrpStatus},
};

/// The content type of `GET /metrics`: OpenMetrics text, as encoded by
/// prometheus-client (counters are typed without their `_total` suffix and
/// the body ends with `# EOF`, which the 0.0.4 text format does not allow).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the controller. Below Prometheus's default
/// scrape timeout (10 s), so a stuck controller shows as a 503, which says
/// why, rather than as a scrape timeout, which does not.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

// ---- process metrics -------------------------------------------------------

/// This process's resource use, as the Prometheus client libraries export it
/// (`process_*`), read from `/proc/self` on each scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    /// Soft limit on open files; `u64::MAX` when unlimited.
    pub max_fds: u64,
    /// Seconds since the UNIX epoch when the process started.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// # Errors
    /// When a `/proc` file cannot be read or parsed, or `sysconf` fails.
    pub fn read() -> io::Result<Self> {
        let ticks_per_second = sysconf(libc::_SC_CLK_TCK, "_SC_CLK_TCK")?;
        let page_size = sysconf(libc::_SC_PAGESIZE, "_SC_PAGESIZE")?;
        let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat")?)
            .ok_or_else(|| invalid_data("/proc/stat has no btime line"))?;
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat")?)
            .ok_or_else(|| invalid_data("cannot parse /proc/self/stat"))?;
        let max_fds = parse_max_open_files(&std::fs::read_to_string("/proc/self/limits")?)
            .ok_or_else(|| invalid_data("/proc/self/limits has no readable \"Max open files\""))?;
        // The directory's own descriptor is among the entries: the Go client
        // counts it too, so the two agree.
        let mut open_fds = 0;
        for entry in std::fs::read_dir("/proc/self/fd")? {
            entry?;
            open_fds += 1;
        }
        // Seconds as f64, like every client library's: tick counts and boot
        // times are far below 2^53, so only the division rounds.
        let (cpu_seconds, start_time_seconds) = (
            stat.cpu_ticks as f64 / ticks_per_second as f64,
            boot_time as f64 + stat.start_ticks as f64 / ticks_per_second as f64,
        );
        Ok(Self {
            cpu_seconds,
            resident_memory_bytes: stat.rss_pages.saturating_mul(page_size),
            virtual_memory_bytes: stat.vsize_bytes,
            open_fds,
            max_fds,
            start_time_seconds,
        })
    }
}

fn sysconf(name: libc::c_int, what: &str) -> io::Result<u64> {
    // SAFETY: sysconf only reads the named constant; it touches no memory of ours.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid_data(&format!("sysconf({what}) returned {value}")))
}

fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// The fields of `/proc/self/stat` we export.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Start time, in clock ticks after boot.
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses: the fields we want start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); proc(5) numbers fields from 1.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    // "Max open files            1024                 524288               files"
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

// ---- exposition ------------------------------------------------------------

/// The metrics for one scrape, in the OpenMetrics text format.
#[must_use]
pub fn render(status: &Status, process: &ProcessStats) -> String {
    encode(families(status, Some(process)))
}

/// A label value, escaped when encoded: prometheus-client 0.22 writes label
/// values verbatim, and a backend name with a quote would otherwise break the
/// whole scrape. (The tests pin the exact output, so a crate upgrade that
/// starts escaping by itself shows up as double escaping there.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LabelValue(String);

impl LabelValue {
    fn new(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        // OpenMetrics (like the 0.0.4 text format) escapes exactly these three.
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, LabelValue)>;

/// One metric family's samples; the variant is the family's type, so a
/// counter cannot be given a gauge's value.
#[derive(Debug)]
enum Samples {
    /// u64, so a per-CPU sum of packet or byte counts stays exact.
    Counter(Vec<(Labels, u64)>),
    CounterF64(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, i64)>),
    GaugeF64(Vec<(Labels, f64)>),
}

#[derive(Debug)]
struct Family {
    /// The family's name; for counters, with the `_total` its samples carry
    /// (the encoder appends it, so it is removed before encoding).
    name: &'static str,
    help: &'static str,
    samples: Samples,
}

/// Everything one scrape exports, built from a `Status` and encoded once.
/// It is a prometheus-client `Collector` because that is the crate's way to
/// export values computed at scrape time rather than kept in atomics.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn push(&mut self, name: &'static str, help: &'static str, samples: Samples) {
        self.0.push(Family { name, help, samples });
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        self.push(name, help, Samples::Counter(samples.into_iter().collect()));
    }

    fn counter_f64(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.push(name, help, Samples::CounterF64(samples.into_iter().collect()));
    }

    fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        self.push(name, help, Samples::Gauge(samples.into_iter().collect()));
    }

    fn gauge_f64(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.push(name, help, Samples::GaugeF64(samples.into_iter().collect()));
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in &self.0 {
            match &family.samples {
                Samples::Counter(s) => encode_family(&mut encoder, family, s, ConstCounter::new)?,
                Samples::CounterF64(s) => encode_family(&mut encoder, family, s, ConstCounter::new)?,
                Samples::Gauge(s) => encode_family(&mut encoder, family, s, ConstGauge::new)?,
                Samples::GaugeF64(s) => encode_family(&mut encoder, family, s, ConstGauge::new)?,
            }
        }
        Ok(())
    }
}

fn encode_family<V: Copy, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    family: &Family,
    samples: &[(Labels, V)],
    metric: impl Fn(V) -> M,
) -> fmt::Result {
    // A family with no series (e.g. no service yet) is left out altogether.
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let metric_type = metric(*first).metric_type();
    let name = match metric_type {
        MetricType::Counter => {
            debug_assert!(
                family.name.ends_with("_total"),
                "counter {} without _total",
                family.name
            );
            family.name.strip_suffix("_total").unwrap_or(family.name)
        }
        _ => family.name,
    };
    let mut metric_encoder = encoder.encode_descriptor(name, family.help, None, metric_type)?;
    match samples {
        // Unlabelled: encode directly, since an empty label set would be
        // written as `name{}`.
        [(labels, value)] if labels.is_empty() => metric(*value).encode(metric_encoder),
        _ => {
            for (labels, value) in samples {
                metric(*value).encode(metric_encoder.encode_family(labels)?)?;
            }
            Ok(())
        }
    }
}

fn encode(families: Families) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families));
    let mut out = String::new();
    // The encoder fails only when its writer does, and a String never does.
    text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// A gauge from an unsigned value. prometheus-client's gauges are i64 (or
/// f64); every gauge here (connections, table sizes, byte sizes) is far
/// below 2^63, so this is exact in practice and saturates otherwise.
fn gauge_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn server_labels(service: &ServiceStatus, backend: &BackendStatus) -> Labels {
    vec![
        ("proxy", LabelValue::new(&service.name)),
        ("server", LabelValue::new(&backend.name)),
    ]
}

fn proxy_labels(service: &ServiceStatus) -> Labels {
    vec![("proxy", LabelValue::new(&service.name))]
}

/// All families of one scrape. `process` is None when `/proc` could not be
/// read: the load balancer's own metrics are still worth serving.
fn families(status: &Status, process: Option<&ProcessStats>) -> Families {
    let mut f = Families::default();
    let servers: Vec<(&ServiceStatus, &BackendStatus)> = status
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
        .collect();
    let per_server =
        |value: fn(&BackendStatus) -> u64| servers.iter().map(move |(s, b)| (server_labels(s, b), value(b)));
    let per_service =
        |value: fn(&ServiceStatus) -> u64| status.services.iter().map(move |s| (proxy_labels(s), value(s)));

    // -- servers (HAProxy's haproxy_server_*) --
    f.gauge(
        "xlb_server_status",
        "Current state of the backend server: 1 for the series of its state (UP, DOWN, DRAIN), 0 for the others.",
        servers.iter().flat_map(|(s, b)| {
            BackendState::ALL.iter().map(move |state| {
                let mut labels = server_labels(s, b);
                labels.push(("state", LabelValue::new(state.as_str())));
                (labels, i64::from(b.state == *state))
            })
        }),
    );
    f.gauge(
        "xlb_server_weight",
        "Configured weight of the backend server (0: drain).",
        servers
            .iter()
            .map(|(s, b)| (server_labels(s, b), i64::from(b.weight))),
    );
    // Only where checks run, like HAProxy's check_status: for an unchecked
    // server a 1 would claim a health nobody verified.
    f.gauge(
        "xlb_server_check_up",
        "1 if the health checks consider the backend server up, 0 if down. Only for services with health checks.",
        servers
            .iter()
            .filter(|(s, _)| s.check != "none")
            .map(|(s, b)| (server_labels(s, b), i64::from(b.healthy))),
    );
    f.counter(
        "xlb_server_checks_total",
        "Health checks run against the backend server.",
        per_server(|b| b.checks_total),
    );
    f.counter(
        "xlb_server_check_failures_total",
        "Failed health checks of the backend server.",
        per_server(|b| b.check_failures_total),
    );
    f.counter(
        "xlb_server_check_up_down_total",
        "Transitions of the backend server from UP to DOWN.",
        per_server(|b| b.downs_total),
    );
    f.gauge(
        "xlb_server_check_last_change_seconds",
        "Seconds since the backend server last changed between UP and DOWN (or since the daemon started).",
        servers.iter().map(|(s, b)| {
            let age = status.now_unix.saturating_sub(b.last_change_unix);
            (server_labels(s, b), gauge_u64(age))
        }),
    );
    f.gauge(
        "xlb_server_current_sessions",
        "Connections currently tracked to the backend server.",
        servers
            .iter()
            .map(|(s, b)| (server_labels(s, b), gauge_u64(b.active_connections))),
    );
    f.gauge(
        "xlb_server_snat_tuples",
        "SNAT tuples (source address and port) towards the backend server that a new client could not take at once: live connections, and closed ones within their hold (see README: SNAT capacity).",
        servers
            .iter()
            .map(|(s, b)| (server_labels(s, b), gauge_u64(b.snat_tuples))),
    );
    f.counter(
        "xlb_server_sessions_total",
        "Connections sent to the backend server.",
        per_server(|b| b.connections_total),
    );
    f.gauge_f64(
        "xlb_server_current_session_rate",
        "New connections per second to the backend server over the last few seconds.",
        servers
            .iter()
            .map(|(s, b)| (server_labels(s, b), b.connection_rate)),
    );
    f.counter(
        "xlb_server_bytes_in_total",
        "Bytes forwarded to the backend server (IP packet lengths).",
        per_server(|b| b.bytes_to_total),
    );
    f.counter(
        "xlb_server_bytes_out_total",
        "Bytes received from the backend server and forwarded to clients (IP packet lengths).",
        per_server(|b| b.bytes_from_total),
    );
    f.counter(
        "xlb_server_packets_in_total",
        "Packets forwarded to the backend server.",
        per_server(|b| b.packets_to_total),
    );
    f.counter(
        "xlb_server_packets_out_total",
        "Packets received from the backend server and forwarded to clients.",
        per_server(|b| b.packets_from_total),
    );

    // -- services (HAProxy's haproxy_backend_*) --
    f.gauge(
        "xlb_backend_status",
        "Current state of the service: UP while at least one backend server takes new connections, else DOWN.",
        status.services.iter().flat_map(|s| {
            [("UP", s.active_backends > 0), ("DOWN", s.active_backends == 0)]
                .into_iter()
                .map(move |(state, on)| {
                    let mut labels = proxy_labels(s);
                    labels.push(("state", LabelValue::new(state)));
                    (labels, i64::from(on))
                })
        }),
    );
    f.gauge(
        "xlb_backend_active_servers",
        "Backend servers of the service taking new connections.",
        status
            .services
            .iter()
            .map(|s| (proxy_labels(s), i64::from(s.active_backends))),
    );
    f.gauge(
        "xlb_backend_current_sessions",
        "Connections currently tracked for the service (sum over its backend servers).",
        status.services.iter().map(|s| {
            let sum = s
                .backends
                .iter()
                .fold(0_u64, |sum, b| sum.saturating_add(b.active_connections));
            (proxy_labels(s), gauge_u64(sum))
        }),
    );
    f.counter(
        "xlb_backend_sessions_total",
        "New connections to the service sent to a backend server.",
        per_service(|s| s.connections_total),
    );
    f.counter(
        "xlb_backend_refused_sessions_total",
        "First packets of new connections to the service refused (reset or dropped) because no backend server could take them; a retransmitted SYN counts again.",
        per_service(|s| s.refused_total),
    );
    f.gauge_f64(
        "xlb_backend_current_session_rate",
        "New connections per second to the service over the last few seconds.",
        status
            .services
            .iter()
            .map(|s| (proxy_labels(s), s.connection_rate)),
    );
    f.counter(
        "xlb_backend_bytes_in_total",
        "Bytes received from clients of the service (IP packet lengths).",
        per_service(|s| s.bytes_in_total),
    );
    f.counter(
        "xlb_backend_bytes_out_total",
        "Bytes sent to clients of the service (IP packet lengths).",
        per_service(|s| s.bytes_out_total),
    );
    f.counter(
        "xlb_backend_packets_in_total",
        "Packets received from clients of the service.",
        per_service(|s| s.packets_in_total),
    );
    f.counter(
        "xlb_backend_packets_out_total",
        "Packets sent to clients of the service.",
        per_service(|s| s.packets_out_total),
    );

    // -- data plane --
    f.counter(
        "xlb_dataplane_packets_total",
        "Packets seen by the XDP program, by outcome; each packet is counted once.",
        status
            .counters
            .iter()
            .map(|c| (vec![("outcome", LabelValue::new(&c.name))], c.value)),
    );
    f.counter(
        "xlb_nat_port_allocation_failures_total",
        "New-connection packets dropped because no source port was free (outcome drop_nat_ports_exhausted).",
        status
            .counters
            .iter()
            .filter(|c| c.name == Counter::DropNatPortsExhausted.name())
            .map(|c| (Labels::new(), c.value)),
    );
    f.gauge(
        "xlb_conntrack_entries",
        "Entries in the connection table (two per connection).",
        [(Labels::new(), gauge_u64(status.conntrack_entries))],
    );
    f.gauge(
        "xlb_conntrack_capacity",
        "Size of the connection table, in entries.",
        [(Labels::new(), gauge_u64(status.conntrack_capacity))],
    );

    // -- daemon --
    f.gauge(
        "xlb_build_info",
        "Always 1; the version label says which xlb is running.",
        [(vec![("version", LabelValue::new(env!("CARGO_PKG_VERSION")))], 1)],
    );
    if let Some(reload) = &status.last_reload {
        f.gauge(
            "xlb_last_reload_success",
            "1 if the last configuration reload was applied, 0 if it was refused.",
            [(Labels::new(), i64::from(reload.ok))],
        );
        f.gauge(
            "xlb_last_reload_timestamp_seconds",
            "Seconds since the UNIX epoch of the last configuration reload attempt.",
            [(Labels::new(), gauge_u64(reload.at_unix))],
        );
    }

    if let Some(vrrp) = &status.vrrp {
        vrrp_families(&mut f, vrrp);
    }

    // -- process (the names every Prometheus client library uses) --
    if let Some(p) = process {
        f.counter_f64(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            [(Labels::new(), p.cpu_seconds)],
        );
        f.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            [(Labels::new(), gauge_u64(p.resident_memory_bytes))],
        );
        f.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            [(Labels::new(), gauge_u64(p.virtual_memory_bytes))],
        );
        f.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            [(Labels::new(), gauge_u64(p.open_fds))],
        );
        f.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            [(Labels::new(), gauge_u64(p.max_fds))],
        );
        f.gauge_f64(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            [(Labels::new(), p.start_time_seconds)],
        );
    }
    f
}

/// The failover side: one-hot state like keepalived's exporter, the
/// election's counters, tracks and movers.
fn vrrp_families(f: &mut Families, vrrp: &VrrpStatus) {
    let vrid = || vec![("vrid", LabelValue::new(&vrrp.vrid.to_string()))];
    let with = |name: &'static str, value: &str| {
        let mut labels = vrid();
        labels.push((name, LabelValue::new(value)));
        labels
    };
    f.gauge(
        "xlb_vrrp_state",
        "1 for this node's VRRP state (INIT, BACKUP, MASTER, FAULT), 0 for the others.",
        ["INIT", "BACKUP", "MASTER", "FAULT"]
            .map(|state| (with("state", state), i64::from(vrrp.state == state))),
    );
    f.gauge(
        "xlb_vrrp_priority",
        "The priority this node advertises now (tracks with a weight change it).",
        [(vrid(), i64::from(vrrp.priority))],
    );
    f.counter(
        "xlb_vrrp_transitions_total",
        "VRRP state transitions since start.",
        [(vrid(), vrrp.transitions_total)],
    );
    f.counter(
        "xlb_vrrp_adverts_sent_total",
        "VRRP advertisements sent.",
        [(vrid(), vrrp.adverts_sent_total)],
    );
    f.counter(
        "xlb_vrrp_adverts_received_total",
        "VRRP advertisements received and accepted.",
        [(vrid(), vrrp.adverts_received_total)],
    );
    f.counter(
        "xlb_vrrp_adverts_rejected_total",
        "VRRP datagrams dropped, by reason (checksum, auth, vrid, ttl, truncated, ...).",
        vrrp.adverts_rejected
            .iter()
            .map(|c| (with("reason", &c.name), c.value)),
    );
    f.gauge(
        "xlb_vrrp_track_up",
        "1 if the track is satisfied, 0 if it is failing.",
        vrrp.tracks
            .iter()
            .map(|t| (with("track", &t.name), i64::from(t.ok))),
    );
    f.gauge(
        "xlb_vrrp_mover_last_success",
        "1 if the mover's last action succeeded (or it has not acted yet), 0 if it failed.",
        vrrp.movers
            .iter()
            .map(|m| (with("mover", &m.mover), i64::from(m.ok))),
    );
    f.counter(
        "xlb_vrrp_mover_actions_total",
        "Actions the mover carried out (take over, release, reconcile, notify).",
        vrrp.movers
            .iter()
            .map(|m| (with("mover", &m.mover), m.actions_total)),
    );
    f.counter(
        "xlb_vrrp_mover_failures_total",
        "Actions of the mover that failed.",
        vrrp.movers
            .iter()
            .map(|m| (with("mover", &m.mover), m.failures_total)),
    );
    f.gauge(
        "xlb_vrrp_peer_link_up",
        "1 while the peer link to this peer is connected.",
        vrrp.peer_links
            .iter()
            .map(|l| (with("peer", &l.peer), i64::from(l.up))),
    );
}

// ---- HTTP ------------------------------------------------------------------

#[derive(Clone)]
struct AppState {
    control: ControlHandle,
    status_timeout: Duration,
}

/// Binds `addr` and serves the metrics endpoint until `shutdown` completes.
///
/// # Errors
/// When `addr` cannot be bound (the message names it).
pub async fn serve(
    addr: SocketAddr,
    control: ControlHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    serve_listener(listener, control, shutdown).await
}

/// Serves the metrics endpoint on an already bound listener (so a caller can
/// bind first and fail early, or bind port 0 and learn the port) until
/// `shutdown` completes; then waits for requests in progress. Bounded like
/// the admin API (`bounded_http`): 32 connections at once, 10 s for a
/// request's headers, 60 s for a connection, one request per connection.
///
/// # Errors
/// When the listener has no local address; serving itself does not fail
/// (failed accepts are logged and retried).
pub async fn serve_listener(
    listener: TcpListener,
    control: ControlHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_bounded(listener, control, STATUS_TIMEOUT, Limits::DEFAULT, shutdown).await
}

async fn serve_bounded(
    listener: TcpListener,
    control: ControlHandle,
    status_timeout: Duration,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("metrics listener has no address")?;
    info!(%addr, "metrics endpoint listening: GET /metrics");
    let router = router(control, status_timeout);
    bounded_http::serve_tcp(listener, "metrics endpoint", limits, |_| router.clone(), shutdown).await;
    Ok(())
}

fn router(control: ControlHandle, status_timeout: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .fallback(not_found)
        .with_state(AppState {
            control,
            status_timeout,
        })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let status = match tokio::time::timeout(state.status_timeout, state.control.status()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return unavailable(&e),
        Err(_) => {
            return unavailable(&format!(
                "the controller did not answer within {} s",
                state.status_timeout.as_secs_f64()
            ))
        }
    };
    // Reading /proc/self takes microseconds (procfs is in memory), so it is
    // done inline rather than on a blocking thread.
    let process = ProcessStats::read()
        .inspect_err(|e| warn!(error = %e, "cannot read process metrics from /proc/self"))
        .ok();
    let body = encode(families(&status, process.as_ref()));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

fn unavailable(reason: &str) -> Response {
    warn!(reason, "metrics scrape failed: no status from the controller");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("xlb: cannot get the daemon's status: {reason}\n"),
    )
        .into_response()
}

async fn index() -> &'static str {
    "xlb: Prometheus metrics are at /metrics\n"
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n")
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use prometheus_parse::{Scrape, Value};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::{mpsc, oneshot},
    };

    use super::*;
    use crate::{
        control::{Envelope, Request, Response as ControlResponse},
        status::{CounterValue, ReloadOutcome},
        test_support::within,
    };

    fn backend(name: &str, state: BackendState, connections: u64) -> BackendStatus {
        BackendStatus {
            name: name.to_owned(),
            address: "203.0.113.11:3000".to_owned(),
            state,
            weight: 1,
            healthy: state != BackendState::Down,
            checks_total: 40,
            check_failures_total: 3,
            last_check: Some("ok".to_owned()),
            last_change_unix: 1_700_000_000,
            downs_total: 2,
            active_connections: 7,
            snat_tuples: 9,
            connections_total: connections,
            packets_to_total: 5000,
            bytes_to_total: 600_000,
            packets_from_total: 4000,
            bytes_from_total: 9_000_000,
            connection_rate: 2.5,
            ..BackendStatus::default()
        }
    }

    fn sample_status() -> Status {
        Status {
            config_path: "/etc/xlb/xlb.toml".to_owned(),
            started_at_unix: 1_699_999_000,
            now_unix: 1_700_000_090,
            last_reload: Some(ReloadOutcome {
                at_unix: 1_700_000_050,
                ok: false,
                message: "xlb.toml:3: bad address".to_owned(),
            }),
            services: vec![
                ServiceStatus {
                    name: "frontend".to_owned(),
                    addresses: vec!["198.51.100.100".to_owned()],
                    port: 3000,
                    protocol: "tcp".to_owned(),
                    check: "http".to_owned(),
                    active_backends: 1,
                    connections_total: 1500,
                    refused_total: 4,
                    packets_in_total: 11,
                    bytes_in_total: 12,
                    packets_out_total: 13,
                    bytes_out_total: 14,
                    connection_rate: 0.5,
                    backends: vec![
                        backend("web1", BackendState::Up, 1000),
                        backend("web2", BackendState::Drain, 500),
                    ],
                },
                ServiceStatus {
                    name: "dns".to_owned(),
                    addresses: vec!["198.51.100.100".to_owned()],
                    port: 5353,
                    protocol: "udp".to_owned(),
                    check: "none".to_owned(),
                    active_backends: 0,
                    backends: vec![backend("ns1", BackendState::Down, 0)],
                    ..ServiceStatus::default()
                },
            ],
            counters: Counter::ALL
                .iter()
                .zip(1_u64..)
                .map(|(c, n)| CounterValue {
                    name: c.name().to_owned(),
                    value: n * 100,
                })
                .collect(),
            conntrack_entries: 42,
            conntrack_capacity: 262_144,
            vrrp: Some(VrrpStatus {
                state: "MASTER".to_owned(),
                vrid: 50,
                priority: 205,
                configured_priority: 255,
                transitions_total: 3,
                adverts_sent_total: 900,
                adverts_received_total: 17,
                adverts_rejected: vec![CounterValue {
                    name: "auth".to_owned(),
                    value: 2,
                }],
                tracks: vec![crate::status::TrackStatus {
                    name: "interface eth0 up".to_owned(),
                    ok: false,
                    weight: Some(-50),
                    detail: "eth0 is down".to_owned(),
                }],
                movers: vec![crate::status::MoverStatus {
                    mover: "local".to_owned(),
                    last_action: "take over".to_owned(),
                    ok: true,
                    actions_total: 4,
                    ..Default::default()
                }],
                peer_links: vec![crate::status::PeerLinkStatus {
                    peer: "10.108.0.6".to_owned(),
                    up: true,
                    closes_total: 1,
                }],
                ..VrrpStatus::default()
            }),
        }
    }

    #[test]
    fn vrrp_state_is_one_hot_with_its_counters() {
        let scrape = parse(&render(&sample_status(), &sample_process()));
        let state = |s: &str| value(&scrape, "xlb_vrrp_state", &[("vrid", "50"), ("state", s)]);
        assert_eq!(
            (state("MASTER"), state("BACKUP"), state("FAULT")),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(value(&scrape, "xlb_vrrp_priority", &[("vrid", "50")]), 205.0);
        assert_eq!(
            value(
                &scrape,
                "xlb_vrrp_adverts_rejected_total",
                &[("vrid", "50"), ("reason", "auth")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &scrape,
                "xlb_vrrp_track_up",
                &[("vrid", "50"), ("track", "interface eth0 up")]
            ),
            0.0
        );
        assert_eq!(
            value(
                &scrape,
                "xlb_vrrp_mover_actions_total",
                &[("vrid", "50"), ("mover", "local")]
            ),
            4.0
        );
    }

    fn sample_process() -> ProcessStats {
        ProcessStats {
            cpu_seconds: 1.25,
            resident_memory_bytes: 8_388_608,
            virtual_memory_bytes: 100_000_000,
            open_fds: 12,
            max_fds: 1024,
            start_time_seconds: 1_699_999_000.5,
        }
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("prometheus_parse")
    }

    /// The value of the one sample named `name` with exactly `labels`.
    fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Value> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && *s.labels == want)
            .map(|s| &s.value)
            .collect();
        match found.as_slice() {
            [Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)] => *v,
            other => panic!("{name}{labels:?}: expected one sample, found {other:?}"),
        }
    }

    #[test]
    fn renders_exact_values() {
        let text = render(&sample_status(), &sample_process());
        let scrape = parse(&text);
        let web1 = [("proxy", "frontend"), ("server", "web1")];
        let web2 = [("proxy", "frontend"), ("server", "web2")];
        let frontend = [("proxy", "frontend")];

        assert_eq!(value(&scrape, "xlb_server_sessions_total", &web1), 1000.0);
        assert_eq!(value(&scrape, "xlb_server_sessions_total", &web2), 500.0);
        assert_eq!(value(&scrape, "xlb_server_bytes_in_total", &web1), 600_000.0);
        assert_eq!(value(&scrape, "xlb_server_bytes_out_total", &web1), 9_000_000.0);
        assert_eq!(value(&scrape, "xlb_server_packets_in_total", &web1), 5000.0);
        assert_eq!(value(&scrape, "xlb_server_packets_out_total", &web1), 4000.0);
        assert_eq!(value(&scrape, "xlb_server_current_sessions", &web1), 7.0);
        assert_eq!(value(&scrape, "xlb_server_snat_tuples", &web1), 9.0);
        assert_eq!(value(&scrape, "xlb_server_current_session_rate", &web1), 2.5);
        assert_eq!(value(&scrape, "xlb_server_weight", &web1), 1.0);
        assert_eq!(value(&scrape, "xlb_server_checks_total", &web1), 40.0);
        assert_eq!(value(&scrape, "xlb_server_check_failures_total", &web1), 3.0);
        assert_eq!(value(&scrape, "xlb_server_check_up_down_total", &web1), 2.0);
        assert_eq!(
            value(&scrape, "xlb_server_check_last_change_seconds", &web1),
            90.0
        );
        assert_eq!(value(&scrape, "xlb_server_check_up", &web1), 1.0);
        for (state, want) in [("UP", 0.0), ("DOWN", 0.0), ("DRAIN", 1.0)] {
            let labels = [("proxy", "frontend"), ("server", "web2"), ("state", state)];
            assert_eq!(value(&scrape, "xlb_server_status", &labels), want, "{state}");
        }
        // No checks on "dns": no check_up series for its server.
        assert!(!scrape
            .samples
            .iter()
            .any(|s| s.metric == "xlb_server_check_up" && s.labels.get("proxy") == Some("dns")));

        assert_eq!(value(&scrape, "xlb_backend_sessions_total", &frontend), 1500.0);
        assert_eq!(
            value(&scrape, "xlb_backend_refused_sessions_total", &frontend),
            4.0
        );
        assert_eq!(value(&scrape, "xlb_backend_bytes_in_total", &frontend), 12.0);
        assert_eq!(value(&scrape, "xlb_backend_bytes_out_total", &frontend), 14.0);
        assert_eq!(value(&scrape, "xlb_backend_packets_in_total", &frontend), 11.0);
        assert_eq!(value(&scrape, "xlb_backend_packets_out_total", &frontend), 13.0);
        assert_eq!(value(&scrape, "xlb_backend_active_servers", &frontend), 1.0);
        assert_eq!(value(&scrape, "xlb_backend_current_sessions", &frontend), 14.0);
        assert_eq!(value(&scrape, "xlb_backend_current_session_rate", &frontend), 0.5);
        let dns_down = [("proxy", "dns"), ("state", "DOWN")];
        assert_eq!(value(&scrape, "xlb_backend_status", &dns_down), 1.0);

        assert_eq!(
            value(
                &scrape,
                "xlb_dataplane_packets_total",
                &[("outcome", "forward_new")]
            ),
            100.0
        );
        let nat_index = Counter::ALL
            .iter()
            .position(|c| *c == Counter::DropNatPortsExhausted)
            .expect("counter exists");
        let nat_value = ((nat_index + 1) * 100) as f64;
        assert_eq!(
            value(&scrape, "xlb_nat_port_allocation_failures_total", &[]),
            nat_value
        );
        assert_eq!(
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == "xlb_dataplane_packets_total")
                .count(),
            Counter::ALL.len()
        );
        assert_eq!(value(&scrape, "xlb_conntrack_entries", &[]), 42.0);
        assert_eq!(value(&scrape, "xlb_conntrack_capacity", &[]), 262_144.0);
        assert_eq!(value(&scrape, "xlb_last_reload_success", &[]), 0.0);
        assert_eq!(
            value(&scrape, "xlb_last_reload_timestamp_seconds", &[]),
            1_700_000_050.0
        );
        assert_eq!(
            value(
                &scrape,
                "xlb_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );

        assert_eq!(value(&scrape, "process_cpu_seconds_total", &[]), 1.25);
        assert_eq!(value(&scrape, "process_resident_memory_bytes", &[]), 8_388_608.0);
        assert_eq!(value(&scrape, "process_virtual_memory_bytes", &[]), 100_000_000.0);
        assert_eq!(value(&scrape, "process_open_fds", &[]), 12.0);
        assert_eq!(value(&scrape, "process_max_fds", &[]), 1024.0);
        assert_eq!(value(&scrape, "process_start_time_seconds", &[]), 1_699_999_000.5);

        // And in the text as written (the parser above is lenient).
        assert!(text.contains("\nxlb_server_sessions_total{proxy=\"frontend\",server=\"web1\"} 1000\n"));
        assert!(text.contains("\n# TYPE xlb_server_sessions counter\n"));
        assert!(text.contains("\nxlb_conntrack_entries 42\n"));
        assert!(text.ends_with("\n# EOF\n"));
    }

    #[test]
    fn counters_stay_exact_beyond_f64_precision() {
        let mut status = sample_status();
        let web1 = &mut status.services[0].backends[0];
        web1.bytes_to_total = u64::MAX;
        web1.packets_to_total = (1 << 53) + 1;
        let text = render(&status, &sample_process());
        assert!(text.contains(
            "\nxlb_server_bytes_in_total{proxy=\"frontend\",server=\"web1\"} 18446744073709551615\n"
        ));
        assert!(text.contains(
            "\nxlb_server_packets_in_total{proxy=\"frontend\",server=\"web1\"} 9007199254740993\n"
        ));
    }

    /// Splits a sample line into name, labels (unescaped) and value, strictly
    /// as OpenMetrics defines it (prometheus_parse does not unescape).
    fn parse_sample_line(line: &str) -> (String, Vec<(String, String)>, String) {
        let name_end = line.find(['{', ' ']).expect("sample line");
        let name = line[..name_end].to_owned();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            loop {
                let key: String = chars
                    .by_ref()
                    .take_while(|(_, c)| *c != '=')
                    .map(|(_, c)| c)
                    .collect();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value").1 {
                        '"' => break,
                        '\\' => value.push(match chars.next().expect("escape").1 {
                            '\\' => '\\',
                            '"' => '"',
                            'n' => '\n',
                            other => panic!("bad escape \\{other} in {line}"),
                        }),
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                match chars.next().expect("label set end") {
                    (_, ',') => {}
                    (i, '}') => {
                        rest = &inner[i + 1..];
                        break;
                    }
                    (_, other) => panic!("unexpected {other:?} in {line}"),
                }
            }
        }
        let value = rest.strip_prefix(' ').expect("space before value").to_owned();
        (name, labels, value)
    }

    #[test]
    fn label_values_are_escaped() {
        let mut status = sample_status();
        let nasty = "we\"b\\1\nx";
        status.services[0].backends[0].name = nasty.to_owned();
        let text = render(&status, &sample_process());
        assert!(
            text.contains(
                "\nxlb_server_sessions_total{proxy=\"frontend\",server=\"we\\\"b\\\\1\\nx\"} 1000\n"
            ),
            "{text}"
        );
        // Every line is still one well-formed line, and the name round-trips.
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, _) = parse_sample_line(line);
            if name == "xlb_server_sessions_total"
                && labels.contains(&("server".to_owned(), nasty.to_owned()))
            {
                seen += 1;
            }
        }
        assert_eq!(seen, 1);
    }

    #[test]
    fn every_family_has_help_and_type() {
        let mut status = sample_status();
        status.services[0].backends[0].name = "odd\"name".to_owned();
        let text = render(&status, &sample_process());
        let mut help = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut families_with_samples = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').expect("HELP name text");
                assert!(!doc.trim().is_empty(), "{line}");
                assert!(!doc.contains('\\'), "unescaped help: {line}");
                assert!(help.insert(name.to_owned()), "duplicate HELP {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(help.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "duplicate TYPE {name}"
                );
            } else if line != "# EOF" {
                let (name, _, value) = parse_sample_line(line);
                assert!(value.parse::<f64>().is_ok(), "{line}");
                let family = match name.strip_suffix("_total") {
                    Some(base) if types.get(base).map(String::as_str) == Some("counter") => base,
                    _ => name.as_str(),
                };
                let kind = types.get(family).unwrap_or_else(|| panic!("no TYPE for {line}"));
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(help.contains(family), "no HELP for {line}");
                families_with_samples.insert(family.to_owned());
            }
        }
        assert_eq!(families_with_samples, help, "families without samples");
        // prometheus_parse sees the same documentation.
        let scrape = parse(&text);
        for name in &help {
            assert!(scrape.docs.contains_key(name), "{name}");
        }
        assert!(help.len() >= 35, "{} families", help.len());
    }

    /// METRICS.md's tables and the exposition name the same metrics.
    #[test]
    fn metrics_md_lists_every_metric() {
        let doc = include_str!("../../METRICS.md");
        let documented: HashSet<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(name, _)| name))
            .filter(|name| name.starts_with("xlb_") || name.starts_with("process_"))
            .collect();
        let text = render(&sample_status(), &sample_process());
        let exported: HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        assert_eq!(exported, documented);
    }

    #[test]
    fn empty_status_still_renders() {
        let text = render(&Status::default(), &sample_process());
        let scrape = parse(&text);
        assert!(!text.contains("xlb_server_"));
        assert!(!text.contains("xlb_last_reload"));
        assert_eq!(value(&scrape, "xlb_conntrack_entries", &[]), 0.0);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (x) y (z)) S 1 1234 1234 0 -1 4194560 2000 0 0 0 \
                    250 50 0 0 20 0 3 0 98765 104857600 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 2 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                cpu_ticks: 300,
                start_ticks: 98765,
                vsize_bytes: 104_857_600,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("1234 (x) S 1"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             62844                62844                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files("Max open files            unlimited            unlimited            files"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn reads_own_process() {
        let p = ProcessStats::read().expect("read /proc/self");
        assert!(p.open_fds >= 3, "{p:?}");
        assert!(p.max_fds >= p.open_fds, "{p:?}");
        assert!(
            p.resident_memory_bytes > 0 && p.virtual_memory_bytes >= p.resident_memory_bytes,
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        assert!(
            p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 1.0,
            "{p:?}"
        );
        assert!(p.cpu_seconds >= 0.0);
    }

    /// A controller that answers every request with `answer`, or never
    /// answers (keeping the envelopes) when `answer` is None.
    fn fake_controller(answer: Option<Result<Status, String>>) -> ControlHandle {
        let (sender, mut receiver) = mpsc::channel::<Envelope>(8);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(envelope) = receiver.recv().await {
                let reply = match (&envelope.request, &answer) {
                    (_, None) => {
                        held.push(envelope);
                        continue;
                    }
                    (Request::Status, Some(Ok(status))) => {
                        Ok(ControlResponse::Status(Box::new(status.clone())))
                    }
                    (_, Some(Err(e))) => Err(e.clone()),
                    (other, _) => Err(format!("unexpected request {other:?}")),
                };
                // The client may have given up; nothing to do then.
                let _ = envelope.reply.send(reply);
            }
        });
        ControlHandle::new(sender)
    }

    struct HttpAnswer {
        status: u16,
        headers: String,
        body: String,
    }

    async fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        http_request(addr, &request).await
    }

    async fn http_request(addr: SocketAddr, request: &str) -> HttpAnswer {
        let mut stream = within(
            "connect to the metrics server",
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        within(
            format!("the whole answer to {request:?}"),
            stream.read_to_string(&mut answer),
        )
        .await
        .expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        HttpAnswer {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    /// A test server: its address, its shutdown trigger and its task.
    type Running = (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    );

    /// Starts the server on 127.0.0.1:0.
    async fn start(control: ControlHandle, status_timeout: Duration) -> Running {
        start_with(control, status_timeout, Limits::DEFAULT).await
    }

    /// As `start`, with the listener's bounds given.
    async fn start_with(control: ControlHandle, status_timeout: Duration, limits: Limits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_bounded(listener, control, status_timeout, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Whether the server closes `stream` (end of file, or a reset) within
    /// a bound far above any time-out involved.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0_u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silent_clients_are_closed_and_connections_capped() {
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let control = fake_controller(Some(Ok(sample_status())));
        let (addr, stop, server) = start_with(control, STATUS_TIMEOUT, limits).await;
        // Two clients connect and send nothing: they hold both slots...
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        // ...so a third connection is closed at once, before it says anything...
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_by_server(&mut third).await,
            "the third connection stays open"
        );
        // ...and the silent ones are closed once their headers are overdue.
        for stream in &mut silent {
            assert!(
                closed_by_server(stream).await,
                "a silent client keeps its connection"
            );
        }
        // Then the endpoint answers again.
        let answer = http_get(addr, "/metrics").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        stop.send(()).expect("server still running");
        within("the server's stop", server)
            .await
            .expect("server task")
            .expect("serve");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serve_answers_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let control = fake_controller(Some(Ok(sample_status())));
        let server = tokio::spawn(serve_listener(listener, control, async {
            let _ = stopped.await;
        }));

        let metrics = http_get(addr, "/metrics").await;
        assert_eq!(metrics.status, 200, "{}", metrics.body);
        assert!(
            metrics.headers.contains(&format!("content-type: {CONTENT_TYPE}")),
            "{}",
            metrics.headers
        );
        let scrape = parse(&metrics.body);
        assert_eq!(
            value(
                &scrape,
                "xlb_server_sessions_total",
                &[("proxy", "frontend"), ("server", "web1")]
            ),
            1000.0
        );
        // Process metrics come from this very process.
        assert!(value(&scrape, "process_open_fds", &[]) >= 3.0);
        assert!(metrics.body.ends_with("# EOF\n"));

        // The simplest client there is (HTTP/1.0, no Host) is answered too.
        let bare = http_request(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert_eq!(bare.status, 200, "{}", bare.body);
        assert!(bare.body.ends_with("# EOF\n"));

        let index = http_get(addr, "/").await;
        assert_eq!(index.status, 200);
        assert!(index.body.contains("/metrics"));
        assert_eq!(http_get(addr, "/nope").await.status, 404);
        assert_eq!(http_get(addr, "/metrics/x").await.status, 404);

        stop.send(()).expect("server still running");
        within("the server's stop", server)
            .await
            .expect("server task")
            .expect("serve");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn controller_failure_is_503() {
        let control = fake_controller(Some(Err("the daemon is shutting down".to_owned())));
        let (addr, stop, server) = start(control, STATUS_TIMEOUT).await;
        let answer = http_get(addr, "/metrics").await;
        assert_eq!(answer.status, 503);
        assert!(
            answer.body.contains("the daemon is shutting down"),
            "{}",
            answer.body
        );
        stop.send(()).expect("server still running");
        within("the server's stop", server)
            .await
            .expect("server task")
            .expect("serve");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silent_controller_is_503_after_timeout() {
        let (addr, stop, server) = start(fake_controller(None), Duration::from_millis(50)).await;
        let answer = http_get(addr, "/metrics").await;
        assert_eq!(answer.status, 503);
        assert!(answer.body.contains("did not answer"), "{}", answer.body);
        stop.send(()).expect("server still running");
        within("the server's stop", server)
            .await
            .expect("server task")
            .expect("serve");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serve_reports_bind_failure() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("local addr");
        let err = serve(addr, fake_controller(None), async {})
            .await
            .expect_err("port in use");
        assert!(err.to_string().contains(&addr.to_string()), "{err:#}");
    }
}
