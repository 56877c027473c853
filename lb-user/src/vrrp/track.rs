//! Tracking: what this node's fitness to be master depends on (its data
//! plane, interfaces, services with a backend up, a command). Each track
//! runs on its own interval with rise/fall, and reports changes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::sleep,
};

use crate::{
    config::{TrackConfig, TrackKind},
    health::Hysteresis,
};

/// What the controller tells the tracks about the data plane and pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Interfaces the XDP program is attached to, with their ifindex then.
    pub attached: Vec<(String, u32)>,
    /// The interfaces it must be attached to.
    pub interfaces: Vec<String>,
    /// The loaded program's id: what the kernel must report on them.
    pub program_id: Option<u32>,
    /// Backends whose checks say UP, per service.
    pub healthy_backends: HashMap<String, usize>,
}

/// What the health checks say of the pools, for deciding when this node
/// may take the floating IP from a working master (see `ready_since`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolChecks {
    /// Per service with checks: when one of its backends, UP, last passed a
    /// check (None: none has yet, or none that is UP passes now).
    pub last_pass: Vec<(String, Option<Instant>)>,
}

impl PoolChecks {
    /// Ready to take the floating IP from a working master: every checked
    /// service has a backend that is UP and passed a check since `since`
    /// (when this node came back from a fault: what its checks said while
    /// it was cut off is not trusted). A node whose backends are still
    /// rising after a partition would otherwise take the IP and refuse new
    /// connections. A service with no backend passing holds preemption
    /// back (the node still takes over from a master that is gone).
    #[must_use]
    pub fn ready_since(&self, since: Option<Instant>) -> bool {
        self.waiting_for(since).is_empty()
    }

    /// The services that are not ready since `since`.
    #[must_use]
    pub fn waiting_for(&self, since: Option<Instant>) -> Vec<String> {
        self.last_pass
            .iter()
            .filter(|(_, pass)| !pass.is_some_and(|at| since.is_none_or(|since| at >= since)))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// One track's state after rise/fall, sent when it changes (and once at
/// the first observation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackUpdate {
    pub index: usize,
    pub ok: bool,
    pub detail: String,
}

/// Observes once.
async fn observe(
    kind: &TrackKind,
    limit: Duration,
    node: &watch::Receiver<NodeHealth>,
    secret_env: &[String],
) -> Result<(), String> {
    match kind {
        TrackKind::Dataplane => {
            let node = node.borrow().clone();
            for interface in &node.interfaces {
                let Some((_, ifindex)) = node.attached.iter().find(|(name, _)| name == interface) else {
                    return Err(format!("not attached to {interface}"));
                };
                // A deleted (or re-created) interface took the program with it.
                match crate::netdev::ifindex(interface) {
                    Ok(now) if now == *ifindex => {}
                    Ok(_) => return Err(format!("{interface} was re-created; the program is not on it")),
                    Err(_) => return Err(format!("{interface} is gone")),
                }
                // Detached behind our back (e.g. `bpftool link detach`).
                match (crate::netdev::xdp_program_id(interface).await, node.program_id) {
                    (Ok(Some(id)), Some(ours)) if id == ours => {}
                    (Ok(Some(id)), _) => return Err(format!("{interface} runs XDP program {id}, not ours")),
                    (Ok(None), _) => return Err(format!("no XDP program on {interface}")),
                    (Err(e), _) => return Err(e.to_string()),
                }
            }
            Ok(())
        }
        TrackKind::Service(service) => match node.borrow().healthy_backends.get(service) {
            Some(n) if *n > 0 => Ok(()),
            _ => Err(format!("service {service} has no backend up")),
        },
        TrackKind::Interface(interface) => interface_up(interface),
        TrackKind::Command(argv) => run_command(argv, limit, secret_env).await,
    }
}

/// Up, or "unknown" (virtual interfaces without carrier reporting).
fn interface_up(interface: &str) -> Result<(), String> {
    let path = format!("/sys/class/net/{interface}/operstate");
    match std::fs::read_to_string(&path) {
        Ok(state) if matches!(state.trim(), "up" | "unknown") => Ok(()),
        Ok(state) => Err(format!("{interface} is {}", state.trim())),
        Err(_) => Err(format!("{interface} does not exist")),
    }
}

async fn run_command(argv: &[String], limit: Duration, secret_env: &[String]) -> Result<(), String> {
    crate::exec::run(crate::exec::Run {
        argv,
        env: Vec::new(),
        secret_env,
        limit,
        inherit_output: false,
    })
    .await
    .map_err(|e| e.to_string())
}

/// Starts one task per track. `links`: link-change notifications for the
/// interface tracks (their interval is then only a fallback).
/// `secret_env`: variables a command must not inherit.
pub fn spawn_all(
    tracks: &[TrackConfig],
    node: &watch::Receiver<NodeHealth>,
    updates: &mpsc::Sender<TrackUpdate>,
    links: Option<&watch::Receiver<u64>>,
    secret_env: &[String],
) -> Vec<JoinHandle<()>> {
    tracks
        .iter()
        .enumerate()
        .map(|(index, track)| {
            let secret_env = secret_env.to_vec();
            let wake = match track.kind {
                TrackKind::Dataplane | TrackKind::Service(_) => Some(Wake::Node),
                TrackKind::Interface(_) => links.cloned().map(Wake::Links),
                TrackKind::Command(_) => None,
            };
            tokio::spawn(run(
                index,
                track.clone(),
                node.clone(),
                updates.clone(),
                wake,
                secret_env,
            ))
        })
        .collect()
}

/// What, besides its interval, wakes a track.
enum Wake {
    /// The controller's changes (data plane, pools).
    Node,
    /// The kernel's link changes.
    Links(watch::Receiver<u64>),
}

async fn run(
    index: usize,
    track: TrackConfig,
    mut node: watch::Receiver<NodeHealth>,
    updates: mpsc::Sender<TrackUpdate>,
    mut wake: Option<Wake>,
    secret_env: Vec<String>,
) {
    let mut state = Hysteresis::new(track.rise, track.fall);
    let mut first = true;
    loop {
        let result = observe(&track.kind, track.timeout, &node, &secret_env).await;
        let flipped = state.observe(result.is_ok());
        if flipped || first {
            first = false;
            let update = TrackUpdate {
                index,
                ok: state.is_healthy(),
                detail: result.err().unwrap_or_else(|| "ok".to_owned()),
            };
            if updates.send(update).await.is_err() {
                return;
            }
        }
        // A change wakes the track at once; the interval is a fallback.
        let changed = match &mut wake {
            None => {
                sleep(track.interval).await;
                continue;
            }
            Some(Wake::Node) => tokio::select! {
                () = sleep(track.interval) => Ok(()),
                changed = node.changed() => changed,
            },
            Some(Wake::Links(links)) => tokio::select! {
                () = sleep(track.interval) => Ok(()),
                changed = links.changed() => changed,
            },
        };
        if changed.is_err() {
            wake = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_ready_when_every_checked_service_has_a_backend_passing_since_the_return() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let checks = |passes: &[Option<Instant>]| PoolChecks {
            last_pass: passes
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("s{i}"), *p))
                .collect(),
        };
        assert!(checks(&[]).ready_since(Some(later)), "nothing checked: ready");
        assert!(
            checks(&[Some(t0), Some(t0)]).ready_since(None),
            "any pass at start-up"
        );
        assert!(
            !checks(&[Some(t0), None]).ready_since(None),
            "a service with none passing"
        );
        let stale = checks(&[Some(later), Some(t0)]);
        assert!(!stale.ready_since(Some(later)), "a pass from before the return");
        assert_eq!(stale.waiting_for(Some(later)), ["s1"]);
        assert!(checks(&[Some(later), Some(later)]).ready_since(Some(later)));
    }
    use crate::test_support::within;

