"""The one exception type the CLI turns into a one-line message (no traceback)."""


class CnnlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class WeightsUnavailable(CnnlabError):
    """Pretrained weights are not on this machine and cannot be downloaded."""


# How a caller names the data root, said to each kind of caller at once: the API's argument, the CLI's flag and its
# environment variable (which only the CLI reads).
DATA_ROOT_HINT = "pass data_root=ROOT (Python), or --data-root ROOT / CNNLAB_DATA=ROOT (command line)"
