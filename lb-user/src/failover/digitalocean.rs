//! The DigitalOcean mover: points the reserved IP at this droplet through the
//! reserved-IP actions API, as `assign-reserved-ip.sh` did, but looking before
//! it acts, retrying what is worth retrying and waiting for the action to end.
//!
//! One [`DigitalOcean::assign`] is also the reconciliation step: while master,
//! the driver calls it every `reconcile_interval`; it changes nothing while the
//! IP points here, and takes the IP back when another droplet has it (an
//! assignment lost in a split brain).
//!
//! The API token travels only in the `Authorization` header of requests to the
//! API (never to the metadata service), and appears in no log line, error or
//! `Debug` output: errors name the request's method and path, the HTTP status
//! and the API's own `id` and `message`.

use std::{
    fmt,
    future::Future,
    hash::{BuildHasher, Hasher},
    net::Ipv4Addr,
    time::Duration,
};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::{sync::OnceCell, time::Instant};
use tracing::{debug, info, warn};

use crate::config::Secret;

pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_ASSIGN_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// The first retry waits between half this and this; each later one doubles
/// both bounds up to [`BACKOFF_MAX`]. The random part keeps two load balancers
/// that failed together from retrying in step.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A longer `Retry-After` is cut to this: a failover must not sit out a long
/// rate-limit window when the next try may well go through.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Server-supplied text in an error is cut to this many characters, so a proxy's
/// HTML page does not flood the log.
const MAX_SERVER_TEXT_CHARS: usize = 200;

const METADATA_DROPLET_ID_PATH: &str = "/metadata/v1/id";
const METADATA_ACTIVE_PATH: &str = "/metadata/v1/reserved_ip/ipv4/active";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigitalOceanSettings {
    pub reserved_ip: Ipv4Addr,
    pub token: Secret,
    /// None: ask the metadata service.
    pub droplet_id: Option<u64>,
    pub api_url: String,
    pub metadata_url: String,
    /// Per HTTP request, connection included.
    pub request_timeout: Duration,
    /// Between polls of an in-progress action, and of a locked reserved IP.
    pub poll_interval: Duration,
    /// Give up on one `assign()` after this long in total (retries included).
    pub assign_timeout: Duration,
    /// While master, check that the IP still points here this often. The
    /// driver does the timing; the mover only carries the setting.
    pub reconcile_interval: Duration,
}

impl DigitalOceanSettings {
    /// The defaults: the public API, the droplet id from the metadata service.
    #[must_use]
    pub fn new(reserved_ip: Ipv4Addr, token: Secret) -> Self {
        Self {
            reserved_ip,
            token,
            droplet_id: None,
            api_url: DEFAULT_API_URL.to_owned(),
            metadata_url: DEFAULT_METADATA_URL.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            assign_timeout: DEFAULT_ASSIGN_TIMEOUT,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignOutcome {
    /// The IP already pointed at this droplet: nothing was changed. Also the
    /// answer when a request that seemed to fail had assigned it after all,
    /// as the look before the next try found.
    AlreadyAssigned { droplet_id: u64 },
    /// An assign action ran to completion.
    Assigned {
        droplet_id: u64,
        action_id: u64,
        /// None: the IP was unassigned.
        previous_droplet: Option<u64>,
        /// Assign actions requested, the one that completed included.
        attempts: u32,
        elapsed: Duration,
    },
}

impl fmt::Display for AssignOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyAssigned { droplet_id } => {
                write!(f, "the reserved IP already points at droplet {droplet_id}")
            }
            Self::Assigned {
                droplet_id,
                action_id,
                previous_droplet,
                attempts,
                elapsed,
            } => {
                write!(f, "assigned the reserved IP to droplet {droplet_id} (")?;
                match previous_droplet {
                    Some(previous) => write!(f, "was droplet {previous}")?,
                    None => f.write_str("was unassigned")?,
                }
                let plural = if *attempts == 1 { "" } else { "s" };
                write!(
                    f,
                    "), action {action_id} completed after {attempts} attempt{plural} in {:.1} s",
                    elapsed.as_secs_f64()
                )
            }
        }
    }
}

