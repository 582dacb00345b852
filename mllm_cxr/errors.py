"""The exception types that mean "the user's input is wrong" (one-line message, exit code 2)."""

from __future__ import annotations

from data_prep.errors import DataPrepError
from mllm_cxr.config import ConfigError
from reward.base import RewardError


class ExportError(ValueError):
    """An adapter or checkpoint that cannot be exported as asked."""


USER_ERRORS: tuple[type[BaseException], ...] = (DataPrepError, ConfigError, RewardError, ExportError,
                                                FileNotFoundError, ImportError)
