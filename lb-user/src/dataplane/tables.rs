//! The pure half of programming the data plane: stable ids for services and
//! backends, weighted round-robin slot tables, and what the maps should hold
//! for a config and the backends' current states, computed without touching
//! the kernel.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddrV4,
};

use lb_common::{
    limits::{MAX_BACKENDS, MAX_SERVICES, MAX_SLOTS_PER_SERVICE},
    maps::{
        BackendSlot, Service, ServiceKey, Settings, MAX_SNAT_ADDRS, SERVICE_RESET_WHEN_EMPTY,
        SERVICE_SYN_COOKIES_ALWAYS, SERVICE_SYN_COOKIES_NEVER, SETTINGS_READY,
    },
};

use crate::config::{Config, OnEmpty, SynCookies};

/// Identity of a backend across reloads: same service, name and address.
pub type BackendKey = (String, String, SocketAddrV4);

/// Ids survive reloads for services and backends that stay, so counters and
/// tracked connections keep meaning the same thing.
#[derive(Debug, Default)]
pub struct Ids {
    services: HashMap<String, u32>,
    backends: HashMap<BackendKey, u32>,
}

/// What [`Ids::assign`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    pub new_services: Vec<u32>,
    pub new_backends: Vec<u32>,
    pub removed_backends: Vec<u32>,
}

impl Ids {
    /// Gives every service and backend of `config` an id, keeping the ids of
    /// those already known and freeing those of the ones gone.
    pub fn assign(&mut self, config: &Config) -> Assignment {
        let mut assignment = Assignment::default();
        let wanted_services: BTreeSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        self.services
            .retain(|name, _| wanted_services.contains(name.as_str()));
        let wanted_backends: BTreeSet<BackendKey> = config
            .services
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(|b| (s.name.clone(), b.name.clone(), b.address))
            })
            .collect();
        self.backends.retain(|key, id| {
            let keep = wanted_backends.contains(key);
            if !keep {
                assignment.removed_backends.push(*id);
            }
            keep
        });
        for service in &config.services {
            if !self.services.contains_key(&service.name) {
                let id = lowest_free(self.services.values(), MAX_SERVICES);
                self.services.insert(service.name.clone(), id);
                assignment.new_services.push(id);
            }
        }
        for key in wanted_backends {
            if !self.backends.contains_key(&key) {
                let id = lowest_free(self.backends.values(), MAX_BACKENDS);
                self.backends.insert(key, id);
                assignment.new_backends.push(id);
            }
        }
        assignment
    }

    #[must_use]
    pub fn service(&self, name: &str) -> Option<u32> {
        self.services.get(name).copied()
    }

    #[must_use]
    pub fn backend(&self, service: &str, name: &str, address: SocketAddrV4) -> Option<u32> {
        self.backends
            .get(&(service.to_owned(), name.to_owned(), address))
            .copied()
    }
}

fn lowest_free<'a>(used: impl Iterator<Item = &'a u32>, limit: u32) -> u32 {
    let used: BTreeSet<u32> = used.copied().collect();
    // Config validation bounds the counts below the limits.
    (0..limit).find(|id| !used.contains(id)).unwrap_or(limit - 1)
}

/// The order in which backends of weights `weights` take new connections:
/// smooth weighted round robin (as in nginx), so that a heavier backend's
/// turns are spread out rather than bunched. Weights 0 take no turn; a total
/// above the table size is scaled down, keeping every live backend.
#[must_use]
pub fn weighted_order(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let limit = u64::from(MAX_SLOTS_PER_SERVICE);
    let weights: Vec<i64> = weights
        .iter()
        .map(|&w| match w {
            0 => 0,
            w if total > limit => ((u64::from(w) * limit / total).max(1)) as i64,
            w => i64::from(w),
        })
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0_i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total.min(limit as i64) {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .filter(|(i, _)| weights[*i] > 0)
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        order.push(best);
    }
    order
}

/// One service as the maps should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTable {
    pub id: u32,
    pub keys: Vec<ServiceKey>,
    pub slots: Vec<BackendSlot>,
    pub flags: u32,
}

/// Everything the maps hold for one config and the backends' states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub settings: Settings,
    pub services: Vec<ServiceTable>,
    pub vip_addrs: Vec<u32>,
}

/// How long the tuple of a connection the backend closed first is held
/// against other clients: the backend's TIME_WAIT (60 s on Linux, whose
/// timer may fire a few seconds late).
const TIME_WAIT_HOLD_NS: u64 = 65_000_000_000;
/// How long the tuple of a connection the client closed first, or a reset
/// ended, is held: the backend keeps no TIME_WAIT, only stray segments
/// (a retransmitted FIN, the last ACK) have to drain.
const CLOSE_LINGER_NS: u64 = 2_000_000_000;

