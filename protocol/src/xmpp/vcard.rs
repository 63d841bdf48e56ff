//! Telephone entries of vCards: read from vcard-temp (XEP-0054) and vCard4 (XEP-0292, as an
//! IQ answer or a PEP item), and ours merged into our own vcard-temp. cusax-wire 3.10: we
//! publish our SIP address as `user@host` (the form Jitsi matches) and, for a numeric
//! user part, as E.164; reading accepts sip:, sips:, tel:, user@host and dial strings.

use xmpp_parsers::minidom::Element;

pub const VCARD_TEMP: &str = "vcard-temp";
pub const VCARD4: &str = "urn:ietf:params:xml:ns:vcard-4.0";
/// The PEP node of XEP-0292.
pub const VCARD4_NODE: &str = "urn:xmpp:vcard4";

/// One telephone entry: its number (as written) and its types, lower case (work, home,
/// voice, video, cell, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tel {
    pub number: String,
    pub types: Vec<String>,
}

/// The TEL entries of a `<vCard xmlns='vcard-temp'/>`.
pub fn read_vcard_temp(vcard: &Element) -> Vec<Tel> {
    vcard
        .children()
        .filter(|c| c.is("TEL", VCARD_TEMP))
        .filter_map(|tel| {
            let number = tel.get_child("NUMBER", VCARD_TEMP)?.text().trim().to_owned();
            let types = tel
                .children()
                .filter(|c| c.name() != "NUMBER")
                .map(|c| c.name().to_ascii_lowercase())
                .collect();
            (!number.is_empty()).then_some(Tel { number, types })
        })
        .collect()
}

/// The tel entries of a `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/>` (a URI, or text).
pub fn read_vcard4(vcard: &Element) -> Vec<Tel> {
    vcard
        .children()
        .filter(|c| c.is("tel", VCARD4))
        .filter_map(|tel| {
            let value = tel.get_child("uri", VCARD4).or_else(|| tel.get_child("text", VCARD4))?;
            let number = value.text().trim().to_owned();
            let types = tel
                .get_child("parameters", VCARD4)
                .and_then(|p| p.get_child("type", VCARD4))
                .map(|t| t.children().map(|x| x.text().trim().to_ascii_lowercase()).collect())
                .unwrap_or_default();
            (!number.is_empty()).then_some(Tel { number, types })
        })
        .collect()
}

/// The vCard4 of a PEP notification or items answer (`<items node='urn:xmpp:vcard4'>`).
pub fn vcard4_in_items(items: &Element) -> Option<&Element> {
    items.children().find(|i| i.name() == "item")?.get_child("vcard", VCARD4)
}

/// Our entries for SIP address `aor` (`sip:user@host`): `user@host`, and the user part
/// alone when it is an E.164 number.
pub fn own_tels(aor: &str) -> Vec<Tel> {
    let plain = aor.split_once(':').map_or(aor, |(_, rest)| rest);
    let plain = plain.split([';', '?']).next().unwrap_or(plain);
    let work_voice = || vec!["work".to_owned(), "voice".to_owned()];
    let mut tels = vec![Tel { number: plain.to_owned(), types: work_voice() }];
    if let Some((user, _)) = plain.split_once('@')
        && user.len() > 1
        && user.starts_with('+')
        && user[1..].chars().all(|c| c.is_ascii_digit())
    {
        tels.push(Tel { number: user.to_owned(), types: work_voice() });
    }
    tels
}

