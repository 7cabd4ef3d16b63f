//! Session window configuration. Owns `SessionWindows` (inactivity gap, grace, retention)
//! and its validation; must not hold state or touch stores.

use std::time::Duration;

use crate::session::error::SessionError;

/// Session windows: records of a key closer than `inactivity_gap` belong to one session; a
/// session accepts records until stream time passes its end by `grace + inactivity_gap`;
/// the store keeps sessions for `retention` (at least, and by default, gap + grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    gap_ms: i64,
    grace_ms: i64,
    retention_ms: i64,
}

impl SessionWindows {
    /// Windows with the given inactivity gap, no grace and default retention.
    pub fn with_inactivity_gap(gap: Duration) -> Result<Self, SessionError> {
        Self::new(gap, Duration::ZERO, None)
    }

    /// Windows with all three settings; `retention = None` means gap + grace.
    pub fn new(
        gap: Duration,
        grace: Duration,
        retention: Option<Duration>,
    ) -> Result<Self, SessionError> {
        let gap_ms = to_ms("inactivity gap", gap)?;
        let grace_ms = to_ms("grace", grace)?;
        let min = gap_ms
            .checked_add(grace_ms)
            .ok_or(SessionError::DurationTooLong {
                what: "gap + grace",
                ms: gap.as_millis() + grace.as_millis(),
            })?;
        let retention_ms = match retention {
            None => min,
            Some(r) => {
                let r_ms = to_ms("retention", r)?;
                if r_ms < min {
                    return Err(SessionError::RetentionTooShort {
                        retention_ms: r.as_millis(),
                        min_ms: gap.as_millis() + grace.as_millis(),
                    });
                }
                r_ms
            }
        };
        Ok(Self {
            gap_ms,
            grace_ms,
            retention_ms,
        })
    }

    /// Returns these windows with another grace period (retention grows to gap + grace if
    /// it was shorter).
    pub fn grace(self, grace: Duration) -> Result<Self, SessionError> {
        let gap = Duration::from_millis(self.gap_ms.unsigned_abs());
        let retention = Duration::from_millis(self.retention_ms.unsigned_abs());
        let min = gap.saturating_add(grace);
        Self::new(gap, grace, Some(retention.max(min)))
    }

    /// Inactivity gap in milliseconds.
    pub fn gap_ms(&self) -> i64 {
        self.gap_ms
    }

    /// Grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// Store retention in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }
}

fn to_ms(what: &'static str, d: Duration) -> Result<i64, SessionError> {
    i64::try_from(d.as_millis()).map_err(|_| SessionError::DurationTooLong {
        what,
        ms: d.as_millis(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_to_gap_plus_grace_and_may_not_be_shorter() {
        let w = SessionWindows::new(Duration::from_millis(5), Duration::from_millis(3), None)
            .expect("valid");
        assert_eq!((w.gap_ms(), w.grace_ms(), w.retention_ms()), (5, 3, 8));
        let w = SessionWindows::new(
            Duration::from_millis(5),
            Duration::from_millis(3),
            Some(Duration::from_millis(100)),
        )
        .expect("valid");
        assert_eq!(w.retention_ms(), 100);
        assert!(matches!(
            SessionWindows::new(
                Duration::from_millis(5),
                Duration::from_millis(3),
                Some(Duration::from_millis(7))
            ),
            Err(SessionError::RetentionTooShort { .. })
        ));
        assert!(SessionWindows::with_inactivity_gap(Duration::MAX).is_err());
    }

    #[test]
    fn grace_extends_default_retention() {
        let w = SessionWindows::with_inactivity_gap(Duration::from_millis(10))
            .and_then(|w| w.grace(Duration::from_millis(4)))
            .expect("valid");
        assert_eq!((w.gap_ms(), w.grace_ms(), w.retention_ms()), (10, 4, 14));
    }
}
