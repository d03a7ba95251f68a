"""upscale-stream: a high-throughput client, CLI and local server for the Runware upscale API.

The public names are re-exported here; everything else is internal.
"""

from .client import UpscaleClient
from .config import DEFAULT_URL, Heartbeat, Limits, Polling, Retry, TaskRetry, Timeouts
from .errors import (
    APIError,
    AuthenticationError,
    ClientClosed,
    ConfigurationError,
    ConnectionLost,
    DownloadError,
    DuplicateTaskUUID,
    EventLoopError,
    InternalError,
    InvalidLimits,
    InvalidResult,
    InvalidTask,
    InvalidURL,
    JobMismatch,
    MissingAPIKey,
    ResultError,
    UpscaleError,
    UpscaleTimeout,
)
from .inputs import ImageSource, PreparedInput, prepare_input
from .log import configure_logging, redact_secrets
from .models import (
    CCSR,
    CLARITY,
    MODELS,
    SD_LATENT_UPSCALER,
    SWINIR,
    ErrorItem,
    ModelSpec,
    UpscaleResult,
    UpscaleSettings,
    UpscaleTask,
)
from .options import ClientOptions, TaskOptions
from .policy import RETRYABLE_CODES
from .streaming import Outcome
from .sync import Client

__all__ = [
    "CCSR",
    "CLARITY",
    "DEFAULT_URL",
    "MODELS",
    "RETRYABLE_CODES",
    "SD_LATENT_UPSCALER",
    "SWINIR",
    "APIError",
    "AuthenticationError",
    "Client",
    "ClientClosed",
    "ClientOptions",
    "ConfigurationError",
    "ConnectionLost",
    "DownloadError",
    "DuplicateTaskUUID",
    "ErrorItem",
    "EventLoopError",
    "Heartbeat",
    "ImageSource",
    "InternalError",
    "InvalidLimits",
    "InvalidResult",
    "InvalidTask",
    "InvalidURL",
    "JobMismatch",
    "Limits",
    "MissingAPIKey",
    "ModelSpec",
    "Outcome",
    "Polling",
    "PreparedInput",
    "ResultError",
    "Retry",
    "TaskOptions",
    "TaskRetry",
    "Timeouts",
    "UpscaleClient",
    "UpscaleError",
    "UpscaleResult",
    "UpscaleSettings",
    "UpscaleTask",
    "UpscaleTimeout",
    "configure_logging",
    "prepare_input",
    "redact_secrets",
]
