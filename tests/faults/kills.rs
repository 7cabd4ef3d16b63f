//! Random kill trials: 2–3 workers, one SIGKILLed at a moment picked from the trial's seed
//! (at a random time, right after a commit, or while it restores after an earlier kill),
//! then restarted on the same state dir while input keeps flowing. The seed decides
//! everything the trial does, so `FAULT_SEED=<seed>` replays it.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::common::worker::{reference_by_partition, Worker};
use crate::job::{self, Guarantee, Job, Rng, GAP, GRACE, PARTITIONS};

/// When the victim is killed.
#[derive(Debug, Clone, Copy)]
pub enum Moment {
    /// A random time while input flows.
    Random,
    /// A random time within one commit interval after its log reports a commit.
    Commit,
    /// Killed once, restarted, and killed again as soon as its log says it restores.
    Restore,
}

#[derive(Debug)]
pub struct TrialReport {
    pub seed: u64,
    pub guarantee: Guarantee,
    pub workers: usize,
    pub moment: Moment,
    /// What the log of the killed process showed at the kill.
    pub landed: String,
    /// From the (last) kill until the output matched the reference.
    pub recovered: Duration,
    /// Counts beyond the reference (at-least-once re-processing; 0 under exactly-once).
    pub excess: i64,
    pub records: usize,
}

/// Polls the worker's log (every 2 ms) until `needle` occurs more than `times` times.
async fn wait_log(worker: &Worker, needle: &str, times: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.count(needle) <= times {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} never logged '{needle}' {} times:\n{}",
            worker.name,
            times + 1,
            worker.tail()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

pub async fn trial(bootstrap: &str, seed: u64) -> anyhow::Result<TrialReport> {
    let mut rng = Rng::new(seed);
    let guarantee = if seed.is_multiple_of(2) {
        Guarantee::ExactlyOnce
    } else {
        Guarantee::AtLeastOnce
    };
    let moment = match (seed / 2) % 3 {
        0 => Moment::Random,
        1 => Moment::Commit,
        _ => Moment::Restore,
    };
    let count = 2 + rng.below(2) as usize;
    let job = Job::new(bootstrap, "fault-kill", guarantee).await?;
    let clicks = job::clicks(seed);
    let cut = clicks.len() * (1 + rng.below(3) as usize) / 5;
    let (first, rest) = clicks.split_at(cut);
    job.produce(first).await?;
    let names: Vec<String> = (0..count).map(|i| format!("w{i}")).collect();
    let mut workers = names
        .iter()
        .map(|n| job.worker(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reference_first = reference_by_partition(first, PARTITIONS, GAP, GRACE);
    job.wait_output(
        &reference_first,
        &workers.iter().collect::<Vec<_>>(),
        Duration::from_secs(90),
    )
    .await
    .context("before the kill")?;

    // The rest streams in while the victim dies and comes back.
    let producing = {
        let (bootstrap, input) = (job.bootstrap.clone(), job.input.clone());
        let rest = rest.to_vec();
        tokio::spawn(async move {
            for chunk in rest.chunks(100) {
                crate::common::worker::produce(&bootstrap, &input, PARTITIONS, chunk).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        })
    };
    let victim = rng.below(count as u64) as usize;
    let landed = match moment {
        Moment::Random => {
            let delay = rng.millis(2_500);
            tokio::time::sleep(delay).await;
            workers[victim].kill()?;
            format!("{delay:?} into the input")
        }
        Moment::Commit => {
            let commits = workers[victim].count(" committed ");
            wait_log(
                &workers[victim],
                " committed ",
                commits + rng.below(3) as usize,
            )
            .await?;
            let delay = rng.millis(200);
            tokio::time::sleep(delay).await;
            workers[victim].kill()?;
            format!("{delay:?} after a commit")
        }
        Moment::Restore => {
            workers[victim].kill()?;
            tokio::time::sleep(rng.millis(500)).await;
            workers[victim] = job.worker(&names[victim])?;
            wait_log(&workers[victim], "task restoring", 0).await?;
            workers[victim].kill()?;
            let log = workers[victim].log();
            let restoring = log.matches("task restoring").count();
            let restored = log.matches("task restored").count();
            format!("restores begun {restoring}, finished {restored}")
        }
    };
    let killed = Instant::now();
    tokio::time::sleep(rng.millis(1_500)).await;
    workers[victim] = job.worker(&names[victim])?;
    producing.await??;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    let excess = job
        .wait_output(
            &reference,
            &workers.iter().collect::<Vec<_>>(),
            Duration::from_secs(120),
        )
        .await
        .context("after the kill")?;
    let recovered = killed.elapsed();
    for w in &mut workers {
        w.check_alive()?;
    }
    Ok(TrialReport {
        seed,
        guarantee,
        workers: count,
        moment,
        landed,
        recovered,
        excess,
        records: clicks.len(),
    })
}
