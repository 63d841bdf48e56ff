#!/usr/bin/env python3
"""A stock XMPP client (slixmpp) that an end-to-end test drives line by line.

It logs in as --jid on 127.0.0.1 (no DNS), sends its presence, and then:
- prints one JSON object per line on stdout for what it sees: "online", "message" (with
  thread, id, origin-id, whether a receipt was asked, chat state, delay), "receipt",
  "chatstate" (a standalone notification), "presence", "subscribe";
- reads one JSON command per line on stdin:
    {"cmd": "send", "to": J, "body": B, "thread": T?, "receipt": true?, "chatstate": S?, "id": I?}
    {"cmd": "receipt", "to": J, "id": I, "thread": T?}
    {"cmd": "chatstate", "to": J, "state": S, "thread": T?}
    {"cmd": "subscribe", "to": J} / {"cmd": "approve", "to": J}
    {"cmd": "presence", "show": S?, "status": T?}
    {"cmd": "raw", "xml": X}     (sent as it is: forged stanzas for the trust tests)
    {"cmd": "vcard_set", "tels": [[["work", "voice"], NUMBER], ...]}   our vcard-temp
    {"cmd": "vcard_get", "jid": J}   -> {"event": "vcard", "numbers": [...]}
    {"cmd": "disco", "to": J}    -> {"event": "disco", "identities": [...], "features": [...]}
    {"cmd": "quit"}
  and answers each with {"event": "done", "cmd": ...}.
Only what a command asks for is sent: no automatic receipts or chat states, so a test sees
exactly what cusaxd does. Subscription requests are reported, not answered.
"""
import argparse
import asyncio
import json
import logging
import ssl
import sys
import threading
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

RECEIPTS = "urn:xmpp:receipts"
CHATSTATES = "http://jabber.org/protocol/chatstates"
SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"
STATES = ("active", "composing", "paused", "inactive", "gone")


def out(**kw):
    try:
        print(json.dumps(kw), flush=True)
    except BrokenPipeError:
        pass


