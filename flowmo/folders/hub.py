"""Models by name through the Hugging Face Hub: the released FlowMo-Lo / FlowMo-Hi, and model
folders in Hub repositories; ``push_to_hub`` for our folders.

Everything here goes through ``huggingface_hub`` (its cache, its offline mode ``HF_HUB_OFFLINE=1``,
its token handling: ``token=`` or the logged-in token); it is an optional dependency
(``pip install 'flowmo[hub]'``), imported only when a name is not a local folder.

A released name (``"flowmo_lo"``, ``"flowmo_hi"``) downloads the release's ``.pth`` from the
repository :data:`RELEASE_REPO` into the Hub cache, checks it against the SHA-256 the cache names
it by, converts its EMA weights once into a model folder under :func:`cache_root`
(``released/<name>-<first 16 hex of the file's SHA-256>``, with ``source.json`` recording the
release file and the SHA-256 of every file written), checks that folder, and loads from it; a
later call finds the converted folder and does not read the ``.pth`` again. A converted folder
whose files no longer match ``source.json`` (a flipped byte, a truncation, a file missing) is
converted again from the ``.pth``.

Every cached file flowmo has a digest for is checked before its first use: a Hub cache blob
against the name the cache gives it (its etag: the SHA-256 of an LFS file, the git blob SHA-1
of another), a converted folder's files against ``source.json``. A check
that passed is recorded under ``cache_root()/verified`` with the file's size, mtime, ctime and
inode, so a multi-GB file is hashed once, not on every load; any change to the file (a write,
even with its mtime set back) makes the next load hash it again. A damaged Hub blob is refused
(ValueError naming the file and saying to delete it and download again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["RELEASE_REPO", "RELEASED", "cache_root", "model_source", "resolve_model_source", "released_folder", "hub_folder",
           "is_repo_id", "HUB_EXTRA_HINT"]

RELEASE_REPO = "ksarge/FlowMo"
"""The Hub repository holding the release's checkpoints."""

RELEASED: dict[str, tuple[str, str]] = {"flowmo_lo": ("flowmo_lo.pth", "flowmo_lo"),
                                        "flowmo_hi": ("flowmo_hi.pth", "flowmo_hi")}
"""Released name -> (file in :data:`RELEASE_REPO`, the preset of its spec)."""

HUB_EXTRA_HINT = "pip install 'flowmo[hub]' (the huggingface_hub package)"
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
SOURCE_NAME = "source.json"
VERIFIED_DIR = "verified"
_CONVERTED_FILES = ("config.json", "model.safetensors", "README.md")  # what save_pretrained writes


