#!/usr/bin/env bash
# Starts a real OpenStack control plane (Keystone, Placement, Glance,
# Neutron with ML2 and no agents, Nova with the fake driver, Cinder with the
# fake driver, Swift with one replica on a directory) on 127.0.0.1 from
# Debian packages, for integration tests.
#
#   tests/openstack/up.sh [STATE_DIR]    # default: $TMPDIR/apimon-openstack
#   tests/openstack/down.sh [STATE_DIR]
#
# Writes STATE_DIR/clouds.yaml (cloud `apimon-test`) and STATE_DIR/env.
# Facts it relies on: ../shared/reference/openstack-on-loopback.md.
set -euo pipefail
S="${1:-${TMPDIR:-/tmp}/apimon-openstack}"
here="$(cd "$(dirname "$0")" && pwd)"
# pyenv's python lacks the OpenStack libraries: use Debian's.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
PY=/usr/bin/python3
start_time=$(date +%s)
log() { printf '==> [%ss] %s\n' "$(( $(date +%s) - start_time ))" "$*" >&2; }
die() { echo "up.sh: $*" >&2; echo "logs: $S/logs" >&2; exit 1; }

PACKAGES=(keystone placement-api nova-api nova-conductor nova-scheduler neutron-server glance-api
  cinder-api cinder-scheduler cinder-volume rabbitmq-server mariadb-server python3-pymysql uwsgi-plugin-python3
  swift swift-proxy swift-account swift-container swift-object)
missing=()
for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  for p in keystone glance-common neutron-common nova-common cinder-common placement-common; do
    printf '%s %s/configure_db boolean false\n' "$p" "${p%-common}" | debconf-set-selections
  done
  printf 'keystone keystone/register-endpoint boolean false\n' | debconf-set-selections
  policy=/usr/sbin/policy-rc.d; made_policy=""
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$made_policy" ] || rm -f "$policy"
fi

[ -e "$S/pids" ] && "$here/down.sh" "$S" || true
mkdir -p "$S"/{logs,pids,run}
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DBPORT=$(free_port); MQPORT=$(free_port)
DB="mysql+pymysql://os:os@127.0.0.1:$DBPORT"
MQ="rabbit://guest:guest@127.0.0.1:$MQPORT/"
KS=http://127.0.0.1:5000

spawn() { # name command... : runs in the background, pid in $S/pids/name
  local name=$1; shift
  ( exec "$@" ) >"$S/logs/$name.out" 2>&1 &
  echo $! >"$S/pids/$name.pid"
}
wait_http() { # url [seconds]
  local deadline=$(( $(date +%s) + ${2:-60} ))
  until curl -s -o /dev/null "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "no answer from $1"
    sleep 0.3
  done
}

log "mariadb"
DATADIR="$S/mysql"; [ -d /dev/shm ] && DATADIR="/dev/shm/apimon-mysql-$(basename "$S")-$$" && echo "$DATADIR" >"$S/run/shm-datadir"
rm -rf "$DATADIR"; mkdir -p "$DATADIR"
mariadb-install-db --user=root --datadir="$DATADIR" --auth-root-authentication-method=normal >"$S/logs/mariadb-install.log" 2>&1
spawn mariadb mariadbd --user=root --datadir="$DATADIR" --socket="$S/run/mysql.sock" --port="$DBPORT" \
  --bind-address=127.0.0.1 --skip-log-bin --innodb-flush-log-at-trx-commit=0 --pid-file="$S/run/mysql.pid"
for _ in $(seq 100); do [ -S "$S/run/mysql.sock" ] && break; sleep 0.2; done
[ -S "$S/run/mysql.sock" ] || die "mariadb did not start"
sql="CREATE USER 'os'@'127.0.0.1' IDENTIFIED BY 'os'; GRANT ALL ON *.* TO 'os'@'127.0.0.1';"
for d in keystone glance neutron nova_api nova nova_cell0 placement cinder; do sql="$sql CREATE DATABASE $d;"; done
mariadb -S "$S/run/mysql.sock" -uroot -e "$sql"

