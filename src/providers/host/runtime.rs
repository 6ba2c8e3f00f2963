//! The scenario runtime on an executor: one Python virtual environment per
//! runtime id under [`BASE`], with the pinned pip requirements and the
//! collection archives installed into it, and a `current` symlink naming
//! the one in service.
//!
//! A runtime is installed in its own directory and marked complete only at
//! the end; `current` is switched (an atomic rename) only after that, so a
//! failed install leaves the previous runtime in service and the next
//! attempt starts that directory afresh. The runtime that was in service
//! stays as `previous` for a rollback (reverting the pins switches back
//! without installing); older ones are removed. Runs already going keep the
//! runtime they started with.

use super::ssh::{quote, rooted};
use super::{HostError, HostProvider};

pub use crate::layout::{ANSIBLE_PLAYBOOK, RUNTIME_BASE as BASE};

/// Written last into a runtime's directory: its id, once it is complete.
const MARKER: &str = ".apimon-runtime";

fn base(provider: &HostProvider) -> String {
    quote(&rooted(&provider.settings.root, BASE))
}

/// Shell function `r` printing `R<TAB>id` of the complete runtime in
/// service, or `R<TAB>-`.
pub(super) fn observe_function(provider: &HostProvider) -> String {
    format!(
        "r() {{ b={base}; c=$(readlink \"$b/current\" 2>/dev/null || true); if [ -n \"$c\" ] && [ \"$(cat \"$b/$c/{MARKER}\" 2>/dev/null)\" = \"$c\" ]; then printf 'R\\t%s\\n' \"$c\"; else printf 'R\\t-\\n'; fi; }}\n",
        base = base(provider)
    )
}

/// What the environment is made of: the interpreter, the pip requirements
/// and the index.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pip<'a> {
    /// pip requirements.
    pub python: &'a [String],
    /// pip's index, when not the default.
    pub index_url: Option<&'a str>,
    /// The Python `-m venv` runs with (absolute path).
    pub interpreter: &'a str,
}

/// Installs runtime `id` on `host` unless it is there complete, then puts
/// it in service.
pub(super) async fn install(
    provider: &HostProvider,
    host: &str,
    id: &str,
    pip: &Pip<'_>,
    archives: &[(String, std::sync::Arc<Vec<u8>>)],
) -> Result<(), HostError> {
    let Pip { python, index_url, interpreter } = *pip;
    let base = base(provider);
    let dir = format!("{base}/{}", quote(id));
    let what = format!("installing runtime {id}");
    // 1. Present and complete (a rollback, or a retry after the switch
    //    failed): nothing to install. Otherwise a fresh directory.
    let state = provider
        .run(
            host,
            &what,
            &format!(
                "set -e\nd={dir}\nif [ \"$(cat \"$d/{MARKER}\" 2>/dev/null)\" = {id} ]; then echo complete; else rm -rf \"$d\"; mkdir -p \"$d/.collections\"; echo fresh; fi\n",
                id = quote(id)
            ),
            None,
        )
        .await?;
    if String::from_utf8_lossy(&state).trim() != "complete" {
        // 2. The collection archives, each checked against its hash by the
        //    install below (ansible-galaxy refuses a damaged archive).
        for (name, content) in archives {
            let target = format!("{dir}/.collections/{}", quote(name));
            provider.run(host, &what, &format!("umask 022; cat > {target}"), Some(content)).await?;
        }
        // 3. The environment, the packages, the collections, then the marker.
        let mut pip = format!(
            "\"$d/bin/pip\" install --no-input --disable-pip-version-check --quiet{}",
            index_url.map(|url| format!(" --index-url {}", quote(url))).unwrap_or_default()
        );
        for requirement in python {
            pip.push(' ');
            pip.push_str(&quote(requirement));
        }
        let collections = if archives.is_empty() {
            String::new()
        } else {
            // Into the environment's own site-packages: Ansible finds
            // collections on its Python path, so no configuration points
            // at them and each runtime has exactly its own.
            "site=$(\"$d/bin/python\" -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')\n\
             \"$d/bin/ansible-galaxy\" collection install --offline --force -p \"$site\" \"$d\"/.collections/*.tar.gz\n"
                .to_owned()
        };
        let script = format!(
            "set -e\nd={dir}\numask 022\n{interpreter} -m venv \"$d\"\n{pip}\n[ -x \"$d/bin/ansible-playbook\" ] || {{ echo 'the runtime has no ansible-playbook: add ansible-core (or ansible) to runtime.python' >&2; exit 3; }}\n{collections}echo {id} > \"$d/{MARKER}\"\n",
            id = quote(id),
            interpreter = quote(interpreter)
        );
        provider.run(host, &what, &script, None).await?;
    }
    // 4. Into service: `current` renamed over atomically; the one it
    //    replaces kept as `previous`; any other removed.
    let switch = format!(
        "set -e\nb={base}; id={id}\nprev=$(readlink \"$b/current\" 2>/dev/null || true)\n\
         ln -sfn \"$id\" \"$b/.current.new\" && mv -fT \"$b/.current.new\" \"$b/current\"\n\
         if [ -n \"$prev\" ] && [ \"$prev\" != \"$id\" ]; then ln -sfn \"$prev\" \"$b/.previous.new\" && mv -fT \"$b/.previous.new\" \"$b/previous\"; fi\n\
         keep=$(readlink \"$b/previous\" 2>/dev/null || true)\n\
         for d in \"$b\"/*/; do n=$(basename \"$d\"); [ -L \"$b/$n\" ] || [ \"$n\" = \"$id\" ] || [ \"$n\" = \"$keep\" ] || rm -rf \"$b/$n\"; done\n",
        id = quote(id)
    );
    provider.run(host, &format!("putting runtime {id} in service"), &switch, None).await.map(drop)
}

/// Removes every runtime from `host` (the repository declares none).
pub(super) async fn remove(provider: &HostProvider, host: &str) -> Result<(), HostError> {
    provider
        .run(host, "removing the scenario runtime", &format!("rm -rf {}", base(provider)), None)
        .await
        .map(drop)
}