/// What an `assign()` that ran out of time was still waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The assign action it requested.
    Action { action_id: u64 },
    /// Another action on the reserved IP (the API calls the IP `locked`).
    Unlock,
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Action { action_id } => write!(f, "assign action {action_id} still in progress"),
            Self::Unlock => f.write_str("the reserved IP still locked by a pending action"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigitalOceanError {
    #[error("digitalocean {setting}: {reason}")]
    BadSetting { setting: &'static str, reason: String },
    #[error("cannot set up the HTTP client: {reason}")]
    Client { reason: String },
    #[error("{method} {path}: {reason}")]
    Transport {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("{method} {path}: no answer within {after:?}")]
    RequestTimeout {
        method: &'static str,
        path: String,
        after: Duration,
    },
    #[error("{method} {path}: HTTP {status}{}", api_detail(.api_id.as_deref(), .message.as_deref()))]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        /// The API's error `id`, e.g. `unauthorized`.
        api_id: Option<String>,
        /// The API's error `message`.
        message: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("{method} {path}: unexpected answer: {reason}")]
    BadResponse {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("assign action {action_id} errored")]
    ActionErrored { action_id: u64 },
    #[error("{pending} after {after:?}")]
    Timeout { after: Duration, pending: Pending },
    #[error("gave up after {attempts} failed requests: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<DigitalOceanError>,
    },
}

fn api_detail(api_id: Option<&str>, message: Option<&str>) -> String {
    match (api_id, message) {
        (Some(id), Some(message)) => format!(" ({id}: {message})"),
        (Some(text), None) | (None, Some(text)) => format!(" ({text})"),
        (None, None) => String::new(),
    }
}

impl DigitalOceanError {
    /// Worth trying again soon: the network, a time-out, rate limiting (429) or
    /// a server error (5xx). Anything else needs a change somewhere else first
    /// (a token, a setting, the IP's state), so the periodic reconcile retries.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RequestTimeout { .. } => true,
            Self::Api { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Moves one reserved IP to this droplet. Cheap to share by reference; every
/// method may be cancelled at any await point (see [`DigitalOcean::assign`]).
pub struct DigitalOcean {
    settings: DigitalOceanSettings,
    http: reqwest::Client,
    /// `api_url` and `metadata_url` without a trailing slash.
    api_base: String,
    metadata_base: String,
    /// `Bearer <token>`, marked sensitive so the HTTP stack never prints it.
    authorization: HeaderValue,
    /// From the settings or, once fetched, from the metadata service.
    droplet_id: OnceCell<u64>,
}

impl fmt::Debug for DigitalOcean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigitalOcean")
            .field("settings", &self.settings)
            .field("droplet_id", &self.droplet_id.get())
            .finish_non_exhaustive()
    }
}

/// Where a request goes, and so whether it carries the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Api,
    Metadata,
}

