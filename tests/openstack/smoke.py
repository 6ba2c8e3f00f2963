"""Manual smoke check of the control plane tests/openstack/up.sh starts.

Uses Debian's python3-openstacksdk (a dependency of the OpenStack packages):
    OS_CLIENT_CONFIG_FILE=<state>/clouds.yaml /usr/bin/python3 tests/openstack/smoke.py
Not part of the test suite (see README.md here).
"""
import time, openstack
conn = openstack.connect(cloud="apimon-test")
t0 = time.time()
print("flavors", [f.name for f in conn.compute.flavors()])
print("images", [i.name for i in conn.image.images()])
kp = conn.compute.create_keypair(name="k1", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF t")
sg = conn.network.create_security_group(name="sg1", description="d")
conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")
net = conn.network.create_network(name="n1")
sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="192.168.10.0/24", name="s1")
flavor = conn.compute.find_flavor("s3.medium.2"); image = conn.image.find_image("Ubuntu 24.04")
srv = conn.compute.create_server(name="vm1", flavor_id=flavor.id, image_id=image.id, networks=[{"uuid": net.id}], key_name="k1", security_groups=[{"name": "sg1"}], metadata={"apimon:managed": "true"}, user_data="I2Nsb3VkLWNvbmZpZw==")
srv = conn.compute.wait_for_server(srv, wait=120)
print("server", srv.status, time.time() - t0)
vol = conn.block_storage.create_volume(name="v1", size=1)
vol = conn.block_storage.wait_for_status(vol, status="available", wait=60)
print("volume", vol.status)
att = conn.compute.create_volume_attachment(srv, volume_id=vol.id)
vol = conn.block_storage.wait_for_status(vol, status="in-use", wait=60)
print("attached", vol.status)
ext = conn.network.find_network("admin_external_net")
router = conn.network.create_router(name="r1", external_gateway_info={"network_id": ext.id})
conn.network.add_interface_to_router(router, subnet_id=sub.id)
port = next(conn.network.ports(device_id=srv.id))
fip = conn.network.create_ip(floating_network_id=ext.id, port_id=port.id)
print("floating ip", fip.floating_ip_address)
conn.compute.set_server_metadata(srv, team="apimon")
print("metadata", conn.compute.get_server_metadata(srv).metadata)
servers = list(conn.compute.servers(details=True))
print("servers listed", len(servers))
# cleanup
conn.network.delete_ip(fip)
conn.compute.delete(f"/servers/{srv.id}/os-volume_attachments/{vol.id}")  # the SDK helper's argument order changed between releases
conn.block_storage.wait_for_status(vol, status="available", wait=60)
conn.block_storage.delete_volume(vol)
conn.compute.delete_server(srv); conn.compute.wait_for_delete(srv, wait=60)
conn.network.remove_interface_from_router(router, subnet_id=sub.id); conn.network.delete_router(router)
conn.network.delete_network(net); conn.network.delete_security_group(sg); conn.compute.delete_keypair(kp)
print("all ok", time.time() - t0)