log "rabbitmq"
mkdir -p "$S/rabbit"
# Our own Erlang port mapper on a port of our own, started here (so
# down.sh stops it by its PID): RabbitMQ would otherwise start a shared
# one in the background that nothing could tell from another service's.
EPMDPORT=$(free_port)
spawn epmd epmd -address 127.0.0.1 -port "$EPMDPORT"
export ERL_EPMD_PORT="$EPMDPORT"
for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$EPMDPORT") 2>/dev/null && break; sleep 0.1; done
export RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$MQPORT" \
  ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT="$(free_port)" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
  RABBITMQ_MNESIA_BASE="$S/rabbit/mnesia" RABBITMQ_LOG_BASE="$S/logs" RABBITMQ_PID_FILE="$S/run/rabbit.pid"
HOME="$S/rabbit" spawn rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server

authtoken() { # user
  cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $KS
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $1
EOF
}

log "keystone"
mkdir -p "$S/keystone"
cat >"$S/keystone/keystone.conf" <<EOF
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $S/keystone/fernet
[credential]
key_repository = $S/keystone/credential
[cache]
enabled = true
backend = dogpile.cache.memory
# Tests add regions and endpoints while others run: each worker caching
# the catalog in its own memory would hand out catalogs without them.
[catalog]
caching = false
[identity]
password_hash_rounds = 4
EOF
km() { keystone-manage --config-file "$S/keystone/keystone.conf" "$@" >>"$S/logs/keystone-manage.log" 2>&1; }
km db_sync
km fernet_setup --keystone-user root --keystone-group root
km credential_setup --keystone-user root --keystone-group root
km bootstrap --bootstrap-password admin --bootstrap-admin-url "$KS/v3/" --bootstrap-internal-url "$KS/v3/" \
  --bootstrap-public-url "$KS/v3/" --bootstrap-region-id RegionOne
# uwsgi's http-socket does not keep connections alive; clients that pool
# connections must be told so, or they reuse one uwsgi already closed.
UWSGI=(uwsgi --plugin python3 --master --processes 2 --threads 4 --add-header "Connection: close")
OS_KEYSTONE_CONFIG_DIR="$S/keystone" spawn keystone "${UWSGI[@]}" \
  --http-socket 127.0.0.1:5000 --wsgi-file /usr/bin/keystone-wsgi-public
wait_http "$KS/v3"

