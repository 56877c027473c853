//! The XDP program and its maps: loading the embedded object, programming
//! the maps, attaching to interfaces, reading the counters.

pub mod tables;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    maps::{BackendSlot, Service, ServiceKey, Settings},
    stats::Counter,
};
use tracing::{info, warn};

use crate::config::{self, Config};

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
    #[error("failed to attach XDP to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        source: ProgramError,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: Vec<(String, &'static str)>,
}

impl Dataplane {
    /// Loads the program into the kernel (verifier included), with a
    /// connection table of `conntrack_entries`. Nothing is attached yet.
    pub fn load(conntrack_entries: u32) -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            // The program needs no CO-RE relocations. (aya has parsed the
            // kernel's BTF already, in new(): a transient ~16 MB at start-up.)
            .btf(None)
            .map_max_entries("FLOWS", conntrack_entries)
            .load(PROGRAM_OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        Ok(Self {
            ebpf,
            attached: Vec::new(),
        })
    }

    /// The program itself, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    /// Writes the maps for `config`. Settings go last: until they are
    /// marked ready the program passes every packet to the kernel.
    pub fn configure(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let tables = tables::build(config, 0);
        {
            let mut slots: Array<&mut MapData, BackendSlot> = self.map_mut("SLOTS")?;
            for (index, slot) in &tables.slots {
                slots.set(*index, slot, 0).map_err(map_err("SLOTS"))?;
            }
        }
        {
            let mut services: HashMap<&mut MapData, ServiceKey, Service> = self.map_mut("SERVICES")?;
            for (key, value) in &tables.services {
                services.insert(key, value, 0).map_err(map_err("SERVICES"))?;
            }
        }
        {
            let mut vips: HashMap<&mut MapData, u32, u32> = self.map_mut("VIP_ADDRS")?;
            for addr in &tables.vip_addrs {
                vips.insert(addr, 0, 0).map_err(map_err("VIP_ADDRS"))?;
            }
        }
        let mut settings: Array<&mut MapData, Settings> = self.map_mut("SETTINGS")?;
        settings.set(0, tables.settings, 0).map_err(map_err("SETTINGS"))?;
        Ok(())
    }

    /// Attaches to `interface`. `Auto` tries native mode and falls back to
    /// generic mode with a warning.
    pub fn attach(&mut self, interface: &str, mode: config::XdpMode) -> Result<&'static str, DataplaneError> {
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

    /// Number of entries in the connection table (two per connection).
    pub fn conntrack_entries(&self) -> Result<usize, DataplaneError> {
        let map = self
            .ebpf
            .map("FLOWS")
            .ok_or(DataplaneError::Missing("map FLOWS"))?;
        let flows: HashMap<&MapData, lb_common::maps::FlowKey, lb_common::maps::Flow> =
            HashMap::try_from(map).map_err(map_err("FLOWS"))?;
        Ok(flows.keys().filter(Result::is_ok).count())
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
