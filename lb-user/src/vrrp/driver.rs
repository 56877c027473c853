//! The VRRP driver: one task that owns the election. It feeds the state
//! machine with validated advertisements, timer expiries, track changes and
//! peer-link closes, carries out its actions (send adverts, take over or
//! release the floating IP through the movers), and publishes a status.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::sleep_until,
};
use tracing::{info, warn};

use super::{
    machine::{Action, Event, Machine, Params, State},
    packet::{auth_data, Advertisement, Version},
    peer_link::{self, Greeting, PeerLinkEvent},
    socket::{Peers, Received, VrrpSocket},
    track::{self, NodeHealth, PoolChecks, TrackUpdate},
    validate::{validate, Expectation},
};
use crate::{
    config::VrrpConfig,
    dataplane::PeerHandoffMap,
    failover::{notify::Notification, MoverReport, Movers},
    status::{CounterValue, MoverStatus, PeerLinkStatus, TrackStatus, VrrpStatus, VrrpTransition},
};

/// How long start-up waits for every track's first observation.
const FIRST_OBSERVATION_WAIT: Duration = Duration::from_secs(3);

/// The running election, on its own thread (see `start`).
pub struct VrrpHandle {
    pub status: watch::Receiver<VrrpStatus>,
    stop: Option<oneshot::Sender<()>>,
    /// Resolves when the election has ended (priority 0 sent, IP released).
    stopped: Option<oneshot::Receiver<()>>,
    /// Dropped with the handle: the thread then ends the peer link, which
    /// outlives the election: while this node drains its connections after
    /// a stop, the new master keeps handing their packets here.
    release: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long dropping the handle waits for the election's thread.
const THREAD_EXIT_WAIT: Duration = Duration::from_secs(2);

impl Drop for VrrpHandle {
    fn drop(&mut self) {
        self.stop.take();
        self.release.take();
        let Some(thread) = self.thread.take() else { return };
        // Bounded: a thread stuck in a mover's call must not hang the exit
        // (the process's end takes it along).
        let deadline = Instant::now() + THREAD_EXIT_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            warn!("the VRRP thread did not end in time; leaving it");
        } else if thread.join().is_err() {
            warn!("the VRRP thread panicked");
        }
    }
}

impl VrrpHandle {
    /// Leaves the election: a master sends priority 0 and releases the IP.
    /// The peer link stays up until the handle is dropped.
    pub async fn shutdown(&mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            if tokio::time::timeout(limit, stopped).await.is_err() {
                warn!("VRRP did not stop in time");
            }
        }
    }
}

pub const fn state_name(state: State) -> &'static str {
    match state {
        State::Initialize => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}

const fn notify_name(state: State) -> &'static str {
    match state {
        State::Initialize => "stop",
        State::Backup => "backup",
        State::Master => "master",
        State::Fault => "fault",
    }
}

