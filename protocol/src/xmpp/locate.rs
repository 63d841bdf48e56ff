//! Where an XMPP client connects (RFC 6120 section 3.2.1 with XEP-0368): the SRV records for
//! direct TLS (`_xmpps-client._tcp`) and for STARTTLS (`_xmpp-client._tcp`) are one list,
//! ordered by priority and weight; at the same priority and weight direct TLS comes first
//! (it saves a round trip and hides the stream header). Without records: the domain on 5222
//! with STARTTLS.

use crate::sip::locate::{SrvRecord, order_srv};

/// How TLS starts on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStart {
    /// TLS from the first byte (XEP-0368).
    Direct,
    /// A plain stream, then STARTTLS (RFC 6120 section 5).
    StartTls,
}

/// One place to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppTarget {
    pub host: String,
    pub port: u16,
    pub tls: TlsStart,
}

/// The SRV names to look up under `domain`: direct TLS first, then STARTTLS.
pub fn srv_names(domain: &str) -> [(TlsStart, String); 2] {
    let domain = domain.trim_end_matches('.');
    [
        (TlsStart::Direct, format!("_xmpps-client._tcp.{domain}")),
        (TlsStart::StartTls, format!("_xmpp-client._tcp.{domain}")),
    ]
}

/// The places to try, in order, from the records found under each of [`srv_names`].
pub fn targets(domain: &str, direct: Vec<SrvRecord>, starttls: Vec<SrvRecord>) -> Vec<XmppTarget> {
    let tagged = |records: Vec<SrvRecord>, tls| {
        order_srv(records).into_iter().map(move |r| (r.priority, r.weight, tls, r.target, r.port))
    };
    let mut all: Vec<_> =
        tagged(direct, TlsStart::Direct).chain(tagged(starttls, TlsStart::StartTls)).collect();
    // A stable sort keeps direct TLS ahead of STARTTLS where priority and weight tie.
    all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    if all.is_empty() {
        return vec![XmppTarget {
            host: domain.trim_end_matches('.').to_owned(),
            port: 5222,
            tls: TlsStart::StartTls,
        }];
    }
    all.into_iter()
        .map(|(_, _, tls, host, port)| XmppTarget { host: host.trim_end_matches('.').to_owned(), port, tls })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str, port: u16) -> SrvRecord {
        SrvRecord { priority, weight, port, target: target.into() }
    }

    #[test]
    fn both_kinds_merge_by_priority_and_direct_tls_wins_ties() {
        let direct = vec![srv(10, 5, "tls.example.org.", 5223), srv(30, 0, "backup.example.org.", 443)];
        let starttls = vec![srv(10, 5, "xmpp.example.org.", 5222), srv(20, 0, "old.example.org.", 5222)];
        let got: Vec<(String, u16, TlsStart)> =
            targets("example.org", direct, starttls).into_iter().map(|t| (t.host, t.port, t.tls)).collect();
        assert_eq!(
            got,
            [
                ("tls.example.org".to_owned(), 5223, TlsStart::Direct),
                ("xmpp.example.org".to_owned(), 5222, TlsStart::StartTls),
                ("old.example.org".to_owned(), 5222, TlsStart::StartTls),
                ("backup.example.org".to_owned(), 443, TlsStart::Direct),
            ]
        );
    }

    #[test]
    fn no_records_fall_back_to_the_domain_and_dot_means_none() {
        let only = targets("example.org.", Vec::new(), Vec::new());
        assert_eq!(only, [XmppTarget { host: "example.org".into(), port: 5222, tls: TlsStart::StartTls }]);
        let refused =
            targets("example.org", vec![srv(0, 0, ".", 0)], vec![srv(5, 0, "xmpp.example.org", 5222)]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].tls, TlsStart::StartTls);
        assert_eq!(srv_names("example.org")[0].1, "_xmpps-client._tcp.example.org");
    }
}
