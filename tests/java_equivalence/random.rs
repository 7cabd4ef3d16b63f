//! Randomized differential workloads (`JEQ_RANDOM_SEEDS`, see [`super::random_workloads`]).
//!
//! Each seed draws the settings (gap 1..60 s, grace 0..2 × gap, sometimes an explicit
//! `retention.ms` above gap + grace, the cache off or on, commit interval, 1 to 3 runs with
//! wiped state in between) and a few keys (dense collisions, some sharing an input
//! partition), then builds each run's records from a mix of moves: in order, the same
//! timestamp on another key, exactly a gap (or a gap + 1) after or before an earlier record
//! of the key, duplicates, out-of-order bursts, records exactly at the close time (and one
//! either side), bridges between two sessions of a key, long chains merged by a bridge,
//! records far behind (late), jumps in time that expire sessions, and after a restart
//! records behind the restored state (the processor's stream time starts again).
//!
//! With the cache on, the records whose result depends on Kafka Streams' flush timing are
//! left out ([`super::flush_independent`], over the runs concatenated).
//!
//! A workload can be written to and read from a small text file (`JEQ_CASE=path`), for
//! minimizing a failing seed by hand:
//!
//! ```text
//! gap=10000 grace=0 retention=- cache=0 commit=200 eos=0 filter=1
//! run
//! a 0
//! a 10000
//! run
//! b 5
//! ```
//!
//! An optional `java.poll.ms=N` on the first line sets Kafka Streams' `poll.ms`.

use std::collections::BTreeMap;

use super::{flush_dependent, partition_of, Click, Scenario, Settings, INPUT_PARTITIONS};

/// splitmix64: small, seedable, good enough to draw workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi` (`lo` if `hi < lo`).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// `1..20` (inclusive), `3,7,9`, or a mix: `1..5,9`.
pub fn parse_seeds(spec: &str) -> anyhow::Result<Vec<u64>> {
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once("..") {
            Some((a, b)) => seeds.extend(a.trim().parse::<u64>()?..=b.trim().parse::<u64>()?),
            None => seeds.push(part.parse()?),
        }
    }
    Ok(seeds)
}

/// One random workload, relative times (`base` is added when it becomes a scenario).
#[derive(Debug, Clone)]
pub struct Workload {
    pub settings: Settings,
    pub runs: Vec<Vec<(String, i64)>>,
    /// With the cache on, leave out the flush-timing-dependent records (`filter=0` in a
    /// case file: run it as it is, e.g. a `.kept.case` file, already filtered).
    pub filter: bool,
}

impl Workload {
    pub fn generate(seed: u64) -> Workload {
        let mut rng = Rng::new(seed);
        let gap = if rng.chance(50) {
            rng.range(1, 60) * 1_000
        } else {
            rng.range(1_000, 60_000)
        };
        let grace = match rng.below(10) {
            0 | 1 => 0,
            2 => gap,
            3 => 2 * gap,
            4 => gap / 2,
            _ => rng.range(0, 2 * gap),
        };
        let retention = match rng.below(10) {
            0..=2 => Some(gap + grace + rng.range(1, 2 * gap)),
            3 => Some(gap + grace),
            _ => None,
        };
        let settings = Settings {
            gap,
            grace,
            cache_max_bytes: if rng.chance(50) { Some(0) } else { None },
            commit_interval_ms: rng.pick(&[100, 200, 200, 1_000]),
            retention,
            eos: false,
            java_poll_ms: None,
        };
        let retention = settings.retention();
        let n_keys = rng.range(1, 4) as usize;
        let keys: Vec<String> = (0..n_keys)
            .map(|_| format!("k{}", rng.below(1_000)))
            .collect();
        let n_runs = match rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };

