//! Incidents: the state machine (pure) and its store.
//!
//! Per environment at most one open incident about services: a service
//! leaving ok opens it or joins the open one; a change of any of its
//! services' states updates it; it resolves once every service in it has
//! been ok for `resolve_after` consecutive evaluations. A dead-man's switch
//! (an executor gone silent, a scenario that stopped running, the daemon's
//! reconciles failing) has incidents of its own, one per switch.
//!
//! The store is one JSON file (`incidents.json` in the state directory),
//! rewritten whole — fsynced, then renamed — after every change: a few
//! kilobytes (open incidents and the last [`RECENT_KEPT`] resolved ones),
//! so a database would add a dependency and a format for nothing, and a
//! rename never leaves half a file behind a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::evaluate::ServiceHealth;
use crate::model::health::State;

/// Resolved incidents kept for the page and the API.
pub const RECENT_KEPT: usize = 200;
/// Most bytes of the store read.
const MAX_STORE: u64 = 16 * 1024 * 1024;

/// One service's part in an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Its state now.
    pub state: State,
    /// The worst it was in this incident.
    pub worst: State,
    /// The flags that fired last, with their templates' values.
    pub fired: BTreeMap<String, Option<f64>>,
    /// Consecutive ok evaluations.
    pub ok_streak: u32,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Unique.
    pub id: String,
    /// Environment.
    pub environment: String,
    /// `services`, or the dead-man's switch (`executor:<host>`,
    /// `scenario:<name>`, `reconcile`).
    pub about: String,
    /// Opened.
    pub opened: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
    /// Resolved.
    pub resolved: Option<DateTime<Utc>>,
    /// The worst state of its parts now.
    pub state: State,
    /// Services (or the switch's one part), by name.
    pub parts: BTreeMap<String, Part>,
    /// What a dead-man's switch saw.
    pub detail: Option<String>,
    /// Routes that were told, and when last (reminders count from it).
    pub notified: BTreeMap<String, DateTime<Utc>>,
    /// The logs of the environment's latest failed runs, by scenario, as
    /// the incident last changed (links to object storage).
    #[serde(default)]
    pub logs: BTreeMap<String, String>,
}

impl Incident {
    /// Its services (none for a dead-man's switch).
    pub fn services(&self) -> BTreeSet<String> {
        if self.about == SERVICES {
            self.parts.keys().cloned().collect()
        } else {
            BTreeSet::new()
        }
    }
}

/// What one evaluation did to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It opened.
    Opened,
    /// A part's state changed.
    Updated,
    /// It resolved.
    Resolved,
}

/// `about` of the incidents over services.
pub const SERVICES: &str = "services";

/// Open and recent incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Open, oldest first.
    pub open: Vec<Incident>,
    /// Resolved, newest first.
    pub recent: Vec<Incident>,
}

