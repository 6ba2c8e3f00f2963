//! InfluxDB 1.x: databases, retention policies, users and grants.
//!
//! The pure part: what the repository asks for and how it compares with
//! what exists. Passwords cannot be read back from InfluxDB, so observe
//! reports a user's password as matching or not — by its fingerprint in the
//! state store, or by trying to log in when there is none (and, on drift
//! passes, for a budgeted slice of users) — and the comparison only says
//! "password changed".

mod apply;
pub mod client;
mod observe;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::model::{Environment, InfluxDuration, Privilege, Role, Secrets, Sensitive};
use crate::plan::{
    Comparison, DesiredItem, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind,
    ResourceId, Spec,
};

use super::{
    failure_kind, openstack, Availability, Context, FailureKind, Model, Ownership, Provider, Scope,
};
pub use client::InfluxdbError;
use client::{Client, Credentials};

/// One InfluxDB object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InfluxdbSpec {
    /// `CREATE DATABASE`.
    Database,
    /// `CREATE RETENTION POLICY`.
    RetentionPolicy {
        /// Database.
        database: String,
        /// Policy name.
        name: String,
        /// How long data is kept.
        duration: InfluxDuration,
        /// Shard group duration; `None` lets InfluxDB choose.
        shard_duration: Option<InfluxDuration>,
        /// Replication factor.
        replication: u32,
        /// Default policy of the database.
        default: bool,
    },
    /// `CREATE USER`.
    User {
        /// Cluster administrator.
        admin: bool,
        /// Desired password; observed specs carry the desired one when it
        /// still logs in (or its fingerprint still matches) and an empty
        /// one when it does not.
        password: Sensitive<String>,
        /// sha256 over user and password, kept in the state store: tells a
        /// changed declared password without a login. Never printed.
        #[serde(skip)]
        fingerprint: String,
    },
    /// `CREATE CONTINUOUS QUERY`: the whole statement, as apimon composes
    /// it (desired) or as InfluxDB stores it (observed).
    ContinuousQuery {
        /// Database.
        database: String,
        /// The `CREATE CONTINUOUS QUERY … END` statement.
        query: String,
    },
    /// `GRANT`.
    Grant {
        /// User.
        user: String,
        /// Database.
        database: String,
        /// Privilege.
        privilege: Privilege,
    },
}

