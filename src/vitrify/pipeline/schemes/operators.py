"""Scheme operators: one function per RELION operator type, dispatched by a table.

:data:`SIGNATURES` says what each argument must be (checked before a scheme runs) and
:data:`OPERATORS` maps the type string stored in ``scheme.star`` to its function. Each
function takes an :class:`OperatorContext` and the :class:`Operator` and returns False
when the scheme must stop (``exit``, ``exit_maxtime``), True otherwise.

Where RELION 4 has a defect we do what its help text promises (docs/schemes.md):
a literal number as second input is that number (RELION reads 0), ``nth_word`` counts
negative indices from the end, ``star_table_sort_idx`` with n > 0 gives the n-th largest,
and ``star_table_max_idx``/``min_idx`` are implemented.
"""

from __future__ import annotations

import glob as _glob
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline._star import count_table_rows, read_table_column
from vitrify.pipeline.schemes.model import UNDEFINED, Operator, Scheme, parse_float, parse_literal

#: Argument kinds: float, bool, string variables; "number" = float variable or a literal;
#: None = not used. Order: (output, input1, input2).
Signature = tuple[str | None, str | None, str | None]


@dataclass
class OperatorContext:
    """What an operator may touch: the scheme, the project directory and the clock."""

    scheme: Scheme
    project_dir: Path
    translate: Callable[[str], str] = lambda value: value
    log: Callable[[str], None] = print
    abort_requested: Callable[[], bool] = lambda: False
    now: Callable[[], float] = time.time
    sleep_step_s: float = 0.2
    last_wait: float | None = None
    deadline: float | None = None
    extra: dict = field(default_factory=dict)

    # -- argument access -------------------------------------------------
    def path(self, text: str) -> Path:
        """A project-relative path (absolute paths stay as they are)."""
        return self.project_dir / text

    def string(self, name: str) -> str:
        """Value of string variable ``name`` after job-name translation."""
        return self.translate(self.scheme.strings[name])

    def number(self, name: str) -> float:
        """A float variable's value or, for a literal, the literal itself."""
        if name in self.scheme.floats:
            return self.scheme.floats[name]
        value = parse_literal(name)
        if value is None:
            raise InputError(f"{name!r} is neither a float variable nor a number")
        return value

    def set(self, op: Operator, value: float | bool | str) -> None:
        """Store ``value`` in the output variable (converted to its type) and log it."""
        kind = self.scheme.variable_kind(op.output)
        converters = {"float": float, "bool": bool, "string": str}
        self.scheme.set_variable(op.output, converters[kind](value))
        shown = {"float": lambda v: f"{v:g}", "bool": lambda v: str(v).lower(),
                 "string": str}[kind](getattr(self.scheme, kind + "s")[op.output])
        self.log(f"+ {op.name}: {op.output} -> {shown}")


# ---------------------------------------------------------------- bool operators
def _bool_set(ctx, op):
    ctx.set(op, ctx.scheme.bools[op.input1])
    return True


def _bool_and(ctx, op):
    ctx.set(op, ctx.scheme.bools[op.input1] and ctx.scheme.bools[op.input2])
    return True


def _bool_or(ctx, op):
    ctx.set(op, ctx.scheme.bools[op.input1] or ctx.scheme.bools[op.input2])
    return True


def _bool_not(ctx, op):
    ctx.set(op, not ctx.scheme.bools[op.input1])
    return True


def _compare(test: Callable[[float, float], bool]):
    def apply(ctx, op):
        ctx.set(op, test(ctx.number(op.input1), ctx.number(op.input2)))
        return True
    return apply


def _file_exists(ctx, op):
    ctx.set(op, ctx.path(ctx.string(op.input1)).exists())
    return True


