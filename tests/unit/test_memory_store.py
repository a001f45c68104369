"""Unit tests for the hippocampal vector store (memory.store) and episodes (memory.episodes)."""

from __future__ import annotations

import gc
import struct
import sys

import numpy as np
import orjson
import pytest

from memory import scan
from memory.episodes import Episode
from memory.store import MAX_K, StoreFull, StoreState, VectorStore

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _episodes(keys: np.ndarray, **kw: object) -> list[Episode]:
    return [Episode(episode_id=-1, key=k, **kw) for k in keys]  # type: ignore[arg-type]


def _filled(n: int, dtype: str = "float32", seed: int = 0, dim: int = DIM) -> tuple[VectorStore, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n, dim)).astype(np.float32)
    store = VectorStore(dim, n, dtype=dtype)  # type: ignore[arg-type]
    store.add(_episodes(keys))
    return store, keys


def test_episode_bytes_round_trip() -> None:
    ep = Episode(
        episode_id=7,
        key=np.arange(5, dtype=np.float32),
        stimulus_id="stim-ü",
        action="left",
        reward=-0.25,
        hormones={"dopamine": 0.7, "serotonin": 0.1},
        time=1712345678.123456,
        salience=0.5,
    )
    assert Episode.from_bytes(ep.to_bytes()) == ep
    bare = Episode(episode_id=1, key=np.ones(3, dtype=np.float32))
    assert Episode.from_bytes(bare.to_bytes()) == bare
    with pytest.raises(ValueError, match="has 19 bytes, expected 20"):
        Episode.from_bytes(ep.to_bytes()[:-1])
    with pytest.raises(ValueError, match="reward must be finite"):
        Episode(episode_id=1, key=np.ones(3), reward=float("nan")).to_bytes()


def test_episode_bytes_carry_the_world_episode_and_old_records_still_decode() -> None:
    ep = Episode(episode_id=3, key=np.arange(4, dtype=np.float32), stimulus_id="s1", action="up", reward=0.5,
                 time=10.0, salience=0.25, world_episode="FrozenLake-v1/ep-0007")
    back = Episode.from_bytes(ep.to_bytes())
    assert back == ep and back.world_episode == "FrozenLake-v1/ep-0007"
    assert back != Episode.from_bytes(Episode(3, ep.key, stimulus_id="s1", action="up", reward=0.5, time=10.0,
                                              salience=0.25).to_bytes())
    # Without a world episode the header has no "e" at all: the bytes of the earlier format.
    bare = Episode(episode_id=1, key=np.ones(3, dtype=np.float32), stimulus_id="x")
    assert b'"e"' not in bare.to_bytes() and Episode.from_bytes(bare.to_bytes()).world_episode is None
    # A record written before the field existed (its exact header layout) decodes, as None.
    head = orjson.dumps({"id": 9, "d": 2, "s": "old", "a": "left", "r": -1.0, "h": {"dopamine": 0.5},
                         "t": 1.5, "l": 2.0})
    old = struct.pack("<I", len(head)) + head + np.array([0.6, 0.8], dtype="<f4").tobytes()
    decoded = Episode.from_bytes(old)
    assert decoded == Episode(9, np.array([0.6, 0.8]), stimulus_id="old", action="left", reward=-1.0,
                              hormones={"dopamine": 0.5}, time=1.5, salience=2.0)
    assert decoded.world_episode is None
    bad = orjson.dumps({"id": 9, "d": 0, "s": None, "a": None, "r": None, "h": {}, "t": 0.0, "l": 0.0, "e": 7})
    with pytest.raises(ValueError, match="'e' must be a string or null"):
        Episode.from_bytes(struct.pack("<I", len(bad)) + bad)


