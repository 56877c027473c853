//! The XDP program and its maps: loading the embedded object, programming
//! the maps, attaching to interfaces, reading the counters.

pub mod pressure;
pub mod sweeper;
pub mod tables;

use std::{collections::HashSet, ops::RangeInclusive};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    limits::slot_index,
    maps::{
        BackendSlot, BackendStats, Flow, FlowKey, InterfaceMac, Service, ServiceKey, ServiceStats, Settings,
        DIRECTION_FORWARD, DIRECTION_REPLY, FLOW_CLOSING,
    },
    stats::Counter,
};
use tracing::{info, warn};

use crate::{
    config::{self, Config},
    netdev::{self, NetdevError},
};

/// The load balancer's XDP object, built by build.rs.
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.bpf.o"));
/// The benchmark's floor: parse, swap MACs, XDP_TX.
pub static BENCH_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-floor.bpf.o"));

const PROGRAM_NAME: &str = "lb";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("failed to load the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("failed to load the XDP program into the kernel: {0}")]
    Program(ProgramError),
    #[error("cannot count the CPUs: {0}")]
    Cpus(std::io::Error),
    #[error(transparent)]
    Interface(#[from] NetdevError),
    #[error("cannot read a key for the SYN cookies from /dev/urandom: {0}")]
    RandomKey(std::io::Error),
    #[error("cannot start the connection-table sweeper: {0}")]
    Sweeper(std::io::Error),
    #[error("{0} is not a data-plane interface: the program was not told its MAC address")]
    NotDataplaneInterface(String),
    #[error("failed to attach XDP to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        source: ProgramError,
    },
}

/// The program's clock: `bpf_ktime_get_coarse_ns` reads CLOCK_MONOTONIC_COARSE.
fn coarse_clock_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// A random u32 from the standard library's per-process hash keys (no
/// extra crate for one number).
fn random_seed() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) as u32
}

/// A key for the SYN cookies from the kernel's random source: a cookie is
/// only as unguessable as its key.
fn cookie_key() -> Result<[u64; 2], DataplaneError> {
    use std::io::Read;
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(DataplaneError::RandomKey)?;
    let (low, high) = bytes.split_at(8);
    let word = |half: &[u8]| u64::from_ne_bytes(half.try_into().unwrap_or([0; 8]));
    Ok([word(low), word(high)])
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// What [`Dataplane::scan_connections`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCensus {
    pub entries: u64,
    pub active_by_backend: std::collections::HashMap<u32, u64>,
    /// SNAT tuples (source address and port towards the backend) held per
    /// backend id: by live connections, and by closed or half-open ones that
    /// another client could not take at once.
    pub snat_tuples_by_backend: std::collections::HashMap<u32, u64>,
}

impl ConnectionCensus {
    /// Counts the entry `flow`; `holds_tuple`: it is not dead (see
    /// `sweeper::is_dead`), so a reply entry holds its SNAT tuple.
    pub fn count(&mut self, flow: &Flow, holds_tuple: bool) {
        self.entries += 1;
        if flow.direction == DIRECTION_FORWARD && flow.state & FLOW_CLOSING == 0 {
            *self.active_by_backend.entry(flow.backend_id).or_insert(0) += 1;
        }
        if flow.direction == DIRECTION_REPLY && holds_tuple {
            *self.snat_tuples_by_backend.entry(flow.backend_id).or_insert(0) += 1;
        }
    }
}

/// Where the program sends TCP segments of connections it does not know:
/// the VRRP peer, which may still track them (see `PeerHandoff`).
pub struct PeerHandoffMap(Array<aya::maps::MapData, lb_common::maps::PeerHandoff>);

impl PeerHandoffMap {
    /// Hands segments to this peer; None: hand off nothing.
    pub fn set(&mut self, handoff: Option<lb_common::maps::PeerHandoff>) -> Result<(), DataplaneError> {
        let value = handoff.map_or_else(lb_common::maps::PeerHandoff::default, |h| {
            lb_common::maps::PeerHandoff { enabled: 1, ..h }
        });
        self.0.set(0, value, 0).map_err(map_err("PEER"))
    }
}

