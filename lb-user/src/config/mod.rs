//! The configuration file: its TOML schema, and strict validation into the
//! model the rest of the daemon uses. Every error names the file and line.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::limits::{
    MAX_BACKENDS, MAX_INTERFACES, MAX_SERVICES, MAX_SERVICE_KEYS, MAX_SLOTS_PER_SERVICE,
};
use serde::Deserialize;
use toml::Spanned;

mod vrrp;
pub use vrrp::{NotifyConfig, TrackConfig, TrackKind, VrrpConfig, DEFAULT_PEER_LINK_PORT};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Native mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => lb_common::headers::IPPROTO_TCP,
            Self::Udp => lb_common::headers::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

// ---- the file as written -------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dataplane: Spanned<RawDataplane>,
    admin: Option<Spanned<RawAdmin>>,
    metrics: Option<Spanned<RawMetrics>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<RawService>>,
    vrrp: Option<Spanned<vrrp::RawVrrp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    #[serde(default = "default_true")]
    enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    inter: Option<Spanned<String>>,
    fastinter: Option<Spanned<String>>,
    downinter: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    xdp_mode: XdpMode,
    snat_address: Option<Spanned<String>>,
    snat_addresses: Option<Spanned<Vec<Spanned<String>>>>,
    snat_ports: Spanned<String>,
    local_ports: Option<Spanned<String>>,
    conntrack_entries: Option<Spanned<u32>>,
    udp_timeout_secs: Option<Spanned<u64>>,
    tcp_idle_timeout_secs: Option<Spanned<u64>>,
    tcp_handshake_timeout_secs: Option<Spanned<u64>>,
    #[serde(default = "default_true")]
    manage_sysctls: bool,
}

const fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    port: Spanned<i64>,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    check: Option<Spanned<RawCheck>>,
    #[serde(default)]
    on_down: OnDown,
    #[serde(default)]
    on_empty: OnEmpty,
    #[serde(default)]
    syn_cookies: SynCookies,
    backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
}

const fn default_protocol() -> Protocol {
    Protocol::Tcp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

// ---- the validated model -------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub services: Vec<ServiceConfig>,
    /// None: a single node, no failover.
    pub vrrp: Option<VrrpConfig>,
}

/// The admin API: a Unix socket (root only), and optionally a TCP listener
/// that requires a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub socket: PathBuf,
    pub listen: Option<SocketAddr>,
    pub token: Option<Secret>,
}

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/xlb/admin.sock";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:8404";

/// A secret that never appears in Debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub const fn new(value: String) -> Self {
        Self(value)
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// None: disabled.
    pub listen: Option<SocketAddr>,
}

/// What happens to a backend's established connections when it goes down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum OnDown {
    /// Keep them: a flapping check must not reset users.
    #[default]
    #[serde(rename = "keep")]
    Keep,
    /// Forget them: their next packets are answered with resets.
    #[serde(rename = "shutdown-sessions")]
    ShutdownSessions,
}

/// What a new connection gets when no backend of the service is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// A TCP reset (UDP datagrams are dropped).
    #[default]
    Reset,
    Drop,
}

/// When a TCP service answers SYNs itself with SYN cookies, opening a
/// backend connection only for a client that answers one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SynCookies {
    /// When its SNAT tuples run out to half-open connections (a SYN flood),
    /// for 10 s at a time.
    #[default]
    #[serde(rename = "under-pressure")]
    UnderPressure,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "never")]
    Never,
}

/// How a service's backends are checked. Defaults follow HAProxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub inter: Duration,
    /// Interval while a state change is pending (rising or falling).
    pub fastinter: Duration,
    /// Interval while down.
    pub downinter: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Always up.
    None,
    /// A TCP connection is accepted.
    Tcp,
    Http {
        method: String,
        path: String,
        /// Accepted status codes, inclusive.
        expect: RangeInclusive<u16>,
        host: Option<String>,
    },
    /// The command exits 0. It gets XLB_SERVER_ADDR, XLB_SERVER_PORT,
    /// XLB_SERVER_NAME and XLB_SERVICE in its environment.
    Command(Vec<String>),
}

impl CheckKind {
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tcp => "tcp",
            Self::Http { .. } => "http",
            Self::Command(_) => "command",
        }
    }
}

