//! Installs what the build, the tests and the benchmark need, when missing,
//! and says what and why. Idempotent: a machine that has everything installs
//! nothing. Checks first what no install can fix (not Linux, no apt, not
//! root, a kernel without BTF or XDP links, `~/.cargo/bin` not on PATH) and
//! stops with the fix.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::step;

/// A Debian package, a path that shows it is installed, and why we need it.
struct Package {
    name: &'static str,
    marker: &'static str,
    why: &'static str,
}

const PACKAGES: &[Package] = &[
    Package {
        name: "rustc-web",
        marker: "/usr/bin/rustc",
        why: "Debian's rustc 1.96 (LLVM 22), which builds the XDP program for the BPF target",
    },
    Package {
        name: "libstd-rust-web-dev-bpf",
        marker: "/usr/lib/rustlib/bpfel-unknown-none/lib",
        why: "a prebuilt `core` for bpfel-unknown-none, so no nightly or rust-src is needed",
    },
    Package {
        name: "llvm-22-dev",
        marker: "/usr/lib/llvm-22/bin/llvm-config",
        why: "LLVM 22, which bpf-linker links against",
    },
    Package {
        name: "libzstd-dev",
        marker: "/usr/include/zstd.h",
        why: "linked into bpf-linker with LLVM",
    },
    Package {
        name: "zlib1g-dev",
        marker: "/usr/include/zlib.h",
        why: "linked into bpf-linker with LLVM",
    },
    Package {
        name: "iproute2",
        marker: "/usr/sbin/ip",
        why: "network namespaces, veths and bridges of the testbed",
    },
    Package {
        name: "ethtool",
        marker: "/usr/sbin/ethtool",
        why: "offload settings of the testbed's veths",
    },
    Package {
        name: "iputils-ping",
        marker: "/usr/bin/ping",
        why: "reachability checks of the testbed",
    },
    Package {
        name: "nginx-light",
        marker: "/usr/sbin/nginx",
        why: "the testbed's web servers",
    },
    Package {
        name: "haproxy",
        marker: "/usr/sbin/haproxy",
        why: "the reference load balancer, compared in the bench",
    },
    Package {
        name: "keepalived",
        marker: "/usr/sbin/keepalived",
        why: "the reference VRRP daemon: interop tests and the failover bench",
    },
    Package {
        name: "nftables",
        marker: "/usr/sbin/nft",
        why: "kernel NAT, the bench's baseline",
    },
    Package {
        name: "wrk",
        marker: "/usr/bin/wrk",
        why: "the bench's HTTP load",
    },
    Package {
        name: "curl",
        marker: "/usr/bin/curl",
        why: "the testbed's client and metrics scrapes",
    },
    Package {
        name: "procps",
        marker: "/usr/bin/ps",
        why: "process accounting in tests and the bench",
    },
    Package {
        name: "util-linux",
        marker: "/usr/bin/setpriv",
        why: "setpriv: a test runs the CLI as an unprivileged user",
    },
];

const BPF_LINKER_VERSION: &str = "^0.13";

/// What the command about to run needs beyond the packages.
pub struct Purpose {
    /// Runs namespaces and XDP programs: root and a kernel that can.
    pub needs_root: bool,
}

