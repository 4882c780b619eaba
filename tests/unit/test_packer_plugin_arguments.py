"""Rendered Packer >= 1.7 templates against the arguments of the plugins they pin.

Only Packer 1.6.6 is installed here, so nothing validates the templates that declare ``required_plugins``.
Instead, :func:`problems` parses a rendered template (python-hcl2) and checks its ``source`` block the way the
plugin's ``FlatConfig.HCL2Spec()`` would: every attribute and block must be an argument of the pinned plugin
version (``bakery/data/packer/NAME-VERSION-arguments.json``), and every attribute's value must have that
argument's cty type. Value types are inferred from the template alone: ``var.NAME`` takes the type the
template's own ``variable "NAME"`` block declares, literals and the few expression forms the templates use
are typed as HCL would type them, and any other form is reported as not understood (never silently accepted).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import hcl2
import pytest
from hcl2.rules.abstract import LarkRule, LarkToken
from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
from hcl2.rules.containers import ObjectElemKeyRule, ObjectRule, TupleRule
from hcl2.rules.expressions import BinaryOpRule, ConditionalRule, ExprTermRule, UnaryOpRule
from hcl2.rules.functions import FunctionCallRule
from hcl2.rules.indexing import GetAttrExprTermRule
from hcl2.rules.literal_rules import FloatLitRule, IdentifierRule, IntLitRule, LiteralValueRule
from hcl2.rules.strings import InterpolationRule, StringRule
from hcl2.utils import SerializationOptions
from lark.exceptions import LarkError

from bakery import cli, render
from bakery.config import BuildSpec
from bakery.packer_plugins import PLUGINS, Plugin, arguments

PACKER_WITH_PLUGINS = (1, 11, 2)
PACKER_166 = (1, 6, 6)

# --- types ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Type:
    """A cty type: ``String``, ``Number``, ``Bool``, or ``List``/``Map``/``Set`` of an element type.

    ``Dynamic`` is the element type of an empty ``[]`` or ``{}``, which fits any element type.
    """

    kind: str
    element: Type | None = None

    def __str__(self) -> str:
        """Spelt as in the arguments data: cty's GoString without the outer ``cty.``."""
        if self.kind == "Dynamic":
            return "DynamicPseudoType"
        return self.kind if self.element is None else f"{self.kind}(cty.{self.element})"


STRING, NUMBER, BOOL, DYNAMIC = Type("String"), Type("Number"), Type("Bool"), Type("Dynamic")
PRIMITIVES = {"string": STRING, "number": NUMBER, "bool": BOOL}
COLLECTIONS = {"list": "List", "map": "Map", "set": "Set"}


class ExpressionError(Exception):
    """A value whose type cannot be inferred: an unknown expression form, variable or type mismatch."""


def parse_cty(text: str) -> Type:
    """A cty type string of the arguments data (``String``, ``List(cty.List(cty.String))``, …)."""
    if text in ("String", "Number", "Bool"):
        return Type(text)
    match = re.fullmatch(r"(List|Map|Set)\(cty\.(.+)\)", text)
    if match is None:
        raise ValueError(f"cty type {text!r} is not known to this check")
    return Type(match[1], parse_cty(match[2]))


def fits(actual: Type, expected: Type) -> bool:
    """Whether a value of type ``actual`` fits an argument of type ``expected``.

    Stricter than cty on purpose: cty would convert a string to a number or bool (and back) and an object to a
    map when the values allow it; here a string never fits a Number or Bool argument, nor a map a list.
    """
    if actual.kind == "Dynamic":
        return True
    if actual.kind != expected.kind:
        return False
    if actual.element is None or expected.element is None:
        return actual.element is expected.element
    return fits(actual.element, expected.element)


