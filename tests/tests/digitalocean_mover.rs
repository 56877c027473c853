//! The DigitalOcean mover against a local implementation of the documented
//! reserved-IP and metadata endpoints: assigning, waiting out an action,
//! retrying 429 and 500, failing on an errored action or a wrong token,
//! taking back a lost assignment, and never printing the token. Needs no root.

use std::{
    io::Write,
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use lb_tests::{
    fake_digitalocean::{Auth, Endpoint, Failure, FakeDigitalOcean, Recorded},
    wait,
};
use lb_user::{
    config::Secret,
    failover::digitalocean::{AssignOutcome, DigitalOcean, DigitalOceanError, DigitalOceanSettings, Pending},
};

const TOKEN: &str = "dop_v1_5f0c3e1b9a7d46e2b8c4f0a1d3e5b7c9f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6";
const WRONG_TOKEN: &str = "dop_v1_0000000000wrong0000000000token0000000000000000000000000000";
const RESERVED_IP: Ipv4Addr = Ipv4Addr::new(45, 55, 123, 242);
const THIS_DROPLET: u64 = 7;
const OTHER_DROPLET: u64 = 8;
const RESERVED_IP_PATH: &str = "/v2/reserved_ips/45.55.123.242";
const ACTIONS_PATH: &str = "/v2/reserved_ips/45.55.123.242/actions";
const FIRST_ACTION: u64 = 1000;
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a test waits for the mover to reach a step.
const WAIT: Duration = Duration::from_secs(10);

fn start_fake() -> FakeDigitalOcean {
    FakeDigitalOcean::start(TOKEN, RESERVED_IP, THIS_DROPLET).expect("the fake API starts")
}

/// Both URLs on the fake, the droplet id from its metadata, quick polls.
fn settings(fake: &FakeDigitalOcean) -> DigitalOceanSettings {
    DigitalOceanSettings {
        api_url: fake.url().to_owned(),
        metadata_url: fake.url().to_owned(),
        request_timeout: Duration::from_secs(5),
        poll_interval: POLL_INTERVAL,
        assign_timeout: Duration::from_secs(30),
        reconcile_interval: Duration::from_secs(1),
        ..DigitalOceanSettings::new(RESERVED_IP, Secret::new(TOKEN.to_owned()))
    }
}

fn new_mover(settings: DigitalOceanSettings) -> DigitalOcean {
    DigitalOcean::new(settings).expect("valid settings")
}

fn action_path(action_id: u64) -> String {
    format!("{ACTIONS_PATH}/{action_id}")
}

/// The outcome's fields, elapsed time aside (it varies).
fn assigned(outcome: &AssignOutcome) -> (u64, u64, Option<u64>, u32) {
    match outcome {
        AssignOutcome::Assigned {
            droplet_id,
            action_id,
            previous_droplet,
            attempts,
            elapsed: _,
        } => (*droplet_id, *action_id, *previous_droplet, *attempts),
        other => panic!("expected an assignment, got {other:?}"),
    }
}

fn assert_assign_body(post: &Recorded, droplet_id: u64) {
    let body: serde_json::Value = serde_json::from_str(&post.body).expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({ "type": "assign", "droplet_id": droplet_id })
    );
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert_eq!(post.auth, Auth::Correct);
}

/// A token goes to the API and nowhere else.
fn assert_token_only_sent_to_the_api(fake: &FakeDigitalOcean) {
    for request in fake.requests() {
        let to_metadata = request.path.starts_with("/metadata/");
        assert_eq!(
            request.auth == Auth::Missing,
            to_metadata,
            "{} {}: {:?}",
            request.method,
            request.path,
            request.auth
        );
    }
}

#[tokio::test]
async fn assigns_an_unassigned_ip_with_one_post_and_polls_until_completed() {
    let fake = start_fake();
    let mover = new_mover(settings(&fake));

    let outcome = mover.assign().await.expect("assigned");

    assert_eq!(assigned(&outcome), (THIS_DROPLET, FIRST_ACTION, None, 1));
    assert_eq!(fake.droplet(), Some(THIS_DROPLET));
    let posts = fake.requests_to("POST", ACTIONS_PATH);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_assign_body(&posts[0], THIS_DROPLET);
    assert_eq!(fake.requests_to("GET", &action_path(FIRST_ACTION)).len(), 1);
    assert_eq!(
        fake.requests_to("GET", "/metadata/v1/reserved_ip/ipv4/active")
            .len(),
        1
    );
    assert_token_only_sent_to_the_api(&fake);
}

