//! Swift containers of the environment's project (`object_storage.yaml`).
//! Ownership marks are container metadata (`X-Container-Meta-Apimon-Managed`,
//! `-Apimon-Env`: Swift header names take no `:`). Observation costs one
//! HEAD per container the repository declares or the state store says
//! apimon created, none when there are none: an account's other
//! containers (a scenario's, say) are never listed.

use bytes::Bytes;
use http::{Method, Response};
use openstack_sdk::api::AsyncClient;
use openstack_sdk::types::ServiceType;

use super::client::{Cloud, OpenstackError};
use super::kind::{Kind, Wanted};
use super::marks::refuse_foreign;
use super::observe::Observer;
use super::{id, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A Swift container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    /// Readable (and listable) without a token.
    pub public: bool,
}

const MANAGED: &str = "x-container-meta-apimon-managed";
const ENV: &str = "x-container-meta-apimon-env";
const READ: &str = "x-container-read";
/// The read ACL of a public container: objects and listings.
const PUBLIC_READ: &str = ".r:*,.rlistings";
/// Objects deleted per listing page when a container is emptied.
const PAGE: usize = 1000;

impl Kind for Container {
    const LABEL: &'static str = "container";
    /// Observation reads only the containers it needs: no list call.
    type Listing = ();

    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let wanted = |c: &crate::model::raw::Container| {
            (id(&env.name, "container", &c.name), Container { public: c.public }, vec![])
        };
        env.object_storage.iter().map(wanted).collect()
    }

    async fn list(_: &Cloud, _: &str) -> Result<(), OpenstackError> {
        Ok(())
    }

    /// The declared containers and those the state store says apimon
    /// created, one HEAD each.
    async fn observe(
        o: &mut Observer<'_>,
        (): (),
        p: &OpenstackProvider,
        scope: &Scope,
    ) -> Result<(), OpenstackError> {
        let names: std::collections::BTreeSet<String> = p
            .wanted
            .iter()
            .chain(&scope.owned)
            .filter(|id| {
                *id.env == *o.env && id.provider == super::KIND && &*id.kind == "container"
            })
            .map(|id| id.name.to_string())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            let r = format!("container {name}");
            let head = match request(p, &r, "read", Method::HEAD, &[&name], None, &[]).await {
                Ok(head) => head,
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error),
            };
            let header = |key: &str| head.headers().get(key).and_then(|v| v.to_str().ok());
            let marked_env = (header(MANAGED) == Some("true")).then(|| header(ENV)).flatten();
            let container_id = id(o.env, "container", &name);
            let owned = marked_env == Some(o.env);
            if !owned && !o.wants("container", &name) {
                continue;
            }
            if !owned {
                refuse_foreign("container", &name, o.env, header(ENV))?;
            }
            let public = header(READ).is_some_and(|acl| acl.split(',').any(|g| g.trim() == ".r:*"));
            o.insert(container_id, OpenstackSpec::Container(Container { public }), owned, vec![]);
        }
        Ok(())
    }

    fn compare(&self, have: &Self) -> Comparison {
        if self == have {
            Comparison::Same
        } else if self.public {
            Comparison::Update(vec!["made public (readable without a token)".to_owned()])
        } else {
            Comparison::Update(vec!["made private".to_owned()])
        }
    }

    /// PUT with apimon's marks (and the read ACL): Swift answers 202 to a
    /// retry whose first answer was lost, so a create is idempotent.
    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        let mut headers = marks(&p.env);
        if self.public {
            headers.push((READ, PUBLIC_READ.to_owned()));
        }
        request(p, r, "create", Method::PUT, &[name], None, &headers).await.map(drop)
    }

    async fn update(
        &self,
        _have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        let acl = if self.public {
            (READ, PUBLIC_READ.to_owned())
        } else {
            ("x-remove-container-read", "x".to_owned())
        };
        request(p, r, "update", Method::POST, &[name], None, &[acl]).await.map(drop)
    }

    /// Deletes its objects, then the container (Swift refuses a container
    /// that holds any). Gone already is fine.
    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        let query = format!("format=json&limit={PAGE}");
        loop {
            let listing =
                request(p, r, "list objects", Method::GET, &[name], Some(&query), &[]).await;
            let objects: Vec<ObjectJson> = match listing {
                Ok(answer) => {
                    serde_json::from_slice(answer.body()).map_err(|e| OpenstackError::Failed {
                        resource: r.to_owned(),
                        message: format!("unreadable object listing: {e}"),
                    })?
                }
                Err(error) if error.is_not_found() => return Ok(()),
                Err(error) => return Err(error),
            };
            for object in &objects {
                match request(
                    p,
                    r,
                    "delete object",
                    Method::DELETE,
                    &[name, &object.name],
                    None,
                    &[],
                )
                .await
                {
                    Ok(_) => {}
                    Err(error) if error.is_not_found() => {}
                    Err(error) => return Err(error),
                }
            }
            if objects.len() < PAGE {
                break;
            }
        }
        match request(p, r, "delete", Method::DELETE, &[name], None, &[]).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        request(p, r, "mark", Method::POST, &[name], None, &marks(&p.env)).await.map(drop)
    }
}

#[derive(Debug, serde::Deserialize)]
struct ObjectJson {
    name: String,
}

/// apimon's marks as container metadata headers.
fn marks(env: &str) -> Vec<(&'static str, String)> {
    vec![(MANAGED, "true".to_owned()), (ENV, env.to_owned())]
}

/// The project's object-store endpoint (the catalog's, e.g.
/// `…/v1/AUTH_<project>`).
async fn endpoint(cloud: &Cloud) -> Result<url::Url, OpenstackError> {
    let session = cloud.session().await?;
    let endpoint = AsyncClient::get_service_endpoint(session, &ServiceType::ObjectStore, None)
        .await
        .map_err(|e| OpenstackError::Failed {
            resource: "containers".to_owned(),
            message: format!("the cloud has no object-store endpoint: {e}"),
        })?;
    Ok(endpoint.url().clone())
}

/// One Swift request below the project's object-store endpoint (each of
/// `path` one segment, percent-encoded); a status other than 2xx is an
/// error naming `r`.
async fn request(
    p: &OpenstackProvider,
    r: &str,
    action: &str,
    method: Method,
    path: &[&str],
    query: Option<&str>,
    headers: &[(&str, String)],
) -> Result<Response<Bytes>, OpenstackError> {
    let failed = |status: Option<u16>, message: String, transient: bool| OpenstackError::Api {
        resource: r.to_owned(),
        action: action.to_owned(),
        status,
        message,
        transient,
    };
    let endpoint = endpoint(&p.cloud).await?;
    let mut url = endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| {
            failed(None, format!("object-store endpoint {endpoint} takes no path"), false)
        })?
        .pop_if_empty()
        .extend(path);
    url.set_query(query);
    let mut builder = http::Request::builder().method(method).uri(url.as_str());
    for (key, value) in headers {
        builder = builder.header(*key, value.as_str());
    }
    let session = p.cloud.session().await?;
    let answer = session
        .rest_async(builder, Vec::new())
        .await
        .map_err(|e| failed(None, e.to_string(), true))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let body: String = String::from_utf8_lossy(answer.body()).chars().take(300).collect();
    let transient = status.is_server_error() || status.as_u16() == 429;
    Err(failed(Some(status.as_u16()), body.trim().to_owned(), transient))
}
