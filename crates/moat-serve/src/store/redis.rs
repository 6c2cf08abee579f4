//! The Redis [`CounterStore`], over a minimal RESP2 client of its own (one blocking connection
//! per store, re-opened after any error; every connect, write and read bounded by
//! [`TIMEOUT`]).
//!
//! Redis keys: `moat:used:{sha256(api key)}` (an integer) and `moat:bucket:{…}` (a hash
//! `tokens`, `ts`, expiring once the bucket would be full again). Each operation is one command
//! or one Lua script, which Redis runs atomically: the check and the increment of a charge
//! cannot interleave with another replica's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use super::{Charge, CounterStore, KeyId, StoreError};

/// Bound on connecting to Redis and on each command's write and read.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
/// Largest bulk reply accepted.
const MAX_BULK: usize = 1 << 20;
/// Prefix of every key.
const PREFIX: &str = "moat";

/// `KEYS[1]` used count; `ARGV[1]` samples, `ARGV[2]` budget (-1: none). `{1, used}` when
/// charged, `{0, used}` when refused.
const CHARGE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
if budget >= 0 and used + n > budget then return {0, used} end
return {1, redis.call('INCRBY', KEYS[1], n)}
";

/// `KEYS[1]` used count; `ARGV[1]` samples. Never below zero.
const REFUND: &str = r"
local v = redis.call('DECRBY', KEYS[1], tonumber(ARGV[1]))
if v < 0 then redis.call('SET', KEYS[1], 0) end
return 0
";

/// `KEYS[1]` bucket; `ARGV[1]` rate per second, `ARGV[2]` burst. `{1, '0'}` when a request
/// was taken, `{0, seconds to wait}` otherwise. Timed by Redis's clock.
const BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1]) or burst
local ts = tonumber(s[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if ok == 1 then return {1, '0'} end
return {0, tostring((1 - tokens) / rate)}
";

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `:42`.
    Int(i64),
    /// `$3 abc` (`None`: nil).
    Bulk(Option<Vec<u8>>),
    /// `*2 …` (`None`: nil).
    Array(Option<Vec<Reply>>),
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Where the store is: `redis://[:PASSWORD@]HOST:PORT[/DB]`.
#[derive(Clone, PartialEq, Eq)]
struct Target {
    address: String,
    password: Option<String>,
    db: u32,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}/{}", self.address, self.db)
    }
}

fn parse_url(url: &str) -> Result<Target, StoreError> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| err(format!("'{url}' is not a redis:// URL")))?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
    let (address, db) = match rest.split_once('/') {
        Some((a, "")) => (a, 0),
        Some((a, db)) => (a, db.parse().map_err(|_| err(format!("bad database number '{db}' in the Redis URL")))?),
        None => (rest, 0),
    };
    if address.is_empty() {
        return Err(err("the Redis URL names no host"));
    }
    let address = if address.contains(':') { address.to_string() } else { format!("{address}:6379") };
    Ok(Target { address, password, db })
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(target: &Target) -> Result<Self, StoreError> {
        let addrs: Vec<_> = target.address.to_socket_addrs().map_err(err)?.collect();
        let mut last = err(format!("{} resolves to nothing", target.address));
        for a in addrs {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(TIMEOUT)).map_err(err)?;
                    stream.set_write_timeout(Some(TIMEOUT)).map_err(err)?;
                    stream.set_nodelay(true).map_err(err)?;
                    let writer = stream.try_clone().map_err(err)?;
                    let mut conn = Self { reader: BufReader::new(stream), writer };
                    if let Some(p) = &target.password {
                        conn.call(&[b"AUTH", p.as_bytes()])?;
                    }
                    if target.db != 0 {
                        conn.call(&[b"SELECT", target.db.to_string().as_bytes()])?;
                    }
                    return Ok(conn);
                }
                Err(e) => last = err(format!("connecting to Redis at {a}: {e}")),
            }
        }
        Err(last)
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, StoreError> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).map_err(err)?;
        read_reply(&mut self.reader, 0)
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, StoreError> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line).map_err(err)?;
    if !line.ends_with(b"\r\n") {
        return Err(err("Redis closed the connection or sent a malformed line"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(err)
}

/// Reads one reply (arrays nest at most 4 deep).
pub fn read_reply(r: &mut impl BufRead, depth: usize) -> Result<Reply, StoreError> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = |s: &str| s.parse::<i64>().map_err(|_| err(format!("malformed Redis reply '{line}'")));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Err(err(format!("Redis error: {rest}"))),
        ":" => Ok(Reply::Int(int(rest)?)),
        "$" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).map_err(err)?;
            if n > MAX_BULK {
                return Err(err(format!("Redis reply of {n} bytes is too large")));
            }
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf).map_err(err)?;
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            if depth >= 4 || n > 1024 {
                return Err(err("Redis reply nested too deep or too long"));
            }
            (0..n).map(|_| read_reply(r, depth + 1)).collect::<Result<Vec<_>, _>>().map(|v| Reply::Array(Some(v)))
        }
        _ => Err(err(format!("malformed Redis reply '{line}'"))),
    }
}

fn as_int(reply: &Reply) -> Result<i64, StoreError> {
    match reply {
        Reply::Int(i) => Ok(*i),
        Reply::Bulk(Some(b)) => {
            std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| err("not a number"))
        }
        Reply::Bulk(None) => Ok(0),
        other => Err(err(format!("unexpected Redis reply {other:?}"))),
    }
}

fn pair(reply: Reply) -> Result<(i64, Reply), StoreError> {
    match reply {
        Reply::Array(Some(mut v)) if v.len() == 2 => {
            let second = v.pop().ok_or_else(|| err("short reply"))?;
            Ok((as_int(&v[0])?, second))
        }
        other => Err(err(format!("unexpected Redis reply {other:?}"))),
    }
}

