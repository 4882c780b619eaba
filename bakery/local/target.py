"""The local target: a cached Debian 12 base image, Packer's qemu builder, a QEMU test VM and a registry."""

from __future__ import annotations

import shutil
from pathlib import Path

from bakery import proc, render
from bakery.baserecipe import LOCAL, Recipe
from bakery.config import BuildSpec, LocalSettings
from bakery.errors import PackerError, VMError
from bakery.images import ImageRecord, ImageStore
from bakery.imagetest import TestOutcome, run_image_tests
from bakery.local.accel import choose_accelerator
from bakery.local.baseimage import BaseImage, base_dir, ensure_base_image, load_base_image
from bakery.local.registry import LocalRegistry
from bakery.local.vm import boot_vm
from bakery.target import Say, ZoneAttempt

BASE_BUILD_TIMEOUT = 1800.0
MIN_FREE_BYTES = 4 * 1024**3  # base build ~1 GiB, bake output + registry copy ~0.4 GiB each, QEMU overlays


def check_free_space(paths: list[Path], needed: int) -> None:
    """Refuse to start with less than ``needed`` bytes free where the local target writes."""
    for path in paths:
        existing = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        if free < needed:
            raise VMError(
                f"only {free / 1024**3:.1f} GiB free on the filesystem of {path}; the local bake needs "
                f"{needed / 1024**3:.0f} GiB: free space or point build_dir/cache_dir/registry_dir elsewhere"
            )


class LocalTarget:
    """Bake with QEMU, test in a snapshot-mode VM, publish into a local registry directory.

    ``recipe`` is the base image the bake starts from (``GCE_REHEARSAL`` for the GCE dress rehearsal)."""

    def __init__(self, spec: BuildSpec, *, recipe: Recipe = LOCAL) -> None:
        local = spec.env.local
        assert local is not None  # config validation guarantees it for target 'local'
        self.spec = spec
        self.recipe = recipe
        self.settings: LocalSettings = local
        self.cache_dir = spec.project_root / local.cache_dir
        self.registry_dir = spec.project_root / local.registry_dir
        self.store: ImageStore = LocalRegistry(self.registry_dir)
        self.base: BaseImage | None = None
        self.accelerator = "tcg"

    def source_image(self, say: Say) -> str:
        """The base image is ours: its recipe key stands for it (a changed recipe is a new source)."""
        if self.recipe == LOCAL:
            return render.default_source_image(self.spec)
        return f"local-base/{self.recipe.key}"

    def consumers(self, family: str) -> list[str]:
        """Nothing boots from a local family but the tests."""
        return []

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        proc.require_tools({"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ssh": "openssh-client"})

    def prepare(self, rendered: render.Rendered, say: Say) -> dict[str, str]:
        check_free_space([rendered.directory, self.cache_dir, self.registry_dir], MIN_FREE_BYTES)
        self.base = ensure_base_image(self.cache_dir, timeout=BASE_BUILD_TIMEOUT, log=say, recipe=self.recipe)
        self.accelerator = choose_accelerator(self.settings.accelerator, self.base, log=say)
        return {
            "base_image": str(self.base.disk),
            "base_image_checksum": "none",  # the base is ours, built and cached by content key
            "accelerator": self.accelerator,
            "ssh_private_key_file": str(self.base.ssh_key),
            "output_directory": str(self.spec.output_dir),
        }

    def retry_build(self, error: PackerError, say: Say) -> dict[str, str] | None:
        """A local build has no zone to move to: a failure is final."""
        return None

    def zones_tried(self) -> list[ZoneAttempt]:
        """Local VMs have no zones."""
        return []

    def candidate_name(self, image_name: str) -> str:
        return image_name

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        return str(self.spec.output_dir / f"{image_name}.qcow2")

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: Say) -> TestOutcome:
        assert self.base is not None, "prepare() first"
        timeouts = self.spec.config.timeouts
        pubkey = self.base.ssh_key.with_name(self.base.ssh_key.name + ".pub")
        with boot_vm(
            Path(candidate),
            accelerator=self.accelerator,
            ssh_key=self.base.ssh_key,
            # The seal removed the build user's key: log in as root with a key given to this boot only,
            # as a systemd credential (Debian's tmpfiles provision.conf writes it to root's authorized_keys).
            user="root",
            credentials={"ssh.authorized_keys.root": pubkey.read_bytes()},
            workdir=run_dir / "vm",
            boot_timeout=timeouts.boot,
            memory_mb=self.settings.memory_mb,
            cpus=self.settings.cpus,
            log=say,
        ) as vm:
            return run_image_tests(
                vm,
                self.spec.image_suite,
                run_dir / "junit.xml",
                timeout=timeouts.image_tests,
                extra_args=[
                    f"--expectations={rendered.directory / render.EXPECTATIONS_FILE}",
                    f"--injected-pubkey={pubkey}",
                ],
            )

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        return self.store.insert(
            image_name, family, candidate, labels=labels, description=description, manifest=manifest
        )

    def discard(self, candidate: str) -> None:
        shutil.rmtree(Path(candidate).parent, ignore_errors=True)

    def keep(self, candidate: str, run_dir: Path) -> str:
        kept = run_dir / Path(candidate).name
        shutil.move(candidate, kept)
        return str(kept)

    def plan(self, rendered_dir: Path) -> list[str]:
        cached = load_base_image(base_dir(self.cache_dir, self.recipe), self.recipe.key)
        base = f"cached {cached.disk}" if cached else f"build it with mmdebstrap into {self.cache_dir}"
        return [
            f"base image: {base} (recipe {self.recipe.name})",
            f"accelerator: {self.settings.accelerator} (auto = boot probe, cached)",
            f"registry: {self.registry_dir}",
        ]
