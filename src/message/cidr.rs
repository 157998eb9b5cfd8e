//! Address blocks (`10.0.0.0/8`, `2001:db8::/32`, a bare address) over
//! std's address types, and the ordered `allow`/`deny` rules made of them.
//! An IPv4 block is held as its IPv4-mapped IPv6 block (`::ffff:0:0/96`
//! and below), so an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`) matches
//! IPv4 rules with no conversion per request.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One block of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network, as IPv6 bits (IPv4 mapped), host bits zero.
    bits: u128,
    /// Leading bits that count, in the IPv6 space (an IPv4 `/8` is 104).
    prefix: u8,
}

/// An address as the 128 bits [`Cidr`] compares (IPv4 mapped).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

impl Cidr {
    /// Every address, IPv4 and IPv6 (nginx's `all`).
    pub const ALL: Cidr = Cidr { bits: 0, prefix: 0 };

    /// `a.b.c.d/n`, `x::y/n`, or one address. Host bits past the prefix
    /// are refused (`10.1.0.0/8` is most likely a typo), as is anything
    /// std does not read as an address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("`{text}`: the prefix length must be 0 to {max}")),
            },
        };
        let prefix = if ip.is_ipv4() { len + 96 } else { len };
        let cidr = Cidr {
            bits: bits(ip) & mask(prefix),
            prefix,
        };
        if cidr.bits != bits(ip) {
            return Err(format!(
                "`{text}` has bits set past its /{len} prefix (did you mean `{cidr}`?)"
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        bits(ip) & mask(self.prefix) == self.bits
    }

    /// An IPv4 block (the mapped range, `::ffff:0:0/96` and below).
    fn is_ipv4(&self) -> bool {
        self.prefix >= 96 && self.bits >> 32 == 0xffff
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv4() {
            // The low 32 bits; the cast keeps exactly those.
            let v4 = Ipv4Addr::from(self.bits as u32);
            write!(f, "{v4}/{}", self.prefix - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.bits), self.prefix)
        }
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether some block of `set` holds `ip`.
pub(crate) fn any_contains(set: &[Cidr], ip: IpAddr) -> bool {
    set.iter().any(|c| c.contains(ip))
}

/// One `allow`/`deny` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub from: Cidr,
}

impl Rule {
    /// `allow 10.0.0.0/8`, `deny 2001:db8::/32`, `deny all` (nginx's
    /// words).
    pub fn parse(text: &str) -> Result<Rule, String> {
        let mut words = text.split_ascii_whitespace();
        let allow = match words.next() {
            Some("allow") => true,
            Some("deny") => false,
            _ => {
                return Err(format!(
                    "`{text}`: write `allow ADDRESS`, `deny ADDRESS` (an address or CIDR block) or `allow all`/`deny all`"
                ))
            }
        };
        let from = match (words.next(), words.next()) {
            (Some("all"), None) => Cidr::ALL,
            (Some(block), None) => Cidr::parse(block)?,
            _ => {
                return Err(format!(
                    "`{text}`: one address, CIDR block or `all` after `{}`",
                    if allow { "allow" } else { "deny" }
                ))
            }
        };
        Ok(Rule { allow, from })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allow { "allow " } else { "deny " })?;
        if self.from == Cidr::ALL {
            f.write_str("all")
        } else {
            self.from.fmt(f)
        }
    }
}

/// Ordered rules, as nginx's `allow`/`deny`: the first that holds the
/// address decides; an address that none holds is allowed (so a list
/// meant to keep others out ends with `deny all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access(Box<[Rule]>);

impl Access {
    pub fn new(rules: Vec<Rule>) -> Access {
        Access(rules.into_boxed_slice())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    /// Whether a request from `ip` may go on.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .find(|r| r.from.contains(ip))
            .is_none_or(|r| r.allow)
    }
}

impl serde::Serialize for Access {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_hold_their_addresses_and_no_others() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(!c.contains(ip("::a00:1")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let lo = Cidr::parse("::1/128").unwrap();
        assert!(lo.contains(ip("::1")) && !lo.contains(ip("127.0.0.1")));
        let v4_all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(v4_all.contains(ip("203.0.113.9")) && !v4_all.contains(ip("2001:db8::1")));
        assert!(Cidr::ALL.contains(ip("2001:db8::1")) && Cidr::ALL.contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("1.2.3.4")));
    }

    #[test]
    fn bad_blocks_say_why() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.1.0.0/8",
            "example.com",
            "",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let e = Cidr::parse("10.1.0.0/8").unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn blocks_print_as_written() {
        for s in [
            "10.0.0.0/8",
            "192.0.2.7/32",
            "2001:db8::/32",
            "::1/128",
            "0.0.0.0/0",
        ] {
            assert_eq!(Cidr::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Rule::parse("deny  all").unwrap().to_string(), "deny all");
    }

    #[test]
    fn the_first_matching_rule_decides_and_none_allows() {
        let rules = [
            "allow 10.1.0.0/16",
            "deny 10.0.0.0/8",
            "allow ::1",
            "deny all",
        ];
        let a = Access::new(rules.iter().map(|r| Rule::parse(r).unwrap()).collect());
        assert!(a.allows(ip("10.1.2.3")));
        assert!(!a.allows(ip("10.2.0.1")));
        assert!(a.allows(ip("::1")));
        assert!(!a.allows(ip("::2")));
        assert!(!a.allows(ip("192.0.2.1")));
        assert!(!a.allows(ip("::ffff:10.2.0.1")));
        assert!(a.allows(ip("::ffff:10.1.0.1")));
        let open = Access::new(vec![Rule::parse("deny 192.0.2.0/24").unwrap()]);
        assert!(open.allows(ip("198.51.100.1")) && !open.allows(ip("192.0.2.1")));
        assert!(Access::new(Vec::new()).allows(ip("192.0.2.1")));
    }

    #[test]
    fn rules_are_allow_or_deny_and_one_block() {
        for bad in [
            "permit 10.0.0.0/8",
            "allow",
            "deny 10.0.0.0/8 ::1",
            "allow 300.0.0.1",
            "",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Rule::parse("allow 10.0.0.0/8").unwrap(),
            Rule {
                allow: true,
                from: Cidr::parse("10.0.0.0/8").unwrap()
            }
        );
    }
}
