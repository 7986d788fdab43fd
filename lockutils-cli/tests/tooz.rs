//! `lockutils run` with `LOCKUTILS_BACKEND=<server>?compat=tooz`: a real
//! tooz (from PyPI, in the venv of `tests/support/pyenv.rs`) holding a name
//! makes `lockutils run --nonblock` busy on PostgreSQL, Redis,
//! MySQL/MariaDB and etcd, and once tooz lets go the command runs. The servers are
//! the root crate's throwaway ones (`tests/support/servers.rs`).
#![cfg(all(
    unix,
    feature = "postgres",
    feature = "redis",
    feature = "mysql",
    feature = "etcd"
))]

#[path = "../../tests/support/servers.rs"]
mod servers;
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{Holder, code, lockutils, stderr};

/// A tooz process holding `name` on `url` until its stdin closes.
fn tooz_holder(url: &str, name: &str) -> Holder {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/tooz_helper.py");
    let mut cmd = Command::new(support::python::python());
    cmd.arg("-u").arg(script).args(["hold", url, name]);
    Holder::start(cmd, "@@lockutils:locked")
}

/// `lockutils run NAME --nonblock -- true` with the lock server `backend`.
fn run_nonblock(backend: &str, name: &str) -> Output {
    lockutils()
        .env("LOCKUTILS_BACKEND", backend)
        .args(["run", name, "--nonblock", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run lockutils")
}

fn busy_while_tooz_holds(server: &str, tooz_url: &str, name: &str) {
    let backend = format!("{server}?compat=tooz");
    let holder = tooz_holder(tooz_url, name);
    let out = run_nonblock(&backend, name);
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    // Without compat=tooz it is lockutils' own lock, which tooz does not hold.
    let own = run_nonblock(server, name);
    assert_eq!(code(&own), 0, "{}", stderr(&own));
    holder.release();
    let out = run_nonblock(&backend, name);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn lockutils_run_is_busy_while_tooz_holds_on_postgres() {
    let url = servers::postgres();
    let tooz = url.replacen("postgres://", "postgresql://", 1);
    busy_while_tooz_holds(url, &tooz, "tooz-cli-pg");
}

#[test]
fn lockutils_run_is_busy_while_tooz_holds_on_redis() {
    let url = servers::redis();
    busy_while_tooz_holds(url, url, "tooz-cli-redis");
}

#[test]
fn lockutils_run_is_busy_while_tooz_holds_on_mysql() {
    let url = servers::mysql();
    busy_while_tooz_holds(url, url, "tooz-cli-mysql");
}

#[test]
fn lockutils_run_is_busy_while_tooz_holds_on_etcd() {
    let url = servers::etcd();
    let tooz = url.replacen("etcd://", "etcd3+http://", 1);
    busy_while_tooz_holds(url, &tooz, "tooz-cli-etcd");
}
