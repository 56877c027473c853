//! HAProxy as the reference runs it (original-configs/haproxy.cfg), in a
//! namespace, for the end-to-end comparison and as half of the reference's
//! failover stack: killed when its handle drops.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;
use lb_tests::{
    netns::Netns,
    testbed::{API_PORT, FRONTEND_PORT, VIP, WEB_ADDRS},
};

use super::process::Process;

/// The reference configuration's error pages, as packaged by Debian.
const ERRORS: &str = "/etc/haproxy/errors";

/// The reference's two HTTP frontends and backends, on the VIP instead of
/// 0.0.0.0; without the stats and Prometheus frontends, and in the
/// foreground (run with `-db`).
#[must_use]
pub fn config() -> String {
    config_with_checks(" check")
}

/// [`config`] with `check` after the frontend port's servers (the
/// reference: " check", HAProxy's defaults: every 2 s, rise 2, fall 3).
#[must_use]
pub fn config_with_checks(check: &str) -> String {
    let servers = |port: u16, check: &str| {
        WEB_ADDRS
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("    server web0{} {addr}:{port}{check}\n", i + 1))
            .collect::<String>()
    };
    let errorfiles: String = [400, 403, 408, 500, 502, 503, 504]
        .iter()
        .map(|code| format!("    errorfile {code} {ERRORS}/{code}.http\n"))
        .collect();
    format!(
        "global\n    user haproxy\n    group haproxy\n\n\
         defaults\n    log global\n    mode http\n    option httplog\n\
         \x20   timeout connect 5000\n    timeout client 50000\n    timeout server 50000\n\
         \x20   retries 3\n{errorfiles}\n\
         frontend http-in1\n    bind {VIP}:{API_PORT}\n    default_backend webservers1\n\n\
         frontend http-in2\n    bind {VIP}:{FRONTEND_PORT}\n    default_backend webservers2\n\n\
         backend webservers1\n    balance roundrobin\n    option forwardfor\n{}\n\
         backend webservers2\n    balance roundrobin\n    option forwardfor\n{}",
        servers(API_PORT, ""),
        servers(FRONTEND_PORT, check),
    )
}

/// A running HAProxy with the reference configuration.
pub struct Haproxy {
    process: Process,
    log_path: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy in `ns` with its files (`NAME.cfg`, `NAME.log`) in
    /// `dir`. It binds the VIP: where the VIP is not (yet) on an interface,
    /// the namespace needs `net.ipv4.ip_nonlocal_bind=1`.
    pub fn start(ns: &Netns, dir: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_with(ns, dir, name, &config())
    }

    /// As [`Haproxy::start`], with the configuration `config`.
    pub fn start_with(ns: &Netns, dir: &Path, name: &str, config: &str) -> anyhow::Result<Self> {
        let config_path = dir.join(format!("{name}.cfg"));
        std::fs::write(&config_path, config).with_context(|| format!("write {}", config_path.display()))?;
        let log_path = dir.join(format!("{name}.log"));
        let log = File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = ns.command("haproxy");
        // -db: foreground, no daemon; threads: HAProxy's default (one per CPU).
        cmd.arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log);
        let process = Process::spawn_as_is(cmd, "haproxy")?;
        Ok(Self { process, log_path })
    }

    /// HAProxy's pid (`ip netns exec` execs it).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// What it wrote to stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
