//! A local stand-in for DigitalOcean: the documented reserved-IP endpoints the
//! mover uses and the two metadata endpoints, on 127.0.0.1 in a thread of its
//! own (so sync and async tests can both use it), with scriptable behaviour
//! and a record of every request.
//!
//! Like the real API, an assign action answers `in-progress` when created and
//! keeps the reserved IP `locked` until it ends; here it ends on a poll (after
//! [`FakeDigitalOcean::keep_actions_in_progress_for`] polls) or when a test
//! calls [`FakeDigitalOcean::complete_pending_actions`].

use std::{
    collections::{BTreeMap, VecDeque},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Instant,
};

use anyhow::Context;
use axum::{
    body::Bytes,
    extract::State as AxumState,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How a request's `Authorization` header compared with the expected token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Missing,
    Correct,
    Wrong,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub auth: Auth,
    pub content_type: Option<String>,
    pub body: String,
    pub at: Instant,
}

/// The endpoints whose answers a test can replace with a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    GetReservedIp,
    PostAction,
    GetAction,
    MetadataDropletId,
    MetadataActive,
}

/// A failure answered instead of the endpoint's normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 429, with a `Retry-After` of this many seconds if given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// 500.
    ServerError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActionStatus {
    InProgress,
    Completed,
    Errored,
}

impl ActionStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Errored => "errored",
        }
    }
}

struct FakeAction {
    target_droplet: u64,
    status: ActionStatus,
    polls_left: u32,
    ends_errored: bool,
}

struct State {
    token: String,
    reserved_ip: Ipv4Addr,
    /// The droplet the metadata service describes.
    this_droplet: u64,
    assigned_to: Option<u64>,
    actions: BTreeMap<u64, FakeAction>,
    next_action_id: u64,
    polls_in_progress: u32,
    next_action_errors: bool,
    failures: Vec<(Endpoint, VecDeque<Failure>)>,
    requests: Vec<Recorded>,
}

impl State {
    fn locked(&self) -> bool {
        self.actions
            .values()
            .any(|action| action.status == ActionStatus::InProgress)
    }

    fn take_failure(&mut self, endpoint: Endpoint) -> Option<Failure> {
        self.failures
            .iter_mut()
            .find(|(e, _)| *e == endpoint)
            .and_then(|(_, queue)| queue.pop_front())
    }

