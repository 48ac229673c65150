"""Markdown written by staff (blog posts, campaigns, email templates) turned into HTML that is safe to
serve on a page or send in an email.

Markdown passes raw HTML through, so its output is sanitised with nh3 (an allow-list): no scripts,
event handlers, styles or `javascript:` links survive, whoever wrote the source.
"""

from __future__ import annotations

import markdown
import nh3

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "s", "strong",
    "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
}
URL_SCHEMES = {"http", "https", "mailto"}
# No footnotes or attribute lists: they need ids and classes, which the sanitiser drops.
EXTENSIONS = ["tables", "fenced_code", "def_list", "abbr", "sane_lists"]


def render_markdown(source: str) -> str:
    """Markdown (with tables and fenced code) to sanitised HTML. Links get
    rel="noopener noreferrer"; anything outside the allow-list is dropped, its text kept."""
    html = markdown.markdown(source or "", extensions=EXTENSIONS, output_format="html")
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
    )