def hub_client() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"a model by name from the Hugging Face Hub needs the optional {HUB_EXTRA_HINT}") from None
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


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def _file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of the file's bytes: ``"sha256"``, or ``"git-sha1"`` (git's blob id: SHA-1
    of ``b"blob <size>\\0"`` then the bytes, the etag of a file the Hub stores in git)."""
    if algorithm == "sha256":
        h = hashlib.sha256()
    else:
        h = hashlib.sha1()
        h.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return _file_digest(path, "sha256")


def _stamp(real: Path, digest: str, algorithm: str) -> dict:
    st = os.stat(real)
    return {"path": str(real), algorithm: digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _marker(real: Path, digest: str) -> Path:
    name = hashlib.sha256(f"{real}\0{digest}".encode()).hexdigest()[:32]
    return cache_root() / VERIFIED_DIR / f"{name}.json"


def _recorded(real: Path, digest: str, stamp: dict) -> bool:
    """Whether a check of the file ``real`` against ``digest`` was recorded (:func:`_record`) when
    it was as ``stamp`` (its :func:`_stamp` now) says."""
    try:
        return json.loads(_marker(real, digest).read_text()) == stamp
    except (OSError, ValueError):
        return False


def _record(path: Path, digest: str, algorithm: str, stamp: Optional[dict] = None) -> None:
    """Record that ``path`` was checked against ``digest`` (module docstring): ``stamp``, its
    :func:`_stamp` taken before it was hashed, or (None) as it is now."""
    from flowmo.data.files import atomic_write_text

    real = Path(os.path.realpath(path))
    marker = _marker(real, digest)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps(stamp or _stamp(real, digest, algorithm)) + "\n")
    except OSError as e:
        warnings.warn(f"flowmo could not record the check of {real} in its cache {str(cache_root())!r} ({e}); it "
                      "will be hashed again on every load", stacklevel=3)


def _check_file(path: Union[str, os.PathLike], digest: str, algorithm: str = "sha256", *, what: str = "",
               fix: str = "") -> bool:
    """Check that the file ``path`` has the ``algorithm`` digest ``digest``, hashing it only when
    it changed since its last check (module docstring).

    Args:
        path: the file (a link is followed: the check is of the file it names).
        digest: lowercase hex.
        algorithm: ``"sha256"`` or ``"git-sha1"`` (git's blob id).
        what: how the error names the file (default: its path).
        fix: what the error says to do.
    Returns:
        True when the file was hashed now, False when an earlier check of it as it is stands.
    Raises:
        ValueError: the file's digest is another ("... is damaged: its SHA-256 is ... but ...").
        OSError: the file cannot be read.
    """
    real = Path(os.path.realpath(path))
    stamp = _stamp(real, digest, algorithm)  # before hashing: a change while hashing is seen next time
    if _recorded(real, digest, stamp):
        return False
    actual = _file_digest(real, algorithm)
    if actual != digest:
        raise ValueError(f"{what or real} is damaged: its {'SHA-256' if algorithm == 'sha256' else 'git blob SHA-1'} is "
                         f"{actual[:16]}... but it should be {digest[:16]}...{'; ' + fix if fix else ''}")
    _record(real, digest, algorithm, stamp)
    return True


def _blob_algorithm(blob: Path) -> Optional[str]:
    """How the Hub cache names ``blob`` (its etag): ``"sha256"`` (an LFS file), ``"git-sha1"``, or None."""
    if _SHA256.fullmatch(blob.name):
        return "sha256"
    return "git-sha1" if _GIT_SHA1.fullmatch(blob.name) else None


def _check_hub_file(path: Path, what: str) -> None:
    """Check a file of the Hub cache against the digest its blob is named by (none: unchecked)."""
    blob = Path(os.path.realpath(path))
    algorithm = _blob_algorithm(blob)
    if algorithm is not None:  # damaged by an interrupted download or a change on disk
        _check_file(blob, blob.name, algorithm, what=f"{what} ({blob})", fix=f"delete {blob} and load again online")


def released_folder(name: str, *, revision: Optional[str] = None, token: Union[str, bool, None] = None,
                    cache_dir: Union[str, os.PathLike, None] = None, model_class: Optional[type] = None) -> Path:
    """The model folder of a released checkpoint (``name`` a key of :data:`RELEASED`), converted
    on first use (module docstring). ``model_class`` (:class:`flowmo.FlowMo`, which passes itself):
    the converted weights are checked against its architecture's shapes and read back through it;
    None: checked finite and read back as tensors (this module never imports the model).

    Raises ImportError naming the extra without ``huggingface_hub``; the Hub client's errors when
    the file is neither cached nor downloadable (e.g. offline with an empty cache); ValueError
    when the downloaded file's digest is not the one the Hub cache names it by ("damaged":
    delete it and download again) or it is not a FlowMo checkpoint. A damaged converted folder
    is converted again (with a warning).
    """
    from safetensors.torch import load_file

    from flowmo.data.files import atomic_write_text
    from flowmo.folders.model_folder import WEIGHTS_NAME, write_model_folder
    from flowmo.folders.release import load_release_state_dict
    from flowmo.presets import get_preset
    from flowmo.state_dicts import check_finite, check_state_dict, weights_digest

    if name not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; released: {', '.join(RELEASED)}")
    filename, preset = RELEASED[name]
    hub = hub_client()
    try:
        pth = Path(hub.hf_hub_download(RELEASE_REPO, filename, revision=revision, token=token, cache_dir=cache_dir,
                                       library_name="flowmo"))
    except (OSError, ValueError) as e:  # the client's not-found / offline / connection errors
        offline = " (HF_HUB_OFFLINE is set: only the cache is looked at)" if _offline(hub) else ""
        at = f" at revision {revision}" if revision else ""
        raise FileNotFoundError(f"{filename} in the Hub repository {RELEASE_REPO}{at} is neither in the Hub cache nor "
                                f"downloadable{offline}: {type(e).__name__}: {first_line(e)}") from None
    blob = Path(os.path.realpath(pth))
    # the Hub cache names a blob by its etag: the SHA-256 of the content for LFS files (the
    # release's), a git hash otherwise; either keys the conversion without reading the file
    algorithm = _blob_algorithm(blob)
    folder = cache_root() / "released" / f"{name}-{(blob.name if algorithm else _sha256(pth))[:16]}"
    if _converted_ok(folder):
        return folder
    if (folder / SOURCE_NAME).exists():
        warnings.warn(f"flowmo's converted {name!r} in {folder} is damaged or incomplete: converting it again from "
                      f"{blob}", stacklevel=2)
    _check_hub_file(pth, f"the downloaded {filename}")
    digest = blob.name if algorithm == "sha256" else _sha256(pth)
    spec = get_preset(preset)
    try:
        state = {k: v.float() for k, v in load_release_state_dict(pth).items()}
        check_finite(state, str(pth))
        if model_class is not None:  # the architecture's shapes
            expected = {k: tuple(v.shape) for k, v in model_class(spec).state_dict().items()}
            check_state_dict(expected, state, str(pth))
    except ValueError as e:
        raise ValueError(f"the downloaded {filename} ({pth}) is not a usable FlowMo checkpoint: {e}") from None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as e:
        raise OSError(f"flowmo's cache {str(cache_root())!r} ($FLOWMO_CACHE) cannot hold the model: {e}") from None
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a shared cache is read by others
    try:
        write_model_folder(tmp, spec, state, parameters=sum(v.numel() for v in state.values()))
        want = weights_digest(state)
        check = model_class.from_pretrained(tmp) if model_class is not None else load_file(str(tmp / WEIGHTS_NAME))
        if weights_digest(check) != want:  # pragma: no cover - a failing disk
            raise ValueError(f"the converted folder {tmp} does not hold the weights just converted")
        files = {f: _sha256(tmp / f) for f in _CONVERTED_FILES}
        atomic_write_text(tmp / SOURCE_NAME, json.dumps({
            "repo": RELEASE_REPO, "file": filename, "revision": revision, "sha256": digest, "weights": "ema",
            "weights_digest": want, "files": files}, indent=2) + "\n")
        if not _converted_ok(folder) and _install(tmp, folder):  # else another process finished it first
            for f, d in files.items():  # hashed just now, in tmp: the same files (os.replace keeps them)
                _record(folder / f, d, "sha256")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _converted_ok(folder: Path) -> bool:
    """Whether ``folder`` is a complete converted folder whose files match its ``source.json``
    (each hashed only when it changed since its last check)."""
    try:
        files = json.loads((folder / SOURCE_NAME).read_text())["files"]
        if not isinstance(files, dict) or sorted(files) != sorted(_CONVERTED_FILES):
            return False
        for f in _CONVERTED_FILES:
            _check_file(folder / f, files[f], "sha256")
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable, damaged, not source.json
        return False
    return True


def _install(tmp: Path, folder: Path) -> bool:
    """Move the finished conversion ``tmp`` to ``folder``, moving a damaged or incomplete
    ``folder`` aside first. Returns False when a concurrent conversion's folder (checked) was
    kept instead."""
    for _ in range(3):
        try:
            os.replace(tmp, folder)  # atomic: the folder appears complete or not at all
            return True
        except OSError:
            if _converted_ok(folder):  # a concurrent conversion's finished folder
                return False
            if not (folder.exists() or folder.is_symlink()):
                raise
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-damaged-", dir=folder.parent))
        try:
            os.replace(folder, old / "folder")
        except FileNotFoundError:  # another process moved it first
            pass
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, folder)
    return True


def hub_folder(repo_id: str, *, revision: Optional[str] = None, subfolder: Optional[str] = None,
               token: Union[str, bool, None] = None, cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """A model folder (``config.json`` + ``model.safetensors``, as :meth:`flowmo.FlowMo.save_pretrained`
    writes) in the Hub repository ``repo_id`` (``"user/repo"``), at ``revision``, optionally in
    ``subfolder``: downloaded into the Hub cache (only those files and the model card) and
    returned as a local path; ``config.json`` and ``model.safetensors`` are checked against
    the digests the Hub cache names them by (module docstring). Raises ImportError naming the
    extra without ``huggingface_hub``; FileNotFoundError for the Hub client's errors (unknown
    repository, offline without a cached copy) and a repository without a model folder;
    ValueError for a cached file that does not match its digest (naming it: delete it and load
    again online)."""
    hub = hub_client()
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
        raise FileNotFoundError(f"{where} cannot be had{offline}: {type(e).__name__}: {first_line(e)}") from None
    folder = Path(root) / prefix if prefix else Path(root)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{where} holds no model folder: {', '.join(missing)} missing (is it in a subfolder?)")
    for f in ("config.json", "model.safetensors"):  # what loading reads
        _check_hub_file(folder / f, f"the cached {prefix}{f} of {where}")
    return folder


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id, ``"user/repo"``."""
    return isinstance(name, str) and bool(REPO_ID.fullmatch(name))


