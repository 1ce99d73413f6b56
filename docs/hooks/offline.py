"""mkdocs hook: the documentation renders without network.

* Mathematics is converted to MathML when the site is built (``latex2mathml``), so browsers draw it
  natively: ``\\(...\\)`` / ``\\[...\\]`` spans of ``pymdownx.arithmatex`` on Markdown pages, and
  ``$...$`` / ``$$...$$`` in the Markdown cells of the tutorial notebooks.
* Scripts that the notebook pages would load from a CDN (MathJax, Mermaid) are removed: the math no
  longer needs them and the tutorials contain no diagrams.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

#: arithmatex output (``generic: true``): inline spans and display blocks
_ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">\\([(\[])(.*?)\\[)\]]</\1>', re.S)
#: parts of a page whose text is code, not prose: never converted
_VERBATIM = re.compile(r"(<(pre|code|script|style|textarea)\b.*?</\2>)", re.S | re.I)
_DISPLAY_DOLLARS = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_DOLLARS = re.compile(r"(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?![\w$])")
_CDN_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc=\"https?://[^\"]*mathjax[^\"]*\"[^>]*>\s*</script>"
    r"|<script\b[^>]*type=\"text/x-mathjax-config\"[^>]*>.*?</script>"
    r"|<script\b[^>]*type=\"module\"[^>]*>(?:(?!</script>).)*mermaid(?:(?!</script>).)*</script>", re.S | re.I)


def to_mathml(tex: str, *, display: bool) -> str:
    """One TeX formula (HTML-escaped as it stands in the page) as a MathML element."""
    return convert(html.unescape(tex).strip(), display="block" if display else "inline")


def _arithmatex(match: re.Match) -> str:
    return to_mathml(match.group(3), display=match.group(2) == "[")


def _dollars(text: str) -> str:
    text = _DISPLAY_DOLLARS.sub(lambda m: to_mathml(m.group(1), display=True), text)
    return _INLINE_DOLLARS.sub(lambda m: to_mathml(m.group(1), display=False), text)


def convert_page(page_html: str, *, dollars: bool) -> str:
    """Every formula of one page as MathML; ``dollars`` also converts ``$`` delimiters (notebook pages)."""
    page_html = _ARITHMATEX.sub(_arithmatex, page_html)
    if not dollars:
        return page_html
    parts = _VERBATIM.split(page_html)
    # split keeps the two groups of _VERBATIM: [text, block, tag, text, block, tag, ...]
    out = []
    for i, part in enumerate(parts):
        if i % 3 == 0:
            out.append(_dollars(part))
        elif i % 3 == 1:
            out.append(part)
    return "".join(out)


def on_page_content(html_text: str, page, config, files) -> str:  # noqa: ARG001  (mkdocs hook signature)
    return convert_page(html_text, dollars=page.file.src_uri.endswith(".ipynb"))


def on_post_page(output: str, page, config) -> str:  # noqa: ARG001
    return _CDN_SCRIPT.sub("", output)
