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

/// A Debian package and why we need it.
struct Package {
    name: &'static str,
    why: &'static str,
}

const PACKAGES: &[Package] = &[
    Package {
        name: "rustc-web",
        why: "Debian's rustc 1.96 (LLVM 22), which builds the XDP program for the BPF target",
    },
    Package {
        name: "libstd-rust-web-dev-bpf",
        why: "a prebuilt `core` for bpfel-unknown-none, so no nightly or rust-src is needed",
    },
    Package {
        name: "llvm-22-dev",
        why: "LLVM 22, which bpf-linker links against",
    },
    Package {
        name: "libzstd-dev",
        why: "bpf-linker links it with LLVM (llvm-config --system-libs)",
    },
    Package {
        name: "zlib1g-dev",
        why: "bpf-linker links it with LLVM (llvm-config --system-libs)",
    },
    Package {
        name: "iproute2",
        why: "network namespaces, veths and bridges of the testbed",
    },
    Package {
        name: "ethtool",
        why: "offload settings of the testbed's veths",
    },
    Package {
        name: "iputils-ping",
        why: "reachability checks of the testbed",
    },
    Package {
        name: "nginx-light",
        why: "the testbed's web servers",
    },
    Package {
        name: "haproxy",
        why: "the reference load balancer, compared in the bench",
    },
    Package {
        name: "keepalived",
        why: "the reference VRRP daemon: interop tests and the failover bench",
    },
    Package {
        name: "nftables",
        why: "kernel NAT, the bench's baseline",
    },
    Package {
        name: "wrk",
        why: "the bench's HTTP load",
    },
    Package {
        name: "curl",
        why: "the testbed's client and metrics scrapes",
    },
    Package {
        name: "procps",
        why: "process accounting in tests and the bench",
    },
    Package {
        name: "util-linux",
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
            "this needs root (network namespaces, XDP). Run it as root with your toolchain:\n  {}",
            as_root(&std::env::args().skip(1).collect::<Vec<_>>())
        );
    }
    if purpose.needs_root {
        check_kernel(Path::new("/"))?;
    }

    let missing = missing_packages();
    let mut did_something = false;
    if !missing.is_empty() {
        ensure_can_install(&missing, root)?;
        install_packages(&missing)?;
        did_something = true;
    }
    if !bpf_linker_runs() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(bin) = cargo_bin_missing_from_path(&cargo_home(), &path) {
            bail!(
                "{} is not on PATH, so bpf-linker, which `cargo install` puts there, could not be \
                 found by the build. Add it, e.g.\n  export PATH=\"{}:$PATH\"",
                bin.display(),
                bin.display()
            );
        }
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

/// The command that runs `cargo xtask ARGS` as root with the caller's
/// rustup toolchain (sudo resets HOME, and with it where rustup looks).
fn as_root(args: &[String]) -> String {
    format!(
        "sudo env \"PATH=$PATH\" \"RUSTUP_HOME=${{RUSTUP_HOME:-$HOME/.rustup}}\" \
         \"CARGO_HOME=${{CARGO_HOME:-$HOME/.cargo}}\" cargo xtask {}",
        args.join(" ")
    )
    .trim_end()
    .to_owned()
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

/// The packages dpkg does not list as installed (all of them where there is
/// no dpkg).
fn missing_packages() -> Vec<&'static Package> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\\n"])
        .args(PACKAGES.iter().map(|p| p.name))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    not_installed(&output)
}

/// Reads `dpkg-query -W -f '${Package} ${db:Status-Status}\n'`: a package
/// it does not mention, or mentions in any state but `installed` (removed
/// with its configuration left, half-installed), is missing.
fn not_installed(dpkg_query: &str) -> Vec<&'static Package> {
    let installed: Vec<&str> = dpkg_query
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name)
        .collect();
    PACKAGES
        .iter()
        .filter(|package| !installed.contains(&package.name))
        .collect()
}

