"""Inspect a TorchScript archive *without running it* and refuse anything but tensor maths.

Why: ``torch.jit.load`` is not a sandbox. The archive's ``code/`` entries are TorchScript source
that the loader compiles and may run at once (a class's ``__setstate__`` runs while loading),
and TorchScript can call any registered operator: ``torch.from_file(path, shared=True, ...)``
creates a file and writes through a shared map, ``torch.save`` writes a file, ``from_file``
without ``shared`` reads any file, ``ops.c10d``/``prim.rpc_*`` reach the network, and
``_unsafe_*`` operators skip bounds checks. So before ``torch.jit.load`` ever sees a file, this
module reads the zip with Python's own ``zipfile``/``ast``/``pickletools`` (nothing unpickled,
nothing compiled) and accepts it only when

* the zip is plain: it starts with a local file header (so torch cannot read it as a flatbuffer
  instead), every entry sits under one root folder, no name repeats (even by case: torch's zip
  reader matches names case-insensitively), and every entry is of a kind the loader reads;
* every pickle (``data.pkl``, ``constants.pkl``, ...) names only the globals TorchScript's own
  pickler writes (tensor rebuilding, typed lists, storages) or classes defined in ``code/``,
  never a custom C++ class (``__torch__.torch.classes.*``);
* every code file parses, and every operator, builtin and type it names is on the allow-list
  below; no class defines ``__setstate__``/``__getstate__``; ``torch``/``ops`` appear only as
  ``torch.<op>``/``ops.<namespace>.<op>``; a method or attribute named like a registered
  operator (``x.set_``) must be an allowed operator too.

The allow-list (:data:`ALLOWED_ATEN`, :data:`ALLOWED_PRIM`, :data:`ALLOWED_NAMES`) was made by
``scripts/torchscript_allowlist.py``: it scripts and traces the project's architectures
(tiny_unet, D-LinkNet 18/34, EfficientNet-Lite LinkNet, PatchRefineNet paper/fast) and
smp-style reference models (U-Net, FPN, DeepLabV3+ with ASPP, LinkNet, SE/attention blocks, a
Segformer-like transformer block, MobileNet/EfficientNet-style blocks) with torch 2.13 and
collects every construct their saved code uses; container, scalar and shape operators that
such code needs were added by hand (marked below). ``tests/unit/test_torchscript_guard.py``
checks that every export of those architectures still passes, so the list cannot silently go
stale.
"""

from __future__ import annotations

import ast
import io
import pickletools
import re
import tokenize
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from roadprn.errors import ModelError, one_line

# Tensor operators, reached as ``torch.<op>``, ``ops.aten.<op>`` or a method ``x.<op>(...)``.
ALLOWED_ATEN: frozenset[str] = frozenset({
    # --- collected by scripts/torchscript_allowlist.py from the reference models (torch 2.13;
    # scripted code of F.interpolate and friends brings the whole upsample family) ---
    "__contains__", "__derive_index", "__is__", "__isnot__", "__not__", "_convolution",
    "_upsample_bicubic2d_aa", "_upsample_bilinear2d_aa", "_upsample_lanczos2d_aa",
    "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool2d", "add", "add_", "append", "avg_pool2d", "batch_norm", "cat",
    "clamp", "contiguous", "conv2d", "conv_transpose2d", "dim", "dropout", "dropout_", "eq",
    "exp", "expand", "expand_as", "feature_dropout", "feature_dropout_", "flatten", "floor",
    "floor_divide", "floordiv", "format", "gelu", "group_norm", "gt", "hardsigmoid",
    "hardsigmoid_", "hardswish", "hardswish_", "hardtanh", "hardtanh_", "layer_norm", "le",
    "leaky_relu", "leaky_relu_", "len", "linear", "list", "logit", "lt", "matmul",
    "max_pool2d", "mean", "mul", "ne", "neg", "norm", "pad", "permute", "pixel_shuffle",
    "relu", "relu_", "remainder", "reshape", "scaled_dot_product_attention", "select",
    "sigmoid", "silu", "silu_", "size", "slice", "softmax", "sub", "transpose",
    "upsample_bicubic2d", "upsample_bilinear2d", "upsample_linear1d", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "upsample_trilinear3d", "view", "warn",
    # --- added by hand: bounds-checked shape, container, scalar and elementwise operators
    # that segmentation code commonly uses and the reference models happen not to. Nothing
    # that touches files, storages, raw memory (empty, set_, _unsafe_*), threads or the
    # network ---
    "Bool", "Float", "Int", "ScalarImplicit", "__and__", "__getitem__", "__or__",
    "__range_length", "__round_to_zero_floordiv", "__xor__", "_set_item", "abs", "all",
    "amax", "amin", "any", "arange", "argmax", "argmin", "avg_pool1d", "avg_pool3d",
    "baddbmm", "bmm", "bool", "ceil", "chunk", "clamp_max", "clamp_min", "clone", "conv1d",
    "conv3d", "conv_transpose1d", "conv_transpose3d", "copy", "cos", "count", "cumsum",
    "detach", "dict", "div", "einsum", "elu", "erf", "extend", "fill_", "flip", "float",
    "full", "full_like", "gather", "ge", "get", "glu", "index_select", "insert", "int",
    "instance_norm", "is_floating_point", "items", "keys", "log", "log_softmax", "logsumexp",
    "masked_fill", "max", "max_pool1d", "max_pool3d", "maximum", "min", "minimum", "mish",
    "mode", "mul_", "narrow", "new_zeros", "numel", "ones", "ones_like", "pop", "pow",
    "prelu", "prod", "reciprocal", "relu6", "repeat", "round", "rsqrt", "rsub", "selu",
    "sigmoid_", "sign", "sin", "softplus", "split", "sqrt", "squeeze", "stack", "std", "str",
    "stride", "sum", "tanh", "tanh_", "tensor", "threshold", "to", "tolist", "true_divide",
    "type_as", "unbind", "unsqueeze", "values", "var", "where", "zeros", "zeros_like",
    # in-place forms of allowed elementwise operators (nn.ReLU6(inplace=True) and friends)
    "celu_", "clamp_", "clamp_max_", "clamp_min_", "div_", "elu_", "mish_", "relu6_",
    "selu_", "sub_", "threshold_",
})

