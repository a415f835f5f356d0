//! How far each traffic source has been read: which file (its identity) and the byte offset in
//! it, so a restart reads every line exactly once.

use rusqlite::{params, OptionalExtension};

use super::{finite, Doing, Result, Store};

impl Store {
    /// Remembers how far source `name` has been read: which file (`file_id`, e.g. device and
    /// inode) and the byte offset in it.
    pub fn save_position(&mut self, name: &str, file_id: u64, offset: u64, now: f64) -> Result<()> {
        finite("now", now)?;
        self.conn
            .execute(
                "INSERT INTO source_positions (name, file_id, offset, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET file_id = excluded.file_id, \
                 offset = excluded.offset, updated_at = excluded.updated_at",
                params![name, to_sql_u64(file_id), to_sql_u64(offset), now],
            )
            .doing(|| format!("saving position of source {name}"))?;
        Ok(())
    }

    /// Where source `name` was last read up to: `(file_id, offset)`.
    pub fn load_position(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT file_id, offset FROM source_positions WHERE name = ?1")
            .doing(|| format!("reading position of source {name}"))?;
        let position = stmt
            .query_row([name], |row| {
                Ok((
                    from_sql_u64(row.get::<_, i64>(0)?),
                    from_sql_u64(row.get::<_, i64>(1)?),
                ))
            })
            .optional()
            .doing(|| format!("reading position of source {name}"))?;
        Ok(position)
    }
}

/// SQLite integers are i64: a u64 is stored with the same bits (values above `i64::MAX` read
/// as negative in SQL, and come back unchanged).
fn to_sql_u64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_sql_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;

    #[test]
    fn positions_round_trip_including_the_full_u64_range() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.load_position("nginx").unwrap(), None);
        let cases = [
            (0, 0),
            (1, 2),
            (i64::MAX as u64, i64::MAX as u64),
            (i64::MAX as u64 + 1, 7),
            (u64::MAX, u64::MAX),
            (0xdead_beef_0000_0001, u64::MAX - 1),
        ];
        for (i, (file_id, offset)) in cases.into_iter().enumerate() {
            store
                .save_position("nginx", file_id, offset, T0 + i as f64)
                .unwrap();
            assert_eq!(
                store.load_position("nginx").unwrap(),
                Some((file_id, offset))
            );
        }
        store.save_position("jsonl", 5, 6, T0).unwrap();
        assert_eq!(store.load_position("jsonl").unwrap(), Some((5, 6)));
        assert_eq!(
            store.load_position("nginx").unwrap(),
            Some((0xdead_beef_0000_0001, u64::MAX - 1))
        );
    }
}
