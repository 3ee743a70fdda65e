"""Safe HTML building blocks: escaping, JSON inside ``<script>``, the Content-Security-Policy, the shell.

Every string that reaches a page goes through :func:`text` (element content and attribute values,
``html.escape`` with quotes) or :func:`json_script` (data blocks). Nothing upstream is ever
interpolated unescaped, and strings put into plotly figures are HTML-escaped as well
(:func:`plotly_text`), because plotly renders a subset of HTML tags in its labels.

The page's only inline script is the chart bootstrap ``static/dashboard.js``; the policy allows it
by its sha256 hash and allows other scripts only from the site itself (``'self'``: the shared
plotly.js). ``style-src`` needs ``'unsafe-inline'``: plotly.js styles its elements at run time
(and the page's own stylesheet is inline so that a page stays one file); styles cannot run code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
from importlib import resources
from typing import Any

__all__ = [
    "text",
    "attrs",
    "plotly_text",
    "json_script",
    "script_hash",
    "content_security_policy",
    "document",
    "BOOTSTRAP_JS",
    "STYLESHEET",
]

STYLESHEET = resources.files(__package__).joinpath("static/dashboard.css").read_text(encoding="utf-8")
BOOTSTRAP_JS = resources.files(__package__).joinpath("static/dashboard.js").read_text(encoding="utf-8")


def text(value: object) -> str:
    """Escape a value for HTML element content or a double-quoted attribute."""
    shown = value if type(value) is str else str(value)
    # most texts (numbers, names) have nothing to escape: five scans beat html.escape's five copies
    if "&" in shown or "<" in shown or ">" in shown or '"' in shown or "'" in shown:
        return html.escape(shown, quote=True)
    return shown


@functools.cache
def _attribute(name: str) -> str:
    return name.rstrip("_").replace("_", "-")


def attrs(**values: object) -> str:
    """`` name="value"`` pairs, escaped, in the given order (``class_`` -> ``class``, ``data_x`` ->
    ``data-x``); None values are skipped."""
    return "".join(f' {_attribute(name)}="{text(value)}"' for name, value in values.items() if value is not None)


def plotly_text(value: object) -> str:
    """A label for a plotly figure: HTML-escaped so plotly shows it as text, not as markup."""
    return html.escape(str(value), quote=False)


def json_script(element_id: str, payload: Any) -> str:
    """A non-executable ``<script type="application/json">`` data block holding ``payload``.

    Keys are sorted (byte-identical output for equal inputs); NaN is refused (pass None); ``<``,
    ``>`` and ``&`` are written as ``\\u003c``-style escapes so no string can close the element.
    """
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json"{attrs(id=element_id)}>{body}</script>'


def script_hash(source: str) -> str:
    """The CSP source expression (``'sha256-...'``) that allows an inline script with this text."""
    digest = base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def content_security_policy(inline_scripts: tuple[str, ...] = ()) -> str:
    """The policy of a page whose only inline scripts are ``inline_scripts`` (no external origin)."""
    scripts = " ".join(["'self'", *(script_hash(source) for source in inline_scripts)])
    if not inline_scripts:
        scripts = "'none'"
    return "; ".join([
        "default-src 'none'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ])


def document(*, title: str, header: str, body: str, script_sources: tuple[str, ...] = (),
             inline_scripts: tuple[str, ...] = (), main_class: str = "") -> str:
    """A complete page: CSP meta, inline stylesheet, header, ``<main>``, then the scripts.

    ``title`` and ``script_sources`` (relative URLs) are plain text, escaped here; ``header`` and
    ``body`` are markup built from escaped parts by the caller. Scripts come last, so the page's
    text shows before plotly.js is parsed.
    """
    scripts = "".join(f'<script src="{text(source)}"></script>' for source in script_sources)
    scripts += "".join(f"<script>{source}</script>" for source in inline_scripts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{text(content_security_policy(inline_scripts))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        '<meta name="referrer" content="no-referrer">\n'
        # no favicon request (a static site has none; a 404 would be logged as a console error)
        '<link rel="icon" href="data:,">\n'
        f"<title>{text(title)}</title>\n"
        f"<style>{STYLESHEET}</style>\n"
        "</head>\n"
        "<body>\n"
        f'<header class="top"><div class="top-inner">{header}</div></header>\n'
        f'<main class="{text(main_class)}">\n{body}\n</main>\n'
        '<footer>Generated by nexus-assets from the stored pipeline tables; every figure can be reproduced '
        "from the partition it names.</footer>\n"
        f"{scripts}\n"
        "</body>\n</html>\n"
    )
