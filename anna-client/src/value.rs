//! Lattice values as this crate hands them out and takes them in.

use std::collections::BTreeSet;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{self, LatticeType};

/// A last-writer-wins value: on merge, the higher timestamp wins; on equal
/// timestamps Anna keeps the later arrival.
///
/// Its wire form is the `LWWValue` message, which is also what Cloudburst
/// stores under its keys.
///
/// ```
/// use anna_client::LwwValue;
///
/// let v = LwwValue::new(42, b"hello".to_vec());
/// let bytes = v.encode();
/// assert_eq!(LwwValue::decode(&bytes).unwrap(), v);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwValue {
    /// The merge timestamp.
    pub timestamp: u64,
    /// The value bytes (opaque to Anna; empty reads back as `KEY_DNE`).
    pub value: Vec<u8>,
}

impl LwwValue {
    /// Builds an LWW value.
    pub fn new(timestamp: u64, value: Vec<u8>) -> Self {
        LwwValue { timestamp, value }
    }

    /// Serializes as an `LWWValue` protobuf message.
    pub fn encode(&self) -> Vec<u8> {
        proto::LwwValue {
            timestamp: self.timestamp,
            value: self.value.clone(),
        }
        .encode_to_vec()
    }

    /// Parses an `LWWValue` protobuf message.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, prost::DecodeError> {
        let m = proto::LwwValue::decode(bytes)?;
        Ok(LwwValue {
            timestamp: m.timestamp,
            value: m.value,
        })
    }
}

/// A value of one of Anna's lattice types.
///
/// ```
/// use anna_client::{LwwValue, Value};
/// use anna_client::proto::LatticeType;
///
/// let set = Value::set([b"a".to_vec(), b"b".to_vec()]);
/// assert_eq!(set.lattice_type(), LatticeType::Set);
/// let lww = Value::Lww(LwwValue::new(1, b"x".to_vec()));
/// assert_eq!(lww.lattice_type(), LatticeType::Lww);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A last-writer-wins register (`LATTICE LWW`).
    Lww(LwwValue),
    /// A grow-only set of byte strings (`LATTICE SET`); merge is union.
    Set(BTreeSet<Vec<u8>>),
    /// Any other lattice type, with its payload left undecoded.
    Other {
        /// The lattice type (never `LWW` or `SET`).
        lattice: LatticeType,
        /// The serialized lattice, as Anna sent it.
        payload: Vec<u8>,
    },
}

impl Value {
    /// Builds a set value from its elements.
    pub fn set<I: IntoIterator<Item = Vec<u8>>>(elements: I) -> Self {
        Value::Set(elements.into_iter().collect())
    }

    /// The lattice type this value is stored as.
    pub fn lattice_type(&self) -> LatticeType {
        match self {
            Value::Lww(_) => LatticeType::Lww,
            Value::Set(_) => LatticeType::Set,
            Value::Other { lattice, .. } => *lattice,
        }
    }

    /// Serializes the value as a `KeyTuple` payload.
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            Value::Lww(v) => v.encode(),
            Value::Set(s) => proto::SetValue {
                values: s.iter().cloned().collect(),
            }
            .encode_to_vec(),
            Value::Other { payload, .. } => payload.clone(),
        }
    }

    /// Parses a `KeyTuple` payload of the given lattice type; `key` is only
    /// used to name the key in errors.
    pub fn decode_payload(key: &str, lattice: LatticeType, payload: &[u8]) -> Result<Self> {
        let decode_err = |e: prost::DecodeError| Error::Decode {
            key: key.to_owned(),
            lattice,
            reason: e.to_string(),
        };
        match lattice {
            LatticeType::Lww => Ok(Value::Lww(LwwValue::decode(payload).map_err(decode_err)?)),
            LatticeType::Set => Ok(Value::Set(
                proto::SetValue::decode(payload)
                    .map_err(decode_err)?
                    .values
                    .into_iter()
                    .collect(),
            )),
            other => Ok(Value::Other {
                lattice: other,
                payload: payload.to_vec(),
            }),
        }
    }

    /// Merges `other` into `self` the way Anna would (used to combine one
    /// key given twice in one put). Fails when the lattice types differ or
    /// cannot be merged client-side.
    pub(crate) fn merge(&mut self, key: &str, other: Value) -> Result<()> {
        match (self, other) {
            (Value::Lww(a), Value::Lww(b)) => {
                // Later in the batch wins on equal timestamps, like Anna's
                // "later arrival wins".
                if b.timestamp >= a.timestamp {
                    *a = b;
                }
                Ok(())
            }
            (Value::Set(a), Value::Set(b)) => {
                a.extend(b);
                Ok(())
            }
            (a, b) => Err(Error::InvalidRequest {
                reason: format!(
                    "key `{key}` given twice in one put with lattice types {:?} and {:?}",
                    a.lattice_type(),
                    b.lattice_type()
                ),
            }),
        }
    }
}
