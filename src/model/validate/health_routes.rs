//! `health.yaml`'s `routes` and `maintenance_windows`: each route has
//! exactly one destination with its secrets by name, a known severity and
//! declared environments; each window is `cron` + `duration` or `start` +
//! `end`, in order.

use std::collections::BTreeSet;
use std::time::Duration;

use super::checks::names_list;
use super::Check;
use crate::model::health::routes::{Opening, Route, Sink, Window};
use crate::model::health::State;
use crate::model::load::Document;
use crate::model::raw;

/// Messages a route sends an hour, unless it says.
pub const DEFAULT_RATE_LIMIT: u32 = 30;

fn check_environments(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    path: &str,
    named: Option<&Vec<String>>,
    environments: &BTreeSet<&str>,
) -> Option<BTreeSet<String>> {
    let named = named?;
    for (i, env) in named.iter().enumerate() {
        if !environments.contains(env.as_str()) {
            let known = names_list(environments.iter().copied());
            check.error(
                doc,
                &format!("{path}[{i}]"),
                format!("unknown environment `{env}`; {known}"),
            );
        }
    }
    Some(named.iter().cloned().collect())
}

fn check_url(check: &mut Check, doc: &Document<raw::HealthFile>, path: &str, url: &str) {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                check.error(doc, path, "credentials in the URL; expected them as a secret");
            }
        }
        _ => check.error(doc, path, format!("invalid URL `{url}`; expected http(s)://host/…")),
    }
}

/// The checked routes.
pub(super) fn check_routes(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    environments: &BTreeSet<&str>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut names = BTreeSet::new();
    for (i, route) in doc.value.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !names.insert(route.name.as_str()) {
            check.error(
                doc,
                &format!("{path}.name"),
                format!("route `{}` is declared twice", route.name),
            );
        }
        let environments_of = check_environments(
            check,
            doc,
            &format!("{path}.environments"),
            route.environments.as_ref(),
            environments,
        );
        let severity = match route.severity.as_deref() {
            None | Some("degraded") => State::Degraded,
            Some("outage") => State::Outage,
            Some(other) => {
                check.error(
                    doc,
                    &format!("{path}.severity"),
                    format!("unknown severity `{other}`; expected degraded or outage"),
                );
                State::Degraded
            }
        };
        let reminder = route.reminder.as_deref().map(|_| {
            check.duration(
                doc,
                &format!("{path}.reminder"),
                route.reminder.as_deref(),
                Duration::from_secs(4 * 3600),
                "4h",
            )
        });
        let rate_limit = route.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT);
        if rate_limit == 0 {
            check.error(
                doc,
                &format!("{path}.rate_limit"),
                "0; expected at least 1 message an hour (drop the route to send none)",
            );
        }
        let sinks = [route.webhook.is_some(), route.matrix.is_some(), route.email.is_some()];
        if sinks.iter().filter(|s| **s).count() != 1 {
            check.error(doc, &path, "expected exactly one of webhook, matrix, email");
            continue;
        }
        let sink = if let Some(w) = &route.webhook {
            check_url(check, doc, &format!("{path}.webhook.url"), &w.url);
            check.secret(doc, &format!("{path}.webhook.secret"), &w.secret, true);
            Sink::Webhook { url: w.url.clone(), secret: w.secret.clone() }
        } else if let Some(m) = &route.matrix {
            check_url(check, doc, &format!("{path}.matrix.homeserver"), &m.homeserver);
            // `!opaque:server`, or `!opaque` since room version 12.
            let room_ok = m.room.len() > 1
                && m.room.len() <= 255
                && m.room.starts_with('!')
                && !m.room.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/');
            if !room_ok {
                check.error(
                    doc,
                    &format!("{path}.matrix.room"),
                    format!(
                        "invalid room id `{}`; expected the room's id (`!…`), not an alias",
                        m.room.escape_debug()
                    ),
                );
            }
            check.secret(doc, &format!("{path}.matrix.access_token"), &m.access_token, true);
            Sink::Matrix {
                homeserver: m.homeserver.clone(),
                room: m.room.clone(),
                access_token: m.access_token.clone(),
            }
        } else if let Some(e) = &route.email {
            let path = format!("{path}.email");
            let address_ok = |a: &str| {
                a.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                    && !a.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',')
            };
            if !address_ok(&e.from) {
                check.error(doc, &format!("{path}.from"), format!("invalid address `{}`", e.from));
            }
            if e.to.is_empty() {
                check.error(
                    doc,
                    &format!("{path}.to"),
                    "no recipient; expected at least one address",
                );
            }
            for (j, to) in e.to.iter().enumerate() {
                if !address_ok(to) {
                    check.error(doc, &format!("{path}.to[{j}]"), format!("invalid address `{to}`"));
                }
            }
            if e.smtp_host.is_empty() || e.smtp_host.contains(['/', ' ', ':']) {
                check.error(
                    doc,
                    &format!("{path}.smtp_host"),
                    format!("invalid host `{}`", e.smtp_host),
                );
            }
            let login = match (&e.username, &e.password) {
                (Some(user), Some(password)) => {
                    check.secret(doc, &format!("{path}.username"), user, false);
                    check.secret(doc, &format!("{path}.password"), password, true);
                    Some((user.clone(), password.clone()))
                }
                (None, None) => None,
                _ => {
                    check.error(doc, &path, "username and password go together");
                    None
                }
            };
            Sink::Email {
                host: e.smtp_host.clone(),
                port: e.smtp_port.unwrap_or(587),
                ca_file: e.ca_file.clone(),
                from: e.from.clone(),
                to: e.to.clone(),
                login,
            }
        } else {
            continue;
        };
        routes.push(Route {
            name: route.name.clone(),
            environments: environments_of,
            services: route.services.as_ref().map(|s| s.iter().cloned().collect()),
            severity,
            reminder,
            rate_limit: rate_limit.max(1),
            sink,
        });
    }
    routes
}