/// Starts the election on a thread of its own, with its own runtime, so
/// that nothing the rest of the daemon does (a request, a reload, a table
/// walk, a health check, a stalled runtime) can delay an advertisement, the
/// peer link or a takeover. With `realtime_priority` the thread runs under
/// SCHED_RR, so a saturated CPU cannot delay it either; commands it starts
/// (tracks, notify) run at normal priority.
///
/// `handoff` lets the data plane send segments of connections it does not
/// know to the peer (used with the local mover, where both nodes share the
/// floating IP's link). `node` is the data plane's health, kept by the
/// controller.
pub async fn start(
    config: VrrpConfig,
    node: watch::Receiver<NodeHealth>,
    pools: watch::Receiver<PoolChecks>,
    handoff: Option<PeerHandoffMap>,
) -> anyhow::Result<VrrpHandle> {
    let (started_tx, started_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let realtime_priority = config.realtime_priority;
    let thread = std::thread::Builder::new()
        .name("xlb-vrrp".into())
        .spawn(move || {
            if let Some(priority) = realtime_priority {
                match set_realtime_priority(priority) {
                    Ok(()) => info!(priority, "VRRP runs at real-time priority (SCHED_RR)"),
                    Err(e) => warn!(priority, error = %e, "cannot give VRRP a real-time priority"),
                }
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(
                        anyhow::Error::from(e).context("cannot start the VRRP runtime")
                    ));
                    return;
                }
            };
            runtime.block_on(async move {
                let election = match prepare(config, node, pools, handoff).await {
                    Ok(election) => election,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let Election {
                    mut driver,
                    status,
                    tracks,
                    track_tasks,
                    peer_link,
                    peer_events,
                    reports,
                    _links,
                } = election;
                if started_tx.send(Ok(status)).is_err() {
                    return;
                }
                driver.run(stop_rx, tracks, peer_events, reports).await;
                for task in track_tasks {
                    task.abort();
                }
                let _ = stopped_tx.send(());
                let _ = release_rx.await;
                if let Some(task) = peer_link {
                    task.abort();
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .context("cannot start the VRRP thread")?;
    let status = match started_rx.await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            anyhow::bail!("the VRRP thread ended during start-up");
        }
    };
    Ok(VrrpHandle {
        status,
        stop: Some(stop_tx),
        stopped: Some(stopped_rx),
        release: Some(release_tx),
        thread: Some(thread),
    })
}

/// Puts the calling thread under SCHED_RR at `priority` (1-99). Children
/// it forks start at normal priority (SCHED_RESET_ON_FORK): a track script
/// or notify command must not run at real-time priority.
fn set_realtime_priority(priority: u8) -> std::io::Result<()> {
    // <linux/sched.h>; not in the libc crate.
    const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | SCHED_RESET_ON_FORK, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What `prepare` sets up on the VRRP thread's runtime.
struct Election {
    driver: Driver,
    status: watch::Receiver<VrrpStatus>,
    tracks: mpsc::Receiver<TrackUpdate>,
    track_tasks: Vec<JoinHandle<()>>,
    peer_link: Option<JoinHandle<()>>,
    peer_events: mpsc::Receiver<PeerLinkEvent>,
    reports: mpsc::UnboundedReceiver<MoverReport>,
    /// The VRRP thread's own watch of the kernel's link changes, which wakes
    /// the interface tracks (without it, they poll).
    _links: Option<(watch::Receiver<u64>, JoinHandle<()>)>,
}

/// Opens the socket, prepares the movers, the peer link and the tracks.
async fn prepare(
    config: VrrpConfig,
    node: watch::Receiver<NodeHealth>,
    pools: watch::Receiver<PoolChecks>,
    handoff: Option<PeerHandoffMap>,
) -> anyhow::Result<Election> {
    let links = match crate::netdev::spawn_link_monitor() {
        Ok(monitor) => Some(monitor),
        Err(e) => {
            warn!(error = %e, "no link notifications: interface tracks poll");
            None
        }
    };
    let peers = if config.unicast_peers.is_empty() {
        Peers::Multicast
    } else {
        Peers::Unicast(config.unicast_peers.clone())
    };
    let socket = VrrpSocket::open(&config.interface, config.source_address, peers).with_context(|| {
        format!(
            "cannot open the VRRP socket on {} from {}",
            config.interface, config.source_address
        )
    })?;
    socket.set_nonblocking()?;
    // SAFETY: VrrpSocket owns its descriptor for its whole life and always
    // returns the same one from as_raw_fd.
    let socket = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("cannot register the VRRP socket")?;
    let (peer_tx, peer_rx) = mpsc::channel(16);
    // Only with the local mover do both nodes sit on the floating IP's link.
    let handoff_interface = config
        .local
        .as_ref()
        .map(|local| -> anyhow::Result<_> {
            let mac = crate::netdev::mac_address(&local.interface)?;
            Ok((mac, crate::netdev::ifindex(&local.interface)?))
        })
        .transpose()?;
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let movers = Movers::start(&config, reports_tx).await?;
    // After the movers: a failed start leaves no task behind.
    let peer_link = match config.peer_link_port {
        Some(port) => {
            let settings = peer_link::LinkSettings {
                source: config.source_address,
                peers: config.unicast_peers.clone(),
                port,
                greeting: Greeting {
                    vrid: config.vrid,
                    mac: handoff_interface.map(|(mac, _)| mac),
                },
                key: config
                    .peer_link_key
                    .as_ref()
                    .map(|key| std::sync::Arc::from(key.expose().as_bytes())),
            };
            let listener = peer_link::bind(&settings).await.with_context(|| {
                format!(
                    "cannot listen for the peer link on {}:{port}",
                    config.source_address
                )
            })?;
            Some(tokio::spawn(peer_link::run(listener, settings, peer_tx)))
        }
        None => None,
    };
    // Unbounded: the driver both sends (inline mover steps) and receives.
    let (tracks_tx, tracks_rx) = mpsc::channel(64);
    let track_tasks = track::spawn_all(
        &config.tracks,
        &node,
        &tracks_tx,
        links.as_ref().map(|(changes, _)| changes),
        &config.secret_env,
    );
    let machine = Machine::new(Params {
        version: config.version,
        priority: config.priority,
        interval_cs: config.interval_cs,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        primary_address: config.source_address,
        unicast_peers: config.unicast_peers.len(),
    });
    let expectation = Expectation {
        version: config.version,
        vrid: config.vrid,
        auth: config.auth_pass.as_ref().map(|p| auth_data(p.expose())),
        interval_cs: config.interval_cs,
        unicast_peers: config.unicast_peers.clone(),
        own_addresses: vec![config.source_address],
    };
    let mover_status = movers
        .names()
        .into_iter()
        .map(|name| MoverStatus {
            mover: name.to_owned(),
            ok: true,
            ..MoverStatus::default()
        })
        .collect();
    let peer_links = config
        .peer_link_port
        .map(|_| {
            config
                .unicast_peers
                .iter()
                .map(|p| PeerLinkStatus {
                    peer: p.to_string(),
                    up: false,
                    closes_total: 0,
                })
                .collect()
        })
        .unwrap_or_default();
    let tracks = config
        .tracks
        .iter()
        .map(|t| TrackStatus {
            name: t.kind.describe(),
            ok: true,
            weight: t.weight,
            detail: "not observed yet".to_owned(),
        })
        .collect();
    let (status_tx, status_rx) = watch::channel(VrrpStatus::default());
    let mut driver = Driver {
        pools,
        config,
        machine,
        expectation,
        socket,
        movers,
        status: status_tx,
        observed: Vec::new(),
        health_ok: true,
        priority: 0,
        adverts_sent: 0,
        adverts_received: 0,
        rejected: BTreeMap::new(),
        transitions_total: 0,
        tracks,
        mover_status,
        peer_links,
        peer_link_seen: false,
        handoff: handoff
            .zip(handoff_interface)
            .map(|(map, (own_mac, ifindex))| Handoff {
                map,
                own_mac,
                ifindex,
                peer: None,
            }),
    };
    driver.priority = driver.config.priority;
    driver.observed = vec![false; driver.config.tracks.len()];
    Ok(Election {
        driver,
        status: status_rx,
        tracks: tracks_rx,
        track_tasks,
        peer_link,
        peer_events: peer_rx,
        reports: reports_rx,
        _links: links,
    })
}

struct Driver {
    /// What the checks say of the pools, kept by the controller.
    pools: watch::Receiver<PoolChecks>,
    config: VrrpConfig,
    machine: Machine,
    expectation: Expectation,
    socket: AsyncFd<VrrpSocket>,
    movers: Movers,
    status: watch::Sender<VrrpStatus>,
    observed: Vec<bool>,
    health_ok: bool,
    priority: u8,
    adverts_sent: u64,
    adverts_received: u64,
    rejected: BTreeMap<&'static str, u64>,
    transitions_total: u64,
    tracks: Vec<TrackStatus>,
    mover_status: Vec<MoverStatus>,
    peer_links: Vec<PeerLinkStatus>,
    /// A peer link has been up since start: the peer speaks it.
    peer_link_seen: bool,
    /// The data plane's peer handoff, our floating-IP interface's MAC and
    /// index, and the peer it points at now.
    handoff: Option<Handoff>,
}

struct Handoff {
    map: PeerHandoffMap,
    own_mac: [u8; 6],
    ifindex: u32,
    peer: Option<(Ipv4Addr, [u8; 6])>,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Driver {
    async fn run(
        &mut self,
        mut stop: oneshot::Receiver<()>,
        mut tracks: mpsc::Receiver<TrackUpdate>,
        mut peer_links: mpsc::Receiver<PeerLinkEvent>,
        mut reports: mpsc::UnboundedReceiver<MoverReport>,
    ) {
        // Start with known health: a node whose data plane or interface is
        // down must not win the first election.
        let wait_until = tokio::time::Instant::now() + FIRST_OBSERVATION_WAIT;
        while self.observed.iter().any(|seen| !seen) {
            tokio::select! {
                _ = &mut stop => {
                    self.movers_finish(reports).await;
                    return;
                }
                Some(update) = tracks.recv() => self.on_track(update, Instant::now()).await,
                () = sleep_until(wait_until) => {
                    warn!("some tracks gave no result in time; starting without them");
                    break;
                }
            }
        }
        self.refresh_readiness(Instant::now()).await;
        self.step(Event::Startup, Instant::now()).await;
        info!(
            state = state_name(self.machine.state()),
            vrid = self.config.vrid,
            priority = self.priority,
            "VRRP running"
        );
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = &mut stop => break,
                ready = self.socket.readable() => match ready {
                    Ok(mut guard) => {
                        guard.clear_ready();
                        self.receive_all().await;
                    }
                    Err(e) => {
                        warn!(error = %e, "VRRP socket failed");
                        break;
                    }
                },
                Some(update) = tracks.recv() => self.on_track(update, Instant::now()).await,
                Some(event) = peer_links.recv() => self.on_peer_link(event).await,
                Some(report) = reports.recv() => self.on_report(report),
                Ok(()) = self.pools.changed() => self.refresh_readiness(Instant::now()).await,
                () = async {
                    match deadline {
                        Some(t) => sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = Instant::now();
                    let actions = self.machine.poll(now);
                    self.execute(actions, now).await;
                    if self.machine.state() == State::Master {
                        self.movers.maintain(now).await;
                    }
                }
            }
            self.publish();
        }
        self.step(Event::Shutdown, Instant::now()).await;
        self.movers_finish(reports).await;
    }

    /// Lets queued notify commands finish (bounded) and records the reports.
    async fn movers_finish(&mut self, mut reports: mpsc::UnboundedReceiver<MoverReport>) {
        let movers = std::mem::replace(&mut self.movers, Movers::empty());
        movers.finish(Duration::from_secs(5)).await;
        while let Ok(report) = reports.try_recv() {
            self.on_report(report);
        }
        self.publish();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let maintenance = (self.machine.state() == State::Master)
            .then(|| self.movers.next_maintenance())
            .flatten();
        match (self.machine.next_deadline(), maintenance) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Feeds one event and carries out what follows.
    async fn step(&mut self, event: Event, now: Instant) {
        let actions = self.machine.handle(event, now);
        self.execute(actions, now).await;
        // A recovery from FAULT makes the pools' readiness stale.
        self.refresh_readiness(now).await;
        self.publish();
    }

    /// Tells the machine whether the pools are ready (their checks settled
    /// since the node came back), when that changed.
    async fn refresh_readiness(&mut self, now: Instant) {
        let checks = self.pools.borrow_and_update().clone();
        let since = self.machine.rejoined_at();
        let pools_ready = checks.ready_since(since);
        // Make before break: once a peer has linked, the IP is not taken
        // from it before the link is back, and with it the handoff of the
        // connections it opened (a handshake the client finishes here).
        let linked = !self.peer_link_seen || self.peer_links.iter().any(|link| link.up);
        let ready = pools_ready && linked;
        if ready == self.machine.ready() {
            return;
        }
        if ready {
            info!("ready: every service has a backend passing its checks, the peer link is up");
        } else if !pools_ready {
            info!(
                services = ?checks.waiting_for(since),
                "pools not ready: until these services have a backend up and passing its checks, \
                 the floating IP is not taken from a working master"
            );
        } else {
            info!(
                "not ready: the floating IP is not taken from a working master until the peer link is back"
            );
        }
        let actions = self.machine.handle(Event::Ready { ready }, now);
        self.execute(actions, now).await;
    }

    async fn execute(&mut self, actions: Vec<Action>, now: Instant) {
        for action in actions {
            match action {
                Action::SendAdvertisement { priority } => self.send_advertisement(priority),
                Action::TakeOver => self.movers.take_over(now).await,
                Action::Release => self.movers.release().await,
                Action::Reannounce => self.movers.reannounce(now),
            }
        }
        self.note_transitions();
    }

    /// Counts new transitions and queues their notify commands, in order.
    fn note_transitions(&mut self) {
        let total = self.machine.transitions_total();
        let new = usize::try_from(total - self.transitions_total).unwrap_or(usize::MAX);
        if new == 0 {
            return;
        }
        let history: Vec<_> = self.machine.history().collect();
        let notifications: Vec<Notification> = history[history.len().saturating_sub(new)..]
            .iter()
            .map(|t| Notification {
                state: notify_name(t.to),
                previous: if t.from == State::Initialize {
                    "init"
                } else {
                    notify_name(t.from)
                },
                reason: t.reason.clone(),
                priority: self.machine.priority(),
            })
            .collect();
        self.transitions_total = total;
        for notification in notifications {
            self.movers.notify(notification);
        }
    }

    fn send_advertisement(&mut self, priority: u8) {
        let advert = Advertisement {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.interval_cs,
            addresses: self.config.virtual_addresses.clone(),
            auth: self.config.auth_pass.as_ref().map(|p| auth_data(p.expose())),
        };
        match self.socket.get_ref().send(&advert) {
            Ok(()) => self.adverts_sent += 1,
            // Link down, no route: the tracks and the peers' timers handle it.
            Err(e) => tracing::debug!(error = %e, "cannot send a VRRP advertisement"),
        }
    }

    async fn receive_all(&mut self) {
        loop {
            let received = match self.socket.get_ref().try_receive() {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    *self.rejected.entry("not_ipv4").or_default() += 1;
                    continue;
                }
            };
            self.on_datagram(received).await;
        }
    }

    async fn on_datagram(&mut self, received: Received) {
        let advert = match received.advert {
            Ok(advert) => advert,
            Err(e) => {
                *self.rejected.entry(e.name()).or_default() += 1;
                tracing::debug!(source = %received.source, error = %e, "VRRP datagram dropped");
                return;
            }
        };
        if let Err(rejection) = validate(&advert, received.source, received.ttl, &self.expectation) {
            *self.rejected.entry(rejection.name()).or_default() += 1;
            tracing::debug!(source = %received.source, %rejection, "VRRP advertisement dropped");
            return;
        }
        self.adverts_received += 1;
        self.step(
            Event::Advertisement {
                source: received.source,
                priority: advert.priority,
                interval_cs: advert.interval_cs,
            },
            Instant::now(),
        )
        .await;
    }

    async fn on_track(&mut self, update: TrackUpdate, now: Instant) {
        let Some(track) = self.config.tracks.get(update.index) else {
            return;
        };
        let changed = self.observed[update.index] && self.tracks[update.index].ok != update.ok;
        if changed {
            if update.ok {
                info!(track = self.tracks[update.index].name, "track recovered");
            } else {
                warn!(
                    track = self.tracks[update.index].name,
                    detail = update.detail,
                    "track failed"
                );
            }
        }
        self.observed[update.index] = true;
        let weight = track.weight;
        let status = &mut self.tracks[update.index];
        status.ok = update.ok;
        status.weight = weight;
        status.detail = update.detail;

        let health_ok = self
            .config
            .tracks
            .iter()
            .zip(&self.tracks)
            .all(|(config, status)| config.weight.is_some() || status.ok);
        let adjustment: i32 = self
            .config
            .tracks
            .iter()
            .zip(&self.tracks)
            .filter(|(_, status)| !status.ok)
            .filter_map(|(config, _)| config.weight.map(i32::from))
            .sum();
        let priority = if adjustment == 0 {
            self.config.priority
        } else {
            u8::try_from((i32::from(self.config.priority) + adjustment).clamp(1, 254)).unwrap_or(1)
        };
        if priority != self.priority {
            self.priority = priority;
            info!(priority, "VRRP priority changed by tracks");
            self.step(Event::Priority { priority }, now).await;
        }
        if health_ok != self.health_ok {
            self.health_ok = health_ok;
            self.step(Event::Health { ok: health_ok }, now).await;
        }
    }

    async fn on_peer_link(&mut self, event: PeerLinkEvent) {
        let (peer, up, mac) = match event {
            PeerLinkEvent::Up { peer, mac } => (peer, true, mac),
            PeerLinkEvent::Closed(peer) | PeerLinkEvent::Lost(peer) => (peer, false, None),
        };
        if let Some(handoff) = &mut self.handoff {
            // A live peer that holds the floating IP on our link may track
            // connections we do not: send their segments there. Only the
            // peer it points at can clear it.
            let change = match mac {
                Some(peer_mac) => Some(Some((peer, peer_mac))),
                None if handoff.peer.is_none_or(|(current, _)| current == peer) => Some(None),
                None => None,
            };
            if let Some(target) = change {
                handoff.peer = target;
                let value = target.map(|(_, peer_mac)| lb_common::maps::PeerHandoff {
                    peer_mac,
                    own_mac: handoff.own_mac,
                    ifindex: handoff.ifindex,
                    enabled: 1,
                });
                if let Err(e) = handoff.map.set(value) {
                    warn!(error = %e, "cannot update the peer handoff");
                }
            }
        }
        self.peer_link_seen |= up;
        if let Some(link) = self.peer_links.iter_mut().find(|l| l.peer == peer.to_string()) {
            link.up = up;
            if matches!(event, PeerLinkEvent::Closed(_)) {
                link.closes_total += 1;
            }
        }
        // Only a close by the peer's kernel says its process is gone; a lost
        // link is left to the advertisement timers.
        if matches!(event, PeerLinkEvent::Closed(_)) {
            self.step(Event::PeerGone { source: peer }, Instant::now()).await;
        } else {
            self.refresh_readiness(Instant::now()).await;
        }
    }

    fn on_report(&mut self, report: MoverReport) {
        let Some(status) = self.mover_status.iter_mut().find(|s| s.mover == report.mover) else {
            return;
        };
        status.last_action = report.action;
        status.actions_total += 1;
        status.at_unix_ms = unix_ms(SystemTime::now());
        match report.result {
            Ok(detail) => {
                status.ok = true;
                status.detail = detail;
            }
            Err(why) => {
                warn!(
                    mover = report.mover,
                    action = status.last_action,
                    error = why,
                    "floating IP mover failed"
                );
                status.ok = false;
                status.failures_total += 1;
                status.detail = why;
            }
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let transitions = self
            .machine
            .history()
            .map(|t| VrrpTransition {
                from: state_name(t.from).to_owned(),
                to: state_name(t.to).to_owned(),
                reason: t.reason.clone(),
                at_unix_ms: unix_ms(wall - now.saturating_duration_since(t.at)),
            })
            .collect();
        let status = VrrpStatus {
            state: state_name(self.machine.state()).to_owned(),
            vrid: self.config.vrid,
            version: match self.config.version {
                Version::V2 => 2,
                Version::V3 => 3,
            },
            interface: self.config.interface.clone(),
            source_address: self.config.source_address.to_string(),
            advert_interval_ms: u64::from(self.config.interval_cs) * 10,
            priority: self.machine.priority(),
            configured_priority: self.config.priority,
            current_master: self.machine.current_master().map(|a: Ipv4Addr| a.to_string()),
            pools_ready: self.machine.ready(),
            virtual_addresses: self
                .config
                .virtual_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            transitions_total: self.transitions_total,
            transitions,
            adverts_sent_total: self.adverts_sent,
            adverts_received_total: self.adverts_received,
            adverts_rejected: self
                .rejected
                .iter()
                .map(|(name, value)| CounterValue {
                    name: (*name).to_owned(),
                    value: *value,
                })
                .collect(),
            tracks: self.tracks.clone(),
            movers: self.mover_status.clone(),
            peer_links: self.peer_links.clone(),
        };
        self.status.send_if_modified(|old| {
            if *old == status {
                false
            } else {
                *old = status;
                true
            }
        });
    }
}
