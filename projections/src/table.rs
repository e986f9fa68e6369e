use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One table of the cluster view: a map from row key to row that remembers
/// which rows changed since [`Table::take_touched`] last asked. Reads go
/// through `Deref` to the map; every write goes through a method here that
/// marks the row, so the log store can checkpoint only the rows that
/// changed (and share the rest with earlier checkpoints).
///
/// Serialises as the plain map; equality compares the rows only.
#[derive(Debug, Clone)]
pub struct Table<K: Ord, V> {
    rows: BTreeMap<K, V>,
    touched: BTreeSet<K>,
}

impl<K: Ord, V> Default for Table<K, V> {
    fn default() -> Self {
        Table { rows: BTreeMap::new(), touched: BTreeSet::new() }
    }
}

impl<K: Ord + Clone, V> Table<K, V> {
    /// The row under `key`, to change it; marks it touched when present.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let row = self.rows.get_mut(key)?;
        if !self.touched.contains(key) {
            self.touched.insert(key.to_owned());
        }
        Some(row)
    }

    /// Inserts or replaces a row and marks it touched.
    pub fn insert(&mut self, key: K, row: V) -> Option<V> {
        self.touched.insert(key.clone());
        self.rows.insert(key, row)
    }

    /// The row under `key`, made with `make` if missing; marks it touched.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.touched.insert(key.clone());
        self.rows.entry(key).or_insert_with(make)
    }

    /// Puts a row back as stored, without marking it: for loading a view
    /// from checkpointed rows.
    pub fn restore(&mut self, key: K, row: V) {
        self.rows.insert(key, row);
    }

    /// Every row in key order, to complete rows put back with
    /// [`Table::restore`] from what was stored beside them; marks nothing.
    pub fn restored_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.rows.iter_mut()
    }

    /// The keys of the rows changed since the last call, and forgets them.
    pub fn take_touched(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.touched)
    }

    /// Marks every row touched (after a load whose starting point is not
    /// the last stored checkpoint, so the next one must write them all).
    pub fn touch_all(&mut self) {
        self.touched = self.rows.keys().cloned().collect();
    }

    /// The rows, by key.
    pub fn into_rows(self) -> BTreeMap<K, V> {
        self.rows
    }
}

impl<K: Ord, V> Deref for Table<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.rows
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Table<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

impl<K: Ord, V: PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for Table<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<'de, K: Ord + Clone + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Table<K, V> {
    /// A decoded table counts as untouched: it is as stored.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Table { rows: BTreeMap::deserialize(d)?, touched: BTreeSet::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_marks_its_row_and_reads_do_not() {
        let mut t: Table<String, u32> = Table::default();
        t.insert("a".into(), 1);
        t.insert("b".into(), 2);
        assert_eq!(t.take_touched(), BTreeSet::from(["a".to_string(), "b".to_string()]));
        assert!(t.take_touched().is_empty(), "taking forgets");

        assert_eq!(t.get("a"), Some(&1));
        assert_eq!(t.values().sum::<u32>(), 3);
        assert!(t.take_touched().is_empty(), "reads mark nothing");

        *t.get_mut("b").expect("b") += 1;
        assert!(t.get_mut("zz").is_none());
        *t.get_or_insert_with("c".into(), || 0) += 5;
        assert_eq!(t.take_touched(), BTreeSet::from(["b".to_string(), "c".to_string()]), "a missing row is not marked");
        assert_eq!(t.get("c"), Some(&5));

        t.restore("d".into(), 9);
        assert!(t.take_touched().is_empty(), "restoring a stored row is not a change");
        t.touch_all();
        assert_eq!(t.take_touched().len(), 4);
    }

    #[test]
    fn serialises_as_the_map_and_compares_rows_only() {
        let mut a: Table<u64, String> = Table::default();
        a.insert(1, "x".into());
        let json = serde_json::to_string(&a).expect("encode");
        assert_eq!(json, r#"{"1":"x"}"#);
        let b: Table<u64, String> = serde_json::from_str(&json).expect("decode");
        assert_eq!(a, b, "a's pending touch does not make it differ");
        let mut b = b;
        assert!(b.take_touched().is_empty(), "a decoded table is as stored");
    }
}
