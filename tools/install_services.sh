#!/usr/bin/env bash
# Make the services the integration tests start for real available: PostgreSQL (the
# results history's server dialect: initdb, pg_ctl, postgres) and an OpenSSH server
# (tests/sshd.py: the pytest-xdist ssh workers of tests/test_fleet.py). Does nothing
# when /usr/lib/postgresql/*/bin/initdb and /usr/sbin/sshd are there already; else
# installs Debian's `postgresql` and/or `openssh-server` with apt-get, through sudo when
# not root. Neither service is enabled or started: the tests start throwaway instances.
# CI runs it before `make test` and sets VLMBENCH_REQUIRE_SSHD=1 and
# VLMBENCH_REQUIRE_POSTGRES=1, so those tests fail there instead of skipping.
set -euo pipefail
packages=()
have=()
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  have+=("postgresql ($(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n1))")
else
  packages+=(postgresql)
fi
if [ -x /usr/sbin/sshd ]; then
  have+=("openssh-server (/usr/sbin/sshd)")
else
  packages+=(openssh-server)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  echo "install_services: ${have[*]} already installed: nothing to do"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_services: ${packages[*]} missing and no apt-get to install them: install" \
    "them yourself (PostgreSQL's initdb, OpenSSH's sshd)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install_services: ${packages[*]} missing; installing needs root and there is no" \
      "sudo: run 'apt-get install ${packages[*]}' as root" >&2
    exit 1
  fi
fi
echo "install_services: installing Debian's ${packages[*]} (${sudo[*]:+sudo }apt-get update && apt-get install -y --no-install-recommends ${packages[*]})"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d: the packages' own services are not started (a container has no init).
policy=/usr/sbin/policy-rc.d
placed=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  placed=1
fi
status=0
"${sudo[@]}" apt-get update -qq && \
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null || status=$?
if [ "$placed" = 1 ]; then
  "${sudo[@]}" rm -f "$policy"
fi
if [ "$status" != 0 ]; then
  echo "install_services: apt-get could not install ${packages[*]} (see above)" >&2
  exit 1
fi
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("initdb")
[ -x /usr/sbin/sshd ] || missing+=("/usr/sbin/sshd")
if [ "${#missing[@]}" -ne 0 ]; then
  echo "install_services: apt-get installed ${packages[*]} but ${missing[*]} is not there" >&2
  exit 1
fi
echo "install_services: installed ${packages[*]}${have[*]:+ (already there: ${have[*]})}"
