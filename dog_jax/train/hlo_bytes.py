"""Where a compiled step's memory traffic goes: bytes per op category, from its optimized HLO text.

XLA's ``cost_analysis()["bytes accessed"]`` is one number from its cost model. This module splits
the same kind of count by what the instructions do, so that an optimisation can aim at the largest
part: each top-level instruction (fusions counted at their boundary, as XLA runs them) is charged
the bytes of its operands plus its result, i.e. it reads every operand once and writes its result
once. That is the cost model's own assumption, not a measurement: a fusion that reads a slice of an
operand is charged the whole operand, and on TPU buffers in memory space 1 (``S(1)`` in a layout:
the core's on-chip memory) are not HBM traffic, so they are counted apart (``on_chip_bytes``).

Categories (:data:`CATEGORIES`):

* ``convolution_matmul``: convolutions and dots, and fusions that contain one (cuDNN calls on GPU);
* ``elementwise_norm``: every other fusion and elementwise/reduce op (normalisation, activations,
  the optimizer update, casts);
* ``copy_relayout``: copies, transposes, bitcast-converts, non-bitcast reshapes, and fusions made of
  nothing else (layout changes);
* ``async_copy_slice``: asynchronous copies (``copy-start``/``copy-done``), ``async-start``/
  ``-done`` pairs around slices, and (dynamic-)slice/update ops: on TPU mostly prefetches between
  HBM and on-chip memory;
* ``collective``: all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute;
* ``other``: the rest (custom calls other than convolutions, sorts, ...).

An asynchronous pair is charged once: its ``-start`` the operands it reads, its ``-done`` the result
it writes. Instructions in a ``while`` body count ``known_trip_count`` times when XLA states it
(else once, and ``while_without_trip_count`` says how many such loops there were).
"""

from __future__ import annotations

import math
import re
from typing import Any

CATEGORIES = ("convolution_matmul", "elementwise_norm", "copy_relayout", "async_copy_slice", "collective", "other")

_BYTES_PER_ELEMENT = {"pred": 1, "s2": 1, "u2": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                      "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                      "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\](\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})?")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|branch_computations)=(\{[^}]*\}|%?[\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')

_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
         "replica-id", "iota", "opt-barrier", "add-dependency", "domain"}
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
                "collective-broadcast", "ragged-all-to-all")
_RELAYOUT = {"copy", "transpose", "bitcast-convert", "reshape"}
_SLICES = {"slice", "dynamic-slice", "dynamic-update-slice", "copy-start", "copy-done"}
_CONTROL = {"while", "call", "conditional"}


def _split_top_level(text: str, opening: str = "(", closing: str = ")") -> tuple[str, str]:
    """``text`` starts with ``opening``: (the balanced group without its brackets, the rest)."""
    depth = 0
    for position, char in enumerate(text):
        depth += (char == opening) - (char == closing)
        if depth == 0:
            return text[1:position], text[position + 1:]
    return text[1:], ""