def unify(types: list[Type], what: str) -> Type:
    """The one type all of ``types`` share (``Dynamic`` parts fit anything)."""
    result = DYNAMIC
    for t in types:
        if result.kind == "Dynamic":
            result = t
        elif t.kind == "Dynamic":
            continue
        elif t.kind != result.kind or (t.element is None) != (result.element is None):
            raise ExpressionError(f"{what} mixes {result} and {t}")
        elif t.element is not None and result.element is not None:
            result = Type(t.kind, unify([result.element, t.element], what))
    return result


# --- reading the parsed template -------------------------------------------------------------------------


def _source(node: LarkRule) -> str:
    """HCL text of an expression, for messages."""
    text = node.serialize(SerializationOptions(wrap_tuples=True, wrap_objects=True))
    if isinstance(text, bool):
        return "true" if text else "false"
    text = str(text)
    if text.startswith("${") and text.endswith("}") and not isinstance(_unwrap(node), StringRule):
        return text[2:-1]
    return text


def _unwrap(node: LarkRule) -> LarkRule:
    while isinstance(node, ExprTermRule):
        node = node.expression
    return node


def _literal_string(node: LarkRule) -> str | None:
    """The value of a quoted string without interpolations, else None."""
    node = _unwrap(node)
    if not isinstance(node, StringRule):
        return None
    if not all(
        isinstance(part.content, LarkToken) and part.content.lark_name() == "STRING_CHARS" for part in node.string_parts
    ):
        return None
    return str(node.serialize(SerializationOptions(strip_string_quotes=True)))


def _label(node: LarkRule) -> str:
    if isinstance(node, IdentifierRule):
        return str(node.serialize())
    value = _literal_string(node)
    if value is None:
        raise ExpressionError(f"block label {_source(node)} is not a plain string")
    return value


def _labels(block: BlockRule) -> list[str]:
    return [_label(label) for label in block.labels]


def _blocks(body: BodyRule, kind: str) -> list[BlockRule]:
    return [c for c in body.children if isinstance(c, BlockRule) and _label(c.labels[0]) == kind]


def _attributes(body: BodyRule) -> list[AttributeRule]:
    return [c for c in body.children if isinstance(c, AttributeRule)]


def _declared_type(node: LarkRule) -> Type:
    """A ``variable`` block's ``type`` (``string``, ``list(string)``, ``map(number)``, …)."""
    node = _unwrap(node)
    if isinstance(node, IdentifierRule) and str(node.serialize()) in PRIMITIVES:
        return PRIMITIVES[str(node.serialize())]
    if isinstance(node, FunctionCallRule):
        name = "::".join(str(i.serialize()) for i in node.identifiers)
        args = node.arguments.arguments if node.arguments else []
        if name in COLLECTIONS and len(args) == 1:
            return Type(COLLECTIONS[name], _declared_type(args[0]))
    raise ExpressionError(f"variable type {_source(node)} not understood")


def variable_types(start: LarkRule) -> tuple[dict[str, Type], list[str]]:
    """The declared type of each ``variable`` block, and problems with the declarations."""
    types: dict[str, Type] = {}
    found: list[str] = []
    for block in _blocks(start.body, "variable"):
        (name,) = _labels(block)[1:]
        declared = [a for a in _attributes(block.body) if a.identifier.serialize() == "type"]
        if not declared:
            found.append(f'variable "{name}": declares no type')
            continue
        try:
            types[name] = _declared_type(declared[0].expression)
        except ExpressionError as exc:
            found.append(f'variable "{name}": {exc}')
    return types, found


# --- typing expressions ------------------------------------------------------------------------------


