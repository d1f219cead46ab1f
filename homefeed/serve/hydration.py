"""The pipeline's query and candidate hydrators: a request's user and its candidates, as the model reads them.

Query hydration reads the user's vector, user x topic vectors (for every topic: the affinity source needs them)
and the user's lists (seen, hidden, creators) in one visit to the store.  Candidate hydration builds each
candidate's vector by the point-in-time join's rules (`homefeed.features.vectors`): built-in entities from the
in-process caches or the store, declared snapshots (with their categories' vocabularies, reloaded when the
store's copy changes) and the features of the impression computed from the request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from homefeed.errors import HomefeedError
from homefeed.features.definitions import FeatureSet
from homefeed.features.materialize import VOCAB
from homefeed.features.store import Lookup, PairKeys
from homefeed.features.vectors import (
    AtImpression,
    Hydrated,
    assemble,
    coded_sources,
    hydrated,
    reads_impression,
    vocabulary,
)
from homefeed.features.vectors import entities as entities_of
from homefeed.feed import RequestBatch
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.stages import Candidates
from homefeed.serve.state import OnlineFeatures, UserSignals


@dataclass
class UserData:
    """What query hydration found for a batch's users (None: that read failed)."""

    user: Lookup | None  # per request
    topics: Lookup | None  # per (request, topic), request-major
    lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None


#: Entities keyed by a catalogue column, looked up for every catalogue row ahead of requests (`Hydrator.refresh`).
ALIGNED = {"item": "item_id", "creator": "creator_id"}  # entity -> its key's catalogue column


