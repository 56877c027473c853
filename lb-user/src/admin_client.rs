//! The CLI side of the admin API (`xlb status`, `drain`, `enable`, `reload`):
//! one HTTP/1.1 request per command over the Unix socket or the TCP listener,
//! and the human rendering of `Status`.

use std::{
    fmt::Write as _,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::{
    body::Bytes,
    client::conn::http1,
    header::{self, HeaderValue},
    Method, Uri,
};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Deserialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};

use crate::status::{BackendState, Status, VrrpStatus};

/// How long a command waits for the daemon, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are refused: a status of 64 services with 256 backends
/// each is well below this.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: is xlb running? ({reason})")]
    NotRunning { target: String, reason: String },
    #[error("permission denied: the admin socket is for root ({target})")]
    PermissionDenied { target: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("no answer from {target} within {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("talking to {target}: {source}")]
    Http { target: String, source: hyper::Error },
    #[error("{message} (HTTP {status})")]
    Server { status: u16, message: String },
    #[error("unexpected answer from {target}: {reason}")]
    BadResponse { target: String, reason: String },
    #[error("--url {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot read the token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
}

/// Where the daemon listens.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The root-only Unix socket.
    Unix(PathBuf),
    /// The TCP listener: `host:port` and its bearer token.
    Tcp { authority: String, token: String },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
            Self::Tcp { authority, .. } => f
                .debug_struct("Tcp")
                .field("authority", authority)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl Endpoint {
    /// The TCP listener at `url` (`http://HOST:PORT`), with the token read
    /// from `token_file` (surrounding whitespace ignored, as the daemon does).
    pub fn tcp(url: &str, token_file: &Path) -> Result<Self, ClientError> {
        let authority = parse_url(url)?;
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| ClientError::TokenFile {
                path: token_file.to_owned(),
                reason: os_reason(&e),
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(ClientError::TokenFile {
                path: token_file.to_owned(),
                reason: "it is empty".into(),
            });
        }
        Ok(Self::Tcp { authority, token })
    }

    fn target(&self) -> String {
        match self {
            Self::Unix(path) => path.display().to_string(),
            Self::Tcp { authority, .. } => authority.clone(),
        }
    }
}

/// `http://HOST:PORT` (a trailing `/` allowed) to `HOST:PORT`.
fn parse_url(url: &str) -> Result<String, ClientError> {
    let bad = |reason| ClientError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| bad("not a URL like http://10.0.0.5:9901"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported; use http:// (or an SSH tunnel)")),
        _ => return Err(bad("not a URL like http://10.0.0.5:9901")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials belong in --token-file"));
    }
    if authority.port_u16().is_none() {
        return Err(bad("no port (the daemon's admin.listen port)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("give only http://HOST:PORT, without a path"));
    }
    Ok(authority.as_str().to_owned())
}

/// An io::Error's text without the "(os error N)" suffix.
fn os_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

#[derive(Deserialize)]
struct ReloadBody {
    message: String,
}

#[derive(Deserialize)]
struct OkBody {}

/// A connection-per-request client for the admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    endpoint: Endpoint,
    timeout: Duration,
}

impl AdminClient {
    #[must_use]
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: TIMEOUT,
        }
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status").await
    }

    /// Asks the daemon to re-read its config; returns what changed.
    pub async fn reload(&self) -> Result<String, ClientError> {
        let body: ReloadBody = self.call(Method::POST, "/v1/reload").await?;
        Ok(body.message)
    }

    /// Drains a backend (`drained = true`) or puts it back in rotation.
    pub async fn set_drained(&self, service: &str, backend: &str, drained: bool) -> Result<(), ClientError> {
        let action = if drained { "drain" } else { "enable" };
        let path = format!(
            "/v1/services/{}/backends/{}/{action}",
            percent_encode(service),
            percent_encode(backend)
        );
        let _: OkBody = self.call(Method::POST, &path).await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, ClientError> {
        let target = self.endpoint.target();
        let (status, body) = tokio::time::timeout(self.timeout, self.exchange(method, path))
            .await
            .map_err(|_| ClientError::Timeout {
                target: target.clone(),
                after: self.timeout,
            })??;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
                target,
                reason: e.to_string(),
            });
        }
        // The daemon answers errors as {"error": "..."}; anything else (a
        // proxy in the way?) is shown as text.
        let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(
            |_| {
                let text = String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text
                }
            },
            |body| body.error,
        );
        Err(ClientError::Server {
            status: status.as_u16(),
            message,
        })
    }

    async fn exchange(&self, method: Method, path: &str) -> Result<(hyper::StatusCode, Bytes), ClientError> {
        let target = self.endpoint.target();
        match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = UnixStream::connect(socket)
                    .await
                    .map_err(|e| connect_error(target.clone(), &e))?;
                send(stream, &target, method, path, "localhost", None).await
            }
            Endpoint::Tcp { authority, token } => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| connect_error(target.clone(), &e))?;
                send(stream, &target, method, path, authority, Some(token)).await
            }
        }
    }
}