/// A data-plane interface: its slot in INTERFACE_MACS, its index, and the
/// MAC address the program knows it by.
struct Served {
    slot: u32,
    name: String,
    ifindex: u32,
    mac: [u8; 6],
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    interfaces: Vec<Served>,
    attached: Vec<(String, &'static str)>,
    /// The live slot-table generation of each service id.
    generations: std::collections::HashMap<u32, u32>,
    conntrack_capacity: u32,
    /// The kernel's own ephemeral range when last read: client ports inside
    /// it are never kept as SNAT ports.
    host_ports: RangeInclusive<u16>,
    /// Seeds the program's spread of clients over SNAT tuples; random per
    /// load so that nobody outside can aim at one tuple.
    hash_seed: u32,
    /// The key of the program's SYN cookies: random per load, kept across
    /// reloads so that cookies given out before one stay valid.
    cookie_key: [u64; 2],
    /// The settings last written, to judge entries as the program does.
    settings: Option<Settings>,
    /// Shared with the sweeper: its census, and the orders it carries out.
    sweeper: std::sync::Arc<sweeper::Shared>,
}

impl Dataplane {
    /// Loads the program into the kernel (verifier included), with a
    /// connection table of `conntrack_entries`, and tells it the index and
    /// MAC address of each of the `interfaces` (looked up in the calling
    /// thread's network namespace; INTERFACE_MACS, one slot each in order),
    /// before anything can mark its settings ready: it passes unicast
    /// frames for any other MAC untouched. Nothing is attached yet.
    pub fn load(config: &config::DataplaneConfig) -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            // The program needs no CO-RE relocations. (aya has parsed the
            // kernel's BTF already, in new(): a transient ~16 MB at start-up.)
            .btf(None)
            .map_max_entries("FLOWS", config.conntrack_entries)
            .load(PROGRAM_OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        let mut dataplane = Self {
            ebpf,
            interfaces: Vec::new(),
            attached: Vec::new(),
            generations: std::collections::HashMap::new(),
            conntrack_capacity: config.conntrack_entries,
            host_ports: netdev::local_port_range()?,
            hash_seed: random_seed(),
            cookie_key: cookie_key()?,
            settings: None,
            sweeper: std::sync::Arc::default(),
        };
        for (slot, name) in (0_u32..).zip(&config.interfaces) {
            let served = Served {
                slot,
                name: name.clone(),
                ifindex: netdev::ifindex(name)?,
                mac: netdev::mac_address(name)?,
            };
            dataplane.write_interface_mac(&served)?;
            dataplane.interfaces.push(served);
        }
        Ok(dataplane)
    }

    fn write_interface_mac(&mut self, served: &Served) -> Result<(), DataplaneError> {
        let mut macs: Array<&mut MapData, InterfaceMac> = self.map_mut("INTERFACE_MACS")?;
        let value = InterfaceMac {
            ifindex: served.ifindex,
            mac: served.mac,
            _pad: [0; 2],
        };
        macs.set(served.slot, value, 0).map_err(map_err("INTERFACE_MACS"))
    }

