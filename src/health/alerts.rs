//! From incident changes to notifications: per route, one message per
//! environment and evaluation however many incidents changed (a
//! region-wide outage is one message, not forty), reminders of incidents
//! still open, held back by maintenance windows (counted as suppressed)
//! and by each route's hourly limit (counted as rate limited). An open
//! incident a route should know and was not told (a window closed since)
//! is told as opened. Pure but for the clock it is given.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::incidents::{Change, Incident, Ledger};
use crate::model::health::routes::{Route, Window};
use crate::model::health::State;
use crate::notify::Message;

/// What held messages back, by route.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Held {
    /// In a maintenance window.
    pub suppressed: u64,
    /// Over the route's hourly limit.
    pub rate_limited: u64,
}

/// The alerting policy's memory: messages sent in the last hour, and what
/// was held back, by route.
#[derive(Debug, Default)]
pub struct Policy {
    sent: BTreeMap<String, VecDeque<DateTime<Utc>>>,
    /// Counters.
    pub held: BTreeMap<String, Held>,
}

/// Links the messages carry.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The status page (`…/` of the health service, as people reach it).
    pub page: Option<String>,
    /// Grafana's base URL: the Health dashboard of the environment.
    pub grafana: Option<String>,
}

fn describe(incident: &Incident) -> String {
    let parts: Vec<String> = incident
        .parts
        .iter()
        .filter(|(_, p)| p.state != State::Ok)
        .map(|(name, part)| {
            let fired: Vec<&str> =
                part.fired.iter().filter(|(_, v)| v.is_none()).map(|(f, _)| f.as_str()).collect();
            if fired.is_empty() {
                format!("{name}: {}", part.state.as_str())
            } else {
                format!("{name}: {} ({})", part.state.as_str(), fired.join(", "))
            }
        })
        .collect();
    let what = if parts.is_empty() { "all ok again".to_owned() } else { parts.join("; ") };
    match &incident.detail {
        Some(detail) => format!("{what} — {detail}"),
        None => what,
    }
}

