//! One task per scenario: sleeps until each of its cron instants and
//! sends a fire to the executor's main loop.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::ScenarioConfig;
use super::{Clock, Fire};

/// Sleeps until each cron instant of `scenario` and reports it.
pub(super) fn spawn_scheduler(
    scenario: &ScenarioConfig,
    clock: Clock,
    fires: mpsc::UnboundedSender<Fire>,
) -> JoinHandle<()> {
    let name = scenario.name.clone();
    let schedule = scenario.schedule.clone();
    tokio::spawn(async move {
        let mut after = clock.now();
        while let Some(next) = schedule.next_after(&after) {
            let delay = (next - clock.now()).to_std().unwrap_or_default();
            tokio::time::sleep(delay).await;
            if fires.send(Fire::new(name.clone(), next)).is_err() {
                return;
            }
            // From the instant itself, so an oversleep never skips or repeats one.
            after = next;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::config::{self, ScenarioConfig};
    use chrono::DateTime;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn anchored() -> Clock {
        Clock::Anchored {
            wall: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            at: tokio::time::Instant::now(),
        }
    }

    fn scenario(name: &str, cron: &str) -> ScenarioConfig {
        ScenarioConfig {
            name: name.to_owned(),
            cron: cron.to_owned(),
            schedule: crate::cron::Schedule::parse(cron).expect("cron"),
            timeout: Duration::from_secs(5),
            runner: config::RunnerConfig::Http {
                url: "http://127.0.0.1:9/".into(),
                method: "GET".into(),
                expect_status: 200,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduler_fires_exactly_at_each_cron_instant() {
        let clock = anchored();
        let (fires, mut receiver) = mpsc::unbounded_channel();
        let handle = spawn_scheduler(&scenario("s", "*/10 * * * * *"), clock, fires);
        let mut instants = Vec::new();
        for _ in 0..6 {
            let fire = receiver.recv().await.expect("fire");
            assert_eq!(fire.scheduled_at, clock.now(), "fired late or early");
            instants.push(fire.scheduled_at.timestamp());
        }
        handle.abort();
        let start = 1_800_000_000;
        assert_eq!(instants, (1..=6).map(|i| start + 10 * i).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn five_field_cron_fires_once_a_minute_at_second_zero() {
        let clock = anchored();
        let (fires, mut receiver) = mpsc::unbounded_channel();
        let normalized = crate::cron::normalize_cron("* * * * *").expect("cron");
        let handle = spawn_scheduler(&scenario("s", &normalized), clock, fires);
        let first = receiver.recv().await.expect("fire").scheduled_at;
        let second = receiver.recv().await.expect("fire").scheduled_at;
        handle.abort();
        assert_eq!(first.timestamp() % 60, 0);
        assert_eq!((second - first).num_seconds(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_scheduler_fires_no_more() {
        let clock = anchored();
        let (fires, mut receiver) = mpsc::unbounded_channel();
        let handle = spawn_scheduler(&scenario("s", "* * * * * *"), clock, fires);
        receiver.recv().await.expect("first fire");
        handle.abort();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(receiver.try_recv().is_err());
    }
}
