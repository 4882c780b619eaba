""".gitlab-ci.yml: valid against GitLab's CI schema, every ``invoke`` command line names a real task and
real flags, and the pipeline runs what it should when it should (checks on push/MR, bake on schedule,
manual rollback, one resource group per image family, JUnit reports where the commands write them); the bake
job installs the Packer and gcloud that bakery needs, from apt repositories whose keys are checked by
fingerprint before they are trusted."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from invoke.collection import Collection

from bakery import cli, gcloud
from bakery.packer_plugins import PLUGINS_SINCE

ROOT = Path(__file__).resolve().parents[2]
CI_FILE = ROOT / ".gitlab-ci.yml"
# GitLab's own schema (app/assets/javascripts/editor/schema/ci.json); provenance in the README beside it.
SCHEMA_FILE = ROOT / "tests" / "fixtures" / "gitlab" / "ci-schema.json"

# Keys of a .gitlab-ci.yml that are not jobs.
GLOBAL_KEYS = {"default", "include", "stages", "variables", "workflow", "image", "services", "cache"}
GLOBAL_KEYS |= {"before_script", "after_script", "spec"}
SCRIPT_KEYS = ("before_script", "script", "after_script")
CREDENTIALED_TAG = "gce-bakery"

# Predefined variables of each kind of pipeline, as far as the rules look at them.
PUSH = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature"}
PUSH_WITH_OPEN_MR = {**PUSH, "CI_OPEN_MERGE_REQUESTS": "infrasec/osquery-bakery!7"}
TAG_PUSH = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1.0.0"}
MERGE_REQUEST = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}
SCHEDULE = {"CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"}
WEB = {"CI_PIPELINE_SOURCE": "web", "CI_COMMIT_BRANCH": "main"}
ALL_SOURCES = {"push": PUSH, "merge_request_event": MERGE_REQUEST, "schedule": SCHEDULE, "web": WEB}


# --- loading -------------------------------------------------------------------------------------------------


def load_ci() -> dict[str, Any]:
    doc = yaml.safe_load(CI_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load_ci()


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def job_names(doc: Mapping[str, Any]) -> list[str]:
    """Real jobs: top-level keys that are neither global keywords nor hidden (``.name``) templates."""
    return [name for name in doc if name not in GLOBAL_KEYS and not name.startswith(".")]


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """GitLab's ``extends`` merge: mappings merge deeply, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def resolve(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A job as GitLab runs it: ``default:`` keywords, then its ``extends`` chain in order, then itself."""

    def extended(key: str, seen: tuple[str, ...]) -> dict[str, Any]:
        assert key not in seen, f"extends cycle: {' -> '.join((*seen, key))}"
        job = doc[key]
        parents = job.get("extends", [])
        result: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            result = merge(result, extended(parent, (*seen, key)))
        return merge(result, {k: v for k, v in job.items() if k != "extends"})

    return merge(doc.get("default", {}), extended(name, ()))


# --- rules: a tiny evaluator for the `if:` expressions this file uses ----------------------------------------

TOKEN_RE = re.compile(r'\s*(?:(&&|\|\|)|(==)|\$\{?(\w+)\}?|"([^"]*)"|\'([^\']*)\')')


def evaluate(expression: str, variables: Mapping[str, str]) -> bool:
    """Evaluate a rules ``if:``: ``$VAR == "value"``, bare ``$VAR`` (set and non-empty), ``&&`` binding
    tighter than ``||``. Anything else (parentheses, ``!=``, ``=~``, ``null``) raises ValueError, so a
    rule this evaluator does not understand fails the tests instead of being misjudged."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        match = TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"unsupported syntax at {text[pos:]!r} in {expression!r}")
        operator, equals, var, dq, sq = match.groups()
        if operator or equals:
            tokens.append(("op", operator or equals))
        elif var is not None:
            tokens.append(("var", var))
        else:
            tokens.append(("str", dq if dq is not None else sq))
        pos = match.end()

    def comparison(part: list[tuple[str, str]]) -> bool:
        if len(part) == 1 and part[0][0] == "var":
            return bool(variables.get(part[0][1]))
        if len(part) == 3 and part[0][0] == "var" and part[1] == ("op", "==") and part[2][0] == "str":
            return variables.get(part[0][1]) == part[2][1]
        raise ValueError(f"unsupported comparison {part} in {expression!r}")

    def split(part: list[tuple[str, str]], operator: str) -> list[list[tuple[str, str]]]:
        groups: list[list[tuple[str, str]]] = [[]]
        for token in part:
            if token == ("op", operator):
                groups.append([])
            else:
                groups[-1].append(token)
        return groups

    return any(all(comparison(c) for c in split(d, "&&")) for d in split(tokens, "||"))


def matching_rule(rules: list[Mapping[str, Any]], variables: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The rule that decides, or None when no rule matches or the first match says ``when: never``."""
    for rule in rules:
        if "if" not in rule or evaluate(rule["if"], variables):
            return None if rule.get("when") == "never" else rule
    return None


def pipeline_created(doc: Mapping[str, Any], variables: Mapping[str, str]) -> bool:
    return matching_rule(doc["workflow"]["rules"], variables) is not None


def job_when(doc: Mapping[str, Any], name: str, variables: Mapping[str, str]) -> str | None:
    """How the job is added to a pipeline with these variables (on_success, manual, always, ...), or None."""
    if not pipeline_created(doc, variables):
        return None
    rules = resolve(doc, name).get("rules")
    if rules is None:
        return "on_success"
    rule = matching_rule(rules, variables)
    return None if rule is None else str(rule.get("when", "on_success"))


# --- invoke command lines ------------------------------------------------------------------------------------


def shell_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a script line, split on ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def script_lines(job: Mapping[str, Any], keys: tuple[str, ...] = SCRIPT_KEYS) -> list[str]:
    """The job's script lines in the order the runner runs them, nested lists (YAML anchors of lists, which
    GitLab flattens) flattened."""
    lines: list[str] = []

    def add(item: Any) -> None:
        if isinstance(item, str):
            lines.append(item)
        else:
            for each in item:
                add(each)

    for key in keys:
        add(job.get(key, []))
    return lines


