"""A minimal terminal for tests of progress output: enough of VT100 for what tqdm writes
(carriage return, newline, cursor up/down, erase to end of line). ``screen(text)`` is what a
terminal would show after receiving ``text``, and where its cursor is."""
from __future__ import annotations

import io
import re

_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal (tqdm and RowBars then draw as on one)."""

    def isatty(self) -> bool:
        return True


def screen(text: str) -> tuple[list[str], int]:
    """``(lines, cursor row)`` after ``text`` reaches a terminal of unlimited size."""
    lines: list[list[str]] = [[]]
    row = col = i = 0
    while i < len(text):
        match = _ESCAPE.match(text, i)
        if match:
            n = int(match.group(1) or 1)
            if match.group(2) == "A":
                row = max(0, row - n)
            elif match.group(2) == "B":
                row += n
            elif match.group(2) == "K":
                del lines[row][col:]
            i = match.end()
        else:
            char = text[i]
            if char == "\r":
                col = 0
            elif char == "\n":
                row, col = row + 1, 0
            else:
                line = lines[row]
                line.extend(" " * (col - len(line)))
                if col < len(line):
                    line[col] = char
                else:
                    line.append(char)
                col += 1
            i += 1
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines], row


def shown(text: str) -> list[str]:
    """The non-blank lines above and at the cursor: what stays visible once the next output starts there."""
    lines, row = screen(text)
    return [line for line in lines[:row + 1] if line]
