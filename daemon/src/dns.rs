//! DNS lookups shared by the SIP (RFC 3263) and XMPP (RFC 6120 3.2, XEP-0368) actors.

use cusax_protocol::sip::locate::SrvRecord;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

/// A resolver on the system's configuration.
pub fn resolver() -> Result<TokioResolver, String> {
    TokioResolver::builder_tokio()
        .and_then(|builder| builder.build())
        .map_err(|e| format!("no DNS resolver: {e}"))
}

/// The SRV records of `name`; none when there are none or the lookup fails.
pub async fn srv_records(resolver: &TokioResolver, name: &str) -> Vec<SrvRecord> {
    let Ok(answer) = resolver.lookup(name, RecordType::SRV).await else { return Vec::new() };
    answer
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_string(),
            }),
            _ => None,
        })
        .collect()
}
