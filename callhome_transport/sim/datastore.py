"""A small NETCONF datastore for the simulated device, sans I/O.

:class:`NetconfServerSession` turns received bytes into bytes to send: hello
exchange, framing (RFC 6242) and the base operations (RFC 6241 s7): get,
get-config with subtree filters (s6), edit-config (merge, replace, create,
delete, remove; default-operation), copy-config, lock, unlock, validate,
commit, discard-changes, close-session.  It is schema-less: a list entry is
matched on its first leaf child (its key, by convention).
"""

from __future__ import annotations

import copy
import datetime
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lxml import etree

from ..protocol.framing import FrameDecoder, Framing, FramingError, encode

__all__ = ["NC", "STARTUP_CAPABILITY", "Datastores", "NetconfServerSession", "default_config", "edit_tree"]

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
_NC = f"{{{NC}}}"
_BASE_10 = "urn:ietf:params:netconf:base:1.0"
_BASE_11 = "urn:ietf:params:netconf:base:1.1"
CAPABILITIES = (
    _BASE_10,
    _BASE_11,
    "urn:ietf:params:netconf:capability:candidate:1.0",
    "urn:ietf:params:netconf:capability:writable-running:1.0",
    "urn:ietf:params:netconf:capability:validate:1.1",
    "urn:ietf:params:xml:ns:yang:ietf-system?module=ietf-system&revision=2014-08-06",
    "urn:ietf:params:xml:ns:yang:ietf-interfaces?module=ietf-interfaces&revision=2018-02-20",
    "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring?module=ietf-netconf-monitoring&revision=2010-10-04",
)
STARTUP_CAPABILITY = "urn:ietf:params:netconf:capability:startup:1.0"  # RFC 6241 s8.7
_SYS = "urn:ietf:params:xml:ns:yang:ietf-system"
_MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
_IF = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False)
_session_ids = itertools.count(1)


def default_config(hostname: str) -> etree._Element:
    """The configuration a new simulated device starts with."""
    return etree.fromstring(
        f"""<data xmlns="{NC}">
  <system xmlns="{_SYS}">
    <hostname>{hostname}</hostname><contact>noc@example.net</contact><location>lab</location>
  </system>
  <interfaces xmlns="{_IF}">
    <interface><name>eth0</name><description>uplink</description><enabled>true</enabled></interface>
  </interfaces>
</data>""",
        _PARSER,
    )


