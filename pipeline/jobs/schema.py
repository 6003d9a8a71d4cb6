"""JSON Schema of a request's options (the server's ``GET /openapi.json``), read from the same fields the server
checks, so the description cannot drift from what is accepted."""
from __future__ import annotations

from typing import Dict, Iterable

from .fields import OPTION, specs

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def options_schema(request_type, roles: Iterable[str] = (OPTION,)) -> Dict:
    """``{"type": "object", "properties": {...}}`` of the fields in ``roles``, each with its type, default, range or
    choices and help; older names are listed as deprecated properties of the same type."""
    roles = tuple(roles)
    props: Dict[str, Dict] = {}
    for s in specs(request_type):
        if s.role not in roles:
            continue
        schema: Dict = {"type": JSON_TYPES[s.kind], "description": s.help}
        if s.optional:
            schema["nullable"] = True
        if s.choices:
            schema["enum"] = list(s.choices)
        if s.range:
            schema["minimum"], schema["maximum"] = s.range
        if s.default is not None:
            schema["default"] = s.default
        props[s.name] = schema
        for old in s.old_names:
            props[old] = {**schema, "deprecated": True, "description": f"older name of {s.name}"}
        for old in s.inverted_names:
            props[old] = {"type": "boolean", "deprecated": True, "description": f"the opposite of {s.name}"}
    return {"type": "object", "properties": props, "additionalProperties": False}
