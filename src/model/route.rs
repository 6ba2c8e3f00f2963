//! Whether apimon reaches an environment's HTTP API through its SSH
//! bastion or directly: pure, from the endpoint's `via` and the URL.
//! InfluxDB and Grafana usually sit on the environment's private network,
//! which a workstation reaches only through the bastion; the daemon on
//! the bastion is on that network itself and always goes direct.

use std::net::IpAddr;

use super::raw::Via;
use super::Environment;

/// Where a request to an endpoint goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight from the applying machine.
    Direct,
    /// Through a `direct-tcpip` channel of the environment's bastion.
    Bastion,
}

/// The route to `url` of `env`, as `via` asks, from a machine that is on
/// the environment's network (`on_bastion`: the daemon) or not.
pub fn route(env: &Environment, url: &str, via: Via, on_bastion: bool) -> Route {
    if on_bastion || env.ssh.is_none() {
        return Route::Direct;
    }
    match via {
        Via::Direct => Route::Direct,
        Via::Bastion => Route::Bastion,
        Via::Auto if on_private_network(env, url) => Route::Bastion,
        Via::Auto => Route::Direct,
    }
}

/// Whether a credential sent to `url` is protected on its way: over
/// https://, to this machine (loopback), or over http:// to a host of the
/// environment's private network (through the bastion's SSH tunnel from a
/// workstation, over that network from the bastion itself). Plain http://
/// (or git://) anywhere else is readable on the path — through the bastion
/// too: its last hop is in clear.
pub fn protected(env: &Environment, url: &str) -> bool {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    let loopback = crate::url::authority(url).is_some_and(|a| crate::url::is_loopback(a.host));
    match scheme.as_str() {
        "https" => true,
        "http" => loopback || on_private_network(env, url),
        _ => loopback,
    }
}

/// Whether the URL's host is a declared host (by name or address) or an
/// address in one of the environment's subnets; a loopback address never
/// is (it names the applying machine itself).
fn on_private_network(env: &Environment, url: &str) -> bool {
    let Some(host) = crate::url::authority(url).map(|a| a.host.to_ascii_lowercase()) else {
        return false;
    };
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => false,
        Ok(ip) => {
            env.hosts.iter().any(|h| h.address.map(IpAddr::V4) == Some(ip))
                || env
                    .networks
                    .iter()
                    .flat_map(|n| &n.subnets)
                    .any(|subnet| subnet.cidr.contains(&ip))
        }
        Err(_) => env.hosts.iter().any(|h| h.name.eq_ignore_ascii_case(&host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> crate::model::DesiredState {
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
        crate::model::load_repository(&repo).expect("the example loads")
    }

    macro_rules! routes {
        ($($name:ident: ($url:expr, $via:expr, $on_bastion:expr) => $route:expr;)*) => {$(
            #[test]
            fn $name() {
                let state = example();
                let env = &state.environments["outside"];
                assert_eq!(route(env, $url, $via, $on_bastion), $route);
            }
        )*};
    }

    // The example's `outside` network is 192.168.10.0/24; its InfluxDB host
    // is outside-influxdb at 192.168.10.30.
    routes! {
        an_address_in_a_subnet_goes_through_the_bastion: ("http://192.168.10.30:8086", Via::Auto, false) => Route::Bastion;
        a_declared_hosts_name_goes_through_the_bastion: ("http://outside-influxdb:8086", Via::Auto, false) => Route::Bastion;
        a_public_name_goes_direct: ("https://grafana.example.net", Via::Auto, false) => Route::Direct;
        an_address_elsewhere_goes_direct: ("http://203.0.113.9:8086", Via::Auto, false) => Route::Direct;
        loopback_is_the_applying_machine: ("http://127.0.0.1:8086", Via::Auto, false) => Route::Direct;
        via_bastion_is_obeyed: ("http://127.0.0.5:8086", Via::Bastion, false) => Route::Bastion;
        via_direct_is_obeyed: ("http://192.168.10.30:8086", Via::Direct, false) => Route::Direct;
        the_daemon_on_the_bastion_goes_direct: ("http://192.168.10.30:8086", Via::Bastion, true) => Route::Direct;
    }

    #[test]
    fn credentials_travel_protected_only() {
        let state = example();
        let env = &state.environments["outside"];
        let protected = |url: &str| protected(env, url);
        assert!(protected("https://influx.example.net"));
        assert!(protected("http://127.0.0.1:8086"), "this machine");
        assert!(protected("http://192.168.10.30:8086"), "the private network");
        assert!(protected("http://outside-influxdb:8086"), "a declared host");
        assert!(!protected("http://203.0.113.9:8086"), "in clear, elsewhere");
        assert!(!protected("http://influx.example.net:8086"), "the bastion's last hop is in clear");
        assert!(!protected("git://192.168.10.30/r.git"));
    }
}