pub const DEFAULT_INTER: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const MAX_WEIGHT: u32 = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// Source addresses of connections to backends (one or more of this
    /// machine's addresses on the backends' network); each adds a port space.
    pub snat_addresses: Vec<Ipv4Addr>,
    pub snat_ports: RangeInclusive<u16>,
    /// The ports this host's own connections take (the kernel's
    /// `ip_local_port_range`, set to this when `manage_sysctls`): clients'
    /// ports outside it can be kept.
    pub local_ports: RangeInclusive<u16>,
    pub conntrack_entries: u32,
    pub udp_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    /// A connection whose handshake has not completed is forgotten after
    /// this long without a packet, and its SNAT tuple freed.
    pub tcp_handshake_timeout: Duration,
    pub manage_sysctls: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    pub port: u16,
    pub protocol: Protocol,
    pub check: CheckConfig,
    pub on_down: OnDown,
    pub on_empty: OnEmpty,
    pub syn_cookies: SynCookies,
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddrV4,
    /// Share of new connections; 0 drains the backend.
    pub weight: u32,
}

pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(7200);
/// Clients retransmit a SYN after 1, 3, 7, 15 s and each retransmission
/// renews the entry, so a short timeout costs a real client nothing, while
/// a flood of spoofed SYNs holds its tuples only this long (conntrack keeps
/// SYN_SENT 120 s, Cilium 60 s; neither frees tuples under pressure).
pub const DEFAULT_TCP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Below every common client's ephemeral range (Linux 32768-60999, Windows
/// and macOS 49152-65535), so that those clients' ports can be kept.
pub const DEFAULT_LOCAL_PORTS: RangeInclusive<u16> = 10_000..=19_999;
/// SNAT addresses the data plane can use.
pub const MAX_SNAT_ADDRS: usize = lb_common::maps::MAX_SNAT_ADDRS;
/// Connection-table entries at most (each connection takes two).
pub const MAX_CONNTRACK_ENTRIES: u32 = 1 << 24;
/// The lowest SNAT port: below it are well-known ports of local services.
pub const MIN_SNAT_PORT: u16 = 1024;

/// Looks up an environment variable: `None` when unset (or not Unicode).
/// The configuration reads the environment only through one of these
/// (`token_env`), so that tests can pass a fake one.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// [`Config::load`], with the environment looked up through `env`.
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with_env(path, &text, env)
    }

    /// Validates `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(path, text, &process_env)
    }

    /// [`Config::parse`], with the environment looked up through `env`.
    pub fn parse_with_env(path: &Path, text: &str, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { path, text, env }.config(raw)
    }

    /// The backend `name` of service `service`.
    #[must_use]
    pub fn backend(&self, service: &str, name: &str) -> Option<&BackendConfig> {
        self.services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.backends.iter().find(|b| b.name == name))
    }

    /// Backends across all services.
    #[must_use]
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    env: EnvLookup<'a>,
}

