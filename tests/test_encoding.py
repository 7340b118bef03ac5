"""One-hot encoding: A, G, C, T order; unknown characters are zero columns; case-insensitive."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.encoding import ALPHABET, base_codes, codes_to_one_hot, decode, one_hot


def test_alphabet_order_is_agct():
    assert ALPHABET == "AGCT"
    X = one_hot("AGCT")
    assert X.dtype == np.uint8
    assert X.shape == (4, 4)
    np.testing.assert_array_equal(X, np.eye(4, dtype=np.uint8))


@pytest.mark.parametrize("base, index", [("A", 0), ("G", 1), ("C", 2), ("T", 3)])
def test_each_base_sets_its_row(base: str, index: int):
    X = one_hot("N" * 3 + base + "N" * 2)
    assert X[:, 3].tolist() == [int(b == index) for b in range(4)]
    assert X.sum() == 1


@pytest.mark.parametrize("char", list("NnRYSWKMBDHVryn-.X"))
def test_unknown_characters_are_zero_columns(char: str):
    X = one_hot("A" + char + "T")
    assert X[:, 1].tolist() == [0, 0, 0, 0]
    assert X[:, 0].tolist() == [1, 0, 0, 0]
    assert X[:, 2].tolist() == [0, 0, 0, 1]
    assert base_codes(char)[0] == 4


def test_lower_case_encodes_like_upper_case():
    seq = "ACGTNRYacgtnry-AaGgCcTt"
    np.testing.assert_array_equal(one_hot(seq.lower()), one_hot(seq.upper()))
    np.testing.assert_array_equal(one_hot("acgt"), one_hot("ACGT"))


def test_decode_round_trip():
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("AGCTN"), size=257))
    X = one_hot(seq)
    assert X.shape == (4, 257)
    assert (X.sum(axis=0) <= 1).all()
    assert decode(X) == seq
    # lower case and IUPAC codes decode to their canonical form
    assert decode(one_hot("acgRtY-")) == "ACGNTNN"


def test_decode_rejects_wrong_shape():
    with pytest.raises(ValueError):
        decode(np.zeros((5, 10), dtype=np.uint8))


def test_codes_to_one_hot_matches_one_hot():
    seq = "GATTACAnNrACGT"
    codes = base_codes(seq)
    assert codes.tolist() == [ALPHABET.index(c.upper()) if c.upper() in ALPHABET else 4 for c in seq]
    np.testing.assert_array_equal(codes_to_one_hot(codes), one_hot(seq))
    batch = np.stack([codes, codes[::-1]])
    np.testing.assert_array_equal(codes_to_one_hot(batch), np.stack([one_hot(seq), one_hot(seq[::-1])]))
