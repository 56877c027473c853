//! Moving the floating IP when this node's VRRP state changes. Each mover is
//! independent and optional: `local` (the address on an interface, announced
//! with gratuitous ARP), `digitalocean` (the reserved-IP API) and `notify`
//! (keepalived-style commands). `Movers` runs them for the VRRP driver:
//! fast steps inline, slow ones (API calls, ARP bursts) as tasks that a
//! release cancels.

pub mod digitalocean;
pub mod garp;
pub mod guard;
pub mod local;
pub mod notify;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::config::VrrpConfig;

/// A failed local takeover is tried again this soon.
const LOCAL_RETRY: Duration = Duration::from_secs(1);
/// After taking over, the reserved IP is checked again this soon.
const CONFIRM_AFTER_TAKEOVER: Duration = Duration::from_secs(5);
/// Re-announcements (another master heard) at most this often.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// What a mover did, for the status and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoverReport {
    pub mover: &'static str,
    pub action: String,
    /// A one-line description of what was done, or why it failed.
    pub result: Result<String, String>,
}

pub struct Movers {
    local: Option<Arc<local::LocalMover>>,
    burst: Option<JoinHandle<()>>,
    next_garp_refresh: Option<Instant>,
    /// The last local takeover failed: retry while master.
    local_pending: bool,
    digitalocean: Option<Arc<digitalocean::DigitalOcean>>,
    assign: Option<JoinHandle<()>>,
    next_reconcile: Option<Instant>,
    notify: Option<(Arc<notify::Queue>, JoinHandle<()>)>,
    reports: mpsc::UnboundedSender<MoverReport>,
    /// Removes the local addresses if this process dies without releasing.
    _guard: Option<guard::Guard>,
    last_reannounce: Option<Instant>,
}

impl Movers {
    /// Builds the configured movers. Before the election starts, removes
    /// floating addresses a killed predecessor left behind and starts the
    /// guard that does the same should this process be killed.
    pub async fn start(
        config: &VrrpConfig,
        reports: mpsc::UnboundedSender<MoverReport>,
    ) -> anyhow::Result<Self> {
        let mut movers = Self {
            reports: reports.clone(),
            ..Self::empty()
        };
        if let Some(settings) = &config.local {
            let mover = local::LocalMover::new(settings.clone())?;
            let removed = mover.remove_leftovers().await?;
            if !removed.is_empty() {
                warn!(addresses = ?removed, interface = settings.interface, "removed floating addresses left by a previous run");
            }
            movers._guard = Some(guard::Guard::spawn(settings)?);
            movers.local = Some(Arc::new(mover));
        }
        if let Some(settings) = &config.digitalocean {
            movers.digitalocean = Some(Arc::new(digitalocean::DigitalOcean::new(settings.clone())?));
        }
        if let Some(settings) = &config.notify {
            movers.notify = Some(notify::spawn(
                settings.clone(),
                config.vrid,
                config.secret_env.clone(),
                reports,
            ));
        }
        Ok(movers)
    }

