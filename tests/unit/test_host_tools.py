"""scripts/host-tools.txt is the one list of host tools: every command the project runs on the host is in it,
everything in it is used, ``require_tools`` names the same packages, bootstrap installs exactly its apt
packages, and (on Debian) each installed command belongs to the package the table names.

The scan itself (``tests/hosttools.py``) is shown to catch an unlisted tool however it is started, an unused
row, a package that disagrees, and an argv it cannot follow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.hosttools import ROOT, Scan, Tool, load_table, scan_project, scan_python, shell_commands

# Argv the scan cannot follow, each with the commands it runs (they count as used, so the table must list them).
NOT_FOLLOWED = {
    # .gitlab-ci.yml's trust_key shell function, run on the host with curl replaced by a stub on PATH.
    ("tests/unit/test_gitlab_ci.py", "['bash', '-c', script]"): ("bash", "mktemp", "rm", "gpg", "awk", "chmod"),
    # (directory, argv) pairs built by hand_argvs(): packer init/validate/fmt.
    ("benchmarks/bench_validate.py", "argv"): ("packer",),
    # The adapter's own argv (bakery.packer.Packer._argv): packer inspect with a build's variables.
    ("tests/integration/gce/test_gce_zones.py", "argv"): ("packer",),
    # The checks of the table itself look up the table's own commands.
    ("tests/unit/test_host_tools.py", "shutil.which(tool.command, path=search)"): (),
    ("tests/conftest.py", "shutil.which(tool.command)"): (),
    ("tests/conftest.py", "shutil.which(tool.command, path='/usr/sbin:/sbin')"): (),
}
# Host commands run by Python code held in a string (a driver started with sys.executable), with the text
# that runs them: checked to be still there, and counted as used.
EMBEDDED = {
    ("tests/integration/gce/test_gcloud_credentials.py", '["ip", "link", "set", "lo", "up"]'): "ip",
}
# Names used only to show that a missing tool is reported (tests/unit/local/test_local_proc.py).
DELIBERATELY_MISSING = frozenset({"no-such-tool-xyz"})


@pytest.fixture(scope="module")
def table() -> list[Tool]:
    return load_table()


@pytest.fixture(scope="module")
def scan() -> Scan:
    return scan_project()


def by_command(tools: Iterable[Tool]) -> dict[str, Tool]:
    return {tool.command: tool for tool in tools if tool.command != "-"}


def followed(scan: Scan) -> tuple[set[str], list[str]]:
    """Commands the scan found plus those of NOT_FOLLOWED; what it could not follow and is not excused."""
    commands = scan.commands() - DELIBERATELY_MISSING
    left = []
    for entry in scan.unresolved:
        rel = entry.split(":", 1)[0]
        source = entry.split(" [", 1)[-1].removesuffix("]")
        excuse = NOT_FOLLOWED.get((rel, source))
        if excuse is None:
            left.append(entry)
        else:
            commands |= set(excuse)
    for (rel, text), command in EMBEDDED.items():
        if text in (ROOT / rel).read_text():
            commands.add(command)
    return commands, left


def unlisted(scan: Scan, tools: list[Tool]) -> list[str]:
    listed = by_command(tools)
    return sorted(
        f"{use.where}: runs `{use.command}`, which scripts/host-tools.txt does not list: add a row "
        "(COMMAND PACKAGE apt|venv|optional WHY)"
        for use in scan.uses
        if use.command not in listed and use.command not in DELIBERATELY_MISSING
    )


def unused(commands: set[str], tools: list[Tool]) -> list[str]:
    return sorted(
        f"scripts/host-tools.txt: `{command}` is used nowhere on the host: remove its row"
        for command in by_command(tools)
        if command not in commands
    )


def mismatched(scan: Scan, tools: list[Tool]) -> list[str]:
    """require_tools({command: package}) must name the table's package (an optional tool's may say more)."""
    listed = by_command(tools)
    wrong = []
    for command, package, where in scan.required:
        tool = listed.get(command)
        if tool is None or command in DELIBERATELY_MISSING:
            continue
        same = package == tool.package or (tool.kind == "optional" and package.startswith(f"{tool.package} "))
        if not same:
            wrong.append(f"{where}: require_tools says `{command}` comes from {package!r}, the table {tool.package!r}")
    return wrong


# --- the project -------------------------------------------------------------------------------------------


def test_table_rows_are_well_formed(table: list[Tool]) -> None:
    commands = [tool.command for tool in table if tool.command != "-"]
    assert len(commands) == len(set(commands)), "a command is listed twice"
    assert all(tool.package != "-" or tool.kind == "venv" for tool in table), "an apt/optional row without package"
    assert {tool.kind for tool in table} == {"apt", "venv", "optional"}
    assert [tool.command for tool in table if tool.kind == "optional"] == ["gcloud"]


def test_every_command_run_on_the_host_is_listed(scan: Scan, table: list[Tool]) -> None:
    assert len(scan.uses) > 50, "the scan found next to nothing: is it still looking at the project?"
    assert unlisted(scan, table) == []


def test_every_listed_command_is_used(scan: Scan, table: list[Tool]) -> None:
    commands, _ = followed(scan)
    assert unused(commands, table) == []


def test_the_scan_follows_every_argv(scan: Scan) -> None:
    _, left = followed(scan)
    assert left == [], "make the argv literal (or built by a function the scan follows), or excuse it here"


def test_require_tools_names_the_tables_package(scan: Scan, table: list[Tool]) -> None:
    assert len(scan.required) >= 8
    assert mismatched(scan, table) == []


def test_venv_commands_come_from_pyproject(table: list[Tool]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {req.split(";")[0].split("[")[0].split("=")[0].split("~")[0].split(">")[0].strip() for req in requirements}
    venv = [tool for tool in table if tool.kind == "venv" and tool.package != "-"]
    assert venv
    assert [tool.package for tool in venv if tool.package not in names] == []


def bootstrap_packages(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "bootstrap.sh"), "--print-packages"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bootstrap_installs_exactly_the_tables_apt_packages(table: list[Tool]) -> None:
    proc = bootstrap_packages(ROOT)
    assert proc.returncode == 0, proc.stderr
    wanted = sorted({tool.package for tool in table if tool.kind == "apt"})
    assert sorted(proc.stdout.split()) == wanted
    assert "google-cloud-cli" not in proc.stdout.split()


def test_bootstrap_refuses_a_table_without_apt_rows(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts" / "bootstrap.sh")
    (tmp_path / "scripts" / "host-tools.txt").write_text("# emptied\nruff ruff venv lint\n")
    proc = bootstrap_packages(tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["bootstrap: scripts/host-tools.txt lists no apt package: restore it from git"]


def dpkg_owners(paths: Iterable[str]) -> dict[str, set[str]]:
    """The packages dpkg says own each path, in one ``dpkg-query -S`` (Debian 12 is merged-/usr: dpkg may know
    /usr/bin/X as /bin/X, so callers ask for both)."""
    proc = subprocess.run(["dpkg-query", "-S", *paths], capture_output=True, text=True, timeout=120)
    owners: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("diversion ") and ": " in line:
            names, path = line.split(": ", 1)
            owners.setdefault(path, set()).update(name.strip().split(":")[0] for name in names.split(","))
    return owners


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian machine: no dpkg database to check")
def test_installed_commands_belong_to_the_tables_package(table: list[Tool]) -> None:
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    paths: dict[str, set[str]] = {}
    for tool in table:
        found = shutil.which(tool.command, path=search) if tool.kind != "venv" and tool.command != "-" else None
        if found is not None:  # a missing tool: BAKERY_REQUIRE_HOST_TOOLS=1 (scripts/test.sh) stops the run earlier
            real = os.path.realpath(found)
            paths[tool.command] = {p for path in (found, real) for p in (path, path.removeprefix("/usr"))}
    owners = dpkg_owners(sorted(set().union(*paths.values())))
    wrong = []
    for tool in table:
        if tool.command in paths:
            found_in = set().union(*(owners.get(path, set()) for path in paths[tool.command]))
            if tool.package not in found_in:
                wrong.append(f"{tool.command}: belongs to {sorted(found_in) or 'no package'}, not {tool.package}")
    assert len(paths) >= 20
    assert wrong == []


# --- the scan catches what it must (synthetic sources) -------------------------------------------------------

TABLE_OF_TWO = [Tool("sh", "dash", "apt", "shell"), Tool("git", "git", "apt", "sha")]


def scan_of(source: str, name: str = "bakery/example.py") -> Scan:
    return scan_python({name: textwrap.dedent(source)})


@pytest.mark.parametrize(
    "source",
    [
        'import subprocess\nsubprocess.run(["frobnicate", "-x"], check=True, timeout=5)\n',
        'from bakery import proc\nproc.run(("frobnicate",), timeout=5)\n',
        'import shutil\nshutil.which("frobnicate")\n',
        'from bakery import proc\nproc.require_tools({"frobnicate": "frob"})\n',
        # through a module constant, a builder function and its return value
        """
        from bakery import proc
        TOOL = "frobnicate"
        def frob_argv(level: int) -> list[str]:
            return [TOOL, f"-{level}"]
        def go() -> None:
            proc.spawn(frob_argv(3))
        """,
        # through a parameter of a helper to its call site, with a list(...) and a comprehension on the way
        """
        import subprocess
        def run(argv, timeout=5):
            return subprocess.run([str(a) for a in list(argv)], timeout=timeout)
        run(["frobnicate", "--all"])
        """,
        # behind env, and inside sh -c
        'import subprocess\nsubprocess.Popen(["env", "A=1", "frobnicate"])\n',
        'import subprocess\nsubprocess.run(["sh", "-c", "git status && frobnicate | sort -u"], timeout=5)\n',
        'import os\nos.system("frobnicate --now")\n',
        # an argv builder nothing runs in this file (an ssh ProxyCommand, say)
        'def proxy_command() -> list[str]:\n    return ["frobnicate", "tunnel"]\n',
    ],
)
def test_an_unlisted_tool_is_reported(source: str) -> None:
    scan = scan_of(source)
    problems = unlisted(scan, TABLE_OF_TWO)
    assert any("runs `frobnicate`, which scripts/host-tools.txt does not list" in p for p in problems), (
        problems,
        scan.unresolved,
    )
    assert problems[0].startswith("bakery/example.py:")


def test_commands_run_inside_a_vm_or_the_image_are_not_host_tools() -> None:
    scan = scan_of(
        """
        def check(vm, host):
            vm.run(["dpkg-query", "-W"], timeout=5)
            host.run("systemctl is-active osqueryd")
        """
    )
    assert scan.uses == [] and scan.unresolved == []


def test_an_argv_the_scan_cannot_follow_is_reported() -> None:
    scan = scan_of(
        "import subprocess\nfrom somewhere import argv_from_elsewhere\nsubprocess.run(argv_from_elsewhere())\n"
    )
    assert scan.uses == []
    assert len(scan.unresolved) == 1
    assert scan.unresolved[0].startswith("bakery/example.py:3: cannot tell which program")
    _, left = followed(scan)
    assert left == scan.unresolved


def test_an_unused_row_is_reported() -> None:
    scan = scan_of('import subprocess\nsubprocess.run(["git", "rev-parse", "HEAD"], timeout=5)\n')
    assert unlisted(scan, TABLE_OF_TWO) == []
    assert unused(scan.commands(), TABLE_OF_TWO) == [
        "scripts/host-tools.txt: `sh` is used nowhere on the host: remove its row"
    ]


def test_a_package_that_disagrees_with_the_table_is_reported() -> None:
    scan = scan_of('from bakery import proc\nproc.require_tools({"git": "git-core"})\n')
    assert mismatched(scan, TABLE_OF_TWO) == [
        "bakery/example.py:2: require_tools says `git` comes from 'git-core', the table 'git'"
    ]


def test_shell_scripts_count_commands_not_builtins_arrays_or_paths() -> None:
    commands, ok = shell_commands(
        textwrap.dedent(
            """
            set -o errexit
            PACKAGES=(packer qemu-utils)
            cd "$(dirname "$0")/.."
            for pkg in "${PACKAGES[@]}"; do dpkg-query -W "$pkg" | grep -q ok || echo "$pkg"; done
            "$VENV/bin/python" -m pip --version
            scripts/other.sh
            exec frobnicate --now
            """
        )
    )
    assert ok
    assert commands == {"dirname", "dpkg-query", "grep", "frobnicate"}
