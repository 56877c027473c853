//! The `exec` mover: keepalived's notify_master / notify_backup /
//! notify_fault / notify_stop. One command per transition, run one at a time
//! in the order of the transitions (a slow script never sees "backup" after
//! a later "master"), each bounded by a timeout (see `crate::exec`), and at
//! most `QUEUE` waiting: a flapping node does not pile up commands.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::MoverReport;
use crate::config::NotifyConfig;

/// One transition to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// "master", "backup", "fault" or "stop".
    pub state: &'static str,
    pub previous: &'static str,
    pub reason: String,
    pub priority: u8,
}

impl NotifyConfig {
    fn command_for(&self, state: &str) -> Option<&Vec<String>> {
        match state {
            "master" => self.master.as_ref(),
            "backup" => self.backup.as_ref(),
            "fault" => self.fault.as_ref(),
            "stop" => self.stop.as_ref(),
            _ => None,
        }
    }
}

/// Notifications waiting for their command, at most: when more come, the
/// oldest waiting is dropped, so that the last command run is always the
/// latest state's.
pub const QUEUE: usize = 32;

/// The notifications waiting for their command, oldest first.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: std::sync::Mutex<(std::collections::VecDeque<Notification>, bool)>,
    wake: tokio::sync::Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (std::collections::VecDeque<Notification>, bool)> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `n`; returns the oldest waiting one if it had to make room.
    pub fn push(&self, n: Notification) -> Option<Notification> {
        let mut waiting = self.lock();
        let dropped = (waiting.0.len() >= QUEUE)
            .then(|| waiting.0.pop_front())
            .flatten();
        waiting.0.push_back(n);
        drop(waiting);
        self.wake.notify_one();
        dropped
    }

    /// No more will come: the runner ends once the queue is empty.
    pub fn close(&self) {
        self.lock().1 = true;
        self.wake.notify_one();
    }

    /// The next notification; None once closed and empty.
    async fn next(&self) -> Option<Notification> {
        loop {
            {
                let mut waiting = self.lock();
                if let Some(n) = waiting.0.pop_front() {
                    return Some(n);
                }
                if waiting.1 {
                    return None;
                }
            }
            self.wake.notified().await;
        }
    }
}

/// Runs the notifications pushed on the returned queue, in order.
/// `secret_env`: variables the commands must not inherit.
pub fn spawn(
    config: NotifyConfig,
    vrid: u8,
    secret_env: Vec<String>,
    reports: mpsc::UnboundedSender<MoverReport>,
) -> (std::sync::Arc<Queue>, tokio::task::JoinHandle<()>) {
    let queue = std::sync::Arc::new(Queue::default());
    let ours = std::sync::Arc::clone(&queue);
    let task = tokio::spawn(async move {
        while let Some(notification) = ours.next().await {
            let Some(argv) = config.command_for(notification.state) else {
                continue;
            };
            let result = run(argv, &notification, vrid, &secret_env, config.timeout).await;
            let report = MoverReport {
                mover: "notify",
                action: format!("notify {}", notification.state),
                result,
            };
            if reports.send(report).is_err() {
                return;
            }
        }
    });
    (queue, task)
}

async fn run(
    argv: &[String],
    n: &Notification,
    vrid: u8,
    secret_env: &[String],
    limit: std::time::Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let result = crate::exec::run(crate::exec::Run {
        argv,
        env: vec![
            ("XLB_VRRP_STATE", n.state.to_owned()),
            ("XLB_VRRP_PREVIOUS_STATE", n.previous.to_owned()),
            ("XLB_VRRP_REASON", n.reason.clone()),
            ("XLB_VRRP_PRIORITY", n.priority.to_string()),
            ("XLB_VRRP_VRID", vrid.to_string()),
        ],
        secret_env,
        limit,
        inherit_output: true,
    })
    .await;
    match result {
        Ok(()) => {
            info!(command = argv[0], state = n.state, "notify command done");
            Ok(format!("{} exited 0 after {:?}", argv[0], started.elapsed()))
        }
        Err(e) => {
            warn!(command = argv[0], state = n.state, error = %e, "notify command failed");
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;
    use std::time::Duration;

    fn note(state: &'static str, previous: &'static str) -> Notification {
        Notification {
            state,
            previous,
            reason: "test".into(),
            priority: 100,
        }
    }

    #[tokio::test]
    async fn commands_run_in_order_with_the_state_and_time_out() {
        let dir = std::env::temp_dir().join(format!("xlb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let script = |delay: &str| {
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "sleep {delay}; echo \"$XLB_VRRP_STATE $XLB_VRRP_PREVIOUS_STATE $XLB_VRRP_REASON\" >> {}",
                    log.display()
                ),
            ]
        };
        let config = NotifyConfig {
            // The slow one goes first: order must still hold.
            master: Some(script("0.3")),
            backup: Some(script("0")),
            fault: Some(vec!["sleep".into(), "5".into()]),
            stop: None,
            timeout: Duration::from_secs(2),
        };
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let (queue, task) = spawn(config, 50, Vec::new(), reports_tx);
        queue.push(note("master", "backup"));
        queue.push(note("backup", "master"));
        queue.push(note("fault", "backup"));
        queue.push(note("stop", "fault"));
        let mut results = Vec::new();
        for _ in 0..3 {
            let r = within("each notify command's report", reports.recv())
                .await
                .unwrap();
            results.push((r.action, r.result.is_ok()));
        }
        assert_eq!(
            results,
            [
                ("notify master".to_owned(), true),
                ("notify backup".to_owned(), true),
                ("notify fault".to_owned(), false),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "master backup test\nbackup master test\n"
        );
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_so_the_latest_state_is_always_run() {
        let queue = Queue::default();
        for i in 0..QUEUE {
            let state = if i % 2 == 0 { "master" } else { "backup" };
            assert_eq!(queue.push(note(state, "fault")), None);
        }
        let dropped = queue.push(note("fault", "backup"));
        assert_eq!(dropped.map(|n| n.state), Some("master"), "the oldest made room");
        let waiting = queue.lock();
        assert_eq!(waiting.0.len(), QUEUE);
        assert_eq!(
            waiting.0.back().map(|n| n.state),
            Some("fault"),
            "the latest is kept"
        );
    }
}
