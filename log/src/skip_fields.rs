//! Decoding a stored row without some of its fields.
//!
//! A past-state query that reads two columns of 50,000 workload rows need
//! not build each row's spec (maps, vectors, strings) and placement text.
//! [`decode_skipping`] hands the row's decoder every map entry except the
//! named ones, which are stepped over without being built; the row's type
//! then fills those fields as for a field missing from an old record, so
//! each skipped field must be an `Option` or carry `#[serde(default)]`
//! (otherwise the decode fails naming the missing field, never a wrong
//! row).

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::db::{decode_packed, PACKED};
use crate::keys::show_key;
use crate::{Error, Result};

/// Decodes a row stored by [`crate::db::encode_packed`] (or a JSON row written
/// before it), leaving the fields named in `skip` at their defaults.
pub(crate) fn decode_skipping<T: DeserializeOwned>(cf: &str, key: &[u8], bytes: &[u8], skip: &[&str]) -> Result<T> {
    if skip.is_empty() {
        return decode_packed(cf, key, bytes);
    }
    let what = || format!("record {cf}/{}", show_key(key));
    match bytes.split_first() {
        Some((&PACKED, body)) => {
            let mut de = rmp_serde::Deserializer::from_read_ref(body);
            T::deserialize(Skipping { inner: &mut de, skip })
                .map_err(|e| Error::decode(what(), format!("MessagePack row: {e}")))
        }
        _ => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let row = T::deserialize(Skipping { inner: &mut de, skip }).map_err(|e| Error::decode(what(), e))?;
            de.end().map_err(|e| Error::decode(what(), e))?;
            Ok(row)
        }
    }
}

/// A deserializer whose top-level map (a struct with named fields) hides
/// the entries named in `skip`.
struct Skipping<'s, D> {
    inner: D,
    skip: &'s [&'s str],
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(SkipVisitor { inner: visitor, skip: self.skip })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(SkipVisitor { inner: visitor, skip: self.skip })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, SkipVisitor { inner: visitor, skip: self.skip })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct enum identifier ignored_any
    }
}

struct SkipVisitor<'s, V> {
    inner: V,
    skip: &'s [&'s str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkipVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(SkipMap { inner: map, skip: self.skip })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }
}

struct SkipMap<'s, A> {
    inner: A,
    skip: &'s [&'s str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key::<Key<'de>>()? else { return Ok(None) };
            let name = key.as_str();
            if self.skip.contains(&name) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            return match key {
                Key::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)).map(Some),
                Key::Owned(k) => seed.deserialize(StrDeserializer::new(&k)).map(Some),
            };
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// A field name, borrowed from the stored bytes when the format allows.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::db::encode_packed;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: String,
        status: String,
        #[serde(default)]
        spec: Vec<String>,
        note: Option<String>,
        required: u64,
    }

    fn row() -> Row {
        Row {
            id: "w-1".into(),
            status: "Placed".into(),
            spec: vec!["a".into(), "b".into()],
            note: Some("n".into()),
            required: 7,
        }
    }

    #[test]
    fn skipped_fields_take_their_defaults_and_the_rest_read_as_stored() {
        let json = serde_json::to_vec(&row()).expect("json");
        let packed = encode_packed("row", &row()).expect("pack");
        for bytes in [&json, &packed] {
            let all: Row = decode_skipping("view_rows", b"k", bytes, &[]).expect("whole");
            assert_eq!(all, row());
            let some: Row = decode_skipping("view_rows", b"k", bytes, &["spec", "note"]).expect("skipping");
            assert_eq!(some, Row { spec: vec![], note: None, ..row() });
            // A required field cannot be skipped: an error naming it, not a made-up row.
            let e = decode_skipping::<Row>("view_rows", b"k", bytes, &["required"]).expect_err("required");
            assert!(e.to_string().contains("required") && e.to_string().contains("view_rows/"), "{e}");
        }
        let mut trailing = json.clone();
        trailing.extend_from_slice(b" {}");
        assert!(decode_skipping::<Row>("view_rows", b"k", &trailing, &["spec"]).is_err());
    }
}
