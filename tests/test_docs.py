"""docs/architecture.md matches the code: every module it names exists, and every module of
the package is named there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "byol"


def test_architecture_names_exactly_the_modules_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = {n.removeprefix("src/byol/") for n in re.findall(r"`([a-z_/]+\.py)`", text)}
    for name in named:
        found = (PACKAGE / name).exists() or list((ROOT / "tests").rglob(Path(name).name))
        assert found, f"docs/architecture.md names {name}, which does not exist"
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    unnamed = {m for m in modules if m not in named and not m.endswith("__init__.py")
               and not m.startswith("datasets/")}  # fmt: skip
    assert not unnamed, f"modules missing from docs/architecture.md: {sorted(unnamed)}"