        let mut runs = Vec::new();
        let mut cursor: i64 = 10 * 60_000;
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for run in 0..n_runs {
            let mut records: Vec<(String, i64)> = Vec::new();
            // The processor's stream time per input partition (it starts again in each run).
            let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
            let n = rng.range(8, 50);
            if run > 0 && rng.chance(50) {
                // Behind the restored state: accepted again (stream time is new), merging
                // with restored sessions or not.
                cursor -= rng.range(0, 2 * retention);
            }
            while (records.len() as i64) < n {
                let key = keys[rng.below(n_keys as u64) as usize].clone();
                let part = partition_of(key.as_bytes(), INPUT_PARTITIONS);
                let st = stream_time.get(&part).copied().unwrap_or(cursor);
                let earlier = seen.get(&key).cloned().unwrap_or_default();
                let any_earlier = |rng: &mut Rng| {
                    (!earlier.is_empty()).then(|| earlier[rng.below(earlier.len() as u64) as usize])
                };
                let mut ts: Vec<i64> = Vec::new();
                match rng.below(100) {
                    0..=21 => {
                        cursor += rng.range(0, gap * 3 / 2);
                        ts.push(cursor);
                    }
                    22..=28 => ts.push(cursor),
                    29..=36 => {
                        let last = earlier.iter().max().copied().unwrap_or(cursor);
                        ts.push(last + if rng.chance(75) { gap } else { gap + 1 });
                    }
                    37..=42 => {
                        if let Some(e) = any_earlier(&mut rng) {
                            ts.push(e + if rng.chance(50) { gap } else { -gap });
                        }
                    }
                    43..=48 => {
                        if let Some(e) = any_earlier(&mut rng) {
                            ts.push(e);
                        }
                    }
                    49..=56 => {
                        for _ in 0..rng.range(2, 4) {
                            ts.push(cursor - rng.range(0, gap + grace));
                        }
                    }
                    57..=64 => {
                        let close = st - grace - gap;
                        ts.push(close + rng.range(-1, 1));
                    }
                    65..=71 => {
                        let mut sorted = earlier.clone();
                        sorted.sort_unstable();
                        sorted.dedup();
                        let pairs: Vec<(i64, i64)> = sorted
                            .windows(2)
                            .map(|w| (w[0], w[1]))
                            .filter(|(a, b)| b - a > gap)
                            .collect();
                        if !pairs.is_empty() {
                            let (a, b) = pairs[rng.below(pairs.len() as u64) as usize];
                            ts.push(match rng.below(3) {
                                0 => a + gap,
                                1 => b - gap,
                                _ => a + (b - a) / 2,
                            });
                        }
                    }
                    72..=76 => ts.push(cursor - rng.range(gap + grace + 1, 3 * (gap + grace) + 1)),
                    77..=82 => {
                        cursor += rng.range(gap, 2 * retention);
                        ts.push(cursor);
                    }
                    83..=88 => {
                        // A long chain, later bridged to its neighbours or not.
                        let step = if rng.chance(50) {
                            gap
                        } else {
                            rng.range(1, gap)
                        };
                        cursor += gap + 1;
                        for _ in 0..rng.range(3, 6) {
                            ts.push(cursor);
                            cursor += step;
                        }
                        cursor -= step;
                    }
                    89..=93 => ts.push(st - grace),
                    _ => ts.push(st - retention + gap + rng.range(-1, 1)),
                }
                for t in ts {
                    let t = t.max(0);
                    let st = stream_time.entry(part).or_insert(t);
                    *st = (*st).max(t);
                    seen.entry(key.clone()).or_default().push(t);
                    records.push((key.clone(), t));
                }
            }
            runs.push(records);
        }
        Workload {
            settings,
            runs,
            filter: true,
        }
    }

    /// The workload as a scenario named `name`, times offset by `base`; with the cache on,
    /// without the flush-timing-dependent records.
    pub fn scenario(&self, name: String, base: i64) -> (Scenario, usize) {
        let s = self.settings;
        let mut runs: Vec<Vec<Click>> = self
            .runs
            .iter()
            .map(|r| {
                r.iter()
                    .map(|(k, t)| Click {
                        key: k.clone(),
                        timestamp: base + t,
                    })
                    .collect()
            })
            .collect();
        let mut left_out = 0;
        if self.filter && s.cache_max_bytes != Some(0) {
            // Over the runs concatenated: stream time there never goes back.
            let all: Vec<Click> = runs.concat();
            let mut drop = flush_dependent(&all, s.gap, s.retention()).into_iter();
            left_out = all.len();
            for run in &mut runs {
                run.retain(|_| !drop.next().unwrap_or(false));
            }
            left_out -= runs.iter().map(Vec::len).sum::<usize>();
        }
        (
            Scenario {
                name,
                settings: s,
                runs,
                expected: None,
            },
            left_out,
        )
    }

    /// The records a scenario of this workload runs (relative times), as a workload that
    /// runs them as they are.
    pub fn kept(&self) -> Workload {
        let (scenario, _) = self.scenario(String::new(), 0);
        Workload {
            settings: self.settings,
            runs: scenario
                .runs
                .into_iter()
                .map(|r| r.into_iter().map(|c| (c.key, c.timestamp)).collect())
                .collect(),
            filter: false,
        }
    }

    pub fn to_text(&self) -> String {
        let s = self.settings;
        let mut out = format!(
            "gap={} grace={} retention={} cache={} commit={} eos={} filter={}{}\n",
            s.gap,
            s.grace,
            s.retention.map_or("-".to_string(), |r| r.to_string()),
            s.cache_max_bytes
                .map_or("default".to_string(), |b| b.to_string()),
            s.commit_interval_ms,
            u8::from(s.eos),
            u8::from(self.filter),
            s.java_poll_ms
                .map_or(String::new(), |ms| format!(" java.poll.ms={ms}"))
        );
        for run in &self.runs {
            out.push_str("run\n");
            for (k, t) in run {
                out.push_str(&format!("{k} {t}\n"));
            }
        }
        out
    }

    pub fn from_text(text: &str) -> anyhow::Result<Workload> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let header = lines.next().ok_or_else(|| anyhow::anyhow!("empty case"))?;
        let mut filter = true;
        let mut settings = Settings {
            gap: 0,
            grace: 0,
            cache_max_bytes: Some(0),
            commit_interval_ms: 200,
            retention: None,
            eos: false,
            java_poll_ms: None,
        };
        for kv in header.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("not key=value: {kv}"))?;
            match k {
                "gap" => settings.gap = v.parse()?,
                "grace" => settings.grace = v.parse()?,
                "retention" => settings.retention = (v != "-").then(|| v.parse()).transpose()?,
                "cache" => {
                    settings.cache_max_bytes = (v != "default").then(|| v.parse()).transpose()?
                }
                "commit" => settings.commit_interval_ms = v.parse()?,
                "eos" => settings.eos = v == "1",
                "filter" => filter = v != "0",
                "java.poll.ms" => settings.java_poll_ms = Some(v.parse()?),
                _ => anyhow::bail!("unknown setting {k}"),
            }
        }
        let mut runs: Vec<Vec<(String, i64)>> = Vec::new();
        for line in lines {
            if line == "run" {
                runs.push(Vec::new());
                continue;
            }
            let (k, t) = line
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("not 'key time': {line}"))?;
            runs.last_mut()
                .ok_or_else(|| anyhow::anyhow!("a record before the first 'run'"))?
                .push((k.to_string(), t.trim().parse()?));
        }
        Ok(Workload {
            settings,
            runs,
            filter,
        })
    }
}