/// The checked maintenance windows.
pub(super) fn check_windows(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    environments: &BTreeSet<&str>,
) -> Vec<Window> {
    let mut windows = Vec::new();
    for (i, window) in doc.value.maintenance_windows.iter().enumerate() {
        let path = format!("maintenance_windows[{i}]");
        let environments_of = check_environments(
            check,
            doc,
            &format!("{path}.environments"),
            window.environments.as_ref(),
            environments,
        );
        let opening = match (&window.cron, &window.duration, &window.start, &window.end) {
            (Some(cron), Some(_), None, None) => {
                let length = check.duration(
                    doc,
                    &format!("{path}.duration"),
                    window.duration.as_deref(),
                    Duration::from_secs(3600),
                    "2h",
                );
                match crate::cron::Schedule::parse(cron) {
                    Ok(cron) => Some(Opening::Recurring { cron: Box::new(cron), length }),
                    Err(message) => {
                        check.error(doc, &format!("{path}.cron"), message);
                        None
                    }
                }
            }
            (None, None, Some(start), Some(end)) => {
                let parse = |check: &mut Check, key: &str, text: &str| {
                    let parsed = chrono::DateTime::parse_from_rfc3339(text)
                        .map(|d| d.with_timezone(&chrono::Utc));
                    if parsed.is_err() {
                        check.error(
                            doc,
                            &format!("{path}.{key}"),
                            format!(
                                "invalid time `{text}`; expected RFC 3339 (2026-12-24T18:00:00Z)"
                            ),
                        );
                    }
                    parsed.ok()
                };
                match (parse(check, "start", start), parse(check, "end", end)) {
                    (Some(start), Some(end)) if start < end => Some(Opening::Once { start, end }),
                    (Some(_), Some(_)) => {
                        check.error(doc, &format!("{path}.end"), "not after start");
                        None
                    }
                    _ => None,
                }
            }
            _ => {
                check.error(doc, &path, "expected cron and duration, or start and end");
                None
            }
        };
        if let Some(opening) = opening {
            windows.push(Window {
                name: window.name.clone(),
                environments: environments_of,
                services: window.services.as_ref().map(|s| s.iter().cloned().collect()),
                opening,
            });
        }
    }
    windows
}

/// `page`: where the status page listens, and who may connect when that
/// is not loopback (like the daemon's webhook listener).
pub(super) fn check_page(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
) -> (Option<std::net::SocketAddr>, Vec<ipnet::IpNet>) {
    let Some(page) = &doc.value.page else { return (None, Vec::new()) };
    let listen =
        page.listen.as_deref().and_then(|text| match text.parse::<std::net::SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                check.error(
                    doc,
                    "page.listen",
                    format!("invalid address `{text}`; expected address:port like 0.0.0.0:8190"),
                );
                None
            }
        });
    let mut allow_from = Vec::new();
    for (i, network) in page.allow_from.iter().enumerate() {
        match network
            .parse::<ipnet::IpNet>()
            .or_else(|_| network.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => allow_from.push(net),
            Err(_) => check.error(
                doc,
                &format!("page.allow_from[{i}]"),
                format!("invalid network `{network}`; expected a CIDR like 192.0.2.0/24"),
            ),
        }
    }
    if let Some(url) = &page.url {
        check_url(check, doc, "page.url", url);
    }
    if listen.is_some_and(|a| !a.ip().is_loopback()) && page.allow_from.is_empty() {
        check.error(
            doc,
            "page.allow_from",
            "the page listens beyond loopback; expected the networks allowed to connect",
        );
    }
    (listen, allow_from)
}