/// Reads `apt-cache policy NAMES...`: the names that have no installation
/// candidate (unknown to this release's archive, or `Candidate: (none)`).
fn without_candidate<'a>(names: &[&'a str], apt_cache_policy: &str) -> Vec<&'a str> {
    let mut available = Vec::new();
    let mut current = None;
    for line in apt_cache_policy.lines() {
        if !line.starts_with(' ') {
            current = line.strip_suffix(':');
        } else if let (Some(name), Some(candidate)) = (current, line.trim().strip_prefix("Candidate:")) {
            if candidate.trim() != "(none)" {
                available.push(name);
            }
        }
    }
    names
        .iter()
        .copied()
        .filter(|name| !available.contains(name))
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
             them: {}.\nxlb's setup is made for Debian 12 (bookworm); elsewhere install the \
             equivalents by hand (a rustc that can target bpfel-unknown-none with its `core`, \
             or a rustup nightly with rust-src; bpf-linker built against LLVM 22; the \
             testbed's tools), then run this again",
            names.join(" ")
        ));
    }
    if !root {
        return Some(format!(
            "installing {} needs root: run\n  {}",
            names.join(" "),
            as_root(&["setup".to_owned()])
        ));
    }
    None
}

fn install_packages(missing: &[&Package]) -> anyhow::Result<()> {
    let started = Instant::now();
    step(&format!(
        "installing {} Debian packages with apt-get (about 30 s), then bpf-linker:",
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
        let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
        let policy = Command::new("apt-cache")
            .arg("policy")
            .args(&names)
            .output()
            .context("apt-cache policy")?;
        let unavailable = without_candidate(&names, &String::from_utf8_lossy(&policy.stdout));
        if !unavailable.is_empty() {
            bail!(
                "this release's archive has no {}: xlb's setup is made for Debian 12 (bookworm), \
                 whose rustc-web 1.96 and LLVM 22 build the XDP program. Elsewhere install a rustc \
                 that can target bpfel-unknown-none (or a rustup nightly with rust-src) and \
                 bpf-linker by hand",
                unavailable.join(", ")
            );
        }
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
    let still_missing: Vec<&str> = missing_packages().iter().map(|p| p.name).collect();
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
         the XDP program; about a minute on 2 cores)"
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
    fn packages_dpkg_does_not_call_installed_are_missing() {
        // What dpkg-query printed here after `apt-get purge keepalived` left
        // nothing and `apt-get remove haproxy` left its configuration.
        let output = PACKAGES
            .iter()
            .filter(|p| p.name != "keepalived")
            .map(|p| {
                let status = if p.name == "haproxy" {
                    "config-files"
                } else {
                    "installed"
                };
                format!("{} {status}\n", p.name)
            })
            .collect::<String>();
        let missing: Vec<&str> = not_installed(&output).iter().map(|p| p.name).collect();
        assert_eq!(missing, ["haproxy", "keepalived"]);
        assert_eq!(not_installed("").len(), PACKAGES.len(), "no dpkg: all missing");
    }

    #[test]
    fn this_machines_dpkg_answers_in_the_format_read() {
        // util-linux is essential in Debian: always installed.
        assert!(!missing_packages().iter().any(|p| p.name == "util-linux"));
    }

    #[test]
    fn packages_without_a_candidate_are_named() {
        let policy = "rustc-web:\n  Installed: (none)\n  Candidate: 1.96.0+dfsg1-1~deb12u2\n  \
                      Version table:\n     1.96.0+dfsg1-1~deb12u2 500\n\
                      llvm-22-dev:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(
            without_candidate(&["rustc-web", "llvm-22-dev", "libstd-rust-web-dev-bpf"], policy),
            ["llvm-22-dev", "libstd-rust-web-dev-bpf"],
            "no candidate, and unknown to apt-cache altogether"
        );
    }

    #[test]
    fn the_root_command_keeps_the_callers_toolchain_and_arguments() {
        let command = as_root(&["bench".to_owned(), "--only".to_owned(), "soak".to_owned()]);
        assert_eq!(
            command,
            "sudo env \"PATH=$PATH\" \"RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}\" \
             \"CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}\" cargo xtask bench --only soak"
        );
    }

    #[test]
    fn a_machine_without_apt_or_root_is_told_what_to_do() {
        let missing: Vec<&Package> = PACKAGES.iter().take(2).collect();
        let no_apt = install_refusal(&missing, false, true).unwrap();
        assert!(no_apt.contains("no apt-get"), "{no_apt}");
        assert!(no_apt.contains("rustc-web libstd-rust-web-dev-bpf"), "{no_apt}");
        let not_root = install_refusal(&missing, true, false).unwrap();
        assert!(not_root.contains("needs root"), "{not_root}");
        assert!(not_root.ends_with(&as_root(&["setup".to_owned()])), "{not_root}");
        assert_eq!(install_refusal(&missing, true, true), None);
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12 s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3 min 05 s");
    }
}
