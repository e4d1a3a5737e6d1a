"""Every native module (src/ext/<name>.pyx) has a typed stub beside it
(<name>.pyi) that says what the built module holds: the same public names, and
for each function and method the same parameters (names, kinds, defaults).
A stub left behind by a change to its module fails here.

The built module is the truth wherever Python can read it (inspect over
Cython's functions); an extension type's constructor is not readable there, so
its parameters are read from the `__init__` (else `__cinit__`) in the .pyx the
module was built from."""

from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import pytest

from onshi.core import twins
from tests.conftest import require_native

EXT = Path(__file__).resolve().parent.parent / "src" / "ext"
NO_DEFAULT = "<none>"


def test_every_native_module_has_a_stub_and_the_switch_knows_it():
    sources = {p.stem for p in EXT.glob("*.pyx")}
    assert sources == set(twins.MODULES)
    assert {p.stem for p in EXT.glob("*.pyi")} == sources


def _default(node: ast.expr | None) -> str:
    return NO_DEFAULT if node is None else repr(ast.literal_eval(node))


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, str, str]]:
    """(name, kind, default repr) of a stub's parameters, in inspect's kind names."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [
        (p.arg, "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD", _default(d))
        for i, (p, d) in enumerate(zip(positional, defaults, strict=True))
    ]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", NO_DEFAULT))
    out += [(p.arg, "KEYWORD_ONLY", _default(d)) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", NO_DEFAULT))
    return out


def _runtime_params(obj) -> list[tuple[str, str, str]] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [
        (p.name, p.kind.name, NO_DEFAULT if p.default is p.empty else repr(p.default)) for p in sig.parameters.values()
    ]


def _source_constructor(pyx: str, cls: str) -> list[tuple[str, str, str]]:
    """The parameters of `cdef class cls`'s __init__ (else __cinit__) in the .pyx source."""
    body = re.search(rf"^cdef class {cls}\b.*?(?=^\S)", pyx + "\nEND", re.S | re.M)
    assert body, f"cdef class {cls} not in the source"
    for method in ("__init__", "__cinit__"):
        m = re.search(rf"^    def {method}\((.*?)\):\s*$", body.group(0), re.S | re.M)
        if m:
            break
    else:
        return [("self", "POSITIONAL_OR_KEYWORD", NO_DEFAULT)]
    out = []
    for part in _split_top(m.group(1)):
        text, _, default = (s.strip() for s in part.partition("="))
        text = text.replace(" not None", "").strip()
        name = re.findall(r"\*{0,2}\w+", text)[-1]
        kind = (
            "VAR_POSITIONAL"
            if name.startswith("*") and not name.startswith("**")
            else "VAR_KEYWORD"
            if name.startswith("**")
            else "POSITIONAL_OR_KEYWORD"
        )
        out.append((name.lstrip("*"), kind, repr(ast.literal_eval(default)) if default else NO_DEFAULT))
    return out


def _split_top(params: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in params:
        depth += (ch in "([" and 1) or (ch in ")]" and -1) or 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def _members(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    out = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            out.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    return out


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _check_function(where: str, stub: ast.FunctionDef, runtime, problems: list[str]) -> None:
    want = _runtime_params(runtime)
    if want is None:
        return  # a slot wrapper (__len__...): its existence is checked, it has no readable signature
    have = _stub_params(stub)
    if isinstance(runtime, (types.WrapperDescriptorType, types.MethodDescriptorType)):
        want, have = [p[0] for p in want], [p[0] for p in have]  # C slots: `self` is positional-only
    if have != want:
        problems.append(f"{where}: stub {have} != built {want}")


@pytest.mark.parametrize("name", twins.MODULES)
def test_the_stub_matches_the_built_module(name):
    require_native(name)
    module = twins.load(name, twins.NATIVE)
    stub = _members(ast.parse((EXT / f"{name}.pyi").read_text(encoding="utf-8")).body)
    pyx = (EXT / f"{name}.pyx").read_text(encoding="utf-8")
    runtime = {k: v for k, v in vars(module).items() if not isinstance(v, types.ModuleType)}
    problems: list[str] = []
    if _public(runtime) != _public(stub):
        problems.append(
            f"public names: only built {sorted(_public(runtime) - _public(stub))}, "
            f"only in the stub {sorted(_public(stub) - _public(runtime))}"
        )
    for member, node in stub.items():
        if member not in runtime:
            problems.append(f"{member}: in the stub, not in the built module")
            continue
        obj = runtime[member]
        if isinstance(node, ast.FunctionDef):
            _check_function(member, node, obj, problems)
        elif isinstance(node, ast.ClassDef):
            _check_class(member, node, obj, pyx, problems)
    assert problems == [], f"src/ext/{name}.pyi is stale:\n" + "\n".join(problems)


def _check_class(name: str, node: ast.ClassDef, cls: type, pyx: str, problems: list[str]) -> None:
    stub = _members(node.body)
    extension_type = "__dict__" not in vars(cls) and not issubclass(cls, BaseException)
    declared = set(vars(cls))
    attributes = {m for m, n in stub.items() if not isinstance(n, ast.FunctionDef)}
    have = _public(stub) if extension_type else _public(stub) - attributes  # a Python class: attributes per instance
    if _public(declared) != have:
        problems.append(
            f"{name}: only built {sorted(_public(declared) - have)}, "
            f"only in the stub {sorted(have - _public(declared))}"
        )
    for member, item in stub.items():
        if member == "__init__" and extension_type:
            want = _source_constructor(pyx, name)
            if _stub_params(item) != want:
                problems.append(f"{name}.__init__: stub {_stub_params(item)} != source {want}")
            continue
        if member in attributes and not extension_type:
            continue  # set by __init__ on each instance
        if not hasattr(cls, member):
            problems.append(f"{name}.{member}: in the stub, not in the built class")
        elif isinstance(item, ast.FunctionDef) and not any(
            isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list
        ):
            _check_function(f"{name}.{member}", item, vars(cls).get(member, getattr(cls, member)), problems)


def test_a_stale_stub_is_caught():
    """The check itself: a stub with a parameter renamed and a name missing fails."""
    pyx = "cdef class T:\n    def __cinit__(self, bytes spki not None, int n=3):\n        pass\n"
    assert _source_constructor(pyx, "T") == [
        ("self", "POSITIONAL_OR_KEYWORD", NO_DEFAULT),
        ("spki", "POSITIONAL_OR_KEYWORD", NO_DEFAULT),
        ("n", "POSITIONAL_OR_KEYWORD", "3"),
    ]
    fn = ast.parse("def split(raw: bytes, parts: int, share: float = -1.0): ...").body[0]

    def split(raw, parts, first_share=-1.0):
        pass

    problems: list[str] = []
    _check_function("split", fn, split, problems)
    assert problems and "first_share" in problems[0]
