//! Reading a stored row column by column, as both stores do: reading is
//! parsing, every text column goes through the type's `FromStr` (or serde,
//! for JSON values), and a value that does not parse is a
//! [`StoreError::Backend`] naming `table.column`, never a panic. Such a row
//! means the database was edited by hand or by a newer, incompatible writer.
//!
//! Each store reads the raw values with its driver ([`Columns::int64`],
//! [`Columns::text`] and their optional forms); the conversions on top are
//! written once here, so the two stores read a row the same way.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::DeserializeOwned;

use super::StoreError;
use crate::clock::Timestamp;

/// A column whose value does not parse as the type it holds.
#[derive(Debug, thiserror::Error)]
#[error("{table}.{column} does not hold a valid value: {problem}")]
pub(crate) struct BadColumn {
    table: &'static str,
    column: &'static str,
    problem: String,
}

/// One row of a table, read column by column.
pub(crate) trait Columns {
    /// The table the row is from, for errors.
    fn table(&self) -> &'static str;
    /// A 64-bit integer column (counts and times are stored as these).
    fn opt_int64(&self, column: &'static str) -> Result<Option<i64>, StoreError>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;

    fn bad(&self, column: &'static str, problem: impl Display) -> StoreError {
        StoreError::Backend(Box::new(BadColumn {
            table: self.table(),
            column,
            problem: problem.to_string(),
        }))
    }

    fn int64(&self, column: &'static str) -> Result<i64, StoreError> {
        self.opt_int64(column)?
            .ok_or_else(|| self.bad(column, "is NULL"))
    }

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| self.bad(column, "is NULL"))
    }

    /// A count or quota: a signed 64-bit integer that must not be negative.
    fn count(&self, column: &'static str) -> Result<u64, StoreError> {
        let n = self.int64(column)?;
        u64::try_from(n).map_err(|_| self.bad(column, format!("{n} is negative")))
    }

    fn opt_count(&self, column: &'static str) -> Result<Option<u64>, StoreError> {
        self.opt_int64(column)?
            .map(|n| u64::try_from(n).map_err(|_| self.bad(column, format!("{n} is negative"))))
            .transpose()
    }

    fn parse<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(column)?.parse().map_err(|e| self.bad(column, e))
    }

    fn opt_parse<T>(&self, column: &'static str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_text(column)?
            .map(|text| text.parse().map_err(|e| self.bad(column, e)))
            .transpose()
    }

    /// A time, stored as Unix milliseconds.
    fn time(&self, column: &'static str) -> Result<Timestamp, StoreError> {
        self.int64(column).map(Timestamp::from_unix_ms)
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_int64(column)?.map(Timestamp::from_unix_ms))
    }

    fn json<T: DeserializeOwned>(&self, column: &'static str) -> Result<T, StoreError> {
        serde_json::from_str(&self.text(column)?).map_err(|e| self.bad(column, e))
    }
}
