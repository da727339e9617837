"""The Scheme data model: variables, operators, jobs and edges of ``scheme.star``.

A :class:`Scheme` is the whole state of one ``Schemes/<name>/scheme.star``: the three
variable maps (float, bool, string) with current and reset ("original") values, the
operator and job tables, the ordered edge list and the current node. The runner
mutates it in memory and writes it back (``schemes.star``); nothing here touches files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNDEFINED = "undefined"
MODES = ("new", "continue")


@dataclass(frozen=True)
class Operator:
    """One operator node: ``type`` as stored (``float=plus``), arguments are variable names."""

    name: str
    type: str
    output: str = UNDEFINED
    input1: str = UNDEFINED
    input2: str = UNDEFINED


@dataclass
class SchemeJob:
    """One job node: the template name, its current pipeline name (``Class2D/job008/``)."""

    original_name: str
    name: str
    mode: str = "continue"
    has_started: bool = False


@dataclass(frozen=True)
class Edge:
    """``input → output``; a fork goes to ``output_if_true`` when ``bool_variable`` is true."""

    input: str
    output: str
    is_fork: bool = False
    output_if_true: str = UNDEFINED
    bool_variable: str = UNDEFINED


@dataclass
class Scheme:
    """The state of one scheme (what ``scheme.star`` holds).

    ``name`` keeps RELION's form ``Schemes/<name>/`` (with the trailing slash).
    ``floats``/``bools``/``strings`` map a variable name to its current value and
    ``*_reset`` to its reset value. ``rows`` maps ``(table, key)`` to the 1-based row
    number the item had in the file it was read from, for error messages.
    """

    name: str
    current_node: str = UNDEFINED
    floats: dict[str, float] = field(default_factory=dict)
    floats_reset: dict[str, float] = field(default_factory=dict)
    bools: dict[str, bool] = field(default_factory=dict)
    bools_reset: dict[str, bool] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    strings_reset: dict[str, str] = field(default_factory=dict)
    operators: dict[str, Operator] = field(default_factory=dict)
    jobs: dict[str, SchemeJob] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    rows: dict[tuple[str, str], int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def short_name(self) -> str:
        """``prep`` for ``Schemes/prep/``."""
        return self.name.rstrip("/").split("/")[-1]

    def variable_kind(self, name: str) -> str | None:
        """``"float"``, ``"bool"``, ``"string"`` or None if ``name`` is no variable."""
        for kind, table in (("float", self.floats), ("bool", self.bools), ("string", self.strings)):
            if name in table:
                return kind
        return None

    def is_node(self, name: str) -> bool:
        """True for the name of an operator or a job."""
        return name in self.operators or name in self.jobs

    def next_node(self, node: str) -> str:
        """The node after ``node``: the last edge leaving it wins; forks read their bool."""
        nxt = UNDEFINED
        for edge in self.edges:
            if edge.input != node:
                continue
            if edge.is_fork and self.bools.get(edge.bool_variable, False):
                nxt = edge.output_if_true
            else:
                nxt = edge.output
        return nxt

    def start_node(self) -> str:
        """The input node of the first edge (RELION's start), or ``undefined``."""
        return self.edges[0].input if self.edges else UNDEFINED

    def reset(self) -> None:
        """RELION's ``--reset``: values ← reset values, jobs unstarted, start at the first edge."""
        self.floats.update(self.floats_reset)
        self.bools.update(self.bools_reset)
        self.strings.update(self.strings_reset)
        for job in self.jobs.values():
            job.name = job.original_name
            job.has_started = False
        self.current_node = self.start_node()

    def set_variable(self, name: str, value: object, reset_value: object | None = None) -> None:
        """Set an existing variable (and optionally its reset value), converting the type."""
        kind = self.variable_kind(name)
        if kind is None:
            raise KeyError(name)
        table, reset = {"float": (self.floats, self.floats_reset),
                        "bool": (self.bools, self.bools_reset),
                        "string": (self.strings, self.strings_reset)}[kind]
        table[name] = convert_value(kind, value)
        if reset_value is not None:
            reset[name] = convert_value(kind, reset_value)

    def add_variable(self, name: str, value: str, reset_value: str | None = None) -> str:
        """RELION's ``--add variable``: the type follows the value; returns the kind."""
        kind = guess_kind(value)
        tables = {"float": (self.floats, self.floats_reset),
                  "bool": (self.bools, self.bools_reset),
                  "string": (self.strings, self.strings_reset)}
        for other in tables.values():
            other[0].pop(name, None)
            other[1].pop(name, None)
        table, reset = tables[kind]
        table[name] = convert_value(kind, value)
        reset[name] = convert_value(kind, value if reset_value is None else reset_value)
        return kind


_TRUE = {"true", "True", "1", "yes", "Yes"}
_FALSE = {"false", "False", "0", "no", "No"}


def parse_float(text: str) -> float | None:
    """The number at the start of ``text`` as ``sscanf("%f")`` reads it, or None."""
    text = str(text).strip()
    for end in range(len(text), 0, -1):
        try:
            return float(text[:end])
        except ValueError:
            continue
    return None


def parse_literal(text: str) -> float | None:
    """A whole-token finite number literal (``5``, ``-0.5``, ``1e3``) or None."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def guess_kind(value: str) -> str:
    """RELION's rule for ``--add variable``: number → float, true/false → bool, else string."""
    if str(value) in ("true", "True", "false", "False"):
        return "bool"
    if parse_float(str(value)) is not None:
        return "float"
    return "string"


def convert_value(kind: str, value: object) -> float | bool | str:
    """Convert ``value`` to a variable of ``kind``; raises ValueError when impossible."""
    if kind == "float":
        if isinstance(value, bool):
            return float(value)
        number = parse_float(str(value)) if not isinstance(value, (int, float)) else float(value)
        if number is None:
            raise ValueError(f"not a number: {value!r}")
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value) in _TRUE:
            return True
        if str(value) in _FALSE:
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return str(value)


def format_float(value: float) -> str:
    """Shortest decimal text of a float, as RELION substitutes it into job options (50, 0.5)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