def test_store_keeps_the_world_episode_per_slot() -> None:
    store = VectorStore(4, 6, dtype="float16")
    ids = store.add([
        Episode(-1, np.array([1.0, 0, 0, 0]), stimulus_id="s1", world_episode="ep-1"),
        Episode(-1, np.array([0, 1.0, 0, 0]), stimulus_id="s2"),
        Episode(-1, np.array([0, 0, 1.0, 0]), world_episode="e" * 128),  # the limit itself
    ])
    assert [store.get(int(i)).world_episode for i in ids] == ["ep-1", None, "e" * 128]
    _, found = store.search(np.array([1.0, 0.1, 0, 0]), 2)
    assert [None if ep is None else ep.world_episode for ep in store.get_many(found[0])] == ["ep-1", None]
    prepared = store.prepare([Episode(-1, np.ones(4), world_episode="ep-2")])
    assert prepared[0].world_episode == "ep-2"
    # A freed slot reused by a step without a world episode does not inherit the old one.
    store.remove([int(ids[0])])
    (reused,) = store.add([Episode(-1, np.array([0, 0, 0, 1.0]))]).tolist()
    assert store.get(reused).world_episode is None and len(store) == 3
    # Past the byte limit: a clear error from prepare and add, and nothing is added.
    too_long = [Episode(-1, np.ones(4), world_episode="ep-2"), Episode(-1, np.ones(4), world_episode="x" * 129)]
    next_id = store.next_id
    for call in (store.prepare, store.add):
        with pytest.raises(ValueError, match="episode 1: world_episode is 129 bytes, limit 128"):
            call(too_long)
    assert len(store) == 3 and store.next_id == next_id
    with pytest.raises(ValueError, match="world_episode must be a string or None"):
        store.add([Episode(-1, np.ones(4), world_episode=5)])  # type: ignore[arg-type]