impl Validator<'_> {
    fn error<T>(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        let line = self.text[..span.start.min(self.text.len())].matches('\n').count() + 1;
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            message: message.into(),
        })
    }

    fn ipv4(&self, value: &Spanned<String>, what: &str) -> Result<Ipv4Addr, ConfigError> {
        match value.get_ref().parse::<Ipv4Addr>() {
            Ok(addr) if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() => {
                self.error(value.span(), format!("{what} {addr} is not a unicast address"))
            }
            Ok(addr) => Ok(addr),
            Err(_) => self.error(
                value.span(),
                format!("{what} {:?} is not an IPv4 address", value.get_ref()),
            ),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let dataplane = self.dataplane(&raw.dataplane)?;
        if raw.services.is_empty() {
            return self.error(raw.dataplane.span(), "no [[service]] is configured");
        }
        if raw.services.len() > MAX_SERVICES as usize {
            return self.error(
                raw.services[MAX_SERVICES as usize].span(),
                format!("more than {MAX_SERVICES} services"),
            );
        }
        let mut names = HashSet::new();
        let mut listeners: HashMap<(Ipv4Addr, u16, Protocol), String> = HashMap::new();
        let mut services = Vec::with_capacity(raw.services.len());
        for raw_service in &raw.services {
            let service = self.service(raw_service.get_ref())?;
            let name_span = raw_service.get_ref().name.span();
            if !names.insert(service.name.clone()) {
                return self.error(
                    name_span,
                    format!("service name {:?} is used twice", service.name),
                );
            }
            for (addr, raw_addr) in service
                .addresses
                .iter()
                .zip(raw_service.get_ref().addresses.get_ref())
            {
                if let Some(other) =
                    listeners.insert((*addr, service.port, service.protocol), service.name.clone())
                {
                    return self.error(
                        raw_addr.span(),
                        format!(
                            "{addr}:{} ({}) is already served by service {other:?}",
                            service.port, service.protocol
                        ),
                    );
                }
            }
            services.push(service);
        }
        if listeners.len() > MAX_SERVICE_KEYS as usize {
            return self.error(
                raw.dataplane.span(),
                format!("more than {MAX_SERVICE_KEYS} service addresses"),
            );
        }
        let admin = self.admin(raw.admin.as_ref())?;
        let metrics = self.metrics(raw.metrics.as_ref())?;
        let vrrp = raw
            .vrrp
            .as_ref()
            .map(|v| self.vrrp(v, &dataplane.interfaces, &services))
            .transpose()?;
        let config = Config {
            dataplane,
            admin,
            metrics,
            services,
            vrrp,
        };
        if config.backend_count() > MAX_BACKENDS as usize {
            return self.error(
                raw.dataplane.span(),
                format!("more than {MAX_BACKENDS} backends in all"),
            );
        }
        Ok(config)
    }

    fn dataplane(&self, raw: &Spanned<RawDataplane>) -> Result<DataplaneConfig, ConfigError> {
        let d = raw.get_ref();
        if d.interfaces.get_ref().is_empty() {
            return self.error(
                d.interfaces.span(),
                "interfaces: at least one interface is needed",
            );
        }
        if let Some(extra) = d.interfaces.get_ref().get(MAX_INTERFACES as usize) {
            return self.error(extra.span(), format!("more than {MAX_INTERFACES} interfaces"));
        }
        let mut seen = HashSet::new();
        for name in d.interfaces.get_ref() {
            let n = self.interface_name(name)?;
            if !seen.insert(n.clone()) {
                return self.error(name.span(), format!("interface {n:?} is listed twice"));
            }
        }
        let snat_addresses = self.snat_addresses(raw)?;
        let snat_ports = self.port_range(&d.snat_ports, "snat_ports")?;
        let local_ports = match &d.local_ports {
            None => DEFAULT_LOCAL_PORTS,
            Some(raw) => self.port_range(raw, "local_ports")?,
        };
        // Without manage_sysctls local_ports is unused: the daemon checks
        // snat_ports against the kernel's own range instead.
        if d.manage_sysctls
            && snat_ports.start() <= local_ports.end()
            && local_ports.start() <= snat_ports.end()
        {
            let span = d
                .local_ports
                .as_ref()
                .map_or_else(|| d.snat_ports.span(), Spanned::span);
            return self.error(
                span,
                format!(
                    "snat_ports {}-{} overlap local_ports {}-{} (the ports this host's own connections take)",
                    snat_ports.start(),
                    snat_ports.end(),
                    local_ports.start(),
                    local_ports.end()
                ),
            );
        }
        let conntrack_entries = match &d.conntrack_entries {
            None => lb_common::limits::DEFAULT_CONNTRACK_ENTRIES,
            Some(n) if (1024..=MAX_CONNTRACK_ENTRIES).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return self.error(
                    n.span(),
                    format!("conntrack_entries must be between 1024 and {MAX_CONNTRACK_ENTRIES}"),
                );
            }
        };
        let seconds = |value: &Option<Spanned<u64>>, default: Duration, what: &str| match value {
            None => Ok(default),
            Some(s) if (1..=86_400 * 7).contains(s.get_ref()) => Ok(Duration::from_secs(*s.get_ref())),
            Some(s) => self.error(s.span(), format!("{what} must be between 1 and 604800 seconds")),
        };
        Ok(DataplaneConfig {
            interfaces: d
                .interfaces
                .get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            xdp_mode: d.xdp_mode,
            snat_addresses,
            snat_ports,
            local_ports,
            conntrack_entries,
            udp_timeout: seconds(&d.udp_timeout_secs, DEFAULT_UDP_TIMEOUT, "udp_timeout_secs")?,
            tcp_idle_timeout: seconds(
                &d.tcp_idle_timeout_secs,
                DEFAULT_TCP_IDLE_TIMEOUT,
                "tcp_idle_timeout_secs",
            )?,
            tcp_handshake_timeout: seconds(
                &d.tcp_handshake_timeout_secs,
                DEFAULT_TCP_HANDSHAKE_TIMEOUT,
                "tcp_handshake_timeout_secs",
            )?,
            manage_sysctls: d.manage_sysctls,
        })
    }

    /// `snat_address` or `snat_addresses`: exactly one of them, with 1 to
    /// MAX_SNAT_ADDRS distinct unicast addresses.
    fn snat_addresses(&self, raw: &Spanned<RawDataplane>) -> Result<Vec<Ipv4Addr>, ConfigError> {
        let d = raw.get_ref();
        let listed: Vec<&Spanned<String>> = match (&d.snat_address, &d.snat_addresses) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if many.get_ref().is_empty() => {
                return self.error(many.span(), "snat_addresses: at least one address is needed");
            }
            (None, Some(many)) if many.get_ref().len() > MAX_SNAT_ADDRS => {
                return self.error(
                    many.span(),
                    format!("snat_addresses: at most {MAX_SNAT_ADDRS} addresses"),
                );
            }
            (None, Some(many)) => many.get_ref().iter().collect(),
            (Some(one), Some(_)) => {
                return self.error(one.span(), "set snat_address or snat_addresses, not both");
            }
            (None, None) => {
                return self.error(
                    raw.span(),
                    "[dataplane] needs snat_address (or snat_addresses): this machine's address on the backends' network",
                );
            }
        };
        let mut addresses = Vec::new();
        for value in listed {
            let addr = self.ipv4(value, "snat_address")?;
            if addresses.contains(&addr) {
                return self.error(value.span(), format!("snat address {addr} is listed twice"));
            }
            addresses.push(addr);
        }
        Ok(addresses)
    }

    fn interface_name(&self, raw: &Spanned<String>) -> Result<String, ConfigError> {
        let n = raw.get_ref();
        if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ', '\0']) {
            return self.error(raw.span(), format!("{n:?} is not a valid interface name"));
        }
        Ok(n.clone())
    }

    /// A secret read from a file (trimmed), never echoed.
    fn secret_file(&self, file: &Spanned<String>, what: &str) -> Result<Secret, ConfigError> {
        match std::fs::read_to_string(file.get_ref()) {
            Ok(text) => Ok(Secret::new(text.trim().to_owned())),
            Err(e) => self.error(
                file.span(),
                format!("cannot read {what} {:?}: {e}", file.get_ref()),
            ),
        }
    }

    fn socket_addr(&self, raw: &Spanned<String>, what: &str) -> Result<SocketAddr, ConfigError> {
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Ok(addr),
            Err(_) => self.error(
                raw.span(),
                format!("{what} {:?} is not an address:port", raw.get_ref()),
            ),
        }
    }

    fn admin(&self, raw: Option<&Spanned<RawAdmin>>) -> Result<AdminConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(AdminConfig {
                socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
                listen: None,
                token: None,
            });
        };
        let a = raw.get_ref();
        let socket = match &a.socket {
            Some(path) if path.get_ref().starts_with('/') => PathBuf::from(path.get_ref()),
            Some(path) => return self.error(path.span(), "admin.socket must be an absolute path"),
            None => PathBuf::from(DEFAULT_ADMIN_SOCKET),
        };
        let listen = a
            .listen
            .as_ref()
            .map(|l| self.socket_addr(l, "admin.listen"))
            .transpose()?;
        let token = match (&listen, &a.token_file) {
            (None, None) => None,
            (Some(_), None) => {
                return self.error(
                    raw.span(),
                    "admin.listen needs admin.token_file: the TCP listener requires a token",
                )
            }
            (None, Some(file)) => {
                return self.error(file.span(), "admin.token_file is only used with admin.listen")
            }
            (Some(_), Some(file)) => {
                let token = self.secret_file(file, "admin.token_file")?;
                if token.expose().len() < 16 {
                    return self.error(file.span(), "the admin token must be at least 16 characters");
                }
                Some(token)
            }
        };
        Ok(AdminConfig {
            socket,
            listen,
            token,
        })
    }

    fn metrics(&self, raw: Option<&Spanned<RawMetrics>>) -> Result<MetricsConfig, ConfigError> {
        let default = || DEFAULT_METRICS_LISTEN.parse::<SocketAddr>().ok();
        let Some(raw) = raw else {
            return Ok(MetricsConfig { listen: default() });
        };
        let m = raw.get_ref();
        if !m.enabled {
            return Ok(MetricsConfig { listen: None });
        }
        let listen = match &m.listen {
            Some(l) => Some(self.socket_addr(l, "metrics.listen")?),
            None => default(),
        };
        Ok(MetricsConfig { listen })
    }

    fn duration(
        &self,
        raw: &Option<Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        match parse_duration(raw.get_ref()) {
            Some(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(3600) => Ok(d),
            _ => self.error(
                raw.span(),
                format!(
                    "{what} {:?} must be a duration from 10ms to 1h, like \"2s\" or \"500ms\"",
                    raw.get_ref()
                ),
            ),
        }
    }

    fn check(
        &self,
        service: &str,
        protocol: Protocol,
        raw: Option<&Spanned<RawCheck>>,
    ) -> Result<CheckConfig, ConfigError> {
        let empty = RawCheck::default();
        let (c, span) = match raw {
            Some(raw) => (raw.get_ref(), raw.span()),
            None => (&empty, 0..0),
        };
        let at = |field: &Option<Spanned<String>>| field.as_ref().map_or(span.clone(), Spanned::span);
        let default_kind = if protocol == Protocol::Tcp { "tcp" } else { "none" };
        let kind_name = c.kind.as_ref().map_or(default_kind, |k| k.get_ref().as_str());
        let kind = match kind_name {
            "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => {
                let method = c
                    .method
                    .as_ref()
                    .map_or_else(|| "GET".to_owned(), |m| m.get_ref().clone());
                if method.is_empty() || !method.chars().all(|ch| ch.is_ascii_uppercase()) {
                    return self.error(
                        at(&c.method),
                        format!("service {service:?}: check method {method:?} is not an HTTP method"),
                    );
                }
                let path = c
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone());
                if !path.starts_with('/') || path.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                    return self.error(
                        at(&c.path),
                        format!("service {service:?}: check path {path:?} must start with / and contain no spaces"),
                    );
                }
                let expect = match &c.expect_status {
                    None => 200..=399,
                    Some(e) => match parse_status_range(e.get_ref()) {
                        Some(range) => range,
                        None => {
                            return self.error(
                                e.span(),
                                format!(
                                    "service {service:?}: expect_status {:?} is not a status like \"200\" or a range like \"200-299\"",
                                    e.get_ref()
                                ),
                            )
                        }
                    },
                };
                let host = c.host.as_ref().map(|h| h.get_ref().clone());
                if let Some(h) = &host {
                    if h.is_empty() || h.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                        return self.error(
                            at(&c.host),
                            format!("service {service:?}: check host {h:?} is not a host name"),
                        );
                    }
                }
                CheckKind::Http {
                    method,
                    path,
                    expect,
                    host,
                }
            }
            "command" => match &c.command {
                Some(cmd) if cmd.get_ref().first().is_some_and(|p| !p.is_empty()) => {
                    CheckKind::Command(cmd.get_ref().clone())
                }
                Some(cmd) => {
                    return self.error(cmd.span(), format!("service {service:?}: check command is empty"))
                }
                None => {
                    return self.error(
                        span,
                        format!(
                        "service {service:?}: a command check needs command = [\"program\", \"arg\", ...]"
                    ),
                    )
                }
            },
            other => {
                return self.error(
                    at(&c.kind),
                    format!("service {service:?}: check type {other:?} is not tcp, http, command or none"),
                )
            }
        };
        if kind_name != "http" {
            for (field, name) in [
                (&c.method, "method"),
                (&c.path, "path"),
                (&c.expect_status, "expect_status"),
                (&c.host, "host"),
            ] {
                if let Some(f) = field {
                    return self.error(
                        f.span(),
                        format!("service {service:?}: check {name} only applies to type = \"http\""),
                    );
                }
            }
        }
        if kind_name != "command" {
            if let Some(cmd) = &c.command {
                return self.error(
                    cmd.span(),
                    format!("service {service:?}: check command only applies to type = \"command\""),
                );
            }
        }
        if protocol == Protocol::Udp && matches!(kind, CheckKind::Tcp | CheckKind::Http { .. }) {
            return self.error(
                span,
                format!("service {service:?} is UDP: use a command check or none"),
            );
        }
        let inter = self.duration(&c.inter, DEFAULT_INTER, "check inter")?;
        let count = |value: &Option<Spanned<u32>>, default: u32, what: &str| match value {
            None => Ok(default),
            Some(v) if (1..=100).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => self.error(
                v.span(),
                format!("service {service:?}: check {what} must be 1 to 100"),
            ),
        };
        Ok(CheckConfig {
            kind,
            inter,
            fastinter: self.duration(&c.fastinter, inter, "check fastinter")?,
            downinter: self.duration(&c.downinter, inter, "check downinter")?,
            timeout: self.duration(&c.timeout, inter.min(Duration::from_secs(2)), "check timeout")?,
            rise: count(&c.rise, DEFAULT_RISE, "rise")?,
            fall: count(&c.fall, DEFAULT_FALL, "fall")?,
        })
    }

    fn port_range(&self, raw: &Spanned<String>, what: &str) -> Result<RangeInclusive<u16>, ConfigError> {
        let text = raw.get_ref();
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
        match parsed {
            Some((first, last)) if first >= MIN_SNAT_PORT && first <= last => Ok(first..=last),
            Some(_) => self.error(
                raw.span(),
                format!("{what} {text:?}: need FIRST-LAST with {MIN_SNAT_PORT} <= FIRST <= LAST <= 65535"),
            ),
            None => self.error(
                raw.span(),
                format!("{what} {text:?} is not a range like \"20000-29999\""),
            ),
        }
    }

    fn service(&self, raw: &RawService) -> Result<ServiceConfig, ConfigError> {
        let name = raw.name.get_ref().trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return self.error(
                raw.name.span(),
                format!("service name {name:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        let port = match u16::try_from(*raw.port.get_ref()) {
            Ok(p) if p != 0 => p,
            _ => {
                return self.error(
                    raw.port.span(),
                    format!("service {name:?}: port {} is not in 1-65535", raw.port.get_ref()),
                )
            }
        };
        if raw.addresses.get_ref().is_empty() {
            return self.error(raw.addresses.span(), format!("service {name:?} has no addresses"));
        }
        let mut addresses = Vec::new();
        for raw_addr in raw.addresses.get_ref() {
            let addr = self.ipv4(raw_addr, &format!("service {name:?} address"))?;
            if addresses.contains(&addr) {
                return self.error(
                    raw_addr.span(),
                    format!("service {name:?}: address {addr} is listed twice"),
                );
            }
            addresses.push(addr);
        }
        let raw_backends = match &raw.backends {
            Some(list) if !list.get_ref().is_empty() => list,
            Some(list) => {
                return self.error(list.span(), format!("service {name:?} has an empty backend pool"))
            }
            None => {
                return self.error(
                    raw.name.span(),
                    format!("service {name:?} has an empty backend pool (no backends)"),
                )
            }
        };
        if raw_backends.get_ref().len() > MAX_SLOTS_PER_SERVICE as usize {
            return self.error(
                raw_backends.span(),
                format!("service {name:?} has more than {MAX_SLOTS_PER_SERVICE} backends"),
            );
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for raw_backend in raw_backends.get_ref() {
            let b = raw_backend.get_ref();
            let backend_name = b.name.get_ref().trim().to_owned();
            if backend_name.is_empty() {
                return self.error(
                    b.name.span(),
                    format!("service {name:?}: a backend has an empty name"),
                );
            }
            if backends.iter().any(|other| other.name == backend_name) {
                return self.error(
                    b.name.span(),
                    format!("service {name:?}: backend name {backend_name:?} is used twice"),
                );
            }
            let address = match b.address.get_ref().parse::<SocketAddrV4>() {
                Ok(a)
                    if a.port() != 0
                        && !a.ip().is_unspecified()
                        && !a.ip().is_multicast()
                        && !a.ip().is_broadcast() =>
                {
                    a
                }
                _ => {
                    return self.error(
                        b.address.span(),
                        format!(
                            "service {name:?} backend {backend_name:?}: {:?} is not an IPv4 address:port",
                            b.address.get_ref()
                        ),
                    )
                }
            };
            if backends.iter().any(|other| other.address == address) {
                return self.error(
                    b.address.span(),
                    format!("service {name:?}: backend address {address} is listed twice"),
                );
            }
            let weight = match &b.weight {
                None => 1,
                Some(w) => match u32::try_from(*w.get_ref()) {
                    Ok(w) if w <= MAX_WEIGHT => w,
                    _ => {
                        return self.error(
                            w.span(),
                            format!(
                                "service {name:?} backend {backend_name:?}: weight must be 0 to {MAX_WEIGHT}"
                            ),
                        )
                    }
                },
            };
            backends.push(BackendConfig {
                name: backend_name,
                address,
                weight,
            });
        }
        Ok(ServiceConfig {
            name: name.to_owned(),
            addresses,
            port,
            protocol: raw.protocol,
            check: self.check(name, raw.protocol, raw.check.as_ref())?,
            on_down: raw.on_down,
            on_empty: raw.on_empty,
            syn_cookies: raw.syn_cookies,
            backends,
        })
    }
}

/// "2s", "500ms", "1m"; a bare number is seconds.
#[must_use]
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

fn parse_status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let code = text.trim().parse::<u16>().ok()?;
            (code, code)
        }
    };
    ((100..=599).contains(&first) && (100..=599).contains(&last) && first <= last).then_some(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config, also the base of the `[vrrp]` tests.
    pub(super) const GOOD: &str = r#"
[dataplane]
interfaces = ["eth0", "eth1"]
snat_address = "10.108.0.5"
snat_ports = "20000-29999"

[[service]]
name = "web"
addresses = ["45.55.123.242", "10.17.0.5"]
port = 3000
backends = [
  { name = "web01", address = "10.108.0.2:3000" },
  { name = "web02", address = "10.108.0.3:3000" },
]

[[service]]
name = "dns"
addresses = ["45.55.123.242"]
port = 53
protocol = "udp"
backends = [{ name = "ns1", address = "10.108.0.2:53" }]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("lb.toml"), text)
    }

    fn error_of(text: &str) -> String {
        parse(text).expect_err("config should be rejected").to_string()
    }

    #[test]
    fn good_config_parses() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].protocol, Protocol::Tcp);
        assert_eq!(config.services[0].addresses.len(), 2);
        assert_eq!(config.services[1].protocol, Protocol::Udp);
        assert_eq!(config.dataplane.snat_ports, 20000..=29999);
        assert_eq!(config.dataplane.local_ports, DEFAULT_LOCAL_PORTS);
        assert_eq!(config.dataplane.xdp_mode, XdpMode::Auto);
        assert_eq!(config.backend_count(), 3);
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/haproxy-equivalent.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.services.len(), 2);
        let ports: Vec<u16> = config.services.iter().map(|s| s.port).collect();
        assert_eq!(ports, [5000, 3000]);
    }

    #[test]
    fn shipped_pair_example_is_valid() {
        // Its token comes from $DIGITALOCEAN_TOKEN: a fake environment
        // provides it (tests run in parallel; never set the process's).
        let env = |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| "dop_v1_example".to_owned());
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/primary.toml");
        let config = Config::load_with_env(&path, &env).unwrap();
        let vrrp = config.vrrp.unwrap();
        assert_eq!(
            (vrrp.vrid, vrrp.priority, vrrp.interval_cs, vrrp.realtime_priority),
            (50, 200, 2, Some(10))
        );
        assert_eq!(
            vrrp.digitalocean.unwrap().reserved_ip,
            Ipv4Addr::new(45, 55, 123, 242)
        );
        assert_eq!(config.services.len(), 2);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = GOOD.replace("port = 3000", "port = 3000\nbalance = \"leastconn\"");
        let err = error_of(&text);
        assert!(err.contains("balance") && err.contains("line 11"), "{err}");
    }

    #[test]
    fn bad_backend_address_names_line_and_backend() {
        let text = GOOD.replace("10.108.0.3:3000", "10.108.0.300:3000");
        let err = error_of(&text);
        assert!(err.starts_with("lb.toml:13:") && err.contains("web02"), "{err}");
    }

    #[test]
    fn empty_pool_is_rejected() {
        let text = GOOD.replace(
            r#"backends = [{ name = "ns1", address = "10.108.0.2:53" }]"#,
            "backends = []",
        );
        let err = error_of(&text);
        assert!(
            err.contains("empty backend pool") && err.contains("\"dns\""),
            "{err}"
        );
    }

    #[test]
    fn overlapping_listener_is_rejected() {
        let text = GOOD.replace("port = 53\nprotocol = \"udp\"", "port = 3000");
        let err = error_of(&text);
        assert!(
            err.contains("45.55.123.242:3000 (tcp) is already served by service \"web\""),
            "{err}"
        );
        assert!(err.starts_with("lb.toml:18:"), "{err}");
    }

    #[test]
    fn same_port_other_protocol_is_fine() {
        let text = GOOD.replace("port = 53", "port = 3000");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn more_interfaces_than_the_data_plane_holds_are_rejected() {
        let with = |n: u32| {
            let names: Vec<String> = (0..n).map(|i| format!("\"eth{i}\"")).collect();
            GOOD.replace(
                "interfaces = [\"eth0\", \"eth1\"]",
                &format!("interfaces = [{}]", names.join(", ")),
            )
        };
        assert!(parse(&with(MAX_INTERFACES)).is_ok());
        let err = error_of(&with(MAX_INTERFACES + 1));
        assert!(
            err.contains(&format!("more than {MAX_INTERFACES} interfaces")),
            "{err}"
        );
    }

    #[test]
    fn several_snat_addresses_and_the_handshake_timeout_are_read() {
        let text = GOOD.replace(
            "snat_address = \"10.108.0.5\"",
            "snat_addresses = [\"10.108.0.5\", \"10.108.0.6\"]\ntcp_handshake_timeout_secs = 5",
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.dataplane.snat_addresses,
            [Ipv4Addr::new(10, 108, 0, 5), Ipv4Addr::new(10, 108, 0, 6)]
        );
        assert_eq!(config.dataplane.tcp_handshake_timeout, Duration::from_secs(5));
        assert_eq!(
            parse(GOOD).unwrap().dataplane.tcp_handshake_timeout,
            DEFAULT_TCP_HANDSHAKE_TIMEOUT
        );
    }

    #[test]
    fn snat_addresses_are_checked() {
        let with = |line: &str| GOOD.replace("snat_address = \"10.108.0.5\"", line);
        let nine: Vec<String> = (1..=9).map(|i| format!("\"10.108.0.{i}\"")).collect();
        for (line, needle) in [
            ("", "needs snat_address"),
            ("snat_addresses = []", "at least one"),
            (
                "snat_addresses = [\"10.108.0.5\", \"10.108.0.5\"]",
                "listed twice",
            ),
            (
                "snat_addresses = [\"10.108.0.5\", \"224.0.0.1\"]",
                "not a unicast",
            ),
            (
                "snat_address = \"10.108.0.5\"\nsnat_addresses = [\"10.108.0.6\"]",
                "not both",
            ),
            (&format!("snat_addresses = [{}]", nine.join(", ")), "at most 8"),
        ] {
            let err = error_of(&with(line));
            assert!(err.contains(needle), "{line:?}: {err}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        for (from, to, needle) in [
            (
                "snat_ports = \"20000-29999\"",
                "snat_ports = \"29999-20000\"",
                "snat_ports",
            ),
            (
                "snat_ports = \"20000-29999\"",
                "snat_ports = \"80-29999\"",
                "snat_ports",
            ),
            (
                "snat_address = \"10.108.0.5\"",
                "snat_address = \"10.108.0\"",
                "snat_address",
            ),
            ("port = 3000", "port = 70000", "port 70000"),
            (
                "interfaces = [\"eth0\", \"eth1\"]",
                "interfaces = []",
                "at least one",
            ),
            (
                "interfaces = [\"eth0\", \"eth1\"]",
                "interfaces = [\"eth0\", \"eth0\"]",
                "twice",
            ),
            ("name = \"dns\"", "name = \"web\"", "used twice"),
            (
                "\"45.55.123.242\", \"10.17.0.5\"",
                "\"45.55.123.242\", \"45.55.123.242\"",
                "listed twice",
            ),
            ("protocol = \"udp\"", "protocol = \"sctp\"", "sctp"),
            (
                "snat_ports = \"20000-29999\"",
                "snat_ports = \"20000-29999\"\nlocal_ports = \"29000-40000\"",
                "overlap local_ports 29000-40000",
            ),
            (
                "snat_ports = \"20000-29999\"",
                "snat_ports = \"15000-29999\"",
                "overlap local_ports 10000-19999",
            ),
            (
                "snat_ports = \"20000-29999\"",
                "snat_ports = \"20000-29999\"\nlocal_ports = \"60000\"",
                "local_ports \"60000\" is not a range",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let err = error_of(&GOOD.replace(from, to));
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn checks_default_like_haproxy_and_validate() {
        let config = parse(GOOD).unwrap();
        let check = &config.services[0].check;
        assert_eq!(
            (check.kind.name(), check.inter, check.rise, check.fall),
            ("tcp", DEFAULT_INTER, 2, 3)
        );
        assert_eq!(
            config.services[1].check.kind,
            CheckKind::None,
            "UDP defaults to no check"
        );
        assert_eq!(config.services[0].backends[0].weight, 1);
        assert_eq!(config.services[0].on_down, OnDown::Keep);
        assert_eq!(config.metrics.listen, Some("127.0.0.1:8404".parse().unwrap()));

        let http = GOOD.replace(
            "port = 3000\n",
            "port = 3000\non_down = \"shutdown-sessions\"\ncheck = { type = \"http\", path = \"/health\", expect_status = \"200\", inter = \"500ms\", rise = 1 }\n",
        );
        let config = parse(&http).unwrap();
        let check = &config.services[0].check;
        assert!(
            matches!(&check.kind, CheckKind::Http { path, expect, .. } if path == "/health" && *expect == (200..=200))
        );
        assert_eq!(
            (check.inter, check.fastinter, check.rise),
            (Duration::from_millis(500), Duration::from_millis(500), 1)
        );
        assert_eq!(config.services[0].on_down, OnDown::ShutdownSessions);

        for (check, needle) in [
            ("{ type = \"ping\" }", "not tcp, http"),
            ("{ type = \"tcp\", path = \"/\" }", "only applies"),
            ("{ type = \"http\", expect_status = \"abc\" }", "expect_status"),
            ("{ inter = \"2 weeks\" }", "duration"),
            ("{ fall = 0 }", "fall must be"),
            ("{ type = \"command\" }", "needs command"),
        ] {
            let err = error_of(&GOOD.replace("port = 3000\n", &format!("port = 3000\ncheck = {check}\n")));
            assert!(
                err.contains(needle) && err.starts_with("lb.toml:"),
                "{check}: {err}"
            );
        }
    }

    #[test]
    fn weights_and_admin_token_are_validated() {
        let weighted = GOOD.replace("10.108.0.3:3000\" }", "10.108.0.3:3000\", weight = 0 }");
        assert_eq!(parse(&weighted).unwrap().services[0].backends[1].weight, 0);
        let err = error_of(&GOOD.replace("10.108.0.3:3000\" }", "10.108.0.3:3000\", weight = 300 }"));
        assert!(err.contains("weight"), "{err}");

        let err = error_of(&format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{GOOD}"));
        assert!(err.contains("token_file"), "{err}");
        let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"{}\"\n{GOOD}",
            token.display()
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.admin.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123")
        );
        assert!(
            !format!("{config:?}").contains("0123456789abcdef"),
            "the token must not show in Debug"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_service_is_an_error() {
        let text = GOOD.split("[[service]]").next().unwrap();
        assert!(error_of(text).contains("no [[service]]"));
    }
}
