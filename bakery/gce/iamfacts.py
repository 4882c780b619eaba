"""What a GCE bake needs from IAM, the network and quotas: vendor facts as data, each with where it was read.

``invoke doctor`` (bakery/gce/doctor.py) decides from these tables; nothing here calls an API.

Sources (cited below by these short names):

* **packer** — hashicorp/packer-plugin-googlecompute tag v1.2.7 (commit 1fbf6a099c72b18b0a9360362514b42d88c358d1),
  the plugin version the rendered template pins (templates/packer/_plugins.pkr.hcl.j2). Its builder runs
  builder/googlecompute/builder.go:73-123; every Compute call is in lib/common/driver_gce.go.
* **iam-map** — iann0036/iam-dataset commit 2073fa52ac008a45477aa0b1b4580cd99135bf60, gcp/map.json: API method →
  permissions, crawled from the "IAM Permissions" block of each method page of
  cloud.google.com/compute/docs/reference/rest/v1 (methodology ``restcrawliamblockv1``) plus hand-added
  entries (``manual``). Google's pages themselves could not be read in full here (the search index holds only
  each page's opening), so every ``manual``-only entry is marked UNVERIFIED below.
* **iam-roles** — the same commit, gcp/roles/<role>.json: dumps of Google's IAM ``roles.get`` for each
  predefined role (``includedPermissions``). :data:`ROLE_GRANTS` and :data:`TOPIC_ROLES` are those lists cut
  down to the permissions named here.
* **compute-discovery** — the Compute v1 discovery document, revision 20261106, shipped with
  google-api-python-client 2.202.0 (googleapiclient/discovery_cache/documents/compute.v1.json), for schema,
  field and enum names (tests/unit/gce/test_iamfacts.py checks them against it).
* **crm-discovery** — cloudresourcemanager v1/v3 discovery documents (revision 20261107), same package.

Steps are the pipeline's (bakery/pipeline.py): ``bake`` (Packer's builder VM, its disk, the candidate image,
and our source-family lookup), ``test`` (the test VM), ``publish`` (copy into the family, deprecate, delete
the candidate), ``prune`` (retention; pipeline.bake runs it after every publish), ``reap``, ``rollback``,
``consumers`` (pipeline.blast_radius before each publish, ``invoke consumers``), ``coverage``, and ``doctor``
(the reads the doctor itself makes). A full ``invoke bake`` is :data:`BAKE_PIPELINE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.cloud import compute_v1

Step = Literal["bake", "test", "publish", "prune", "reap", "rollback", "consumers", "coverage", "doctor"]
STEPS: tuple[Step, ...] = ("bake", "test", "publish", "prune", "reap", "rollback", "consumers", "coverage", "doctor")
#: What ``invoke bake`` on a gce environment runs (pipeline.bake: bake, test, blast radius, publish, retention).
BAKE_PIPELINE: tuple[Step, ...] = ("bake", "test", "consumers", "publish", "prune")

#: When a need applies: always, only with an external IP on the builder/test VM (``omit_external_ip: false``),
#: only when SSH goes through IAP (``use_iap``), only when the test VM gets a service account.
When = Literal["always", "external_ip", "iap", "test_service_account"]

PERMISSION_RE = re.compile(r"^[a-z][a-z0-9]*\.[a-z][A-Za-z0-9]*\.[a-z][A-Za-z0-9]*$")

PACKER = "packer-plugin-googlecompute v1.2.7"
IAM_MAP = "iam-dataset 2073fa52 gcp/map.json"
IAM_ROLES = "iam-dataset 2073fa52 gcp/roles"

# --- roles -------------------------------------------------------------------------------------------------

#: The roles README.md recommends for whoever runs bakery ("Running against a real GCP project", step 5),
#: narrowest first: the read-only role before the ones that write; storageAdmin (images, disks, snapshots:
#: 160 permissions) before instanceAdmin.v1 (531, including VM create/delete). :func:`role_for` picks the
#: first of these that grants a permission.
RECOMMENDED_ROLES: tuple[str, ...] = (
    "roles/compute.viewer",
    "roles/compute.storageAdmin",
    "roles/compute.instanceAdmin.v1",
    "roles/iam.serviceAccountUser",
    "roles/iap.tunnelResourceAccessor",
)

#: Role -> the permissions named in this module that it grants (iam-roles: gcp/roles/compute.viewer.json,
#: compute.storageAdmin.json, compute.instanceAdmin.v1.json, iam.serviceAccountUser.json,
#: iap.tunnelResourceAccessor.json, iam.securityReviewer.json, pubsub.admin.json).
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "roles/compute.viewer": frozenset(
        {
            "compute.disks.list",
            "compute.firewalls.list",
            "compute.networks.getEffectiveFirewalls",
            "compute.globalOperations.get",
            "compute.images.get",
            "compute.images.getFromFamily",
            "compute.images.list",
            "compute.instanceGroupManagers.list",
            "compute.instanceTemplates.list",
            "compute.instances.get",
            "compute.instances.getSerialPortOutput",
            "compute.instances.list",
            "compute.machineTypes.get",
            "compute.projects.get",
            "compute.regions.get",
            "compute.routers.list",
            "compute.subnetworks.get",
            "compute.zoneOperations.get",
            "compute.zones.get",
        }
    ),
    "roles/compute.storageAdmin": frozenset(
        {
            "compute.disks.create",
            "compute.disks.delete",
            "compute.disks.list",
            "compute.disks.useReadOnly",
            "compute.globalOperations.get",
            "compute.images.create",
            "compute.images.delete",
            "compute.images.deprecate",
            "compute.images.get",
            "compute.images.getFromFamily",
            "compute.images.list",
            "compute.images.setLabels",
            "compute.images.useReadOnly",
            "compute.projects.get",
            "compute.regions.get",
            "compute.zoneOperations.get",
            "compute.zones.get",
        }
    ),
    "roles/compute.instanceAdmin.v1": frozenset(
        {
            "compute.disks.create",
            "compute.disks.delete",
            "compute.disks.list",
            "compute.disks.useReadOnly",
            "compute.firewalls.list",
            "compute.globalOperations.get",
            "compute.images.create",
            "compute.images.delete",
            "compute.images.deprecate",
            "compute.images.get",
            "compute.images.getFromFamily",
            "compute.images.list",
            "compute.images.setLabels",
            "compute.images.useReadOnly",
            "compute.instanceGroupManagers.list",
            "compute.instanceTemplates.list",
            "compute.instances.create",
            "compute.instances.delete",
            "compute.instances.get",
            "compute.instances.getSerialPortOutput",
            "compute.instances.list",
            "compute.instances.setLabels",
            "compute.instances.setMetadata",
            "compute.instances.setServiceAccount",
            "compute.machineTypes.get",
            "compute.projects.get",
            "compute.regions.get",
            "compute.routers.list",
            "compute.subnetworks.get",
            "compute.subnetworks.use",
            "compute.subnetworks.useExternalIp",
            "compute.zoneOperations.get",
            "compute.zones.get",
        }
    ),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs"}),
    "roles/iap.tunnelResourceAccessor": frozenset({"iap.tunnelInstances.accessViaIAP"}),
    # Not in the README's list: the doctor reads the topic's IAM policy, which no recommended role (nor
    # roles/pubsub.viewer, roles/pubsub.editor, roles/viewer, roles/editor) allows.
    # Nor the project's (the doctor also reads role grants inherited from the topic's project).
    "roles/iam.securityReviewer": frozenset({"pubsub.topics.getIamPolicy", "resourcemanager.projects.getIamPolicy"}),
    "roles/pubsub.admin": frozenset({"pubsub.topics.getIamPolicy", "pubsub.topics.get", "pubsub.topics.publish"}),
}

# --- Compute API methods -> permissions ----------------------------------------------------------------------


@dataclass(frozen=True)
class MethodFact:
    """One Compute v1 method (``images.insert``): the permissions it needs, in which steps, and why."""

    method: str
    permissions: tuple[str, ...]
    steps: tuple[Step, ...]
    source: str


#: Every Compute method our code (bakery/gce/*.py, through ComputeClients), Packer's builder and the doctor
#: call. tests/unit/gce/test_iamfacts.py fails when bakery/gce calls a method missing here.
#: Request-dependent permissions of ``instances.insert`` and ``images.insert`` are in :data:`PROJECT_PERMISSIONS`.
METHOD_FACTS: tuple[MethodFact, ...] = (
    # Ours: gce/store.py, gce/target.py (test, keep, publish), coverage.py; Packer: driver_gce.go:527
    # (StepCheckExistingImage, and reading the new image back after CreateImage, driver_gce.go:270).
    MethodFact(
        "images.get",
        ("compute.images.get",),
        ("bake", "test", "publish", "rollback", "coverage"),
        IAM_MAP,
    ),
    # store.list (family listing, filter on family): publish, prune, reap, rollback, target.consumers.
    MethodFact("images.list", ("compute.images.list",), ("publish", "prune", "reap", "rollback", "consumers"), IAM_MAP),
    # target.source_image (the variant's PUBLIC family: a permission on the public project, not ours; kept
    # for completeness), store.get_from_family after publish and in rollback, coverage heads; doctor.
    MethodFact(
        "images.getFromFamily",
        ("compute.images.getFromFamily",),
        ("publish", "rollback", "coverage", "doctor"),
        IAM_MAP,
    ),
    # store.insert (publish's copy); Packer driver_gce.go:258 (StepCreateImage).
    MethodFact("images.insert", ("compute.images.create",), ("bake", "publish"), IAM_MAP),
    # store.deprecate (publish, rollback); Packer ALWAYS calls it after creating the image, with an empty
    # DeprecationStatus when no deprecate_at/obsolete_at/delete_at is set (step_create_image.go:99-107,
    # driver_gce.go:288), so a bake needs it too.
    MethodFact("images.deprecate", ("compute.images.deprecate",), ("bake", "publish", "rollback"), IAM_MAP),
    # target.discard after publish, retention (prune), reap.
    MethodFact("images.delete", ("compute.images.delete",), ("publish", "prune", "reap"), IAM_MAP),
    # target.test labels the candidate with the run's expiry; target.keep labels a failed one.
    MethodFact("images.setLabels", ("compute.images.setLabels",), ("test",), IAM_MAP),
    # instances.py Instances.create; Packer driver_gce.go:814. Base permissions only (see PROJECT_PERMISSIONS).
    MethodFact(
        "instances.insert",
        ("compute.instances.create", "compute.disks.create"),
        ("bake", "test"),
        IAM_MAP + " (restcrawliamblockv1)",
    ),
    # Instances.get/wait_running; Packer driver_gce.go:563-598, 993 (WaitForInstance, GetInternalIP/NatIP).
    MethodFact("instances.get", ("compute.instances.get",), ("bake", "test"), IAM_MAP),
    # Instances.serial_output; Packer driver_gce.go:614 (StepTeardownInstance keeps the log).
    MethodFact("instances.getSerialPortOutput", ("compute.instances.getSerialPortOutput",), ("bake", "test"), IAM_MAP),
    # Instances.delete, reaper; Packer driver_gce.go:308.
    MethodFact("instances.delete", ("compute.instances.delete",), ("bake", "test", "reap"), IAM_MAP),
    MethodFact("instances.aggregatedList", ("compute.instances.list",), ("reap", "coverage"), IAM_MAP),
    MethodFact("disks.aggregatedList", ("compute.disks.list",), ("reap", "coverage"), IAM_MAP),
    # reaper; Packer deletes the builder's boot disk itself (created with AutoDelete false, driver_gce.go:719;
    # deleted in StepTeardownInstance.Cleanup, driver_gce.go:429).
    MethodFact("disks.delete", ("compute.disks.delete",), ("bake", "reap"), IAM_MAP),
    # consumers.templates: blast radius before publish, retention's template_users (prune), invoke consumers.
    MethodFact(
        "instanceTemplates.aggregatedList", ("compute.instanceTemplates.list",), ("consumers", "prune"), IAM_MAP
    ),
    MethodFact(
        "instanceGroupManagers.aggregatedList", ("compute.instanceGroupManagers.list",), ("consumers",), IAM_MAP
    ),
    # ComputeClients.wait polls with operations.wait; Packer polls with operations.get (driver_gce.go:1003,
    # 1024). Image operations are global, instance and disk ones zonal.
    MethodFact(
        "globalOperations.wait",
        ("compute.globalOperations.get",),
        ("test", "publish", "prune", "reap", "rollback"),
        IAM_MAP,
    ),
    MethodFact("globalOperations.get", ("compute.globalOperations.get",), ("bake",), IAM_MAP),
    MethodFact("zoneOperations.wait", ("compute.zoneOperations.get",), ("test", "reap"), IAM_MAP),
    MethodFact("zoneOperations.get", ("compute.zoneOperations.get",), ("bake",), IAM_MAP),
    # Packer: RunInstance reads the zone and machine type first (driver_gce.go:632, 639); the doctor too.
    MethodFact("zones.get", ("compute.zones.get",), ("bake", "doctor"), IAM_MAP),
    MethodFact("machineTypes.get", ("compute.machineTypes.get",), ("bake", "doctor"), IAM_MAP),
    # Packer's StepImportOSLoginSSHKey reads the project's enable-oslogin (step_import_os_login_ssh_key.go:43,
    # driver_gce.go:548; a failure is only logged); the doctor reads commonInstanceMetadata and quotas.
    MethodFact("projects.get", ("compute.projects.get",), ("bake", "doctor"), IAM_MAP),
    # The doctor's network and quota reads.
    MethodFact("regions.get", ("compute.regions.get",), ("doctor",), IAM_MAP),
    MethodFact("subnetworks.get", ("compute.subnetworks.get",), ("doctor",), IAM_MAP),
    MethodFact("firewalls.list", ("compute.firewalls.list",), ("doctor",), IAM_MAP),
    MethodFact("networks.getEffectiveFirewalls", ("compute.networks.getEffectiveFirewalls",), ("doctor",), IAM_MAP),
    MethodFact("routers.list", ("compute.routers.list",), ("doctor",), IAM_MAP),
)

#: ``images.get`` -> ``("compute.images.get",)``: the lookup the test's scanner uses.
METHOD_PERMISSIONS: dict[str, tuple[str, ...]] = {fact.method: fact.permissions for fact in METHOD_FACTS}

# --- needs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """A permission the caller must hold, in which steps, which predefined roles grant it (narrowest
    first, from :data:`ROLE_GRANTS`), where the fact was read, and when it applies."""

    permission: str
    steps: tuple[Step, ...]
    granted_by: tuple[str, ...]
    source: str
    when: When = "always"


def granted_by(permission: str) -> tuple[str, ...]:
    """The roles of :data:`ROLE_GRANTS` that grant ``permission``, recommended ones first (narrowest first)."""
    order = [*RECOMMENDED_ROLES, *(role for role in ROLE_GRANTS if role not in RECOMMENDED_ROLES)]
    return tuple(role for role in order if permission in ROLE_GRANTS.get(role, frozenset()))


def _need(permission: str, steps: Sequence[Step], source: str, when: When = "always") -> Need:
    return Need(permission, tuple(steps), granted_by(permission), source, when)


def _from_methods() -> list[Need]:
    """One need per permission of :data:`METHOD_FACTS`, with the union of the steps that use it."""
    steps: dict[str, list[Step]] = {}
    sources: dict[str, list[str]] = {}
    for fact in METHOD_FACTS:
        for permission in fact.permissions:
            steps.setdefault(permission, [])
            steps[permission] += [s for s in fact.steps if s not in steps[permission]]
            sources.setdefault(permission, []).append(fact.method)
    return [_need(p, [s for s in STEPS if s in steps[p]], f"{IAM_MAP}: {', '.join(sources[p])}") for p in sorted(steps)]


#: What ``cloudresourcemanager projects.testIamPermissions`` is asked on the environment's project.
#: ``iam.serviceAccounts.actAs`` is not here: it is asked on each service account (:data:`SERVICE_ACCOUNT_NEED`).
PROJECT_PERMISSIONS: tuple[Need, ...] = (
    *_from_methods(),
    # instances.insert, beyond create + disks.create, by what the request carries:
    # - the boot disk's source image. Bake: a public image (debian-cloud, ubuntu-os-cloud), not ours to
    #   check. Test: the candidate in our project. UNVERIFIED: named by Google's "Create a VM that uses a
    #   user-managed service account" page ("To use a custom image to create the VM: compute.images.useReadOnly
    #   on the image", read only up to that line), not in iam-map's entry.
    _need(
        "compute.images.useReadOnly",
        ("test", "publish"),
        "UNVERIFIED: cloud.google.com/compute/docs/access/create-enable-service-accounts-for-instances "
        "(instances.insert from an image); images.insert with sourceImage (publish's copy) assumed alike",
    ),
    # - metadata (ssh-keys, block-project-ssh-keys, enable-oslogin: gce.pkr.hcl.j2, instances.py) and labels
    #   (bakery-run-id/-expires, role). UNVERIFIED: not in iam-map's instances.insert entry; Google's VM
    #   creation pages list them as "To set metadata/labels" (not read in full here).
    _need("compute.instances.setMetadata", ("bake", "test"), "UNVERIFIED: Google's VM creation docs"),
    _need("compute.instances.setLabels", ("bake", "test"), "UNVERIFIED: Google's VM creation docs"),
    # - the network interface: iam-map (manual) for instances.insert.
    _need("compute.subnetworks.use", ("bake", "test"), f"{IAM_MAP}: instances.insert (manual entry)"),
    _need(
        "compute.subnetworks.useExternalIp",
        ("bake", "test"),
        f"{IAM_MAP}: instances.insert (manual entry); only with an accessConfig (omit_external_ip false)",
        "external_ip",
    ),
    # - a service account. Packer ALWAYS attaches one: gce.service_account, or "default" (the project's
    #   Compute Engine default service account) when empty (driver_gce.go:694-702: the template does not set
    #   disable_default_service_account). The test VM gets one only if gce.test_service_account is set.
    _need("compute.instances.setServiceAccount", ("bake",), f"{IAM_MAP}: instances.insert (manual entry)"),
    _need(
        "compute.instances.setServiceAccount",
        ("test",),
        f"{IAM_MAP}: instances.insert (manual entry)",
        "test_service_account",
    ),
    # images.insert from a disk (Packer's StepCreateImage: sourceDisk of the builder's boot disk).
    # UNVERIFIED: Google's "Create custom images" page (not read here) names compute.disks.useReadOnly on
    # the source disk; iam-map lists only compute.images.create.
    _need("compute.disks.useReadOnly", ("bake",), "UNVERIFIED: Google's 'Create custom images' docs"),
)

#: On the builder's service account (``gce.service_account``, or the project's default Compute Engine
#: service account ``PROJECT_NUMBER-compute@developer.gserviceaccount.com`` when empty, see above) and on the
#: test VM's (``gce.test_service_account``, when set): asked with ``iam projects.serviceAccounts.testIamPermissions``
#: on the account, which also sees a project-level grant. iam-map: instances.insert, condition
#: ``$.serviceAccounts[].email`` (manual entry); packer docs/README.md:69 ("Compute Instance Admin (v1) &
#: Service Account User roles"), :97 (the binding).
SERVICE_ACCOUNT_NEED = Need(
    "iam.serviceAccounts.actAs",
    ("bake", "test"),
    granted_by("iam.serviceAccounts.actAs"),
    f"{IAM_MAP}: instances.insert; {PACKER} docs/README.md:69,97",
)
ACT_AS = SERVICE_ACCOUNT_NEED.permission
ACT_AS_ROLE = SERVICE_ACCOUNT_NEED.granted_by[0]

#: UNVERIFIED (Google's "Service accounts" docs, not read here): the Compute Engine default service
#: account's address. Packer gives the builder this account when ``gce.service_account`` is empty.
DEFAULT_COMPUTE_SERVICE_ACCOUNT = "{project_number}-compute@developer.gserviceaccount.com"


def builder_service_account(configured: str, project_number: str) -> str:
    """The account Packer's builder VM runs as: ``gce.service_account``, or, when empty, the project's
    default Compute Engine service account (packer driver_gce.go:694-702: ``Email = "default"`` unless
    ``disable_default_service_account``, which the rendered template does not set). Never none."""
    return configured or DEFAULT_COMPUTE_SERVICE_ACCOUNT.format(project_number=project_number)


#: Only with ``gce.use_iap``: Packer's tunnel (builder/googlecompute/step_start_tunnel.go:272 runs
#: ``gcloud compute start-iap-tunnel``) and the test stage's ProxyCommand (gce/instances.py). Role from packer
#: docs/README.md:101; testable on the project (a project-level grant covers every instance).
IAP_NEED = Need(
    "iap.tunnelInstances.accessViaIAP",
    ("bake", "test"),
    granted_by("iap.tunnelInstances.accessViaIAP"),
    f"{PACKER} docs/README.md:99-101; {IAM_ROLES}/iap.tunnelResourceAccessor.json",
    "iap",
)

#: cloudresourcemanager ``projects.testIamPermissions``: "Permissions with wildcards (such as `*` or
#: `storage.*`) are not allowed" (crm-discovery v1 and v3, schema TestIamPermissionsRequest.permissions); the
#: v1 method "requires no permissions" (v1 projects.testIamPermissions description).
#: UNVERIFIED: a limit on permissions per call is documented in neither discovery document nor any page the
#: search index holds; 100 is the figure commonly cited for Google's testIamPermissions methods. Ask in
#: batches of this size (:func:`permission_batches`); the whole list here is well under it anyway.
#: UNVERIFIED too: that asking a permission not testable on a project is an INVALID_ARGUMENT error rather than
#: a silent omission; every permission above is a project-grantable Compute/IAP one.
MAX_PERMISSIONS_PER_TEST = 100
TEST_PERMISSIONS_LIMIT = MAX_PERMISSIONS_PER_TEST


def permissions_for(
    steps: Iterable[Step],
    *,
    use_iap: bool,
    external_ip: bool,
    test_service_account: bool = True,
) -> list[str]:
    """The permissions to ask ``projects.testIamPermissions`` for, sorted, for ``steps`` (e.g.
    :data:`BAKE_PIPELINE`), with the IAP one when ``use_iap``. ``external_ip``: the VMs get an external IP."""
    wanted = set(steps)
    unknown = wanted - set(STEPS)
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(sorted(unknown))}: expected some of {', '.join(STEPS)}")
    applies: dict[When, bool] = {
        "always": True,
        "external_ip": external_ip,
        "iap": use_iap,
        "test_service_account": test_service_account,
    }
    needs = [*PROJECT_PERMISSIONS, IAP_NEED]
    return sorted({n.permission for n in needs if applies[n.when] and wanted.intersection(n.steps)})


def permission_batches(permissions: Sequence[str], size: int = MAX_PERMISSIONS_PER_TEST) -> list[list[str]]:
    """``permissions`` in chunks of at most ``size`` (one testIamPermissions call each)."""
    return [list(permissions[i : i + size]) for i in range(0, len(permissions), size)]


def role_for(permission: str) -> str:
    """The narrowest predefined role that grants ``permission`` (see :data:`RECOMMENDED_ROLES`)."""
    roles = granted_by(permission)
    if not roles:
        raise KeyError(f"no known predefined role grants {permission}")
    return roles[0]


# --- Pub/Sub ---------------------------------------------------------------------------------------------------

#: fluent-plugin-gcloud-pubsub-custom 1.6.0 looks the topic up before publishing (gcloud_pubsub/client.rb:38,
#: see templates/image/etc/fluent/conf.d/osquery.conf.j2 and README step 5): ``topics.get`` needs
#: ``pubsub.topics.get``, ``topics.publish`` needs ``pubsub.topics.publish`` on the topic (Pub/Sub "Access
#: control with IAM", docs.cloud.google.com/pubsub/docs/access-control, "Required permissions" table; iam-map
#: pubsub.projects.topics.get/publish).
TOPIC_GET = "pubsub.topics.get"
PUBLISH = "pubsub.topics.publish"
#: In the order the plugin uses them (lookup, then publish).
PUBLISHER_PERMISSIONS: tuple[str, ...] = (TOPIC_GET, PUBLISH)
PUBLISH_PERMISSIONS = frozenset(PUBLISHER_PERMISSIONS)
#: The narrowest predefined roles that together grant both (README step 5; the plugin's README asks for both).
PUBLISHER_ROLES: tuple[str, ...] = ("roles/pubsub.publisher", "roles/pubsub.viewer")

#: Role -> which of :data:`PUBLISH_PERMISSIONS` it grants (iam-roles: pubsub.publisher, pubsub.viewer,
#: pubsub.editor, pubsub.admin, editor, owner, viewer .json). roles/pubsub.subscriber grants neither.
#: A custom role is not in this table: the doctor cannot tell what it grants from the policy alone.
TOPIC_ROLES: dict[str, frozenset[str]] = {
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.viewer": frozenset({"pubsub.topics.get"}),
    "roles/pubsub.editor": PUBLISH_PERMISSIONS,
    "roles/pubsub.admin": PUBLISH_PERMISSIONS,
    "roles/editor": PUBLISH_PERMISSIONS,
    "roles/owner": PUBLISH_PERMISSIONS,
    "roles/viewer": frozenset({"pubsub.topics.get"}),
}

#: What the doctor itself needs to read a topic's IAM policy (Pub/Sub access control: topics.getIamPolicy).
TOPIC_POLICY_NEED = Need(
    "pubsub.topics.getIamPolicy",
    ("doctor",),
    granted_by("pubsub.topics.getIamPolicy"),
    f"{IAM_MAP}: pubsub.projects.topics.getIamPolicy; {IAM_ROLES}/iam.securityReviewer.json, pubsub.admin.json",
)


#: And to read the policy of the topic's project (roles granted there apply to the topic too).
PROJECT_POLICY_NEED = Need(
    "resourcemanager.projects.getIamPolicy",
    ("doctor",),
    granted_by("resourcemanager.projects.getIamPolicy"),
    f"{IAM_MAP}: cloudresourcemanager.projects.getIamPolicy; {IAM_ROLES}/iam.securityReviewer.json",
)


def topic_permissions(roles: Iterable[str]) -> frozenset[str]:
    """Which of :data:`PUBLISH_PERMISSIONS` a member holding ``roles`` (on the topic or its project) has."""
    held: set[str] = set()
    for role in roles:
        held |= TOPIC_ROLES.get(role, frozenset())
    return frozenset(held)


def may_publish(roles: Iterable[str]) -> bool:
    """True if ``roles`` grant both permissions the Fluentd output needs."""
    return topic_permissions(roles) == PUBLISH_PERMISSIONS


# --- network ---------------------------------------------------------------------------------------------------

#: IAP TCP forwarding connects from this range: ingress to TCP 22 from it must be allowed when ``use_iap``
#: ("the IAP-TCP IP range 35.235.240.0/20", cloud.google.com/iap/docs/tcp-by-host, "Before you begin"; the
#: firewall rule of cloud.google.com/iap/docs/using-tcp-forwarding#create-firewall-rule).
IAP_SOURCE_RANGE = "35.235.240.0/20"
SSH_PORT = 22

#: compute-discovery schema Subnetwork, field ``privateIpGoogleAccess``: "Whether the VMs in this subnet can
#: access Google services without assigned external IP addresses" -- what a builder or test VM without an
#: external IP needs to reach Google APIs (and Pub/Sub) at all.
PRIVATE_GOOGLE_ACCESS_FIELD = "privateIpGoogleAccess"

#: compute-discovery schema RouterNat (Router.nats[]): ``sourceSubnetworkIpRangesToNat`` enum. The first two
#: NAT every subnetwork of the router's network in its region; LIST_OF_SUBNETWORKS only those in
#: ``subnetworks[]`` (RouterNatSubnetworkToNat: ``name`` is "URL for the subnetwork resource that will use
#: NAT", ``sourceIpRangesToNat`` default [ALL_IP_RANGES]). ``type``: PUBLIC (the default when unspecified)
#: or PRIVATE ("NAT used for private IP translation": no internet egress).
NAT_ALL_SUBNETWORKS = frozenset({"ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES"})
NAT_LIST_OF_SUBNETWORKS = "LIST_OF_SUBNETWORKS"
#: RouterNatSubnetworkToNat.sourceIpRangesToNat values that include a VM's primary internal address.
NAT_PRIMARY_RANGE_OPTIONS = frozenset({"ALL_IP_RANGES", "PRIMARY_IP_RANGE"})
NAT_PUBLIC = "PUBLIC"


def _same_subnetwork(link: str, subnetwork: str) -> bool:
    """``link`` (a NAT entry's subnetwork URL) names ``subnetwork``: a full or partial URL (compared from
    ``projects/``) or a bare name (compared with the URL's last segment; the caller picked the region)."""
    if "/" not in subnetwork:
        return link.rsplit("/", 1)[-1] == subnetwork
    at, wanted_at = link.find("projects/"), subnetwork.find("projects/")
    return link[max(at, 0) :] == subnetwork[max(wanted_at, 0) :]


def nat_covers(nat: compute_v1.RouterNat | Mapping[str, Any], subnetwork: str) -> bool:
    """True if Router.nats[] entry ``nat`` (the client's message, or JSON with the discovery document's
    camelCase names) gives internet egress to the primary addresses of ``subnetwork`` (a name, or a full or
    partial URL; empty: the network's auto-mode subnetwork, covered only by the ALL_SUBNETWORKS options).
    The caller picks the routers of the subnetwork's network and region."""
    if isinstance(nat, compute_v1.RouterNat):
        nat = compute_v1.RouterNat.to_dict(nat, preserving_proto_field_name=False)
    if (nat.get("type") or NAT_PUBLIC) != NAT_PUBLIC:
        return False
    option = nat.get("sourceSubnetworkIpRangesToNat", "")
    if option in NAT_ALL_SUBNETWORKS:
        return True
    if option != NAT_LIST_OF_SUBNETWORKS or not subnetwork:
        return False
    for entry in nat.get("subnetworks", []):
        if _same_subnetwork(entry.get("name", ""), subnetwork):
            ranges = entry.get("sourceIpRangesToNat") or ["ALL_IP_RANGES"]
            return bool(NAT_PRIMARY_RANGE_OPTIONS.intersection(ranges))
    return False


# --- quotas ----------------------------------------------------------------------------------------------------

#: Regional CPU quota metric per machine series (compute-discovery Quota.metric enum names; the test checks
#: they exist). UNVERIFIED: which series count against the generic CPUS metric is stated on Google's
#: "Allocation quotas" page (cloud.google.com/compute/resource-usage), whose CPU section the search index
#: does not hold; E2 and N1 counting against CPUS is the widely reported behaviour (regions.get shows CPUS
#: with the default e2-standard-2 VMs running), and N2/N2D/C2/C3 have their own metrics.
CPU_QUOTA_BY_SERIES: dict[str, str] = {
    "e2": "CPUS",
    "n1": "CPUS",
    "n2": "N2_CPUS",
    "n2d": "N2D_CPUS",
    "c2": "C2_CPUS",
    "c2d": "C2D_CPUS",
    "c3": "C3_CPUS",
    "t2d": "T2D_CPUS",
}

#: Regional persistent-disk quota per disk type (Quota.metric enum names). UNVERIFIED as above: pd-balanced
#: counting against SSD_TOTAL_GB (with pd-ssd) is Google's "Allocation quotas" page's statement as widely
#: reported; pd-standard against DISKS_TOTAL_GB.
DISK_QUOTA_BY_TYPE: dict[str, str] = {
    "pd-standard": "DISKS_TOTAL_GB",
    "pd-balanced": "SSD_TOTAL_GB",
    "pd-ssd": "SSD_TOTAL_GB",
}

#: Regional metrics also consumed: one INSTANCES per VM; one IN_USE_ADDRESSES per external IP.
INSTANCES_QUOTA = "INSTANCES"
EXTERNAL_IP_QUOTA = "IN_USE_ADDRESSES"
#: Project (global) metrics: IMAGES, and CPUS_ALL_REGIONS (every vCPU in every region, all series).
IMAGES_QUOTA = "IMAGES"
ALL_REGIONS_CPU_QUOTA = "CPUS_ALL_REGIONS"

#: How many VMs (each with one boot disk) one run holds at once. pipeline.bake runs Packer to completion
#: (the builder VM is deleted in StepTeardownInstance.Run and its disk in its Cleanup, both before packer
#: exits: builder.go:123, step_teardown_instance.go:37,69) and only then target.test creates the test VM; the
#: nightly bakes its variants one after another (nightly.py). So the peak is ONE VM and ONE disk. Pass
#: ``vms=2`` to leave room for a leftover of a killed run (reaped only after its expiry) or a concurrent job.
PEAK_VMS_PER_RUN = 1
#: Images a run holds at once: the candidate and its published copy (the candidate is deleted after publish).
IMAGES_PER_RUN = 2


def cpu_quota_metric(machine_type: str) -> str:
    """The regional CPU quota metric of ``machine_type`` (``e2-standard-2`` -> ``CPUS``)."""
    series = machine_type.split("-", 1)[0]
    if series not in CPU_QUOTA_BY_SERIES:
        raise KeyError(
            f"machine type {machine_type!r}: no known CPU quota metric for series {series!r} "
            f"(known: {', '.join(sorted(CPU_QUOTA_BY_SERIES))})"
        )
    return CPU_QUOTA_BY_SERIES[series]


def quota_needs(
    machine_cpus: int,
    disk_type: str,
    disk_size_gb: int,
    vms: int = PEAK_VMS_PER_RUN,
    *,
    machine_type: str = "e2-standard-2",
    external_ip: bool = False,
) -> dict[str, float]:
    """Regional quota a run needs free, by Quota.metric: vCPUs (``machine_cpus``, from machineTypes.get
    ``guestCpus``) and boot disk GB of ``vms`` VMs at once, the instances, and external IPs if any."""
    if disk_type not in DISK_QUOTA_BY_TYPE:
        raise KeyError(f"disk type {disk_type!r}: expected one of {', '.join(DISK_QUOTA_BY_TYPE)}")
    needs: dict[str, float] = {
        cpu_quota_metric(machine_type): float(machine_cpus * vms),
        DISK_QUOTA_BY_TYPE[disk_type]: float(disk_size_gb * vms),
        INSTANCES_QUOTA: float(vms),
    }
    if external_ip:
        needs[EXTERNAL_IP_QUOTA] = float(vms)
    return needs


def project_quota_needs(machine_cpus: int, vms: int = PEAK_VMS_PER_RUN) -> dict[str, float]:
    """Project-wide quota a run needs free: images and all-region vCPUs."""
    return {IMAGES_QUOTA: float(IMAGES_PER_RUN), ALL_REGIONS_CPU_QUOTA: float(machine_cpus * vms)}
