"""Basal ganglia: actor-critic action selection with three-factor learning.

The context ``s`` (dimension ``D``, normally the prefrontal working-memory context) feeds

* a critic ``V(s) = w . s`` (the "striosome" value prediction), and
* an actor with one preference row per action, ``prefs = W s`` (the "matrisome").

An action is drawn from ``softmax(beta * prefs + bias)``: ``beta`` is the inverse temperature
(norepinephrine) and ``bias`` is additive evidence per action from episodic memory.

Learning is three-factor: each choice leaves an eligibility trace (factors 1 and 2: the
pre-synaptic context on the synapses of the chosen action's channel), and a later dopamine-like
temporal-difference error ``delta`` (factor 3) turns traces into weight changes::

    e_w    <- gamma * lambda * e_w + s / |s|^2
    e_W    <- gamma * lambda * e_W;   e_W[a] += s / |s|^2        (only the chosen action's row)
    w      += lr * critic_scale * rpe_gain * delta * e_w
    W      <- (1 - lr * actor_decay) * W + lr * rpe_gain * delta * e_W

Episodes (TD(lambda) actor-critic). Each episode has traces of its own (:class:`EpisodeTrace`), so
interleaved episodes never credit each other's choices. A reward that ends the episode
(``terminal``) is judged against the last choice's value, ``delta = r - V(s)``, and clears the
episode. A reward with more steps to come is held until the episode's next context ``s'``:
:meth:`bootstrap` then computes ``delta = r + gamma * V(s') - V(s)`` (``gamma`` the discount) and
learns before the next choice. A ``truncated`` episode (a time limit) ends without a terminal
value: the unseen next state is valued as the last one, ``delta = r + gamma * V(s) - V(s)``.

This is the classic "direct" actor of the basal-ganglia actor-critic models (Barto 1995) rather
than the policy-gradient actor (whose ``onehot - pi`` factor vanishes once the policy is nearly
deterministic, which makes reversal after a payoff swap very slow). The small ``actor_decay``
keeps preferences bounded, so how fast a reversal happens does not depend on how long the old
contingency was trained. It applies once per episode (at its ending reward), not per step, so
a world of many steps forgets at the pace of a world of one, and a rare success in a long
episode is not decayed away before the next. Dividing by ``|s|^2`` (normalised LMS) makes ``lr`` mean "fraction of the
error corrected" for any context scale or dimension. Traces decay by ``gamma * lambda`` at every
new choice, so a reward that arrives after several choices still credits the earlier ones; a
terminal reward clears them, as each trial of a bandit is its own episode (the episode ``None``,
which one-step trials use).

The action repertoire is declared at run time (``set_actions``): weights of actions that persist
are kept, new actions start at zero preference, removed actions are dropped.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

ContextLike = torch.Tensor | np.ndarray[Any, Any] | Sequence[float]

_EPS = 1e-8
_EXP_BLOCK = 1024


@dataclass(frozen=True)
class Choice:
    """One action selection.

    Attributes:
        action: The chosen action's name.
        probs: Probability of every action, in repertoire order.
        value: The critic's value ``V(s)`` of the context.
        index: Index of ``action`` in the repertoire.
    """

    action: str
    probs: dict[str, float]
    value: float
    index: int

    @property
    def confidence(self) -> float:
        """The largest action probability (what the motor gate thresholds)."""
        return max(self.probs.values())


def as_vector(x: ContextLike, dim: int) -> torch.Tensor:
    """Convert a context to a finite float32 CPU tensor of shape ``(dim,)``.

    Raises:
        ValueError: On a wrong dimension or a non-finite entry.
    """
    if isinstance(x, np.ndarray):
        # The common case (a decoded message's vector): a private float32 copy, checked in numpy,
        # where the checks cost a few microseconds instead of torch's per-operation overhead.
        a = np.array(x, dtype=np.float32, copy=True).reshape(-1)
        if a.size != dim:
            raise ValueError(f"context has dimension {a.size}, expected {dim}")
        if not bool(np.isfinite(a).all()):
            raise ValueError("context holds NaN or Inf")
        return torch.from_numpy(a)
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    if t.numel() != dim:
        raise ValueError(f"context has dimension {t.numel()}, expected {dim}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("context holds NaN or Inf")
    return t


@dataclass(slots=True)
class EpisodeTrace:
    """What one episode has pending: its eligibility traces, the context of its last choice, and
    the reward received since that choice that waits for the next context's value."""

    e_w: torch.Tensor
    e_W: torch.Tensor
    pending: torch.Tensor | None = None
    reward: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"trace_critic": self.e_w.tolist(), "trace_actor": self.e_W.tolist(),
                "pending": None if self.pending is None else self.pending.tolist(), "reward": self.reward}


