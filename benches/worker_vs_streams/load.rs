//! The load generator of the side-by-side bench: session clicks with uniform or Zipf keys,
//! spacing around the inactivity gap (so that sessions of a key merge), records displaced
//! up to `max_out_of_order_ms` back in time, and a few records far beyond grace (late).
//! Deterministic for a seed: every engine reads the same input.

use crate::common::worker::Click;

/// How keys are drawn.
#[derive(Debug, Clone, Copy)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank r with probability proportional to 1 / r^s.
    Zipf(f64),
}

/// One workload of the bench.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub records: usize,
    pub keys: usize,
    pub dist: KeyDist,
    pub gap_ms: i64,
    pub grace_ms: i64,
    /// The store's `retention.ms`; `None`: gap + grace (both engines' default).
    pub retention_ms: Option<i64>,
    pub max_out_of_order_ms: i64,
    pub partitions: i32,
}

impl Workload {
    /// The store's retention.
    pub fn retention(&self) -> i64 {
        self.retention_ms.unwrap_or(self.gap_ms + self.grace_ms)
    }

    /// One line describing it, for the report.
    pub fn describe(&self) -> String {
        let dist = match self.dist {
            KeyDist::Uniform => "uniform keys".to_string(),
            KeyDist::Zipf(s) => format!("Zipf keys (s = {s})"),
        };
        format!(
            "{} records, {} keys ({dist}), {} partitions, gap {} s, grace {} s, up to {} s out of order",
            self.records,
            self.keys,
            self.partitions,
            self.gap_ms / 1000,
            self.grace_ms / 1000,
            self.max_out_of_order_ms / 1000
        )
    }
}

/// xorshift64*: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The clicks of `w`, starting at `base` ms. Record i sits at `base + i * span / records`
/// where `span` gives each key a mean spacing of 1.2 gaps (uniform keys: about half of a
/// key's consecutive records fall within the gap and merge). 20% of the records are moved
/// back by up to `max_out_of_order_ms`; 0.5% by more than gap + grace + that (late unless
/// they join a session still open).
pub fn generate(w: &Workload, base: i64, seed: u64) -> Vec<Click> {
    let mut rng = Rng(seed.max(1));
    let cdf: Option<Vec<f64>> = match w.dist {
        KeyDist::Uniform => None,
        KeyDist::Zipf(s) => {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (1..=w.keys)
                .map(|r| {
                    acc += 1.0 / (r as f64).powf(s);
                    acc
                })
                .collect();
            cdf.iter_mut().for_each(|c| *c /= acc);
            Some(cdf)
        }
    };
    let per_key = w.records as f64 / w.keys as f64;
    let span = per_key * 1.2 * w.gap_ms as f64;
    let step = span / w.records as f64;
    (0..w.records)
        .map(|i| {
            let key = match &cdf {
                None => rng.below(w.keys as u64) as usize,
                Some(cdf) => {
                    let u = rng.unit();
                    cdf.partition_point(|&c| c < u).min(w.keys - 1)
                }
            };
            let mut t = base + (i as f64 * step) as i64;
            let roll = rng.below(1000);
            if roll < 5 {
                t -= w.gap_ms + w.grace_ms + w.max_out_of_order_ms + rng.below(30_000) as i64;
            } else if roll < 205 {
                t -= rng.below(w.max_out_of_order_ms as u64 + 1) as i64;
            }
            Click {
                key: format!("user-{key:06}"),
                timestamp: t,
            }
        })
        .collect()
}
