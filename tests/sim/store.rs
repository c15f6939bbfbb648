//! Simulated storage: one key-value map shared by every node, reached
//! through a per-node handle that implements the engine's `Storage` trait.
//! Each call takes a seeded latency in virtual time and may fail: storage
//! outages, timeouts (a timed-out write may still land later), errors
//! before or after the write was applied (a lost acknowledgement). In Anna
//! mode there are no conditional writes (`put_if_absent` reads, then
//! writes: a race), no atomic batches and no snapshot reads.

use std::collections::BTreeMap;
use std::sync::Weak;

use aft::proto::anna::LwwValue;
use aft::storage::{Entry, Storage, StorageError};
use async_trait::async_trait;
use prost::Message;

use super::world::World;

/// One storage operation, as the simulated store applies it.
#[derive(Debug, Clone)]
pub enum Op {
    Get(Vec<u8>),
    GetMany(Vec<Vec<u8>>),
    Put(Vec<u8>, Vec<u8>),
    PutMany(Vec<Entry>),
    Delete(Vec<u8>),
    DeleteMany(Vec<Vec<u8>>),
    Scan(Vec<u8>),
    MergeLww(Vec<(Vec<u8>, u64, Vec<u8>)>),
    PutIfAbsent(Vec<u8>, Vec<u8>),
    PutManyIfAbsent(Vec<u8>, Vec<Entry>),
    /// A commit in one atomic step: guarded entries, then LWW merges.
    PutManyIfAbsentAndMerge(Vec<u8>, Vec<Entry>, Vec<(Vec<u8>, u64, Vec<u8>)>),
}

/// What an operation answers.
#[derive(Debug)]
pub enum Answer {
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    Keys(Vec<Vec<u8>>),
    Done,
    Wrote(bool),
}

impl Op {
    /// A short name, for counters and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::GetMany(_) => "get_many",
            Op::Put(..) => "put",
            Op::PutMany(_) => "put_many",
            Op::Delete(_) => "delete",
            Op::DeleteMany(_) => "delete_many",
            Op::Scan(_) => "scan_prefix",
            Op::MergeLww(_) => "merge_lww",
            Op::PutIfAbsent(..) => "put_if_absent",
            Op::PutManyIfAbsent(..) => "put_many_if_absent",
            Op::PutManyIfAbsentAndMerge(..) => "put_many_if_absent_and_merge",
        }
    }

    /// Whether it changes the store.
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Get(_) | Op::GetMany(_) | Op::Scan(_))
    }

    /// Bytes it carries (keys and values), for the per-DAG figures.
    pub fn bytes(&self) -> usize {
        let entries = |e: &[Entry]| e.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let merges = |m: &[(Vec<u8>, u64, Vec<u8>)]| {
            m.iter()
                .map(|(k, _, v)| k.len() + v.len() + 8)
                .sum::<usize>()
        };
        match self {
            Op::Get(k) | Op::Delete(k) | Op::Scan(k) => k.len(),
            Op::GetMany(ks) | Op::DeleteMany(ks) => ks.iter().map(Vec::len).sum(),
            Op::Put(k, v) | Op::PutIfAbsent(k, v) => k.len() + v.len(),
            Op::PutMany(e) => entries(e),
            Op::PutManyIfAbsent(g, e) => g.len() + entries(e),
            Op::MergeLww(e) => merges(e),
            Op::PutManyIfAbsentAndMerge(g, e, m) => g.len() + entries(e) + merges(m),
        }
    }

    /// Applies the operation to the map.
    pub fn apply(self, map: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Answer {
        match self {
            Op::Get(k) => Answer::Value(map.get(&k).cloned()),
            Op::GetMany(ks) => Answer::Values(ks.iter().map(|k| map.get(k).cloned()).collect()),
            Op::Put(k, v) => {
                map.insert(k, v);
                Answer::Done
            }
            Op::PutMany(entries) => {
                map.extend(entries);
                Answer::Done
            }
            Op::Delete(k) => {
                map.remove(&k);
                Answer::Done
            }
            Op::DeleteMany(ks) => {
                for k in ks {
                    map.remove(&k);
                }
                Answer::Done
            }
            Op::Scan(prefix) => Answer::Keys(
                map.range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect(),
            ),
            Op::MergeLww(entries) => {
                merge_lww(map, entries);
                Answer::Done
            }
            Op::PutIfAbsent(k, v) => match map.entry(k) {
                std::collections::btree_map::Entry::Occupied(_) => Answer::Wrote(false),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(v);
                    Answer::Wrote(true)
                }
            },
            Op::PutManyIfAbsent(guard, entries) => {
                if map.contains_key(&guard) {
                    Answer::Wrote(false)
                } else {
                    map.extend(entries);
                    Answer::Wrote(true)
                }
            }
            Op::PutManyIfAbsentAndMerge(guard, entries, merges) => {
                if map.contains_key(&guard) {
                    Answer::Wrote(false)
                } else {
                    map.extend(entries);
                    merge_lww(map, merges);
                    Answer::Wrote(true)
                }
            }
        }
    }
}

