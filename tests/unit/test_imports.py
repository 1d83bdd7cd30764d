"""The gateway client stays light: the Ansible plugins import it in every
task's worker process, so it must not drag in the SSH/TLS stacks or requests
(benchmarks/bench_ansible.py measured 0.2 s per import when it did)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("asyncssh", "tlslite", "requests", "urllib3", "callhome_transport.server")


def test_gateway_client_imports_no_transport_stack() -> None:
    code = (
        "import sys, callhome_transport.gateway.client, callhome_transport.errors\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_still_resolve() -> None:
    import callhome_transport
    import callhome_transport.gateway

    for name in callhome_transport.__all__:
        assert getattr(callhome_transport, name) is not None, name
    assert callhome_transport.gateway.GatewayConfig.__name__ == "GatewayConfig"
    assert set(callhome_transport.__all__) <= set(dir(callhome_transport))


def test_heartbeat_config_is_importable_from_the_package_as_the_docs_show() -> None:
    # failed before: ImportError (docs/certificates.md uses it with the other names)
    from callhome_transport import HeartbeatConfig
    from callhome_transport.transports.tls_strict import HeartbeatConfig as Defined

    assert HeartbeatConfig is Defined
    assert HeartbeatConfig(interval=30, missed_max=3).missed_max == 3
