"""Recognising an HTML page where a binary file was expected, and saying what page it is.

Saving Google Drive's "can't scan for viruses" page as ``modnet_*.ckpt`` is the failure users
of MODNet downloaders report most. The engine looks at the first bytes of every body before
writing anything, and when they are HTML it reads the page (a bounded amount) to name it in
the error: quota exceeded, a confirmation it could not pass, a sign-in page, or its title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

#: How much of an HTML page is read to classify it; real pages are far smaller.
MAX_PAGE_BYTES = 1 << 20

_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|title[\s>]|meta[\s>]|!--)",
    re.IGNORECASE,
)


def looks_like_html(first_bytes: bytes, content_type: str | None) -> bool:
    """True when a body that should be a model file is an HTML document.

    The bytes decide (servers mislabel binaries); a ``text/html`` label counts only when the
    body also starts like markup, so a checkpoint served with a wrong Content-Type still works.
    """
    head = first_bytes[:1024]
    if _HTML_START.match(head):
        return True
    is_html_type = (content_type or "").split(";")[0].strip().lower() in (
        "text/html",
        "application/xhtml+xml",
    )
    return is_html_type and head.lstrip().startswith(b"<")


def _text(page: bytes) -> str:
    return page.decode("utf-8", errors="replace")


def _title(text: str) -> str | None:
    match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if not match:
        return None
    title = re.sub(r"\s+", " ", match.group(1)).strip()
    return title[:80] or None


def describe_html(page: bytes) -> str:
    """A short phrase naming the page, for the error message."""
    text = _text(page)
    low = text.lower()
    if (
        "too many users have viewed or downloaded this file" in low
        or "download quota" in low
        or "quota exceeded" in low
    ):
        return "Google Drive: the file's download quota is exceeded, try again later"
    if "virus scan warning" in low or "scan this file for viruses" in low or "download-form" in low:
        return "Google Drive: a download confirmation page that could not be passed"
    if "accounts.google.com" in low and ("sign in" in low or "servicelogin" in low):
        return "Google Drive: a sign-in page (the file is not shared publicly)"
    title = _title(text)
    return f"page title {title!r}" if title else "no title"


@dataclass
class HtmlForm:
    """One ``<form>``: where it submits to and the values it would submit."""

    action: str
    method: str
    attrs: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self._current: HtmlForm | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._current = HtmlForm(
                action=values.get("action", ""),
                method=values.get("method", "get").lower(),
                attrs=values,
            )
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None:
            name = values.get("name")
            kind = values.get("type", "text").lower()
            if name and kind in ("hidden", "text"):
                self._current.fields[name] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(page: bytes) -> list[HtmlForm]:
    """Every form in the page, with its hidden and text inputs (submit buttons are not sent)."""
    parser = _FormParser()
    parser.feed(_text(page))
    parser.close()
    return parser.forms


def drive_confirm_form(page: bytes) -> HtmlForm | None:
    """Google Drive's "download anyway" form: a GET form with ``id`` and ``confirm`` fields."""
    for form in parse_forms(page):
        if form.method == "get" and "id" in form.fields and "confirm" in form.fields:
            return form
    return None
