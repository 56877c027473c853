//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to the configured interfaces and balance until SIGINT/SIGTERM.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/xlb/xlb.toml")]
        config: PathBuf,
        /// Log the data-plane counters at this interval (e.g. "2s").
        #[arg(long, value_parser = parse_duration)]
        stats_interval: Option<Duration>,
    },
    /// Validate a configuration file and exit.
    Check {
        #[arg(short, long, default_value = "/etc/xlb/xlb.toml")]
        config: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 2s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}
