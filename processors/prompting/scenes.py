"""The scene names: the one list a template's ``scene`` is checked against and the CPU
compositor draws (gpu_workers/backends/compositor.py keys its drawings by these names).

Adding a scene means adding its name here and its drawing in the compositor; a template naming a
scene that is not listed here fails to parse, so no job can ask for a scene nobody draws.
"""

from __future__ import annotations

SCENE_NAMES: tuple[str, ...] = ("studio", "kitchen", "outdoor", "holiday")
