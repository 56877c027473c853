//! The `[vrrp]` section: the election (VRRP), what this node's health is
//! tracked by, and how the floating IP moves (`local`, `digitalocean`,
//! `notify`). Names follow keepalived where an operator would look for them.

use std::{collections::HashSet, net::Ipv4Addr, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Secret, ServiceConfig, Validator};
use crate::{
    failover::{
        digitalocean::{DigitalOceanSettings, DEFAULT_API_URL, DEFAULT_METADATA_URL},
        local::LocalSettings,
    },
    vrrp::packet::Version,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    interface: Spanned<String>,
    vrid: Spanned<i64>,
    priority: Spanned<i64>,
    version: Option<Spanned<i64>>,
    advert_interval: Option<Spanned<String>>,
    source_address: Spanned<String>,
    unicast_peers: Option<Spanned<Vec<Spanned<String>>>>,
    auth_pass_file: Option<Spanned<String>>,
    #[serde(default = "super::default_true")]
    preempt: bool,
    preempt_delay: Option<Spanned<String>>,
    virtual_addresses: Option<Spanned<Vec<Spanned<String>>>>,
    peer_link_port: Option<Spanned<i64>>,
    peer_link_key_file: Option<Spanned<String>>,
    stop_drain: Option<Spanned<String>>,
    realtime_priority: Option<Spanned<i64>>,
    #[serde(default)]
    track: Vec<Spanned<RawTrack>>,
    local: Option<Spanned<RawLocal>>,
    digitalocean: Option<Spanned<RawDigitalOcean>>,
    notify: Option<Spanned<RawNotify>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    service: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    weight: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    interface: Option<Spanned<String>>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    garp_count: Option<Spanned<u32>>,
    garp_interval: Option<Spanned<String>>,
    garp_refresh: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigitalOcean {
    reserved_ip: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    droplet_id: Option<Spanned<u64>>,
    api_url: Option<Spanned<String>>,
    metadata_url: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    assign_timeout: Option<Spanned<String>>,
    reconcile_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    master: Option<Spanned<Vec<String>>>,
    backup: Option<Spanned<Vec<String>>>,
    fault: Option<Spanned<Vec<String>>>,
    stop: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

// ---- the validated model -------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Where advertisements are sent and received.
    pub interface: String,
    pub vrid: u8,
    /// 1-254, or 255 for the address owner (takes over at once on start).
    pub priority: u8,
    pub version: Version,
    /// Advertisement_Interval in centiseconds.
    pub interval_cs: u16,
    /// This node's address on `interface` (keepalived's unicast_src_ip).
    pub source_address: Ipv4Addr,
    /// Empty: multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Version 2 simple-text password (keepalived's auth_type PASS).
    pub auth_pass: Option<Secret>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// The addresses the advertisements carry.
    pub virtual_addresses: Vec<Ipv4Addr>,
    /// TCP port of the link between xlb peers that reveals a crashed peer at
    /// once (the kernel closes a dead process's connections). None: off.
    pub peer_link_port: Option<u16>,
    /// The TCP-MD5 key (RFC 2385) that signs the peer link, so that no
    /// third party can reset it (a close makes the backup take over).
    pub peer_link_key: Option<Secret>,
    /// On a clean stop, after handing the IP over, keep forwarding this
    /// node's established connections for at most this long.
    pub stop_drain: Duration,
    /// SCHED_RR priority (1-99) of the thread that runs the election, so a
    /// saturated CPU cannot delay an advertisement (keepalived's
    /// vrrp_rt_priority). None: normal scheduling.
    pub realtime_priority: Option<u8>,
    /// Configured tracks, plus the implicit ones (see `implicit_tracks`).
    pub tracks: Vec<TrackConfig>,
    pub local: Option<LocalSettings>,
    pub digitalocean: Option<DigitalOceanSettings>,
    pub notify: Option<NotifyConfig>,
    /// Environment variables that hold secrets (`token_env`): removed from
    /// the environment of notify and track commands.
    pub secret_env: Vec<String>,
}

/// Something this node's fitness to be master depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    pub kind: TrackKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// None: failing sends the node to FAULT. Some(w): the priority changes
    /// by w (usually negative) while failing, like keepalived's weight.
    pub weight: Option<i16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// The XDP program is attached to every data-plane interface.
    Dataplane,
    /// The service has at least one backend up.
    Service(String),
    /// The interface is up (operstate up or unknown).
    Interface(String),
    /// The command exits 0 (keepalived's track_script).
    Command(Vec<String>),
}

