//! Cinder volumes and their attachments. A volume grows in place; a
//! smaller size, another type or Cinder's `error` state replace it (and
//! re-attach it). An attachment ignores the device name, which is only a
//! hint to the hypervisor.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use openstack_sdk::api::block_storage::v3::volume::{
    create_30 as volume_create, delete as volume_delete, get as volume_get,
    list_detailed as volume_list, os_extend as volume_extend,
};
use openstack_sdk::api::compute::v2::server::volume_attachment::{
    create_20 as attach, delete as detach,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{gone_is_fine, Created};
use super::kind::{Kind, Wanted};
use super::marks::{
    is_owned_metadata, metadata_claim, oldest_first, ownership_metadata, refuse_foreign, Claims,
};
use super::observe::Observer;
use super::server;
use super::wait::{poll, Look};
use super::{id, server_id, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A Cinder volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Volume {
    /// Size in GiB.
    pub size_gb: u32,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Observed only: Cinder's error status (creating or extending failed).
    pub error: Option<String>,
}

impl Kind for Volume {
    const LABEL: &'static str = "volume";
    type Listing = Vec<VolumeJson>;

    /// Each host's data volumes, named `<host>-<volume>`.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let mut wanted = Vec::new();
        for host in &env.hosts {
            for volume in &host.volumes {
                let spec = Volume {
                    size_gb: volume.size_gb,
                    volume_type: volume.volume_type.clone(),
                    error: None,
                };
                let name = volume_name(&host.name, &volume.name);
                wanted.push((id(&env.name, "volume", &name), spec, vec![]));
            }
        }
        wanted
    }

    /// Every volume of the project, attachments embedded, oldest first.
    async fn list(cloud: &Cloud, _: &str) -> Result<Self::Listing, OpenstackError> {
        let request = volume_list::Request::builder().build().map_err(|e| built("volumes", e))?;
        let mut volumes = cloud.list::<VolumeJson, _>("volumes", request).await?;
        oldest_first(&mut volumes, |v| (&v.created_at, &v.id));
        Ok(volumes)
    }

    /// Volumes and their attachments (to the servers observed before).
    async fn observe(
        o: &mut Observer<'_>,
        volumes: Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe(o, volumes)
    }

    fn compare(&self, have: &Self) -> Comparison {
        compare(
            (self.size_gb, self.volume_type.as_deref()),
            (have.size_gb, have.volume_type.as_deref(), have.error.as_deref()),
        )
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name, self.size_gb, self.volume_type.as_deref()).await.map(drop)
    }

    async fn update(
        &self,
        _have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        extend(p, r, name, self.size_gb).await
    }

    async fn replace(
        &self,
        have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        let (size, kind, error) =
            (self.size_gb, self.volume_type.as_deref(), have.error.as_deref());
        replace(p, r, name, size, kind, error).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete(p, r, name, self.error.as_deref()).await
    }

    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        use openstack_sdk::api::block_storage::v3::volume::metadata::create as volume_metadata;
        let id = super::common::known(p, r, |i| i.volumes.get(name).cloned())?;
        let request = volume_metadata::Request::builder()
            .volume_id(id.as_str())
            .metadata(ownership_metadata(&p.env).into_iter())
            .build()
            .map_err(|e| built(r, e))?;
        p.cloud.execute(r, "mark", request).await
    }
}

/// A volume attached to a server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeAttachment {
    /// Server name.
    pub server: String,
    /// Volume name.
    pub volume: String,
    /// Device hint.
    pub device: Option<String>,
}

impl Kind for VolumeAttachment {
    const LABEL: &'static str = "volume attachment";
    listed_by_parent!();

