"""Attention under a distractor (bench/attention.py): the workspace earns its place.

A target word and a constant background phrase arrive together every trial; the environment
takes the brain's first action. The full brain answers the target (the habituated background
loses the competition for the first broadcast); with the workspace bypassed the brain answers
whichever stimulus its senses finish first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.attention import distractor_task
from bus import Bus


@pytest.mark.slow
async def test_the_workspace_keeps_a_constant_distractor_from_taking_the_first_action(
        bus: Bus, other_bus: Bus, tmp_path: Path) -> None:
    """Measured (200 trials, hashing): second-half reward 0.92 full vs 0.18 bypassed; the first
    action answered the background in 4% vs 54% of the trials."""
    full = await distractor_task(bus, tmp_path / "full", compete=True, trials=100)
    bypassed = await distractor_task(other_bus, tmp_path / "bypassed", compete=False, trials=100)
    summary = f"full {full}, bypassed {bypassed}"
    assert full["first_action_on_background"] <= 0.15, summary
    assert bypassed["first_action_on_background"] >= 0.3, summary
    assert full["reward_rate_second_half"] >= bypassed["reward_rate_second_half"] + 0.25, summary