# ``ops.prim.<op>``: what the TorchScript printer emits for shapes, optionals and errors.
ALLOWED_PRIM: frozenset[str] = frozenset({
    "NumToTensor", "RaiseException",  # collected
    # by hand: tensor properties and optional handling
    "TupleIndex", "device", "dtype", "is_cuda", "layout", "max", "min", "shape",
    "unchecked_unwrap_optional",
})

# Bare names the code may use (builtins, special forms, types), besides its own locals,
# ``torch``/``ops`` chains, ``CONSTANTS`` and ``__torch__`` class paths. ``math`` is not
# here: TorchScript resolves ``math.<op>`` to any aten operator.
ALLOWED_NAMES: frozenset[str] = frozenset({
    # collected
    "Final", "List", "Module", "NoneType", "Optional", "Tensor", "Tuple", "__annotations__",
    "annotate", "bool", "float", "getattr", "int", "range", "str", "unchecked_cast",
    "uninitialized",
    # by hand: builtins and types
    "Any", "Device", "Dict", "Enum", "Layout", "MemoryFormat", "NamedTuple", "ScalarType",
    "Union", "abs", "all", "any", "complex", "dict", "divmod", "enumerate", "hasattr",
    "isinstance", "len", "list", "max", "min", "round", "sum", "tuple", "zip",
})

# Operators and forms refused whatever the registry says, so a method of that name is never
# taken for a harmless attribute (the registry seen at check time may lack them).
ALWAYS_REFUSED: frozenset[str] = frozenset({
    "from_file", "save", "load", "load_library", "set_", "storage", "untyped_storage",
    "_load_for_mobile", "from_blob", "rpc_sync", "rpc_async", "rpc_remote", "fork",
    "awaitable", "wait", "print", "open", "exec", "eval", "__import__", "system",
})

# Globals that TorchScript's pickler writes into data.pkl / constants.pkl.
_STORAGE_TYPES = (
    "Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble",
)
ALLOWED_PICKLE_GLOBALS: frozenset[str] = frozenset({
    "torch._utils _rebuild_tensor_v2",
    "collections OrderedDict",
    "torch device",
    "torch.jit._pickle build_intlist",
    "torch.jit._pickle build_floatlist",
    "torch.jit._pickle build_boollist",
    "torch.jit._pickle build_doublelist",
    "torch.jit._pickle build_tensorlist",
    "torch.jit._pickle build_tensor_from_id",
    "torch.jit._pickle restore_type_tag",
    *(f"torch {kind}Storage" for kind in _STORAGE_TYPES),
})

_ROOT_FILES = frozenset({"data.pkl", "constants.pkl", "version", "byteorder",
                         ".data/version", ".data/serialization_id", "traced_inputs.pkl"})
