//! Leader election (`lockutils::election`) on every backend: lock files,
//! and real PostgreSQL, etcd, Redis and MariaDB servers started for this
//! test binary (`tests/support/servers.rs`), with real candidate processes
//! (this binary re-run as children, `tests/support/mod.rs`).
//!
//! On each: two candidates campaign and one leads (a third is refused at
//! once); this process, which never campaigns, names the leader; the
//! leader is killed with SIGKILL while the other waits in the backend's
//! own queue, which then elects it within the backend's bound (lock files,
//! PostgreSQL, MariaDB: at once; etcd, Redis: the 2 s TTL the URL sets);
//! the new leader is named, its fencing token is larger; it resigns and
//! nobody leads. The figures are printed (`--nocapture`).
#![cfg(all(
    unix,
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::time::{Duration, Instant};

use lockutils::{Leader, LockError};
use support::{Child, PATIENCE, await_order, param, report, running_as};

// ---------------------------------------------------------------------------
// Children.

/// Child: campaigns in `NAME` on `URL` as `IDENTITY`; reports
/// `campaigning`, then `elected <token>` (`-` without one), keeps leading
/// until ordered to `resign` (or killed), reports `resigned`.
#[test]
fn child_candidate() {
    if !running_as("child_candidate") {
        return;
    }
    let (name, url, identity) = (param("NAME"), param("URL"), param("IDENTITY"));
    report("campaigning");
    let lead = lockutils::election(&name)
        .identity(&identity)
        .backend(&url)
        .campaign()
        .unwrap_or_else(|e| panic!("{e}"));
    let token = lead.fencing_token().map_or("-".into(), |t| t.to_string());
    report(format!("elected {token}"));
    await_order("resign");
    drop(lead);
    report("resigned");
}

/// Child: one campaign with `blocking(false)` in `NAME` on `URL`; reports
/// how it went (`ok`, `wouldblock`, `error ...`).
#[test]
fn child_try_candidate() {
    if !running_as("child_try_candidate") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let r = lockutils::election(&name)
        .identity("impatient")
        .backend(&url)
        .blocking(false)
        .campaign();
    report(support::outcome(&r));
}

/// Child: holds `NAME` on `URL` as a plain lock (no identity) until told
/// to `release`.
#[test]
fn child_plain_holder() {
    if !running_as("child_plain_holder") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let lock = lockutils::lock(&name).external();
    let guard = match url.strip_prefix("file://") {
        Some(dir) => lock.lock_path(dir).acquire(),
        None => lock.backend(&url).acquire(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    report("held");
    await_order("release");
    drop(guard);
}

fn candidate(name: &str, url: &str, identity: &str) -> Child {
    let mut c = support::child("child_candidate")
        .param("NAME", name)
        .param("URL", url)
        .param("IDENTITY", identity)
        .spawn();
    c.expect("campaigning");
    c
}

/// The token of an `elected <token>` report.
fn elected(c: &mut Child) -> Option<u64> {
    let got = c.next_report();
    let token = got
        .strip_prefix("elected ")
        .unwrap_or_else(|| c.fail(&format!("reported {got:?}, expected elected")));
    token.parse().ok()
}

fn leader(name: &str, url: &str) -> Option<Leader> {
    lockutils::election(name)
        .backend(url)
        .leader()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The scenario of the module docs, on `url`. `waiting` tells whether a
/// candidate waits in the backend's queue for `name`; `bound` is how soon
/// the waiting candidate must lead after the leader's SIGKILL.
fn takeover(url: &str, name: &str, waiting: impl Fn() -> bool, bound: Duration) {
    assert_eq!(leader(name, url), None, "nobody campaigned yet");
    let mut a = candidate(name, url, "candidate-a");
    let token_a = elected(&mut a);
    let now = leader(name, url).expect("a leader while a leads");
    assert_eq!(now.identity, "candidate-a");
    assert_eq!(now.fencing_token, token_a);
    assert!(token_a.is_some(), "{url} gives fencing tokens");

    let mut tried = support::child("child_try_candidate")
        .param("NAME", name)
        .param("URL", url)
        .spawn();
    tried.expect("wouldblock");
    tried.finish();

    let mut b = candidate(name, url, "candidate-b");
    support::wait_for("the second candidate waits", PATIENCE, &waiting);
    assert_eq!(leader(name, url).unwrap().identity, "candidate-a");

    let killed = Instant::now();
    a.kill();
    let token_b = elected(&mut b);
    let took = killed.elapsed();
    println!("election on {url}: the waiting candidate led {took:?} after SIGKILL of the leader");
    assert!(took < bound, "took {took:?}, bound {bound:?}");
    let now = leader(name, url).expect("a leader while b leads");
    assert_eq!(now.identity, "candidate-b");
    assert_eq!(now.fencing_token, token_b);
    assert!(
        token_b > token_a,
        "tokens grow: {token_a:?} then {token_b:?}"
    );

    b.send("resign");
    b.expect("resigned");
    assert_eq!(
        leader(name, url),
        None,
        "nobody leads after the resignation"
    );
    b.finish();
}

// ---------------------------------------------------------------------------
// Each backend.

#[test]
fn lock_files_elect_one_leader_and_the_next_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let file = dir.path().join("elect-files");
    takeover(
        &url,
        "elect-files",
        || file.exists() && support::blocked_waiters(&file) >= 1,
        Duration::from_secs(2),
    );
    // oslo.concurrency's lock file is never written; the record is beside it.
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    let record = dir.path().join(".lockutils-leaders/elect-files");
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.ends_with("\ncandidate-b\n"), "{text:?}");
}

#[test]
fn postgres_elects_one_leader_and_the_next_when_it_dies() {
    let url = servers::postgres();
    let name = "elect-pg";
    let key = pg_key(name);
    let waiting = || {
        servers::psql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND classid = {} AND objid = {} AND objsubid = 1",
            key >> 32,
            key & 0xffff_ffff
        )) == "1"
    };
    takeover(url, name, waiting, Duration::from_secs(3));
}

