"""Text for people: tables with aligned columns, durations in the largest sensible unit."""

from __future__ import annotations


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[str]) -> str:
    """Columns separated by two spaces, numbers right-aligned."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            str(cell).rjust(w) if name in right and row is not header else str(cell).ljust(w)
            for cell, w, name in zip(row, widths, header, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_seconds(seconds: float | None) -> str:
    """12.3s, 4m05s or 1h02m; `-` for an unknown time."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
