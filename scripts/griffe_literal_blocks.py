"""Griffe extension for ravine's docs site (mkdocs.yml names it): reST literal blocks.

ravine's docstrings introduce an indented block (equations, an example) with reST's ``::``, as
``help()`` readers expect. Markdown already shows the indented block as code, so only the second
colon has to go for the text to read right on the site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.M)


class LiteralBlocks(griffe.Extension):
    """``text::`` at the end of a line becomes ``text:`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _LITERAL.sub(":", obj.docstring.value)
