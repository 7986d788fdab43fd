#!/usr/bin/env bash
# Installs the Debian packages the tests need, if any is missing:
#   python3 + venv  the oslo.concurrency / fasteners interop tests build a venv
#                   (pip packages come from PyPI at test time)
#   postgresql      initdb/postgres/psql/pgbench: the tests run a throwaway cluster
#   etcd-server     etcd: the tests run a throwaway member
#   etcd-client     etcdctl: the etcd tests revoke leases from outside
#   redis-server    redis-server, redis-cli: the Redis backend tests
#   pgbouncer       the pooler tests (session and transaction mode)
#   mariadb-server, mariadb-client   mariadbd, mariadb-install-db, mariadb:
#                   the MySQL backend tests run a throwaway server
#   openssl         test certificates (a CA, server and client certificates)
#   protobuf-compiler, libprotobuf-dev   protoc, for building the etcd client
#   util-linux      flock(1): the flock(2) interop tests hold locks with it
#   btrfs-progs     mkfs.btrfs, btrfs: the holders tests mount a btrfs image
#                   (and overlayfs, from the kernel) to lock files on it
# Needs root or sudo only when something is missing.
set -euo pipefail

need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
command -v flock >/dev/null || need+=(util-linux)
command -v mkfs.btrfs >/dev/null || [ -x /usr/sbin/mkfs.btrfs ] || [ -x /sbin/mkfs.btrfs ] || need+=(btrfs-progs)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v openssl >/dev/null || need+=(openssl)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)

if ((${#need[@]} == 0)); then
    exit 0
fi
echo "== installing ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "missing: ${need[*]}; install them with: apt-get install ${need[*]}" >&2
    exit 1
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
