"""`python -m edgecls` is the `edgecls` command (torchrun and other launchers start modules this way)."""

from .cli import main

main(prog_name="edgecls")
