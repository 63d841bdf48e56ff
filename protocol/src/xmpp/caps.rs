//! What we tell other entities we can do (XEP-0030 disco#info), and the XEP-0115 hash of it
//! that rides on every presence; and the check of a peer's hash before its answer is cached.

use xmpp_parsers::caps::{self, Caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::ns;

/// Our caps node (cusax-wire section 7.5: stable, never changed).
pub const NODE: &str = "urn:cusax:cusaxd";

/// What cusaxd implements. No Jingle (cusax-wire 3.9: peers would call us over XMPP).
const FEATURES: &[&str] = &[
    ns::CAPS,
    ns::DISCO_INFO,
    ns::CHATSTATES,
    ns::RECEIPTS,
    ns::PING,
    ns::SID,
    // CUSAX (cusax-wire 3.9): reachability addresses (XEP-0152), the draft's elements.
    "urn:xmpp:reach:0",
    "urn:xmpp:sip-contact",
    "urn:xmpp:sip-correlation",
    // PEP notifications we want (XEP-0163 section 4.3.3): contacts' vCard4 (XEP-0292),
    // reachability and activity (on the phone).
    "urn:xmpp:vcard4+notify",
    "urn:xmpp:reach:0+notify",
    "http://jabber.org/protocol/activity+notify",
];

/// Our disco#info, as an answer to a query on `node` (none, or `NODE#ver`).
pub fn disco_info(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new("client", "pc", "en", "cusax")],
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        extensions: Vec::new(),
    }
}

/// The `<c/>` element for our presence.
pub fn own_caps() -> Caps {
    let digest = caps::hash_caps(&caps::compute_disco(&disco_info(None)), Algo::Sha_1);
    // SHA-1 is always available; the error is for algorithms the crate does not know.
    let hash = digest.unwrap_or_else(|_| xmpp_parsers::hashes::Hash { algo: Algo::Sha_1, hash: Vec::new() });
    Caps::new(NODE, hash)
}

/// `NODE#ver`: the node a peer asks about when it resolves our caps.
pub fn own_node() -> String {
    let element: xmpp_parsers::minidom::Element = own_caps().into();
    format!("{NODE}#{}", element.attr("ver").unwrap_or_default())
}

/// Whether a peer's disco#info answer is what its advertised caps hash promised (XEP-0115
/// section 5.4: only then may it be cached under that hash for everyone who sends it).
pub fn matches(answer: &DiscoInfoResult, advertised: &Caps) -> bool {
    // Only SHA-1 is in use; the other algorithms of the crate are not allowed for caps.
    // Section 5.4 step 3: an answer with the same identity twice is not to be trusted.
    let mut identities: Vec<_> =
        answer.identities.iter().map(|i| (&i.category, &i.type_, &i.lang, &i.name)).collect();
    identities.sort();
    identities.dedup();
    identities.len() == answer.identities.len()
        && advertised.hash == Algo::Sha_1
        && caps::hash_caps(&caps::compute_disco(answer), Algo::Sha_1).is_ok_and(|h| h.hash == advertised.ver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::minidom::Element;

    #[test]
    fn the_hash_of_xep_0115_section_5_2_comes_out() {
        let exodus = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("client", "pc", "", "Exodus 0.9.1")],
            features: [ns::CAPS, ns::DISCO_INFO, "http://jabber.org/protocol/disco#items", ns::MUC]
                .iter()
                .map(|f| f.to_string())
                .collect(),
            extensions: Vec::new(),
        };
        let element: Element = Caps {
            ext: None,
            node: "http://code.google.com/p/exodus".into(),
            hash: Algo::Sha_1,
            ver: Vec::new(),
        }
        .into();
        let mut caps = Caps::try_from(element.clone()).unwrap();
        let hash = caps::hash_caps(&caps::compute_disco(&exodus), Algo::Sha_1).unwrap();
        caps.ver = hash.hash;
        let shown: Element = caps.clone().into();
        assert_eq!(shown.attr("ver"), Some("QgayPKawpkPSDYmwT/WM94uAlu0="));
        assert!(matches(&exodus, &caps));
        let mut twice = exodus.clone();
        twice.identities.push(twice.identities[0].clone());
        assert!(!matches(&twice, &caps));
        let mut lying = exodus;
        lying.features.insert(ns::JINGLE.into());
        assert!(!matches(&lying, &caps));
    }

    #[test]
    fn our_caps_describe_our_disco_info_and_no_jingle() {
        let ours = own_caps();
        assert_eq!(ours.node, NODE);
        assert!(matches(&disco_info(None), &ours));
        assert!(own_node().starts_with("urn:cusax:cusaxd#") && own_node().ends_with('='));
        assert!(disco_info(None).features.iter().all(|f| !f.contains("jingle")));
    }
}
