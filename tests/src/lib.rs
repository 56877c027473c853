//! A testbed of network namespaces wired like the reference droplets, and
//! the tools the integration tests and `cargo xtask run/bench` share:
//! namespaces, the daemon process, nginx web servers, a real keepalived, a
//! packet builder, bounded waits and status lookups.

pub mod arp;
pub mod daemon;
pub mod fake_digitalocean;
pub mod fixture;
pub mod fuzz;
pub mod http;
pub mod keepalived;
pub mod netns;
pub mod packet;
pub mod packet_socket;
pub mod probe;
pub mod status;
pub mod testbed;
pub mod wait;
pub mod webserver;

/// Runs `program args...`, failing with its stderr if it does not succeed.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A name no other test, run or process uses at the same time.
#[must_use]
pub fn unique_tag(kind: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{kind}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