# ---------------------------------------------------------------- STAR access
def _star_spec(ctx, op) -> tuple[Path, str, str]:
    """``"file,table,label"`` of string variable in1, translated."""
    text = ctx.string(op.input1)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"operator {op.name}: {op.input1} = {text!r}",
                         expected='"starfile,table,label"')
    return ctx.path(parts[0]), parts[1], parts[2]


def _star_column(ctx, op) -> list[str]:
    path, table, label = _star_spec(ctx, op)
    return read_table_column(path, table, label)


def _row_index(ctx, name: str) -> int:
    """Row of ``*=read_star``: a float variable or a literal (RELION: variables only), else 0."""
    if name in ctx.scheme.floats:
        return round(ctx.scheme.floats[name])
    literal = parse_literal(name)
    return 0 if literal is None else round(literal)


def _read_star(ctx, op):
    values = _star_column(ctx, op)
    index = _row_index(ctx, op.input2)
    if not 0 <= index < len(values):
        raise InputError(f"operator {op.name}: row {index} does not exist "
                         f"({len(values)} rows)", path=_star_spec(ctx, op)[0])
    kind = ctx.scheme.variable_kind(op.output)
    value = values[index]
    ctx.set(op, parse_float(value) if kind == "float" else
            (value.strip() not in ("0", "", "false", "False", "No")) if kind == "bool" else value)
    return True


def _numeric_column(ctx, op) -> list[float]:
    numbers = [parse_float(v) for v in _star_column(ctx, op)]
    if any(n is None for n in numbers):
        raise InputError(f"operator {op.name}: the column is not numeric",
                         path=_star_spec(ctx, op)[0], field=_star_spec(ctx, op)[2])
    if not numbers:
        raise InputError(f"operator {op.name}: the table is empty", path=_star_spec(ctx, op)[0])
    return numbers


def _table_stat(reduce: Callable[[list[float]], float]):
    def apply(ctx, op):
        ctx.set(op, reduce(_numeric_column(ctx, op)))
        return True
    return apply


def _sort_idx(ctx, op):
    numbers = _numeric_column(ctx, op)
    n = round(ctx.number(op.input2))
    if n == 0 or abs(n) > len(numbers):
        raise InputError(f"operator {op.name}: rank {n} out of range for {len(numbers)} rows",
                         expected="1..N for the N-th largest, -1..-N for the N-th smallest")
    order = sorted(range(len(numbers)), key=lambda i: numbers[i], reverse=n > 0)
    ctx.set(op, order[abs(n) - 1])
    return True


def _count_images(ctx, op):
    path = ctx.path(ctx.string(op.input1))
    table = "particles"
    if op.input2 in ctx.scheme.strings and ctx.scheme.strings[op.input2] != UNDEFINED:
        table = ctx.string(op.input2)
    ctx.set(op, count_table_rows(path, table) if path.exists() else 0)
    return True


# ---------------------------------------------------------------- float and string
def _float_set(ctx, op):
    ctx.set(op, ctx.number(op.input1))
    return True


def _arith(apply: Callable[[float, float], float]):
    def run(ctx, op):
        try:
            ctx.set(op, apply(ctx.number(op.input1), ctx.number(op.input2)))
        except ZeroDivisionError:
            raise InputError(f"operator {op.name}: division by zero ({op.input2} = 0)") from None
        return True
    return run


def _round(ctx, op):
    ctx.set(op, float(round(ctx.number(op.input1))))
    return True


def _words(text: str) -> list[str]:
    return [] if text in (UNDEFINED, "") else text.split(",")


def _count_words(ctx, op):
    ctx.set(op, len(_words(ctx.string(op.input1))))
    return True


def _nth_word(ctx, op):
    words, n = _words(ctx.string(op.input1)), round(ctx.number(op.input2))
    index = n - 1 if n > 0 else len(words) + n
    ctx.set(op, words[index] if n != 0 and 0 <= index < len(words) else UNDEFINED)
    return True


def _string_set(ctx, op):
    ctx.set(op, ctx.string(op.input1))
    return True


