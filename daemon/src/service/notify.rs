//! Messages to the service manager (readiness, status, watchdog, reload, stop). Without a
//! notification socket every call does nothing.
//!
//! A datagram send to the notification socket blocks when its reader falls behind, so the
//! messages go through a bounded queue to one sender thread: the daemon never waits for the
//! service manager, and when the queue is full a message is dropped (and logged once).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use sd_notify::NotifyState;

/// Messages waiting for the sender thread before new ones are dropped.
const QUEUE: usize = 64;

/// One notification, owned so that it can cross to the sender thread.
#[derive(Debug)]
enum Message {
    Ready(String),
    Status(String),
    Watchdog,
    Reloading,
    Stopping,
    /// Answered once every earlier message was sent.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The notification as the service manager receives it (`READY=1`, `STATUS=...`).
impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Ready(status) => write!(f, "READY=1 STATUS={status}"),
            Message::Status(status) => write!(f, "STATUS={status}"),
            Message::Watchdog => f.write_str("WATCHDOG=1"),
            Message::Reloading => f.write_str("RELOADING=1"),
            Message::Stopping => f.write_str("STOPPING=1"),
            Message::Flush(_) => f.write_str("(flush)"),
        }
    }
}

fn deliver(message: &Message) -> std::io::Result<()> {
    match message {
        Message::Flush(done) => {
            let _ = done.send(());
            Ok(())
        }
        Message::Ready(status) => {
            sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)])
        }
        Message::Status(status) => sd_notify::notify(&[NotifyState::Status(status)]),
        Message::Watchdog => sd_notify::notify(&[NotifyState::Watchdog]),
        Message::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => sd_notify::notify(&[NotifyState::Reloading, now]),
            Err(_) => sd_notify::notify(&[NotifyState::Reloading]),
        },
        Message::Stopping => {
            sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")])
        }
    }
}

fn queue() -> Option<&'static SyncSender<Message>> {
    static SENDER: OnceLock<Option<SyncSender<Message>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            std::env::var_os("NOTIFY_SOCKET")?;
            let (sender, receiver) = sync_channel::<Message>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("notify".to_owned())
                .spawn(move || {
                    for message in receiver {
                        if let Err(error) = deliver(&message) {
                            tracing::debug!(%error, "service manager notification failed");
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(sender),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the notification thread; not notifying");
                    None
                }
            }
        })
        .as_ref()
}

fn send(message: Message) {
    static DROPPED_LOGGED: AtomicBool = AtomicBool::new(false);
    let Some(queue) = queue() else {
        return;
    };
    match queue.try_send(message) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(message)) => {
            if !DROPPED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %message,
                    "the service manager is not reading notifications; dropping them"
                );
            }
        }
    }
}

/// The service is up.
pub fn ready(status: &str) {
    send(Message::Ready(status.to_owned()));
}

/// A one-line status.
pub fn status(status: &str) {
    send(Message::Status(status.to_owned()));
}

/// The watchdog keep-alive.
pub fn watchdog() {
    send(Message::Watchdog);
}

/// A reload starts.
pub fn reloading() {
    send(Message::Reloading);
}

/// Shutdown starts. Waits (at most a second) until the message is out, as the process is
/// about to exit.
pub fn stopping() {
    send(Message::Stopping);
    let (done, wait) = std::sync::mpsc::channel();
    if let Some(queue) = queue()
        && queue.try_send(Message::Flush(done)).is_ok()
    {
        let _ = wait.recv_timeout(std::time::Duration::from_secs(1));
    }
}

/// Half the watchdog interval the service manager expects, when it expects one.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
