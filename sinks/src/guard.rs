//! Outbound address guard: webhooks and function URLs are user input, so without a guard a
//! subscription could make the server call its own admin port, the cloud metadata service or
//! anything on the private network (SSRF). Loopback, private, link-local (which holds the
//! metadata service at 169.254.169.254) and other non-global addresses are refused unless the
//! server's configuration allows them. The check runs on every resolved address at connect
//! time, so a DNS name cannot be pointed somewhere else after the subscription was created.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

/// Which non-public destinations the server allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// 127.0.0.0/8 and ::1 (tests, sidecars).
    pub loopback: bool,
    /// RFC 1918, unique-local, shared (CGNAT) and link-local ranges.
    pub private: bool,
}

impl DestinationPolicy {
    /// Parse `--allow-destinations` values: `loopback`, `private`, `all`.
    pub fn parse(values: &[String]) -> Result<DestinationPolicy, String> {
        let mut p = DestinationPolicy::default();
        for v in values {
            match v.as_str() {
                "loopback" => p.loopback = true,
                "private" => p.private = true,
                "all" => {
                    p.loopback = true;
                    p.private = true;
                }
                other => {
                    return Err(format!(
                        "unknown destination class '{other}': use loopback, private or all"
                    ));
                }
            }
        }
        Ok(p)
    }

    /// `Err` names the address class and how to allow it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let class = match ip {
            IpAddr::V4(a) if a.is_loopback() => Some(("loopback", self.loopback)),
            IpAddr::V6(a) if a.is_loopback() => Some(("loopback", self.loopback)),
            IpAddr::V4(a) if a.is_private() || a.is_link_local() || is_shared(a.octets()) => {
                Some(("private or link-local", self.private))
            }
            IpAddr::V6(a) if (a.segments()[0] & 0xfe00) == 0xfc00 => {
                Some(("private or link-local", self.private))
            }
            IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => {
                Some(("private or link-local", self.private))
            }
            IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
                Some(("not a unicast", false))
            }
            IpAddr::V6(a) if a.is_unspecified() || a.is_multicast() => {
                Some(("not a unicast", false))
            }
            _ => None,
        };
        match class {
            None | Some((_, true)) => Ok(()),
            Some(("not a unicast", _)) => Err(format!("destination address {ip} is not unicast")),
            Some((what, false)) => Err(format!(
                "destination address {ip} is {what}; the server refuses it unless started with \
                 --allow-destinations {}",
                if what == "loopback" {
                    "loopback"
                } else {
                    "private"
                }
            )),
        }
    }
}

/// 100.64.0.0/10, carrier-grade NAT space: not reachable from the internet either.
fn is_shared(o: [u8; 4]) -> bool {
    o[0] == 100 && (o[1] & 0xc0) == 64
}

/// A DNS resolver for hyper's connector that drops refused addresses, so a request to a
/// forbidden destination fails with the guard's reason instead of connecting.
#[derive(Clone)]
pub struct GuardedResolver {
    pub policy: DestinationPolicy,
}

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(reason)) => Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host}: {reason}"),
                )),
                (true, None) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_addresses_unless_allowed() {
        let strict = DestinationPolicy::default();
        for ip in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(strict.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(strict.check("93.184.216.34".parse().unwrap()).is_ok());
        let loopback = DestinationPolicy::parse(&["loopback".into()]).unwrap();
        assert!(loopback.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(loopback.check("10.0.0.1".parse().unwrap()).is_err());
        let msg = strict.check("127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(msg.contains("--allow-destinations loopback"), "{msg}");
        assert!(DestinationPolicy::parse(&["lan".into()]).is_err());
    }
}
