//! Health checks: what a check is (TCP connect, HTTP request, command), the
//! rise/fall hysteresis that turns results into UP/DOWN, and the per-backend
//! task that runs checks on the schedule HAProxy uses (inter, fastinter while
//! a change is pending, downinter while down).

use std::{
    net::SocketAddrV4,
    time::{Duration, SystemTime},
};

use http_body_util::Empty;
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle, time::timeout};

use crate::config::{CheckConfig, CheckKind};

/// Rise/fall hysteresis. A backend starts UP but unconfirmed: until a check
/// has passed, a single failure takes it down, so a dead backend added by a
/// reload or present at start-up leaves rotation after one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    healthy: bool,
    confirmed: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl Hysteresis {
    #[must_use]
    pub const fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise,
            fall,
            healthy: true,
            confirmed: false,
            streak: 0,
        }
    }

    /// Continues from a known state (e.g. after a reload changed the check).
    #[must_use]
    pub const fn resume(rise: u32, fall: u32, healthy: bool) -> Self {
        Self {
            rise,
            fall,
            healthy,
            confirmed: true,
            streak: 0,
        }
    }

    /// Records one check result; returns whether the state flipped.
    pub fn observe(&mut self, ok: bool) -> bool {
        if ok == self.healthy {
            self.streak = 0;
            self.confirmed = true;
            return false;
        }
        self.streak += 1;
        let needed = match (self.healthy, self.confirmed) {
            (true, false) => 1,
            (true, true) => self.fall,
            (false, _) => self.rise,
        };
        if self.streak < needed {
            return false;
        }
        self.healthy = ok;
        self.confirmed = true;
        self.streak = 0;
        true
    }

    #[must_use]
    pub const fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// The wait before the next check.
    #[must_use]
    pub fn next_interval(&self, check: &CheckConfig) -> Duration {
        match (self.healthy, self.streak) {
            (_, 1..) => check.fastinter,
            (true, 0) => check.inter,
            (false, 0) => check.downinter,
        }
    }
}

/// Whom a check targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckTarget {
    pub service: String,
    pub backend: String,
    pub address: SocketAddrV4,
}

/// One finished check, sent to the controller.
#[derive(Debug)]
pub struct CheckEvent {
    pub target: CheckTarget,
    pub result: Result<(), String>,
    /// Health after this result.
    pub healthy: bool,
    /// Whether this result changed the health.
    pub flipped: bool,
    pub at: SystemTime,
}

/// Runs one check.
pub async fn check(
    kind: &CheckKind,
    target: &CheckTarget,
    limit: Duration,
    secret_env: &[String],
) -> Result<(), String> {
    match kind {
        CheckKind::None => Ok(()),
        CheckKind::Tcp => timeout(limit, TcpStream::connect(target.address))
            .await
            .map_err(|_| format!("connect timed out after {limit:?}"))?
            .map(drop)
            .map_err(|e| format!("connect: {e}")),
        CheckKind::Http {
            method,
            path,
            expect,
            host,
        } => {
            let status = timeout(limit, http_status(target.address, method, path, host.as_deref()))
                .await
                .map_err(|_| format!("HTTP check timed out after {limit:?}"))??;
            if expect.contains(&status) {
                Ok(())
            } else {
                Err(format!(
                    "HTTP status {status}, expected {}-{}",
                    expect.start(),
                    expect.end()
                ))
            }
        }
        CheckKind::Command(argv) => crate::exec::run(crate::exec::Run {
            argv,
            env: vec![
                ("XLB_SERVER_ADDR", target.address.ip().to_string()),
                ("XLB_SERVER_PORT", target.address.port().to_string()),
                ("XLB_SERVER_NAME", target.backend.clone()),
                ("XLB_SERVICE", target.service.clone()),
            ],
            secret_env,
            limit,
            inherit_output: false,
        })
        .await
        .map_err(|e| e.to_string()),
    }
}

async fn http_status(
    address: SocketAddrV4,
    method: &str,
    path: &str,
    host: Option<&str>,
) -> Result<u16, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(
            hyper::header::HOST,
            host.map_or_else(|| address.to_string(), str::to_owned),
        )
        .header(hyper::header::USER_AGENT, "xlb-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"));
    driver.abort();
    Ok(response?.status().as_u16())
}

