"""The synchronous facade forwards its arguments to the async server as they are."""

from __future__ import annotations

import inspect
import threading

import pytest

from callhome_transport import AsyncCallHomeServer, CallHomeServer, Inventory


def test_the_facade_takes_the_async_servers_arguments() -> None:
    ours = list(inspect.signature(CallHomeServer).parameters.values())
    theirs = list(inspect.signature(AsyncCallHomeServer).parameters.values())
    assert ours == theirs
    # the two options the facade's own copy of the signature had lost
    assert {"restconf_direct", "rejected_history"} <= {p.name for p in ours}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"hello_timeout": 0}, ValueError),
        ({"hold_idle": -1}, ValueError),
        ({"hold_idle": float("nan")}, ValueError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_a_bad_argument_fails_as_the_async_server_fails_and_stops_the_loop(
    options: dict[str, object], error: type[Exception]
) -> None:
    before = threading.active_count()
    with pytest.raises(error):
        CallHomeServer(Inventory([]), listen_port=0, **options)  # type: ignore[arg-type]
    assert threading.active_count() == before
