"""Settings of the ranking service (``[serve]``): the process, and per surface the stages and every policy knob.

A surface (``[serve.surfaces.<name>]``) is a feed with its own product choices: the default ``home`` surface
exploits (a small exploration rate, tight caps), the ``explore`` surface leans on fresh items and exploration.
Surfaces given in the project file are merged over the built-in ones, so changing one knob of ``home`` keeps
``explore`` as it was.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from homefeed.config.base import Section

#: Candidate sources a surface may list, in the order they claim an item found by several.
SOURCES = ("affinity", "creators", "popular", "fresh", "explore")
#: Filters a surface may list.
FILTERS = ("seen", "hidden", "unsafe")
#: Stages whose time budget can be set (``budgets_ms``), by name.
BUDGETED = ("user", "sources", "filters", "features", "score", "policy")


class Caps(Section):
    """Diversity caps: in any run of ``window`` consecutive slots, at most so many items of one creator / topic."""

    window: int = Field(6, ge=1, le=100)
    per_creator: int = Field(1, ge=0)  # 0 = no cap
    per_topic: int = Field(2, ge=0)


class Surface(Section):
    """One surface's pipeline: which sources and filters run, with what quotas, and the policy's knobs."""

    enabled: bool = True  # false: the surface answers every request with an empty slate, flagged
    #: Candidates each source may add, in priority order (an item two sources find is the first one's); 0 = off.
    sources: dict[str, int] = Field(
        default_factory=lambda: {"affinity": 200, "creators": 60, "popular": 150, "fresh": 60, "explore": 30}
    )
    filters: list[str] = Field(default_factory=lambda: list(FILTERS))
    max_item_age_days: float = Field(30.0, gt=0.0)  # older items are never candidates
    top_topics: int = Field(4, ge=1)  # the affinity source: items of the user's strongest topics
    seen_hours: float = Field(72.0, ge=0.0)  # the seen filter: items shown to the user within this long
    explore_pool_hours: float = Field(48.0, gt=0.0)  # the exploration pool: items younger than this
    explore_rate: float = Field(0.05, ge=0.0, le=1.0)  # chance that a slot from explore_from on explores
    explore_from: int = Field(3, ge=1)  # the first slot exploration may take
    freshness_boost: float = Field(0.02, ge=0.0)  # added to the score of a new item, fading with its age ...
    freshness_half_life_hours: float = Field(12.0, gt=0.0)  # ... by half every this many hours
    caps: Caps = Caps()
    #: Per stage (user, sources, filters, features, score, policy): a stage slower than this fails as it declares.
    budgets_ms: dict[str, float] = Field(default_factory=lambda: {"user": 25.0, "features": 25.0, "score": 80.0})

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = [s for s in value if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
        if any(q < 0 for q in value.values()):
            raise ValueError("a source's quota must be 0 (off) or more")
        return value

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in FILTERS]
        if unknown:
            raise ValueError(f"unknown filter(s) {', '.join(unknown)}; choose from {', '.join(FILTERS)}")
        return value

    @field_validator("budgets_ms")
    @classmethod
    def _known_budgets(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [s for s in value if s not in BUDGETED]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(BUDGETED)}")
        if any(b <= 0 for b in value.values()):
            raise ValueError("a stage budget must be positive (milliseconds)")
        return value


def _default_surfaces() -> dict[str, Surface]:
    return {
        "home": Surface(),
        "explore": Surface(
            sources={"fresh": 150, "explore": 150, "affinity": 100, "popular": 50},
            explore_rate=0.3,
            explore_from=1,
            freshness_boost=0.05,
            caps=Caps(window=8, per_creator=1, per_topic=2),
        ),
    }


class ServeSettings(Section):
    """The ranking service (``homefeed serve``) and the pipeline the simulator runs."""

    model: str = "production"  # the registry alias (or version) served; moving the alias hot-reloads
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)  # uvicorn worker processes behind the one port
    max_slate_size: int = Field(100, ge=1)  # a request asking for more is a 422 naming slate_size
    max_body_bytes: int = Field(262_144, ge=1024)  # a larger request body is a 413
    max_events: int = Field(1000, ge=1)  # engagements per POST /v1/events
    admin_token_env: str = "HOMEFEED_ADMIN_TOKEN"  # environment variable holding the admin token; unset: no admin
    reload_seconds: float = Field(2.0, gt=0.0)  # how often a worker checks the alias, the catalogue and caches
    log_flush_seconds: float = Field(1.0, gt=0.0)  # logs reach the lake this often: what a crash can lose
    log_queue_rows: int = Field(200_000, ge=1)  # rows waiting to be logged; past this logging is shed, counted
    served_features_sample: float = Field(0.02, ge=0.0, le=1.0)  # share of requests whose feature vectors are logged
    #: Entities held in memory (refreshed when a materialization changes them); the others are read per request.
    cached_entities: list[str] = Field(
        default_factory=lambda: ["item", "creator", "user", "user_topic", "user_creator"]
    )
    # Compile a GBDT's trees to native code (lleaves) in the background after each load; LightGBM scores until
    # then, and wherever compiling is impossible. Cached in paths.compiled (`homefeed models compile` fills it).
    compiled_trees: bool = True
    store_timeout_ms: float = Field(50.0, gt=0.0)  # a slower online-store call fails (and the pipeline degrades)
    store_retry_seconds: float = Field(1.0, ge=0.0)  # after a failure, the store is not asked again for this long
    # How long a background thread (logging, refresh) may hold the interpreter before a waiting request takes it
    # back (sys.setswitchinterval in each worker). Python's 5 ms put a flush in front of requests: p99 100 -> 23 ms.
    switch_interval_ms: float = Field(0.5, gt=0.0, le=100.0)
    popularity: str = "item_save_rate_7d"  # the item feature the popular source and the fallback rank by
    seen_keep: int = Field(1000, ge=1)  # per user: the most recent impressions remembered for the seen filter
    hidden_keep: int = Field(10_000, ge=1)  # per user: hidden or reported items remembered (never shown again)
    creators_keep: int = Field(50, ge=1)  # per user: creators engaged with most recently (the creators source)
    surfaces: dict[str, Surface] = Field(default_factory=_default_surfaces)

    @model_validator(mode="before")
    @classmethod
    def _merge_surfaces(cls, data: Any) -> Any:
        """Surfaces from the file are merged over the built-in ones, key by key within each surface."""
        if isinstance(data, dict) and isinstance(data.get("surfaces"), dict):
            merged: dict[str, Any] = {k: v.model_dump() for k, v in _default_surfaces().items()}
            for name, given in data["surfaces"].items():
                if isinstance(given, dict) and name in merged:
                    merged[name] = {**merged[name], **given}
                else:
                    merged[name] = given
            data = {**data, "surfaces": merged}
        return data

    @field_validator("cached_entities")
    @classmethod
    def _known_entities(cls, value: list[str]) -> list[str]:
        known = ("item", "creator", "user", "user_topic", "user_creator", "item_declared", "user_declared")
        unknown = [e for e in value if e not in known]
        if unknown:
            raise ValueError(f"unknown entit(ies) {', '.join(unknown)}; choose from {', '.join(known)}")
        return value

    def surface(self, name: str) -> Surface:
        return self.surfaces[name]