impl Policy {
    /// The messages of one evaluation, by route, for `changes` (and the
    /// reminders due), marking in `ledger` which routes were told.
    pub fn messages(
        &mut self,
        ledger: &mut Ledger,
        changes: &[(String, Change)],
        routes: &[Route],
        windows: &[Window],
        links: &Links,
        now: DateTime<Utc>,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for route in routes {
            // environment → (line, body, incident id) of each item
            let mut by_env: BTreeMap<String, Vec<(String, serde_json::Value, String)>> =
                BTreeMap::new();
            // `catching_up`: an open incident never told, looked at again
            // each evaluation: held back by a window, it was counted once.
            let mut consider = |incident: &Incident, change: &str, catching_up: bool| {
                let services = incident.services();
                let state = incident.parts.values().map(|p| p.worst).max().unwrap_or(State::Ok);
                let was_told = incident.notified.contains_key(&route.name);
                let wanted = if change == "resolved" {
                    was_told
                } else {
                    route.takes(&incident.environment, &services, state.max(incident.state))
                };
                if !wanted {
                    return;
                }
                let quiet = windows.iter().any(|w| w.covers(&incident.environment, &services, now));
                if quiet {
                    if !catching_up {
                        self.held.entry(route.name.clone()).or_default().suppressed += 1;
                    }
                    return;
                }
                let mut line = format!("[{change}] {}: {}", incident.about, describe(incident));
                for (scenario, url) in &incident.logs {
                    line.push_str(&format!("\n  log of a failed {scenario} run: {url}"));
                }
                let body = json!({
                    "change": change,
                    "id": incident.id,
                    "environment": incident.environment,
                    "about": incident.about,
                    "state": incident.state,
                    "opened": incident.opened,
                    "resolved": incident.resolved,
                    "parts": incident.parts,
                    "detail": incident.detail,
                    "logs": incident.logs,
                });
                by_env.entry(incident.environment.clone()).or_default().push((
                    line,
                    body,
                    incident.id.clone(),
                ));
            };
            for (id, change) in changes {
                if let Some(incident) = ledger.get(id) {
                    let label = match change {
                        Change::Opened => "opened",
                        Change::Updated => "updated",
                        Change::Resolved => "resolved",
                    };
                    consider(incident, label, false);
                }
            }
            // Open incidents this route should know and does not: opened
            // in a window that has closed since, or before a crash between
            // queueing and saving (sent again: at least once).
            for incident in &ledger.open {
                let changed_now = changes.iter().any(|(id, _)| *id == incident.id);
                if !changed_now && !incident.notified.contains_key(&route.name) {
                    consider(incident, "opened", true);
                }
            }
            if let Some(every) = route.reminder {
                let every = chrono::Duration::from_std(every).unwrap_or_default();
                for incident in &ledger.open {
                    let changed_now = changes.iter().any(|(id, _)| *id == incident.id);
                    let last = incident.notified.get(&route.name);
                    if !changed_now && last.is_some_and(|last| now - *last >= every) {
                        consider(incident, "reminder", false);
                    }
                }
            }
            for (environment, items) in by_env {
                let sent = self.sent.entry(route.name.clone()).or_default();
                while sent.front().is_some_and(|t| now - *t >= chrono::Duration::hours(1)) {
                    sent.pop_front();
                }
                // Over the limit: dropped and counted; its incidents are not
                // marked told (an opening is told once the limit allows).
                if sent.len() >= route.rate_limit as usize {
                    self.held.entry(route.name.clone()).or_default().rate_limited += 1;
                    continue;
                }
                sent.push_back(now);
                let subject = format!(
                    "[apimon] {environment}: {} incident change{}",
                    items.len(),
                    if items.len() == 1 { "" } else { "s" }
                );
                let mut text = format!("{subject}\n");
                for (line, ..) in &items {
                    text.push_str(line);
                    text.push('\n');
                }
                if let Some(page) = &links.page {
                    text.push_str(&format!("Status page: {page}\n"));
                }
                if let Some(grafana) = &links.grafana {
                    text.push_str(&format!(
                        "Grafana: {}/d/apimon-health/health?var-environment={environment}\n",
                        grafana.trim_end_matches('/')
                    ));
                }
                let mut message = Message::new(&subject, &text, serde_json::Value::Null);
                // The id and time inside the signed body: a receiver can
                // drop a replay and dedupe a retry.
                message.body = json!({
                    "id": message.id,
                    "sent": message.created,
                    "environment": environment,
                    "incidents": items.iter().map(|(_, b, _)| b).collect::<Vec<_>>(),
                    "page": links.page,
                });
                let incidents: Vec<String> = items.iter().map(|(.., id)| id.clone()).collect();
                for id in &incidents {
                    if let Some(incident) = ledger.get_mut(id) {
                        incident.notified.insert(route.name.clone(), now);
                    }
                }
                out.push(Outgoing { route: route.name.clone(), message, incidents });
            }
        }
        out
    }
}

