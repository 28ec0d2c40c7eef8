"""Exceptions users can act on."""


class NotPublishedError(RuntimeError):
    """`pretrained=True` for a model whose default Hub repository has not been published."""


class RuntimeUnavailableError(RuntimeError):
    """An inference runtime that cannot run on this machine (e.g. int8 on a CPU without int8 dot products)."""
