//! Where incidents are notified (`routes`) and when notifications are held
//! back (`maintenance_windows`), checked; pure.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::State;
use crate::model::raw::MaybeSecret;

/// A checked route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Only these environments (`None`: all).
    pub environments: Option<BTreeSet<String>>,
    /// Only incidents naming one of these services (`None`: all).
    pub services: Option<BTreeSet<String>>,
    /// The least state notified.
    pub severity: State,
    /// Between two reminders; `None`: no reminders.
    pub reminder: Option<Duration>,
    /// Most messages an hour.
    pub rate_limit: u32,
    /// Where.
    pub sink: Sink,
}

impl Route {
    /// Whether an incident of `environment` at `state`, naming `services`
    /// (empty: about no service, a dead-man's switch), goes this way.
    pub fn takes(&self, environment: &str, services: &BTreeSet<String>, state: State) -> bool {
        state >= self.severity
            && self.environments.as_ref().is_none_or(|e| e.contains(environment))
            && self.services.as_ref().is_none_or(|wanted| {
                services.is_empty() || services.iter().any(|s| wanted.contains(s))
            })
    }
}

/// A route's destination; secrets by name, resolved by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// POST of a JSON body signed with HMAC-SHA256.
    Webhook {
        /// URL.
        url: String,
        /// The signing key.
        secret: MaybeSecret,
    },
    /// A message in a Matrix room (client-server API).
    Matrix {
        /// Homeserver base URL.
        homeserver: String,
        /// Room id.
        room: String,
        /// Access token.
        access_token: MaybeSecret,
    },
    /// A mail over SMTP with STARTTLS.
    Email {
        /// Server.
        host: String,
        /// Port.
        port: u16,
        /// Extra CA bundle.
        ca_file: Option<String>,
        /// `From:`.
        from: String,
        /// `To:`.
        to: Vec<String>,
        /// Login, when the server wants one.
        login: Option<(MaybeSecret, MaybeSecret)>,
    },
}

impl PartialEq for Opening {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Recurring { cron: a, length: l }, Self::Recurring { cron: b, length: m }) => {
                a.normalized() == b.normalized() && l == m
            }
            (Self::Once { start: a, end: b }, Self::Once { start: c, end: d }) => a == c && b == d,
            _ => false,
        }
    }
}

impl Sink {
    /// `webhook`, `matrix`, `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Matrix { .. } => "matrix",
            Self::Email { .. } => "email",
        }
    }
}

/// When a window is open.
#[derive(Debug, Clone)]
pub enum Opening {
    /// From each firing of `cron` for `length`.
    Recurring {
        /// The schedule.
        cron: Box<crate::cron::Schedule>,
        /// How long.
        length: Duration,
    },
    /// Once.
    Once {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
}

/// A checked maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Name.
    pub name: String,
    /// Only these environments (`None`: all).
    pub environments: Option<BTreeSet<String>>,
    /// Only these services (`None`: all).
    pub services: Option<BTreeSet<String>>,
    /// When.
    pub opening: Opening,
}

impl Window {
    /// Whether it is open at `now`, and until when.
    pub fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.opening {
            Opening::Once { start, end } => (*start <= now && now < *end).then_some(*end),
            Opening::Recurring { cron, length } => {
                let length = chrono::Duration::from_std(*length).unwrap_or_default();
                // The latest opening at or before now: the first one after now - length.
                let opened = cron.next_after(&(now - length))?;
                (opened <= now).then_some(opened + length)
            }
        }
    }

    /// Whether it holds back a notification of `environment` about
    /// `services` (all of them must be covered) at `now`.
    pub fn covers(
        &self,
        environment: &str,
        services: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> bool {
        self.open_until(now).is_some()
            && self.environments.as_ref().is_none_or(|e| e.contains(environment))
            && self
                .services
                .as_ref()
                .is_none_or(|covered| !services.is_empty() && services.is_subset(covered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_route_takes_its_environments_services_and_severities() {
        let route = Route {
            name: "r".into(),
            environments: Some(names(&["outside"])),
            services: Some(names(&["compute"])),
            severity: State::Outage,
            reminder: None,
            rate_limit: 30,
            sink: Sink::Webhook { url: "http://x".into(), secret: MaybeSecret::Plain("k".into()) },
        };
        assert!(route.takes("outside", &names(&["compute", "network"]), State::Outage));
        assert!(!route.takes("outside", &names(&["compute"]), State::Degraded));
        assert!(!route.takes("inside", &names(&["compute"]), State::Outage));
        assert!(!route.takes("outside", &names(&["network"]), State::Outage));
        assert!(route.takes("outside", &names(&[]), State::Outage), "a dead-man's switch");
    }

    #[test]
    fn windows_open_once_or_on_a_schedule_and_cover_their_services() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc));
        let (Ok(start), Ok(end), Ok(inside), Ok(after)) = (
            at("2026-12-07T10:00:00Z"),
            at("2026-12-07T12:00:00Z"),
            at("2026-12-07T11:00:00Z"),
            at("2026-12-07T12:00:01Z"),
        ) else {
            panic!("dates")
        };
        let once = Window {
            name: "w".into(),
            environments: None,
            services: Some(names(&["compute"])),
            opening: Opening::Once { start, end },
        };
        assert_eq!(once.open_until(inside), Some(end));
        assert_eq!(once.open_until(after), None);
        assert!(once.covers("outside", &names(&["compute"]), inside));
        assert!(!once.covers("outside", &names(&["compute", "network"]), inside));
        let Ok(cron) = crate::cron::Schedule::parse("0 11 * * *") else { panic!("cron") };
        let daily = Window {
            name: "d".into(),
            environments: Some(names(&["outside"])),
            services: None,
            opening: Opening::Recurring { cron: Box::new(cron), length: Duration::from_secs(1800) },
        };
        assert!(daily.covers("outside", &names(&["x"]), inside));
        assert!(!daily.covers("inside", &names(&["x"]), inside));
        assert_eq!(daily.open_until(after), None);
    }
}
