"""The GCE target: Packer's googlecompute builder bakes into the CANDIDATE family, a test instance booted
from the candidate runs the image suite over SSH, and only a passing candidate is copied into the
production family (``publish``), after which older images are deprecated and retention applies.

Choices:

* Names. Image names are global to a project, so the candidate and the published copy cannot share one:
  the candidate is named after the candidate family (:func:`candidate_name`), the copy after the
  production family (the pipeline's ``image_name``).
* Candidates. The test stage labels the candidate with ``bakery-run-id``/``bakery-expires``. A candidate
  that passed is deleted after its copy is published (``discard``); one that failed is labelled
  ``bakery-failed=true`` with a week's expiry and left in the candidate family for inspection (``keep``);
  ``invoke reap`` deletes both kinds once expired. The run labels are not copied into the production image.
* The test instance logs in as ``bakery-test`` (created by the guest agent from the ``ssh-keys`` metadata,
  with passwordless sudo) with a key generated for the run; the suite runs with testinfra's ``--sudo``.
* Stand-in images are never published to GCE.
* Zones. The builder VM and the test VM are created in the first zone of ``gce.zones`` with capacity
  (bakery/gce/zones.py): Packer is re-run with the next zone as a runtime ``-var zone=…``, which overrides
  the variable file (Packer v1.6.6, commit 9b997f28, hcl2template/types.variables.go:644-689 appends
  ``-var`` values after the var-file's and ``Variable.Value`` (:164) takes the last; the same in v1.7.0),
  so the rendered tree and its fingerprint do not change. The plugin derives the region, hence the
  subnetwork, from the zone (packer-plugin-googlecompute v1.2.7 builder/googlecompute/config.go:692-696), and
  every zone is in one region (config validation).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery import packer_plugins, proc, render, ssh
from bakery.config import BuildSpec, GceSettings
from bakery.encode import label_value
from bakery.errors import ConfigError, PackerError, RegistryError
from bakery.gce import consumers as gce_consumers
from bakery.gce import instances as gce_instances
from bakery.gce import zones as gce_zones
from bakery.gce.client import ComputeApiError, ComputeClients, resolve_endpoint
from bakery.gce.instances import TEST_USER, Instances, booted_instance, instance_resource
from bakery.gce.store import GceImageStore
from bakery.images import ImageRecord, ImageStore
from bakery.imagetest import RunningVM, TestOutcome, run_image_tests
from bakery.target import Say, ZoneAttempt, git_sha

#: Labels of one run; never copied into a published image.
RUN_LABELS = frozenset({"bakery-run-id", "bakery-expires", "bakery-failed", "bakery-role"})
TEST_MARGIN_SECONDS = 600  # on top of boot + test timeouts, for the test instance's and candidate's expiry
FAILED_TTL = datetime.timedelta(days=7)
KEEP_ACTIVE = 2  # the new head and the previous one (rollback's target) stay ACTIVE after a publish
ALIAS = "bakery-gce-test"

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_run_id(now: datetime.datetime) -> str:
    """``YYYYMMDD-HHMMSS-xxxxxx``: a valid label value and instance-name part, unique per run."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def expires_label(now: datetime.datetime, seconds: float) -> str:
    """The ``bakery-expires`` label value: unix seconds, as a string."""
    return str(int(now.timestamp() + seconds))


def candidate_name(candidate_family: str, image_name: str) -> str:
    """``image_name``'s ``-YYYYMMDD-HHMMSS-SHA`` suffix after the candidate family (cut to 63 characters)."""
    suffix = "-" + "-".join(image_name.rsplit("-", 3)[1:])
    return candidate_family[: 63 - len(suffix)].rstrip("-") + suffix


def report_label(junit: Path) -> str:
    """The ``test-report`` label: sha256 of the JUnit report, cut to a label value's 63 characters."""
    return hashlib.sha256(junit.read_bytes()).hexdigest()[:63]


