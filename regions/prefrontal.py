"""Prefrontal cortex: working memory updated by workspace broadcasts; the context for action.

Each broadcast is written into a leaky, gated recurrent state (regions.working_memory); after a
percept the current context (percept + history) goes out on `NS.region.<name>.out` for the basal
ganglia to act on.

Episodes: each episode id has a working memory of its own, empty at the episode's first step,
where new content joins what is held rather than displacing it (`retain`), so a cue seen at the
start of an episode is held across its steps, and interleaved episodes never mix their histories.
Stimuli without an episode share one working memory, as before episodes existed. At most
`max_episodes` are kept, the least recently used forgotten first; a broadcast about a stimulus (a
recalled memory) goes to the working memory of that stimulus's episode. With
`working_memory: false` the history half of the context stays empty: the percept alone.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import Broadcast, RegionOutput
from regions.modulated import Modulated
from regions.working_memory import WorkingMemory

__all__ = ["Prefrontal"]

_REMEMBERED_STIMULI = 4096


class PrefrontalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    leak: Annotated[float, Field(gt=0, le=1)] = 0.9
    #: Off, the context carries the percept alone (an ablation: no history, no held cue).
    working_memory: bool = True
    #: Episodes whose working memory is kept at once.
    max_episodes: Annotated[int, Field(ge=1, le=100_000)] = 256


class Prefrontal(Modulated):
    kind = "prefrontal"
    Options = PrefrontalOptions
    options: PrefrontalOptions

    async def on_start(self) -> None:
        self.init_modulation()
        self.wm = WorkingMemory(self.options.dim, leak=self.options.leak)
        self.episodes: OrderedDict[str, WorkingMemory] = OrderedDict()
        self.episode_of: OrderedDict[str, str] = OrderedDict()  # stimulus id -> its episode
        self.episodes_started = 0
        self.out_subject = self.bus.subjects.region_out(self.name)

    def _memory(self, episode: str | None) -> WorkingMemory:
        if episode is None:
            return self.wm
        wm = self.episodes.pop(episode, None)
        if wm is None:  # an episode's first step: a fresh, empty working memory that retains
            wm = self._episode_memory()
            self.episodes_started += 1
        self.episodes[episode] = wm
        while len(self.episodes) > self.options.max_episodes:
            self.episodes.popitem(last=False)
        return wm

    def _episode_memory(self) -> WorkingMemory:
        return WorkingMemory(self.options.dim, leak=self.options.leak, retain=True)

    @on("gw.broadcast")
    async def broadcast(self, msg: Broadcast, meta: Meta) -> None:
        if msg.content.size != self.options.dim:
            return
        sid = msg.stimulus_id
        episode = msg.detail.get("episode")
        if not isinstance(episode, str) or not episode:
            episode = self.episode_of.get(sid) if sid else None
        elif sid:
            self.episode_of[sid] = episode
            while len(self.episode_of) > _REMEMBERED_STIMULI:
                self.episode_of.popitem(last=False)
        wm = self._memory(episode)
        is_percept = msg.kind == "percept"
        gate = wm.update(msg.content, min(msg.salience, 1.0), is_percept=is_percept)
        if is_percept:
            context = wm.context().numpy()
            if not self.options.working_memory:
                context[self.options.dim:] = 0.0
                context *= 2.0 ** 0.5  # the percept half alone, at unit length
            await self.publish(self.out_subject, RegionOutput(
                region=self.name, kind="context", stimulus_id=sid, vector=context,
                data={"gate": round(gate, 4), "source": msg.source, "cycle": msg.cycle,
                      "text": msg.detail.get("text"), "episode": episode}), stimulus_id=sid)

    def snapshot(self) -> dict[str, Any]:
        return {"wm": self.wm.snapshot(),
                "episodes": [[episode, wm.snapshot()] for episode, wm in self.episodes.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.wm.restore(state["wm"])
        for episode, saved in state.get("episodes", []):
            wm = self._episode_memory()
            wm.restore(saved)
            self.episodes[episode] = wm

    def extra_stats(self) -> dict[str, Any]:
        return {"episodes_started": self.episodes_started, "episodes_held": len(self.episodes)}
