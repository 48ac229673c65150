"""Every message has an HTML part made from its text, escaped, with its links clickable."""

from __future__ import annotations

import pytest

from nectar.shared.mail import Email, linked_text, text_as_html


def test_a_message_without_html_gets_its_text_as_html():
    email = Email(
        to="a@example.com", subject="Hi", body_text="Hello <b>you</b>\n\nhttps://x.example/a", category="t"
    )
    assert email.body_html.startswith("<!doctype html>")
    assert "<p>Hello &lt;b&gt;you&lt;/b&gt;</p>" in email.body_html
    assert '<p><a href="https://x.example/a">https://x.example/a</a></p>' in email.body_html


def test_a_message_with_its_own_html_keeps_it():
    email = Email(to="a@example.com", subject="Hi", body_text="Text", category="t", body_html="<h1>Own</h1>")
    assert email.body_html == "<h1>Own</h1>"


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("one\ntwo\n\nthree", "<p>one<br>two</p>\n<p>three</p>"),
        ("Go to https://a.example/x.", '<p>Go to <a href="https://a.example/x">https://a.example/x</a>.</p>'),
        ("(see https://a.example/x)", '<p>(see <a href="https://a.example/x">https://a.example/x</a>)</p>'),
        (
            'https://a.example/?q=1&r="2"',
            '<p><a href="https://a.example/?q=1&amp;r=">https://a.example/?q=1&amp;r=</a>"2"</p>',
        ),
        ("javascript:alert(1) ftp://x.example", "<p>javascript:alert(1) ftp://x.example</p>"),
        ("<script>x</script>", "<p>&lt;script&gt;x&lt;/script&gt;</p>"),
        ("\n\n  \n", ""),
    ],
)
def test_text_as_html_escapes_and_links_only_web_addresses(text, html):
    assert text_as_html(text) == html


def test_linked_text_keeps_line_breaks():
    assert (
        linked_text("a\nhttp://b.example/c\n") == 'a\n<a href="http://b.example/c">http://b.example/c</a>\n'
    )
