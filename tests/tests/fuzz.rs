//! The fuzz smoke run: 100 000 random and mutated frames through the real
//! XDP program (BPF_PROG_TEST_RUN), each checked (see `lb_tests::fuzz`),
//! once with a fixed seed and once with a seed from the clock, printed so
//! that a failure can be replayed with `lb_tests::fuzz::run(100_000, seed)`.
//! Needs root. The bench runs millions.

use std::time::{SystemTime, UNIX_EPOCH};

use lb_tests::fuzz::{self, FuzzReport, Kind};

const FRAMES: u64 = 100_000;

fn smoke(seed: u64) -> FuzzReport {
    println!("fuzz seed {seed:#x}");
    let report = fuzz::run(FRAMES, seed).expect("fuzz fixture");
    println!("{report}");
    assert_eq!(
        report.bad,
        0,
        "seed {seed:#x}: bad outputs, by reason: {:?}; the first:\n{}",
        report.bad_reasons,
        report.first_bad.join("\n")
    );
    assert_eq!(report.frames, FRAMES);
    for kind in Kind::ALL {
        assert!(
            report.count(kind.name()) > 0,
            "seed {seed:#x}: no frame had outcome {}: the fuzzer no longer reaches that path",
            kind.name()
        );
    }
    // A fuzzer whose frames are never translated proves nothing.
    assert!(
        report.translated() * 5 >= report.frames,
        "seed {seed:#x}: only {} of {} frames translated",
        report.translated(),
        report.frames
    );
    report
}

#[test]
fn fuzz_fixed_seed() {
    smoke(0x5eed_2024);
}

#[test]
fn fuzz_seed_from_the_clock() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_nanos() as u64;
    smoke(seed);
}
