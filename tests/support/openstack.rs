//! A REAL OpenStack control plane (Keystone, Nova with the fake driver,
//! Neutron, Glance, Cinder, Swift from Debian packages) for tests.
//!
//! Booting it takes about half a minute, so it is started once per suite
//! run by `scripts/test.sh` (`tests/openstack/up.sh`, stopped by
//! `down.sh`), which exports `APIMON_TEST_OPENSTACK` = its state directory.
//! Without it the tests skip loudly, except in CI (`CI=true`), where that is
//! a failure. Tests share the cloud, so each works in an environment of its
//! own, named after the test.
//!
//! [`Api`] is the test's own view of the cloud, with plain REST calls (not
//! apimon's client), to check what apimon did and to make resources behind
//! its back.

use std::path::PathBuf;

use serde_json::{json, Value};

const KEYSTONE: &str = "http://127.0.0.1:5000/v3";
const NOVA: &str = "http://127.0.0.1:8774/v2.1";
const NEUTRON: &str = "http://127.0.0.1:9696/v2.0";
const SWIFT: &str = "http://127.0.0.1:8080/v1";

/// The cloud `tests/openstack/up.sh` started.
pub struct TestCloud {
    /// Its clouds.yaml (cloud `apimon-test`, project and user `apimon`).
    pub clouds_file: PathBuf,
}

impl TestCloud {
    /// The running cloud, or `None` (skip) outside CI when none was started.
    pub fn get() -> Option<Self> {
        let Some(dir) = std::env::var_os("APIMON_TEST_OPENSTACK") else {
            let message = "no OpenStack control plane: run the suite with scripts/test.sh, or start tests/openstack/up.sh DIR and set APIMON_TEST_OPENSTACK=DIR";
            super::skip(message);
            return None;
        };
        let clouds_file = PathBuf::from(dir).join("clouds.yaml");
        assert!(clouds_file.is_file(), "{} is missing: did up.sh finish?", clouds_file.display());
        Some(Self { clouds_file })
    }

    /// A session as user `apimon` in project `apimon`.
    pub async fn api(&self) -> Api {
        Api::login("apimon", "apimon", "apimon").await
    }
}

/// Plain REST calls with one token.
pub struct Api {
    http: reqwest::Client,
    token: String,
    /// The user's id.
    pub user_id: String,
    /// The project's id.
    pub project_id: String,
}