def infer(node: LarkRule, variables: dict[str, Type]) -> Type:
    """The HCL type of an expression, for the forms the templates use; ExpressionError otherwise."""
    node = _unwrap(node)
    if isinstance(node, LiteralValueRule) and str(node.token.value) in ("true", "false"):
        return BOOL
    if isinstance(node, IntLitRule | FloatLitRule):
        return NUMBER
    if isinstance(node, UnaryOpRule):
        operand, op = infer(node.expr_term, variables), node.operator.strip()
        if (op, operand) in (("-", NUMBER), ("!", BOOL)):
            return operand
        raise ExpressionError(f"{op} applied to a {operand} in {_source(node)}")
    if isinstance(node, StringRule):
        # "…${expr}…" (and text like {{ .SSHHostPort }}, which HCL leaves alone): a string, if every
        # interpolated value is a primitive. Template directives (%{ if }, %{ for }) are not understood.
        for part in node.string_parts:
            content = part.content
            if isinstance(content, InterpolationRule):
                inner = infer(content.expression, variables)
                if inner.element is not None:
                    raise ExpressionError(f"{_source(node)} interpolates a {inner}")
            elif not isinstance(content, LarkToken):
                raise ExpressionError(f"string template {_source(node)} not understood")
        return STRING
    if isinstance(node, GetAttrExprTermRule):
        base = _unwrap(node.expr_term)
        if not (isinstance(base, IdentifierRule) and base.serialize() == "var"):
            raise ExpressionError(f"reference {_source(node)} not understood (only var.NAME is)")
        name = str(node.get_attr.identifier.serialize())
        if name not in variables:
            raise ExpressionError(f"var.{name} is not a declared variable (with a type the check understands)")
        return variables[name]
    if isinstance(node, TupleRule):
        return Type("List", unify([infer(e, variables) for e in node.elements], f"tuple {_source(node)}"))
    if isinstance(node, ObjectRule):
        for element in node.elements:
            if not isinstance(element.key, ObjectElemKeyRule):
                raise ExpressionError(f"object key expression in {_source(node)} not understood")
        values = [infer(e.expression, variables) for e in node.elements]
        return Type("Map", unify(values, f"object {_source(node)}"))
    if isinstance(node, FunctionCallRule):
        return _infer_call(node, variables)
    if isinstance(node, ConditionalRule):
        condition = infer(node.condition, variables)
        if condition != BOOL:
            raise ExpressionError(f"condition of {_source(node)} is a {condition}, not a Bool")
        branches = [infer(node.if_true, variables), infer(node.if_false, variables)]
        return unify(branches, f"conditional {_source(node)}")
    if isinstance(node, BinaryOpRule):
        return _infer_binary(node, variables)
    raise ExpressionError(f"expression form {type(node).__name__} not understood: {_source(node)}")


def _infer_call(node: FunctionCallRule, variables: dict[str, Type]) -> Type:
    name = "::".join(str(i.serialize()) for i in node.identifiers)
    if node.arguments is not None and node.arguments.has_ellipsis:
        raise ExpressionError(f"expanded arguments in {_source(node)} not understood")
    args = [infer(a, variables) for a in (node.arguments.arguments if node.arguments else [])]
    if name == "merge" and args:
        if any(a.kind not in ("Map", "Dynamic") for a in args):
            raise ExpressionError(f"merge() of {', '.join(map(str, args))} in {_source(node)}: not all maps")
        return Type("Map", unify([a.element or DYNAMIC for a in args], f"merge {_source(node)}"))
    if name == "substr":
        if args != [STRING, NUMBER, NUMBER]:
            raise ExpressionError(
                f"substr({', '.join(map(str, args))}) in {_source(node)}: wants String, Number, Number"
            )
        return STRING
    raise ExpressionError(f"function call {name}() not understood: {_source(node)}")


def _infer_binary(node: BinaryOpRule, variables: dict[str, Type]) -> Type:
    op = str(node.binary_term.binary_operator.serialize()).strip()
    lhs, rhs = infer(node.expr_term, variables), infer(node.binary_term.expr_term, variables)
    if op in ("==", "!="):
        unify([lhs, rhs], f"comparison {_source(node)}")
        return BOOL
    if op in ("&&", "||"):
        wanted, result = BOOL, BOOL
    elif op in ("<", ">", "<=", ">="):
        wanted, result = NUMBER, BOOL
    elif op in ("+", "-", "*", "/", "%"):
        wanted, result = NUMBER, NUMBER
    else:
        raise ExpressionError(f"operator {op} not understood: {_source(node)}")
    if lhs != wanted or rhs != wanted:
        raise ExpressionError(f"{op} of {lhs} and {rhs} in {_source(node)}: wants {wanted}")
    return result


