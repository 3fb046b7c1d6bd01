import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recdata.vocab import Vocabulary, stable_hash


def test_build_orders_by_count_then_token_and_applies_limits():
    v = Vocabulary.build(["b", "a", "c", "a", "b", "d", "a", None], min_count=1)
    assert v.tokens == ("a", "b", "c", "d") and v.counts == (3, 2, 1, 1)
    assert Vocabulary.build(["b", "a", "c", "a", "b"], min_count=2).tokens == ("a", "b")
    assert Vocabulary.build(["b", "a", "c", "a", "b"], max_size=1).tokens == ("a",)


def test_lookup_layout_matches_string_lookup_convention():
    v = Vocabulary.build(["x", "y", "x"], num_oov_buckets=2, mask_token="")
    # [mask=0] [oov 1, 2] [x=3, y=4]
    assert (v.offset, v.size) == (3, 5)
    got = v.lookup(np.array([["x", "y", ""], ["x", "", ""]], dtype=object))
    assert got.dtype == np.int64 and got.tolist() == [[3, 4, 0], [3, 0, 0]]
    oov = v.lookup(["never seen", "other", 12345, None])
    assert oov[:3].min() >= 1 and oov[:3].max() <= 2 and oov[3] == 0       # None → mask
    assert v.token(0) == "[MASK]" and v.token(1) == "[OOV]" and v.token(4) == "y"


def test_unknown_values_never_crash_and_hash_is_stable():
    v = Vocabulary.build(["a"], num_oov_buckets=7)
    values = [f"u{i}" for i in range(1000)]
    idx = v.lookup(values)
    assert idx.min() >= 0 and idx.max() < 7 and len(set(idx.tolist())) == 7    # spread over buckets
    assert np.array_equal(idx, v.lookup(values))
    # the same buckets in a fresh interpreter (Python's hash() is salted per process; this is not)
    code = ("from recdata.vocab import stable_hash; import sys; "
            "print(','.join(str(int(h)) for h in stable_hash(['u1', 'u2', 'é'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PYTHONPATH": "."}).stdout.strip()
    assert out == ",".join(str(int(h)) for h in stable_hash(["u1", "u2", "é"]))
    assert v.lookup(np.array([], dtype=object)).shape == (0,)


def test_multi_valued_cells_are_flattened():
    genres = pd.Series([["Drama", "War"], [], ["Drama"]], dtype=object)
    v = Vocabulary.build(genres)
    assert v.tokens == ("Drama", "War")


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.build(["b", "a", "a", "é", "with space"], num_oov_buckets=3, mask_token="")
    path = v.save(tmp_path / "genres.txt")
    assert path.read_text(encoding="utf-8") == "a\nb\nwith space\né\n"   # one per line, most frequent first
    w = Vocabulary.load(path)
    assert w == v
    probe = ["a", "é", "zzz", "", "with space"]
    assert np.array_equal(w.lookup(probe), v.lookup(probe))


def test_empty_vocabulary_round_trip(tmp_path):
    v = Vocabulary.build([], num_oov_buckets=2)
    w = Vocabulary.load(v.save(tmp_path / "v.txt"))
    assert w == v and w.lookup(["a"]).tolist()[0] in (0, 1)


def test_load_errors(tmp_path):
    v = Vocabulary.build(["a", "b"])
    path = v.save(tmp_path / "v.txt")
    path.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"v.txt: sha256 .* does not match v.txt.json; the tokens file was modified"):
        Vocabulary.load(path)
    with pytest.raises(FileNotFoundError, match=r"missing.txt does not exist; a vocabulary is saved as missing.txt "
                                                r"plus missing.txt.json"):
        Vocabulary.load(tmp_path / "missing.txt")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_oov_buckets must be >= 1"):
        Vocabulary.build(["a"], num_oov_buckets=0)
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ValueError, match=r"line breaks"):
        Vocabulary.build(["a\nb"]).save("/tmp/never-written.txt")
