"""The Ometria stand-in: a fake ``/api/track`` and ``/api/query`` server for tests,
the demo and benchmarks, with recording, an admin API and fault injection.

One entry point for everything::

    from ometria_dev.stub import StubConfig, StubServer, running_stub, spawn_stub

    with running_stub(error_rate=0.1, seed=1) as stub:      # a thread of its own
        ...POST to stub.url + "/api/track"...
        stub.wait_for_requests(10)

    async with StubServer(StubConfig(key="k", secret="s")) as server:   # this loop
        ...

    with spawn_stub(["--latency-ms", "20"]) as stub:        # a child process
        ...stub.set_faults(error_rate=0.5); stub.wait_for_requests(10)...

The modules, one concern each:

- :mod:`~ometria_dev.stub.protocol`: HTTP/1.1 on raw asyncio;
- :mod:`~ometria_dev.stub.validation`: the body rules (pure);
- :mod:`~ometria_dev.stub.faults`: what to break, and the verdict for each request;
- :mod:`~ometria_dev.stub.recording`: what was seen;
- :mod:`~ometria_dev.stub.server`: routing, authentication, the admin API;
- :mod:`~ometria_dev.stub.background`: the server in a thread of its own;
- :mod:`~ometria_dev.stub.remote`: the server as a child process, and its admin client.

The command line is ``ometria-worker stub`` (:mod:`ometria_dev.commands.stub`); docs/stub.md
describes the HTTP side.
"""

from ometria_dev.stub.background import StubHandle, running_stub
from ometria_dev.stub.faults import Faults
from ometria_dev.stub.recording import Attempt, Record
from ometria_dev.stub.remote import RemoteStub, StubProcess, spawn_stub
from ometria_dev.stub.server import StubConfig, StubServer

__all__ = [
    "Attempt",
    "Faults",
    "Record",
    "RemoteStub",
    "StubConfig",
    "StubHandle",
    "StubProcess",
    "StubServer",
    "running_stub",
    "spawn_stub",
]
