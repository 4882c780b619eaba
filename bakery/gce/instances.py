"""The GCE test instance: built from the candidate image, reached over SSH, and always deleted.

Pure builders (the instance resource, the ``ssh-keys`` metadata, the IAP ProxyCommand, the ssh_config)
are kept apart from :func:`booted_instance`, which creates the instance (in the first zone of
``gce.zones`` with capacity, see bakery/gce/zones.py), waits for RUNNING and deletes it on every exit path
(success, error, timeout, Ctrl-C, SIGTERM inside ``proc.sigterm_raises``), polling the delete operation
through the same endpoint. An instance that survives anyway (SIGKILL, lost network) carries
``bakery-run-id``/``bakery-expires`` labels and a ``maxRunDuration`` with termination action DELETE, so GCE
deletes it itself and ``invoke reap`` finds it.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery import gcloud, proc, ssh
from bakery.config import GceSettings, zone_region
from bakery.errors import CommandError, RegistryError, VMError
from bakery.gce import zones as gce_zones
from bakery.gce.client import ComputeApiError, ComputeClients
from bakery.target import ZoneAttempt

TEST_USER = "bakery-test"
SSH_PORT = 22
Say = Callable[[str], None]


def instance_name(run_id: str) -> str:
    """``bakery-test-RUNID``, within GCE's 63 characters."""
    return f"bakery-test-{run_id}"[:63].rstrip("-")


def ssh_keys_metadata(user: str, public_key: str) -> str:
    """The ``ssh-keys`` metadata value ``USER:TYPE KEY USER`` (the guest agent creates USER, with sudo)."""
    fields = public_key.split()
    if len(fields) < 2:
        raise VMError(f"not an OpenSSH public key: {public_key[:40]!r}")
    return f"{user}:{fields[0]} {fields[1]} {user}"


def _network_link(network: str) -> str:
    return network if "/" in network else f"global/networks/{network}"


def _subnetwork_link(subnetwork: str, zone: str) -> str:
    return subnetwork if "/" in subnetwork else f"regions/{zone_region(zone)}/subnetworks/{subnetwork}"


def instance_resource(
    *,
    name: str,
    zone: str,
    source_image: str,
    settings: GceSettings,
    labels: Mapping[str, str],
    user: str,
    public_key: str,
    max_run_seconds: int,
) -> compute_v1.Instance:
    """The test instance: boot disk from ``source_image`` (deleted with the instance, same labels), no
    external IP when ``omit_external_ip``, only our key (project keys blocked, OS Login off), Shielded VM
    as configured, the builder's service account if one is configured (else none), and a run-time limit
    after which GCE deletes it."""
    nic = compute_v1.NetworkInterface(network=_network_link(settings.network))
    if settings.subnetwork:
        nic.subnetwork = _subnetwork_link(settings.subnetwork, zone)
    if not settings.omit_external_ip:
        nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    instance = compute_v1.Instance(
        name=name,
        machine_type=f"zones/{zone}/machineTypes/{settings.machine_type}",
        labels=dict(labels),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=source_image,
                    disk_size_gb=settings.disk_size_gb,
                    disk_type=f"zones/{zone}/diskTypes/{settings.disk_type}",
                    labels=dict(labels),
                ),
            )
        ],
        network_interfaces=[nic],
        metadata=compute_v1.Metadata(
            items=[
                compute_v1.Items(key="ssh-keys", value=ssh_keys_metadata(user, public_key)),
                compute_v1.Items(key="block-project-ssh-keys", value="true"),
                compute_v1.Items(key="enable-oslogin", value="false"),
            ]
        ),
        shielded_instance_config=compute_v1.ShieldedInstanceConfig(
            enable_secure_boot=settings.secure_boot,
            enable_vtpm=settings.vtpm,
            enable_integrity_monitoring=settings.integrity_monitoring,
        ),
        scheduling=compute_v1.Scheduling(
            max_run_duration=compute_v1.Duration(seconds=max_run_seconds),
            instance_termination_action="DELETE",
        ),
    )
    # The test VM runs as its own identity (see GceSettings.test_service_account), never the builder's.
    if settings.test_service_account:
        instance.service_accounts = [
            compute_v1.ServiceAccount(email=settings.test_service_account, scopes=list(settings.scopes))
        ]
    return instance