    /// Follows an operator's change of an interface's MAC address (`ip
    /// link set eth0 address ...`): reads each interface's address again and
    /// rewrites the entries that changed. Until this runs, frames sent to
    /// the new address pass to the kernel as for another host. An interface
    /// that is gone or has a new index is left alone: the program is no
    /// longer attached to it (the `dataplane` track says so). The VRRP
    /// peer handoff does not follow: this node's address in it, and the one
    /// the peer learned in the peer link's greeting, are read once at
    /// start, so no segment is handed off to or from the changed interface
    /// until the daemons restart.
    pub fn refresh_interface_macs(&mut self) -> Result<(), DataplaneError> {
        for i in 0..self.interfaces.len() {
            let known = &self.interfaces[i];
            let (Ok(ifindex), Ok(mac)) = (netdev::ifindex(&known.name), netdev::mac_address(&known.name))
            else {
                continue;
            };
            if ifindex != known.ifindex || mac == known.mac {
                continue;
            }
            info!(
                interface = %known.name,
                from = %netdev::format_mac(&known.mac),
                to = %netdev::format_mac(&mac),
                "the interface's MAC address changed; the data plane follows"
            );
            let changed = Served {
                slot: known.slot,
                name: known.name.clone(),
                ifindex,
                mac,
            };
            self.write_interface_mac(&changed)?;
            self.interfaces[i] = changed;
        }
        Ok(())
    }

    /// The program itself, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    /// Programs the maps for `config` with every backend up, as at start-up.
    pub fn configure(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let mut ids = tables::Ids::default();
        ids.assign(config);
        let weights = |service: &str, backend: &str| config.backend(service, backend).map_or(0, |b| b.weight);
        self.apply(&tables::build(config, &ids, weights))
    }

    /// Makes the maps hold `tables`. Each service's slots are written to its
    /// idle generation, then its service entries are replaced in one update
    /// each, so a packet sees the old pool or the new one, never a mix.
    /// Entries of services and addresses no longer present are removed;
    /// settings go last (until they are marked ready the program passes
    /// every packet).
    pub fn apply(&mut self, tables: &tables::Tables) -> Result<(), DataplaneError> {
        let mut live_keys = HashSet::new();
        for table in &tables.services {
            let generation = match self.generations.get(&table.id) {
                Some(current) => 1 - current,
                None => 0,
            };
            {
                let mut slots: Array<&mut MapData, BackendSlot> = self.map_mut("SLOTS")?;
                for (slot, backend) in (0_u32..).zip(&table.slots) {
                    slots
                        .set(slot_index(table.id, generation, slot), backend, 0)
                        .map_err(map_err("SLOTS"))?;
                }
            }
            let value = tables::service_value(table, generation);
            let mut services: HashMap<&mut MapData, ServiceKey, Service> = self.map_mut("SERVICES")?;
            for key in &table.keys {
                services.insert(key, value, 0).map_err(map_err("SERVICES"))?;
                live_keys.insert(*key);
            }
            self.generations.insert(table.id, generation);
        }
        let live_ids: HashSet<u32> = tables.services.iter().map(|t| t.id).collect();
        self.generations.retain(|id, _| live_ids.contains(id));
        {
            let mut services: HashMap<&mut MapData, ServiceKey, Service> = self.map_mut("SERVICES")?;
            let stale: Vec<ServiceKey> = services
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !live_keys.contains(k))
                .collect();
            for key in stale {
                services.remove(&key).map_err(map_err("SERVICES"))?;
            }
        }
        {
            let mut vips: HashMap<&mut MapData, u32, u32> = self.map_mut("VIP_ADDRS")?;
            for addr in &tables.vip_addrs {
                vips.insert(addr, 0, 0).map_err(map_err("VIP_ADDRS"))?;
            }
            let stale: Vec<u32> = vips
                .keys()
                .filter_map(Result::ok)
                .filter(|a| !tables.vip_addrs.contains(a))
                .collect();
            for addr in stale {
                vips.remove(&addr).map_err(map_err("VIP_ADDRS"))?;
            }
        }
        // Read again at every apply, so a reload follows an operator's
        // change of the range; the last known one if it cannot be read.
        if let Ok(range) = netdev::local_port_range() {
            self.host_ports = range;
        }
        let value = Settings {
            local_port_first: *self.host_ports.start(),
            local_port_last: *self.host_ports.end(),
            hash_seed: self.hash_seed,
            cookie_key: self.cookie_key,
            ..tables.settings
        };
        let mut settings: Array<&mut MapData, Settings> = self.map_mut("SETTINGS")?;
        settings.set(0, value, 0).map_err(map_err("SETTINGS"))?;
        self.settings = Some(value);
        Ok(())
    }

