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

/// CPU time a process has used, by two clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// utime + stime from /proc/PID/stat, in clock ticks: every thread the
    /// process has had, at the tick's resolution.
    pub ticks: u64,
    /// The scheduler's on-CPU time, in ns, summed over
    /// /proc/PID/task/*/schedstat: exact, but only for the threads alive
    /// when read.
    pub sched_ns: u64,
}

impl Cpu {
    /// The usage between `earlier` and this reading.
    #[must_use]
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            sched_ns: self.sched_ns.saturating_sub(earlier.sched_ns),
        }
    }

    /// `ticks` in seconds.
    #[must_use]
    pub fn ticks_seconds(&self) -> f64 {
        // SAFETY: plain sysconf(3).
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = if per_second > 0 { per_second as f64 } else { 100.0 };
        self.ticks as f64 / per_second
    }
}

/// Reads the CPU time of `pid`, checking that it is `program`.
pub fn cpu_of(pid: u32, program: &str) -> anyhow::Result<Cpu> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .with_context(|| format!("process {pid} ({program}) is gone"))?;
    if comm.trim() != program {
        bail!("process {pid} is {:?}, not {program}", comm.trim());
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let ticks = stat_cpu_ticks(&stat).with_context(|| format!("parse /proc/{pid}/stat"))?;
    let mut sched_ns = 0;
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("list /proc/{pid}/task"))?;
    for task in tasks {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        sched_ns += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("parse {}", path.display()))?;
    }
    Ok(Cpu { ticks, sched_ns })
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // the fields after the last ')' start at field 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    field(14)?.checked_add(field(15)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_gives_utime_plus_stime() {
        let line = "1234 (x l) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 99 1000 200";
        assert_eq!(stat_cpu_ticks(line), Some(12));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_is_readable() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let cpu = cpu_of(std::process::id(), me.trim()).unwrap();
        assert!(cpu.sched_ns > 0);
    }
}