def invoke_commands(doc: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(job, arguments after ``invoke``) for every invoke command in every job's scripts."""
    for name in job_names(doc):
        for line in script_lines(resolve(doc, name)):
            for command in shell_commands(line):
                if command[0] == "invoke":
                    yield name, command[1:]


def check_invoke_args(args: list[str], ns: Collection) -> list[str]:
    """Problems with one ``invoke TASK [--flag [VALUE]] ... [TASK ...]`` command line, parsed the way
    Invoke would: known tasks, their flags (long ``--dry-run``, ``--x=v``, short ``-d``, ``--no-x`` for
    booleans that default to true), values for non-boolean flags, positional arguments, several tasks in
    a row."""
    if not args or args[0].startswith("-"):
        return [f"invoke {shlex.join(args)}: expected a task name first (core options are not checked)"]
    problems: list[str] = []
    i = 0
    while i < len(args):
        name = args[i]
        i += 1
        if name not in ns.task_names:
            return [*problems, f"invoke {name}: no such task (tasks: {', '.join(sorted(ns.task_names))})"]
        arguments = ns[name].get_arguments()
        by_flag = {("--" if len(n) > 1 else "-") + n: a for a in arguments for n in a.names}
        positional = [a for a in arguments if a.positional]
        while i < len(args) and (args[i].startswith("-") or positional):
            token = args[i]
            i += 1
            if not token.startswith("-"):
                positional.pop(0)
                continue
            flag, has_value, _ = token.partition("=")
            argument = by_flag.get(flag)
            if argument is None and flag.startswith("--no-"):  # Invoke's inverse of a flag that defaults to True
                negated = by_flag.get("--" + flag.removeprefix("--no-"))
                argument = negated if negated is not None and negated.default is True else None
            if argument is None:
                # Like Invoke, stop at the first unknown flag: whether it takes a value is unknowable.
                return [*problems, f"invoke {name}: unknown flag {flag} (flags: {', '.join(sorted(by_flag))})"]
            if argument in positional:
                positional.remove(argument)
            if argument.kind is not bool and not has_value:
                if i >= len(args):
                    problems.append(f"invoke {name}: {flag} needs a value")
                i += 1
        # Anything left is the next task of the same command line.
    return problems


def invoke_problems(doc: Mapping[str, Any], ns: Collection) -> list[str]:
    return [f"{job}: {p}" for job, args in invoke_commands(doc) for p in check_invoke_args(args, ns)]


@pytest.fixture(scope="module")
def ns() -> Collection:
    # tasks.py at the repository root (on sys.path with python -m pytest, or PYTHONPATH=.); imported by
    # name so that type-checking this file does not type-check tasks.py.
    collection = importlib.import_module("tasks").ns
    assert isinstance(collection, Collection)
    return collection


def commands_of(doc: Mapping[str, Any], job: str, task: str) -> list[list[str]]:
    return [args for name, args in invoke_commands(doc) if name == job and args[0] == task]


def option(args: list[str], flag: str) -> str:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in an argument list."""
    for i, token in enumerate(args):
        if token == flag and i + 1 < len(args):
            return args[i + 1]
        if token.startswith(flag + "="):
            return token.partition("=")[2]
    raise AssertionError(f"{flag} not in {shlex.join(args)}")


def gce_environments() -> dict[str, list[str]]:
    settings = cli.project_settings()
    return {name: list(env.variants) for name, env in settings.config.environments.items() if env.target == "gce"}


# --- the schema ----------------------------------------------------------------------------------------------


def test_file_is_valid_against_gitlabs_ci_schema(ci: dict[str, Any], validator: jsonschema.protocols.Validator) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(ci)]
    assert errors == []


def broken_matrix(doc: dict[str, Any]) -> None:
    doc["bake"]["parallel"] = {"matrix": "x"}


def misspelt_keyword(doc: dict[str, Any]) -> None:
    doc["lint"]["scirpt"] = doc["lint"].pop("script")


def bad_when(doc: dict[str, Any]) -> None:
    doc["rollback"]["rules"][0]["when"] = "sometimes"


def stage_as_number(doc: dict[str, Any]) -> None:
    doc["validate"]["stage"] = 1


@pytest.mark.parametrize("breakage", [broken_matrix, misspelt_keyword, bad_when, stage_as_number])
def test_schema_rejects_broken_documents(
    ci: dict[str, Any], validator: jsonschema.protocols.Validator, breakage: Any
) -> None:
    broken = copy.deepcopy(ci)
    breakage(broken)
    assert list(validator.iter_errors(broken)), f"{breakage.__name__} passed the schema"


# --- the rules evaluator -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('$CI_PIPELINE_SOURCE == "push"', True),
        ("$CI_PIPELINE_SOURCE == 'schedule'", False),
        ('${CI_PIPELINE_SOURCE} == "push"', True),
        ("$CI_COMMIT_BRANCH", True),
        ("$CI_OPEN_MERGE_REQUESTS", False),
        ("$EMPTY", False),
        ('$CI_COMMIT_BRANCH && $CI_PIPELINE_SOURCE == "schedule"', False),
        ('$CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH == "feature"', True),
        # && binds tighter than ||: true || (false && false)
        ("$CI_COMMIT_BRANCH || $EMPTY && $CI_OPEN_MERGE_REQUESTS", True),
        # (false && true) || false
        ('$EMPTY && $CI_COMMIT_BRANCH || $CI_PIPELINE_SOURCE == "web"', False),
    ],
)
def test_evaluator(expression: str, expected: bool) -> None:
    assert evaluate(expression, {**PUSH, "EMPTY": ""}) is expected


@pytest.mark.parametrize(
    "expression", ['$A != "x"', '($A == "x")', "$A =~ /x/", "$A == null", '"x" == $A', "$A ==", "$A $B"]
)
def test_evaluator_refuses_what_it_does_not_understand(expression: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        evaluate(expression, {"A": "x"})


# --- when each job runs --------------------------------------------------------------------------------------


def test_workflow_runs_for_merge_requests_pushes_schedules_and_web(ci: dict[str, Any]) -> None:
    for variables in (PUSH, TAG_PUSH, MERGE_REQUEST, SCHEDULE, WEB):
        assert pipeline_created(ci, variables), variables
    # A push to a branch with an open merge request gets the merge request pipeline only.
    assert not pipeline_created(ci, PUSH_WITH_OPEN_MR)
    # Other sources (API, triggers, parent pipelines, ...) start nothing.
    assert not pipeline_created(ci, {"CI_PIPELINE_SOURCE": "api", "CI_COMMIT_BRANCH": "main"})


def test_every_rule_is_understood_by_the_evaluator(ci: dict[str, Any]) -> None:
    rules = [*ci["workflow"]["rules"]]
    rules += [rule for name in job_names(ci) for rule in resolve(ci, name).get("rules", [])]
    for rule in rules:
        if "if" in rule:
            evaluate(rule["if"], {})


def check_jobs(ci: dict[str, Any]) -> list[str]:
    return [name for name in job_names(ci) if resolve(ci, name).get("stage") == "check"]


def test_check_jobs_run_on_push_and_merge_requests_never_on_schedules(ci: dict[str, Any]) -> None:
    assert sorted(check_jobs(ci)) == ["lint", "tests", "validate"]
    for name in check_jobs(ci):
        assert job_when(ci, name, PUSH) == "on_success", name
        assert job_when(ci, name, TAG_PUSH) == "on_success", name
        assert job_when(ci, name, MERGE_REQUEST) == "on_success", name
        assert job_when(ci, name, SCHEDULE) is None, name
        # Web runs are the rollback console: nothing may delay a rollback there.
        assert job_when(ci, name, WEB) is None, name


def test_bake_runs_only_on_schedules(ci: dict[str, Any]) -> None:
    assert ci["bake"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert {source: job_when(ci, "bake", v) for source, v in ALL_SOURCES.items()} == {
        "push": None,
        "merge_request_event": None,
        "schedule": "on_success",
        "web": None,
    }


def test_rollback_is_manual_and_never_automatic(ci: dict[str, Any]) -> None:
    assert job_when(ci, "rollback", SCHEDULE) == "manual"
    assert job_when(ci, "rollback", WEB) == "manual"
    assert job_when(ci, "rollback", PUSH) is None
    assert job_when(ci, "rollback", MERGE_REQUEST) is None
    assert resolve(ci, "rollback")["stage"] == "rollback"
    assert ci["stages"].index("rollback") > ci["stages"].index("bake")


def test_only_scheduled_and_web_pipelines_get_the_credentialed_runner(ci: dict[str, Any]) -> None:
    for name in job_names(ci):
        job = resolve(ci, name)
        if CREDENTIALED_TAG in job.get("tags", []):
            for variables in (PUSH, TAG_PUSH, MERGE_REQUEST):
                assert job_when(ci, name, variables) is None, (name, variables)
    for name in ("bake", "rollback"):
        assert CREDENTIALED_TAG in resolve(ci, name)["tags"], name


# --- image families: matrix, resource groups, reports --------------------------------------------------------


def matrix_variants(job: Mapping[str, Any]) -> list[str]:
    (row,) = job["parallel"]["matrix"]
    assert set(row) == {"VARIANT"}
    return list(row["VARIANT"])


def test_matrix_is_the_variants_of_the_gce_environments(ci: dict[str, Any]) -> None:
    environments = gce_environments()
    assert sorted(environments) == ["gprd", "gstg"]
    union = {variant for variants in environments.values() for variant in variants}
    for name in ("bake", "rollback"):
        variants = matrix_variants(resolve(ci, name))
        assert len(variants) == len(set(variants)), name
        assert set(variants) == union, name


def test_bakery_env_defaults_to_a_gce_environment(ci: dict[str, Any]) -> None:
    for name in ("bake", "rollback"):
        assert resolve(ci, name)["variables"]["BAKERY_ENV"] == "gstg"
    assert "gstg" in gce_environments()


def test_bake_and_rollback_of_a_family_share_one_resource_group(ci: dict[str, Any]) -> None:
    bake, rollback = resolve(ci, "bake")["resource_group"], resolve(ci, "rollback")["resource_group"]
    assert bake == rollback
    for variable in ("BAKERY_ENV", "VARIANT"):
        assert re.search(rf"\$\{{?{variable}\b", bake), f"{bake} does not name ${variable}"


def test_bake_runs_nightly_per_family_and_keeps_its_report(ci: dict[str, Any]) -> None:
    bake = resolve(ci, "bake")
    (args,) = commands_of(ci, "bake", "nightly")
    assert option(args, "--env") == "$BAKERY_ENV"
    assert option(args, "--variant") == "$VARIANT"
    report_dir = option(args, "--report-dir").rstrip("/")
    assert "$VARIANT" in report_dir  # matrix jobs must not share a report directory
    artifacts = bake["artifacts"]
    assert artifacts["reports"]["junit"] == f"{report_dir}/junit.xml"
    assert artifacts["when"] == "always"
    # The uploaded paths include the report directory (nightly.json/md, junit.xml, manifests/*.json).
    assert any(f"{report_dir}/".startswith(p.rstrip("/") + "/") for p in artifacts["paths"]), artifacts["paths"]
    assert artifacts["expire_in"]
    assert bake["timeout"]


def test_rollback_acts_on_the_family_of_its_matrix_job(ci: dict[str, Any]) -> None:
    (args,) = commands_of(ci, "rollback", "rollback")
    assert option(args, "--env") == "$BAKERY_ENV"
    assert option(args, "--variant") == "$VARIANT"
    assert "--dry-run" not in args


def test_lint_covers_every_gce_environment_strictly(ci: dict[str, Any]) -> None:
    commands = commands_of(ci, "lint", "lint")
    assert all("--strict" in args for args in commands)
    assert sorted(option(args, "--env") for args in commands) == sorted(gce_environments())
    assert commands_of(ci, "validate", "validate") == [["validate"]]


# --- the tests job runs the project's test command -----------------------------------------------------------


def test_tests_job_runs_the_projects_test_command_and_reports_junit(ci: dict[str, Any]) -> None:
    tests = resolve(ci, "tests")
    assert tests["script"] == ["scripts/test.sh"]
    # The same command as the README's and .ci/run's.
    assert re.search(r"^scripts/test\.sh\s+# tests:", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert "exec scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    addopts = shlex.split(tests["variables"]["PYTEST_ADDOPTS"])
    (junit_opt,) = [a for a in addopts if a.startswith("--junitxml=")]
    assert tests["artifacts"]["reports"]["junit"] == junit_opt.partition("=")[2]
    assert tests["artifacts"]["when"] == "always"


def test_setup_bootstraps_and_activates_the_venv_for_every_invoke_job(ci: dict[str, Any]) -> None:
    setup = ci[".bakery-setup"]["before_script"]
    assert setup[0] == "scripts/bootstrap.sh"
    # bootstrap.sh creates the venv in ${BAKERY_VENV:-.venv}.
    assert "VENV=${BAKERY_VENV:-.venv}" in (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert ". .venv/bin/activate" in setup
    for name in {job for job, _ in invoke_commands(ci)}:
        # The setup comes last: the bake job installs its tools first (.gce-tools).
        before = script_lines(resolve(ci, name), ("before_script",))
        assert before[-len(setup) :] == setup, name


# --- every invoke command names a real task and real flags ---------------------------------------------------


def test_every_invoke_command_uses_existing_tasks_and_flags(ci: dict[str, Any], ns: Collection) -> None:
    """Needs the tasks the pipeline calls (nightly among them) to exist in tasks.py."""
    assert {args[0] for _, args in invoke_commands(ci)} >= {"validate", "lint", "nightly", "rollback"}
    assert invoke_problems(ci, ns) == []


def test_invoke_checker_flags_unknown_tasks_and_flags(ns: Collection) -> None:
    doc = {
        "stages": ["check"],
        ".setup": {"before_script": ["invoke lint --env gstg --stricter"]},
        "job": {
            "extends": ".setup",
            "script": [
                "invoke bakee --env gstg",
                'invoke rollback --env "$BAKERY_ENV" --variant=debian-12 --dry-run',
                "true && invoke reap --dry-run --zone x",
                "invoke validate --env",
            ],
        },
    }
    problems = invoke_problems(doc, ns)
    assert [p.split(" (")[0] for p in problems] == [
        "job: invoke lint: unknown flag --stricter",
        "job: invoke bakee: no such task",
        "job: invoke reap: unknown flag --zone",
        "job: invoke validate: --env needs a value",
    ]
    assert problems[2].endswith("(flags: --dry-run, --env, -d, -e)")


def test_invoke_checker_accepts_invoke_syntax(ns: Collection) -> None:
    for line in [
        "invoke lint -e gstg -s --format=json --path a.conf --path b.conf",
        "invoke bake --dry-run --env gstg validate --env gprd",
        "invoke promote my-image --env gstg",
        "invoke promote --image my-image --dry-run",
    ]:
        (command,) = shell_commands(line)
        assert check_invoke_args(command[1:], ns) == [], line
    # --no-X only exists for flags that default to true; invoke options before the task are not checked.
    assert check_invoke_args(["bake", "--no-dry-run"], ns) != []
    assert check_invoke_args(["-f", "x.yaml", "bake"], ns) != []


def test_rollback_is_available_even_when_a_bake_failed(ci: dict[str, Any]) -> None:
    # A manual job in a later stage is skipped when an earlier stage failed, unless it needs nothing.
    assert resolve(ci, "rollback").get("needs") == []


def test_bake_job_outlasts_bakerys_own_timeouts(ci: dict[str, Any]) -> None:
    timeouts = cli.project_settings().config.timeouts
    own = timeouts.packer_validate + timeouts.packer_build + timeouts.boot + timeouts.image_tests
    timeout = resolve(ci, "bake")["timeout"]
    hours = int(timeout.removesuffix("h"))
    assert hours * 3600 >= own + 1800, f"bake timeout {timeout} leaves no room after bakery's {own:.0f} s"


def test_bake_reports_never_expire(ci: dict[str, Any]) -> None:
    # Unchanged families are skipped for months; the head's manifest must outlive them.
    assert resolve(ci, "bake")["artifacts"]["expire_in"] == "never"


# --- the bake job's tools: Packer and gcloud, from apt repositories whose keys are checked first ---------------

# The signing keys the pipeline trusts, defined once, here: keyring -> (key URL, fingerprint of the one key the
# keyring holds). .gitlab-ci.yml must use exactly these. (The images' own repositories, osquery and Fluentd, have
# their fingerprints in bakery/config.py; the pipeline does not use them.)
# - HashiCorp: the fingerprint HashiCorp's install instructions publish for https://apt.releases.hashicorp.com/gpg;
#   evidence found only in secondary copies of HashiCorp's install text.
# - Google: evidence is indirect, Google documents no fingerprint for packages.cloud.google.com. This key ("Artifact
#   Registry Repository Signer <artifact-registry-repository-signer@google.com>") is the only Google key trusted by
#   a Debian 12 machine image on which google-cloud-cli 528.0.0-0 was installed from packages.cloud.google.com
#   (cloud-sdk-bookworm), and the only key of the keyring Google's Debian image builder uses for that host
#   (GoogleCloudPlatform/compute-image-tools 2c616c1a, daisy_workflows/image_build/debian/fai_config/files/etc/apt/
#   keyrings/google-keyring.gpg/TRIXIE). apt-key.gpg also holds an older "Rapture Automatic Signing Key",
#   A362B822F6DEDC652817EA46B53DC80D13EDEF05 (kubernetes/release#3102), which the pipeline does not trust.
HASHICORP_FINGERPRINT = "798AEC654E5C15428C8E42EEAA16FCBCA621E701"
GOOGLE_CLOUD_FINGERPRINT = "35BAA0B33E9EB396F59CA838C0BA5CE6DC6315A3"
TRUSTED_KEYS = {
    "/usr/share/keyrings/hashicorp-archive-keyring.gpg": (
        "https://apt.releases.hashicorp.com/gpg",
        HASHICORP_FINGERPRINT,
    ),
    "/usr/share/keyrings/cloud.google.gpg": (
        "https://packages.cloud.google.com/apt/doc/apt-key.gpg",
        GOOGLE_CLOUD_FINGERPRINT,
    ),
}
HASHICORP_APT = "https://apt.releases.hashicorp.com"  # one suite per Debian release
GOOGLE_CLOUD_APT = "https://packages.cloud.google.com/apt"
GOOGLE_CLOUD_SUITE = "cloud-sdk"  # the suite Google documents for Debian, the same for every release
DEBIAN_CODENAMES = {"debian:12": "bookworm"}

KEYRING_DIRS = ("/usr/share/keyrings/", "/etc/apt/keyrings/", "/etc/apt/trusted.gpg")
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "!", "{", "}", "(", ")", "do", "done", "while", "until"}
FUNCTION_RE = re.compile(r"^\s*(\w+)\(\)\s*[({]\s*$")
POSITIONAL_RE = re.compile(r"(\w+=)?\$\{?([1-9])\}?")
DEB_RE = re.compile(r"deb (?:\[(?P<options>[^]]*)\] )?(?P<uri>\S+) (?P<suite>\S+) (?P<components>.+)")

# A simple command and the operator joining it to the one before it on its line ("", "|", "||", "&&", ";", "&").
Command = tuple[str, list[str]]


def line_commands(line: str) -> list[Command]:
    """The simple commands of one physical line, each with the operator before it; leading shell keywords
    (``if``, ``!``, ``{``, ...) dropped, redirections (``>``, ``<``) kept as words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[Command] = []
    operator, argv = "", list[str]()
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            if argv:
                commands.append((operator, argv))
            operator, argv = token, []
        elif argv or token not in SHELL_KEYWORDS:
            argv.append(token)
    if argv:
        commands.append((operator, argv))
    return commands


def substitute(word: str, args: list[str]) -> str:
    """``$N`` or ``NAME=$N`` (a whole word) with the function's N-th argument; any other word unchanged."""
    match = POSITIONAL_RE.fullmatch(word)
    if match is None or int(match.group(2)) > len(args):
        return word
    return (match.group(1) or "") + args[int(match.group(2)) - 1]


def program(lines: list[str]) -> list[list[Command]]:
    """A script as the shell runs it, one entry per physical line. The shell functions it defines (``name() (``
    or ``name() {`` up to a line that is only ``)`` or ``}``) are expanded where they are called, with their
    positional parameters substituted."""
    functions: dict[str, list[list[Command]]] = {}
    body: list[list[Command]] | None = None
    steps: list[list[Command]] = []
    for physical in (part for line in lines for part in line.splitlines()):
        if body is not None:
            if physical.strip() in {")", "}"}:
                body = None
            elif parsed := line_commands(physical):
                body.append(parsed)
            continue
        if match := FUNCTION_RE.match(physical):
            body = functions[match.group(1)] = []
            continue
        parsed = line_commands(physical)
        if parsed and parsed[0][1][0] in functions:
            name, *args = parsed[0][1]
            steps += [[(op, [substitute(w, args) for w in argv]) for op, argv in step] for step in functions[name]]
        elif parsed:
            steps.append(parsed)
    return steps


def option_value(argv: list[str], *flags: str) -> str | None:
    """The value of ``FLAG VALUE`` (or ``--flag=VALUE``) in a command, or None."""
    for i, word in enumerate(argv):
        if word in flags and i + 1 < len(argv):
            return argv[i + 1]
        for flag in flags:
            if flag.startswith("--") and word.startswith(flag + "="):
                return word.partition("=")[2]
    return None


def in_keyring_dir(word: str) -> bool:
    return word.startswith(KEYRING_DIRS)


def fingerprint_check(step: list[Command]) -> tuple[str, str] | None:
    """(file, fingerprint) when the line compares a downloaded key's primary fingerprints with an expected one and
    refuses otherwise: ``gpg ... --show-keys --with-colons FILE | awk -v want=FINGERPRINT ... || { ...; exit N; }``
    with N not 0. Anything else is not a check (the executable test below runs the real one against keys)."""
    for i, (_, argv) in enumerate(step[:-2]):
        if argv[0] != "gpg" or "--show-keys" not in argv or "--with-colons" not in argv:
            continue
        operator, awk = step[i + 1]
        want = option_value(awk, "-v") or ""
        rest = step[i + 2 :]
        refuses = rest[0][0] == "||" and any(a[0] == "exit" and a[1:] not in ([], ["0"]) for _, a in rest)
        if operator == "|" and awk[0] == "awk" and want.startswith("want=") and refuses:
            return argv[-1], want.removeprefix("want=")
    return None


@dataclass
class AptSetup:
    """What a script does with apt: the keyrings it writes from keys checked by fingerprint, the sources it adds,
    its updates and installs (by line), and every way it trusts a key without checking it (``problems``)."""

    problems: list[str] = field(default_factory=list)
    keyrings: dict[str, tuple[str, str]] = field(default_factory=dict)  # keyring -> (key URL, fingerprint)
    sources: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # uri, suite, components, options
    updates: list[int] = field(default_factory=list)
    installs: list[tuple[int, list[str]]] = field(default_factory=list)  # package arguments of apt-get install


def apt_setup(steps: list[list[Command]]) -> AptSetup:
    """Follow each key from its download to its keyring: a file downloaded (``curl --output``) must pass a
    fingerprint check before it is imported or dearmored, a keyring may only be written from a checked key (one
    ``gpg --export FINGERPRINT`` of a checked import, or ``gpg --dearmor`` of a checked file), and every apt
    source must be ``signed-by`` such a keyring. Any other write into a keyring directory is a problem."""
    apt = AptSetup()
    downloaded: dict[str, str] = {}  # file -> URL
    checked: dict[str, tuple[str, str]] = {}  # file -> (URL, fingerprint), until the file is downloaded again
    imported: dict[str, dict[str, str]] = {}  # gpg homedir -> fingerprint -> URL of the checked keys imported
    for index, step in enumerate(steps):
        if (check := fingerprint_check(step)) is not None:
            file, fingerprint = check
            if file in downloaded:
                checked[file] = (downloaded[file], fingerprint)
            else:
                apt.problems.append(f"checks {file}, which was not downloaded")
            continue
        for _, argv in step:
            where = f"{shlex.join(argv)!r}"
            redirect = next((argv[i + 1] for i, w in enumerate(argv[:-1]) if w in {">", ">>"}), None)
            output = option_value(argv, "--output", "-o") or redirect
            home = option_value(argv, "--homedir") or "~/.gnupg"
            if argv[0] == "curl" and output and not in_keyring_dir(output):
                urls = [w for w in argv if w.startswith(("https://", "http://"))]
                downloaded[output] = urls[-1] if urls else "?"
                checked.pop(output, None)
            elif argv[0] == "gpg" and "--import" in argv:
                if argv[-1] in checked:
                    url, fingerprint = checked[argv[-1]]
                    imported.setdefault(home, {})[fingerprint] = url
                else:
                    apt.problems.append(f"{where}: imports {argv[-1]} before checking its fingerprint")
            elif argv[0] == "gpg" and "--export" in argv:
                after = argv[argv.index("--export") + 1 :]
                keys = [w for w in after[: after.index(">")] if not w.startswith("-")] if ">" in after else after
                if len(keys) != 1 or keys[0] not in imported.get(home, {}):
                    apt.problems.append(f"{where}: exports {keys or 'every key'}, not one key checked by fingerprint")
                elif output and in_keyring_dir(output):
                    apt.keyrings[output] = (imported[home][keys[0]], keys[0])
            elif argv[0] == "gpg" and "--dearmor" in argv:
                armored = next((argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "<"), argv[-1])
                if armored not in checked:
                    apt.problems.append(f"{where}: dearmors {armored} before checking its fingerprint")
                elif output and in_keyring_dir(output):
                    apt.keyrings[output] = checked[armored]
            elif argv[0] in {"echo", "printf"} and redirect and redirect.startswith("/etc/apt/sources.list"):
                for match in filter(None, (DEB_RE.fullmatch(w) for w in argv[1:])):
                    entry = match.groupdict()
                    options = dict(o.partition("=")[::2] for o in (entry.pop("options") or "").split())
                    keyring = options.get("signed-by", "")
                    if options.get("trusted") == "yes" or keyring not in apt.keyrings:
                        apt.problems.append(f"{where}: not signed-by a keyring of a key checked by fingerprint")
                    apt.sources.append((index, {**entry, "signed-by": keyring}))
            elif argv[0] == "apt-get" and "update" in argv:
                apt.updates.append(index)
            elif argv[0] == "apt-get" and "install" in argv:
                after = argv[argv.index("install") + 1 :]
                apt.installs.append((index, [w for w in after if not w.startswith("-")]))
            elif argv[0] == "apt-key" or (argv[0] != "chmod" and any(in_keyring_dir(w) for w in argv)):
                apt.problems.append(f"{where}: trusts a key without checking its fingerprint (or is not understood)")
    return apt


def bake_apt(doc: Mapping[str, Any]) -> AptSetup:
    return apt_setup(program(script_lines(resolve(doc, "bake"), ("before_script", "script"))))


def iap_environments() -> list[str]:
    """The GCE environments that bake through IAP (gce.use_iap, true by default), from the project's config."""
    environments = cli.project_settings().config.environments.items()
    return sorted(name for name, env in environments if env.target == "gce" and env.gce and env.gce.use_iap)


def installed_from(
    doc: Mapping[str, Any], package: str, *, pin: str, uri: str, suite: str, fingerprint: str
) -> list[str]:
    """Problems unless the bake job installs ``package=$PIN`` (once, nothing else of that name) after an
    ``apt-get update`` that follows adding the source ``uri suite``, signed-by a keyring holding ``fingerprint``."""
    apt = bake_apt(doc)
    pins = [(i, p) for i, packages in apt.installs for p in packages if re.split(r"[=/:]", p)[0] == package]
    if [p for _, p in pins] != [f"{package}=${pin}"]:
        return [f"bake: installs {[p for _, p in pins]}, not exactly {package}=${pin}"]
    install = pins[0][0]
    sources = [(i, s) for i, s in apt.sources if s["uri"].rstrip("/") == uri and i < install]
    if not sources:
        return [f"bake: installs {package} without adding {uri} first"]
    problems = []
    for i, source in sources:
        if source["suite"] != suite:
            problems.append(f"bake: {uri} suite {source['suite']}, expected {suite}")
        if apt.keyrings.get(source["signed-by"], ("", ""))[1] != fingerprint:
            problems.append(f"bake: {uri} is not signed-by a keyring holding {fingerprint}")
        if not any(i < update < install for update in apt.updates):
            problems.append(f"bake: no apt-get update between adding {uri} and installing {package}")
    return problems


def key_problems(doc: Mapping[str, Any]) -> list[str]:
    """Every key the bake job trusts was checked by fingerprint first, and the keys are the ones defined here."""
    apt = bake_apt(doc)
    problems = [f"bake: {p}" for p in apt.problems]
    if apt.keyrings != TRUSTED_KEYS:
        problems.append(f"bake: keyrings written from checked keys are {apt.keyrings}, expected {TRUSTED_KEYS}")
    return problems


def packer_problems(doc: Mapping[str, Any]) -> list[str]:
    """Packer comes from HashiCorp's apt repository at exactly $PACKER_VERSION, new enough for the plugins."""
    job = resolve(doc, "bake")
    version = str(job.get("variables", {}).get("PACKER_VERSION", ""))
    problems = []
    # HashiCorp's .deb packages are VERSION-1 (hashicorp/packer .release/packer-artifacts.hcl).
    if (match := re.fullmatch(r"(\d+)\.(\d+)\.(\d+)-1", version)) is None:
        problems.append(f"bake: PACKER_VERSION {version!r} is not a version of HashiCorp's packages (X.Y.Z-1)")
    else:
        parsed = tuple(int(part) for part in match.groups())
        if parsed[:2] < (1, 7) or parsed < PLUGINS_SINCE:
            problems.append(
                f"bake: PACKER_VERSION {version} is older than {'.'.join(map(str, PLUGINS_SINCE))}: its googlecompute "
                "builder cannot open IAP tunnels (bakery/packer_plugins.py)"
            )
    image = job.get("image")
    image = image.get("name") if isinstance(image, Mapping) else image
    if (codename := DEBIAN_CODENAMES.get(str(image))) is None:
        return [*problems, f"bake: image {image}: which suite of {HASHICORP_APT} it needs is not known here"]
    return problems + installed_from(
        doc, "packer", pin="PACKER_VERSION", uri=HASHICORP_APT, suite=codename, fingerprint=HASHICORP_FINGERPRINT
    )


def gcloud_problems(doc: Mapping[str, Any]) -> list[str]:
    """With any environment baking through IAP, gcloud comes from Google's apt repository at $GCLOUD_VERSION."""
    if not iap_environments():
        return []
    version = str(resolve(doc, "bake").get("variables", {}).get("GCLOUD_VERSION", ""))
    problems = [] if re.fullmatch(r"\d+\.\d+\.\d+-\d+", version) else [f"bake: GCLOUD_VERSION {version!r}: no version"]
    return problems + installed_from(
        doc,
        "google-cloud-cli",
        pin="GCLOUD_VERSION",
        uri=GOOGLE_CLOUD_APT,
        suite=GOOGLE_CLOUD_SUITE,
        fingerprint=GOOGLE_CLOUD_FINGERPRINT,
    )


def plugin_cache_problems(doc: Mapping[str, Any]) -> list[str]:
    """PACKER_PLUGIN_PATH (where `packer init` installs plugins) is in the project directory and cached."""
    job = resolve(doc, "bake")
    path = str(job.get("variables", {}).get("PACKER_PLUGIN_PATH") or "")
    if not path.startswith("$CI_PROJECT_DIR/"):
        return [f"bake: PACKER_PLUGIN_PATH {path!r} is not in $CI_PROJECT_DIR, the only place GitLab caches"]
    caches = job.get("cache", [])
    paths = {p.rstrip("/") for cache in ([caches] if isinstance(caches, Mapping) else caches) for p in cache["paths"]}
    relative = path.removeprefix("$CI_PROJECT_DIR/").rstrip("/")
    return [] if relative in paths else [f"bake: PACKER_PLUGIN_PATH {relative} is not cached (cached: {sorted(paths)})"]


def test_bake_installs_packer_from_hashicorp_at_packer_version(ci: dict[str, Any]) -> None:
    assert packer_problems(ci) == []
    version = resolve(ci, "bake")["variables"]["PACKER_VERSION"]
    major, minor, patch = (int(p) for p in version.removesuffix("-1").split("."))
    assert (major, minor) >= (1, 7)
    assert (major, minor, patch) >= PLUGINS_SINCE


def test_every_key_is_checked_by_fingerprint_before_apt_trusts_it(ci: dict[str, Any]) -> None:
    assert key_problems(ci) == []
    assert {s["signed-by"] for _, s in bake_apt(ci).sources} == set(TRUSTED_KEYS)


def test_bake_installs_gcloud_for_the_iap_environments(ci: dict[str, Any]) -> None:
    # IAP is gce.use_iap's default, and gstg and gprd keep it: the IAP tunnels need gcloud.
    assert iap_environments() == ["gprd", "gstg"]
    assert gcloud_problems(ci) == []


def test_packer_plugin_path_is_set_and_cached(ci: dict[str, Any]) -> None:
    assert plugin_cache_problems(ci) == []
    # The bake job keeps the pip cache of .bakery-setup too (its cache list replaces that one).
    assert ci[".bakery-setup"]["cache"] in resolve(ci, "bake")["cache"]


def test_fingerprints_in_the_file_are_the_ones_defined_here(ci: dict[str, Any]) -> None:
    assert bake_apt(ci).keyrings == TRUSTED_KEYS
    assert set(re.findall(r"\b[0-9A-Fa-f]{40}\b", CI_FILE.read_text())) == {fp for _, fp in TRUSTED_KEYS.values()}


def test_only_the_bake_job_installs_gce_tools(ci: dict[str, Any]) -> None:
    setup = ci[".bakery-setup"]["before_script"]
    # reap and rollback only call Compute Engine's API (bakery/gce/reaper.py, pipeline.rollback): no Packer, no gcloud.
    for name in ("reap", "rollback"):
        job = resolve(ci, name)
        assert job["before_script"] == setup, name
        assert apt_setup(program(script_lines(job))).installs == [], name
    # The bake job installs its tools before the setup, so bootstrap.sh finds packer installed and keeps it.
    before = script_lines(resolve(ci, "bake"), ("before_script",))
    (install,) = [i for i, line in enumerate(before) if "packer=$PACKER_VERSION" in line]
    assert install < before.index("scripts/bootstrap.sh")


def test_credentials_come_from_the_runner_not_from_this_file(ci: dict[str, Any]) -> None:
    header = CI_FILE.read_text().partition("\nstages:")[0]
    # The header explains how gcloud (IAP) gets bakery's credentials: the same names bakery uses.
    assert gcloud.ADC_FILE in header
    assert gcloud.OVERRIDE in header
    variables = [ci.get("variables", {})] + [v.get("variables", {}) for v in ci.values() if isinstance(v, Mapping)]
    assert not any({gcloud.ADC_FILE, gcloud.OVERRIDE} & set(v) for v in variables)
    for name in job_names(ci):
        for line in script_lines(resolve(ci, name)):
            assert not re.search(rf"\b({gcloud.ADC_FILE}|{gcloud.OVERRIDE})=", line), (name, line)


# --- the checkers catch broken setups ------------------------------------------------------------------------


def edit_scripts(doc: dict[str, Any], edit: Callable[[str], str]) -> None:
    """Apply ``edit`` to every script line in the document, in place (YAML anchors share the lists)."""
    changed = 0
    seen: set[int] = set()

    def walk(node: Any) -> None:
        nonlocal changed
        if id(node) in seen:
            return
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in list(items):
            if isinstance(value, str) and isinstance(node, list) and (new := edit(value)) != value:
                node[key] = new
                changed += 1
            else:
                walk(value)

    walk(doc)
    assert changed, "the breakage changed nothing"


def replace(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def breakage(doc: dict[str, Any]) -> None:
        edit_scripts(doc, lambda line: line.replace(old, new))

    breakage.__name__ = f"replace {old!r} with {new!r}"
    return breakage


def drop_fingerprint_check(doc: dict[str, Any]) -> None:
    edit_scripts(doc, lambda line: "\n".join(p for p in line.splitlines() if "--show-keys" not in p))


def packer_1_6_6(doc: dict[str, Any]) -> None:
    doc["bake"].setdefault("variables", {})["PACKER_VERSION"] = "1.6.6-1"


def gcloud_unpinned(doc: dict[str, Any]) -> None:
    doc["bake"].setdefault("variables", {})["GCLOUD_VERSION"] = ""


def plugin_path_unset(doc: dict[str, Any]) -> None:
    doc["bake"].setdefault("variables", {})["PACKER_PLUGIN_PATH"] = ""


def plugin_path_in_home(doc: dict[str, Any]) -> None:
    doc["bake"].setdefault("variables", {})["PACKER_PLUGIN_PATH"] = "$HOME/.packer.d/plugins"


def plugin_path_not_cached(doc: dict[str, Any]) -> None:
    doc["bake"]["cache"] = {"key": "pip", "paths": [".cache/pip"]}


HASHICORP_CALL = f"trust_key /usr/share/keyrings/hashicorp-archive-keyring.gpg {HASHICORP_APT}/gpg"
GOOGLE_CALL = f"trust_key /usr/share/keyrings/cloud.google.gpg {GOOGLE_CLOUD_APT}/doc/apt-key.gpg"
GOOGLE_TRUSTS_HASHICORP = replace(f"{GOOGLE_CALL} {GOOGLE_CLOUD_FINGERPRINT}", f"{GOOGLE_CALL} {HASHICORP_FINGERPRINT}")


@pytest.mark.parametrize(
    ("breakage", "checker"),
    [
        (drop_fingerprint_check, key_problems),
        (drop_fingerprint_check, packer_problems),
        (replace("exit 1; }", "true; }"), key_problems),  # a check that refuses nothing
        # The key downloaded straight into the keyring, unchecked:
        (
            replace(
                f"{HASHICORP_CALL} {HASHICORP_FINGERPRINT}", f"curl -fsSLo /usr/share/keyrings/x {HASHICORP_APT}/gpg"
            ),
            key_problems,
        ),
        (GOOGLE_TRUSTS_HASHICORP, key_problems),
        (GOOGLE_TRUSTS_HASHICORP, gcloud_problems),
        (replace('--export "$3"', "--export"), key_problems),  # exports every key of the file
        (replace("[signed-by=/usr/share/keyrings/cloud.google.gpg]", "[trusted=yes]"), key_problems),
        (packer_1_6_6, packer_problems),
        (replace('"packer=$PACKER_VERSION"', "packer"), packer_problems),  # Debian's 1.6.6 or whatever is newest
        (replace("hashicorp.com bookworm main", "hashicorp.com bullseye main"), packer_problems),
        (replace(' "google-cloud-cli=$GCLOUD_VERSION"', ""), gcloud_problems),
        (gcloud_unpinned, gcloud_problems),
        (replace("apt-get update -q", "true"), gcloud_problems),
        (plugin_path_unset, plugin_cache_problems),
        (plugin_path_in_home, plugin_cache_problems),
        (plugin_path_not_cached, plugin_cache_problems),
    ],
    ids=lambda f: getattr(f, "__name__", None),
)
def test_gce_tool_checkers_catch_broken_setups(ci: dict[str, Any], breakage: Any, checker: Any) -> None:
    broken = copy.deepcopy(ci)
    breakage(broken)
    assert checker(broken), f"{breakage.__name__} passed {checker.__name__}"


def test_key_checker_follows_each_file_from_download_to_keyring() -> None:
    download = "curl -fsSL --output /tmp/k.asc https://example.org/key"
    check = (
        'gpg --show-keys --with-colons /tmp/k.asc | awk -F: -v want=ABCD \'$1 == "fpr" { found = 1 } '
        "END { exit !found }' || { echo refused >&2; exit 1; }"
    )
    dearmor = "gpg --dearmor --output /usr/share/keyrings/x.gpg /tmp/k.asc"
    source = (
        'echo "deb [signed-by=/usr/share/keyrings/x.gpg] https://example.org/apt stable main"'
        " > /etc/apt/sources.list.d/x.list"
    )
    good = apt_setup(program([download, check, dearmor, source]))
    assert good.problems == []
    assert good.keyrings == {"/usr/share/keyrings/x.gpg": ("https://example.org/key", "ABCD")}
    for broken in (
        [download, dearmor, source],  # no check
        [download, check, download, dearmor, source],  # downloaded again after the check
        [download, check.replace("exit 1", "exit 0"), dearmor, source],  # the "check" refuses nothing
        [check, download, dearmor, source],  # checked before it was downloaded
        [download, check, source.replace("x.gpg", "y.gpg")],  # signed by a keyring nobody checked
        [download, check, "cp /tmp/k.asc /etc/apt/keyrings/x.asc"],  # a write the checker does not understand
    ):
        assert apt_setup(program(broken)).problems, broken


# --- trust_key, run: only the checked primary key reaches the keyring ----------------------------------------


def shell_function(doc: Mapping[str, Any], name: str) -> str:
    """The script line of the bake job that defines the shell function ``name``."""
    (line,) = [line for line in script_lines(resolve(doc, "bake")) if re.search(rf"^\s*{name}\(\)", line, re.M)]
    return line


def key_fingerprints(home: Path, *command: str) -> dict[str, list[str]]:
    """{"pub": primary key fingerprints, "sub": subkey fingerprints} in what ``gpg --with-colons COMMAND`` shows
    (``--show-keys FILE``: a key file's; ``--list-keys``: the keyring's)."""
    gpg = ["gpg", "--homedir", str(home), "--with-colons", *command]
    shown = subprocess.run(gpg, check=True, capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {"pub": [], "sub": []}
    kind = ""
    for row in (line.split(":") for line in shown.splitlines()):
        if row[0] in found:
            kind = row[0]
        elif row[0] == "fpr" and kind:
            found[kind].append(row[9])
            kind = ""
    return found


@pytest.mark.skipif(not all(map(shutil.which, ("bash", "gpg", "gpgconf"))), reason="needs bash and GnuPG")
def test_trust_key_keeps_only_the_checked_primary_key(ci: dict[str, Any], tmp_path: Path) -> None:
    """The pipeline's trust_key, run (curl stood in for) on a file of two keys, like Google's apt-key.gpg."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    keys = tmp_path / "apt-key.asc"
    try:
        for uid in ("Older <older@example.invalid>", "Wanted <wanted@example.invalid>"):
            subprocess.run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True)
        older, wanted = key_fingerprints(home, "--list-keys")["pub"]
        subprocess.run([*gpg, "--quick-add-key", older, "cv25519", "encr", "never"], check=True)
        keys.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    (subkey,) = key_fingerprints(home, "--show-keys", str(keys))["sub"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        "#!/bin/sh\n# stands in for curl: copies $STUB_KEY to the --output file\nwhile [ $# -gt 0 ]; do\n"
        '  if [ "$1" = --output ]; then cp "$STUB_KEY" "$2"; exit 0; fi\n  shift\ndone\nexit 2\n'
    )
    (bin_dir / "curl").chmod(0o755)
    keyring = tmp_path / "keyring.gpg"
    call = 'trust_key "$KEYRING" https://keys.example.invalid/apt-key.gpg "$WANT"'
    script = f"{shell_function(ci, 'trust_key')}\n{call}\n"

    def trust(fingerprint: str, served: Path = keys) -> subprocess.CompletedProcess[str]:
        keyring.unlink(missing_ok=True)
        path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        env = {**os.environ, "PATH": path, "STUB_KEY": str(served), "KEYRING": str(keyring), "WANT": fingerprint}
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)

    done = trust(wanted)
    assert done.returncode == 0, done.stderr
    assert key_fingerprints(home, "--show-keys", str(keyring)) == {"pub": [wanted], "sub": []}
    assert keyring.stat().st_mode & 0o777 == 0o644
    not_a_key = tmp_path / "not-a-key.html"
    not_a_key.write_text("<html>404</html>\n")
    for refused, served in ((subkey, keys), ("0" * 40, keys), (wanted.lower()[:-1] + "0", keys), (wanted, not_a_key)):
        result = trust(refused, served)
        assert result.returncode == 1, (refused, served)
        assert "refusing it" in result.stderr
        assert not keyring.exists()
