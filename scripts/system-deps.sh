#!/usr/bin/env bash
# Installs the Debian packages the tests run for real (OpenSSH's sshd, RabbitMQ, PostgreSQL).
# Only acts as root and only for what is missing; elsewhere it says what to install.
set -euo pipefail
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
[ -x /usr/bin/ssh-keygen ] || missing+=(openssh-client)
# PostgreSQL's server binaries (initdb, pg_ctl) live in /usr/lib/postgresql/VERSION/bin.
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]})" \
       "or the integration tests that need them will be skipped (and fail under CI=true)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages' own services from starting: tests start their own servers.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