@dataclass(frozen=True)
class SuiteRun:
    """What the runner needs besides the VM: the suite, its report, timeouts and extra pytest args."""

    suite: Path
    junit: Path
    ssh_timeout: float
    test_timeout: float
    extra_args: tuple[str, ...]


Runner = Callable[[RunningVM, SuiteRun], TestOutcome]


def ssh_then_suite(vm: RunningVM, run: SuiteRun) -> TestOutcome:
    """The default runner: wait for SSH, then the image suite through the local target's runner."""
    gce_instances.wait_for_ssh(vm.ssh_config, vm.host, timeout=run.ssh_timeout)
    return run_image_tests(vm, run.suite, run.junit, timeout=run.test_timeout, extra_args=run.extra_args)


def ssh_route(settings: GceSettings) -> str:
    """How the test stage reaches the instance: ``iap``, ``internal`` or ``external``."""
    if settings.use_iap:
        return "iap"
    return "internal" if settings.omit_external_ip else "external"


class GceTarget:
    """pipeline.Target for ``target: gce``. ``runner`` is the one seam tests replace; ``ssh_port``
    overrides port 22 (a test maps the fake's instance to a local VM's forwarded port);
    ``publish_stand_ins`` lets stand-in images through publish, for the rehearsal's fake project only
    (tests/rehearsal.py: no real package can be fetched offline); nothing in the configuration sets it."""

    def __init__(
        self,
        spec: BuildSpec,
        *,
        clients: ComputeClients | None = None,
        dry_run: Say | None = None,
        runner: Runner = ssh_then_suite,
        ssh_port: int = gce_instances.SSH_PORT,
        clock: Clock = utcnow,
        keep_active: int = KEEP_ACTIVE,
        publish_stand_ins: bool = False,
    ) -> None:
        gce = spec.env.gce
        assert gce is not None  # config validation guarantees it for target 'gce'
        self.spec = spec
        self.settings: GceSettings = gce
        self.clients = clients or ComputeClients.create(
            gce.project, gce.zone, endpoint=resolve_endpoint(gce.api_endpoint)
        )
        self.images = GceImageStore(self.clients, dry_run=dry_run)
        self.store: ImageStore = self.images
        self.instances = Instances(self.clients)
        self.runner = runner
        self.ssh_port = ssh_port
        self.clock = clock
        self.keep_active = keep_active
        self.publish_stand_ins = publish_stand_ins
        self.run_id = new_run_id(clock())
        self.kept: set[str] = set()
        self.outcome: TestOutcome | None = None
        self.say: Say = lambda _line: None
        self.source: compute_v1.Image | None = None
        self.zones = gce.zone_order
        self.attempts: list[ZoneAttempt] = []  # every zone the build and test stages tried, in order
        self.build_zone = self.zones[0]

    # --- pipeline.Target ---------------------------------------------------------------------------

    def source_image(self, say: Say) -> str:
        """Resolve the variant's public family to its current image, once per target (``PROJECT/NAME``,
        part of the input fingerprint; Packer is given the same image, so the bake starts from it)."""
        if self.source is None:
            variant = self.spec.variant
            where = f"{variant.source_image_project}/{variant.source_image_family}"
            request = compute_v1.GetFromFamilyImageRequest(
                project=variant.source_image_project, family=variant.source_image_family
            )
            try:
                self.source = self.clients.call(
                    f"source image family {where}", self.clients.images.get_from_family, request
                )
            except ComputeApiError as exc:
                why = "no such family or no ACTIVE image in it" if _not_found(exc) else str(exc)
                raise ComputeApiError(
                    f"cannot resolve source image family {where} of variant {self.spec.variant_name}: {why} "
                    f"(check bakery.variants.{self.spec.variant_name}.source_image_project/source_image_family)"
                ) from exc
            say(f"source image: {where} is {self.source.name} (created {self.source.creation_timestamp})")
        return f"{self.spec.variant.source_image_project}/{self.source.name}"

    def consumers(self, family: str) -> list[str]:
        """Instance templates (global and regional) booting from ``family`` or one of its images, and the
        managed instance groups using them."""
        images = {record.name for record in self.images.list(family)}
        return [c.line() for c in gce_consumers.find(self.clients, family, images)]

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        """Before anything starts: this Packer can bake through IAP when IAP is used, and the test stage's
        tools are installed (``gcloud`` for IAP tunnels)."""
        packer_plugins.check_iap(packer_version, use_iap=self.settings.use_iap, env_name=self.spec.env_name)
        tools = {"ssh": "openssh-client", "ssh-keygen": "openssh-client"}
        if self.settings.use_iap:
            tools["gcloud"] = "google-cloud-cli (from Google's apt repository, see the README)"
        proc.require_tools(tools)

    def prepare(self, rendered: render.Rendered, say: Say) -> dict[str, str]:
        """Return the googlecompute runtime variables (Packer finds credentials itself: application default
        credentials)."""
        self.say = say
        self.build_zone = self.zones[0]
        self.attempts.append(ZoneAttempt("build", self.build_zone, ""))
        fallback = f" (then {', '.join(self.zones[1:])} if it has no capacity)" if len(self.zones) > 1 else ""
        say(f"run {self.run_id}: project {self.settings.project}, zone {self.build_zone}{fallback}")
        return {
            "zone": self.build_zone,
            "source_image": self.source.name if self.source else "",
            "run_id": self.run_id,
            "expires": expires_label(self.clock(), self.settings.builder_max_run_minutes * 60),
            "git_sha": label_value(git_sha()),
        }

    def retry_build(self, error: PackerError, say: Say) -> dict[str, str] | None:
        """After a failed ``packer build``: the runtime variables of a re-run in the next zone when the
        builder VM could not be created for lack of capacity; None for any other failure. A quota error,
        or no zone left, is one line (QuotaExceededError, NoCapacityError)."""
        text = gce_zones.packer_creation_error(error.output_tail)
        failure = gce_zones.classify(text) if text else None
        if failure is None:
            return None
        zone = self.build_zone
        if failure.kind == "quota":
            raise gce_zones.QuotaExceededError(gce_zones.quota_message("builder VM", zone, failure.reason))
        attempt = ZoneAttempt("build", zone, failure.reason)
        if self.attempts and self.attempts[-1] == ZoneAttempt("build", zone, ""):  # the one prepare/this began
            self.attempts[-1] = attempt
        else:
            self.attempts.append(attempt)
        left = self.zones[self.zones.index(zone) + 1 :]
        if not left:
            tried = [a for a in self.attempts if a.stage == "build"]
            raise gce_zones.NoCapacityError(gce_zones.exhausted_message("builder VM", tried))
        self.build_zone = left[0]
        self.attempts.append(ZoneAttempt("build", self.build_zone, ""))
        say(f"builder VM: zone {zone} has no capacity ({failure.reason}); trying {self.build_zone}")
        return {"zone": self.build_zone}

    def zones_tried(self) -> list[ZoneAttempt]:
        """Every zone the build and test stages tried so far, in order, with why each was left."""
        return list(self.attempts)

    def candidate_name(self, image_name: str) -> str:
        """The name Packer gives the candidate (see the module docstring)."""
        return candidate_name(self.spec.candidate_family, image_name)

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        """The candidate image's name (Packer puts it into the candidate family)."""
        return image_name

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: Say) -> TestOutcome:
        """Boot a test instance from ``candidate``, run the image suite over SSH, always delete it."""
        self.say = say
        timeouts = self.spec.config.timeouts
        lifetime = timeouts.boot + timeouts.image_tests + TEST_MARGIN_SECONDS
        now = self.clock()
        run_labels = {"bakery-run-id": self.run_id, "bakery-expires": expires_label(now, lifetime)}
        image = self.images.get(candidate)
        if image.family != self.spec.candidate_family:
            say(f"WARNING: {candidate} is in family {image.family!r}, not {self.spec.candidate_family!r}")
        self.images.set_labels(candidate, {**image.labels, **run_labels})
        key = run_dir / "ssh" / "id_ed25519"
        pubkey = ssh.generate_key(key, f"{TEST_USER}@{self.run_id}")
        name = gce_instances.instance_name(self.run_id)

        def resource_for(zone: str) -> compute_v1.Instance:
            return instance_resource(
                name=name,
                zone=zone,
                source_image=image.location,
                settings=self.settings,
                labels={**self.spec.env.labels, **run_labels, "bakery-role": "test"},
                user=TEST_USER,
                public_key=pubkey.read_text(),
                max_run_seconds=int(lifetime),
            )

        with booted_instance(
            self.instances,
            resource_for,
            zones=self.zones,
            boot_timeout=timeouts.boot,
            serial_log=run_dir / "serial.log",
            say=say,
            attempts=self.attempts,
        ) as instance:
            config = run_dir / "ssh_config"
            control_path, control_dir = ssh.control_path_for(run_dir)
            config.write_text(self.ssh_config(name, instance, key, control_path))
            vm = RunningVM(ALIAS, config, 0, self.ssh_port, run_dir / "serial.log", run_dir)
            run = SuiteRun(
                suite=self.spec.image_suite,
                junit=run_dir / "junit.xml",
                ssh_timeout=timeouts.boot,
                test_timeout=timeouts.image_tests,
                extra_args=(
                    f"--expectations={rendered.directory / render.EXPECTATIONS_FILE}",
                    f"--injected-pubkey={pubkey}",
                    "--sudo",
                ),
            )
            try:
                self.outcome = self.runner(vm, run)
            finally:
                with proc.signals_deferred():
                    ssh.close_master(config, ALIAS, timeout=10)
                    if control_dir is not None:
                        shutil.rmtree(control_dir, ignore_errors=True)
        return self.outcome

    def ssh_config(self, name: str, instance: compute_v1.Instance, key: Path, control_path: Path) -> str:
        """The ssh_config for the test instance: through IAP (to the zone it is in), or to its
        internal/external address."""
        route = ssh_route(self.settings)
        if route == "iap":
            hostname = name
            zone = gce_instances.zone_of(instance)
            proxy = gce_instances.iap_proxy_command(name, zone, self.settings.project)
        else:
            hostname = gce_instances.instance_address(instance, external=route == "external")
            proxy = None
        return gce_instances.render_ssh_config(
            alias=ALIAS,
            hostname=hostname,
            port=self.ssh_port,
            user=TEST_USER,
            identity=key,
            control_path=control_path,
            proxy_command=proxy,
        )

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        """Copy the tested candidate into ``family`` as ``image_name`` (provenance labels, the test report's
        hash, ``promoted-from``; no run labels), then deprecate the family's older images (see
        GceImageStore.publish). Stand-in images are refused."""
        source = self.images.get(candidate)
        stand_in = "stand-in" in (source.labels.get("artifact-source"), labels.get("artifact-source"))
        if stand_in and not self.publish_stand_ins:
            raise RegistryError(f"refusing to publish {candidate} to GCE: it was baked from stand-in packages")
        final = {k: v for k, v in source.labels.items() if k not in RUN_LABELS}
        final |= {k: v for k, v in labels.items() if k not in RUN_LABELS}
        if self.outcome is not None and self.outcome.junit.is_file():
            final["test-report"] = report_label(self.outcome.junit)
        final["promoted-from"] = candidate
        return self.images.publish(
            candidate,
            family,
            new_name=image_name,
            labels=final,
            description=description,
            manifest=manifest,
            keep_active=self.keep_active,
        )

    def discard(self, candidate: str) -> None:
        """Delete the candidate image unless ``keep`` kept it; a failure is reported, not raised (this runs
        in the pipeline's ``finally``; the candidate's expiry label lets ``invoke reap`` finish the job)."""
        if candidate in self.kept:
            return
        try:
            self.images.delete(candidate)
        except ComputeApiError as exc:
            if not _not_found(exc):
                self.say(f"WARNING: candidate image {candidate} was not deleted: {exc}; `invoke reap` will")

    def keep(self, candidate: str, run_dir: Path) -> str:
        """Label the failed candidate ``bakery-failed=true`` (expiring in a week) and leave it in the
        candidate family; return where it is."""
        image = self.images.get(candidate)
        expires = self.clock() + FAILED_TTL
        labels = {**image.labels, "bakery-failed": "true", "bakery-expires": expires_label(expires, 0)}
        self.images.set_labels(candidate, labels)
        self.kept.add(candidate)
        return (
            f"image {candidate} in family {image.family} (project {self.settings.project}, labelled "
            f"bakery-failed=true; `invoke reap` deletes it after {expires:%Y-%m-%d %H:%M} UTC)"
        )

    def plan(self, rendered_dir: Path) -> list[str]:
        gce = self.settings
        route = ssh_route(gce)
        return [
            f"project {gce.project}, zone {gce.zone}"
            + (f" (then {', '.join(self.zones[1:])} if it has no capacity)" if len(self.zones) > 1 else "")
            + f", API endpoint {self.clients.endpoint or 'default'}",
            f"googlecompute bakes into candidate family {self.spec.candidate_family} (builder VM labelled "
            f"bakery-run-id, bakery-expires = now + {gce.builder_max_run_minutes} min)",
            f"test instance {gce_instances.instance_name(self.run_id)} ({gce.machine_type}, "
            f"{'no external IP' if gce.omit_external_ip else 'external IP'}, service account "
            f"{gce.test_service_account or 'none'}), SSH via {route} as {TEST_USER} with a per-run ed25519 key; "
            "always deleted",
            f"publish: images.insert copying the candidate into {self.spec.family}, then deprecate its ACTIVE "
            f"images beyond the newest {self.keep_active} (copied with the candidate's guest OS features and "
            "storage location)",
        ]

    # --- GCE-only tasks ----------------------------------------------------------------------------

    def prune(self, say: Say) -> list[str]:
        """Apply retention to the production family: delete exactly what ``plan_retention`` plans (the plan
        ``invoke bake --dry-run`` prints), saying what it keeps against the rules and why (a dry-run store
        prints the calls); return the names."""
        retention = self.spec.env.retention
        plan = self.images.plan_retention(
            self.spec.family, retention.keep, max_age_days=retention.max_age_days, now=self.clock()
        )
        for name, why in plan.kept.items():
            say(f"keeping {name}: {why}")
        for record in plan.delete:
            self.images.delete(record.name)
        verb = "would delete" if self.images.dry_run else "deleted"
        say(
            f"retention of {self.spec.family} (keep {retention.keep}, max age {retention.max_age_days} days): "
            f"{verb} {', '.join(plan.names) or 'nothing'}"
        )
        return plan.names


def _not_found(exc: ComputeApiError) -> bool:
    return isinstance(exc.__cause__, api_exceptions.NotFound)


def dry_run_printer(say: Say) -> Say:
    """The ``dry_run`` callback of the tasks: each API call it would make, on one line."""
    return lambda call: say(f"dry run, would call: {call}")


def prune(spec: BuildSpec, say: Say, *, dry_run: bool = False) -> list[str]:
    """``invoke prune``: retention for one GCE environment's family (``dry_run``: print the calls)."""
    if spec.env.target != "gce":
        raise ConfigError(
            f"environment {spec.env_name!r} is not a gce environment: local retention runs after every bake"
        )
    return GceTarget(spec, dry_run=dry_run_printer(say) if dry_run else None).prune(say)