#[test]
fn etcd_elects_one_leader_and_the_next_when_it_dies() {
    let url = format!("{}?ttl=2", servers::etcd());
    let name = "elect-etcd";
    let waiting = || {
        let keys = servers::etcdctl(&["get", "--prefix", "--keys-only", "lockutils/elect-etcd/"]);
        keys.lines().filter(|l| !l.is_empty()).count() >= 2
    };
    takeover(&url, name, waiting, Duration::from_secs(5));
}

#[test]
fn redis_elects_one_leader_and_the_next_when_it_dies() {
    let url = format!("{}?ttl=2", servers::redis());
    let name = "elect-redis";
    let waiting = || {
        let out = servers::redis_cli(
            servers::redis(),
            &["PUBSUB", "NUMSUB", "lockutils:elect-redis:released"],
        );
        out.lines().nth(1).is_some_and(|n| n.trim() != "0")
    };
    takeover(&url, name, waiting, Duration::from_secs(5));
}

#[test]
fn mysql_elects_one_leader_and_the_next_when_it_dies() {
    let url = servers::mysql();
    let name = "elect-mysql";
    let waiting = || {
        let hex: String = format!("lockutils:{name}")
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        servers::mariadb().sql(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE INFO LIKE 'SELECT GET_LOCK(X''{hex}''%'"
        )) == "1"
    };
    takeover(url, name, waiting, Duration::from_secs(3));
}

/// PostgreSQL's advisory key of a name: the first 8 bytes of its SHA-256.
fn pg_key(name: &str) -> u64 {
    let out = servers::psql(&format!(
        "SELECT ('x' || substr(encode(sha256('{name}'::bytea), 'hex'), 1, 16))::bit(64)::bigint"
    ));
    out.parse::<i64>().unwrap() as u64
}

// ---------------------------------------------------------------------------
// What is shown, and what is refused.

