//! Time as the gateway decides with it.
//!
//! Decisions (deadlines, expiry, token lifetimes) are in wall-clock time;
//! timers run on tokio's clock. [`Clock`] ties the two together at creation,
//! so a test that pauses and advances tokio time moves the gateway's wall
//! clock with it, and expiry can be tested to the millisecond without sleeping.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, Unix milliseconds (UTC). Serialised as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long from `self` until `later`; zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn from_datetime(at: OffsetDateTime) -> Self {
        Self(i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 (`2026-01-31T12:00:00Z`).
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(Self::from_datetime)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
    }
}

/// The gateway's clock: wall time that advances with tokio's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    wall_at_start: Timestamp,
    tokio_at_start: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the system time now, advancing with tokio time from here.
    pub fn system() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self::starting_at(Timestamp(ms))
    }

    /// A clock that reads `at` now (tests).
    pub fn starting_at(at: Timestamp) -> Self {
        Self {
            wall_at_start: at,
            tokio_at_start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.wall_at_start
            .saturating_add(self.tokio_at_start.elapsed())
    }

    /// The tokio instant at which this clock will read `at`.
    pub fn instant_at(&self, at: Timestamp) -> tokio::time::Instant {
        let now = self.now();
        tokio::time::Instant::now() + now.until(at)
    }
}

/// A positive duration written as humans do (`10s`, `8h`, `1m 30s`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "`{value}` is not a duration ({e}); write e.g. \"10s\" or \"8h\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let t = Timestamp::parse("2026-11-23T17:00:00.250Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T17:00:00.25Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_advances_with_tokio_time() {
        let clock = Clock::starting_at(Timestamp::from_unix_ms(1_000));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), Timestamp::from_unix_ms(3_000));
    }
}
