"""docs/organisations.md shows the permission table of accounts/roles.py, exactly."""

from __future__ import annotations

from pathlib import Path

from accounts.roles import DESCRIPTIONS, Role, table

DOC = Path(__file__).resolve().parents[2] / "docs" / "organisations.md"


def markdown_table() -> str:
    lines = [
        "| Permission | What it allows | " + " | ".join(role.label for role in Role) + " |",
        "| --- | --- | " + " | ".join("---" for _ in Role) + " |",
    ]
    for perm, allowed in table():
        cells = " | ".join("yes" if a else "" for a in allowed)
        lines.append(f"| `{perm.value}` | {DESCRIPTIONS[perm]} | {cells} |")
    return "\n".join(lines) + "\n"


def test_it_documents_the_permission_table_as_the_code_has_it() -> None:
    text = DOC.read_text()
    start = text.index("<!-- permission-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /permission-table -->")
    assert text[start:end] == markdown_table(), (
        "docs/organisations.md's permission table differs from accounts/roles.py: paste the "
        "output of tests.accounts.test_organisations_doc.markdown_table() between the markers"
    )
