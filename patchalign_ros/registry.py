"""Models by name, as open_clip's pretrained registry does it: data, not code branches.

An entry (``models/registry.yaml``, or a user YAML of the same shape) says where the weights
come from (a bundled file, or a Hugging Face repo + file + revision), the expected sha256
where known, the text encoder, the input settings the weights cannot tell, and the default
thresholds. ``resolve("patchalign3d-official")`` gives a local weights path, downloading with
``huggingface_hub`` (its cache, ``HF_HOME``, ``HF_ENDPOINT`` and offline mode respected) only
when the model is asked for and not cached; the file's sha256 is recorded at the first
download and checked on every later load.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .model.checkpoint import CheckpointError

REGISTRY_ENV = "PATCHALIGN_MODEL_REGISTRY"


@dataclass
class ModelEntry:
    name: str
    description: str = ""
    bundled: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str = "main"
    sha256: str | None = None
    text_encoder: str | None = None
    config: dict = field(default_factory=dict)     # ModelConfig overrides
    inference: dict = field(default_factory=dict)  # InferenceConfig defaults
    presence: dict = field(default_factory=dict)   # the model's presence calibration (inference.presence)

    @classmethod
    def from_dict(cls, name: str, data: dict) -> "ModelEntry":
        if not isinstance(data, dict):
            raise ValueError(f"registry entry {name!r} must be a mapping")
        data = dict(data)
        weights = data.pop("weights", None) or {}
        known = {"description", "sha256", "text_encoder", "config", "inference", "presence"}
        unknown = sorted(set(data) - known) + sorted(set(weights) - {"bundled", "hf_repo", "hf_filename",
                                                                         "hf_revision"})
        if unknown:
            raise ValueError(f"registry entry {name!r}: unknown keys {unknown}")
        entry = cls(name=name, **{k: data[k] for k in known if k in data and data[k] is not None},
                    **{k: v for k, v in weights.items() if v is not None})
        if entry.sha256 is not None and not (isinstance(entry.sha256, str) and len(entry.sha256) == 64
                                             and all(c in "0123456789abcdef" for c in entry.sha256.lower())):
            raise ValueError(f"registry entry {name!r}: sha256 must be 64 hex digits, as a quoted string")
        if entry.sha256:
            entry.sha256 = entry.sha256.lower()
        if bool(entry.bundled) == bool(entry.hf_repo and entry.hf_filename):
            raise ValueError(f"registry entry {name!r}: give weights.bundled or weights.hf_repo + hf_filename")
        return entry

    @property
    def source(self) -> str:
        if self.bundled:
            return f"bundled:{self.bundled}"
        return f"hf:{self.hf_repo}/{self.hf_filename}@{self.hf_revision}"

    @property
    def url(self) -> str | None:
        if not self.hf_repo:
            return None
        try:  # huggingface_hub reads HF_ENDPOINT when it is imported
            from huggingface_hub import constants

            endpoint = constants.ENDPOINT.rstrip("/")
        except ImportError:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{self.hf_repo}/resolve/{self.hf_revision}/{self.hf_filename}"


def builtin_registry_path() -> Path | None:
    from .inference.pipeline import model_dirs

    for d in model_dirs():
        if (d / "registry.yaml").is_file():
            return d / "registry.yaml"
    return None


def load_registry(user_file: str | os.PathLike | None = None) -> dict:
    """name -> ModelEntry: the shipped registry, then $PATCHALIGN_MODEL_REGISTRY, then ``user_file``."""
    entries = {}
    files = [builtin_registry_path(), os.environ.get(REGISTRY_ENV) or None, user_file]
    for path in [Path(f) for f in files if f]:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(f"cannot read model registry {path}: {exc}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"model registry {path} must map names to entries")
        for name, spec in data.items():
            try:
                entries[str(name)] = ModelEntry.from_dict(str(name), spec)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"model registry {path}: {exc}") from None
    return entries


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_record_path() -> Path:
    from .text.encoders import default_cache_dir

    return default_cache_dir().parent / "model_hashes.json"


def _recorded_hashes() -> dict:
    try:
        return json.loads(_hash_record_path().read_text())
    except (OSError, ValueError):
        return {}


def _record_hash(key: str, digest: str) -> None:
    path = _hash_record_path()
    data = _recorded_hashes()
    data[key] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _verify(entry: ModelEntry, path: Path) -> None:
    """The registry's sha256 if it has one, else the hash recorded at the first download."""
    digest = _hash_file(path)
    key = entry.source
    expected = entry.sha256 or _recorded_hashes().get(key)
    if expected is None:
        _record_hash(key, digest)
        return
    if digest != expected:
        raise CheckpointError(
            f"model {entry.name!r}: sha256 of {path} is {digest[:16]}..., expected {expected[:16]}... "
            f"({'the registry' if entry.sha256 else 'recorded at the first download'}); the file changed or is "
            f"corrupt: delete it and run `python -m patchalign_ros models pull {entry.name}`")
    if entry.sha256 and key not in _recorded_hashes():
        _record_hash(key, digest)


