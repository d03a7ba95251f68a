"""upscale-stream: a high-throughput client, CLI and local server for the Runware upscale API.

The public names are re-exported here; everything else is internal.
"""

from .client import UpscaleClient
from .config import DEFAULT_URL, Heartbeat, Limits, Polling, Retry, Timeouts
from .errors import (
    APIError,
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    InvalidTask,
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
from .streaming import Outcome
from .sync import Client

__all__ = [
    "CCSR",
    "CLARITY",
    "DEFAULT_URL",
    "MODELS",
    "SD_LATENT_UPSCALER",
    "SWINIR",
    "APIError",
    "AuthenticationError",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "ErrorItem",
    "Heartbeat",
    "ImageSource",
    "InvalidTask",
    "Limits",
    "ModelSpec",
    "Outcome",
    "Polling",
    "PreparedInput",
    "Retry",
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