fn new_id(environment: &str, now: DateTime<Utc>) -> String {
    format!("{environment}-{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), rand::random::<u16>())
}

impl Ledger {
    fn open_index(&self, environment: &str, about: &str) -> Option<usize> {
        self.open.iter().position(|i| i.environment == environment && i.about == about)
    }

    /// Takes one evaluation of `environment`'s services; the incidents it
    /// changed, with how.
    pub fn observe_services(
        &mut self,
        environment: &str,
        services: &BTreeMap<String, ServiceHealth>,
        now: DateTime<Utc>,
        resolve_after: u32,
    ) -> Vec<(String, Change)> {
        let failing: Vec<(&String, &ServiceHealth)> =
            services.iter().filter(|(_, h)| h.state != State::Ok).collect();
        let index = match self.open_index(environment, SERVICES) {
            Some(index) => index,
            None if failing.is_empty() => return Vec::new(),
            None => {
                self.open.push(Incident {
                    id: new_id(environment, now),
                    environment: environment.to_owned(),
                    about: SERVICES.to_owned(),
                    opened: now,
                    updated: now,
                    resolved: None,
                    state: State::Ok,
                    parts: BTreeMap::new(),
                    detail: None,
                    notified: BTreeMap::new(),
                    logs: BTreeMap::new(),
                });
                self.open.len() - 1
            }
        };
        let incident = &mut self.open[index];
        let fresh = incident.parts.is_empty();
        let mut changed = false;
        for (service, health) in &failing {
            let fired = health
                .fired
                .iter()
                .map(|flag| (flag.clone(), None))
                .chain(health.values.iter().map(|(t, v)| (format!("{t} (value)"), Some(*v))))
                .collect();
            let part = incident.parts.entry((*service).clone()).or_insert(Part {
                state: State::Ok,
                worst: health.state,
                fired: BTreeMap::new(),
                ok_streak: 0,
            });
            changed |= part.state != health.state;
            part.state = health.state;
            part.worst = part.worst.max(health.state);
            part.fired = fired;
            part.ok_streak = 0;
        }
        for (service, part) in incident.parts.iter_mut() {
            // No longer failing (ok, or no data: nothing fails).
            if !failing.iter().any(|(s, _)| *s == service) {
                changed |= part.state != State::Ok;
                part.state = State::Ok;
                part.ok_streak = part.ok_streak.saturating_add(1);
            }
        }
        incident.state = incident.parts.values().map(|p| p.state).max().unwrap_or(State::Ok);
        let id = incident.id.clone();
        if incident.parts.values().all(|p| p.state == State::Ok && p.ok_streak >= resolve_after) {
            return vec![(id, self.resolve(index, now))];
        }
        if fresh {
            return vec![(id, Change::Opened)];
        }
        if changed {
            incident.updated = now;
            return vec![(id, Change::Updated)];
        }
        Vec::new()
    }

    /// Takes one look of a dead-man's switch (`about`) of `environment`:
    /// `failing` says what it saw when it fired; the incident it changed.
    pub fn observe_switch(
        &mut self,
        environment: &str,
        about: &str,
        failing: Option<String>,
        now: DateTime<Utc>,
        resolve_after: u32,
    ) -> Option<(String, Change)> {
        let index = self.open_index(environment, about);
        match (index, failing) {
            (None, None) => None,
            (None, Some(detail)) => {
                let id = new_id(environment, now);
                let part = Part {
                    state: State::Outage,
                    worst: State::Outage,
                    fired: BTreeMap::new(),
                    ok_streak: 0,
                };
                self.open.push(Incident {
                    id: id.clone(),
                    environment: environment.to_owned(),
                    about: about.to_owned(),
                    opened: now,
                    updated: now,
                    resolved: None,
                    state: State::Outage,
                    parts: BTreeMap::from([(about.to_owned(), part)]),
                    detail: Some(detail),
                    notified: BTreeMap::new(),
                    logs: BTreeMap::new(),
                });
                Some((id, Change::Opened))
            }
            (Some(index), Some(detail)) => {
                let incident = &mut self.open[index];
                incident.parts.values_mut().for_each(|p| p.ok_streak = 0);
                incident.detail = Some(detail);
                None
            }
            (Some(index), None) => {
                let incident = &mut self.open[index];
                let id = incident.id.clone();
                let mut streak = 0;
                for part in incident.parts.values_mut() {
                    part.ok_streak = part.ok_streak.saturating_add(1);
                    streak = part.ok_streak;
                }
                (streak >= resolve_after).then(|| (id, self.resolve(index, now)))
            }
        }
    }

    /// Takes every switch of `environment` looked at now (`about`, what it
    /// saw when it fired); a switch with an open incident that was not
    /// looked at (its executor or scenario gone from the configuration, or
    /// out of the queries' reach) is quiet, so its incident resolves.
    pub fn observe_switches(
        &mut self,
        environment: &str,
        looks: &[(String, Option<String>)],
        now: DateTime<Utc>,
        resolve_after: u32,
    ) -> Vec<(String, Change)> {
        let mut changes: Vec<(String, Change)> = looks
            .iter()
            .filter_map(|(about, fired)| {
                self.observe_switch(environment, about, fired.clone(), now, resolve_after)
            })
            .collect();
        let gone: Vec<String> = self
            .open
            .iter()
            .filter(|i| i.environment == environment && i.about != SERVICES)
            .filter(|i| !looks.iter().any(|(about, _)| *about == i.about))
            .map(|i| i.about.clone())
            .collect();
        for about in gone {
            changes.extend(self.observe_switch(environment, &about, None, now, resolve_after));
        }
        changes
    }

    fn resolve(&mut self, index: usize, now: DateTime<Utc>) -> Change {
        let mut incident = self.open.remove(index);
        incident.resolved = Some(now);
        incident.updated = now;
        incident.state = State::Ok;
        self.recent.insert(0, incident);
        self.recent.truncate(RECENT_KEPT);
        Change::Resolved
    }

    /// The incident `id`, open or recent.
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.open.iter().chain(&self.recent).find(|i| i.id == id)
    }

    /// The incident `id`, open or recent, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Incident> {
        self.open.iter_mut().chain(self.recent.iter_mut()).find(|i| i.id == id)
    }
}

