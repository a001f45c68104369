"""memory: hippocampal shards — episodes, the vector store, durability, recall over the bus."""

from memory.durable import ShardPersistence
from memory.episode_log import EpisodeLog
from memory.episodes import Episode
from memory.snapshot import CorruptSnapshot, Snapshot
from memory.store import StoreFull, VectorStore

__all__ = ["CorruptSnapshot", "Episode", "EpisodeLog", "ShardPersistence", "Snapshot", "StoreFull", "VectorStore"]
