"""Who boots from a family: the instance templates (global and regional) whose boot disks are created from
the family or from one of its images, and the managed instance groups built from those templates.

Before a publish the pipeline prints them (the blast radius); ``invoke consumers`` lists them on demand;
retention never deletes an image a template names. Only the environment's own project is searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.cloud import compute_v1

from bakery.gce.client import ComputeClients

PAGE_SIZE = 500


@dataclass(frozen=True)
class ImageRef:
    """A parsed ``sourceImage``: the family it follows or the image it pins (one of them is set)."""

    project: str
    family: str = ""
    image: str = ""


@dataclass(frozen=True)
class Consumer:
    """One template or MIG that boots from the family."""

    kind: str  # "instance template" | "managed instance group"
    scope: str  # "global", "regions/R" or "zones/Z"
    name: str
    uses: str  # what it boots from, in words

    def line(self) -> str:
        return f"{self.kind} {self.name} ({self.scope}): {self.uses}"


_REF = re.compile(
    r"(?:^|/)(?:projects/(?P<project>[^/]+)/)?global/images/(?:family/(?P<family>[^/]+)|(?P<image>[^/]+))$"
)


def parse_image_ref(source_image: str, project: str) -> ImageRef | None:
    """``projects/P/global/images/family/F`` or ``…/images/NAME`` (full URL or partial; no project means
    ``project``); None for anything else (an empty field, a snapshot, …)."""
    match = _REF.search(source_image)
    if match is None:
        return None
    return ImageRef(match["project"] or project, match["family"] or "", match["image"] or "")


def templates(clients: ComputeClients) -> list[tuple[str, compute_v1.InstanceTemplate]]:
    """Every instance template of the project, global and regional, as ``(scope, template)``."""
    request = compute_v1.AggregatedListInstanceTemplatesRequest(project=clients.project, max_results=PAGE_SIZE)
    method = clients.instance_templates.aggregated_list
    return clients.aggregated_all("the instance template list", method, request, "instance_templates")


def boot_images(template: compute_v1.InstanceTemplate, project: str) -> list[ImageRef]:
    """The images the template's disks are created from."""
    refs = (parse_image_ref(d.initialize_params.source_image, project) for d in template.properties.disks)
    return [ref for ref in refs if ref is not None]


def find(clients: ComputeClients, family: str, family_images: set[str]) -> list[Consumer]:
    """Templates that follow ``family`` or pin one of ``family_images``, then the MIGs using them."""
    found: list[Consumer] = []
    links: dict[str, str] = {}  # template selfLink -> name
    for scope, template in templates(clients):
        for ref in boot_images(template, clients.project):
            if ref.project != clients.project:
                continue
            if ref.family == family:
                uses = f"follows family {family}: new instances boot the new head"
            elif ref.image in family_images:
                uses = f"pinned to image {ref.image} of {family}: unaffected until the template changes"
            else:
                continue
            found.append(Consumer("instance template", scope, template.name, uses))
            links[template.self_link] = template.name
            break
    request = compute_v1.AggregatedListInstanceGroupManagersRequest(project=clients.project, max_results=PAGE_SIZE)
    method = clients.instance_group_managers.aggregated_list
    migs = clients.aggregated_all("the managed instance group list", method, request, "instance_group_managers")
    for scope, mig in migs:
        used = sorted(
            {links[t] for t in (mig.instance_template, *(v.instance_template for v in mig.versions)) if t in links}
        )
        if used:
            found.append(
                Consumer(
                    "managed instance group",
                    scope,
                    mig.name,
                    f"template {', '.join(used)}, target size {mig.target_size}",
                )
            )
    return sorted(found, key=lambda c: (c.kind != "instance template", c.scope != "global", c.scope, c.name))
