"""The simulated device's NETCONF session, driven through bytes (sans I/O)."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from callhome_transport.protocol.framing import EOM, FrameDecoder, Framing, encode
from callhome_transport.sim.datastore import STARTUP_CAPABILITY, Datastores, NetconfServerSession

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SYS = "urn:ietf:params:xml:ns:yang:ietf-system"
IF = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
CLIENT_HELLO = (
    f'<hello xmlns="{NC}"><capabilities><capability>urn:ietf:params:netconf:base:1.1</capability>'
    "</capabilities></hello>"
).encode()


class Client:
    def __init__(self, stores: Datastores, chunked: bool = True) -> None:
        self.session = NetconfServerSession(stores)
        hello = self.session.start()
        assert hello.endswith(EOM)
        caps = CLIENT_HELLO if chunked else CLIENT_HELLO.replace(b"base:1.1", b"base:1.0")
        assert self.session.receive(caps + EOM) == b""
        self.framing = Framing.CHUNKED if chunked else Framing.END_OF_MESSAGE
        self.ids = 0

    def rpc(self, body: str) -> etree._Element:
        self.ids += 1
        msg = f'<rpc xmlns="{NC}" message-id="{self.ids}" xmlns:x="urn:x" x:extra="kept">{body}</rpc>'.encode()
        out = b""
        for i in range(len(wire := encode(msg, self.framing))):  # one byte at a time
            out += self.session.receive(wire[i : i + 1])
        [reply] = FrameDecoder(self.framing).feed(out)
        root = etree.fromstring(reply)
        assert root.get("message-id") == str(self.ids)
        assert root.get("{urn:x}extra") == "kept"  # RFC 6241 s4.2: attributes returned
        return root


def text(root: etree._Element, path: str) -> list[str]:
    return [e.text for e in root.iterfind(path, {"nc": NC, "sys": SYS, "if": IF})]


def error_tag(root: etree._Element) -> str | None:
    tags = text(root, ".//nc:error-tag")
    return tags[0] if tags else None


@pytest.fixture
def client() -> Client:
    return Client(Datastores(hostname="r1"))


def test_get_config_and_subtree_filters(client: Client) -> None:
    everything = client.rpc("<get-config><source><running/></source></get-config>")
    assert text(everything, ".//sys:hostname") == ["r1"]
    assert text(everything, ".//if:name") == ["eth0"]
    only_system = client.rpc(
        f'<get-config><source><running/></source><filter type="subtree"><system xmlns="{SYS}"/></filter></get-config>'
    )
    assert text(only_system, ".//sys:hostname") == ["r1"]
    assert text(only_system, ".//if:name") == []
    selection = client.rpc(
        "<get-config><source><running/></source>"
        f'<filter><system xmlns="{SYS}"><contact/></system></filter></get-config>'
    )
    assert text(selection, ".//sys:contact") == ["noc@example.net"]
    assert text(selection, ".//sys:hostname") == []
    no_match = client.rpc(
        f'<get-config><source><running/></source><filter><interfaces xmlns="{IF}"><interface><name>eth9</name>'
        "</interface></interfaces></filter></get-config>"
    )
    assert text(no_match, ".//if:interface") == []


def test_edit_candidate_commit_and_discard(client: Client) -> None:
    edit = (
        f'<edit-config><target><candidate/></target><config><interfaces xmlns="{IF}"><interface>'
        "<name>eth1</name><description>new</description></interface></interfaces></config></edit-config>"
    )
    assert text(client.rpc(edit), "nc:ok") == [None]
    running = client.rpc("<get-config><source><running/></source></get-config>")
    assert text(running, ".//if:name") == ["eth0"]
    client.rpc("<commit/>")
    running = client.rpc("<get-config><source><running/></source></get-config>")
    assert text(running, ".//if:name") == ["eth0", "eth1"]
    client.rpc(
        "<edit-config><target><candidate/></target>"
        f'<config><system xmlns="{SYS}"><location>x</location></system></config></edit-config>'
    )
    client.rpc("<discard-changes/>")
    candidate = client.rpc("<get-config><source><candidate/></source></get-config>")
    assert text(candidate, ".//sys:location") == ["lab"]


def test_edit_operations(client: Client) -> None:
    def edit(config: str) -> etree._Element:
        return client.rpc(f"<edit-config><target><running/></target><config>{config}</config></edit-config>")

    iface = (
        f'<interfaces xmlns="{IF}" xmlns:nc="{NC}">'
        '<interface nc:operation="{op}"><name>eth0</name>{body}</interface></interfaces>'
    )
    assert error_tag(edit(iface.format(op="create", body=""))) == "data-exists"
    edit(iface.format(op="replace", body="<description>only</description>"))
    running = client.rpc("<get-config><source><running/></source></get-config>")
    assert text(running, ".//if:description") == ["only"]
    assert text(running, ".//if:enabled") == []
    edit(iface.format(op="delete", body=""))
    assert error_tag(edit(iface.format(op="delete", body=""))) == "data-missing"
    assert text(edit(iface.format(op="remove", body="")), "nc:ok") == [None]
    assert error_tag(edit(iface.format(op="frobnicate", body=""))) == "bad-attribute"


def test_locks_are_per_session_and_released_on_close() -> None:
    stores = Datastores(hostname="r1")
    a, b = Client(stores), Client(stores)
    assert text(a.rpc("<lock><target><running/></target></lock>"), "nc:ok") == [None]
    assert error_tag(b.rpc("<lock><target><running/></target></lock>")) == "lock-denied"
    denied = b.rpc(f'<edit-config><target><running/></target><config><system xmlns="{SYS}"/></config></edit-config>')
    assert error_tag(denied) == "in-use"
    a.rpc("<close-session/>")
    assert a.session.closed
    assert text(b.rpc("<lock><target><running/></target></lock>"), "nc:ok") == [None]


def test_get_includes_state_and_unknown_operations_fail(client: Client) -> None:
    state = client.rpc("<get/>")
    assert text(state, ".//sys:os-name") == ["callhome-sim"]
    assert re.match(r"\d{4}-\d\d-\d\d", text(state, ".//sys:current-datetime")[0])
    assert error_tag(client.rpc("<reboot-now/>")) == "operation-not-supported"
    assert error_tag(client.rpc("<get-config><source><startup/></source></get-config>")) == "invalid-value"


def test_get_netconf_state_lists_the_hello_capabilities() -> None:
    """RFC 6022 s3.1: what a manager reads to learn a device's capabilities
    (the onboarding example does)."""
    stores = Datastores(hostname="r1", capabilities=["urn:example:extra?module=extra"])
    client = Client(stores)
    hello = etree.fromstring(FrameDecoder(Framing.END_OF_MESSAGE).feed(NetconfServerSession(stores).start())[0])
    announced = [c.text for c in hello.iter(f"{{{NC}}}capability")]
    reply = client.rpc(
        f'<get><filter type="subtree"><netconf-state xmlns="{MON}"><capabilities/></netconf-state></filter></get>'
    )
    listed = [e.text for e in reply.iterfind(".//mon:capability", {"mon": MON})]
    assert listed == announced
    assert f"{MON}?module=ietf-netconf-monitoring&revision=2010-10-04" in listed
    assert "urn:example:extra?module=extra" in listed
    assert text(reply, ".//sys:os-name") == []  # filtered out


def test_end_of_message_framing_when_client_has_no_base11() -> None:
    client = Client(Datastores(hostname="r1"), chunked=False)
    assert text(client.rpc("<get-config><source><running/></source></get-config>"), ".//sys:hostname") == ["r1"]


def test_garbage_and_rpc_before_hello_close_the_session() -> None:
    session = NetconfServerSession(Datastores(hostname="r1"))
    session.start()
    assert session.receive(b"<rpc/>" + EOM) == b""
    assert session.closed
    chunked = Client(Datastores(hostname="r1"))
    assert chunked.session.receive(b"GET / HTTP/1.1\r\n\r\n") == b""
    assert chunked.session.closed


def test_hello_and_first_rpc_in_one_read_switch_framing_between_them() -> None:
    session = NetconfServerSession(Datastores(hostname="r1"))
    session.start()
    rpc = encode(
        f'<rpc xmlns="{NC}" message-id="1"><get-config><source><running/></source></get-config></rpc>'.encode(),
        Framing.CHUNKED,
    )
    out = session.receive(CLIENT_HELLO + EOM + rpc + rpc)
    replies = FrameDecoder(Framing.CHUNKED).feed(out)
    assert len(replies) == 2
    assert b"<hostname>r1</hostname>" in replies[1]


def test_operation_without_namespace_is_taken_as_base(client: Client) -> None:
    # ansible.netcommon's netconf_rpc sends the operation with no namespace
    reply = client.rpc('<get xmlns=""><filter type="subtree"><system xmlns="' + SYS + '"/></filter></get>')
    assert text(reply, ".//sys:hostname") == ["r1"]
    assert error_tag(client.rpc('<reboot-now xmlns="urn:other"/>')) == "operation-not-supported"


def test_startup_datastore_only_when_enabled() -> None:
    """RFC 6241 s8.7: copy-config running -> startup on a device with :startup; refused without it."""
    plain = Client(Datastores(hostname="r1"))
    reply = plain.rpc("<copy-config><target><startup/></target><source><running/></source></copy-config>")
    assert error_tag(reply) == "invalid-value"

    stores = Datastores(hostname="r2")
    stores.enable_startup()
    assert STARTUP_CAPABILITY in stores.capabilities
    client = Client(stores)
    edit = f'<interfaces xmlns="{IF}"><interface><name>eth1</name></interface></interfaces>'
    client.rpc(f"<edit-config><target><running/></target><config>{edit}</config></edit-config>")
    before = client.rpc("<get-config><source><startup/></source></get-config>")
    assert text(before, ".//if:interface/if:name") == ["eth0"]
    assert (
        error_tag(client.rpc("<copy-config><target><startup/></target><source><running/></source></copy-config>"))
        is None
    )
    after = client.rpc("<get-config><source><startup/></source></get-config>")
    assert text(after, ".//if:interface/if:name") == ["eth0", "eth1"]
