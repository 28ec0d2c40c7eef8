"""Exceptions users can act on."""


class NotPublishedError(RuntimeError):
    """`pretrained=True` for a model whose default Hub repository has not been published."""
