"""A fake of the Compute Engine metadata server for one instance held by a ``FakeCompute``.

Served on 127.0.0.1 for a local VM (QEMU ``guestfwd`` to 169.254.169.254) that runs Debian bookworm's real
``google-guest-agent`` 20211116.00 and ``google-compute-engine-oslogin`` 20210907.00. Content is read from the
fake at request time: the instance record (what instances.insert stored) and the project
(``project``, ``project_number``, ``project_metadata``).

The server's rules, from https://cloud.google.com/compute/docs/metadata/querying-metadata ("View and query VM
metadata"; text read from a stored copy of the page, code-index file id 66958185427):
- "Parts of a metadata request": without ``Metadata-Flavor: Google`` "the metadata server denies your request"
  (403; body as quoted from the real server in a GKE tutorial, code-index id 9348292448: "Your client does not
  have permission to get URL <code>PATH</code> from this server. Missing Metadata-Flavor:Google header.").
- "Query metadata directory listings": an entry ending in ``/`` is a directory listing, subdirectories listed
  with a trailing ``/``. A directory asked without its slash is a 301 to the path with it, query kept
  (observed on GCE: googleapis/gax-dotnet#410, googleapis/gcp-metadata#361).
- "Recursively query directory listings": ``recursive=true`` answers JSON by default, ``alt=text`` lines of
  ``path value``; "Format query output": ``alt=json``/``alt=text`` override, ``instance/tags`` is JSON by default.
- "Query metadata changes using the wait-for-change feature": ``wait_for_change=true`` on a directory listing
  (not recursive) or on a token is a 400. "Use ETags": ``last_etag`` different from the current ETag answers at
  once. "Set timeouts": ``timeout_sec`` (an integer) returns the current contents when it expires.
- "Use ETags" sample answer: headers ``ETag`` (16 hex digits), ``Server: Metadata Server for VM``,
  ``Content-Type: application/text``, ``X-XSS-Protection``, ``X-Frame-Options``.
- "Limitations": "Any requests that contain the header X-Forwarded-For are automatically rejected" (the status
  is not given; 403 here, an assumption).
Shapes of the recursive JSON (camelCase fixed keys, custom keys verbatim, ``guestAttributes: {}``, root
``oslogin``, token absent) follow real answers quoted in code-index ids 2433656454 and 6070326284. From Google's
own 2016 metadata server emulator (Apache-2.0, code-index id 21088719238; its repository not identified), not from
the real server: ``alt`` on a directory listing is a 400, the ETag is the last 16 hex digits of an MD5 of the
content, the root answers without the header. NOT verified (no source found): the 404, 405, 400 and
X-Forwarded-For bodies; the guest-attributes "disabled" 403 and its text; guest attributes left out of the
recursive dump; 400 for a non-integer ``timeout_sec`` or an ``alt`` other than json/text; lists of strings
(scopes, forwarded-ips…) being single values, not directories; the 10-minute cap of a wait without timeout_sec.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import ipaddress
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import project_number
from tests.fakes.compute import LINK_BASE, FakeCompute

PREFIX = "/computeMetadata/v1"
COMMON_HEADERS = {
    "Metadata-Flavor": "Google",
    "Server": "Metadata Server for VM",
    "X-XSS-Protection": "1; mode=block",
    "X-Frame-Options": "SAMEORIGIN",
}
JSON, TEXT, HTML = "application/json", "application/text", "text/html; charset=UTF-8"
#: Go's strconv.ParseBool true values: the agent parses attributes with it (guest-agent 20211116.00
#: google_guest_agent/metadata.go:188-219).
TRUE = {"1", "t", "T", "TRUE", "true", "True"}
#: Guest-attribute namespaces and keys: letters, digits, ``_`` and ``-`` (unverified: a user's code comment,
#: code-index id 62190362035, says other names are a 400).
GUEST_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_WAIT = 600.0  # a wait_for_change without timeout_sec: the real ceiling is not documented; ours is 10 min
FAKE_TOKEN_NOTE = "fake-metadata-server-token-"  # prefix of every stub access token: never a real credential


class Free(dict[str, Any]):
    """A directory whose keys are data (attributes, service accounts): kept verbatim in JSON, not camelCased."""


class Indexed(list[Any]):
    """A list served as a directory of ``0/``, ``1/``… (disks, network-interfaces, access-configs)."""


TOKEN = object()  # the ``token`` entry of a service account: listed, never in a recursive answer


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it, with the status it answered."""

    method: str
    target: str
    headers: dict[str, str]
    status: int


