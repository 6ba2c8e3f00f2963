#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# then runs format and lint checks and every test.
#
#   scripts/test.sh
#
# In CI (CI=true) a service the tests need but cannot start is a failure,
# never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Debian packages the suite needs: the real services the tests start.
DEB_PACKAGES=(influxdb chromium openssl git openssh-client openssh-server systemd libssl-dev pkg-config zlib1g-dev python3-venv curl iproute2 binutils)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The tests start their own servers on free ports: keep the packages'
  # init scripts from starting system-wide ones.
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=yes
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -z "$created_policy" ] || { $SUDO rm -f "$policy"; trap - EXIT; }
fi

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

# ansible-core, openstacksdk (with the InfluxDB client its metrics
# reporting needs) from PyPI, in a virtualenv under target/ (ignored by
# git), for the executor's tests that run real playbooks against the
# OpenStack control plane. openstacksdk below 4.15: the openstack.cloud
# collection (2.5) reads `openstack.version`, which later releases no
# longer import.
ANSIBLE_VENV="$PWD/target/ansible-venv"
PY_PACKAGES=('ansible-core>=2.17,<2.20' 'openstacksdk>=4.10,<4.15' 'influxdb==5.3.2')
if [ ! -x "$ANSIBLE_VENV/bin/ansible-playbook" ] \
  || ! "$ANSIBLE_VENV/bin/python" -c 'import openstack, influxdb' 2>/dev/null; then
  log "installing ${PY_PACKAGES[*]} into $ANSIBLE_VENV"
  [ -x "$ANSIBLE_VENV/bin/pip" ] || python3 -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
fi
# The openstack.cloud collection (Galaxy is not reachable here): taken out
# of the `ansible` package on PyPI, which bundles it.
COLLECTIONS="$PWD/target/ansible-collections"
if [ ! -f "$COLLECTIONS/ansible_collections/openstack/cloud/MANIFEST.json" ]; then
  log "extracting the openstack.cloud collection from PyPI's ansible package into $COLLECTIONS"
  wheels="$(mktemp -d)"
  "$ANSIBLE_VENV/bin/pip" download -q --no-deps 'ansible>=12,<13' -d "$wheels"
  "$ANSIBLE_VENV/bin/python" - "$wheels"/ansible-*.whl "$COLLECTIONS" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    members = [m for m in wheel.namelist() if m.startswith("ansible_collections/openstack/cloud/")]
    wheel.extractall(sys.argv[2], members)
PY
  rm -rf "$wheels"
fi
export PATH="$ANSIBLE_VENV/bin:$PATH"

# The health service's notification receivers: a real Matrix homeserver
# and a real SMTP server (STARTTLS), pinned, in a virtualenv of their own.
NOTIFY_VENV="$PWD/target/notify-venv"
NOTIFY_PACKAGES=('matrix-synapse==1.163.2' 'aiosmtpd==1.4.6')
if ! "$NOTIFY_VENV/bin/python" -c 'import synapse, aiosmtpd' 2>/dev/null; then
  log "installing ${NOTIFY_PACKAGES[*]} into $NOTIFY_VENV"
  [ -x "$NOTIFY_VENV/bin/pip" ] || python3 -m venv "$NOTIFY_VENV"
  "$NOTIFY_VENV/bin/pip" install -q "${NOTIFY_PACKAGES[@]}"
fi

# A real OpenStack control plane on 127.0.0.1 for the OpenStack provider's
# tests (installs its Debian packages on first use; about 30 s to start).
OPENSTACK_DIR="${TMPDIR:-/tmp}/apimon-test-openstack-$$"
log "starting OpenStack (tests/openstack/up.sh $OPENSTACK_DIR)"
cleanup_openstack() { tests/openstack/down.sh "$OPENSTACK_DIR" >/dev/null 2>&1 || true; }
trap cleanup_openstack EXIT
tests/openstack/up.sh "$OPENSTACK_DIR"
export APIMON_TEST_OPENSTACK="$OPENSTACK_DIR"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test"
# No doc tests exist; leaving them out keeps the last result line a real one.
log_file="$(mktemp)"
# A test that skips (a service missing outside CI) writes a line here;
# libtest would count it as passed.
APIMON_SKIP_LOG="$(mktemp)"
# Every process group a test starts is recorded here; none may be left.
APIMON_PROCESS_LOG="$(mktemp)"
export APIMON_SKIP_LOG APIMON_PROCESS_LOG
trap 'rm -f "$log_file" "$APIMON_SKIP_LOG" "$APIMON_PROCESS_LOG"; cleanup_openstack' EXIT
set +e
cargo test --lib --bins --tests 2>&1 | tee "$log_file"
status=${PIPESTATUS[0]}
set -e
# Processes of recorded groups still alive (a group id whose leader
# started before the recorded one is another, recycled group).
leaks="$(python3 - "$APIMON_PROCESS_LOG" <<'PY'
import os, sys
recorded = {}
for line in open(sys.argv[1]):
    parts = line.split(" ", 3)
    if len(parts) == 4 and parts[1].isdigit():
        recorded[int(parts[0])] = (int(parts[1]), parts[2] + " " + parts[3].strip())
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    pgrp, started = int(fields[2]), int(fields[19])
    if pgrp in recorded and started >= recorded[pgrp][0] and fields[0] != "Z":
        print(f"process {pid} of group {pgrp}, started by {recorded[pgrp][1]}")
PY
)"
if [ -n "$leaks" ]; then
  log "test processes left running:"
  printf '%s\n' "$leaks" >&2
  status=1
fi
skipped_tests="$(sed 's/: .*//' "$APIMON_SKIP_LOG" | sort -u | grep -c . || true)"
if [ "$skipped_tests" -gt 0 ]; then
  log "skipped (a service is missing; CI=true fails them instead):"
  sort -u "$APIMON_SKIP_LOG" >&2
fi
# One closing line for the whole suite: ignored tests (real_grafana) and
# skipped ones are skipped, not passed.
awk -v skipped="$skipped_tests" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) g += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p - skipped, f, g + skipped }' "$log_file"
exit "$status"
