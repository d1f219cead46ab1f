"""What every settings section shares: unknown keys are errors, values are frozen once loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from homefeed.errors import HomefeedError


class ConfigError(HomefeedError, ValueError):
    """The project file is missing, unreadable or holds a bad value; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
