"""Gateway configuration (``callhome serve --config gateway.yml``).

::

    inventory: devices.yml          # the library's inventory format (relative to this file)
    run_dir: /run/callhome          # control.sock and devices/<name>/{netconf,restconf}.sock
    socket_mode: "0600"             # private by default
    deferral_timeout: 60            # a local client waits this long for its device to call
    hello_timeout: 30               # a device answers a NETCONF hello within this, a local client too
    hold_idle: 60                   # hold_session auto: a session kept ready for a device used this recently (0: off)
    terminal: false                 # devices/<name>/terminal.sock: a shell on SSH devices (opt in)
    listen:
      addresses: null               # null = every address, IPv4 and IPv6; or a list
      ssh_port: 4334                # null disables
      tls_port: 4335
      restconf_port: 4336
      tls_strict_port: null         # strict RFC 8071 C4 listener (tlslite-ng)
      outbound_ssh_port: 7804       # Junos outbound-ssh (no IANA port); runs with outbound_ssh devices
      proxy_protocol:               # behind an L4 balancer (docs/scale.md); absent: off
        from: [192.0.2.10/32]       # the balancers allowed (and required) to send a PROXY header
        listeners: [ssh, tls, restconf, tls-strict, outbound-ssh]   # default: all of them
        timeout: 5                  # seconds a balancer has to send its header
    outbound_ssh: {preamble_timeout: 10}
    tls:                            # needed for TLS / RESTCONF devices
      certfile: pki/manager.pem
      keyfile: pki/manager.key
    ssh: {handshake_timeout: 30, keepalive_interval: 30, keepalive_count_max: 3}
                                    # also kex_algorithms, encryption_algorithms, mac_algorithms,
                                    # host_key_algorithms: lists, in order (default: asyncssh's)
    admission:                      # docs/gateway.md: MaxStartups / PerSourcePenalties analogues
      max_pending_handshakes: 256   # per listener
      banner_timeout: 10
      failures_before_block: 10
      failure_window: 60
      block_seconds: 60
      penalties: {unknown_key: 1, garbage: 2, grace_timeout: 1, auth_failed: 1}
      exempt: []                    # CIDRs never blocked
      max_tracked_sources: 65536
    events:                         # GET /events (docs/events.md)
      buffer: 10000                 # events held for consumers that reconnect (?since=ID)
      max_followers: 32             # event streams open at once
    cluster:                        # a member of a gateway cluster (docs/scale.md); absent: alone
      redis: redis://10.0.0.5:6379/0
      gateway_id: gw-a              # unique in the cluster (default: host; --workers adds -w<N>)
      host: gw-a                    # the name clients reach this host by (default: the host name)
      ttl: 90                       # seconds a record outlives a gateway that died silently
      refresh_interval: 30          # the SSH keepalive interval is a good value
      timeout: 2                    # seconds per Redis command

A bad file fails at start with the file, the key path and what was expected
(:class:`~callhome_transport.errors.InventoryError`, shared with the inventory).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, RESTCONF_CH_TLS_PORT
from ..errors import InventoryError
from ..identity.inventory import Device, Inventory, Transport
from ..protocol.session import WARM_IDLE
from ..server.admission import AdmissionConfig, FailureKind, Penalties
from ..transports.outbound_ssh import JUNOS_OUTBOUND_SSH_PORT, OutboundSSHConfig
from ..transports.proxy import LISTENER_KINDS, ProxyProtocolConfig
from ..transports.ssh import SSHClientConfig
from ..transports.tls import TLSClientConfig
from ..yamlfile import read_yaml_file
from .cluster import ClusterConfig

__all__ = ["AF_UNIX_PATH_MAX", "GatewayConfig"]

# Linux unix(7): sun_path holds 108 bytes including the terminating NUL
AF_UNIX_PATH_MAX = 107

_TOP = (
    "inventory",
    "run_dir",
    "socket_mode",
    "deferral_timeout",
    "hello_timeout",
    "hold_idle",
    "terminal",
    "listen",
    "tls",
    "ssh",
    "admission",
    "outbound_ssh",
    "events",
    "cluster",
)


# gateway.yml ssh keys -> SSHClientConfig fields (the algorithms we offer, in order)
SSH_ALGORITHMS = {
    "kex_algorithms": "kex_algs",
    "encryption_algorithms": "encryption_algs",
    "mac_algorithms": "mac_algs",
    "host_key_algorithms": "server_host_key_algs",
}


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    source: Path
    inventory_path: Path
    run_dir: Path
    socket_mode: int = 0o600
    deferral_timeout: float = 60.0
    hello_timeout: float = 30.0
    hold_idle: float = WARM_IDLE  # hold_session auto: a session kept ready for a device used this recently
    terminal: bool = False  # remote terminal endpoints (call-home draft), opt in
    listen_addresses: list[str] | None = None
    ssh_port: int | None = NETCONF_CH_SSH_PORT
    tls_port: int | None = NETCONF_CH_TLS_PORT
    restconf_port: int | None = RESTCONF_CH_TLS_PORT
    tls_strict_port: int | None = None
    outbound_ssh_port: int | None = JUNOS_OUTBOUND_SSH_PORT
    outbound_ssh: OutboundSSHConfig = field(default_factory=OutboundSSHConfig)
    proxy_protocol: ProxyProtocolConfig | None = None
    tls: TLSClientConfig | None = None
    ssh: SSHClientConfig = field(default_factory=SSHClientConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    events_buffer: int = 10_000  # events held for GET /events?since=ID
    events_max_followers: int = 32  # GET /events streams open at once
    cluster: ClusterConfig | None = None
    reuse_port: bool = False  # set for the workers of "callhome serve --workers N"

    def for_worker(self, index: int) -> GatewayConfig:
        """Worker ``index`` of ``callhome serve --workers N``: the same
        listeners with ``SO_REUSEPORT``, its own run directory
        (``run_dir/w<index>``) and cluster id (``<gateway_id>-w<index>``)."""
        if self.cluster is None:
            raise InventoryError(self.source, "cluster", "a cluster.redis URL: --workers share the registry")
        listeners = (self.ssh_port, self.tls_port, self.restconf_port, self.tls_strict_port, self.outbound_ssh_port)
        ports = [p for p in listeners if p is not None]
        if 0 in ports:
            raise InventoryError(self.source, "listen", "fixed ports with --workers (0 would give each its own)")
        cluster = dataclasses.replace(self.cluster, gateway_id=f"{self.cluster.gateway_id}-w{index}")
        return dataclasses.replace(self, run_dir=self.run_dir / f"w{index}", cluster=cluster, reuse_port=True)

    def endpoint_kinds(self, device: Device) -> tuple[str, ...]:
        """The local endpoints the gateway opens for ``device``:
        ``devices/<name>/<kind>.sock``."""
        if device.transport is Transport.RESTCONF:
            return ("restconf",)
        if device.transport is Transport.SSH and self.terminal:
            return ("netconf", "terminal")
        return ("netconf",)

    def endpoint_path(self, device: str, kind: str) -> Path:
        return self.run_dir / "devices" / device / f"{kind}.sock"

    def load_inventory(self) -> Inventory:
        """The inventory, checked for this gateway: TLS devices need the
        manager's certificate, every endpoint path must fit a Unix socket
        address.  Raises :class:`InventoryError`."""
        inventory = Inventory.from_file(self.inventory_path)
        for device in inventory:
            for kind in self.endpoint_kinds(device):
                path = self.endpoint_path(device.name, kind)
                length = len(os.fsencode(path))
                if length > AF_UNIX_PATH_MAX:
                    raise InventoryError(
                        self.inventory_path,
                        f"devices.{device.name}",
                        f"a name short enough for its socket path ({path} is {length} bytes; a Unix socket "
                        f"address holds at most {AF_UNIX_PATH_MAX}): shorten the name or the gateway's run_dir",
                    )
        over_tls = sorted(d.name for d in inventory if d.transport in (Transport.TLS, Transport.RESTCONF))
        if over_tls and self.tls is None:
            # without the manager's certificate the TLS listeners do not start and
            # these devices could never connect: say so at start, not never
            shown = ", ".join(over_tls[:5]) + (" ..." if len(over_tls) > 5 else "")
            raise InventoryError(
                self.source,
                "tls",
                "tls.certfile and tls.keyfile (the manager's TLS client certificate): "
                f"devices {shown} call home over TLS",
            )
        return inventory

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GatewayConfig:
        path = Path(path)
        return _Parser(path).parse(read_yaml_file(path))


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, expected: str) -> InventoryError:
        return InventoryError(self.path, key, expected)

    def section(self, data: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.fail(key or "(top level)", "a mapping")
        for name in data:
            if name not in allowed:
                raise self.fail(f"{key}.{name}".lstrip("."), f"one of the keys {', '.join(allowed)}")
        return data

    def port(self, value: Any, key: str, default: int | None) -> int | None:
        if value is None:
            return None
        if value == "default":
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise self.fail(key, "a port number 0..65535 or null")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "a list of algorithm names")
        return tuple(value)

    def number(self, value: Any, key: str, default: float) -> float:
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise self.fail(key, "a non-negative number")
        return float(value)

    def file(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a file path")
        resolved = Path(value).expanduser()
        resolved = resolved if resolved.is_absolute() else self.base / resolved
        if not resolved.is_file():
            raise self.fail(key, f"an existing file ({resolved})")
        return resolved

    def admission(self, data: Any) -> AdmissionConfig:
        adm = self.section(
            data,
            "admission",
            (
                "max_pending_handshakes",
                "banner_timeout",
                "failures_before_block",
                "failure_window",
                "block_seconds",
                "penalties",
                "exempt",
                "max_tracked_sources",
            ),
        )
        default = AdmissionConfig()
        kinds = [kind.value for kind in FailureKind]
        weights = self.section(adm.get("penalties"), "admission.penalties", tuple(kinds))
        exempt = self.cidrs(adm.get("exempt") or [], "admission.exempt")
        values: dict[str, Any] = {}
        for key in ("max_pending_handshakes", "failures_before_block", "max_tracked_sources"):
            value = self.number(adm.get(key), f"admission.{key}", getattr(default, key))
            if value != int(value):
                raise self.fail(f"admission.{key}", "a whole number")
            values[key] = int(value)
        for key in ("banner_timeout", "failure_window", "block_seconds"):
            values[key] = self.number(adm.get(key), f"admission.{key}", getattr(default, key))
        penalties = {
            kind: self.number(weights.get(kind), f"admission.penalties.{kind}", getattr(default.penalties, kind))
            for kind in kinds
        }
        try:
            return AdmissionConfig(**values, penalties=Penalties(**penalties), exempt=tuple(exempt))
        except ValueError as exc:
            raise self.fail("admission", str(exc)) from None

    def whole(self, value: Any, key: str, default: int, minimum: int) -> int:
        number = self.number(value, key, default)
        if number != int(number) or number < minimum:
            raise self.fail(key, f"a whole number >= {minimum}")
        return int(number)

    def cidrs(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(cidr, str) and cidr for cidr in value):
            raise self.fail(key, "a list of addresses or networks (CIDR), e.g. ['192.0.2.0/24']")
        for index, cidr in enumerate(value):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise self.fail(f"{key}[{index}]", f"an address or network (CIDR), not {cidr!r}") from None
        return value

    def proxy_protocol(self, data: Any) -> ProxyProtocolConfig | None:
        if data is None:
            return None
        section = self.section(data, "listen.proxy_protocol", ("from", "listeners", "timeout"))
        trusted = self.cidrs(section.get("from"), "listen.proxy_protocol.from")
        if not trusted:
            raise self.fail("listen.proxy_protocol.from", "at least one balancer address or network (CIDR)")
        listeners = section.get("listeners", list(LISTENER_KINDS))
        if not isinstance(listeners, list) or not all(kind in LISTENER_KINDS for kind in listeners) or not listeners:
            raise self.fail("listen.proxy_protocol.listeners", f"a list of listeners among {', '.join(LISTENER_KINDS)}")
        timeout = self.number(section.get("timeout"), "listen.proxy_protocol.timeout", 5.0)
        if timeout <= 0:
            raise self.fail("listen.proxy_protocol.timeout", "a number of seconds > 0")
        return ProxyProtocolConfig(trusted=tuple(trusted), listeners=frozenset(listeners), timeout=timeout)

    def cluster(self, data: Any) -> ClusterConfig | None:
        if data is None:
            return None
        keys = ("redis", "gateway_id", "host", "ttl", "refresh_interval", "timeout")
        section = self.section(data, "cluster", keys)
        url = section.get("redis")
        if not isinstance(url, str) or not url:
            raise self.fail("cluster.redis", "a Redis URL such as redis://10.0.0.5:6379/0")
        names = {}
        for key in ("gateway_id", "host"):
            value = section.get(key, "")
            if not isinstance(value, str):
                raise self.fail(f"cluster.{key}", "a name (no spaces, ':' or glob characters)")
            names[key] = value
        default = ClusterConfig(redis_url="redis://localhost")
        numbers = {key: self.number(section.get(key), f"cluster.{key}", getattr(default, key)) for key in keys[3:]}
        try:
            return ClusterConfig(
                redis_url=url,
                gateway_id=names["gateway_id"],
                host=names["host"],
                ttl=numbers["ttl"],
                refresh_interval=numbers["refresh_interval"],
                timeout=numbers["timeout"],
            )
        except ValueError as exc:
            raise self.fail("cluster", str(exc)) from None

    def parse(self, data: Any) -> GatewayConfig:
        top = self.section(data, "", _TOP)
        inventory = self.file(top.get("inventory"), "inventory")
        run_dir_raw = top.get("run_dir", "/run/callhome")
        if not isinstance(run_dir_raw, str) or not run_dir_raw:
            raise self.fail("run_dir", "a directory path")
        run_dir = Path(run_dir_raw).expanduser()
        run_dir = run_dir if run_dir.is_absolute() else self.base / run_dir
        control = run_dir / "control.sock"
        if len(os.fsencode(control)) > AF_UNIX_PATH_MAX:
            raise self.fail(
                "run_dir",
                f"a directory short enough for its sockets ({control} is {len(os.fsencode(control))} bytes; "
                f"a Unix socket address holds at most {AF_UNIX_PATH_MAX})",
            )
        mode_raw = top.get("socket_mode", "0600")
        try:
            mode = int(str(mode_raw), 8)
        except ValueError:
            raise self.fail("socket_mode", "an octal mode such as '0600'") from None
        if not 0 <= mode <= 0o777:
            raise self.fail("socket_mode", "an octal mode such as '0600'")
        listen = self.section(
            top.get("listen"),
            "listen",
            (
                "addresses",
                "ssh_port",
                "tls_port",
                "restconf_port",
                "tls_strict_port",
                "outbound_ssh_port",
                "proxy_protocol",
            ),
        )
        addresses = listen.get("addresses")
        if addresses is not None and (
            not isinstance(addresses, list) or not all(isinstance(a, str) and a for a in addresses)
        ):
            raise self.fail("listen.addresses", "a list of addresses, or null for all")
        tls_section = self.section(top.get("tls"), "tls", ("certfile", "keyfile", "handshake_timeout"))
        tls = None
        if tls_section:
            try:
                tls = TLSClientConfig(
                    certfile=self.file(tls_section.get("certfile"), "tls.certfile"),
                    keyfile=self.file(tls_section["keyfile"], "tls.keyfile") if "keyfile" in tls_section else None,
                    handshake_timeout=self.number(tls_section.get("handshake_timeout"), "tls.handshake_timeout", 30.0),
                )
            except ValueError as exc:
                raise self.fail("tls", str(exc)) from None
        ssh_section = self.section(
            top.get("ssh"),
            "ssh",
            ("handshake_timeout", "keepalive_interval", "keepalive_count_max", "keepalive_jitter", *SSH_ALGORITHMS),
        )
        try:
            ssh = SSHClientConfig(
                handshake_timeout=self.number(ssh_section.get("handshake_timeout"), "ssh.handshake_timeout", 30.0),
                keepalive_interval=self.number(ssh_section.get("keepalive_interval"), "ssh.keepalive_interval", 30.0),
                keepalive_count_max=int(
                    self.number(ssh_section.get("keepalive_count_max"), "ssh.keepalive_count_max", 3)
                ),
                keepalive_jitter=self.number(ssh_section.get("keepalive_jitter"), "ssh.keepalive_jitter", 1.0),
                **{field: self.names(ssh_section.get(key), f"ssh.{key}") for key, field in SSH_ALGORITHMS.items()},
            )
        except ValueError as exc:
            raise self.fail("ssh", str(exc)) from None
        admission = self.admission(top.get("admission"))
        hello_timeout = self.number(top.get("hello_timeout"), "hello_timeout", 30.0)
        if hello_timeout <= 0:
            raise self.fail("hello_timeout", "a number of seconds > 0")
        hold_idle = self.number(top.get("hold_idle"), "hold_idle", WARM_IDLE)
        if not hold_idle >= 0:  # number() refuses negative numbers, not NaN
            raise self.fail("hold_idle", "a number of seconds >= 0")
        outbound = self.section(top.get("outbound_ssh"), "outbound_ssh", ("preamble_timeout",))
        try:
            outbound_ssh = OutboundSSHConfig(
                preamble_timeout=self.number(outbound.get("preamble_timeout"), "outbound_ssh.preamble_timeout", 10.0)
            )
        except ValueError as exc:
            raise self.fail("outbound_ssh.preamble_timeout", str(exc)) from None
        events = self.section(top.get("events"), "events", ("buffer", "max_followers"))
        return GatewayConfig(
            source=self.path,
            hello_timeout=hello_timeout,
            hold_idle=hold_idle,
            inventory_path=inventory,
            run_dir=run_dir,
            socket_mode=mode,
            deferral_timeout=self.number(top.get("deferral_timeout"), "deferral_timeout", 60.0),
            terminal=self.boolean(top.get("terminal"), "terminal"),
            listen_addresses=addresses,
            ssh_port=self.port(listen.get("ssh_port", "default"), "listen.ssh_port", NETCONF_CH_SSH_PORT),
            tls_port=self.port(listen.get("tls_port", "default"), "listen.tls_port", NETCONF_CH_TLS_PORT),
            restconf_port=self.port(
                listen.get("restconf_port", "default"), "listen.restconf_port", RESTCONF_CH_TLS_PORT
            ),
            tls_strict_port=self.port(listen.get("tls_strict_port"), "listen.tls_strict_port", None),
            outbound_ssh_port=self.port(
                listen.get("outbound_ssh_port", "default"), "listen.outbound_ssh_port", JUNOS_OUTBOUND_SSH_PORT
            ),
            outbound_ssh=outbound_ssh,
            proxy_protocol=self.proxy_protocol(listen.get("proxy_protocol")),
            tls=tls,
            ssh=ssh,
            admission=admission,
            events_buffer=self.whole(events.get("buffer"), "events.buffer", 10_000, 1),
            events_max_followers=self.whole(events.get("max_followers"), "events.max_followers", 32, 0),
            cluster=self.cluster(top.get("cluster")),
        )
