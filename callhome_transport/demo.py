"""``python -m callhome_transport.demo``: call home end to end, on loopback.

A :class:`~callhome_transport.CallHomeServer` listens; the embedded simulated
device (a real SSH server with a ``netconf`` subsystem) calls home to it; the
server identifies it by its pinned host key, authenticates with that device's
credentials, and a standard ncclient Manager runs get-config, edit-config and
get-config again.  Exits 0 when the change is seen, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from lxml import etree

from . import CallHomeServer, Device, HostKeyPin, Inventory, SSHCredentials
from .engine import EventLoopThread
from .sim import SimulatedDevice

SYSTEM_FILTER = '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'
EDIT = """<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
  <system xmlns="urn:ietf:params:xml:ns:yang:ietf-system">
    <hostname>{hostname}</hostname>
    <location>{location}</location>
  </system>
</config>"""


def _system(reply_xml: str) -> dict[str, str]:
    root = etree.fromstring(reply_xml.encode())
    ns = {"sys": "urn:ietf:params:xml:ns:yang:ietf-system"}
    system = root.find(".//sys:system", ns)
    return {etree.QName(el).localname: el.text or "" for el in system} if system is not None else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen-address", default="127.0.0.1", help="where the manager listens (default 127.0.0.1)")
    parser.add_argument(
        "--listen-port", type=int, default=0, help="listener port (default: a free port; 4334 is the IANA port)"
    )
    parser.add_argument("--device", default="SN-0001", help="name of the simulated device")
    parser.add_argument("-v", "--verbose", action="store_true", help="log call-home lifecycle events")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    sim = SimulatedDevice(args.device, username="admin", password="demo-password")
    inventory = Inventory(
        [
            Device(
                name=args.device,
                host_keys=(HostKeyPin.parse(sim.host_key_line),),
                credentials=SSHCredentials(username="admin", password="demo-password"),
            )
        ],
        source="<demo>",
    )
    device_loop = EventLoopThread(name="simulated-device")
    try:
        with CallHomeServer(inventory, listen_address=args.listen_address, listen_port=args.listen_port) as server:
            print(f"manager: listening on {args.listen_address} port {server.listen_port} (NETCONF call home over SSH)")
            print(f"device {args.device}: pinned host key {sim.fingerprint}")
            device_loop.submit(sim.call_home(args.listen_address, server.listen_port))
            started = time.perf_counter()
            event = server.wait_for(args.device, timeout=15)
            print(
                f"device {event.device}: called home from {event.peer_address[0]}:{event.peer_address[1]}, "
                f"identified by {event.fingerprint} in {1000 * (time.perf_counter() - started):.0f} ms"
            )
            with server.netconf(args.device, timeout=15) as m:
                print(f"netconf: session {m.session_id}, {len(list(m.server_capabilities))} server capabilities")
                before = _system(m.get_config(source="running", filter=("subtree", SYSTEM_FILTER)).xml)
                print(f"get-config running: system = {before}")
                new_location = f"rack-{int(time.time()) % 1000}"
                m.edit_config(
                    target="running", config=EDIT.format(hostname=before.get("hostname", "sn"), location=new_location)
                )
                print(f"edit-config running: location -> {new_location}")
                after = _system(m.get_config(source="running", filter=("subtree", SYSTEM_FILTER)).xml)
                print(f"get-config running: system = {after}")
            if after.get("location") != new_location:
                print("FAILED: the change is not visible", file=sys.stderr)
                return 1
            print("ok: the device called home, was identified by its host key, and took the change")
            return 0
    finally:
        device_loop.stop()


if __name__ == "__main__":
    sys.exit(main())
