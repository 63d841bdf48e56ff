//! Locating a SIP server from a domain (RFC 3263 section 4), as pure rules: which SRV names to
//! ask for after the NAPTR answer, and in which order to try the SRV targets. The daemon does
//! the DNS queries and feeds the answers in.

/// A transport RFC 3263 can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocatedTransport {
    Udp,
    Tcp,
    Tls,
}

impl LocatedTransport {
    /// The NAPTR service field (RFC 3263 section 4.1).
    fn naptr_service(self) -> &'static str {
        match self {
            LocatedTransport::Udp => "SIP+D2U",
            LocatedTransport::Tcp => "SIP+D2T",
            LocatedTransport::Tls => "SIPS+D2T",
        }
    }

    /// The SRV name prefix when there is no usable NAPTR record.
    fn srv_prefix(self) -> &'static str {
        match self {
            LocatedTransport::Udp => "_sip._udp.",
            LocatedTransport::Tcp => "_sip._tcp.",
            LocatedTransport::Tls => "_sips._tcp.",
        }
    }

    /// RFC 3263 section 4.2: 5060, or 5061 for TLS.
    pub fn default_port(self) -> u16 {
        if self == LocatedTransport::Tls { 5061 } else { 5060 }
    }
}

/// A NAPTR record, as DNS gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    pub replacement: String,
}

/// An SRV record, as DNS gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The SRV names to look up, most preferred first: from the NAPTR records that name a
/// transport in `allowed` (`S` flag, order then preference), else the SRV names of RFC 3263
/// 4.1 under `domain`: `_sips._tcp` for a `sips:` URI (`secure`), else `_sip._tcp` and
/// `_sip._udp`. A `sips:` URI takes only TLS.
pub fn srv_names(
    domain: &str,
    naptr: &[NaptrRecord],
    allowed: &[LocatedTransport],
    secure: bool,
) -> Vec<(LocatedTransport, String)> {
    let usable = |t: &LocatedTransport| allowed.contains(t) && (!secure || *t == LocatedTransport::Tls);
    let mut records: Vec<&NaptrRecord> = naptr.iter().filter(|r| r.flags.eq_ignore_ascii_case("s")).collect();
    records.sort_by_key(|r| (r.order, r.preference));
    let from_naptr: Vec<(LocatedTransport, String)> = records
        .into_iter()
        .filter_map(|r| {
            let transport = [LocatedTransport::Tls, LocatedTransport::Tcp, LocatedTransport::Udp]
                .into_iter()
                .find(|t| r.service.eq_ignore_ascii_case(t.naptr_service()))?;
            usable(&transport).then(|| (transport, r.replacement.trim_end_matches('.').to_owned()))
        })
        .collect();
    if !from_naptr.is_empty() {
        return from_naptr;
    }
    // RFC 3263 4.1: "_sips" for a sips: URI, "_sip" (TCP, UDP) for a sip: URI.
    let candidates: &[LocatedTransport] =
        if secure { &[LocatedTransport::Tls] } else { &[LocatedTransport::Tcp, LocatedTransport::Udp] };
    candidates
        .iter()
        .copied()
        .filter(usable)
        .map(|t| (t, format!("{}{}", t.srv_prefix(), domain.trim_end_matches('.'))))
        .collect()
}

/// SRV targets in the order to try them: lowest priority first, and within a priority the
/// heavier first (a fixed order stands in for RFC 2782's weighted draw: one desktop client
/// gains nothing from the draw, and tests stay deterministic). A lone "." means "no service".
pub fn order_srv(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    records.retain(|r| !r.target.trim_end_matches('.').is_empty());
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    use LocatedTransport::{Tcp, Tls, Udp};

    fn naptr(order: u16, preference: u16, service: &str, replacement: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference,
            flags: "s".into(),
            service: service.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn naptr_records_choose_and_order_the_srv_names() {
        let records = [
            naptr(50, 50, "SIP+D2U", "_sip._udp.example.com."),
            naptr(90, 50, "SIP+D2T", "_sip._tcp.example.com."),
            naptr(50, 10, "SIPS+D2T", "_sips._tcp.example.com."),
            NaptrRecord { flags: "u".into(), ..naptr(1, 1, "E2U+sip", "!^.*$!sip:x@y!") },
        ];
        assert_eq!(
            srv_names("example.com", &records, &[Udp, Tcp, Tls], false),
            [
                (Tls, "_sips._tcp.example.com".into()),
                (Udp, "_sip._udp.example.com".into()),
                (Tcp, "_sip._tcp.example.com".into())
            ]
        );
        // A transport the account excludes is skipped; sips: takes TLS only.
        assert_eq!(
            srv_names("example.com", &records, &[Tcp], false),
            [(Tcp, "_sip._tcp.example.com".into())]
        );
        assert_eq!(
            srv_names("example.com", &records, &[Udp, Tcp, Tls], true),
            [(Tls, "_sips._tcp.example.com".into())]
        );
    }

    #[test]
    fn without_naptr_the_srv_names_of_each_transport() {
        assert_eq!(
            srv_names("example.com.", &[], &[Udp, Tcp, Tls], false),
            [(Tcp, "_sip._tcp.example.com".into()), (Udp, "_sip._udp.example.com".into())]
        );
        assert_eq!(
            srv_names("example.com", &[], &[Udp, Tcp, Tls], true),
            [(Tls, "_sips._tcp.example.com".into())]
        );
        // NAPTR records for transports we may not use count as none.
        let only_udp = [naptr(1, 1, "SIP+D2U", "_sip._udp.example.com.")];
        assert_eq!(
            srv_names("example.com", &only_udp, &[Tcp], false),
            [(Tcp, "_sip._tcp.example.com".into())]
        );
    }

    #[test]
    fn srv_targets_by_priority_then_weight() {
        let srv = |priority, weight, target: &str| SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        };
        let ordered = order_srv(vec![srv(20, 0, "c."), srv(10, 10, "b."), srv(10, 60, "a."), srv(0, 0, ".")]);
        let targets: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["a.", "b.", "c."]);
    }
}