/// Counters in a Redis shared by every replica.
pub struct RedisStore {
    target: Target,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("target", &self.target).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`); checks it answers `PING`.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self { target: parse_url(url)?, conn: Mutex::new(None) };
        match store.call(&[b"PING"])? {
            Reply::Simple(s) if s == "PONG" => Ok(store),
            other => Err(err(format!("Redis answered PING with {other:?}"))),
        }
    }

    /// One command on the shared connection; a failed connection is dropped and the next call
    /// opens a fresh one (a command is never retried: it may have run).
    pub fn call(&self, args: &[&[u8]]) -> Result<Reply, StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Conn::open(&self.target)?);
        }
        let Some(conn) = slot.as_mut() else { return Err(err("no Redis connection")) };
        let result = conn.call(args);
        if result.as_ref().is_err_and(|e| !e.0.starts_with("Redis error")) {
            *slot = None;
        }
        result
    }

    fn key(kind: &str, key: &KeyId) -> String {
        format!("{PREFIX}:{kind}:{}", key.as_str())
    }

    fn eval(&self, script: &str, key: &str, args: &[String]) -> Result<Reply, StoreError> {
        let mut argv: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), b"1", key.as_bytes()];
        argv.extend(args.iter().map(|a| a.as_bytes()));
        self.call(&argv)
    }
}

impl CounterStore for RedisStore {
    fn used(&self, key: &KeyId) -> Result<u64, StoreError> {
        let reply = self.call(&[b"GET", Self::key("used", key).as_bytes()])?;
        Ok(u64::try_from(as_int(&reply)?).unwrap_or(0))
    }

    fn charge(&self, key: &KeyId, samples: u64, budget: Option<u64>) -> Result<Charge, StoreError> {
        let budget = budget.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let samples = i64::try_from(samples).map_err(err)?;
        let (charged, used) =
            pair(self.eval(CHARGE, &Self::key("used", key), &[samples.to_string(), budget.to_string()])?)?;
        let used = u64::try_from(as_int(&used)?).unwrap_or(0);
        Ok(if charged == 1 { Charge::Charged(used) } else { Charge::Refused(used) })
    }

    fn refund(&self, key: &KeyId, samples: u64) -> Result<(), StoreError> {
        let samples = i64::try_from(samples).map_err(err)?;
        self.eval(REFUND, &Self::key("used", key), &[samples.to_string()]).map(|_| ())
    }

    fn take_request(
        &self,
        key: &KeyId,
        rate: f64,
        burst: f64,
        _now: std::time::Instant,
    ) -> Result<Option<Duration>, StoreError> {
        let (taken, wait) =
            pair(self.eval(BUCKET, &Self::key("bucket", key), &[rate.to_string(), burst.to_string()])?)?;
        if taken == 1 {
            return Ok(None);
        }
        let wait = match wait {
            Reply::Bulk(Some(b)) => std::str::from_utf8(&b).ok().and_then(|s| s.parse::<f64>().ok()),
            _ => None,
        }
        .filter(|w| w.is_finite() && *w >= 0.0)
        .unwrap_or(1.0);
        Ok(Some(Duration::from_secs_f64(wait)))
    }

    fn describe(&self) -> String {
        format!("{:?} (shared by every replica using it)", self.target)
    }

    fn shared_tokens(&self) -> Option<&dyn super::tokens::SharedTokens> {
        Some(self)
    }
}

impl super::tokens::SharedTokens for RedisStore {
    fn put_token(&self, id: &KeyId, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1).to_string();
        let key = Self::key("token", id);
        self.call(&[b"SET", key.as_bytes(), value.as_bytes(), b"PX", ms.as_bytes()]).map(|_| ())
    }

    /// `GETDEL` (Redis 6.2+): atomic, so one taker at most.
    fn take_token(&self, id: &KeyId) -> Result<Option<String>, StoreError> {
        match self.call(&[b"GETDEL", Self::key("token", id).as_bytes()])? {
            Reply::Bulk(None) => Ok(None),
            Reply::Bulk(Some(b)) => String::from_utf8(b).map(Some).map_err(err),
            other => Err(err(format!("unexpected Redis reply {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_the_password() -> Result<(), StoreError> {
        let t = parse_url("redis://:s3cret@cache:6380/2")?;
        assert_eq!((t.address.as_str(), t.password.as_deref(), t.db), ("cache:6380", Some("s3cret"), 2));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(parse_url("redis://127.0.0.1")?.address, "127.0.0.1:6379");
        assert!(parse_url("redis:///1").is_err());
        assert!(parse_url("redis://h:1/x").is_err());
        Ok(())
    }

    #[test]
    fn replies_parse_and_malformed_ones_are_errors() -> Result<(), StoreError> {
        let mut r = &b"*2\r\n:1\r\n$2\r\n42\r\n"[..];
        assert_eq!(read_reply(&mut r, 0)?, Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(b"42".to_vec()))])));
        assert_eq!(read_reply(&mut &b"$-1\r\n"[..], 0)?, Reply::Bulk(None));
        assert!(read_reply(&mut &b"-ERR no\r\n"[..], 0).is_err());
        assert!(read_reply(&mut &b"$99999999\r\n"[..], 0).is_err());
        assert!(read_reply(&mut &b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..], 0).is_err());
        assert!(read_reply(&mut &b":1"[..], 0).is_err());
        Ok(())
    }

    #[test]
    fn an_unreachable_redis_is_an_error_within_the_timeout() {
        let started = std::time::Instant::now();
        // Port 1 on loopback: nothing listens.
        assert!(RedisStore::open("redis://127.0.0.1:1").is_err());
        assert!(started.elapsed() < TIMEOUT * 2);
    }
}
