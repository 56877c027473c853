//! A real keepalived (the Debian package, VRRP only, no IPVS) inside a
//! namespace, configured like the reference droplets, for interop tests and
//! for the failover benchmark's comparison. Its log is captured and its
//! state read from the "Entering ... STATE" lines; it never runs outside the
//! testbed's namespaces.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    netns::Netns,
    testbed::{NODE_PRIVATE, VIP, VRID},
};

/// The instance name every config uses (the reference's).
pub const INSTANCE: &str = "VI_1";

/// The states keepalived logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Backup,
    Master,
    Fault,
}

impl State {
    /// keepalived 2.2.7 logs "(VI_1) Entering MASTER STATE", and at start-up
    /// also "(VI_1) entering FAULT state": matched without regard to case.
    fn parse(line: &str) -> Option<Self> {
        let line = line.to_ascii_lowercase();
        let after = line
            .split(&format!("({}", INSTANCE.to_ascii_lowercase()))
            .nth(1)?;
        [
            ("entering master state", Self::Master),
            ("entering backup state", Self::Backup),
            ("entering fault state", Self::Fault),
        ]
        .into_iter()
        .find_map(|(needle, state)| after.contains(needle).then_some(state))
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }
}

/// A `vrrp_script` the instance tracks (keepalived's default weight 0: a
/// failure sends the instance to FAULT).
#[derive(Clone, Debug)]
pub struct TrackScript {
    pub name: String,
    pub script: String,
    pub interval_secs: u32,
}

/// One `vrrp_instance`, written as keepalived reads it.
#[derive(Clone, Debug)]
pub struct Config {
    pub interface: String,
    /// The initial state: the reference's primary says MASTER, its secondary BACKUP.
    pub initial_state: State,
    pub priority: u8,
    pub vrid: u8,
    /// 2 or 3 (`global_defs { vrrp_version 3 }`, needed below one second).
    pub version: u8,
    pub advert_interval: Duration,
    pub unicast_src_ip: Ipv4Addr,
    pub unicast_peers: Vec<Ipv4Addr>,
    /// auth_type PASS (version 2 only: keepalived ignores it in version 3).
    pub auth_pass: Option<String>,
    /// `ADDRESS/32 dev DEVICE` entries.
    pub virtual_addresses: Vec<(Ipv4Addr, String)>,
    pub track_scripts: Vec<TrackScript>,
    pub track_interfaces: Vec<String>,
    /// `vrrp_rt_priority`: the VRRP process at this SCHED_RR priority.
    pub realtime_priority: Option<u8>,
}

impl Config {
    /// Node `i` of a testbed pair, as in the reference: VRRP version 2 with
    /// one-second adverts over eth1 to the other node (unicast), VRID 50,
    /// the floating IP on eth0. Initially BACKUP, like the reference's
    /// secondary (its primary says MASTER: see [`Config::initial_state`]).
    #[must_use]
    pub fn node(i: usize, priority: u8) -> Self {
        Self {
            interface: "eth1".to_owned(),
            initial_state: State::Backup,
            priority,
            vrid: VRID,
            version: 2,
            advert_interval: Duration::from_secs(1),
            unicast_src_ip: NODE_PRIVATE[i],
            unicast_peers: vec![NODE_PRIVATE[1 - i]],
            auth_pass: None,
            virtual_addresses: vec![(VIP, "eth0".to_owned())],
            track_scripts: Vec::new(),
            track_interfaces: Vec::new(),
            realtime_priority: None,
        }
    }

    #[must_use]
    pub fn auth_pass(mut self, pass: &str) -> Self {
        self.auth_pass = Some(pass.to_owned());
        self
    }

    /// Another virtual router id than the testbed's.
    #[must_use]
    pub fn vrid(mut self, vrid: u8) -> Self {
        self.vrid = vrid;
        self
    }

    #[must_use]
    pub fn initial_state(mut self, state: State) -> Self {
        self.initial_state = state;
        self
    }

    /// VRRP version 3 with `interval` between adverts (multiples of 10 ms).
    #[must_use]
    pub fn realtime_priority(mut self, priority: u8) -> Self {
        self.realtime_priority = Some(priority);
        self
    }

    #[must_use]
    pub fn version3(mut self, interval: Duration) -> Self {
        self.version = 3;
        self.advert_interval = interval;
        self
    }

    #[must_use]
    pub fn track_script(mut self, name: &str, script: &str, interval_secs: u32) -> Self {
        self.track_scripts.push(TrackScript {
            name: name.to_owned(),
            script: script.to_owned(),
            interval_secs,
        });
        self
    }

    #[must_use]
    pub fn track_interface(mut self, interface: &str) -> Self {
        self.track_interfaces.push(interface.to_owned());
        self
    }