    fn finish(&mut self, action_id: u64) {
        let Some(action) = self.actions.get_mut(&action_id) else {
            return;
        };
        if action.status != ActionStatus::InProgress {
            return;
        }
        if action.ends_errored {
            action.status = ActionStatus::Errored;
        } else {
            action.status = ActionStatus::Completed;
            self.assigned_to = Some(action.target_droplet);
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock must not hide its own
    // failure behind a poisoned mutex in the next assertion.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fake server; stops on drop.
pub struct FakeDigitalOcean {
    url: String,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDigitalOcean {
    /// Serves `reserved_ip` (unassigned) to clients presenting `token`; the
    /// metadata service says this is droplet `this_droplet`.
    pub fn start(token: &str, reserved_ip: Ipv4Addr, this_droplet: u64) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            reserved_ip,
            this_droplet,
            assigned_to: None,
            actions: BTreeMap::new(),
            next_action_id: 1000,
            polls_in_progress: 0,
            next_action_errors: false,
            failures: Vec::new(),
            requests: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("cannot bind the fake DigitalOcean API")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let router = Router::new().fallback(handle).with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-digitalocean".into())
            .spawn(move || serve(listener, router, stopped))
            .context("cannot start the fake DigitalOcean thread")?;
        Ok(Self {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`: both the API and the metadata URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Points the reserved IP at `droplet` (None: unassigned), as another
    /// node or a person in the control panel would.
    pub fn point_at(&self, droplet: Option<u64>) {
        lock(&self.state).assigned_to = droplet;
    }

    /// The droplet the reserved IP points at now.
    #[must_use]
    pub fn droplet(&self) -> Option<u64> {
        lock(&self.state).assigned_to
    }

    /// Whether an action on the reserved IP is still in progress.
    #[must_use]
    pub fn locked(&self) -> bool {
        lock(&self.state).locked()
    }

    /// Actions created from now on answer `in-progress` to this many polls
    /// and end on the next one.
    pub fn keep_actions_in_progress_for(&self, polls: u32) {
        lock(&self.state).polls_in_progress = polls;
    }

    /// The next action created ends `errored`, leaving the IP where it was.
    pub fn error_next_action(&self) {
        lock(&self.state).next_action_errors = true;
    }

    /// Ends every action still in progress, as time would at DigitalOcean.
    pub fn complete_pending_actions(&self) {
        let mut state = lock(&self.state);
        let pending: Vec<u64> = state
            .actions
            .iter()
            .filter(|(_, action)| action.status == ActionStatus::InProgress)
            .map(|(id, _)| *id)
            .collect();
        for action_id in pending {
            state.finish(action_id);
        }
    }

    /// The next `times` requests to `endpoint` get `failure` instead.
    pub fn fail_next(&self, endpoint: Endpoint, failure: Failure, times: usize) {
        let mut state = lock(&self.state);
        let index = match state.failures.iter().position(|(e, _)| *e == endpoint) {
            Some(index) => index,
            None => {
                state.failures.push((endpoint, VecDeque::new()));
                state.failures.len() - 1
            }
        };
        state.failures[index]
            .1
            .extend(std::iter::repeat_n(failure, times));
    }

    /// Every request so far, oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// The requests so far with this method and path.
    #[must_use]
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for FakeDigitalOcean {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: std::net::TcpListener, router: Router, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fake DigitalOcean API");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("the fake DigitalOcean API serves");
    });
}

async fn handle(
    AxumState(state): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    let auth = match headers.get(header::AUTHORIZATION) {
        None => Auth::Missing,
        Some(value) if value.as_bytes() == format!("Bearer {}", state.token).as_bytes() => Auth::Correct,
        Some(_) => Auth::Wrong,
    };
    let path = uri.path().to_owned();
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        auth,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });

    let reserved_ip_path = format!("/v2/reserved_ips/{}", state.reserved_ip);
    let segments: Vec<&str> = path
        .strip_prefix(reserved_ip_path.as_str())
        .map(|rest| rest.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let endpoint = match (&method, path.as_str(), segments.as_slice()) {
        (&Method::GET, "/metadata/v1/id", _) => Endpoint::MetadataDropletId,
        (&Method::GET, "/metadata/v1/reserved_ip/ipv4/active", _) => Endpoint::MetadataActive,
        (&Method::GET, p, []) if p == reserved_ip_path => Endpoint::GetReservedIp,
        (&Method::POST, _, ["actions"]) => Endpoint::PostAction,
        (&Method::GET, _, ["actions", _]) => Endpoint::GetAction,
        _ => {
            return api_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            )
        }
    };
    let is_api = !matches!(endpoint, Endpoint::MetadataDropletId | Endpoint::MetadataActive);
    if is_api && auth != Auth::Correct {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate you",
        );
    }
    if let Some(failure) = state.take_failure(endpoint) {
        return failure_response(failure);
    }
    match endpoint {
        Endpoint::MetadataDropletId => state.this_droplet.to_string().into_response(),
        Endpoint::MetadataActive => {
            // The real service says whether any reserved IP is active here;
            // this fake has just the one.
            let active = state.assigned_to == Some(state.this_droplet);
            active.to_string().into_response()
        }
        Endpoint::GetReservedIp => Json(reserved_ip_body(&state)).into_response(),
        Endpoint::PostAction => create_action(&mut state, &headers, &body),
        Endpoint::GetAction => {
            let Some(action_id) = segments.get(1).and_then(|id| id.parse::<u64>().ok()) else {
                return api_error(StatusCode::NOT_FOUND, "not_found", "No such action.");
            };
            poll_action(&mut state, action_id)
        }
    }
}

fn create_action(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next() == Some("application/json"));
    if !is_json {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Content-Type must be application/json",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body is not JSON.",
        );
    };
    let (Some("assign"), Some(target_droplet)) = (
        request.get("type").and_then(Value::as_str),
        request.get("droplet_id").and_then(Value::as_u64),
    ) else {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "type must be assign, with a droplet_id",
        );
    };
    if state.locked() {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "The reserved IP has a pending event.",
        );
    }
    let action_id = state.next_action_id;
    state.next_action_id += 1;
    state.actions.insert(
        action_id,
        FakeAction {
            target_droplet,
            status: ActionStatus::InProgress,
            polls_left: state.polls_in_progress,
            ends_errored: std::mem::take(&mut state.next_action_errors),
        },
    );
    (StatusCode::CREATED, Json(action_body(state, action_id))).into_response()
}

fn poll_action(state: &mut State, action_id: u64) -> Response {
    let Some(action) = state.actions.get_mut(&action_id) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "No such action.");
    };
    let ends_now = action.status == ActionStatus::InProgress && action.polls_left == 0;
    action.polls_left = action.polls_left.saturating_sub(1);
    if ends_now {
        state.finish(action_id);
    }
    Json(action_body(state, action_id)).into_response()
}

fn reserved_ip_body(state: &State) -> Value {
    let droplet = state
        .assigned_to
        .map(|id| json!({ "id": id, "name": format!("droplet-{id}"), "status": "active" }));
    json!({
        "reserved_ip": {
            "ip": state.reserved_ip.to_string(),
            "droplet": droplet,
            "region": { "name": "New York 3", "slug": "nyc3", "available": true },
            "locked": state.locked(),
            "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
        }
    })
}

fn action_body(state: &State, action_id: u64) -> Value {
    let status = state
        .actions
        .get(&action_id)
        .map_or(ActionStatus::Errored, |action| action.status);
    json!({
        "action": {
            "id": action_id,
            "status": status.as_str(),
            "type": "assign_ip",
            "started_at": "2026-01-01T00:00:00Z",
            "completed_at": if status == ActionStatus::InProgress { Value::Null } else { json!("2026-01-01T00:00:05Z") },
            "resource_id": u32::from(state.reserved_ip),
            "resource_type": "reserved_ip",
            "region_slug": "nyc3",
        }
    })
}

fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::TooManyRequests { retry_after_secs } => {
            let mut response = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "API Rate limit exceeded.",
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Failure::ServerError => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Unexpected server-side error",
        ),
    }
}

fn api_error(status: StatusCode, id: &str, message: &str) -> Response {
    (status, Json(json!({ "id": id, "message": message }))).into_response()
}