def _padded_count(dims: list[int], layout: str) -> int:
    """Elements an array occupies under its layout's first tile (TPU layouts: ``{1,0:T(8,128)}``
    pads the two most minor dimensions up to multiples of 8 and 128); the plain count without one."""
    match = re.match(r"\{([\d,]*)(?::([^}]*))?", layout or "")
    tile = re.search(r"T\(([\d,]+)\)", match[2] or "") if match else None
    if not dims or not tile or not match[1]:
        return math.prod(dims)
    physical = [dims[axis] for axis in reversed([int(a) for a in match[1].split(",")])]  # major to minor
    sizes = [int(t) for t in tile[1].split(",")]
    for offset, size in enumerate(sizes, start=len(physical) - len(sizes)):
        if offset >= 0:
            physical[offset] = -(-physical[offset] // size) * size
    return math.prod(physical)


def _arrays(shape_text: str) -> list[tuple[int, int, bool]]:
    """(bytes as laid out, bytes without tile padding, in memory space 1) of every array in an HLO
    shape (a tuple lists several)."""
    arrays = []
    for dtype, dims, layout in _ARRAY.findall(shape_text):
        if dtype not in _BYTES_PER_ELEMENT:
            continue
        sizes = [int(d) for d in dims.split(",") if d]
        itemsize = _BYTES_PER_ELEMENT[dtype]
        arrays.append((_padded_count(sizes, layout) * itemsize, math.prod(sizes) * itemsize, "S(1)" in (layout or "")))
    return arrays


def _parse(hlo: str) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Computations of an HLO module: name -> instructions (name, opcode, shape, operands, attributes)."""
    computations: dict[str, list[dict[str, Any]]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        header = _COMPUTATION.match(line)
        if header and " = " not in line.split("(")[0]:
            current = computations.setdefault(header[2], [])
            entry = header[2] if header[1] else entry
            continue
        if line.strip() == "}":
            current = None
            continue
        match = _INSTRUCTION.match(line) if current is not None else None
        if not match:
            continue
        rest = match[2].strip()
        if rest.startswith("("):
            inner, rest = _split_top_level(rest)
            shape = "(" + inner + ")"
        else:
            shape, _, rest = rest.partition(" ")
        opcode, _, rest = rest.strip().partition("(")
        operands, attributes = _split_top_level("(" + rest)
        current.append({"name": match[1], "opcode": opcode.strip(), "shape": shape,
                        "operands": re.findall(r"%([\w.\-]+)", operands), "attributes": attributes})
    return computations, entry


def _called(attributes: str) -> list[str]:
    names = []
    for _, value in _CALLED.findall(attributes):
        names += re.findall(r"%?([\w.\-]+)", value.strip("{}"))
    return names


def _opcodes(computations: dict[str, list[dict[str, Any]]], name: str, seen: set[str] | None = None) -> set[str]:
    """Every opcode inside computation ``name`` and the computations it calls."""
    seen = set() if seen is None else seen
    if name in seen or name not in computations:
        return set()
    seen.add(name)
    found = set()
    for instruction in computations[name]:
        found.add(instruction["opcode"])
        for called in _called(instruction["attributes"]):
            found |= _opcodes(computations, called, seen)
    return found


def _category(instruction: dict[str, Any], computations: dict[str, list[dict[str, Any]]]) -> str:
    opcode = instruction["opcode"]
    base = re.sub(r"-(start|done|update)$", "", opcode)
    if base in _COLLECTIVES:
        return "collective"
    inside = set()
    if opcode == "fusion" or base == "async" or opcode == "custom-call":
        for called in _called(instruction["attributes"]):
            inside |= _opcodes(computations, called)
    if opcode in ("convolution", "dot") or inside & {"convolution", "dot"} or (
            opcode == "custom-call" and "conv" in instruction["attributes"].split("custom_call_target=")[-1][:40]):
        return "convolution_matmul"
    if opcode in _SLICES or base in _SLICES or (base == "async" and inside - _FREE <= _SLICES | {"fusion"}):
        return "async_copy_slice"
    if opcode in _RELAYOUT or (opcode == "fusion" and inside and inside - _FREE <= _RELAYOUT):
        return "copy_relayout"
    if opcode == "custom-call" or opcode in ("sort", "rng", "rng-bit-generator", "infeed", "outfeed"):
        return "other"
    return "elementwise_norm"


def bytes_by_category(hlo: str) -> dict[str, Any]:
    """Bytes read and written per op category by the top-level instructions of an optimized HLO
    module (``compiled.as_text()``), per device and per execution of the program.

    Returns:
      ``{"categories": {category: {"bytes": int, "on_chip_bytes": int}}, "total_bytes": int,
      "on_chip_bytes": int, "while_without_trip_count": int}``. ``bytes`` includes
      ``on_chip_bytes`` (arrays in memory space 1). Units: bytes.
    """
    computations, entry = _parse(hlo)
    shapes = {instruction["name"]: instruction["shape"] for body in computations.values() for instruction in body}
    categories = {name: {"bytes": 0, "unpadded_bytes": 0, "on_chip_bytes": 0} for name in CATEGORIES}
    unknown_trips = 0

    def charge(category: str, arrays: list[tuple[int, int, bool]], times: int) -> None:
        part = categories[category]
        part["bytes"] += times * sum(padded for padded, _, _ in arrays)
        part["unpadded_bytes"] += times * sum(plain for _, plain, _ in arrays)
        part["on_chip_bytes"] += times * sum(padded for padded, _, on_chip in arrays if on_chip)

    def walk(name: str, times: int, depth: int = 0) -> None:
        nonlocal unknown_trips
        for instruction in computations.get(name, []) if depth < 16 else []:
            opcode = instruction["opcode"]
            if opcode in _CONTROL:
                trips = 1
                if opcode == "while":
                    match = _TRIP_COUNT.search(instruction["attributes"])
                    unknown_trips += match is None
                    trips = int(match[1]) if match else 1
                for called in _called(instruction["attributes"]):
                    walk(called, times * trips, depth + 1)
                continue
            if opcode in _FREE:
                continue
            reads = [array for operand in instruction["operands"] for array in _arrays(shapes.get(operand, ""))]
            writes = _arrays(instruction["shape"])
            if opcode.endswith("-start"):
                arrays = reads  # the matching -done writes the result
            elif opcode.endswith("-done"):
                arrays = writes
            else:
                arrays = reads + writes
            charge(_category(instruction, computations), arrays, times)

    if entry is not None:
        walk(entry, 1)
    total = sum(part["bytes"] for part in categories.values())
    return {"categories": categories, "total_bytes": total,
            "unpadded_bytes": sum(part["unpadded_bytes"] for part in categories.values()),
            "on_chip_bytes": sum(part["on_chip_bytes"] for part in categories.values()),
            "while_without_trip_count": unknown_trips}


def summary_line(breakdown: dict[str, Any]) -> str:
    """``convolution_matmul 12.3 GB, ...`` largest first (decimal GB, as the roofline's bytes)."""
    parts = sorted(breakdown["categories"].items(), key=lambda item: -item[1]["bytes"])
    return ", ".join(f"{name} {part['bytes'] / 1e9:.1f} GB" for name, part in parts if part["bytes"])