_RECORD = re.compile(r"^(?:data|constants|traced_inputs)/\d+$")
_CODE = re.compile(r"^code/__torch__(?:/[A-Za-z0-9_]+)*\.py(?:\.debug_pkl)?$")
_EXTRA = re.compile(r"^extra/[^/]+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.\-]*)*$")
MAX_ENTRIES = 200_000
MAX_CODE_BYTES = 64 * 1024 * 1024  # all code and pickles together; tensor data is not read
_ODD_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\x85\u2028\u2029]")
_STRING_TOKEN = re.compile(r"""^(["'])(?:[^"'\\\n]|\\[^\n])*\1$""")


@dataclass(frozen=True)
class Finding:
    """The first construct that makes an archive unsafe, and where it is."""

    what: str
    where: str

    def message(self, path: Path) -> str:
        return (f"TorchScript model {path} refused before loading: {self.where} {self.what} "
                "(roadprn loads only TorchScript limited to its allow-list of tensor operators; "
                "see README, Models)")


def check_torchscript_archive(path: str | Path) -> None:
    """ModelError (one line, naming the file and the first offending construct) unless the
    archive at ``path`` holds only allowed constructs. Runs nothing from the file."""
    path = Path(path)
    finding = find_unsafe_construct(path)
    if finding is not None:
        raise ModelError(finding.message(path))