fn connect_error(target: String, error: &io::Error) -> ClientError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            target,
            reason: os_reason(error),
        },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { target },
        _ => ClientError::Connect {
            target,
            reason: os_reason(error),
        },
    }
}

async fn send<I>(
    io: I,
    target: &str,
    method: Method,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> Result<(hyper::StatusCode, Bytes), ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| ClientError::Http {
        target: target.to_owned(),
        source,
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, concat!("xlb/", env!("CARGO_PKG_VERSION")));
    if let Some(token) = token {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::BadResponse {
                target: target.to_owned(),
                reason: "the token contains characters not allowed in a header".into(),
            })?;
        // Keeps it out of hyper's debug output.
        value.set_sensitive(true);
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::BadResponse {
            target: target.to_owned(),
            reason: format!("cannot build the request: {e}"),
        })?;

    let (mut sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(http_error)?;
    // The connection future does the I/O; it ends when the exchange is over
    // and `sender` is dropped.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| ClientError::BadResponse {
            target: target.to_owned(),
            reason: format!("cannot read the answer: {e}"),
        })?
        .to_bytes();
    drop(sender);
    // The answer is complete; an error closing the connection changes nothing.
    let _ = driver.await;
    Ok((status, body))
}

/// Percent-encodes a path segment: names are letters, digits, `-`, `_` and
/// `.`, but a typo must reach the daemon intact to be reported as unknown.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

// ---- the CLI's commands -------------------------------------------------------

/// A CLI command that talks to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Status {
        json: bool,
    },
    SetDrained {
        service: String,
        backend: String,
        drained: bool,
    },
    Reload,
}

/// Runs `action` against `endpoint` and returns what to print on stdout.
pub async fn execute(endpoint: Endpoint, action: &Action) -> Result<String, ClientError> {
    let client = AdminClient::new(endpoint);
    match action {
        Action::Status { json } => {
            let status = client.status().await?;
            if *json {
                let mut text =
                    serde_json::to_string_pretty(&status).map_err(|e| ClientError::BadResponse {
                        target: client.endpoint.target(),
                        reason: e.to_string(),
                    })?;
                text.push('\n');
                Ok(text)
            } else {
                Ok(render_status(&status))
            }
        }
        Action::SetDrained {
            service,
            backend,
            drained,
        } => {
            client.set_drained(service, backend, *drained).await?;
            Ok(if *drained {
                format!("{service}/{backend}: drained (no new connections; established ones continue)\n")
            } else {
                format!("{service}/{backend}: enabled\n")
            })
        }
        Action::Reload => {
            let message = client.reload().await?;
            Ok(format!("reloaded: {message}\n"))
        }
    }
}