def test_state_round_trips_world_episodes_and_loads_states_written_without_them() -> None:
    store = VectorStore(DIM, 16)
    rng = np.random.default_rng(4)
    store.add([Episode(-1, rng.standard_normal(DIM), world_episode=None if i % 3 == 0 else f"world-{i // 3}")
               for i in range(10)])
    store.remove([4])
    state = store.export_state()
    other = VectorStore(DIM, 32)
    other.load_state(state)
    assert [other.get(i) for i in store.ids().tolist()] == [store.get(i) for i in store.ids().tolist()]
    assert other.get(5).world_episode == "world-1" and other.get(6).world_episode is None
    # A state from before world episodes: the same minus their arrays; every step has none.
    old_arrays = {k: v for k, v in state.arrays.items() if not k.startswith("world_episode")}
    old = VectorStore(DIM, 16)
    old.load_state(StoreState(meta=state.meta, arrays=old_arrays))
    assert len(old) == 9 and all(old.get(i).world_episode is None for i in old.ids().tolist())
    assert old.get(5).key.tolist() == store.get(5).key.tolist()
    half = {k: v for k, v in state.arrays.items() if k != "world_episode_len"}
    with pytest.raises(ValueError, match="world_episode_len"):
        VectorStore(DIM, 16).load_state(StoreState(meta=state.meta, arrays=half))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_search_matches_brute_force(dtype: str) -> None:
    store, keys = _filled(3000, dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((50, DIM)).astype(np.float32)
    k = 10
    scores, ids = store.search(queries, k)
    assert scores.shape == ids.shape == (50, k)

    # Against the stored (possibly float16-rounded) keys the search must be exact.
    stored = np.stack([store.get(i).key for i in range(3000)]).astype(np.float64)
    qn = _unit(queries).astype(np.float64)
    exact_stored = qn @ stored.T
    np.testing.assert_allclose(scores, np.take_along_axis(exact_stored, ids, axis=1), atol=1e-5)
    kth = np.sort(exact_stored, axis=1)[:, -k]
    assert (np.take_along_axis(exact_stored, ids, axis=1) >= kth[:, None] - 1e-5).all()

    # Against exact float32 search on the original keys: recall@10 = 1.0 up to ties, where a
    # tie is within the float16 rounding of a unit key (|dq| <= ~2^-11 per component).
    exact = qn @ _unit(keys).astype(np.float64).T
    truth = np.argsort(-exact, axis=1)[:, :k]
    tol = 1e-6 if dtype == "float32" else 2e-3
    kth32 = exact[np.arange(50), truth[:, -1]]
    for row in range(50):
        got = exact[row, ids[row]]
        assert (got >= kth32[row] - tol).all()  # nothing returned is worse than a near-tie
        missing = set(truth[row].tolist()) - set(ids[row].tolist())
        for m in missing:  # and only a near-tie of the worst returned one may be left out
            assert exact[row, m] <= got.min() + tol
    if dtype == "float32":
        assert (np.sort(ids, axis=1) == np.sort(truth, axis=1)).mean() > 0.99


def test_search_pads_when_fewer_than_k_and_rejects_bad_input() -> None:
    store, _ = _filled(3)
    scores, ids = store.search(np.ones(DIM, dtype=np.float32), 5)
    assert scores.shape == (1, 5)
    assert (ids[0, 3:] == -1).all() and np.isneginf(scores[0, 3:]).all()
    assert set(ids[0, :3].tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="k must be positive"):
        store.search(np.ones(DIM), 0)
    with pytest.raises(ValueError, match=f"maximum of {MAX_K}"):
        store.search(np.ones(DIM), MAX_K + 1)
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        store.search(np.ones(DIM + 1), 1)
    with pytest.raises(ValueError, match="query 1: query contains NaN"):
        store.search(np.stack([np.ones(DIM), np.full(DIM, np.nan)]), 1)
    with pytest.raises(ValueError, match="all zeros"):
        store.search(np.zeros(DIM), 1)
    empty = VectorStore(DIM, 4)
    s, i = empty.search(np.ones(DIM), 2)
    assert (i == -1).all()


def test_add_errors_leave_store_unchanged() -> None:
    store = VectorStore(DIM, 4)
    good = np.ones(DIM, dtype=np.float32)
    with pytest.raises(ValueError, match=r"episode 1: key has shape \(31,\), expected \(32,\)"):
        store.add([Episode(-1, good), Episode(-1, np.ones(DIM - 1))])
    with pytest.raises(ValueError, match="episode 0: key contains NaN or Inf"):
        store.add([Episode(-1, np.full(DIM, np.inf))])
    with pytest.raises(ValueError, match="all zeros"):
        store.add([Episode(-1, np.zeros(DIM))])
    with pytest.raises(ValueError, match="salience"):
        store.add([Episode(-1, good, salience=-1.0)])
    assert len(store) == 0 and store.next_id == 0
    store.add([Episode(5, good)])
    with pytest.raises(ValueError, match="duplicate"):
        store.add([Episode(5, good)])
    with pytest.raises(StoreFull, match="only 3 of 4 slots free"):
        store.add(_episodes(np.ones((4, DIM))))
    assert len(store) == 1 and store.next_id == 6
    with pytest.raises(KeyError, match="no episode with id 99"):
        store.get(99)
    with pytest.raises(ValueError, match="dim must be positive"):
        VectorStore(0, 4)


def test_get_returns_metadata_and_normalized_key() -> None:
    store = VectorStore(4, 8, dtype="float32")
    ids = store.add(
        [
            Episode(-1, np.array([3.0, 0, 4, 0]), stimulus_id="a\x00", action="go", reward=1.5, time=2.0),
            Episode(-1, np.array([0, 1.0, 0, 0]), hormones={"dopamine": 0.3}, salience=0.25),
        ]
    )
    a, b = store.get(int(ids[0])), store.get(int(ids[1]))
    np.testing.assert_allclose(a.key, [0.6, 0, 0.8, 0], atol=1e-7)
    assert (a.stimulus_id, a.action, a.reward, a.time, a.hormones) == ("a\x00", "go", 1.5, 2.0, {})
    assert (b.stimulus_id, b.action, b.reward, b.salience) == (None, None, None, 0.25)
    assert b.hormones == pytest.approx({"dopamine": 0.3})
    assert store.get_many([int(ids[1]), -1]) == [b, None]


def test_removed_never_returned_and_slots_reused() -> None:
    store, keys = _filled(200, seed=3)
    removed = store.remove(list(range(0, 200, 2)) + [10_000])
    assert len(removed) == 100 and len(store) == 100
    _, ids = store.search(keys, 10)  # each removed key queried exactly
    assert not np.isin(ids, removed).any()
    assert (ids[1::2, 0] == np.arange(1, 200, 2)).all()
    fresh = np.random.default_rng(33).standard_normal((50, DIM)).astype(np.float32)
    new_ids = store.add(_episodes(fresh))
    assert len(store) == 150
    assert new_ids.min() >= 200  # ids are never reused, slots are
    _, ids = store.search(fresh, 1)
    assert (ids[:, 0] == new_ids).all()
    assert 0 not in store and int(new_ids[0]) in store


def test_eviction_order_combines_age_and_salience() -> None:
    store = VectorStore(4, 10, half_life_s=10.0, reward_weight=1.0)
    rng = np.random.default_rng(0)
    spec = [  # (time, salience, reward)
        (100.0, 1.0, None),  # newest, salient: value ln(1) = 0
        (90.0, 1.0, None),  # one half-life older: ln(1) - ln2
        (100.0, 0.4, None),  # new but weak: ln(0.4) ~ -0.92
        (80.0, 1.0, None),  # two half-lives: -1.39
        (100.0, 0.0, 0.3),  # weak but rewarded: ln(0.3) ~ -1.20
        (50.0, 0.0, None),  # old and worthless
        (60.0, 0.0, None),  # worthless too, but younger than the one above
    ]
    ids = store.add([Episode(-1, rng.standard_normal(4), time=t, salience=s, reward=r) for t, s, r in spec])
    evicted = store.evict(4)
    assert evicted.tolist() == [ids[5], ids[6], ids[3], ids[4]]
    assert sorted(store.ids().tolist()) == sorted([ids[0], ids[1], ids[2]])
    assert store.prune(0.5).tolist() == [ids[2]]
    # Equal salience: the older one goes; `now` shifts every value equally, so order is unchanged.
    assert store.evict(1, now=1000.0).tolist() == [ids[1]]
    assert store.ids().tolist() == [ids[0]]
    assert store.evict(5).tolist() == [ids[0]] and len(store) == 0


def test_hopfield_completion_recovers_stored_key() -> None:
    rng = np.random.default_rng(4)
    dim = 64
    store = VectorStore(dim, 500, dtype="float16")
    keys = _unit(rng.standard_normal((500, dim)))
    store.add(_episodes(keys))
    target = 123
    noisy = keys[target] + 0.6 * _unit(rng.standard_normal(dim)) * 1.0
    noisy[: dim // 4] = 0.0  # and a quarter of the pattern missing
    before = float(_unit(noisy) @ keys[target])
    out = store.complete(noisy, beta=30.0, steps=2)
    assert out.shape == (dim,)
    after = float(out @ keys[target])
    assert before < 0.8 and after > 0.99
    batch = store.complete(np.stack([noisy, keys[7]]), beta=30.0)
    assert batch.shape == (2, dim) and float(batch[1] @ keys[7]) > 0.99
    with pytest.raises(ValueError, match="beta"):
        store.complete(noisy, beta=0.0)
    with pytest.raises(ValueError, match="empty store"):
        VectorStore(dim, 2).complete(noisy, beta=1.0)


def test_replay_sample_prefers_salient_and_rewarded() -> None:
    store = VectorStore(4, 100)
    rng = np.random.default_rng(5)
    eps = [Episode(-1, rng.standard_normal(4), salience=0.01) for _ in range(97)]
    eps += [Episode(-1, rng.standard_normal(4), salience=5.0)]
    eps += [Episode(-1, rng.standard_normal(4), reward=-5.0)]
    eps += [Episode(-1, rng.standard_normal(4), salience=5.0)]
    ids = store.add(eps)
    gen = np.random.default_rng(6)
    counts: dict[int, int] = {}
    for _ in range(200):
        for ep in store.replay_sample(3, gen):
            counts[ep.episode_id] = counts.get(ep.episode_id, 0) + 1
    strong = {int(ids[97]), int(ids[98]), int(ids[99])}
    assert sum(counts.get(i, 0) for i in strong) > 0.8 * 600
    assert len(store.replay_sample(1000, gen)) == 100
    assert len(store.replay_sample(1000, gen, replace=True)) == 1000


def test_export_load_state_round_trip() -> None:
    store, keys = _filled(100, dtype="float16", seed=7)
    store.remove([3, 5, 7])
    state = store.export_state()
    other = VectorStore(DIM, 200, dtype="float16")
    other.load_state(state)
    assert len(other) == 97 and other.next_id == store.next_id
    for i in store.ids().tolist():
        assert other.get(i) == store.get(i)
    # Identical slot layout: the next add lands in the same slot in both.
    a, b = store.add(_episodes(keys[:2])), other.add(_episodes(keys[:2]))
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match="dim 32, this store has dim 8"):
        VectorStore(8, 200).load_state(state)


def test_bytes_per_episode_float16_100k() -> None:
    """Memory per episode stays within 1.2x the raw float16 key bytes at 100k episodes."""
    n, dim = 100_000, 384
    rng = np.random.default_rng(8)
    keys = np.tile(rng.standard_normal((1000, dim), dtype=np.float32), (n // 1000, 1))  # content irrelevant
    actions = ["left", "right", "up", "down"]
    eps = [
        Episode(
            -1,
            keys[i],
            stimulus_id=f"stim-{i:08d}",
            action=actions[i % 4],
            reward=float(i % 3 - 1),
            hormones={"dopamine": 0.5, "serotonin": 0.4, "norepinephrine": 0.3, "acetylcholine": 0.2},
            time=float(i),
            salience=0.5,
        )
        for i in range(n)
    ]
    gc.collect()
    blocks_before = sys.getallocatedblocks()
    store = VectorStore(dim, n, dtype="float16")
    for b in range(0, n, 10_000):
        store.add(eps[b : b + 10_000])
    gc.collect()
    # Python objects the store keeps (pymalloc blocks); numpy/torch buffers are counted by
    # memory_bytes() from their exact nbytes.
    retained_objects = sys.getallocatedblocks() - blocks_before
    raw = dim * 2
    per_episode = store.memory_bytes() / n
    assert len(store) == n
    assert retained_objects < 1000, f"{retained_objects} Python objects retained: per-episode objects leak in"
    assert per_episode <= 1.2 * raw, f"{per_episode:.1f} bytes/episode > {1.2 * raw}"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("n_queries", [1, 7])
def test_search_across_pieces_and_segments_matches_brute_force(
    dtype: str, n_queries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny pieces and segments, so a 1,000-row store is converted in many pieces, scored in
    # several segments and merged; removed rows in the middle must never come back.
    monkeypatch.setattr(scan, "_PIECE_ELEMENTS", 37 * DIM)
    monkeypatch.setattr(scan, "_SCORE_ELEMENTS", 150)
    store, _ = _filled(1000, dtype=dtype, seed=5)
    removed = np.arange(100, 700, 3)
    store.remove(removed)
    queries = np.random.default_rng(6).standard_normal((n_queries, DIM)).astype(np.float32)
    scores, ids = store.search(queries, 25)

    live = store.ids()
    stored = np.stack([store.get(int(i)).key for i in live]).astype(np.float64)
    exact = _unit(queries).astype(np.float64) @ stored.T
    order = np.argsort(-exact, axis=1, kind="stable")[:, :25]
    np.testing.assert_allclose(scores, np.take_along_axis(exact, order, axis=1), atol=1e-5)
    assert not np.isin(ids, removed).any()
    assert np.isin(ids, live).all()
