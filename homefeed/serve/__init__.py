"""The ranking service: candidates → hydrate → filter → score → policy → log, one pipeline for two callers.

`RankingPipeline` is a `FeedPolicy` (the simulator runs it); `homefeed.serve.api` serves it over HTTP.
"""

from homefeed.serve.pipeline import STAGES, RankingPipeline, Served, ServingModel

__all__ = ["STAGES", "RankingPipeline", "Served", "ServingModel"]
