"""A platform engineer's first day, as a corpus of bad input: every case runs the real ``invoke`` CLI and
must answer in ONE line that names where the value came from (the file, the ``INVOKE_*`` variable or the
command-line flag), the key and the value, and exit 2 (bad input) with no traceback, leaving the build
directory and the local registry exactly as they were.

The cases follow the classes of issue 14 (part 2); the ``test_config_errors.py`` cases (kept there) add
more. Each case is a :class:`Case`; placeholders in its strings: ``{tmp}`` (the test's directory),
``{runtime}`` (the ``-f`` file), ``{registry}`` (the local registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bakery.config import MAX_MEMORY_MB
from bakery.local.registry import RECORD_NAME, LocalRegistry
from tests.unit.invoke_cli import copy_project, run_invoke, tree

IMAGE = "osquery-debian-12-v20250101-000000-abc1234"
FAMILY = "osquery-debian-12"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    where: str  # the file, variable or flag the line must name
    key: str  # the key (or task/flag) it must name
    value: str  # the value it must name
    yaml: str = ""  # under ``bakery:`` in the runtime file, after build_dir
    env: dict[str, str] = field(default_factory=dict)
    file_text: str | None = None  # the runtime file's whole text instead
    runtime_name: str = "runtime.yaml"
    use_runtime: bool = True
    setup: Callable[[Path], None] | None = None  # prepares tmp (files in the way, a registry, a project copy)
    in_project_copy: bool = False  # run in a copy of the project (setup breaks a template or pack in tmp/project)
    stream: str = "stderr"  # where the one line goes (lint reports its findings on stdout)
    renders: bool = False  # the task renders before it finds the problem (lint): the build directory may change
    at_start: bool = True  # the line starts with ``where`` (after "error: "): it says first where the value came from
    code: int = 2


def _file(name: str, content: bytes | str = b"") -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return make


def _dir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True)


def _registry(corrupt: str | None = None) -> Callable[[Path], None]:
    """A local registry with one image; ``corrupt``: what its image.json then holds."""

    def make(tmp: Path) -> None:
        disk = tmp / "disk.qcow2"
        disk.write_bytes(b"QFI\xfb not really an image")
        LocalRegistry(tmp / "registry").insert(IMAGE, FAMILY, disk, labels={"artifact-source": "stand-in"})
        disk.unlink()
        if corrupt is not None:
            (tmp / "registry" / "images" / IMAGE / RECORD_NAME).write_text(corrupt)

    return make


def _edit(relpath: str, old: str, new: str) -> Callable[[Path], None]:
    """Copy the project to tmp/project and replace ``old`` (which must occur) by ``new`` in one file."""

    def make(tmp: Path) -> None:
        project = copy_project(tmp / "project")
        path = project / relpath
        text = path.read_text()
        assert old in text, (relpath, old)
        path.write_text(text.replace(old, new, 1))

    return make


def _line_of(relpath: str, old: str) -> str:
    """The 1-based line of the first ``old`` in the project's ``relpath`` (where an edit puts its error)."""
    text = (Path(__file__).resolve().parents[2] / relpath).read_text()
    return str(text[: text.index(old)].count("\n") + 1)


LOCAL_TEMPLATE = "templates/packer/local.pkr.hcl.j2"
_ANCHOR = "source "  # a line every local template has
PACK = "packs/compliance.conf"

