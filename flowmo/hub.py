"""Models by name through the Hugging Face Hub: the released FlowMo-Lo / FlowMo-Hi, and model
folders in Hub repositories; ``push_to_hub`` for our folders.

Everything here goes through ``huggingface_hub`` (its cache, its offline mode ``HF_HUB_OFFLINE=1``,
its token handling: ``token=`` or the logged-in token); it is an optional dependency
(``pip install 'flowmo[hub]'``), imported only when a name is not a local folder.

A released name (``"flowmo_lo"``, ``"flowmo_hi"``) downloads the release's ``.pth`` from the
repository :data:`RELEASE_REPO` into the Hub cache, checks it against the SHA-256 the cache names
it by, converts its EMA weights once into a model folder under :func:`cache_root`
(``released/<name>-<first 16 hex of the file's SHA-256>``), checks that folder, and loads from it;
a later call finds the converted folder and does not read the ``.pth`` again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["RELEASE_REPO", "RELEASED", "cache_root", "resolve_model_source", "released_folder", "hub_folder",
           "push_to_hub", "is_repo_id", "HUB_EXTRA_HINT"]

RELEASE_REPO = "ksarge/FlowMo"
"""The Hub repository holding the release's checkpoints."""

RELEASED: dict[str, tuple[str, str]] = {"flowmo_lo": ("flowmo_lo.pth", "flowmo_lo"),
                                        "flowmo_hi": ("flowmo_hi.pth", "flowmo_hi")}
"""Released name -> (file in :data:`RELEASE_REPO`, the preset of its spec)."""

HUB_EXTRA_HINT = "pip install 'flowmo[hub]' (the huggingface_hub package)"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SOURCE_NAME = "source.json"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"loading a model by name from the Hugging Face Hub needs the optional dependency: "
                          f"{HUB_EXTRA_HINT}") from None
    return huggingface_hub


