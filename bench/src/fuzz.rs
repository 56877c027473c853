//! Random frames through the data plane: `lb_tests::fuzz::run` makes them
//! from a seed, runs each through the XDP program and checks what comes
//! out; this part runs it and reports how fast, what became of the frames,
//! and the outputs its check refused (goal: none).

use std::time::Duration;

use super::report::{grouped, Table};

pub const HEADING: &str = "## Fuzzing the XDP program";
/// The seed when none is given: a fixed one, so that runs compare.
pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Bad outputs listed in the report, at most, and how much of each.
const LISTED: usize = 10;
const SUMMARY: usize = 300;

/// What `lb_tests::fuzz::run` reported.
pub struct Results {
    pub seed: u64,
    pub frames: u64,
    pub elapsed: Duration,
    /// Frames by what became of them, as the fuzzer names it.
    pub outcomes: Vec<(String, u64)>,
    /// Outputs its check refused, and the first of them, described.
    pub bad: u64,
    pub first_bad: Vec<String>,
}

impl Results {
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `frames` frames from `seed`.
pub fn measure(frames: u64, seed: u64) -> anyhow::Result<Results> {
    let report = lb_tests::fuzz::run(frames, seed)?;
    Ok(Results {
        seed,
        frames: report.frames,
        elapsed: report.elapsed,
        outcomes: report.outcomes,
        bad: report.bad,
        first_bad: report.first_bad,
    })
}

/// A refused output's description without its hex dumps (lines starting
/// with `input` or `output`: the seed and frame number reproduce them), on
/// one line, cut at [`SUMMARY`] characters.
fn summary(description: &str) -> String {
    let kept: Vec<&str> = description
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("input") && !line.starts_with("output"))
        .collect();
    let text = kept.join("; ");
    if text.chars().count() > SUMMARY {
        format!("{}…", text.chars().take(SUMMARY).collect::<String>())
    } else {
        text
    }
}

pub fn section(r: &Results) -> String {
    let mut table = Table::new(&[("Outcome", false), ("Frames", true), ("Share", true)]);
    let mut outcomes = r.outcomes.clone();
    outcomes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (name, count) in &outcomes {
        table.row(vec![
            format!("`{name}`"),
            grouped(*count),
            format!("{:.2}%", *count as f64 / r.frames.max(1) as f64 * 100.0),
        ]);
    }
    let bad = if r.bad == 0 {
        "No output was refused.".to_owned()
    } else {
        let listed = r.first_bad.len().min(LISTED);
        format!(
            "Refused outputs, the first {listed}:\n\n{}",
            r.first_bad
                .iter()
                .take(LISTED)
                .map(|b| format!("- {}", summary(b)))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    format!(
        "{HEADING}\n\n\
         `lb_tests::fuzz::run({frames}, {seed:#x})`: {frames_grouped} frames generated from the \
         seed, valid ones of every path and mutations of them, each run through the XDP program \
         with BPF_PROG_TEST_RUN and its output judged by a checker written from the RFCs and the \
         README (tests/src/fuzz.rs says what it accepts). The program is the one built into the \
         bench (the tree's lb-ebpf, as for the per-packet cost), not the daemon binary the other \
         parts run. {elapsed:.1} s, **{rate} frames/s**. Frames by outcome, as the fuzzer names them (a refused frame is \
         also counted under `bad`):\n\n\
         {table}\n\
         {bad}\n\n\
         **Bad outputs: {bad_count}** (goal: 0).\n",
        frames = r.frames,
        seed = r.seed,
        frames_grouped = grouped(r.frames),
        elapsed = r.elapsed.as_secs_f64(),
        rate = grouped(r.per_second().round() as u64),
        table = table.render(),
        bad_count = grouped(r.bad),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_lists_outcomes_and_bad_outputs() {
        let mut r = Results {
            seed: 7,
            frames: 1000,
            elapsed: Duration::from_millis(500),
            outcomes: vec![
                ("pass_not_ipv4".to_owned(), 100),
                ("drop_malformed".to_owned(), 900),
            ],
            bad: 0,
            first_bad: Vec::new(),
        };
        let text = section(&r);
        assert!(text.starts_with(HEADING));
        assert!(text.contains("**2,000 frames/s**"));
        assert!(text.contains("| `drop_malformed` |    900 | 90.00% |"));
        assert!(text.contains("**Bad outputs: 0**"));
        r.bad = 2;
        r.first_bad = vec![
            "frame 1: TTL\n  seed new_syn, mutations [ttl]\n  input  (74 bytes): 0200\n  output (74 bytes): 0200".to_owned(),
            "x".repeat(400),
        ];
        let text = section(&r);
        assert!(text.contains("- frame 1: TTL; seed new_syn, mutations [ttl]\n- xxx"));
        assert!(text.contains(&format!("{}…\n", "x".repeat(SUMMARY))));
        assert!(!text.contains("0200"));
    }
}