class Peer(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.use_aiodns = False
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.ssl_context.load_verify_locations(cafile=args.cafile)
        self.register_plugin("xep_0030")
        # Caps (XEP-0115) with the features a chat client has; nothing automatic is sent.
        self.register_plugin("xep_0115")
        self.register_plugin("xep_0085")
        self.register_plugin("xep_0184", {"auto_ack": False, "auto_request": False})
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _e: out(event="error", reason="auth failed"))
        # Every message, also those without a body (receipts, chat states), which slixmpp's
        # "message" event leaves out.
        self.register_handler(Callback("any message", MatchXPath("{jabber:client}message"), self.on_message))
        self.add_event_handler("presence", self.on_presence)
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False

    async def on_start(self, _ev):
        await self.get_roster()
        # The caps hash is computed on demand; the first presence must already carry it.
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        self.send_presence()
        out(event="online", jid=str(self.boundjid))

    def on_message(self, msg):
        x = msg.xml
        if msg["type"] == "error":
            out(event="error_message", frm=str(msg["from"]), id=msg["id"])
            return
        received = x.find(f"{{{RECEIPTS}}}received")
        if received is not None:
            out(event="receipt", frm=str(msg["from"]), id=received.get("id"))
        state = next((s for s in STATES if x.find(f"{{{CHATSTATES}}}{s}") is not None), None)
        if not msg["body"]:
            if state:
                out(event="chatstate", frm=str(msg["from"]), state=state, thread=msg["thread"] or None)
            return
        origin = x.find(f"{{{SID}}}origin-id")
        delay = x.find(f"{{{DELAY}}}delay")
        correlation = x.find("{urn:xmpp:sip-correlation}sip-correlation")
        contact = x.find("{urn:xmpp:sip-contact}sip-contact")
        out(event="message", frm=str(msg["from"]), type=msg["type"], body=msg["body"],
            thread=msg["thread"] or None, id=msg["id"] or None,
            origin_id=origin.get("id") if origin is not None else None,
            receipt_request=x.find(f"{{{RECEIPTS}}}request") is not None,
            chatstate=state, delayed=delay is not None,
            sip_correlation=correlation.get("value") if correlation is not None else None,
            sip_contact=contact.get("target") if contact is not None else None,
            reach=[a.get("uri") for a in x.iter("{urn:xmpp:reach:0}addr")])

    def on_presence(self, pres):
        if pres["type"] == "subscribe":
            out(event="subscribe", frm=str(pres["from"].bare))
            return
        caps = pres.xml.find("{http://jabber.org/protocol/caps}c")
        reach = [a.get("uri") for a in pres.xml.iter("{urn:xmpp:reach:0}addr")]
        contact = pres.xml.find("{urn:xmpp:contact}contact")
        out(event="presence", frm=str(pres["from"]), type=pres["type"], show=pres["show"],
            status=pres["status"], caps_node=caps.get("node") if caps is not None else None,
            caps_ver=caps.get("ver") if caps is not None else None, reach=reach,
            contact=None if contact is None else {"target": contact.get("target"), "status": contact.get("status")})

    async def command(self, c):
        kind = c.get("cmd")
        if kind == "send":
            msg = self.make_message(mto=c["to"], mbody=c["body"], mtype="chat")
            if c.get("id"):
                msg["id"] = c["id"]
            if c.get("thread"):
                msg["thread"] = c["thread"]
            if c.get("receipt"):
                msg.xml.append(ET.Element(f"{{{RECEIPTS}}}request"))
            if c.get("chatstate"):
                msg.xml.append(ET.Element(f"{{{CHATSTATES}}}{c['chatstate']}"))
            # CUSAX (or any) elements, as XML text, added to the message as they are.
            for extra in c.get("extra_xml", []):
                msg.xml.append(ET.fromstring(extra))
            msg.send()
        elif kind == "receipt":
            msg = self.make_message(mto=c["to"], mtype="chat")
            if c.get("thread"):
                msg["thread"] = c["thread"]
            received = ET.Element(f"{{{RECEIPTS}}}received")
            received.set("id", c["id"])
            msg.xml.append(received)
            msg.send()
        elif kind == "chatstate":
            msg = self.make_message(mto=c["to"], mtype="chat")
            if c.get("thread"):
                msg["thread"] = c["thread"]
            msg.xml.append(ET.Element(f"{{{CHATSTATES}}}{c['state']}"))
            msg.send()
        elif kind == "subscribe":
            self.send_presence_subscription(pto=c["to"])
        elif kind == "approve":
            self.send_presence(pto=c["to"], ptype="subscribed")
        elif kind == "vcard_set":
            card = ET.Element("{vcard-temp}vCard")
            ET.SubElement(card, "{vcard-temp}FN").text = c.get("fn", "Test")
            for types, number in c.get("tels", []):
                tel = ET.SubElement(card, "{vcard-temp}TEL")
                for t in types:
                    ET.SubElement(tel, "{vcard-temp}" + t.upper())
                ET.SubElement(tel, "{vcard-temp}NUMBER").text = number
            iq = self.Iq()
            iq["type"] = "set"
            iq.append(card)
            await iq.send()
        elif kind == "vcard_get":
            iq = self.Iq()
            iq["type"] = "get"
            iq["to"] = c["jid"]
            iq.append(ET.Element("{vcard-temp}vCard"))
            resp = await iq.send()
            numbers = [n.text for n in resp.xml.iter("{vcard-temp}NUMBER")]
            out(event="vcard", jid=c["jid"], numbers=numbers)
        elif kind == "pubsub_items":
            iq = self.Iq()
            iq["type"] = "get"
            iq["to"] = c["jid"]
            pubsub = ET.SubElement(iq.xml, "{http://jabber.org/protocol/pubsub}pubsub")
            ET.SubElement(pubsub, "{http://jabber.org/protocol/pubsub}items").set("node", c["node"])
            try:
                resp = await iq.send()
                items = [ET.tostring(i, encoding="unicode") for i in resp.xml.iter("{http://jabber.org/protocol/pubsub}item")]
                out(event="items", node=c["node"], items=items)
            except IqError as e:
                out(event="items", node=c["node"], items=[], error=e.iq["error"]["condition"])
        elif kind == "raw":
            self.send_raw(c["xml"])
        elif kind == "presence":
            self.send_presence(pshow=c.get("show"), pstatus=c.get("status"))
        elif kind == "disco":
            info = await self.plugin["xep_0030"].get_info(jid=c["to"], node=c.get("node"))
            d = info["disco_info"]
            out(event="disco", identities=[list(i) for i in d["identities"]], features=sorted(d["features"]))
        elif kind == "quit":
            self.disconnect()
        out(event="done", cmd=kind)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--port", type=int, default=5222)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("-v", action="store_true", help="debug log to stderr")
    a = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.v else logging.ERROR, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    peer = Peer(a)
    peer.connect("127.0.0.1", a.port)

    def read_commands():
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                c = json.loads(line)
            except ValueError as e:
                out(event="error", reason=f"bad command: {e}")
                continue
            asyncio.run_coroutine_threadsafe(peer.command(c), loop)
        asyncio.run_coroutine_threadsafe(peer.command({"cmd": "quit"}), loop)

    threading.Thread(target=read_commands, daemon=True).start()
    await peer.disconnected
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