def model_source(directory: Union[str, os.PathLike], *, revision: Optional[str] = None,
                 subfolder: Optional[str] = None, token: Union[str, bool, None] = None,
                 cache_dir: Union[str, os.PathLike, None] = None, model_class: Optional[type] = None) -> Path:
    """The folder :meth:`flowmo.FlowMo.from_pretrained`'s ``directory`` names: an existing path
    (``subfolder`` inside it), else a released name or a Hub repository id resolved by
    :func:`resolve_model_source`, else the path as given (its reader says it is missing)."""
    d = Path(directory).expanduser()
    if d.exists():
        return d / subfolder if subfolder else d
    if str(directory) in RELEASED or is_repo_id(str(directory)):
        return resolve_model_source(str(directory), revision=revision, subfolder=subfolder, token=token,
                                    cache_dir=cache_dir, model_class=model_class)
    return d


def resolve_model_source(name_or_path: Union[str, os.PathLike], *, revision: Optional[str] = None,
                         subfolder: Optional[str] = None, token: Union[str, bool, None] = None,
                         cache_dir: Union[str, os.PathLike, None] = None, model_class: Optional[type] = None) -> Path:
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
        return released_folder(name, revision=revision, token=token, cache_dir=cache_dir, model_class=model_class)
    if is_repo_id(name):
        try:
            return hub_folder(name, revision=revision, subfolder=subfolder, token=token, cache_dir=cache_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{name!r} is not a local folder; as a Hugging Face Hub repository id: {e}") from None
    raise FileNotFoundError(f"{name!r} is neither a local model folder, a released model ({', '.join(RELEASED)}) nor "
                            "a Hugging Face Hub repository id ('user/repo')")
