"""The development tools' ``ometria-worker`` subcommands: ``demo`` and ``stub``.

Like :mod:`worker.commands`, each module exposes ``configure(parser)`` and
``run(args) -> int``; :data:`worker.cli.COMMANDS` names them and gives their help lines.
"""
