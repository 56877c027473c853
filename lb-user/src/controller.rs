//! The controller: the one task that owns the data plane. It turns health
//! check results, operator commands (drain, enable) and reloads into slot
//! tables, and answers status requests from the maps' counters.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_common::stats::Counter;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    config::{CheckConfig, CheckKind, Config, OnDown},
    control::{Request, Response},
    dataplane::{
        pressure::{Pressure, PressureWatch},
        tables::{self, BackendKey, Ids},
        ConnectionCensus, Dataplane, DataplaneError,
    },
    health::{self, CheckEvent, CheckTarget, Hysteresis},
    status::{BackendState, BackendStatus, CounterValue, ReloadOutcome, ServiceStatus, Status, VrrpStatus},
    vrrp::track::{NodeHealth, PoolChecks},
};

/// What the controller knows of a backend beyond its config.
#[derive(Clone, Debug)]
struct BackendRuntime {
    healthy: bool,
    drained: bool,
    checks_total: u64,
    failures_total: u64,
    last_check: Option<String>,
    last_change: SystemTime,
    downs_total: u64,
    /// The last check's outcome and when it came; None: none yet.
    last_result: Option<(bool, Instant)>,
}

impl BackendRuntime {
    fn new() -> Self {
        Self {
            healthy: true,
            drained: false,
            checks_total: 0,
            failures_total: 0,
            last_check: None,
            last_change: SystemTime::now(),
            downs_total: 0,
            last_result: None,
        }
    }
}

/// A running check task and the settings it was started with.
struct CheckTask {
    handle: JoinHandle<()>,
    config: CheckConfig,
}

/// New-connection rates, from counters sampled on a timer.
#[derive(Default)]
struct Rates {
    last: HashMap<String, (Instant, u64)>,
    rate: HashMap<String, f64>,
}

impl Rates {
    fn sample(&mut self, key: String, total: u64, now: Instant) {
        if let Some((then, before)) = self.last.get(&key) {
            let seconds = now.duration_since(*then).as_secs_f64();
            if seconds > 0.0 {
                self.rate
                    .insert(key.clone(), total.saturating_sub(*before) as f64 / seconds);
            }
        }
        self.last.insert(key, (now, total));
    }
}

pub struct Controller {
    config_path: PathBuf,
    config: Config,
    dataplane: Dataplane,
    ids: Ids,
    backends: HashMap<BackendKey, BackendRuntime>,
    checks: HashMap<BackendKey, CheckTask>,
    events: mpsc::Sender<CheckEvent>,
    started_at: SystemTime,
    last_reload: Option<ReloadOutcome>,
    rates: Rates,
    snat_pressure: PressureWatch,
    /// What VRRP's tracks need to know of the data plane and the pools.
    node_health: watch::Sender<NodeHealth>,
    /// The checks' view of the pools, for the election's readiness: a watch
    /// of its own, as it changes with every check (the tracks that wake on
    /// `node_health` must not).
    pool_checks: watch::Sender<PoolChecks>,
    vrrp_status: Option<watch::Receiver<VrrpStatus>>,
}