    /// Each data volume on its host's server.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let mut wanted = Vec::new();
        for host in &env.hosts {
            for volume in &host.volumes {
                let name = volume_name(&host.name, &volume.name);
                let spec = VolumeAttachment {
                    server: host.name.clone(),
                    volume: name.clone(),
                    device: volume.device.clone(),
                };
                let depends_on =
                    vec![server_id(&env.name, &host.name), id(&env.name, "volume", &name)];
                wanted.push((id(&env.name, "volume_attachment", &name), spec, depends_on));
            }
        }
        wanted
    }

    fn compare(&self, have: &Self) -> Comparison {
        compare_attachment((&self.server, &self.volume), (&have.server, &have.volume))
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        _name: &str,
    ) -> Result<(), OpenstackError> {
        attach(p, r, &self.server, &self.volume, self.device.as_deref()).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        _name: &str,
    ) -> Result<(), OpenstackError> {
        detach(p, r, &self.server, &self.volume).await
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct VolumeJson {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub size: u32,
    #[serde(default)]
    pub volume_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AttachmentJson {
    pub server_id: String,
    #[serde(default)]
    pub device: Option<String>,
}

/// The name of `host`'s data volume `volume`.
fn volume_name(host: &str, volume: &str) -> String {
    format!("{host}-{volume}")
}

/// Grows in place; shrinking, another type or an error state replace.
pub(super) fn compare(
    (want_size, want_type): (u32, Option<&str>),
    (have_size, have_type, error): (u32, Option<&str>, Option<&str>),
) -> Comparison {
    if let Some(status) = error {
        Comparison::Replace(format!("volume is in {status}"))
    } else if want_type.is_some() && want_type != have_type {
        Comparison::Replace(format!(
            "volume type {} → {}",
            have_type.unwrap_or("default"),
            want_type.unwrap_or("default")
        ))
    } else if want_size < have_size {
        Comparison::Replace(format!("size {have_size} → {want_size} GiB (volumes cannot shrink)"))
    } else if want_size > have_size {
        Comparison::Update(vec![format!("extend {have_size} → {want_size} GiB")])
    } else {
        Comparison::Same
    }
}

/// The device is a hint hypervisors may ignore: never a reason to re-attach.
pub(super) fn compare_attachment(want: (&str, &str), have: (&str, &str)) -> Comparison {
    if want == have {
        Comparison::Same
    } else {
        Comparison::Replace(format!("attached to {}, wanted on {}", have.0, want.0))
    }
}

fn observe(o: &mut Observer<'_>, volumes: Vec<VolumeJson>) -> Result<(), OpenstackError> {
    let mut claims = Claims::default();
    for volume in volumes {
        let Some(name) = volume.name.as_deref() else { continue };
        let owned = is_owned_metadata(&volume.metadata, o.env);
        let name = claims.name(name, &volume.id, owned);
        if !owned && !o.wants("volume", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("volume", &name, o.env, metadata_claim(&volume.metadata))?;
        }
        let volume_id = id(o.env, "volume", &name);
        let error = volume.status.starts_with("error").then(|| volume.status.clone());
        let spec = OpenstackSpec::Volume(Volume {
            size_gb: volume.size,
            volume_type: volume.volume_type,
            error,
        });
        if o.insert(volume_id.clone(), spec, owned, vec![]) {
            o.index.volumes.insert(name.clone(), volume.id.clone());
        }
        for attachment in &volume.attachments {
            let Some(server) = o.server_names.get(&attachment.server_id).cloned() else { continue };
            o.index.attached.entry(server.clone()).or_default().push(name.clone());
            let depends_on = vec![id(o.env, "server", &server), volume_id.clone()];
            let spec = OpenstackSpec::VolumeAttachment(VolumeAttachment {
                server,
                volume: name.clone(),
                device: attachment.device.clone(),
            });
            o.insert(id(o.env, "volume_attachment", &name), spec, owned, depends_on);
        }
    }
    Ok(())
}

pub(super) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    size_gb: u32,
    volume_type: Option<&str>,
) -> Result<String, OpenstackError> {
    // An earlier attempt of this change made it (and timed out waiting):
    // wait for that one rather than make a second.
    if let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) {
        wait(p, r, &id, "available").await?;
        return Ok(id);
    }
    let mut body = volume_create::VolumeBuilder::default();
    body.name(Some(name.into()))
        .size(i32::try_from(size_gb).unwrap_or(i32::MAX))
        .metadata(ownership_metadata(&p.env).into_iter());
    if let Some(kind) = volume_type {
        body.volume_type(Some(kind.into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request =
        volume_create::Request::builder().volume(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    p.with_index(|i| i.volumes.insert(name.to_owned(), created.id.clone()));
    wait(p, r, &created.id, "available").await?;
    Ok(created.id)
}

/// Grows the volume (microversion 3.42 lets an attached volume grow).
pub(super) async fn extend(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    size_gb: u32,
) -> Result<(), OpenstackError> {
    let id = volume_id(p, r, name).await?;
    let body = volume_extend::OsExtendBuilder::default()
        .new_size(i32::try_from(size_gb).unwrap_or(i32::MAX))
        .build()
        .map_err(|e| built(r, e))?;
    let request = volume_extend::Request::builder()
        .id(id.as_str())
        .os_extend(body)
        .header(
            HeaderName::from_static("openstack-api-version"),
            HeaderValue::from_static("volume 3.42"),
        )
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "extend", request).await
}

/// Replaces the volume: detached, deleted, created again, re-attached.
pub(super) async fn replace(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    size_gb: u32,
    volume_type: Option<&str>,
    error: Option<&str>,
) -> Result<(), OpenstackError> {
    let attached_to = p.with_index(|i| {
        i.attached.iter().find(|(_, vols)| vols.iter().any(|v| v == name)).map(|(s, _)| s.clone())
    });
    if let Some(server) = &attached_to {
        detach(p, r, server, name).await?;
    }
    delete(p, r, name, error).await?;
    create(p, r, name, size_gb, volume_type).await?;
    if let Some(server) = &attached_to {
        attach(p, r, server, name, None).await?;
    }
    Ok(())
}

/// Attaches `volume` to the server `server` that replaced its predecessor.
pub(super) async fn reattach(
    p: &OpenstackProvider,
    server: &str,
    volume: &str,
) -> Result<(), OpenstackError> {
    let r = format!("volume {volume}");
    wait(p, &r, &volume_id(p, &r, volume).await?, "available").await?;
    attach(p, &format!("volume attachment {volume}"), server, volume, None).await
}

/// Deletes the volume once it is free (a volume in error goes as it is).
pub(super) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    error: Option<&str>,
) -> Result<(), OpenstackError> {
    let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) else { return Ok(()) };
    // A detach planned before this one may still be finishing; a volume
    // in error will never be available, and can go as it is.
    if error.is_none() {
        match wait(p, r, &id, "available").await {
            Err(error) if error.is_not_found() => return Ok(()),
            other => other?,
        }
    }
    delete_by_id!(p, r, volume_delete, id.as_str())?;
    p.with_index(|i| i.volumes.remove(name));
    Ok(())
}

pub(super) async fn wait(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    status: &str,
) -> Result<(), OpenstackError> {
    poll(p, r, status, p.wait.volume_timeout, || async {
        let request = volume_get::Request::builder().id(id).build().map_err(|e| built(r, e))?;
        let volume: VolumeJson = p.cloud.query(r, "read", request).await?;
        if volume.status == status {
            Ok(Look::Done)
        } else if volume.status.starts_with("error") {
            Err(OpenstackError::Failed {
                resource: r.to_owned(),
                message: format!("Cinder reports status {}", volume.status),
            })
        } else {
            Ok(Look::Waiting(volume.status))
        }
    })
    .await
}

pub(super) async fn attach(
    p: &OpenstackProvider,
    r: &str,
    server: &str,
    volume: &str,
    device: Option<&str>,
) -> Result<(), OpenstackError> {
    let server_id = server::id_of(p, r, server).await?;
    let volume_id = volume_id(p, r, volume).await?;
    let mut body = attach::VolumeAttachmentBuilder::default();
    body.volume_id(volume_id.as_str());
    if let Some(device) = device {
        body.device(Some(device.into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request = attach::Request::builder()
        .server_id(server_id.as_str())
        .volume_attachment(body)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, &format!("attach to host {server}"), request).await?;
    wait(p, r, &volume_id, "in-use").await?;
    p.with_index(|i| i.attached.entry(server.to_owned()).or_default().push(volume.to_owned()));
    Ok(())
}

pub(super) async fn detach(
    p: &OpenstackProvider,
    r: &str,
    server: &str,
    volume: &str,
) -> Result<(), OpenstackError> {
    let Some(server_id) = p.with_index(|i| i.servers.get(server).cloned()) else { return Ok(()) };
    let volume_id = volume_id(p, r, volume).await?;
    let request = detach::Request::builder()
        .server_id(server_id.as_str())
        .id(volume_id.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    gone_is_fine(p.cloud.execute(r, &format!("detach from host {server}"), request).await)?;
    wait(p, r, &volume_id, "available").await?;
    p.with_index(|i| {
        if let Some(volumes) = i.attached.get_mut(server) {
            volumes.retain(|v| v != volume);
        }
    });
    Ok(())
}

async fn volume_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) {
        return Ok(id);
    }
    let request = volume_list::Request::builder().build().map_err(|e| built(r, e))?;
    let found: Vec<VolumeJson> = p.cloud.list(r, request).await?;
    let id = found.into_iter().find(|v| v.name.as_deref() == Some(name)).map(|v| v.id).ok_or_else(
        || OpenstackError::Missing {
            resource: r.to_owned(),
            what: "volume",
            name: name.to_owned(),
        },
    )?;
    p.with_index(|i| i.volumes.insert(name.to_owned(), id.clone()));
    Ok(id)
}