/// Starts the checks of one backend; the task runs until aborted.
pub fn spawn(
    target: CheckTarget,
    config: CheckConfig,
    mut state: Hysteresis,
    events: mpsc::Sender<CheckEvent>,
    secret_env: Vec<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if matches!(config.kind, CheckKind::None) {
            return;
        }
        // Spread the first checks so that backends are not probed in lockstep.
        let jitter = Duration::from_millis(u64::from(rand_u16()) % 100);
        tokio::time::sleep(jitter).await;
        loop {
            let result = check(&config.kind, &target, config.timeout, &secret_env).await;
            let flipped = state.observe(result.is_ok());
            let event = CheckEvent {
                target: target.clone(),
                result,
                healthy: state.is_healthy(),
                flipped,
                at: SystemTime::now(),
            };
            if events.send(event).await.is_err() {
                return;
            }
            tokio::time::sleep(state.next_interval(&config)).await;
        }
    })
}

fn rand_u16() -> u16 {
    let mut bytes = [0u8; 2];
    // SAFETY: getrandom(2) into a valid buffer; failure leaves zeros, which is fine for jitter.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    u16::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_config(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            kind,
            inter: Duration::from_secs(2),
            fastinter: Duration::from_millis(500),
            downinter: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn unconfirmed_backend_falls_at_the_first_failure() {
        let mut h = Hysteresis::new(2, 3);
        assert!(h.observe(false));
        assert!(!h.is_healthy());
    }

    #[test]
    fn confirmed_backend_needs_fall_failures_and_rise_successes() {
        let mut h = Hysteresis::new(2, 3);
        assert!(!h.observe(true));
        assert!(!h.observe(false));
        assert!(!h.observe(false));
        assert!(h.is_healthy(), "two failures of three");
        assert!(h.observe(false));
        assert!(!h.is_healthy());
        assert!(!h.observe(true));
        assert!(h.observe(true), "rise 2");
        assert!(h.is_healthy());
    }

    #[test]
    fn an_interruption_resets_the_streak() {
        let mut h = Hysteresis::resume(2, 3, true);
        h.observe(false);
        h.observe(false);
        h.observe(true);
        h.observe(false);
        h.observe(false);
        assert!(h.is_healthy());
    }

    #[test]
    fn schedule_uses_fastinter_while_changing_and_downinter_while_down() {
        let config = check_config(CheckKind::Tcp);
        let mut h = Hysteresis::resume(2, 3, true);
        assert_eq!(h.next_interval(&config), config.inter);
        h.observe(false);
        assert_eq!(h.next_interval(&config), config.fastinter);
        let down = Hysteresis::resume(2, 3, false);
        assert_eq!(down.next_interval(&config), config.downinter);
    }

    fn target(port: u16) -> CheckTarget {
        CheckTarget {
            service: "web".into(),
            backend: "web1".into(),
            address: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_check_follows_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check(&CheckKind::Tcp, &target(port), Duration::from_secs(1), &[])
            .await
            .is_ok());
        drop(listener);
        assert!(check(&CheckKind::Tcp, &target(port), Duration::from_secs(1), &[])
            .await
            .is_err());
    }

    async fn http_server_answering(status: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn http_check_compares_the_status() {
        let http = |expect| CheckKind::Http {
            method: "GET".into(),
            path: "/health".into(),
            expect,
            host: Some("app.example".into()),
        };
        let ok = http_server_answering("200 OK").await;
        let failing = http_server_answering("500 Internal Server Error").await;
        assert!(check(&http(200..=200), &target(ok), Duration::from_secs(2), &[])
            .await
            .is_ok());
        let err = check(&http(200..=200), &target(failing), Duration::from_secs(2), &[])
            .await
            .unwrap_err();
        assert!(err.contains("500"), "{err}");
        assert!(
            check(&http(200..=599), &target(failing), Duration::from_secs(2), &[])
                .await
                .is_ok()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn command_check_uses_the_exit_status_and_gets_the_backend() {
        let script = |body: &str| CheckKind::Command(vec!["sh".into(), "-c".into(), body.into()]);
        let t = target(8080);
        assert!(check(
            &script("test \"$XLB_SERVER_PORT\" = 8080"),
            &t,
            Duration::from_secs(2),
            &[]
        )
        .await
        .is_ok());
        assert!(check(&script("exit 3"), &t, Duration::from_secs(2), &[])
            .await
            .is_err());
        let err = check(&script("sleep 5"), &t, Duration::from_millis(100), &[])
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }
}