token() { # user password project
  curl -s -i -H 'Content-Type: application/json' "$KS/v3/auth/tokens" -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"id\":\"default\"},\"password\":\"$2\"}}},\"scope\":{\"project\":{\"name\":\"$3\",\"domain\":{\"id\":\"default\"}}}}}" \
    | awk 'tolower($1)=="x-subject-token:" {print $2}' | tr -d '\r'
}
TOKEN=$(token admin admin admin); [ -n "$TOKEN" ] || die "no admin token"
api() { # method url [json] -> body
  curl -s -X "$1" -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' "$2" ${3:+-d "$3"}
}
field() { $PY -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
id_of() { # kind name
  api GET "$KS/v3/$1?name=$2" | field "['$1'][0]['id']"
}

log "keystone: projects, users, services, endpoints"
api POST "$KS/v3/projects" '{"project":{"name":"service","domain_id":"default"}}' >/dev/null
api POST "$KS/v3/projects" '{"project":{"name":"apimon","domain_id":"default"}}' >/dev/null
api POST "$KS/v3/roles" '{"role":{"name":"service"}}' >/dev/null
ADMIN_ROLE=$(id_of roles admin); SERVICE_ROLE=$(id_of roles service)
SERVICE_PROJECT=$(id_of projects service); APIMON_PROJECT=$(id_of projects apimon)
for u in nova neutron glance placement cinder swift apimon; do
  uid=$(api POST "$KS/v3/users" "{\"user\":{\"name\":\"$u\",\"password\":\"$u\",\"domain_id\":\"default\"}}" | field "['user']['id']")
  if [ "$u" = apimon ]; then
    api PUT "$KS/v3/projects/$APIMON_PROJECT/users/$uid/roles/$ADMIN_ROLE" >/dev/null
  else
    for r in "$ADMIN_ROLE" "$SERVICE_ROLE"; do api PUT "$KS/v3/projects/$SERVICE_PROJECT/users/$uid/roles/$r" >/dev/null; done
  fi
done
endpoint() { # type name url
  local sid
  sid=$(api POST "$KS/v3/services" "{\"service\":{\"type\":\"$1\",\"name\":\"$2\"}}" | field "['service']['id']")
  for i in public internal admin; do
    api POST "$KS/v3/endpoints" "{\"endpoint\":{\"service_id\":\"$sid\",\"interface\":\"$i\",\"url\":\"$3\",\"region_id\":\"RegionOne\"}}" >/dev/null
  done
}
endpoint compute nova "http://127.0.0.1:8774/v2.1"
endpoint network neutron "http://127.0.0.1:9696"
endpoint image glance "http://127.0.0.1:9292"
endpoint placement placement "http://127.0.0.1:8778"
endpoint volumev3 cinderv3 'http://127.0.0.1:8776/v3/%(project_id)s'
endpoint block-storage cinder 'http://127.0.0.1:8776/v3/%(project_id)s'
endpoint object-store swift 'http://127.0.0.1:8080/v1/AUTH_%(project_id)s'

log "placement"
mkdir -p "$S/placement"
{ printf '[placement_database]\nconnection = %s/placement\n[api]\nauth_strategy = keystone\n' "$DB"; authtoken placement; } >"$S/placement/placement.conf"
placement-manage --config-file "$S/placement/placement.conf" db sync >"$S/logs/placement-manage.log" 2>&1
OS_PLACEMENT_CONFIG_DIR="$S/placement" spawn placement "${UWSGI[@]}" \
  --http-socket 127.0.0.1:8778 --wsgi-file /usr/bin/placement-api

log "glance"
mkdir -p "$S/glance/images"
{ cat <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 1
enabled_backends = fs:file
[database]
connection = $DB/glance
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $S/glance/images
[oslo_concurrency]
lock_path = $S/glance
EOF
authtoken glance; } >"$S/glance/glance-api.conf"
glance-manage --config-file "$S/glance/glance-api.conf" db_sync >"$S/logs/glance-manage.log" 2>&1
spawn glance glance-api --config-file "$S/glance/glance-api.conf"

log "neutron"
mkdir -p "$S/neutron/pylib/apimon_fake_mech" "$S/neutron/pylib/apimon_fake_mech-1.0.dist-info"
# No stock mechanism driver binds ports without an agent: this one binds
# every port to the first segment, so Nova can boot servers.
cat >"$S/neutron/pylib/apimon_fake_mech/__init__.py" <<'EOF'
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class FakeMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], 'ovs', {'port_filter': True},
                                status=constants.PORT_STATUS_ACTIVE)
            return
EOF
printf 'Metadata-Version: 2.1\nName: apimon-fake-mech\nVersion: 1.0\n' >"$S/neutron/pylib/apimon_fake_mech-1.0.dist-info/METADATA"
printf '[neutron.ml2.mechanism_drivers]\napimon_fake = apimon_fake_mech:FakeMechanismDriver\n' >"$S/neutron/pylib/apimon_fake_mech-1.0.dist-info/entry_points.txt"
{ cat <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = 9696
api_workers = 1
rpc_workers = 0
auth_strategy = keystone
transport_url = $MQ
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = $DB/neutron
[oslo_concurrency]
lock_path = $S/neutron
EOF
authtoken neutron; } >"$S/neutron/neutron.conf"
cat >"$S/neutron/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,vlan,vxlan,local
tenant_network_types = vxlan
mechanism_drivers = apimon_fake
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1:1000
EOF
NEUTRON_CONF=(--config-file "$S/neutron/neutron.conf" --config-file "$S/neutron/ml2_conf.ini")
neutron-db-manage "${NEUTRON_CONF[@]}" upgrade heads >"$S/logs/neutron-db-manage.log" 2>&1
PYTHONPATH="$S/neutron/pylib" spawn neutron neutron-server "${NEUTRON_CONF[@]}"

