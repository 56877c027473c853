//! The xlb daemon as a child process inside a namespace.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::netns::Netns;

/// The xlb binary: `$XLB_BIN`, else the workspace's release or debug build.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("XLB_BIN") {
        return Ok(path.into());
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let path = target.join(profile).join("xlb");
        if path.exists() {
            return Ok(path);
        }
    }
    bail!("xlb binary not found: build it (cargo build --release -p lb-user) or set XLB_BIN")
}

/// A running daemon. Its log lines are collected; it is killed on drop.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `xlb run` in `ns` and waits until it reports it is running.
    pub fn start(ns: &Netns, config: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = ns.command(binary()?.to_str().context("binary path")?);
        cmd.args(["run", "--config"]).arg(config).args(extra_args);
        cmd.env("XLB_LOG", "info").env("NO_COLOR", "1");
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn xlb")?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut daemon = Self { child, log, lines };
        daemon.wait_for_line("load balancer running", Duration::from_secs(30))?;
        Ok(daemon)
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_line_where(&format!("{needle:?}"), timeout, |line| line.contains(needle))
    }

    /// Waits for a log line that satisfies `matches`, described by `what`
    /// in the error if none comes within `timeout`.
    pub fn wait_for_line_where(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!(
                    "xlb did not log {what} within {timeout:?}; exit: {:?}; log:\n{}",
                    self.child.try_wait().ok().flatten(),
                    self.log_text()
                ),
            }
        }
    }

    /// The next log line, if one comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    #[must_use]
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        // `ip netns exec` execs the daemon, so the child is the daemon itself.
        // SAFETY: plain kill(2) on our child.
        if unsafe { libc::kill(self.child.id() as i32, signal) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    pub fn stop_with(mut self, signal: i32, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(signal)?;
        self.wait_exit(timeout)
            .with_context(|| format!("after signal {signal}"))
    }

    /// Waits for the process to exit on its own (e.g. at the end of a
    /// drain a signal began); returns its status. Its log stays readable.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let exit = crate::wait::until_some("xlb exits", timeout, || self.child.try_wait().transpose());
        let status = exit.map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log_text()))?;
        Ok(status?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
