"""Run the image test suite (pytest-testinfra) over SSH against a booted machine, whatever the target.

A :class:`RunningVM` is any machine reachable as ``ssh -F ssh_config host``: a local QEMU VM or a GCE test
instance. :func:`run_image_tests` counts the JUnit results and reads the installed packages (the SBOM).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from bakery import identity, proc, ssh
from bakery.errors import CommandError, ConfigError


@dataclass(frozen=True)
class RunningVM:
    """A booted VM reachable as ``ssh -F ssh_config host``."""

    host: str
    ssh_config: Path
    pid: int
    port: int
    serial_log: Path
    workdir: Path

    def ssh_argv(self, command: list[str]) -> list[str]:
        return ssh.ssh_argv(self.ssh_config, self.host, command)

    def run(self, command: list[str], *, timeout: float, check: bool = True) -> proc.Completed:
        """Run ``command`` in the guest over the shared connection."""
        return proc.run(self.ssh_argv(command), timeout=timeout, check=check, what=f"ssh {self.host}")


@dataclass(frozen=True)
class Package:
    """One installed Debian package, as ``dpkg-query`` reports it."""

    name: str
    version: str
    architecture: str


DPKG_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"


def parse_dpkg_query(text: str) -> list[Package]:
    """Installed packages from ``dpkg-query -W -f=DPKG_FORMAT`` output, sorted by name and architecture."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[3] == "installed":
            packages.append(Package(*fields[:3]))
    return sorted(packages, key=lambda p: (p.name, p.architecture))


def capture_packages(vm: RunningVM, *, timeout: float = 120.0) -> list[Package]:
    """The VM's installed packages (dpkg-query over the VM's SSH connection); an empty list is an error."""
    result = vm.run(["dpkg-query", "-W", f"-f={DPKG_FORMAT}"], timeout=timeout)
    packages = parse_dpkg_query(result.output)
    if not packages:
        raise CommandError(vm.ssh_argv(["dpkg-query", "-W"]), 0, result.tail, what="package list (no packages)")
    return packages


@dataclass(frozen=True)
class TestOutcome:
    """Counts from a testinfra run's JUnit XML; ``failures`` lists the ids of failed and errored tests."""

    __test__ = False  # not a pytest test class

    passed: int
    failed: int
    skipped: int
    errors: int
    junit: Path
    log: Path
    failures: list[str] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)  # the SBOM, read from the VM after the suite

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0

    def summary(self) -> dict[str, object]:
        """The counts, failed test ids and JUnit path (for manifests and reports)."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": self.errors,
            "failures": self.failures,
            "junit": str(self.junit),
        }


def pytest_argv(vm: RunningVM, suite_dir: Path, junit_xml: Path, extra_args: Sequence[str]) -> list[str]:
    """The testinfra command: every check goes over the VM's multiplexed SSH connection."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite_dir),
        f"--hosts=ssh://{vm.host}",
        f"--ssh-config={vm.ssh_config}",
        f"--junitxml={junit_xml}",
        # Test ids relative to the suite, whatever the checkout or working directory.
        f"--rootdir={suite_dir}",
        "-p",
        "no:cacheprovider",
        *extra_args,
    ]


def run_image_tests(
    vm: RunningVM, suite_dir: Path, junit_xml: Path, *, timeout: float, extra_args: Sequence[str] = ()
) -> TestOutcome:
    """Run the testinfra suite in ``suite_dir`` against ``vm`` and count the results.

    Failing tests are a result, not an error: check ``outcome.ok``. A pytest usage/internal error, a
    timeout or a missing report raises CommandError. Output goes to ``junit_xml`` with suffix ``.log``.
    The image identity the pipeline wrote into the run directory (``junit_xml``'s, see
    bakery/identity.py ``RUN_FILE``) is passed as ``--identity``, for every target.
    """
    if not suite_dir.is_dir():
        raise ConfigError(f"image test suite directory {suite_dir} does not exist")
    junit_xml.parent.mkdir(parents=True, exist_ok=True)
    junit_xml.unlink(missing_ok=True)
    log_file = junit_xml.with_suffix(".log")
    identity_file = junit_xml.parent / identity.RUN_FILE
    if identity_file.is_file():
        extra_args = [*extra_args, f"--identity={identity_file}"]
    argv = pytest_argv(vm, suite_dir, junit_xml, extra_args)
    result = proc.run(
        argv,
        timeout=timeout,
        check=False,
        what="image tests (pytest)",
        output_file=log_file,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode not in (0, 1) or not junit_xml.is_file():
        raise CommandError(argv, result.returncode, result.tail, what=f"image tests (pytest, log {log_file})")
    outcome = parse_junit(junit_xml, log_file)
    try:
        packages = capture_packages(vm)
    except CommandError:
        if outcome.ok:  # a published image must come with its package list
            raise
        packages = []  # the image is not published anyway: keep the test result as the error
    return dataclasses.replace(outcome, packages=packages)


def parse_junit(junit_xml: Path, log_file: Path) -> TestOutcome:
    """Count passed/failed/skipped/errored test cases in a pytest JUnit XML report."""
    root = ElementTree.parse(junit_xml).getroot()  # noqa: S314 - our own pytest's report
    passed = failed = skipped = errors = 0
    failures: list[str] = []
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("error") is not None:
            errors += 1
            failures.append(test_id)
        elif case.find("failure") is not None:
            failed += 1
            failures.append(test_id)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return TestOutcome(passed, failed, skipped, errors, junit_xml, log_file, failures)
