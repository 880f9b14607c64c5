"""What a send keeps of its readers: their models' scores and their 👍/👎 in a few flat
arrays (the same values as the objects they replace), and a model's themes without the matrix
of every liked paper."""

from __future__ import annotations

import pickle
from array import array

import numpy as np
import pytest

from digest.models import Feedback, FeedbackTable
from digest.ranking.reader import Example, Learned, LearnedTable, train


def test_a_learned_table_gives_back_each_readers_scores() -> None:
    liked = "'A' you liked"
    again = "".join(["'A' ", "you liked"])  # equal, another string
    learned = {
        "a@example.org": Learned(array("f", [0.5, 1.25]), 2.0, b"\x00\x01", (liked,)),
        "b@example.org": Learned(array("f", [3.0, 0.0]), 4.5, b"\x01\x00", ("'B'", again)),
        "c@example.org": Learned(array("f", [0.0, 0.0]), 0.0, b"\x00\x00"),
    }
    table = LearnedTable(learned)
    assert table == learned and len(table) == 3 and list(table) == list(learned)
    assert table["b@example.org"].themes[1] is table["a@example.org"].themes[0]  # one string
    assert table.get("nobody@example.org") is None
    assert pickle.loads(pickle.dumps(table)) == learned
    assert LearnedTable({}) == {}
    with pytest.raises(ValueError, match="same papers"):
        LearnedTable({**learned, "d@example.org": Learned(array("f", [1.0]), 1.0, b"\x00")})


def test_a_feedback_table_gives_back_each_readers_ratings_oldest_first() -> None:
    table = FeedbackTable()
    table.add("a@example.org", ["2608.00001", "2608.00002"], ["2608.00003"])
    table.add("b@example.org", [], ["".join(["2608.", "00001"])])  # equal, another string
    table.add("c@example.org", [], [])
    assert table == {
        "a@example.org": Feedback(("2608.00001", "2608.00002"), ("2608.00003",)),
        "b@example.org": Feedback((), ("2608.00001",)),
        "c@example.org": Feedback(),
    }
    assert table["b@example.org"].dislikes[0] is table["a@example.org"].likes[0]
    table.add("a@example.org", ["2608.00002"], [])  # a rating removed: replaced
    assert table["a@example.org"] == Feedback(("2608.00002",), ())
    assert len(table) == 3 and pickle.loads(pickle.dumps(table)) == table


def test_a_theme_keeps_its_own_vector_not_every_liked_papers() -> None:
    # A theme's vector was a view of the matrix of all the reader's liked examples: 1,024
    # models held at once kept ~13 MB of such matrices alive.
    vectors = {f"k{i}": np.eye(8, dtype=np.float32)[i] for i in range(8)}
    examples = [Example(f"k{i}", 1 if i < 6 else 0, 1.0, "library") for i in range(8)]
    model = train(examples, vectors, np.zeros((0, 8), dtype=np.float32))
    assert model is not None and model.themes
    assert all(t.vector.base is None and t.vector.shape == (8,) for t in model.themes)
