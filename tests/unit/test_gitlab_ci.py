""".gitlab-ci.yml: valid against GitLab's CI schema, every ``invoke`` command line names a real task and
real flags, and the pipeline runs what it should when it should (checks on push/MR, bake on schedule,
manual rollback, one resource group per image family, JUnit reports where the commands write them)."""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from invoke.collection import Collection

from bakery import cli

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


def invoke_commands(doc: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(job, arguments after ``invoke``) for every invoke command in every job's scripts."""
    for name in job_names(doc):
        job = resolve(doc, name)
        for key in SCRIPT_KEYS:
            lines = job.get(key, [])
            for line in [lines] if isinstance(lines, str) else lines:
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
        assert resolve(ci, name).get("before_script") == setup, name


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
