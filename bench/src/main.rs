//! `xlb-bench`, run by `cargo xtask bench` once the toolchain is in place:
//! what the data plane costs per packet, what a client
//! sees end to end through xlb, HAProxy, nftables and no load balancer, how
//! much memory the daemon holds, how fast its health checks take a dead
//! backend out and a returning one back, at what CPU cost, and how long a
//! failover of the floating IP interrupts clients, against keepalived. A
//! measurement, not a test: nothing here passes or fails on the numbers.

mod e2e;
mod failover;
mod haproxy;
mod health;
mod micro;
mod process;
mod report;
mod wrk;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Parser;

/// Measure the data plane against the floor, HAProxy, nftables and no LB,
/// the health checks' detection times and cost, and failover against
/// keepalived. `cargo xtask bench` builds the daemon and runs this.
#[derive(Parser)]
#[command(name = "xlb-bench")]
struct Cli {
    /// The daemon binary to measure.
    #[arg(long)]
    xlb: std::path::PathBuf,
    /// Write the results into BENCHMARKS.md.
    #[arg(long, conflicts_with = "only")]
    write: bool,
    /// Run only this part (printed, not written). `soak` runs only this way.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// How long `--only soak` watches the pair, in seconds.
    #[arg(long, default_value_t = 600)]
    soak_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run(&cli.xlb, cli.write, cli.only, Duration::from_secs(cli.soak_secs))
}

/// Workspace root: BENCHMARKS.md and the git revision live there.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench sits in the workspace")
        .to_owned()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once Ctrl-C (or SIGTERM) has arrived, so that the bench unwinds
/// through its guards and removes its processes and namespaces.
fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Median and extremes of per-round values.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `values` must not be empty.
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }
}

/// The parts of the benchmark, for running one alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Per-packet cost (BPF_PROG_TEST_RUN).
    Micro,
    /// End to end through each load balancer, and memory.
    E2e,
    /// Health checks: detection times, CPU and memory while checking.
    Health,
    /// Failover of the floating IP: xlb pairs against keepalived + HAProxy.
    Failover,
    /// An xlb pair with every CPU busy, watched for spurious takeovers (long:
    /// only on its own, never part of the full run).
    Soak,
}

/// Runs the benchmark (`only`: one part, printed, never written); the soak
/// runs for `soak` when asked for.
fn run(binary: &Path, write: bool, only: Option<Part>, soak: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        // SAFETY: plain geteuid(2).
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespaces, XDP)"
    );
    anyhow::ensure!(
        !(write && only.is_some()),
        "--write needs every part: BENCHMARKS.md holds them all"
    );
    // The testbed starts the daemon from XLB_BIN.
    std::env::set_var("XLB_BIN", binary);
    // Ctrl-C also reaches wrk, HAProxy and xlb (same process group); we
    // stay to clean up.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let machine = report::Machine::detect().context("describe the machine")?;
    // The soak takes minutes of a busy machine: only when asked for by name.
    let wanted = |part: Part| only.map_or(part != Part::Soak, |o| o == part);
    let mut sections = Vec::new();

    if wanted(Part::Micro) {
        eprintln!(
            "xtask bench: per-packet cost, {} rounds of BPF_PROG_TEST_RUN",
            micro::ROUNDS
        );
        let micro = micro::measure().context("per-packet cost")?;
        let section = report::micro_section(&micro);
        println!("\n{section}");
        sections.push(section);
    }

    if wanted(Part::E2e) {
        let e2e = e2e::measure().context("end to end")?;
        for section in [
            report::e2e_section(&e2e, &machine),
            report::memory_section(&e2e, &machine),
        ] {
            println!("{section}");
            sections.push(section);
        }
    }

    if wanted(Part::Health) {
        let health = health::measure().context("health checks")?;
        let section = report::health_section(&health);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Failover) {
        eprintln!(
            "xtask bench: failover, {} trials per fault and system",
            failover::TRIALS
        );
        let results = failover::measure().context("failover")?;
        let section = failover::section(&results);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Soak) {
        let soak = failover::soak(soak).context("soak")?;
        println!("{}", failover::soak_section(&soak));
    }

    if write {
        let path = crate::root().join("BENCHMARKS.md");
        std::fs::write(&path, report::document(&machine, &sections))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("xtask bench: wrote {}", path.display());
    }
    Ok(())
}
