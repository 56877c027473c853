//! The VRRP state machine of RFC 9568/5798 section 6.4 (Initialize, Backup,
//! Master), plus keepalived's FAULT for a node whose tracked health failed,
//! as a pure transition function: events in, actions out, timers as
//! deadlines the driver waits for. Names follow the RFC.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::packet::Version;

/// Priority of the address owner: it takes over at once on start-up.
pub const OWNER_PRIORITY: u8 = 255;
/// Transitions kept for the status.
const HISTORY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// Tracked health failed: neither master nor candidate.
    Fault,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    pub priority: u8,
    /// Advertisement_Interval, centiseconds.
    pub interval_cs: u16,
    pub preempt: bool,
    /// After start-up, do not preempt for this long (keepalived's preempt_delay).
    pub preempt_delay: Duration,
    /// This node's address on the VRRP link: breaks ties between equal priorities.
    pub primary_address: Ipv4Addr,
    /// Unicast peers configured (0: multicast). With exactly one, a leaving
    /// master has no other backup to race, so Skew_Time is not waited.
    pub unicast_peers: usize,
}

/// Something the machine was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A validated advertisement from `source`.
    Advertisement {
        source: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
    },
    /// The node's tracked health changed (after its own rise/fall).
    Health {
        ok: bool,
    },
    /// Weighted tracks changed the priority.
    Priority {
        priority: u8,
    },
    /// The connection to peer `source` was closed by its kernel: its
    /// process is gone (it crashed or stopped) even if adverts would still
    /// be due for a while.
    PeerGone {
        source: Ipv4Addr,
    },
    /// Whether this node's pools are ready to serve (its health checks have
    /// settled since it came back): until they are, it does not take the IP
    /// from a working master (preemption), though it still replaces one
    /// that is gone.
    Ready {
        ready: bool,
    },
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvertisement {
        priority: u8,
    },
    /// Take the virtual addresses (add them, announce with gratuitous ARP).
    TakeOver,
    /// Give the virtual addresses up.
    Release,
    /// Announce the addresses again (gratuitous ARP, the reserved IP
    /// checked): another master was heard, so after a partition the
    /// neighbours may be sending to it.
    Reannounce,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
    pub at: Instant,
}

pub struct Machine {
    params: Params,
    state: State,
    /// Master_Adver_Interval: the master's advertised interval (version 3
    /// learns it from the master's adverts), centiseconds.
    master_adver_interval_cs: u16,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    started_at: Option<Instant>,
    current_master: Option<Ipv4Addr>,
    healthy: bool,
    /// See `Event::Ready`.
    ready: bool,
    /// When the node last came back from FAULT: what its pools' readiness
    /// is judged from.
    rejoined_at: Option<Instant>,
    /// The priority the current master advertised.
    master_priority: Option<u8>,
    history: VecDeque<Transition>,
    transitions_total: u64,
    /// Why the Master_Down_Timer is short (the master left), for the log.
    down_reason: Option<String>,
}

impl Machine {
    #[must_use]
    pub fn new(params: Params) -> Self {
        let interval = params.interval_cs;
        Self {
            params,
            state: State::Initialize,
            master_adver_interval_cs: interval,
            adver_timer: None,
            master_down_timer: None,
            started_at: None,
            current_master: None,
            healthy: true,
            ready: true,
            rejoined_at: None,
            master_priority: None,
            history: VecDeque::new(),
            transitions_total: 0,
            down_reason: None,
        }
    }

    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    #[must_use]
    pub const fn current_master(&self) -> Option<Ipv4Addr> {
        self.current_master
    }

    /// Whether the pools are ready (see `Event::Ready`).
    #[must_use]
    pub const fn ready(&self) -> bool {
        self.ready
    }

    /// When the node last came back from FAULT (None: never in FAULT).
    #[must_use]
    pub const fn rejoined_at(&self) -> Option<Instant> {
        self.rejoined_at
    }

