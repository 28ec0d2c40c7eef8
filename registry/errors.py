"""Exceptions users can act on."""


class NotPublishedError(RuntimeError):
    """`pretrained=True` for a model whose default Hub repository has not been published."""


class NonFiniteValuesError(ValueError):
    """A weights, centres or whitening file holds NaN or Inf values: loading it would give NaN descriptors."""


class NonFiniteOutputError(FloatingPointError):
    """A model gave NaN or Inf descriptors for finite images (damaged weights, or an overflow)."""


class RuntimeUnavailableError(RuntimeError):
    """An inference runtime that cannot run on this machine (e.g. int8 on a CPU without int8 dot products)."""
