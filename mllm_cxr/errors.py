"""The exception types that mean "the user's input is wrong" (one-line message, exit code 2)."""

from __future__ import annotations

from cxr_io import InputError
from data_prep.errors import DataPrepError
from mllm_cxr.config import ConfigError
from reward.base import RewardError


class ExportError(InputError):
    """An adapter or checkpoint that cannot be exported as asked."""


#: Every one of ours derives from :class:`cxr_io.InputError` (the listed subclasses are kept for readers).
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, DataPrepError, ConfigError, RewardError, ExportError,
                                                FileNotFoundError, ImportError)
