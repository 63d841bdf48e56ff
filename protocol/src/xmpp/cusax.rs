//! The CUSAX elements carried in XMPP stanzas (cusax-wire 3.1, 3.2, 3.6 and the draft-01
//! §6.2 `<contact/>`), read in every form met in the wild and written in the project
//! profile's one form.
//!
//! - `<sip-contact target='…'/>` in a message: our SIP address (GRUU or AoR) with RFC 3840
//!   feature tags, for "add a call to this chat".
//! - `<reach><addr uri='…'/></reach>` (XEP-0152): addresses to try, in order.
//! - `<contact target='…' status='open|busy|closed'/>` in presence: SIP reachability.
//! - `<sip-correlation value='…'/>` in the first message of a chat added to a call.

use xmpp_parsers::minidom::Element;

/// The namespace we write `<sip-contact/>` in, and the ones we also read (draft-00's
/// normative one, its example's, and that example's malformed spelling).
pub const SIP_CONTACT: &str = "urn:xmpp:sip-contact";
const SIP_CONTACT_READ: [&str; 4] = [
    SIP_CONTACT,
    "http://jabber.org/protocol/sip-contact",
    "http://jabber.org/protocol/contact",
    "http//jabber.org/protocol/contact",
];
pub const REACH: &str = "urn:xmpp:reach:0";
/// `<contact/>` in presence (draft-01 §6.2), and the legacy namespace also read.
pub const CONTACT: &str = "urn:xmpp:contact";
const CONTACT_READ: [&str; 2] = [CONTACT, "http://jabber.org/protocol/contact"];
pub const SIP_CORRELATION: &str = "urn:xmpp:sip-correlation";
const SIP_CORRELATION_READ: [&str; 2] = [SIP_CORRELATION, "http://jabber.org/protocol/sip-correlation"];

/// RFC 3840 §9 base feature tags: inside the brackets (the draft's examples) they are moved
/// out of the URI into the capability set.
const BASE_TAGS: [&str; 20] = [
    "audio",
    "automata",
    "class",
    "duplex",
    "data",
    "control",
    "mobility",
    "description",
    "events",
    "priority",
    "methods",
    "schemes",
    "application",
    "video",
    "language",
    "type",
    "isfocus",
    "actor",
    "text",
    "extensions",
];

/// Why an element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CusaxElementError {
    #[error("<{0}/> has no {1}")]
    Missing(&'static str, &'static str),
    #[error("{0:?} is not a sip:, sips: or tel: URI")]
    NotSipUri(String),
    #[error("{0:?} is not a correlation token")]
    BadToken(String),
    #[error("<{0}/> is not a CUSAX element")]
    NotOurs(String),
}

/// A SIP target with its feature tags: what `sip-contact` and `contact` carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    /// The URI, with its own parameters (`gr`, `transport`, `ob` ...), without feature tags.
    pub uri: String,
    /// RFC 3840 feature tags (`audio`, `video`, `+sip.instance=...`), as written.
    pub tags: Vec<String>,
}

impl SipTarget {
    /// Whether it says it takes audio / video; `None` when it says nothing about either
    /// (unknown, not "no": cusax-wire 3.1).
    pub fn media(&self) -> Option<(bool, bool)> {
        let has = |tag: &str| self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
        (has("audio") || has("video")).then(|| (has("audio"), has("video")))
    }

