//! The stored key-value record and its byte encoding in the `kv` family.
//!
//! `Kv` mirrors `mvccpb::KeyValue` so the storage format does not depend on
//! generated code; conversion to the wire type happens at the request layer.
//! A tombstone is stored as a `Kv` with only `key` and `mod_revision` set.
//!
//! Format (version 1): `0x01`, key (u32 BE length + bytes), value (u32 BE
//! length + bytes), create_revision, mod_revision, version, lease (i64 BE each).

use super::MvccError;

const FORMAT_V1: u8 = 1;

/// One revision of a key as etcd defines it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Main revision of the put that created the current generation; 0 for tombstones.
    pub create_revision: i64,
    /// Main revision of this change.
    pub mod_revision: i64,
    /// Puts since creation, 1 on create; 0 for tombstones.
    pub version: i64,
    /// Attached lease id, 0 for none.
    pub lease: i64,
}

impl Kv {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + self.key.len() + self.value.len() + 32);
        out.push(FORMAT_V1);
        put_bytes(&mut out, &self.key);
        put_bytes(&mut out, &self.value);
        for n in [
            self.create_revision,
            self.mod_revision,
            self.version,
            self.lease,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Kv, MvccError> {
        let corrupt =
            || MvccError::Corrupt(format!("undecodable kv record of {} bytes", bytes.len()));
        let mut r = Reader { bytes, pos: 0 };
        if r.take(1).ok_or_else(corrupt)? != [FORMAT_V1] {
            return Err(corrupt());
        }
        let key = r.bytes().ok_or_else(corrupt)?;
        let value = r.bytes().ok_or_else(corrupt)?;
        let mut ints = [0i64; 4];
        for n in &mut ints {
            *n = r.i64().ok_or_else(corrupt)?;
        }
        if r.pos != bytes.len() {
            return Err(corrupt());
        }
        let [create_revision, mod_revision, version, lease] = ints;
        Ok(Kv {
            key,
            value,
            create_revision,
            mod_revision,
            version,
            lease,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len =
        u32::try_from(b.len()).expect("keys and values are bounded by the request size limit");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        Some(self.take(len as usize)?.to_vec())
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_encoding_round_trips() {
        let kv = Kv {
            key: b"k".to_vec(),
            value: vec![0, 1, 2],
            create_revision: 2,
            mod_revision: 7,
            version: 3,
            lease: -5,
        };
        assert_eq!(Kv::decode(&kv.encode()), Ok(kv.clone()));
        let mut bytes = kv.encode();
        bytes.pop();
        assert!(Kv::decode(&bytes).is_err());
    }
}