impl Spec for InfluxdbSpec {
    fn compare(&self, observed: &Self) -> Comparison {
        use InfluxdbSpec as S;
        match (self, observed) {
            (
                S::RetentionPolicy { duration, shard_duration, replication, default, .. },
                S::RetentionPolicy {
                    duration: have_duration,
                    shard_duration: have_shard,
                    replication: have_replication,
                    default: have_default,
                    ..
                },
            ) => {
                let mut reasons = Vec::new();
                if duration != have_duration {
                    reasons.push(format!("duration {have_duration} → {duration}"));
                }
                if shard_duration.is_some() && shard_duration != have_shard {
                    reasons.push("shard duration changed".to_owned());
                }
                if replication != have_replication {
                    reasons.push(format!("replication {have_replication} → {replication}"));
                }
                if default != have_default {
                    reasons.push(
                        if *default { "becomes default" } else { "no longer default" }.to_owned(),
                    );
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (
                S::User { admin, password, .. },
                S::User { admin: have_admin, password: have_password, .. },
            ) => {
                let mut reasons = Vec::new();
                if admin != have_admin {
                    reasons.push(if *admin { "grant admin" } else { "revoke admin" }.to_owned());
                }
                if password != have_password {
                    reasons.push("password changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (S::Grant { privilege, .. }, S::Grant { privilege: have, .. }) if privilege != have => {
                Comparison::Update(vec![
                    format!("privilege {have:?} → {privilege:?}").to_uppercase()
                ])
            }
            (S::ContinuousQuery { query, .. }, S::ContinuousQuery { query: have, .. }) => {
                // InfluxDB has no ALTER for continuous queries.
                if crate::model::influxql::same_statement(query, have) {
                    Comparison::Same
                } else {
                    Comparison::Replace("query changed".to_owned())
                }
            }
            (want, have) if want == have => Comparison::Same,
            (S::Database, S::Database) | (S::Grant { .. }, S::Grant { .. }) => Comparison::Same,
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("influxdb");

fn id(env: &str, kind: &'static str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, KIND, kind, name)
}

/// Id of a user, which Grafana datasources depend on.
pub fn user_id(env: &str, user: &str) -> ResourceId {
    id(env, "user", user)
}

fn database_id(env: &str, database: &str) -> ResourceId {
    id(env, "database", database)
}

fn retention_policy_id(env: &str, database: &str, policy: &str) -> ResourceId {
    id(env, "retention_policy", format!("{database}.{policy}"))
}

fn continuous_query_id(env: &str, database: &str, query: &str) -> ResourceId {
    id(env, "continuous_query", format!("{database}.{query}"))
}

fn grant_id(env: &str, user: &str, database: &str) -> ResourceId {
    id(env, "grant", format!("{user}@{database}"))
}

/// The password `user` should have, resolved.
fn password_of(user: &crate::model::raw::InfluxUser, secrets: &Secrets) -> Sensitive<String> {
    secrets.resolve(&user.password).unwrap_or_default()
}

/// Fingerprint of `user`'s password: what the state store keeps.
pub fn password_fingerprint(user: &str, password: &str) -> String {
    crate::digest::sha256_hex(format!("apimon-influxdb-user:{user}:{password}").as_bytes())
}

/// One environment's InfluxDB, reached as its administrator.
#[derive(Debug, Clone)]
pub struct InfluxdbProvider {
    env: String,
    client: Client,
    admin: Credentials,
    /// Declared passwords by user, to detect drift by logging in.
    passwords: BTreeMap<String, Sensitive<String>>,
}

/// How long one HTTP request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl InfluxdbProvider {
    /// The provider for `env`, logging in as its `admin_user`.
    ///
    /// # Errors
    /// The CA file cannot be used.
    pub fn for_environment(
        env: &Environment,
        context: &crate::providers::Context<'_>,
    ) -> Result<Self, InfluxdbError> {
        let secrets = context.secrets;
        let endpoint = &env.influxdb_endpoint;
        let forward =
            crate::providers::tunnel::for_endpoint(env, context, &endpoint.url, endpoint.via)
                .map_err(|e| InfluxdbError::Setup {
                    url: endpoint.url.clone(),
                    message: e.to_string(),
                })?;
        let client = Client::new(
            &endpoint.url,
            endpoint.ca_file.as_deref().map(Path::new),
            REQUEST_TIMEOUT,
            forward.as_ref(),
        )?;
        let passwords: BTreeMap<String, Sensitive<String>> =
            env.influxdb.users.iter().map(|u| (u.name.clone(), password_of(u, secrets))).collect();
        let admin = Credentials {
            user: endpoint.admin_user.clone(),
            password: passwords.get(&endpoint.admin_user).cloned().unwrap_or_default(),
        };
        Ok(Self { env: env.name.clone(), client, admin, passwords })
    }

    /// The InfluxDB URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> usize {
        self.client.requests()
    }
}

impl Provider for InfluxdbProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::StateStore;
    type Spec = InfluxdbSpec;
    type Error = InfluxdbError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<InfluxdbSpec> {
        desired(env, model.secrets)
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        _desired: &DesiredSet<InfluxdbSpec>,
    ) -> Result<Availability<Self>, InfluxdbError> {
        Self::for_environment(env, context).map(Availability::Available)
    }

    fn fingerprint(spec: &InfluxdbSpec) -> Option<&str> {
        match spec {
            InfluxdbSpec::User { fingerprint, .. } => Some(fingerprint),
            _ => None,
        }
    }

    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<InfluxdbSpec>, InfluxdbError> {
        observe::observe(self, scope).await
    }

    async fn apply(&self, change: &Planned<ItemChange<InfluxdbSpec>>) -> Result<(), InfluxdbError> {
        apply::apply(self, change).await
    }

    fn classify(error: &InfluxdbError) -> FailureKind {
        failure_kind(error.is_transient())
    }

    fn requests(&self) -> usize {
        self.client.requests()
    }
}

/// What the environment asks of its InfluxDB. Every object depends on the
/// InfluxDB server, so a new environment gets its VM first, and everything
/// but the administrator on the administrator, who creates it.
pub fn desired(env: &Environment, secrets: &Secrets) -> DesiredSet<InfluxdbSpec> {
    let name = env.name.as_str();
    let server: Vec<ResourceId> = env
        .serving_host(Role::Influxdb, &env.influxdb_endpoint.url)
        .map(|h| openstack::server_id(name, &h.name))
        .into_iter()
        .collect();
    let mut after_admin = server.clone();
    after_admin.push(user_id(name, &env.influxdb_endpoint.admin_user));
    let mut set = DesiredSet::new();
    for database in &env.influxdb.databases {
        let db_id = database_id(name, &database.name);
        set.insert(db_id.clone(), DesiredItem::new(InfluxdbSpec::Database, after_admin.clone()));
        for rp in &database.retention_policies {
            let spec = InfluxdbSpec::RetentionPolicy {
                database: database.name.clone(),
                name: rp.name.clone(),
                duration: rp.duration,
                shard_duration: rp.shard_duration,
                replication: rp.replication,
                default: rp.default,
            };
            set.insert(
                retention_policy_id(name, &database.name, &rp.name),
                DesiredItem::new(spec, vec![db_id.clone()]),
            );
        }
        for query in &database.continuous_queries {
            let spec = InfluxdbSpec::ContinuousQuery {
                database: database.name.clone(),
                query: continuous_query_statement(&database.name, query),
            };
            let policies = [&query.from, &query.into]
                .into_iter()
                .filter(|rp| database.retention_policies.iter().any(|p| p.name == **rp))
                .map(|rp| retention_policy_id(name, &database.name, rp));
            set.insert(
                continuous_query_id(name, &database.name, &query.name),
                DesiredItem::new(spec, std::iter::once(db_id.clone()).chain(policies).collect()),
            );
        }
    }
    for user in &env.influxdb.users {
        let u_id = user_id(name, &user.name);
        let depends_on = if user.name == env.influxdb_endpoint.admin_user {
            server.clone()
        } else {
            after_admin.clone()
        };
        let password = password_of(user, secrets);
        let fingerprint = password_fingerprint(&user.name, password.expose());
        let spec = InfluxdbSpec::User { admin: user.admin, password, fingerprint };
        set.insert(u_id.clone(), DesiredItem::new(spec, depends_on));
        for grant in &user.grants {
            let spec = InfluxdbSpec::Grant {
                user: user.name.clone(),
                database: grant.database.clone(),
                privilege: grant.privilege,
            };
            let depends_on = vec![u_id.clone(), database_id(name, &grant.database)];
            set.insert(
                grant_id(name, &user.name, &grant.database),
                DesiredItem::new(spec, depends_on),
            );
        }
    }
    set
}

/// The `CREATE CONTINUOUS QUERY` statement for `query` on `database`.
/// Points keep the tags `group_by` names (all by default: `GROUP BY *`;
/// an empty list keeps none)
/// and land in the measurement of the same name in the target policy
/// (`:MEASUREMENT`).
pub fn continuous_query_statement(database: &str, query: &crate::model::ContinuousQuery) -> String {
    use client::{duration_literal, identifier};
    let db = identifier(database);
    let mut statement = format!("CREATE CONTINUOUS QUERY {} ON {db}", identifier(&query.name));
    if query.every.is_some() || query.span.is_some() {
        statement.push_str(" RESAMPLE");
        if let Some(every) = query.every {
            statement.push_str(&format!(" EVERY {}", duration_literal(every.as_nanos())));
        }
        if let Some(span) = query.span {
            statement.push_str(&format!(" FOR {}", duration_literal(span.as_nanos())));
        }
    }
    let measurements = if query.measurements.starts_with('/') {
        query.measurements.clone()
    } else {
        identifier(&query.measurements)
    };
    statement.push_str(&format!(
        " BEGIN SELECT {} INTO {db}.{}.:MEASUREMENT FROM {db}.{}.{measurements}",
        query.select,
        identifier(&query.into),
        identifier(&query.from),
    ));
    if let Some(condition) = &query.condition {
        statement.push_str(&format!(" WHERE {condition}"));
    }
    let tags = match &query.group_by {
        None => ", *".to_owned(),
        Some(tags) => tags.iter().map(|t| format!(", {}", identifier(t))).collect(),
    };
    statement.push_str(&format!(
        " GROUP BY time({}){tags} END",
        duration_literal(query.interval.as_nanos())
    ));
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_password_is_an_in_place_update_that_shows_no_value() {
        let want = InfluxdbSpec::User {
            admin: false,
            password: Sensitive::new("new".into()),
            fingerprint: "f".into(),
        };
        let have = InfluxdbSpec::User {
            admin: false,
            password: Sensitive::new(String::new()),
            fingerprint: String::new(),
        };
        assert_eq!(want.compare(&have), Comparison::Update(vec!["password changed".into()]));
    }

    #[test]
    fn retention_policy_changes_are_in_place() {
        let rp = |days: u64, default| InfluxdbSpec::RetentionPolicy {
            database: "d".into(),
            name: "r".into(),
            duration: InfluxDuration::from_nanos(days * 86_400_000_000_000),
            shard_duration: None,
            replication: 1,
            default,
        };
        assert_eq!(rp(28, true).compare(&rp(28, true)), Comparison::Same);
        assert_eq!(
            rp(28, true).compare(&rp(7, true)),
            Comparison::Update(vec!["duration 7d → 28d".into()])
        );
        assert_eq!(
            rp(7, false).compare(&rp(7, true)),
            Comparison::Update(vec!["no longer default".into()])
        );
    }

    #[test]
    fn a_continuous_query_statement_is_composed_from_its_parts() {
        let query = |group_by: Option<Vec<String>>| crate::model::ContinuousQuery {
            name: "api_1m".into(),
            from: "one_day".into(),
            into: "forty_days".into(),
            interval: InfluxDuration::parse("1m").unwrap_or(InfluxDuration::INFINITE),
            every: None,
            span: InfluxDuration::parse("5m"),
            measurements: "/^openstack_api\\./".into(),
            select: "mean(duration) AS duration".into(),
            condition: Some("status_code != '500'".into()),
            group_by,
        };
        assert_eq!(
            continuous_query_statement("apimon", &query(None)),
            "CREATE CONTINUOUS QUERY \"api_1m\" ON \"apimon\" RESAMPLE FOR 5m BEGIN SELECT mean(duration) AS duration INTO \"apimon\".\"forty_days\".:MEASUREMENT FROM \"apimon\".\"one_day\"./^openstack_api\\./ WHERE status_code != '500' GROUP BY time(1m), * END"
        );
        let kept = continuous_query_statement("apimon", &query(Some(vec!["method".into()])));
        assert!(kept.ends_with("GROUP BY time(1m), \"method\" END"), "{kept}");
        let none = continuous_query_statement("apimon", &query(Some(vec![])));
        assert!(none.ends_with("GROUP BY time(1m) END"), "{none}");
    }

    #[test]
    fn a_changed_privilege_is_an_update() {
        let grant =
            |privilege| InfluxdbSpec::Grant { user: "u".into(), database: "d".into(), privilege };
        assert_eq!(
            grant(Privilege::Read).compare(&grant(Privilege::All)),
            Comparison::Update(vec!["PRIVILEGE ALL → READ".into()])
        );
    }
}
