//! Property tests of the CUSAX elements and headers: whatever arrives, reading never panics;
//! whatever we write reads back as it was.

use cusax_protocol::sip::cusax_headers::{
    SipCusax, XmppContact, call_info_impp, read_call_info_impp, read_xmpp_thread,
};
use cusax_protocol::xmpp::cusax::{
    Availability, SipTarget, contact, read_contact, read_sip_contact, sip_contact,
};
use proptest::prelude::*;

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("sip"), Just("sips"), Just("tel")],
        "[a-z0-9+][a-z0-9._+-]{0,12}",
        // Host names as RFC 3261 has them: labels of letters and digits, inner hyphens.
        "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,2}",
        proptest::option::of(prop_oneof![
            Just(";gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".to_owned()),
            Just(";transport=tls".to_owned()),
            Just(";ob".to_owned()),
        ]),
    )
        .prop_map(|(scheme, user, host, param)| match scheme {
            "tel" => format!("tel:+{}", user.len() * 7919),
            _ => format!("{scheme}:{user}@{host}{}", param.unwrap_or_default()),
        })
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![Just("audio".to_owned()), Just("video".to_owned()), Just("+sip.app=\"x\"".to_owned())],
        0..3,
    )
}

proptest! {
    #[test]
    fn reading_anything_never_panics(text in "\\PC{0,80}") {
        let _ = SipTarget::parse(&text);
        let _ = XmppContact::parse(&text);
        let _ = read_call_info_impp(&text);
        let _ = read_xmpp_thread(&text);
    }

    #[test]
    fn targets_we_write_read_back(uri in sip_uri(), tags in tags()) {
        let target = SipTarget { uri, tags };
        prop_assert_eq!(SipTarget::parse(&target.to_text()).unwrap(), target.clone());
        prop_assert_eq!(read_sip_contact(&sip_contact(&target)).unwrap(), target.clone());
        prop_assert_eq!(read_contact(&contact(&target, Availability::Open)).unwrap(), (target, Some(Availability::Open)));
    }

    #[test]
    fn xmpp_contacts_we_write_read_back(
        local in "[a-z0-9._'-]{1,12}",
        domain in "[a-z0-9][a-z0-9.-]{0,12}",
        resource in "\\PC{0,16}",
        token in "[0-9a-f]{32}",
    ) {
        let jid = if resource.is_empty() { format!("{local}@{domain}") } else { format!("{local}@{domain}/{resource}") };
        let ours = XmppContact { jid, correlation: token };
        prop_assert_eq!(XmppContact::parse(&ours.to_text()).unwrap(), ours.clone());
        let bare = ours.jid.split('/').next().unwrap().to_owned();
        prop_assert_eq!(read_call_info_impp(&call_info_impp(&bare)), Some(bare.clone()));
        // All three on one message, as an INVITE or its 2xx carries them.
        let all = SipCusax { thread: Some(format!("{}-{local}", &ours.correlation[..8])), contact: Some(ours), impp: Some(bare) };
        prop_assert_eq!(SipCusax::read(&all.headers()), all);
    }

    #[test]
    fn headers_of_anything_read_without_panic(values in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,60}"), 0..6)) {
        let named: Vec<(String, String)> = values
            .into_iter()
            .enumerate()
            .map(|(i, (n, v))| (["XMPP-Thread", "XMPP-Contact", "Call-Info", n.as_str()][i % 4].to_owned(), v))
            .collect();
        let _ = SipCusax::read(&named);
    }
}
