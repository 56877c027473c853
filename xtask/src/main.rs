//! `cargo xtask`: set up the machine, build, run the testbed, test, bench.
//!
//! This crate must compile on a machine that has nothing but rustup's stable
//! toolchain, because it is what installs the rest: it depends on light
//! crates only, never on the daemon or the testbed (whose build needs the BPF
//! toolchain). The testbed and the benchmark are binaries of their own crates
//! (`lb-tests`, `lb-bench`), which it builds and runs once setup is done;
//! `tests/bootstrap.rs` keeps it that way.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicI32, Ordering},
    time::Instant,
};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, bpf-linker),
    /// saying what and why; does nothing on a machine that has it all.
    Setup,
    /// Set up, then build the daemon (with its embedded XDP program), release
    /// mode: target/release/xlb.
    Build,
    /// Set up, build, and start two load balancers on a testbed of network
    /// namespaces; Ctrl-C tears it down.
    Run,
    /// Set up, build, and run every test: unit tests (with overflow checks),
    /// then the root-only namespace tests.
    Test,
    /// Set up, build, and measure the data plane against the floor, HAProxy,
    /// nftables and no LB, the health checks' detection times and cost, and
    /// failover against keepalived.
    Bench {
        /// Write the results into BENCHMARKS.md: every section of a full run,
        /// or with --only, that part's sections alone, the rest unchanged.
        #[arg(long)]
        write: bool,
        /// Run only this part. `soak` and `chaos` run only this way.
        #[arg(long, value_enum)]
        only: Option<BenchPart>,
        /// How long `--only soak` watches the pair, in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
        /// How long `--only chaos` runs, in seconds.
        #[arg(long, default_value_t = 600)]
        chaos_secs: u64,
        /// How long `newconn` runs wrk through each configuration, in seconds.
        #[arg(long, default_value_t = 300)]
        newconn_secs: u64,
        /// How long `synflood` floods each configuration, in seconds.
        #[arg(long, default_value_t = 10)]
        synflood_secs: u64,
        /// How long `synflood` keeps probing after the flood, in seconds.
        #[arg(long, default_value_t = 70)]
        synflood_after_secs: u64,
        /// How many frames `fuzz` runs through the data plane.
        #[arg(long, default_value_t = 10_000_000)]
        fuzz_frames: u64,
        /// The seed of `fuzz`'s frames (the bench's fixed one if not given).
        #[arg(long)]
        fuzz_seed: Option<u64>,
    },
}

/// The parts of `xlb-bench` (its `--only`), repeated here so that `--help`
/// lists them without building the bench.
#[derive(Clone, Copy, ValueEnum)]
enum BenchPart {
    /// Per-packet cost (BPF_PROG_TEST_RUN).
    Micro,
    /// Random frames through the data plane (lb_tests::fuzz), outputs checked.
    Fuzz,
    /// End to end through each load balancer, and memory.
    E2e,
    /// One request per connection for minutes, through each load balancer.
    Newconn,
    /// A SYN flood of spoofed sources while a prober opens real connections.
    Synflood,
    /// Health checks: detection times, CPU and memory while checking.
    Health,
    /// Failover of the floating IP: xlb pairs against keepalived + HAProxy.
    Failover,
    /// `xlb status` and a metrics scrape with an empty table and a million entries.
    Status,
    /// An xlb pair with every CPU busy, watched for spurious takeovers.
    Soak,
    /// An xlb pair under client load through faults, reloads and scrapes.
    Chaos,
}