/// A message for a route, and the incidents it tells of.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The route.
    pub route: String,
    /// The message.
    pub message: Message,
    /// The incidents it tells of (marked told; unmarked again when it
    /// cannot be queued).
    pub incidents: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::evaluate::ServiceHealth;
    use crate::model::health::routes::{Opening, Sink};
    use crate::model::raw::MaybeSecret;

    fn route(reminder: Option<u64>, rate_limit: u32) -> Route {
        Route {
            name: "ops".into(),
            environments: None,
            services: None,
            severity: State::Degraded,
            reminder: reminder.map(std::time::Duration::from_secs),
            rate_limit,
            sink: Sink::Webhook { url: "http://x".into(), secret: MaybeSecret::Plain("k".into()) },
        }
    }

    fn failing(n: usize, state: State) -> BTreeMap<String, ServiceHealth> {
        (0..n)
            .map(|i| {
                let health = ServiceHealth {
                    state,
                    values: BTreeMap::new(),
                    fired: ["down".to_owned()].into(),
                };
                (format!("s{i:02}"), health)
            })
            .collect()
    }

    #[test]
    fn forty_failing_services_are_one_message_and_a_window_holds_it_back() {
        let (mut ledger, mut policy, now) = (Ledger::default(), Policy::default(), Utc::now());
        let changes = ledger.observe_services("outside", &failing(40, State::Outage), now, 2);
        let routes = [route(None, 30)];
        let window = Window {
            name: "w".into(),
            environments: None,
            services: None,
            opening: Opening::Once {
                start: now - chrono::Duration::hours(1),
                end: now + chrono::Duration::hours(1),
            },
        };
        let links = Links::default();
        let held = policy.messages(&mut ledger, &changes, &routes, &[window], &links, now);
        assert!(held.is_empty());
        assert_eq!(policy.held["ops"].suppressed, 1);
        // The window closed: told as opened, once.
        let sent = policy.messages(&mut ledger, &[], &routes, &[], &links, now);
        assert_eq!(sent.len(), 1, "one message for forty services");
        assert!(sent[0].message.text.contains("[opened]"), "{}", sent[0].message.text);
        assert!(policy.messages(&mut ledger, &[], &routes, &[], &links, now).is_empty());
        assert!(sent[0].message.text.contains("s39: outage (down)"), "{}", sent[0].message.text);
    }

    #[test]
    fn reminders_come_at_their_interval_and_the_hourly_limit_holds() {
        let (mut ledger, mut policy, start) = (Ledger::default(), Policy::default(), Utc::now());
        let routes = [route(Some(60), 2)];
        let changes = ledger.observe_services("outside", &failing(1, State::Outage), start, 2);
        assert_eq!(
            policy.messages(&mut ledger, &changes, &routes, &[], &Links::default(), start).len(),
            1
        );
        let soon = start + chrono::Duration::seconds(30);
        assert!(policy
            .messages(&mut ledger, &[], &routes, &[], &Links::default(), soon)
            .is_empty());
        let later = start + chrono::Duration::seconds(61);
        let reminder = policy.messages(&mut ledger, &[], &routes, &[], &Links::default(), later);
        assert!(reminder[0].message.text.contains("[reminder]"), "{:?}", reminder);
        let again = start + chrono::Duration::seconds(122);
        assert!(policy
            .messages(&mut ledger, &[], &routes, &[], &Links::default(), again)
            .is_empty());
        assert_eq!(policy.held["ops"].rate_limited, 1, "two an hour");
    }

    #[test]
    fn a_message_over_the_limit_leaves_its_incident_untold_until_the_limit_allows() {
        let (mut ledger, mut policy, start) = (Ledger::default(), Policy::default(), Utc::now());
        let routes = [route(None, 1)];
        let links = Links::default();
        let first = ledger.observe_services("outside", &failing(1, State::Outage), start, 2);
        assert_eq!(policy.messages(&mut ledger, &first, &routes, &[], &links, start).len(), 1);
        let second = ledger.observe_services("inside", &failing(1, State::Outage), start, 2);
        assert!(policy.messages(&mut ledger, &second, &routes, &[], &links, start).is_empty());
        assert_eq!(policy.held["ops"].rate_limited, 1);
        let inside = ledger.open.iter().find(|i| i.environment == "inside").expect("open");
        assert!(inside.notified.is_empty(), "a dropped message told nobody");
        let later = start + chrono::Duration::minutes(61);
        let told = policy.messages(&mut ledger, &[], &routes, &[], &links, later);
        assert_eq!(told.len(), 1);
        assert!(told[0].message.text.contains("[opened]"), "{:?}", told[0].message.text);
        assert_eq!(told[0].message.body["id"], told[0].message.id.as_str(), "the id is signed");
    }

    #[test]
    fn a_resolve_goes_only_where_the_incident_was_told() {
        let (mut ledger, mut policy, now) = (Ledger::default(), Policy::default(), Utc::now());
        let mut outage_only = route(None, 30);
        outage_only.severity = State::Outage;
        let changes = ledger.observe_services("outside", &failing(1, State::Degraded), now, 1);
        assert!(policy
            .messages(&mut ledger, &changes, &[outage_only.clone()], &[], &Links::default(), now)
            .is_empty());
        let changes = ledger.observe_services("outside", &BTreeMap::new(), now, 1);
        assert_eq!(changes[0].1, Change::Resolved);
        assert!(policy
            .messages(&mut ledger, &changes, &[outage_only], &[], &Links::default(), now)
            .is_empty());
    }
}
