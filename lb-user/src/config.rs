//! The configuration file: its TOML schema, and strict validation into the
//! model the rest of the daemon uses. Every error names the file and line.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::limits::{MAX_BACKENDS, MAX_SERVICES, MAX_SERVICE_KEYS, MAX_SLOTS_PER_SERVICE};
use serde::Deserialize;
use toml::Spanned;

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
    #[serde(default, rename = "service")]
    services: Vec<Spanned<RawService>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    xdp_mode: XdpMode,
    snat_address: Spanned<String>,
    snat_ports: Spanned<String>,
    conntrack_entries: Option<Spanned<u32>>,
    udp_timeout_secs: Option<Spanned<u64>>,
    tcp_idle_timeout_secs: Option<Spanned<u64>>,
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
}

// ---- the validated model -------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub services: Vec<ServiceConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub snat_address: Ipv4Addr,
    pub snat_ports: RangeInclusive<u16>,
    pub conntrack_entries: u32,
    pub udp_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub manage_sysctls: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    pub port: u16,
    pub protocol: Protocol,
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddrV4,
}

pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(7200);
/// Connection-table entries at most (each connection takes two).
pub const MAX_CONNTRACK_ENTRIES: u32 = 1 << 24;
/// The lowest SNAT port: below it are well-known ports of local services.
pub const MIN_SNAT_PORT: u16 = 1024;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { path, text }.config(raw)
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
        let config = Config { dataplane, services };
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
        let mut seen = HashSet::new();
        for name in d.interfaces.get_ref() {
            let n = name.get_ref();
            if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ', '\0']) {
                return self.error(name.span(), format!("{n:?} is not a valid interface name"));
            }
            if !seen.insert(n.clone()) {
                return self.error(name.span(), format!("interface {n:?} is listed twice"));
            }
        }
        let snat_address = self.ipv4(&d.snat_address, "snat_address")?;
        let snat_ports = self.port_range(&d.snat_ports)?;
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
            snat_address,
            snat_ports,
            conntrack_entries,
            udp_timeout: seconds(&d.udp_timeout_secs, DEFAULT_UDP_TIMEOUT, "udp_timeout_secs")?,
            tcp_idle_timeout: seconds(
                &d.tcp_idle_timeout_secs,
                DEFAULT_TCP_IDLE_TIMEOUT,
                "tcp_idle_timeout_secs",
            )?,
            manage_sysctls: d.manage_sysctls,
        })
    }

    fn port_range(&self, raw: &Spanned<String>) -> Result<RangeInclusive<u16>, ConfigError> {
        let text = raw.get_ref();
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
        match parsed {
            Some((first, last)) if first >= MIN_SNAT_PORT && first <= last => Ok(first..=last),
            Some(_) => self.error(
                raw.span(),
                format!(
                    "snat_ports {text:?}: need FIRST-LAST with {MIN_SNAT_PORT} <= FIRST <= LAST <= 65535"
                ),
            ),
            None => self.error(
                raw.span(),
                format!("snat_ports {text:?} is not a range like \"20000-29999\""),
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
            backends.push(BackendConfig {
                name: backend_name,
                address,
            });
        }
        Ok(ServiceConfig {
            name: name.to_owned(),
            addresses,
            port,
            protocol: raw.protocol,
            backends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
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
        ] {
            assert!(GOOD.contains(from), "{from}");
            let err = error_of(&GOOD.replace(from, to));
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn no_service_is_an_error() {
        let text = GOOD.split("[[service]]").next().unwrap();
        assert!(error_of(text).contains("no [[service]]"));
    }
}
