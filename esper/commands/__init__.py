"""Implementations of the `esper` subcommands (the CLI layer: may use every package)."""