pub fn ensure_all(purpose: Purpose) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        cfg!(target_os = "linux"),
        "xlb is a Linux program (XDP): run this on Linux"
    );
    let root = is_root();
    if purpose.needs_root && !root {
        bail!(
            "this needs root (network namespaces, XDP). Run it as root, keeping your PATH:\n  \
             sudo env \"PATH=$PATH\" cargo xtask {}",
            std::env::args().nth(1).unwrap_or_default()
        );
    }
    if purpose.needs_root {
        check_kernel(Path::new("/"))?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(missing) = cargo_bin_missing_from_path(&cargo_home(), &path) {
        bail!(
            "{} is not on PATH, so bpf-linker (installed there) cannot be found. Add it, e.g.\n  \
             export PATH=\"{}:$PATH\"",
            missing.display(),
            missing.display()
        );
    }

    let missing = missing_packages(Path::new("/"));
    let mut did_something = false;
    if !missing.is_empty() {
        ensure_can_install(&missing, root)?;
        install_packages(&missing)?;
        did_something = true;
    }
    if !bpf_linker_runs() {
        install_bpf_linker()?;
        did_something = true;
    }
    if did_something {
        step(&format!("setup done in {}", elapsed(started)));
    } else {
        step("setup: every package and bpf-linker present, nothing to install");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: plain geteuid(2).
    unsafe { libc::geteuid() == 0 }
}

/// `$CARGO_HOME`, else `~/.cargo`: where `cargo install` puts bpf-linker.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// The cargo bin directory when it is not on `path`.
fn cargo_bin_missing_from_path(cargo_home: &Path, path: &OsString) -> Option<PathBuf> {
    let bin = cargo_home.join("bin");
    let same = |entry: &Path| {
        entry == bin || matches!((entry.canonicalize(), bin.canonicalize()), (Ok(a), Ok(b)) if a == b)
    };
    if std::env::split_paths(path).any(|entry| same(&entry)) {
        None
    } else {
        Some(bin)
    }
}

/// BTF (aya relocates the program against the kernel's types), the bpf(2)
/// syscall, and XDP attached through a bpf_link (Linux 5.9), which is what
/// makes a killed daemon leave nothing attached. `root` is `/` except in
/// tests.
fn check_kernel(root: &Path) -> anyhow::Result<()> {
    let release = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !root.join("sys/kernel/btf/vmlinux").exists() {
        bail!(
            "kernel {release} has no BTF (/sys/kernel/btf/vmlinux is missing): boot a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y (Debian 12's own 6.1 kernel has it)"
        );
    }
    if !root.join("proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!(
            "kernel {release} has no bpf(2) syscall (CONFIG_BPF_SYSCALL): boot a kernel that \
             has it (Debian 12's own kernel does)"
        );
    }
    let symbols = std::fs::read_to_string(root.join("proc/kallsyms")).unwrap_or_default();
    if !symbols
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("bpf_xdp_link_attach"))
    {
        bail!(
            "kernel {release} cannot attach XDP programs through a bpf_link (no \
             bpf_xdp_link_attach in /proc/kallsyms; Linux 5.9 or later has it): boot a newer \
             kernel (Debian 12's own 6.1 kernel works)"
        );
    }
    Ok(())
}

fn missing_packages(root: &Path) -> Vec<&'static Package> {
    PACKAGES
        .iter()
        .filter(|package| !root.join(package.marker.trim_start_matches('/')).exists())
        .collect()
}

fn ensure_can_install(missing: &[&Package], root: bool) -> anyhow::Result<()> {
    let has_apt = Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match install_refusal(missing, has_apt, root) {
        Some(refusal) => bail!(refusal),
        None => Ok(()),
    }
}

/// Why `missing` cannot be installed here, and what to do instead.
fn install_refusal(missing: &[&Package], has_apt: bool, root: bool) -> Option<String> {
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    if !has_apt {
        return Some(format!(
            "these Debian packages are missing and this machine has no apt-get to install \
             them: {}.\nxlb's setup knows Debian 12 and Ubuntu; elsewhere install the \
             equivalents by hand (a rustc that can target bpfel-unknown-none with its `core`, \
             or a rustup nightly with rust-src; LLVM 22; the testbed's tools), then run this \
             again",
            names.join(" ")
        ));
    }
    if !root {
        return Some(format!(
            "installing {} needs root: run `sudo env \"PATH=$PATH\" cargo xtask setup`",
            names.join(" ")
        ));
    }
    None
}

fn install_packages(missing: &[&Package]) -> anyhow::Result<()> {
    let started = Instant::now();
    step(&format!(
        "installing {} Debian packages (apt-get; about a minute):",
        missing.len()
    ));
    for package in missing {
        eprintln!("  {:<24} {}", package.name, package.why);
    }
    // Keep package installs from starting services (nginx, haproxy,
    // keepalived) on the host: the tests start their own in namespaces.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let added_policy = !policy.exists();
    if added_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("write /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .context("chmod /usr/sbin/policy-rc.d")?;
    }
    let result = (|| {
        crate::run(Command::new("apt-get").args(["update", "-q"]))?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(missing.iter().map(|p| p.name))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })();
    if added_policy {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    let still_missing: Vec<&str> = missing_packages(Path::new("/")).iter().map(|p| p.name).collect();
    anyhow::ensure!(
        still_missing.is_empty(),
        "apt-get succeeded but these are still missing: {}",
        still_missing.join(" ")
    );
    step(&format!("packages installed in {}", elapsed(started)));
    Ok(())
}

fn bpf_linker_runs() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let started = Instant::now();
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} from crates.io against LLVM 22 (it links \
         the XDP program; about 2 minutes on 2 cores)"
    ));
    crate::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
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
    anyhow::ensure!(
        bpf_linker_runs(),
        "bpf-linker was installed but does not run from PATH: add {} to PATH",
        cargo_home().join("bin").display()
    );
    step(&format!("bpf-linker installed in {}", elapsed(started)));
    Ok(())
}

