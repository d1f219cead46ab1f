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
compiled = "compiled"           # serving's compiled trees, by model text and CPU (a cache: safe to delete)

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

# [[features.declared]]         # a feature from your logs' own columns (README: Declared features)
# name = "context_affinity_nonzero"       # starts with its entity: context_
# source = "impressions.served_features"  # impressions.position | score | propensity | served_features
# transformation = "count_nonzero"        # raw (with key = "<map key>" for the map) | count_nonzero | sum | max
# default = 0.0

[sim]                           # the simulated world, deterministic for a seed; docs/world.md explains every knob
seed = 7
users = 20000
creators = 2000
topics = 24
items_per_day = 3000            # at the start; creators then post more or less
item_lifetime_days = 30         # items older than this leave the catalogue
start_date = 2026-03-02
new_user_share = 0.15           # share of users who sign up during the run
unsafe_share = 0.03             # share of items that are spam or racy
content_noise = 0.15            # noise of content features around the hidden truth

[sim.countries]                 # markets and their share of users
US = 0.35
BR = 0.2
IN = 0.15
DE = 0.1
JP = 0.1
MX = 0.1

[sim.position_bias]             # how users look at the slots they scroll past
model = "position_based"        # position_based | cascade
eta = 0.7                       # position_based: (1 / position) ** eta, unless a curve is given
# curve = [1.0, 0.8, 0.65, 0.55]  # explicit per-slot values; the last one holds for deeper slots
continue_prob = 0.93            # cascade: P(examine the next slot) after one not opened ...
continue_after_open = 0.8       # ... and after one opened

[sim.sessions]                  # a visit: the list the policy ranks and the time the user has
activity_alpha = 0.5            # a user's daily visit probability ~ Beta(alpha, beta), lasting
activity_beta = 0.8
slate_size = 60                 # slots a policy ranks per request; the user reads a prefix
batches_per_day = 2             # the day's requests are ranked in this many batches
attention_mean = 80.0           # time a visit has, in slots scrolled
attention_user_spread = 0.6     # lognormal std of a user's lasting attention ...
attention_visit_spread = 0.4    # ... and of one visit's around it
time_closeup = 1.0              # extra time an opened item takes, in slots
time_click = 2.0                # extra time a click-through takes
weekly_seasonality = 0.25       # swing of the visit logit over the week (weekends high)
surface = "home"

[sim.patience]                  # unsatisfying slots spend it, satisfying ones replenish it; at 0 the user leaves
mean = 25.0
user_spread = 0.6               # lognormal std of a user's lasting patience
visit_spread = 0.3
new_user_factor = 0.6           # new users arrive with this share of it
cost_slot = 1.0
gain_closeup = 1.0
gain_click = 0.5
gain_save = 2.0
cost_hide = 3.0
cost_report = 5.0
cost_unsafe_seen = 1.0

[sim.surfaces]                  # a second surface some visits reach first, sharing the visit's time and patience
explore = "explore"
explore_share = 0.15            # of visits
explore_leave_below = 0.5       # the user goes home when patience falls below this share of what they came with

[sim.interests]                 # tastes
concentration = 0.15            # Dirichlet alpha of the topic mix; small = sparse
drift = 0.03                    # daily pull of the topic mix toward the topics engaged with
latent_styles = 16              # hidden item styles, and each user's lasting taste for them
latent_weight = 0.6
market_taste_spread = 0.6       # how much markets differ in topic tastes

[sim.boredom]                   # variety has value
session_topic = 0.15            # logit per earlier slot of the same topic in the visit
session_creator = 0.5           # ... of the same creator
daily_topic = 2.5               # logit per unit of the topic's recent share (satiation)
daily_creator = 0.3             # logit per impression of the creator among the user's recent ones
recent_impressions = 16
half_life_days = 5.0            # of satiation

[sim.churn]                     # users who leave for good
base = 0.002                    # daily hazard of an established, satisfied user
bad_visit = 0.4                 # hazard logit per recent unsatisfying visit
bad_memory = 0.8                # daily decay of that count
new_user = 2.0                  # hazard logit added in a user's first new_user_days
new_user_days = 14

[sim.creator_response]          # creators post more when engaged, quit when starved of exposure
response = 0.5
memory_days = 7.0
starve_share = 0.05             # quits below this share of the average exposure per item ...
starve_min_items = 3.0          # ... once it has posted this many recent items

[sim.delays]
next_day_save_share = 0.1       # saves made the next day (within 24 h of the impression)
item_visible_minutes = 60.0     # an item reaches the policies this long after creation

[sim.markets]
racy_spread = 1.0               # std of a market's racy tolerance, drawn per seed ...

[sim.markets.racy_tolerance]    # ... unless given here per market (hide logit removed for racy items)
# BR = 0.5

[sim.behaviour]                 # engagement model weights, logit scale
closeup_base = -0.6
affinity = 1.0
quality = 2.5
clickbait_closeup = 1.5
click_base = 0.3
clickbait_click = 2.5
save_base = 0.0
clickbait_save = -2.5
hide_base = -4.8
clickbait_hide = 2.0
unsafe_hide = 2.5
report_given_hide = -2.0
unsafe_report = 2.5
freshness = 0.8
freshness_days = 2.0
fatigue = 0.6                   # per earlier impression of the same item
saved_again = 2.0               # an item the user already saved
user_closeup_spread = 1.0       # std of a user's lasting closeup propensity
user_save_spread = 1.4          # ... and save propensity
value_save = 1.0                # what a visit is worth to its user ...
value_click = 0.25
regret_clickbait_click = 0.9
cost_hide = 1.0
cost_report = 2.0
cost_unsafe_seen = 0.3
value_scale = 2.0               # ... as tanh(value / value_scale)
satisfaction_memory = 0.6
return_sensitivity = 0.4        # visit logit per unit of satisfaction

[sim.card]                      # the world card: homefeed sim card
seeds = 5
users = 3000                    # the world scaled to this many users
days = 28
oracle_candidates = 200
cuped_variance_reduction = [0.3, 0.6]
oracle_over_random_user_days = [0.05, 0.2]
oracle_over_best_baseline_user_days = [0.0, 0.1]
oracle_over_random_saves = [2.0, 100.0]

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
compiled_trees = true           # compile a GBDT's trees to native code after each load (LightGBM scores meanwhile)
# entities held in memory, reloaded when a materialization changes them; the others are read per request
# (at millions of users keep the user-side ones in Redis: cached_entities = ["item", "creator"])
cached_entities = ["item", "creator", "user", "user_topic", "user_creator"]
store_timeout_ms = 50.0         # a slower online-store call fails, and the request degrades (flagged)
store_retry_seconds = 1.0       # after a store failure, requests skip the store this long, then try again
switch_interval_ms = 0.5        # a background thread (logging, refresh) yields the interpreter to requests this soon
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
