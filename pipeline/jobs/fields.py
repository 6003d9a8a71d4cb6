"""What a request field is: its default (read from the floor that owns it), its range or choices, its help, its role,
and the older names saved scripts and workflows still use. Every front end reads these and nothing else:

* :func:`option` declares a field on a request dataclass (pipeline/jobs/requests.py);
* :func:`specs` lists a request's fields as :class:`FieldSpec`;
* :func:`coerce` turns one value from JSON, a CSV cell or argv into the field's type, or raises :class:`RequestError`
  naming the field and the fix;
* :func:`check` applies the field's range and choices.

Roles: ``input`` (the files and names a job works on), ``option`` (what a user tunes; a server job's options),
``machine`` (where and how it runs: the device and downloads, set by whoever owns the machine).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

INPUT, OPTION, MACHINE = "input", "option", "machine"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class RequestError(ValueError):
    """A request that cannot run: ``field`` names the option (request field name), ``fix`` says what to do."""

    def __init__(self, field: str, message: str, fix: str = "", detail: str = ""):
        self.field, self.message, self.fix, self.detail = field, message, fix, detail   # detail: for logs only
        super().__init__(f"{field}: {message}" + (f" ({fix})" if fix else ""))


@dataclass(frozen=True)
class FieldSpec:
    """One request field as front ends see it."""

    name: str
    kind: type                                   # bool, int, float or str
    default: Any
    help: str
    role: str = OPTION
    choices: Optional[Tuple[str, ...]] = None
    range: Optional[Tuple[float, float]] = None  # inclusive
    optional: bool = False                       # None is a legal value (e.g. "the avatar's own loop")
    old_names: Tuple[str, ...] = ()              # accepted in JSON, rows and argv, same meaning
    inverted_names: Tuple[str, ...] = ()         # accepted with the opposite meaning (``no_smooth_boxes``)
    flag: Optional[str] = None                   # the command line's main flag when it is not --<name>

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.range:
            lo, hi = self.range
            return f"{_num(lo)} to {_num(hi)}"
        return ""


def option(default: Any, help: str, *, kind: Optional[type] = None, role: str = OPTION,
           choices: Optional[Sequence[str]] = None, range: Optional[Tuple[float, float]] = None,
           old_names: Sequence[str] = (), inverted_names: Sequence[str] = (), flag: Optional[str] = None):
    """A request field (``dataclasses.field`` with the metadata :func:`specs` reads)."""
    kind = kind or type(default)
    meta = dict(kind=kind, help=help, role=role, choices=tuple(choices) if choices else None,
                range=tuple(range) if range else None, optional=default is None, old_names=tuple(old_names),
                inverted_names=tuple(inverted_names), flag=flag)
    return dataclasses.field(default=default, metadata={"spec": meta})


def specs(request_type) -> Tuple[FieldSpec, ...]:
    """The fields of a request class (or instance), in declaration order."""
    return tuple(FieldSpec(name=f.name, default=f.default, **f.metadata["spec"])
                 for f in dataclasses.fields(request_type) if "spec" in f.metadata)


def spec_of(request_type, name: str) -> FieldSpec:
    for s in specs(request_type):
        if s.name == name:
            return s
    raise KeyError(f"{getattr(request_type, '__name__', request_type)} has no field {name!r}")


def default_of(request_type, name: str) -> Any:
    return spec_of(request_type, name).default


def names_table(request_type) -> Dict[str, Tuple[str, bool]]:
    """Every accepted name -> (field name, inverted)."""
    table: Dict[str, Tuple[str, bool]] = {}
    for s in specs(request_type):
        table[s.name] = (s.name, False)
        table.update({n: (s.name, False) for n in s.old_names})
        table.update({n: (s.name, True) for n in s.inverted_names})
    return table


def build(settings_type, values: Mapping[str, Any], roles: Sequence[str] = (INPUT, OPTION, MACHINE),
          prefix: str = "", kind: str = ""):
    """``settings_type`` (a request, or a group of its fields such as ``FaceSettings``) from ``{name: value}``.
    Names are field names or older ones (``steps``, ``no_smooth_boxes``); values are coerced to the field's type.
    Unknown names, names of another role and values of the wrong type raise :class:`RequestError` naming
    ``prefix`` + the name as given."""
    table, by_name = names_table(settings_type), {s.name: s for s in specs(settings_type)}
    allowed = sorted(n for n, (f, _) in table.items() if by_name[f].role in roles and n == f)
    kwargs: Dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in table or by_name[table[name][0]].role not in roles:
            raise RequestError(prefix + str(key), f"{key!r} is not an option of a {kind or 'this'} job",
                               f"use one of: {', '.join(allowed)}")
        field, inverted = table[name]
        v = coerce(by_name[field], value, prefix + str(key))
        kwargs[field] = (not v) if inverted and isinstance(v, bool) else v
    return settings_type(**kwargs)


def as_sent(exc: RequestError, settings_type, values: Mapping[str, Any], prefix: str = "") -> RequestError:
    """``exc`` naming the option the way the user wrote it in ``values`` (``steps`` rather than
    ``latentsync_steps``) with ``prefix``; an input (``video``) keeps its own name."""
    if exc.field.startswith(prefix) and prefix:
        return exc
    table = names_table(settings_type)
    sent = [k for k in values if table.get(str(k).replace("-", "_"), ("",))[0] == exc.field]
    roles = {s.name: s.role for s in specs(settings_type)}
    if sent:
        name = prefix + str(sent[0])
    else:
        name = prefix + exc.field if roles.get(exc.field, INPUT) != INPUT else exc.field
    return RequestError(name, exc.message, exc.fix)


def checked(settings):
    """Every field of ``settings`` coerced to its type and checked against its range and choices; returns it."""
    for s in specs(settings):
        value = coerce(s, getattr(settings, s.name))
        check(s, value)
        setattr(settings, s.name, value)
    return settings


def coerce(spec: FieldSpec, value: Any, label: Optional[str] = None) -> Any:
    """``value`` (JSON, a CSV cell or an argv string) as the field's type; ``label`` names it in errors."""
    label = label or spec.name
    if value is None or (isinstance(value, str) and not value.strip() and spec.kind is not str):
        if spec.optional or isinstance(value, str):
            return spec.default
        raise RequestError(label, "needs a value", f"give {_expected(spec)}, or leave the option out")
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise RequestError(label, f"is a switch; got {value!r}", "use true or false")
    if spec.kind is int:
        number = _number(value, label, spec)
        if number != int(number):
            raise RequestError(label, f"must be a whole number; got {value!r}", f"use {_expected(spec)}")
        return int(number)
    if spec.kind is float:
        return float(_number(value, label, spec))
    if isinstance(value, (dict, list, bool)):
        raise RequestError(label, f"takes one text value; got {value!r}", f"use {_expected(spec)}")
    return str(value).strip() if isinstance(value, str) else str(value)


def check(spec: FieldSpec, value: Any, label: Optional[str] = None) -> None:
    """The field's choices and range (a value of the right type, as :func:`coerce` returns)."""
    label = label or spec.name
    if value is None:
        if spec.optional:
            return
        raise RequestError(label, "needs a value", f"use {_expected(spec)}")
    if spec.choices and value not in spec.choices:
        raise RequestError(label, f"{value!r} is not a choice", f"use one of {', '.join(spec.choices)}")
    if spec.range and not spec.range[0] <= value <= spec.range[1]:
        raise RequestError(label, f"{_num(value)} is out of range", f"use a value from {spec.describe_range()}")


def _number(value: Any, label: str, spec: FieldSpec) -> float:
    if isinstance(value, bool):
        raise RequestError(label, f"is a number; got {value!r}", f"use {_expected(spec)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(label, f"{value!r} is not a {'whole ' if spec.kind is int else ''}number",
                           f"use {_expected(spec)}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise RequestError(label, f"{value!r} is not a finite number", f"use {_expected(spec)}")
    return number


def _expected(spec: FieldSpec) -> str:
    what = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}[spec.kind]
    rng = spec.describe_range()
    return f"{what} ({rng})" if rng and not spec.choices else (rng or what)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