impl Api {
    async fn login(user: &str, password: &str, project: &str) -> Self {
        let http = reqwest::Client::new();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}
        }});
        let response = http
            .post(format!("{KEYSTONE}/auth/tokens"))
            .json(&body)
            .send()
            .await
            .expect("keystone");
        assert!(response.status().is_success(), "login failed: {}", response.status());
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .expect("token header")
            .to_owned();
        let body: Value = response.json().await.expect("token body");
        let user_id = body["token"]["user"]["id"].as_str().expect("user id").to_owned();
        let project_id = body["token"]["project"]["id"].as_str().expect("project id").to_owned();
        Self { http, token, user_id, project_id }
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, url).header("X-Auth-Token", &self.token);
        if url.starts_with(NOVA) {
            // 2.47: the flavor's name in server details.
            request = request.header("OpenStack-API-Version", "compute 2.47");
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("openstack request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET, expecting success.
    pub async fn get(&self, url: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, url, None).await;
        assert!((200..300).contains(&status), "GET {url}: HTTP {status}: {body}");
        body
    }

    /// POST, expecting success.
    pub async fn post(&self, url: &str, body: Value) -> Value {
        let (status, answer) = self.call(reqwest::Method::POST, url, Some(body)).await;
        assert!((200..300).contains(&status), "POST {url}: HTTP {status}: {answer}");
        answer
    }

    /// DELETE; the status.
    pub async fn delete(&self, url: &str) -> u16 {
        self.call(reqwest::Method::DELETE, url, None).await.0
    }

    /// One Swift request on `path` below the project's account (with the
    /// token unless `anonymous`; a PUT sends `body`): status, headers
    /// (lowercase names), body.
    pub async fn swift(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        anonymous: bool,
    ) -> (u16, std::collections::BTreeMap<String, String>, String) {
        self.swift_put_body(method, path, headers, anonymous, "").await
    }

    /// As [`swift`](Self::swift), a PUT sending `body`.
    pub async fn swift_put_body(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        anonymous: bool,
        body: &str,
    ) -> (u16, std::collections::BTreeMap<String, String>, String) {
        let method_has_body = method == reqwest::Method::PUT;
        let url = format!("{SWIFT}/AUTH_{}/{path}", self.project_id);
        let mut request = self.http.request(method, &url);
        if !anonymous {
            request = request.header("X-Auth-Token", &self.token);
        }
        for (key, value) in headers {
            request = request.header(*key, *value);
        }
        if method_has_body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("swift request");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        (status, headers, response.text().await.unwrap_or_default())
    }

    /// A region of its own whose catalog sends compute, network, image and
    /// block-storage requests to `ports` (relays in front of the real
    /// services, in that order); the other tests keep using RegionOne.
    pub async fn relay_region(&self, region: &str, ports: [u16; 4]) {
        self.post(&format!("{KEYSTONE}/regions"), json!({"region": {"id": region}})).await;
        let [compute, network, image, volume] = ports;
        for (kind, url) in [
            ("compute", format!("http://127.0.0.1:{compute}/v2.1")),
            ("network", format!("http://127.0.0.1:{network}")),
            ("image", format!("http://127.0.0.1:{image}")),
            ("volumev3", format!("http://127.0.0.1:{volume}/v3/%(project_id)s")),
            ("block-storage", format!("http://127.0.0.1:{volume}/v3/%(project_id)s")),
        ] {
            let services = self.get(&format!("{KEYSTONE}/services?type={kind}")).await;
            let id = services["services"][0]["id"].as_str().expect("service").to_owned();
            let endpoint = json!({"endpoint": {"service_id": id, "interface": "public", "url": url, "region_id": region}});
            self.post(&format!("{KEYSTONE}/endpoints"), endpoint).await;
        }
    }

    /// A region `region` without endpoints.
    pub async fn create_region(&self, region: &str) {
        self.post(&format!("{KEYSTONE}/regions"), json!({"region": {"id": region}})).await;
    }

    /// A service of type `service_type` without endpoints: its id.
    pub async fn create_service(&self, service_type: &str) -> String {
        let service = self
            .post(
                &format!("{KEYSTONE}/services"),
                json!({"service": {"type": service_type, "name": service_type}}),
            )
            .await;
        service["service"]["id"].as_str().expect("service id").to_owned()
    }

    /// A public endpoint of service `id` in `region` at `url`.
    pub async fn add_endpoint(&self, id: &str, region: &str, url: &str) {
        let endpoint = json!({"endpoint": {"service_id": id, "interface": "public", "url": url, "region_id": region}});
        self.post(&format!("{KEYSTONE}/endpoints"), endpoint).await;
    }

    /// A keypair `name` (Nova makes no key: a fixed public one).
    pub async fn create_keypair(&self, name: &str) {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF bench";
        self.post(
            &format!("{NOVA}/os-keypairs"),
            json!({"keypair": {"name": name, "public_key": key}}),
        )
        .await;
    }

    /// A port `name` on network `network` (an id).
    pub async fn create_port(&self, network: &str, name: &str) {
        self.post(
            &format!("{NEUTRON}/ports"),
            json!({"port": {"network_id": network, "name": name}}),
        )
        .await;
    }

    /// A service of type `service_type` of its own with one public
    /// RegionOne endpoint at `url`: its id (remove it with
    /// [`Self::remove_service`]).
    pub async fn register_service(&self, service_type: &str, url: &str) -> String {
        let service = self
            .post(
                &format!("{KEYSTONE}/services"),
                json!({"service": {"type": service_type, "name": service_type}}),
            )
            .await;
        let id = service["service"]["id"].as_str().expect("service id").to_owned();
        let endpoint = json!({"endpoint": {"service_id": id, "interface": "public", "url": url, "region_id": "RegionOne"}});
        self.post(&format!("{KEYSTONE}/endpoints"), endpoint).await;
        id
    }

    /// Removes a service [`Self::register_service`] made, endpoints first.
    pub async fn remove_service(&self, id: &str) {
        let endpoints = self.get(&format!("{KEYSTONE}/endpoints?service_id={id}")).await;
        for endpoint in endpoints["endpoints"].as_array().cloned().unwrap_or_default() {
            if let Some(endpoint) = endpoint["id"].as_str() {
                self.delete(&format!("{KEYSTONE}/endpoints/{endpoint}")).await;
            }
        }
        self.delete(&format!("{KEYSTONE}/services/{id}")).await;
    }

    /// The service types with a public endpoint in RegionOne.
    pub async fn public_service_types(&self) -> std::collections::BTreeSet<String> {
        let services = self.get(&format!("{KEYSTONE}/services")).await;
        let endpoints =
            self.get(&format!("{KEYSTONE}/endpoints?interface=public&region_id=RegionOne")).await;
        let type_of = |id: &str| {
            services["services"].as_array().and_then(|all| {
                all.iter()
                    .find(|s| s["id"] == id)
                    .and_then(|s| s["type"].as_str().map(str::to_owned))
            })
        };
        endpoints["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["service_id"].as_str().and_then(type_of))
            .collect()
    }

    /// A region of its own whose catalog has only `service_type` at `url`.
    pub async fn region_with(&self, region: &str, service_type: &str, url: &str) {
        self.post(&format!("{KEYSTONE}/regions"), json!({"region": {"id": region}})).await;
        let services = self.get(&format!("{KEYSTONE}/services?type={service_type}")).await;
        let id = services["services"][0]["id"].as_str().expect("service").to_owned();
        let endpoint = json!({"endpoint": {"service_id": id, "interface": "public", "url": url, "region_id": region}});
        self.post(&format!("{KEYSTONE}/endpoints"), endpoint).await;
    }

    /// Removes what [`Self::relay_region`] made.
    pub async fn remove_region(&self, region: &str) {
        let endpoints = self.get(&format!("{KEYSTONE}/endpoints?region_id={region}")).await;
        for endpoint in endpoints["endpoints"].as_array().cloned().unwrap_or_default() {
            if let Some(id) = endpoint["id"].as_str() {
                self.delete(&format!("{KEYSTONE}/endpoints/{id}")).await;
            }
        }
        self.delete(&format!("{KEYSTONE}/regions/{region}")).await;
    }

    /// The project's servers whose name starts with `prefix`, with details.
    pub async fn servers(&self, prefix: &str) -> Vec<Value> {
        let body = self.get(&format!("{NOVA}/servers/detail")).await;
        body["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    }

    /// The networks whose name starts with `prefix`.
    pub async fn networks(&self, prefix: &str) -> Vec<Value> {
        let body = self.get(&format!("{NEUTRON}/networks")).await;
        body["networks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    }

    /// The server called `name`; panics unless exactly one exists.
    pub async fn server(&self, name: &str) -> Value {
        let matching: Vec<Value> =
            self.servers(name).await.into_iter().filter(|s| s["name"] == name).collect();
        assert_eq!(matching.len(), 1, "servers named {name}: {matching:?}");
        matching.into_iter().next().expect("one server")
    }

    /// The volume called `name`.
    pub async fn volume(&self, name: &str) -> Value {
        let body =
            self.get(&format!("http://127.0.0.1:8776/v3/{}/volumes/detail", self.project_id)).await;
        body["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The floating IPs whose port belongs to server `server_id`.
    pub async fn floating_ips_of(&self, server_id: &str) -> Vec<Value> {
        let body = self.get(&format!("{NEUTRON}/floatingips?tenant_id={}", self.project_id)).await;
        body["floatingips"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["port_details"]["device_id"] == server_id)
            .collect()
    }

    /// The security group called `name` in the project.
    pub async fn security_group(&self, name: &str) -> Value {
        let body = self
            .get(&format!("{NEUTRON}/security-groups?name={name}&tenant_id={}", self.project_id))
            .await;
        body["security_groups"][0].clone()
    }

    /// An external network `name` (shared) whose one subnet is `cidr`
    /// without DHCP: a loopback-range CIDR makes floating IPs this machine
    /// answers on (every 127/8 address is local), so a test can serve a
    /// host at the address Neutron allocates. Its id.
    pub async fn create_external_network(&self, name: &str, cidr: &str) -> String {
        let network = json!({"network": {"name": name, "router:external": true, "shared": true}});
        let made = self.post(&format!("{NEUTRON}/networks"), network).await;
        let id = made["network"]["id"].as_str().expect("network id").to_owned();
        let subnet = json!({"subnet": {"network_id": id, "name": format!("{name}-subnet"), "ip_version": 4, "cidr": cidr, "enable_dhcp": false}});
        self.post(&format!("{NEUTRON}/subnets"), subnet).await;
        id
    }

    /// The names containing `part` of the project's networks, subnets,
    /// routers, ports, security groups, servers and keypairs, as
    /// `kind/name`.
    pub async fn names_containing(&self, part: &str) -> std::collections::BTreeSet<String> {
        let project = &self.project_id;
        let mut names = std::collections::BTreeSet::new();
        for (kind, url, key) in [
            ("network", format!("{NEUTRON}/networks?project_id={project}"), "networks"),
            ("subnet", format!("{NEUTRON}/subnets?project_id={project}"), "subnets"),
            ("router", format!("{NEUTRON}/routers?project_id={project}"), "routers"),
            ("port", format!("{NEUTRON}/ports?project_id={project}"), "ports"),
            (
                "security_group",
                format!("{NEUTRON}/security-groups?project_id={project}"),
                "security_groups",
            ),
            ("server", format!("{NOVA}/servers"), "servers"),
            ("keypair", format!("{NOVA}/os-keypairs"), "keypairs"),
        ] {
            let body = self.get(&url).await;
            for item in body[key].as_array().cloned().unwrap_or_default() {
                let item = if kind == "keypair" { item["keypair"].clone() } else { item };
                if let Some(name) = item["name"].as_str().filter(|n| n.contains(part)) {
                    names.insert(format!("{kind}/{name}"));
                }
            }
        }
        names
    }

    /// A network `name` without marks (nobody's platform): its id.
    pub async fn create_network(&self, name: &str) -> String {
        let made =
            self.post(&format!("{NEUTRON}/networks"), json!({"network": {"name": name}})).await;
        made["network"]["id"].as_str().expect("network id").to_owned()
    }

    /// Deletes network `id`.
    pub async fn delete_network(&self, id: &str) {
        self.delete(&format!("{NEUTRON}/networks/{id}")).await;
    }

    /// Deletes security group `id`.
    pub async fn delete_security_group(&self, id: &str) {
        self.delete(&format!("{NEUTRON}/security-groups/{id}")).await;
    }

    /// The network called `name`'s id.
    pub async fn network_id(&self, name: &str) -> String {
        let body = self.get(&format!("{NEUTRON}/networks?name={name}")).await;
        body["networks"][0]["id"].as_str().expect("network").to_owned()
    }

    /// Boots a server apimon did not create (no apimon metadata), ACTIVE.
    pub async fn create_unmanaged_server(&self, name: &str, network: &str) -> String {
        let flavors = self.get(&format!("{NOVA}/flavors?minRam=0")).await;
        let flavor = flavors["flavors"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "m1.small"))
            .and_then(|f| f["id"].as_str())
            .expect("flavor m1.small")
            .to_owned();
        let images = self.get("http://127.0.0.1:9292/v2/images?name=Ubuntu%2024.04").await;
        let image = images["images"][0]["id"].as_str().expect("image").to_owned();
        let network = self.network_id(network).await;
        let created = self
            .post(
                &format!("{NOVA}/servers"),
                json!({"server": {"name": name, "flavorRef": flavor, "imageRef": image, "networks": [{"uuid": network}], "metadata": {"owner": "someone else"}}}),
            )
            .await;
        let id = created["server"]["id"].as_str().expect("server id").to_owned();
        for _ in 0..600 {
            let server = self.get(&format!("{NOVA}/servers/{id}")).await;
            match server["server"]["status"].as_str() {
                Some("ACTIVE") => return id,
                Some("ERROR") => panic!("unmanaged server went to ERROR: {server}"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        panic!("unmanaged server {name} never became ACTIVE");
    }

    /// Makes a security group with `tags` behind apimon's back; its id.
    pub async fn create_tagged_security_group(&self, name: &str, tags: &[String]) -> String {
        let created = self
            .post(&format!("{NEUTRON}/security-groups"), json!({"security_group": {"name": name}}))
            .await;
        let id = created["security_group"]["id"].as_str().expect("group id").to_owned();
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{NEUTRON}/security-groups/{id}/tags"),
                Some(json!({"tags": tags})),
            )
            .await;
        assert!((200..300).contains(&status), "tagging: HTTP {status}: {body}");
        id
    }

    /// Whether the security group `id` exists.
    pub async fn security_group_exists(&self, id: &str) -> bool {
        self.call(reqwest::Method::GET, &format!("{NEUTRON}/security-groups/{id}"), None).await.0
            == 200
    }

    /// Sets one metadata item on a server, as a cloud platform might.
    pub async fn set_server_metadata_item(&self, id: &str, key: &str, value: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{NOVA}/servers/{id}/metadata/{key}"),
                Some(json!({"meta": {key: value}})),
            )
            .await;
        assert!((200..300).contains(&status), "metadata: HTTP {status}: {body}");
    }

    /// Removes apimon's marks from every resource marked for `env`, as the
    /// old playbooks do to servers (metadata), and a hand-built platform
    /// never had (Neutron tags, volume metadata).
    pub async fn strip_marks(&self, env: &str) {
        let marked = |v: &Value| {
            v["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| *t == format!("apimon:env={env}")))
        };
        for kind in ["networks", "subnets", "routers", "security-groups", "floatingips"] {
            let key = kind.replace('-', "_");
            let body = self.get(&format!("{NEUTRON}/{kind}")).await;
            for item in
                body[&key].as_array().cloned().unwrap_or_default().iter().filter(|v| marked(v))
            {
                let id = item["id"].as_str().expect("id");
                let status = self.delete(&format!("{NEUTRON}/{kind}/{id}/tags")).await;
                assert!((200..300).contains(&status), "untag {kind} {id}: HTTP {status}");
            }
        }
        let servers = self.get(&format!("{NOVA}/servers/detail")).await;
        for server in servers["servers"].as_array().cloned().unwrap_or_default() {
            if server["metadata"]["apimon:env"] != env {
                continue;
            }
            let id = server["id"].as_str().expect("id");
            for key in server["metadata"].as_object().expect("metadata").keys() {
                if key.starts_with("apimon:") {
                    self.delete(&format!("{NOVA}/servers/{id}/metadata/{key}")).await;
                }
            }
        }
        let cinder = format!("http://127.0.0.1:8776/v3/{}", self.project_id);
        let volumes = self.get(&format!("{cinder}/volumes/detail")).await;
        for volume in volumes["volumes"].as_array().cloned().unwrap_or_default() {
            if volume["metadata"]["apimon:env"] != env {
                continue;
            }
            let id = volume["id"].as_str().expect("id");
            for key in volume["metadata"].as_object().expect("metadata").keys() {
                if key.starts_with("apimon:") {
                    self.delete(&format!("{cinder}/volumes/{id}/metadata/{key}")).await;
                }
            }
        }
    }

    /// Marks security group `id` as environment `env`'s.
    pub async fn mark_security_group(&self, id: &str, env: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{NEUTRON}/security-groups/{id}/tags"),
                Some(json!({"tags": ["apimon:managed=true", format!("apimon:env={env}")]})),
            )
            .await;
        assert!((200..300).contains(&status), "tag: HTTP {status}: {body}");
    }

    /// Deletes a server (best effort).
    pub async fn delete_server(&self, id: &str) {
        self.delete(&format!("{NOVA}/servers/{id}")).await;
    }

    /// An application credential of the user: (id, secret).
    pub async fn application_credential(&self, name: &str) -> (String, String) {
        let body = self
            .post(
                &format!("{KEYSTONE}/users/{}/application_credentials", self.user_id),
                json!({"application_credential": {"name": name}}),
            )
            .await;
        let credential = &body["application_credential"];
        (
            credential["id"].as_str().expect("id").to_owned(),
            credential["secret"].as_str().expect("secret").to_owned(),
        )
    }
}
