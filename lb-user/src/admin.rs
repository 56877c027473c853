//! The admin API: HTTP/1.1 with JSON bodies, on a Unix socket for root and
//! optionally on a TCP listener guarded by a bearer token. Every request is
//! handed to the controller through its `ControlHandle`; this module only
//! authenticates, translates and answers.
//!
//! Routes:
//! - `GET /v1/status`: the `Status` snapshot.
//! - `POST /v1/reload`: `{"ok":true,"message":...}`.
//! - `POST /v1/services/{service}/backends/{backend}/drain` and `.../enable`:
//!   `{"ok":true}`.
//!
//! Errors are `{"error": "..."}` with the controller's message. The controller
//! answers with a bare `String`, so the status code is chosen from the request
//! and the message (see `ErrorKind::of`): "shutting down" is 503; for drain and
//! enable a message saying "unknown" (or "no such") is 404; a refused reload is
//! 422 (the request was fine, the config file is not) unless the controller
//! says "applying the new config failed" (500); anything else is 500.
//! A controller that does not answer within [`CONTROLLER_TIMEOUT`] gives 504.
//!
//! Use: bind first (so that a bad socket path or a busy port stops start-up
//! with a clear error), then spawn `serve`:
//!
//! ```text
//! let admin = AdminServer::bind_unix(&config.admin.socket).await?;
//! tokio::spawn(admin.serve(control.clone(), async move { let _ = stop.wait_for(|s| *s).await; }));
//! ```

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tracing::{debug, info, warn};

use crate::{
    bounded_http::{self, Limits},
    config::Secret,
    control::{self, ControlHandle},
    status::Status,
};

/// How long a handler waits for the controller. Below the CLI's 10 s timeout,
/// so that the operator sees this error rather than a bare client timeout.
pub const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(8);
/// The listeners' bounds (connections, header and connection time-outs).
const LIMITS: Limits = Limits::DEFAULT;
/// How the admin API is named in logs.
const WHAT: &str = "admin API";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create the admin socket's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot inspect the admin socket path {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket: refusing to replace it with the admin socket")]
    NotASocket { path: PathBuf },
    #[error("another process (another xlb?) is serving the admin socket {path}")]
    InUse { path: PathBuf },
    #[error("cannot remove the stale admin socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot listen on the admin socket {path}: {source}")]
    BindUnix { path: PathBuf, source: io::Error },
    #[error("cannot restrict the admin socket {path} to root: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("cannot listen for the admin API on {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("the admin API token is empty")]
    EmptyToken,
}

