//! `compat=tooz`: the very server-side lock that OpenStack's tooz takes
//! for a name, so that a Python service calling
//! `tooz.coordination.get_coordinator(url, member).get_lock(name)` and a
//! Rust one locking the same name exclude each other, in both directions.
//!
//! What tooz 9.1's drivers take for the lock `name` (read from their
//! source; the tests run a real tooz against each server):
//!
//! | server | tooz's lock | lockutils with `compat=tooz` |
//! |---|---|---|
//! | PostgreSQL (`pgsql.py`) | `pg_advisory_lock(k1, k2)`, where `k1`, `k2` are the first two bytes of MD5(`name`): psycopg2 passes the two-byte digest as a sequence of two integers, each 0–255 | the same two-integer advisory lock, waited for in the server |
//! | MySQL (`mysql.py`) | `GET_LOCK(name, 0)` on a connection of its own per lock, polled about once a second | `GET_LOCK` on the same name bytes, waited for in the server |
//! | etcd (`etcd3gw.py`, through etcd's gRPC gateway) | the key `/tooz/locks` + `name` (no separator), created only if absent (`create_revision == 0`) with a random value, attached to a lease of `lock_timeout` seconds (30 by default) refreshed by `heartbeat()`; released by compare-value-and-delete; a waiter tries again about once a second | the same key created the same way with our lease; a waiter watches it for its deletion |
//! | Redis (`redis.py`) | redis-py's `Lock`: key `<namespace>_<name>_lock` (namespace `_tooz` unless tooz's URL sets `namespace=`) holding a random token, `SET NX PX lock_timeout` (30 s by default), extended by the coordinator's `heartbeat()`, deleted by compare-and-delete | the same key, `SET NX PX` with a token of our own, our own renewal and compare-and-delete; a waiter looks again every 100 ms (tooz publishes no release) |
//!
//! **Names.** tooz's `get_lock` takes bytes: the PostgreSQL driver hashes
//! them (a `str` raises), the Redis driver encodes a `str` as ASCII, the
//! MySQL one passes bytes (or a `str`, as text) to `GET_LOCK`. lockutils
//! uses the UTF-8 bytes of the full lock name: the same lock as tooz's
//! for `name.encode()`.
//!
//! **What tooz's scheme gives up.** PostgreSQL: 16 bits of key, 65,536
//! locks in all; among a few hundred names two already share one lock
//! (`lock-2` and `lock-137` do), which serialises unrelated work and can
//! deadlock a holder of one that waits for the other. MySQL: names go to
//! `GET_LOCK` as they are, so MySQL's limit (64 characters, compared
//! without case) applies; MariaDB compares bytes and allows 192. Neither
//! PostgreSQL nor MySQL locks of tooz have a reader mode. lockutils' own
//! schemes (no `compat`) do not share these limits, so use `compat=tooz`
//! only for names a tooz user also locks.
//! etcd: a single key, not lockutils' fair queue of keys, so waiters are
//! served in no particular order, as among tooz's own.

/// Which scheme of server-side locks a URL asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// lockutils' own (see each backend).
    #[default]
    Lockutils,
    /// tooz's, for the same names (see the module docs).
    Tooz,
}

/// Takes `compat=` out of `url`'s query: the URL without it, and the
/// scheme it asks for. `Err`: an unknown `compat` value.
pub(crate) fn take_compat(url: &str) -> Result<(String, Scheme), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Scheme::Lockutils));
    };
    let mut scheme = Scheme::Lockutils;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("compat", "tooz")) => scheme = Scheme::Tooz,
            Some(("compat", other)) => {
                return Err(format!(
                    "compat={other:?}: the one compatibility scheme is compat=tooz"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, scheme))
}

/// tooz's PostgreSQL advisory-lock keys for `name`: the first two bytes
/// of MD5(name), as the two integers of `pg_advisory_lock(k1, k2)`.
#[cfg(feature = "postgres")]
pub(crate) fn pg_keys(name: &str) -> (i32, i32) {
    use md5::{Digest, Md5};
    let digest = Md5::digest(name.as_bytes());
    (i32::from(digest[0]), i32::from(digest[1]))
}

/// tooz's etcd key for `name`.
#[cfg(feature = "etcd")]
pub(crate) fn etcd_key(name: &str) -> String {
    format!("/tooz/locks{name}")
}

/// tooz's default Redis key namespace.
#[cfg(feature = "redis")]
pub(crate) const REDIS_NAMESPACE: &str = "_tooz";

/// tooz's Redis key for `name` under `namespace`.
#[cfg(feature = "redis")]
pub(crate) fn redis_key(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}_lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_is_taken_out_of_the_query() {
        assert_eq!(
            take_compat("mysql://u:p@h/db?ssl-mode=REQUIRED&compat=tooz").unwrap(),
            (
                "mysql://u:p@h/db?ssl-mode=REQUIRED".to_owned(),
                Scheme::Tooz
            )
        );
        assert_eq!(
            take_compat("redis://h/0?compat=tooz").unwrap(),
            ("redis://h/0".to_owned(), Scheme::Tooz)
        );
        assert_eq!(
            take_compat("redis://h/0?ttl=3").unwrap(),
            ("redis://h/0?ttl=3".to_owned(), Scheme::Lockutils)
        );
        assert!(take_compat("redis://h/0?compat=etcd").is_err());
    }

    /// MD5("lock-2") and MD5("lock-137") both start ee a0: one tooz lock.
    #[cfg(feature = "postgres")]
    #[test]
    fn tooz_pg_keys_are_the_first_two_md5_bytes() {
        // MD5("") = d41d8cd9...
        assert_eq!(pg_keys(""), (0xd4, 0x1d));
        assert_eq!(pg_keys("lock-2"), pg_keys("lock-137"));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn tooz_redis_keys() {
        assert_eq!(redis_key(REDIS_NAMESPACE, "a/b"), "_tooz_a/b_lock");
    }
}
