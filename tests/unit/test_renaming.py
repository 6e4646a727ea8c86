"""One rename rule for `apply_ticket(rename=...)` and `ticket export --rename`: the longest prefix wins."""

from __future__ import annotations

import pytest
from ticket_fixtures import ODD_SHAPES, TICKET_META

from lottery.sparsity.maskset import MaskSet
from lottery.tickets import Ticket
from lottery.tickets.export import export_names
from lottery.tickets.renaming import RenameCollision, rename_all, renamed, unused_prefixes

NAMES = ["uniter.encoder.layer.0.output.dense.weight", "uniter.pooler.dense.weight"]


def test_the_longest_prefix_applies_whatever_the_order_given():
    ordered = {"uniter.": "bert.", "uniter.pooler.": "pool."}
    reverse = dict(reversed(list(ordered.items())))
    for rename in (ordered, reverse):
        assert rename_all(NAMES, rename) == {
            "bert.encoder.layer.0.output.dense.weight": NAMES[0],
            "pool.dense.weight": NAMES[1],
        }
    assert renamed("other.weight", ordered) == "other.weight"


def test_two_names_onto_one_is_refused_naming_both():
    with pytest.raises(RenameCollision, match=f"maps both {NAMES[0]} and {NAMES[1]} onto x.weight"):
        rename_all(NAMES, {"uniter.encoder.layer.0.output.dense.": "x.", "uniter.pooler.dense.": "x."})


def test_a_prefix_no_name_starts_with_is_found():
    assert unused_prefixes(NAMES, {"uniter.": "bert.", "unitre.": "x."}) == ["unitre."]


def test_the_export_takes_the_same_names_as_the_api_for_the_same_renames():
    ticket = Ticket(MaskSet.dense(ODD_SHAPES), TICKET_META, id="ab" * 32, source="test")
    pairs = [("uniter.pooler.", "pool."), ("uniter.", "bert.")]
    by_api = rename_all(ticket.masks.masks, dict(pairs))
    assert export_names(ticket, pairs) == {old: new for new, old in by_api.items()}
    assert export_names(ticket, pairs)["uniter.pooler.dense.weight"] == "pool.dense.weight"
    with pytest.raises(ValueError, match="given more than once"):
        export_names(ticket, [("uniter.", "bert."), ("uniter.", "b.")])