    fn track(kind: TrackKind, fall: u32) -> TrackConfig {
        TrackConfig {
            kind,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            rise: 1,
            fall,
            weight: None,
        }
    }

    #[tokio::test]
    async fn a_service_track_follows_the_controller() {
        let (tx, rx) = watch::channel(NodeHealth::default());
        tx.send_modify(|n| {
            n.healthy_backends.insert("web".into(), 2);
        });
        let (updates_tx, mut updates) = mpsc::channel(8);
        let tasks = spawn_all(
            &[track(TrackKind::Service("web".into()), 1)],
            &rx,
            &updates_tx,
            None,
            &[],
        );
        assert!(within("the first update", updates.recv()).await.unwrap().ok);
        tx.send_modify(|n| {
            n.healthy_backends.insert("web".into(), 0);
        });
        let down = within("the update to down", updates.recv()).await.unwrap();
        assert!(!down.ok);
        assert_eq!(down.detail, "service web has no backend up");
        tasks.iter().for_each(JoinHandle::abort);
    }

    #[tokio::test]
    async fn a_command_track_uses_the_exit_status() {
        let (_tx, rx) = watch::channel(NodeHealth::default());
        let (updates_tx, mut updates) = mpsc::channel(8);
        let tasks = spawn_all(
            &[
                track(TrackKind::Command(vec!["true".into()]), 1),
                track(TrackKind::Command(vec!["false".into()]), 1),
            ],
            &rx,
            &updates_tx,
            None,
            &[],
        );
        let mut seen = [None, None];
        for _ in 0..2 {
            let u = within("each command's first update", updates.recv())
                .await
                .unwrap();
            seen[u.index] = Some(u.ok);
        }
        assert_eq!(seen, [Some(true), Some(false)]);
        tasks.iter().for_each(JoinHandle::abort);
    }

    #[test]
    fn interface_state_comes_from_sysfs() {
        assert_eq!(interface_up("lo"), Ok(()));
        assert!(interface_up("no-such-if0").is_err());
    }
}