log "nova"
mkdir -p "$S/nova/state"
service_creds() { # section user
  printf '[%s]\nauth_url = %s\nauth_type = password\nproject_domain_name = Default\nuser_domain_name = Default\nproject_name = service\nusername = %s\npassword = %s\nregion_name = RegionOne\n' "$1" "$KS" "$2" "$2"
}
{ cat <<EOF
[DEFAULT]
compute_driver = fake.FakeDriver
vif_plugging_is_fatal = False
vif_plugging_timeout = 0
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
enabled_apis = osapi_compute
allow_resize_to_same_host = True
transport_url = $MQ
my_ip = 127.0.0.1
state_path = $S/nova/state
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 30
[oslo_messaging_notifications]
driver = noop
[notifications]
notify_on_state_change = vm_state
[vnc]
enabled = false
[oslo_concurrency]
lock_path = $S/nova
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[cinder]
os_region_name = RegionOne
EOF
authtoken nova; service_creds placement placement; service_creds neutron neutron
service_creds service_user nova; printf 'send_service_user_token = true\n'; } >"$S/nova/nova.conf"
NOVA=(--config-file "$S/nova/nova.conf")
nm() { nova-manage "${NOVA[@]}" "$@" >>"$S/logs/nova-manage.log" 2>&1; }
nm api_db sync
nm cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
nm cell_v2 create_cell --name cell1
nm db sync
spawn nova-api nova-api "${NOVA[@]}"
spawn nova-conductor nova-conductor "${NOVA[@]}"
spawn nova-scheduler nova-scheduler "${NOVA[@]}"

log "cinder"
mkdir -p "$S/cinder/state" "$S/cinder/coordination" "$S/cinder/pylib" "$S/cinder/volumes"
# The fake LVM driver logs instead of creating block devices, but a volume
# made from an image (boot from volume) is written by qemu-img at the
# driver's local path, under /dev/mapper: here, a file of the state dir.
cat >"$S/cinder/pylib/apimon_test_volumes.py" <<EOF
import os
from cinder.tests.fake_driver import FakeLoggingVolumeDriver

DIR = "$S/cinder/volumes"

class FileBackedFakeDriver(FakeLoggingVolumeDriver):
    def local_path(self, volume, vg=None):
        return os.path.join(DIR, volume.name)

    def delete_volume(self, volume):
        super().delete_volume(volume)
        try:
            os.unlink(self.local_path(volume))
        except FileNotFoundError:
            pass
EOF
{ cat <<EOF
[DEFAULT]
enabled_backends = fake
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
transport_url = $MQ
auth_strategy = keystone
state_path = $S/cinder/state
glance_api_servers = http://127.0.0.1:9292
[database]
connection = $DB/cinder
[fake]
volume_driver = apimon_test_volumes.FileBackedFakeDriver
volume_backend_name = fake
[coordination]
backend_url = file://$S/cinder/coordination
[oslo_concurrency]
lock_path = $S/cinder
EOF
authtoken cinder; printf 'service_token_roles_required = true\n'; service_creds nova nova; } >"$S/cinder/cinder.conf"
CINDER=(--config-file "$S/cinder/cinder.conf")
cinder-manage "${CINDER[@]}" db sync >"$S/logs/cinder-manage.log" 2>&1
spawn cinder-api cinder-api "${CINDER[@]}"
spawn cinder-scheduler cinder-scheduler "${CINDER[@]}"
PYTHONPATH="$S/cinder/pylib${PYTHONPATH:+:$PYTHONPATH}" spawn cinder-volume cinder-volume "${CINDER[@]}"

log "swift"
# One replica on a directory (mount_check off), rings and configs in the
# state dir; the package's /etc/swift/swift.conf (hash, policy 0) is read as is.
SW="$S/swift"; mkdir -p "$SW/node/d1"
swift_server() { # kind port
  cat >"$SW/$1-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
devices = $SW/node
mount_check = false
swift_dir = $SW
workers = 0
[pipeline:main]
pipeline = $1-server
[app:$1-server]
use = egg:swift#$1
EOF
  swift-ring-builder "$SW/$1.builder" create 6 1 1 >>"$S/logs/swift-ring.log"
  swift-ring-builder "$SW/$1.builder" add "r1z1-127.0.0.1:$2/d1" 100 >>"$S/logs/swift-ring.log"
  swift-ring-builder "$SW/$1.builder" rebalance >>"$S/logs/swift-ring.log" || true
  [ -f "$SW/$1.ring.gz" ] || die "no $1 ring; see $S/logs/swift-ring.log"
  spawn "swift-$1" "swift-$1-server" "$SW/$1-server.conf"
}
swift_server account "$(free_port)"
swift_server container "$(free_port)"
swift_server object "$(free_port)"
{ cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = 8080
swift_dir = $SW
workers = 0
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats tempurl authtoken keystoneauth proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:tempurl]
use = egg:swift#tempurl
[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
EOF
authtoken swift | tail -n +2; } >"$SW/proxy-server.conf"
spawn swift-proxy swift-proxy-server "$SW/proxy-server.conf"

