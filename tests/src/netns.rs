//! Network namespaces that delete themselves, and running code inside them.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};

use crate::run;

/// A named network namespace (`ip netns`), deleted on drop with everything
/// in it (its interfaces and their XDP programs go with it).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        // `ip netns` names become files; keep them short and plain.
        if name.len() > 48 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("bad namespace name {name:?}");
        }
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command in the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that will run in the namespace.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null());
        cmd
    }

    /// Writes a sysctl inside the namespace.
    /// A TcpExt counter of this namespace (/proc/net/netstat, read inside it).
    pub fn tcp_ext(&self, name: &str) -> u64 {
        let text = self.exec("cat", &["/proc/net/netstat"]).expect("netstat");
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            if !names.starts_with("TcpExt:") {
                continue;
            }
            let at = names
                .split_whitespace()
                .position(|n| n == name)
                .unwrap_or_else(|| panic!("no TcpExt counter {name} in {}", self.name()));
            return values.split_whitespace().nth(at).unwrap().parse().unwrap();
        }
        panic!("no TcpExt line in {}'s /proc/net/netstat", self.name());
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets created
    /// there stay in the namespace and may be used from any thread afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        match self.spawn(f)?.join() {
            Ok(result) => result.context("setns"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts `f` on a thread that has entered the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<std::io::Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete the namespace.
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates a veth pair: `a_name` in `a`, `b_name` in `b`, both up, with tx
/// checksum offload off (so local sockets emit complete checksums, as a real
/// wire carries) and GRO on (so frames redirected into the veth by XDP are
/// accepted by its peer). `b_bridge` enslaves `b_name` to that bridge first:
/// joining a bridge after GRO is set leaves the peer unable to take
/// redirected frames.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str, b_bridge: Option<&str>) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    if let Some(bridge) = b_bridge {
        b.ip(&["link", "set", b_name, "master", bridge])?;
    }
    for (ns, dev) in [(a, a_name), (b, b_name)] {
        ns.ip(&["link", "set", dev, "up"])?;
    }
    // The kernel only enables a veth's GRO receive path while it is up.
    for (ns, dev) in [(a, a_name), (b, b_name)] {
        ns.exec("ethtool", &["-K", dev, "tx", "off", "gro", "on"])?;
    }
    Ok(())
}