    /// No movers (what is left after `finish`).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            local: None,
            burst: None,
            next_garp_refresh: None,
            local_pending: false,
            digitalocean: None,
            assign: None,
            next_reconcile: None,
            notify: None,
            reports: mpsc::unbounded_channel().0,
            _guard: None,
            last_reannounce: None,
        }
    }

    /// Names of the configured movers, for the status.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.local.is_some() {
            names.push("local");
        }
        if self.digitalocean.is_some() {
            names.push("digitalocean");
        }
        if self.notify.is_some() {
            names.push("notify");
        }
        names
    }

    fn report(&self, mover: &'static str, action: &str, result: Result<String, String>) {
        let _ = self.reports.send(MoverReport {
            mover,
            action: action.to_owned(),
            result,
        });
    }

    /// This node became master: take the addresses now, announce them, and
    /// point the reserved IP here.
    pub async fn take_over(&mut self, now: Instant) {
        self.take_local(now).await;
        if let Some(api) = &self.digitalocean {
            // Check again soon: an assignment the previous master started
            // just before it let go may still land after ours looked.
            self.next_reconcile = Some(now + api.settings().reconcile_interval.min(CONFIRM_AFTER_TAKEOVER));
            self.spawn_assign("assign");
        }
    }

    /// Adds the local addresses and starts the ARP burst; on failure, the
    /// next maintenance tries again (a master must hold its addresses).
    async fn take_local(&mut self, now: Instant) {
        let Some(local) = &self.local else { return };
        let result = local.take_over().await.map_err(|e| e.to_string());
        let ok = result.is_ok();
        self.report("local", "take over", result);
        self.local_pending = !ok;
        if !ok {
            self.next_garp_refresh = Some(now + LOCAL_RETRY);
            return;
        }
        self.next_garp_refresh = local.settings().garp_refresh.map(|every| now + every);
        self.spawn_burst();
    }

    /// Starts the local mover's burst of gratuitous ARP (replacing one
    /// under way).
    fn spawn_burst(&mut self) {
        let Some(local) = &self.local else { return };
        let mover = Arc::clone(local);
        let reports = self.reports.clone();
        if let Some(old) = self.burst.replace(tokio::spawn(async move {
            if let Err(e) = mover.announce_burst().await {
                let _ = reports.send(MoverReport {
                    mover: "local",
                    action: "gratuitous ARP".to_owned(),
                    result: Err(e.to_string()),
                });
            }
        })) {
            old.abort();
        }
    }

    fn spawn_assign(&mut self, action: &'static str) {
        let Some(api) = &self.digitalocean else { return };
        if self.assign.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let api = Arc::clone(api);
        let reports = self.reports.clone();
        self.assign = Some(tokio::spawn(async move {
            let result = api.assign().await;
            let quiet = matches!(result, Ok(digitalocean::AssignOutcome::AlreadyAssigned { .. }))
                && action == "reconcile";
            if !quiet {
                match &result {
                    Ok(outcome) => info!(%outcome, "reserved IP {action}"),
                    Err(e) => warn!(error = %e, "reserved IP {action} failed"),
                }
            }
            let _ = reports.send(MoverReport {
                mover: "digitalocean",
                action: action.to_owned(),
                result: result.map(|o| o.to_string()).map_err(|e| e.to_string()),
            });
        }));
    }

    /// Another master was heard while this one holds the addresses (a
    /// partition healed): a burst of gratuitous ARP so that the neighbours
    /// that learned the other's MAC come back, and the reserved IP checked
    /// now. At most once per `REANNOUNCE_EVERY`.
    pub fn reannounce(&mut self, now: Instant) {
        if self
            .last_reannounce
            .is_some_and(|last| now.duration_since(last) < REANNOUNCE_EVERY)
        {
            return;
        }
        self.last_reannounce = Some(now);
        if self.burst.as_ref().is_none_or(JoinHandle::is_finished) {
            self.spawn_burst();
        }
        if self.digitalocean.is_some() {
            self.spawn_assign("reconcile");
        }
    }

    /// This node stopped being master.
    pub async fn release(&mut self) {
        if let Some(task) = self.burst.take() {
            task.abort();
        }
        if let Some(task) = self.assign.take() {
            // The new master assigns the reserved IP; there is nothing to undo.
            task.abort();
        }
        self.next_garp_refresh = None;
        self.next_reconcile = None;
        self.local_pending = false;
        if let Some(local) = &self.local {
            let result = local.release().await.map_err(|e| e.to_string());
            self.report("local", "release", result);
        }
    }

    /// Runs the notify command for a transition (when `notify::QUEUE` are
    /// already waiting, the oldest of them is dropped, and reported).
    pub fn notify(&self, notification: notify::Notification) {
        if let Some((queue, _)) = &self.notify {
            if let Some(dropped) = queue.push(notification) {
                warn!(
                    state = dropped.state,
                    "notify queue full: the oldest command waiting dropped"
                );
                self.report(
                    "notify",
                    &format!("notify {}", dropped.state),
                    Err(format!(
                        "not run: {} later transitions were waiting",
                        notify::QUEUE
                    )),
                );
            }
        }
    }

    /// When `maintain` should run next (while master).
    #[must_use]
    pub fn next_maintenance(&self) -> Option<Instant> {
        match (self.next_garp_refresh, self.next_reconcile) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The periodic work of a master: gratuitous ARP refresh, and checking
    /// that the reserved IP still points here (a split brain may have moved it).
    pub async fn maintain(&mut self, now: Instant) {
        if self.local_pending && self.next_garp_refresh.is_some_and(|t| t <= now) {
            self.take_local(now).await;
        } else if self.next_garp_refresh.is_some_and(|t| t <= now) {
            if let Some(local) = &self.local {
                if let Err(e) = local.announce().await {
                    self.report("local", "gratuitous ARP refresh", Err(e.to_string()));
                }
                self.next_garp_refresh = local.settings().garp_refresh.map(|every| now + every);
            }
        }
        if self.next_reconcile.is_some_and(|t| t <= now) {
            self.spawn_assign("reconcile");
            self.next_reconcile = self
                .digitalocean
                .as_ref()
                .map(|d| now + d.settings().reconcile_interval.max(Duration::from_secs(1)));
        }
    }

    /// Waits (bounded) for queued notify commands, at shutdown.
    pub async fn finish(mut self, limit: Duration) {
        if let Some((queue, task)) = self.notify.take() {
            queue.close();
            if tokio::time::timeout(limit, task).await.is_err() {
                warn!("notify commands still running at exit");
            }
        }
        if let Some(task) = self.burst.take() {
            task.abort();
        }
        if let Some(task) = self.assign.take() {
            task.abort();
        }
    }
}
