"""One module per ``ometria-worker`` subcommand.

Each module exposes ``configure(parser)`` to add its arguments and ``run(args) -> int``
returning the exit code; :data:`worker.cli.COMMANDS` names them and holds their one-line
help. The CLI imports only the chosen subcommand's module, so a subcommand never imports
the parts of another, and ``ometria-worker --help`` imports none.
"""