impl TrackKind {
    /// How the status names it.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Dataplane => "dataplane attached".to_owned(),
            Self::Service(s) => format!("service {s} has a backend up"),
            Self::Interface(i) => format!("interface {i} up"),
            Self::Command(argv) => format!("command {}", argv.join(" ")),
        }
    }
}

/// keepalived-style notify commands, run in order of the transitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    pub master: Option<Vec<String>>,
    pub backup: Option<Vec<String>>,
    pub fault: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    pub timeout: Duration,
}

pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_PEER_LINK_PORT: u16 = 7480;
pub const DEFAULT_STOP_DRAIN: Duration = Duration::from_secs(5);
pub const DEFAULT_GARP_COUNT: u32 = 5;
pub const DEFAULT_GARP_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_GARP_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// A fallback: the kernel's link notifications wake interface tracks at once.
const INTERFACE_TRACK_INTERVAL: Duration = Duration::from_secs(1);
const STATE_TRACK_INTERVAL: Duration = Duration::from_millis(200);
/// Asking the kernel which XDP program is attached costs a netlink round
/// trip per interface; a program detached behind our back is rare.
const DATAPLANE_TRACK_INTERVAL: Duration = Duration::from_secs(1);
const COMMAND_TRACK_INTERVAL: Duration = Duration::from_secs(2);

/// Tracks every node has: its data plane, the VRRP interface and the
/// interface the floating IP lives on. A node that cannot forward, hear its
/// peers or receive the IP's traffic must not be master.
fn implicit_tracks(interface: &str, local: Option<&LocalSettings>) -> Vec<TrackConfig> {
    let state_track = |kind, interval| TrackConfig {
        kind,
        interval,
        timeout: interval,
        rise: 1,
        fall: 1,
        weight: None,
    };
    let mut tracks = vec![
        state_track(TrackKind::Dataplane, DATAPLANE_TRACK_INTERVAL),
        state_track(
            TrackKind::Interface(interface.to_owned()),
            INTERFACE_TRACK_INTERVAL,
        ),
    ];
    if let Some(local) = local {
        if local.interface != interface {
            tracks.push(state_track(
                TrackKind::Interface(local.interface.clone()),
                INTERFACE_TRACK_INTERVAL,
            ));
        }
    }
    tracks
}