#[tokio::test]
async fn an_ip_already_pointing_here_is_left_alone() {
    let fake = start_fake();
    fake.point_at(Some(THIS_DROPLET));
    let mover = new_mover(settings(&fake));

    let outcome = mover.assign().await.expect("checked");

    assert_eq!(
        outcome,
        AssignOutcome::AlreadyAssigned {
            droplet_id: THIS_DROPLET
        }
    );
    assert!(fake.requests_to("POST", ACTIONS_PATH).is_empty());
    assert_eq!(mover.current_droplet().await.expect("read"), Some(THIS_DROPLET));
}

#[tokio::test]
async fn an_action_in_progress_is_polled_until_it_completes() {
    let fake = start_fake();
    fake.keep_actions_in_progress_for(5);
    let mover = new_mover(settings(&fake));

    let outcome = mover.assign().await.expect("assigned");

    assert_eq!(assigned(&outcome), (THIS_DROPLET, FIRST_ACTION, None, 1));
    let polls = fake.requests_to("GET", &action_path(FIRST_ACTION));
    assert_eq!(polls.len(), 6, "five in progress, then completed");
    for pair in polls.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= POLL_INTERVAL,
            "polls closer than the interval"
        );
    }
    assert_eq!(fake.requests_to("POST", ACTIONS_PATH).len(), 1);
    assert_eq!(fake.droplet(), Some(THIS_DROPLET));
}