/// `12 s` or `3 min 05 s`.
pub fn elapsed(since: Instant) -> String {
    format_duration(since.elapsed())
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_bin_on_path_is_found_and_its_absence_named() {
        let home = Path::new("/home/someone/.cargo");
        let with = OsString::from("/usr/bin:/home/someone/.cargo/bin:/bin");
        assert_eq!(cargo_bin_missing_from_path(home, &with), None);
        let without = OsString::from("/usr/bin:/bin");
        assert_eq!(
            cargo_bin_missing_from_path(home, &without),
            Some(PathBuf::from("/home/someone/.cargo/bin"))
        );
    }

    /// A fake root with the files the kernel checks read, minus `absent`.
    fn fake_root(absent: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-kernel-{}-{}",
            std::process::id(),
            absent.replace('/', "_")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (file, text) in [
            ("proc/sys/kernel/osrelease", "6.1.0-test\n"),
            ("sys/kernel/btf/vmlinux", ""),
            ("proc/sys/kernel/unprivileged_bpf_disabled", "2\n"),
            (
                "proc/kallsyms",
                "ffffffff81000000 T _stext\nffffffff81e3c0a0 T bpf_xdp_link_attach\n",
            ),
        ] {
            if file == absent {
                continue;
            }
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn kernel_check_names_what_is_missing() {
        let ok = fake_root("");
        check_kernel(&ok).unwrap();
        for (absent, named) in [
            ("sys/kernel/btf/vmlinux", "no BTF"),
            ("proc/sys/kernel/unprivileged_bpf_disabled", "no bpf(2)"),
            ("proc/kallsyms", "bpf_xdp_link_attach"),
        ] {
            let root = fake_root(absent);
            let err = check_kernel(&root).unwrap_err().to_string();
            assert!(err.contains(named), "{absent}: {err}");
            assert!(err.contains("6.1.0-test"), "{absent}: {err}");
            std::fs::remove_dir_all(root).unwrap();
        }
        std::fs::remove_dir_all(ok).unwrap();
    }

    #[test]
    fn this_machine_passes_the_kernel_check() {
        // The machines this project runs on (CI included) have BTF and XDP
        // links; a failure here means the check misreads a real kernel.
        check_kernel(Path::new("/")).unwrap();
    }

    #[test]
    fn missing_packages_are_read_from_their_marker_files() {
        let empty = std::env::temp_dir().join(format!("xtask-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(missing_packages(&empty).len(), PACKAGES.len());
        let marker = empty.join("usr/sbin/keepalived");
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, "").unwrap();
        let missing: Vec<&str> = missing_packages(&empty).iter().map(|p| p.name).collect();
        assert!(!missing.contains(&"keepalived"));
        assert_eq!(missing.len(), PACKAGES.len() - 1);
        std::fs::remove_dir_all(empty).unwrap();
    }

    #[test]
    fn a_machine_without_apt_or_root_is_told_what_to_do() {
        let missing: Vec<&Package> = PACKAGES.iter().take(2).collect();
        let no_apt = install_refusal(&missing, false, true).unwrap();
        assert!(no_apt.contains("no apt-get"), "{no_apt}");
        assert!(no_apt.contains("rustc-web libstd-rust-web-dev-bpf"), "{no_apt}");
        let not_root = install_refusal(&missing, true, false).unwrap();
        assert!(not_root.contains("needs root"), "{not_root}");
        assert!(
            not_root.contains("sudo env \"PATH=$PATH\" cargo xtask setup"),
            "{not_root}"
        );
        assert_eq!(install_refusal(&missing, true, true), None);
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12 s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3 min 05 s");
    }
}
