"""render_markdown: Markdown as HTML that is safe on a page and in an email, whoever wrote it."""

import pytest

from nectar.shared.content import render_markdown


def test_markdown_becomes_html():
    html = render_markdown(
        "# Title\n\nSome *em* and **strong**, `code`.\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nx = 1\n```"
    )
    for fragment in ("<h1>Title</h1>", "<em>em</em>", "<strong>strong</strong>", "<code>code</code>",
                     "<li>one</li>", "<td>1</td>", "<pre><code>x = 1\n</code></pre>"):  # fmt: skip
        assert fragment in html


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        "<img src=x onerror=alert(1)>",
        '<p onclick="alert(1)">x</p>',
        '<div style="background:url(javascript:alert(1))">x</div>',
        "<iframe src=https://evil.example></iframe>",
        "<style>body{display:none}</style>",
        '<form action="https://evil.example"><input name=password></form>',
        "<svg onload=alert(1)>",
    ],
)
def test_dangerous_html_is_removed(source):
    html = render_markdown(source).lower()
    for marker in (
        "<script",
        "javascript:",
        "onerror",
        "onclick",
        "onload",
        "style=",
        "<iframe",
        "<style",
        "<form",
        "<input",
        "<svg",
        "alert(1)</",
    ):
        assert marker not in html


def test_links_are_kept_with_a_safe_rel():
    html = render_markdown("[docs](https://example.com/docs) and <mailto:hi@example.com>")
    assert '<a href="https://example.com/docs" rel="noopener noreferrer">docs</a>' in html
    assert 'href="mailto:hi@example.com"' in html


def test_empty_source_is_empty_html():
    assert render_markdown("") == "" and render_markdown(None) == ""
