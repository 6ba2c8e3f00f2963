//! Integration tests: one binary (ripgrep's layout), modules per area,
//! one shared harness in `support/`.

mod support;

mod bad_input;
mod bootstrap;
mod daemon;
mod daemon_safety;
mod dev_stack;
mod examples;
mod executor;
mod executor_cloud;
mod faults;
mod grafana;
mod handover;
mod health;
mod health_notify;
mod host;
mod hostile_git;
mod incremental;
mod influxdb;
mod layers;
mod openstack;
mod package;
mod plan;
mod runtime;
mod scenario_repository;
mod security;
mod status_page;
mod through_bastion;
mod units;
