"""The host-tools table (``scripts/host-tools.txt``) and a static scan of the commands the project runs on the host.

The scan reads Python (``bakery/``, ``tasks.py``, ``benchmarks/``, ``tests/`` but the image suite) with ``ast``
and the host shell scripts (``scripts/*.sh``, ``.ci/run``) with tree-sitter's Bash grammar. In Python it looks
at every place a program is started or looked for: the argv of ``subprocess.run/Popen/call/check_call/
check_output``, ``proc.run``, ``proc.spawn``, ``os.exec*``/``os.spawn*``/``os.posix_spawn*``; the command
string of ``os.system``/``os.popen``; ``shutil.which(NAME)``; the keys of ``proc.require_tools({...})``. An
argv is followed through list literals (``*`` included), names assigned in the function or the module,
imported constants, ``+``, ``x if c else y``, comprehensions over an argv, the ``return`` of a function that
builds it, and a function's parameter to its call sites. ``env VAR=… CMD`` counts CMD too, and ``sh -c`` /
``bash -c`` with a literal script counts the commands of that script. Whatever the scan cannot follow is
reported, never guessed.

Not scanned, on purpose: ``provision/`` (runs inside the builder VM), ``templates/`` (files baked into the
image), ``tests/image/`` (testinfra checks: their commands run in the image over SSH), the stand-in
packages' scripts in ``bakery/standin.py`` (installed into the image), and the ``run`` methods of a VM or a
testinfra host (remote). Commands that other programs start are listed by hand where the project depends
on them (Packer's qemu builder runs ``qemu-system-x86_64``/``qemu-img``; testinfra's ssh backend runs
``ssh``): both are also run by bakery itself.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "scripts" / "host-tools.txt"
KINDS = ("apt", "venv", "optional")

# Bash builtins and keywords (bash 5.2, ``compgen -b`` / ``compgen -k`` on Debian 12): not host tools.
_BUILTINS = """
. : [ alias bg bind break builtin caller cd command compgen complete compopt continue declare dirs disown echo
enable eval exec exit export false fc fg getopts hash help history jobs kill let local logout mapfile popd printf
pushd pwd read readarray readonly return set shift shopt source suspend test times trap true type typeset ulimit
umask unalias unset wait
"""
SHELL_BUILTINS = frozenset(_BUILTINS.split())

# Where a program is started (the argv is the first positional argument or ``args=``), by the call's last
# two dotted name parts.
EXEC_CALLS = frozenset(
    {
        ("subprocess", "run"),
        ("subprocess", "Popen"),
        ("subprocess", "call"),
        ("subprocess", "check_call"),
        ("subprocess", "check_output"),
        ("proc", "run"),
        ("proc", "spawn"),
        *(("os", name) for name in ("execv", "execve", "execvp", "execvpe", "execl", "execlp", "execle")),
        *(("os", name) for name in ("spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp")),
    }
)
SHELL_CALLS = frozenset({("os", "system"), ("os", "popen")})
# os.exec*/spawn*/posix_spawn* take the program path first; the argv is the second (spawn*: third) argument.
ARGV_POSITION = {("os", n): 1 for n in ("execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp")}
ARGV_POSITION |= {("os", n): 2 for n in ("spawnv", "spawnve", "spawnvp", "spawnvpe")}
# Files whose own exec calls only forward their callers' argv (the callers are scanned).
WRAPPERS = frozenset({"bakery/proc.py"})

ANY = "<any>"  # a word the scan cannot know
MANY = "<many>"  # zero or more words the scan cannot know (a comprehension of f-strings, say)
PYTHON = "<python>"  # sys.executable: this interpreter, not a host tool
UNKNOWN = "__unknown__"  # stands for an f-string's {value} inside a shell script
# Functions that build an argv without running it (``ssh_argv``, the IAP ProxyCommand) are scanned too.
ARGV_BUILDER = re.compile(r"(^|_)(argv|command)$")


@dataclass(frozen=True)
class Tool:
    command: str  # "-" for a package that provides no command the project runs
    package: str
    kind: str  # apt: bootstrap installs it; venv: pip installs it (pyproject.toml); optional: neither
    why: str


def load_table(path: Path = TABLE) -> list[Tool]:
    """Parse the table; raise ValueError naming the line for a malformed row."""
    tools = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2] not in KINDS:
            raise ValueError(f"{path}:{number}: expected COMMAND PACKAGE {'|'.join(KINDS)} WHY, got {raw!r}")
        tools.append(Tool(*parts))
    return tools


@dataclass(frozen=True)
class Use:
    command: str
    where: str  # path:line


@dataclass
class Scan:
    uses: list[Use] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # path:line: what could not be followed
    required: list[tuple[str, str, str]] = field(default_factory=list)  # (command, package, path:line)

    def commands(self) -> set[str]:
        return {use.command for use in self.uses}


# --- shell -------------------------------------------------------------------------------------------------

_BASH = Parser(Language(tree_sitter_bash.language()))


def shell_commands(script: str) -> tuple[set[str], bool]:
    """The external commands a Bash script runs (builtins, ``$VAR`` and path commands left out) and whether
    it parsed without error."""
    tree = _BASH.parse(script.encode())
    found: set[str] = set()
    stack: list[Node] = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "command":
            continue
        name = node.child_by_field_name("name")
        if name is None or name.text is None:
            continue
        word = name.text.decode()
        if word == "exec":  # `exec CMD ARGS`: CMD is the command
            args = [c for c in node.children if c.type == "word" and c is not name]
            word = args[0].text.decode() if args and args[0].text is not None else word
        if word in SHELL_BUILTINS or "$" in word or '"' in word or "'" in word:
            continue
        if "/" in word:  # a project script (scripts/bootstrap.sh) or an absolute path
            if not word.startswith("/"):
                continue
            word = word.rsplit("/", 1)[1]
        found.add(word)
    return found, not tree.root_node.has_error


def scan_shell_file(path: Path, scan: Scan, root: Path = ROOT) -> None:
    commands, ok = shell_commands(path.read_text())
    rel = path.relative_to(root).as_posix()
    if not ok:
        scan.unresolved.append(f"{rel}: Bash parse error")
    scan.uses.extend(Use(command, rel) for command in sorted(commands))


# --- Python ------------------------------------------------------------------------------------------------


@dataclass
class Module:
    rel: str
    name: str  # dotted, e.g. bakery.local.baseimage
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    imports: dict[str, str]  # local name -> dotted target (module, or module.attribute)


def _dotted(node: ast.expr) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.insert(0, node.id)
    return parts


def _module(rel: str, source: str) -> Module:
    tree = ast.parse(source, rel)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    name = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    imports: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                base = ".".join([*name.split(".")[: -node.level], node.module])
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{base}.{alias.name}"
    return Module(rel, name, tree, parents, imports)


class PythonScan:
    """Resolve the argv of every exec call in a set of modules (see the module docstring)."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.modules = {rel: _module(rel, text) for rel, text in sources.items()}
        self.by_name = {m.name: m for m in self.modules.values()}
        for module in self.modules.values():  # `import harness` beside the test (pytest's rootdir-relative import)
            package = module.name.rpartition(".")[0]
            for local, target in module.imports.items():
                sibling = f"{package}.{target}"
                if target not in self.by_name and (
                    sibling in self.by_name or sibling.rpartition(".")[0] in self.by_name
                ):
                    module.imports[local] = sibling
        self._active: set[tuple[int, str]] = set()
        self._calls = {rel: [n for n in ast.walk(m.tree) if isinstance(n, ast.Call)] for rel, m in self.modules.items()}
        self._defs: dict[str, dict[str, list[ast.FunctionDef]]] = {}
        for rel, m in self.modules.items():
            for n in ast.walk(m.tree):
                if isinstance(n, ast.FunctionDef):
                    self._defs.setdefault(rel, {}).setdefault(n.name, []).append(n)

    # -- where a node lives
    def _function(self, module: Module, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        while node in module.parents:
            node = module.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node
        return None

    def _functions_named(self, module: Module, dotted: list[str]) -> Iterator[tuple[Module, ast.FunctionDef]]:
        """Definitions a call ``a.b.f(...)`` / ``f(...)`` / ``self.f(...)`` in ``module`` may reach."""
        *qualifier, name = dotted
        targets: list[Module] = []
        if not qualifier or qualifier[0] in ("self", "cls"):
            imported = module.imports.get(name)
            if imported and not qualifier:
                owner = self.by_name.get(imported.rsplit(".", 1)[0])
                targets = [owner] if owner else []
            else:
                targets = [module]
        else:
            dotted_module = ".".join([module.imports.get(qualifier[0], qualifier[0]), *qualifier[1:]])
            owner = self.by_name.get(dotted_module)
            targets = [owner] if owner else []
        for target in targets:
            for node in self._defs.get(target.rel, {}).get(name, []):
                yield target, node

    # -- values
    def words(self, module: Module, node: ast.expr, depth: int = 0) -> list[list[str]]:
        """Possible leading words of an argv expression (each alternative at most a few words long)."""
        key = (id(node), module.rel)
        if depth > 12 or key in self._active:
            return [[ANY]]
        self._active.add(key)
        try:
            return [alt[:8] for alt in self._words(module, node, depth + 1)][:64]
        finally:
            self._active.discard(key)

    def _words(self, module: Module, node: ast.expr, depth: int) -> list[list[str]]:
        if isinstance(node, ast.List | ast.Tuple):
            alternatives: list[list[str]] = [[]]
            for element in node.elts:
                if isinstance(element, ast.Starred):
                    parts = self.words(module, element.value, depth)
                else:
                    parts = [[word] for word in self.scalar(module, element, depth)]
                alternatives = [a + p for a in alternatives for p in parts]
            return alternatives
        if isinstance(node, ast.IfExp):
            return self.words(module, node.body, depth) + self.words(module, node.orelse, depth)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return [a + b for a in self.words(module, node.left, depth) for b in self.words(module, node.right, depth)]
        if isinstance(node, ast.ListComp | ast.GeneratorExp):
            generator = node.generators[0]
            element = node.elt
            if isinstance(element, ast.Call) and _dotted(element.func) == ["str"] and element.args:
                element = element.args[0]
            target = generator.target
            if isinstance(element, ast.Name) and isinstance(target, ast.Name) and element.id == target.id:
                return self.words(module, generator.iter, depth)  # [str(a) for a in argv]: argv itself
            return [[MANY]]
        if isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            if dotted in (["list"], ["tuple"]) and node.args:
                return self.words(module, node.args[0], depth)
            found = [
                alt
                for owner, function in self._functions_named(module, dotted)
                for returned in ast.walk(function)
                if isinstance(returned, ast.Return) and returned.value is not None
                for alt in self.words(owner, returned.value, depth)
            ]
            return found or [[ANY]]
        if isinstance(node, ast.Name):
            return [alt for value in self._values_of(module, node, depth) for alt in value]
        if isinstance(node, ast.Attribute) and _dotted(node) == ["sys", "executable"]:
            return [[PYTHON]]
        if isinstance(node, ast.Attribute):
            return [[word] for word in self.scalar(module, node, depth)]
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) and node.slice.lower is None:
            return self.words(module, node.value, depth)  # argv[:3]: the same leading words
        return [[ANY]]

    def scalar(self, module: Module, node: ast.expr, depth: int) -> list[str]:
        """Possible values of one argv element."""
        if depth > 12:
            return [ANY]
        depth += 1
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.JoinedStr):  # an f-string: its {values} are unknown
            return ["".join(str(part.value) if isinstance(part, ast.Constant) else UNKNOWN for part in node.values)]
        if isinstance(node, ast.Call) and node.args:
            dotted = _dotted(node.func)
            if dotted == ["str"] or dotted[-2:] == ["shutil", "which"]:  # str(x); shutil.which(NAME) finds NAME
                return self.scalar(module, node.args[0], depth)
            if dotted and dotted[-1] == "with_name":  # Path(sys.executable).with_name("tool"): a venv tool
                return self.scalar(module, node.args[0], depth)
        if isinstance(node, ast.Call):  # a function of the project: what it returns
            returned = [
                word
                for owner, function in self._functions_named(module, _dotted(node.func))
                for r in ast.walk(function)
                if isinstance(r, ast.Return) and r.value is not None
                for word in self.scalar(owner, r.value, depth)
            ]
            if returned:
                return returned
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            assigned = self._self_attribute(module, node)
            if assigned:
                return [word for value in assigned for word in self.scalar(module, value, depth)]
        if isinstance(node, ast.Name):
            owner, value = self._binding(module, node)
            if value is not None:
                return self.scalar(owner, value, depth)
            iterated = self._iterated(module, node)
            if iterated is not None:
                return iterated
        if isinstance(node, ast.IfExp):
            return self.scalar(module, node.body, depth) + self.scalar(module, node.orelse, depth)
        if isinstance(node, ast.Attribute) and _dotted(node) == ["sys", "executable"]:
            return [PYTHON]
        if isinstance(node, ast.Name | ast.Attribute):
            values = self._constant(module, _dotted(node), depth)
            if values is not None:
                return values
        return [ANY]

    def _self_attribute(self, module: Module, node: ast.Attribute) -> list[ast.expr]:
        """The values assigned to ``self.NAME`` in the class around ``node``."""
        klass: ast.AST = node
        while klass in module.parents and not isinstance(klass, ast.ClassDef):
            klass = module.parents[klass]
        if not isinstance(klass, ast.ClassDef):
            return []
        return [
            s.value
            for s in ast.walk(klass)
            if isinstance(s, ast.Assign)
            and any(isinstance(t, ast.Attribute) and _dotted(t) == ["self", node.attr] for t in s.targets)
        ]

    def _iterated(self, module: Module, name: ast.Name) -> list[str] | None:
        """The values of a loop or comprehension variable: the items (dict: keys) of what it iterates."""
        node: ast.AST = name
        while node in module.parents:
            node = module.parents[node]
            loops: list[ast.comprehension | ast.For] = []
            if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
                loops = list(node.generators)
            elif isinstance(node, ast.For):
                loops = [node]
            for loop in loops:
                if isinstance(loop.target, ast.Name) and loop.target.id == name.id:
                    iterable = loop.iter
                    if isinstance(iterable, ast.Name):
                        owner, value = self._binding(module, iterable)
                        if value is not None:
                            module, iterable = owner, value
                    if isinstance(iterable, ast.Dict):
                        return [w for k in iterable.keys if k is not None for w in self.scalar(module, k, 0)]
                    if isinstance(iterable, ast.List | ast.Tuple | ast.Set):
                        return [w for e in iterable.elts for w in self.scalar(module, e, 0)]
                    return [ANY]
        return None

    def _constant(self, module: Module, dotted: list[str], depth: int) -> list[str] | None:
        """A module-level string constant (``QEMU``, ``vm.QEMU``, ``from x import QEMU``)."""
        if not dotted:
            return None
        if len(dotted) == 1:
            target = module.imports.get(dotted[0])
            owner, name = module, dotted[0]
            if target:
                owner_name, _, name = target.rpartition(".")
                found = self.by_name.get(owner_name)
                if found is None:
                    return None
                owner = found
        else:
            owner_name = ".".join([module.imports.get(dotted[0], dotted[0]), *dotted[1:-1]])
            found = self.by_name.get(owner_name)
            if found is None:
                return None
            owner, name = found, dotted[-1]
        values = [
            statement.value.value
            for statement in owner.tree.body
            if isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in statement.targets)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        ]
        return values or None

    def _values_of(self, module: Module, name: ast.Name, depth: int) -> list[list[list[str]]]:
        """The argv alternatives a name may hold: its assignments in the function, a parameter's values at
        the call sites, or the module's assignments."""
        function = self._function(module, name)
        scopes: list[ast.AST] = []
        enclosing = function
        while enclosing is not None:  # the function, then the functions around it (closures)
            scopes.append(enclosing)
            enclosing = self._function(module, enclosing)
        for scope in [*scopes, module.tree]:
            assigned = [
                node.value
                for node in ast.walk(scope)
                if isinstance(node, ast.Assign | ast.AnnAssign)
                and node.value is not None
                and any(isinstance(t, ast.Name) and t.id == name.id for t in _targets(node))
                and (scope is not module.tree or node in module.tree.body)
            ]
            if assigned:
                return [self.words(module, value, depth) for value in assigned]
            if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                args = scope.args
                if name.id in [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]:
                    return [self._arguments(module, scope, name.id, depth)]
        constant = self._constant(module, [name.id], depth)
        if constant is not None:
            return [[[value] for value in constant]]
        return [[[ANY]]]

    def _arguments(
        self, module: Module, function: ast.FunctionDef | ast.AsyncFunctionDef, parameter: str, depth: int
    ) -> list[list[str]]:
        """What callers pass for ``parameter``: the call sites in this module (``f(...)``, ``self.f(...)``)
        and in modules that import it."""
        positional = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        index = positional.index(parameter) if parameter in positional else None
        if index is not None and positional and positional[0] in ("self", "cls"):
            index -= 1
        found: list[list[str]] = []
        for caller in self.modules.values():
            for node in self._calls[caller.rel]:
                if not self._calls_function(caller, node, module, function.name):
                    continue
                value = next((k.value for k in node.keywords if k.arg == parameter), None)
                if value is None and index is not None and index < len(node.args):
                    value = node.args[index]
                if value is not None and not isinstance(value, ast.Starred):
                    found.extend(self.words(caller, value, depth))
        if not found:
            default = _default(function, parameter)
            return self.words(module, default, depth) if default is not None else [[ANY]]
        return found

    def _calls_function(self, caller: Module, call: ast.Call, module: Module, name: str) -> bool:
        dotted = _dotted(call.func)
        if not dotted or dotted[-1] != name:
            return False
        if caller is module:
            return len(dotted) == 1 or dotted[0] in ("self", "cls")
        if len(dotted) == 1:
            return caller.imports.get(name) == f"{module.name}.{name}"
        return (
            caller.imports.get(dotted[0], dotted[0]) == module.name
            or ".".join([caller.imports.get(dotted[0], dotted[0]), *dotted[1:-1]]) == module.name
        )

    # -- the scan
    def scan(self, scan: Scan) -> None:
        for module in self.modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call):
                    self._call(module, node, scan)
                elif isinstance(node, ast.FunctionDef) and ARGV_BUILDER.search(node.name):
                    for returned in ast.walk(node):
                        if isinstance(returned, ast.Return) and isinstance(returned.value, ast.List):
                            for alternative in self.words(module, returned.value):
                                self._argv(alternative, f"{module.rel}:{returned.lineno}", scan, returned.value)

    def _call(self, module: Module, call: ast.Call, scan: Scan) -> None:
        dotted = _dotted(call.func)
        kind = tuple(dotted[-2:]) if len(dotted) >= 2 else ()
        where = f"{module.rel}:{call.lineno}"
        if module.rel in WRAPPERS:
            return
        if kind == ("shutil", "which") and call.args:
            for word in self.scalar(module, call.args[0], 0):
                self._use(word, where, scan, "shutil.which", call)
        elif dotted == ["map"] and len(call.args) == 2 and _dotted(call.args[0])[-2:] == ["shutil", "which"]:
            items = call.args[1].elts if isinstance(call.args[1], ast.List | ast.Tuple) else [call.args[1]]
            for item in items:
                for word in self.scalar(module, item, 0):
                    self._use(word, where, scan, "shutil.which", call)
        elif dotted and dotted[-1] == "require_tools" and call.args:
            self._required(module, call, where, scan)
        elif kind in SHELL_CALLS and call.args:
            for script in self.scalar(module, call.args[0], 0):
                self._script(script, where, scan, call)
        elif kind in EXEC_CALLS:
            position = ARGV_POSITION.get(kind, 0)
            argv = call.args[position] if len(call.args) > position else None
            argv = next((k.value for k in call.keywords if k.arg == "args"), argv)
            if argv is None:
                scan.unresolved.append(f"{where}: {'.'.join(dotted)} without an argv [{ast.unparse(call)}]")
                return
            shell = any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value for k in call.keywords)
            if shell:
                for script in self.scalar(module, argv, 0):
                    self._script(script, where, scan, argv)
                return
            for alternative in self.words(module, argv):
                self._argv(alternative, where, scan, argv)

    def _required(self, module: Module, call: ast.Call, where: str, scan: Scan) -> None:
        """``require_tools({program: package})``: a dict literal, or a name bound to one (in the function or
        the module, or imported) plus its ``name[program] = package`` items."""
        node, owner = call.args[0], module
        pairs: list[tuple[ast.expr | None, ast.expr]] = []
        if isinstance(node, ast.Name):
            scope = self._function(module, node) or module.tree
            items = [
                (s.targets[0].slice, s.value)
                for s in ast.walk(scope)
                if isinstance(s, ast.Assign)
                and isinstance(s.targets[0], ast.Subscript)
                and isinstance(s.targets[0].value, ast.Name)
                and s.targets[0].value.id == node.id
            ]
            pairs.extend(items)
            owner, value = self._binding(module, node)
            if value is not None:
                node = value
        if isinstance(node, ast.Dict):
            pairs.extend(zip(node.keys, node.values, strict=True))
        elif not pairs:
            scan.unresolved.append(f"{where}: require_tools of a value the scan cannot follow [{ast.unparse(call)}]")
        for key, value in pairs:
            commands = self.scalar(owner, key, 0) if key is not None else [ANY]
            packages = self.scalar(owner, value, 0)
            for command in commands:
                self._use(command, where, scan, "require_tools", call)
                scan.required.extend((command, package, where) for package in packages if package != ANY)

    def _binding(self, module: Module, name: ast.Name) -> tuple[Module, ast.expr | None]:
        """The one expression ``name`` is bound to in its function, its module, or the module it is imported
        from."""
        scopes: list[ast.AST] = []
        enclosing = self._function(module, name)
        while enclosing is not None:  # the function, then the functions around it (closures)
            scopes.append(enclosing)
            enclosing = self._function(module, enclosing)
        for where in (*scopes, module.tree):
            values = [
                s.value
                for s in (module.tree.body if where is module.tree else ast.walk(where))
                if isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name.id for t in s.targets)
            ]
            if len(values) == 1:
                return module, values[0]
        target = module.imports.get(name.id)
        if target:
            owner_name, _, attribute = target.rpartition(".")
            owner = self.by_name.get(owner_name)
            if owner is not None:
                return self._binding(owner, ast.Name(id=attribute))
        return module, None

    def _use(self, word: str, where: str, scan: Scan, what: str, node: ast.AST) -> None:
        if word in (ANY, MANY) or UNKNOWN in word:
            scan.unresolved.append(f"{where}: {what} of a value the scan cannot follow [{ast.unparse(node)}]")
        elif word != PYTHON:
            scan.uses.append(Use(word.rsplit("/", 1)[-1], where))

    def _script(self, script: str, where: str, scan: Scan, node: ast.AST) -> None:
        if script in (ANY, MANY):
            scan.unresolved.append(f"{where}: a shell script the scan cannot follow [{ast.unparse(node)}]")
            return
        commands, ok = shell_commands(script)
        if not ok:
            scan.unresolved.append(f"{where}: Bash parse error [{ast.unparse(node)}]")
        for command in sorted(commands):
            self._use(command, where, scan, "sh -c", node)

    def _argv(self, words: list[str], where: str, scan: Scan, node: ast.AST) -> None:
        if not words or words[0] in (ANY, MANY):
            scan.unresolved.append(f"{where}: cannot tell which program this argv starts [{ast.unparse(node)}]")
            return
        first = words[0]
        if first == PYTHON:
            return
        if "/" in first and not first.startswith("/"):
            return  # a project file run directly (scripts/…)
        self._use(first, where, scan, "argv", node)
        rest = words[1:]
        if first == "env":  # env [NAME=VALUE]… COMMAND
            command = next((w for w in rest if w != MANY and "=" not in w and not w.startswith("-")), ANY)
            self._use(command, where, scan, "env", node)
        elif first in ("sh", "bash") and len(rest) >= 2 and rest[0] == "-c":
            self._script(rest[1], where, scan, node)


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]