// ---- human rendering ---------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A plain-text table: columns padded to their widest cell; the last column
/// is not padded, so a long last cell (a check error) does not widen others.
struct Table {
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[(&str, Align)]) -> Self {
        Self {
            align: header.iter().map(|(_, a)| *a).collect(),
            rows: vec![header.iter().map(|(h, _)| (*h).to_owned()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self, indent: &str, out: &mut String) {
        let columns = self.align.len();
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                let width = widths[i];
                match (self.align[i], last) {
                    (Align::Left, true) => line.push_str(cell),
                    (Align::Left, false) => {
                        let _ = write!(line, "{cell:<width$}");
                    }
                    (Align::Right, _) => {
                        let _ = write!(line, "{cell:>width$}");
                    }
                }
                if !last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// "HH:MM:SS.mmm UTC" of a UNIX time in milliseconds.
fn clock_time(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let seconds = (unix_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{ms:03} UTC",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// The failover part of `xlb status`.
fn render_vrrp(vrrp: &VrrpStatus, out: &mut String) {
    out.push('\n');
    let master = vrrp.current_master.as_deref().unwrap_or("unknown");
    let _ = writeln!(
        out,
        "vrrp {}  vrid {} v{} on {} from {}  priority {}{}  master {master}  adverts every {} ms",
        vrrp.state,
        vrrp.vrid,
        vrrp.version,
        vrrp.interface,
        vrrp.source_address,
        vrrp.priority,
        if vrrp.priority == vrrp.configured_priority {
            String::new()
        } else {
            format!(" (configured {})", vrrp.configured_priority)
        },
        vrrp.advert_interval_ms,
    );
    let rejected: Vec<String> = vrrp
        .adverts_rejected
        .iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    let _ = writeln!(
        out,
        "  floating {}  adverts sent {} received {}  rejected {}",
        vrrp.virtual_addresses.join(","),
        vrrp.adverts_sent_total,
        vrrp.adverts_received_total,
        if rejected.is_empty() {
            "0".to_owned()
        } else {
            rejected.join(" ")
        },
    );
    for track in &vrrp.tracks {
        let effect = track
            .weight
            .map_or("fault".to_owned(), |w| format!("weight {w:+}"));
        let _ = writeln!(
            out,
            "  track {:<5} {} ({effect}): {}",
            if track.ok { "ok" } else { "FAIL" },
            track.name,
            track.detail
        );
    }
    for link in &vrrp.peer_links {
        let _ = writeln!(
            out,
            "  peer link {} {}  (closed {} times)",
            link.peer,
            if link.up { "up" } else { "down" },
            link.closes_total
        );
    }
    for mover in &vrrp.movers {
        if mover.last_action.is_empty() {
            let _ = writeln!(out, "  mover {}: no action yet", mover.mover);
        } else {
            let _ = writeln!(
                out,
                "  mover {}: {} {}: {}",
                mover.mover,
                mover.last_action,
                if mover.ok { "ok" } else { "FAILED" },
                mover.detail
            );
        }
    }
    for transition in vrrp.transitions.iter().rev().take(5) {
        let _ = writeln!(
            out,
            "  {} {} -> {}: {}",
            clock_time(transition.at_unix_ms),
            transition.from,
            transition.to,
            transition.reason
        );
    }
}

/// The `xlb status` view: a header, then per service a summary line and a
/// table of its backends, then the non-zero global counters.
#[must_use]
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();
    let uptime = status.now_unix.saturating_sub(status.started_at_unix);
    let _ = write!(out, "xlb: {}, up {}", status.config_path, human_duration(uptime));
    if status.conntrack_capacity > 0 {
        #[expect(clippy::cast_precision_loss, reason = "a percentage to one decimal")]
        let percent = status.conntrack_entries as f64 * 100.0 / status.conntrack_capacity as f64;
        let _ = write!(
            out,
            ", conntrack {}/{} entries ({percent:.1}%)",
            status.conntrack_entries, status.conntrack_capacity
        );
    }
    out.push('\n');
    if let Some(reload) = &status.last_reload {
        let ago = human_duration(status.now_unix.saturating_sub(reload.at_unix));
        let outcome = if reload.ok { "ok" } else { "REFUSED" };
        let _ = writeln!(out, "last reload {ago} ago: {outcome}: {}", reload.message);
    }

    for service in &status.services {
        out.push('\n');
        let _ = write!(
            out,
            "{}  {}:{}/{}  backends {}/{} active  connections {}  rate {:.1}/s  check {}",
            service.name,
            service.addresses.join(","),
            service.port,
            service.protocol,
            service.active_backends,
            service.backends.len(),
            service.connections_total,
            service.connection_rate,
            service.check,
        );
        if service.refused_total > 0 {
            let _ = write!(out, "  refused {}", service.refused_total);
        }
        out.push('\n');
        if service.backends.is_empty() {
            continue;
        }
        let checked = service.check != "none";
        let mut table = Table::new(&[
            ("BACKEND", Align::Left),
            ("ADDRESS", Align::Left),
            ("STATE", Align::Left),
            ("WEIGHT", Align::Right),
            ("ACTIVE", Align::Right),
            ("CONNS", Align::Right),
            ("BYTES TO", Align::Right),
            ("BYTES FROM", Align::Right),
            ("CHECKS/FAILED", Align::Right),
            ("LAST CHECK", Align::Left),
        ]);
        for backend in &service.backends {
            let mut state = backend.state.as_str().to_owned();
            // DRAIN says it all; a drained backend that is also DOWN shows both.
            if backend.drained && backend.state != BackendState::Drain {
                state.push_str(",drained");
            }
            table.push(vec![
                backend.name.clone(),
                backend.address.clone(),
                state,
                backend.weight.to_string(),
                backend.active_connections.to_string(),
                backend.connections_total.to_string(),
                human_bytes(backend.bytes_to_total),
                human_bytes(backend.bytes_from_total),
                if checked {
                    format!("{}/{}", backend.checks_total, backend.check_failures_total)
                } else {
                    "-".into()
                },
                match (&backend.last_check, checked) {
                    (Some(result), true) => result.clone(),
                    (None, true) => "(not yet)".into(),
                    (_, false) => "-".into(),
                },
            ]);
        }
        table.render("  ", &mut out);
    }

    if let Some(vrrp) = &status.vrrp {
        render_vrrp(vrrp, &mut out);
    }

    let counters: Vec<String> = status
        .counters
        .iter()
        .filter(|c| c.value > 0)
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    if !counters.is_empty() {
        out.push('\n');
        out.push_str("counters:");
        // Wrapped at about 100 columns, continuation lines indented.
        let mut width = "counters:".len();
        for counter in counters {
            if width + 1 + counter.len() > 100 {
                out.push_str("\n ");
                width = 1;
            }
            out.push(' ');
            out.push_str(&counter);
            width += 1 + counter.len();
        }
        out.push('\n');
    }
    out
}

/// 1536 -> "1.5 KiB".
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "shown to one decimal")]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds as the two largest units: "3d 4h", "2h 5m", "4m 10s", "42s".
fn human_duration(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendStatus, CounterValue, ReloadOutcome, ServiceStatus};

    fn sample() -> Status {
        let backend = |name: &str, address: &str, state| BackendStatus {
            name: name.into(),
            address: address.into(),
            state,
            weight: 1,
            healthy: state == BackendState::Up,
            checks_total: 120,
            last_check: Some("ok".into()),
            last_change_unix: 1_000,
            active_connections: 5,
            snat_tuples: 0,
            connections_total: 6000,
            bytes_to_total: 1_258_291,
            bytes_from_total: 31_457_280,
            ..BackendStatus::default()
        };
        Status {
            config_path: "/etc/xlb/xlb.toml".into(),
            started_at_unix: 1_000,
            now_unix: 1_000 + 3 * 3600 + 12 * 60,
            last_reload: Some(ReloadOutcome {
                at_unix: 1_000 + 3 * 3600 + 7 * 60,
                ok: false,
                message: "/etc/xlb/xlb.toml:12: port 0 is out of range".into(),
            }),
            services: vec![
                ServiceStatus {
                    name: "frontend".into(),
                    addresses: vec!["198.51.100.100".into(), "198.51.100.50".into()],
                    port: 3000,
                    protocol: "tcp".into(),
                    check: "http".into(),
                    active_backends: 1,
                    connections_total: 12_345,
                    refused_total: 3,
                    connection_rate: 3.25,
                    backends: vec![
                        backend("web1", "203.0.113.11:3000", BackendState::Up),
                        BackendStatus {
                            check_failures_total: 4,
                            last_check: Some("connect: Connection refused".into()),
                            downs_total: 1,
                            ..backend("web2", "203.0.113.12:3000", BackendState::Down)
                        },
                        BackendStatus {
                            drained: true,
                            weight: 2,
                            ..backend("web3-long-name", "203.0.113.13:3000", BackendState::Drain)
                        },
                    ],
                    ..ServiceStatus::default()
                },
                ServiceStatus {
                    name: "dns".into(),
                    addresses: vec!["198.51.100.100".into()],
                    port: 53,
                    protocol: "udp".into(),
                    check: "none".into(),
                    active_backends: 1,
                    backends: vec![BackendStatus {
                        last_check: None,
                        ..backend("ns1", "203.0.113.11:5353", BackendState::Up)
                    }],
                    ..ServiceStatus::default()
                },
            ],
            counters: vec![
                CounterValue {
                    name: "forward_new".into(),
                    value: 12_345,
                },
                CounterValue {
                    name: "drop_fragment".into(),
                    value: 0,
                },
                CounterValue {
                    name: "pass_not_service".into(),
                    value: 77,
                },
            ],
            conntrack_entries: 1_234,
            conntrack_capacity: 262_144,
            vrrp: None,
        }
    }

    #[test]
    fn status_renders_services_backends_and_counters() {
        let text = render_status(&sample());
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "xlb: /etc/xlb/xlb.toml, up 3h 12m, conntrack 1234/262144 entries (0.5%)"
        );
        assert_eq!(
            lines[1],
            "last reload 5m 0s ago: REFUSED: /etc/xlb/xlb.toml:12: port 0 is out of range"
        );
        assert!(text.contains(
            "frontend  198.51.100.100,198.51.100.50:3000/tcp  backends 1/3 active  connections 12345  \
             rate 3.2/s  check http  refused 3\n"
        ));
        assert!(text.contains(
            "dns  198.51.100.100:53/udp  backends 1/1 active  connections 0  rate 0.0/s  check none\n"
        ));
        let row = |name: &str| {
            *lines
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no row for {name} in\n{text}"))
        };
        let web2 = row("web2 ");
        for part in [
            "203.0.113.12:3000",
            "DOWN",
            "6000",
            "1.2 MiB",
            "30.0 MiB",
            "120/4",
            "connect: Connection refused",
        ] {
            assert!(web2.contains(part), "{part:?} missing in {web2:?}");
        }
        assert!(
            row("web3-long-name").contains(" DRAIN "),
            "drained shows once: {}",
            row("web3-long-name")
        );
        assert!(
            row("ns1").ends_with("-  -"),
            "no checks for check = none: {}",
            row("ns1")
        );
        assert!(text.contains("\ncounters: forward_new=12345 pass_not_service=77\n"));
        assert!(!text.contains("drop_fragment"), "zero counters are left out");
        assert!(!text.lines().any(|l| l.ends_with(' ')), "no trailing spaces");
    }

    #[test]
    fn backend_columns_line_up() {
        let text = render_status(&sample());
        let header = text.lines().find(|l| l.contains("BACKEND")).expect("header");
        let web1 = text.lines().find(|l| l.contains("web1")).expect("web1");
        let web3 = text.lines().find(|l| l.contains("web3-long-name")).expect("web3");
        // Left-aligned columns start where their heading starts.
        let column = |line: &str, needle: &str| line.find(needle).expect(needle);
        assert_eq!(column(header, "ADDRESS"), column(web1, "203.0.113.11"));
        assert_eq!(column(header, "ADDRESS"), column(web3, "203.0.113.13"));
        assert_eq!(column(header, "STATE"), column(web1, "UP"));
        assert_eq!(column(header, "LAST CHECK"), column(web1, "ok"));
        // Right-aligned columns end where their heading ends.
        let end = |line: &str, needle: &str| column(line, needle) + needle.len();
        assert_eq!(end(header, "CONNS"), end(web1, " 6000"));
    }

    #[test]
    fn numbers_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(250), "4m 10s");
        assert_eq!(human_duration(7500), "2h 5m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600 + 59), "3d 4h");
    }

    #[test]
    fn urls_and_segments() {
        assert_eq!(parse_url("http://10.0.0.5:9901").expect("ok"), "10.0.0.5:9901");
        assert_eq!(parse_url("http://[::1]:9901/").expect("ok"), "[::1]:9901");
        assert_eq!(
            parse_url("http://lb1.internal:9901").expect("ok"),
            "lb1.internal:9901"
        );
        for bad in [
            "10.0.0.5:9901",
            "https://10.0.0.5:9901",
            "http://10.0.0.5",
            "http://10.0.0.5:9901/v1",
            "http://user:pw@10.0.0.5:9901",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(percent_encode("web-1_a.b"), "web-1_a.b");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_token_file_is_read_and_never_shown() {
        let path = std::env::temp_dir().join(format!("xlb-token-{}", std::process::id()));
        std::fs::write(&path, "  0123456789abcdef-secret \n").expect("write");
        let endpoint = Endpoint::tcp("http://127.0.0.1:9901", &path).expect("endpoint");
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(
            endpoint,
            Endpoint::Tcp {
                authority: "127.0.0.1:9901".into(),
                token: "0123456789abcdef-secret".into()
            }
        );
        assert!(!format!("{endpoint:?}").contains("secret"));
        let error = Endpoint::tcp("http://127.0.0.1:9901", &path).expect_err("gone");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read the token file {}: No such file or directory",
                path.display()
            )
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connection_errors_are_explained() {
        let client = AdminClient::new(Endpoint::Unix("/nonexistent/xlb/admin.sock".into()));
        let error = client.status().await.expect_err("no daemon");
        assert_eq!(
            error.to_string(),
            "cannot connect to /nonexistent/xlb/admin.sock: is xlb running? (No such file or directory)"
        );
        let error = connect_error(
            "/run/xlb/admin.sock".into(),
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            error.to_string(),
            "permission denied: the admin socket is for root (/run/xlb/admin.sock)"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_daemon_times_out() {
        let path = std::env::temp_dir().join(format!("xlb-silent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // Accepts (through the backlog) but never answers.
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let client = AdminClient::new(Endpoint::Unix(path.clone())).with_timeout(Duration::from_millis(200));
        let error = client.status().await.expect_err("silence");
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
        drop(listener);
        std::fs::remove_file(&path).expect("cleanup");
    }
}
