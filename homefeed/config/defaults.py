"""The commented default project file that ``homefeed init`` writes (a test keeps it equal to the defaults)."""

from __future__ import annotations

from pathlib import Path

from homefeed.config.base import ConfigError
from homefeed.files import atomic_write_text

CONFIG_FILE = "homefeed.toml"

DEFAULT_TOML = """\
# homefeed project file.  Every key is optional; the values shown are the defaults.
# Relative paths resolve against paths.root, itself relative to this file.

[paths]
root = ".homefeed"              # working directory of the project
lake = "lake"                   # partitioned Parquet: users, items, impressions, engagements
quarantine = "quarantine"       # rows that failed their contract, with the reason
sim_logs = "sim"                # logs written by the simulator
online_store = "online.sqlite"  # online feature store (SQLite backend)
registry = "registry.sqlite"    # model registry metadata: versions, lineage, aliases and their history
models = "models"               # the registered models' files, one folder per version
reports = "reports"             # launch reviews, as JSON and HTML
etl = "etl"                     # daily feature sources computed from the lake
checks = "checks"               # findings of the daily data checks, by date
datasets = "datasets"           # versioned training datasets: <id>/train|validation|test.parquet + manifest.json

[backends]
etl = "duckdb"                  # duckdb | spark
online_store = "sqlite"         # sqlite | redis
redis_url = "redis://127.0.0.1:6379/0"
spark_master = "local[2]"       # with etl = "spark": local[N], spark://host:7077, yarn, ...

[etl]                           # daily aggregations of the lake: item, creator, user, user x topic/creator
windows = [1, 7, 28]            # trailing windows in days; counts and rates are kept for each
half_life_days = 7.0            # decay of user x topic and user x creator affinities
prior_strength = 100.0          # exposures of the global rate blended into every item and creator rate
pair_prior_strength = 5.0       # impressions of the user's own rate blended into every affinity
memory_limit = "3GB"            # DuckDB engine: past this, joins and aggregations spill to <paths.etl>/.spill

[features]                      # what the models read; `homefeed features list` shows every feature
set = "default"                 # default | all | a name under [features.sets]
lag_minutes = 60                # an ETL snapshot valid from midnight is readable this much later
ttl_hours = 36                  # older values count as missing, offline and in the online store
missing_flags = true            # add an <entity>_missing column per source (cold start, late ETL)
skew_tolerance = 0.0001         # train/serve skew: relative difference still counted as equal
skew_mismatch_share = 0.01      # a feature differing on more rows than this is flagged
skew_psi = 0.1                  # ... or whose served distribution is this far (PSI) from the offline one
materialize_min_share = 0.5     # `features materialize` refuses a snapshot with fewer keys than this share
                                # of those the online store holds, or none (an ETL run past the data); --force

[features.sets]                 # your own sets: name = [feature names]
# small = ["item_save_rate_7d", "user_topic_affinity", "context_item_age_hours"]

[sim]                           # the simulated world, deterministic for a seed
seed = 7
users = 20000
creators = 2000
topics = 24
items_per_day = 3000
item_lifetime_days = 30         # items older than this leave the catalogue
start_date = 2026-03-02
new_user_share = 0.15           # share of users who sign up during the run
interest_concentration = 0.15   # Dirichlet alpha of user interests; small = sparse
unsafe_share = 0.03             # share of items that are spam or racy
content_noise = 0.15            # noise of content features around the hidden truth

[sim.countries]                 # markets and their share of users
US = 0.35
BR = 0.2
IN = 0.15
DE = 0.1
JP = 0.1
MX = 0.1

[sim.position_bias]             # examination probability by slot
eta = 0.7                       # (1 / position) ** eta, unless a curve is given
# curve = [1.0, 0.8, 0.65, 0.55]  # explicit per-slot values; the last one holds for deeper slots

[sim.sessions]
depth_mean = 18.0               # rendered slots per session
depth_max = 40
weekly_seasonality = 0.25       # swing of the visit logit over the week (weekends high)
surface = "home"

[sim.behaviour]                 # engagement model weights, logit scale
closeup_base = -1.6
affinity = 1.0
quality = 2.0
clickbait_closeup = 1.2
click_base = -0.8
clickbait_click = 2.0
save_base = -1.2
clickbait_save = -2.5
hide_base = -4.8
clickbait_hide = 2.0
unsafe_hide = 2.5
report_given_hide = -2.0
unsafe_report = 2.5
freshness = 0.8
freshness_days = 2.0
fatigue = 0.6
value_save = 1.0
value_click = 0.25
regret_clickbait_click = 0.9
cost_hide = 1.0
cost_report = 2.0
cost_unsafe_seen = 0.3
satisfaction_memory = 0.6
return_sensitivity = 1.5

# Fault injection, to prove checks and monitors catch what breaks in real logs.
# [[sim.faults]]
# kind = "coverage_drop"        # a column goes null for one market
# table = "impressions"
# column = "country"
# country = "BR"
# from_day = 10
# share = 1.0
# [[sim.faults]]
# kind = "logging_change"       # an action renamed (rename_to = "...") or dropped
# action = "closeup"
# from_day = 5
# [[sim.faults]]
# kind = "volume_drop"          # rows lost in logging
# table = "impressions"
# share = 0.5
# from_day = 8
# [[sim.faults]]
# kind = "delayed_arrival"      # a day's events land late
# day = 6
# delay_days = 2
# [[sim.faults]]
# kind = "market_shift"         # a market that behaves differently
# country = "JP"
# hide_shift = 1.0

[checks]                        # daily data checks: homefeed data check --date D
baseline_days = 14              # trailing days a day is compared with
min_baseline_days = 7           # a shorter baseline (young lake, gap) runs with a warning; at most baseline_days

[checks.thresholds]             # warning and error levels; each is raised by the sampling noise of the sizes
volume_change_warning = 0.2     # relative change of rows vs the baseline's daily mean, overall and per market
volume_change_error = 0.4
null_rate_increase_warning = 0.02  # absolute rise of a column's null rate, overall and per segment
null_rate_increase_error = 0.1
distinct_change_warning = 0.2   # relative change of distinct users, items, requests
distinct_change_error = 0.4
psi_warning = 0.1               # population stability index of a column's distribution
psi_error = 0.25
js_warning = 0.1                # Jensen-Shannon distance (base 2)
js_error = 0.2
min_segment_rows = 200          # smaller segments (in the day or the baseline) are not judged
noise_z = 3.0                   # standard deviations of sampling noise added to every threshold
bins = 10                       # baseline-quantile bins of a numeric column
max_categories = 30             # categories kept per column; the rest pooled as "(other)"
vanished_min_expected = 20.0    # a missing category is an error once this many rows of it were expected
new_category_share = 0.01       # a category new to the day is a warning from this share of rows
numeric_materiality = 0.01      # numeric shifts moving quantiles less than this share are info only

[dataset]                       # defaults of `homefeed dataset build`; a dataset file (--spec) overrides any key
# feature_set = "default"       # default: [features] set
labels = ["engaged", "negative"]  # from: engaged, saved, clicked, negative (each with its attribution window)
seed = 0                        # every sampling choice is a hash of (request_id, position, seed)

[dataset.split]                 # by the impressions' day: test = the last days, validation the days before
validation_days = 1
test_days = 1
# validation_start = 2026-03-20   # explicit first days instead of the counts
# test_start = 2026-03-22

[dataset.sampling]
negative_rate = 1.0             # share kept of rows with no positive label; kept ones weigh 1 / rate
max_per_user_per_day = 0        # at most this many impressions per user and day (0 = no cap; not re-weighted)
exploration_only = false        # keep only impressions placed by a randomized choice (0 < propensity < 1)
ips = false                     # weight by 1 / propensity (every kept row needs one) ...
ips_max_weight = 100.0          # ... clipped at this

[dataset.sampling.segment_weights]  # "column=value" = weight, column in country, surface, model_version, topic
# "country=BR" = 2.0

[serve]                         # the ranking service (`homefeed serve`) and the pipeline the simulator runs
model = "production"            # registry alias (or version) served; moving the alias hot-reloads the model
host = "127.0.0.1"
port = 8000
workers = 1                     # uvicorn worker processes behind the one port (stateless: they share store and lake)
max_slate_size = 100            # a request asking for more is refused (422, naming slate_size)
max_body_bytes = 262144         # a larger request body is refused (413)
max_events = 1000               # engagements per POST /v1/events
admin_token_env = "HOMEFEED_ADMIN_TOKEN"  # variable holding the token of POST /v1/admin/reload; unset: disabled
reload_seconds = 2.0            # how often a worker checks the model alias, the item catalogue and its caches
log_flush_seconds = 1.0         # impressions and engagements reach the lake this often (what a crash can lose)
log_queue_rows = 200000         # rows waiting to be logged; past this, logging is shed (counted), never requests
served_features_sample = 0.02   # share of requests whose feature vectors are logged (for `features skew`)
# entities held in memory, reloaded when a materialization changes them; the others are read per request
# (at millions of users keep the user-side ones in Redis: cached_entities = ["item", "creator"])
cached_entities = ["item", "creator", "user", "user_topic", "user_creator"]
store_timeout_ms = 50.0         # a slower online-store call fails, and the request degrades (flagged)
store_retry_seconds = 1.0       # after a store failure, requests skip the store this long, then try again
popularity = "item_save_rate_7d"  # item feature the popular source and the fallback ranking sort by
seen_keep = 1000                # per user: recent impressions remembered for the seen filter
hidden_keep = 10000             # per user: hidden or reported items remembered (never shown again)
creators_keep = 50              # per user: creators engaged with most recently (the creators source)

[serve.surfaces.home]           # the exploitation surface
enabled = true                  # false: every request gets an empty slate, flagged
filters = ["seen", "hidden", "unsafe"]  # from: seen, hidden, unsafe (the safety label: filtered, never ranked)
max_item_age_days = 30.0        # older items are never candidates
top_topics = 4                  # the affinity source: items of the user's strongest topics
seen_hours = 72.0               # the seen filter: items shown to the user within this long
explore_pool_hours = 48.0       # the exploration pool: items younger than this
explore_rate = 0.05             # chance that a slot from explore_from on is an exploration slot
explore_from = 3                # first slot exploration may take
freshness_boost = 0.02          # added to a new item's score, fading with its age ...
freshness_half_life_hours = 12.0  # ... by half every this many hours

[serve.surfaces.home.sources]   # candidates each source may add, in priority order; 0 = off
affinity = 200
creators = 60
popular = 150
fresh = 60
explore = 30

[serve.surfaces.home.caps]      # in any run of `window` consecutive slots, at most ... (0 = no cap)
window = 6
per_creator = 1
per_topic = 2

[serve.surfaces.home.budgets_ms]  # a stage slower than this fails open or closed, as it declares
user = 25.0
features = 25.0
score = 80.0

[serve.surfaces.explore]        # the exploration surface: fresh items and exploration slots
enabled = true
filters = ["seen", "hidden", "unsafe"]
max_item_age_days = 30.0
top_topics = 4
seen_hours = 72.0
explore_pool_hours = 48.0
explore_rate = 0.3
explore_from = 1
freshness_boost = 0.05
freshness_half_life_hours = 12.0

[serve.surfaces.explore.sources]
fresh = 150
explore = 150
affinity = 100
popular = 50

[serve.surfaces.explore.caps]
window = 8
per_creator = 1
per_topic = 2

[serve.surfaces.explore.budgets_ms]
user = 25.0
features = 25.0
score = 80.0
"""


def init(directory: str | Path, overwrite: bool = False) -> Path:
    """Write a commented default ``homefeed.toml`` into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file, not a directory")
    target = directory / CONFIG_FILE
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: already exists (pass --force to overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, DEFAULT_TOML)
    return target
