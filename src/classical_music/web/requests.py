"""The studio's request bodies (pydantic), their bounds read from where each concept lives:
sampling options from generate/options.LIMITS, style fields from conditions, the studio's own
limits (longest piece, most variations) from the Studio the app serves.

No `from __future__ import annotations`: FastAPI and pydantic must see the real types.
"""

import inspect
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, create_model

from .. import conditions
from ..generate.options import HELP, LIMITS
from .live import LIVE_DEFAULTS, MAX_ANSWER_SECONDS, MAX_NOTES, MAX_SPAN_SECONDS
from .studio import DEFAULTS, STUDIO_FORMS

# strict: "10" and true are not numbers (lax pydantic turned them into 10.0 and 1.0)
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

# pitch, start_s, end_s, velocity: JSON numbers only (check_notes wants whole pitch and velocity)
Note = Annotated[list[Union[StrictInt, StrictFloat]], Field(min_length=4, max_length=4)]


def option(name: str, default) -> Field:
    """A sampling option's field: its bounds and help from generate/options."""
    return Field(default, description=HELP[name], **LIMITS[name].pydantic())


def style_fields():
    """The style fields of a JSON request, one per condition (classical_music.conditions), and
    guidance; each one left out (or "any") is not asked for. GET /api/config lists the model's values."""
    fields = {c.name: (Optional[c.type], Field(None, description=f"style: {c.help}", **c.limits))
              for c in conditions.CONDITIONS}
    return create_model("StyleFields", __base__=BaseModel, **fields, guidance=(float, option("guidance", 1.0)))


StyleFields = style_fields()


class JobCreated(BaseModel):
    id: str


class ModelChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=255, description="a name listed by GET /api/models")


class DuetRequest(BaseModel):
    model_config = STRICT
    you: list[Note] = Field(description="the person's notes, as in /api/continue", max_length=MAX_NOTES)
    model: list[Note] = Field(description="the model's answers, on the same clock", max_length=MAX_NOTES)


def generate_request(max_seconds: float, max_samples: int):
    """The body of POST /api/generate, bounded by this studio's limits (so /docs shows them)."""

    class GenerateRequest(StyleFields):
        model_config = STRICT
        seconds: float = Field(DEFAULTS["seconds"], gt=0, le=max_seconds, description="seconds of music")
        temperature: float = option("temperature", DEFAULTS["temperature"])
        top_p: float = option("top_p", DEFAULTS["top_p"])
        seed: Optional[int] = Field(DEFAULTS["seed"], ge=0, lt=2**31, description="omit for a random one")
        num_samples: int = Field(DEFAULTS["num_samples"], ge=1, le=max_samples, description="variations")
        form: str = Field(DEFAULTS["form"], max_length=16,
                          description=f"the piece's form: {', '.join(STUDIO_FORMS)} (ABACA is a rondo)")
        memory: Optional[str] = Field(None, max_length=16, description="memory of the piece: none, or cache (the "
                                      "piece's own past mixed into each step); omit for the model's default")

    return GenerateRequest


def continue_request(max_seconds: float):
    """The body of POST /api/continue, its answer no longer than this studio allows."""

    class ContinueRequest(StyleFields):
        model_config = STRICT
        notes: list[Note] = Field(description="what was played: [[pitch 0-127, start_s, end_s, velocity 1-127], "
                                              f"...], at most {MAX_NOTES} notes spanning {MAX_SPAN_SECONDS:g} s",
                                  max_length=MAX_NOTES)
        seconds: float = Field(LIVE_DEFAULTS["seconds"], gt=0, le=min(MAX_ANSWER_SECONDS, max_seconds),
                               description="seconds of answer")
        temperature: float = option("temperature", LIVE_DEFAULTS["temperature"])
        top_p: float = option("top_p", LIVE_DEFAULTS["top_p"])
        seed: Optional[int] = Field(LIVE_DEFAULTS["seed"], ge=0, lt=2**31, description="omit for a random one")

    return ContinueRequest


def with_style_form(endpoint):
    """The endpoint with a multipart form field per condition (before the catch-all **style it takes
    them in), so FastAPI parses and documents them like the others."""
    from fastapi import Form

    sig = inspect.signature(endpoint)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    style = [inspect.Parameter(c.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=Annotated[Optional[c.type], Form(**c.limits)]) for c in conditions.CONDITIONS]
    endpoint.__signature__ = sig.replace(parameters=[
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed), *style])
    return endpoint