/// `existing` (our vcard-temp, or none) with our entries in it: other fields and other
/// numbers stay; an entry with one of our numbers is replaced. `None` when nothing would
/// change.
pub fn with_own_tels(existing: Option<&Element>, ours: &[Tel]) -> Option<Element> {
    if existing.is_some_and(|v| ours.iter().all(|t| read_vcard_temp(v).contains(t))) {
        return None;
    }
    let mut vcard = Element::builder("vCard", VCARD_TEMP).build();
    if let Some(existing) = existing {
        for child in existing.children() {
            let ours_already = child.is("TEL", VCARD_TEMP)
                && child
                    .get_child("NUMBER", VCARD_TEMP)
                    .is_some_and(|n| ours.iter().any(|t| t.number == n.text().trim()));
            if !ours_already {
                vcard.append_child(child.clone());
            }
        }
    }
    for tel in ours {
        let mut entry = Element::builder("TEL", VCARD_TEMP);
        for kind in &tel.types {
            entry = entry.append(Element::builder(kind.to_ascii_uppercase(), VCARD_TEMP).build());
        }
        vcard.append_child(
            entry.append(Element::builder("NUMBER", VCARD_TEMP).append(tel.number.as_str()).build()).build(),
        );
    }
    Some(vcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn vcard_temp_of_cusax_wire_3_10() {
        let v = parse(
            "<vCard xmlns='vcard-temp'>
               <TEL><WORK/><VOICE/><NUMBER>bob@example.com</NUMBER></TEL>
               <TEL><WORK/><VIDEO/><NUMBER>bob@example.com</NUMBER></TEL>
               <TEL><CELL/><VOICE/><NUMBER> +14155550123 </NUMBER></TEL>
               <TEL><HOME/></TEL>
               <JABBERID>bob@example.com</JABBERID>
             </vCard>",
        );
        let tels = read_vcard_temp(&v);
        assert_eq!(tels.len(), 3, "an entry without a number is skipped");
        assert_eq!(
            tels[1],
            Tel { number: "bob@example.com".into(), types: vec!["work".into(), "video".into()] }
        );
        assert_eq!(tels[2].number, "+14155550123");
    }

    #[test]
    fn vcard4_as_prosody_converts_it() {
        let v = parse(
            "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>
               <tel><parameters><type><text>work</text><text>video</text></type></parameters><uri>sip:bob@example.com</uri></tel>
               <tel><uri>tel:bob@example.com</uri></tel>
               <tel><text>+1 415 555 0123</text></tel>
               <impp><uri>xmpp:bob@example.com</uri></impp>
             </vcard>",
        );
        let tels = read_vcard4(&v);
        assert_eq!(
            tels[0],
            Tel { number: "sip:bob@example.com".into(), types: vec!["work".into(), "video".into()] }
        );
        assert_eq!(tels[1], Tel { number: "tel:bob@example.com".into(), types: vec![] });
        assert_eq!(tels[2].number, "+1 415 555 0123");
        let items = parse(&format!(
            "<items xmlns='http://jabber.org/protocol/pubsub#event' node='urn:xmpp:vcard4'><item id='current'>{}</item></items>",
            String::from(&v)
        ));
        assert_eq!(read_vcard4(vcard4_in_items(&items).unwrap()).len(), 3);
    }

    #[test]
    fn our_numbers_join_a_vcard_without_losing_anything() {
        let ours = own_tels("sip:+4930123456@sip.example.com;transport=tls");
        assert_eq!(
            ours.iter().map(|t| t.number.as_str()).collect::<Vec<_>>(),
            ["+4930123456@sip.example.com", "+4930123456"]
        );
        assert_eq!(own_tels("sips:alice@example.com").len(), 1);
        let existing = parse(
            "<vCard xmlns='vcard-temp'><FN>Alice</FN><TEL><HOME/><NUMBER>+1555</NUMBER></TEL>
               <TEL><HOME/><NUMBER>+4930123456</NUMBER></TEL></vCard>",
        );
        let merged = with_own_tels(Some(&existing), &ours).unwrap();
        assert_eq!(merged.get_child("FN", VCARD_TEMP).unwrap().text(), "Alice");
        let tels = read_vcard_temp(&merged);
        assert_eq!(tels.len(), 3, "{tels:?}");
        assert_eq!(tels[0].number, "+1555");
        assert!(
            tels.contains(&Tel { number: "+4930123456".into(), types: vec!["work".into(), "voice".into()] })
        );
        assert_eq!(with_own_tels(Some(&merged), &ours), None, "nothing to change");
        assert_eq!(read_vcard_temp(&with_own_tels(None, &ours).unwrap()), ours);
    }
}
