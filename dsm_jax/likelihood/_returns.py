"""The one return convention of the estimators: ``f`` → ``(log_z, stderr)``, ``f_with_info`` →
``(log_z, stderr, info)``; ``return_info=`` (deprecated) still selects between them."""
from __future__ import annotations

import warnings


def legacy_return_info(name: str, out, return_info):
    """``out = (log_z, stderr, info)`` cut to the pair, unless a deprecated ``return_info=True``."""
    if return_info is not None:
        warnings.warn(f"`{name}(..., return_info=...)` is deprecated: use `{name}` (returns (log_z, stderr)) or "
                      f"`{name}_with_info` (returns (log_z, stderr, info)).", DeprecationWarning, stacklevel=3)
        if return_info:
            return out
    return out[0], out[1]
