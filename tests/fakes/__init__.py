"""In-memory stand-ins for the worker's collaborators, and a virtual-time event loop.

They let the worker core run in-process in milliseconds, without sleeps: the
``RecordSource`` is :class:`~tests.fakes.source.MemorySource`, the dead-letter sink
:class:`~tests.fakes.sink.MemoryDeadLetters`, the sender an
:class:`~worker.ometria.OmetriaClient` over ``httpx.MockTransport``, and every timer runs
on :class:`~tests.fakes.clock.VirtualTimeLoop`. :class:`~tests.fakes.harness.Harness`
wires them to a real :class:`~worker.app.Worker`.
"""