def _offline_help(entry: ModelEntry, reason: str) -> str:
    return (f"model {entry.name!r} is not available here ({reason}). Download {entry.url} while online with "
            f"`python -m patchalign_ros models pull {entry.name}` (it goes to the Hugging Face cache, HF_HOME), "
            f"or put the file anywhere and pass its path as the checkpoint")


def locate(entry: ModelEntry, download: bool = True) -> Path:
    """Local weights file of ``entry``; fetched from the Hub when allowed and not cached."""
    if entry.bundled:
        from .inference.pipeline import model_dirs

        for d in model_dirs():
            if (d / entry.bundled).is_file():
                return d / entry.bundled
        raise CheckpointError(f"model {entry.name!r}: bundled file {entry.bundled} not found in "
                              + ", ".join(str(d) for d in model_dirs()))
    from huggingface_hub import hf_hub_download
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from .text.encoders import user_wants_offline

    offline = user_wants_offline() or not download
    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = offline  # our own text loaders switch the hub off for themselves
    try:
        try:  # the cache first: no network at all when the model was pulled before
            path = Path(hf_hub_download(entry.hf_repo, entry.hf_filename, revision=entry.hf_revision,
                                        local_files_only=True))
        except LocalEntryNotFoundError:
            if offline:
                raise CheckpointError(_offline_help(entry, "not in the cache, and offline (HF_HUB_OFFLINE=1)"
                                                    if download else "not in the cache")) from None
            _check_reachable(entry)
            from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

            hidden = are_progress_bars_disabled()
            enable_progress_bars()  # a large download shows its progress (our text loaders hide the Hub's bars)
            try:
                path = Path(hf_hub_download(entry.hf_repo, entry.hf_filename, revision=entry.hf_revision))
            finally:
                if hidden:
                    disable_progress_bars()
    except CheckpointError:
        raise
    except Exception as exc:  # HTTP errors, connection resets, interrupted transfers
        raise CheckpointError(_offline_help(entry, f"download failed: {type(exc).__name__}: {exc}")) from None
    finally:
        hf_constants.HF_HUB_OFFLINE = previous
    _verify(entry, path)
    return path


def _check_reachable(entry: ModelEntry, timeout: float = 3.0) -> None:
    """One quick connection to the Hub's host: offline machines get the error in seconds, not
    after huggingface_hub's retries with back-off (~25 s)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(entry.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise CheckpointError(_offline_help(entry, f"not in the cache and {url.hostname} is unreachable: "
                                                   f"{exc.strerror or exc}")) from None


def is_local(entry: ModelEntry) -> bool:
    try:
        locate(entry, download=False)
        return True
    except CheckpointError:
        return False


def resolve(spec, registry_file=None, download: bool = True) -> tuple[Path, ModelEntry | None]:
    """(weights path, registry entry or None) for a registry name or a path."""
    spec = str(spec)
    entries = load_registry(registry_file)
    if spec in entries:
        return locate(entries[spec], download=download), entries[spec]
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    raise CheckpointError(f"checkpoint not found: {spec} is neither a file nor a registered model "
                          f"(known: {', '.join(sorted(entries))}; `python -m patchalign_ros models list`)")
