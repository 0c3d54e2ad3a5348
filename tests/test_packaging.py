"""What the wheel installs: one top-level name, `pipeparse`; servers/ and clients/ inside it.

The folders servers/ and clients/ are the packages `pipeparse.servers` and `pipeparse.clients`
(pipeparse/servers and pipeparse/clients link to them). Code that imported them by their folder
names would load a second copy of every module from the repository root, and would break once
installed: no module may.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pipeparse.clients
import pipeparse.servers

ROOT = Path(__file__).resolve().parent.parent
BY_FOLDER_NAME = re.compile(r"^\s*(from|import) (servers|clients)\b", re.MULTILINE)


def test_the_wheel_installs_only_pipeparse() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = config["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == {"pipeparse"}
    for folder in ("servers", "clients"):
        assert (ROOT / "pipeparse" / folder).resolve() == ROOT / folder
        subpackages = {p.parent for p in (ROOT / folder).rglob("__init__.py")}
        listed = {ROOT / folder / Path(*p.split(".")[2:]) for p in packages if f".{folder}" in p}
        assert subpackages == listed, f"pyproject's packages miss a package of {folder}/"
    assert Path(pipeparse.servers.__file__).resolve().parent == ROOT / "servers"
    assert Path(pipeparse.clients.__file__).resolve().parent == ROOT / "clients"


def test_no_module_imports_servers_or_clients_by_folder_name() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("pipeparse", "servers", "clients", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if BY_FOLDER_NAME.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
