use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lb_user::{
    admin_client::{self, Action},
    cli::{AdminArgs, Cli, Command},
    config::Config,
    daemon,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("XLB_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Drain and enable differ only in the state they ask for.
    let drain = matches!(cli.command, Command::Drain { .. });
    let result = match cli.command {
        Command::Run {
            config,
            stats_interval,
            stall_on_sigusr1,
        } => daemon::run(
            &config,
            &daemon::RunOptions {
                stats_interval,
                stall_on_sigusr1,
            },
        ),
        Command::Check { config } => Config::load(&config).map_err(Into::into).map(|c| {
            let vrrp = c.vrrp.as_ref().map_or(String::new(), |v| {
                format!(
                    ", VRRP vrid {} priority {} on {}",
                    v.vrid, v.priority, v.interface
                )
            });
            println!(
                "{}: ok ({} services, {} backends{vrrp})",
                config.display(),
                c.services.len(),
                c.backend_count()
            );
        }),
        Command::Status { json, admin } => client(&admin, &Action::Status { json }),
        Command::Drain {
            service,
            backend,
            admin,
        }
        | Command::Enable {
            service,
            backend,
            admin,
        } => client(
            &admin,
            &Action::SetDrained {
                service,
                backend,
                drained: drain,
            },
        ),
        Command::Reload { admin } => client(&admin, &Action::Reload),
        Command::Guard { interface, addresses } => {
            lb_user::failover::guard::run_guard(&interface, &addresses)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xlb: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an admin API command on a single-threaded runtime and prints its output.
fn client(admin: &AdminArgs, action: &Action) -> anyhow::Result<()> {
    let endpoint = admin.endpoint()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let output = runtime.block_on(admin_client::execute(endpoint, action))?;
    print!("{output}");
    Ok(())
}
