"""The one error of the UFS layer (``alluxiojob.ufs.base`` re-exports it)."""

from __future__ import annotations

from alluxiojob.core.reasons import Reason


class UfsError(Exception):
    """A UFS operation failed; ``reason`` is the failure code shown to users."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)  # a name not in ``Reason`` is a ValueError here