fn main() -> std::process::ExitCode {
    match xtask(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, which name the fix; a backtrace of
            // xtask itself would only bury them.
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn xtask(cli: Cli) -> anyhow::Result<()> {
    // We wait for the program we started rather than die first, and pass
    // SIGINT and SIGTERM on to it: the testbed and the bench catch them and
    // clean up. A Ctrl-C, which reaches the whole process group, so arrives
    // twice: harmless, their handlers only set a flag. A handler (unlike
    // SIG_IGN) is not inherited by the programs we start.
    // SAFETY: the handler only reads an atomic and calls kill(2), both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, forward_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, forward_signal as *const () as libc::sighandler_t);
    }
    let started = Instant::now();
    let needs_root = !matches!(cli.command, Cmd::Setup | Cmd::Build);
    setup::ensure_all(setup::Purpose { needs_root })?;
    let result = match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build => build().map(drop),
        Cmd::Run => build().and_then(|xlb| run_testbed(&xlb)),
        Cmd::Test => build().and_then(|xlb| test(&xlb)),
        Cmd::Bench {
            write,
            only,
            soak_secs,
            chaos_secs,
            newconn_secs,
            synflood_secs,
            synflood_after_secs,
            fuzz_frames,
            fuzz_seed,
        } => build().and_then(|xlb| {
            let mut extra = vec![
                format!("--soak-secs={soak_secs}"),
                format!("--chaos-secs={chaos_secs}"),
                format!("--newconn-secs={newconn_secs}"),
                format!("--synflood-secs={synflood_secs}"),
                format!("--synflood-after-secs={synflood_after_secs}"),
                format!("--fuzz-frames={fuzz_frames}"),
            ];
            extra.extend(fuzz_seed.map(|seed| format!("--fuzz-seed={seed}")));
            bench(&xlb, write, only, &extra)
        }),
    };
    if result.is_ok() && !matches!(cli.command, Cmd::Run) {
        step(&format!("done in {}", setup::elapsed(started)));
    }
    result
}

/// The program we are waiting for, 0 when none.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child, signal) };
    }
}

/// Workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

/// One line saying what happens next, so that no wait is silent.
fn step(what: &str) {
    eprintln!("xtask: {what}");
}

fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    // `cargo run` gave us xtask's package variables. Build scripts watch
    // some of them (ring: CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...) and cargo
    // compares its own environment, so passing them on would rebuild ring,
    // rustls and the daemon whenever a plain `cargo build` came between.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_set_by_cargo_run(&key) {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// The variables `cargo run` sets for the program it runs, other than
/// `CARGO` itself.
fn is_set_by_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(
            key,
            "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// Runs cargo with its own progress output on the terminal.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(cargo_command().args(args))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    let status = status.with_context(|| format!("wait for {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

fn build() -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    step(
        "building the daemon and its XDP program (release; the first build compiles about 250 \
         crates, a few minutes on 2 cores, and `lb-user(build)` is the XDP program)",
    );
    cargo(&["build", "--release", "-p", "lb-user", "--bin", "xlb"])?;
    step(&format!(
        "built target/release/xlb in {}",
        setup::elapsed(started)
    ));
    Ok(root().join("target/release/xlb"))
}

fn run_testbed(xlb: &Path) -> anyhow::Result<()> {
    step("starting the testbed (cargo run -p lb-tests --bin xlb-testbed)");
    run(cargo_command()
        .args([
            "run",
            "--release",
            "-p",
            "lb-tests",
            "--bin",
            "xlb-testbed",
            "--",
            "--xlb",
        ])
        .arg(xlb))
}

/// `extra`: the parts' settings, as `xlb-bench` flags.
fn bench(xlb: &Path, write: bool, only: Option<BenchPart>, extra: &[String]) -> anyhow::Result<()> {
    step("building and starting the benchmark (cargo run -p lb-bench)");
    let mut cmd = cargo_command();
    cmd.args(["run", "--release", "-p", "lb-bench", "--", "--xlb"])
        .arg(xlb)
        .args(extra);
    if write {
        cmd.arg("--write");
    }
    if let Some(part) = only {
        let name = part.to_possible_value().expect("no variant is skipped");
        cmd.args(["--only", name.get_name()]);
    }
    run(&mut cmd)
}

fn test(xlb: &Path) -> anyhow::Result<()> {
    // Host-only tests first: fast, and they need no privileges. The test
    // profile (debug) keeps integer overflow checks on.
    let started = Instant::now();
    step("unit tests (debug build: overflow checks on; the first run compiles the crates once more)");
    cargo(&[
        "test",
        "-p",
        "xtask",
        "-p",
        "lb-common",
        "-p",
        "lb-user",
        "-p",
        "lb-bench",
        "--tests",
    ])?;
    cargo(&["test", "-p", "lb-tests", "--lib", "--bins"])?;
    step(&format!("unit tests passed in {}", setup::elapsed(started)));
    // Kernel tests one at a time: each builds namespaces and runs a daemon,
    // and the round-robin and timing assertions want a quiet machine.
    step("namespace and XDP tests, one at a time (root)");
    run(cargo_command()
        .args([
            "test",
            "--release",
            "-p",
            "lb-tests",
            "--tests",
            "--",
            "--test-threads=1",
        ])
        .env("XLB_BIN", xlb))
}
