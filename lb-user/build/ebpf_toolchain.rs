//! Which toolchain can build the XDP program, or what to do when none can.
//! Shared by `build.rs` and its test (`xtask/tests/build_script_error.rs`),
//! so that the error a new user sees is the one that is tested.

/// What the build found on this machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    /// Debian's `rustc-web` (`/usr/bin/rustc`).
    pub debian_rustc: bool,
    /// Debian's `libstd-rust-web-dev-bpf`: a prebuilt `core` for the target.
    pub debian_bpf_core: bool,
    /// A rustup nightly with `rust-src`, for `-Z build-std=core`.
    pub nightly_with_rust_src: bool,
    /// `bpf-linker --version` ran from PATH.
    pub bpf_linker: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    Debian,
    RustupNightly,
}

/// The one command that installs everything the build needs.
pub const FIX: &str = "cargo xtask setup";

/// `forced` is `LB_EBPF_TOOLCHAIN` (`debian` or `nightly`), if set.
pub fn choose(probe: &Probe, forced: Option<&str>) -> Result<Toolchain, String> {
    let debian = probe.debian_rustc && probe.debian_bpf_core;
    let toolchain = match forced {
        Some("debian") => Toolchain::Debian,
        Some("nightly") => Toolchain::RustupNightly,
        Some(other) => {
            return Err(format!(
                "LB_EBPF_TOOLCHAIN={other:?} is not a toolchain: use `debian` or `nightly`, \
                 or unset it to pick whichever is installed"
            ))
        }
        None if debian => Toolchain::Debian,
        None if probe.nightly_with_rust_src => Toolchain::RustupNightly,
        None => {
            let mut missing = Vec::new();
            if !probe.debian_rustc {
                missing.push("Debian's rustc-web (/usr/bin/rustc)");
            }
            if !probe.debian_bpf_core {
                missing.push("libstd-rust-web-dev-bpf (core for bpfel-unknown-none)");
            }
            if !probe.bpf_linker {
                missing.push("bpf-linker");
            }
            return Err(format!(
                "the XDP program cannot be built: this machine has no BPF toolchain (missing: \
                 {}). Run `{FIX}` (as root): it installs them, then build again.",
                missing.join(", ")
            ));
        }
    };
    if !probe.bpf_linker {
        return Err(format!(
            "the XDP program cannot be linked: bpf-linker does not run from PATH. Run `{FIX}`: \
             it builds bpf-linker into ~/.cargo/bin (which must be on PATH)."
        ));
    }
    Ok(toolchain)
}