def _join(ctx, op):
    ctx.set(op, ctx.string(op.input1) + ctx.string(op.input2))
    return True


def _split(pick: Callable[[str, str], str]):
    def run(ctx, op):
        text, sep = ctx.string(op.input1), ctx.string(op.input2)
        ctx.set(op, pick(text, sep) if sep and sep in text else text)
        return True
    return run


def _glob_op(ctx, op):
    pattern = ctx.string(op.input1)
    root = str(ctx.project_dir)
    matches = sorted(_glob.glob(pattern, root_dir=root)) if not Path(pattern).is_absolute() \
        else sorted(_glob.glob(pattern))
    ctx.set(op, ",".join(matches) if matches else UNDEFINED)
    return True


# ---------------------------------------------------------------- files and control
def _touch(ctx, op):
    path = ctx.path(ctx.string(op.input1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    ctx.log(f"+ {op.name}: touched {ctx.string(op.input1)}")
    return True


def _copy_or_move(move: bool):
    def run(ctx, op):
        src, dst = ctx.path(ctx.string(op.input1)), ctx.path(ctx.string(op.input2))
        if not src.exists():
            raise InputError(f"operator {op.name}: file to {'move' if move else 'copy'} is missing",
                             path=src)
        target = dst / src.name if dst.is_dir() else dst
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.move if move else shutil.copy2)(src, target)
        ctx.log(f"+ {op.name}: {'moved' if move else 'copied'} {src.name} to {target}")
        return True
    return run


def _delete(ctx, op):
    ctx.path(ctx.string(op.input1)).unlink(missing_ok=True)
    ctx.log(f"+ {op.name}: deleted {ctx.string(op.input1)}")
    return True


def _wait(ctx, op):
    now = ctx.now()
    if ctx.last_wait is not None and op.input1 != UNDEFINED:
        until = ctx.last_wait + ctx.number(op.input1)
        while ctx.now() < until and not ctx.abort_requested():
            time.sleep(min(ctx.sleep_step_s, max(0.0, until - ctx.now())))
        if op.output in ctx.scheme.floats:
            ctx.set(op, ctx.now() - ctx.last_wait)
    ctx.log(f"+ {op.name}: waited {0.0 if ctx.last_wait is None else ctx.now() - now:.2f} s")
    ctx.last_wait = ctx.now()
    return True


def _exit_maxtime(ctx, op):
    if ctx.deadline is None:
        ctx.deadline = ctx.now() + 3600.0 * ctx.number(op.input1)
        return True
    if ctx.now() > ctx.deadline:
        ctx.log(f"+ {op.name}: maximum time of {ctx.number(op.input1):g} h reached; stopping")
        return False
    return True


def _exit(ctx, op):
    ctx.log(f"+ {op.name}: exit")
    return False


def _email(ctx, op):
    address = ctx.scheme.strings.get("email")
    lines = [time.strftime("%Y-%m-%d %H:%M:%S")]
    for name in (op.input1, op.input2):
        kind = ctx.scheme.variable_kind(name)
        if kind:
            lines.append(f"{name} = {getattr(ctx.scheme, kind + 's')[name]}")
    send_email(address, f"Scheme {ctx.scheme.short_name}", "\n".join(lines), ctx.log)
    return True


def send_email(address: str | None, subject: str, body: str, log: Callable[[str], None]) -> None:
    """Send ``body`` with the ``mail`` program if an address is set and ``mail`` exists."""
    if not address or address == UNDEFINED:
        return
    mail = shutil.which("mail")
    if mail is None:
        log(f"warning: no 'mail' program; not sent to {address}: {subject}")
        return
    subprocess.run([mail, "-s", subject, "-r", "RELION", address], input=body, text=True,
                   check=False, timeout=60)


# ---------------------------------------------------------------- the tables
_CMP = {"gt": lambda a, b: a > b, "lt": lambda a, b: a < b, "ge": lambda a, b: a >= b,
        "le": lambda a, b: a <= b, "eq": lambda a, b: abs(a - b) < 1e-8}
_ARITH = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b,
          "mult": lambda a, b: a * b, "divide": lambda a, b: a / b}