CASES = [
    # --- 1. runtime config files: missing, unreadable, not a mapping, wrong syntax or type -------------------
    Case(
        "runtime-missing",
        ("-f", "{tmp}/nope.yaml", "render"),
        "{tmp}/nope.yaml",
        "does not exist",
        "fix the path",
        use_runtime=False,
    ),
    Case(
        "runtime-missing-via-env",
        ("render",),
        "INVOKE_RUNTIME_CONFIG={tmp}/nope.yaml",
        "does not exist",
        "nope.yaml",
        env={"INVOKE_RUNTIME_CONFIG": "{tmp}/nope.yaml"},
        use_runtime=False,
    ),
    Case("runtime-is-directory", ("render",), "{runtime}", "cannot read", "Is a directory", setup=_dir("runtime.yaml")),
    Case("runtime-binary", ("render",), "{runtime}", "not UTF-8", "binary", file_text="\udcff"),
    Case("runtime-yaml-list", ("render",), "{runtime}", "not a mapping", "['a', 'b']", file_text="- a\n- b\n"),
    Case("runtime-yaml-scalar", ("render",), "{runtime}", "not a mapping", "'hello'", file_text="hello\n"),
    Case(
        "runtime-json-syntax",
        ("render",),
        "{runtime}:1:",
        "JSON syntax error",
        "delimiter",
        file_text='{"bakery": {"env": "local"}',
        runtime_name="runtime.json",
    ),
    Case(
        "runtime-json-list",
        ("render",),
        "{runtime}",
        "bakery: got",
        "[1]",
        file_text='{"bakery": [1]}',
        runtime_name="runtime.json",
    ),
    Case(
        "runtime-unknown-extension",
        ("render",),
        "{runtime}",
        ".toml is not a config file type",
        ".yaml, .yml, .json or .py",
        file_text="[bakery]\n",
        runtime_name="runtime.toml",
    ),
    Case(
        "runtime-top-level-typo",
        ("render",),
        "{runtime}",
        "top-level key",
        "'bakry'",
        file_text="bakry:\n  env: local\n",
    ),
    Case(
        "runtime-python-raises",
        ("render",),
        "{runtime}:2",
        "loading the config file failed",
        "ZeroDivisionError",
        file_text="bakery = {}\nbroken = 1 / 0\n",
        runtime_name="runtime.py",
    ),
    Case(
        "yaml-tab-indent",
        ("render",),
        "{runtime}:4:",
        "YAML syntax error",
        "cannot start any token",
        yaml="  osquery:\n\tpacks: []\n",
    ),
    Case(
        "yaml-colon-in-value", ("render",), "{runtime}:3:", "YAML syntax error", "mapping values", yaml="  env: a: b\n"
    ),
    # --- 2. types Invoke's merge meets: a section as a scalar, null or list, a scalar as a section -------------
    Case("bakery-is-a-number", ("render",), "{runtime}", "bakery: got 5", "has a section", file_text="bakery: 5\n"),
    Case("bakery-is-null", ("render",), "{runtime}", "bakery: got None", "has a section", file_text="bakery:\n"),
    Case(
        "osquery-section-null",
        ("render",),
        "{runtime}",
        "bakery.osquery: got None",
        "keys version",
        yaml="  osquery: null\n",
    ),
    Case(
        "environments-as-list",
        ("render",),
        "{runtime}",
        "bakery.environments: got",
        "['local']",
        yaml="  environments: [local]\n",
    ),
    Case(
        "scalar-given-a-section",
        ("render",),
        "{runtime}",
        "bakery.env: got a section",
        "{'name': 'local'}",
        yaml="  env: {name: local}\n",
    ),
    Case(
        "variants-given-a-section",
        ("render",),
        "{runtime}",
        "bakery.environments.local.variants: got a section",
        "debian-12",
        yaml="  environments:\n    local:\n      variants: {debian-12: true}\n",
    ),
    # --- 3. the file that set the key is the one named ---------------------------------------------------------
    Case(
        "new-env-missing-keys",
        ("render", "--env", "lab"),
        "{runtime}",
        "bakery.environments.lab.artifacts",
        "is missing",
        yaml="  environments:\n    lab:\n      target: local\n      variants: [debian-12]\n",
    ),
    Case(
        "flag-value-float",
        ("render",),
        "{runtime}",
        "bakery.osquery.flags.events_max",
        "-5.0",
        yaml="  osquery:\n    flags: {events_max: -5.0}\n",
    ),
    Case(
        "pack-list-item",
        ("render",),
        "{runtime}",
        "bakery.osquery.packs[1]",
        "'Compliance'",
        yaml="  osquery:\n    packs: [compliance, Compliance]\n",
    ),
    Case(
        "key-typo-suggests",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.memory",
        "did you mean 'memory_mb'",
        yaml="  environments:\n    local:\n      local: {memory: 4096}\n",
    ),
    Case(
        "runtime-via-env-names-its-file",
        ("render",),
        "{tmp}/ci.yaml",
        "bakery.environments.local.family",
        "'Osquery-{variant}'",
        env={"INVOKE_RUNTIME_CONFIG": "{tmp}/ci.yaml"},
        use_runtime=False,
        setup=_file("ci.yaml", "bakery:\n  environments:\n    local:\n      family: Osquery-{variant}\n"),
    ),
    # gce.zones (the zone fallback): well-formed, one region, no duplicates, starting with gce.zone
    Case(
        "gce-zones-other-region",
        ("render", "--env", "gstg"),
        "{runtime}",
        "bakery.environments.gstg.gce.zones",
        "'us-west1-a' is not in region us-east1",
        yaml="  environments:\n    gstg:\n      gce: {zones: [us-east1-c, us-west1-a]}\n",
    ),
    Case(
        "gce-zones-duplicate",
        ("render", "--env", "gstg"),
        "{runtime}",
        "bakery.environments.gstg.gce.zones",
        "'us-east1-b' is listed twice",
        yaml="  environments:\n    gstg:\n      gce: {zones: [us-east1-c, us-east1-b, us-east1-b]}\n",
    ),
    Case(
        "gce-zones-not-first",
        ("render", "--env", "gstg"),
        "{runtime}",
        "bakery.environments.gstg.gce.zones",
        "must start with zone 'us-east1-c'",
        yaml="  environments:\n    gstg:\n      gce: {zones: [us-east1-b, us-east1-c]}\n",
    ),
    Case(
        "gce-zones-malformed",
        ("render", "--env", "gstg"),
        "{runtime}",
        "bakery.environments.gstg.gce.zones",
        "'us-east1' is not a Compute Engine zone",
        yaml="  environments:\n    gstg:\n      gce: {zones: [us-east1-c, us-east1]}\n",
    ),
    # --- 4. osquery flags, packs and templates: the file and line -------------------------------------------
    Case(
        "flag-unknown",
        ("render",),
        "{runtime}",
        "bakery.osquery.flags.logger_tls_endpont",
        "did you mean 'logger_tls_endpoint'",
        yaml="  osquery:\n    flags: {logger_tls_endpont: /log}\n",
    ),
    Case(
        "flag-negative-unsigned",
        ("render",),
        "{runtime}",
        "bakery.osquery.flags.distributed_interval",
        "'-60'",
        yaml="  osquery:\n    flags: {distributed_interval: -60}\n",
    ),
    Case(
        "flag-bool-junk",
        ("render",),
        "{runtime}",
        "bakery.osquery.flags.disable_events",
        "'maybe'",
        yaml="  osquery:\n    flags: {disable_events: maybe}\n",
    ),
    Case(
        "option-negative-uint",
        ("render",),
        "{runtime}",
        "bakery.osquery.options.distributed_interval",
        "'-1'",
        yaml="  osquery:\n    options: {distributed_interval: -1}\n",
    ),
    Case(
        "pack-name-unknown",
        ("render",),
        "{runtime}",
        "bakery.osquery.packs names 'incident-responce'",
        "packs/incident-responce.conf",
        yaml="  osquery:\n    packs: [incident-responce]\n",
    ),
    Case(
        "template-undefined-name",
        ("render",),
        f"templates/packer/local.pkr.hcl.j2:{_line_of(LOCAL_TEMPLATE, _ANCHOR)}",
        "no attribute",
        "'no_such_key'",
        setup=_edit(LOCAL_TEMPLATE, _ANCHOR, "{{ spec.no_such_key }}\n" + _ANCHOR),
        in_project_copy=True,
    ),
    Case(
        "template-syntax",
        ("render",),
        f"templates/packer/local.pkr.hcl.j2:{_line_of(LOCAL_TEMPLATE, _ANCHOR)}",
        "fix the template",
        "endif",
        setup=_edit(LOCAL_TEMPLATE, _ANCHOR, "{% endif %}\n" + _ANCHOR),
        in_project_copy=True,
    ),
    Case(
        "template-bad-filter",
        ("render",),
        f"templates/packer/local.pkr.hcl.j2:{_line_of(LOCAL_TEMPLATE, _ANCHOR)}",
        "fix the template",
        "hcll",
        setup=_edit(LOCAL_TEMPLATE, _ANCHOR, "{{ 1 | hcll }}\n" + _ANCHOR),
        in_project_copy=True,
    ),
    Case(
        "pack-query-unknown-table",
        ("lint",),
        "packs/compliance.conf",
        "unknown-table",
        "no_such_table",
        setup=_edit(PACK, '"query": "SELECT', '"query": "SELECT * FROM no_such_table; SELECT'),
        in_project_copy=True,
        stream="stdout",
        renders=True,
    ),
    Case("lint-path-missing", ("lint", "--path", "{tmp}/osquery.conf"), "{tmp}/osquery.conf", "no such file", "lint"),
    Case("lint-format-unknown", ("lint", "--format", "xml"), "--format", "'xml'", "text or json"),
    Case("lint-platform-unknown", ("lint", "--platform", "windoze"), "--platform", "'windoze'", "linux, darwin"),
    # --- 5. environment variables: named, cast by the schema, strict booleans --------------------------------
    Case(
        "env-bool-junk",
        ("render", "--env", "gstg"),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_GSTG_GCE_USE_IAP",
        "bakery.environments.gstg.gce.use_iap",
        "'sure'",
        env={"INVOKE_BAKERY_ENVIRONMENTS_GSTG_GCE_USE_IAP": "sure"},
    ),
    Case(
        "env-section-null",
        ("render",),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_GCE",
        "sets no bakery key",
        "''",
        env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_GCE": ""},
    ),
    Case(
        "env-bool-empty-string",
        ("render", "--env", "gstg"),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_GSTG_GCE_SECURE_BOOT",
        "bakery.environments.gstg.gce.secure_boot",
        "''",
        env={"INVOKE_BAKERY_ENVIRONMENTS_GSTG_GCE_SECURE_BOOT": ""},
    ),
    Case(
        "env-int-junk",
        ("render",),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_MEMORY_MB",
        "bakery.environments.local.local.memory_mb",
        "'4G'",
        env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_MEMORY_MB": "4G"},
    ),
    Case(
        "env-int-too-big",
        ("render",),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_MEMORY_MB",
        "bakery.environments.local.local.memory_mb",
        "409600",
        env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_MEMORY_MB": "409600"},
    ),
    Case(
        "env-float-inf",
        ("render",),
        "environment variable INVOKE_BAKERY_TIMEOUTS_PACKER_BUILD",
        "bakery.timeouts.packer_build",
        "'inf'",
        env={"INVOKE_BAKERY_TIMEOUTS_PACKER_BUILD": "inf"},
    ),
    Case(
        "env-name-typo",
        ("render",),
        "environment variable INVOKE_BAKERY_TIMEOUTS_BOOOT",
        "did you mean INVOKE_BAKERY_TIMEOUTS_BOOT",
        "'60'",
        env={"INVOKE_BAKERY_TIMEOUTS_BOOOT": "60"},
    ),
    Case(
        "env-names-a-section",
        ("render",),
        "environment variable INVOKE_BAKERY_OSQUERY",
        "sets no bakery key",
        "'5.23.1'",
        env={"INVOKE_BAKERY_OSQUERY": "5.23.1"},
    ),
    Case(
        "env-list",
        ("render",),
        "environment variable INVOKE_BAKERY_OSQUERY_PACKS",
        "bakery.osquery.packs",
        "'compliance'",
        env={"INVOKE_BAKERY_OSQUERY_PACKS": "compliance"},
    ),
    Case(
        "env-flag-negative",
        ("render",),
        "environment variable INVOKE_BAKERY_OSQUERY_FLAGS_EVENTS_MAX",
        "bakery.osquery.flags.events_max",
        "'-5'",
        env={"INVOKE_BAKERY_OSQUERY_FLAGS_EVENTS_MAX": "-5"},
    ),
    Case(
        "env-literal",
        ("render",),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_ACCELERATOR",
        "bakery.environments.local.local.accelerator",
        "'hvf'",
        env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_ACCELERATOR": "hvf"},
    ),
    # --- 6. values accepted silently before -------------------------------------------------------------------
    Case(
        "memory-absurd",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.memory_mb",
        "2097152",
        yaml="  environments:\n    local:\n      local: {memory_mb: 2097152}\n",
    ),
    Case(
        "memory-too-small",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.memory_mb",
        "(got 256)",
        yaml="  environments:\n    local:\n      local: {memory_mb: 256}\n",
    ),
    Case(
        "cpus-zero",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.cpus",
        "(got 0)",
        yaml="  environments:\n    local:\n      local: {cpus: 0}\n",
    ),
    Case(
        "image-suite-missing",
        ("render",),
        "{runtime}",
        "bakery.image_suite",
        "'tests/imgae'",
        yaml="  image_suite: tests/imgae\n",
    ),
    Case(
        "registry-dir-is-a-file",
        ("images",),
        "{runtime}",
        "bakery.environments.local.local.registry_dir",
        "is a file",
        yaml="  environments:\n    local:\n      local: {registry_dir: {tmp}/reg-file}\n",
        setup=_file("reg-file", "x"),
    ),
    Case(
        "timeout-infinite",
        ("render",),
        "{runtime}",
        "bakery.timeouts.image_tests",
        "inf",
        yaml="  timeouts: {image_tests: .inf}\n",
    ),
    Case(
        "timeout-negative",
        ("render",),
        "{runtime}",
        "bakery.timeouts.boot",
        "-30",
        yaml="  timeouts: {boot: -30}\n",
    ),
    Case(
        "accelerator-unknown",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.accelerator",
        "'kqemu'",
        yaml="  environments:\n    local:\n      local: {accelerator: kqemu}\n",
    ),
    Case(
        "default-env-unknown",
        ("render",),
        "{runtime}",
        "bakery.env",
        "'staging'",
        yaml="  env: staging\n",
    ),
    Case(
        "variants-empty",
        ("render",),
        "{runtime}",
        "bakery.environments.local",
        "'variants' is empty",
        yaml="  environments:\n    local:\n      variants: []\n",
    ),
    Case(
        "retention-keep-zero",
        ("render",),
        "{runtime}",
        "bakery.environments.local.retention.keep",
        "(got 0)",
        yaml="  environments:\n    local:\n      retention: {keep: 0}\n",
    ),
    # --- 7. paths: a file in the way, nothing writable --------------------------------------------------------
    Case(
        "build-dir-is-a-file",
        ("render",),
        "{runtime}",
        "bakery.build_dir",
        "is a file",
        yaml="  build_dir: {tmp}/build-file\n",
        setup=_file("build-file", "x"),
    ),
    Case(
        "build-dir-under-a-file",
        ("render",),
        "{runtime}",
        "bakery.build_dir",
        "(on its path) is a file",
        yaml="  build_dir: {tmp}/build-file/sub\n",
        setup=_file("build-file", "x"),
    ),
    Case(
        "build-dir-unwritable",
        ("render",),
        "{runtime}",
        "bakery.build_dir",
        "'/proc/bakery-build'",
        yaml="  build_dir: /proc/bakery-build\n",
    ),
    Case("build-dir-empty", ("render",), "{runtime}", "bakery.build_dir", "''", yaml="  build_dir: ''\n"),
    Case(
        "cache-dir-is-a-file",
        ("render",),
        "{runtime}",
        "bakery.environments.local.local.cache_dir",
        "is a file",
        yaml="  environments:\n    local:\n      local: {cache_dir: {tmp}/cache-file}\n",
        setup=_file("cache-file", "x"),
    ),
    Case(
        "cache-dir-from-env-is-a-file",
        ("render",),
        "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_CACHE_DIR",
        "bakery.environments.local.local.cache_dir",
        "is a file",
        env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_CACHE_DIR": "{tmp}/cache-file"},
        setup=_file("cache-file", "x"),
    ),
    # --- 8. every output location is checked before any work --------------------------------------------------
    Case(
        "nightly-report-dir-is-a-file",
        ("nightly", "--dry-run", "--report-dir", "{tmp}/report-file"),
        "--report-dir",
        "{tmp}/report-file",
        "is a file",
        setup=_file("report-file", "x"),
    ),
    Case(
        "nightly-report-dir-unwritable",
        ("nightly", "--report-dir", "/proc/bakery-report"),
        "--report-dir",
        "'/proc/bakery-report'",
        "nothing can be created in /proc",
    ),
    # --- 9. images, the command line, the registry -----------------------------------------------------------
    Case(
        "promote-unknown-image",
        ("promote", "osquery-debian-12-v20990101-000000-0000000", "--dry-run"),
        "{registry}",
        "not found",
        "'osquery-debian-12-v20990101-000000-0000000'",
        setup=_registry(),
        at_start=False,
    ),
    Case(
        "diff-unknown-image",
        ("diff", "osquery-debian-12-nope", IMAGE),
        "{registry}",
        "invoke images",
        "'osquery-debian-12-nope'",
        setup=_registry(),
        at_start=False,
    ),
    Case(
        "diff-bad-image-name",
        ("diff", "Not_An_Image", IMAGE),
        "image name",
        "invalid",
        "'Not_An_Image'",
        at_start=False,
    ),
    Case(
        "diff-manifest-not-json",
        ("diff", "{tmp}/a.json", "{tmp}/a.json"),
        "{tmp}/a.json",
        "not readable JSON",
        "Expecting value",
        setup=_file("a.json", "not json"),
        at_start=False,
    ),
    Case(
        "registry-record-corrupt",
        ("images",),
        f"{{registry}}/images/{IMAGE}/{RECORD_NAME}",
        "is unreadable",
        "remove the directory",
        setup=_registry(corrupt='{"name": '),
        at_start=False,
    ),
    Case(
        "registry-record-a-list",
        ("promote", IMAGE, "--dry-run"),
        f"{{registry}}/images/{IMAGE}/{RECORD_NAME}",
        "is unreadable",
        "list indices",
        setup=_registry(corrupt="[1, 2]"),
        at_start=False,
    ),
    Case("unknown-task", ("rendr",), "command line", "unknown task 'rendr'", "did you mean 'render'"),
    Case("unknown-flag", ("render", "--enviroment", "gstg"), "command line", "invoke render", "'--enviroment'"),
    Case("flag-without-value", ("render", "--env"), "command line", "flag --env", "needs a value"),
    Case("missing-positional", ("promote",), "command line", "invoke promote", "'image'"),
    Case("diff-one-positional", ("diff", IMAGE), "command line", "invoke diff", "'image_b'"),
    Case("help-unknown-task", ("--help", "bakee"), "command line", "unknown task 'bakee'", "did you mean 'bake'"),
    Case(
        "env-flag-empty",
        ("render", "--env", ""),
        "--env",
        "unknown environment ''",
        "gprd, gstg, local",
        at_start=False,
    ),
    Case(
        "variant-unknown",
        ("bake", "--dry-run", "--variant", "debian-13"),
        "--variant",
        "'debian-13'",
        "debian-12",
        at_start=False,
    ),
]