# --- the check -----------------------------------------------------------------------------------------


def _check_source(block: BlockRule, plugin: Plugin, variables: dict[str, Type]) -> list[str]:
    accepted = arguments(plugin)
    where = " ".join(f'"{label}"' if i else label for i, label in enumerate(_labels(block)))
    pinned = f"{plugin.name} {plugin.version}"
    found: list[str] = []
    seen: set[str] = set()
    for child in block.body.children:
        if isinstance(child, BlockRule):
            name = _label(child.labels[0])
            kind = accepted.get(name)
            if kind is None:
                found.append(f"{where}: block {name}: not an argument of {pinned}")
            elif not kind.startswith("block:"):
                found.append(f"{where}: {name}: {pinned} takes it as an attribute ({kind}), not a block")
            elif kind == "block:BlockSpec" and name in seen:
                found.append(f"{where}: block {name}: given more than once, {pinned} takes one")
            elif len(child.labels) > 1:
                found.append(f"{where}: block {name}: {pinned} takes no block labels")
            seen.add(name)
        elif isinstance(child, AttributeRule):
            name = str(child.identifier.serialize())
            value = _source(child.expression)
            kind = accepted.get(name)
            if name in seen:
                found.append(f"{where}: {name}: given more than once")
            seen.add(name)
            if kind is None:
                found.append(f"{where}: {name}: not an argument of {pinned}")
                continue
            if kind.startswith("block:"):
                found.append(f"{where}: {name}: {pinned} takes it as a block ({kind}), not an attribute")
                continue
            try:
                expected = parse_cty(kind)
                actual = infer(child.expression, variables)
            except (ExpressionError, ValueError) as exc:
                found.append(f"{where}: {name} = {value}: {exc}")
                continue
            if not fits(actual, expected):
                found.append(f"{where}: {name} = {value}: {pinned} wants {expected}, the value is {actual}")
    return found


def required_plugins(template_text: str) -> dict[str, dict[str, str | None]] | None:
    """The ``packer { required_plugins { … } }`` entries (name -> version, source), None without a packer block."""
    start = hcl2.parses(template_text)
    packer = _blocks(start.body, "packer")
    if not packer:
        return None
    entries: dict[str, dict[str, str | None]] = {}
    for block in packer:
        for required in _blocks(block.body, "required_plugins"):
            for attribute in _attributes(required.body):
                value = _unwrap(attribute.expression)
                fields = {}
                if isinstance(value, ObjectRule):
                    fields = {str(e.key.serialize()): _literal_string(e.expression) for e in value.elements}
                entries[str(attribute.identifier.serialize())] = fields
    return entries


def problems(template_text: str, plugin: Plugin) -> list[str]:
    """Everything in a rendered template that ``plugin`` at its pinned version would not accept.

    The ``source`` blocks must all be ``plugin``'s builder, each attribute and block an argument of the plugin
    with a value of the argument's type; a ``packer`` block must require exactly ``plugin`` at its pin.
    """
    try:
        start = hcl2.parses(template_text)
    except LarkError as exc:
        return [f"template does not parse: {exc}"]
    try:
        variables, found = variable_types(start)
        sources = _blocks(start.body, "source")
        for block in sources:
            builder = _labels(block)[1]
            if builder != plugin.name:
                found.append(f'source "{builder}": not the builder of plugin {plugin.name}')
            else:
                found.extend(_check_source(block, plugin, variables))
        if not any(_labels(b)[1] == plugin.name for b in sources):
            found.append(f'no source "{plugin.name}" block')
        pins = required_plugins(template_text)
    except ExpressionError as exc:
        return [*found, str(exc)]
    if pins is not None:
        for name, fields in sorted(pins.items()):
            if name != plugin.name:
                found.append(f"required_plugins: {name}: not the pinned plugin {plugin.name}")
            elif fields != {"version": plugin.constraint, "source": plugin.source}:
                found.append(
                    f"required_plugins: {name} = {fields}: want version {plugin.constraint!r}, source {plugin.source!r}"
                )
        if plugin.name not in pins:
            found.append(f"required_plugins: does not name {plugin.name}")
    return found


