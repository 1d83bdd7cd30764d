"""RESTCONF data resources of the simulated device (RFC 8040 s3.5, s4), sans
I/O, stored in the same :class:`~.datastore.Datastores` its NETCONF sessions
use: a value written over RESTCONF reads back over NETCONF and the other way.

The datastore holds XML; RFC 7951 JSON is translated with ``yanglint``
(libyang) against the YANG module set the device implements
(:class:`YangSchema`), so list and leaf-list encoding, number and identity
types are those of the schema, and a body that does not fit it is refused
with an RFC 8040 s7.1 ``ietf-restconf:errors`` body naming libyang's data
path.  Edits reuse the NETCONF edit-config semantics of the datastore
(RFC 8040 s4.5 PUT = ``replace`` of the target, s4.6.1 plain PATCH =
``merge``, s4.7 DELETE = ``delete``), then commit the new running
configuration through :meth:`Datastores.set_running` (validators and
listeners run as for a NETCONF commit).

What is checked is each body's fit to the schema (names, types, keys, as
libyang parses an edit); cross-references (leafref, must, min-elements) are
not, as a device with an empty keystore could not hold any call home.  The
merge is the datastore's schema-less one (list entries matched on their first
key), so a PATCH that writes one case of a choice does not remove the other
case (RFC 7950 s7.9.6): PUT the node that holds the choice instead.  The
datastore resource ``/restconf/data`` itself is not served: edit a data
resource below it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from .datastore import NC, Datastores, RpcError, edit_tree

__all__ = ["RestconfData", "YangSchema"]

DATA_ROOT = "/restconf/data/"
RESTCONF_ERRORS = "ietf-restconf:errors"
_NC_OPERATION = f"{{{NC}}}operation"
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
_LOCATION = re.compile(r'\(Data location "([^"]*)"')
_NAMESPACE = re.compile(r'^\s*namespace\s+"?([^";\s]+)"?\s*;', re.MULTILINE)
_MODULE = re.compile(r"^\s*module\s+([A-Za-z_][\w.-]*)", re.MULTILINE)
# RFC 8040 s7: the status that goes with each error-tag
_STATUS = {
    "in-use": 409,
    "invalid-value": 400,
    "malformed-message": 400,
    "bad-element": 400,
    "unknown-element": 400,
    "data-exists": 409,
    "data-missing": 409,
    "lock-denied": 409,
    "operation-not-supported": 405,
    "operation-failed": 500,
}


class RestconfRequestError(Exception):
    """A request the device refuses, as an RFC 8040 s7.1 error."""

    def __init__(self, status: int, tag: str, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.tag = tag
        self.path = path

    def body(self) -> bytes:
        error: dict[str, str] = {"error-type": "application" if self.status < 500 else "protocol"}
        error["error-tag"] = self.tag
        if self.path:
            error["error-path"] = self.path
        error["error-message"] = str(self)
        return json.dumps({RESTCONF_ERRORS: {"error": [error]}}).encode()


@dataclass(frozen=True, kw_only=True)
class YangSchema:
    """The YANG modules a simulated device implements: ``modules`` (the files
    whose data it serves, e.g. ``ietf-restconf-server@2024-08-14.yang``) with
    their imports found in ``search_dir``; translation with ``yanglint``
    (Debian package libyang2-tools), every feature enabled."""

    search_dir: Path
    modules: tuple[Path, ...]
    yanglint: str = "yanglint"
    timeout: float = 10.0
    namespaces: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.modules:
            raise ValueError("modules: at least one YANG module file")
        found: dict[str, str] = {}
        for path in (*self.modules, *sorted(self.search_dir.glob("*.yang"))):
            text = path.read_text(encoding="utf-8")
            module, namespace = _MODULE.search(text), _NAMESPACE.search(text)
            if module and namespace:
                found.setdefault(module.group(1), namespace.group(1))
        object.__setattr__(self, "namespaces", found)

    @property
    def served(self) -> frozenset[str]:
        """The names of the modules whose data the device serves."""
        names = set()
        for path in self.modules:
            match = _MODULE.search(path.read_text(encoding="utf-8"))
            if match:
                names.add(match.group(1))
        return frozenset(names)

    def translate(self, data: bytes, source: str, target: str) -> bytes:
        """``data`` (``source`` xml or json) in the ``target`` encoding, parsed as
        the content of an edit (RFC 6241 s7.2; no cross-reference checks).
        Raises :class:`RestconfRequestError` (400) when it does not fit the schema."""
        with tempfile.TemporaryDirectory(prefix="chrc-") as tmp:
            path = Path(tmp) / f"body.{source}"
            path.write_bytes(data)
            command = [self.yanglint, "-f", target, "-t", "edit", "-ii", "-p", str(self.search_dir)]
            proc = subprocess.run(
                [*command, *map(str, self.modules), str(path)],
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        if proc.returncode != 0:
            text = proc.stderr.decode("utf-8", "replace")
            first = next((line for line in text.splitlines() if "err" in line), text.strip())
            location = _LOCATION.search(first)
            message = re.sub(r"^libyang err : |\s*\(Data location.*$", "", first).strip()
            raise RestconfRequestError(
                400, "invalid-value", message or "the body does not fit the schema", path=location and location[1]
            )
        return proc.stdout


@dataclass(frozen=True)
class _Segment:
    """One step of a data resource identifier (RFC 8040 s3.5.3)."""

    module: str  # the module of the node (inherited from the parent when not written)
    name: str
    keys: tuple[str, ...]  # list entry keys, in the order of the list's key statement


def _parse_path(path: str) -> list[_Segment]:
    segments: list[_Segment] = []
    module = ""
    for raw in path.split("/"):
        if not raw:
            raise RestconfRequestError(400, "invalid-value", "empty step in the resource path", path=path)
        node, _, key_text = raw.partition("=")
        node = urllib.parse.unquote(node)
        if ":" in node:
            module, node = node.split(":", 1)
        elif not module:
            raise RestconfRequestError(
                400, "invalid-value", f"the first step {node!r} needs its module name (module:node)", path=path
            )
        keys = tuple(urllib.parse.unquote(k) for k in key_text.split(",")) if "=" in raw else ()
        segments.append(_Segment(module, node, keys))
    return segments


class RestconfData:
    """The data resources ``/restconf/data/<module>:<top>/...`` of the modules
    in ``schema``, over ``stores`` (shared with the device's NETCONF sessions)."""

    def __init__(self, stores: Datastores, schema: YangSchema) -> None:
        self.stores = stores
        self.schema = schema
        self.served = schema.served

    def handles(self, target: str) -> bool:
        """Whether ``target`` (a request target) names data of a served module."""
        path = urllib.parse.urlsplit(target).path
        if not path.startswith(DATA_ROOT):
            return False
        first = urllib.parse.unquote(path[len(DATA_ROOT) :].split("/")[0])
        return first.split(":")[0] in self.served

    def request(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        """Answer one request: (HTTP status, JSON body)."""
        try:
            return self._request(method, target, body)
        except RestconfRequestError as err:
            return err.status, err.body()

    def _request(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        split = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        for name, values in query.items():
            # RFC 8040 s4.8.1: all data here is configuration
            if name != "content" or values[-1] not in ("config", "all"):
                raise RestconfRequestError(400, "invalid-value", f"unsupported query parameter {name}={values[-1]}")
        segments = _parse_path(split.path[len(DATA_ROOT) :])
        if method in ("GET", "HEAD"):
            status, data = self._get(segments)
            return status, b"" if method == "HEAD" else data
        if method not in ("PUT", "PATCH", "DELETE"):
            raise RestconfRequestError(405, "operation-not-supported", f"{method} is not supported on a data resource")
        self._check_writable()
        existing = self._find(self.stores.running, segments)
        if method == "DELETE":
            if existing is None:
                raise RestconfRequestError(409, "data-missing", "the resource does not exist", path=split.path)
            edit = self._chain(segments)
            edit[-1].set(_NC_OPERATION, "delete")
        else:
            if method == "PATCH" and existing is None:  # RFC 8040 s4.6.1: never creates the target
                raise RestconfRequestError(404, "invalid-value", "the resource does not exist", path=split.path)
            edit = self._body_edit(segments, body)
            if method == "PUT":
                edit[-1].set(_NC_OPERATION, "replace")
        self._commit(edit)
        return (201 if method == "PUT" and existing is None else 204), b""

    # -- reading -----------------------------------------------------------------------------------

    def _get(self, segments: list[_Segment]) -> tuple[int, bytes]:
        found = self._find(self.stores.running, segments)
        if found is None:
            raise RestconfRequestError(404, "invalid-value", "the resource does not exist")
        chain = self._chain(segments)
        if len(segments) == 1:
            chain = [copy.deepcopy(found)]
        else:
            holder = chain[len(segments) - 1]
            chain[len(segments) - 2].replace(holder, copy.deepcopy(found))
        document = json.loads(self.schema.translate(etree.tostring(chain[0]), "xml", "json") or b"{}")
        value: Any = document
        for depth, segment in enumerate(segments):
            value = self._member(value, segment, top=depth == 0)
        last = segments[-1]
        return 200, json.dumps({f"{last.module}:{last.name}": value}).encode()

    @staticmethod
    def _member(value: Any, segment: _Segment, *, top: bool) -> Any:
        if isinstance(value, list):  # a list entry step (pruned: exactly one entry)
            value = value[0]
        qualified = f"{segment.module}:{segment.name}"
        if not isinstance(value, dict):
            raise RestconfRequestError(500, "operation-failed", f"no {qualified} in the translated data")
        return value[qualified] if top or qualified in value else value[segment.name]

    # -- the XML side ------------------------------------------------------------------------------

    def _namespace(self, module: str) -> str:
        namespace = self.schema.namespaces.get(module)
        if namespace is None:
            raise RestconfRequestError(400, "invalid-value", f"unknown module {module}")
        return namespace

    def _matches(self, element: etree._Element, segment: _Segment) -> bool:
        if element.tag != f"{{{self._namespace(segment.module)}}}{segment.name}":
            return False
        leaves = [c for c in element if isinstance(c.tag, str) and len(c) == 0][: len(segment.keys)]
        # keys come first in a list entry (RFC 7950 s7.8.5; libyang writes them so)
        return [(c.text or "") for c in leaves] == list(segment.keys)

    def _find(self, root: etree._Element, segments: list[_Segment]) -> etree._Element | None:
        here: etree._Element | None = root
        for segment in segments:
            assert here is not None
            here = next((c for c in here if isinstance(c.tag, str) and self._matches(c, segment)), None)
            if here is None:
                return None
        return here

    def _chain(self, segments: list[_Segment]) -> list[etree._Element]:
        """Elements from the top node down to the target, each list entry with
        only its keys (copied from running: their names are the schema's)."""
        chain: list[etree._Element] = []
        parent: etree._Element | None = None
        running: etree._Element | None = self.stores.running
        for segment in segments:
            tag = f"{{{self._namespace(segment.module)}}}{segment.name}"
            element = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
            match = None
            if running is not None:
                match = next((c for c in running if isinstance(c.tag, str) and self._matches(c, segment)), None)
            if segment.keys:
                if match is None:
                    if segment is segments[-1]:
                        break  # the target itself: the body brings its keys
                    raise RestconfRequestError(
                        404, "invalid-value", f"the list entry {segment.name}={','.join(segment.keys)} does not exist"
                    )
                for key in list(match)[: len(segment.keys)]:
                    element.append(copy.deepcopy(key))
            chain.append(element)
            parent, running = element, match
        return chain

    # -- writing -----------------------------------------------------------------------------------

    def _body_edit(self, segments: list[_Segment], body: bytes) -> list[etree._Element]:
        """The body placed at the target inside its ancestors, as XML (RFC 8040
        s4.5: one member, named as the target, list keys as in the URI)."""
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise RestconfRequestError(400, "malformed-message", f"the body is not JSON: {exc}") from None
        last = segments[-1]
        qualified = f"{last.module}:{last.name}"
        if not isinstance(value, dict) or list(value) != [qualified]:
            raise RestconfRequestError(
                400, "invalid-value", f"the body must hold exactly the target resource as {qualified!r}"
            )
        member = value[qualified]
        if last.keys and not (isinstance(member, list) and len(member) == 1 and isinstance(member[0], dict)):
            raise RestconfRequestError(400, "invalid-value", f"{qualified}: one list entry expected")
        chain = self._chain(segments[:-1]) if len(segments) > 1 else []
        if chain:
            document = json.loads(self.schema.translate(etree.tostring(chain[0]), "xml", "json"))
            holder: Any = document
            for depth, segment in enumerate(segments[:-1]):
                holder = self._member(holder, segment, top=depth == 0)
                if isinstance(holder, list):
                    holder = holder[0]
            holder[qualified if last.module != segments[-2].module else last.name] = member
        else:
            document = value
        xml = self.schema.translate(json.dumps(document).encode(), "json", "xml")
        top = etree.fromstring(b"<wrap>" + xml + b"</wrap>", _PARSER)
        elements = [e for e in top if isinstance(e.tag, str)]
        edit = [elements[0]]
        for segment in segments[1:]:
            edit.append(
                next(c for c in edit[-1] if isinstance(c.tag, str) and etree.QName(c).localname == segment.name)
            )
        if last.keys and not self._matches(edit[-1], last):
            raise RestconfRequestError(400, "invalid-value", "the key values of the body differ from the URI's")
        return edit

    def _check_writable(self) -> None:
        """RFC 8040 s1.4: a NETCONF lock, or uncommitted candidate changes, hold RESTCONF edits off."""
        stores = self.stores
        owner = stores.locks.get("running") or stores.locks.get("candidate")
        if owner is not None:
            raise RestconfRequestError(409, "in-use", f"the datastore is locked by NETCONF session {owner}")
        if etree.tostring(stores.candidate, method="c14n") != etree.tostring(stores.running, method="c14n"):
            raise RestconfRequestError(409, "in-use", "the candidate datastore has uncommitted changes")

    def _commit(self, edit: list[etree._Element]) -> None:
        config = etree.Element(f"{{{NC}}}config")
        config.append(edit[0])
        try:
            running = edit_tree(self.stores.running, config)
            self.stores.set_running(running)
        except RpcError as err:
            raise RestconfRequestError(_STATUS.get(err.tag, 400), err.tag, str(err), path=err.path) from None
        self.stores.candidate = copy.deepcopy(running)
