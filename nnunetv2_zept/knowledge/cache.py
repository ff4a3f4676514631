"""Class text embeddings, computed once per dataset and cached next to its preprocessed data.

Cache: `<cache_folder>/zept_text_embeddings/<encoder>.npz` (cache_folder is normally
`$nnUNet_preprocessed/DatasetXXX_Name`), one file per encoder, holding
    embeddings [N, D] float32 (unit rows), names [N], text_sha [N] (sha256 of each text),
    meta (JSON string: format, encoder identity, text hash).
It is read with `allow_pickle=False` and validated; a cache whose encoder identity differs, that
lacks a requested class or holds another text for it is recomputed and replaced, and so is an
unreadable one (with a message naming the file).  The cache belongs to the plugin: replacing it
loses nothing a user made.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from nnunetv2_zept.knowledge.encoders import TextEncoder, TextEncoderError
from nnunetv2_zept.knowledge.selection import build_encoder, resolve_encoder_spec, spec_identity
from nnunetv2_zept.knowledge.texts import text_for_class

CACHE_DIRNAME = "zept_text_embeddings"
CACHE_FORMAT = "nnunetv2_zept text embeddings"
CACHE_VERSION = 1


class TextCacheError(ValueError):
    """A cache file is unreadable or inconsistent."""


@dataclass
class TextEmbeddings:
    """Knowledge-text embeddings of a list of classes, in the order asked for.

    embeddings: float32 [N, D], rows L2-normalised; names/texts: [N]; encoder: identity string of
    the encoder; text_hash: sha256 over the (name, text) pairs in order."""

    embeddings: np.ndarray
    names: List[str]
    texts: List[str]
    encoder: str
    text_hash: str
    from_cache: bool = field(default=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def meta(self) -> Dict[str, object]:
        """JSON-serialisable description to store beside the embeddings in a checkpoint."""
        return {"encoder": self.encoder, "text_hash": self.text_hash, "names": list(self.names),
                "dim": self.dim}


def texts_hash(names: Sequence[str], texts: Sequence[str]) -> str:
    payload = json.dumps([[n, t] for n, t in zip(names, texts)], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def class_texts(class_names: Sequence[str], overrides: Optional[Mapping[str, str]] = None) -> List[str]:
    """Knowledge text of each class (raises MissingKnowledgeTextError for a class without one)."""
    return [text_for_class(n, overrides) for n in class_names]


def cache_path(cache_folder, encoder_identity: str) -> Path:
    """One file per encoder; the fingerprint after "@" is left out of the file name so that a
    changed checkpoint or embedding file replaces its stale cache instead of adding one."""
    base = encoder_identity.split("@", 1)[0]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("_")[:80] or "encoder"
    return Path(cache_folder) / CACHE_DIRNAME / f"{slug}.npz"


@dataclass
class CacheContent:
    embeddings: np.ndarray    # float32 [N, D]
    names: List[str]
    text_sha: List[str]       # sha256 of each class's text
    encoder: str
    text_hash: str


def read_cache(path: Path) -> CacheContent:
    """Reads and validates a cache file; raises TextCacheError saying what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise TextCacheError(f"cannot read {path}: {e}") from e
    missing = {"embeddings", "names", "text_sha", "meta"} - set(arrays)
    if missing:
        raise TextCacheError(f"{path} lacks {sorted(missing)}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as e:
        raise TextCacheError(f"{path}: meta is not JSON ({e})") from e
    if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        raise TextCacheError(f"{path}: not a version-{CACHE_VERSION} nnunetv2_zept cache")
    emb, names, shas = arrays["embeddings"], arrays["names"], arrays["text_sha"]
    if emb.dtype != np.float32 or emb.ndim != 2 or names.ndim != 1 or shas.shape != names.shape \
            or emb.shape[0] != names.shape[0] or emb.shape[0] == 0:
        raise TextCacheError(f"{path}: inconsistent shapes embeddings {emb.shape} {emb.dtype}, names {names.shape}, "
                             f"text_sha {shas.shape}")
    if not np.all(np.isfinite(emb)) or not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3):
        raise TextCacheError(f"{path}: embeddings are not finite unit vectors")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise TextCacheError(f"{path}: duplicate class names")
    return CacheContent(emb, names, [str(s) for s in shas], str(meta.get("encoder")), str(meta.get("text_hash")))