/// A holder that recorded no identity (a plain lock of the same name)
/// leads with an empty one; a dead leader's record is never shown.
#[test]
fn plain_holders_and_dead_leaders_are_never_named_by_a_stale_record() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let name = "elect-stale";
    let mut a = candidate(name, &url, "candidate-a");
    elected(&mut a);
    a.kill();
    assert_eq!(leader(name, &url), None, "a dead leader leads nobody");
    let mut plain = support::child("child_plain_holder")
        .param("NAME", name)
        .param("URL", &url)
        .spawn();
    plain.expect("held");
    let now = leader(name, &url).expect("the plain holder holds it");
    assert_eq!(now.identity, "", "not the dead leader's record");
    assert_eq!(now.fencing_token, None);
    plain.send("release");
    plain.finish();

    let redis = servers::redis();
    let mut plain = support::child("child_plain_holder")
        .param("NAME", name)
        .param("URL", redis)
        .spawn();
    plain.expect("held");
    let now = leader(name, redis).expect("the plain holder holds it");
    assert_eq!(now.identity, "");
    plain.send("release");
    plain.finish();
}

#[test]
fn the_default_identity_is_host_and_pid() {
    let dir = tempfile::tempdir().unwrap();
    let lead = lockutils::election("elect-default")
        .lock_path(dir.path())
        .campaign()
        .unwrap();
    let mine = lockutils::default_identity();
    assert!(
        mine.ends_with(&format!(":{}", std::process::id())),
        "{mine}"
    );
    assert_eq!(lead.identity(), mine);
    let now = lockutils::election("elect-default")
        .lock_path(dir.path())
        .leader()
        .unwrap()
        .unwrap();
    assert_eq!(now.identity, mine);
    assert_eq!(now.fencing_token, lead.fencing_token());
}

#[test]
fn bad_identities_and_tooz_urls_are_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "two\nlines", &"x".repeat(1025)] {
        let e = lockutils::election("elect-bad")
            .identity(bad)
            .lock_path(dir.path())
            .campaign()
            .unwrap_err();
        assert!(matches!(e, LockError::InvalidOptions { .. }), "{e}");
        assert!(e.to_string().contains("identity"), "{e}");
    }
    let tooz = format!("{}?compat=tooz", servers::redis());
    let e = lockutils::election("elect-bad")
        .backend(&tooz)
        .campaign()
        .unwrap_err();
    assert!(e.to_string().contains("compat=tooz"), "{e}");
}

/// Async campaigns on a lock server; a leadership whose session the server
/// ends is told lost, and nobody is named while nobody holds the lock.
#[test]
fn async_campaigns_win_and_a_terminated_session_loses_the_leadership() {
    let url = servers::postgres();
    let name = "elect-pg-lost";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lead = rt.block_on(async {
        lockutils::election(name)
            .identity("async")
            .backend(url)
            .campaign_async()
            .await
            .unwrap()
    });
    assert_eq!(leader(name, url).unwrap().identity, "async");
    assert!(!lead.is_lost());
    let lost = lead.lost();
    let key = pg_key(name);
    let ended = servers::psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND classid = {} AND objid = {} AND objsubid = 1",
        key >> 32,
        key & 0xffff_ffff
    ));
    assert_eq!(ended, "1");
    support::block_on_within(Duration::from_secs(10), lost);
    assert!(lead.is_lost());
    assert_eq!(leader(name, url), None, "the terminated session held it");
    drop(lead);
}

/// Child: switches process locking off, campaigns in `NAME` on lock files
/// in `DIR`, reports `elected`, waits for `resign`.
#[test]
fn child_candidate_without_process_locking() {
    if !running_as("child_candidate_without_process_locking") {
        return;
    }
    lockutils::config::set_process_locking(false);
    let lead = lockutils::election(&param("NAME"))
        .lock_path(&param("DIR"))
        .campaign()
        .unwrap_or_else(|e| panic!("{e}"));
    report("elected");
    await_order("resign");
    drop(lead);
}

/// A leader on lock files with process locking switched off still holds
/// the lock file: an election that stayed in-process would elect nobody.
#[test]
fn elections_take_the_lock_file_even_with_process_locking_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::child("child_candidate_without_process_locking")
        .param("NAME", "elect-nolocking")
        .param("DIR", dir.path())
        .spawn();
    c.expect("elected");
    let held = lockutils::holders_of_file(&dir.path().join("elect-nolocking")).unwrap();
    assert_eq!(held.holders.len(), 1, "{held:?}");
    assert_eq!(held.holders[0].pid, Some(c.pid()));
    c.send("resign");
    c.finish();
}
