"""Small markdown renderers for materialisation metadata."""

from collections.abc import Iterable, Sequence


def counts_table(key: str, value: str, rows: Iterable[tuple[object, object]]) -> str:
    """A two-column markdown table, or a note when there is nothing to show."""
    return markdown_table((key, value), list(rows))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
