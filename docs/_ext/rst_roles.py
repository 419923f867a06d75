"""Griffe extension used by the docs build: show reST roles in docstrings as inline code.

The package's docstrings are Google style but cross-reference with Sphinx roles
(``:class:`LPCAM```, ``:func:`~lpcam_plugin.methods.fcam.crf.crf_loss```). mkdocstrings does not
know these roles and would print them literally; this extension rewrites each one to an inline
code span before the docstring is parsed (``~`` keeps the last dotted component, as in Sphinx).
Only the rendered text changes: nothing in the package is imported or modified.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")


def rewrite_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```; ``:func:`f``` -> ```f```."""
    def code(match: "re.Match[str]") -> str:
        target = match["target"].strip()
        if match["tilde"]:
            target = target.rsplit(".", 1)[-1]
        return f"``{target}``"

    return _ROLE.sub(code, text)


class RstRoles(griffe.Extension):
    """Rewrite the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:  # griffe >= 0.4x and 1.x / 2.x
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and ":`" in docstring.value:
            docstring.value = rewrite_roles(docstring.value)
