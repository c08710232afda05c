#!/usr/bin/env bash
# Installs the servers the test suite runs against, from Debian packages,
# when they are missing: redis-server, etcd, ZooKeeper (with a Java runtime),
# PostgreSQL and MariaDB; and tmux, the terminal dlock top's test draws in. The tests start their own server processes on free
# loopback ports; the packages' system services are not needed and are not
# started by this script.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
have etcd || need+=(etcd-server)
have etcdctl || need+=(etcd-client)
[ -d /usr/share/zookeeper ] || need+=(zookeeper)
have java || need+=(default-jre-headless)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
have mariadbd || have mysqld || need+=(mariadb-server)
have tmux || need+=(tmux)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-test-deps: all servers present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if have sudo; then SUDO="sudo"; else
    echo "install-test-deps: need root or sudo to install: ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-test-deps: installing ${need[*]}"
# Do not start the packages' own services: the tests run their own servers.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && $SUDO rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-test-deps: done"