class ActorCritic:
    """Actor-critic over a run-time action repertoire.

    Args:
        dim: Context dimension ``D``.
        actions: Initial repertoire (may be empty; declare it later with :meth:`set_actions`).
        trace_decay: ``lambda``, the eligibility-trace decay per choice.
        critic_scale: Critic learning rate relative to the actor's.
        actor_decay: Weight decay of the actor per update, relative to ``lr``.
        seed: Seed of the sampling generator (choices are reproducible for a given seed).
    """

    def __init__(
        self,
        dim: int,
        actions: Sequence[str] = (),
        *,
        trace_decay: float = 0.5,
        critic_scale: float = 1.0,
        actor_decay: float = 0.1,
        seed: int = 0,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if actor_decay < 0.0:
            raise ValueError(f"actor_decay must be >= 0, got {actor_decay}")
        if not 0.0 <= trace_decay <= 1.0:
            raise ValueError(f"trace_decay must be in [0, 1], got {trace_decay}")
        self.dim = dim
        self.trace_decay = trace_decay
        self.critic_scale = critic_scale
        self.actor_decay = actor_decay
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(seed)
        # Exp(1) draws for sampling, taken from the generator a block at a time (one torch call
        # per choice cost more than the rest of the choice); the unused ones are part of the state.
        self._exp_pool = np.empty(0, dtype=np.float32)
        self._actions: list[str] = []
        self._w = torch.zeros(dim)
        self._W = torch.zeros(0, dim)
        # Open episodes (None: the one of one-step trials), the most recently active last.
        self._episodes: dict[str | None, EpisodeTrace] = {}
        self.choices = 0
        self.updates = 0
        self.set_actions(actions)

    # -- repertoire ----------------------------------------------------------------------------

    @property
    def actions(self) -> list[str]:
        """The current repertoire, in order."""
        return list(self._actions)

    def set_actions(self, actions: Sequence[str]) -> None:
        """Declare the repertoire; persisting actions keep their weights and traces.

        Raises:
            ValueError: On duplicate or empty names.
        """
        names = [str(a) for a in actions]
        if any(not a for a in names):
            raise ValueError("action names must be non-empty")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate action names in {names}")
        old = [(i, j) for i, a in enumerate(names) if (j := self._index(a)) is not None]

        def kept(rows: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(names), self.dim)
            for i, j in old:
                out[i] = rows[j]
            return out

        self._W = kept(self._W)
        for trace in self._episodes.values():
            trace.e_W = kept(trace.e_W)
        self._actions = names

    def _index(self, action: str) -> int | None:
        try:
            return self._actions.index(action)
        except ValueError:
            return None

    # -- episodes ------------------------------------------------------------------------------

    @property
    def open_episodes(self) -> list[str | None]:
        """Episodes with traces, the least recently active first."""
        return list(self._episodes)

    def _trace(self, episode: str | None) -> EpisodeTrace:
        trace = self._episodes.pop(episode, None)
        if trace is None:
            trace = EpisodeTrace(torch.zeros(self.dim), torch.zeros(len(self._actions), self.dim))
        self._episodes[episode] = trace  # most recently active last
        return trace

    def end_episode(self, episode: str | None) -> bool:
        """Forget an episode's traces and pending choice (ended, timed out, or the motor held the
        action back); whether it was open."""
        return self._episodes.pop(episode, None) is not None

    # -- forward -------------------------------------------------------------------------------

    def value(self, context: ContextLike) -> float:
        """The critic's ``V(s)``."""
        return float(self._w @ as_vector(context, self.dim))

    def preferences(self, context: ContextLike) -> dict[str, float]:
        """The actor's raw preferences ``W s`` per action."""
        prefs = self._W @ as_vector(context, self.dim)
        return dict(zip(self._actions, prefs.tolist(), strict=True))

    def _logits(self, s: torch.Tensor, beta: float, bias: Mapping[str, float] | None) -> torch.Tensor:
        logits = beta * (self._W @ s)
        if bias:
            b = torch.tensor(
                [float(bias.get(a, 0.0)) for a in self._actions], dtype=torch.float32
            ).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
            logits = logits + b
        return logits

    def probabilities(
        self, context: ContextLike, beta: float, bias: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """``softmax(beta * prefs + bias)`` per action, without choosing."""
        if not self._actions:
            return {}
        probs = torch.softmax(self._logits(as_vector(context, self.dim), beta, bias), dim=0)
        return dict(zip(self._actions, probs.tolist(), strict=True))

    def choose(
        self,
        context: ContextLike,
        beta: float,
        bias: Mapping[str, float] | None = None,
        *,
        greedy: bool = False,
        episode: str | None = None,
        discount: float = 1.0,
    ) -> Choice:
        """Select an action and leave an eligibility trace for it in `episode`'s traces.

        Args:
            context: The context vector (dimension ``dim``).
            beta: Inverse temperature (>= 0); 0 = uniform.
            bias: Additive log-odds per action (episodic evidence); unknown actions and
                non-finite entries are ignored.
            greedy: Take the most probable action instead of sampling (evaluation).
            episode: The episode this choice belongs to (None: one-step trials).
            discount: ``gamma``: the earlier traces decay by ``gamma * lambda``.

        Raises:
            RuntimeError: When no actions are declared.
            ValueError: On a bad context or beta.
        """
        if not self._actions:
            raise RuntimeError("no actions declared: call set_actions() first")
        if not (math.isfinite(beta) and beta >= 0.0):
            raise ValueError(f"beta must be finite and >= 0, got {beta}")
        s = as_vector(context, self.dim)
        # One choice per stimulus on tiny vectors: numpy views of the torch state (same memory)
        # avoid torch's per-operation overhead; the sample still comes from the seeded generator.
        sn = s.numpy()
        logits = np.float32(beta) * (self._W.numpy() @ sn)
        if bias:
            b = np.nan_to_num(np.array([float(bias.get(a, 0.0)) for a in self._actions], dtype=np.float32),
                              nan=0.0, posinf=0.0, neginf=0.0)
            logits = logits + b
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        if greedy:
            idx = int(np.argmax(probs))
        else:
            # What torch.multinomial does for one sample (argmax of p / q, q ~ Exp(1) drawn from
            # the same generator: the same choices for a seed), without its checks and overhead.
            idx = int(np.argmax(probs / self._exponentials(len(probs))))
        inv_norm = np.float32(1.0 / max(float(sn @ sn), _EPS))
        lam = np.float32(self.trace_decay * discount)
        trace = self._trace(episode)
        e_w, e_W = trace.e_w.numpy(), trace.e_W.numpy()
        e_w *= lam
        e_w += inv_norm * sn
        e_W *= lam
        e_W[idx] += inv_norm * sn
        trace.pending = s
        self.choices += 1
        return Choice(
            action=self._actions[idx],
            probs=dict(zip(self._actions, probs.tolist(), strict=True)),
            value=float(self._w.numpy() @ sn),
            index=idx,
        )

    def _exponentials(self, n: int) -> NDArray[np.float32]:
        """`n` Exp(1) draws from the seeded generator (the next ones of its current block)."""
        if self._exp_pool.size < n:
            self._exp_pool = torch.empty(max(n, _EXP_BLOCK)).exponential_(1.0, generator=self._gen).numpy()
        q, self._exp_pool = self._exp_pool[:n], self._exp_pool[n:]
        return q

    # -- learning ------------------------------------------------------------------------------

    def learn(self, reward: float, lr: float, *, rpe_gain: float = 1.0, terminal: bool = True,
              truncated: bool = False, discount: float = 1.0, episode: str | None = None) -> float | None:
        """Apply a reward to the traces of `episode`'s past choices.

        Args:
            reward: The reward of the episode's last choice.
            lr: Learning rate (acetylcholine).
            rpe_gain: Multiplier on the RPE in the weight change (dopamine gain).
            terminal: The episode ends here: ``delta = reward - V(s)``, then its traces go.
            truncated: The episode ends without a terminal value (a time limit):
                ``delta = reward + discount * V(s) - V(s)``, then its traces go.
            discount: ``gamma``, for a truncated episode.
            episode: Whose choices the reward is for (None: one-step trials).

        Returns:
            The TD error ``delta``; 0.0 when the episode had no choice to credit; None when more
            steps follow (the error is computed by :meth:`bootstrap` at the next context).
        """
        if not (math.isfinite(reward) and math.isfinite(lr) and math.isfinite(rpe_gain)
                and math.isfinite(discount)):
            raise ValueError("reward, lr, rpe_gain and discount must be finite")
        trace = self._episodes.get(episode)
        if trace is None or trace.pending is None:
            if terminal or truncated:
                self.end_episode(episode)
            return 0.0
        reward = float(reward) + (trace.reward or 0.0)
        if not (terminal or truncated):
            trace.reward = reward  # waits for the value of the episode's next context
            return None
        v = float(self._w @ trace.pending)
        delta = reward - v if terminal else reward + discount * v - v
        self._apply(trace, delta, lr, rpe_gain, decay=True)
        self.end_episode(episode)
        return delta

    def bootstrap(self, context: ContextLike, lr: float, *, rpe_gain: float = 1.0, discount: float = 1.0,
                  episode: str | None = None) -> float | None:
        """The episode's next context has come: learn from the reward held since its last choice,
        ``delta = r + discount * V(s') - V(s)``. None when no reward was held (nothing learnt)."""
        trace = self._episodes.get(episode)
        if trace is None or trace.pending is None or trace.reward is None:
            return None
        if not (math.isfinite(lr) and math.isfinite(rpe_gain) and math.isfinite(discount)):
            raise ValueError("lr, rpe_gain and discount must be finite")
        s_next = as_vector(context, self.dim)
        delta = trace.reward + discount * float(self._w @ s_next) - float(self._w @ trace.pending)
        trace.reward = None
        self._apply(trace, delta, lr, rpe_gain, decay=False)
        return delta

    def _apply(self, trace: EpisodeTrace, delta: float, lr: float, rpe_gain: float, *, decay: bool) -> None:
        step = lr * rpe_gain * delta
        self._w.add_(trace.e_w, alpha=step * self.critic_scale)
        if decay and self.actor_decay > 0.0:
            self._W.mul_(1.0 - min(1.0, lr * self.actor_decay))
        self._W.add_(trace.e_W, alpha=step)
        self.updates += 1

    def replay(self, context: ContextLike, action: str, reward: float, lr: float, *, decay: bool = True) -> float:
        """Learn offline from a remembered (context, action, reward): sleep consolidation.

        The same normalised three-factor update as a live choice followed by its reward, with an
        eligibility of exactly this context on this action's row, but the live traces and the
        pending choice are left alone: a replay must not steal the credit of an action that is
        still waiting for its reward. ``decay=False`` skips the actor's weight decay (rehearsal
        without downscaling).

        Returns:
            The replayed prediction error ``reward - V(context)``.

        Raises:
            KeyError: When ``action`` is not in the repertoire.
            ValueError: On a bad context or a non-finite reward or rate.
        """
        if not (math.isfinite(reward) and math.isfinite(lr)):
            raise ValueError("reward and lr must be finite")
        idx = self._actions.index(action) if action in self._actions else -1
        if idx < 0:
            raise KeyError(f"action {action!r} is not in the repertoire {self._actions}")
        s = as_vector(context, self.dim)
        inv_norm = 1.0 / max(float(s @ s), _EPS)
        delta = float(reward) - float(self._w @ s)
        self._w.add_(s, alpha=lr * self.critic_scale * delta * inv_norm)
        if decay and self.actor_decay > 0.0:
            self._W.mul_(1.0 - min(1.0, lr * self.actor_decay))
        self._W[idx].add_(s, alpha=lr * delta * inv_norm)
        self.updates += 1
        return delta


    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: plain lists, numbers and a base64 generator state."""
        return {
            "dim": self.dim,
            "actions": list(self._actions),
            "critic": self._w.tolist(),
            "actor": self._W.tolist(),
            "episodes": [{"episode": episode, **trace.snapshot()} for episode, trace in self._episodes.items()],
            "choices": self.choices,
            "updates": self.updates,
            "rng": base64.b64encode(self._gen.get_state().numpy().tobytes()).decode("ascii"),
            "exp_pool": base64.b64encode(self._exp_pool.astype("<f4").tobytes()).decode("ascii"),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: When the snapshot's dimension differs from this instance's.
        """
        if int(state["dim"]) != self.dim:
            raise ValueError(f"snapshot has dim {state['dim']}, expected {self.dim}")
        actions = [str(a) for a in state["actions"]]
        n = len(actions)
        self._actions = actions
        self._w = as_vector(state["critic"], self.dim)
        self._W = self._matrix(state["actor"], n)
        # (Snapshots before episodes had one set of traces: the one-step trials' episode.)
        episodes = state.get("episodes")
        if episodes is None:
            episodes = [{"episode": None, "trace_critic": state["trace_critic"],
                         "trace_actor": state["trace_actor"], "pending": state.get("pending")}]
        self._episodes = {}
        for item in episodes:
            pending, reward = item.get("pending"), item.get("reward")
            self._episodes[item["episode"]] = EpisodeTrace(
                as_vector(item["trace_critic"], self.dim), self._matrix(item["trace_actor"], n),
                None if pending is None else as_vector(pending, self.dim),
                None if reward is None else float(reward))
        self.choices = int(state.get("choices", 0))
        self.updates = int(state.get("updates", 0))
        rng = np.frombuffer(base64.b64decode(state["rng"]), dtype=np.uint8).copy()
        self._gen.set_state(torch.from_numpy(rng))
        self._exp_pool = np.frombuffer(base64.b64decode(state.get("exp_pool", "")), dtype="<f4").astype(np.float32)

    def _matrix(self, rows: Any, n: int) -> torch.Tensor:
        return as_vector(np.asarray(rows, dtype=np.float32).reshape(-1), n * self.dim).reshape(n, self.dim)
