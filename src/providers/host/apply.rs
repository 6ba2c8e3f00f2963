//! Changing a host. Uploads are atomic: the content goes to a temporary
//! file in the target's directory, its sha256 is checked, and only then is
//! it renamed over the target — a dropped connection leaves the old file
//! as it was (and a stray temporary file, removed by the next upload).

use crate::plan::{ItemChange, Op, Planned};

use super::ssh::{quote, rooted};
use super::{Content, HostError, HostProvider, HostSpec};

pub(super) async fn apply(
    provider: &HostProvider,
    change: &Planned<ItemChange<HostSpec>>,
) -> Result<(), HostError> {
    let manager = &provider.settings.service_manager;
    match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, ..) => Ok(()),
        (Op::Delete, _, Some(HostSpec::File { host, path, .. })) => {
            let target = quote(&rooted(&provider.settings.root, path));
            provider
                .run(host, &format!("removing {path}"), &format!("rm -f {target}"), None)
                .await
                .map(drop)
        }
        (_, Some(HostSpec::File { host, path, sha256, mode, owner, group, content, .. }), _) => {
            let read;
            let fetched;
            let zone;
            let mut sha256 = sha256.clone();
            let bytes: &[u8] = match content {
                Content::Zone(server) => {
                    zone = zone_of(provider, host, server).await?;
                    sha256 = crate::digest::sha256_hex(zone.as_bytes());
                    zone.as_bytes()
                }
                Content::Bytes(bytes) => bytes.expose(),
                Content::Local(local) => {
                    read = tokio::fs::read(local)
                        .await
                        .map_err(|source| HostError::Local { path: local.clone(), source })?;
                    &read
                }
                Content::Remote { url, signature_url } => {
                    let key = provider.release_key.as_deref();
                    fetched =
                        super::release::fetch(url, &sha256, signature_url.as_deref(), key).await?;
                    &fetched
                }
            };
            // The executor's binary must start before it replaces the running one.
            let check = (path == super::BINARY_PATH).then_some("\"$tmp\" --version");
            upload(provider, host, path, bytes, &sha256, (*mode, owner, group), check).await
        }
        (
            Op::Delete,
            _,
            Some(HostSpec::AptRepository { host, name, keyring, sources_path, .. }),
        ) => {
            let command = format!(
                "rm -f {} {}\n{}",
                quote(&rooted(&provider.settings.root, keyring)),
                quote(&rooted(&provider.settings.root, sources_path)),
                provider.settings.package_update
            );
            provider
                .run(host, &format!("removing apt repository {name}"), &command, None)
                .await
                .map(drop)
        }
        (
            _,
            Some(HostSpec::AptRepository {
                host,
                name,
                keyring,
                sources_path,
                content: Some((key, sources)),
                ..
            }),
            _,
        ) => {
            for (path, bytes) in [(keyring, key.as_slice()), (sources_path, sources.as_bytes())] {
                let sha256 = crate::digest::sha256_hex(bytes);
                upload(provider, host, path, bytes, &sha256, (0o644, "root", "root"), None).await?;
            }
            let update = &provider.settings.package_update;
            provider
                .run(
                    host,
                    &format!("refreshing the package lists for apt repository {name}"),
                    update,
                    None,
                )
                .await
                .map(drop)
        }
        (_, Some(HostSpec::Unit { host, unit, running: false, .. }), _) => {
            let unit = quote(unit);
            let command = format!("{manager} daemon-reload && {manager} enable {unit}");
            provider.run(host, &format!("enabling {unit}"), &command, None).await.map(drop)
        }
        (_, Some(HostSpec::Unit { host, unit, .. }), _) => {
            let settle = provider.settings.unit_settle_seconds;
            let command = super::settle::script(manager, unit, settle);
            let output = provider
                .run(host, &format!("enabling and restarting {unit}"), &command, None)
                .await?;
            let report = super::settle::Report::parse(&String::from_utf8_lossy(&output));
            super::settle::verdict(&report, settle).map_err(|unsettled| HostError::Unsettled {
                host: host.clone(),
                unit: unit.clone(),
                unsettled,
            })
        }
        (_, Some(HostSpec::Account { host, name, home }), _) => {
            let (name, home) = (quote(name), quote(home));
            let command = format!(
                "getent group {name} >/dev/null || groupadd --system {name}\n\
                 getent passwd {name} >/dev/null || useradd --system --gid {name} --home-dir {home} --no-create-home --shell /usr/sbin/nologin {name}\n"
            );
            provider.run(host, &format!("creating account {name}"), &command, None).await.map(drop)
        }
        (Op::Delete, _, Some(HostSpec::Runtime { host, .. })) => {
            super::runtime::remove(provider, host).await
        }
        (
            _,
            Some(HostSpec::Runtime { host, id, python, index_url, interpreter, archives, .. }),
            _,
        ) => {
            let pip = super::runtime::Pip { python, index_url: index_url.as_deref(), interpreter };
            super::runtime::install(provider, host, id, &pip, archives).await
        }
        (_, Some(HostSpec::Package { host, package }), _) => {
            let command = provider.settings.package_install.replace("{package}", &quote(package));
            provider
                .run(host, &format!("installing package {package}"), &command, None)
                .await
                .map(drop)
        }
        _ => Ok(()),
    }
}

