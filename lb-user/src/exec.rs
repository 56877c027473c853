//! Running the operator's commands (command health checks, track scripts,
//! notify commands): one runner, so that each gets the same treatment. A
//! command runs with its standard input closed, without the daemon's
//! secrets in its environment (`token_env`), in a process group of its own,
//! for a bounded time: on time-out the whole group is killed (a shell's
//! children included, not only the shell), and so it is when the task that
//! waits for it is dropped (a check stopped by a reload, a shutdown).

use std::{
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{process::Command, time::timeout};

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program}: {source}")]
    Wait { program: String, source: std::io::Error },
    #[error("{program} exited with {status}")]
    Failed { program: String, status: ExitStatus },
    #[error("{program} timed out after {limit:?}; its process group was killed")]
    TimedOut { program: String, limit: Duration },
}

/// One command to run.
#[derive(Debug)]
pub struct Run<'a> {
    /// The program and its arguments.
    pub argv: &'a [String],
    /// Variables it gets on top of the daemon's environment.
    pub env: Vec<(&'static str, String)>,
    /// Variables of the daemon's environment it must not get.
    pub secret_env: &'a [String],
    pub limit: Duration,
    /// Its standard output and error go to the daemon's (notify commands,
    /// which run rarely); otherwise nowhere (checks and tracks, which run
    /// every few seconds).
    pub inherit_output: bool,
}

/// Kills a process group when dropped, unless disarmed: while its leader
/// has not been reaped, the group's id cannot belong to anyone else.
struct GroupKiller(Option<i32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            // SAFETY: kill(2) with a negative id signals that process group,
            // ours to kill (see above); an error (already gone) changes nothing.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }
}

/// Runs `run`; Ok once it exited 0.
pub async fn run(run: Run<'_>) -> Result<(), CommandError> {
    let (program, args) = run.argv.split_first().ok_or(CommandError::Empty)?;
    let mut command = Command::new(program);
    for name in run.secret_env {
        command.env_remove(name);
    }
    let output = || {
        if run.inherit_output {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    command
        .args(args)
        .envs(run.env.iter().map(|(name, value)| (*name, value)))
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut killer = GroupKiller(child.id().and_then(|pid| i32::try_from(pid).ok()));
    match timeout(run.limit, child.wait()).await {
        Ok(result) => {
            // Reaped: the group's id may be reused from now on.
            killer.disarm();
            match result {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(CommandError::Failed {
                    program: program.clone(),
                    status,
                }),
                Err(source) => Err(CommandError::Wait {
                    program: program.clone(),
                    source,
                }),
            }
        }
        Err(_) => {
            drop(killer);
            let _ = child.wait().await;
            Err(CommandError::TimedOut {
                program: program.clone(),
                limit: run.limit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn quick(argv: &[String], secret_env: &[String]) -> Run<'static> {
        Run {
            argv: argv.to_vec().leak(),
            env: vec![("XLB_TEST_VALUE", "given".into())],
            secret_env: secret_env.to_vec().leak(),
            limit: Duration::from_secs(5),
            inherit_output: false,
        }
    }

    #[tokio::test]
    async fn exit_codes_environment_and_secrets() {
        assert!(run(quick(&sh("exit 0"), &[])).await.is_ok());
        let err = run(quick(&sh("exit 3"), &[])).await.unwrap_err();
        assert!(err.to_string().contains("exited with exit status: 3"), "{err}");
        assert!(run(quick(&sh("test \"$XLB_TEST_VALUE\" = given"), &[]))
            .await
            .is_ok());
        // A secret of the daemon's environment (HOME stands in: the test
        // runner has it) is not passed on.
        assert!(run(quick(&sh("test -n \"$HOME\""), &[])).await.is_ok());
        assert!(run(quick(&sh("test -z \"$HOME\""), &["HOME".into()]))
            .await
            .is_ok());
        assert!(matches!(
            run(quick(&["/nonexistent/xlb-program".into()], &[])).await,
            Err(CommandError::Spawn { .. })
        ));
        assert!(matches!(run(quick(&[], &[])).await, Err(CommandError::Empty)));
    }

    /// Whether a process with this pid is alive (not a zombie).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
    }

    /// Waits (bounded) until `pid` has died; whether it did.
    async fn died(pid: i32) -> bool {
        for _ in 0..100 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        !alive(pid)
    }

    /// Waits (bounded) for `pid`'s file, written by the script.
    async fn read_pid(path: &std::path::Path) -> i32 {
        for _ in 0..100 {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the script wrote no pid to {}", path.display());
    }

    #[tokio::test]
    async fn a_time_out_kills_the_commands_children_too() {
        let file = std::env::temp_dir().join(format!("xlb-exec-child-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", file.display());
        let argv = sh(&script);
        let err = run(Run {
            limit: Duration::from_millis(300),
            ..quick(&argv, &[])
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        let child = read_pid(&file).await;
        assert!(
            died(child).await,
            "the shell's child {child} outlived the time-out"
        );
        let _ = std::fs::remove_file(file);
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_process_group() {
        let file = std::env::temp_dir().join(format!("xlb-exec-drop-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", file.display());
        let argv = sh(&script);
        let task = tokio::spawn(run(quick(&argv, &[])));
        let child = read_pid(&file).await;
        assert!(alive(child));
        task.abort();
        let _ = task.await;
        assert!(
            died(child).await,
            "the aborted command's child {child} still runs"
        );
        let _ = std::fs::remove_file(file);
    }
}