def _default(function: ast.FunctionDef | ast.AsyncFunctionDef, parameter: str) -> ast.expr | None:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    for arg, default in zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True):
        if arg.arg == parameter:
            return default
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if arg.arg == parameter:
            return kw_default
    return None


# --- what is scanned ----------------------------------------------------------------------------------------

PYTHON_GLOBS = ("bakery/**/*.py", "tasks.py", "benchmarks/*.py", "tests/**/*.py", "scripts/*.py")
EXCLUDED = ("tests/image/", "tests/fixtures/")
SHELL_FILES = ("scripts/*.sh", ".ci/run")


def python_sources(root: Path = ROOT) -> dict[str, str]:
    files: set[Path] = {p for pattern in PYTHON_GLOBS for p in root.glob(pattern)}
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(files)
        if not p.relative_to(root).as_posix().startswith(EXCLUDED)
    }


def shell_files(root: Path = ROOT) -> Iterable[Path]:
    return sorted({p for pattern in SHELL_FILES for p in root.glob(pattern)})


def scan_project(root: Path = ROOT) -> Scan:
    scan = Scan()
    PythonScan(python_sources(root)).scan(scan)
    for path in shell_files(root):
        scan_shell_file(path, scan, root)
    return scan


def scan_python(sources: dict[str, str]) -> Scan:
    """Scan only these sources (path -> text): for tests of the scan itself."""
    scan = Scan()
    PythonScan(sources).scan(scan)
    return scan
