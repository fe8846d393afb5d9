"""Development tools of ometria-worker: the end-to-end demo and the Ometria stand-in.

They are not part of the product: neither the wheel nor the image holds this package
(pyproject.toml lists only ``worker``'s packages; the Dockerfile copies only ``worker/``),
since the demo needs the repository's ``scripts/kafka-local`` and the stand-in serves the
tests, the demo and the benchmarks. ``ometria-worker demo`` and ``ometria-worker stub``
come from here (:mod:`ometria_dev.commands`) when this package can be imported:

- from a checkout's root, where it is on the path (``python -m worker``, pytest,
  ``python -m bench.…``, the demo's and the fixtures' children through ``PYTHONPATH``);
- through the console script of an editable install (``pip install -e '.[dev]'``, what
  ``scripts/test``, ``scripts/demo`` and ``.ci/run`` make), whose finder maps only the
  declared packages: :func:`worker.cli.dev_tools` then loads it from beside ``worker/``.

Elsewhere (an installed wheel, the image) the two commands answer with one line saying
where to get them, and exit 2. The package depends on ``worker``, never the reverse: the
runtime knows only the two commands' names, help lines and modules (``worker.cli``).
"""