def cache_root() -> Path:
    """Where flowmo keeps what it makes from downloads (converted released folders):
    ``$FLOWMO_CACHE``, else ``$XDG_CACHE_HOME/flowmo``, else ``~/.cache/flowmo``."""
    if os.environ.get("FLOWMO_CACHE"):
        return Path(os.environ["FLOWMO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flowmo"


def _offline(hub: Any) -> bool:
    return bool(getattr(getattr(hub, "constants", None), "HF_HUB_OFFLINE", False)) or \
        os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def released_folder(name: str, *, revision: Optional[str] = None, token: Union[str, bool, None] = None,
                    cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The model folder of a released checkpoint (``name`` a key of :data:`RELEASED`), converted
    on first use (module docstring).

    Raises ImportError naming the extra without ``huggingface_hub``; the Hub client's errors when
    the file is neither cached nor downloadable (e.g. offline with an empty cache); ValueError
    when the downloaded file's SHA-256 is not the one the Hub cache names it by ("damaged
    download": delete it and download again) or it is not a FlowMo checkpoint.
    """
    from .compat.release import load_release_checkpoint
    from .data.files import atomic_write_text
    from .presets import get_preset
    from .state_dicts import weights_digest

    if name not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; released: {', '.join(RELEASED)}")
    filename, preset = RELEASED[name]
    hub = _hub()
    try:
        pth = Path(hub.hf_hub_download(RELEASE_REPO, filename, revision=revision, token=token, cache_dir=cache_dir,
                                       library_name="flowmo"))
    except (OSError, ValueError) as e:  # the client's not-found / offline / connection errors
        offline = " (HF_HUB_OFFLINE is set: only the cache is looked at)" if _offline(hub) else ""
        raise FileNotFoundError(f"the released {name!r} ({filename} in the Hub repository {RELEASE_REPO}"
                                f"{f', revision {revision}' if revision else ''}) is neither in the Hub cache nor "
                                f"downloadable{offline}: {type(e).__name__}: {_first_line(e)}") from None
    blob = Path(os.path.realpath(pth))
    # the Hub cache names a blob by its etag: the SHA-256 of the content for LFS files (the
    # release's), a git hash otherwise; either keys the conversion without reading the file
    etag = blob.name if _ETAG.fullmatch(blob.name) else None
    folder = cache_root() / "released" / f"{name}-{(etag or _sha256(pth))[:16]}"
    if (folder / SOURCE_NAME).is_file() and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    digest = _sha256(pth)
    key = etag if etag is not None and _SHA256.fullmatch(etag) else None
    if key is not None and digest != key:
        raise ValueError(f"the downloaded {filename} is damaged: its SHA-256 is {digest[:16]}... but the Hub cache "
                         f"names it {key[:16]}... (an interrupted or corrupted download); delete {blob} and load "
                         "again to download it anew")
    try:
        model = load_release_checkpoint(pth, spec=get_preset(preset))
    except ValueError as e:
        raise ValueError(f"the downloaded {filename} ({pth}) is not a usable FlowMo checkpoint: {e}") from None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as e:
        raise OSError(f"flowmo's cache {str(cache_root())!r} ($FLOWMO_CACHE, else $XDG_CACHE_HOME/flowmo or "
                      f"~/.cache/flowmo) cannot hold the converted model: {e}") from None
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a shared cache is read by others
    try:
        model.save_pretrained(tmp)
        from .model import FlowMo

        check = FlowMo.from_pretrained(tmp)
        want = weights_digest(model)
        if weights_digest(check) != want:  # pragma: no cover - a failing disk
            raise ValueError(f"the converted folder {tmp} does not hold the weights just converted")
        atomic_write_text(tmp / SOURCE_NAME, json.dumps({
            "repo": RELEASE_REPO, "file": filename, "revision": revision, "sha256": digest, "weights": "ema",
            "weights_digest": want}, indent=2) + "\n")
        if (folder / SOURCE_NAME).is_file():  # another process finished the same conversion first
            return folder
        if folder.exists():  # a leftover without its source.json (not a complete conversion): replaced
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)  # atomic: the folder appears complete or not at all
        except OSError:
            if not (folder / SOURCE_NAME).is_file():  # not a concurrent conversion's finished folder
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def hub_folder(repo_id: str, *, revision: Optional[str] = None, subfolder: Optional[str] = None,
               token: Union[str, bool, None] = None, cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """A model folder (``config.json`` + ``model.safetensors``, as :meth:`flowmo.FlowMo.save_pretrained`
    writes) in the Hub repository ``repo_id`` (``"user/repo"``), at ``revision``, optionally in
    ``subfolder``: downloaded into the Hub cache (only those files and the model card) and
    returned as a local path. Raises ImportError naming the extra without ``huggingface_hub``,
    and the Hub client's errors (unknown repository, offline without a cached copy)."""
    hub = _hub()
    if subfolder is not None and (not isinstance(subfolder, str) or ".." in Path(subfolder).parts
                                  or Path(subfolder).is_absolute()):
        raise ValueError(f"subfolder must be a relative path inside the repository, got {subfolder!r}")
    prefix = "" if not subfolder else subfolder.strip("/") + "/"
    where = f"the Hub repository {repo_id!r}{f' at revision {revision!r}' if revision else ''}" \
            f"{f' (subfolder {subfolder!r})' if subfolder else ''}"
    try:
        root = hub.snapshot_download(repo_id, revision=revision, token=token, cache_dir=cache_dir,
                                     library_name="flowmo", allow_patterns=[f"{prefix}config.json",
                                                                            f"{prefix}model.safetensors",
                                                                            f"{prefix}README.md"])
    except (OSError, ValueError) as e:
        offline = " (HF_HUB_OFFLINE is set: only the cache is looked at)" if _offline(hub) else ""
        raise FileNotFoundError(f"{where} cannot be had{offline}: {type(e).__name__}: {_first_line(e)}") from None
    folder = Path(root) / prefix if prefix else Path(root)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{where} holds no flowmo model folder: {', '.join(missing)} missing"
                                f"{'' if subfolder else ' (is it in a subfolder? pass subfolder=)'}")
    return folder


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id, ``"user/repo"``."""
    return isinstance(name, str) and bool(_REPO_ID.fullmatch(name))


def resolve_model_source(name_or_path: Union[str, os.PathLike], *, revision: Optional[str] = None,
                         subfolder: Optional[str] = None, token: Union[str, bool, None] = None,
                         cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The local model folder ``name_or_path`` names: an existing path (``subfolder`` inside
    it), a released name (:data:`RELEASED`: :func:`released_folder`) or a Hub repository id
    ``"user/repo"`` (:func:`hub_folder`). A path that exists locally always wins over a name.
    Raises FileNotFoundError for anything else, naming the forms accepted."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p / subfolder if subfolder else p
    name = str(name_or_path)
    if name in RELEASED:
        if subfolder:
            raise ValueError(f"subfolder does not apply to the released model {name!r}")
        return released_folder(name, revision=revision, token=token, cache_dir=cache_dir)
    if is_repo_id(name):
        try:
            return hub_folder(name, revision=revision, subfolder=subfolder, token=token, cache_dir=cache_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{name!r} is not a local folder, and as a Hugging Face Hub repository id: "
                                    f"{e}") from None
    raise FileNotFoundError(f"{name!r} is neither a local model folder, a released model ({', '.join(RELEASED)}) nor "
                            "a Hugging Face Hub repository id ('user/repo')")


def push_to_hub(model: Any, repo_id: str, *, token: Union[str, bool, None] = None, private: Optional[bool] = None,
                revision: Optional[str] = None, subfolder: Optional[str] = None,
                commit_message: Optional[str] = None, card: Optional[dict] = None) -> str:
    """Upload a model folder to the Hub repository ``repo_id``, creating the repository if needed.

    ``model``: a :class:`flowmo.FlowMo` (written with :meth:`~flowmo.FlowMo.save_pretrained` and
    ``card``, the model card's fields, its ``name`` defaulting to ``repo_id``), or the path of a
    model folder, uploaded as it is (so an exported run's card, with its training and held-out
    figures, is kept; the folder is first checked to load; ``card`` must then be None).
    ``subfolder`` puts it in a sub-folder of the repository. Returns the commit's URL. Raises
    ImportError naming the extra without ``huggingface_hub``; ValueError for a malformed
    ``repo_id``; OSError naming the repository when the Hub refuses or cannot be reached."""
    from .model import FlowMo

    hub = _hub()
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must be a Hub repository id 'user/repo', got {repo_id!r}")
    if isinstance(model, (str, os.PathLike)):
        if card is not None:
            raise ValueError("card applies when model is a FlowMo; a folder is uploaded with its own README.md")
        FlowMo.from_pretrained(Path(model))  # a folder that does not load is not uploaded
    elif not isinstance(model, FlowMo):
        raise TypeError(f"model must be a FlowMo or a model folder's path, got {type(model).__name__}")
    try:
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="flowmo-push-") as tmp:
            if isinstance(model, FlowMo):
                folder = model.save_pretrained(tmp, card={"name": repo_id, **(card or {})})
            else:
                folder = Path(model)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), path_in_repo=subfolder or None,
                                     revision=revision, repo_type="model", allow_patterns=[
                                         "config.json", "model.safetensors", "README.md"],
                                     commit_message=commit_message or "Upload FlowMo model folder (flowmo)")
    except (OSError, ValueError) as e:
        raise OSError(f"push_to_hub to the Hub repository {repo_id!r} failed: {type(e).__name__}: "
                      f"{_first_line(e)}") from None
    return str(getattr(info, "commit_url", info))
