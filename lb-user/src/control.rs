//! Requests to the controller (the task that owns the data plane), from the
//! admin API, the metrics endpoint and signal handlers. Each carries a
//! channel for its answer.

use tokio::sync::{mpsc, oneshot};

use crate::status::Status;

#[derive(Debug)]
pub enum Request {
    /// A snapshot of everything.
    Status,
    /// Re-read the config file; validate all of it before changing anything.
    Reload,
    /// Take a backend out of rotation for new connections (`drained = true`),
    /// or put it back. Established connections are kept either way.
    SetDrained {
        service: String,
        backend: String,
        drained: bool,
    },
}

#[derive(Debug)]
pub enum Response {
    Status(Box<Status>),
    /// The reload was applied; what changed.
    Reloaded(String),
    Done,
}

/// A request and where to send its answer. Errors are for the operator:
/// they say what was wrong (e.g. the config's file and line).
#[derive(Debug)]
pub struct Envelope {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Response, String>>,
}

/// The controller's mailbox, cloned by each client.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    sender: mpsc::Sender<Envelope>,
}

impl ControlHandle {
    #[must_use]
    pub fn new(sender: mpsc::Sender<Envelope>) -> Self {
        Self { sender }
    }

    /// Sends `request` and waits for the answer.
    pub async fn ask(&self, request: Request) -> Result<Response, String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Envelope { request, reply })
            .await
            .map_err(|_| "the daemon is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the daemon is shutting down".to_owned())?
    }

    pub async fn status(&self) -> Result<Status, String> {
        match self.ask(Request::Status).await? {
            Response::Status(status) => Ok(*status),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}
