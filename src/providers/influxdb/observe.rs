//! Reading an InfluxDB: two queries for everything. A user's password
//! (InfluxDB cannot return it) counts as unchanged when the fingerprint the
//! state store keeps still matches the declared one, as changed when it
//! does not; only a user without a fingerprint — and on a drift pass the
//! slice the probe selects — is checked by logging in.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::model::{InfluxDuration, Privilege, Sensitive};
use crate::plan::{ObservedItem, ObservedSet};

use super::client::{identifier, parse_go_duration, Credentials, InfluxdbError, StatementResult};
use super::{
    continuous_query_id, database_id, grant_id, password_fingerprint, retention_policy_id, user_id,
    InfluxdbProvider, InfluxdbSpec,
};
use crate::providers::Scope;

/// Password logins running at once.
const LOGIN_CONCURRENCY: usize = 16;

/// The database InfluxDB keeps for itself.
const INTERNAL_DATABASE: &str = "_internal";

pub(super) async fn observe(
    provider: &InfluxdbProvider,
    scope: &Scope,
) -> Result<ObservedSet<InfluxdbSpec>, InfluxdbError> {
    let client = &provider.client;
    let admin = &provider.admin;
    let secrets = [admin.password.expose().as_str()];
    let overview = match client
        .query(
            &[
                "SHOW DATABASES".to_owned(),
                "SHOW USERS".to_owned(),
                "SHOW CONTINUOUS QUERIES".to_owned(),
            ],
            Some(admin),
            &secrets,
        )
        .await
    {
        Ok(results) => results,
        // Authentication is on and no user exists yet: nothing to observe,
        // and the plan creates the first administrator.
        Err(error) if error.needs_first_admin() => return Ok(ObservedSet::new()),
        Err(error) => return Err(error),
    };
    let databases = databases(&overview);
    let users = users(&overview);
    let mut statements: Vec<String> = databases
        .iter()
        .map(|db| format!("SHOW RETENTION POLICIES ON {}", identifier(db)))
        .collect();
    statements
        .extend(users.iter().map(|(user, _)| format!("SHOW GRANTS FOR {}", identifier(user))));
    let details = if statements.is_empty() {
        Vec::new()
    } else {
        client.query(&statements, Some(admin), &secrets).await?
    };
    let logins = check_passwords(provider, scope, &users).await?;
    let mut observed = ObservedSet::new();
    for (i, database) in databases.iter().enumerate() {
        retention_policies(provider, database, details.get(i), &mut observed)?;
    }
    continuous_queries(&provider.env, &databases, &overview, &mut observed);
    for (j, (user, admin_flag)) in users.iter().enumerate() {
        let (password, fingerprint) = match logins.get(user) {
            Some(true) => {
                let password = provider.passwords.get(user).cloned().unwrap_or_default();
                let fingerprint = password_fingerprint(user, password.expose());
                (password, fingerprint)
            }
            _ => (Sensitive::default(), String::new()),
        };
        let spec = InfluxdbSpec::User { admin: *admin_flag, password, fingerprint };
        let u_id = user_id(&provider.env, user);
        observed.insert(u_id, ObservedItem { spec, owned: false, depends_on: vec![] });
        grants(&provider.env, user, details.get(databases.len() + j), &mut observed);
    }
    Ok(observed)
}

/// The databases of `SHOW DATABASES` (InfluxDB's own left out).
fn databases(overview: &[StatementResult]) -> Vec<String> {
    overview
        .first()
        .into_iter()
        .flat_map(|r| &r.series)
        .flat_map(|s| s.column("name"))
        .filter_map(|v| v.as_str())
        .filter(|name| *name != INTERNAL_DATABASE)
        .map(str::to_owned)
        .collect()
}

/// The users of `SHOW USERS`, with their admin flag.
fn users(overview: &[StatementResult]) -> Vec<(String, bool)> {
    overview
        .get(1)
        .into_iter()
        .flat_map(|r| &r.series)
        .flat_map(|s| s.rows())
        .map(|row| {
            (
                row.str("user").to_owned(),
                row.get("admin").and_then(|v| v.as_bool()).unwrap_or(false),
            )
        })
        .collect()
}

