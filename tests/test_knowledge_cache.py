"""Per-dataset embedding cache: reuse, invalidation, corrupt files, safe loading."""
import hashlib
import json

import numpy as np
import pytest

from nnunetv2_zept.knowledge import BACKGROUND_TISSUES
from nnunetv2_zept.knowledge.cache import (CACHE_DIRNAME, TextCacheError, cache_path, class_text_embeddings,
                                           read_cache, texts_hash)
from nnunetv2_zept.knowledge.encoders import TextEncoder
from nnunetv2_zept.knowledge.texts import MissingKnowledgeTextError

CLASSES = ["liver", "Kidney Tumor", "pancreas", *BACKGROUND_TISSUES]


class CountingEncoder(TextEncoder):
    """Deterministic test encoder (vector derived from the text's hash) that counts its calls."""

    def __init__(self, name="counting:test", dim=16):
        self.name, self.dim, self.calls, self.encoded = name, dim, 0, 0

    def _encode(self, texts, names):
        self.calls += 1
        self.encoded += len(texts)
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds])


def test_cache_is_reused_in_any_order(tmp_path):
    enc = CountingEncoder()
    first = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 1 and not first.from_cache
    assert first.embeddings.dtype == np.float32 and first.embeddings.shape == (len(CLASSES), 16)
    assert np.allclose(np.linalg.norm(first.embeddings, axis=1), 1, atol=1e-5)
    assert first.text_hash == texts_hash(first.names, first.texts) and first.encoder == "counting:test"
    f = cache_path(tmp_path, enc.name)
    assert f.parent.name == CACHE_DIRNAME and f.is_file()

    again = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 1 and again.from_cache
    np.testing.assert_array_equal(again.embeddings, first.embeddings)

    # a subset in another order (e.g. the network's query order) is served from the same file
    order = [CLASSES[3], CLASSES[0], CLASSES[1]]
    sub = class_text_embeddings(order, cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 1
    np.testing.assert_array_equal(sub.embeddings, first.embeddings[[3, 0, 1]])
    assert sub.text_hash != first.text_hash     # hash covers exactly the classes asked for


def test_changed_text_invalidates(tmp_path):
    enc = CountingEncoder()
    base = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    changed = class_text_embeddings(CLASSES, {"pancreas": "The pancreas, rewritten."}, cache_folder=tmp_path,
                                    encoder=enc, verbose=False)
    assert enc.calls == 2 and not changed.from_cache and changed.text_hash != base.text_hash
    assert not np.allclose(changed.embeddings[2], base.embeddings[2])
    np.testing.assert_allclose(changed.embeddings[0], base.embeddings[0])
    # the cache now holds the new text; the old one is recomputed when asked for again
    class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 3
    # a new class is not in the cache either
    class_text_embeddings(CLASSES + ["spleen"], cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 4


def test_changed_encoder_invalidates(tmp_path):
    a = CountingEncoder("counting:model@fingerprint1")
    b = CountingEncoder("counting:model@fingerprint2")   # same model, other weights: same file, replaced
    class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=a, verbose=False)
    res = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=b, verbose=False)
    assert b.calls == 1 and res.encoder == b.name
    assert cache_path(tmp_path, a.name) == cache_path(tmp_path, b.name)
    assert read_cache(cache_path(tmp_path, b.name)).encoder == b.name
    class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=b, verbose=False)
    assert b.calls == 1


def test_embedding_file_change_invalidates_via_spec(tmp_path):
    emb = tmp_path / "emb.json"
    vec = {n: np.eye(len(CLASSES))[i].tolist() for i, n in enumerate(CLASSES)}
    emb.write_text(json.dumps(vec))
    cache = tmp_path / "pre"
    r1 = class_text_embeddings(CLASSES, cache_folder=cache, encoder_spec=f"file:{emb}", verbose=False)
    r2 = class_text_embeddings(CLASSES, cache_folder=cache, encoder_spec=f"file:{emb}", verbose=False)
    assert not r1.from_cache and r2.from_cache
    vec["liver"] = [0.5] * len(CLASSES)
    emb.write_text(json.dumps(vec))
    r3 = class_text_embeddings(CLASSES, cache_folder=cache, encoder_spec=f"file:{emb}", verbose=False)
    assert not r3.from_cache and r3.encoder != r1.encoder
    np.testing.assert_allclose(r3.embeddings[0], np.full(len(CLASSES), 1 / np.sqrt(len(CLASSES))), atol=1e-6)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickle", "wrong_shape", "not_unit"])
def test_corrupt_cache_is_recomputed(tmp_path, damage, capsys):
    enc = CountingEncoder()
    good = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    f = cache_path(tmp_path, enc.name)
    if damage == "garbage":
        f.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:200])
    else:
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if damage == "pickle":
            arrays["names"] = np.array(list(arrays["names"]), dtype=object)
        elif damage == "wrong_shape":
            arrays["embeddings"] = arrays["embeddings"][:-1]
        else:
            arrays["embeddings"] = arrays["embeddings"] * 2
        with open(f, "wb") as fh:
            np.savez(fh, **arrays)
    with pytest.raises(TextCacheError):
        read_cache(f)
    res = class_text_embeddings(CLASSES, cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 2 and not res.from_cache
    assert "unusable" in capsys.readouterr().out
    np.testing.assert_allclose(res.embeddings, good.embeddings)
    read_cache(f)   # rewritten and valid again


def test_missing_text_fails_before_encoding(tmp_path):
    enc = CountingEncoder()
    with pytest.raises(MissingKnowledgeTextError, match="zept.texts.thyroid"):
        class_text_embeddings(["liver", "thyroid"], cache_folder=tmp_path, encoder=enc, verbose=False)
    assert enc.calls == 0


def test_without_cache_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    enc = CountingEncoder()
    class_text_embeddings(CLASSES, encoder=enc, verbose=False)
    class_text_embeddings(CLASSES, encoder=enc, verbose=False)
    assert enc.calls == 2 and not any(tmp_path.iterdir())