fn key_of(service: &str, backend: &crate::config::BackendConfig) -> BackendKey {
    (service.to_owned(), backend.name.clone(), backend.address)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Controller {
    /// Takes over a loaded (not yet attached) data plane, programs it for
    /// `config` with every backend up, and starts the checks.
    pub fn new(
        config_path: PathBuf,
        config: Config,
        dataplane: Dataplane,
        events: mpsc::Sender<CheckEvent>,
    ) -> Result<Self, DataplaneError> {
        let mut controller = Self {
            config_path,
            config: config.clone(),
            dataplane,
            ids: Ids::default(),
            backends: HashMap::new(),
            checks: HashMap::new(),
            events,
            started_at: SystemTime::now(),
            last_reload: None,
            rates: Rates::default(),
            snat_pressure: PressureWatch::default(),
            node_health: watch::channel(NodeHealth::default()).0,
            pool_checks: watch::channel(PoolChecks::default()).0,
            vrrp_status: None,
        };
        controller.adopt(config)?;
        Ok(controller)
    }

    /// For VRRP's tracks: attachment and healthy backends, kept current.
    #[must_use]
    pub fn node_health(&self) -> watch::Receiver<NodeHealth> {
        self.node_health.subscribe()
    }

    /// What the checks say of the pools (see `PoolChecks`).
    #[must_use]
    pub fn pool_checks(&self) -> watch::Receiver<PoolChecks> {
        self.pool_checks.subscribe()
    }

    /// Shows VRRP's state in the status.
    pub fn set_vrrp_status(&mut self, status: watch::Receiver<VrrpStatus>) {
        self.vrrp_status = Some(status);
    }

    /// Records the interfaces the program is attached to now (after attach).
    pub fn note_attached(&mut self) {
        let attached = self
            .dataplane
            .attached()
            .iter()
            .filter_map(|(name, _)| {
                crate::netdev::ifindex(name)
                    .ok()
                    .map(|index| (name.clone(), index))
            })
            .collect();
        let program_id = self
            .dataplane
            .program()
            .ok()
            .and_then(|p| p.info().ok())
            .map(|info| info.id());
        self.node_health.send_modify(|n| {
            n.attached = attached;
            n.program_id = program_id;
        });
    }

    fn publish_node_health(&self) {
        let mut healthy_backends: HashMap<String, usize> = HashMap::new();
        for service in &self.config.services {
            let up = service
                .backends
                .iter()
                .filter(|b| {
                    self.backends
                        .get(&key_of(&service.name, b))
                        .is_some_and(|r| r.healthy)
                })
                .count();
            healthy_backends.insert(service.name.clone(), up);
        }
        let interfaces = self.config.dataplane.interfaces.clone();
        self.node_health.send_if_modified(|n| {
            let changed = n.healthy_backends != healthy_backends || n.interfaces != interfaces;
            n.healthy_backends = healthy_backends;
            n.interfaces = interfaces;
            changed
        });
        self.publish_pool_checks();
    }

    /// Per checked service, when a backend that is up last passed a check:
    /// it changes with every check, so it has a watch of its own.
    fn publish_pool_checks(&self) {
        let mut checks = PoolChecks::default();
        for service in &self.config.services {
            if matches!(service.check.kind, CheckKind::None) {
                continue;
            }
            let last_pass = service
                .backends
                .iter()
                .filter_map(|b| self.backends.get(&key_of(&service.name, b)))
                .filter(|r| r.healthy)
                .filter_map(|r| match r.last_result {
                    Some((true, at)) => Some(at),
                    _ => None,
                })
                .max();
            checks.last_pass.push((service.name.clone(), last_pass));
        }
        self.pool_checks.send_if_modified(|old| {
            let changed = *old != checks;
            *old = checks;
            changed
        });
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    #[must_use]
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Makes `config` current: ids, runtimes, checks, maps.
    fn adopt(&mut self, config: Config) -> Result<(), DataplaneError> {
        let assignment = self.ids.assign(&config);
        // A removed backend's id may go to a new one at once: its pending
        // shutdown order must not reset the newcomer's connections.
        for id in assignment.removed_backends.iter().chain(&assignment.new_backends) {
            self.dataplane.sweeper().cancel_shutdown(*id);
        }
        self.dataplane
            .reset_stats(&assignment.new_services, &assignment.new_backends)?;
        let wanted: HashMap<BackendKey, (CheckConfig, String)> = config
            .services
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(move |b| (key_of(&s.name, b), (s.check.clone(), s.name.clone())))
            })
            .collect();
        self.backends.retain(|key, _| wanted.contains_key(key));
        let stale: Vec<BackendKey> = self
            .checks
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(task) = self.checks.remove(&key) {
                task.handle.abort();
            }
        }
        for (key, (check, _)) in &wanted {
            let runtime = self
                .backends
                .entry(key.clone())
                .or_insert_with(BackendRuntime::new);
            if matches!(check.kind, CheckKind::None) && !runtime.healthy {
                runtime.healthy = true;
                runtime.last_change = SystemTime::now();
            }
            let unchanged = self.checks.get(key).is_some_and(|task| task.config == *check);
            if unchanged {
                continue;
            }
            let state = if runtime.checks_total == 0 {
                Hysteresis::new(check.rise, check.fall)
            } else {
                Hysteresis::resume(check.rise, check.fall, runtime.healthy)
            };
            let target = CheckTarget {
                service: key.0.clone(),
                backend: key.1.clone(),
                address: key.2,
            };
            // Command checks must not see the daemon's secrets (token_env).
            let secret_env = config
                .vrrp
                .as_ref()
                .map(|v| v.secret_env.clone())
                .unwrap_or_default();
            let handle = health::spawn(target, check.clone(), state, self.events.clone(), secret_env);
            if let Some(old) = self.checks.insert(
                key.clone(),
                CheckTask {
                    handle,
                    config: check.clone(),
                },
            ) {
                old.handle.abort();
            }
        }
        // Forget the rates of services and backends that are gone.
        let live: std::collections::HashSet<String> = config
            .services
            .iter()
            .flat_map(|s| {
                std::iter::once(s.name.clone())
                    .chain(s.backends.iter().map(|b| format!("{}/{}", s.name, b.name)))
            })
            .collect();
        self.rates.last.retain(|key, _| live.contains(key));
        self.rates.rate.retain(|key, _| live.contains(key));
        self.config = config;
        self.sync()
    }

    /// Rewrites the maps from the config and the backends' states.
    fn sync(&mut self) -> Result<(), DataplaneError> {
        let tables = tables::build(&self.config, &self.ids, |service, backend| {
            let Some(config) = self.config.backend(service, backend) else {
                return 0;
            };
            let runtime = self.backends.get(&key_of(service, config));
            match runtime {
                Some(r) if r.healthy && !r.drained => config.weight,
                _ => 0,
            }
        });
        self.publish_node_health();
        self.dataplane.apply(&tables)
    }

    /// Records a check result; re-programs the pool when health flipped.
    pub fn on_check(&mut self, event: CheckEvent) {
        let key = (
            event.target.service.clone(),
            event.target.backend.clone(),
            event.target.address,
        );
        let Some(runtime) = self.backends.get_mut(&key) else {
            return;
        };
        runtime.checks_total += 1;
        if event.result.is_err() {
            runtime.failures_total += 1;
        }
        runtime.last_check = Some(match &event.result {
            Ok(()) => "ok".to_owned(),
            Err(why) => why.clone(),
        });
        runtime.last_result = Some((event.result.is_ok(), Instant::now()));
        if !event.flipped || runtime.healthy == event.healthy {
            // Whether the checks have passed since this node came back
            // decides when it may take the IP from a working master.
            self.publish_pool_checks();
            return;
        }
        runtime.healthy = event.healthy;
        runtime.last_change = event.at;
        if !event.healthy {
            runtime.downs_total += 1;
        }
        let reason = runtime.last_check.clone().unwrap_or_default();
        // Log after the maps changed, so that the log says what is in force.
        if let Err(e) = self.sync() {
            warn!(error = %e, "cannot update the pool after a health change");
        }
        let (service, backend) = (&key.0, &key.1);
        if event.healthy {
            info!(service, backend, address = %key.2, "backend UP (rise reached)");
        } else {
            warn!(service, backend, address = %key.2, reason, "backend DOWN");
        }
        let on_down = self
            .config
            .services
            .iter()
            .find(|s| &s.name == service)
            .map(|s| s.on_down);
        if let Some(id) = self.ids.backend(service, backend, key.2) {
            let sweeper = self.dataplane.sweeper();
            if event.healthy {
                sweeper.cancel_shutdown(id);
            } else if on_down == Some(OnDown::ShutdownSessions) {
                // In the background: a walk of the table must not hold the loop.
                sweeper.shut_down_sessions(id, format!("{service}/{backend}"));
            }
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, request: Request) -> Result<Response, String> {
        match request {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::Reload => self.reload().map(Response::Reloaded),
            Request::SetDrained {
                service,
                backend,
                drained,
            } => {
                let Some(config) = self.config.backend(&service, &backend) else {
                    return Err(format!("unknown backend {backend:?} of service {service:?}"));
                };
                let key = key_of(&service, config);
                let runtime = self
                    .backends
                    .get_mut(&key)
                    .ok_or_else(|| format!("unknown backend {backend:?}"))?;
                if runtime.drained != drained {
                    runtime.drained = drained;
                    info!(
                        service,
                        backend, drained, "operator changed the backend's drain state"
                    );
                    self.sync().map_err(|e| e.to_string())?;
                }
                Ok(Response::Done)
            }
        }
    }

    /// Re-reads the config file. Everything is validated before anything
    /// changes; on error the running config stays untouched.
    pub fn reload(&mut self) -> Result<String, String> {
        let outcome = self.try_reload();
        let message = match &outcome {
            Ok(summary) => summary.clone(),
            Err(why) => why.clone(),
        };
        self.last_reload = Some(ReloadOutcome {
            at_unix: unix(SystemTime::now()),
            ok: outcome.is_ok(),
            message,
        });
        match &outcome {
            Ok(summary) => info!(summary, "config reloaded"),
            Err(why) => warn!(error = why, "config reload refused; the running config stays"),
        }
        outcome
    }

    fn try_reload(&mut self) -> Result<String, String> {
        let new = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = &self.config;
        let needs_restart = [
            (
                old.dataplane.interfaces != new.dataplane.interfaces,
                "dataplane.interfaces",
            ),
            (
                old.dataplane.xdp_mode != new.dataplane.xdp_mode,
                "dataplane.xdp_mode",
            ),
            (
                old.dataplane.conntrack_entries != new.dataplane.conntrack_entries,
                "dataplane.conntrack_entries",
            ),
            (
                old.dataplane.manage_sysctls != new.dataplane.manage_sysctls,
                "dataplane.manage_sysctls",
            ),
            (
                old.dataplane.local_ports != new.dataplane.local_ports,
                "dataplane.local_ports",
            ),
            (old.admin != new.admin, "[admin]"),
            (old.metrics != new.metrics, "[metrics]"),
            (old.vrrp != new.vrrp, "[vrrp]"),
        ];
        if let Some((_, what)) = needs_restart.iter().find(|(changed, _)| *changed) {
            return Err(format!(
                "{}: changing {what} needs a restart",
                self.config_path.display()
            ));
        }
        // With manage_sysctls the kernel's range is local_ports (set at
        // start; changing it needs a restart), which the config keeps apart
        // from snat_ports; this checks the live range either way.
        crate::netdev::check_snat_ports(
            &new.dataplane.snat_ports,
            &crate::netdev::local_port_range().map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let summary = summarize(old, &new);
        self.adopt(new)
            .map_err(|e| format!("applying the new config failed: {e}"))?;
        Ok(summary)
    }

    /// Samples the connection counters for the rates in the status.
    pub fn sample_rates(&mut self) {
        let now = Instant::now();
        self.watch_snat_pressure(now);
        for service in &self.config.services {
            let Some(id) = self.ids.service(&service.name) else {
                continue;
            };
            if let Ok(stats) = self.dataplane.service_stats(id) {
                self.rates.sample(service.name.clone(), stats.connections, now);
            }
            for backend in &service.backends {
                let Some(id) = self.ids.backend(&service.name, &backend.name, backend.address) else {
                    continue;
                };
                if let Ok(stats) = self.dataplane.backend_stats(id) {
                    self.rates.sample(
                        format!("{}/{}", service.name, backend.name),
                        stats.connections,
                        now,
                    );
                }
            }
        }
    }

    /// Warns (at most every 10 s) when new connections found no free SNAT
    /// tuple: the README's capacity section says what to do.
    fn watch_snat_pressure(&mut self, now: Instant) {
        let Ok(counters) = self.dataplane.counters() else {
            return;
        };
        let total = |which: Counter| counters.iter().find(|(c, _)| *c == which).map_or(0, |(_, n)| *n);
        let totals = Pressure {
            dropped: total(Counter::DropNatPortsExhausted),
            evicted: total(Counter::ForwardNewEvicting),
        };
        if let Some(grown) = self.snat_pressure.observe(totals, now) {
            warn!(
                dropped = grown.dropped,
                took_over_held_tuples = grown.evicted,
                snat_addresses = self.config.dataplane.snat_addresses.len(),
                snat_ports = ?self.config.dataplane.snat_ports,
                "SNAT tuples exhausted: new connections were dropped or took over tuples still held \
                 (add snat_addresses or widen snat_ports; see the README's SNAT capacity)"
            );
        }
    }

    /// A snapshot of everything, counters read from the maps now.
    #[must_use]
    pub fn status(&self) -> Status {
        let census = self.census();
        let active = &census.active_by_backend;
        let services = self
            .config
            .services
            .iter()
            .map(|service| {
                let id = self.ids.service(&service.name);
                let stats = id
                    .and_then(|id| self.dataplane.service_stats(id).ok())
                    .unwrap_or_default();
                let backends: Vec<BackendStatus> = service
                    .backends
                    .iter()
                    .map(|backend| {
                        let key = key_of(&service.name, backend);
                        let runtime = self
                            .backends
                            .get(&key)
                            .cloned()
                            .unwrap_or_else(BackendRuntime::new);
                        let id = self.ids.backend(&service.name, &backend.name, backend.address);
                        let b = id
                            .and_then(|id| self.dataplane.backend_stats(id).ok())
                            .unwrap_or_default();
                        let state = if !runtime.healthy {
                            BackendState::Down
                        } else if runtime.drained || backend.weight == 0 {
                            BackendState::Drain
                        } else {
                            BackendState::Up
                        };
                        BackendStatus {
                            name: backend.name.clone(),
                            address: backend.address.to_string(),
                            state,
                            weight: backend.weight,
                            drained: runtime.drained,
                            healthy: runtime.healthy,
                            checks_total: runtime.checks_total,
                            check_failures_total: runtime.failures_total,
                            last_check: runtime.last_check.clone(),
                            last_change_unix: unix(runtime.last_change),
                            downs_total: runtime.downs_total,
                            active_connections: id.and_then(|id| active.get(&id).copied()).unwrap_or(0),
                            snat_tuples: id
                                .and_then(|id| census.snat_tuples_by_backend.get(&id).copied())
                                .unwrap_or(0),
                            connections_total: b.connections,
                            packets_to_total: b.packets_to,
                            bytes_to_total: b.bytes_to,
                            packets_from_total: b.packets_from,
                            bytes_from_total: b.bytes_from,
                            connection_rate: self
                                .rates
                                .rate
                                .get(&format!("{}/{}", service.name, backend.name))
                                .copied()
                                .unwrap_or(0.0),
                        }
                    })
                    .collect();
                ServiceStatus {
                    name: service.name.clone(),
                    addresses: service.addresses.iter().map(ToString::to_string).collect(),
                    port: service.port,
                    protocol: service.protocol.to_string(),
                    check: service.check.kind.name().to_owned(),
                    active_backends: backends.iter().filter(|b| b.state == BackendState::Up).count() as u32,
                    connections_total: stats.connections,
                    refused_total: stats.refused,
                    packets_in_total: stats.packets_in,
                    bytes_in_total: stats.bytes_in,
                    packets_out_total: stats.packets_out,
                    bytes_out_total: stats.bytes_out,
                    connection_rate: self.rates.rate.get(&service.name).copied().unwrap_or(0.0),
                    backends,
                }
            })
            .collect();
        let counters = self
            .dataplane
            .counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(c, value)| CounterValue {
                name: c.name().to_owned(),
                value,
            })
            .collect();
        Status {
            config_path: self.config_path.display().to_string(),
            started_at_unix: unix(self.started_at),
            now_unix: unix(SystemTime::now()),
            last_reload: self.last_reload.clone(),
            services,
            counters,
            conntrack_entries: census.entries,
            conntrack_capacity: u64::from(self.dataplane.conntrack_capacity()),
            vrrp: self.vrrp_status.as_ref().map(|status| status.borrow().clone()),
        }
    }

    /// The connection table's census: the sweeper's latest, a copy (no
    /// request ever scans the table). Empty before its first pass.
    fn census(&self) -> ConnectionCensus {
        self.dataplane
            .census()
            .map(|(_, census)| census)
            .unwrap_or_default()
    }

    /// Stops the checks (the data plane detaches when the controller drops).
    pub fn stop_checks(&mut self) {
        for (_, task) in self.checks.drain() {
            task.handle.abort();
        }
    }
}

/// What a reload changes, in words.
fn summarize(old: &Config, new: &Config) -> String {
    let names = |c: &Config| {
        c.services
            .iter()
            .map(|s| s.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let backends = |c: &Config| {
        c.services
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(move |b| (s.name.clone(), b.name.clone(), b.address, b.weight))
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (old_s, new_s) = (names(old), names(new));
    let (old_b, new_b) = (backends(old), backends(new));
    let added_s = new_s.difference(&old_s).count();
    let removed_s = old_s.difference(&new_s).count();
    let added_b = new_b.difference(&old_b).count();
    let removed_b = old_b.difference(&new_b).count();
    if old == new {
        return "no change".to_owned();
    }
    format!(
        "services +{added_s} -{removed_s}, backends (or their address/weight) +{added_b} -{removed_b}; connection tracking kept"
    )
}

/// How often rates are sampled.
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);