/// Uploads `bytes` to `path` on `host` with `(mode, owner, group)`.
///
/// The temporary file is created unreadable by others (umask 077) and gets
/// its final mode only after its checksum matched; a transfer cut short
/// removes it (the trap), and the next upload removes what a killed shell
/// left behind. `check`, a command on `"$tmp"`, must succeed before the
/// file replaces the old one (a binary that does not start never does).
pub(super) async fn upload(
    provider: &HostProvider,
    host: &str,
    path: &str,
    bytes: &[u8],
    sha256: &str,
    (mode, owner, group): (u32, &str, &str),
    check: Option<&str>,
) -> Result<(), HostError> {
    let check = check.map_or_else(String::new, |command| {
        format!("if ! out=$({command} 2>&1); then echo \"the new file does not pass its start check ({command}): $out; the old one stays\" >&2; exit 4; fi\n")
    });
    let target = quote(&rooted(&provider.settings.root, path));
    let script = format!(
        "set -e\n\
         t={target}; d=$(dirname \"$t\"); b=$(basename \"$t\")\n\
         mkdir -p \"$d\"\n\
         rm -f \"$d/.$b.apimon-tmp.\"*\n\
         tmp=\"$d/.$b.apimon-tmp.$$\"\n\
         trap 'rm -f \"$tmp\"' EXIT HUP INT TERM PIPE\n\
         (umask 077; cat > \"$tmp\")\n\
         if [ \"$(sha256sum < \"$tmp\" | cut -d' ' -f1)\" != {sha} ]; then echo 'upload incomplete: checksum mismatch; the old file is unchanged' >&2; exit 3; fi\n\
         chown {owner}:{group} \"$tmp\"\n\
         chmod {mode:o} \"$tmp\"\n\
         {check}\
         mv -f \"$tmp\" \"$t\"\n\
         trap - EXIT HUP INT TERM PIPE\n",
        sha = quote(sha256),
        owner = quote(owner),
        group = quote(group),
    );
    provider.run(host, &format!("uploading {path}"), &script, Some(bytes)).await.map(drop)
}

/// `server`'s availability zone as Nova has it now, and a line break; an
/// empty file when the cloud cannot be asked from here (no clouds.yaml
/// entry), or Nova gives the server no valid zone: the executor then tags
/// no zone. A cloud that does not answer is an error (retried): an empty
/// file would stand until the server is replaced.
async fn zone_of(provider: &HostProvider, host: &str, server: &str) -> Result<String, HostError> {
    let Some(locate) = &provider.locate else {
        tracing::warn!(server, "The cloud cannot be asked for the server's availability zone from here; its executor tags no zone.");
        return Ok(String::new());
    };
    match locate.address(server, super::Which::Zone).await {
        Ok(zone) if crate::model::is_zone_name(&zone) => Ok(format!("{zone}\n")),
        Ok(zone) => {
            tracing::warn!(server, zone = %zone.escape_debug(), "Nova gave an availability zone that is no zone name; its executor tags no zone.");
            Ok(String::new())
        }
        Err(source @ crate::providers::locate::LocateError::Cloud { .. }) => {
            Err(HostError::Ssh(super::ssh::SshError::Locate { host: host.to_owned(), source }))
        }
        Err(error) => {
            tracing::warn!(server, error = %error, "No availability zone for the server; its executor tags no zone.");
            Ok(String::new())
        }
    }
}
