//! The guard: a child process that removes the floating addresses once the
//! daemon is gone, however it went. A daemon killed with SIGKILL while master
//! cannot release; the addresses would stay on its interface and this node
//! would go on answering ARP for them, taking traffic from the new master.
//!
//! The daemon holds the only write end of a pipe whose read end is the
//! guard's standard input. The kernel closes it when the daemon exits for any
//! reason, the guard reads end-of-file, removes the addresses and exits.
//! What it cannot cover: a SIGKILL sent to the guard as well (`kill -9` of
//! the process group, or a service manager killing the whole cgroup).

use std::{
    io::{self, PipeWriter, Read},
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::{info, warn};

use super::local::{block_on, check_settings, remove_addresses, LocalError, LocalSettings};

/// The hidden subcommand that runs `run_guard`.
pub const SUBCOMMAND: &str = "guard";
const RUNNING_EXECUTABLE: &str = "/proc/self/exe";
/// How long dropping a `Guard` waits for the process to finish its removal
/// before killing it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(2);
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A running guard process. Dropping it closes the pipe, which makes the
/// guard remove the addresses (a no-op after the daemon's own release) and
/// exit.
pub struct Guard {
    child: Child,
    /// The guard's standard input; `None` once closed in `drop`.
    pipe: Option<PipeWriter>,
}

impl Guard {
    /// Runs this executable as `xlb guard --interface IF --address A.B.C.D/N ...`.
    /// It is started through `/proc/self/exe` rather than `current_exe()`'s
    /// path: after a package upgrade replaced the binary on disk, that path
    /// names the new one (or, with " (deleted)" appended, nothing), while
    /// `/proc/self/exe` is still the running daemon's own.
    pub fn spawn(settings: &LocalSettings) -> io::Result<Self> {
        Self::spawn_with(Path::new(RUNNING_EXECUTABLE), &[], settings)
    }

    /// Runs `program args_prefix... guard --interface IF --address ...`.
    pub fn spawn_with(program: &Path, args_prefix: &[&str], settings: &LocalSettings) -> io::Result<Self> {
        // std opens both ends close-on-exec: other children the daemon
        // starts (health-check commands) never hold the write end, so the
        // guard sees end-of-file as soon as the daemon is gone. The read end
        // becomes the guard's stdin, which exec keeps open.
        let (reader, writer) = io::pipe()?;
        let child = Command::new(program)
            .args(args_prefix)
            .args(guard_args(settings))
            .stdin(reader)
            .spawn()?;
        Ok(Self {
            child,
            pipe: Some(writer),
        })
    }

    /// The guard's process ID.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process until `deadline`; `None` if it still runs.
    fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(EXIT_POLL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let pid = self.child.id();
        match self.wait_until(Instant::now() + EXIT_TIMEOUT) {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => warn!(pid, %status, "the floating-address guard failed"),
            Ok(None) => {
                warn!(pid, timeout = ?EXIT_TIMEOUT, "the floating-address guard did not exit; killing it");
                if let Err(error) = self.child.kill().and_then(|()| self.child.wait()) {
                    warn!(pid, %error, "cannot kill the floating-address guard");
                }
            }
            Err(error) => warn!(pid, %error, "cannot wait for the floating-address guard"),
        }
    }
}

/// The guard's arguments after the program: `guard --interface IF --address A/N ...`.
#[must_use]
pub fn guard_args(settings: &LocalSettings) -> Vec<String> {
    let mut args = vec![
        SUBCOMMAND.to_owned(),
        "--interface".to_owned(),
        settings.interface.clone(),
    ];
    for (address, prefix) in &settings.addresses {
        args.push("--address".to_owned());
        args.push(format!("{address}/{prefix}"));
    }
    args
}

/// Parses a guard `--address` value, `A.B.C.D/N` (N at most 32).
pub fn parse_address(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected A.B.C.D/N"))?;
    let address = address
        .parse()
        .map_err(|e| format!("{text:?}: bad address: {e}"))?;
    let prefix = prefix
        .parse()
        .ok()
        .filter(|prefix| *prefix <= 32)
        .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to 32"))?;
    Ok((address, prefix))
}

/// The body of the hidden `xlb guard` subcommand: ignores the signals a
/// Ctrl-C or a service stop sends to the whole process group (the daemon
/// releases on those itself, and the guard must outlive it to cover a daemon
/// that then hangs and gets killed), waits for end-of-file on stdin, removes
/// the addresses and returns.
pub fn run_guard(interface: &str, addresses: &[(Ipv4Addr, u8)]) -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this
        // process has installed a handler for these signals.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error()).with_context(|| format!("cannot ignore signal {signal}"));
        }
    }
    run_guard_on(io::stdin().lock(), interface, addresses)
}