impl Validator<'_> {
    pub(super) fn vrrp(
        &self,
        raw: &Spanned<RawVrrp>,
        dataplane_interfaces: &[String],
        services: &[ServiceConfig],
    ) -> Result<VrrpConfig, ConfigError> {
        let v = raw.get_ref();
        let interface = self.interface_name(&v.interface)?;
        let vrid = self.ranged(&v.vrid, 1, 255, "vrrp.vrid")?;
        let priority = self.ranged(&v.priority, 1, 255, "vrrp.priority")?;
        let version = match v.version.as_ref().map(|s| (*s.get_ref(), s.span())) {
            None | Some((3, _)) => Version::V3,
            Some((2, _)) => Version::V2,
            Some((_, span)) => return self.error(span, "vrrp.version must be 2 or 3"),
        };
        let interval_cs = self.advert_interval(v.advert_interval.as_ref(), version)?;
        let source_address = self.ipv4(&v.source_address, "vrrp.source_address")?;
        let mut unicast_peers = Vec::new();
        if let Some(peers) = &v.unicast_peers {
            for peer in peers.get_ref() {
                let address = self.ipv4(peer, "vrrp.unicast_peers entry")?;
                if address == source_address || unicast_peers.contains(&address) {
                    return self.error(
                        peer.span(),
                        format!("unicast peer {address} is this node or listed twice"),
                    );
                }
                unicast_peers.push(address);
            }
        }
        let auth_pass = match (&v.auth_pass_file, version) {
            (None, _) => None,
            (Some(file), Version::V3) => {
                return self.error(
                    file.span(),
                    "vrrp.auth_pass_file is for version 2 (version 3 has no authentication)",
                )
            }
            (Some(file), Version::V2) => {
                let pass = self.secret_file(file, "vrrp.auth_pass_file")?;
                if pass.expose().is_empty() || pass.expose().len() > 8 {
                    return self.error(file.span(), "the VRRP password must be 1 to 8 bytes");
                }
                Some(pass)
            }
        };
        let preempt_delay = match &v.preempt_delay {
            None => Duration::ZERO,
            Some(raw) => match super::parse_duration(raw.get_ref()) {
                Some(d) if d <= Duration::from_secs(1000) => d,
                _ => return self.error(raw.span(), "vrrp.preempt_delay must be a duration up to 1000s"),
            },
        };
        let peer_link_port = match &v.peer_link_port {
            None if unicast_peers.is_empty() => None,
            None => Some(DEFAULT_PEER_LINK_PORT),
            Some(port) if *port.get_ref() == 0 => None,
            Some(port) if unicast_peers.is_empty() => {
                return self.error(port.span(), "vrrp.peer_link_port needs vrrp.unicast_peers")
            }
            Some(port) => Some(self.ranged(port, 1, 65535, "vrrp.peer_link_port")?),
        };
        let peer_link_key = match &v.peer_link_key_file {
            None => None,
            Some(file) if peer_link_port.is_none() => {
                return self.error(
                    file.span(),
                    "vrrp.peer_link_key_file needs the peer link (vrrp.peer_link_port)",
                )
            }
            Some(file) => {
                let key = self.secret_file(file, "vrrp.peer_link_key_file")?;
                let max = crate::vrrp::peer_link::MAX_KEY_LEN;
                if key.expose().is_empty() || key.expose().len() > max {
                    return self.error(file.span(), format!("the peer link key must be 1 to {max} bytes"));
                }
                Some(key)
            }
        };
        let stop_drain = match &v.stop_drain {
            None => DEFAULT_STOP_DRAIN,
            Some(raw) => match super::parse_duration(raw.get_ref()) {
                Some(d) if d <= Duration::from_secs(3600) => d,
                _ => return self.error(raw.span(), "vrrp.stop_drain must be a duration up to 1h"),
            },
        };
        let realtime_priority = v
            .realtime_priority
            .as_ref()
            .map(|p| self.ranged(p, 1, 99, "vrrp.realtime_priority"))
            .transpose()?;
        let local = v
            .local
            .as_ref()
            .map(|l| self.local(l, dataplane_interfaces))
            .transpose()?;
        let digitalocean = v
            .digitalocean
            .as_ref()
            .map(|d| self.digitalocean(d))
            .transpose()?;
        let virtual_addresses = match &v.virtual_addresses {
            Some(list) => {
                let mut addresses = Vec::new();
                for raw in list.get_ref() {
                    addresses.push(self.ipv4(raw, "vrrp.virtual_addresses entry")?);
                }
                addresses
            }
            None => local
                .as_ref()
                .map(|l| l.addresses.iter().map(|(a, _)| *a).collect())
                .or_else(|| digitalocean.as_ref().map(|d| vec![d.reserved_ip]))
                .unwrap_or_default(),
        };
        if virtual_addresses.is_empty() || virtual_addresses.len() > 20 {
            return self.error(
                raw.span(),
                "vrrp needs 1 to 20 virtual_addresses (or a [vrrp.local] or [vrrp.digitalocean] to take them from)",
            );
        }
        let mut tracks = implicit_tracks(&interface, local.as_ref());
        for track in &v.track {
            tracks.push(self.track(track, services)?);
        }
        let notify = v.notify.as_ref().map(|n| self.notify(n)).transpose()?;
        let secret_env = v
            .digitalocean
            .as_ref()
            .and_then(|d| d.get_ref().token_env.as_ref())
            .map(|name| vec![name.get_ref().clone()])
            .unwrap_or_default();
        Ok(VrrpConfig {
            interface,
            vrid,
            priority,
            version,
            interval_cs,
            source_address,
            unicast_peers,
            auth_pass,
            preempt: v.preempt,
            preempt_delay,
            virtual_addresses,
            peer_link_port,
            peer_link_key,
            stop_drain,
            realtime_priority,
            tracks,
            local,
            digitalocean,
            notify,
            secret_env,
        })
    }

    fn ranged<T: TryFrom<i64>>(
        &self,
        raw: &Spanned<i64>,
        min: i64,
        max: i64,
        what: &str,
    ) -> Result<T, ConfigError> {
        let value = *raw.get_ref();
        match T::try_from(value) {
            Ok(v) if (min..=max).contains(&value) => Ok(v),
            _ => self.error(
                raw.span(),
                format!("{what} must be from {min} to {max}, not {value}"),
            ),
        }
    }

    /// Version 2 counts whole seconds; version 3 centiseconds.
    fn advert_interval(&self, raw: Option<&Spanned<String>>, version: Version) -> Result<u16, ConfigError> {
        let Some(raw) = raw else {
            return Ok(match version {
                Version::V2 => 100,
                Version::V3 => (DEFAULT_ADVERT_INTERVAL.as_millis() / 10) as u16,
            });
        };
        let millis = super::parse_duration(raw.get_ref()).map(|d| d.as_millis());
        match (version, millis) {
            (Version::V2, Some(ms)) if ms % 1000 == 0 && (1000..=255_000).contains(&ms) => {
                Ok((ms / 10) as u16)
            }
            (Version::V3, Some(ms)) if ms % 10 == 0 && (10..=40_950).contains(&ms) => Ok((ms / 10) as u16),
            (Version::V2, _) => self.error(
                raw.span(),
                "vrrp.advert_interval: version 2 advertises whole seconds from 1s to 255s",
            ),
            (Version::V3, _) => self.error(
                raw.span(),
                "vrrp.advert_interval: version 3 advertises multiples of 10ms from 10ms to 40950ms",
            ),
        }
    }

    fn optional_duration(
        &self,
        raw: Option<&Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        self.duration(&raw.cloned(), default, what)
    }

    fn track(&self, raw: &Spanned<RawTrack>, services: &[ServiceConfig]) -> Result<TrackConfig, ConfigError> {
        let t = raw.get_ref();
        let unexpected = |field: bool, name: &str, kind: &str| -> Result<(), ConfigError> {
            if field {
                return self.error(
                    raw.span(),
                    format!("vrrp.track: {name} does not apply to type {kind:?}"),
                );
            }
            Ok(())
        };
        let kind_name = t.kind.get_ref().as_str();
        unexpected(
            t.service.is_some() && kind_name != "service",
            "service",
            kind_name,
        )?;
        unexpected(
            t.interface.is_some() && kind_name != "interface",
            "interface",
            kind_name,
        )?;
        unexpected(
            t.command.is_some() && kind_name != "command",
            "command",
            kind_name,
        )?;
        let (kind, default_interval) = match kind_name {
            "dataplane" => (TrackKind::Dataplane, DATAPLANE_TRACK_INTERVAL),
            "service" => {
                let Some(name) = &t.service else {
                    return self.error(
                        raw.span(),
                        "vrrp.track of type \"service\" needs service = \"name\"",
                    );
                };
                if !services.iter().any(|s| &s.name == name.get_ref()) {
                    return self.error(
                        name.span(),
                        format!("vrrp.track: no service named {:?}", name.get_ref()),
                    );
                }
                (TrackKind::Service(name.get_ref().clone()), STATE_TRACK_INTERVAL)
            }
            "interface" => {
                let Some(name) = &t.interface else {
                    return self.error(
                        raw.span(),
                        "vrrp.track of type \"interface\" needs interface = \"name\"",
                    );
                };
                (
                    TrackKind::Interface(self.interface_name(name)?),
                    INTERFACE_TRACK_INTERVAL,
                )
            }
            "command" => match &t.command {
                Some(argv) if !argv.get_ref().is_empty() && !argv.get_ref()[0].is_empty() => {
                    (TrackKind::Command(argv.get_ref().clone()), COMMAND_TRACK_INTERVAL)
                }
                _ => {
                    return self.error(
                        raw.span(),
                        "vrrp.track of type \"command\" needs command = [\"program\", \"arg\", ...]",
                    )
                }
            },
            other => {
                return self.error(
                    t.kind.span(),
                    format!("vrrp.track type {other:?} is not one of dataplane, service, interface, command"),
                )
            }
        };
        let interval =
            self.optional_duration(t.interval.as_ref(), default_interval, "vrrp.track interval")?;
        let timeout = self.optional_duration(t.timeout.as_ref(), interval, "vrrp.track timeout")?;
        let count = |raw: &Option<Spanned<u32>>, what: &str| match raw {
            None => Ok(1),
            Some(n) if (1..=100).contains(n.get_ref()) => Ok(*n.get_ref()),
            Some(n) => self.error(n.span(), format!("vrrp.track {what} must be from 1 to 100")),
        };
        let weight = match &t.weight {
            None => None,
            Some(w) if *w.get_ref() != 0 && (-254..=254).contains(w.get_ref()) => {
                i16::try_from(*w.get_ref()).ok()
            }
            Some(w) => return self.error(w.span(), "vrrp.track weight must be from -254 to 254 and not 0"),
        };
        Ok(TrackConfig {
            kind,
            interval,
            timeout,
            rise: count(&t.rise, "rise")?,
            fall: count(&t.fall, "fall")?,
            weight,
        })
    }

    fn local(
        &self,
        raw: &Spanned<RawLocal>,
        dataplane_interfaces: &[String],
    ) -> Result<LocalSettings, ConfigError> {
        let l = raw.get_ref();
        let interface = match &l.interface {
            Some(name) => self.interface_name(name)?,
            None => match dataplane_interfaces.first() {
                Some(first) => first.clone(),
                None => return self.error(raw.span(), "vrrp.local needs interface"),
            },
        };
        let Some(list) = &l.addresses else {
            return self.error(raw.span(), "vrrp.local needs addresses = [\"VIP/32\", ...]");
        };
        let mut addresses = Vec::new();
        let mut seen = HashSet::new();
        for entry in list.get_ref() {
            let text = entry.get_ref();
            let (addr, prefix) = text.split_once('/').unwrap_or((text, "32"));
            let parsed = (addr.parse::<Ipv4Addr>(), prefix.parse::<u8>());
            match parsed {
                (Ok(a), Ok(p)) if (1..=32).contains(&p) && !a.is_unspecified() && !a.is_multicast() => {
                    if !seen.insert(a) {
                        return self.error(entry.span(), format!("vrrp.local address {a} is listed twice"));
                    }
                    addresses.push((a, p));
                }
                _ => {
                    return self.error(
                        entry.span(),
                        format!(
                            "vrrp.local address {text:?} is not an IPv4 address with an optional /prefix"
                        ),
                    )
                }
            }
        }
        if addresses.is_empty() {
            return self.error(list.span(), "vrrp.local addresses is empty");
        }
        let garp_count = match &l.garp_count {
            None => DEFAULT_GARP_COUNT,
            Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => return self.error(n.span(), "vrrp.local garp_count must be from 1 to 100"),
        };
        let garp_interval = self.optional_duration(
            l.garp_interval.as_ref(),
            DEFAULT_GARP_INTERVAL,
            "vrrp.local garp_interval",
        )?;
        let garp_refresh = match &l.garp_refresh {
            Some(raw) if super::parse_duration(raw.get_ref()) == Some(Duration::ZERO) => None,
            other => Some(self.optional_duration(
                other.as_ref(),
                DEFAULT_GARP_REFRESH,
                "vrrp.local garp_refresh",
            )?),
        };
        Ok(LocalSettings {
            interface,
            addresses,
            garp_count,
            garp_interval,
            garp_refresh,
        })
    }

    fn url(&self, raw: Option<&Spanned<String>>, default: &str, what: &str) -> Result<String, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default.to_owned());
        };
        let url = raw.get_ref().trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 9 {
            return self.error(raw.span(), format!("{what} {url:?} is not an http(s) URL"));
        }
        Ok(url.to_owned())
    }

    fn digitalocean(&self, raw: &Spanned<RawDigitalOcean>) -> Result<DigitalOceanSettings, ConfigError> {
        let d = raw.get_ref();
        let Some(ip) = &d.reserved_ip else {
            return self.error(raw.span(), "vrrp.digitalocean needs reserved_ip");
        };
        let reserved_ip = self.ipv4(ip, "vrrp.digitalocean reserved_ip")?;
        let token = match (&d.token_file, &d.token_env) {
            (Some(file), None) => self.secret_file(file, "vrrp.digitalocean token_file")?,
            (None, Some(var)) => match (self.env)(var.get_ref()) {
                Some(value) if !value.trim().is_empty() => Secret::new(value.trim().to_owned()),
                _ => {
                    return self.error(
                        var.span(),
                        format!("vrrp.digitalocean token_env: ${} is not set", var.get_ref()),
                    )
                }
            },
            _ => {
                return self.error(
                    raw.span(),
                    "vrrp.digitalocean needs exactly one of token_file and token_env",
                )
            }
        };
        if token.expose().is_empty() {
            return self.error(raw.span(), "vrrp.digitalocean: the API token is empty");
        }
        let duration = |raw: &Option<Spanned<String>>, default: u64, what: &str| {
            self.optional_duration(raw.as_ref(), Duration::from_secs(default), what)
        };
        Ok(DigitalOceanSettings {
            reserved_ip,
            token,
            droplet_id: d.droplet_id.as_ref().map(|id| *id.get_ref()),
            api_url: self.url(d.api_url.as_ref(), DEFAULT_API_URL, "vrrp.digitalocean api_url")?,
            metadata_url: self.url(
                d.metadata_url.as_ref(),
                DEFAULT_METADATA_URL,
                "vrrp.digitalocean metadata_url",
            )?,
            request_timeout: duration(&d.request_timeout, 10, "vrrp.digitalocean request_timeout")?,
            poll_interval: duration(&d.poll_interval, 1, "vrrp.digitalocean poll_interval")?,
            assign_timeout: duration(&d.assign_timeout, 120, "vrrp.digitalocean assign_timeout")?,
            reconcile_interval: duration(&d.reconcile_interval, 30, "vrrp.digitalocean reconcile_interval")?,
        })
    }

    fn notify(&self, raw: &Spanned<RawNotify>) -> Result<NotifyConfig, ConfigError> {
        let n = raw.get_ref();
        let argv = |field: &Option<Spanned<Vec<String>>>, what: &str| match field {
            None => Ok(None),
            Some(argv) if !argv.get_ref().is_empty() && !argv.get_ref()[0].is_empty() => {
                Ok(Some(argv.get_ref().clone()))
            }
            Some(argv) => self.error(
                argv.span(),
                format!("vrrp.notify {what} must be [\"program\", \"arg\", ...]"),
            ),
        };
        Ok(NotifyConfig {
            master: argv(&n.master, "master")?,
            backup: argv(&n.backup, "backup")?,
            fault: argv(&n.fault, "fault")?,
            stop: argv(&n.stop, "stop")?,
            timeout: self.optional_duration(
                n.timeout.as_ref(),
                DEFAULT_NOTIFY_TIMEOUT,
                "vrrp.notify timeout",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    use crate::config::tests::GOOD as BASE;

    fn parse(vrrp: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("lb.toml"), &format!("{BASE}\n{vrrp}"))
    }

    fn error_of(vrrp: &str) -> String {
        parse(vrrp).expect_err("should be rejected").to_string()
    }

    fn password_file(content: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("xlb-vrrp-pass-{}-{}", std::process::id(), content.len()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn the_reference_keepalived_pair_translates() {
        let pass = password_file("REDACTED\n");
        let config = parse(&format!(
            r#"
[vrrp]
interface = "eth1"
vrid = 50
priority = 255
version = 2
advert_interval = "1s"
source_address = "10.108.0.5"
unicast_peers = ["10.108.0.6"]
auth_pass_file = "{}"

[[vrrp.track]]
type = "command"
command = ["pidof", "xlb"]
interval = "2s"

[vrrp.local]
addresses = ["45.55.123.242/32"]

[vrrp.notify]
master = ["/etc/keepalived/master.sh"]
"#,
            pass.display()
        ))
        .unwrap();
        let vrrp = config.vrrp.unwrap();
        assert_eq!(
            (vrrp.vrid, vrrp.priority, vrrp.version, vrrp.interval_cs),
            (50, 255, Version::V2, 100)
        );
        assert_eq!(vrrp.auth_pass.as_ref().map(Secret::expose), Some("REDACTED"));
        assert!(
            !format!("{vrrp:?}").contains("REDACTED"),
            "the password is redacted"
        );
        assert_eq!(vrrp.peer_link_port, Some(DEFAULT_PEER_LINK_PORT));
        assert_eq!(vrrp.virtual_addresses, [Ipv4Addr::new(45, 55, 123, 242)]);
        let local = vrrp.local.unwrap();
        assert_eq!(
            local.interface, "eth0",
            "defaults to the first data-plane interface"
        );
        // Implicit: dataplane, eth1 (VRRP), eth0 (the floating IP); then the command.
        let kinds: Vec<String> = vrrp.tracks.iter().map(|t| t.kind.describe()).collect();
        assert_eq!(
            kinds,
            [
                "dataplane attached",
                "interface eth1 up",
                "interface eth0 up",
                "command pidof xlb"
            ]
        );
        assert_eq!(vrrp.tracks[3].interval, Duration::from_secs(2));
        let _ = std::fs::remove_file(pass);
    }

    #[test]
    fn the_peer_link_key_and_the_real_time_priority_are_read_and_checked() {
        let head = "[vrrp]\ninterface = \"eth1\"\nvrid = 50\npriority = 100\nsource_address = \"10.108.0.5\"\nunicast_peers = [\"10.108.0.6\"]\nvirtual_addresses = [\"45.55.123.242\"]\n";
        let key = password_file("a shared secret of the pair\n");
        let vrrp = parse(&format!(
            "{head}peer_link_key_file = \"{}\"\nrealtime_priority = 20\n",
            key.display()
        ))
        .unwrap()
        .vrrp
        .unwrap();
        assert_eq!(
            vrrp.peer_link_key.as_ref().map(Secret::expose),
            Some("a shared secret of the pair")
        );
        assert!(
            !format!("{vrrp:?}").contains("shared secret"),
            "the key is redacted"
        );
        assert_eq!(vrrp.realtime_priority, Some(20));
        let defaults = parse(head).unwrap().vrrp.unwrap();
        assert_eq!((defaults.peer_link_key, defaults.realtime_priority), (None, None));

        let err = error_of(&format!(
            "{head}peer_link_port = 0\npeer_link_key_file = \"{}\"\n",
            key.display()
        ));
        assert!(err.contains("needs the peer link"), "{err}");
        let long = password_file(&"k".repeat(81));
        let err = error_of(&format!("{head}peer_link_key_file = \"{}\"\n", long.display()));
        assert!(err.contains("1 to 80 bytes"), "{err}");
        let err = error_of(&format!("{head}peer_link_key_file = \"/nonexistent/xlb-key\"\n"));
        assert!(err.contains("cannot read vrrp.peer_link_key_file"), "{err}");
        let err = error_of(&format!("{head}realtime_priority = 100\n"));
        assert!(err.contains("vrrp.realtime_priority"), "{err}");
        let _ = std::fs::remove_file(key);
        let _ = std::fs::remove_file(long);
    }

    #[test]
    fn version_3_defaults_to_100_ms_and_multicast_without_peer_link() {
        let config = parse(
            "[vrrp]\ninterface = \"eth1\"\nvrid = 7\npriority = 100\nsource_address = \"10.108.0.5\"\nvirtual_addresses = [\"45.55.123.242\"]\n",
        )
        .unwrap();
        let vrrp = config.vrrp.unwrap();
        assert_eq!((vrrp.version, vrrp.interval_cs), (Version::V3, 10));
        assert!(vrrp.unicast_peers.is_empty());
        assert_eq!(vrrp.peer_link_port, None);
        assert!(vrrp.preempt);
    }

    #[test]
    fn mistakes_name_their_line() {
        let head = "[vrrp]\ninterface = \"eth1\"\nvrid = 50\npriority = 100\nsource_address = \"10.108.0.5\"\nvirtual_addresses = [\"45.55.123.242\"]\n";
        let line = |n: usize| format!("lb.toml:{}:", BASE.lines().count() + 1 + n);
        let err = error_of(&head.replace("vrid = 50", "vrid = 256"));
        assert!(err.starts_with(&line(3)) && err.contains("vrrp.vrid"), "{err}");
        let err = error_of(&format!("{head}advert_interval = \"1500ms\"\nversion = 2\n"));
        assert!(
            err.starts_with(&line(7)) && err.contains("whole seconds"),
            "{err}"
        );
        let err = error_of(&format!("{head}advert_interval = \"15ms\"\n"));
        assert!(err.contains("multiples of 10ms"), "{err}");
        let err = error_of(&format!("{head}auth_pass_file = \"/nonexistent\"\n"));
        assert!(err.contains("version 2"), "{err}");
        let err = error_of(&format!(
            "{head}\n[[vrrp.track]]\ntype = \"service\"\nservice = \"db\"\n"
        ));
        assert!(
            err.starts_with(&line(10)) && err.contains("no service named \"db\""),
            "{err}"
        );
        let err = error_of(&format!("{head}\n[[vrrp.track]]\ntype = \"script\"\n"));
        assert!(
            err.contains("not one of dataplane, service, interface, command"),
            "{err}"
        );
        let err = error_of(&format!("{head}unicast_peers = [\"10.108.0.5\"]\n"));
        assert!(err.contains("is this node"), "{err}");
        let err = error_of(&format!(
            "{head}\n[vrrp.digitalocean]\nreserved_ip = \"45.55.123.242\"\n"
        ));
        assert!(err.contains("exactly one of token_file and token_env"), "{err}");
        let err = error_of(&head.replace("virtual_addresses = [\"45.55.123.242\"]\n", ""));
        assert!(err.contains("virtual_addresses"), "{err}");
        let long = password_file("longer than eight");
        let err = error_of(&format!(
            "{head}version = 2\nadvert_interval = \"1s\"\nauth_pass_file = \"{}\"\n",
            long.display()
        ));
        assert!(
            err.contains("1 to 8 bytes") && !err.contains("longer than eight"),
            "{err}"
        );
        let _ = std::fs::remove_file(long);
    }

    #[test]
    fn the_digitalocean_token_comes_from_a_file_or_the_environment_and_stays_secret() {
        let token = password_file("dop_v1_secret_token_value");
        let config = parse(&format!(
            "[vrrp]\ninterface = \"eth1\"\nvrid = 50\npriority = 100\nsource_address = \"10.108.0.5\"\n\n[vrrp.digitalocean]\nreserved_ip = \"45.55.123.242\"\ntoken_file = \"{}\"\napi_url = \"http://127.0.0.1:9/\"\n",
            token.display()
        ))
        .unwrap();
        let vrrp = config.vrrp.unwrap();
        let api = vrrp.digitalocean.as_ref().unwrap();
        assert_eq!(api.token.expose(), "dop_v1_secret_token_value");
        assert_eq!(api.api_url, "http://127.0.0.1:9");
        assert_eq!(vrrp.virtual_addresses, [Ipv4Addr::new(45, 55, 123, 242)]);
        assert!(!format!("{vrrp:?}").contains("dop_v1"));
        // From the environment: a fake one (never the process's, which
        // tests running in parallel share).
        let from_env = "[vrrp]\ninterface = \"eth1\"\nvrid = 50\npriority = 100\nsource_address = \"10.108.0.5\"\n\n[vrrp.digitalocean]\nreserved_ip = \"45.55.123.242\"\ntoken_env = \"XLB_TEST_TOKEN\"\n";
        let with_env = |value: Option<&str>| {
            let env = |name: &str| {
                assert_eq!(name, "XLB_TEST_TOKEN", "only token_env is looked up");
                value.map(str::to_owned)
            };
            Config::parse_with_env(Path::new("lb.toml"), &format!("{BASE}\n{from_env}"), &env)
        };
        let vrrp = with_env(Some(" dop_v1_from_env\n")).unwrap().vrrp.unwrap();
        assert_eq!(
            vrrp.digitalocean.as_ref().unwrap().token.expose(),
            "dop_v1_from_env"
        );
        assert_eq!(vrrp.secret_env, ["XLB_TEST_TOKEN"]);
        assert!(!format!("{vrrp:?}").contains("dop_v1"));
        for unset in [None, Some(""), Some(" \n")] {
            let err = with_env(unset).expect_err("no token").to_string();
            assert!(err.contains("$XLB_TEST_TOKEN is not set"), "{err}");
        }
        let _ = std::fs::remove_file(token);
    }
}
