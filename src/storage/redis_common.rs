//! What the single-server and cluster Redis backends share: the LWW merge
//! script, the call-timeout wrapper and the SCAN pattern for a prefix.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisError, Script};

use super::{StorageError, StorageOptions};

/// Lua: `keeps(cur, incoming)`, whether the stored value `cur` (a string,
/// or false for a missing key) is an `LWWValue` whose timestamp (protobuf
/// field 1, varint) is >= `incoming`. A value that does not parse as an
/// `LWWValue` does not keep. Timestamps are compared as Lua numbers
/// (doubles): exact up to 2^53, which microsecond timestamps stay far below.
macro_rules! lww_keeps_lua {
    () => {
        r#"
local function keeps(cur, incoming)
  if not cur then return false end
  local ts = nil
  local i = 1
  local n = #cur
  local function varint()
    local v, mul = 0, 1
    while i <= n do
      local b = string.byte(cur, i)
      i = i + 1
      v = v + (b % 128) * mul
      mul = mul * 128
      if b < 128 then return v end
    end
    return nil
  end
  while i <= n do
    local tag = varint()
    if tag == nil then return false end
    local field, wire = math.floor(tag / 8), tag % 8
    if wire == 0 then
      local v = varint()
      if v == nil then return false end
      if field == 1 then ts = v end
    elseif wire == 2 then
      local len = varint()
      if len == nil or i + len - 1 > n then return false end
      i = i + len
    else
      return false
    end
  end
  if ts == nil then ts = 0 end
  return ts >= incoming
end
"#
    };
}

/// Atomic LWW merge on the server: keep the stored value when it is an
/// `LWWValue` whose timestamp is >= ARGV[1].
///
/// KEYS[1] = key; ARGV[1] = incoming timestamp; ARGV[2] = serialized LWWValue.
pub(crate) const MERGE_LWW_SCRIPT: &str = concat!(
    lww_keeps_lua!(),
    r#"
if keeps(redis.call('GET', KEYS[1]), tonumber(ARGV[1])) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#
);

/// A commit in one atomic step: if KEYS[1] (the guard) exists, nothing and
/// 0; otherwise SET the first ARGV[1] keys to their values, then LWW-merge
/// the remaining keys, and 1.
///
/// KEYS[1..n] = entries, guard first; KEYS[n+1..] = merge keys.
/// ARGV[1] = n; ARGV[1+i] = the value of KEYS[i]; then, per merge key in
/// order, its timestamp and its serialized LWWValue.
pub(crate) const PUT_MANY_IF_ABSENT_AND_MERGE_SCRIPT: &str = concat!(
    lww_keeps_lua!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[1])
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1 + i]) end
local a = n + 2
for j = n + 1, #KEYS do
  if not keeps(redis.call('GET', KEYS[j]), tonumber(ARGV[a])) then
    redis.call('SET', KEYS[j], ARGV[a + 1])
  end
  a = a + 2
end
return 1
"#
);

/// The single-key operations, identical on one server and on a cluster
/// (where each goes to the key's slot): both backends delegate here.
pub(crate) struct KeyOps<'a, C> {
    pub conn: &'a C,
    pub options: &'a StorageOptions,
    pub merge_script: &'a Script,
}

impl<C> KeyOps<'_, C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let mut conn = self.conn.clone();
        with_timeout("get", self.options.call_timeout, conn.get(key)).await
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.options.check_value_size(value.len())?;
        let mut conn = self.conn.clone();
        with_timeout("put", self.options.call_timeout, conn.set(key, value)).await
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        with_timeout("delete", self.options.call_timeout, conn.del(key)).await
    }

    pub async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.options.check_value_size(lww_value.len())?;
        let mut conn = self.conn.clone();
        let mut invocation = self.merge_script.key(key);
        invocation.arg(timestamp).arg(lww_value);
        with_timeout(
            "merge_lww",
            self.options.call_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await
        .map(|_| ())
    }

    pub async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.options.check_value_size(value.len())?;
        let mut conn = self.conn.clone();
        let reply: Option<String> = with_timeout(
            "put_if_absent",
            self.options.call_timeout,
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .query_async(&mut conn),
        )
        .await?;
        Ok(reply.is_some())
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        with_timeout(
            "ping",
            self.options.call_timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map(|_| ())
    }
}

/// Runs a Redis future with the call timeout, mapping errors to [`StorageError`].
pub(crate) async fn with_timeout<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StorageError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_timeout() => Err(StorageError::Timeout { op, timeout }),
        Ok(Err(e)) => Err(StorageError::backend(op, e)),
        Err(_) => Err(StorageError::Timeout { op, timeout }),
    }
}

/// A Redis glob pattern matching exactly the keys that start with `prefix`.
pub(crate) fn scan_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(prefix.len() + 1);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    pattern.push(b'*');
    pattern
}

/// Keys per MGET/MSET/DEL command: keeps single commands (and replies) of a
/// large batch reasonably sized while the batch still goes in one pipeline.
pub(crate) const CHUNK: usize = 1000;

#[cfg(test)]
mod tests {
    use super::scan_pattern;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(scan_pattern(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\*".to_vec());
    }
}
