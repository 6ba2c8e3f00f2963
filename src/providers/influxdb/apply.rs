//! Changing an InfluxDB: one change becomes one request of InfluxQL
//! statements. Every statement is safe to repeat, so a retried change
//! after a lost reply converges instead of failing.

use crate::model::Sensitive;
use crate::plan::{ItemChange, Op, Planned};

use super::client::{duration_literal, identifier, string_literal, Credentials, InfluxdbError};
use super::{InfluxdbProvider, InfluxdbSpec};

pub(super) async fn apply(
    provider: &InfluxdbProvider,
    change: &Planned<ItemChange<InfluxdbSpec>>,
) -> Result<(), InfluxdbError> {
    let name = &*change.id.name;
    let (spec, observed) = match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, ..) => return Ok(()),
        (Op::Delete, _, Some(observed)) => return delete(provider, name, observed).await,
        (_, Some(desired), observed) => (desired, observed.as_ref()),
        _ => return Ok(()),
    };
    let admin = Some(&provider.admin);
    let admin_secret = provider.admin.password.expose().as_str();
    match spec {
        InfluxdbSpec::Database => provider
            .client
            .query(&[format!("CREATE DATABASE {}", identifier(name))], admin, &[admin_secret])
            .await
            .map(drop),
        InfluxdbSpec::RetentionPolicy {
            database,
            name,
            duration,
            shard_duration,
            replication,
            default,
        } => {
            let verb = if observed.is_some() { "ALTER" } else { "CREATE" };
            let mut statement = format!(
                "{verb} RETENTION POLICY {} ON {} DURATION {} REPLICATION {replication}",
                identifier(name),
                identifier(database),
                duration_literal(duration.as_nanos())
            );
            if let Some(shard) = shard_duration {
                statement
                    .push_str(&format!(" SHARD DURATION {}", duration_literal(shard.as_nanos())));
            }
            if *default {
                statement.push_str(" DEFAULT");
            }
            provider.client.query(&[statement], admin, &[admin_secret]).await.map(drop)
        }
        InfluxdbSpec::User { admin: is_admin, password, .. } => {
            user(provider, name, *is_admin, password, observed).await
        }
        InfluxdbSpec::ContinuousQuery { database, query } => {
            // No ALTER: a changed query is dropped and created in one request.
            let mut statements = Vec::new();
            if observed.is_some() {
                statements.push(drop_continuous_query(name, database));
            }
            statements.push(query.clone());
            match provider.client.query(&statements, admin, &[admin_secret]).await {
                // A retry after a lost reply: it is there already.
                Err(InfluxdbError::Statement { message, .. })
                    if message.contains("continuous query already exists") =>
                {
                    Ok(())
                }
                result => result.map(drop),
            }
        }
        InfluxdbSpec::Grant { user, database, privilege } => {
            let privilege = match privilege {
                crate::model::Privilege::Read => "READ",
                crate::model::Privilege::Write => "WRITE",
                crate::model::Privilege::All => "ALL",
            };
            // GRANT sets the privilege (it replaces, not adds), so it also updates.
            let statement =
                format!("GRANT {privilege} ON {} TO {}", identifier(database), identifier(user));
            provider.client.query(&[statement], admin, &[admin_secret]).await.map(drop)
        }
    }
}

async fn user(
    provider: &InfluxdbProvider,
    name: &str,
    is_admin: bool,
    password: &Sensitive<String>,
    observed: Option<&InfluxdbSpec>,
) -> Result<(), InfluxdbError> {
    let secrets = [provider.admin.password.expose().as_str(), password.expose().as_str()];
    let set_password =
        format!("SET PASSWORD FOR {} = {}", identifier(name), string_literal(password.expose()));
    let admin_statement = if is_admin {
        format!("GRANT ALL PRIVILEGES TO {}", identifier(name))
    } else {
        format!("REVOKE ALL PRIVILEGES FROM {}", identifier(name))
    };
    let statements = match observed {
        Some(InfluxdbSpec::User { admin: have_admin, password: have_password, .. }) => {
            let mut statements = Vec::new();
            if have_password != password {
                statements.push(set_password.clone());
            }
            if *have_admin != is_admin {
                statements.push(admin_statement.clone());
            }
            statements
        }
        _ => {
            let mut create = format!(
                "CREATE USER {} WITH PASSWORD {}",
                identifier(name),
                string_literal(password.expose())
            );
            if is_admin {
                create.push_str(" WITH ALL PRIVILEGES");
            }
            vec![create]
        }
    };
    if statements.is_empty() {
        return Ok(());
    }
    match provider.client.query(&statements, Some(&provider.admin), &secrets).await {
        Ok(_) => Ok(()),
        // A fresh InfluxDB with authentication on accepts exactly one
        // unauthenticated statement: creating the first administrator.
        Err(error) if error.needs_first_admin() && is_admin && observed.is_none() => {
            provider.client.query(&statements, None, &secrets).await.map(drop)
        }
        // A retry after a lost reply, or a user created by hand: converge it.
        Err(InfluxdbError::Statement { message, .. })
            if message.contains("user already exists") =>
        {
            let admin: Option<&Credentials> = Some(&provider.admin);
            provider.client.query(&[set_password, admin_statement], admin, &secrets).await.map(drop)
        }
        Err(error) => Err(error),
    }
}

async fn delete(
    provider: &InfluxdbProvider,
    name: &str,
    observed: &InfluxdbSpec,
) -> Result<(), InfluxdbError> {
    let statement = match observed {
        InfluxdbSpec::Database => format!("DROP DATABASE {}", identifier(name)),
        InfluxdbSpec::RetentionPolicy { database, name, .. } => {
            format!("DROP RETENTION POLICY {} ON {}", identifier(name), identifier(database))
        }
        InfluxdbSpec::User { .. } => format!("DROP USER {}", identifier(name)),
        InfluxdbSpec::ContinuousQuery { database, .. } => drop_continuous_query(name, database),
        InfluxdbSpec::Grant { user, database, .. } => {
            format!("REVOKE ALL PRIVILEGES ON {} FROM {}", identifier(database), identifier(user))
        }
    };
    match provider
        .client
        .query(&[statement], Some(&provider.admin), &[provider.admin.password.expose()])
        .await
    {
        Ok(_) => Ok(()),
        // Already gone (a retry, or removed with its database or user): done.
        Err(InfluxdbError::Statement { message, .. }) if message.contains("not found") => Ok(()),
        Err(error) => Err(error),
    }
}

/// `DROP CONTINUOUS QUERY` for the resource called `database.query`.
fn drop_continuous_query(resource: &str, database: &str) -> String {
    let query =
        resource.strip_prefix(database).and_then(|q| q.strip_prefix('.')).unwrap_or(resource);
    format!("DROP CONTINUOUS QUERY {} ON {}", identifier(query), identifier(database))
}
