//! `cargo xtask`: set up the toolchain, build, run the testbed, test, bench.

mod bench;
mod run;
mod setup;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (Debian packages, bpf-linker).
    Setup,
    /// Build the daemon (with its embedded XDP program), release mode.
    Build,
    /// Start the local testbed with the load balancer; Ctrl-C tears it down.
    Run,
    /// Run every test: unit tests, then the root-only namespace tests.
    Test,
    /// Measure the data plane against the floor, HAProxy, nftables and no LB,
    /// the health checks' detection times and cost, and failover against
    /// keepalived.
    Bench {
        /// Write the results into BENCHMARKS.md.
        #[arg(long, conflicts_with = "only")]
        write: bool,
        /// Run only this part (printed, not written). `soak` runs only this way.
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
        /// How long `--only soak` watches the pair, in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::ensure_all(),
        Command::Build => build().map(drop),
        Command::Run => {
            setup::ensure_all()?;
            let binary = build()?;
            run::testbed(&binary)
        }
        Command::Test => {
            setup::ensure_all()?;
            let binary = build()?;
            test(&binary)
        }
        Command::Bench {
            write,
            only,
            soak_secs,
        } => {
            setup::ensure_all()?;
            let binary = build()?;
            bench::run(&binary, write, only, std::time::Duration::from_secs(soak_secs))
        }
    }
}

/// Workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cargo {}", args.join(" ")))?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

fn build() -> anyhow::Result<std::path::PathBuf> {
    cargo(&["build", "--release", "-p", "lb-user"])?;
    Ok(root().join("target/release/xlb"))
}

fn test(binary: &std::path::Path) -> anyhow::Result<()> {
    // Host-only tests first: fast, and they need no privileges.
    cargo(&[
        "test",
        "--release",
        "-p",
        "lb-common",
        "-p",
        "lb-user",
        "-p",
        "lb-tests",
        "--lib",
    ])?;
    cargo(&["test", "--release", "-p", "xtask"])?;
    anyhow::ensure!(
        // SAFETY: plain getuid(2).
        unsafe { libc::geteuid() } == 0,
        "the integration tests need root (network namespaces, XDP)"
    );
    // Kernel tests one at a time: each builds namespaces and runs a daemon,
    // and the round-robin and timing assertions want a quiet machine.
    std::env::set_var("XLB_BIN", binary);
    cargo(&[
        "test",
        "--release",
        "-p",
        "lb-tests",
        "--tests",
        "--",
        "--test-threads=1",
    ])
}
