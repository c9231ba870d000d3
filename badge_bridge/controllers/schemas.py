"""The JSON Schemas of the MQTT contract as files (docs/schemas/), generated from the pydantic models.

Regenerate after changing ``contract.py``::

    python -m badge_bridge.controllers.schemas            # writes docs/schemas/
    python -m badge_bridge.controllers.schemas OTHER_DIR

A test (tests/test_contract.py) fails while the files and the models differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from badge_bridge.controllers import contract

SUFFIX = ".schema.json"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
REGENERATE = "python -m badge_bridge.controllers.schemas"


def render_schemas() -> dict[str, str]:
    """File name -> file text: sorted keys, two-space indent, trailing newline (stable diffs)."""
    return {f"{name}{SUFFIX}": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            for name, schema in contract.json_schemas().items()}


def write_schemas(directory: Path | str = DEFAULT_DIR) -> list[Path]:
    """Write every schema into ``directory`` and remove schema files no model produces any more.
    Returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob(f"*{SUFFIX}"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for path in write_schemas(Path(args[0]) if args else DEFAULT_DIR):
        print(path)


if __name__ == "__main__":
    main()