class RpcError(Exception):
    """An ``<rpc-error>`` to send back (RFC 6241 s4.3)."""

    def __init__(self, tag: str, message: str, *, error_type: str = "application", path: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag
        self.error_type = error_type
        self.path = path

    def element(self) -> etree._Element:
        err = etree.Element(_NC + "rpc-error")
        etree.SubElement(err, _NC + "error-type").text = self.error_type
        etree.SubElement(err, _NC + "error-tag").text = self.tag
        etree.SubElement(err, _NC + "error-severity").text = "error"
        if self.path:
            etree.SubElement(err, _NC + "error-path").text = self.path
        etree.SubElement(err, _NC + "error-message").text = str(self)
        return err


@dataclass
class Datastores:
    """``running`` and ``candidate`` of one device, shared by its sessions
    (and ``startup`` after :meth:`enable_startup`).

    ``validators`` may refuse a new running configuration (raise
    :class:`RpcError`) before a commit, an edit of running or a validate;
    ``listeners`` see each new running configuration (the device acts on it).
    ``capabilities`` are advertised besides the base ones."""

    hostname: str
    running: etree._Element = field(init=False)
    candidate: etree._Element = field(init=False)
    locks: dict[str, int] = field(default_factory=dict)
    validators: list[Callable[[etree._Element], None]] = field(default_factory=list)
    listeners: list[Callable[[etree._Element], None]] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    startup: etree._Element | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.running = default_config(self.hostname)
        self.candidate = copy.deepcopy(self.running)

    def enable_startup(self) -> None:
        """Keep a ``startup`` datastore and announce ``:startup`` (RFC 6241
        s8.7), as netopeer2 does: written with copy-config, read with
        get-config; the simulated device never reboots, so nothing reads it back."""
        if self.startup is None:
            self.startup = copy.deepcopy(self.running)
            self.capabilities.append(STARTUP_CAPABILITY)

    def validate(self, config: etree._Element) -> None:
        for check in self.validators:
            check(config)

    def set_running(self, config: etree._Element) -> None:
        """Validate, store and announce a new running configuration."""
        self.validate(config)
        self.running = config
        for listener in self.listeners:
            listener(config)

    def store(self, name: str) -> etree._Element:
        if name == "running":
            return self.running
        if name == "candidate":
            return self.candidate
        if name == "startup" and self.startup is not None:
            return self.startup
        raise RpcError("invalid-value", f"unsupported datastore {name}", error_type="protocol")

    def state(self) -> list[etree._Element]:
        """State data for ``<get>``: ietf-system's clock and platform, and the
        capabilities the device announces (RFC 6022 s3.1 ``netconf-state``)."""
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        system = etree.fromstring(
            f'<system-state xmlns="{_SYS}"><platform><os-name>callhome-sim</os-name></platform>'
            f"<clock><current-datetime>{now}</current-datetime></clock></system-state>"
        )
        netconf = etree.Element(f"{{{_MON}}}netconf-state", nsmap={None: _MON})
        capabilities = etree.SubElement(netconf, f"{{{_MON}}}capabilities")
        for uri in (*CAPABILITIES, *self.capabilities):
            etree.SubElement(capabilities, f"{{{_MON}}}capability").text = uri
        return [system, netconf]


# -- subtree filtering (RFC 6241 s6) -----------------------------------------------


def _same_name(filter_el: etree._Element, data_el: etree._Element) -> bool:
    fq, dq = etree.QName(filter_el), etree.QName(data_el)
    return fq.localname == dq.localname and (fq.namespace is None or fq.namespace == dq.namespace)


def _is_leaf(el: etree._Element) -> bool:
    return len(el) == 0


def _apply(filter_el: etree._Element, data_el: etree._Element) -> etree._Element | None:
    """Filter ``data_el`` (already name-matched) by ``filter_el``; None if excluded."""
    children = list(filter_el)
    if not children:
        text = (filter_el.text or "").strip()
        if text and (data_el.text or "").strip() != text:
            return None
        return copy.deepcopy(data_el)
    content = [c for c in children if _is_leaf(c) and (c.text or "").strip()]
    for match in content:
        if not any(_same_name(match, d) and (d.text or "").strip() == match.text.strip() for d in data_el):
            return None
    others = [c for c in children if c not in content]
    if not others:
        return copy.deepcopy(data_el)
    out = etree.Element(data_el.tag, nsmap=data_el.nsmap)
    for match in content:
        for d in data_el:
            if _same_name(match, d):
                out.append(copy.deepcopy(d))
    selected = False
    for f in others:
        for d in data_el:
            if _same_name(f, d):
                result = _apply(f, d)
                if result is not None:
                    out.append(result)
                    selected = True
    return out if selected or not others else None


def subtree_filter(data: etree._Element, filter_el: etree._Element | None) -> list[etree._Element]:
    """Elements of ``data`` (a ``<data>`` root) selected by ``filter_el``."""
    if filter_el is None:
        return [copy.deepcopy(child) for child in data]
    if filter_el.get("type", "subtree") != "subtree":
        raise RpcError("operation-not-supported", "only subtree filters are supported", error_type="protocol")
    results = []
    for f in filter_el:
        for d in data:
            if _same_name(f, d):
                result = _apply(f, d)
                if result is not None:
                    results.append(result)
    return results


# -- edit-config (RFC 6241 s7.2) -------------------------------------------------------

_OPERATIONS = {"merge", "replace", "create", "delete", "remove", "none"}


def _matches(config_el: etree._Element, target_el: etree._Element) -> bool:
    if config_el.tag != target_el.tag:
        return False
    key = next((c for c in config_el if _is_leaf(c)), None)
    if key is None or _is_leaf(config_el):
        return True
    found = target_el.find(key.tag)
    return found is not None and (found.text or "") == (key.text or "")


def _edit(target_parent: etree._Element, config_parent: etree._Element, default_op: str, path: str) -> None:
    for cfg in config_parent:
        if not isinstance(cfg.tag, str):
            continue  # comments, processing instructions
        op = cfg.attrib.pop(_NC + "operation", None) or default_op
        if op not in _OPERATIONS:
            raise RpcError("bad-attribute", f"unknown operation {op}", path=path)
        name = etree.QName(cfg).localname
        here = f"{path}/{name}"
        existing = next((t for t in target_parent if _matches(cfg, t)), None)
        if op in ("delete", "remove"):
            if existing is None:
                if op == "delete":
                    raise RpcError("data-missing", f"{here} does not exist", path=here)
                continue
            target_parent.remove(existing)
        elif op == "create" and existing is not None:
            raise RpcError("data-exists", f"{here} already exists", path=here)
        elif op == "replace" or (existing is None and op in ("merge", "create")):
            clean = _strip_operations(copy.deepcopy(cfg))
            if existing is not None:
                target_parent.replace(existing, clean)
            else:
                target_parent.append(clean)
        elif existing is not None:  # merge or none into an existing node
            if _is_leaf(cfg):
                if op == "merge":
                    existing.text = cfg.text
            else:
                _edit(existing, cfg, op, here)  # the operation is inherited (RFC 6241 s7.2)


def edit_tree(store: etree._Element, config: etree._Element, default_operation: str = "merge") -> etree._Element:
    """A copy of ``store`` (a ``<data>`` root) with the edit ``config`` (a
    ``<config>`` element, ``nc:operation`` attributes honoured) applied, as
    edit-config does with ``default_operation`` (RFC 6241 s7.2); raises
    :class:`RpcError`.  ``store`` and ``config`` are left as they are."""
    work = copy.deepcopy(store)
    if default_operation == "replace":
        for child in list(work):
            work.remove(child)
    _edit(work, copy.deepcopy(config), "merge" if default_operation == "replace" else default_operation, "")
    return work


def _strip_operations(el: etree._Element) -> etree._Element:
    for node in el.iter():
        node.attrib.pop(_NC + "operation", None)
    return el


# -- the session --------------------------------------------------------------------------


class NetconfServerSession:
    """One NETCONF session of the simulated device, sans I/O.

    :meth:`start` returns the server's hello; :meth:`receive` takes bytes and
    returns the bytes to send back.  :attr:`closed` turns true after
    ``<close-session>``.
    """

    def __init__(self, stores: Datastores) -> None:
        self.stores = stores
        self.session_id = next(_session_ids)
        self._decoder = FrameDecoder(Framing.END_OF_MESSAGE)
        self._framing = Framing.END_OF_MESSAGE
        self._hello_seen = False
        self.closed = False

    def start(self) -> bytes:
        hello = etree.Element(_NC + "hello", nsmap={None: NC})
        caps = etree.SubElement(hello, _NC + "capabilities")
        for uri in (*CAPABILITIES, *self.stores.capabilities):
            etree.SubElement(caps, _NC + "capability").text = uri
        etree.SubElement(hello, _NC + "session-id").text = str(self.session_id)
        return encode(etree.tostring(hello, xml_declaration=True, encoding="UTF-8"), Framing.END_OF_MESSAGE)

    def receive(self, data: bytes) -> bytes:
        out = bytearray()
        while not self.closed:
            try:
                # one message at a time: the hello may switch the framing of
                # the bytes that follow it in the same read (RFC 6242 s4.1)
                messages = self._decoder.feed(data, limit=1)
            except FramingError:
                self.closed = True
                break
            data = b""
            if not messages:
                break
            reply = self._handle(messages[0])
            if reply is not None:
                out += encode(reply, self._framing)
        return bytes(out)

    def _handle(self, message: bytes) -> bytes | None:
        try:
            root = etree.fromstring(message, _PARSER)
        except etree.XMLSyntaxError:
            return self._error_reply({}, RpcError("malformed-message", "not well-formed XML", error_type="rpc"))
        local = etree.QName(root).localname
        if not self._hello_seen:
            if local != "hello":
                self.closed = True
                return None
            self._hello_seen = True
            caps = {(c.text or "").strip() for c in root.iter(_NC + "capability")}
            if _BASE_11 in caps:
                self._framing = Framing.CHUNKED
                self._decoder.switch(Framing.CHUNKED)
            return None
        if local != "rpc" or root.tag != _NC + "rpc":
            return self._error_reply(
                {}, RpcError("unknown-element", f"expected <rpc>, got <{local}>", error_type="rpc")
            )
        attrs = dict(root.attrib)
        operation = next(iter(root), None)
        if operation is None:
            return self._error_reply(attrs, RpcError("missing-element", "empty <rpc>", error_type="rpc"))
        try:
            body = self._dispatch(operation)
        except RpcError as err:
            return self._error_reply(attrs, err)
        reply = etree.Element(_NC + "rpc-reply", nsmap={None: NC})
        reply.attrib.update(attrs)
        if body is None:
            etree.SubElement(reply, _NC + "ok")
        else:
            reply.append(body)
        return bytes(etree.tostring(reply, encoding="UTF-8"))

    def _error_reply(self, attrs: dict[str, str], err: RpcError) -> bytes:
        reply = etree.Element(_NC + "rpc-reply", nsmap={None: NC})
        reply.attrib.update(attrs)
        reply.append(err.element())
        return bytes(etree.tostring(reply, encoding="UTF-8"))

    def _dispatch(self, op: etree._Element) -> etree._Element | None:
        qname = etree.QName(op)
        if qname.namespace is None:
            # an operation sent without a namespace (ansible.netcommon's netconf_rpc
            # does so); servers such as netconfd take it as base:1.0, and so do we
            for el in op.iter():
                if isinstance(el.tag, str) and etree.QName(el).namespace is None:
                    el.tag = _NC + etree.QName(el).localname
            qname = etree.QName(op)
        if qname.namespace != NC:
            raise RpcError("operation-not-supported", f"{qname.localname} is not supported", error_type="protocol")
        name = qname.localname
        if name == "get":
            return self._data(
                itertools.chain([c for c in self.stores.running], self.stores.state()), op.find(_NC + "filter")
            )
        if name == "get-config":
            return self._data(self.stores.store(self._datastore(op, "source")), op.find(_NC + "filter"))
        if name == "edit-config":
            self._edit_config(op)
            return None
        if name == "copy-config":
            self._copy_config(op)
            return None
        if name in ("lock", "unlock"):
            self._lock(name, self._datastore(op, "target"))
            return None
        if name == "validate":
            source = self._datastore(op, "source", allow_config=True)
            if source != "config":
                self.stores.validate(self.stores.store(source))
            return None
        if name == "commit":
            self._check_lock("running")
            self.stores.set_running(copy.deepcopy(self.stores.candidate))
            return None
        if name == "discard-changes":
            self.stores.candidate = copy.deepcopy(self.stores.running)
            return None
        if name == "close-session":
            self._release_locks()
            self.closed = True
            return None
        raise RpcError("operation-not-supported", f"{name} is not supported", error_type="protocol")

    def _datastore(self, op: etree._Element, role: str, allow_config: bool = False) -> str:
        holder = op.find(_NC + role)
        if holder is None or len(holder) == 0:
            raise RpcError("missing-element", f"<{role}> is required", error_type="protocol")
        name = str(etree.QName(holder[0]).localname)
        if allow_config and name == "config":
            return name
        self.stores.store(name)
        return name

    def _data(
        self, data: Iterable[etree._Element] | etree._Element, filter_el: etree._Element | None
    ) -> etree._Element:
        root = etree.Element(_NC + "data", nsmap={None: NC})
        for child in data:
            root.append(copy.deepcopy(child))
        out = etree.Element(_NC + "data", nsmap={None: NC})
        for el in subtree_filter(root, filter_el):
            out.append(el)
        return out

    def _edit_config(self, op: etree._Element) -> None:
        target = self._datastore(op, "target")
        self._check_lock(target)
        config = op.find(_NC + "config")
        if config is None:
            raise RpcError("missing-element", "<config> is required", error_type="protocol")
        default_el = op.find(_NC + "default-operation")
        default_op = (default_el.text or "merge").strip() if default_el is not None else "merge"
        if default_op not in ("merge", "replace", "none"):
            raise RpcError("invalid-value", f"bad default-operation {default_op}", error_type="protocol")
        self._store(target, edit_tree(self.stores.store(target), config, default_op))

    def _copy_config(self, op: etree._Element) -> None:
        target = self._datastore(op, "target")
        self._check_lock(target)
        source = op.find(_NC + "source")
        if source is None or len(source) == 0:
            raise RpcError("missing-element", "<source> is required", error_type="protocol")
        if etree.QName(source[0]).localname == "config":
            new = etree.Element(_NC + "data", nsmap={None: NC})
            for child in source[0]:
                new.append(copy.deepcopy(child))
        else:
            new = copy.deepcopy(self.stores.store(etree.QName(source[0]).localname))
        self._store(target, new)

    def _store(self, target: str, config: etree._Element) -> None:
        if target == "running":
            self.stores.set_running(config)
        else:
            setattr(self.stores, target, config)

    def _lock(self, name: str, target: str) -> None:
        owner = self.stores.locks.get(target)
        if name == "lock":
            if owner is not None:
                raise RpcError("lock-denied", f"{target} is locked by session {owner}", error_type="protocol")
            self.stores.locks[target] = self.session_id
        else:
            if owner != self.session_id:
                raise RpcError("operation-failed", f"{target} is not locked by this session", error_type="protocol")
            del self.stores.locks[target]

    def _check_lock(self, target: str) -> None:
        owner = self.stores.locks.get(target)
        if owner is not None and owner != self.session_id:
            raise RpcError("in-use", f"{target} is locked by session {owner}", error_type="protocol")

    def _release_locks(self) -> None:
        for target, owner in list(self.stores.locks.items()):
            if owner == self.session_id:
                del self.stores.locks[target]

    def abort(self) -> None:
        """The transport ended: release this session's locks (RFC 6241 s7.5)."""
        self._release_locks()
        self.closed = True
