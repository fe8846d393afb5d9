"""One module per ``ometria-worker`` subcommand.

Each module exposes ``HELP`` (one line), ``configure(parser)`` to add its arguments and
``run(args) -> int`` returning the exit code. :mod:`worker.cli` wires them together, so a
subcommand never imports the heavy parts of another.
"""
