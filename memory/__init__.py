"""memory: hippocampal shards — episodes, the vector store, durability, recall over the bus."""

from memory.durable import CorruptSnapshot, EpisodeLog, ShardPersistence, Snapshot
from memory.episodes import Episode
from memory.store import StoreFull, VectorStore

__all__ = ["CorruptSnapshot", "Episode", "EpisodeLog", "ShardPersistence", "Snapshot", "StoreFull", "VectorStore"]
