"""`python -m edgecls` is the `edgecls` command (torchrun and other launchers start modules this way)."""

from edgecls.commands.cli import main

if __name__ == "__main__":  # worker processes (spawn, forkserver) import this module again: no second CLI run
    main(prog_name="edgecls")