    /// One pass over the connection table, now: its entries, and the open
    /// connections (client-side entries not closing) per backend id. The
    /// cost grows with the entries in use (two syscalls each), not with the
    /// table's capacity: for what must be exact now (a drain's end), not
    /// for the status and metrics, which use the sweeper's `census`.
    pub fn scan_connections(&self) -> Result<ConnectionCensus, DataplaneError> {
        let map = self
            .ebpf
            .map("FLOWS")
            .ok_or(DataplaneError::Missing("map FLOWS"))?;
        let flows: HashMap<&MapData, FlowKey, Flow> = HashMap::try_from(map).map_err(map_err("FLOWS"))?;
        let mut census = ConnectionCensus::default();
        let now = coarse_clock_ns();
        for (key, flow) in flows.iter().filter_map(Result::ok) {
            let held = self
                .settings
                .is_some_and(|settings| !sweeper::is_dead(&key, &flow, now, &settings));
            census.count(&flow, held);
        }
        Ok(census)
    }

    /// Starts the connection table's sweeper (see `sweeper`), on its own
    /// thread with its own handles on the maps.
    pub fn start_sweeper(&self) -> Result<sweeper::Sweeper, DataplaneError> {
        let id = |name: &'static str| -> Result<u32, DataplaneError> {
            let map = self.ebpf.map(name).ok_or(DataplaneError::Missing(name))?;
            let data: &MapData = match map {
                aya::maps::Map::LruHashMap(data) | aya::maps::Map::Array(data) => data,
                _ => return Err(DataplaneError::Missing(name)),
            };
            Ok(data.info().map_err(map_err(name))?.id())
        };
        sweeper::Sweeper::start(id("FLOWS")?, id("SETTINGS")?, self.sweeper.clone())
            .map_err(DataplaneError::Sweeper)
    }

    /// The connection table's census as of the sweeper's last pass (a
    /// copy: no scan), and its age. None before the first pass (or without
    /// a sweeper).
    #[must_use]
    pub fn census(&self) -> Option<(std::time::Duration, ConnectionCensus)> {
        self.sweeper.census()
    }

    /// The sweeper, for its orders (shutting down a backend's sessions, a
    /// pass now): they walk the table in the background.
    #[must_use]
    pub fn sweeper(&self) -> &sweeper::Shared {
        &self.sweeper
    }

    /// A service's traffic counters, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<ServiceStats, DataplaneError> {
        let per_cpu = self.per_cpu::<ServiceStats>("SERVICE_STATS", id)?;
        Ok(per_cpu.iter().fold(ServiceStats::default(), |a, b| ServiceStats {
            connections: a.connections + b.connections,
            refused: a.refused + b.refused,
            packets_in: a.packets_in + b.packets_in,
            bytes_in: a.bytes_in + b.bytes_in,
            packets_out: a.packets_out + b.packets_out,
            bytes_out: a.bytes_out + b.bytes_out,
        }))
    }

    /// A backend's traffic counters, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> Result<BackendStats, DataplaneError> {
        let per_cpu = self.per_cpu::<BackendStats>("BACKEND_STATS", id)?;
        Ok(per_cpu.iter().fold(BackendStats::default(), |a, b| BackendStats {
            connections: a.connections + b.connections,
            packets_to: a.packets_to + b.packets_to,
            bytes_to: a.bytes_to + b.bytes_to,
            packets_from: a.packets_from + b.packets_from,
            bytes_from: a.bytes_from + b.bytes_from,
        }))
    }

    /// Zeroes the counters of ids given to a new service or backend, so that
    /// they do not inherit a previous owner's.
    pub fn reset_stats(&mut self, services: &[u32], backends: &[u32]) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        {
            let mut map: PerCpuArray<&mut MapData, ServiceStats> = self.map_mut("SERVICE_STATS")?;
            for id in services {
                let zeros = PerCpuValues::try_from(vec![ServiceStats::default(); cpus])
                    .map_err(DataplaneError::Cpus)?;
                map.set(*id, zeros, 0).map_err(map_err("SERVICE_STATS"))?;
            }
        }
        let mut map: PerCpuArray<&mut MapData, BackendStats> = self.map_mut("BACKEND_STATS")?;
        for id in backends {
            let zeros =
                PerCpuValues::try_from(vec![BackendStats::default(); cpus]).map_err(DataplaneError::Cpus)?;
            map.set(*id, zeros, 0).map_err(map_err("BACKEND_STATS"))?;
        }
        Ok(())
    }

    /// The connection table's capacity.
    #[must_use]
    pub fn conntrack_capacity(&self) -> u32 {
        self.conntrack_capacity
    }

    fn per_cpu<T: aya::Pod>(
        &self,
        name: &'static str,
        index: u32,
    ) -> Result<PerCpuValues<T>, DataplaneError> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::Missing(name))?;
        let array: PerCpuArray<&MapData, T> = PerCpuArray::try_from(map).map_err(map_err(name))?;
        array.get(&index, 0).map_err(map_err(name))
    }

    /// Attaches to `interface`, one of those the program was loaded for.
    /// `Auto` tries native mode and falls back to generic mode with a
    /// warning.
    pub fn attach(&mut self, interface: &str, mode: config::XdpMode) -> Result<&'static str, DataplaneError> {
        if !self.interfaces.iter().any(|served| served.name == interface) {
            return Err(DataplaneError::NotDataplaneInterface(interface.to_owned()));
        }
        let attempts: &[(XdpMode, &'static str)] = match mode {
            config::XdpMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            config::XdpMode::Native => &[(XdpMode::Driver, "native")],
            config::XdpMode::Generic => &[(XdpMode::Skb, "generic")],
        };
        let program = self.program()?;
        let mut last_error = None;
        for (aya_mode, name) in attempts {
            match program.attach(interface, *aya_mode) {
                Ok(_) => {
                    if *name == "generic" && mode == config::XdpMode::Auto {
                        warn!(interface, error = %last_error.as_ref().map(ToString::to_string).unwrap_or_default(),
                            "native XDP unavailable, attached in generic mode (slower)");
                    }
                    info!(interface, mode = name, "XDP attached");
                    self.attached.push((interface.to_owned(), name));
                    return Ok(name);
                }
                Err(source) => {
                    last_error = Some(DataplaneError::Attach {
                        interface: interface.to_owned(),
                        mode: name,
                        source,
                    });
                }
            }
        }
        Err(last_error.unwrap_or(DataplaneError::Missing("attach mode")))
    }

    /// Interfaces attached so far, with their mode.
    #[must_use]
    pub fn attached(&self) -> &[(String, &'static str)] {
        &self.attached
    }

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let map = self
            .ebpf
            .map("STATS")
            .ok_or(DataplaneError::Missing("map STATS"))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err("STATS"))?;
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = stats.get(&(counter as u32), 0).map_err(map_err("STATS"))?;
                Ok((counter, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Hands the peer-handoff map to its owner (the VRRP driver).
    pub fn take_peer_handoff(&mut self) -> Result<PeerHandoffMap, DataplaneError> {
        let map = self
            .ebpf
            .take_map("PEER")
            .ok_or(DataplaneError::Missing("PEER"))?;
        Ok(PeerHandoffMap(Array::try_from(map).map_err(map_err("PEER"))?))
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Missing(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // The links are bpf_links owned by `ebpf`; dropping it detaches them.
        for (interface, _) in &self.attached {
            info!(interface, "XDP detached");
        }
    }
}