assert len(CASES) >= 60, len(CASES)
assert len({c.id for c in CASES}) == len(CASES)


def _fill(text: str, tmp: Path, runtime: Path) -> str:
    return (
        text.replace("{tmp}", str(tmp)).replace("{runtime}", str(runtime)).replace("{registry}", str(tmp / "registry"))
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(tmp_path: Path, case: Case) -> None:
    runtime = tmp_path / case.runtime_name
    if case.setup is not None:
        case.setup(tmp_path)
    cwd = tmp_path / "project" if case.in_project_copy else None

    def fill(text: str) -> str:
        return _fill(text, tmp_path, runtime)

    build, registry = tmp_path / "build", tmp_path / "registry"
    before = (tree(build), tree(registry))
    file_text = case.file_text
    if file_text == "\udcff":  # binary content: written as bytes
        runtime.write_bytes(b"\x00\xff\xfe\x01bakery")
        file_text = None
    run = run_invoke(
        tmp_path,
        fill(case.yaml),
        *(fill(a) for a in case.args),
        env={k: fill(v) for k, v in case.env.items()},
        file_text=None if file_text is None else fill(file_text),
        runtime_name=case.runtime_name,
        use_runtime=case.use_runtime,
        **({"cwd": cwd} if cwd else {}),
    )
    proc = run.proc
    output = proc.stderr + proc.stdout
    assert proc.returncode == case.code, output
    assert "Traceback" not in output, output
    lines = [line for line in getattr(proc, case.stream).splitlines() if line.strip()]
    assert len(lines) == 1, output
    for part in (case.where, case.key, case.value):
        assert fill(part) in lines[0], (fill(part), lines[0])
    if case.at_start:
        assert lines[0].startswith(("error: " if case.stream == "stderr" else "") + fill(case.where)), lines[0]
    assert tree(registry) == before[1], "the registry changed"
    if not case.renders:
        assert tree(build) == before[0], "the build directory changed"


def test_a_boolean_variable_can_be_false(tmp_path: Path) -> None:
    """INVOKE_…_USE_IAP=false renders use_iap = false (Invoke alone takes every non-empty string as true),
    also for a key no file sets; "TRUE" and "0" parse too."""
    for text, expected in (("false", "false"), ("YES", "true")):
        run = run_invoke(
            tmp_path,
            None,
            "render",
            "--env",
            "gstg",
            "--variant",
            "debian-12",
            env={"INVOKE_BAKERY_ENVIRONMENTS_GSTG_GCE_USE_IAP": text},
        )
        assert run.proc.returncode == 0, run.proc.stderr
        var_file = (run.build / "gstg" / "debian-12" / "variables.pkrvars.hcl").read_text()
        line = next(line for line in var_file.splitlines() if line.startswith("use_iap "))
        assert line.split("=")[1].strip() == expected, (text, line)


def test_memory_cap_is_inclusive(tmp_path: Path) -> None:
    """The cap is a value a user may set (the corpus shows one above it fails)."""
    run = run_invoke(tmp_path, f"  environments:\n    local:\n      local: {{memory_mb: {MAX_MEMORY_MB}}}\n", "render")
    assert run.proc.returncode == 0, run.proc.stderr


def test_invoke_list_and_task_help_still_work(tmp_path: Path) -> None:
    listed = run_invoke(tmp_path, None, "--list", use_runtime=False).proc
    assert listed.returncode == 0 and "render" in listed.stdout, listed.stderr
    helped = run_invoke(tmp_path, None, "--help", "promote", use_runtime=False).proc
    assert helped.returncode == 0 and "--dry-run" in helped.stdout, helped.stderr


def test_the_unchanged_check_sees_a_change(tmp_path: Path) -> None:
    """``tree`` (the "nothing half-written" check above) notices a new file, a changed one and a new directory."""
    (tmp_path / "a").write_text("1")
    before = tree(tmp_path)
    (tmp_path / "a").write_text("2")
    assert tree(tmp_path) != before
    (tmp_path / "a").write_text("1")
    assert tree(tmp_path) == before
    (tmp_path / "d").mkdir()
    assert tree(tmp_path) != before
