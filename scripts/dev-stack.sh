#!/usr/bin/env bash
# A local apimon platform in one command, on loopback, from real services:
#
#   scripts/dev-stack.sh up   [DIR]   # start everything, print how to watch it
#   scripts/dev-stack.sh down [DIR]   # stop what `up` started (by PID)
#   scripts/dev-stack.sh status [DIR]
#
# `up` starts (or reuses, with APIMON_TEST_OPENSTACK=DIR) the OpenStack
# control plane of tests/openstack/, a real InfluxDB, and `apimon daemon`
# following a local git repository made from examples-repo/ (environment
# `outside`; its InfluxDB and monitored cloud pointed at the local ones, no
# SSH hosts and no Grafana server: neither runs here), then `apimon
# executor` running the example's scenarios with the configuration the
# repository renders, writing their points straight into that InfluxDB.
# DIR defaults to ${TMPDIR:-/tmp}/apimon-dev. Needs what scripts/test.sh
# installs (influxd, git, the OpenStack packages, target/ansible-venv).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
DIR="${2:-${TMPDIR:-/tmp}/apimon-dev}"
PIDS="$DIR/pids"
log() { printf '==> %s\n' "$*" >&2; }
die() { echo "dev-stack: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
start() { # name logfile command...
  local name="$1" logfile="$2"; shift 2
  "$@" >"$logfile" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
wait_for() { # what seconds command...
  local what="$1" seconds="$2"; shift 2
  for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up (logs: $DIR/logs)"
}

down() {
  [ -d "$PIDS" ] || { log "nothing started in $DIR"; return 0; }
  for name in executor daemon influxd; do
    if alive "$name"; then
      kill -TERM "$(cat "$PIDS/$name.pid")" 2>/dev/null || true
      for _ in $(seq 100); do alive "$name" || break; sleep 0.1; done
      alive "$name" && kill -KILL "$(cat "$PIDS/$name.pid")" 2>/dev/null || true
      log "stopped $name"
    fi
    rm -f "$PIDS/$name.pid"
  done
  if [ -f "$DIR/openstack.started" ]; then
    "$here/tests/openstack/down.sh" "$DIR/openstack" && rm -f "$DIR/openstack.started"
  fi
}

status() {
  for name in influxd daemon executor; do
    if alive "$name"; then echo "$name: running (pid $(cat "$PIDS/$name.pid"))"; else echo "$name: stopped"; fi
  done
  [ -f "$DIR/env" ] && cat "$DIR/env"
}

up() {
  mkdir -p "$DIR/logs" "$PIDS"
  alive daemon && die "already up in $DIR (scripts/dev-stack.sh down $DIR first)"
  command -v influxd >/dev/null || die "influxd is missing (scripts/test.sh installs it)"
  local apimon="${APIMON_DEV_BINARY:-$here/target/debug/apimon}"
  if [ -z "${APIMON_DEV_BINARY:-}" ]; then
    log "building apimon"
    (cd "$here" && cargo build --quiet)
  fi

  # OpenStack: the suite's control plane when one is up, else our own.
  local os_dir="${APIMON_TEST_OPENSTACK:-}"
  if [ -z "$os_dir" ] || [ ! -f "$os_dir/clouds.yaml" ]; then
    os_dir="$DIR/openstack"
    log "starting the OpenStack control plane (tests/openstack/up.sh)"
    "$here/tests/openstack/up.sh" "$os_dir" >"$DIR/logs/openstack.log" 2>&1 || die "OpenStack did not start (see $DIR/logs/openstack.log)"
    touch "$DIR/openstack.started"
  fi

  log "starting InfluxDB"
  local influx_port rpc_port
  influx_port=$(free_port); rpc_port=$(free_port)
  mkdir -p "$DIR/influxdb"
  cat >"$DIR/influxdb/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$DIR/influxdb/meta"
[data]
  dir = "$DIR/influxdb/data"
  wal-dir = "$DIR/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx_port"
  auth-enabled = true
  log-enabled = false
[monitor]
  store-enabled = false
EOF
  start influxd "$DIR/logs/influxd.log" influxd -config "$DIR/influxdb/influxdb.conf"
  wait_for InfluxDB 30 curl -sf "http://127.0.0.1:$influx_port/ping"

  log "making the repository ($DIR/repo, from examples-repo/)"
  rm -rf "$DIR/repo"
  cp -r "$here/examples-repo" "$DIR/repo"
  python3 - "$DIR/repo/apimon.yaml" "$influx_port" <<'EOF'
import re, sys
path, port = sys.argv[1], sys.argv[2]
text = open(path).read()
outside, rest = text.split("\n  inside:\n", 1)
# Here: the local InfluxDB, written to by the executor itself; the local
# Keystone as the monitored cloud; no SSH hosts and no Grafana server.
outside = outside.replace("http://192.168.10.30:8086", f"http://127.0.0.1:{port}")
outside = outside.replace("      results_user: telegraf\n", "      results_user: telegraf\n      results_via: direct\n")
outside = outside.replace("https://iam.example-cloud.test/v3", "http://127.0.0.1:5000/v3")
outside = outside.replace("region: eu-central-1", "region: RegionOne")
outside = outside.replace("project_name: apimon-probes", "project_name: apimon")
outside = outside.replace("username: apimon-probe-outside", "username: apimon")
outside = re.sub(r"    grafana:\n(      .*\n)+", "", outside + "\n", count=1).rstrip("\n")
outside = re.sub(r"    ssh:\n(      .*\n)+", "", outside + "\n", count=1).rstrip("\n")
open(path, "w").write(outside + "\n  inside:\n" + rest)
# No Grafana server runs here: `outside` keeps no grafana host.
hosts_path = path.replace("apimon.yaml", "inventory/outside/hosts.yaml")
hosts = open(hosts_path).read()
start = hosts.index("  - name: outside-grafana\n")
end = hosts.find("\n  - name:", start + 1)
open(hosts_path, "w").write(hosts[:start] + (hosts[end + 1:] if end >= 0 else ""))
EOF
  rm -f "$DIR/repo/inventory/outside/grafana.yaml"
  sed -i 's|https://iam.example-cloud.test/v3|http://127.0.0.1:5000/v3|' "$DIR/repo/scenarios/iam_endpoint.yaml"
  (cd "$DIR/repo" && git init -q -b main && git add -A &&
    git -c user.name=dev -c user.email=dev@localhost commit -qm "the example platform, locally")

  log "secrets, clouds.yaml, daemon configuration"
  umask 077
  cat >"$DIR/secrets.yaml" <<EOF
outside_monitoring_password: apimon
outside_grafana_token: unused-here
outside_influxdb_admin_password: admin-dev-pw
outside_influxdb_telegraf_password: telegraf-dev-pw
outside_influxdb_grafana_password: grafana-dev-pw
inside_influxdb_grafana_password: unused-here
EOF
  sed -e 's/apimon-test:/apimon-outside:/' "$os_dir/clouds.yaml" >"$DIR/clouds.yaml"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/webhook_secret"
  umask 022
  local daemon_port
  daemon_port=$(free_port)
  cat >"$DIR/daemon.yaml" <<EOF
repository:
  url: file://$DIR/repo
  branch: main
  poll_interval_seconds: 5
state_dir: $DIR/state
secrets_file: $DIR/secrets.yaml
clouds_file: $DIR/clouds.yaml
environments: [outside]
listen: 127.0.0.1:$daemon_port
webhook_secret_file: $DIR/webhook_secret
drift_cron: "0 * * * * *"
EOF
  log "starting apimon daemon"
  start daemon "$DIR/logs/daemon.log" "$apimon" daemon --config "$DIR/daemon.yaml"
  wait_for "the daemon" 30 curl -sf "http://127.0.0.1:$daemon_port/healthz"

  log "starting apimon executor (the configuration the repository renders for outside-executor)"
  rm -rf "$DIR/render"
  "$apimon" render --repo "$DIR/repo" --env outside --out "$DIR/render" >/dev/null
  local host="$DIR/render/outside/outside-executor" ingest_port ansible
  ingest_port=$(free_port)
  ansible="$here/target/ansible-venv/bin/ansible-playbook"
  [ -x "$ansible" ] || ansible=ansible-playbook
  python3 - "$host" "$DIR" "$ansible" "$ingest_port" <<'EOF'
import json, sys
host, root, ansible, ingest = sys.argv[1:5]
text = open(f"{host}/etc/apimon/executor.yaml").read()
# `render` never writes secrets: put back the ones this stack generated.
text = text.replace('password: "(sensitive)"', 'password: "telegraf-dev-pw"')
text = text.replace('"/etc/apimon/scenario-repository', f'"{host}/etc/apimon/scenario-repository')
text = text.replace('scenarios_dir: "/etc/apimon/scenarios"', f'scenarios_dir: "{host}/etc/apimon/scenarios"')
text = text.replace('clouds_file: "/etc/apimon/clouds.yaml"', f'clouds_file: "{root}/executor-clouds.yaml"')
lines = [l for l in text.splitlines() if not l.startswith("ansible_playbook:")]
lines += [f"ansible_playbook: {json.dumps(ansible)}", f'runs_dir: "{root}/runs"',
          f"ingest_listen: 127.0.0.1:{ingest}", "health_interval_seconds: 10"]
text = "\n".join(lines) + "\n"
text = text.replace("results:\n", f'results:\n  buffer_dir: "{root}/results"\n', 1)
open(f"{root}/executor.yaml", "w").write(text)
clouds = open(f"{host}/etc/apimon/clouds.yaml").read().replace('"(sensitive)"', '"apimon"')
open(f"{root}/executor-clouds.yaml", "w").write(clouds)
EOF
  chmod 600 "$DIR/executor.yaml" "$DIR/executor-clouds.yaml"
  # The openstack.cloud collection scripts/test.sh extracts beside the venv.
  [ -d "$here/target/ansible-collections" ] && export ANSIBLE_COLLECTIONS_PATH="$here/target/ansible-collections"
  start executor "$DIR/logs/executor.log" "$apimon" executor --config "$DIR/executor.yaml"
  wait_for "the executor" 30 curl -sf "http://127.0.0.1:$ingest_port/metrics"

  cat >"$DIR/env" <<EOF
APIMON_DEV_DIR=$DIR
APIMON_DEV_DAEMON=http://127.0.0.1:$daemon_port
APIMON_DEV_INFLUXDB=http://127.0.0.1:$influx_port
APIMON_DEV_EXECUTOR_METRICS=http://127.0.0.1:$ingest_port/metrics
EOF
  cat <<EOF

apimon dev stack is up in $DIR (logs in $DIR/logs).
  daemon status:   curl -s http://127.0.0.1:$daemon_port/status | python3 -m json.tool
  scenario points: curl -s -u admin:admin-dev-pw 'http://127.0.0.1:$influx_port/query?db=apimon' --data-urlencode 'q=SELECT * FROM apimon_scenario ORDER BY time DESC LIMIT 5'
  executor health: curl -s http://127.0.0.1:$ingest_port/metrics
Watch a change go through: edit $DIR/repo (say, a retention policy in
inventory/outside/influxdb.yaml), commit, and within 5 s /status shows the
new commit applied; \`$apimon plan --repo $DIR/repo --env outside --secrets $DIR/secrets.yaml --clouds-file $DIR/clouds.yaml --state-dir $DIR/state\`
shows what the daemon sees. Stop it all: scripts/dev-stack.sh down $DIR
EOF
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/dev-stack.sh up|down|status [DIR]" ;;
esac