# --- tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def specs() -> list[BuildSpec]:
    return cli.project_settings().all_specs()


def _spec(specs: list[BuildSpec], target: str) -> BuildSpec:
    return next(s for s in specs if s.env.target == target)


def test_every_spec_covers_every_plugin(specs: list[BuildSpec]) -> None:
    assert {s.env.target for s in specs} == set(PLUGINS), "a target without specs would go unchecked"


def test_pins_match_their_arguments_data() -> None:
    for plugin in PLUGINS.values():
        data = json.loads(plugin.arguments_file.read_text())
        assert data["source"]["tag"] == f"v{plugin.version}", plugin
        assert data["source"]["repo"] == f"hashicorp/packer-plugin-{plugin.name}", plugin
        assert arguments(plugin), plugin


def test_rendered_source_blocks_fit_the_pinned_plugins(specs: list[BuildSpec]) -> None:
    found = []
    for spec in specs:
        template, _ = render.packer_template(spec, PACKER_WITH_PLUGINS)
        plugin = PLUGINS[spec.env.target]
        found += [f"{spec.env_name}/{spec.variant_name}: {p}" for p in problems(template, plugin)]
    assert found == [], "\n".join(found)


def test_required_plugins_pin_each_plugin_exactly(specs: list[BuildSpec]) -> None:
    for spec in specs:
        template, _ = render.packer_template(spec, PACKER_WITH_PLUGINS)
        plugin = PLUGINS[spec.env.target]
        assert required_plugins(template) == {
            plugin.name: {"version": f"= {plugin.version}", "source": plugin.source}
        }, spec.env_name


def test_packer_166_gets_no_packer_block(specs: list[BuildSpec]) -> None:
    for spec in specs:
        template, _ = render.packer_template(spec, PACKER_166)
        assert required_plugins(template) is None, spec.env_name
        assert problems(template, PLUGINS[spec.env.target]) == [], spec.env_name


GCE_SOURCE = 'source "googlecompute" "osquery"'
QEMU_SOURCE = 'source "qemu" "osquery"'


