//! lb-user's build script's answer when the XDP program cannot be built: it
//! names what is missing and the one command that installs it. The module is
//! the one `lb-user/build.rs` decides with; it is tested here because xtask
//! builds on a bare machine, where that answer matters, while lb-user's own
//! tests build only once the toolchain is in place.

#[path = "../../lb-user/build/ebpf_toolchain.rs"]
mod ebpf_toolchain;

use ebpf_toolchain::{choose, Probe, Toolchain, FIX};

const EVERYTHING: Probe = Probe {
    debian_rustc: true,
    debian_bpf_core: true,
    nightly_with_rust_src: true,
    bpf_linker: true,
};

fn names_the_fix_once(message: &str) {
    let command = format!("`{FIX}`");
    assert_eq!(
        message.matches(&command).count(),
        1,
        "the error should name {command} exactly once: {message}"
    );
    assert_eq!(FIX, "cargo xtask setup");
}

#[test]
fn a_bare_machine_is_told_to_run_setup_and_what_is_missing() {
    let message = choose(&Probe::default(), None).unwrap_err();
    names_the_fix_once(&message);
    for missing in ["rustc-web", "libstd-rust-web-dev-bpf", "bpf-linker"] {
        assert!(message.contains(missing), "{missing} not named: {message}");
    }
}

#[test]
fn half_an_install_names_only_what_is_missing() {
    let message = choose(
        &Probe {
            debian_rustc: true,
            ..Probe::default()
        },
        None,
    )
    .unwrap_err();
    names_the_fix_once(&message);
    assert!(!message.contains("rustc-web"), "{message}");
    assert!(message.contains("libstd-rust-web-dev-bpf"), "{message}");
}

#[test]
fn a_toolchain_without_bpf_linker_is_told_to_run_setup() {
    for probe in [
        Probe {
            bpf_linker: false,
            ..EVERYTHING
        },
        Probe {
            debian_rustc: false,
            bpf_linker: false,
            ..EVERYTHING
        },
    ] {
        let message = choose(&probe, None).unwrap_err();
        names_the_fix_once(&message);
        assert!(message.contains("bpf-linker"), "{message}");
    }
}

#[test]
fn debian_is_preferred_then_a_nightly_and_the_override_is_checked() {
    assert_eq!(choose(&EVERYTHING, None), Ok(Toolchain::Debian));
    let nightly_only = Probe {
        debian_bpf_core: false,
        ..EVERYTHING
    };
    assert_eq!(choose(&nightly_only, None), Ok(Toolchain::RustupNightly));
    assert_eq!(choose(&EVERYTHING, Some("nightly")), Ok(Toolchain::RustupNightly));
    let message = choose(&EVERYTHING, Some("gcc")).unwrap_err();
    assert!(message.contains("LB_EBPF_TOOLCHAIN"), "{message}");
}
