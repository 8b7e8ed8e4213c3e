"""A small Markdown-to-HTML renderer for the Markdown that model cards use.

It knows YAML front matter (shown as a code block), headings, paragraphs, ``-``/``*`` lists,
fenced code, pipe tables, HTML comments (dropped), and inline code, bold, italics and links.
All text is escaped (after reading character references such as ``&lt;``): a card cannot inject markup
into the page.
"""
from __future__ import annotations

import re
from html import escape, unescape

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)|(?<![\w*])\*([^*\s][^*]*)\*(?!\w)")
_SAFE_LINK = re.compile(r"^(https?://|#|\./|\.\./|[\w./-]+$)")


def _text(text: str) -> str:
    """Markdown text as HTML text: character references (``&lt;``, ``&amp;``, as Markdown writers escape ``<`` and
    ``&``) read as the characters they stand for, then every character escaped."""
    return escape(unescape(text))


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_text(text[pos:m.start()]))
        code, bold, link_text, url, italic = m.groups()
        if code is not None:
            out.append(f"<code>{escape(code)}</code>")  # a code span is literal: no references
        elif bold is not None:
            out.append(f"<strong>{_text(bold)}</strong>")
        elif link_text is not None:
            url = unescape(url)
            out.append(f'<a href="{escape(url)}">{_text(link_text)}</a>' if _SAFE_LINK.match(url)
                       else _text(m.group(0)))
        else:
            out.append(f"<em>{_text(italic)}</em>")
        pos = m.end()
    out.append(_text(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def to_html(text: str, heading_offset: int = 1) -> str:
    """HTML for ``text``; headings move down ``heading_offset`` levels (``#`` becomes ``<h2>``)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    if lines and lines[0].strip() == "---":
        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), None)
        if end is not None:
            out.append('<details class="front-matter"><summary>metadata</summary><pre>'
                       + escape("\n".join(lines[1:end])) + "</pre></details>")
            i = end + 1
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + _inline(" ".join(s.strip() for s in paragraph)) + "</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("<!--"):
            flush()
            while i < len(lines) and "-->" not in lines[i]:
                i += 1
            i += 1
            continue
        if stripped.startswith("```"):
            flush()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + escape("\n".join(body)) + "</code></pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush()
            level = min(len(heading.group(1)) + heading_offset, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            head = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append('<div class="table-wrap"><table class="card-table"><thead><tr>'
                       + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                       + "</tbody></table></div>")
            continue
        if re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i].strip()):
                items.append(re.sub(r"^[-*]\s+", "", lines[i].strip()))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
            continue
        if not stripped:
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return "\n".join(out)
