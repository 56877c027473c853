//! The `exec` mover: keepalived's notify_master / notify_backup /
//! notify_fault / notify_stop. One command per transition, run one at a time
//! in the order of the transitions (a slow script never sees "backup" after
//! a later "master"), each bounded by a timeout.

use std::{process::Stdio, time::Instant};

use tokio::{process::Command, sync::mpsc, time::timeout};
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

/// Runs the notifications queued on the returned sender, in order.
/// `secret_env`: variables the commands must not inherit.
pub fn spawn(
    config: NotifyConfig,
    vrid: u8,
    secret_env: Vec<String>,
    reports: mpsc::UnboundedSender<MoverReport>,
) -> (mpsc::UnboundedSender<Notification>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
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

/// Sets up `command` (the program; it inherits the daemon's environment)
/// to announce `n`: its arguments, the XLB_VRRP_* variables, and without
/// the variables named in `secret_env`.
fn prepare(
    mut command: Command,
    args: &[String],
    n: &Notification,
    vrid: u8,
    secret_env: &[String],
) -> Command {
    for name in secret_env {
        command.env_remove(name);
    }
    command
        .args(args)
        .env("XLB_VRRP_STATE", n.state)
        .env("XLB_VRRP_PREVIOUS_STATE", n.previous)
        .env("XLB_VRRP_REASON", &n.reason)
        .env("XLB_VRRP_PRIORITY", n.priority.to_string())
        .env("XLB_VRRP_VRID", vrid.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(
    argv: &[String],
    n: &Notification,
    vrid: u8,
    secret_env: &[String],
    limit: std::time::Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let mut child = prepare(Command::new(&argv[0]), &argv[1..], n, vrid, secret_env)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    match timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            info!(command = argv[0], state = n.state, "notify command done");
            Ok(format!("{} exited 0 after {:?}", argv[0], started.elapsed()))
        }
        Ok(Ok(status)) => {
            warn!(command = argv[0], state = n.state, %status, "notify command failed");
            Err(format!("{} exited with {status}", argv[0]))
        }
        Ok(Err(e)) => Err(format!("{}: {e}", argv[0])),
        Err(_) => {
            let _ = child.kill().await;
            warn!(
                command = argv[0],
                state = n.state,
                "notify command timed out; killed"
            );
            Err(format!("{} timed out after {limit:?} and was killed", argv[0]))
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
        queue.send(note("master", "backup")).unwrap();
        queue.send(note("backup", "master")).unwrap();
        queue.send(note("fault", "backup")).unwrap();
        queue.send(note("stop", "fault")).unwrap();
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
    async fn secrets_in_the_daemons_environment_do_not_reach_the_commands() {
        // The secret is put in the command's environment, as if inherited
        // from the daemon's (token_env): never in this process's, which
        // tests running in parallel share.
        let mut daemon_env = Command::new("sh");
        daemon_env
            .env("XLB_TEST_NOTIFY_SECRET", "LEAKED")
            .env("XLB_TEST_NOTIFY_OTHER", "kept");
        let script = "echo \"$XLB_VRRP_STATE $XLB_VRRP_VRID [${XLB_TEST_NOTIFY_SECRET-unset}] $XLB_TEST_NOTIFY_OTHER\"";
        let mut command = prepare(
            daemon_env,
            &["-c".to_owned(), script.to_owned()],
            &note("master", "backup"),
            50,
            &["XLB_TEST_NOTIFY_SECRET".to_owned()],
        );
        let output = within("the notify command", command.stdout(Stdio::piped()).output())
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "master 50 [unset] kept\n"
        );
    }
}