/// The map contents for `config`. `weight(service, backend)` is a backend's
/// effective weight: its configured weight, or 0 while it is down or drained.
/// The host's own port range, the hash seed and the SYN cookies' key are
/// the data plane's to
/// fill in (see `Dataplane::apply`).
#[must_use]
pub fn build(config: &Config, ids: &Ids, weight: impl Fn(&str, &str) -> u32) -> Tables {
    let d = &config.dataplane;
    let mut snat_addrs = [0; MAX_SNAT_ADDRS];
    for (slot, addr) in snat_addrs.iter_mut().zip(&d.snat_addresses) {
        *slot = u32::from_ne_bytes(addr.octets());
    }
    let settings = Settings {
        snat_addrs,
        snat_addr_count: d.snat_addresses.len().min(MAX_SNAT_ADDRS) as u32,
        snat_port_first: *d.snat_ports.start(),
        snat_port_last: *d.snat_ports.end(),
        local_port_first: 0,
        local_port_last: 0,
        hash_seed: 0,
        udp_timeout_ns: duration_ns(d.udp_timeout),
        tcp_idle_timeout_ns: duration_ns(d.tcp_idle_timeout),
        tcp_handshake_timeout_ns: duration_ns(d.tcp_handshake_timeout),
        tcp_time_wait_ns: TIME_WAIT_HOLD_NS,
        tcp_close_linger_ns: CLOSE_LINGER_NS,
        flags: SETTINGS_READY,
        _pad: 0,
        cookie_key: [0; 2],
    };
    let mut services = Vec::new();
    let mut vip_addrs: Vec<u32> = Vec::new();
    for service in &config.services {
        let Some(id) = ids.service(&service.name) else {
            continue;
        };
        let keys = service
            .addresses
            .iter()
            .map(|addr| ServiceKey {
                addr: u32::from_ne_bytes(addr.octets()),
                port: service.port.to_be(),
                proto: service.protocol.number(),
                _pad: 0,
            })
            .collect::<Vec<_>>();
        for key in &keys {
            if !vip_addrs.contains(&key.addr) {
                vip_addrs.push(key.addr);
            }
        }
        let weights: Vec<u32> = service
            .backends
            .iter()
            .map(|b| weight(&service.name, &b.name))
            .collect();
        let slots = weighted_order(&weights)
            .into_iter()
            .filter_map(|i| {
                let backend = &service.backends[i];
                let backend_id = ids.backend(&service.name, &backend.name, backend.address)?;
                Some(BackendSlot {
                    addr: u32::from_ne_bytes(backend.address.ip().octets()),
                    port: backend.address.port().to_be(),
                    _pad: 0,
                    backend_id,
                })
            })
            .collect();
        let flags = match service.on_empty {
            OnEmpty::Reset => SERVICE_RESET_WHEN_EMPTY,
            OnEmpty::Drop => 0,
        } | match service.syn_cookies {
            SynCookies::UnderPressure => 0,
            SynCookies::Always => SERVICE_SYN_COOKIES_ALWAYS,
            SynCookies::Never => SERVICE_SYN_COOKIES_NEVER,
        };
        services.push(ServiceTable {
            id,
            keys,
            slots,
            flags,
        });
    }
    Tables {
        settings,
        services,
        vip_addrs,
    }
}

/// The service-map value of a table written in `generation`.
#[must_use]
pub fn service_value(table: &ServiceTable, generation: u32) -> Service {
    Service {
        id: table.id,
        slot_count: table.slots.len() as u32,
        generation,
        flags: table.flags,
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
    fn equal_weights_alternate_exactly() {
        assert_eq!(weighted_order(&[1, 1]), [0, 1]);
        assert_eq!(weighted_order(&[1, 1, 1]), [0, 1, 2]);
    }

    #[test]
    fn weights_are_spread_and_zero_means_no_turn() {
        let order = weighted_order(&[3, 1]);
        assert_eq!(order.len(), 4);
        assert_eq!(order.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(
            order,
            [0, 0, 1, 0],
            "smooth: the light backend is not last in a bunch"
        );
        assert_eq!(weighted_order(&[0, 2]), [1, 1]);
        assert!(weighted_order(&[0, 0]).is_empty());
    }

    #[test]
    fn oversized_weights_are_scaled_keeping_every_backend() {
        let order = weighted_order(&[256, 256, 1]);
        assert!(order.len() <= MAX_SLOTS_PER_SERVICE as usize);
        assert!(order.contains(&2));
    }

    #[test]
    fn ids_are_stable_across_reloads_and_reused_when_freed() {
        let mut config = example();
        let mut ids = Ids::default();
        let first = ids.assign(&config);
        assert_eq!(first.new_services, [0, 1]);
        assert_eq!(first.new_backends.len(), 4);
        let web02 = ids
            .backend("webservers2", "web02", config.services[1].backends[1].address)
            .unwrap();

        // Drop web01 of webservers2; add web03.
        let removed_id = ids
            .backend("webservers2", "web01", config.services[1].backends[0].address)
            .unwrap();
        config.services[1].backends.remove(0);
        config.services[1].backends.push(crate::config::BackendConfig {
            name: "web03".into(),
            address: "10.108.0.4:3000".parse().unwrap(),
            weight: 1,
        });
        let second = ids.assign(&config);
        assert!(second.new_services.is_empty());
        assert_eq!(second.removed_backends, [removed_id]);
        assert_eq!(second.new_backends, [removed_id], "the freed id is reused");
        assert_eq!(
            ids.backend("webservers2", "web02", config.services[1].backends[0].address),
            Some(web02)
        );
    }

    #[test]
    fn tables_follow_weights_and_vips() {
        let config = example();
        let mut ids = Ids::default();
        ids.assign(&config);
        let all_up = build(&config, &ids, |_, _| 1);
        assert_eq!(all_up.services.len(), 2);
        assert_eq!(all_up.vip_addrs.len(), 2);
        assert_eq!(all_up.services[0].keys.len(), 2);
        assert_eq!(all_up.services[1].slots.len(), 2);
        assert_eq!(
            all_up.services[1].slots[0].addr,
            u32::from_ne_bytes([10, 108, 0, 2])
        );
        assert_eq!(all_up.settings.flags & SETTINGS_READY, SETTINGS_READY);
        assert_eq!(all_up.services[0].flags, SERVICE_RESET_WHEN_EMPTY);

        let web01_down = build(&config, &ids, |_, b| u32::from(b != "web01"));
        assert_eq!(web01_down.services[1].slots.len(), 1);
        assert_eq!(
            web01_down.services[1].slots[0].addr,
            u32::from_ne_bytes([10, 108, 0, 3])
        );
        assert_eq!(service_value(&web01_down.services[1], 1).slot_count, 1);
    }
}