def write_cache(path: Path, result: TextEmbeddings) -> None:
    """Atomic write (temporary file + rename), so concurrent DDP ranks never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "encoder": result.encoder,
            "text_hash": result.text_hash}
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, embeddings=result.embeddings.astype(np.float32), names=np.asarray(result.names, dtype=str),
                     text_sha=np.asarray([_sha(t) for t in result.texts], dtype=str), meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _from_cache(path: Path, identity: str, names: Sequence[str], texts: Sequence[str],
                verbose: bool) -> Optional[np.ndarray]:
    """Rows of the cache for the requested classes, or None when it must be recomputed."""
    if not path.is_file():
        return None
    try:
        cached = read_cache(path)
    except TextCacheError as e:
        print(f"nnunetv2_zept: text embedding cache is unusable ({e}); recomputing it", flush=True)
        return None
    if cached.encoder != identity:
        if verbose:
            print(f"nnunetv2_zept: text embedding cache {path} was made by {cached.encoder}, not {identity}; "
                  "recomputing", flush=True)
        return None
    row = {n: i for i, n in enumerate(cached.names)}
    idx = []
    for n, t in zip(names, texts):
        i = row.get(n)
        if i is None or cached.text_sha[i] != _sha(t):
            if verbose:
                print(f"nnunetv2_zept: text embedding cache {path} is stale (class {n!r} is new or its text "
                      "changed); recomputing", flush=True)
            return None
        idx.append(i)
    return cached.embeddings[idx]


def class_text_embeddings(class_names: Sequence[str], overrides: Optional[Mapping[str, str]] = None,
                          cache_folder=None, encoder_spec: Optional[str] = None,
                          dataset_json: Optional[dict] = None, encoder: Optional[TextEncoder] = None,
                          verbose: bool = True) -> TextEmbeddings:
    """Embeddings of the knowledge texts of `class_names`, in that order.

    overrides: class name -> text (ClassRoles.texts).  cache_folder: the preprocessed dataset
    folder (None: no cache).  encoder_spec / dataset_json: choose the encoder (see
    `knowledge.selection`); or pass a built `encoder`.  The encoder is built only when the
    cache cannot answer.
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_text_embeddings needs at least one class name")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {names}")
    texts = class_texts(names, overrides)
    thash = texts_hash(names, texts)
    spec = None
    if encoder is None:
        spec = resolve_encoder_spec(encoder_spec, dataset_json)
        identity = spec_identity(spec)
    else:
        identity = encoder.name
    path = cache_path(cache_folder, identity) if cache_folder is not None else None
    if path is not None:
        hit = _from_cache(path, identity, names, texts, verbose)
        if hit is not None:
            if verbose:
                print(f"nnunetv2_zept: text embeddings of {len(names)} classes from cache {path} "
                      f"(encoder {identity})", flush=True)
            return TextEmbeddings(hit, names, texts, identity, thash, from_cache=True)
    if encoder is None:
        encoder = build_encoder(spec, verbose=verbose)
        if encoder.name != identity:   # e.g. a checkpoint replaced between the two calls
            identity = encoder.name
            path = cache_path(cache_folder, identity) if cache_folder is not None else None
    elif verbose:
        print(f"nnunetv2_zept: text encoder {encoder.name} ({encoder.dim}-d)", flush=True)
    emb = encoder.encode(texts, names=names)
    if emb.dtype != np.float32 or emb.shape != (len(names), encoder.dim):
        raise TextEncoderError(f"{encoder.name} returned {emb.dtype} {emb.shape}, expected float32 "
                               f"{(len(names), encoder.dim)}")
    result = TextEmbeddings(emb, names, texts, encoder.name, thash)
    if path is not None:
        try:
            write_cache(path, result)
            if verbose:
                print(f"nnunetv2_zept: wrote text embeddings of {len(names)} classes to {path}", flush=True)
        except OSError as e:  # a read-only dataset folder must not stop training
            print(f"nnunetv2_zept: could not write text embedding cache {path} ({e}); continuing without it",
                  flush=True)
    return result