/// `run_guard` without the signal handling: waits for end-of-file on
/// `reader` (data is ignored), then removes the addresses.
pub fn run_guard_on(
    mut reader: impl Read,
    interface: &str,
    addresses: &[(Ipv4Addr, u8)],
) -> anyhow::Result<()> {
    check_settings(interface, addresses)?;
    info!(
        interface,
        ?addresses,
        "guarding the floating addresses until the daemon exits"
    );
    let mut buffer = [0u8; 64];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // Nothing more can be learnt from the pipe: remove the addresses
            // rather than leave them without a guard.
            Err(error) => {
                warn!(%error, "cannot read the guard pipe; removing the floating addresses");
                break;
            }
        }
    }
    match block_on(remove_addresses(interface, addresses))? {
        Ok(description) => info!("the daemon has gone: {description}"),
        // The addresses went with the interface.
        Err(LocalError::NoSuchInterface { .. }) => {
            info!(interface, "the daemon has gone, and so has the interface");
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    fn settings() -> LocalSettings {
        LocalSettings {
            interface: "eth0".to_owned(),
            addresses: vec![
                (Ipv4Addr::new(198, 51, 100, 100), 32),
                (Ipv4Addr::new(198, 51, 100, 101), 24),
            ],
            garp_count: 5,
            garp_interval: Duration::from_millis(100),
            garp_refresh: None,
        }
    }

    /// A path in the temporary directory that no other test uses.
    fn scratch_file(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("xlb-guard-test-{}-{name}", std::process::id()));
        let _ = fs::remove_file(&path);
        path
    }

    #[test]
    fn arguments_round_trip_through_the_parser() {
        let args = guard_args(&settings());
        assert_eq!(
            args,
            [
                "guard",
                "--interface",
                "eth0",
                "--address",
                "198.51.100.100/32",
                "--address",
                "198.51.100.101/24"
            ]
        );
        let parsed: Vec<_> = args
            .iter()
            .skip(4)
            .step_by(2)
            .map(|text| parse_address(text).unwrap())
            .collect();
        assert_eq!(parsed, settings().addresses);
        for bad in [
            "198.51.100.100",
            "198.51.100.100/33",
            "198.51.100/32",
            "x/32",
            "1.2.3.4/",
        ] {
            assert!(parse_address(bad).is_err(), "{bad} should not parse");
        }
    }

    /// A stand-in guard (a shell) that records its arguments once its stdin
    /// closes: the pipe reaches it, its write end is not inherited by a
    /// process the daemon starts later, and dropping the Guard waits for the
    /// stand-in to finish.
    #[test]
    fn dropping_the_guard_closes_its_stdin_even_while_another_child_runs() {
        let record = scratch_file("args");
        let script = format!("cat >/dev/null; echo \"$@\" > {}", record.display());
        let guard = Guard::spawn_with(Path::new("/bin/sh"), &["-c", &script, "sh"], &settings()).unwrap();
        // Started after the guard: had it inherited the write end, the
        // stand-in would never see end-of-file and drop would kill it.
        let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!record.exists(), "the stand-in finished before its stdin closed");
        drop(guard);
        let recorded = fs::read_to_string(&record);
        let _ = bystander.kill();
        let _ = bystander.wait();
        let _ = fs::remove_file(&record);
        assert_eq!(
            recorded.expect("the stand-in ran to the end").trim(),
            guard_args(&settings()).join(" ")
        );
    }

    #[test]
    fn a_guard_that_hangs_is_killed_on_drop() {
        let guard =
            Guard::spawn_with(Path::new("/bin/sh"), &["-c", "exec sleep 30", "sh"], &settings()).unwrap();
        let pid = libc::pid_t::try_from(guard.id()).unwrap();
        drop(guard);
        // SAFETY: signal 0 only checks that the process exists; drop has
        // reaped it, so the PID is free (or, rarely, reused by a stranger,
        // which would fail this test rather than harm anything).
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the hanging guard {pid} survived the drop");
    }

    #[test]
    fn run_guard_on_refuses_bad_settings_before_waiting() {
        assert!(run_guard_on(io::empty(), "", &[(Ipv4Addr::LOCALHOST, 32)]).is_err());
        assert!(run_guard_on(io::empty(), "lo", &[]).is_err());
    }

    #[test]
    fn an_interface_gone_with_the_daemon_leaves_nothing_to_remove() {
        let addresses = [(Ipv4Addr::new(198, 51, 100, 100), 32)];
        assert!(run_guard_on(io::empty(), "xlb-absent0", &addresses).is_ok());
    }
}
