"""Uploading a model folder to the Hugging Face Hub (:func:`push_to_hub`); downloading and the
cache are :mod:`flowmo.folders.hub`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from flowmo.folders.hub import REPO_ID, first_line, hub_client
from flowmo.model import FlowMo

__all__ = ["push_to_hub"]


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
    hub = hub_client()
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id):
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
        raise OSError(f"push_to_hub to the Hub repository {repo_id!r} failed: {type(e).__name__}: {first_line(e)}") from None
    return str(getattr(info, "commit_url", info))
