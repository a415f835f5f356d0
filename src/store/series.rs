//! The traffic series in the `series` table (created by schema migration 3): the closed
//! 10-second bins of `crate::series`, added up when a bin is stored twice, read by range for
//! the post-mortem's chart, pruned when old.

use rusqlite::{params, TransactionBehavior};

use super::{Result, Store, StoreError};
use crate::series::{SeriesPoint, BIN_SECS};

/// Storage of the series in the `series` table (created by schema migration 3).
impl Store {
    /// Adds closed bins to the series. A bin already stored (a restart within its 10 seconds,
    /// or two traffic sources) gets the counts added. Quantiles cannot be added: the true
    /// quantile of the union lies between the two parts' quantiles, and the part with more
    /// requests dominates it, so that part's quantiles are kept (the stored one on a tie).
    /// Refuses, storing nothing, a point that is not a whole bin or has more errors than
    /// requests or a latency that is not a finite non-negative number.
    pub fn append_series(&mut self, points: &[SeriesPoint]) -> Result<()> {
        for p in points {
            let bad_quantile = [p.p50_ms, p.p99_ms]
                .into_iter()
                .flatten()
                .any(|q| !q.is_finite() || q < 0.0);
            if p.at.rem_euclid(BIN_SECS) != 0 || p.errors > p.requests || bad_quantile {
                return Err(StoreError::Invalid(format!(
                    "not a series point: {p:?} (bins start at multiples of {BIN_SECS} s, errors \
                     are at most the requests, latencies are finite and not negative)"
                )));
            }
        }
        let doing = "appending to the traffic series";
        let sqlite = |error| StoreError::Sqlite {
            doing: doing.to_owned(),
            error,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO series (at, requests, errors, p50_ms, p99_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (at) DO UPDATE SET \
                       requests = requests + excluded.requests, \
                       errors = errors + excluded.errors, \
                       p50_ms = CASE WHEN excluded.p50_ms IS NULL THEN p50_ms \
                                     WHEN p50_ms IS NULL OR excluded.requests > requests \
                                     THEN excluded.p50_ms ELSE p50_ms END, \
                       p99_ms = CASE WHEN excluded.p99_ms IS NULL THEN p99_ms \
                                     WHEN p99_ms IS NULL OR excluded.requests > requests \
                                     THEN excluded.p99_ms ELSE p99_ms END",
                )
                .map_err(sqlite)?;
            for p in points {
                stmt.execute(params![
                    p.at,
                    i64::try_from(p.requests).unwrap_or(i64::MAX),
                    i64::try_from(p.errors).unwrap_or(i64::MAX),
                    p.p50_ms,
                    p.p99_ms
                ])
                .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// The stored bins starting in `[from, to)` (unix seconds), oldest first.
    pub fn series_between(&self, from: i64, to: i64) -> Result<Vec<SeriesPoint>> {
        let sqlite = |error| StoreError::Sqlite {
            doing: format!("reading the traffic series from {from} to {to}"),
            error,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at, requests, errors, p50_ms, p99_ms FROM series \
                 WHERE at >= ?1 AND at < ?2 ORDER BY at",
            )
            .map_err(sqlite)?;
        let rows = stmt
            .query_map(params![from, to], |row| {
                Ok(SeriesPoint {
                    at: row.get(0)?,
                    requests: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    errors: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    p50_ms: row.get(3)?,
                    p99_ms: row.get(4)?,
                })
            })
            .map_err(sqlite)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sqlite)?;
        Ok(rows)
    }

    /// Deletes the bins starting before `before`; returns how many. The series is for charts,
    /// not a record: keeping a week or two (about 8,640 rows a day) is plenty.
    /// Requests in the 10-second bins starting in `[from, to)`, and where the last of them
    /// ends: how far the stored series reaches (bins are stored once they can no longer change).
    pub fn series_requests(&self, from: f64, to: f64) -> Result<(u64, Option<f64>)> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(requests), 0), MAX(at) FROM series WHERE at >= ?1 AND at < ?2",
                rusqlite::params![from.ceil() as i64, to.ceil() as i64],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)),
            )
            .map(|(n, last)| (n.max(0) as u64, last.map(|at| at as f64 + 10.0)))
            .map_err(|error| StoreError::Sqlite {
                doing: format!("counting requests in the traffic series from {from} to {to}"),
                error,
            })
    }

    pub fn prune_series(&mut self, before: i64) -> Result<usize> {
        self.conn
            .execute("DELETE FROM series WHERE at < ?1", [before])
            .map_err(|error| StoreError::Sqlite {
                doing: format!("pruning the traffic series before {before}"),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000;

    fn point(at: i64, requests: u64, errors: u64, p50: Option<f64>) -> SeriesPoint {
        SeriesPoint {
            at,
            requests,
            errors,
            p50_ms: p50,
            p99_ms: p50.map(|p| p * 3.0),
        }
    }

    #[test]
    fn the_store_keeps_points_in_order_and_reads_a_half_open_range() {
        let mut store = Store::open_in_memory().unwrap();
        let points = [
            point(T + 20, 5, 0, Some(3.0)),
            point(T, 10, 1, Some(2.0)),
            point(T + 10, 8, 8, None),
        ];
        store.append_series(&points).unwrap();
        let got = store.series_between(T, T + 20).unwrap();
        assert_eq!(got, [points[1].clone(), points[2].clone()]);
        assert_eq!(store.series_between(T + 21, T + 1000).unwrap(), []);
        assert_eq!(store.prune_series(T + 10).unwrap(), 1);
        assert_eq!(store.series_between(0, i64::MAX).unwrap().len(), 2);
    }

    #[test]
    fn a_bin_stored_twice_adds_its_counts_and_keeps_the_larger_parts_quantiles() {
        let mut store = Store::open_in_memory().unwrap();
        store.append_series(&[point(T, 10, 1, Some(2.0))]).unwrap();
        store.append_series(&[point(T, 90, 9, Some(50.0))]).unwrap();
        store.append_series(&[point(T, 5, 5, Some(999.0))]).unwrap();
        store.append_series(&[point(T, 1, 0, None)]).unwrap();
        let got = store.series_between(T, T + 10).unwrap();
        assert_eq!(got, [point(T, 106, 15, Some(50.0))]);
        // A part without latency does not erase the other's.
        store.append_series(&[point(T + 10, 3, 0, None)]).unwrap();
        store
            .append_series(&[point(T + 10, 1, 0, Some(7.0))])
            .unwrap();
        assert_eq!(
            store.series_between(T + 10, T + 20).unwrap(),
            [point(T + 10, 4, 0, Some(7.0))]
        );
    }

    #[test]
    fn the_store_refuses_points_that_cannot_be_and_stores_none_of_the_batch() {
        let mut store = Store::open_in_memory().unwrap();
        for bad in [
            point(T + 3, 1, 0, None),
            point(T, 1, 2, None),
            point(T, 1, 0, Some(f64::INFINITY)),
            point(T, 1, 0, Some(-1.0)),
        ] {
            let e = store
                .append_series(&[point(T + 10, 1, 0, None), bad])
                .unwrap_err();
            assert!(e.to_string().contains("not a series point"), "{e}");
        }
        assert_eq!(store.series_between(0, i64::MAX).unwrap(), []);
    }
}
