//! `compat=tooz`: lockutils and OpenStack's tooz (the real one, from PyPI,
//! in the test venv: `tests/support/pyenv.rs`) take the same server-side
//! lock for a name, on PostgreSQL, Redis, MySQL/MariaDB and etcd, in both
//! directions. The servers are throwaway ones on loopback
//! (`tests/support/servers.rs`); tooz runs as `tests/support/tooz_helper.py`.
#![cfg(all(
    unix,
    feature = "postgres",
    feature = "redis",
    feature = "mysql",
    feature = "etcd"
))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockutils::LockError;
use support::{Child, PATIENCE, param, param_as, report, running_as};

/// A server both sides use: lockutils' URL (with `compat=tooz`) and
/// tooz's URL for the same server.
struct Both {
    lockutils: String,
    tooz: String,
}

fn postgres() -> Both {
    let url = servers::postgres();
    Both {
        lockutils: format!("{url}?compat=tooz"),
        // tooz's own spelling of the scheme.
        tooz: url.replacen("postgres://", "postgresql://", 1),
    }
}

fn redis() -> Both {
    let url = servers::redis();
    Both {
        lockutils: format!("{url}?compat=tooz"),
        tooz: url.to_owned(),
    }
}

fn mysql() -> Both {
    let url = servers::mysql();
    Both {
        lockutils: format!("{url}?compat=tooz"),
        tooz: url.to_owned(),
    }
}

fn etcd() -> Both {
    let url = servers::etcd();
    Both {
        lockutils: format!("{url}?compat=tooz"),
        tooz: url.replacen("etcd://", "etcd3+http://", 1),
    }
}

fn tooz(args: &[&str]) -> support::ChildBuilder {
    support::python::script("tooz_helper.py", args)
}

/// A tooz process holding `name`, once it holds it.
fn tooz_holder(both: &Both, name: &str) -> Child {
    let mut c = tooz(&["hold", &both.tooz, name]).spawn();
    c.expect("locked");
    c
}

/// One non-blocking tooz acquire: `ok` or `busy`.
fn tooz_try(both: &Both, name: &str) -> String {
    let mut c = tooz(&["try", &both.tooz, name]).spawn();
    let got = c.next_report();
    c.finish();
    got
}

fn lock<'a>(name: &'a str, both: &'a Both) -> lockutils::Lock<'a> {
    lockutils::lock(name).external().backend(&both.lockutils)
}

// ---------------------------------------------------------------------------
// A tooz holder makes lockutils busy.

fn tooz_holder_makes_lockutils_busy(both: &Both, name: &str) {
    let holder = tooz_holder(both, name);
    let r = lock(name, both).blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    let r = lock(name, both)
        .timeout(Duration::from_millis(200))
        .acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    // lockutils' own scheme is another lock: tooz does not exclude it.
    let own = lockutils::lock(name)
        .external()
        .backend(&both.lockutils.replace("?compat=tooz", ""))
        .blocking(false)
        .acquire();
    assert!(own.is_ok(), "{own:?}");
    drop(own);
    // Released by tooz: lockutils gets it (a waiter in the server, or one
    // that looks again).
    let waiter = {
        let (name, url) = (name.to_owned(), both.lockutils.clone());
        std::thread::spawn(move || {
            let r = lockutils::lock(&name)
                .external()
                .backend(&url)
                .timeout(PATIENCE)
                .acquire();
            r.map(drop)
        })
    };
    support::release(holder).finish();
    let got = waiter.join().unwrap();
    assert!(got.is_ok(), "{got:?}");
}

#[test]
fn a_tooz_holder_makes_lockutils_busy_on_postgres() {
    tooz_holder_makes_lockutils_busy(&postgres(), "tooz-held-pg");
}

#[test]
fn a_tooz_holder_makes_lockutils_busy_on_redis() {
    tooz_holder_makes_lockutils_busy(&redis(), "tooz-held-redis");
}

#[test]
fn a_tooz_holder_makes_lockutils_busy_on_mysql() {
    tooz_holder_makes_lockutils_busy(&mysql(), "tooz-held-mysql");
}

#[test]
fn a_tooz_holder_makes_lockutils_busy_on_etcd() {
    tooz_holder_makes_lockutils_busy(&etcd(), "tooz-held-etcd");
}

// ---------------------------------------------------------------------------
// A lockutils holder makes tooz's non-blocking acquire fail.

fn lockutils_holder_makes_tooz_fail(both: &Both, name: &str) {
    let guard = lock(name, both).acquire().unwrap();
    assert_eq!(
        tooz_try(both, name),
        "busy",
        "tooz got a lock lockutils holds"
    );
    drop(guard);
    assert_eq!(tooz_try(both, name), "ok", "released, tooz gets it");
}

#[test]
fn a_lockutils_holder_makes_tooz_fail_on_postgres() {
    let both = postgres();
    let name = "tooz-mine-pg";
    let guard = lock(name, &both).acquire().unwrap();
    // The very lock tooz takes: the two-integer advisory lock.
    let location = guard.location().unwrap().to_string();
    assert!(location.contains("objsubid 2"), "{location}");
    drop(guard);
    lockutils_holder_makes_tooz_fail(&both, name);
}

