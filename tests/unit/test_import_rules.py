"""scripts/check_imports.py: the tree keeps its import rules, and the checker names each breach
by file and line (lazy, relative, TYPE_CHECKING and indirect imports included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "check_imports.py"


def _check(root: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(CHECKER)] + ([str(root)] if root else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        # Every folder on the way is a package, as in the real tree.
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
    return root


def test_the_tree_keeps_the_rules() -> None:
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # (a) a lazy import inside a function counts
            {
                "processors/runtime/feed.py": (
                    "import os\n\n\ndef load():\n    from processors.stages import intake\n"
                )
            },
            "processors/runtime/feed.py:5: (a)",
        ),
        (  # (a) a relative import is resolved
            {"processors/runtime/outbox.py": "from ..imaging import checks\n"},
            "processors/runtime/outbox.py:1: (a)",
        ),
        (  # (a) importlib with a literal name is an import all the same
            {
                "processors/runtime/launch.py": (
                    "import importlib\nimportlib.import_module('gpu_workers.worker')\n"
                )
            },
            "processors/runtime/launch.py:2: (a)",
        ),
        (  # (a) through another module of the tree
            {
                "processors/runtime/spine.py": "from processors import helpers\n",
                "processors/helpers.py": "from processors.eventlog.sink import EventLogSink\n",
            },
            "processors/runtime/spine.py:1: (a) runtime imports no stage or domain module: imports "
            "processors.helpers, which leads to processors.eventlog.sink",
        ),
        (  # (b) a stage importing the gateway, under TYPE_CHECKING too
            {
                "processors/stages/publish.py": (
                    "from typing import TYPE_CHECKING\n\n"
                    "if TYPE_CHECKING:\n    from gateway.ops import review\n"
                )
            },
            "processors/stages/publish.py:4: (b)",
        ),
        (  # (b) from gpu_workers
            {"gpu_workers/worker.py": "import gateway.web.app\n"},
            "gpu_workers/worker.py:1: (b)",
        ),
        (  # (c) the web app reaching a stage module directly
            {"gateway/web/api.py": "from processors.stages.quality import QualityStage\n"},
            "gateway/web/api.py:1: (c)",
        ),
        (  # (c) a module the topology names as a stage class is a stage module too
            {
                "processors/topology.py": (
                    'STAGES = (StageSpec("eventlog", "processors.eventlog.sink:EventLogSink"),)\n'
                ),
                "gateway/cli/status.py": "def run():\n    import processors.eventlog.sink\n",
            },
            "gateway/cli/status.py:2: (c)",
        ),
        (  # (d) an import cycle, even one held together by TYPE_CHECKING
            {
                "processors/eventlog/server.py": (
                    "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                    "    from processors.eventlog.sink import Worker\n"
                ),
                "processors/eventlog/sink.py": "from processors.eventlog.server import build\n",
            },
            "processors/eventlog/server.py:4: (d) no import cycles: processors.eventlog.server -> "
            "processors.eventlog.sink -> processors.eventlog.server",
        ),
    ],
)
def test_a_breach_is_named_by_file_and_line(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    result = _check(_tree(tmp_path, files))
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout, result.stdout


def test_allowed_imports_pass(tmp_path: Path) -> None:
    files = {
        # launch reaches stages through the topology, by a string read from it
        "processors/runtime/launch.py": (
            "import importlib\nfrom processors.topology import stage_spec\n\n\n"
            "def load(name):\n    return importlib.import_module(stage_spec(name).import_path)\n"
        ),
        "processors/topology.py": "from schemas.topics import Topic\n",
        "schemas/topics.py": "",
        # the CLI reaches stages through launch and ops; ops may import what it needs
        "gateway/cli/main.py": "from processors.runtime.launch import load\nfrom gateway.ops import replay\n",
        "gateway/ops/replay.py": "from processors.eventlog.reader import Reader\n",
        "processors/eventlog/reader.py": "",
        # siblings reached through their package are no cycle with the package's __init__
        "processors/references/__init__.py": "from processors.references.persist import P\n",
        "processors/references/persist.py": "from processors.references import fetcher\n",
        "processors/references/fetcher.py": "",
    }
    result = _check(_tree(tmp_path, files))
    assert result.returncode == 0, result.stdout
