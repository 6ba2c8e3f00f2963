//! Notifications: one module for whatever tells people something (the
//! health service's incidents; the daemon's outcomes are to use the same).
//! A message goes to the outbox on disk for each route first ([`outbox`]),
//! then a sender delivers it ([`sinks`]) with retries and backoff until the
//! route takes it; nothing queued is lost to a down receiver or a restart.
//! Counters per route say what was delivered, what failed and what waits.

pub mod outbox;
pub mod sinks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use outbox::{Delivery, Outbox};
pub use sinks::Target;

/// What is said: a subject and a text for people, a JSON body for
/// machines (the webhook's body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Unique: receivers dedupe retries by it.
    pub id: String,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// One line.
    pub subject: String,
    /// The text (chat, mail).
    pub text: String,
    /// The webhook's body.
    pub body: serde_json::Value,
}

impl Message {
    /// A new message with a fresh id.
    pub fn new(subject: &str, text: &str, body: serde_json::Value) -> Self {
        Self {
            id: format!("{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>()),
            created: Utc::now(),
            subject: subject.to_owned(),
            text: text.to_owned(),
            body,
        }
    }
}

/// One route's counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RouteCounters {
    /// Messages the route took.
    pub delivered: u64,
    /// Attempts that failed (each retried).
    pub failures: u64,
    /// Messages waiting in the outbox.
    pub pending: u64,
    /// Messages dropped: the route is gone, or the outbox was full.
    pub dropped: u64,
}

/// The first retry after this, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the sender looks at the outbox when nobody wakes it.
const TICK: Duration = Duration::from_secs(1);

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << attempts.min(16)).min(MAX_BACKOFF)
}

/// Queues and delivers messages.
#[derive(Debug)]
pub struct Notifier {
    outbox: Outbox,
    targets: Mutex<BTreeMap<String, Target>>,
    counters: Mutex<BTreeMap<String, RouteCounters>>,
    wake: tokio::sync::Notify,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier over the outbox at `dir` (made if missing).
    ///
    /// # Errors
    /// The outbox cannot be made.
    pub fn open(dir: &std::path::Path) -> std::io::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Arc::new(Self {
            outbox: Outbox::open(dir)?,
            targets: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
            http,
        }))
    }

    /// The routes as configured now (a reload replaces them).
    pub fn set_targets(&self, targets: BTreeMap<String, Target>) {
        if let Ok(mut current) = self.targets.lock() {
            *current = targets;
        }
        self.wake.notify_one();
    }

    /// Queues `message` for `route`: on disk before this returns.
    ///
    /// # Errors
    /// The outbox cannot be written (the message is not queued).
    pub fn enqueue(&self, route: &str, message: &Message) -> std::io::Result<()> {
        let delivery = Delivery {
            route: route.to_owned(),
            message: message.clone(),
            attempts: 0,
            next_attempt: Utc::now(),
            last_error: None,
        };
        self.outbox.put(&delivery)?;
        self.wake.notify_one();
        Ok(())
    }

    /// The counters, by route.
    pub fn counters(&self) -> BTreeMap<String, RouteCounters> {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, route: &str, f: impl FnOnce(&mut RouteCounters)) {
        if let Ok(mut counters) = self.counters.lock() {
            f(counters.entry(route.to_owned()).or_default());
        }
    }

    /// Delivers what is due, until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            self.deliver_due().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// One look at the outbox: every due delivery tried once.
    pub async fn deliver_due(&self) {
        let mut pending = self.outbox.pending();
        if pending.len() > outbox::MAX_PENDING {
            for dropped in pending.drain(..pending.len() - outbox::MAX_PENDING) {
                tracing::error!(route = %dropped.route, id = %dropped.id(), "The outbox is full; the oldest notification is dropped.");
                self.count(&dropped.route, |c| c.dropped += 1);
                self.outbox.remove(&dropped);
            }
        }
        let mut waiting: BTreeMap<String, u64> = BTreeMap::new();
        // A route that failed once in this pass waits for the next: one
        // receiver that does not answer delays only its own messages.
        let mut failing: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let now = Utc::now();
        for mut delivery in pending {
            let target = self.targets.lock().ok().and_then(|t| t.get(&delivery.route).cloned());
            let Some(target) = target else {
                tracing::warn!(route = %delivery.route, id = %delivery.id(), "A queued notification's route is no longer configured; it is dropped.");
                self.count(&delivery.route, |c| c.dropped += 1);
                self.outbox.remove(&delivery);
                continue;
            };
            if delivery.next_attempt > now || failing.contains(&delivery.route) {
                *waiting.entry(delivery.route.clone()).or_default() += 1;
                continue;
            }
            match sinks::send(&self.http, &target, &delivery).await {
                Ok(()) => {
                    tracing::info!(route = %delivery.route, id = %delivery.id(), attempts = delivery.attempts + 1, subject = %delivery.message.subject, "Notification delivered.");
                    self.outbox.remove(&delivery);
                    self.count(&delivery.route, |c| c.delivered += 1);
                }
                Err(error) => {
                    let wait = backoff(delivery.attempts);
                    tracing::warn!(route = %delivery.route, target = ?target, id = %delivery.id(), attempts = delivery.attempts + 1, retry_in_s = wait.as_secs(), %error, "A notification was not delivered; it is retried.");
                    delivery.attempts += 1;
                    delivery.last_error = Some(error);
                    delivery.next_attempt =
                        Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    if let Err(error) = self.outbox.put(&delivery) {
                        tracing::error!(%error, "Cannot record a failed attempt in the outbox.");
                    }
                    self.count(&delivery.route, |c| c.failures += 1);
                    *waiting.entry(delivery.route.clone()).or_default() += 1;
                    failing.insert(delivery.route.clone());
                }
            }
        }
        if let Ok(mut counters) = self.counters.lock() {
            for (route, counter) in counters.iter_mut() {
                counter.pending = waiting.get(route).copied().unwrap_or(0);
            }
            for (route, count) in waiting {
                counters.entry(route).or_default().pending = count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