    /// The configuration file's text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut globals = Vec::new();
        if self.version == 3 {
            globals.push("vrrp_version 3".to_owned());
        }
        if let Some(priority) = self.realtime_priority {
            globals.push(format!("vrrp_rt_priority {priority}"));
        }
        if !globals.is_empty() {
            let body: String = globals.iter().map(|g| format!("    {g}\n")).collect();
            let _ = write!(text, "global_defs {{\n{body}}}\n\n");
        }
        for script in &self.track_scripts {
            let _ = write!(
                text,
                "vrrp_script {} {{\n    script \"{}\"\n    interval {}\n}}\n\n",
                script.name, script.script, script.interval_secs
            );
        }
        let block = |name: &str, lines: &[String]| -> String {
            if lines.is_empty() {
                return String::new();
            }
            let body: String = lines.iter().map(|l| format!("        {l}\n")).collect();
            format!("    {name} {{\n{body}    }}\n")
        };
        let peers: Vec<String> = self.unicast_peers.iter().map(ToString::to_string).collect();
        let addresses: Vec<String> = self
            .virtual_addresses
            .iter()
            .map(|(address, dev)| format!("{address}/32 dev {dev}"))
            .collect();
        let scripts: Vec<String> = self.track_scripts.iter().map(|s| s.name.clone()).collect();
        let auth = self.auth_pass.as_ref().map_or_else(String::new, |pass| {
            block(
                "authentication",
                &["auth_type PASS".to_owned(), format!("auth_pass {pass}")],
            )
        });
        // keepalived takes fractions of a second in version 3.
        let interval = self.advert_interval.as_secs_f64();
        let _ = write!(
            text,
            "vrrp_instance {INSTANCE} {{\n    interface {}\n    state {}\n    priority {}\n    \
             virtual_router_id {}\n    advert_int {interval}\n\n    unicast_src_ip {}\n{}{}{}{}{}}}\n",
            self.interface,
            self.initial_state.name(),
            self.priority,
            self.vrid,
            self.unicast_src_ip,
            block("unicast_peer", &peers),
            auth,
            block("virtual_ipaddress", &addresses),
            block("track_script", &scripts),
            block("track_interface", &self.track_interfaces),
        );
        text
    }
}

/// One logged state change, stamped when its line was read.
#[derive(Clone, Copy, Debug)]
pub struct Entered {
    pub state: State,
    pub at: Instant,
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    states: Vec<Entered>,
}

/// A running keepalived (its parent and its VRRP child, in a process group
/// of their own), killed with everything it forked on drop.
pub struct Keepalived {
    child: Child,
    name: String,
    vrrp_pid_file: PathBuf,
    log: Arc<Mutex<Log>>,
}

impl Keepalived {
    /// Writes `config` to `dir/NAME.conf` and starts keepalived in `ns`,
    /// with pid files of its own in `dir` (so that instances run side by
    /// side); returns once its VRRP child reports start-up complete.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &Config) -> anyhow::Result<Self> {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, config.render()).with_context(|| format!("write {}", conf.display()))?;
        let pid_file = dir.join(format!("{name}.pid"));
        let vrrp_pid_file = dir.join(format!("{name}-vrrp.pid"));
        for stale in [&pid_file, &vrrp_pid_file] {
            // keepalived refuses to start while its pid file names a live process.
            let _ = std::fs::remove_file(stale);
        }
        let mut cmd = ns.command("keepalived");
        // -n: stay in the foreground; -l -G: log to the console only; -D:
        // detailed; --vrrp: no checker (IPVS) process.
        cmd.args(["-n", "-l", "-G", "-D", "--vrrp", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(&pid_file)
            .arg("-r")
            .arg(&vrrp_pid_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: one signal reaches the parent, the VRRP
            // child and its scripts, and the terminal's Ctrl-C does not (the
            // owner cleans up).
            .process_group(0);
        let mut child = cmd.spawn().context("spawn keepalived (is it installed?)")?;
        let log = Arc::new(Mutex::new(Log::default()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if let Ok(mut log) = sink.lock() {
                        if let Some(state) = State::parse(&line) {
                            log.states.push(Entered { state, at });
                        }
                        log.lines.push(line);
                    }
                }
            });
        }
        let mut keepalived = Self {
            child,
            name: name.to_owned(),
            vrrp_pid_file,
            log,
        };
        keepalived
            .wait_for_line("Startup complete", Duration::from_secs(10))
            .with_context(|| format!("start keepalived {name}"))?;
        Ok(keepalived)
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_until(&format!("log {needle:?}"), timeout, |k| {
            k.log_lines().iter().any(|line| line.contains(needle))
        })
    }

