"""How a ticket's parameter names become another model's: one rule for the API and for `ticket export`.

A rename maps name prefixes (``{"uniter.": "bert."}``); each name takes the value of the longest key it
starts with, so the outcome never depends on the order the prefixes were given in (a dict from Python,
``--rename`` flags on the command line). Two names renamed onto one are refused: a mask would be lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class RenameCollision(ValueError):
    """Two ticket names that a rename maps onto one name."""


def renamed(name: str, rename: Mapping[str, str]) -> str:
    """`name` with its longest prefix that is a key of `rename` replaced by that key's value."""
    for prefix in sorted(rename, key=len, reverse=True):
        if name.startswith(prefix):
            return rename[prefix] + name[len(prefix) :]
    return name


def rename_all(names: Iterable[str], rename: Mapping[str, str]) -> dict[str, str]:
    """new name -> ticket name for every name; `RenameCollision` naming both when two meet."""
    by_new: dict[str, str] = {}
    for name in names:
        new = renamed(name, rename)
        if new in by_new:
            raise RenameCollision(
                f"rename {dict(rename)} maps both {by_new[new]} and {name} onto {new}; give prefixes that "
                "keep the names apart"
            )
        by_new[new] = name
    return by_new


def unused_prefixes(names: Iterable[str], rename: Mapping[str, str]) -> list[str]:
    """The keys of `rename` no name starts with: a typo that would leave every name as it was."""
    listed = list(names)
    return [prefix for prefix in rename if not any(name.startswith(prefix) for name in listed)]
