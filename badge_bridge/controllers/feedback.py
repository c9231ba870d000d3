"""What a reader shows and sounds for a decision: LED and buzzer patterns in OSDP's model.

The OSDP driver sends them with every decision (an OSDP reader keeps none of its own); an MQTT controller
takes them from ``firmware push``. The firmware file sets them per controller (badge_bridge/firmware).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Color = Literal["off", "red", "green", "amber", "blue", "magenta", "cyan", "white"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedPattern(_Model):
    """OSDP's LED model (on/off times in 100 ms steps, so multiples of 100 ms)."""

    color: Color
    off_color: Color = "off"
    on_ms: int = Field(1000, ge=0, le=25_500, multiple_of=100)
    off_ms: int = Field(0, ge=0, le=25_500, multiple_of=100)
    repeat: int = Field(1, ge=1, le=255)
    """How many on/off cycles the pattern lasts (granted/denied); the idle pattern repeats for ever."""


class BuzzerPattern(_Model):
    on_ms: int = Field(100, ge=0, le=25_500, multiple_of=100)
    off_ms: int = Field(100, ge=0, le=25_500, multiple_of=100)
    repeat: int = Field(1, ge=0, le=255)
    """0: silent."""


class LedPatterns(_Model):
    granted: LedPattern = LedPattern(color="green", on_ms=5000)
    denied: LedPattern = LedPattern(color="red", on_ms=300, off_ms=300, repeat=3)
    idle: LedPattern = LedPattern(color="red", on_ms=1000)
    """What the reader shows when nothing happens: OSDP's permanent LED state."""


class BuzzerPatterns(_Model):
    granted: BuzzerPattern = BuzzerPattern(repeat=1)
    denied: BuzzerPattern = BuzzerPattern(on_ms=200, off_ms=200, repeat=3)
