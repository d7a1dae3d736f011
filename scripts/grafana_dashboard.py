#!/usr/bin/env python3
"""Write deploy/grafana/lightbox.json from the named SQL files (deploy/grafana/dashboard.py);
with --check, exit 1 if the committed file differs from what they make now.

Usage: .venv/bin/python scripts/grafana_dashboard.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.grafana.dashboard import render  # noqa: E402

TARGET = ROOT / "deploy" / "grafana" / "lightbox.json"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run scripts/grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