/// The store of a ledger.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store at `dir/incidents.json`.
    pub fn new(dir: &Path) -> Self {
        Self { path: dir.join("incidents.json") }
    }

    /// What it holds: empty when there is no file; an unreadable one is
    /// moved aside (`.bad`) and said, never silently replaced.
    pub fn load(&self) -> Ledger {
        match crate::fsutil::read_limited(&self.path, MAX_STORE) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(ledger) => ledger,
                Err(error) => {
                    tracing::error!(path = %self.path.display(), %error, "The incident store is unreadable; it is set aside and incidents start afresh.");
                    let _ = std::fs::rename(&self.path, self.path.with_extension("json.bad"));
                    Ledger::default()
                }
            },
            Err(crate::fsutil::ReadError::Io(error))
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ledger::default()
            }
            Err(error) => {
                // Set aside, never overwritten by the next save.
                tracing::error!(path = %self.path.display(), %error, "Cannot read the incident store; it is set aside and incidents start afresh.");
                let _ = std::fs::rename(&self.path, self.path.with_extension("json.bad"));
                Ledger::default()
            }
        }
    }

    /// Writes `ledger` durably.
    ///
    /// # Errors
    /// It cannot be written; the previous file stays.
    pub fn save(&self, ledger: &Ledger) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(ledger).map_err(std::io::Error::other)?;
        crate::fsutil::write_private(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(state: State) -> ServiceHealth {
        ServiceHealth { state, values: BTreeMap::new(), fired: BTreeSet::new() }
    }

    fn services(list: &[(&str, State)]) -> BTreeMap<String, ServiceHealth> {
        list.iter().map(|(s, st)| ((*s).to_owned(), health(*st))).collect()
    }

    macro_rules! steps {
        ($($name:ident: [$($step:expr => $want:expr),* $(,)?];)*) => {$(
            #[test]
            fn $name() {
                let mut ledger = Ledger::default();
                let now = Utc::now();
                for (i, (step, want)) in [$(($step, $want)),*].into_iter().enumerate() {
                    let changes = ledger.observe_services("outside", &services(step), now, 2);
                    let got: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
                    assert_eq!(got, want, "step {i}");
                }
            }
        )*};
    }

    use State::{Degraded, Ok as Fine, Outage};
    steps! {
        a_failing_service_opens_updates_and_resolves_after_two_ok_evaluations: [
            &[("compute", Fine)][..] => vec![],
            &[("compute", Degraded)] => vec![Change::Opened],
            &[("compute", Degraded)] => vec![],
            &[("compute", Outage)] => vec![Change::Updated],
            &[("compute", Fine)] => vec![Change::Updated],
            &[("compute", Fine)] => vec![Change::Resolved],
            &[("compute", Fine)] => vec![],
        ];
        a_second_service_joins_the_open_incident: [
            &[("compute", Outage), ("network", Fine)][..] => vec![Change::Opened],
            &[("compute", Outage), ("network", Degraded)] => vec![Change::Updated],
            &[("compute", Fine), ("network", Degraded)] => vec![Change::Updated],
            &[("compute", Fine), ("network", Fine)] => vec![Change::Updated],
            &[("compute", Fine), ("network", Fine)] => vec![Change::Resolved],
        ];
        a_relapse_before_resolving_keeps_the_incident: [
            &[("compute", Outage)][..] => vec![Change::Opened],
            &[("compute", Fine)] => vec![Change::Updated],
            &[("compute", Outage)] => vec![Change::Updated],
            &[("compute", Fine)] => vec![Change::Updated],
            &[("compute", Fine)] => vec![Change::Resolved],
        ];
    }

    #[test]
    fn forty_failing_services_are_one_incident() {
        let mut ledger = Ledger::default();
        let forty: Vec<(String, State)> = (0..40).map(|i| (format!("s{i}"), Outage)).collect();
        let list: Vec<(&str, State)> = forty.iter().map(|(s, st)| (s.as_str(), *st)).collect();
        let changes = ledger.observe_services("outside", &services(&list), Utc::now(), 2);
        assert_eq!(changes.len(), 1);
        assert_eq!(ledger.open.len(), 1);
        assert_eq!(ledger.open[0].parts.len(), 40);
    }

    #[test]
    fn a_switch_opens_its_own_incident_and_resolves() {
        let mut ledger = Ledger::default();
        let now = Utc::now();
        let opened = ledger.observe_switch("outside", "executor:e1", Some("silent".into()), now, 2);
        assert!(matches!(opened, Some((_, Change::Opened))));
        ledger.observe_services("outside", &services(&[("compute", Outage)]), now, 2);
        assert_eq!(ledger.open.len(), 2, "its own incident");
        assert_eq!(ledger.observe_switch("outside", "executor:e1", None, now, 2), None);
        let resolved = ledger.observe_switch("outside", "executor:e1", None, now, 2);
        assert!(matches!(resolved, Some((_, Change::Resolved))));
        assert_eq!(ledger.recent[0].about, "executor:e1");
    }

    #[test]
    fn a_switch_no_longer_looked_at_resolves() {
        let mut ledger = Ledger::default();
        let now = Utc::now();
        let fired = vec![("scenario:gone".to_owned(), Some("silent".to_owned()))];
        let opened = ledger.observe_switches("outside", &fired, now, 2);
        assert!(matches!(opened[..], [(_, Change::Opened)]));
        assert!(ledger.observe_switches("outside", &[], now, 2).is_empty());
        let resolved = ledger.observe_switches("outside", &[], now, 2);
        assert!(matches!(resolved[..], [(_, Change::Resolved)]));
        assert!(ledger.open.is_empty());
    }

    #[test]
    fn the_store_survives_a_restart_and_sets_garbage_aside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path());
        assert_eq!(store.load(), Ledger::default());
        let mut ledger = Ledger::default();
        ledger.observe_services("outside", &services(&[("compute", Outage)]), Utc::now(), 2);
        store.save(&ledger).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load(), ledger);
        std::fs::write(dir.path().join("incidents.json"), "{").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load(), Ledger::default());
        assert!(dir.path().join("incidents.json.bad").exists());
    }
}
