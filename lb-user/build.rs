//! Compiles the XDP program (lb-ebpf) for the BPF target so that the daemon
//! can embed it. Two toolchains can do that:
//! - Debian's `rustc-web` with `libstd-rust-web-dev-bpf`, which ships a
//!   prebuilt `core` for bpfel-unknown-none (used with RUSTC_BOOTSTRAP);
//! - a rustup nightly with `rust-src`, using `-Z build-std=core`.
//!
//! Both need `bpf-linker` on PATH. `cargo xtask setup` installs what is
//! missing, and the error when something is says so (`build/ebpf_toolchain.rs`).

#[path = "build/ebpf_toolchain.rs"]
mod ebpf_toolchain;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TARGET: &str = "bpfel-unknown-none";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";

use ebpf_toolchain::{Probe, Toolchain};

fn debian_bpf_core_present() -> bool {
    std::fs::read_dir(DEBIAN_BPF_CORE_DIR).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn nightly_with_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib/src/rust/library/core")
            .exists()
}

fn bpf_linker_runs() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("lb-user sits in the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for path in [
        "lb-ebpf/src",
        "lb-ebpf/Cargo.toml",
        "lb-common/src",
        "lb-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=LB_EBPF_TOOLCHAIN");

    let debian_rustc = Path::new(DEBIAN_RUSTC).exists();
    let debian_bpf_core = debian_bpf_core_present();
    let probe = Probe {
        debian_rustc,
        debian_bpf_core,
        // rustup is asked only when Debian's toolchain is not there.
        nightly_with_rust_src: !(debian_rustc && debian_bpf_core) && nightly_with_rust_src(),
        bpf_linker: bpf_linker_runs(),
    };
    let forced = env::var("LB_EBPF_TOOLCHAIN").ok();
    let toolchain = match ebpf_toolchain::choose(&probe, forced.as_deref()) {
        Ok(toolchain) => toolchain,
        Err(message) => {
            // Cargo shows a failed build script's stderr; a panic would bury
            // the fix under a backtrace hint.
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    };

    let target_dir = out_dir.join("ebpf-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = match toolchain {
        Toolchain::Debian => {
            let mut cmd = Command::new(&cargo);
            cmd.arg("build");
            cmd
        }
        Toolchain::RustupNightly => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"]);
            cmd
        }
    };
    cmd.current_dir(workspace)
        .args(["--release", "-p", "lb-ebpf", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings (its rustc, flags, jobserver) are for the host.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    if matches!(toolchain, Toolchain::Debian) {
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    // cpu v3 gives atomic fetch-and-add (the exact round-robin counter) and
    // 32-bit jumps; kernels since 5.1 run it.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-cpu=v3");

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run cargo for lb-ebpf: {e}"));
    if !output.status.success() {
        panic!(
            "building the XDP program failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let built = target_dir.join(TARGET).join("release");
    for (bin, name) in [("lb", "lb.bpf.o"), ("bench-floor", "bench-floor.bpf.o")] {
        let from = built.join(bin);
        std::fs::copy(&from, out_dir.join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}
