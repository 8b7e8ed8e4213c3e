"""Model cards to HTML (robust_mix.leaderboard.markdown)."""
from __future__ import annotations

from robust_mix.leaderboard.markdown import to_html

CARD = """---
library_name: robust_mix
---
<!-- generated; do not edit -->

# my-model

A *small* mix with **two** bases; see [the paper](https://arxiv.org/abs/2301.12554)
and `load_model("x")`.

| constant | value |
|---|---|
| alpha | `0.9` |
| a \\| b | c |

```python
model = load_model("x")  # <not a tag>
```

- first
- second
"""


def test_card_markdown_becomes_html():
    html = to_html(CARD, heading_offset=2)
    assert '<details class="front-matter"><summary>metadata</summary><pre>library_name: robust_mix</pre>' in html
    assert "generated; do not edit" not in html
    assert "<h3>my-model</h3>" in html
    assert "<em>small</em>" in html and "<strong>two</strong>" in html
    assert '<a href="https://arxiv.org/abs/2301.12554">the paper</a>' in html
    assert "<code>load_model(&quot;x&quot;)</code>" in html
    assert "<th>constant</th>" in html and "<td><code>0.9</code></td>" in html and "<td>a | b</td>" in html
    assert "&lt;not a tag&gt;" in html and "<pre><code>model = load_model" in html
    assert "<ul><li>first</li><li>second</li></ul>" in html


def test_markup_and_script_links_in_a_card_stay_text():
    html = to_html("<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=y>")
    assert "<script>" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html


def test_character_references_read_as_their_characters():
    """report.md and cards write ``<`` and ``&`` of names as ``&lt;`` and ``&amp;`` (as Markdown viewers read them);
    the site's renderer escaped them again, showing ``&lt;b&gt;`` for ``<b>``. Code spans stay literal."""
    html = to_html("| model |\n|---|\n| a &amp; &lt;b&gt; |\n\nsee &lt;x&gt; and `&lt;y&gt;`")
    assert "<td>a &amp; &lt;b&gt;</td>" in html
    assert "<p>see &lt;x&gt; and <code>&amp;lt;y&amp;gt;</code></p>" in html
    assert "<b>" not in to_html("&lt;b&gt;bold?&lt;/b&gt;")
