//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    admin_client::{ClientError, Endpoint},
    config::DEFAULT_ADMIN_SOCKET,
};

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
        /// For the tests: SIGUSR1 blocks the daemon's main loop this long
        /// (e.g. "2s"), a stand-in for anything that could hold it.
        #[arg(long, value_parser = parse_duration, hide = true)]
        stall_on_sigusr1: Option<Duration>,
    },
    /// Validate a configuration file and exit.
    Check {
        #[arg(short, long, default_value = "/etc/xlb/xlb.toml")]
        config: PathBuf,
    },
    /// Show the running daemon's services, backends and counters.
    Status {
        /// Print the full status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Take a backend out of rotation: no new connections, established ones continue.
    Drain {
        service: String,
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a drained backend back into rotation.
    Enable {
        service: String,
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the daemon re-read its config file (nothing changes if it is invalid).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Started by `xlb run`: removes the floating addresses when the daemon
    /// dies without releasing them (kill -9), so a dead node attracts nothing.
    #[command(hide = true)]
    Guard {
        #[arg(long)]
        interface: String,
        /// A.B.C.D/prefix, repeated.
        #[arg(long = "address", value_parser = crate::failover::guard::parse_address)]
        addresses: Vec<(std::net::Ipv4Addr, u8)>,
    },
}

/// How to reach the daemon's admin API.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The daemon's admin socket (root only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET, conflicts_with = "url")]
    pub socket: PathBuf,
    /// The daemon's TCP admin listener instead of the socket (admin.listen), e.g. http://10.0.0.5:9901.
    #[arg(long, value_name = "URL", requires = "token_file")]
    pub url: Option<String>,
    /// File holding the bearer token for --url (admin.token_file).
    #[arg(long, value_name = "FILE", requires = "url")]
    pub token_file: Option<PathBuf>,
}

impl AdminArgs {
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        match (&self.url, &self.token_file) {
            (Some(url), Some(token_file)) => Endpoint::tcp(url, token_file),
            // clap requires --url and --token-file together.
            _ => Ok(Endpoint::Unix(self.socket.clone())),
        }
    }
}

/// The config's durations (`500ms`, `2s`, `5m`, `1h`), for flags.
fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 2s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin_of(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        match Cli::try_parse_from(args)?.command {
            Command::Status { admin, .. }
            | Command::Drain { admin, .. }
            | Command::Enable { admin, .. }
            | Command::Reload { admin } => Ok(admin),
            other => panic!("not an admin command: {other:?}"),
        }
    }

    #[test]
    fn admin_commands_default_to_the_socket() {
        let admin = admin_of(&["xlb", "status"]).expect("parses");
        assert_eq!(admin.socket, PathBuf::from(DEFAULT_ADMIN_SOCKET));
        assert!(admin.url.is_none());
        let admin =
            admin_of(&["xlb", "drain", "frontend", "web1", "--socket", "/tmp/a.sock"]).expect("parses");
        assert_eq!(
            admin.endpoint().expect("endpoint"),
            Endpoint::Unix("/tmp/a.sock".into())
        );
        match Cli::try_parse_from(["xlb", "enable", "frontend", "web1"])
            .expect("parses")
            .command
        {
            Command::Enable { service, backend, .. } => {
                assert_eq!((service.as_str(), backend.as_str()), ("frontend", "web1"))
            }
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["xlb", "status", "--json"])
            .expect("parses")
            .command
        {
            Command::Status { json, .. } => assert!(json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn url_and_token_file_go_together_and_exclude_the_socket() {
        let admin = admin_of(&[
            "xlb",
            "reload",
            "--url",
            "http://10.0.0.5:9901",
            "--token-file",
            "/etc/xlb/token",
        ])
        .expect("parses");
        assert_eq!(admin.url.as_deref(), Some("http://10.0.0.5:9901"));
        assert!(admin_of(&["xlb", "reload", "--url", "http://10.0.0.5:9901"]).is_err());
        assert!(admin_of(&["xlb", "reload", "--token-file", "/etc/xlb/token"]).is_err());
        assert!(admin_of(&[
            "xlb",
            "reload",
            "--socket",
            "/tmp/a.sock",
            "--url",
            "http://10.0.0.5:9901",
            "--token-file",
            "/t"
        ])
        .is_err());
        assert!(
            admin_of(&["xlb", "drain", "frontend"]).is_err(),
            "the backend is required"
        );
    }
}
