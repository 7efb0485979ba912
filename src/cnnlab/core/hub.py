"""Weights from a hub (Hugging Face's, which timm and `transformers` read): the local cache first, then — only when
the hub answers one request — the download. Offline (`HF_HUB_OFFLINE` set, or no answer within a few seconds) the
answer is one line at once, not a minute of the hub client's retries."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

HUB = "https://huggingface.co"
TIMEOUT_S = 5.0


def offline_by_setting() -> bool:
    """Whether the environment tells the Hugging Face hub client to stay offline."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def _answers(url: str, timeout: float) -> bool:
    import urllib.error
    import urllib.request

    try:  # urllib honours the proxy settings of the environment, as the hub client does
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:  # an answer, even an error status, means the hub is reachable
        return True
    except (OSError, ValueError):
        return False


def reachable(url: str = HUB, timeout: float = TIMEOUT_S) -> bool:
    """One try (remembered for the process): is the hub there to download from?"""
    return not offline_by_setting() and _answers(url, timeout)


def cached_file(repo_id: str, filenames: Sequence[str], revision: str | None = None) -> Path | None:
    """The first of `filenames` of `repo_id` already in the local Hugging Face cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def offline_hint(what: str, flag: str = "--weights PATH") -> str:
    """The end of the one line said when a hub's weights are neither cached nor downloadable."""
    why = "HF_HUB_OFFLINE is set" if offline_by_setting() else f"{HUB} did not answer"
    return f"{what} are not in the local cache and cannot be downloaded ({why}): connect once to cache them, or " \
           f"pass {flag} to a state dict"
