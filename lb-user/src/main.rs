use std::process::ExitCode;

use clap::Parser;
use lb_user::{
    cli::{Cli, Command},
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
    let result = match cli.command {
        Command::Run {
            config,
            stats_interval,
        } => daemon::run(&config, &daemon::RunOptions { stats_interval }),
        Command::Check { config } => Config::load(&config).map_err(Into::into).map(|c| {
            println!(
                "{}: ok ({} services, {} backends)",
                config.display(),
                c.services.len(),
                c.backend_count()
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xlb: {error:#}");
            ExitCode::FAILURE
        }
    }
}
