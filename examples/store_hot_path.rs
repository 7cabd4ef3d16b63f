//! The raw store step of `benches/session_store.rs` (`find_sessions_into` of a key, then one
//! `replace` of what was found) as a plain loop, for profilers: criterion is too slow under
//! `valgrind --tool=callgrind`. Populates `N` live sessions (default 1,000,000), warms up
//! with `N / 5` records so the cache is full and evicting, then runs `OPS` records (default
//! 100,000) inside `measured`, which callgrind can isolate:
//!
//! ```text
//! cargo build --release --example store_hot_path
//! valgrind --tool=callgrind --toggle-collect=store_hot_path::measured \
//!     target/release/examples/store_hot_path 1000000 100000
//! ```

#[path = "../benches/common/keys.rs"]
mod keys;
use keys::Keys;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use kstate::store::session_schema::session_key;
use kstate::store::{
    CacheBudget, CachingSessionStore, InMemoryBytesStore, RecordContext, StoredSession,
};

const CACHE_BYTES: usize = 10 * 1024 * 1024;
const GAP_MS: i64 = 5 * 60 * 1000;
const T0: i64 = 1_700_000_000_000;

struct Run {
    store: CachingSessionStore,
    keys: Keys,
    names: Vec<String>,
    found: Vec<StoredSession>,
    removed: Vec<Bytes>,
    ctx: RecordContext,
    t: i64,
}

impl Run {
    fn step(&mut self) {
        self.t += 1;
        let t = self.t;
        let key = self.names[self.keys.next() as usize].as_bytes();
        self.store
            .find_sessions_into(key, t - GAP_MS, t + GAP_MS, &mut self.found)
            .expect("find");
        let start = self.found.first().map_or(t, |s| s.start.min(t));
        self.removed.clear();
        self.removed.extend(self.found.drain(..).map(|s| s.key));
        let mut ctx = self.ctx.clone();
        ctx.offset = t;
        ctx.timestamp = t;
        self.store
            .replace(
                session_key(key, start, t),
                Bytes::from_static(&[0; 8]),
                &self.removed,
                ctx,
            )
            .expect("replace");
        black_box(self.store.take_evicted().len());
    }
}

#[inline(never)]
fn measured(run: &mut Run, ops: usize) {
    for _ in 0..ops {
        run.step();
    }
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let n = args.next().unwrap_or(1_000_000);
    let ops = args.next().unwrap_or(100_000) as usize;
    let mut store = CachingSessionStore::with_retention(
        "counts",
        CacheBudget::new(CACHE_BYTES),
        InMemoryBytesStore::new(),
        i64::MAX / 4,
    )
    .expect("store");
    let names: Vec<String> = (0..n).map(|i| format!("user-{i:08}")).collect();
    let one = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]);
    for name in &names {
        store
            .put_inner(session_key(name.as_bytes(), T0, T0), one.clone())
            .expect("put_inner");
    }
    let mut run = Run {
        store,
        keys: Keys { x: 0x9E37_79B9, n },
        names,
        found: Vec::new(),
        removed: Vec::new(),
        ctx: RecordContext::new("events", 0, 0, T0),
        t: T0,
    };
    for _ in 0..n / 5 {
        run.step();
    }
    let began = Instant::now();
    measured(&mut run, ops);
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{n} live sessions: {ops} ops in {secs:.3} s = {:.0} ops/s; cache {:?}",
        ops as f64 / secs,
        run.store.cache().metrics()
    );
}