    /// Reads every accepted form: a bare URI; `<URI>;tags`; and the draft's `<URI;tags>`.
    pub fn parse(text: &str) -> Result<Self, CusaxElementError> {
        let text = text.trim();
        let (inside, outside) = match text.strip_prefix('<') {
            Some(rest) => {
                let close = rest.find('>').ok_or_else(|| CusaxElementError::NotSipUri(text.into()))?;
                (&rest[..close], rest[close + 1..].trim_start_matches(';'))
            }
            None => (text, ""),
        };
        let mut parts = inside.split(';');
        let base = parts.next().unwrap_or_default().trim();
        let (scheme, rest) = base.split_once(':').unwrap_or_default();
        if !matches!(scheme.to_ascii_lowercase().as_str(), "sip" | "sips" | "tel") || rest.is_empty() {
            return Err(CusaxElementError::NotSipUri(text.into()));
        }
        let mut uri = base.to_owned();
        let mut tags = Vec::new();
        for param in parts.filter(|p| !p.is_empty()) {
            if is_feature_tag(param) {
                tags.push(param.to_owned());
            } else {
                uri.push(';');
                uri.push_str(param);
            }
        }
        // A peer's target becomes our Request-URI and To: only a URI that is one.
        let valid = match scheme.to_ascii_lowercase().as_str() {
            "tel" => uri[4..].chars().all(|c| c.is_ascii_alphanumeric() || "+-.()=;%".contains(c)),
            _ => crate::sip::SipUri::parse(&uri).is_ok(),
        };
        if !valid {
            return Err(CusaxElementError::NotSipUri(text.into()));
        }
        tags.extend(outside.split(';').map(str::trim).filter(|p| !p.is_empty()).map(String::from));
        Ok(Self { uri, tags })
    }

    /// The project profile's form: `<URI>;tag;tag` (tags as header parameters outside).
    pub fn to_text(&self) -> String {
        let mut text = format!("<{}>", self.uri);
        for tag in &self.tags {
            text.push(';');
            text.push_str(tag);
        }
        text
    }
}

fn is_feature_tag(param: &str) -> bool {
    let name = param.split('=').next().unwrap_or_default();
    name.starts_with('+') || BASE_TAGS.iter().any(|t| name.eq_ignore_ascii_case(t))
}

fn in_any(element: &Element, name: &str, namespaces: &[&str]) -> bool {
    namespaces.iter().any(|ns| element.is(name, *ns))
}

/// `<sip-contact target='…'/>`: reads any accepted namespace and form.
pub fn read_sip_contact(element: &Element) -> Result<SipTarget, CusaxElementError> {
    if !in_any(element, "sip-contact", &SIP_CONTACT_READ) {
        return Err(CusaxElementError::NotOurs(element.name().into()));
    }
    SipTarget::parse(element.attr("target").ok_or(CusaxElementError::Missing("sip-contact", "target"))?)
}

pub fn sip_contact(target: &SipTarget) -> Element {
    element("sip-contact", SIP_CONTACT, &[("target", target.to_text())])
}

/// An element with attributes (names are our own literals, so always valid XML names).
fn element(name: &str, ns: &str, attrs: &[(&str, String)]) -> Element {
    let mut builder = Element::builder(name, ns);
    for (key, value) in attrs {
        if let Ok(key) = xmpp_parsers::minidom::rxml::NcName::try_from(*key) {
            builder = builder.attr(key, value.as_str());
        }
    }
    builder.build()
}

/// `<reach>`: its addresses in document order (each must have a `uri`).
pub fn read_reach(element: &Element) -> Result<Vec<String>, CusaxElementError> {
    if !element.is("reach", REACH) {
        return Err(CusaxElementError::NotOurs(element.name().into()));
    }
    element
        .children()
        .filter(|c| c.is("addr", REACH))
        .map(|a| a.attr("uri").map(String::from).ok_or(CusaxElementError::Missing("addr", "uri")))
        .collect()
}

pub fn reach(addresses: &[String]) -> Element {
    let mut reach = Element::builder("reach", REACH).build();
    for uri in addresses {
        reach.append_child(element("addr", REACH, &[("uri", uri.clone())]));
    }
    reach
}

/// SIP availability (draft-01 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Open,
    Busy,
    Closed,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Open => "open",
            Availability::Busy => "busy",
            Availability::Closed => "closed",
        }
    }
}

/// `<contact target='…' status='…'/>` (or with the URI as its text); an unknown status
/// counts as none.
pub fn read_contact(element: &Element) -> Result<(SipTarget, Option<Availability>), CusaxElementError> {
    if !in_any(element, "contact", &CONTACT_READ) {
        return Err(CusaxElementError::NotOurs(element.name().into()));
    }
    let text = element.text();
    let target = match element.attr("target") {
        Some(target) => target.to_owned(),
        None if !text.trim().is_empty() => text,
        None => return Err(CusaxElementError::Missing("contact", "target")),
    };
    let status = match element.attr("status") {
        Some("open") => Some(Availability::Open),
        Some("busy") => Some(Availability::Busy),
        Some("closed") => Some(Availability::Closed),
        _ => None,
    };
    Ok((SipTarget::parse(&target)?, status))
}

