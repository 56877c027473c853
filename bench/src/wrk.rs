//! Running wrk in a namespace and reading its report.

use std::time::Duration;

use anyhow::{bail, Context};
use lb_tests::netns::Netns;

use super::process::Process;

/// What one wrk run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub requests_per_s: f64,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// wrk's error lines (socket errors, non-2xx answers), if any.
    pub errors: Vec<String>,
}

impl Load {
    /// Several wrk runs side by side, seen as one: requests add up; the
    /// latency is the worse run's (a client sees the slower backend too).
    #[must_use]
    pub fn combined(parts: &[Load]) -> Load {
        Load {
            requests_per_s: parts.iter().map(|l| l.requests_per_s).sum(),
            requests: parts.iter().map(|l| l.requests).sum(),
            p50_us: parts.iter().map(|l| l.p50_us).fold(0.0, f64::max),
            p99_us: parts.iter().map(|l| l.p99_us).fold(0.0, f64::max),
            errors: parts.iter().flat_map(|l| l.errors.clone()).collect(),
        }
    }
}

/// A wrk run under way.
pub struct Running {
    process: Process,
    duration: Duration,
}

/// Starts `wrk --latency` against `url` from `ns`.
pub fn start(
    ns: &Netns,
    url: &str,
    threads: u32,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Running> {
    start_with_headers(ns, url, threads, connections, duration, &[])
}

/// As [`start`], each request with `headers` (`-H`), such as
/// `Connection: close` for one request per connection.
pub fn start_with_headers(
    ns: &Netns,
    url: &str,
    threads: u32,
    connections: u32,
    duration: Duration,
    headers: &[&str],
) -> anyhow::Result<Running> {
    let mut cmd = ns.command("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs()),
        "--latency".to_owned(),
    ]);
    for header in headers {
        cmd.args(["-H", header]);
    }
    cmd.arg(url);
    Ok(Running {
        process: Process::spawn(cmd, "wrk")?,
        duration,
    })
}

impl Running {
    /// Waits for the run to end and parses its report.
    pub fn finish(self) -> anyhow::Result<Load> {
        // wrk stops on its own after `duration`; allow for slow teardown.
        let text = self.process.finish(self.duration + Duration::from_secs(30))?;
        parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
    }

    /// Whether wrk still runs.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }
}

/// wrk's socket errors and non-2xx answers, summed over its error lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketErrors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Requests that took longer than wrk's time-out (2 s).
    pub timeout: u64,
    pub non_2xx: u64,
}

impl SocketErrors {
    /// From a [`Load`]'s error lines ("Socket errors: connect 0, read 3,
    /// write 0, timeout 0", "Non-2xx or 3xx responses: 5"); several runs'
    /// lines add up.
    #[must_use]
    pub fn of(load: &Load) -> Self {
        let mut sum = Self::default();
        for line in &load.errors {
            if let Some(rest) = line.strip_prefix("Socket errors:") {
                for part in rest.split(',') {
                    let mut words = part.split_whitespace();
                    let (Some(name), Some(Ok(n))) = (words.next(), words.next().map(str::parse::<u64>))
                    else {
                        continue;
                    };
                    match name {
                        "connect" => sum.connect += n,
                        "read" => sum.read += n,
                        "write" => sum.write += n,
                        "timeout" => sum.timeout += n,
                        _ => {}
                    }
                }
            } else if line.starts_with("Non-2xx") {
                if let Some(Ok(n)) = line.rsplit(':').next().map(|n| n.trim().parse::<u64>()) {
                    sum.non_2xx += n;
                }
            }
        }
        sum
    }
}

/// Runs wrk to completion.
pub fn run(
    ns: &Netns,
    url: &str,
    threads: u32,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Load> {
    start(ns, url, threads, connections, duration)?.finish()
}

/// Reads wrk's `--latency` report.
pub fn parse(text: &str) -> anyhow::Result<Load> {
    let mut requests_per_s = None;
    let mut requests = None;
    let mut p50_us = None;
    let mut p99_us = None;
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => {
                requests_per_s = Some(value.parse::<f64>().context("Requests/sec")?);
            }
            (Some("50%"), Some(value)) => p50_us = Some(micros(value)?),
            (Some("99%"), Some(value)) => p99_us = Some(micros(value)?),
            (Some(count), Some("requests")) => {
                requests = Some(count.parse::<u64>().context("request count")?);
            }
            (Some("Socket"), Some("errors:")) | (Some("Non-2xx"), _) => {
                errors.push(line.to_owned());
            }
            _ => {}
        }
    }
    Ok(Load {
        requests_per_s: requests_per_s.context("no Requests/sec line")?,
        requests: requests.context("no request count")?,
        p50_us: p50_us.context("no 50% latency (was --latency given?)")?,
        p99_us: p99_us.context("no 99% latency")?,
        errors,
    })
}

/// A wrk duration ("873.00us", "1.05ms", "2.00s", "1.50m") in microseconds.
fn micros(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad number in {text:?}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://198.51.100.100:3000/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   254.55us  189.22us   8.63ms   93.73%
    Req/Sec    63.68k     3.42k   71.36k    72.50%
  Latency Distribution
     50%  224.00us
     75%  276.00us
     90%  345.00us
     99%    1.05ms
  1267584 requests in 10.00s, 193.42MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec: 126738.27
Transfer/sec:     19.34MB
";

    #[test]
    fn reads_the_report() {
        let load = parse(REPORT).unwrap();
        assert_eq!(load.requests, 1_267_584);
        assert!((load.requests_per_s - 126_738.27).abs() < 1e-6);
        assert!((load.p50_us - 224.0).abs() < 1e-9);
        assert!((load.p99_us - 1050.0).abs() < 1e-9);
        assert_eq!(
            load.errors,
            ["Socket errors: connect 0, read 3, write 0, timeout 0"]
        );
    }

    #[test]
    fn socket_errors_add_up_over_runs() {
        let load = Load {
            errors: vec![
                "Socket errors: connect 2, read 3, write 0, timeout 7".to_owned(),
                "Non-2xx or 3xx responses: 5".to_owned(),
                "Socket errors: connect 1, read 0, write 4, timeout 0".to_owned(),
            ],
            ..parse(REPORT).unwrap()
        };
        let errors = SocketErrors::of(&load);
        assert_eq!(
            errors,
            SocketErrors {
                connect: 3,
                read: 3,
                write: 4,
                timeout: 7,
                non_2xx: 5
            }
        );
        assert_eq!(SocketErrors::of(&parse(REPORT).unwrap()).read, 3);
    }

    #[test]
    fn a_report_without_latency_is_refused() {
        assert!(parse("  10 requests in 1.00s, 1KB read\nRequests/sec: 10.0\n").is_err());
    }

    #[test]
    fn units() {
        assert!((micros("2.00s").unwrap() - 2e6).abs() < 1e-6);
        assert!((micros("1.50m").unwrap() - 90e6).abs() < 1e-3);
        assert!(micros("12").is_err());
        assert!(micros("3.0xs").is_err());
    }

    #[test]
    fn side_by_side_runs_add_up_and_keep_the_worse_latency() {
        let a = parse(REPORT).unwrap();
        let b = Load {
            p99_us: 2000.0,
            p50_us: 100.0,
            errors: Vec::new(),
            ..a.clone()
        };
        let both = Load::combined(&[a, b]);
        assert_eq!(both.requests, 2 * 1_267_584);
        assert!((both.p50_us - 224.0).abs() < 1e-9);
        assert!((both.p99_us - 2000.0).abs() < 1e-9);
        assert_eq!(both.errors.len(), 1);
    }
}
