"""The ``callhome`` command: run the gateway, ask it about devices, and reach a
device from a terminal.

    callhome serve --config gateway.yml
    callhome devices [--json]                 # needs --run-dir or $CALLHOME_RUN_DIR
    callhome device NAME [--json]
    callhome wait NAME [--timeout 60]
    callhome rejected [--json]
    callhome events [--json] [--follow] [--since ID] [--types T,...]   # docs/events.md
    callhome get-config NAME [--source running] [--filter XML]
    callhome terminal NAME                    # a shell on an SSH device (gateway terminal: true)
    callhome agent --config callhome.xml      # device side: call home for a local NETCONF server
    callhome demo
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, RESTCONF_CH_TLS_PORT
from .errors import CallHomeError, DeviceNotConnectedError
from .events import parse_types
from .gateway.client import DEFAULT_RUN_DIR, EventCursor, GatewayClient
from .status import TABLE_COLUMNS, DeviceInfo


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cell(info: DeviceInfo, name: str) -> str:
    value = getattr(info, name)
    if name == "connected_since":
        return _when(value)
    return "-" if value is None else str(value)


def _devices_table(infos: list[DeviceInfo]) -> str:
    columns = list(TABLE_COLUMNS)
    if any(info.gateway for info in infos):  # a cluster member answered: say where each lives
        columns.insert(3, ("GATEWAY", "gateway"))
    rows = [[_cell(info, name) for _, name in columns] for info in infos]
    return _table(rows, [header for header, _ in columns])


def _cmd_serve(args: argparse.Namespace) -> int:
    from .gateway import GatewayConfig, run

    config = GatewayConfig.from_file(args.config)
    if args.workers > 1:
        from .gateway.workers import run_workers

        return run_workers(args.config, config, args.workers, ready_file=args.ready_file)
    if args.worker is not None:
        config = config.for_worker(args.worker)
    run(config, ready_file=args.ready_file)
    return 0


def _client(args: argparse.Namespace) -> GatewayClient:
    # a gateway started just before ("callhome serve &") is waited for, within the command's timeout
    return GatewayClient(args.run_dir, start_wait=args.timeout)


def _cmd_devices(args: argparse.Namespace) -> int:
    infos = _client(args).devices()
    print(json.dumps([d.as_dict() for d in infos], indent=2) if args.json else _devices_table(infos))
    return 0


def _cmd_device(args: argparse.Namespace) -> int:
    info = _client(args).device(args.name)
    print(json.dumps(info.as_dict(), indent=2) if args.json else _devices_table([info]))
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
    try:
        record = _client(args).wait(args.name, args.timeout)
    except DeviceNotConnectedError as exc:
        print(f"callhome: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record.as_dict(), indent=2) if args.json else f"{args.name} connected from {record.peer_address}")
    return 0


def _cmd_rejected(args: argparse.Namespace) -> int:
    attempts = _client(args).rejected()
    if args.json:
        print(json.dumps(attempts, indent=2))
    else:
        rows = [
            [
                _when(a["at"]),
                a["peer_address"],
                a["reason"],
                a["device"] or "-",
                a["fingerprint"] or "-",
                a["detail"] or "",
            ]
            for a in attempts
        ]
        print(_table(rows, ["WHEN", "PEER", "REASON", "DEVICE", "FINGERPRINT", "DETAIL"]))
    return 0


def _event_summary(e: dict[str, Any]) -> str:
    """One line of ``callhome events``: what happened, for a person."""
    kind = e.get("type")
    if kind == "device-connected":
        how = "first call" if e.get("first_call") else f"reconnect {e.get('reconnects')}"
        return f"from {e.get('peer_address')} over {e.get('transport')} ({how}) {e.get('identity')}"
    if kind == "device-disconnected":
        return f"{e.get('reason')}"
    if kind in ("device-rejected", "device-auth-failed"):
        parts = [e.get("reason", "auth-failed"), f"from {e.get('peer_address')} over {e.get('transport')}"]
        parts += [str(e[k]) for k in ("fingerprint", "device_id", "detail") if e.get(k)]
        return " ".join(parts)
    if kind == "source-blocked":
        return f"{e.get('source')} for {e.get('seconds'):g} s"
    if kind == "device-blocked":
        return f"for {e.get('seconds'):g} s"
    if kind == "local-session-opened":
        return f"{e.get('endpoint')} session {e.get('session')}"
    if kind == "local-session-closed":
        return f"{e.get('endpoint')} session {e.get('session')} after {e.get('seconds'):g} s"
    if kind == "events-dropped":
        return f"missed {e.get('missed')} events after id {e.get('after')} (overwritten); from id {e.get('oldest')} on"
    if kind == "gateway-restarted":
        return "new gateway process: its events from the start"
    return json.dumps({k: v for k, v in e.items() if k not in ("id", "type", "time", "device")})


def _event_line(e: dict[str, Any]) -> str:
    ident = str(e["id"]) if "id" in e else "-"
    return (
        f"{ident:>7}  {_when(e.get('time'))}  {e.get('type', '?'):<21} {e.get('device') or '-':<16} {_event_summary(e)}"
    )


def _cmd_events(args: argparse.Namespace) -> int:
    try:
        types = sorted(parse_types(args.types or []) or ())
    except ValueError as exc:
        print(f"callhome: --types: {exc}", file=sys.stderr)
        return 1
    client = _client(args)
    cursor = EventCursor(since=args.since)
    start_wait: float | None = None
    while True:
        for event in client.events(cursor, types=types, follow=args.follow, start_wait=start_wait):
            print(json.dumps(event) if args.json else _event_line(event), flush=args.follow)
        if not args.follow:
            return 0
        # the gateway stopped (or the connection broke): wait for it, and resume after the last event
        print("callhome: the gateway's event stream ended; waiting for the gateway (Ctrl-C quits)", file=sys.stderr)
        start_wait = 365 * 86400.0


def _cmd_get_config(args: argparse.Namespace) -> int:
    from lxml import etree
    from ncclient import NCClientError

    if args.filter:
        try:
            etree.fromstring(args.filter)
        except etree.XMLSyntaxError as exc:
            print(f"callhome: --filter is not well-formed XML: {exc}", file=sys.stderr)
            return 1
    try:
        with _client(args).netconf_manager(args.name, wait=args.timeout, timeout=args.timeout) as m:
            reply = m.get_config(source=args.source, filter=("subtree", args.filter) if args.filter else None)
            print(etree.tostring(reply.data_ele, pretty_print=True).decode().rstrip())
    except DeviceNotConnectedError as exc:
        print(f"callhome: {exc}", file=sys.stderr)
        return 2
    except NCClientError as exc:
        print(f"callhome: NETCONF with device {args.name} failed: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


def _cmd_terminal(args: argparse.Namespace) -> int:
    import selectors
    import shutil
    import termios
    import tty

    client = _client(args)
    info = client.device(args.name)
    if info.transport != "ssh":
        print(f"callhome: device {args.name} calls home over {info.transport}: a terminal needs SSH", file=sys.stderr)
        return 1
    path = client.endpoint(args.name, "terminal")
    if not path.exists():
        print(f"callhome: no terminal endpoint {path} (set 'terminal: true' in the gateway config)", file=sys.stderr)
        return 1
    sock = client.connect_endpoint(args.name, "terminal", timeout=None)
    size = shutil.get_terminal_size()
    term = os.environ.get("TERM", "xterm")
    sock.sendall(b"\0CALLHOME-TERM %s %d %d\n" % (term.encode(), size.columns, size.lines))
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    print(f"connected to {args.name} through the gateway (the device ends the session; Ctrl-] quits)", file=sys.stderr)
    try:
        if saved is not None:
            tty.setraw(stdin)
        selector = selectors.DefaultSelector()
        selector.register(stdin, selectors.EVENT_READ)
        selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == sock:
                    data = sock.recv(65536)
                    if not data:
                        return 0
                    os.write(sys.stdout.fileno(), data)
                else:
                    data = os.read(stdin, 4096)
                    if saved is not None and b"\x1d" in data:  # Ctrl-] on a terminal: leave
                        sock.sendall(data.split(b"\x1d", 1)[0])
                        return 0
                    if not data:  # end of piped input: ^D to the PTY, as a terminal does
                        selector.unregister(stdin)
                        sock.sendall(b"\x04")
                        continue
                    sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()


_SIM_PORTS = {"ssh": NETCONF_CH_SSH_PORT, "tls": NETCONF_CH_TLS_PORT, "restconf": RESTCONF_CH_TLS_PORT}


def _cmd_sim(args: argparse.Namespace) -> int:
    import asyncio

    import yaml

    from .sim.fleet import Fleet, FleetConfig

    model = args.callhome_config is not None or args.netconf_listen is not None
    if model and args.transport != "ssh":
        print("callhome: --callhome-config/--netconf-listen drive SSH devices (ssh-call-home)", file=sys.stderr)
        return 1

    gateway = args.gateway or f"127.0.0.1:{_SIM_PORTS[args.transport]}"
    host, _, port = gateway.rpartition(":")
    pki_dir = args.pki_dir or args.inventory_out.with_suffix(".pki")
    fleet = Fleet(
        FleetConfig(
            count=args.devices,
            prefix=args.prefix,
            mode=args.mode,
            period=args.period,
            linger=args.linger,
            backoff_max=args.backoff_max,
            transport=args.transport,
            pki_dir=pki_dir if args.transport != "ssh" else None,
        )
    )
    args.inventory_out.write_text(yaml.safe_dump(fleet.inventory(), sort_keys=False))
    print(f"wrote the inventory of {args.devices} simulated devices to {args.inventory_out}", flush=True)
    if fleet.pki is not None:
        print(
            f"manager client certificate: {fleet.pki.manager_cert} (key {fleet.pki.manager_key}); "
            f"device issuer: {fleet.pki.ca_file}",
            flush=True,
        )

    address = host.strip("[]") or "127.0.0.1"
    if model:
        return _run_model_fleet(args, fleet.devices)

    async def main() -> None:
        if args.wait_listener:  # start the storm the moment the manager listens
            while True:
                try:
                    _, writer = await asyncio.open_connection(address, int(port))
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        runner = asyncio.create_task(fleet.run(address, int(port)))
        if args.duration:
            await asyncio.sleep(args.duration)
            runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(main())
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from .agent.config import describe, load_config, parse_host_port
    from .agent.runner import run_agent

    try:
        local_ssh = parse_host_port(args.local_ssh, "--local-ssh") if args.local_ssh else None
        local_tls = parse_host_port(args.local_tls, "--local-tls") if args.local_tls else None
    except ValueError as exc:
        print(f"callhome: {exc}", file=sys.stderr)
        return 1
    if args.check:
        config = load_config(args.config, revision=args.revision, local_ssh=local_ssh, local_tls=local_tls)
        for line in describe(config):
            print(line)
        for part in config.ignored:
            print(f"  ignored {part.key_path}: {part.reason}")
        return 0
    return run_agent(
        args.config,
        revision=args.revision,
        local_ssh=local_ssh,
        local_tls=local_tls,
        metrics_file=args.metrics_file,
        state_file=args.state_file,
    )


def _run_model_fleet(args: argparse.Namespace, devices: list[Any]) -> int:
    import asyncio

    from .agent.config import parse_host_port
    from .sim.callhome import run_model_fleet

    listen = None
    if args.netconf_listen:
        try:
            where = parse_host_port(args.netconf_listen, "--netconf-listen")
        except ValueError as exc:
            print(f"callhome: {exc}", file=sys.stderr)
            return 1
        listen = (where.host, where.port)
    payload = args.callhome_config.read_bytes() if args.callhome_config else None
    run = run_model_fleet(devices, payload=payload, listen=listen, revision=args.yang_revision, duration=args.duration)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main([])


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="callhome",
        description="NETCONF/RESTCONF Call Home (RFC 8071): the gateway, and tools to reach its devices",
        epilog="The gateway's operator guide: docs/gateway.md; Ansible: docs/ansible.md.",
    )
    verbose = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: "callhome -v devices" and "callhome devices -v" both work
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log lifecycle events (INFO)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log lifecycle events (INFO)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, text: str, *, run_dir: bool = True, timeout_help: str | None = None
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=fmt, parents=[verbose])
        if run_dir:
            p.add_argument(
                "--run-dir",
                type=Path,
                default=Path(os.environ.get("CALLHOME_RUN_DIR", DEFAULT_RUN_DIR)),
                help="the gateway's run directory (holds control.sock; $CALLHOME_RUN_DIR)",
            )
            p.add_argument(
                "--timeout",
                type=float,
                default=60.0 if timeout_help else 10.0,
                help=timeout_help or "seconds to wait for a gateway that is starting (no control.sock yet)",
            )
        return p

    serve = command(
        "serve", "run the gateway (logs at INFO; SIGTERM stops, SIGHUP reloads the inventory)", run_dir=False
    )
    serve.add_argument("--config", required=True, type=Path, help="gateway YAML configuration (docs/gateway.md)")
    serve.add_argument(
        "--ready-file",
        type=Path,
        help="write this file (JSON: pid, run_dir, listening ports) once every listener and endpoint is up; "
        "removed at stop (under systemd, Type=notify gets READY=1 as well)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N gateway processes on the same ports (SO_REUSEPORT), one per core; they share the "
        "cluster registry (cluster: in the configuration) and each has run_dir/w<i> (docs/scale.md)",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # one worker, started by --workers
    serve.set_defaults(func=_cmd_serve)

    devices = command("devices", "list the gateway's devices and their call-home state")
    devices.add_argument("--json", action="store_true", help="JSON instead of a table")
    devices.set_defaults(func=_cmd_devices)

    device = command("device", "one device's call-home state (exit 1 if the gateway does not know it)")
    device.add_argument("name", help="the device's name in the gateway's inventory")
    device.add_argument("--json", action="store_true", help="JSON instead of a table")
    device.set_defaults(func=_cmd_device)

    wait = command(
        "wait",
        "wait until a device has called home (exit 0 connected, 2 timeout, 1 error)",
        timeout_help="seconds to wait, for the gateway to start and then for the device",
    )
    wait.add_argument("name", help="the device's name in the gateway's inventory")
    wait.add_argument("--json", action="store_true", help="print the device's record as JSON")
    wait.set_defaults(func=_cmd_wait)

    rejected = command("rejected", "recent refused call-home attempts, with what is needed to onboard them")
    rejected.add_argument("--json", action="store_true", help="JSON instead of a table")
    rejected.set_defaults(func=_cmd_rejected)

    events = command(
        "events",
        "the gateway's events: devices connected, disconnected, rejected, blocked; local sessions (docs/events.md)",
    )
    events.add_argument("--json", action="store_true", help="one JSON object per line (NDJSON) instead of text")
    events.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="wait for new events after the ones held (Ctrl-C quits); resumes after a gateway restart",
    )
    events.add_argument(
        "--since", type=int, metavar="ID", help="only events after this id (default: every event the gateway holds)"
    )
    events.add_argument(
        "--types",
        action="append",
        metavar="TYPE[,TYPE...]",
        help="only these types: device-connected, device-disconnected, device-rejected, device-auth-failed, "
        "source-blocked, device-blocked, local-session-opened, local-session-closed",
    )
    events.set_defaults(func=_cmd_events)

    get_config = command(
        "get-config",
        "print a NETCONF device's configuration (waits for it to call home)",
        timeout_help="seconds to wait for the gateway and the device, then for the reply",
    )
    get_config.add_argument("name", help="the device's name in the gateway's inventory")
    get_config.add_argument("--source", default="running", help="datastore: running, candidate or startup")
    get_config.add_argument("--filter", help="subtree filter XML")
    get_config.set_defaults(func=_cmd_get_config)

    terminal = command("terminal", "a shell on an SSH device over its call-home connection (gateway 'terminal: true')")
    terminal.add_argument("name", help="the device's name in the gateway's inventory")
    terminal.set_defaults(func=_cmd_terminal)

    sim = command(
        "sim",
        "a fleet of simulated devices that call home (each with its own key or certificate); writes the "
        "inventory a gateway needs to accept them",
        run_dir=False,
    )
    sim.add_argument("--devices", type=int, default=10, help="how many devices")
    sim.add_argument(
        "--transport",
        choices=["ssh", "tls", "restconf"],
        default="ssh",
        help="NETCONF over SSH (4334), NETCONF over TLS (4335) or RESTCONF (4336)",
    )
    sim.add_argument(
        "--gateway", help="HOST:PORT to call (default: 127.0.0.1 and the IANA port of --transport: 4334, 4335, 4336)"
    )
    sim.add_argument("--inventory-out", type=Path, default=Path("sim-inventory.yml"), help="inventory to write")
    sim.add_argument("--prefix", default="SIM-", help="device names are PREFIX00001, PREFIX00002...")
    sim.add_argument("--pki-dir", type=Path, help="tls/restconf: certificates (default: next to the inventory)")
    sim.add_argument(
        "--mode",
        choices=["persistent", "periodic"],
        default="persistent",
        help="persistent: call again at once when a call ends; periodic: call every --period s",
    )
    sim.add_argument("--period", type=float, default=60.0, help="periodic: seconds between calls")
    sim.add_argument("--linger", type=float, default=10.0, help="periodic: seconds a call stays up")
    sim.add_argument(
        "--backoff-max", type=float, default=60.0, help="longest wait between failed calls, s (from 1 s, doubling)"
    )
    sim.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    sim.add_argument("--wait-listener", action="store_true", help="wait until HOST:PORT accepts, then call all at once")
    sim.add_argument(
        "--callhome-config",
        type=Path,
        help="drive the devices by the ietf-netconf-server call-home model instead of --gateway/--mode: each "
        "stores this payload (XML or JSON, as 'callhome agent' takes) and calls as its running datastore says",
    )
    sim.add_argument(
        "--netconf-listen",
        metavar="HOST:PORT",
        help="each device also accepts NETCONF over SSH (device i on PORT+i-1), so a manager can provision its "
        "call home with edit-config (implies the model; docs/agent.md)",
    )
    sim.add_argument(
        "--yang-revision",
        choices=["2019-07-02", "2023-12-28", "2025-04-24"],
        default="2023-12-28",
        help="the ietf-netconf-server revision the devices implement",
    )
    sim.set_defaults(func=_cmd_sim)

    agent = command(
        "agent",
        "device side: call the managers of an ietf-netconf-server call-home configuration and splice each "
        "connection to the device's own NETCONF server (SIGHUP reloads, SIGTERM stops; docs/agent.md)",
        run_dir=False,
    )
    agent.add_argument(
        "--config", required=True, type=Path, help="the call-home subtree of ietf-netconf-server, XML or JSON"
    )
    agent.add_argument("--check", action="store_true", help="validate the file, print what would be done, exit")
    agent.add_argument(
        "--revision",
        choices=["2019-07-02", "2023-12-28", "2025-04-24"],
        default="2025-04-24",
        help="the ietf-netconf-server revision the file is written for",
    )
    agent.add_argument("--local-ssh", metavar="HOST:PORT", help="the local NETCONF/SSH server (default 127.0.0.1:830)")
    agent.add_argument("--local-tls", metavar="HOST:PORT", help="the local NETCONF/TLS server (default 127.0.0.1:6513)")
    agent.add_argument("--metrics-file", type=Path, help="write Prometheus metrics here (node_exporter textfile)")
    agent.add_argument(
        "--state-file", type=Path, help="remember each client's last-connected endpoint here, across restarts"
    )
    agent.set_defaults(func=_cmd_agent)

    demo = command("demo", "the embedded call-home demo: a simulated device calls a listener (no service needed)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command in ("serve", "agent") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("ncclient").setLevel(logging.WARNING)
    try:
        result: int = args.func(args)
        return result
    except CallHomeError as exc:
        print(f"callhome: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # "callhome get-config X | head": the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