impl DigitalOcean {
    /// Checks the settings and sets up the HTTPS client; talks to nobody yet.
    pub fn new(settings: DigitalOceanSettings) -> Result<Self, DigitalOceanError> {
        let api_base = base_url("api_url", &settings.api_url)?;
        let metadata_base = base_url("metadata_url", &settings.metadata_url)?;
        for (setting, value) in [
            ("request_timeout", settings.request_timeout),
            ("poll_interval", settings.poll_interval),
            ("assign_timeout", settings.assign_timeout),
            ("reconcile_interval", settings.reconcile_interval),
        ] {
            if value.is_zero() {
                return Err(DigitalOceanError::BadSetting {
                    setting,
                    reason: "must be longer than zero".to_owned(),
                });
            }
        }
        let authorization = bearer_header(&settings.token)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("xlb/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.request_timeout)
            // A redirect is an answer to report, not to follow with the token.
            .redirect(reqwest::redirect::Policy::none())
            // The metadata service is link-local: a proxy from the environment
            // would break it, and the API is reached directly from droplets.
            .no_proxy()
            .build()
            .map_err(|e| DigitalOceanError::Client {
                reason: error_chain(&e),
            })?;
        let droplet_id = OnceCell::new_with(settings.droplet_id);
        Ok(Self {
            settings,
            http,
            api_base,
            metadata_base,
            authorization,
            droplet_id,
        })
    }

    #[must_use]
    pub fn settings(&self) -> &DigitalOceanSettings {
        &self.settings
    }

    /// Makes the reserved IP point at this droplet, and is the periodic
    /// reconciliation step too. Looks first (the metadata service's `active`
    /// flag and the API's view of the IP) and requests an assign action only
    /// when the IP points elsewhere, then polls the action until it completes
    /// or errors. While the IP is locked by a pending action (another node's,
    /// or one of ours whose `assign()` was cancelled) it waits for the action
    /// to end rather than fail against it. Network errors, time-outs, 429 and
    /// 5xx answers are retried with backoff, honouring `Retry-After`, until
    /// `assign_timeout`; other answers end the call with the error.
    ///
    /// Cancel-safe: dropping the future at any point leaves at most one action
    /// running at DigitalOcean, which the next call waits out before it looks
    /// again, so it never stacks a second assign on top.
    pub async fn assign(&self) -> Result<AssignOutcome, DigitalOceanError> {
        let started = Instant::now();
        let deadline = started + self.settings.assign_timeout;
        let mut retrier = Retrier::new(deadline);
        let droplet_id = *self
            .droplet_id
            .get_or_try_init(|| retrier.run(|| self.fetch_droplet_id(deadline)))
            .await?;
        let mut attempts = 0;
        loop {
            let (current, active_here) = tokio::join!(
                retrier.run(|| self.reserved_ip_state(deadline)),
                self.metadata_active(deadline)
            );
            let current = current?;
            debug!(
                reserved_ip = %self.settings.reserved_ip,
                points_at = ?current.droplet,
                locked = current.locked,
                metadata_active = ?active_here,
                "checked the reserved IP"
            );
            if current.locked {
                self.pause_before_poll(deadline, Pending::Unlock).await?;
                continue;
            }
            if current.droplet == Some(droplet_id) {
                return Ok(AssignOutcome::AlreadyAssigned { droplet_id });
            }
            attempts += 1;
            let action = match self.request_assign(droplet_id, deadline).await {
                Ok(action) => action,
                // Look again before another try: the failed request may have
                // started an action all the same.
                Err(error) => {
                    retrier.pause_after(error).await?;
                    continue;
                }
            };
            let action_id = self.await_action(action, &mut retrier, deadline).await?;
            let outcome = AssignOutcome::Assigned {
                droplet_id,
                action_id,
                previous_droplet: current.droplet,
                attempts,
                elapsed: started.elapsed(),
            };
            info!(reserved_ip = %self.settings.reserved_ip, "{outcome}");
            return Ok(outcome);
        }
    }

    /// The droplet the IP points at now (None: unassigned). One request, no
    /// retries: for status and checks, not for the failover path.
    pub async fn current_droplet(&self) -> Result<Option<u64>, DigitalOceanError> {
        let deadline = Instant::now() + self.settings.request_timeout;
        Ok(self.reserved_ip_state(deadline).await?.droplet)
    }

    /// This droplet's id: from the settings, or asked once of the metadata
    /// service (one request, no retries; `assign()` retries its own).
    pub async fn droplet_id(&self) -> Result<u64, DigitalOceanError> {
        let deadline = Instant::now() + self.settings.request_timeout;
        self.droplet_id
            .get_or_try_init(|| self.fetch_droplet_id(deadline))
            .await
            .copied()
    }

    async fn fetch_droplet_id(&self, deadline: Instant) -> Result<u64, DigitalOceanError> {
        let body = self
            .request(Service::Metadata, METADATA_DROPLET_ID_PATH, None, deadline)
            .await?;
        parse_droplet_id(&body).map_err(|reason| self.bad_response("GET", METADATA_DROPLET_ID_PATH, &reason))
    }

    /// Whether the metadata service says a reserved IP is active on this
    /// droplet; None when it cannot tell. Only a hint, for the log: it does
    /// not say *which* reserved IP, so the API's answer decides.
    async fn metadata_active(&self, deadline: Instant) -> Option<bool> {
        let answer = self
            .request(Service::Metadata, METADATA_ACTIVE_PATH, None, deadline)
            .await
            .and_then(|body| {
                parse_active(&body).map_err(|reason| self.bad_response("GET", METADATA_ACTIVE_PATH, &reason))
            });
        match answer {
            Ok(active) => Some(active),
            Err(error) => {
                debug!(%error, "the metadata service did not say whether a reserved IP is active here");
                None
            }
        }
    }

    async fn reserved_ip_state(&self, deadline: Instant) -> Result<ReservedIpState, DigitalOceanError> {
        let path = self.reserved_ip_path();
        let body = self.request(Service::Api, &path, None, deadline).await?;
        parse_reserved_ip(&body).map_err(|reason| self.bad_response("GET", &path, &reason))
    }

    async fn request_assign(&self, droplet_id: u64, deadline: Instant) -> Result<Action, DigitalOceanError> {
        let path = format!("{}/actions", self.reserved_ip_path());
        let body = AssignRequest {
            kind: "assign",
            droplet_id,
        };
        let answer = self.request(Service::Api, &path, Some(&body), deadline).await?;
        let action = parse_action(&answer).map_err(|reason| self.bad_response("POST", &path, &reason))?;
        debug!(action_id = action.id, status = ?action.status, "assign action requested");
        Ok(action)
    }

    async fn action(&self, action_id: u64, deadline: Instant) -> Result<Action, DigitalOceanError> {
        let path = format!("{}/actions/{action_id}", self.reserved_ip_path());
        let body = self.request(Service::Api, &path, None, deadline).await?;
        parse_action(&body).map_err(|reason| self.bad_response("GET", &path, &reason))
    }

    /// Polls the action until it completes (its id) or errors.
    async fn await_action(
        &self,
        requested: Action,
        retrier: &mut Retrier,
        deadline: Instant,
    ) -> Result<u64, DigitalOceanError> {
        let action_id = requested.id;
        let mut status = requested.status;
        loop {
            match status {
                ActionStatus::Completed => return Ok(action_id),
                ActionStatus::Errored => return Err(DigitalOceanError::ActionErrored { action_id }),
                ActionStatus::InProgress | ActionStatus::Other => {}
            }
            self.pause_before_poll(deadline, Pending::Action { action_id })
                .await?;
            status = retrier.run(|| self.action(action_id, deadline)).await?.status;
        }
    }

    /// Waits one poll interval, or fails when that would pass the deadline.
    async fn pause_before_poll(&self, deadline: Instant, pending: Pending) -> Result<(), DigitalOceanError> {
        if Instant::now() + self.settings.poll_interval >= deadline {
            return Err(DigitalOceanError::Timeout {
                after: self.settings.assign_timeout,
                pending,
            });
        }
        tokio::time::sleep(self.settings.poll_interval).await;
        Ok(())
    }

    fn reserved_ip_path(&self) -> String {
        format!("/v2/reserved_ips/{}", self.settings.reserved_ip)
    }

    /// One request, GET or (with a body) POST; the body of a 2xx answer, or
    /// the error with the API's explanation.
    async fn request(
        &self,
        service: Service,
        path: &str,
        body: Option<&AssignRequest>,
        deadline: Instant,
    ) -> Result<Vec<u8>, DigitalOceanError> {
        let (base, method) = match (service, body) {
            (Service::Api, None) => (&self.api_base, "GET"),
            (Service::Api, Some(_)) => (&self.api_base, "POST"),
            (Service::Metadata, _) => (&self.metadata_base, "GET"),
        };
        let url = format!("{base}{path}");
        let timeout = self
            .settings
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        }
        .timeout(timeout);
        if service == Service::Api {
            request = request
                .header(AUTHORIZATION, self.authorization.clone())
                .header(ACCEPT, "application/json");
        }
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                DigitalOceanError::RequestTimeout {
                    method,
                    path: path.to_owned(),
                    after: timeout,
                }
            } else {
                DigitalOceanError::Transport {
                    method,
                    path: path.to_owned(),
                    reason: self.server_text(&error_chain(&error.without_url())),
                }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let answer = response.bytes().await.map_err(failed)?;
        if status.is_success() {
            return Ok(answer.to_vec());
        }
        let explanation: ApiErrorBody = serde_json::from_slice(&answer).unwrap_or_default();
        Err(DigitalOceanError::Api {
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            api_id: explanation.id.map(|id| self.server_text(&id)),
            message: explanation.message.map(|message| self.server_text(&message)),
            retry_after,
        })
    }