/// Who sent a request, for the logs.
#[derive(Clone, Debug)]
enum Peer {
    Unix { uid: u32, pid: Option<i32> },
    Tcp(SocketAddr),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix { uid, pid: Some(pid) } => write!(f, "uid {uid} pid {pid}"),
            Self::Unix { uid, pid: None } => write!(f, "uid {uid}"),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// The TCP listener's bearer token. Never printed.
struct Token(Box<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

enum Listener {
    Unix {
        listener: UnixListener,
        /// Removes the socket file when the server stops (or is dropped
        /// without serving).
        _file: SocketFile,
    },
    Tcp {
        listener: TcpListener,
        token: Arc<Token>,
    },
}

/// A bound admin listener, ready to [`serve`](AdminServer::serve).
pub struct AdminServer {
    listener: Listener,
}

impl AdminServer {
    /// Binds the root-only Unix socket at `path`: creates its directory if
    /// missing (mode 0755), replaces a stale socket left by a killed daemon
    /// (but not a live one, nor a file that is not a socket), and makes the
    /// socket mode 0600. Must be called inside the tokio runtime.
    pub async fn bind_unix(path: &Path) -> Result<Self, AdminError> {
        prepare_socket_path(path).await?;
        let listener = UnixListener::bind(path).map_err(|source| AdminError::BindUnix {
            path: path.to_owned(),
            source,
        })?;
        // From here on the guard removes the file on any error.
        let file = SocketFile::new(path);
        // Between bind and chmod the socket has the umask's mode; a non-root
        // client connecting in that window is still refused by the peer
        // credentials check.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            AdminError::Chmod {
                path: path.to_owned(),
                source,
            }
        })?;
        info!(socket = %path.display(), "admin API listening");
        Ok(Self {
            listener: Listener::Unix {
                listener,
                _file: file,
            },
        })
    }

    /// Binds the TCP listener; every request on it must carry
    /// `Authorization: Bearer <token>`. Must be called inside the tokio runtime.
    pub async fn bind_tcp(addr: SocketAddr, token: &Secret) -> Result<Self, AdminError> {
        Self::bind_tcp_with(addr, Token(token.expose().as_bytes().into())).await
    }

    async fn bind_tcp_with(addr: SocketAddr, token: Token) -> Result<Self, AdminError> {
        if token.0.is_empty() {
            return Err(AdminError::EmptyToken);
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::BindTcp { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        info!(listen = %local, "admin API listening (bearer token required)");
        Ok(Self {
            listener: Listener::Tcp {
                listener,
                token: Arc::new(token),
            },
        })
    }

    /// The TCP listener's address (with the port the kernel chose for port 0);
    /// `None` for the Unix socket.
    #[must_use]
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp { listener, .. } => listener.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, removes the
    /// socket file, and gives requests in flight 2 s to finish (see
    /// `bounded_http`). Errors on single connections are logged, never
    /// returned.
    pub async fn serve(self, control: ControlHandle, shutdown: impl Future<Output = ()>) {
        let router = router(control);
        match self.listener {
            Listener::Unix { listener, _file } => {
                let (root_router, refused_router) = (router, forbidden_router());
                let (listening, root, refused) = (&listener, &root_router, &refused_router);
                let accept = move || async move {
                    let (stream, _) = listening.accept().await?;
                    let cred = match stream.peer_cred() {
                        Ok(cred) => cred,
                        Err(e) => {
                            warn!(error = %e, "admin socket: cannot read the peer's credentials, closing");
                            return Ok(None);
                        }
                    };
                    let peer = Peer::Unix {
                        uid: cred.uid(),
                        pid: cred.pid(),
                    };
                    let router = unix_peer_router(&peer, root, refused).layer(Extension(peer.clone()));
                    Ok(Some((stream, router, peer.to_string())))
                };
                let draining = bounded_http::accept_until(WHAT, LIMITS, accept, shutdown).await;
                // Dropping the listener and then the guard removes the
                // socket, so new clients see "is xlb running?" at once.
                drop(listener);
                drop(_file);
                draining.finish().await;
            }
            Listener::Tcp { listener, token } => {
                let router = router.layer(middleware::from_fn_with_state(token, require_token));
                bounded_http::serve_tcp(
                    listener,
                    WHAT,
                    LIMITS,
                    |addr| router.clone().layer(Extension(Peer::Tcp(addr))),
                    shutdown,
                )
                .await;
            }
        }
    }
}

/// The router for a peer of the Unix socket: the API for root (uid 0), a 403
/// to every request from anyone else. The socket's mode already keeps other
/// users out; this holds when the mode is opened up, and between bind and chmod.
fn unix_peer_router(peer: &Peer, root: &Router, refused: &Router) -> Router {
    match peer {
        Peer::Unix { uid: 0, .. } => root.clone(),
        _ => {
            warn!(peer = %peer, "admin socket: refused a non-root peer");
            refused.clone()
        }
    }
}

/// Binds the root-only Unix socket at `path` and serves it until `shutdown`
/// completes; the socket file is removed on return.
pub async fn serve_unix(
    path: &Path,
    control: ControlHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminError> {
    AdminServer::bind_unix(path).await?.serve(control, shutdown).await;
    Ok(())
}

/// Binds the token-guarded TCP listener and serves it until `shutdown`
/// completes.
pub async fn serve_tcp(
    addr: SocketAddr,
    token: &Secret,
    control: ControlHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminError> {
    AdminServer::bind_tcp(addr, token)
        .await?
        .serve(control, shutdown)
        .await;
    Ok(())
}

// ---- the socket file -------------------------------------------------------

/// Makes `path` free for a new socket: creates the directory, removes a stale
/// socket, refuses to touch anything else.
async fn prepare_socket_path(path: &Path) -> Result<(), AdminError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
                .map_err(|source| AdminError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminError::Inspect {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::NotASocket {
            path: path.to_owned(),
        });
    }
    // A socket someone still accepts on belongs to a running daemon: taking
    // it over would leave that daemon unreachable. A killed daemon's socket
    // refuses connections. A listener too busy to accept within a second is
    // alive as well.
    match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        Ok(Ok(_)) | Err(_) => {
            return Err(AdminError::InUse {
                path: path.to_owned(),
            })
        }
        Ok(Err(e)) => debug!(socket = %path.display(), error = %e, "removing a stale admin socket"),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AdminError::RemoveStale {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes the socket file on drop, if it is still the one we bound: after a
/// restart the path may hold the new daemon's socket.
struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        let identity = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        Self {
            path: path.to_owned(),
            identity,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.identity {
            if let Err(e) = std::fs::remove_file(&self.path) {
                warn!(socket = %self.path.display(), error = %e, "cannot remove the admin socket");
            }
        }
    }
}

// ---- authentication ----------------------------------------------------------

/// Compares two byte strings in time that depends on `expected`'s length only,
/// not on where `given` first differs, so the token cannot be guessed byte by
/// byte from response times.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    std::hint::black_box(diff) == 0 && !expected.is_empty()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 7235).
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

fn authorized(headers: &HeaderMap, token: &Token) -> bool {
    bearer_token(headers).is_some_and(|given| constant_time_eq(given, &token.0))
}

async fn require_token(
    State(token): State<Arc<Token>>,
    peer: Option<Extension<Peer>>,
    request: Request,
    next: Next,
) -> Response {
    if authorized(request.headers(), &token) {
        return next.run(request).await;
    }
    // Neither the expected nor the given token is logged or echoed.
    warn!(
        peer = %PeerLog(peer.as_deref()),
        method = %request.method(),
        path = request.uri().path(),
        "admin API: refused a request without a valid bearer token"
    );
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token").into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The answer to every request on a connection from a non-root peer.
fn forbidden_router() -> Router {
    Router::new().fallback(|| async {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission denied: the admin socket is for root",
        )
    })
}

// ---- routes ----------------------------------------------------------------

#[derive(Clone)]
struct AppState {
    control: ControlHandle,
}

fn router(control: ControlHandle) -> Router {
    Router::new()
        .route("/v1/status", get(get_status))
        .route("/v1/reload", post(reload))
        .route("/v1/services/{service}/backends/{backend}/drain", post(drain))
        .route("/v1/services/{service}/backends/{backend}/enable", post(enable))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .with_state(AppState { control })
}

/// An error answer: `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// What a request was, to choose the status code of the controller's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    Status,
    Reload,
    Backend,
}

impl ErrorKind {
    /// The controller's errors are plain strings; this is the one place that
    /// reads them.
    fn of(self, message: &str) -> StatusCode {
        let lower = message.to_ascii_lowercase();
        if lower.contains("shutting down") {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        match self {
            Self::Backend if lower.contains("unknown") || lower.contains("no such") => StatusCode::NOT_FOUND,
            // The controller's words for a config that validated but could not
            // be written to the maps: the daemon's fault, not the file's.
            Self::Reload if lower.contains("applying the new config failed") => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Reload => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Status | Self::Backend => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

async fn ask(
    control: &ControlHandle,
    request: control::Request,
    kind: ErrorKind,
) -> Result<control::Response, ApiError> {
    match tokio::time::timeout(CONTROLLER_TIMEOUT, control.ask(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(message)) => Err(ApiError::new(kind.of(&message), message)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the daemon's controller did not answer within {} s",
                CONTROLLER_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn unexpected(response: &control::Response) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer from the controller: {response:?}"),
    )
}

/// Formats an optional peer for the logs.
struct PeerLog<'a>(Option<&'a Peer>);

impl fmt::Display for PeerLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(peer) => peer.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

async fn get_status(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
) -> Result<Json<Status>, ApiError> {
    debug!(peer = %PeerLog(peer.as_deref()), "admin API: status");
    match ask(&state.control, control::Request::Status, ErrorKind::Status).await? {
        control::Response::Status(status) => Ok(Json(*status)),
        other => Err(unexpected(&other)),
    }
}

async fn reload(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = PeerLog(peer.as_deref());
    info!(peer = %peer, "admin API: reload requested");
    match ask(&state.control, control::Request::Reload, ErrorKind::Reload).await {
        Ok(control::Response::Reloaded(message)) => Ok(Json(json!({ "ok": true, "message": message }))),
        Ok(other) => Err(unexpected(&other)),
        Err(error) => {
            warn!(peer = %peer, error = %error.message, "admin API: reload refused");
            Err(error)
        }
    }
}

async fn drain(
    state: State<AppState>,
    peer: Option<Extension<Peer>>,
    names: UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_drained(state, peer, names, true).await
}

async fn enable(
    state: State<AppState>,
    peer: Option<Extension<Peer>>,
    names: UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_drained(state, peer, names, false).await
}

async fn set_drained(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    UrlPath((service, backend)): UrlPath<(String, String)>,
    drained: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = PeerLog(peer.as_deref());
    let action = if drained { "drain" } else { "enable" };
    let request = control::Request::SetDrained {
        service: service.clone(),
        backend: backend.clone(),
        drained,
    };
    match ask(&state.control, request, ErrorKind::Backend).await {
        Ok(control::Response::Done) => {
            info!(peer = %peer, service, backend, "admin API: {action}");
            Ok(Json(json!({ "ok": true })))
        }
        Ok(other) => Err(unexpected(&other)),
        Err(error) => {
            warn!(peer = %peer, service, backend, error = %error.message, "admin API: {action} refused");
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tokio::sync::{mpsc, oneshot};
    use tower::ServiceExt;

    use super::*;
    use crate::{
        admin_client::{AdminClient, ClientError, Endpoint},
        control::{Envelope, Response as Answer},
        status::ServiceStatus,
        test_support::within,
    };

    const TOKEN: &str = "0123456789abcdef-test-token";

    /// A controller that answers each request with `answer`.
    fn fake_controller(
        answer: impl Fn(&control::Request) -> Result<Answer, String> + Send + 'static,
    ) -> ControlHandle {
        let (sender, mut receiver) = mpsc::channel::<Envelope>(8);
        tokio::spawn(async move {
            while let Some(envelope) = receiver.recv().await {
                let _ = envelope.reply.send(answer(&envelope.request));
            }
        });
        ControlHandle::new(sender)
    }

    fn sample_status() -> Status {
        Status {
            config_path: "/etc/xlb/xlb.toml".into(),
            services: vec![ServiceStatus {
                name: "frontend".into(),
                port: 3000,
                ..ServiceStatus::default()
            }],
            ..Status::default()
        }
    }

    /// The canned controller: knows service "frontend" with backend "web1";
    /// refuses reloads with a config error.
    fn canned(request: &control::Request) -> Result<Answer, String> {
        match request {
            control::Request::Status => Ok(Answer::Status(Box::new(sample_status()))),
            control::Request::Reload => Err("/etc/xlb/xlb.toml:12: port 0 is out of range".into()),
            control::Request::SetDrained { service, backend, .. } => {
                if service != "frontend" {
                    Err(format!("unknown service {service:?}"))
                } else if backend != "web1" {
                    Err(format!("unknown backend {backend:?} in service {service:?}"))
                } else {
                    Ok(Answer::Done)
                }
            }
        }
    }

    /// A fresh directory under /tmp, removed by the test at its end.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xlb-admin-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn call(
        router: Router,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"secret-toke", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token!", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
        assert!(!constant_time_eq(b"", b""), "an empty token never matches");
        // A prefix padded with NULs must not match (missing bytes read as 0).
        assert!(!constant_time_eq(b"ab", b"ab\0"));
    }

    #[test]
    fn bearer_tokens_are_parsed() {
        let token = Token(TOKEN.as_bytes().into());
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("header"),
            );
            map
        };
        assert!(authorized(&headers(&format!("Bearer {TOKEN}")), &token));
        assert!(authorized(&headers(&format!("bearer  {TOKEN} ")), &token));
        assert!(!authorized(&headers(&format!("Basic {TOKEN}")), &token));
        assert!(!authorized(&headers("Bearer wrong-token-of-some-length"), &token));
        assert!(!authorized(&headers("Bearer"), &token));
        assert!(!authorized(&HeaderMap::new(), &token));
    }

    #[test]
    fn controller_errors_map_to_status_codes() {
        assert_eq!(
            ErrorKind::Backend.of("unknown backend \"x\""),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ErrorKind::Backend.of("map update failed"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ErrorKind::Reload.of("xlb.toml:3: bad"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ErrorKind::Reload.of("unknown key"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ErrorKind::Reload.of("applying the new config failed: map full"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ErrorKind::Status.of("the daemon is shutting down"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn routes_answer_with_json() {
        let router = router(fake_controller(canned));
        let (status, body) = call(router.clone(), Method::GET, "/v1/status", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let parsed: Status = serde_json::from_value(body).expect("a Status");
        assert_eq!(parsed, sample_status());

        let (status, body) = call(router.clone(), Method::POST, "/v1/reload", &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"], "/etc/xlb/xlb.toml:12: port 0 is out of range");

        let drain = "/v1/services/frontend/backends/web1/drain";
        let (status, body) = call(router.clone(), Method::POST, drain, &[]).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "ok": true })));
        let (status, body) = call(
            router.clone(),
            Method::POST,
            "/v1/services/frontend/backends/web9/enable",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "unknown backend \"web9\" in service \"frontend\"");

        let (status, body) = call(router.clone(), Method::GET, drain, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("GET")),
            "{body}"
        );
        let (status, body) = call(router, Method::GET, "/v2/nothing", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no such endpoint: GET /v2/nothing");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reload_success_and_unexpected_answers() {
        let router = router(fake_controller(|request| match request {
            control::Request::Reload => Ok(Answer::Reloaded("2 backends added".into())),
            _ => Ok(Answer::Done),
        }));
        let (status, body) = call(router.clone(), Method::POST, "/v1/reload", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "ok": true, "message": "2 backends added" }));
        let (status, body) = call(router, Method::GET, "/v1/status", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("unexpected")),
            "{body}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stopped_controller_is_503() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let (status, body) = call(router(ControlHandle::new(sender)), Method::GET, "/v1/status", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "the daemon is shutting down");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn non_root_peers_get_403() {
        let (status, body) = call(forbidden_router(), Method::GET, "/v1/status", &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "permission denied: the admin socket is for root");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_unix_socket_serves_the_api_to_uid_0_only() {
        let root = router(fake_controller(canned));
        let refused = forbidden_router();
        let peer = Peer::Unix { uid: 0, pid: Some(1) };
        let (status, body) = call(
            unix_peer_router(&peer, &root, &refused),
            Method::GET,
            "/v1/status",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_value::<Status>(body).expect("a Status"),
            sample_status()
        );
        for uid in [1, 1000, 65534, u32::MAX] {
            for pid in [Some(1), None] {
                let peer = Peer::Unix { uid, pid };
                for (method, uri) in [
                    (Method::GET, "/v1/status"),
                    (Method::POST, "/v1/reload"),
                    (Method::POST, "/v1/services/frontend/backends/web1/drain"),
                ] {
                    let (status, body) =
                        call(unix_peer_router(&peer, &root, &refused), method, uri, &[]).await;
                    assert_eq!(status, StatusCode::FORBIDDEN, "uid {uid} {uri}: {body}");
                    assert_eq!(
                        body,
                        json!({ "error": "permission denied: the admin socket is for root" }),
                        "uid {uid} {uri}"
                    );
                }
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unix_socket_is_served_to_root_and_removed_on_shutdown() {
        let dir = temp_dir("unix");
        let path = dir.join("run").join("admin.sock");
        let server = AdminServer::bind_unix(&path).await.expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("parent"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);

        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(fake_controller(canned), async move {
            let _ = stopped.await;
        }));

        let client = AdminClient::new(Endpoint::Unix(path.clone()));
        assert_eq!(client.status().await.expect("status"), sample_status());
        client.set_drained("frontend", "web1", true).await.expect("drain");
        client
            .set_drained("frontend", "web1", false)
            .await
            .expect("enable");
        match client.set_drained("backend", "web1", true).await {
            Err(ClientError::Server { status: 404, message }) => {
                assert_eq!(message, "unknown service \"backend\"")
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        match client.reload().await {
            Err(ClientError::Server { status: 422, message }) => {
                assert!(message.contains("xlb.toml:12"), "{message}")
            }
            other => panic!("expected a 422, got {other:?}"),
        }

        // A second daemon must not take over a live socket.
        match AdminServer::bind_unix(&path).await {
            Err(AdminError::InUse { .. }) => {}
            Err(e) => panic!("expected InUse, got {e}"),
            Ok(_) => panic!("expected InUse, got a second server"),
        }

        stop.send(()).expect("server running");
        within("the server's stop", task).await.expect("server task");
        assert!(!path.exists(), "the socket is removed on shutdown");
        let error = client.status().await.expect_err("no server");
        assert!(error.to_string().contains("is xlb running?"), "{error}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stale_sockets_are_replaced_and_other_files_kept() {
        let dir = temp_dir("stale");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("admin.sock");
        // A socket nobody listens on any more, as a killed daemon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let server = AdminServer::bind_unix(&path)
            .await
            .expect("stale socket replaced");
        drop(server);
        assert!(!path.exists(), "dropping an unserved server removes its socket");

        std::fs::write(&path, "not a socket").expect("write");
        match AdminServer::bind_unix(&path).await {
            Err(AdminError::NotASocket { .. }) => {}
            Err(e) => panic!("expected NotASocket, got {e}"),
            Ok(_) => panic!("a regular file was replaced"),
        }
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not a socket");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_requires_the_bearer_token() {
        let server = AdminServer::bind_tcp_with(
            "127.0.0.1:0".parse().expect("addr"),
            Token(TOKEN.as_bytes().into()),
        )
        .await
        .expect("bind");
        let addr = server.tcp_addr().expect("tcp");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(fake_controller(canned), async move {
            let _ = stopped.await;
        }));

        let good = AdminClient::new(Endpoint::Tcp {
            authority: addr.to_string(),
            token: TOKEN.into(),
        });
        assert_eq!(good.status().await.expect("status"), sample_status());
        good.set_drained("frontend", "web1", true).await.expect("drain");

        let bad = AdminClient::new(Endpoint::Tcp {
            authority: addr.to_string(),
            token: "0123456789abcdef-wrong-token".into(),
        });
        match bad.status().await {
            Err(ClientError::Server { status: 401, message }) => {
                assert_eq!(message, "missing or invalid bearer token");
            }
            other => panic!("expected a 401, got {other:?}"),
        }

        stop.send(()).expect("server running");
        within("the server's stop", task).await.expect("server task");
    }

    /// Scripts and probes speak HTTP/1.0 without a Host header.
    #[tokio::test(flavor = "current_thread")]
    async fn tcp_answers_plain_http_1_0() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let server = AdminServer::bind_tcp_with(
            "127.0.0.1:0".parse().expect("addr"),
            Token(TOKEN.as_bytes().into()),
        )
        .await
        .expect("bind");
        let addr = server.tcp_addr().expect("tcp");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(fake_controller(canned), async move {
            let _ = stopped.await;
        }));
        for (auth, expect) in [(TOKEN, " 200 "), ("0123456789abcdef-wrong", " 401 ")] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let request = format!("GET /v1/status HTTP/1.0\r\nAuthorization: Bearer {auth}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            within("the whole answer", stream.read_to_string(&mut response))
                .await
                .expect("read");
            assert!(
                response.starts_with("HTTP/1.") && response.contains(expect),
                "{response}"
            );
            assert!(!response.contains(TOKEN), "the token is never echoed");
        }
        stop.send(()).expect("server running");
        within("the server's stop", task).await.expect("server task");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_without_a_token_is_401_and_names_the_scheme() {
        let token = Arc::new(Token(TOKEN.as_bytes().into()));
        let router =
            router(fake_controller(canned)).layer(middleware::from_fn_with_state(token, require_token));
        let request = axum::http::Request::get("/v1/status")
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("JSON"),
            json!({ "error": "missing or invalid bearer token" })
        );
    }
}
