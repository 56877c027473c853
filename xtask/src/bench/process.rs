//! Child processes the benchmark starts (wrk, HAProxy): killed when their
//! handle drops, so that an error or Ctrl-C never leaves one running.
//! Also the resident memory of a process, from /proc.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// A running child, killed (and reaped) on drop.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Spawns `cmd` with its stdout and stderr captured.
    pub fn spawn(mut cmd: Command, name: &str) -> anyhow::Result<Self> {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    /// Spawns `cmd` as it is set up (the caller chose where its output goes).
    pub fn spawn_as_is(mut cmd: Command, name: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit successfully and
    /// returns its stdout. Only for processes whose output fits in a pipe
    /// buffer (it is read after the exit).
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                // Drop kills it.
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let read = |pipe: Option<&mut dyn Read>| {
            let mut text = String::new();
            if let Some(pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        };
        let stdout = read(self.child.stdout.as_mut().map(|p| p as &mut dyn Read));
        let stderr = read(self.child.stderr.as_mut().map(|p| p as &mut dyn Read));
        if !status.success() {
            bail!("{} failed ({status}): {}", self.name, stderr.trim());
        }
        Ok(stdout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from /proc/PID/status.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most it has been resident.
    pub peak_kib: u64,
    pub threads: u64,
}

/// Reads the memory of `pid`, checking that it is the program we expect:
/// `ip netns exec` execs its command, so a child's pid is the program's.
pub fn memory_of(pid: u32, program: &str) -> anyhow::Result<Memory> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .with_context(|| format!("process {pid} ({program}) is gone"))?;
    if comm.trim() != program {
        bail!("process {pid} is {:?}, not {program}", comm.trim());
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM")?,
        threads: field("Threads")?,
    })
}
