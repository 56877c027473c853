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

/// Notifications waiting for their command, at most.
pub const QUEUE: usize = 32;

/// Runs the notifications queued on the returned sender, in order.
/// `secret_env`: variables the commands must not inherit.
pub fn spawn(
    config: NotifyConfig,
    vrid: u8,
    secret_env: Vec<String>,
    reports: mpsc::UnboundedSender<MoverReport>,
) -> (mpsc::Sender<Notification>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
    let task = tokio::spawn(async move {
        while let Some(notification) = rx.recv().await {
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
    (tx, task)
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
        queue.try_send(note("master", "backup")).unwrap();
        queue.try_send(note("backup", "master")).unwrap();
        queue.try_send(note("fault", "backup")).unwrap();
        queue.try_send(note("stop", "fault")).unwrap();
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

    #[tokio::test]
    async fn a_full_queue_refuses_more_instead_of_growing() {
        let config = NotifyConfig {
            master: Some(vec!["sleep".into(), "5".into()]),
            backup: None,
            fault: None,
            stop: None,
            timeout: Duration::from_secs(10),
        };
        let (reports_tx, _reports) = mpsc::unbounded_channel();
        let (queue, task) = spawn(config, 50, Vec::new(), reports_tx);
        // One runs, QUEUE wait, the next is refused.
        let accepted = (0..QUEUE + 10)
            .take_while(|_| queue.try_send(note("master", "backup")).is_ok())
            .count();
        assert!((QUEUE..=QUEUE + 1).contains(&accepted), "{accepted} accepted");
        task.abort();
    }
}
