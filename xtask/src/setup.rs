//! Installs what the build, the tests and the benchmark need, when missing.
//! Idempotent; a machine that has everything runs nothing.

use std::{path::Path, process::Command};

use anyhow::{bail, Context};

/// Debian packages, and a path that shows each one is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "/usr/bin/rustc"),
    (
        "libstd-rust-web-dev-bpf",
        "/usr/lib/rustlib/bpfel-unknown-none/lib",
    ),
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libzstd-dev", "/usr/include/zstd.h"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("iputils-ping", "/usr/bin/ping"),
    ("nginx-light", "/usr/sbin/nginx"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("nftables", "/usr/sbin/nft"),
    ("wrk", "/usr/bin/wrk"),
    ("curl", "/usr/bin/curl"),
    ("procps", "/usr/bin/ps"),
    ("keepalived", "/usr/sbin/keepalived"),
];

const BPF_LINKER_VERSION: &str = "^0.13";

pub fn ensure_all() -> anyhow::Result<()> {
    ensure_packages()?;
    ensure_bpf_linker()
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, marker)| !Path::new(marker).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // Keep package installs from starting services (nginx, haproxy) on the host.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let added_policy = !policy.exists();
    if added_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("write policy-rc.d")?;
        std::process::Command::new("chmod")
            .args(["+x", "/usr/sbin/policy-rc.d"])
            .status()?;
    }
    let result = (|| {
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })();
    if added_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22)");
    sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )?;
    if Command::new("bpf-linker").arg("--version").output().is_err() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