    fn bad_response(&self, method: &'static str, path: &str, reason: &str) -> DigitalOceanError {
        DigitalOceanError::BadResponse {
            method,
            path: path.to_owned(),
            reason: self.server_text(reason),
        }
    }

    /// Text that came from elsewhere, made fit for an error: short, and
    /// without the token even if a server echoed it back.
    fn server_text(&self, text: &str) -> String {
        let redacted = text.replace(self.settings.token.expose().trim(), "<redacted>");
        match redacted.char_indices().nth(MAX_SERVER_TEXT_CHARS) {
            Some((cut, _)) => format!("{}...", &redacted[..cut]),
            None => redacted,
        }
    }
}

/// Tries a step again after transient failures, with backoff, until the
/// deadline. The failure count runs over the whole `assign()`, so a server
/// that keeps failing meets ever longer pauses, whichever request failed.
struct Retrier {
    deadline: Instant,
    failures: u32,
}

impl Retrier {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            failures: 0,
        }
    }

    async fn run<T, F, Fut>(&mut self, mut attempt: F) -> Result<T, DigitalOceanError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DigitalOceanError>>,
    {
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => self.pause_after(error).await?,
            }
        }
    }

    /// Waits before another try after `error`; returns the error instead when
    /// it is permanent, or when the wait would pass the deadline.
    async fn pause_after(&mut self, error: DigitalOceanError) -> Result<(), DigitalOceanError> {
        if !error.is_transient() {
            return Err(error);
        }
        self.failures += 1;
        let delay = retry_delay(self.failures, error.retry_after(), jitter_fraction());
        if Instant::now() + delay >= self.deadline {
            return Err(DigitalOceanError::GaveUp {
                attempts: self.failures,
                last: Box::new(error),
            });
        }
        warn!(
            %error,
            failures = self.failures,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "DigitalOcean request failed; retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// The pause before the next try after `failures` transient failures in a
/// row: exponential backoff, `jitter` (0..1) choosing where in the upper half
/// of the step, and never shorter than the server's `Retry-After`.
fn retry_delay(failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let step = BACKOFF_FIRST.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    let backoff = step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    let asked = retry_after.map_or(Duration::ZERO, |asked| asked.min(MAX_RETRY_AFTER));
    backoff.max(asked)
}

/// A `Retry-After` in seconds. The HTTP-date form is not used by the API and
/// falls back to the backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A number in 0..1 that differs from call to call. `RandomState` is seeded
/// at random per thread and stepped per call: spread enough for backoff.
fn jitter_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    #[expect(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
    let fraction = (bits >> 11) as f64 / (1_u64 << 53) as f64;
    fraction
}

/// `url` without its trailing slash, once it is a plain http(s) URL: no
/// credentials, query or fragment, which a path appended to it would break or
/// leak into errors.
fn base_url(setting: &'static str, url: &str) -> Result<String, DigitalOceanError> {
    let bad = |reason: String| DigitalOceanError::BadSetting { setting, reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("{url:?} is not an http or https URL")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "must not carry credentials: the token is set on its own".to_owned()
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(format!("{url:?} must not have a query or fragment")));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn bearer_header(token: &Secret) -> Result<HeaderValue, DigitalOceanError> {
    let bad = |reason: &str| DigitalOceanError::BadSetting {
        setting: "token",
        reason: reason.to_owned(),
    };
    let token = token.expose().trim();
    if token.is_empty() {
        return Err(bad("is empty"));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| bad("holds characters an HTTP header cannot carry"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// The error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

#[derive(Serialize)]
struct AssignRequest {
    #[serde(rename = "type")]
    kind: &'static str,
    droplet_id: u64,
}

/// What `GET /v2/reserved_ips/{ip}` says about the IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReservedIpState {
    droplet: Option<u64>,
    /// A pending action prevents new ones.
    locked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Action {
    id: u64,
    status: ActionStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ActionStatus {
    InProgress,
    Completed,
    Errored,
    /// A status this version does not know: waited on like `in-progress`,
    /// until the deadline.
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
struct ApiErrorBody {
    id: Option<String>,
    message: Option<String>,
}

fn parse_reserved_ip(body: &[u8]) -> Result<ReservedIpState, String> {
    #[derive(Deserialize)]
    struct Envelope {
        reserved_ip: ReservedIp,
    }
    #[derive(Deserialize)]
    struct ReservedIp {
        droplet: Option<DropletRef>,
        #[serde(default)]
        locked: bool,
    }
    /// An unassigned IP has `"droplet": null`; an empty object is read the same.
    #[derive(Deserialize)]
    struct DropletRef {
        id: Option<u64>,
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(ReservedIpState {
        droplet: envelope.reserved_ip.droplet.and_then(|droplet| droplet.id),
        locked: envelope.reserved_ip.locked,
    })
}

fn parse_action(body: &[u8]) -> Result<Action, String> {
    #[derive(Deserialize)]
    struct Envelope {
        action: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        id: u64,
        status: ActionStatus,
    }
    let Envelope { action } = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(Action {
        id: action.id,
        status: action.status,
    })
}

fn parse_droplet_id(body: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(body);
    text.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a droplet id", text.trim()))
}

fn parse_active(body: &[u8]) -> Result<bool, String> {
    match String::from_utf8_lossy(body).trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is neither true nor false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "dop_v1_unit_test_token_0123456789";

    fn settings() -> DigitalOceanSettings {
        DigitalOceanSettings::new(Ipv4Addr::new(45, 55, 123, 242), Secret::new(TOKEN.to_owned()))
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_eight_within_its_jitter() {
        let bounds = |failures| (retry_delay(failures, None, 0.0), retry_delay(failures, None, 1.0));
        let ms = Duration::from_millis;
        assert_eq!(bounds(1), (ms(500), ms(1000)));
        assert_eq!(bounds(2), (ms(1000), ms(2000)));
        assert_eq!(bounds(3), (ms(2000), ms(4000)));
        assert_eq!(bounds(4), (ms(4000), ms(8000)));
        assert_eq!(bounds(5), (ms(4000), ms(8000)));
        assert_eq!(bounds(u32::MAX), (ms(4000), ms(8000)));
        let middle = retry_delay(1, None, 0.5);
        assert!(middle > ms(500) && middle < ms(1000), "{middle:?}");
    }

    #[test]
    fn retry_after_is_a_floor_for_the_pause_and_is_capped() {
        let secs = Duration::from_secs;
        assert_eq!(retry_delay(1, Some(secs(5)), 1.0), secs(5));
        assert_eq!(
            retry_delay(4, Some(secs(1)), 1.0),
            secs(8),
            "backoff longer than asked"
        );
        assert_eq!(retry_delay(1, Some(secs(3600)), 0.0), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| jitter_fraction()).collect();
        assert!(samples.iter().all(|f| (0.0..1.0).contains(f)), "{samples:?}");
        assert!(samples.windows(2).any(|pair| pair[0] != pair[1]), "{samples:?}");
    }

    #[test]
    fn reserved_ip_answers_parse_assigned_unassigned_and_locked() {
        let assigned = br#"{"reserved_ip":{"ip":"45.55.123.242","droplet":{"id":7,"name":"lb1"},
            "region":{"slug":"nyc3"},"locked":false,"project_id":"p"}}"#;
        assert_eq!(
            parse_reserved_ip(assigned),
            Ok(ReservedIpState {
                droplet: Some(7),
                locked: false
            })
        );
        let unassigned = br#"{"reserved_ip":{"ip":"45.55.123.242","droplet":null,"locked":true}}"#;
        assert_eq!(
            parse_reserved_ip(unassigned),
            Ok(ReservedIpState {
                droplet: None,
                locked: true
            })
        );
        let empty_droplet = br#"{"reserved_ip":{"ip":"45.55.123.242","droplet":{}}}"#;
        assert_eq!(parse_reserved_ip(empty_droplet).map(|s| s.droplet), Ok(None));
        assert!(parse_reserved_ip(br#"{"id":"not_found"}"#).is_err());
        assert!(parse_reserved_ip(b"<html>").is_err());
    }

    #[test]
    fn action_answers_parse_every_status() {
        let action = |status: &str| {
            parse_action(
                format!(r#"{{"action":{{"id":99,"status":"{status}","type":"assign_ip","resource_id":1}}}}"#)
                    .as_bytes(),
            )
        };
        let with = |status| Ok(Action { id: 99, status });
        assert_eq!(action("in-progress"), with(ActionStatus::InProgress));
        assert_eq!(action("completed"), with(ActionStatus::Completed));
        assert_eq!(action("errored"), with(ActionStatus::Errored));
        assert_eq!(action("paused"), with(ActionStatus::Other));
        assert!(parse_action(br#"{"action":{"status":"completed"}}"#).is_err());
    }

    #[test]
    fn metadata_answers_parse_plain_text() {
        assert_eq!(parse_droplet_id(b"3164494\n"), Ok(3_164_494));
        assert!(parse_droplet_id(b"droplet").is_err());
        assert_eq!(parse_active(b"true"), Ok(true));
        assert_eq!(parse_active(b"false\n"), Ok(false));
        assert!(parse_active(b"yes").is_err());
    }

    #[test]
    fn transient_errors_are_network_timeouts_429_and_5xx() {
        let api = |status| DigitalOceanError::Api {
            method: "POST",
            path: "/v2/reserved_ips/45.55.123.242/actions".to_owned(),
            status,
            api_id: None,
            message: None,
            retry_after: None,
        };
        assert!(api(429).is_transient());
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(!api(401).is_transient());
        assert!(!api(422).is_transient());
        assert!(!api(404).is_transient());
        assert!(!DigitalOceanError::ActionErrored { action_id: 1 }.is_transient());
    }

    #[test]
    fn errors_and_settings_print_no_token() {
        let error = DigitalOceanError::GaveUp {
            attempts: 3,
            last: Box::new(DigitalOceanError::Api {
                method: "POST",
                path: "/v2/reserved_ips/45.55.123.242/actions".to_owned(),
                status: 503,
                api_id: Some("service_unavailable".to_owned()),
                message: Some("try later".to_owned()),
                retry_after: None,
            }),
        };
        assert_eq!(
            error.to_string(),
            "gave up after 3 failed requests: POST /v2/reserved_ips/45.55.123.242/actions: \
             HTTP 503 (service_unavailable: try later)"
        );
        let mover = DigitalOcean::new(settings()).expect("valid settings");
        for text in [
            format!("{error:?}"),
            format!("{:?}", settings()),
            format!("{mover:?}"),
        ] {
            assert!(!text.contains(TOKEN), "{text}");
        }
    }

    #[test]
    fn server_text_is_redacted_and_cut() {
        let mover = DigitalOcean::new(settings()).expect("valid settings");
        assert_eq!(
            mover.server_text(&format!("bad token {TOKEN}")),
            "bad token <redacted>"
        );
        let long = "x".repeat(MAX_SERVER_TEXT_CHARS + 50);
        assert_eq!(mover.server_text(&long).len(), MAX_SERVER_TEXT_CHARS + 3);
    }

    #[test]
    fn outcomes_read_as_one_line() {
        let assigned = AssignOutcome::Assigned {
            droplet_id: 7,
            action_id: 99,
            previous_droplet: Some(8),
            attempts: 2,
            elapsed: Duration::from_millis(1234),
        };
        assert_eq!(
            assigned.to_string(),
            "assigned the reserved IP to droplet 7 (was droplet 8), action 99 completed after 2 attempts in 1.2 s"
        );
        let first_try = AssignOutcome::Assigned {
            droplet_id: 7,
            action_id: 5,
            previous_droplet: None,
            attempts: 1,
            elapsed: Duration::from_millis(300),
        };
        assert_eq!(
            first_try.to_string(),
            "assigned the reserved IP to droplet 7 (was unassigned), action 5 completed after 1 attempt in 0.3 s"
        );
        assert_eq!(
            AssignOutcome::AlreadyAssigned { droplet_id: 7 }.to_string(),
            "the reserved IP already points at droplet 7"
        );
    }

    #[test]
    fn settings_are_checked_before_anything_is_sent() {
        let rejected = |change: fn(&mut DigitalOceanSettings)| {
            let mut settings = settings();
            change(&mut settings);
            match DigitalOcean::new(settings) {
                Err(DigitalOceanError::BadSetting { setting, reason }) => format!("{setting}: {reason}"),
                other => panic!("expected a bad setting, got {other:?}"),
            }
        };
        assert!(rejected(|s| s.api_url = "ftp://example.com".into()).starts_with("api_url"));
        assert!(rejected(|s| s.api_url = "not a url".into()).starts_with("api_url"));
        assert!(
            rejected(|s| s.metadata_url = "http://user:pw@169.254.169.254".into())
                .starts_with("metadata_url: must not carry credentials")
        );
        assert!(rejected(|s| s.api_url = "http://127.0.0.1:1/?x=1".into()).starts_with("api_url"));
        assert!(rejected(|s| s.poll_interval = Duration::ZERO).starts_with("poll_interval"));
        assert_eq!(
            rejected(|s| s.token = Secret::new(" \n".into())),
            "token: is empty"
        );
        let header_breaking = rejected(|s| s.token = Secret::new(format!("{TOKEN}\r\nX-Evil: 1")));
        assert_eq!(
            header_breaking,
            "token: holds characters an HTTP header cannot carry"
        );
    }

    #[test]
    fn base_urls_lose_their_trailing_slash_and_keep_a_path() {
        assert_eq!(
            base_url("api_url", "https://api.digitalocean.com/").ok(),
            Some("https://api.digitalocean.com".to_owned())
        );
        assert_eq!(
            base_url("api_url", "http://127.0.0.1:8080/prefix/").ok(),
            Some("http://127.0.0.1:8080/prefix".to_owned())
        );
    }
}
