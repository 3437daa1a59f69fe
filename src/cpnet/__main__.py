"""`python -m cpnet ...` is the same as the `cpnet` command."""

from cpnet.cli.main import app

app(prog_name="cpnet")
