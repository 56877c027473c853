//! `xlb run`: validate, prepare the host, load and attach, then serve:
//! health checks, the admin API, metrics, reloads on SIGHUP, until SIGINT or
//! SIGTERM, which detach.

use std::{path::Path, time::Duration};

use anyhow::Context;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{info, warn};

use crate::{
    admin::AdminServer,
    config::Config,
    control::{ControlHandle, Envelope},
    controller::{Controller, RATE_INTERVAL},
    dataplane::Dataplane,
    netdev, vrrp,
};

/// How often the interfaces' MAC addresses are read again besides on the
/// kernel's link notifications (which say at once when one changes): a
/// fallback, for a missed notification or a daemon without them.
const INTERFACE_MAC_REFRESH: Duration = Duration::from_secs(10);

pub struct RunOptions {
    /// Log the counters this often (for the testbed); `None` keeps quiet.
    pub stats_interval: Option<Duration>,
    /// A test hook: SIGUSR1 blocks the main loop this long, to show that the
    /// election does not depend on it.
    pub stall_on_sigusr1: Option<Duration>,
}

/// Everything that can be checked before touching the kernel.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    for interface in &config.dataplane.interfaces {
        netdev::ifindex(interface)?;
    }
    if let Some(vrrp) = &config.vrrp {
        netdev::ifindex(&vrrp.interface)?;
        if let Some(local) = &vrrp.local {
            netdev::ifindex(&local.interface)?;
        }
    }
    // With manage_sysctls the kernel's range becomes local_ports, which the
    // config already keeps apart from snat_ports.
    if !config.dataplane.manage_sysctls {
        let local = netdev::local_port_range()?;
        netdev::check_snat_ports(&config.dataplane.snat_ports, &local)?;
        if netdev::covers_client_ports(&local) {
            warn!(
                local_ports = format!("{}-{}", local.start(), local.end()),
                "net.ipv4.ip_local_port_range covers Linux clients' ports: they cannot be kept and \
                 every connection takes a snat_ports port (see \"SNAT capacity\" in the README)"
            );
        }
    }
    Ok(())
}

pub fn run(config_path: &Path, options: &RunOptions) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    preflight(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(config_path, config, options))
}

/// Resolves when the daemon shuts down.
async fn shutdown_signal(mut receiver: watch::Receiver<bool>) {
    while !*receiver.borrow() {
        if receiver.changed().await.is_err() {
            return;
        }
    }
}

async fn serve(config_path: &Path, config: Config, options: &RunOptions) -> anyhow::Result<()> {
    // Register before attaching, so that a signal arriving during start-up
    // still leads to a clean detach.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut stall_hook = match options.stall_on_sigusr1 {
        Some(stall) => Some((
            signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?,
            stall,
        )),
        None => None,
    };

    if config.dataplane.manage_sysctls {
        netdev::set_local_port_range(&config.dataplane.local_ports)?;
        for interface in &config.dataplane.interfaces {
            netdev::prepare_interface_sysctls(interface)?;
        }
    }
    // Load writes the interfaces' MAC addresses; the controller marks the
    // settings ready; then the program is attached.
    let dataplane = Dataplane::load(&config.dataplane)?;
    let (check_events, mut check_results) = mpsc::channel(256);
    let mut controller = Controller::new(config_path.to_owned(), config.clone(), dataplane, check_events)?;
    for interface in &config.dataplane.interfaces {
        // On error the controller is dropped, detaching what was attached.
        controller
            .dataplane_mut()
            .attach(interface, config.dataplane.xdp_mode)?;
    }
    controller.note_attached();
    // Dead entries leave the table in the background (stopped on return).
    let _sweeper = controller.dataplane().start_sweeper()?;
    let (requests_tx, mut requests) = mpsc::channel::<Envelope>(64);
    let control = ControlHandle::new(requests_tx);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let servers = spawn_servers(&config, &control, &shutdown_rx).await?;
    // The data plane and the servers are up before this node can win an
    // election (a failed start must not leave it holding the IP).
    // The kernel's link changes update the data plane's interface MACs.
    let links = match netdev::spawn_link_monitor() {
        Ok((links, _task)) => Some(links),
        Err(e) => {
            warn!(error = %e, "no link notifications: the interface MACs poll");
            None
        }
    };
    let vrrp = match &config.vrrp {
        Some(vrrp_config) => {
            let handoff = controller.dataplane_mut().take_peer_handoff()?;
            let handle = vrrp::driver::start(
                vrrp_config.clone(),
                controller.node_health(),
                controller.pool_checks(),
                Some(handoff),
            )
            .await?;
            controller.set_vrrp_status(handle.status.clone());
            Some(handle)
        }
        None => None,
    };

    info!(
        services = config.services.len(),
        backends = config.backend_count(),
        interfaces = ?config.dataplane.interfaces,
        "load balancer running"
    );

    let mut rates = tokio::time::interval(RATE_INTERVAL);
    let mut interface_macs = tokio::time::interval(INTERFACE_MAC_REFRESH);
    let mut links = links;
    let mut stats_ticker = options.stats_interval.map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => { info!("SIGHUP: reloading the config"); let _ = controller.reload(); }
            Some(event) = check_results.recv() => controller.on_check(event),
            Some(envelope) = requests.recv() => {
                let answer = controller.handle(envelope.request);
                let _ = envelope.reply.send(answer);
            }
            _ = rates.tick() => controller.sample_rates(),
            () = link_changed(&mut links) => refresh_interface_macs(&mut controller),
            _ = interface_macs.tick() => refresh_interface_macs(&mut controller),
            () = async { stats_ticker.as_mut().expect("guarded").tick().await; }, if stats_ticker.is_some() => {
                log_counters(&controller);
            }
            stall = async {
                let (signal, stall) = stall_hook.as_mut().expect("guarded");
                signal.recv().await;
                *stall
            }, if stall_hook.is_some() => {
                warn!(?stall, "test hook: blocking the main loop");
                std::thread::sleep(stall);
                warn!("test hook: main loop unblocked");
            }
        }
    }
    if let Some(mut vrrp) = vrrp {
        // Hand the floating IP over (priority 0) while still forwarding.
        vrrp.shutdown(Duration::from_secs(10)).await;
        let drain = config.vrrp.as_ref().map_or(Duration::ZERO, |v| v.stop_drain);
        drain_connections(&controller, drain).await;
        drop(vrrp);
    }
    let _ = shutdown_tx.send(true);
    controller.stop_checks();
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(2), server).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "a server ended with an error"),
            Ok(_) => {}
            Err(_) => warn!("a server did not stop within 2 s"),
        }
    }
    drop(controller);
    Ok(())
}

