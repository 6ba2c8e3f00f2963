//! What each host role runs, in one table: the files rendered for it
//! (template, path, access, the units a change restarts), its units, the
//! accounts its services run as, the packages it needs and where its first
//! data volume is mounted. A new role is one `Role` variant and one row
//! here; render and the host provider read the table.

pub use super::raw::Role;

/// A file rendered for every host of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleFile {
    /// The template it is rendered from.
    pub template: &'static str,
    /// Where it goes on the host.
    pub path: &'static str,
    /// Its mode.
    pub mode: u32,
    /// Its owner.
    pub owner: &'static str,
    /// Its group.
    pub group: &'static str,
    /// Units restarted when it changes.
    pub restarts: &'static [&'static str],
}

/// Everything a role brings to its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleProfile {
    /// Files rendered for it.
    pub files: &'static [RoleFile],
    /// Units kept running.
    pub units: &'static [&'static str],
    /// System accounts its services run as: (name, home).
    pub accounts: &'static [(&'static str, &'static str)],
    /// Packages from the distribution's archive.
    pub packages: &'static [&'static str],
    /// Where its first data volume is mounted (unless `mount_path` says).
    pub data_dir: Option<&'static str>,
}

const EXECUTOR: &[RoleFile] = &[
    RoleFile {
        template: "executor.yaml.hbs",
        path: crate::layout::EXECUTOR_CONFIG_PATH,
        mode: 0o640,
        owner: "root",
        group: "apimon",
        restarts: &[],
    },
    RoleFile {
        template: "clouds.yaml.hbs",
        path: "/etc/apimon/clouds.yaml",
        mode: 0o640,
        owner: "root",
        group: "apimon",
        restarts: &[],
    },
    RoleFile {
        template: "telegraf.conf.hbs",
        path: "/etc/telegraf/telegraf.conf",
        mode: 0o640,
        owner: "root",
        group: "telegraf",
        restarts: &["telegraf"],
    },
    RoleFile {
        template: "apimon-executor.service.hbs",
        path: "/etc/systemd/system/apimon-executor.service",
        mode: 0o644,
        owner: "root",
        group: "root",
        restarts: &["apimon-executor"],
    },
    RoleFile {
        template: "telegraf.service.hbs",
        path: "/etc/systemd/system/telegraf.service",
        mode: 0o644,
        owner: "root",
        group: "root",
        restarts: &["telegraf"],
    },
];
const INFLUXDB: &[RoleFile] = &[RoleFile {
    template: "influxdb.conf.hbs",
    path: "/etc/influxdb/influxdb.conf",
    mode: 0o644,
    owner: "root",
    group: "root",
    restarts: &["influxdb"],
}];
// Holds the admin password: readable by root and Grafana only.
const GRAFANA: &[RoleFile] = &[RoleFile {
    template: "grafana.ini.hbs",
    path: "/etc/grafana/grafana.ini",
    mode: 0o640,
    owner: "root",
    group: "grafana",
    restarts: &["grafana-server"],
}];

const BASTION: RoleProfile =
    RoleProfile { files: &[], units: &[], accounts: &[], packages: &[], data_dir: None };

const PROFILES: [(Role, RoleProfile); 4] = [
    (Role::Bastion, BASTION),
    (
        Role::Executor,
        RoleProfile {
            files: EXECUTOR,
            units: &["apimon-executor", "telegraf"],
            accounts: &[("apimon", crate::layout::STATE_DIR)],
            packages: &["ansible-core", "telegraf"],
            data_dir: None,
        },
    ),
    (
        Role::Influxdb,
        RoleProfile {
            files: INFLUXDB,
            units: &["influxdb"],
            accounts: &[],
            packages: &["influxdb"],
            data_dir: Some("/var/lib/influxdb"),
        },
    ),
    (
        Role::Grafana,
        RoleProfile {
            files: GRAFANA,
            units: &["grafana-server"],
            accounts: &[],
            // `grafana` is not in the distributions' archives: it comes from
            // Grafana's apt repository, declared with the package in apimon.yaml.
            packages: &[],
            data_dir: Some("/var/lib/grafana"),
        },
    ),
];

impl Role {
    /// What this role brings to its hosts.
    pub fn profile(self) -> &'static RoleProfile {
        PROFILES.iter().find(|(role, _)| *role == self).map_or(&BASTION, |(_, profile)| profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_one_profile() {
        for role in [Role::Bastion, Role::Executor, Role::Influxdb, Role::Grafana] {
            assert_eq!(PROFILES.iter().filter(|(r, _)| *r == role).count(), 1, "{role:?}");
        }
    }

    #[test]
    fn a_restarted_unit_is_a_unit_of_the_role() {
        for (role, profile) in &PROFILES {
            for file in profile.files {
                for unit in file.restarts {
                    assert!(
                        profile.units.contains(unit),
                        "{role:?}: {} restarts {unit}",
                        file.path
                    );
                }
            }
        }
    }
}
