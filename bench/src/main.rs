//! `xlb-bench`, run by `cargo xtask bench` once the toolchain is in place:
//! what the data plane costs per packet, whether it survives random frames,
//! what a client sees end to end through xlb, HAProxy, nftables and no load
//! balancer (keep-alive, then one request per connection for minutes), how
//! each holds up under a SYN flood, how much memory the daemon holds, how
//! fast its health checks take a dead backend out and a returning one back,
//! at what CPU cost, and how long a failover of the floating IP interrupts
//! clients, against keepalived. A measurement, not a test: nothing here
//! passes or fails on the numbers.

mod chaos;
mod document;
mod e2e;
mod failover;
mod fuzz;
mod haproxy;
mod health;
mod micro;
mod newconn;
mod process;
mod report;
mod status;
mod synflood;
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
    /// Write the results into BENCHMARKS.md: every section of a full run
    /// (sections it does not measure, such as the soak's, stay as recorded),
    /// or with --only, that part's sections alone, in place, the rest of the
    /// file unchanged.
    #[arg(long)]
    write: bool,
    /// Run only this part. `soak` and `chaos` run only this way.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// How long `--only soak` watches the pair, in seconds.
    #[arg(long, default_value_t = 600)]
    soak_secs: u64,
    /// How long `--only chaos` runs, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(60..))]
    chaos_secs: u64,
    /// How long `newconn` runs wrk through each configuration, in seconds:
    /// past every hold time (the backends' TIME_WAIT is 60 s) at the default.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    newconn_secs: u64,
    /// How long `synflood` floods each configuration, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    synflood_secs: u64,
    /// How long `synflood` keeps probing after the flood, in seconds: past
    /// the half-open timeouts at the default.
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u64).range(0..=600))]
    synflood_after_secs: u64,
    /// The rate of `synflood`'s second, paced flood, in SYNs per second.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    synflood_paced_rate: u64,
    /// How many frames `fuzz` runs through the data plane.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    fuzz_frames: u64,
    /// The seed of `fuzz`'s frames.
    #[arg(long, default_value_t = fuzz::SEED)]
    fuzz_seed: u64,
}

/// The settings of the parts that have them.
pub struct Settings {
    pub soak: Duration,
    pub chaos: Duration,
    pub newconn: Duration,
    pub synflood: synflood::Timing,
    pub fuzz_frames: u64,
    pub fuzz_seed: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings {
        soak: Duration::from_secs(cli.soak_secs),
        chaos: Duration::from_secs(cli.chaos_secs),
        newconn: Duration::from_secs(cli.newconn_secs),
        synflood: synflood::Timing {
            flood: Duration::from_secs(cli.synflood_secs),
            after: Duration::from_secs(cli.synflood_after_secs),
            paced: cli.synflood_paced_rate,
        },
        fuzz_frames: cli.fuzz_frames,
        fuzz_seed: cli.fuzz_seed,
    };
    run(&cli.xlb, cli.write, cli.only, &settings)
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
    /// Random frames through the data plane (lb_tests::fuzz), outputs checked.
    Fuzz,
    /// End to end through each load balancer, and memory.
    E2e,
    /// One request per connection for minutes (past every hold time), through
    /// each load balancer.
    Newconn,
    /// A SYN flood of spoofed sources while a prober opens real connections,
    /// through each load balancer.
    Synflood,
    /// Health checks: detection times, CPU and memory while checking.
    Health,
    /// Failover of the floating IP: xlb pairs against keepalived + HAProxy.
    Failover,
    /// `xlb status` and a metrics scrape with an empty table and a million entries.
    Status,
    /// An xlb pair with every CPU busy, watched for spurious takeovers (long:
    /// only on its own, never part of the full run).
    Soak,
    /// An xlb pair under client load through a schedule of faults, reloads
    /// and scrapes (long: only on its own, never part of the full run).
    Chaos,
}

impl Part {
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
}

/// Runs the benchmark (`only`: one part); writes BENCHMARKS.md when asked.
fn run(binary: &Path, write: bool, only: Option<Part>, settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        // SAFETY: plain geteuid(2).
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespaces, XDP)"
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
    let wanted = |part: Part| only.map_or(!matches!(part, Part::Soak | Part::Chaos), |o| o == part);
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

    if wanted(Part::Fuzz) {
        eprintln!(
            "xtask bench: fuzz, {} frames (seed {:#x})",
            report::grouped(settings.fuzz_frames),
            settings.fuzz_seed
        );
        let results = fuzz::measure(settings.fuzz_frames, settings.fuzz_seed).context("fuzz")?;
        let section = fuzz::section(&results);
        println!("{section}");
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

    if wanted(Part::Newconn) {
        let results = newconn::measure(settings.newconn).context("new connections")?;
        let section = newconn::section(&results);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Synflood) {
        let results = synflood::measure(settings.synflood).context("SYN flood")?;
        let section = synflood::section(&results);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Health) {
        let health = health::measure().context("health checks")?;
        let section = report::health_section(&health);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Status) {
        eprintln!(
            "xtask bench: status and metrics with an empty table and {} entries",
            status::ENTRIES
        );
        let results = status::measure().context("status at table sizes")?;
        let section = status::section(&results);
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
        let soak = failover::soak(settings.soak).context("soak")?;
        let section = failover::soak_section(&soak);
        println!("{section}");
        sections.push(section);
    }

    if wanted(Part::Chaos) {
        eprintln!("xtask bench: chaos soak for {} s", settings.chaos.as_secs());
        let chaos = chaos::measure(settings.chaos).context("chaos soak")?;
        let section = chaos::section(&chaos);
        println!("{section}");
        sections.push(section);
    }

    if write {
        let path = crate::root().join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let old = document::Document::parse(&old);
        let new = match only {
            // A full run: the document anew, with what it did not measure
            // kept as recorded.
            None => {
                let mut new = document::Document::parse(&report::document(&machine, &sections));
                new.keep_missing_from(&old);
                new
            }
            // One part: its sections in place, each saying when it was
            // measured; every other byte of the file as it was.
            Some(part) => {
                let mut new = old;
                let preface = report::alone_preface(&machine, &part.name(), binary);
                for section in &sections {
                    new.put(&format!("{preface}\n\n{section}"))?;
                }
                new
            }
        };
        std::fs::write(&path, new.render()).with_context(|| format!("write {}", path.display()))?;
        eprintln!("xtask bench: wrote {}", path.display());
    }
    Ok(())
}
