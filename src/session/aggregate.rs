//! The aggregation functions of a session-windowed aggregate: `Initializer`, `Aggregator`
//! and `Merger` (as Kafka Streams' interfaces of the same names), with closures accepted,
//! plus the built-in `Count` and the `Sum` example. Pure functions: no state, no stores.

/// Creates the empty aggregate of a new session.
pub trait Initializer<A> {
    /// The initial aggregate.
    fn init(&self) -> A;
}

/// Folds one record into an aggregate.
pub trait Aggregator<K, V, A> {
    /// `aggregate` updated with `value` of `key`.
    fn aggregate(&self, key: &K, value: &V, aggregate: A) -> A;
}

/// Combines the aggregates of two sessions that merge.
pub trait Merger<K, A> {
    /// The merge of `left` (the running aggregate) and `right` (a found session's).
    fn merge(&self, key: &K, left: A, right: A) -> A;
}

impl<A, F: Fn() -> A> Initializer<A> for F {
    fn init(&self) -> A {
        self()
    }
}

impl<K, V, A, F: Fn(&K, &V, A) -> A> Aggregator<K, V, A> for F {
    fn aggregate(&self, key: &K, value: &V, aggregate: A) -> A {
        self(key, value, aggregate)
    }
}

impl<K, A, F: Fn(&K, A, A) -> A> Merger<K, A> for F {
    fn merge(&self, key: &K, left: A, right: A) -> A {
        self(key, left, right)
    }
}

/// Counts records per session (Kafka's `count()`): starts at 0, adds 1 per record, merges
/// by addition. Arithmetic wraps like Java's `long`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count;

impl Initializer<i64> for Count {
    fn init(&self) -> i64 {
        0
    }
}

impl<K, V> Aggregator<K, V, i64> for Count {
    fn aggregate(&self, _key: &K, _value: &V, aggregate: i64) -> i64 {
        aggregate.wrapping_add(1)
    }
}

impl<K> Merger<K, i64> for Count {
    fn merge(&self, _key: &K, left: i64, right: i64) -> i64 {
        left.wrapping_add(right)
    }
}

/// Sums i64 values per session: starts at 0, adds each value, merges by addition.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sum;

impl Initializer<i64> for Sum {
    fn init(&self) -> i64 {
        0
    }
}

impl<K> Aggregator<K, i64, i64> for Sum {
    fn aggregate(&self, _key: &K, value: &i64, aggregate: i64) -> i64 {
        aggregate.wrapping_add(*value)
    }
}

impl<K> Merger<K, i64> for Sum {
    fn merge(&self, _key: &K, left: i64, right: i64) -> i64 {
        left.wrapping_add(right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_sum() {
        let k = "k".to_string();
        let c = Count.aggregate(&k, &"x", Initializer::<i64>::init(&Count));
        assert_eq!(c, 1);
        assert_eq!(Merger::merge(&Count, &k, c, 4), 5);
        assert_eq!(Sum.aggregate(&k, &7, Sum.init()), 7);
        assert_eq!(Sum.aggregate(&k, &1, i64::MAX), i64::MIN, "wraps like Java");
        assert_eq!(Merger::merge(&Sum, &k, 2, 3), 5);
    }

    #[test]
    fn closures_are_accepted() {
        let init = || String::new();
        let agg = |_: &u8, v: &char, mut a: String| {
            a.push(*v);
            a
        };
        let merge = |_: &u8, a: String, b: String| a + &b;
        let a = agg.aggregate(&0, &'x', init.init());
        assert_eq!(merge.merge(&0, a, "y".into()), "xy");
    }
}