def iap_proxy_command(instance: str, zone: str, project: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """argv of the ssh ProxyCommand tunnelling port 22 of ``instance`` through IAP, authenticated like
    bakery (``bakery.gcloud``: the credential file of ``GOOGLE_APPLICATION_CREDENTIALS`` in ``environ``)."""
    override = gcloud.override_for(os.environ if environ is None else environ)
    return [
        *(["env", *(f"{key}={value}" for key, value in sorted(override.items()))] if override else []),
        "gcloud",
        "compute",
        "start-iap-tunnel",
        instance,
        str(SSH_PORT),
        "--listen-on-stdin",
        f"--zone={zone}",
        f"--project={project}",
        "--verbosity=warning",
    ]


def render_ssh_config(
    *,
    alias: str,
    hostname: str,
    port: int,
    user: str,
    identity: Path,
    control_path: Path,
    proxy_command: Sequence[str] | None = None,
    connect_timeout: int = 10,
) -> str:
    """ssh_config text for ``alias`` -> ``hostname:port`` (optionally through ``proxy_command``), with the
    local target's settings: one multiplexed connection, this run's key only, host keys never recorded."""
    local = ssh.render_config(
        alias=alias, port=port, user=user, identity=identity, control_path=control_path, connect_timeout=connect_timeout
    )
    lines = local.splitlines(keepends=True)
    assert lines[1].strip() == "HostName 127.0.0.1", "bakery.ssh.render_config changed its layout"
    lines[1] = f"  HostName {hostname}\n"
    if proxy_command:
        lines.insert(2, f"  ProxyCommand {shlex.join(proxy_command)}\n")
    return "".join(lines)


def instance_address(instance: compute_v1.Instance, *, external: bool) -> str:
    """The first interface's external (NAT) address if ``external`` and present, else its internal one."""
    if not instance.network_interfaces:
        raise VMError(f"instance {instance.name} has no network interface")
    nic = instance.network_interfaces[0]
    if external and nic.access_configs and nic.access_configs[0].nat_i_p:
        return str(nic.access_configs[0].nat_i_p)
    if not nic.network_i_p:
        raise VMError(f"instance {instance.name} has no internal IP address yet")
    return str(nic.network_i_p)


def wait_for_ssh(config: Path, alias: str, *, timeout: float, interval: float = 2.0) -> float:
    """Poll ``ssh -F config alias true`` until it succeeds; return the seconds it took, or raise VMError."""
    started = time.monotonic()
    deadline = started + timeout
    last_error = ""
    while True:
        left = deadline - time.monotonic()
        try:
            result = proc.run(ssh.ssh_argv(config, alias, ["true"]), timeout=max(1.0, min(30.0, left)), check=False)
            if result.returncode == 0:
                return time.monotonic() - started
            last_error = result.tail
        except CommandError as exc:
            last_error = str(exc)
        if time.monotonic() + interval >= deadline:
            detail = f" (last ssh error: {last_error.strip()})" if last_error.strip() else ""
            raise VMError(f"{alias} did not answer SSH within {timeout:.0f} s{detail}")
        time.sleep(interval)


class Instances:
    """Create, watch and delete instances in ``zone`` (default: the clients' zone)."""

    def __init__(self, clients: ComputeClients) -> None:
        self.clients = clients

    def create(self, resource: compute_v1.Instance, *, zone: str | None = None) -> None:
        request = compute_v1.InsertInstanceRequest(
            project=self.clients.project, zone=zone or self.clients.zone, instance_resource=resource
        )
        self.clients.mutate(f"instance {resource.name!r}", self.clients.instances.insert_unary, request)

    def get(self, name: str, *, zone: str | None = None) -> compute_v1.Instance:
        request = compute_v1.GetInstanceRequest(
            project=self.clients.project, zone=zone or self.clients.zone, instance=name
        )
        return self.clients.call(f"instance {name!r}", self.clients.instances.get, request)

    def wait_running(
        self, name: str, *, timeout: float, interval: float = 2.0, zone: str | None = None
    ) -> compute_v1.Instance:
        """The instance once its status is RUNNING; VMError if it is not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            instance = self.get(name, zone=zone)
            if instance.status == "RUNNING":
                return instance
            if instance.status in ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDED"):
                raise VMError(f"instance {name} is {instance.status}, not RUNNING")
            if time.monotonic() + interval >= deadline:
                raise VMError(f"instance {name} not RUNNING within {timeout:.0f} s (status {instance.status})")
            time.sleep(interval)

    def serial_output(self, name: str, *, zone: str | None = None) -> str:
        """Serial port 1 so far ('' if it cannot be read: this is only for diagnostics)."""
        request = compute_v1.GetSerialPortOutputInstanceRequest(
            project=self.clients.project, zone=zone or self.clients.zone, instance=name
        )
        try:
            return self.clients.call(
                f"instance {name!r}", self.clients.instances.get_serial_port_output, request
            ).contents
        except RegistryError:
            return ""

    def delete(self, name: str, *, zone: str | None = None) -> bool:
        """Delete ``name`` and wait for it; False if it did not exist."""
        request = compute_v1.DeleteInstanceRequest(
            project=self.clients.project, zone=zone or self.clients.zone, instance=name
        )
        try:
            self.clients.mutate(f"instance {name!r}", self.clients.instances.delete_unary, request)
        except ComputeApiError as exc:
            if isinstance(exc.__cause__, api_exceptions.NotFound):
                return False
            raise
        return True


def zone_of(instance: compute_v1.Instance) -> str:
    """The zone an instance is in (its ``zone`` field is the zone's URL)."""
    return str(instance.zone).rsplit("/", 1)[-1]


@contextmanager
def booted_instance(
    instances: Instances,
    resource_for: Callable[[str], compute_v1.Instance],
    *,
    zones: Sequence[str],
    boot_timeout: float,
    serial_log: Path,
    say: Say,
    attempts: list[ZoneAttempt] | None = None,
) -> Iterator[compute_v1.Instance]:
    """Create ``resource_for(zone)`` in the first of ``zones`` with capacity, yield it once RUNNING (its
    ``zone`` field names the zone it is in), and always delete it (saving its serial output to
    ``serial_log`` first). A zone without capacity (bakery/gce/zones.py) is cleaned up after (the instance
    is deleted if the failed insert left one) and the next zone is tried; a quota or any other error fails
    at once; when no zone is left, NoCapacityError names each zone and why. Each zone tried is appended
    to ``attempts`` (stage ``test``). A failed delete is reported and raised, unless another error is
    already on its way (then it is only reported: the first error is the one to see)."""
    tried = attempts if attempts is not None else []
    first = len(tried)
    current: tuple[str, str] | None = None  # (name, zone) of the instance that may exist
    failing = False
    try:
        for index, zone in enumerate(zones):
            resource = resource_for(zone)
            current = (resource.name, zone)
            tried.append(ZoneAttempt("test", zone, ""))
            say(f"creating test instance {resource.name} in {zone}")
            try:
                instances.create(resource, zone=zone)
            except ComputeApiError as exc:
                failure = gce_zones.classify(str(exc))
                if failure is None or failure.kind != "capacity":
                    raise
                tried[-1] = ZoneAttempt("test", zone, failure.reason)
                current = None  # cleaned up here: a failed delete stops the stage, it is not tried twice
                with proc.signals_deferred():
                    _remove(instances, resource.name, zone, serial_log, say, raise_errors=True)
                if index + 1 == len(zones):
                    raise gce_zones.NoCapacityError(
                        gce_zones.exhausted_message("test instance", tried[first:])
                    ) from None
                say(f"test instance: zone {zone} has no capacity ({failure.reason}); trying {zones[index + 1]}")
                continue
            break
        assert current is not None  # zones is never empty (GceSettings.zone_order)
        name, zone = current
        instance = instances.wait_running(name, zone=zone, timeout=boot_timeout)
        say(f"test instance {name} is RUNNING in {zone}")
        yield instance
    except BaseException:
        failing = True
        raise
    finally:
        if current is not None:
            with proc.signals_deferred():
                _remove(instances, *current, serial_log, say, raise_errors=not failing)


def _remove(instances: Instances, name: str, zone: str, serial_log: Path, say: Say, *, raise_errors: bool) -> None:
    """Save ``name``'s serial output (if any) and delete it in ``zone``; a failed delete is reported, and
    raised if ``raise_errors``."""
    output = instances.serial_output(name, zone=zone)
    if output:
        serial_log.parent.mkdir(parents=True, exist_ok=True)
        serial_log.write_text(output)
    try:
        if instances.delete(name, zone=zone):
            say(f"test instance {name} deleted")
    except RegistryError as exc:
        say(f"ERROR: test instance {name} was not deleted: {exc}; `invoke reap` deletes it after its expiry")
        if raise_errors:
            raise
