//! Bounded waits, the one way the tests and the bench wait for something:
//! poll a condition until it holds or the time-out passes, then fail naming
//! what never happened. No fixed sleeps standing in for "long enough".

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` until it holds; fails naming `what` after `timeout`.
pub fn until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    until_some(what, timeout, || condition().then_some(())).map(drop)
}

/// Polls `probe` until it returns `Some`, and returns that value; fails
/// naming `what` after `timeout`.
pub fn until_some<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("not within {timeout:?}: {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `attempt` until it has succeeded `needed` times in a row (a failure
/// starts the count again); fails naming `what` after `timeout`. For "the
/// service is back": one lucky success is not enough, and a fixed sleep
/// either wastes time or is too short on a loaded machine.
pub fn consecutive(
    what: &str,
    needed: usize,
    timeout: Duration,
    mut attempt: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut streak = 0;
    until(&format!("{needed} successes in a row: {what}"), timeout, || {
        streak = if attempt() { streak + 1 } else { 0 };
        streak >= needed
    })
}

/// `until` for async tests: polls without blocking the runtime.
pub async fn until_async(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            anyhow::bail!("not within {timeout:?}: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds_and_names_it_when_it_never_does() {
        let mut calls = 0;
        until("third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
        let err = until("never", Duration::from_millis(50), || false).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[test]
    fn consecutive_restarts_the_count_after_a_failure() {
        let outcomes = [true, true, false, true, true, true];
        let mut next = outcomes.iter();
        consecutive("streak", 3, Duration::from_secs(5), || *next.next().unwrap()).unwrap();
        assert_eq!(next.len(), 0, "all six attempts were needed");
        let mut flip = false;
        let err = consecutive("alternating", 2, Duration::from_millis(100), || {
            flip = !flip;
            flip
        })
        .unwrap_err();
        assert!(err.to_string().contains("2 successes in a row"), "{err}");
    }

    #[test]
    fn until_some_hands_back_the_value() {
        let mut n = 0;
        let got = until_some("n reaches 2", Duration::from_secs(5), || {
            n += 1;
            (n >= 2).then_some(n * 10)
        })
        .unwrap();
        assert_eq!(got, 20);
    }
}
