"""Typos in pipeline calls: keywords that a vanilla ``__call__`` would swallow into ``**kwargs`` without effect.

Most diffusers pipelines end their ``__call__`` signature with ``**kwargs`` so that deprecated names (``callback``,
``callback_steps``) keep working; any other keyword lands there too and is silently ignored: ``pipe("a fox",
sed=42)`` would draw a random seed. `check_extra_keywords` finds which names the vanilla ``__call__`` really reads
from its ``**kwargs`` (from its own source, per class) and refuses the rest, naming the closest valid parameter.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import textwrap
from collections.abc import Iterable
from typing import Any

__all__ = ["check_extra_keywords", "keywords_read_from_kwargs"]


@functools.cache
def keywords_read_from_kwargs(function: Any) -> frozenset[str] | None:
    """The names a function reads from its ``**kwargs`` (``kwargs.pop("callback")``, ``kwargs["x"]``,
    ``"x" in kwargs``, ``deprecate("x", ..., take_from=kwargs)``), or `None` when that cannot be known: no source,
    no ``**kwargs``, or ``**kwargs`` handed on to other code.

    Example:

    ```py
    >>> from diffusers import StableDiffusionPipeline
    >>> from diffusers_repro.keywords import keywords_read_from_kwargs
    >>> sorted(keywords_read_from_kwargs(StableDiffusionPipeline.__call__))
    ['callback', 'callback_steps']
    ```
    """
    function = inspect.unwrap(function)
    var_keyword = next(
        (p.name for p in inspect.signature(function).parameters.values() if p.kind is p.VAR_KEYWORD), None
    )
    if var_keyword is None:
        return None
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and _is_name(func.value, var_keyword)
                and func.attr in ("pop", "get", "setdefault")
            ):
                names.update(_string(arg) for arg in node.args[:1])
            if any(_is_name(k.value, var_keyword) for k in node.keywords if k.arg is None):
                return None  # **kwargs handed on: any name may be read further down
            if any(k.arg == "take_from" and _is_name(k.value, var_keyword) for k in node.keywords):
                names.update(_string(arg) for arg in node.args[:1])
            if any(_is_name(arg, var_keyword) for arg in node.args):
                return None  # kwargs passed as a dict to other code
        elif isinstance(node, ast.Subscript) and _is_name(node.value, var_keyword):
            names.add(_string(node.slice))
        elif isinstance(node, ast.Compare) and any(_is_name(c, var_keyword) for c in node.comparators):
            names.add(_string(node.left))
    names.discard(None)
    return frozenset(names)


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def check_extra_keywords(owner: str, function: Any, extra: Iterable[str], valid: Iterable[str]) -> None:
    """Raises `TypeError` for a keyword in ``extra`` (what landed in ``**kwargs``) that ``function`` never reads.

    Args:
        owner (`str`): The class name, for the message.
        function (`Callable`): The vanilla ``__call__``.
        extra (`Iterable[str]`): The keywords bound to its ``**kwargs``.
        valid (`Iterable[str]`): Every named parameter of the call, to suggest the closest one.
    """
    read = keywords_read_from_kwargs(function)
    if read is None:
        return
    for name in extra:
        if name in read:
            continue
        candidates = [*valid, *sorted(read)]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "; inspect.signature(pipe.__call__) lists its parameters"
        raise TypeError(
            f"{owner}.__call__() got an unexpected keyword argument {name!r}, which the pipeline would ignore{hint}"
        )
