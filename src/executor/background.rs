//! The executor's work besides the scenarios: one catalog prober and one
//! sweeper per monitored cloud that asks for them, each a task restarted
//! when its settings (or what it writes through) change, and the syntax
//! check of each rollout's playbooks.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::config::Config;
use super::health::Health;
use super::ingest::Ingest;
use super::results::Writer;
use super::{logs, probe, sweeper, syntax};

/// What the tasks share with the executor.
pub(super) struct Shared<'a> {
    pub config: &'a Config,
    pub writer: &'a Writer,
    pub health: &'a Arc<Health>,
    pub ingest: &'a Arc<Ingest>,
}

/// The running tasks, by cloud, with the settings they were started with.
#[derive(Default)]
pub(super) struct Background {
    probes: BTreeMap<String, (probe::ProbeConfig, JoinHandle<()>)>,
    sweepers: BTreeMap<String, (sweeper::SweeperConfig, JoinHandle<()>)>,
    /// The syntax check of the rollout in force.
    syntax: Option<(syntax::Rollout, JoinHandle<()>)>,
    /// The job logs' uploader, when logs go to object storage.
    logs: Option<(logs::LogsConfig, Arc<logs::LogStore>, JoinHandle<()>)>,
}

/// Keeps the tasks whose settings are unchanged, stops the others.
fn retain<C: PartialEq>(
    running: &mut BTreeMap<String, (C, JoinHandle<()>)>,
    wanted: &BTreeMap<String, C>,
    restart_all: bool,
) {
    running.retain(|cloud, (old, handle)| {
        let keep = !restart_all && wanted.get(cloud) == Some(old);
        if !keep {
            handle.abort();
        }
        keep
    });
}

impl Background {
    /// Matches the tasks to `shared.config`; `restart_all` when the writer,
    /// environment, clouds file or runs directory changed under them.
    pub(super) fn sync(&mut self, shared: &Shared<'_>, restart_all: bool) {
        self.relog(shared, restart_all);
        let config = shared.config;
        let rollout = syntax::Rollout::of(config);
        if self.syntax.as_ref().map(|(r, _)| r) != Some(&rollout) {
            if let Some((_, old)) = self.syntax.take() {
                old.abort();
            }
            let (config, health) = (config.clone(), Arc::clone(shared.health));
            let handle = tokio::spawn(async move {
                let unloadable = syntax::check(&config).await;
                syntax::write_report(&config.runners.runs_dir, &unloadable);
                health.set_unloadable(unloadable);
            });
            self.syntax = Some((rollout, handle));
        }
        retain(&mut self.probes, &config.probes, restart_all);
        for (cloud, probe) in &config.probes {
            if !self.probes.contains_key(cloud) {
                let handle = probe::spawn(
                    probe.clone(),
                    config.runners.clouds_file.clone(),
                    config.environment.clone(),
                    shared.writer.clone(),
                    Arc::clone(shared.health),
                );
                tracing::info!(cloud = %cloud, interval_s = probe.interval.as_secs(), interface = %probe.interface, "Catalog probes started.");
                self.probes.insert(cloud.clone(), (probe.clone(), handle));
            }
        }
        retain(&mut self.sweepers, &config.sweepers, restart_all);
        for (cloud, settings) in &config.sweepers {
            if !self.sweepers.contains_key(cloud) {
                let context = sweeper::Context {
                    clouds_file: config.runners.clouds_file.clone(),
                    runs_dir: config.runners.runs_dir.clone(),
                    environment: config.environment.clone(),
                    writer: shared.writer.clone(),
                    health: Arc::clone(shared.health),
                    ingest: Arc::clone(shared.ingest),
                };
                let handle = sweeper::spawn(settings.clone(), context);
                tracing::info!(cloud = %cloud, interval_s = settings.interval.as_secs(), age_s = settings.age.as_secs(), dry_run = settings.dry_run, "Sweeper started.");
                self.sweepers.insert(cloud.clone(), (settings.clone(), handle));
            }
        }
    }

    /// The log store, when logs go to object storage.
    pub(super) fn logs(&self) -> Option<&Arc<logs::LogStore>> {
        self.logs.as_ref().map(|(_, store, _)| store)
    }

    /// Starts, stops or restarts the log uploader to match the configuration.
    fn relog(&mut self, shared: &Shared<'_>, restart: bool) {
        let config = shared.config;
        if !restart && self.logs.as_ref().map(|(c, ..)| c) == config.logs.as_ref() {
            return;
        }
        if let Some((_, _, old)) = self.logs.take() {
            old.abort();
        }
        let Some(settings) = config.logs.clone() else { return };
        let secrets = config.results.credentials.iter().map(|(_, p)| p.expose().clone()).collect();
        let context = logs::Context {
            clouds_file: config.runners.clouds_file.clone(),
            runs_dir: config.runners.runs_dir.clone(),
            environment: config.environment.clone(),
            secrets,
            counters: Arc::clone(&shared.health.logs),
        };
        tracing::info!(cloud = %settings.cloud, container = %settings.container, public = settings.public, "Job logs go to object storage.");
        let (store, task) = logs::spawn(settings.clone(), context);
        self.logs = Some((settings, store, task));
    }

    /// Stops every task (shutdown).
    pub(super) fn stop(&mut self) {
        // Logs of runs that end while the executor drains stay on disk and
        // go after the restart.
        if let Some((_, _, task)) = self.logs.take() {
            task.abort();
        }
        if let Some((_, handle)) = self.syntax.take() {
            handle.abort();
        }
        retain(&mut self.probes, &BTreeMap::new(), true);
        retain(&mut self.sweepers, &BTreeMap::new(), true);
    }
}