@pytest.mark.parametrize(
    ("target", "old", "new", "expected"),
    [
        pytest.param(
            "gce",
            '  communicator = "ssh"\n',
            '  communicator = "ssh"\n  use_os_login_magic = true\n',
            [f"{GCE_SOURCE}: use_os_login_magic: not an argument of googlecompute 1.2.7"],
            id="unknown-argument",
        ),
        pytest.param(
            "gce",
            "use_iap                 = var.use_iap\n",
            "use_iap                 = var.zone\n",
            [f"{GCE_SOURCE}: use_iap = var.zone: googlecompute 1.2.7 wants Bool, the value is String"],
            id="bool-given-string-variable",
        ),
        pytest.param(
            "gce",
            "scopes                  = var.scopes\n",
            "scopes                  = var.builder_labels\n",
            [
                f"{GCE_SOURCE}: scopes = var.builder_labels: googlecompute 1.2.7 wants List(cty.String), "
                "the value is Map(cty.String)"
            ],
            id="list-given-map",
        ),
        pytest.param(
            "gce",
            "  metadata = {\n",
            '  disk_encryption_key {\n    kms_key_name = "k"\n  }\n  tags = {\n    a = "b"\n  }\n  metadata = {\n',
            [
                f'{GCE_SOURCE}: tags = {{a = "b"}}: googlecompute 1.2.7 wants List(cty.String), '
                "the value is Map(cty.String)"
            ],
            id="block-accepted-object-is-not-a-list",
        ),
        pytest.param(
            "gce",
            "zone                    = var.zone\n",
            "zone                    = lower(var.zone)\n",
            [f"{GCE_SOURCE}: zone = lower(var.zone): function call lower() not understood: lower(var.zone)"],
            id="unknown-expression-form",
        ),
        pytest.param(
            "gce",
            "    }\n  }\n}\n",
            '    }\n    amazon = {\n      version = "= 1.3.0"\n      source  = "github.com/hashicorp/amazon"\n'
            "    }\n  }\n}\n",
            ["required_plugins: amazon: not the pinned plugin googlecompute"],
            id="unknown-required-plugin",
        ),
        pytest.param(
            "local",
            "cpus             = var.cpus\n",
            "cpus             = var.ssh_timeout\n",
            [f"{QEMU_SOURCE}: cpus = var.ssh_timeout: qemu 1.1.4 wants Number, the value is String"],
            id="number-given-string-variable",
        ),
        pytest.param(
            "local",
            '    ["-cpu", "max"],\n',
            '    ["-cpu", 2],\n',
            [
                f"{QEMU_SOURCE}: qemuargs = "
                '[["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"], ["-cpu", 2]]: '
                'tuple ["-cpu", 2] mixes String and Number'
            ],
            id="mixed-tuple",
        ),
        pytest.param(
            "local",
            '  qemu_img_args {\n    convert = ["-o", "compression_type=zstd"]\n  }\n',
            "  qemu_img_args = []\n  floppy_label {\n  }\n",
            [
                f"{QEMU_SOURCE}: qemu_img_args: qemu 1.1.4 takes it as a block (block:BlockSpec), not an attribute",
                f"{QEMU_SOURCE}: floppy_label: qemu 1.1.4 takes it as an attribute (String), not a block",
            ],
            id="attribute-and-block-swapped",
        ),
    ],
)
def test_problems_reports_what_the_plugin_would_reject(
    specs: list[BuildSpec], target: str, old: str, new: str, expected: list[str]
) -> None:
    template, _ = render.packer_template(_spec(specs, target), PACKER_WITH_PLUGINS)
    assert template.count(old) == 1, f"the edit's anchor {old!r} is not unique in the {target} template"
    assert problems(template, PLUGINS[target]) == []
    assert problems(template.replace(old, new), PLUGINS[target]) == expected


def test_problems_reports_a_source_of_another_builder(specs: list[BuildSpec]) -> None:
    template, _ = render.packer_template(_spec(specs, "local"), PACKER_WITH_PLUGINS)
    assert problems(template, PLUGINS["gce"]) == [
        'source "qemu": not the builder of plugin googlecompute',
        'no source "googlecompute" block',
        "required_plugins: qemu: not the pinned plugin googlecompute",
        "required_plugins: does not name googlecompute",
    ]


def test_gce_builder_never_switches_to_os_login(specs: list[BuildSpec]) -> None:
    """googlecompute v1.2.7 logs in through the caller's OS Login profile when ``use_os_login`` is unset and the
    project has enable-oslogin=TRUE (builder/googlecompute/step_import_os_login_ssh_key.go lines 43-51), although
    the builder's own metadata turns OS Login off: the template must say ``use_os_login = false``."""
    for spec in (s for s in specs if s.env.target == "gce"):
        for version in (PACKER_WITH_PLUGINS, PACKER_166):
            template, _ = render.packer_template(spec, version)
            source = hcl2.loads(template)["source"][0]['"googlecompute"']['"osquery"']
            assert source["use_os_login"] is False, spec.env_name
            assert source["metadata"]["enable-oslogin"] == '"false"', spec.env_name
