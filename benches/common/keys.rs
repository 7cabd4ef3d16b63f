//! The deterministic key sequence (xorshift) the store benchmarks and
//! `examples/store_hot_path.rs` draw users from, so both measure the same access pattern.

/// Key indexes in `0..n`, from the xorshift state `x` (non-zero).
pub struct Keys {
    pub x: u64,
    pub n: u64,
}

impl Keys {
    pub fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x % self.n
    }
}