log "waiting for the APIs"
for url in http://127.0.0.1:8778 http://127.0.0.1:9292 http://127.0.0.1:9696 http://127.0.0.1:8774 http://127.0.0.1:8776 http://127.0.0.1:8080/healthcheck; do wait_http "$url" 120; done

log "nova-compute (fake driver) and host discovery"
# Started last: it registers with Placement and Keystone right away.
spawn nova-compute $PY -c 'import sys; from nova.cmd.compute import main; sys.exit(main())' "${NOVA[@]}"
mapped=""
for _ in $(seq 90); do
  nm cell_v2 discover_hosts
  if [ "$(mariadb -S "$S/run/mysql.sock" -uroot -N -e 'SELECT COUNT(*) FROM nova_api.host_mappings')" != 0 ]; then mapped=1; break; fi
  kill -0 "$(cat "$S/pids/nova-compute.pid")" 2>/dev/null || die "nova-compute exited; see $S/logs/nova-compute.out"
  sleep 1
done
[ -n "$mapped" ] || die "the compute host was never mapped to a cell"

log "flavors, image, external network"
# x9.impossible fits no host: Nova schedules it to ERROR ("No valid host").
# The example repository's flavors are among them, so it applies here as is.
for f in "m1.small 1 512 1" "s3.medium.2 1 2048 10" "s3.small.1 1 1024 10" "s3.large.2 2 4096 10" "s3.large.4 2 8192 10" "x9.impossible 64 8388608 10"; do
  set -- $f
  api POST http://127.0.0.1:8774/v2.1/flavors "{\"flavor\":{\"name\":\"$1\",\"vcpus\":$2,\"ram\":$3,\"disk\":$4}}" >/dev/null
done
IMAGE=$(api POST http://127.0.0.1:9292/v2/images '{"name":"Ubuntu 24.04","disk_format":"raw","container_format":"bare","visibility":"public"}' | field "['id']")
head -c 1048576 /dev/zero >"$S/image.raw"
curl -s -X PUT -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/octet-stream' --data-binary @"$S/image.raw" "http://127.0.0.1:9292/v2/images/$IMAGE/file" >/dev/null
NET=$(api POST http://127.0.0.1:9696/v2.0/networks '{"network":{"name":"admin_external_net","router:external":true,"shared":true,"provider:network_type":"flat","provider:physical_network":"public"}}' | field "['network']['id']")
api POST http://127.0.0.1:9696/v2.0/subnets "{\"subnet\":{\"network_id\":\"$NET\",\"ip_version\":4,\"cidr\":\"198.51.100.0/24\",\"enable_dhcp\":false}}" >/dev/null

log "quotas: none for project apimon (the benchmark boots 50 servers)"
ADMIN_PROJECT=$(id_of projects admin)
api PUT "http://127.0.0.1:8774/v2.1/os-quota-sets/$APIMON_PROJECT" '{"quota_set":{"instances":-1,"cores":-1,"ram":-1,"key_pairs":-1,"metadata_items":-1}}' >/dev/null
api PUT "http://127.0.0.1:9696/v2.0/quotas/$APIMON_PROJECT" '{"quota":{"network":-1,"subnet":-1,"port":-1,"security_group":-1,"security_group_rule":-1,"floatingip":-1,"router":-1}}' >/dev/null
api PUT "http://127.0.0.1:8776/v3/$ADMIN_PROJECT/os-quota-sets/$APIMON_PROJECT" '{"quota_set":{"volumes":-1,"gigabytes":-1,"snapshots":-1,"per_volume_gigabytes":-1}}' >/dev/null
# The example repository's volume type.
api POST "http://127.0.0.1:8776/v3/$ADMIN_PROJECT/types" '{"volume_type":{"name":"SSD","os-volume-type-access:is_public":true}}' >/dev/null

cat >"$S/clouds.yaml" <<EOF
clouds:
  apimon-test:
    auth:
      auth_url: $KS/v3
      username: apimon
      password: apimon
      project_name: apimon
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
EOF
printf 'export OS_CLIENT_CONFIG_FILE=%s/clouds.yaml\nexport OS_CLOUD=apimon-test\n' "$S" >"$S/env"
log "OpenStack is up: $S/clouds.yaml (cloud apimon-test)"
