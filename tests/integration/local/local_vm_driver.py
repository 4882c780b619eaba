"""Child process for the signal tests: drives the local machinery the way the CLI does.

    python local_vm_driver.py vm DISK KEY USER WORKDIR SUITE|- BOOT_TIMEOUT
    python local_vm_driver.py base CACHE_DIR

Prints progress lines (flushed) and exits like the CLI: 0, BakeryError.exit_code, or 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bakery import proc
from bakery.errors import BakeryError
from bakery.imagetest import run_image_tests
from bakery.local.baseimage import ensure_base_image
from bakery.local.vm import boot_vm


def say(message: str) -> None:
    print(message, flush=True)


def drive_vm(args: list[str]) -> None:
    disk, key, user, workdir, suite, boot_timeout = args
    with boot_vm(
        Path(disk),
        accelerator="tcg",
        ssh_key=Path(key),
        user=user,
        workdir=Path(workdir),
        boot_timeout=float(boot_timeout),
        log=say,
    ) as vm:
        say("TESTS START")
        if suite != "-":
            outcome = run_image_tests(vm, Path(suite), Path(workdir) / "junit.xml", timeout=300)
            say(f"OUTCOME passed={outcome.passed} failed={outcome.failed}")


def main(argv: list[str]) -> int:
    try:
        with proc.sigterm_raises():
            if argv[0] == "vm":
                drive_vm(argv[1:])
            else:
                ensure_base_image(Path(argv[1]), timeout=1800, log=say)
    except KeyboardInterrupt:
        say("INTERRUPTED")
        return 130
    except BakeryError as exc:
        say(f"ERROR {exc}")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
