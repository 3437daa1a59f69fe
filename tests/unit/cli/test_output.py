"""The CLI's tables show data as it is: a cell is never read as Rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from cpnet.cli.output import fields, table


def render(renderable) -> str:
    c = Console(width=120, record=True, highlight=False)
    c.print(renderable)
    return c.export_text()


def test_a_table_shows_brackets_in_data_as_they_are():
    grid = table(None, ["name", "env"])
    grid.add_row("[bold]job[/bold]", "TOKEN=[secret]")
    out = render(grid)
    assert "[bold]job[/bold]" in out
    assert "TOKEN=[secret]" in out


def test_a_styled_cell_is_passed_as_text():
    grid = table(None, ["check"])
    grid.add_row(Text("TAMPERED", style="red"))
    out = render(grid)
    assert "TAMPERED" in out and "[red]" not in out


def test_fields_show_values_as_they_are():
    out = render(fields([("env", "A=[secret]"), ("chain", Text("TAMPERED", style="red"))]))
    assert "A=[secret]" in out and "TAMPERED" in out and "[red]" not in out