#[test]
fn a_lockutils_holder_makes_tooz_fail_on_redis() {
    let both = redis();
    let name = "tooz-mine-redis";
    let guard = lock(name, &both).acquire().unwrap();
    let key = format!("_tooz_{name}_lock");
    assert_eq!(servers::redis_cli(servers::redis(), &["EXISTS", &key]), "1");
    drop(guard);
    lockutils_holder_makes_tooz_fail(&both, name);
}

#[test]
fn tooz_redis_namespaces_are_followed() {
    let url = servers::redis();
    let both = Both {
        lockutils: format!("{url}?compat=tooz&namespace=nova"),
        tooz: format!("{url}?namespace=nova"),
    };
    let name = "tooz-namespace";
    let guard = lock(name, &both).acquire().unwrap();
    let key = format!("nova_{name}_lock");
    assert_eq!(servers::redis_cli(url, &["EXISTS", &key]), "1");
    assert_eq!(tooz_try(&both, name), "busy");
    // tooz's default namespace is another key.
    assert_eq!(tooz_try(&redis(), name), "ok");
    drop(guard);
}

#[test]
fn a_lockutils_holder_makes_tooz_fail_on_mysql() {
    lockutils_holder_makes_tooz_fail(&mysql(), "tooz-mine-mysql");
}

#[test]
fn a_lockutils_holder_makes_tooz_fail_on_etcd() {
    let both = etcd();
    let name = "tooz-mine-etcd";
    let guard = lock(name, &both).acquire().unwrap();
    let key = format!("/tooz/locks{name}");
    let found = servers::etcdctl(&["get", &key, "--keys-only"]);
    assert_eq!(found, key, "tooz's key, held");
    drop(guard);
    lockutils_holder_makes_tooz_fail(&both, name);
}

// ---------------------------------------------------------------------------
// One exact counter, incremented by a tooz process and lockutils processes.

const PROCESSES: usize = 2;
const THREADS: usize = 2;
const INCREMENTS: u64 = 20;
const TOOZ_INCREMENTS: u64 = 20;

/// Child: reports `ready`, waits for `go`, then `THREADS` threads each
/// increment the counter file `INCREMENTS` times under `NAME` on `URL`.
#[test]
fn child_tooz_counter() {
    if !running_as("child_tooz_counter") {
        return;
    }
    let (name, url, counter) = (param("NAME"), param("URL"), PathBuf::from(param("COUNTER")));
    let (threads, increments): (usize, u64) = (param_as("THREADS"), param_as("INCREMENTS"));
    support::await_go();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..increments {
                    let _guard = lockutils::lock(&name)
                        .external()
                        .backend(&url)
                        .acquire()
                        .unwrap_or_else(|e| panic!("{e}"));
                    support::increment(&counter);
                }
            });
        }
    });
    report("done");
}

fn counter_shared_with_tooz(both: &Both, name: &str, env: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let counter: &Path = &dir.path().join("counter");
    let counter_arg = counter.to_str().unwrap();
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            support::child("child_tooz_counter")
                .env(env.0, env.1)
                .param("NAME", name)
                .param("URL", &both.lockutils)
                .param("COUNTER", counter)
                .param("THREADS", THREADS.to_string())
                .param("INCREMENTS", INCREMENTS.to_string())
                .spawn()
        })
        .collect();
    let n = TOOZ_INCREMENTS.to_string();
    children.push(tooz(&["count", &both.tooz, name, counter_arg, &n]).spawn());
    let started = support::ready_set_go(&mut children);
    let took = support::all_done(children, started);
    let want = (PROCESSES * THREADS) as u64 * INCREMENTS + TOOZ_INCREMENTS;
    assert_eq!(
        support::read_counter(counter),
        want,
        "lost increments: a tooz and a lockutils holder overlapped"
    );
    println!("tooz counter on {name}: {want} increments in {took:?}");
}

#[test]
fn a_counter_shared_with_tooz_is_exact_on_postgres() {
    let env = (servers::POSTGRES_ENV, servers::postgres());
    counter_shared_with_tooz(&postgres(), "tooz-count-pg", env);
}

#[test]
fn a_counter_shared_with_tooz_is_exact_on_redis() {
    let env = (servers::REDIS_ENV, servers::redis());
    counter_shared_with_tooz(&redis(), "tooz-count-redis", env);
}

#[test]
fn a_counter_shared_with_tooz_is_exact_on_mysql() {
    let env = (servers::MYSQL_ENV, servers::mysql());
    counter_shared_with_tooz(&mysql(), "tooz-count-mysql", env);
}

#[test]
fn a_counter_shared_with_tooz_is_exact_on_etcd() {
    let env = (servers::ETCD_ENV, servers::etcd());
    counter_shared_with_tooz(&etcd(), "tooz-count-etcd", env);
}
