//! `xlb run`: validate, prepare the host, load and attach, serve until a
//! signal, detach.

use std::{path::Path, time::Duration};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::{config::Config, dataplane::Dataplane, netdev};

pub struct RunOptions {
    /// Log the counters this often (for the testbed); `None` keeps quiet.
    pub stats_interval: Option<Duration>,
}

/// Everything that can be checked before touching the kernel.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    for interface in &config.dataplane.interfaces {
        netdev::ifindex(interface)?;
    }
    netdev::check_snat_ports(&config.dataplane.snat_ports, &netdev::local_port_range()?)?;
    Ok(())
}

pub fn run(config_path: &Path, options: &RunOptions) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    preflight(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(config, options))
}

async fn serve(config: Config, options: &RunOptions) -> anyhow::Result<()> {
    // Register before attaching, so that a signal arriving during start-up
    // still leads to a clean detach.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    if config.dataplane.manage_sysctls {
        for interface in &config.dataplane.interfaces {
            netdev::prepare_interface_sysctls(interface)?;
        }
    }
    let mut dataplane = Dataplane::load(config.dataplane.conntrack_entries)?;
    dataplane.configure(&config)?;
    for interface in &config.dataplane.interfaces {
        // On error `dataplane` is dropped, detaching what was attached.
        dataplane.attach(interface, config.dataplane.xdp_mode)?;
    }
    info!(
        services = config.services.len(),
        backends = config.backend_count(),
        interfaces = ?config.dataplane.interfaces,
        "load balancer running"
    );

    let mut ticker = options.stats_interval.map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            () = async { ticker.as_mut().expect("guarded").tick().await; }, if ticker.is_some() => {
                log_counters(&dataplane);
            }
        }
    }
    drop(dataplane);
    Ok(())
}

fn log_counters(dataplane: &Dataplane) {
    match dataplane.counters() {
        Ok(counters) => {
            let line: Vec<String> = counters
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| format!("{}={n}", c.name()))
                .collect();
            let flows = dataplane.conntrack_entries().unwrap_or(0);
            info!(conntrack_entries = flows, "counters: {}", line.join(" "));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read counters"),
    }
}