/// `database` and its retention policies from `SHOW RETENTION POLICIES`.
fn retention_policies(
    provider: &InfluxdbProvider,
    database: &str,
    result: Option<&StatementResult>,
    observed: &mut ObservedSet<InfluxdbSpec>,
) -> Result<(), InfluxdbError> {
    let env = provider.env.as_str();
    let db_id = database_id(env, database);
    observed.insert(
        db_id.clone(),
        ObservedItem { spec: InfluxdbSpec::Database, owned: false, depends_on: vec![] },
    );
    for row in result.into_iter().flat_map(|r| &r.series).flat_map(|s| s.rows()) {
        let name = row.str("name").to_owned();
        let duration = |column: &str| {
            parse_go_duration(row.str(column)).map(InfluxDuration::from_nanos).ok_or_else(|| {
                InfluxdbError::Answer {
                    url: provider.client.url().to_owned(),
                    message: format!(
                        "retention policy {database}.{name}: {column} `{}` is not a duration",
                        row.str(column)
                    ),
                }
            })
        };
        let spec = InfluxdbSpec::RetentionPolicy {
            database: database.to_owned(),
            name: name.clone(),
            duration: duration("duration")?,
            shard_duration: Some(duration("shardGroupDuration")?),
            replication: row
                .get("replicaN")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            default: row.get("default").and_then(serde_json::Value::as_bool).unwrap_or(false),
        };
        observed.insert(
            retention_policy_id(env, database, &name),
            ObservedItem { spec, owned: false, depends_on: vec![db_id.clone()] },
        );
    }
    Ok(())
}

/// Continuous queries from `SHOW CONTINUOUS QUERIES`: one series per
/// database, each row a name and the statement as InfluxDB stores it.
fn continuous_queries(
    env: &str,
    databases: &[String],
    overview: &[StatementResult],
    observed: &mut ObservedSet<InfluxdbSpec>,
) {
    let series = overview.get(2).into_iter().flat_map(|r| &r.series);
    for series in series.filter(|s| databases.contains(&s.name)) {
        for row in series.rows() {
            let spec = InfluxdbSpec::ContinuousQuery {
                database: series.name.clone(),
                query: row.str("query").to_owned(),
            };
            let depends_on = vec![database_id(env, &series.name)];
            observed.insert(
                continuous_query_id(env, &series.name, row.str("name")),
                ObservedItem { spec, owned: false, depends_on },
            );
        }
    }
}

/// `user`'s grants from `SHOW GRANTS FOR`.
fn grants(
    env: &str,
    user: &str,
    result: Option<&StatementResult>,
    observed: &mut ObservedSet<InfluxdbSpec>,
) {
    for row in result.into_iter().flat_map(|r| &r.series).flat_map(|s| s.rows()) {
        let privilege = match row.str("privilege") {
            "READ" => Privilege::Read,
            "WRITE" => Privilege::Write,
            "ALL PRIVILEGES" | "ALL" => Privilege::All,
            _ => continue,
        };
        let database = row.str("database").to_owned();
        let spec =
            InfluxdbSpec::Grant { user: user.to_owned(), database: database.clone(), privilege };
        let depends_on = vec![user_id(env, user), database_id(env, &database)];
        observed.insert(
            grant_id(env, user, &database),
            ObservedItem { spec, owned: false, depends_on },
        );
    }
}

/// For each existing user with a declared password: does it still log in?
/// Answered by its fingerprint where the state store has one (a match is
/// "yes", a mismatch "no"), by a login where it has none or the probe
/// selects the user.
async fn check_passwords(
    provider: &InfluxdbProvider,
    scope: &Scope,
    users: &[(String, bool)],
) -> Result<BTreeMap<String, bool>, InfluxdbError> {
    let mut results = BTreeMap::new();
    let limit = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let declared: Vec<&(String, bool)> =
        users.iter().filter(|(user, _)| provider.passwords.contains_key(user)).collect();
    for (index, (user, _)) in declared.iter().enumerate() {
        let Some(password) = provider.passwords.get(user) else { continue };
        if *user == provider.admin.user {
            // The overview query already logged in as this user.
            results.insert(user.clone(), password == &provider.admin.password);
            continue;
        }
        let recorded = scope.fingerprints.get(&user_id(&provider.env, user).to_string());
        let probed = scope.probe.selects(index, declared.len());
        match recorded {
            Some(recorded) if !probed => {
                let same = *recorded == password_fingerprint(user, password.expose());
                results.insert(user.clone(), same);
                continue;
            }
            _ => {}
        }
        let client = provider.client.clone();
        let credentials = Credentials { user: user.clone(), password: password.clone() };
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let ok = client.can_login(&credentials).await;
            (credentials.user, ok)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((user, ok)) = joined else { continue };
        results.insert(user, ok?);
    }
    Ok(results)
}
