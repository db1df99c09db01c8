"""The page's files as the server hands them out, checked without a browser.

The page is plain ES modules under a strict Content-Security-Policy (``default-src 'self'``):
a module served with a non-JavaScript MIME type is refused by every browser, and an inline
script, inline style or ``on...=`` handler attribute is refused by the policy. Both would break
the page silently for users while the server looks healthy, so they are checked here, fast; the
real browser under the policy is tests/browser/test_browser_page.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend

WEB = Path(__file__).resolve().parents[2] / "web"
JS_TYPES = {"text/javascript", "application/javascript"}
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']""", re.M | re.S)
# A worklet module is loaded by URL (audioWorklet.addModule), not imported.
MODULE_URL = re.compile(r"""new URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url\s*\)""")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []  # text inside <script> or <style>
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(f"<{self._open}>{data.strip()[:80]}")


PAGES = {"index.html": "/static/app.js", "calls.html": "/static/calls.js"}
"""Each page and its one entry module."""


def _parse(name: str) -> _Tags:
    parser = _Tags()
    parser.feed((WEB / name).read_text())
    return parser


@pytest.mark.parametrize("page_name", sorted(PAGES))
def test_pages_have_no_inline_script_style_or_handler(page_name: str) -> None:
    page = _parse(page_name)
    assert page.inline == [], page.inline
    assert not [t for t, _ in page.tags if t == "style"]
    for tag, attrs in page.tags:
        assert "style" not in attrs, (tag, attrs)
        handlers = [a for a in attrs if a.startswith("on")]
        assert handlers == [], (tag, handlers)
        if tag == "script":
            assert attrs.get("type") == "module" and attrs.get("src"), attrs
        for name in ("href", "src", "action"):
            value = attrs.get(name) or ""
            assert not value.lower().startswith(("javascript:", "data:")), (tag, attrs)
    scripts = [a["src"] for t, a in page.tags if t == "script"]
    assert scripts == [PAGES[page_name]], scripts


def test_modules_import_only_files_of_the_page() -> None:
    """Every import is a relative path to a module that exists (no CDN, no build step)."""
    modules = sorted(WEB.glob("*.js"))
    assert len(modules) >= 7, modules
    reached = {entry.rsplit("/", 1)[1] for entry in PAGES.values()}
    for module in modules:
        text = module.read_text()
        for target in IMPORT.findall(text) + MODULE_URL.findall(text):
            assert target.startswith("./") and target.endswith(".js"), (module.name, target)
            assert (WEB / target[2:]).is_file(), (module.name, target)
            reached.add(target[2:])
        # What a strict policy would refuse, or what would let text in as markup.
        for banned in ("eval(", "new Function", "innerHTML", 'setAttribute("style', ".cssText"):
            assert banned not in text, (module.name, banned)
        assert len(text.splitlines()) <= 400, module.name
    assert reached == {m.name for m in modules}, "a module nothing imports"


async def test_every_module_is_served_as_javascript() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        for module in sorted(WEB.glob("*.js")):
            async with http.get(f"{url}/static/{module.name}") as resp:
                assert resp.status == 200, module.name
                assert resp.content_type in JS_TYPES, (module.name, resp.content_type)
                assert await resp.text() == module.read_text()
        async with http.get(f"{url}/static/style.css") as resp:
            assert resp.status == 200 and resp.content_type == "text/css"
        async with http.get(f"{url}/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
