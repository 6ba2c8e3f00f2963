//! The status page (`/`): each environment's services with their state now
//! and their last 24 h and 7 d, open and recent incidents, maintenance
//! windows open now, refused queries and failing notification routes.
//! Server-rendered HTML without scripts (a page people read, and that
//! works wherever it is proxied); every value escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::evaluate::Evaluation;
use super::history::History;
use super::incidents::{Incident, Ledger};
use crate::model::health::routes::Window;
use crate::model::health::State;
use crate::notify::RouteCounters;

/// What the page shows.
pub struct Snapshot<'a> {
    /// The last evaluation and when.
    pub last: Option<&'a (DateTime<Utc>, Evaluation)>,
    /// Incidents.
    pub ledger: &'a Ledger,
    /// The services' pasts.
    pub history: &'a History,
    /// The maintenance windows.
    pub windows: &'a [Window],
    /// Each route's counters.
    pub routes: &'a BTreeMap<String, RouteCounters>,
    /// Now.
    pub now: DateTime<Utc>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn state_class(state: Option<State>) -> &'static str {
    state.map_or("none", State::as_str)
}

fn cells(states: &[Option<State>]) -> String {
    states
        .iter()
        .map(|s| {
            format!(
                "<span class=\"cell {}\" title=\"{}\"></span>",
                state_class(*s),
                state_class(*s)
            )
        })
        .collect()
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1em}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}.state{font-weight:bold}.ok{color:#1a7f37}.degraded{color:#9a6700}.outage{color:#cf222e}.cell{display:inline-block;width:.7em;height:1em;margin-right:1px;background:#ddd}.cell.ok{background:#2da44e}.cell.degraded{background:#d4a72c}.cell.outage{background:#cf222e}.error{color:#cf222e}";

fn incident_row(out: &mut String, incident: &Incident) {
    let parts: Vec<String> = incident
        .parts
        .iter()
        .map(|(name, part)| {
            format!("{}: {} (worst {})", escape(name), part.state.as_str(), part.worst.as_str())
        })
        .collect();
    let _ = write!(
        out,
        "<li class=\"incident {state}\" data-incident=\"{id}\" data-environment=\"{env}\"><b>{env}</b> — {about}: <span class=\"state {state}\">{state}</span>, opened {opened}{resolved}<br>{parts}{detail}</li>",
        id = escape(&incident.id),
        env = escape(&incident.environment),
        about = escape(&incident.about),
        state = incident.parts.values().map(|p| p.worst).max().unwrap_or(State::Ok).as_str(),
        opened = incident.opened.format("%Y-%m-%d %H:%M:%S UTC"),
        resolved = incident
            .resolved
            .map(|r| format!(", resolved {}", r.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default(),
        parts = parts.join("; "),
        detail = incident.detail.as_deref().map(|d| format!("<br>{}", escape(d))).unwrap_or_default(),
    );
    if !incident.logs.is_empty() {
        let links: Vec<String> = incident
            .logs
            .iter()
            .filter(|(_, url)| url.starts_with("http://") || url.starts_with("https://"))
            .map(|(scenario, url)| {
                format!("<a class=\"log\" href=\"{}\">{} log</a>", escape(url), escape(scenario))
            })
            .collect();
        // Inside the list item just written.
        if out.ends_with("</li>") {
            out.truncate(out.len() - "</li>".len());
            let _ = write!(out, "<br>Failed runs: {}</li>", links.join(", "));
        }
    }
}

/// The page.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let _ = write!(out, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"60\"><title>apimon status</title><style>{STYLE}</style></head><body><h1>apimon status</h1>");
    match snapshot.last {
        Some((at, _)) => {
            let _ = write!(
                out,
                "<p id=\"evaluated\">Evaluated {}.</p>",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        None => out.push_str("<p id=\"evaluated\">Not evaluated yet.</p>"),
    }
    let open_windows: Vec<(&Window, DateTime<Utc>)> = snapshot
        .windows
        .iter()
        .filter_map(|w| w.open_until(snapshot.now).map(|u| (w, u)))
        .collect();
    out.push_str("<section id=\"windows\"><h2>Maintenance</h2>");
    if open_windows.is_empty() {
        out.push_str("<p>No maintenance window is open.</p>");
    } else {
        out.push_str("<ul>");
        for (window, until) in open_windows {
            let scope = |set: &Option<std::collections::BTreeSet<String>>| {
                set.as_ref().map_or("all".to_owned(), |s| {
                    s.iter().map(|x| escape(x)).collect::<Vec<_>>().join(", ")
                })
            };
            let _ = write!(
                out,
                "<li class=\"window\" data-window=\"{name}\">{name}: open until {until} (environments: {envs}; services: {services}); notifications are held back</li>",
                name = escape(&window.name),
                until = until.format("%Y-%m-%d %H:%M:%S UTC"),
                envs = scope(&window.environments),
                services = scope(&window.services),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    out.push_str("<section id=\"incidents\"><h2>Open incidents</h2>");
    if snapshot.ledger.open.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        out.push_str("<ul>");
        for incident in &snapshot.ledger.open {
            incident_row(&mut out, incident);
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Recent incidents</h2><ul id=\"recent\">");
    for incident in snapshot.ledger.recent.iter().take(20) {
        incident_row(&mut out, incident);
    }
    out.push_str("</ul></section>");
    if let Some((_, evaluation)) = snapshot.last {
        for (environment, services) in &evaluation.environments {
            let pasts = snapshot.history.get(environment);
            let _ = write!(out, "<section class=\"environment\" data-environment=\"{env}\"><h2>{env}</h2><table><tr><th>service</th><th>now</th><th>last 24 h</th><th>last 7 d</th></tr>", env = escape(environment));
            for (service, health) in services {
                let past = pasts.and_then(|p| p.get(service)).cloned().unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr data-service=\"{name}\" data-state=\"{state}\"><td>{name}</td><td class=\"state {state}\">{state}</td><td>{day}</td><td>{week}</td></tr>",
                    name = escape(service),
                    state = health.state.as_str(),
                    day = cells(&past.day),
                    week = cells(&past.week),
                );
            }
            out.push_str("</table>");
            if pasts.is_none() {
                out.push_str("<p class=\"error\">The history could not be read from InfluxDB.</p>");
            }
            out.push_str("</section>");
        }
        if !evaluation.errors.is_empty() {
            out.push_str("<section id=\"errors\"><h2>Refused queries</h2><ul>");
            for error in &evaluation.errors {
                let _ = write!(
                    out,
                    "<li class=\"error\">{}: template {}: {}</li>",
                    escape(&error.environment),
                    escape(&error.template),
                    escape(&error.message)
                );
            }
            out.push_str("</ul></section>");
        }
    }
    let failing: Vec<(&String, &RouteCounters)> =
        snapshot.routes.iter().filter(|(_, c)| c.pending > 0 || c.dropped > 0).collect();
    if !failing.is_empty() {
        out.push_str("<section id=\"deliveries\"><h2>Notifications not delivered</h2><ul>");
        for (route, counters) in failing {
            let _ = write!(out, "<li class=\"error\" data-route=\"{r}\">{r}: {} waiting, {} failed attempts, {} dropped</li>", counters.pending, counters.failures, counters.dropped, r = escape(route));
        }
        out.push_str("</ul></section>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("<script>\"x\"&'y'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;");
    }

    #[test]
    fn an_empty_service_renders_a_page_that_says_so() {
        let ledger = Ledger::default();
        let page = render(&Snapshot {
            last: None,
            ledger: &ledger,
            history: &History::new(),
            windows: &[],
            routes: &BTreeMap::new(),
            now: Utc::now(),
        });
        assert!(
            page.contains("Not evaluated yet.") && page.contains("No maintenance window is open.")
        );
    }
}
