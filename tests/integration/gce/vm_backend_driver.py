"""Child process for the VM backend's signal tests: the fake Compute API with the VM backend, one instance
inserted through the real client, then a wait for the test's signal, as the rehearsal runs it.

    python vm_backend_driver.py DISK WORKDIR

Prints ``BOOTED <qemu pid>`` once QEMU runs; exits 130 on Ctrl-C, 143 on SIGTERM (through
``proc.sigterm_raises``, as the CLI does), after the backend stopped its VMs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from google.cloud import compute_v1

from bakery import proc
from bakery.errors import Interrupted
from bakery.gce.client import ComputeClients
from bakery.gce.instances import Instances
from tests.fakes.compute import FakeCompute
from tests.fakes.vmbackend import VmBackend

ZONE = "europe-west1-b"


def say(message: str) -> None:
    print(message, flush=True)


def main(disk: Path, workdir: Path) -> int:
    fake = FakeCompute(project="bakery-test")
    fake.seed_image("local", "local", local_disk=disk)
    backend = VmBackend(workdir, memory_mb=1024, cpus=1, log=say)
    fake.vm_backend = backend
    try:
        with proc.sigterm_raises(), fake.serve(), backend.running():
            clients = ComputeClients.create(fake.project, ZONE, endpoint=fake.endpoint)
            instance = compute_v1.Instance(
                name="signalled",
                machine_type=f"zones/{ZONE}/machineTypes/e2-small",
                disks=[
                    compute_v1.AttachedDisk(
                        boot=True,
                        auto_delete=True,
                        initialize_params=compute_v1.AttachedDiskInitializeParams(source_image="global/images/local"),
                    )
                ],
                network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
            )
            Instances(clients).create(instance, zone=ZONE)
            say(f"BOOTED {backend.pids[0]}")
            time.sleep(600)
    except KeyboardInterrupt:
        say("INTERRUPTED")
        return 130
    except Interrupted as exc:  # sigterm_raises: the first SIGTERM
        say("TERMINATED")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
