//! The daemon's state as reported to the admin API, the CLI and the metrics
//! endpoint: one snapshot type, serialised as JSON on the admin socket.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub config_path: String,
    /// Seconds since the UNIX epoch when the daemon started.
    pub started_at_unix: u64,
    /// Seconds since the UNIX epoch of this snapshot.
    pub now_unix: u64,
    pub last_reload: Option<ReloadOutcome>,
    pub services: Vec<ServiceStatus>,
    /// Global data-plane counters (by outcome), summed over CPUs.
    pub counters: Vec<CounterValue>,
    /// Entries in the connection table (two per connection).
    pub conntrack_entries: u64,
    pub conntrack_capacity: u64,
    /// None: no [vrrp] configured.
    #[serde(default)]
    pub vrrp: Option<VrrpStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub at_unix: u64,
    pub ok: bool,
    /// What changed, or why the new config was refused.
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub addresses: Vec<String>,
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// "tcp", "http", "command" or "none".
    pub check: String,
    /// Backends currently taking new connections.
    pub active_backends: u32,
    pub connections_total: u64,
    /// New connections refused (reset or dropped) because no backend was up.
    pub refused_total: u64,
    pub packets_in_total: u64,
    pub bytes_in_total: u64,
    pub packets_out_total: u64,
    pub bytes_out_total: u64,
    /// New connections per second over the last few seconds.
    pub connection_rate: f64,
    pub backends: Vec<BackendStatus>,
}

/// A backend's state as HAProxy names it: UP, DOWN, DRAIN (weight 0 or
/// drained by the operator, keeps its connections), MAINT is not used.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendState {
    #[default]
    Up,
    Down,
    Drain,
}

impl BackendState {
    pub const ALL: [BackendState; 3] = [BackendState::Up, BackendState::Down, BackendState::Drain];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
            Self::Drain => "DRAIN",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub state: BackendState,
    /// Configured weight (0 = drain).
    pub weight: u32,
    /// Drained by the operator (`xlb drain`).
    pub drained: bool,
    /// Health as the checks see it.
    pub healthy: bool,
    pub checks_total: u64,
    pub check_failures_total: u64,
    /// Result of the last check ("ok", or why it failed); None before the first.
    pub last_check: Option<String>,
    /// Seconds since the UNIX epoch of the last UP/DOWN change (or of start).
    pub last_change_unix: u64,
    /// UP to DOWN transitions.
    pub downs_total: u64,
    /// Tracked connections (client side) currently using this backend.
    pub active_connections: u64,
    /// SNAT tuples towards this backend that a new client could not take at
    /// once: live connections, and closed ones within their hold.
    #[serde(default)]
    pub snat_tuples: u64,
    pub connections_total: u64,
    pub packets_to_total: u64,
    pub bytes_to_total: u64,
    pub packets_from_total: u64,
    pub bytes_from_total: u64,
    pub connection_rate: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    pub value: u64,
}

/// The failover side: the VRRP election, this node's tracked health, and
/// what the movers of the floating IP last did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VrrpStatus {
    /// "INIT", "BACKUP", "MASTER" or "FAULT".
    pub state: String,
    pub vrid: u8,
    pub version: u8,
    pub interface: String,
    pub source_address: String,
    pub advert_interval_ms: u64,
    /// Advertised now (weighted tracks may have changed it).
    pub priority: u8,
    pub configured_priority: u8,
    /// The router this node believes is master (itself when MASTER).
    pub current_master: Option<String>,
    /// Whether this node's health checks have settled (since it came back
    /// from a fault): until then it does not take the IP from a working
    /// master.
    #[serde(default)]
    pub pools_ready: bool,
    pub virtual_addresses: Vec<String>,
    pub transitions_total: u64,
    /// The last transitions, oldest first.
    pub transitions: Vec<VrrpTransition>,
    pub adverts_sent_total: u64,
    /// Accepted advertisements.
    pub adverts_received_total: u64,
    /// Dropped advertisements by reason (checksum, auth, vrid, ttl, ...).
    pub adverts_rejected: Vec<CounterValue>,
    pub tracks: Vec<TrackStatus>,
    pub movers: Vec<MoverStatus>,
    pub peer_links: Vec<PeerLinkStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VrrpTransition {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Milliseconds since the UNIX epoch.
    pub at_unix_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrackStatus {
    pub name: String,
    pub ok: bool,
    /// None: failing means FAULT; else the priority change while failing.
    pub weight: Option<i16>,
    /// The last observation ("ok" or why not).
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MoverStatus {
    /// "local", "digitalocean" or "notify".
    pub mover: String,
    /// What it last did ("take over", "release", "reconcile", "notify master", ...); empty before the first.
    pub last_action: String,
    pub ok: bool,
    pub detail: String,
    pub at_unix_ms: u64,
    pub actions_total: u64,
    pub failures_total: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerLinkStatus {
    pub peer: String,
    pub up: bool,
    /// Times the peer's end closed (its process went away).
    pub closes_total: u64,
}