class Hydrator:
    """Reads for one pipeline: the catalogue, the feature lookups (caches or store) and the users' lists."""

    def __init__(self, catalogue: ItemCatalogue, features: OnlineFeatures, signals: UserSignals):
        self.catalogue = catalogue
        self.features = features
        self.signals = signals
        self._vocabularies: dict[str, tuple[object, dict[str, np.ndarray]]] = {}  # entity -> (store token, vocab)
        self._aligned: dict[str, tuple[tuple, Lookup]] = {}  # item, creator -> (what it was built from, lookup)

    def refresh(self) -> None:
        """Look the cached item and creator vectors up for every catalogue row, once per change of either: a request
        then takes its candidates' rows instead of searching the caches (and reads fewer cold cache lines)."""
        cat = self.catalogue
        for entity, column in ALIGNED.items():
            cache = self.features.caches.get(entity)
            if cache is None or not len(cache):
                self._aligned.pop(entity, None)
                continue
            built = (id(cache), cache.loads, cat.generation)
            held = self._aligned.get(entity)
            if held is None or held[0] != built:
                self._aligned[entity] = (built, cache.lookup(getattr(cat, column)))

    def _by_row(self, entity: str, rows: np.ndarray) -> Lookup | None:
        """``entity``'s vectors of catalogue ``rows`` as `refresh` lined them up; None when they are out of date."""
        held = self._aligned.get(entity)
        cache = self.features.caches.get(entity)
        if held is None or cache is None or held[0] != (id(cache), cache.loads, self.catalogue.generation):
            return None
        return take_rows(held[1], rows)

    def user(self, requests: RequestBatch, fs: FeatureSet | None) -> UserData:
        """The user's vector and user x topic vectors (for every topic), and the user's lists: one store visit."""
        users = np.asarray(requests.user_id, np.int64)
        topics = self.catalogue.topics
        entities = set(entities_of(fs)) if fs is not None else set()
        wanted = []
        if "user" in entities:
            wanted.append(("user", users))
        if "user_topic" in entities and topics:
            pairs = PairKeys(np.repeat(users, len(topics)), np.tile(np.array(topics, dtype=str), len(users)))
            wanted.append(("user_topic", pairs))
        got = dict(zip([w[0] for w in wanted], self.features.read(wanted), strict=True)) if wanted else {}
        return UserData(got.get("user"), got.get("user_topic"), self.signals.read(users))

    def candidates(self, requests: RequestBatch, fs: FeatureSet, user: UserData, cands: Candidates) -> Hydrated:
        """The candidates' feature vectors: numbers as one matrix (categories NaN there), categories as strings."""
        ri, rows = cands.request_index, cands.row
        cat = self.catalogue
        users = np.asarray(requests.user_id, np.int64)[ri]
        lookups: dict[str, Lookup | None] = {}
        entities = entities_of(fs)
        wanted = []
        for entity, column in ALIGNED.items():
            if entity in entities:
                lookups[entity] = self._by_row(entity, rows)
                if lookups[entity] is None:
                    wanted.append((entity, getattr(cat, column)[rows]))
        pairs = None
        if "user_creator" in entities:
            creators = cat.creator_id[rows]
            if self.features.holds("user_creator"):  # in memory: a lookup per candidate costs no more
                wanted.append(("user_creator", PairKeys(users, creators)))
            else:  # from the store: each distinct pair once
                key = ri * (int(creators.max(initial=0)) + 1) + creators
                _, first, pairs = np.unique(key, return_index=True, return_inverse=True)
                wanted.append(("user_creator", PairKeys(users[first], creators[first])))
        lookups.update(zip([w[0] for w in wanted], self.features.read(wanted), strict=True))
        if pairs is not None:
            lookups["user_creator"] = take_rows(lookups["user_creator"], pairs)
        if "user" in entities:
            lookups["user"] = take_rows(user.user, ri)
        if "user_topic" in entities:
            n_topics = len(cat.topics)
            topic = cat.topic[rows].astype(np.int64)
            lookups["user_topic"] = take_rows(user.topics, np.where(topic >= 0, ri * n_topics + topic, -1))
        lookups.update(self._declared(requests, entities, cands))

        def at_impression() -> AtImpression:
            columns = {
                "surface": pa.repeat(pa.scalar(requests.surface, pa.string()), len(ri)),
                "country": requests.country.take(pa.array(ri)),
            }
            return AtImpression(ri, cat.item_id[rows], requests.context_features, columns)

        known = at_impression() if reads_impression(fs) else None  # built when a declared feature reads it
        matrix = assemble(fs, lookups, np.asarray(requests.ts, np.int64)[ri], cat.created_us[rows], known)

        def impression() -> dict[str, pa.Array]:
            topics = np.array([*cat.topics, None], dtype=object)  # code -1: no topic
            columns = (known or at_impression()).columns
            return {
                "user_id": pa.array(users),
                "item_id": pa.array(cat.item_id[rows]),
                "country": columns["country"],
                "topic": pa.array(topics[cat.topic[rows]], pa.string()),
                "surface": columns["surface"],
            }

        return hydrated(fs, matrix, known, self.vocabulary(fs), impression)

    def _declared(self, requests: RequestBatch, entities: list[str], cands: Candidates) -> dict[str, Lookup | None]:
        """The declared snapshots' vectors for each candidate: by user (read once per request), item, or pair."""
        ri, items = cands.request_index, self.catalogue.item_id[cands.row]
        users = np.asarray(requests.user_id, np.int64)
        wanted = []
        if "user_declared" in entities:
            wanted.append(("user_declared", users))
        if "item_declared" in entities:
            wanted.append(("item_declared", items))
        if "user_item_declared" in entities:
            wanted.append(("user_item_declared", PairKeys(users[ri], items)))
        if not wanted:
            return {}
        got = dict(zip([w[0] for w in wanted], self.features.read(wanted), strict=True))
        if "user_declared" in got:
            got["user_declared"] = take_rows(got["user_declared"], ri)
        return got

    def vocabulary(self, fs: FeatureSet) -> dict[str, np.ndarray]:
        """The categories of ``fs``'s declared snapshots, reloaded when the store's copy changed."""
        out: dict[str, np.ndarray] = {}
        for entity in coded_sources(fs):
            name = entity + VOCAB
            meta = self.features.guard.call(lambda s, name=name: s.meta(name))
            if meta is None:
                raise HomefeedError(f"the online store holds no categories of {entity}: materialize the feature set")
            held = self._vocabularies.get(name)
            if held is None or held[0] != meta.token:
                keys, lookup = self.features.guard.call(lambda s, name=name: s.read_all(name))
                held = (meta.token, vocabulary(keys, lookup))
                self._vocabularies[name] = held
            out.update(held[1])
        return out


def take_rows(lookup: Lookup | None, index: np.ndarray) -> Lookup | None:
    """Rows ``index`` of a lookup (-1: a row with nothing found)."""
    if lookup is None:
        return None
    safe = np.maximum(index, 0)
    found = lookup.found[safe] & (index >= 0) if len(lookup.found) else np.zeros(len(index), bool)
    values = lookup.values[safe] if len(lookup.found) else np.full((len(index), len(lookup.columns)), np.nan)
    return Lookup(values, found, lookup.columns, lookup.version)


def topic_affinity(topics: Lookup | None, n_requests: int, n_topics: int) -> np.ndarray | None:
    if topics is None or "user_topic_affinity" not in topics.columns or n_topics == 0:
        return None
    values = np.where(topics.found, topics.column("user_topic_affinity"), np.nan)
    return values.reshape(n_requests, n_topics)
