//! The pure half of programming the data plane: what the maps should hold
//! for a config, computed without touching the kernel.

use lb_common::{
    limits::slot_index,
    maps::{BackendSlot, Service, ServiceKey, Settings, SETTINGS_READY},
};

use crate::config::Config;

/// Everything the maps hold for one config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub settings: Settings,
    pub services: Vec<(ServiceKey, Service)>,
    /// (index in the slot array, slot).
    pub slots: Vec<(u32, BackendSlot)>,
    pub vip_addrs: Vec<u32>,
}

/// Time a closed connection's SNAT port is held back, so that the backend's
/// TIME_WAIT (60 s on Linux) has ended before the port is used again.
const CLOSED_PORT_REUSE_NS: u64 = 61_000_000_000;

/// The map contents for `config`, with every service's table in `generation`.
#[must_use]
pub fn build(config: &Config, generation: u32) -> Tables {
    let d = &config.dataplane;
    let settings = Settings {
        snat_addr: u32::from_ne_bytes(d.snat_address.octets()),
        snat_port_first: *d.snat_ports.start(),
        snat_port_last: *d.snat_ports.end(),
        udp_timeout_ns: duration_ns(d.udp_timeout),
        tcp_idle_timeout_ns: duration_ns(d.tcp_idle_timeout),
        tcp_closed_reuse_ns: CLOSED_PORT_REUSE_NS,
        flags: SETTINGS_READY,
        _pad: 0,
    };
    let mut services = Vec::new();
    let mut slots = Vec::new();
    let mut vip_addrs: Vec<u32> = Vec::new();
    let mut backend_id = 0_u32;
    for (id, service) in (0_u32..).zip(&config.services) {
        let value = Service {
            id,
            slot_count: service.backends.len() as u32,
            generation,
            flags: 0,
        };
        for addr in &service.addresses {
            let addr = u32::from_ne_bytes(addr.octets());
            let key = ServiceKey {
                addr,
                port: service.port.to_be(),
                proto: service.protocol.number(),
                _pad: 0,
            };
            services.push((key, value));
            if !vip_addrs.contains(&addr) {
                vip_addrs.push(addr);
            }
        }
        for (slot, backend) in (0_u32..).zip(&service.backends) {
            slots.push((
                slot_index(id, generation, slot),
                BackendSlot {
                    addr: u32::from_ne_bytes(backend.address.ip().octets()),
                    port: backend.address.port().to_be(),
                    _pad: 0,
                    backend_id,
                },
            ));
            backend_id += 1;
        }
    }
    Tables {
        settings,
        services,
        slots,
        vip_addrs,
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/haproxy-equivalent.toml");
        Config::load(&path).unwrap()
    }

    #[test]
    fn every_vip_address_maps_to_its_service() {
        let tables = build(&example(), 0);
        // Two services, two addresses each.
        assert_eq!(tables.services.len(), 4);
        assert_eq!(tables.vip_addrs.len(), 2);
        let api: Vec<_> = tables
            .services
            .iter()
            .filter(|(k, _)| k.port == 5000_u16.to_be())
            .collect();
        assert_eq!(api.len(), 2);
        assert!(api.iter().all(|(_, s)| s.id == 0 && s.slot_count == 2));
    }

    #[test]
    fn slots_follow_config_order_in_the_requested_generation() {
        let tables = build(&example(), 1);
        let web = &tables.slots[2..4];
        assert_eq!(web[0].0, slot_index(1, 1, 0));
        assert_eq!(web[1].0, slot_index(1, 1, 1));
        assert_eq!(web[0].1.addr, u32::from_ne_bytes([10, 108, 0, 2]));
        assert_eq!(web[1].1.port, 3000_u16.to_be());
        let ids: Vec<u32> = tables.slots.iter().map(|(_, s)| s.backend_id).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
    }

    #[test]
    fn settings_carry_snat_and_ready_flag() {
        let tables = build(&example(), 0);
        assert_eq!(tables.settings.snat_addr, u32::from_ne_bytes([10, 108, 0, 5]));
        assert_eq!(
            (tables.settings.snat_port_first, tables.settings.snat_port_last),
            (20000, 29999)
        );
        assert_eq!(tables.settings.flags & SETTINGS_READY, SETTINGS_READY);
    }
}
