//! Helpers for the unit tests (compiled only for them).

use std::{fmt::Display, future::Future, panic::Location, time::Duration};

/// How long a test waits for something that must happen soon. Generous:
/// it is not a timing assertion, only a bound so that a regression fails
/// the test instead of hanging it (and CI) forever.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `future`, or panics naming `what` (and the caller's line) if it
/// has not completed within [`PATIENCE`].
///
/// ```text
/// let event = within("the peer's Up event", rx.recv()).await;
/// ```
#[track_caller]
pub fn within<F: Future>(what: impl Display, future: F) -> impl Future<Output = F::Output> {
    bounded(PATIENCE, what, Location::caller(), future)
}

async fn bounded<F: Future>(
    limit: Duration,
    what: impl Display,
    caller: &'static Location<'static>,
    future: F,
) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {limit:?} (awaited at {caller})"),
    }
}

mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_future_passes_through() {
        assert_eq!(within("a ready value", async { 7 }).await, 7);
    }

    #[tokio::test]
    async fn a_stuck_future_fails_naming_what_and_where() {
        let here = Location::caller();
        let stuck = bounded(
            Duration::from_millis(10),
            "the impossible",
            here,
            std::future::pending::<()>(),
        );
        let panic = tokio::spawn(stuck).await.unwrap_err().into_panic();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.starts_with("the impossible did not happen within 10ms (awaited at ")
                && message.contains(&here.to_string()),
            "{message}"
        );
    }
}