    /// Waits until `condition` holds; fails naming `what`, with the log,
    /// after `timeout`, or as soon as keepalived has exited.
    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let mut exited = false;
        let waited = crate::wait::until(what, timeout, || {
            exited = self.exited();
            exited || condition(self)
        });
        if condition(self) {
            return Ok(());
        }
        bail!(
            "keepalived {}: {}; log:\n{}",
            self.name,
            match waited {
                Err(e) => e.to_string(),
                Ok(()) => format!("it exited before it would {what}"),
            },
            self.log_text()
        )
    }

    /// The state it last entered, if any yet.
    #[must_use]
    pub fn state(&self) -> Option<State> {
        self.entered().last().map(|e| e.state)
    }

    /// Every state change so far, oldest first.
    #[must_use]
    pub fn entered(&self) -> Vec<Entered> {
        self.log.lock().map(|l| l.states.clone()).unwrap_or_default()
    }

    /// Waits until the last state entered is `state`.
    pub fn wait_state(&mut self, state: State, timeout: Duration) -> anyhow::Result<()> {
        self.wait_until(&format!("enter {}", state.name()), timeout, |k| {
            k.state() == Some(state)
        })
    }

    #[must_use]
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.lines.clone()).unwrap_or_default()
    }

    #[must_use]
    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Whether the parent process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The parent's pid (`ip netns exec` execs keepalived, so it is our child).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 of every keepalived process of this instance at once, as a
    /// crash would: killing the parent alone is not one, since its VRRP
    /// child is told (PR_SET_PDEATHSIG) and leaves cleanly, sending
    /// priority 0. Returns once the parent is reaped.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.signal_all(libc::SIGKILL);
        self.child.wait().context("reap keepalived")?;
        Ok(())
    }

    /// SIGTERM, as `systemctl stop`: keepalived sends priority 0, removes
    /// its addresses and exits. Waits up to `timeout` for the exit.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let exited = crate::wait::until("exit after SIGTERM", timeout, || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        exited.with_context(|| format!("keepalived {}; log:\n{}", self.name, self.log_text()))
    }

    /// Sends `signal` to the process group and, in case a child left it,
    /// to the VRRP child named by its pid file.
    fn signal_all(&self, signal: i32) {
        let group = self.child.id() as i32;
        // SAFETY: plain kill(2) on our process group.
        unsafe { libc::kill(-group, signal) };
        let vrrp_child = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = vrrp_child.filter(|pid| *pid > 1) {
            // SAFETY: plain kill(2); the pid file is this instance's own.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_all(libc::SIGKILL);
            let _ = self.child.wait();
        } else {
            // The parent is gone; make sure nothing it forked stays.
            self.signal_all(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lines_of_2_2_7_parse() {
        let line = |text: &str| format!("Thu Nov 26 00:09:41 2026: {text}");
        assert_eq!(
            State::parse(&line("(VI_1) Entering MASTER STATE")),
            Some(State::Master)
        );
        assert_eq!(
            State::parse(&line("(VI_1) Entering BACKUP STATE")),
            Some(State::Backup)
        );
        assert_eq!(
            State::parse(&line("(VI_1) entering FAULT state")),
            Some(State::Fault)
        );
        assert_eq!(
            State::parse(&line("(VI_1): entering FAULT state (interface eth0 down)")),
            Some(State::Fault)
        );
        assert_eq!(State::parse(&line("(VI_1) Receive advertisement timeout")), None);
    }

    #[test]
    fn the_reference_instance_renders() {
        let text = Config::node(0, 255)
            .initial_state(State::Master)
            .auth_pass("secret")
            .track_script("check_haproxy", "pidof haproxy", 2)
            .render();
        assert_eq!(
            text,
            "vrrp_script check_haproxy {\n    script \"pidof haproxy\"\n    interval 2\n}\n\n\
             vrrp_instance VI_1 {\n    interface eth1\n    state MASTER\n    priority 255\n    \
             virtual_router_id 50\n    advert_int 1\n\n    unicast_src_ip 203.0.113.2\n    \
             unicast_peer {\n        203.0.113.3\n    }\n    authentication {\n        \
             auth_type PASS\n        auth_pass secret\n    }\n    virtual_ipaddress {\n        \
             198.51.100.100/32 dev eth0\n    }\n    track_script {\n        check_haproxy\n    }\n}\n"
        );
        let v3 = Config::node(1, 254).version3(Duration::from_millis(100)).render();
        assert!(v3.starts_with("global_defs {\n    vrrp_version 3\n}\n"));
        assert!(v3.contains("state BACKUP") && v3.contains("advert_int 0.1\n"));
    }
}