pub fn contact(target: &SipTarget, status: Availability) -> Element {
    element("contact", CONTACT, &[("target", target.to_text()), ("status", status.as_str().to_owned())])
}

/// `<sip-correlation value='…'/>`: the token (printable ASCII, no spaces, at most 128).
pub fn read_sip_correlation(element: &Element) -> Result<String, CusaxElementError> {
    if !in_any(element, "sip-correlation", &SIP_CORRELATION_READ) {
        return Err(CusaxElementError::NotOurs(element.name().into()));
    }
    let value = element.attr("value").ok_or(CusaxElementError::Missing("sip-correlation", "value"))?;
    if value.is_empty() || value.len() > 128 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(CusaxElementError::BadToken(value.into()));
    }
    Ok(value.to_owned())
}

pub fn sip_correlation(value: &str) -> Element {
    element("sip-correlation", SIP_CORRELATION, &[("value", value.to_owned())])
}

/// XEP-0108 User Activity: its namespace, also its PEP node.
pub const ACTIVITY: &str = "http://jabber.org/protocol/activity";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// The PEP publish of our activity (cusax-wire 3.8): `talking/on_the_phone` during a call,
/// an empty `<activity/>` (none) otherwise. The IQ goes to our own account (no `to`: P11).
pub fn activity_publish(on_the_phone: bool) -> Element {
    let mut activity = Element::builder("activity", ACTIVITY).build();
    if on_the_phone {
        let talking =
            Element::builder("talking", ACTIVITY).append(Element::builder("on_the_phone", ACTIVITY));
        activity.append_child(talking.build());
    }
    let mut publish = element("publish", PUBSUB, &[("node", ACTIVITY.to_owned())]);
    publish.append_child(Element::builder("item", PUBSUB).append(activity).build());
    Element::builder("pubsub", PUBSUB).append(publish).build()
}

/// Whether a PEP activity notification's `<items>` says "on the phone" (`talking/on_the_phone`);
/// `None` when they are not the activity node or hold no item (a retraction reads as `false`).
pub fn read_activity_items(items: &Element) -> Option<bool> {
    if items.attr("node") != Some(ACTIVITY) {
        return None;
    }
    let item = items.children().find(|c| c.name() == "item" || c.name() == "retract")?;
    let on_the_phone = item
        .get_child("activity", ACTIVITY)
        .and_then(|a| a.get_child("talking", ACTIVITY))
        .is_some_and(|t| t.has_child("on_the_phone", ACTIVITY));
    Some(on_the_phone)
}

/// The addresses of a PEP `<reach>` notification's `<items>` (XEP-0152 4.2), SIP and tel
/// only, at most [`MAX_REACH`]; an empty `<reach/>` or a retraction withdraws them (P11).
/// `None` when the items are another node's.
pub fn read_reach_items(items: &Element) -> Option<Vec<String>> {
    if items.attr("node") != Some(REACH) {
        return None;
    }
    let reach = items.children().find(|c| c.name() == "item").and_then(|i| i.get_child("reach", REACH));
    let addresses = reach.and_then(|r| read_reach(r).ok()).unwrap_or_default();
    Some(addresses.into_iter().filter(|a| SipTarget::parse(a).is_ok()).take(MAX_REACH).collect())
}

/// The most `<reach>` addresses kept from one stanza: a peer cannot fill our memory.
pub const MAX_REACH: usize = 8;

/// What a chat message carries of CUSAX: the peer's SIP target (`sip-contact`), the
/// addresses of its `<reach>` (SIP and tel URIs only, at most [`MAX_REACH`]) and a
/// `sip-correlation` value. A malformed element counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageCusax {
    pub sip_contact: Option<SipTarget>,
    pub reach: Vec<String>,
    pub correlation: Option<String>,
}