/// LWW merges: each value replaces what is stored unless that is an
/// `LWWValue` at least as new.
fn merge_lww(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, merges: Vec<(Vec<u8>, u64, Vec<u8>)>) {
    for (k, ts, v) in merges {
        let stored = map
            .get(&k)
            .and_then(|cur| LwwValue::decode(cur.as_slice()).ok())
            .map(|cur| cur.timestamp);
        if stored.is_none_or(|s| s < ts) {
            map.insert(k, v);
        }
    }
}

/// One node incarnation's view of the store: every call goes through the
/// world's fault model, as this node (its pauses and crashes apply).
#[derive(Debug)]
pub struct NodeStorage {
    pub world: Weak<World>,
    pub node: usize,
    pub incarnation: u64,
    pub anna: bool,
}

impl NodeStorage {
    async fn call(&self, op: Op) -> Result<Answer, StorageError> {
        let Some(world) = self.world.upgrade() else {
            return Err(StorageError::backend(op.name(), "the simulation is over"));
        };
        world.storage_call(self.node, self.incarnation, op).await
    }
}

fn unexpected(op: &'static str) -> StorageError {
    StorageError::backend(op, "unexpected answer from the simulated store")
}

#[async_trait]
impl Storage for NodeStorage {
    fn describe(&self) -> String {
        format!("sim://node{}", self.node + 1)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.call(Op::Get(key.to_vec())).await? {
            Answer::Value(v) => Ok(v),
            _ => Err(unexpected("get")),
        }
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.call(Op::Put(key.to_vec(), value.to_vec()))
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.call(Op::Delete(key.to_vec())).await.map(|_| ())
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        match self.call(Op::GetMany(keys.to_vec())).await? {
            Answer::Values(v) => Ok(v),
            _ => Err(unexpected("get_many")),
        }
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        self.call(Op::PutMany(entries.to_vec())).await.map(|_| ())
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.call(Op::DeleteMany(keys.to_vec())).await.map(|_| ())
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        match self.call(Op::Scan(prefix.to_vec())).await? {
            Answer::Keys(k) => Ok(k),
            _ => Err(unexpected("scan_prefix")),
        }
    }

    async fn merge_lww(&self, key: &[u8], ts: u64, value: &[u8]) -> Result<(), StorageError> {
        self.merge_lww_many(&[(key.to_vec(), ts, value.to_vec())])
            .await
    }

    async fn merge_lww_many(
        &self,
        entries: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        self.call(Op::MergeLww(entries.to_vec())).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        if self.anna {
            // No conditional write: read, then write. Another writer can
            // land in between, and both believe they wrote first.
            if self.get(key).await?.is_some() {
                return Ok(false);
            }
            self.put(key, value).await?;
            return Ok(true);
        }
        match self
            .call(Op::PutIfAbsent(key.to_vec(), value.to_vec()))
            .await?
        {
            Answer::Wrote(w) => Ok(w),
            _ => Err(unexpected("put_if_absent")),
        }
    }

    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        if self.anna {
            let others: Vec<Entry> = entries
                .iter()
                .filter(|(k, _)| k.as_slice() != guard)
                .cloned()
                .collect();
            let Some((_, value)) = entries.iter().find(|(k, _)| k.as_slice() == guard) else {
                return Err(StorageError::backend(
                    "put_many_if_absent",
                    "no guard entry",
                ));
            };
            self.put_many(&others).await?;
            return self.put_if_absent(guard, value).await;
        }
        match self
            .call(Op::PutManyIfAbsent(guard.to_vec(), entries.to_vec()))
            .await?
        {
            Answer::Wrote(w) => Ok(w),
            _ => Err(unexpected("put_many_if_absent")),
        }
    }

    async fn put_many_if_absent_and_merge(
        &self,
        guard: &[u8],
        entries: &[Entry],
        merges: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<bool, StorageError> {
        if self.anna {
            let wrote = self.put_many_if_absent(guard, entries).await?;
            if wrote && !merges.is_empty() {
                self.merge_lww_many(merges).await?;
            }
            return Ok(wrote);
        }
        match self
            .call(Op::PutManyIfAbsentAndMerge(
                guard.to_vec(),
                entries.to_vec(),
                merges.to_vec(),
            ))
            .await?
        {
            Answer::Wrote(w) => Ok(w),
            _ => Err(unexpected("put_many_if_absent_and_merge")),
        }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.call(Op::Get(b"ping".to_vec())).await.map(|_| ())
    }

    fn snapshot_reads(&self) -> bool {
        !self.anna
    }

    fn atomic_batches(&self) -> bool {
        !self.anna
    }

    fn atomic_publication(&self) -> bool {
        !self.anna
    }

    fn conditional_writes(&self) -> bool {
        !self.anna
    }
}
