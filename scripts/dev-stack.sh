#!/usr/bin/env bash
# A local apimon platform in one command, on loopback, from real services:
#
#   scripts/dev-stack.sh up   [DIR]   # start everything, print how to watch it
#   scripts/dev-stack.sh down [DIR]   # stop what `up` started (by PID)
#   scripts/dev-stack.sh status [DIR]
#
# `up` starts (or reuses, with APIMON_TEST_OPENSTACK=DIR) the OpenStack
# control plane of tests/openstack/, a real InfluxDB, one real sshd standing
# in for the bastion and the hosts (on 127.0.0.1 and 127.0.0.10/20/30, the
# addresses the servers get on the local control plane; files under
# DIR/hosts, stand-ins for systemctl and apt), and `apimon daemon` following
# a local git repository made from examples-repo/ (environment `outside`:
# its InfluxDB and monitored cloud pointed at the local ones; no Grafana, no
# Grafana server runs here). Once the daemon has converged, `apimon
# executor` runs the example's scenarios with the configuration the daemon
# wrote to the executor host over SSH, its points straight into InfluxDB.
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

# The executor host's files are under DIR/hosts, where it would find them
# at /: the paths in its configuration get that prefix, the rest is as the
# daemon wrote it; written whole, then renamed (the executor reloads it).
derive_executor_config() { # hosts ansible ingest_port
  python3 - "$1" "$DIR" "$2" "$3" <<'EOF'
import json, os, sys
hosts, root, ansible, ingest = sys.argv[1:5]
text = open(f"{hosts}/etc/apimon/executor.yaml").read()
text = text.replace('"/etc/apimon/', f'"{hosts}/etc/apimon/')
lines = [l for l in text.splitlines() if not l.startswith("ansible_playbook:")]
lines += [f"ansible_playbook: {json.dumps(ansible)}", f'runs_dir: "{hosts}/var/lib/apimon/runs"',
          f"ingest_listen: 127.0.0.1:{ingest}", "health_interval_seconds: 10"]
text = "\n".join(lines) + "\n"
text = text.replace("results:\n", f'results:\n  buffer_dir: "{root}/results"\n', 1)
fd = os.open(f"{root}/executor.yaml.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(text)
os.replace(f"{root}/executor.yaml.new", f"{root}/executor.yaml")
EOF
}

derive_health_config() { # hosts port: the health service's file as the daemon wrote it, here
  python3 - "$1" "$DIR" "$2" <<'EOF'
import os, sys
hosts, root, port = sys.argv[1:4]
text = open(f"{hosts}/etc/apimon/health.yaml").read()
text = text.replace('"/etc/apimon/', f'"{hosts}/etc/apimon/')
text = text.replace('"/var/lib/apimon/health"', f'"{root}/health-state"')
text = text.replace('"listen": "127.0.0.1:8190"', f'"listen": "127.0.0.1:{port}"')
fd = os.open(f"{root}/health.yaml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(text)
EOF
}

follow() { # ansible ingest_port: until stopped
  local source="$DIR/hosts/etc/apimon/executor.yaml"
  while sleep 1; do
    [ "$source" -nt "$DIR/executor.yaml" ] && derive_executor_config "$DIR/hosts" "$1" "$2" && echo "executor.yaml follows $source"
  done
}

down() {
  [ -d "$PIDS" ] || { log "nothing started in $DIR"; return 0; }
  for name in follow health executor daemon sshd influxd; do
    if alive "$name"; then
      kill -TERM "$(cat "$PIDS/$name.pid")" 2>/dev/null || true
      for _ in $(seq 100); do alive "$name" || break; sleep 0.1; done
      alive "$name" && kill -KILL "$(cat "$PIDS/$name.pid")" 2>/dev/null || true
      log "stopped $name"
    fi
    rm -f "$PIDS/$name.pid"
  done
  # Units the stand-in service manager runs on the hosts (by its records).
  for pid_file in "$DIR"/hosts/.tools/units/*.pid; do
    [ -e "$pid_file" ] || continue
    unit="$(basename "$pid_file" .pid)"
    "$DIR/hosts/.tools/systemctl" stop "$unit" && log "stopped unit $unit"
  done
  if [ -f "$DIR/openstack.started" ]; then
    "$here/tests/openstack/down.sh" "$DIR/openstack" && rm -f "$DIR/openstack.started"
  fi
}

status() {
  for name in influxd sshd daemon executor follow; do
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

  log "starting sshd (the bastion and the hosts)"
  local sshd ssh_port hosts="$DIR/hosts"
  sshd="$(command -v sshd || echo /usr/sbin/sshd)"
  [ -x "$sshd" ] || die "sshd is missing (scripts/test.sh installs openssh-server)"
  ssh_port=$(free_port)
  rm -rf "$DIR/ssh" && mkdir -p "$DIR/ssh" "$hosts/.tools"
  # sshd refuses to start without its privilege-separation directory.
  mkdir -p /run/sshd 2>/dev/null || die "cannot create /run/sshd (run as root: sshd stands in for the hosts)"
  ssh-keygen -q -t ed25519 -N '' -C apimon-dev-host -f "$DIR/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -C apimon-dev-client -f "$DIR/ssh/client_key"
  cp "$DIR/ssh/client_key.pub" "$DIR/ssh/authorized_keys"
  cat >"$DIR/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
ListenAddress 127.0.0.10
ListenAddress 127.0.0.20
ListenAddress 127.0.0.30
HostKey $DIR/ssh/host_key
PidFile $DIR/ssh/sshd.pid
AuthorizedKeysFile $DIR/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
MaxSessions 50
LogLevel ERROR
EOF
  : >"$DIR/ssh/known_hosts"
  for address in 127.0.0.1 127.0.0.10 127.0.0.20 127.0.0.30; do
    echo "[$address]:$ssh_port $(cut -d' ' -f1,2 "$DIR/ssh/host_key.pub")" >>"$DIR/ssh/known_hosts"
  done
  start sshd "$DIR/logs/sshd.log" "$sshd" -D -e -f "$DIR/ssh/sshd_config"
  wait_for sshd 30 bash -c "exec 3<>/dev/tcp/127.0.0.20/$ssh_port"
  # No systemd and no apt for the hosts here: units and packages are files.
  # The suite's stand-ins (tests/support/stand-in/).
  cp "$here/tests/support/stand-in/systemctl" "$here/tests/support/stand-in/pkg" "$hosts/.tools/"
  chmod 755 "$hosts/.tools/systemctl" "$hosts/.tools/pkg"
  # The executor runs as a process of this script (below), with a
  # configuration derived for this machine: its unit is stood in for.
  echo apimon-executor >"$hosts/.tools/stand-in-for"
  # Files the hosts' services own need their groups on this machine.
  for group in apimon telegraf influxdb; do
    getent group "$group" >/dev/null || groupadd --system "$group" 2>/dev/null || true
  done

  log "making the repository ($DIR/repo, from examples-repo/)"
  rm -rf "$DIR/repo"
  cp -r "$here/examples-repo" "$DIR/repo"
  python3 - "$DIR/repo" "$influx_port" "$ssh_port" "$hosts" "$(id -un)" <<'EOF'
import re, sys
repo, port, ssh_port, hosts, user = sys.argv[1:6]
path = f"{repo}/apimon.yaml"
text = open(path).read()
outside, rest = text.split("\n  inside:\n", 1)
# Here: the local InfluxDB, written to by the executor itself; the local
# Keystone as the monitored cloud; the hosts behind the local sshd; no
# Grafana server.
outside = outside.replace("http://192.168.10.30:8086", f"http://127.0.0.1:{port}")
outside = outside.replace("      results_user: telegraf\n", "      results_user: telegraf\n      results_via: direct\n")
outside = outside.replace("https://iam.example-cloud.test/v3", "http://127.0.0.1:5000/v3")
outside = outside.replace("region: eu-central-1", "region: RegionOne")
outside = outside.replace("project_name: apimon-probes", "project_name: apimon")
outside = outside.replace("username: apimon-probe-outside", "username: apimon")
outside = re.sub(r"    grafana:\n(      .*\n)+", "", outside + "\n", count=1).rstrip("\n")
# The daemon runs here as a process of this script, not from `daemon:`
# (`apimon bootstrap` is what installs that one on a bastion).
outside = re.sub(r"    # The daemon on the first bastion.*\n(    #.*\n)*", "", outside + "\n", count=1).rstrip("\n")
outside = re.sub(r"    daemon:\n(      .*\n)+", "", outside + "\n", count=1).rstrip("\n")
ssh = (f"    ssh:\n      user: {user}\n      bastion_address: 127.0.0.1\n"
       f"      bastion_port: {ssh_port}\n      host_port: {ssh_port}\n      root: {hosts}\n"
       f"      service_manager: {hosts}/.tools/systemctl\n"
       f"      package_check: '{hosts}/.tools/pkg check {{package}}'\n"
       f"      package_install: '{hosts}/.tools/pkg install {{package}}'\n"
       f"      package_update: '{hosts}/.tools/pkg update'\n"
       f"      unit_settle_seconds: 2\n")
outside = re.sub(r"    ssh:\n(      .*\n)+", ssh, outside + "\n", count=1).rstrip("\n")
rest = "\n  inside:\n" + rest
# The executor runs the scenarios with the suite's Ansible (no runtime
# installed from PyPI on every `up`).
rest = re.sub(r"\nruntime:\n(  .*\n|\s*\n)+", "\n", rest, count=1)
open(path, "w").write(outside + rest)
# No Grafana server runs here: `outside` keeps no grafana host. The servers
# get loopback addresses, where the local sshd listens.
hosts_path = f"{repo}/inventory/outside/hosts.yaml"
hosts_yaml = open(hosts_path).read()
start = hosts_yaml.index("  - name: outside-grafana\n")
end = hosts_yaml.find("\n  - name:", start + 1)
hosts_yaml = hosts_yaml[:start] + (hosts_yaml[end + 1:] if end >= 0 else "")
open(hosts_path, "w").write(hosts_yaml.replace("address: 192.168.10.", "address: 127.0.0."))
networks_path = f"{repo}/inventory/outside/networks.yaml"
networks = open(networks_path).read()
networks = networks.replace("cidr: 192.168.10.0/24", "cidr: 127.0.0.0/8").replace("gateway_ip: 192.168.10.1", "gateway_ip: 127.0.0.1\n        enable_dhcp: false")
open(networks_path, "w").write(networks)
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
outside_logs_temp_url_key: dev-logs-temp-url-key
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
ssh_key: $DIR/ssh/client_key
ssh_known_hosts: $DIR/ssh/known_hosts
environments: [outside]
listen: 127.0.0.1:$daemon_port
webhook_secret_file: $DIR/webhook_secret
drift_cron: "0 * * * * *"
EOF
  log "starting apimon daemon"
  start daemon "$DIR/logs/daemon.log" "$apimon" daemon --config "$DIR/daemon.yaml"
  wait_for "the daemon" 30 curl -sf "http://127.0.0.1:$daemon_port/healthz"


  log "waiting for the daemon to converge outside (servers, InfluxDB, the hosts over SSH)"
  local daemon_url="http://127.0.0.1:$daemon_port"
  # Converged, or stop waiting at the first run that ended otherwise.
  wait_for "outside converged" 600 python3 -c '
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(sys.argv[1] + "/status", timeout=5))
outcome = status["environments"]["outside"].get("outcome")
if outcome in ("partial", "failed", "pending"):
    error = status.get("last_error")
    print(f"dev-stack: the first run ended {outcome}: {error}", file=sys.stderr)
    sys.exit(0)
sys.exit(0 if outcome in ("success", "no_changes") else 1)
' "$daemon_url"

  log "starting apimon executor (the configuration the daemon wrote to outside-executor)"
  local ingest_port ansible
  ingest_port=$(free_port)
  ansible="$here/target/ansible-venv/bin/ansible-playbook"
  [ -x "$ansible" ] || ansible=ansible-playbook
  derive_executor_config "$hosts" "$ansible" "$ingest_port"
  # A commit that changes the executor host's configuration reaches the
  # running executor (it reloads its file) through this follower.
  start follow "$DIR/logs/follow.log" "$here/scripts/dev-stack.sh" follow "$DIR" "$ansible" "$ingest_port"
  # The openstack.cloud collection scripts/test.sh extracts beside the venv.
  [ -d "$here/target/ansible-collections" ] && export ANSIBLE_COLLECTIONS_PATH="$here/target/ansible-collections"
  start executor "$DIR/logs/executor.log" "$apimon" executor --config "$DIR/executor.yaml"
  wait_for "the executor" 30 curl -sf "http://127.0.0.1:$ingest_port/metrics"

  log "starting apimon health (the configuration the daemon wrote to outside-bastion)"
  local health_port
  health_port=$(free_port)
  derive_health_config "$hosts" "$health_port"
  start health "$DIR/logs/health.log" "$apimon" health --config "$DIR/health.yaml"
  wait_for "the health service" 30 curl -sf "http://127.0.0.1:$health_port/healthz"

  cat >"$DIR/env" <<EOF
APIMON_DEV_DIR=$DIR
APIMON_DEV_DAEMON=http://127.0.0.1:$daemon_port
APIMON_DEV_INFLUXDB=http://127.0.0.1:$influx_port
APIMON_DEV_EXECUTOR_METRICS=http://127.0.0.1:$ingest_port/metrics
APIMON_DEV_HEALTH=http://127.0.0.1:$health_port
APIMON_DEV_HOSTS=$hosts
APIMON_SSH_KEY=$DIR/ssh/client_key
APIMON_SSH_KNOWN_HOSTS=$DIR/ssh/known_hosts
EOF
  cat <<EOF

apimon dev stack is up in $DIR (logs in $DIR/logs).
  daemon status:   curl -s http://127.0.0.1:$daemon_port/status | python3 -m json.tool
  scenario points: curl -s -u admin:admin-dev-pw 'http://127.0.0.1:$influx_port/query?db=apimon' --data-urlencode 'q=SELECT * FROM apimon_scenario ORDER BY time DESC LIMIT 5'
  executor health: curl -s http://127.0.0.1:$ingest_port/metrics
  status page:     http://127.0.0.1:$health_port/ (incidents: /api/v1/incidents)
  the hosts' files: $hosts (/etc/apimon/executor.yaml, telegraf, influxdb ...)
Watch a change go through: edit $DIR/repo (say, a retention policy in
inventory/outside/influxdb.yaml, or a scenario's schedule), commit, and within
5 s /status shows the new commit applied; \`set -a; . $DIR/env; set +a;
$apimon plan --repo $DIR/repo --env outside --secrets $DIR/secrets.yaml --clouds-file $DIR/clouds.yaml --state-dir $DIR/state\`
shows what the daemon sees. Stop it all: scripts/dev-stack.sh down $DIR
EOF
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  follow) follow "$3" "$4" ;;
  *) die "usage: scripts/dev-stack.sh up|down|status [DIR]" ;;
esac