Reply = tuple[int, dict[str, str], bytes]
SEEN_HEADERS = ("Host", "Metadata-Flavor", "X-Forwarded-For", "X-Google-Metadata-Request", "User-Agent")


class ServerClosing(Exception):
    """A held request was released because the server stops (its instance is deleted)."""


@dataclass
class MetadataServer:
    """The metadata server of instance ``instance`` in ``zone`` of ``fake`` (see the module docstring)."""

    fake: FakeCompute
    zone: str
    instance: str
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # requests a real server rejects, and our own bugs
    guest_attributes: dict[str, str] = field(default_factory=dict)  # "namespace/key" -> value (PUT by the guest)
    #: Every ``/oslogin/…`` target, answered 404: "404 means OS Login is not enabled" (guest-oslogin 20210907.00
    #: src/oslogin_utils.cc:248,283). Even with OS Login off, upstream's package enables google-oslogin-cache.timer
    #: (packaging/debian/rules:8-12; OnBootSec=5) whose refresh asks ``users?pagesize=`` and ``groups?pagesize=``
    #: (oslogin_utils.cc:240,275) unconditionally; Debian's own packaging of it was not checked.
    oslogin_calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()  # guards requests, violations, guest_attributes, oslogin_calls
        self._changes = threading.Condition()
        self._generation = 0
        self._closing = False

    @property
    def mac_address(self) -> str:
        """The MAC of nic0: Google's ``42:01`` prefix (locally administered, unicast) and 4 bytes fixed by the
        instance's zone and name; give QEMU the same so the agent finds its interface by MAC."""
        return self._mac(0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def serve(self) -> Iterator[MetadataServer]:
        """Listen on 127.0.0.1 (a free port, ``port``) for the duration; waiting requests end at exit."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.metadata = self
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-metadata", daemon=True)
        self._closing = False
        thread.start()
        self.port = server.server_address[1]
        try:
            yield self
        finally:
            with self._changes:
                self._closing = True
                self._changes.notify_all()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def changed(self) -> None:
        """Wake every wait_for_change request: each re-reads the fake and answers if its ETag changed."""
        with self._changes:
            self._generation += 1
            self._changes.notify_all()

    # --- answers --------------------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request (any bug in the fake: a 500, recorded in ``violations``), and record it."""
        try:
            reply = self._answer(method, target, headers, body)
        except ServerClosing:  # a wait_for_change released by the instance's deletion
            reply = _reply(503, "The metadata server is shutting down.", TEXT)
        except Exception as exc:  # noqa: BLE001 - never crash the guest's server; fail the test through violations
            reply = self._reject(500, f"fake metadata server crashed on {method} {target}: {exc!r}", "")
        with self.lock:
            self.requests.append(Seen(method, target, {k: headers[k] for k in SEEN_HEADERS if k in headers}, reply[0]))
        return reply

    def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        split = urllib.parse.urlsplit(target)
        path = split.path  # empty segments are skipped: the agent asks for ``v1//?…`` (metadata.go:34-35,250)
        if "X-Forwarded-For" in headers:
            return self._reject(403, f"X-Forwarded-For on {method} {target}", "Request had an X-Forwarded-For header.")
        if path == "/":
            return _reply(200, "computeMetadata/\n", TEXT)
        if path.startswith("/computeMetadata") and headers.get("Metadata-Flavor") != "Google":
            text = f"Your client does not have permission to get URL <code>{path}</code> from this server. "
            text += "Missing Metadata-Flavor:Google header."
            return self._reject(403, f"no Metadata-Flavor: Google on {method} {target}", text)
        if path in ("/computeMetadata", PREFIX):
            return _redirect(headers, path, split.query)
        if path == "/computeMetadata/":
            return _reply(200, "v1/\n", TEXT)
        if not path.startswith(PREFIX + "/"):
            return _not_found(path)
        rel = path[len(PREFIX) + 1 :]
        if rel.startswith("oslogin/") and rel.strip("/") != "oslogin":
            with self.lock:
                self.oslogin_calls.append(target)
            return _not_found(path)
        guest = rel.startswith("instance/guest-attributes")
        if method in ("PUT", "DELETE") and guest:
            return self._write_guest(method, rel, path, body)
        if method != "GET":
            return self._reject(405, f"{method} {target}: the metadata server only reads here", "Method not allowed.")
        return self._get(rel, path, split.query, headers=headers, guest=guest)

    def _get(self, rel: str, path: str, raw_query: str, *, headers: dict[str, str], guest: bool) -> Reply:
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query, keep_blank_values=True).items()}
        segments = [s for s in rel.split("/") if s]
        directory_asked = rel == "" or rel.endswith("/")
        alt, recursive = query.get("alt", ""), query.get("recursive", "").lower() in ("true", "1")
        wait = query.get("wait_for_change", "").lower() in ("true", "1")
        timeout = query.get("timeout_sec", "")
        if timeout and not timeout.isdigit():
            return self._reject(400, f"timeout_sec={timeout!r} is not an integer", "Invalid request.")
        if alt not in ("", "json", "text"):
            return self._reject(400, f"alt={alt!r}: only json or text", "Invalid request.")
        node = _child(self.tree(guest=guest), segments)
        if node is None:
            return _not_found(path)
        if node is TOKEN:
            if wait:
                return self._reject(400, f"wait_for_change on a token: {path}", "Invalid request.")
            return self._token(segments[-2], alt, directory_asked, path)
        if _is_dir(node) and not directory_asked:
            return _redirect(headers, path, raw_query)
        if directory_asked and not _is_dir(node):
            return _not_found(path)
        if _is_dir(node) and not recursive and (wait or alt):
            problem = f"wait_for_change or alt on a directory listing: {path}?{raw_query}"
            return self._reject(400, problem, "Invalid request.")
        etag = _etag(node)
        if wait and query.get("last_etag") in (None, etag):
            node, etag = self._hold(segments, guest, etag, float(timeout) if timeout else MAX_WAIT)
            if node is None:
                return _not_found(path)
        as_json = alt == "json" or (alt != "text" and ((recursive and _is_dir(node)) or rel == "instance/tags"))
        if _is_dir(node) and not recursive:
            text = "".join(f"{k}/\n" if _is_dir(v) else f"{k}\n" for k, v in _items(node))
        elif as_json:
            text = json.dumps(_to_json(node), separators=(",", ":"))
        elif _is_dir(node):
            text = "".join(f"{line}\n" for line in _text_lines(node, ""))
        elif isinstance(node, list):
            text = "".join(f"{v}\n" for v in node)
        else:
            text = str(node)
        return _reply(200, text, JSON if as_json else TEXT, etag)

    def _hold(self, segments: list[str], guest: bool, etag: str, timeout: float) -> tuple[Any, str]:
        """Wait until the content at ``segments`` has another ETag (after ``changed()``) or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changes:  # never read the fake while holding this: a caller may hold fake.lock
                moved = functools.partial(self._moved, self._generation)
                self._changes.wait_for(moved, max(0.0, deadline - time.monotonic()))
            if self._closing:  # the instance is being deleted: its record may be gone already
                raise ServerClosing
            node = _child(self.tree(guest=guest), segments)
            now = None if node is None else _etag(node)
            if now != etag or time.monotonic() >= deadline or self._closing:
                return node, now or etag

    def _moved(self, generation: int) -> bool:
        return self._generation != generation or self._closing

    def _token(self, account: str, alt: str, slash: bool, path: str) -> Reply:
        """A stub OAuth token (the shape of the page's "Obtain specific OAuth2 access tokens" answer)."""
        if slash:
            return _not_found(path)
        digest = hashlib.sha256(f"{self.zone}/{self.instance}/{account}".encode()).hexdigest()[:24]
        token = {"access_token": FAKE_TOKEN_NOTE + digest, "expires_in": 3599, "token_type": "Bearer"}
        if alt == "text":
            return _reply(200, "".join(f"{k} {v}\n" for k, v in token.items()), TEXT)
        return _reply(200, json.dumps(token, separators=(",", ":")), JSON)

    def _write_guest(self, method: str, rel: str, path: str, body: bytes) -> Reply:
        """PUT/DELETE ``instance/guest-attributes/NAMESPACE/KEY``: what the agent does with each new host key
        when ``set_host_keys`` (default true) is on: ``PUT …/guest-attributes/hostkeys/<key type>``, value = the
        key's base64 field (guest-agent 20211116.00 google_guest_agent/instance_setup.go:258-270, 288-300; the
        agent ignores the answer)."""
        parts = rel.split("/")[2:]
        if len(parts) != 2 or not all(GUEST_NAME.match(p) for p in parts):
            return self._reject(400, f"{method} {path}: not guest-attributes/NAMESPACE/KEY", "Invalid request.")
        attributes = self.tree(guest=False)
        instance_value = attributes["instance"]["attributes"].get("enable-guest-attributes")
        enabled = instance_value or attributes["project"]["attributes"].get("enable-guest-attributes", "")
        if enabled not in TRUE:
            return _reply(403, "Guest attributes endpoint access is disabled.", HTML)
        key = "/".join(parts)
        with self.lock:
            if method == "PUT":
                self.guest_attributes[key] = body.decode()
            elif self.guest_attributes.pop(key, None) is None:
                return _not_found(path)
        return _reply(200, "", TEXT)

    def _reject(self, status: int, violation: str, text: str) -> Reply:
        with self.lock:
            self.violations.append(violation)
        return _reply(status, text, HTML)

    # --- content --------------------------------------------------------------------------------------

    def tree(self, *, guest: bool = False) -> dict[str, Any]:
        """The metadata tree, as the real server's paths (kebab-case); ``guest``: with the guest attributes."""
        with self.fake.lock:
            record = self.fake.instances.get((self.zone, self.instance))
            if record is None:
                raise LookupError(f"the fake holds no instance {self.instance!r} in {self.zone!r}")
            record = copy.deepcopy(record)
            boot = [d.get("source", "").rsplit("/", 1)[-1] for d in record.get("disks", []) if d.get("boot")]
            image = (self.fake.disks.get((self.zone, boot[0])) or {}).get("sourceImage", "") if boot else ""
            project_attributes = Free(self.fake.project_metadata)
        with self.lock:
            guest_attributes = dict(self.guest_attributes) if guest else {}
        project, number = self.fake.project, project_number(self.fake.project)
        accounts = Free()
        for index, account in enumerate(record.get("serviceAccounts", [])):
            entry = {
                "aliases": ["default"] if index == 0 else [],
                "email": account["email"],
                "scopes": list(account.get("scopes", [])),
                "token": TOKEN,
            }
            accounts[account["email"]] = entry
            if index == 0:
                accounts["default"] = entry
        guest_tree = Free()
        for key, value in sorted(guest_attributes.items()):
            namespace, name = key.split("/", 1)
            guest_tree.setdefault(namespace, Free())[name] = value
        scheduling = record.get("scheduling", {})
        instance = {
            "attributes": Free({i["key"]: i.get("value") or "" for i in record.get("metadata", {}).get("items", [])}),
            "description": record.get("description", ""),
            "disks": Indexed(
                {
                    "device-name": d.get("deviceName", ""),
                    "index": d.get("index", i),
                    "interface": "SCSI",
                    "mode": d.get("mode", "READ_WRITE"),
                    "type": d.get("type", "PERSISTENT"),
                }
                for i, d in enumerate(record.get("disks", []))
            ),
            "guest-attributes": guest_tree,
            "hostname": f"{self.instance}.{self.zone}.c.{project}.internal",
            "id": int(record["id"]),
            "image": image.removeprefix(LINK_BASE),
            "machine-type": f"projects/{number}/machineTypes/{record.get('machineType', '').rsplit('/', 1)[-1]}",
            "maintenance-event": "NONE",
            "name": self.instance,
            "network-interfaces": Indexed(
                self._nic(i, nic, number) for i, nic in enumerate(record.get("networkInterfaces", []))
            ),
            "preempted": "FALSE",
            "scheduling": {
                "automatic-restart": "TRUE" if scheduling.get("automaticRestart", True) else "FALSE",
                "on-host-maintenance": scheduling.get("onHostMaintenance", "MIGRATE"),
                "preemptible": "TRUE" if scheduling.get("preemptible", False) else "FALSE",
            },
            "service-accounts": Free(sorted(accounts.items())),
            "tags": list(record.get("tags", {}).get("items", [])),
            # Go reads this as `json:"drift-token"` (metadata.go:79-81) but real answers say "driftToken".
            "virtual-clock": {"drift-token": "0"},
            "zone": f"projects/{number}/zones/{self.zone}",
        }
        return {
            "instance": instance,
            "oslogin": {"authenticate": {"sessions": Free()}},
            "project": {"attributes": project_attributes, "numeric-project-id": int(number), "project-id": project},
        }

    def _nic(self, index: int, nic: dict[str, Any], number: str) -> dict[str, Any]:
        """One network interface; gateway and a /24 mask are the fake's choice (the agent reads neither)."""
        ip = nic.get("networkIP", "")
        gateway = str(next(ipaddress.ip_network(f"{ip}/24", strict=False).hosts())) if ip else ""
        return {
            "access-configs": Indexed(
                {"external-ip": a.get("natIP", ""), "type": a.get("type", "ONE_TO_ONE_NAT")}
                for a in nic.get("accessConfigs", [])
            ),
            "dns-servers": ["169.254.169.254"],
            "forwarded-ips": [],
            "gateway": gateway,
            "ip": ip,
            "ip-aliases": [],
            "mac": self._mac(index),
            "mtu": 1460,
            "network": f"projects/{number}/networks/{nic.get('network', 'default').rsplit('/', 1)[-1]}",
            "subnetmask": "255.255.255.0",
            "target-instance-ips": [],
        }

    def _mac(self, index: int) -> str:
        digest = hashlib.sha256(f"{self.zone}/{self.instance}/{index}".encode()).digest()[:4]
        return ":".join(f"{b:02x}" for b in (0x42, 0x01, *digest))


def _is_dir(node: Any) -> bool:
    return isinstance(node, dict | Indexed)


def _items(node: Any) -> list[tuple[str, Any]]:
    return [(str(i), v) for i, v in enumerate(node)] if isinstance(node, Indexed) else list(node.items())


def _child(node: Any, segments: list[str]) -> Any:
    for segment in segments:
        if isinstance(node, dict):
            node = node.get(segment)
        elif isinstance(node, Indexed) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return None
    return node


def _camel(key: str) -> str:
    first, *rest = key.split("-")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _to_json(node: Any) -> Any:
    """The recursive JSON: fixed keys camelCased (``machine-type`` -> ``machineType``), ``Free`` keys verbatim."""
    if isinstance(node, dict):
        rename = (lambda k: k) if isinstance(node, Free) else _camel
        return {rename(k): _to_json(v) for k, v in node.items() if v is not TOKEN}
    if isinstance(node, list):
        return [_to_json(v) for v in node]
    return node


def _text_lines(node: Any, prefix: str) -> Iterator[str]:
    if _is_dir(node):
        for key, value in _items(node):
            if value is not TOKEN:
                yield from _text_lines(value, f"{prefix}/{key}" if prefix else key)
    else:
        for value in node if isinstance(node, list) else [node]:
            yield f"{prefix} {value}" if prefix else str(value)


def _etag(node: Any) -> str:
    """16 hex digits, fixed by the content whatever ``alt`` asks (as in the page's example ``411261ca6c9e654e``)."""
    return hashlib.md5(json.dumps(_to_json(node), sort_keys=True).encode()).hexdigest()[-16:]


def _reply(status: int, text: str, content_type: str, etag: str | None = None) -> Reply:
    headers = {**COMMON_HEADERS, "Content-Type": content_type}
    if etag:
        headers["ETag"] = etag
    return status, headers, text.encode()


def _redirect(headers: dict[str, str], path: str, query: str) -> Reply:
    location = f"http://{headers.get('Host', '169.254.169.254')}{path}/" + (f"?{query}" if query else "")
    status, reply_headers, body = _reply(301, "", HTML)
    return status, {**reply_headers, "Location": location}, body


def _not_found(path: str) -> Reply:
    text = f"<p><b>404.</b> <ins>That’s an error.</ins><p>The requested URL <code>{path}</code> was not found."
    return _reply(404, text, HTML)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    metadata: MetadataServer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the agent's Go client keeps its connection
    server: _Server

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.title(): v for k, v in self.headers.items()}
        status, reply_headers, payload = self.server.metadata.answer(self.command, self.path, headers, body)
        try:
            self.send_response(status)
            for name, value in {**reply_headers, "Content-Length": str(len(payload))}.items():
                if name != "Server":  # send_response already sent version_string()
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the guest gave up waiting

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _answer

    def version_string(self) -> str:
        """The ``Server`` header: the real server's, not ``BaseHTTP/0.6 Python/…``."""
        return COMMON_HEADERS["Server"]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in ``MetadataServer.requests``."""