def find_unsafe_construct(path: Path) -> Finding | None:
    """The first refused construct in the archive, or None when it is safe to load."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"PK\x03\x04":
            return Finding("does not start with a zip entry (torch would read it otherwise)",
                           "the file")
        with zipfile.ZipFile(path) as archive:
            return _check_archive(archive)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        text = one_line(exc, 160)
        return Finding(f"is not a readable zip archive ({text})", "the file")


def _check_archive(archive: zipfile.ZipFile) -> Finding | None:
    infos = archive.infolist()
    if not infos:
        return Finding("is an empty archive", "the file")
    if len(infos) > MAX_ENTRIES:
        return Finding(f"has more than {MAX_ENTRIES} entries", "the archive")
    root = infos[0].filename.split("/", 1)[0]
    seen: set[str] = set()
    code: list[tuple[str, zipfile.ZipInfo]] = []
    pickles: list[tuple[str, zipfile.ZipInfo]] = []
    budget = MAX_CODE_BYTES
    for info in infos:
        name = info.filename
        if name.lower() in seen:
            return Finding("appears twice (the loader and this check could read different "
                           "copies)", f"entry {name!r}")
        seen.add(name.lower())
        if not _SAFE_NAME.match(name) or ".." in name.split("/"):
            return Finding("has an unsafe name", f"entry {name!r}")
        if not name.startswith(root + "/"):
            return Finding(f"lies outside the archive's root folder {root!r}",
                           f"entry {name!r}")
        rel = name[len(root) + 1:]
        if info.is_dir():
            continue
        if rel in _ROOT_FILES or _RECORD.match(rel) or _EXTRA.match(rel):
            if rel.endswith(".pkl"):
                pickles.append((rel, info))
        elif _CODE.match(rel):
            (pickles if rel.endswith(".debug_pkl") else code).append((rel, info))
        else:
            return Finding("is not part of a TorchScript archive roadprn knows", f"entry {rel!r}")
    if "constants.pkl" not in {rel for rel, _ in pickles} or not code:
        return Finding("lacks code/ or constants.pkl: not a TorchScript archive", "the archive")
    defined: set[str] = set()
    for _, info in code + pickles:
        budget -= info.file_size
        if budget < 0:
            return Finding(f"holds more than {MAX_CODE_BYTES >> 20} MB of code and pickles",
                           "the archive")
    sources: list[tuple[str, str]] = []
    for rel, info in code:
        try:
            text = archive.read(info).decode("utf-8")
        except UnicodeDecodeError:
            return Finding("is not UTF-8 text", rel)
        sources.append((rel, text))
        defined.update(_defined_classes(rel, text))
    for rel, text in sources:
        finding = check_source(text, rel)
        if finding is not None:
            return finding
    for rel, info in pickles:
        finding = check_pickle(archive.read(info), rel, defined)
        if finding is not None:
            return finding
    return None


def _defined_classes(rel: str, text: str) -> Iterator[str]:
    """Qualified names (``__torch__.a.b.Cls``) of the classes a code file defines."""
    module = rel[len("code/"):-len(".py")].replace("/", ".")
    for match in re.finditer(r"^class\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.MULTILINE):
        yield f"{module}.{match.group(1)}"


# --------------------------------------------------------------------------- pickles


def pickle_globals(data: bytes) -> Iterator[tuple[str, int]]:
    """``(\"module name\", position)`` of every global a pickle refers to, without unpickling.

    STACK_GLOBAL (protocol 4+) takes its names from the stack; TorchScript never writes it, so
    it is reported as such rather than guessed at.
    """
    for opcode, arg, pos in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST"):
            yield str(arg).replace("\n", " "), pos or 0
        elif opcode.name in ("STACK_GLOBAL", "OBJ", "EXT1", "EXT2", "EXT4"):
            yield f"<{opcode.name}>", pos or 0


def check_pickle(data: bytes, rel: str, defined: set[str]) -> Finding | None:
    """The first global in a pickle that TorchScript's own pickler would not have written."""
    try:
        for name, pos in pickle_globals(data):
            if name in ALLOWED_PICKLE_GLOBALS:
                continue
            module, _, cls = name.partition(" ")
            qualified = f"{module}.{cls}"
            if (module.startswith("__torch__") and not module.startswith("__torch__.torch.classes")
                    and qualified in defined):
                continue
            if module.startswith("__torch__.torch.classes"):
                return Finding(f"names the custom C++ class {qualified}", f"{rel} (byte {pos})")
            return Finding(f"names the pickle global {name!r}", f"{rel} (byte {pos})")
    except Exception as exc:  # noqa: BLE001 - pickletools raises many kinds on damaged data
        return Finding(f"is not a readable pickle ({one_line(exc, 120)})", rel)
    return None


# --------------------------------------------------------------------------- code


@lru_cache(maxsize=1)
def registered_operator_names() -> frozenset[str]:
    """Base names of every operator torch has registered (``aten::set_`` -> ``set_``): an
    attribute with such a name may resolve to that operator when called on a tensor."""
    import torch

    names = {schema.name.split("::", 1)[-1] for schema in torch._C._jit_get_all_schemas()}
    return frozenset(names | ALWAYS_REFUSED)


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds (arguments, assignment and loop targets, classes)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
    return names


def _tokens(text: str, rel: str) -> list[tokenize.TokenInfo] | Finding:
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        return Finding(f"does not tokenize ({one_line(exc, 100)})", rel)


def _check_token_forms(tokens: list[tokenize.TokenInfo], rel: str) -> Finding | None:
    """Strings only in their plain form and no unusual tokens, so Python's parser and
    TorchScript's lexer cannot disagree about where code ends and a string starts."""
    for token in tokens:
        where = f"{rel} line {token.start[0]}"
        if token.type == tokenize.STRING and not _STRING_TOKEN.match(token.string):
            return Finding(f"holds a string literal in a form roadprn does not accept "
                           f"({token.string[:30]!r})", where)
        if token.type in (tokenize.NAME, tokenize.OP) and not token.string.isascii():
            return Finding(f"holds the non-ASCII name {token.string[:30]!r}", where)
        if token.type == tokenize.OP and token.string in ("@", "@=", ":="):
            return Finding(f"uses the form {token.string!r}", where)
        if token.type not in (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING,
                              tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.COMMENT, tokenize.ENDMARKER):
            return Finding(f"holds an unexpected token {token.string[:30]!r}", where)
    return None


def _check_token_names(tokens: list[tokenize.TokenInfo], rel: str) -> Finding | None:
    """A second line behind the syntax-tree rules: a refused name anywhere, in any position."""
    for token in tokens:
        if token.type == tokenize.NAME and token.string in ALWAYS_REFUSED:
            return Finding(f"uses the name {token.string!r}", f"{rel} line {token.start[0]}")
    return None


def check_source(text: str, rel: str = "code") -> Finding | None:
    """The first refused construct in one TorchScript source file, or None."""
    odd = _ODD_CHARACTER.search(text)
    if odd is not None:  # line ends and blanks TorchScript's lexer might read differently
        line = text.count("\n", 0, odd.start()) + 1
        return Finding(f"holds the control character {odd.group()!r}", f"{rel} line {line}")
    tokens = _tokens(text, rel)
    if isinstance(tokens, Finding):
        return tokens
    finding = _check_token_forms(tokens, rel)
    if finding is not None:
        return finding
    try:
        tree = ast.parse(text, filename=rel)
    except (SyntaxError, ValueError) as exc:
        return Finding(f"does not parse ({one_line(exc, 100)})", rel)
    for construct, line in source_constructs(tree):
        reason = _refusal(construct)
        if reason is not None:
            return Finding(reason, f"{rel} line {line}")
    return _check_token_names(tokens, rel)


def source_constructs(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every construct in the code that the allow-list rules about, in source order.

    ``torch.X`` / ``ops.NS.X`` calls keep their spelling; a method or attribute named like a
    registered operator is ``.X``; a free name is ``name:X``; ``torch``/``ops`` in any other
    position, imports, decorators and refused method definitions are ``form:...``.
    """
    bound = _bound_names(tree)
    heads: set[int] = set()  # ids of Name/Attribute nodes already judged as part of a chain
    nodes = sorted((n for n in ast.walk(tree) if hasattr(n, "lineno")),
                   key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    operators = registered_operator_names()
    for node in nodes:
        line = node.lineno
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom) or not all(
                    n == "__torch__" or n.startswith("__torch__.") for n in names):
                yield f"form:import {', '.join(names)}", line
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if getattr(node, "decorator_list", None):
                yield "form:decorator", line
            if isinstance(node, ast.AsyncFunctionDef):
                yield "form:async", line
            if isinstance(node, ast.FunctionDef) and node.name in ("__setstate__",
                                                                   "__getstate__"):
                yield f"form:def {node.name}", line
            continue
        if isinstance(node, (ast.Lambda, ast.Await, ast.Yield, ast.YieldFrom, ast.Global,
                             ast.Nonlocal, ast.AsyncWith, ast.AsyncFor, ast.NamedExpr)):
            yield f"form:{type(node).__name__}", line
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "getattr", "hasattr"):
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                yield "form:getattr with a computed name", line
            elif attr.value in operators:
                yield f".{attr.value}", line
            continue
        if isinstance(node, ast.Attribute) and id(node) not in heads:
            chain = _chain(node)
            if chain is not None:
                for sub in ast.walk(node):
                    heads.add(id(sub))
                head = chain[0]
                if head == "torch":
                    if len(chain) != 2:
                        yield "form:" + ".".join(chain), line
                    else:
                        yield "torch." + chain[1], line
                    continue
                if head == "ops":
                    if len(chain) != 3:
                        yield "form:" + ".".join(chain), line
                    else:
                        yield "ops." + ".".join(chain[1:]), line
                    continue
                if head == "__torch__":
                    if len(chain) > 2 and chain[1:3] == ["torch", "classes"]:
                        yield "form:" + ".".join(chain), line
                    continue
                if head == "CONSTANTS":
                    if len(chain) != 2:
                        yield "form:" + ".".join(chain), line
                    continue
                if head not in bound:
                    yield f"name:{head}", line
                for part in chain[1:]:
                    if part in operators:
                        yield f".{part}", line
                continue
            heads.add(id(node))
            if node.attr in operators:
                yield f".{node.attr}", line
            continue
        if isinstance(node, ast.Name) and id(node) not in heads:
            if node.id in ("torch", "ops"):
                yield f"form:{node.id}", line
            elif isinstance(node.ctx, ast.Load) and node.id not in bound:
                yield f"name:{node.id}", line


def _refusal(construct: str) -> str | None:
    """Why ``construct`` (from :func:`source_constructs`) is refused, or None if allowed."""
    if construct.startswith("torch."):
        op = construct[len("torch."):]
        return None if op in ALLOWED_ATEN else f"calls {construct}, not an allowed operator"
    if construct.startswith("ops."):
        namespace, _, op = construct[len("ops."):].partition(".")
        allowed = {"aten": ALLOWED_ATEN, "prim": ALLOWED_PRIM}.get(namespace, frozenset())
        return None if op in allowed else f"calls {construct}, not an allowed operator"
    if construct.startswith("."):
        op = construct[1:]
        return None if op in ALLOWED_ATEN or op in ALLOWED_PRIM else (
            f"uses the method or attribute {construct} (an operator not on the allow-list)")
    if construct.startswith("name:"):
        name = construct[len("name:"):]
        return None if name in ALLOWED_NAMES else f"uses the name {name!r}, not allowed"
    if construct.startswith("form:def "):
        return (f"defines {construct[len('form:def '):]}: custom (de)serialisation hooks are "
                "refused on any class (__setstate__ would run while the file loads)")
    if construct.startswith("form:"):
        return f"uses {construct[len('form:'):]!r}, which roadprn refuses"
    return f"uses {construct!r}"
