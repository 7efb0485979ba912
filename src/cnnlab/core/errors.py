"""The one exception type the CLI turns into a one-line message (no traceback)."""


class CnnlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class WeightsUnavailable(CnnlabError):
    """Pretrained weights are not on this machine and cannot be downloaded."""