impl MessageCusax {
    /// Takes in `element` if it is one of ours; says whether it was.
    pub fn take(&mut self, element: &Element) -> bool {
        if let Ok(target) = read_sip_contact(element) {
            self.sip_contact = Some(target);
        } else if let Ok(addresses) = read_reach(element) {
            self.reach =
                addresses.into_iter().filter(|a| SipTarget::parse(a).is_ok()).take(MAX_REACH).collect();
        } else if let Ok(value) = read_sip_correlation(element) {
            self.correlation = Some(value);
        } else {
            return false;
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.sip_contact.is_none() && self.reach.is_empty() && self.correlation.is_none()
    }

    /// The SIP targets it names, in the order to try them: the `sip-contact`, then `<reach>`.
    pub fn targets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.sip_contact.iter().map(|t| t.uri.clone()).collect();
        for address in &self.reach {
            if !out.contains(address) {
                out.push(address.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_phone_goes_out_over_pep_and_reads_back() {
        let items_of = |pubsub: &Element| {
            let publish = pubsub.get_child("publish", PUBSUB).unwrap();
            let mut items = Element::builder("items", "http://jabber.org/protocol/pubsub#event")
                .attr(xmpp_parsers::minidom::rxml::NcName::try_from("node").unwrap(), ACTIVITY)
                .build();
            for item in publish.children() {
                items.append_child(item.clone());
            }
            items
        };
        assert_eq!(read_activity_items(&items_of(&activity_publish(true))), Some(true));
        assert_eq!(read_activity_items(&items_of(&activity_publish(false))), Some(false));
        let other: Element =
            "<items xmlns='http://jabber.org/protocol/pubsub#event' node='urn:xmpp:vcard4'/>"
                .parse()
                .unwrap();
        assert_eq!(read_activity_items(&other), None);
        let reach: Element = format!(
            "<items xmlns='http://jabber.org/protocol/pubsub#event' node='urn:xmpp:reach:0'><item id='current'>\
             <reach xmlns='urn:xmpp:reach:0'><addr uri='{GRUU}'/><addr uri='xmpp:bob@example.com'/></reach></item></items>"
        )
        .parse()
        .unwrap();
        assert_eq!(read_reach_items(&reach), Some(vec![GRUU.to_owned()]));
        let withdrawn: Element =
            "<items xmlns='http://jabber.org/protocol/pubsub#event' node='urn:xmpp:reach:0'>\
             <item id='current'><reach xmlns='urn:xmpp:reach:0'/></item></items>"
                .parse()
                .unwrap();
        assert_eq!(read_reach_items(&withdrawn), Some(Vec::new()));
        assert_eq!(read_reach_items(&other), None);
    }

    #[test]
    fn a_message_s_cusax_elements_are_taken_and_junk_left() {
        let mut cusax = MessageCusax::default();
        let contact: Element = format!(
            "<sip-contact xmlns='http://jabber.org/protocol/sip-contact' target='&lt;{GRUU}&gt;;audio'/>"
        )
        .parse()
        .unwrap();
        let reach: Element = format!(
            "<reach xmlns='urn:xmpp:reach:0'><addr uri='{GRUU}'/><addr uri='mailto:bob@example.com'/><addr uri='sip:bob@example.com'/></reach>"
        )
        .parse()
        .unwrap();
        let correlation: Element =
            "<sip-correlation xmlns='urn:xmpp:sip-correlation' value='7c9e6679f4254a4fa9c3a2b1d7e0c3b5'/>"
                .parse()
                .unwrap();
        let broken: Element =
            "<sip-correlation xmlns='urn:xmpp:sip-correlation' value='a b'/>".parse().unwrap();
        assert!(cusax.take(&contact) && cusax.take(&reach) && cusax.take(&correlation));
        assert!(!cusax.take(&broken), "a malformed element is not ours to keep");
        assert_eq!(
            cusax.targets(),
            [GRUU.to_owned(), "sip:bob@example.com".to_owned()],
            "each once, SIP only"
        );
        assert_eq!(cusax.correlation.as_deref(), Some("7c9e6679f4254a4fa9c3a2b1d7e0c3b5"));
        let many: Element = format!(
            "<reach xmlns='urn:xmpp:reach:0'>{}</reach>",
            (0..100).map(|n| format!("<addr uri='sip:u{n}@example.com'/>")).collect::<String>()
        )
        .parse()
        .unwrap();
        assert!(cusax.take(&many));
        assert_eq!(cusax.reach.len(), MAX_REACH);
    }

    const GRUU: &str = "sip:bob@example.com;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn every_accepted_target_form_reads_the_same() {
        let profile = SipTarget::parse(&format!("<{GRUU}>;audio;video")).unwrap();
        assert_eq!(profile.uri, GRUU);
        assert_eq!(profile.tags, ["audio", "video"]);
        let draft = SipTarget::parse(&format!("<{GRUU};audio;video>")).unwrap();
        assert_eq!(draft, profile, "tags inside the brackets move out; gr stays");
        let bare = SipTarget::parse(GRUU).unwrap();
        assert_eq!((bare.uri.as_str(), bare.media()), (GRUU, None), "no tags: unknown, not no");
        let instance = SipTarget::parse("<sip:a@b;transport=tls;+sip.instance=\"x\";ob>;audio").unwrap();
        assert_eq!(instance.uri, "sip:a@b;transport=tls;ob");
        assert_eq!(instance.tags, ["+sip.instance=\"x\"", "audio"]);
        assert_eq!(SipTarget::parse("tel:+15550100").unwrap().media(), None);
        for bad in [
            "",
            "<>",
            "xmpp:bob@example.com",
            "<sip:bob@example.com",
            "http://x",
            "sip:",
            "sips:",
            "<sips:>;audio",
        ] {
            assert!(SipTarget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn what_we_write_reads_back() {
        for (uri, tags) in [
            (GRUU, vec!["audio", "video"]),
            ("sip:alice@example.net", vec!["audio"]),
            ("sips:alice@example.net;transport=tls", vec![]),
            ("tel:+4930123456", vec!["audio", "+sip.app=\"x\""]),
        ] {
            let target = SipTarget { uri: uri.into(), tags: tags.iter().map(|t| t.to_string()).collect() };
            assert_eq!(read_sip_contact(&sip_contact(&target)).unwrap(), target);
            let (back, status) = read_contact(&contact(&target, Availability::Busy)).unwrap();
            assert_eq!((back, status), (target, Some(Availability::Busy)));
        }
        let addrs = vec![GRUU.to_owned(), "sip:bob@example.com".into(), "tel:+15550100".into()];
        assert_eq!(read_reach(&reach(&addrs)).unwrap(), addrs);
        assert_eq!(
            read_sip_correlation(&sip_correlation("7c9e6679f4254a4fa9c3a2b1d7e0c3b5")).unwrap().len(),
            32
        );
    }

    #[test]
    fn other_namespaces_and_forms_are_read_and_broken_ones_refused() {
        for ns in SIP_CONTACT_READ.iter().filter(|ns| !ns.starts_with("http//")) {
            let e = parse(&format!("<sip-contact xmlns='{ns}' target='sip:bob@example.com;audio'/>"));
            assert_eq!(read_sip_contact(&e).unwrap().tags, ["audio"]);
        }
        let body = parse("<contact xmlns='http://jabber.org/protocol/contact'>sip:bob@example.com</contact>");
        assert_eq!(
            read_contact(&body).unwrap(),
            (SipTarget { uri: "sip:bob@example.com".into(), tags: vec![] }, None)
        );
        let old = parse(
            "<sip-correlation xmlns='http://jabber.org/protocol/sip-correlation' value='a84b4c76e66710@ua-991.domain.com'/>",
        );
        assert_eq!(read_sip_correlation(&old).unwrap(), "a84b4c76e66710@ua-991.domain.com");
        assert_eq!(
            read_sip_contact(&parse("<sip-contact xmlns='urn:xmpp:sip-contact'/>")),
            Err(CusaxElementError::Missing("sip-contact", "target"))
        );
        assert!(read_reach(&parse("<reach xmlns='urn:xmpp:reach:0'><addr/></reach>")).is_err());
        assert!(
            read_sip_correlation(&parse("<sip-correlation xmlns='urn:xmpp:sip-correlation' value='a b'/>"))
                .is_err()
        );
        assert!(
            read_sip_contact(&parse("<sip-contact xmlns='urn:example:other' target='sip:a@b'/>")).is_err()
        );
    }
}