_SPLITS = {"before_first": lambda s, t: s[:s.find(t)], "after_first": lambda s, t: s[s.find(t) + len(t):],
           "before_last": lambda s, t: s[:s.rfind(t)], "after_last": lambda s, t: s[s.rfind(t) + len(t):]}

OPERATORS: dict[str, Callable[[OperatorContext, Operator], bool]] = {
    "bool=set": _bool_set, "bool=and": _bool_and, "bool=or": _bool_or, "bool=not": _bool_not,
    **{f"bool={k}": _compare(f) for k, f in _CMP.items()},
    "bool=file_exists": _file_exists, "bool=read_star": _read_star,
    "float=read_star": _read_star, "string=read_star": _read_star,
    "float=set": _float_set, **{f"float={k}": _arith(f) for k, f in _ARITH.items()},
    "float=round": _round, "float=count_images": _count_images, "float=count_words": _count_words,
    "float=star_table_max": _table_stat(max), "float=star_table_min": _table_stat(min),
    "float=star_table_avg": _table_stat(lambda v: sum(v) / len(v)),
    "float=star_table_sort_idx": _sort_idx,
    "float=star_table_max_idx": _table_stat(lambda v: float(v.index(max(v)))),
    "float=star_table_min_idx": _table_stat(lambda v: float(v.index(min(v)))),
    "string=set": _string_set, "string=join": _join,
    **{f"string={k}": _split(f) for k, f in _SPLITS.items()},
    "string=glob": _glob_op, "string=nth_word": _nth_word,
    "touch_file": _touch, "copy_file": _copy_or_move(False), "move_file": _copy_or_move(True),
    "delete_file": _delete, "wait": _wait, "email": _email, "exit_maxtime": _exit_maxtime,
    "exit": _exit,
}

SIGNATURES: dict[str, Signature] = {
    "bool=set": ("bool", "bool", None), "bool=and": ("bool", "bool", "bool"),
    "bool=or": ("bool", "bool", "bool"), "bool=not": ("bool", "bool", None),
    **{f"bool={k}": ("bool", "number", "number") for k in _CMP},
    "bool=file_exists": ("bool", "string", None),
    "bool=read_star": ("bool", "string", None), "float=read_star": ("float", "string", None),
    "string=read_star": ("string", "string", None),
    "float=set": ("float", "number", None), **{f"float={k}": ("float", "number", "number") for k in _ARITH},
    "float=round": ("float", "number", None), "float=count_images": ("float", "string", None),
    "float=count_words": ("float", "string", None),
    **{f"float=star_table_{k}": ("float", "string", None)
       for k in ("max", "min", "avg", "max_idx", "min_idx")},
    "float=star_table_sort_idx": ("float", "string", "number"),
    "string=set": ("string", "string", None), "string=join": ("string", "string", "string"),
    **{f"string={k}": ("string", "string", "string") for k in _SPLITS},
    "string=glob": ("string", "string", None), "string=nth_word": ("string", "string", "number"),
    "touch_file": (None, "string", None), "copy_file": (None, "string", "string"),
    "move_file": (None, "string", "string"), "delete_file": (None, "string", None),
    "wait": ("float?", "number?", None), "email": (None, None, None),
    "exit_maxtime": (None, "number", None), "exit": (None, None, None),
}


def execute_operator(ctx: OperatorContext, op: Operator) -> bool:
    """Run one operator; returns False when the scheme must stop."""
    function = OPERATORS.get(op.type)
    if function is None:
        raise InputError(f"unknown operator type {op.type!r} in operator {op.name}",
                         expected=", ".join(sorted(OPERATORS)))
    return function(ctx, op)
