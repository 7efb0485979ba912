"""The one exception type the CLI turns into a one-line message (no traceback)."""


class CnnlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class WeightsUnavailable(CnnlabError):
    """Pretrained weights are not on this machine and cannot be downloaded."""


# How a caller names the data root, said to each kind of caller at once: the API's argument, the CLI's flag and its
# environment variable (which only the CLI reads).
DATA_ROOT_HINT = "pass data_root=ROOT (Python), or --data-root ROOT / CNNLAB_DATA=ROOT (command line)"


def did_you_mean(name, choices, n: int = 1, cutoff: float = 0.6, fallback: str = "") -> str:
    """The one phrasing of a suggestion, to end a one-line error: "; did you mean 'x'?" (several: 'x', 'y'), or
    `fallback` when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else fallback