#[tokio::test]
async fn a_rate_limited_assign_is_retried_after_retry_after() {
    let fake = start_fake();
    fake.point_at(Some(OTHER_DROPLET));
    fake.fail_next(
        Endpoint::PostAction,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
        1,
    );
    let mover = new_mover(settings(&fake));

    let outcome = mover.assign().await.expect("assigned after the 429");

    assert_eq!(
        assigned(&outcome),
        (THIS_DROPLET, FIRST_ACTION, Some(OTHER_DROPLET), 2)
    );
    let posts = fake.requests_to("POST", ACTIONS_PATH);
    assert_eq!(posts.len(), 2);
    assert!(
        posts[1].at - posts[0].at >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    // It looked again before the second try.
    assert_eq!(fake.requests_to("GET", RESERVED_IP_PATH).len(), 2);
    assert_eq!(fake.droplet(), Some(THIS_DROPLET));
}

#[tokio::test]
async fn server_errors_are_retried() {
    let fake = start_fake();
    fake.fail_next(Endpoint::PostAction, Failure::ServerError, 2);
    fake.fail_next(Endpoint::GetReservedIp, Failure::ServerError, 1);
    fake.fail_next(
        Endpoint::GetAction,
        Failure::TooManyRequests {
            retry_after_secs: None,
        },
        1,
    );
    let mover = new_mover(settings(&fake));

    let outcome = mover.assign().await.expect("assigned after the 500s");

    assert_eq!(assigned(&outcome), (THIS_DROPLET, FIRST_ACTION, None, 3));
    assert_eq!(fake.requests_to("POST", ACTIONS_PATH).len(), 3);
    assert_eq!(fake.requests_to("GET", &action_path(FIRST_ACTION)).len(), 2);
    assert_eq!(fake.droplet(), Some(THIS_DROPLET));
}

#[tokio::test]
async fn an_errored_action_is_an_error() {
    let fake = start_fake();
    fake.point_at(Some(OTHER_DROPLET));
    fake.error_next_action();
    let mover = new_mover(settings(&fake));

    let error = mover.assign().await.expect_err("the action errored");

    assert!(
        matches!(
            error,
            DigitalOceanError::ActionErrored {
                action_id: FIRST_ACTION
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "assign action 1000 errored");
    assert_eq!(fake.requests_to("POST", ACTIONS_PATH).len(), 1, "not retried");
    assert_eq!(fake.droplet(), Some(OTHER_DROPLET));
}

#[tokio::test]
async fn a_lost_assignment_is_taken_back() {
    let fake = start_fake();
    let mover = new_mover(settings(&fake));
    mover.assign().await.expect("first assignment");

    // Split brain: the other node took the IP.
    fake.point_at(Some(OTHER_DROPLET));
    let outcome = mover.assign().await.expect("taken back");

    assert_eq!(
        assigned(&outcome),
        (THIS_DROPLET, FIRST_ACTION + 1, Some(OTHER_DROPLET), 1)
    );
    assert_eq!(fake.droplet(), Some(THIS_DROPLET));
    let posts = fake.requests_to("POST", ACTIONS_PATH);
    assert_eq!(posts.len(), 2);
    assert_assign_body(&posts[1], THIS_DROPLET);
    assert_eq!(
        mover.assign().await.expect("reconciled"),
        AssignOutcome::AlreadyAssigned {
            droplet_id: THIS_DROPLET
        }
    );
}

#[tokio::test]
async fn the_droplet_id_comes_from_metadata_once_or_from_the_settings() {
    let fake = start_fake();
    let from_metadata = new_mover(settings(&fake));
    from_metadata.assign().await.expect("assigned");
    from_metadata.assign().await.expect("reconciled");
    assert_eq!(from_metadata.droplet_id().await.expect("known"), THIS_DROPLET);
    assert_eq!(fake.requests_to("GET", "/metadata/v1/id").len(), 1, "asked once");

    let fake = start_fake();
    let configured = new_mover(DigitalOceanSettings {
        droplet_id: Some(42),
        ..settings(&fake)
    });
    let outcome = configured.assign().await.expect("assigned");
    assert_eq!(assigned(&outcome).0, 42);
    assert_eq!(fake.droplet(), Some(42));
    assert_eq!(configured.droplet_id().await.expect("configured"), 42);
    assert!(fake.requests_to("GET", "/metadata/v1/id").is_empty());
}

#[tokio::test]
async fn an_unreachable_metadata_service_does_not_stop_a_configured_droplet() {
    let fake = start_fake();
    let mover = new_mover(DigitalOceanSettings {
        droplet_id: Some(THIS_DROPLET),
        metadata_url: closed_port_url(),
        ..settings(&fake)
    });

    let outcome = mover.assign().await.expect("assigned without metadata");

    assert_eq!(assigned(&outcome).0, THIS_DROPLET);
}

#[tokio::test]
async fn a_wrong_token_is_a_clear_error_without_the_token() {
    let fake = start_fake();
    let mover = new_mover(DigitalOceanSettings {
        token: Secret::new(WRONG_TOKEN.to_owned()),
        ..settings(&fake)
    });

    let error = mover.assign().await.expect_err("unauthorized");

    match &error {
        DigitalOceanError::Api {
            status: 401, api_id, ..
        } => assert_eq!(api_id.as_deref(), Some("unauthorized")),
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "GET /v2/reserved_ips/45.55.123.242: HTTP 401 (unauthorized: Unable to authenticate you)"
    );
    assert_eq!(fake.requests_to("GET", RESERVED_IP_PATH).len(), 1, "not retried");
    assert!(fake.requests_to("POST", ACTIONS_PATH).is_empty());
    assert_no_token(&format!("{error} {error:?}"));
}

#[tokio::test]
async fn persistent_server_errors_end_in_giving_up_at_the_deadline() {
    let fake = start_fake();
    fake.fail_next(Endpoint::PostAction, Failure::ServerError, 100);
    let mover = new_mover(DigitalOceanSettings {
        assign_timeout: Duration::from_secs(2),
        ..settings(&fake)
    });

    let error = mover.assign().await.expect_err("gave up");

    match &error {
        DigitalOceanError::GaveUp { attempts, last } => {
            assert!(*attempts >= 2, "{error}");
            assert!(
                matches!(**last, DigitalOceanError::Api { status: 500, .. }),
                "{error}"
            );
        }
        other => panic!("expected giving up, got {other:?}"),
    }
    assert!(fake.droplet().is_none());
}

#[tokio::test]
async fn an_action_that_never_ends_times_out_and_the_next_call_waits_for_it() {
    let fake = start_fake();
    fake.keep_actions_in_progress_for(u32::MAX);
    let mover = new_mover(DigitalOceanSettings {
        assign_timeout: Duration::from_secs(1),
        ..settings(&fake)
    });

    let error = mover.assign().await.expect_err("timed out");
    assert!(
        matches!(
            error,
            DigitalOceanError::Timeout {
                pending: Pending::Action {
                    action_id: FIRST_ACTION
                },
                ..
            }
        ),
        "{error:?}"
    );
    assert_waits_out_the_pending_action(&new_mover(settings(&fake)), &fake).await;
}

#[tokio::test]
async fn a_cancelled_assign_leaves_one_action_that_the_next_call_waits_out() {
    let fake = start_fake();
    fake.keep_actions_in_progress_for(u32::MAX);
    let mover = new_mover(settings(&fake));

    // The node stops being master while its action is being polled.
    tokio::select! {
        result = mover.assign() => panic!("the action never ends, yet assign returned {result:?}"),
        polled = wait::until_async("the action was polled", WAIT, || {
            !fake.requests_to("GET", &action_path(FIRST_ACTION)).is_empty()
        }) => polled.unwrap(),
    }
    assert_waits_out_the_pending_action(&mover, &fake).await;
}

/// The fake holds the IP locked by our one action: `assign()` must wait for
/// it to end (here: once the call has looked twice) instead of failing
/// against it or stacking a second action, then find the IP here.
async fn assert_waits_out_the_pending_action(mover: &DigitalOcean, fake: &FakeDigitalOcean) {
    assert!(fake.locked());
    let checks_before = fake.requests_to("GET", RESERVED_IP_PATH).len();
    let (outcome, ()) = tokio::join!(mover.assign(), async {
        wait::until_async("the call looked twice", WAIT, || {
            fake.requests_to("GET", RESERVED_IP_PATH).len() >= checks_before + 2
        })
        .await
        .unwrap();
        fake.complete_pending_actions();
    });
    assert_eq!(
        outcome.expect("the action ended"),
        AssignOutcome::AlreadyAssigned {
            droplet_id: THIS_DROPLET
        }
    );
    assert_eq!(fake.requests_to("POST", ACTIONS_PATH).len(), 1);
}

fn closed_port_url() -> String {
    // Bound then released: nothing listens there for the test's short life.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    format!("http://127.0.0.1:{port}")
}

fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert!(!text.contains(WRONG_TOKEN), "the wrong token leaked: {text}");
    assert!(!text.contains("dop_v1_"), "a token leaked: {text}");
}

/// Every log line, at every level, of every crate, as the mover ran.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

#[tokio::test]
async fn the_token_never_shows_in_output_or_logs() {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime runs on this thread, so this catches every event.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut printed = Vec::new();
    let mut show = |what: &dyn std::fmt::Debug, line: String| {
        printed.push(format!("{what:?}"));
        printed.push(line);
    };

    let fake = start_fake();
    fake.point_at(Some(OTHER_DROPLET));
    fake.fail_next(
        Endpoint::PostAction,
        Failure::TooManyRequests {
            retry_after_secs: None,
        },
        1,
    );
    fake.fail_next(Endpoint::GetAction, Failure::ServerError, 1);
    let settings = settings(&fake);
    let mover = new_mover(settings.clone());
    show(&settings, String::new());
    show(&mover, String::new());
    show(mover.settings(), String::new());
    let outcome = mover.assign().await.expect("assigned");
    show(&outcome, outcome.to_string());
    let outcome = mover.assign().await.expect("reconciled");
    show(&outcome, outcome.to_string());

    fake.point_at(Some(OTHER_DROPLET));
    fake.error_next_action();
    let error = mover.assign().await.expect_err("errored");
    show(&error, error.to_string());

    let wrong = new_mover(DigitalOceanSettings {
        token: Secret::new(WRONG_TOKEN.to_owned()),
        ..settings.clone()
    });
    let error = wrong.assign().await.expect_err("unauthorized");
    show(&error, error.to_string());

    let unreachable = new_mover(DigitalOceanSettings {
        api_url: closed_port_url(),
        assign_timeout: Duration::from_secs(2),
        droplet_id: Some(THIS_DROPLET),
        ..settings.clone()
    });
    let error = unreachable.assign().await.expect_err("nobody listens");
    assert!(matches!(error, DigitalOceanError::GaveUp { .. }), "{error:?}");
    show(&error, error.to_string());

    let error = DigitalOcean::new(DigitalOceanSettings {
        token: Secret::new(format!("{TOKEN}\n\0")),
        ..settings.clone()
    })
    .expect_err("a token no header can carry");
    show(&error, error.to_string());

    let logged = log.text();
    assert!(
        logged.contains("retrying"),
        "the retries were not logged: {logged}"
    );
    assert!(
        logged.contains("assigned the reserved IP to droplet 7"),
        "{logged}"
    );
    assert_no_token(&logged);
    for text in &printed {
        assert_no_token(text);
    }
    assert_token_only_sent_to_the_api(&fake);
}