/// After the floating IP has moved, keeps forwarding this node's
/// established connections (the new master hands their packets here) until
/// none is left or `limit` has passed. The sweeper counts them: a pass is
/// asked for at once, then each pass that ended after the drain began says
/// how many are left. No walk of the table on this loop.
async fn drain_connections(controller: &Controller, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let dataplane = controller.dataplane();
    let started = std::time::Instant::now();
    dataplane.sweeper().sweep_now();
    // The open connections as of a pass that ended after the drain began.
    let counted_since_start = || {
        dataplane
            .census()
            .filter(|(age, _)| *age < started.elapsed())
            .map(|(_, census)| census.active_by_backend.values().sum::<u64>())
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut announced = false;
    while tokio::time::Instant::now() < deadline {
        match counted_since_start() {
            Some(0) => {
                if announced {
                    info!("drained");
                }
                return;
            }
            Some(left) if !announced => {
                info!(connections = left, limit = ?limit, "draining established connections");
                announced = true;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = counted_since_start().map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    info!(connections = %left, "drain time over; the rest will be reset");
}

type Server = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Starts the admin API and the metrics endpoint.
/// Returns when the kernel announces a link change; never without the
/// notifications (or once they have stopped).
async fn link_changed(links: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = links {
        if receiver.changed().await.is_ok() {
            return;
        }
    }
    *links = None;
    std::future::pending().await
}

fn refresh_interface_macs(controller: &mut Controller) {
    if let Err(e) = controller.dataplane_mut().refresh_interface_macs() {
        warn!(error = %e, "cannot update the interfaces' MAC addresses in the data plane");
    }
}

async fn spawn_servers(
    config: &Config,
    control: &ControlHandle,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    let admin = AdminServer::bind_unix(&config.admin.socket).await?;
    let (c, s) = (control.clone(), shutdown_signal(shutdown.clone()));
    servers.push(tokio::spawn(async move {
        admin.serve(c, s).await;
        Ok(())
    }));
    if let (Some(addr), Some(token)) = (config.admin.listen, &config.admin.token) {
        let tcp = AdminServer::bind_tcp(addr, token).await?;
        let (c, s) = (control.clone(), shutdown_signal(shutdown.clone()));
        servers.push(tokio::spawn(async move {
            tcp.serve(c, s).await;
            Ok(())
        }));
    }
    if let Some(addr) = config.metrics.listen {
        // Bind here, so that a port in use fails the start, not a task.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        servers.push(tokio::spawn(crate::metrics::serve_listener(
            listener,
            control.clone(),
            shutdown_signal(shutdown.clone()),
        )));
    }
    Ok(servers)
}

fn log_counters(controller: &Controller) {
    let dataplane = controller.dataplane();
    match dataplane.counters() {
        Ok(counters) => {
            let line: Vec<String> = counters
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| format!("{}={n}", c.name()))
                .collect();
            let flows = dataplane.census().map_or(0, |(_, census)| census.entries);
            info!(conntrack_entries = flows, "counters: {}", line.join(" "));
        }
        Err(e) => warn!(error = %e, "cannot read counters"),
    }
}