    /// The priority advertised now (tracks may have changed it).
    #[must_use]
    pub const fn priority(&self) -> u8 {
        self.params.priority
    }

    /// The wait after learning that the master left: Skew_Time, so that of
    /// several backups the best takes over, or nothing with a single peer.
    fn leaving_master_delay(&self) -> Duration {
        if self.params.unicast_peers == 1 {
            Duration::ZERO
        } else {
            self.skew_time()
        }
    }

    /// The last transitions, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }

    /// Transitions since start (the history keeps only the last few).
    #[must_use]
    pub const fn transitions_total(&self) -> u64 {
        self.transitions_total
    }

    /// Skew_Time: lower priorities wait longer before taking over.
    #[must_use]
    pub fn skew_time(&self) -> Duration {
        let cs = (256 - u32::from(self.params.priority)) * u32::from(self.master_adver_interval_cs) / 256;
        Duration::from_millis(u64::from(cs) * 10)
    }

    /// Master_Down_Interval: three missed adverts plus the skew.
    #[must_use]
    pub fn master_down_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_adver_interval_cs) * 30) + self.skew_time()
    }

    fn advertisement_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.params.interval_cs) * 10)
    }

    /// The earliest timer, for the driver to sleep until.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn preempt_now(&self, now: Instant) -> bool {
        self.params.preempt
            && self.ready
            && self
                .started_at
                .is_none_or(|start| now.duration_since(start) >= self.params.preempt_delay)
    }

    fn go(&mut self, to: State, reason: impl Into<String>, now: Instant) {
        let transition = Transition {
            from: self.state,
            to,
            reason: reason.into(),
            at: now,
        };
        tracing::info!(from = ?transition.from, to = ?to, reason = %transition.reason, "VRRP transition");
        self.state = to;
        self.transitions_total += 1;
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(transition);
    }

    /// Records `source` as the master; version 3 adopts its interval.
    fn follow(&mut self, source: Ipv4Addr, priority: u8, interval_cs: u16) {
        self.current_master = Some(source);
        self.master_priority = Some(priority);
        if self.params.version == Version::V3 {
            self.master_adver_interval_cs = interval_cs;
        }
    }

    fn become_master(&mut self, reason: &str, now: Instant) -> Vec<Action> {
        self.master_down_timer = None;
        self.down_reason = None;
        self.adver_timer = Some(now + self.advertisement_interval());
        self.current_master = Some(self.params.primary_address);
        self.master_priority = Some(self.params.priority);
        self.go(State::Master, reason, now);
        vec![
            Action::SendAdvertisement {
                priority: self.params.priority,
            },
            Action::TakeOver,
        ]
    }

    /// The master is gone (it said so, or its process died): take over
    /// after Skew_Time, or at once when no other backup could race us.
    fn master_left(&mut self, reason: String, now: Instant) -> Vec<Action> {
        let delay = self.leaving_master_delay();
        if delay.is_zero() {
            return self.become_master(&reason, now);
        }
        self.master_down_timer = Some(now + delay);
        self.down_reason = Some(reason);
        Vec::new()
    }

    fn become_backup(&mut self, reason: &str, now: Instant) {
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.go(State::Backup, reason, now);
    }

    fn start(&mut self, reason: &str, now: Instant) -> Vec<Action> {
        // An owner whose pools are not ready waits as a backup: it takes
        // over when no master speaks, or preempts once ready.
        if self.params.priority == OWNER_PRIORITY && self.ready {
            return self.become_master(reason, now);
        }
        self.master_adver_interval_cs = self.params.interval_cs;
        self.become_backup(reason, now);
        Vec::new()
    }

    /// Fires the timers due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        if self.master_down_timer.is_some_and(|t| t <= now) && self.state == State::Backup {
            let reason = self.down_reason.take().map_or_else(
                || "Master_Down_Timer expired: no advertisement from a master".to_owned(),
                |why| format!("{why}; Skew_Time passed"),
            );
            return self.become_master(&reason, now);
        }
        if self.adver_timer.is_some_and(|t| t <= now) && self.state == State::Master {
            self.adver_timer = Some(now + self.advertisement_interval());
            return vec![Action::SendAdvertisement {
                priority: self.params.priority,
            }];
        }
        Vec::new()
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (self.state, event) {
            (State::Initialize, Event::Startup) => {
                self.started_at = Some(now);
                if !self.healthy {
                    self.go(State::Fault, "started with failed health", now);
                    return Vec::new();
                }
                self.start("startup", now)
            }
            (State::Initialize, Event::Health { ok }) => {
                // Remembered, so that Startup goes to FAULT if it is bad.
                self.healthy = ok;
                Vec::new()
            }
            (State::Initialize, Event::Priority { priority }) => {
                self.params.priority = priority;
                Vec::new()
            }
            (State::Backup, Event::Ready { ready }) => {
                let was = std::mem::replace(&mut self.ready, ready);
                let lower_master = self
                    .master_priority
                    .is_some_and(|theirs| theirs < self.params.priority);
                if ready && !was && lower_master && self.preempt_now(now) {
                    let master = self
                        .current_master
                        .map_or_else(|| "?".to_owned(), |m| m.to_string());
                    return self.become_master(
                        &format!("pools ready: preempting master {master} of lower priority"),
                        now,
                    );
                }
                Vec::new()
            }
            (_, Event::Ready { ready }) => {
                self.ready = ready;
                Vec::new()
            }
            (_, Event::Startup) | (State::Initialize, _) => Vec::new(),

            (State::Master, Event::Shutdown) => {
                self.adver_timer = None;
                self.go(State::Initialize, "shutdown", now);
                // Priority 0 tells the backups to take over after Skew_Time.
                vec![Action::SendAdvertisement { priority: 0 }, Action::Release]
            }
            (_, Event::Shutdown) => {
                self.adver_timer = None;
                self.master_down_timer = None;
                self.go(State::Initialize, "shutdown", now);
                Vec::new()
            }

            (State::Master, Event::Health { ok: false }) => {
                self.healthy = false;
                self.adver_timer = None;
                self.go(State::Fault, "tracked health failed", now);
                vec![Action::SendAdvertisement { priority: 0 }, Action::Release]
            }
            (_, Event::Health { ok: false }) => {
                self.healthy = false;
                if self.state != State::Fault {
                    self.master_down_timer = None;
                    self.go(State::Fault, "tracked health failed", now);
                }
                Vec::new()
            }
            (State::Fault, Event::Health { ok: true }) => {
                self.healthy = true;
                // preempt_delay counts again: a flapping node must not
                // preempt at every recovery.
                self.started_at = Some(now);
                // What the checks said while the node was cut off is not
                // trusted: ready again once they have spoken since.
                self.rejoined_at = Some(now);
                self.ready = false;
                self.start("tracked health recovered", now)
            }
            (_, Event::Health { ok: true }) => {
                self.healthy = true;
                Vec::new()
            }
            (State::Fault, Event::Advertisement { source, priority, .. }) => {
                self.current_master = Some(source);
                self.master_priority = Some(priority);
                Vec::new()
            }
            (_, Event::Priority { priority }) => {
                let old = std::mem::replace(&mut self.params.priority, priority);
                if self.state == State::Master && old != priority {
                    // Tell the backups now, so a better one can preempt.
                    self.adver_timer = Some(now + self.advertisement_interval());
                    return vec![Action::SendAdvertisement { priority }];
                }
                Vec::new()
            }
            // A backup that has not heard a master yet (just started) takes
            // the closing as well: the peer that left may have been master.
            (State::Backup, Event::PeerGone { source })
                if self.current_master.is_none_or(|master| master == source) =>
            {
                self.master_left(
                    format!("peer link to master {source} closed: its process is gone"),
                    now,
                )
            }
            (_, Event::PeerGone { .. }) => Vec::new(),

            (
                State::Backup,
                Event::Advertisement {
                    source,
                    priority,
                    interval_cs,
                },
            ) => {
                if priority == 0 {
                    return self.master_left(format!("master {source} sent priority 0 (it is leaving)"), now);
                }
                if !self.preempt_now(now) || priority >= self.params.priority {
                    self.follow(source, priority, interval_cs);
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.down_reason = None;
                }
                // Otherwise a lower-priority master: let the timer run out and preempt.
                Vec::new()
            }
            (
                State::Master,
                Event::Advertisement {
                    source,
                    priority,
                    interval_cs,
                },
            ) => {
                if priority == 0 {
                    self.adver_timer = Some(now + self.advertisement_interval());
                    return vec![Action::SendAdvertisement {
                        priority: self.params.priority,
                    }];
                }
                let wins = priority > self.params.priority
                    || (priority == self.params.priority
                        && u32::from(source) > u32::from(self.params.primary_address));
                if !wins {
                    // Two masters: a partition healed. The other yields on
                    // our next advert; the neighbours learn our MAC again.
                    self.adver_timer = Some(now + self.advertisement_interval());
                    return vec![
                        Action::SendAdvertisement {
                            priority: self.params.priority,
                        },
                        Action::Reannounce,
                    ];
                }
                self.follow(source, priority, interval_cs);
                self.become_backup(
                    &format!("advertisement from {source} with priority {priority}"),
                    now,
                );
                vec![Action::Release]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 6);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 5);

    fn machine(priority: u8, preempt: bool) -> Machine {
        Machine::new(Params {
            version: Version::V3,
            priority,
            interval_cs: 100,
            preempt,
            preempt_delay: Duration::ZERO,
            primary_address: ME,
            unicast_peers: 0,
        })
    }

    fn advert(priority: u8) -> Event {
        Event::Advertisement {
            source: PEER,
            priority,
            interval_cs: 100,
        }
    }

    #[test]
    fn rfc_timers() {
        let m = machine(254, true);
        // Skew_Time = (256 - 254) * 100 / 256 = 0 cs (integer), Master_Down = 300 cs.
        assert_eq!(m.skew_time(), Duration::ZERO);
        assert_eq!(m.master_down_interval(), Duration::from_secs(3));
        let low = machine(100, true);
        assert_eq!(low.skew_time(), Duration::from_millis(600));
        assert_eq!(low.master_down_interval(), Duration::from_millis(3600));
    }

    #[test]
    fn owner_takes_over_at_startup_and_others_wait_as_backup() {
        let t0 = Instant::now();
        let mut owner = machine(255, true);
        assert_eq!(
            owner.handle(Event::Startup, t0),
            [Action::SendAdvertisement { priority: 255 }, Action::TakeOver]
        );
        assert_eq!(owner.state(), State::Master);
        let mut backup = machine(200, true);
        assert!(backup.handle(Event::Startup, t0).is_empty());
        assert_eq!(backup.state(), State::Backup);
        assert_eq!(backup.next_deadline(), Some(t0 + backup.master_down_interval()));
    }

    #[test]
    fn backup_takes_over_when_adverts_stop() {
        let t0 = Instant::now();
        let mut m = machine(200, true);
        m.handle(Event::Startup, t0);
        m.handle(advert(255), t0 + Duration::from_secs(1));
        assert!(
            m.poll(t0 + Duration::from_secs(3)).is_empty(),
            "the advert reset the timer"
        );
        let deadline = m.next_deadline().unwrap();
        assert_eq!(
            m.poll(deadline),
            [Action::SendAdvertisement { priority: 200 }, Action::TakeOver]
        );
        assert_eq!(m.state(), State::Master);
        // As master it advertises every interval.
        let next = m.next_deadline().unwrap();
        assert_eq!(next - deadline, Duration::from_secs(1));
        assert_eq!(m.poll(next), [Action::SendAdvertisement { priority: 200 }]);
    }

    #[test]
    fn priority_zero_means_take_over_after_skew_time() {
        let t0 = Instant::now();
        let mut m = machine(100, true);
        m.handle(Event::Startup, t0);
        m.handle(advert(0), t0);
        assert_eq!(m.next_deadline(), Some(t0 + m.skew_time()));
        assert_eq!(m.poll(t0 + m.skew_time()).len(), 2);
    }

    #[test]
    fn master_yields_to_higher_priority_and_wins_ties_by_address() {
        let t0 = Instant::now();
        let mut m = machine(200, true);
        m.handle(Event::Startup, t0);
        m.poll(t0 + m.master_down_interval());
        assert_eq!(m.state(), State::Master);
        // Another master of lower priority (a partition healed): we stay,
        // advertise at once so it yields, and announce the addresses again.
        let stay = [Action::SendAdvertisement { priority: 200 }, Action::Reannounce];
        assert_eq!(m.handle(advert(100), t0), stay, "a lower priority yields to us");
        // Equal priority: the higher address wins; ME (.6) > PEER (.5).
        assert_eq!(m.handle(advert(200), t0), stay);
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.handle(advert(255), t0), [Action::Release]);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.current_master(), Some(PEER));
    }

    #[test]
    fn preemption_is_configurable() {
        let t0 = Instant::now();
        for (preempt, takes_over) in [(true, true), (false, false)] {
            let mut m = machine(255 - 1, preempt);
            m.handle(Event::Startup, t0);
            // A lower-priority master keeps advertising.
            let mut now = t0;
            let mut became_master = false;
            for _ in 0..10 {
                now += Duration::from_secs(1);
                m.handle(advert(100), now);
                became_master |= !m.poll(now).is_empty();
            }
            assert_eq!(became_master, takes_over, "preempt = {preempt}");
        }
    }

    #[test]
    fn clean_shutdown_of_the_master_sends_priority_zero() {
        let t0 = Instant::now();
        let mut m = machine(255, true);
        m.handle(Event::Startup, t0);
        assert_eq!(
            m.handle(Event::Shutdown, t0),
            [Action::SendAdvertisement { priority: 0 }, Action::Release]
        );
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn failed_health_gives_up_and_recovery_rejoins() {
        let t0 = Instant::now();
        let mut m = machine(255, true);
        m.handle(Event::Startup, t0);
        assert_eq!(
            m.handle(Event::Health { ok: false }, t0),
            [Action::SendAdvertisement { priority: 0 }, Action::Release]
        );
        assert_eq!(m.state(), State::Fault);
        assert!(
            m.poll(t0 + Duration::from_secs(60)).is_empty(),
            "no timers in FAULT"
        );
        // Back, but what its checks said while it was cut off is stale: it
        // waits as a backup until told its pools are ready.
        assert!(m.handle(Event::Health { ok: true }, t0).is_empty());
        assert_eq!(
            (m.state(), m.ready(), m.rejoined_at()),
            (State::Backup, false, Some(t0))
        );
        m.handle(Event::Ready { ready: true }, t0);
        assert_eq!(m.state(), State::Backup, "no master known: the timer decides");
        assert_eq!(
            m.poll(t0 + m.master_down_interval()).len(),
            2,
            "no master spoke: the owner takes over again"
        );
        let reasons: Vec<&str> = m.history().map(|t| t.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "startup",
                "tracked health failed",
                "tracked health recovered",
                "Master_Down_Timer expired: no advertisement from a master"
            ]
        );
    }

    #[test]
    fn a_node_whose_pools_are_not_ready_follows_a_lower_master_and_preempts_once_ready() {
        let t0 = Instant::now();
        let mut m = machine(255, true);
        m.handle(Event::Ready { ready: false }, t0);
        m.handle(Event::Startup, t0);
        assert_eq!(m.state(), State::Backup, "not even the owner takes over unready");
        // A lower-priority master keeps advertising: followed, not preempted.
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(1);
            m.handle(advert(100), now);
            assert!(m.poll(now).is_empty());
        }
        assert_eq!(m.current_master(), Some(PEER));
        // Ready: it preempts at once, without waiting out the timer.
        let actions = m.handle(Event::Ready { ready: true }, now);
        assert_eq!(
            actions,
            [Action::SendAdvertisement { priority: 255 }, Action::TakeOver]
        );
        assert!(m
            .history()
            .last()
            .unwrap()
            .reason
            .starts_with("pools ready: preempting master"));
    }

    #[test]
    fn unready_pools_never_stop_a_takeover_from_a_master_that_is_gone() {
        let t0 = Instant::now();
        for how in ["adverts stop", "priority 0", "peer link closed"] {
            let mut m = Machine::new(Params {
                unicast_peers: 1,
                ..machine(100, true).params
            });
            m.handle(Event::Ready { ready: false }, t0);
            m.handle(Event::Startup, t0);
            m.handle(advert(200), t0);
            let actions = match how {
                "adverts stop" => m.poll(t0 + m.master_down_interval()),
                "priority 0" => m.handle(advert(0), t0),
                _ => m.handle(Event::PeerGone { source: PEER }, t0),
            };
            assert!(actions.contains(&Action::TakeOver), "{how}: {actions:?}");
            assert_eq!(m.state(), State::Master, "{how}");
        }
    }

    #[test]
    fn a_higher_master_is_followed_whatever_the_readiness() {
        let t0 = Instant::now();
        let mut m = machine(100, true);
        m.handle(Event::Startup, t0);
        m.handle(advert(200), t0);
        assert!(m.handle(Event::Ready { ready: false }, t0).is_empty());
        assert!(m.handle(Event::Ready { ready: true }, t0).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn a_closed_peer_link_from_the_master_means_take_over_now_with_one_peer() {
        let t0 = Instant::now();
        let mut m = machine(200, true);
        m.params.unicast_peers = 1;
        m.handle(Event::Startup, t0);
        m.handle(advert(255), t0);
        assert!(
            m.handle(
                Event::PeerGone {
                    source: Ipv4Addr::new(10, 108, 0, 9)
                },
                t0
            )
            .is_empty(),
            "a peer that is not the master changes nothing"
        );
        assert_eq!(m.state(), State::Backup);
        assert_eq!(
            m.handle(Event::PeerGone { source: PEER }, t0),
            [Action::SendAdvertisement { priority: 200 }, Action::TakeOver]
        );
        assert_eq!(m.state(), State::Master);
        // With several backups, the best one must win: wait Skew_Time.
        let mut m = machine(200, true);
        m.params.unicast_peers = 2;
        m.handle(Event::Startup, t0);
        m.handle(advert(255), t0);
        assert!(m.handle(Event::PeerGone { source: PEER }, t0).is_empty());
        assert_eq!(m.next_deadline(), Some(t0 + m.skew_time()));
    }

    #[test]
    fn a_backup_that_has_heard_no_master_yet_takes_a_closed_peer_link_as_well() {
        let t0 = Instant::now();
        let mut m = machine(100, true);
        m.params.unicast_peers = 1;
        m.handle(Event::Startup, t0);
        assert_eq!(m.current_master(), None);
        assert_eq!(m.handle(Event::PeerGone { source: PEER }, t0).len(), 2);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_weighted_priority_change_is_advertised_at_once() {
        let t0 = Instant::now();
        let mut m = machine(255, true);
        m.handle(Event::Startup, t0);
        assert_eq!(
            m.handle(Event::Priority { priority: 155 }, t0),
            [Action::SendAdvertisement { priority: 155 }]
        );
        assert_eq!(m.priority(), 155);
        // A better backup's advert now wins.
        assert_eq!(m.handle(advert(200), t0), [Action::Release]);
    }
}
